//! Calls to the active controller from any node (run on shard 0): admin requests forwarded as
//! Kafka forwards them, producer-id blocks, registration and heartbeats. The active controller
//! is found from the quorum (voters) or from the hints in NotController answers; without one
//! the call retries until the controller request timeout, then fails with a retriable error.

use super::controller::{AdminError, ConfigChange, NewTopic};
use super::driver::MetadataNode;
use super::metadata::TopicRecord;
use super::rpc::{self, AdminCommand, AdminReply, ControllerRequest, ControllerResponse};
use crate::shard::Shard;
use kafka_protocol::error::ResponseError;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Pause before retrying a call that found no active controller; doubles up to the maximum.
const RETRY_BACKOFF_MIN_MS: u64 = 25;
const RETRY_BACKOFF_MAX_MS: u64 = 500;
/// Longest a forwarding node waits for its own image to reach a change it forwarded.
const APPLY_WAIT_MS: u64 = 5_000;

/// Why a call found no answer.
#[derive(Debug, Clone)]
pub enum CallFailure {
    /// No active controller answered within the timeout.
    NoController,
}

/// Sends `request` to the active controller and returns its answer (never NotController).
/// Calls from the active controller's own node run in place.
pub async fn call_active(
    node: &Rc<MetadataNode>,
    request: ControllerRequest,
    timeout: Duration,
) -> Result<ControllerResponse, CallFailure> {
    let deadline = Instant::now() + timeout;
    let mut backoff_ms = RETRY_BACKOFF_MIN_MS;
    let mut rotate = 0usize;
    loop {
        let target = node.leader_id().or_else(|| {
            // No leader known: try the voters in turn.
            let voters = &node.voters;
            (!voters.is_empty()).then(|| voters[rotate % voters.len()].node_id)
        });
        let answer = match target {
            Some(target) if target == node.node_id && node.is_voter() => {
                Some(super::controller::handle(node, request.clone()).await)
            }
            Some(target) => match node.voters.iter().find(|v| v.node_id == target) {
                Some(voter) => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    match rpc::call(
                        &voter.address,
                        node.controller_tls.as_ref(),
                        &request,
                        remaining.max(Duration::from_millis(10)),
                    )
                    .await
                    {
                        Ok(answer) => Some(answer),
                        Err(error) => {
                            tracing::debug!("controller call failed: {error}");
                            node.set_leader_hint(None);
                            rotate += 1;
                            None
                        }
                    }
                }
                None => None,
            },
            None => None,
        };
        match answer {
            Some(ControllerResponse::NotController { leader_id }) => {
                node.set_leader_hint(leader_id.filter(|&id| Some(id) != target));
                if leader_id.is_none() || leader_id == target {
                    rotate += 1;
                }
            }
            Some(answer) => {
                if let Some(target) = target {
                    node.set_leader_hint(Some(target));
                }
                return Ok(answer);
            }
            None => {}
        }
        if Instant::now() >= deadline {
            return Err(CallFailure::NoController);
        }
        let pause = Duration::from_millis(backoff_ms)
            .min(deadline.saturating_duration_since(Instant::now()));
        glommio::timer::sleep(pause).await;
        backoff_ms = (backoff_ms * 2).min(RETRY_BACKOFF_MAX_MS);
    }
}

fn no_controller() -> AdminError {
    AdminError::new(
        ResponseError::NotController,
        "no active controller answered in time; retry",
    )
}

/// Runs an admin command on the active controller and waits until this node's image has
/// applied it, so the client sees its change on this node at once.
pub async fn admin(shard: &Rc<Shard>, command: AdminCommand) -> Result<AdminReply, AdminError> {
    let node = MetadataNode::of(shard);
    let timeout = Duration::from_millis(shard.config.controller_request_timeout_ms);
    match call_active(&node, ControllerRequest::Admin(command), timeout).await {
        Ok(ControllerResponse::Admin { reply, offset }) => {
            if !node
                .wait_applied(offset, Duration::from_millis(APPLY_WAIT_MS))
                .await
            {
                tracing::warn!(offset, "forwarded change not applied here in time");
            }
            Ok(reply)
        }
        Ok(ControllerResponse::Error { message }) => {
            Err(AdminError::new(ResponseError::RequestTimedOut, message))
        }
        Ok(other) => Err(AdminError::new(
            ResponseError::UnknownServerError,
            format!("unexpected controller answer {other:?}"),
        )),
        Err(CallFailure::NoController) => Err(no_controller()),
    }
}

fn spread<T>(count: usize, error: AdminError) -> Vec<Result<T, AdminError>> {
    (0..count).map(|_| Err(error.clone())).collect()
}

/// Runs a command answered with one result per item (`count` of them); a failed call fails
/// every item.
async fn changes(
    shard: &Rc<Shard>,
    count: usize,
    command: AdminCommand,
) -> Vec<Result<(), AdminError>> {
    match admin(shard, command).await {
        Ok(AdminReply::Changes(results)) => results,
        Ok(_) => spread(
            count,
            AdminError::new(ResponseError::UnknownServerError, "bad reply"),
        ),
        Err(error) => spread(count, error),
    }
}

/// CreateTopics through the active controller. Call on shard 0.
pub async fn create_topics(
    shard: &Rc<Shard>,
    topics: Vec<NewTopic>,
    validate_only: bool,
) -> Vec<Result<Arc<TopicRecord>, AdminError>> {
    let count = topics.len();
    match admin(
        shard,
        AdminCommand::CreateTopics {
            topics,
            validate_only,
        },
    )
    .await
    {
        Ok(AdminReply::CreateTopics(results)) => {
            let results: Vec<_> = results.into_iter().map(|r| r.map(Arc::new)).collect();
            for record in results.iter().flatten().filter(|_| !validate_only) {
                tracing::info!(topic = %record.name, partitions = record.partitions.len(), "topic created");
            }
            results
        }
        Ok(_) => spread(
            count,
            AdminError::new(ResponseError::UnknownServerError, "bad reply"),
        ),
        Err(error) => spread(count, error),
    }
}

pub async fn delete_topics(shard: &Rc<Shard>, names: Vec<String>) -> Vec<Result<Uuid, AdminError>> {
    let count = names.len();
    match admin(shard, AdminCommand::DeleteTopics { names }).await {
        Ok(AdminReply::DeleteTopics(results)) => results,
        Ok(_) => spread(
            count,
            AdminError::new(ResponseError::UnknownServerError, "bad reply"),
        ),
        Err(error) => spread(count, error),
    }
}

pub async fn create_partitions(
    shard: &Rc<Shard>,
    requests: Vec<(String, i32)>,
    validate_only: bool,
) -> Vec<Result<(), AdminError>> {
    let count = requests.len();
    changes(
        shard,
        count,
        AdminCommand::CreatePartitions {
            requests,
            validate_only,
        },
    )
    .await
}

pub async fn alter_topic_configs(
    shard: &Rc<Shard>,
    requests: Vec<(String, Vec<ConfigChange>)>,
    replace_all: bool,
    validate_only: bool,
) -> Vec<Result<(), AdminError>> {
    let count = requests.len();
    changes(
        shard,
        count,
        AdminCommand::AlterTopicConfigs {
            requests,
            replace_all,
            validate_only,
        },
    )
    .await
}

/// AlterConfigs on BROKER resources through the active controller: per scope (a broker id, or
/// `None` for the cluster-wide default) its changes. Call on shard 0.
pub async fn alter_broker_configs(
    shard: &Rc<Shard>,
    requests: Vec<(Option<i32>, Vec<ConfigChange>)>,
    replace_all: bool,
    validate_only: bool,
) -> Vec<Result<(), AdminError>> {
    let count = requests.len();
    changes(
        shard,
        count,
        AdminCommand::AlterBrokerConfigs {
            requests,
            replace_all,
            validate_only,
        },
    )
    .await
}

/// A producer id never handed out before, from this node's block (a new block from the
/// active controller when it runs out). Call on shard 0.
pub async fn allocate_producer_id(shard: &Rc<Shard>) -> Result<i64, AdminError> {
    let node = MetadataNode::of(shard);
    let _permit = node.producer_ids_lock.acquire_permit(1).await;
    let (next, end) = node.producer_ids.get();
    if next < end {
        node.producer_ids.set((next + 1, end));
        return Ok(next);
    }
    let reply = admin(
        shard,
        AdminCommand::AllocateProducerIds {
            node_id: node.node_id,
        },
    )
    .await?;
    match reply {
        AdminReply::ProducerIds(Ok(start)) => {
            node.producer_ids
                .set((start + 1, start + super::controller::PRODUCER_ID_BLOCK_SIZE));
            Ok(start)
        }
        AdminReply::ProducerIds(Err(error)) => Err(error),
        _ => Err(AdminError::new(
            ResponseError::UnknownServerError,
            "bad reply",
        )),
    }
}

/// AlterPartition through the active controller, for a partition this node leads. Returns the
/// partition as committed, or the Kafka error code (NOT_CONTROLLER when no controller answered,
/// retriable). Call on shard 0.
pub async fn alter_partition(
    shard: &Rc<Shard>,
    mut request: rpc::AlterPartitionRequest,
) -> Result<super::metadata::PartitionRecord, i16> {
    let Some(node) = shard.metadata_node.get().cloned() else {
        return Err(ResponseError::NotController.code());
    };
    let broker_epoch = node
        .agent
        .borrow()
        .as_ref()
        .and_then(|agent| agent.broker_epoch.get());
    let Some(broker_epoch) = broker_epoch else {
        // Not registered (yet): the controller would not know this incarnation.
        return Err(ResponseError::StaleBrokerEpoch.code());
    };
    request.node_id = node.node_id;
    request.broker_epoch = broker_epoch;
    let timeout = Duration::from_millis(shard.config.controller_request_timeout_ms);
    match call_active(&node, ControllerRequest::AlterPartition(request), timeout).await {
        Ok(ControllerResponse::PartitionAltered(outcome)) => outcome,
        Ok(ControllerResponse::Error { message }) => {
            tracing::warn!("AlterPartition failed on the controller: {message}");
            Err(ResponseError::RequestTimedOut.code())
        }
        Ok(other) => {
            tracing::warn!(?other, "unexpected answer to AlterPartition");
            Err(ResponseError::UnknownServerError.code())
        }
        Err(CallFailure::NoController) => Err(ResponseError::NotController.code()),
    }
}
