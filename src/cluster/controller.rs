//! The active controller: decides every change of the metadata image and writes it to the
//! metadata log. It runs on shard 0 of the voter that leads the controller quorum; calls reach it
//! over the controller listener ([`super::server`]) or, from its own node, directly
//! ([`super::client`]). Changes are validated against the newest applied image and serialised
//! (one at a time), so a batch of records is always decided against the image it applies to.
//!
//! Broker lifecycle (KRaft's): a broker registers (fenced), heartbeats, is unfenced once it has
//! applied the log up to its registration, and is fenced when its session expires or it shuts
//! down; fencing moves or drops the leaderships it held, unfencing gives leaderless partitions
//! whose ISR holds it back to it.

use super::driver::{MetadataNode, ProposalFailure};
use super::metadata::{MetadataImage, TopicRecord, NO_LEADER};
use super::placement::{place_replicas, PlacementError};
use super::records::{self, MetadataRecord};
use super::rpc::{AdminCommand, AdminReply, ControllerRequest, ControllerResponse};
use super::topic_config::{self, TopicConfigs};
use crate::config::BrokerConfig;
use kafka_protocol::error::ResponseError;
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Longest topic name Kafka allows.
pub const MAX_TOPIC_NAME_LENGTH: usize = 249;

/// Producer ids the controller reserves in the metadata log at a time.
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// How often the active controller looks for expired broker sessions.
const SESSION_CHECK_INTERVAL_MS: u64 = 250;
/// Longest wait of one FetchMetadata long poll.
const MAX_FETCH_WAIT_MS: u64 = 5_000;
/// Bytes of entries one FetchMetadata answer carries.
const FETCH_MAX_BYTES: u64 = 4 * 1024 * 1024;

pub struct Controller {
    /// One metadata change at a time.
    change_lock: glommio::sync::Semaphore,
    /// Last heartbeat of each broker, as the active controller saw it (empty elsewhere).
    sessions: RefCell<BTreeMap<i32, Instant>>,
    /// Metadata offset each broker reported and when (DescribeQuorum observers).
    observers: RefCell<BTreeMap<i32, (u64, i64)>>,
    active: Cell<bool>,
}

/// A refused admin operation: the Kafka error code and a message for the client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminError {
    pub code: i16,
    pub message: String,
}

impl AdminError {
    pub fn new(error: ResponseError, message: impl Into<String>) -> AdminError {
        AdminError {
            code: error.code(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewTopic {
    pub name: String,
    /// -1: the broker's `num_partitions`.
    pub partitions: i32,
    /// -1: the broker's `default_replication_factor`.
    pub replication_factor: i16,
    /// Explicit replica assignment per partition, if the client gave one.
    pub assignments: Vec<Vec<i32>>,
    pub configs: Vec<(String, Option<String>)>,
}

/// How IncrementalAlterConfigs changes one key.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum ConfigOp {
    Set,
    Delete,
    Append,
    Subtract,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigChange {
    pub key: String,
    pub op: ConfigOp,
    pub value: Option<String>,
}

/// Kafka's rule for topic names.
pub fn validate_topic_name(name: &str) -> Result<(), AdminError> {
    let invalid = |why: &str| {
        Err(AdminError::new(
            ResponseError::InvalidTopicException,
            format!("topic name {name:?} is illegal: {why}"),
        ))
    };
    if name.is_empty() {
        return invalid("empty");
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are not allowed");
    }
    if name.len() > MAX_TOPIC_NAME_LENGTH {
        return invalid("longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return invalid("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Default for Controller {
    fn default() -> Controller {
        Controller::new()
    }
}

impl Controller {
    pub fn new() -> Controller {
        Controller {
            change_lock: glommio::sync::Semaphore::new(1),
            sessions: RefCell::new(BTreeMap::new()),
            observers: RefCell::new(BTreeMap::new()),
            active: Cell::new(false),
        }
    }

    /// This node became the active controller with `image` current: every registered broker
    /// gets a full session from now (Kafka's controller failover grace).
    pub fn activate(&self, image: &MetadataImage) {
        let now = Instant::now();
        *self.sessions.borrow_mut() = image.brokers.keys().map(|&id| (id, now)).collect();
        self.active.set(true);
    }

    pub fn deactivate(&self) {
        self.active.set(false);
        self.sessions.borrow_mut().clear();
    }

    /// Starts the session check (it acts only while this node is the active controller).
    pub fn start(&self, node: Rc<MetadataNode>) {
        if !node.is_voter() {
            return;
        }
        glommio::spawn_local(async move {
            let timeout = Duration::from_millis(node.config.broker_session_timeout_ms);
            loop {
                glommio::timer::sleep(Duration::from_millis(SESSION_CHECK_INTERVAL_MS)).await;
                if !node.is_active() || !node.controller.active.get() {
                    continue;
                }
                let image = node.image();
                let expired: Vec<(i32, u64)> = {
                    let sessions = node.controller.sessions.borrow();
                    image
                        .brokers
                        .values()
                        .filter(|broker| !broker.fenced)
                        .filter(|broker| {
                            sessions
                                .get(&broker.node_id)
                                .is_none_or(|last| last.elapsed() > timeout)
                        })
                        .map(|broker| (broker.node_id, broker.broker_epoch))
                        .collect()
                };
                for (node_id, broker_epoch) in expired {
                    let _permit = node.controller.change_lock.acquire_permit(1).await;
                    let image = node.image();
                    if !image.is_live(node_id) {
                        continue;
                    }
                    let mut batch = vec![MetadataRecord::FenceBroker {
                        node_id,
                        broker_epoch,
                    }];
                    batch.extend(records::leaders_away_from(
                        &image,
                        node_id,
                        unclean_allowed(&node.config, &image),
                    ));
                    match node.propose(batch).await {
                        Ok(offset) => tracing::warn!(
                            broker = node_id,
                            offset,
                            "broker fenced: its session expired"
                        ),
                        Err(failure) => tracing::debug!(?failure, "could not fence broker"),
                    }
                }
            }
        })
        .detach();
    }
}

/// Whether a topic allows unclean leader election (`unclean.leader.election.enable`, else the
/// dynamic broker default in `image`, else `config`'s).
pub fn unclean_allowed(
    config: &BrokerConfig,
    image: &MetadataImage,
) -> impl Fn(&TopicRecord) -> bool {
    let live = super::broker_config::live_config(config, &image.broker_configs);
    move |topic| {
        topic_config::effective_bool(&topic.configs, &live, "unclean.leader.election.enable")
    }
}

fn not_controller(node: &MetadataNode) -> ControllerResponse {
    ControllerResponse::NotController {
        leader_id: node.leader_id(),
    }
}

fn failure_response(node: &MetadataNode, failure: ProposalFailure) -> ControllerResponse {
    match failure {
        ProposalFailure::NotController(leader_id) => {
            ControllerResponse::NotController { leader_id }
        }
        ProposalFailure::TimedOut => ControllerResponse::Error {
            message: format!(
                "metadata change not committed within {} ms (no controller quorum?)",
                node.config.controller_request_timeout_ms
            ),
        },
        ProposalFailure::Storage(message) => ControllerResponse::Error { message },
    }
}

/// Serves one call on the active controller.
pub async fn handle(node: &Rc<MetadataNode>, request: ControllerRequest) -> ControllerResponse {
    if let ControllerRequest::DescribeQuorum = request {
        return match quorum_report(node) {
            Some(report) => ControllerResponse::Quorum(report),
            None => not_controller(node),
        };
    }
    if !node.is_active() {
        return not_controller(node);
    }
    let controller = &node.controller;
    match request {
        ControllerRequest::Register {
            node_id,
            incarnation_id,
            host,
            port,
            rack,
            shard_count,
            endpoints,
        } => {
            let _permit = controller.change_lock.acquire_permit(1).await;
            let image = node.image();
            if let Some(broker) = image.brokers.get(&node_id) {
                if broker.incarnation_id == incarnation_id {
                    return ControllerResponse::Registered {
                        broker_epoch: broker.broker_epoch,
                    };
                }
            }
            let record = MetadataRecord::RegisterBroker {
                node_id,
                incarnation_id,
                host,
                port,
                rack,
                shard_count,
                endpoints,
            };
            // A re-registration replaces the old incarnation: its leaderships go first.
            let mut batch =
                records::leaders_away_from(&image, node_id, unclean_allowed(&node.config, &image));
            batch.push(record);
            match node.propose(batch).await {
                Ok(offset) => {
                    controller
                        .sessions
                        .borrow_mut()
                        .insert(node_id, Instant::now());
                    tracing::info!(broker = node_id, broker_epoch = offset, "broker registered");
                    ControllerResponse::Registered {
                        broker_epoch: offset,
                    }
                }
                Err(failure) => failure_response(node, failure),
            }
        }
        ControllerRequest::Heartbeat {
            node_id,
            broker_epoch,
            applied_offset,
            want_shutdown,
        } => {
            let image = node.image();
            let Some(broker) = image.brokers.get(&node_id) else {
                return ControllerResponse::StaleBrokerEpoch;
            };
            if broker.broker_epoch != broker_epoch {
                return ControllerResponse::StaleBrokerEpoch;
            }
            controller
                .sessions
                .borrow_mut()
                .insert(node_id, Instant::now());
            controller
                .observers
                .borrow_mut()
                .insert(node_id, (applied_offset, now_ms()));
            if want_shutdown {
                if broker.fenced {
                    return ControllerResponse::Heartbeat {
                        fenced: true,
                        shutdown_ready: true,
                    };
                }
                let _permit = controller.change_lock.acquire_permit(1).await;
                let image = node.image();
                let mut batch = vec![
                    MetadataRecord::BrokerShuttingDown {
                        node_id,
                        broker_epoch,
                    },
                    MetadataRecord::FenceBroker {
                        node_id,
                        broker_epoch,
                    },
                ];
                batch.extend(records::leaders_away_from(
                    &image,
                    node_id,
                    unclean_allowed(&node.config, &image),
                ));
                return match node.propose(batch).await {
                    Ok(_) => {
                        tracing::info!(broker = node_id, "controlled shutdown: broker fenced");
                        ControllerResponse::Heartbeat {
                            fenced: true,
                            shutdown_ready: true,
                        }
                    }
                    Err(failure) => failure_response(node, failure),
                };
            }
            if broker.fenced && applied_offset >= broker_epoch {
                let _permit = controller.change_lock.acquire_permit(1).await;
                let image = node.image();
                if image
                    .brokers
                    .get(&node_id)
                    .is_some_and(|b| b.fenced && b.broker_epoch == broker_epoch)
                {
                    let mut batch = vec![MetadataRecord::UnfenceBroker {
                        node_id,
                        broker_epoch,
                    }];
                    batch.extend(records::leaders_onto(
                        &image,
                        node_id,
                        unclean_allowed(&node.config, &image),
                    ));
                    if let Err(failure) = node.propose(batch).await {
                        return failure_response(node, failure);
                    }
                    tracing::info!(
                        broker = node_id,
                        "broker unfenced: caught up with the metadata log"
                    );
                }
            }
            let fenced = !node.image().is_live(node_id);
            ControllerResponse::Heartbeat {
                fenced,
                shutdown_ready: false,
            }
        }
        ControllerRequest::FetchMetadata {
            node_id,
            after_offset,
            max_wait_ms,
        } => {
            controller
                .observers
                .borrow_mut()
                .insert(node_id, (after_offset, now_ms()));
            let wait = Duration::from_millis(max_wait_ms.min(MAX_FETCH_WAIT_MS));
            if node.commit_index() <= after_offset {
                node.wait_applied(after_offset + 1, wait).await;
            }
            ControllerResponse::Metadata(node.committed_after(after_offset, FETCH_MAX_BYTES))
        }
        ControllerRequest::Admin(command) => {
            let _permit = controller.change_lock.acquire_permit(1).await;
            let image = node.image();
            // Topic defaults as this node runs with them (dynamic broker configs included).
            let live = super::broker_config::live_config(&node.config, &image.broker_configs);
            let (records, reply) = decide(&live, &image, command);
            if records.is_empty() {
                return ControllerResponse::Admin {
                    reply,
                    offset: image.version,
                };
            }
            match node.propose(records).await {
                Ok(offset) => ControllerResponse::Admin { reply, offset },
                Err(failure) => failure_response(node, failure),
            }
        }
        ControllerRequest::AlterPartition(request) => {
            let _permit = controller.change_lock.acquire_permit(1).await;
            let image = node.image();
            match decide_alter_partition(&image, &request) {
                Ok(AlterDecision::Unchanged(record)) => {
                    ControllerResponse::PartitionAltered(Ok(record))
                }
                Ok(AlterDecision::Change(change, record)) => {
                    match node.propose(vec![change]).await {
                        Ok(_) => {
                            tracing::info!(topic = %request.topic, partition = request.partition,
                                isr = ?record.isr, partition_epoch = record.partition_epoch,
                                "ISR changed");
                            ControllerResponse::PartitionAltered(Ok(record))
                        }
                        Err(failure) => failure_response(node, failure),
                    }
                }
                Err(code) => {
                    tracing::info!(topic = %request.topic, partition = request.partition,
                        leader = request.node_id, error = code, "AlterPartition refused");
                    ControllerResponse::PartitionAltered(Err(code))
                }
            }
        }
        ControllerRequest::DescribeQuorum => unreachable!("answered above"),
    }
}

/// What an AlterPartition comes to.
#[derive(Debug, PartialEq)]
pub enum AlterDecision {
    /// The ISR asked for is the current one: nothing to write.
    Unchanged(super::metadata::PartitionRecord),
    /// The record to commit and the partition as it will be.
    Change(MetadataRecord, super::metadata::PartitionRecord),
}

/// Checks an AlterPartition against `image` (Kafka's rules, in Kafka's order) and decides the
/// change: only the current leader, at the current leader and partition epochs, may change
/// the ISR; the new ISR holds the leader, only replicas, each once, and every member it adds
/// is a live broker.
pub fn decide_alter_partition(
    image: &MetadataImage,
    request: &super::rpc::AlterPartitionRequest,
) -> Result<AlterDecision, i16> {
    let live_epoch = image.brokers.get(&request.node_id).map(|b| b.broker_epoch);
    if live_epoch != Some(request.broker_epoch) {
        return Err(ResponseError::StaleBrokerEpoch.code());
    }
    let topic = image
        .topic(&request.topic)
        .ok_or(ResponseError::UnknownTopicOrPartition.code())?;
    if !request.topic_id.is_nil() && request.topic_id != topic.topic_id {
        return Err(ResponseError::UnknownTopicId.code());
    }
    let record = usize::try_from(request.partition)
        .ok()
        .and_then(|index| topic.partitions.get(index))
        .ok_or(ResponseError::UnknownTopicOrPartition.code())?;
    if record.leader != request.node_id {
        return Err(ResponseError::NotLeaderOrFollower.code());
    }
    if request.leader_epoch < record.leader_epoch {
        return Err(ResponseError::FencedLeaderEpoch.code());
    }
    if request.leader_epoch > record.leader_epoch {
        return Err(ResponseError::UnknownLeaderEpoch.code());
    }
    if request.partition_epoch != record.partition_epoch {
        return Err(ResponseError::InvalidUpdateVersion.code());
    }
    let new_isr = &request.new_isr;
    let mut distinct = new_isr.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if !new_isr.contains(&record.leader)
        || distinct.len() != new_isr.len()
        || !new_isr.iter().all(|id| record.replicas.contains(id))
    {
        return Err(ResponseError::InvalidRequest.code());
    }
    let joins_dead = new_isr
        .iter()
        .any(|id| !record.isr.contains(id) && !image.is_live(*id));
    if joins_dead {
        return Err(ResponseError::IneligibleReplica.code());
    }
    if *new_isr == record.isr {
        return Ok(AlterDecision::Unchanged(record.clone()));
    }
    let mut changed = record.clone();
    changed.isr = new_isr.clone();
    changed.partition_epoch += 1;
    let change = MetadataRecord::ChangePartition {
        name: topic.name.clone(),
        topic_id: topic.topic_id,
        partition: request.partition,
        leader: changed.leader,
        leader_epoch: changed.leader_epoch,
        partition_epoch: changed.partition_epoch,
        isr: changed.isr.clone(),
    };
    Ok(AlterDecision::Change(change, changed))
}

/// DescribeQuorum's answer, from the leader's view of its followers (None off the leader).
fn quorum_report(node: &MetadataNode) -> Option<super::rpc::QuorumReport> {
    let status = node.quorum_status()?;
    if status.leader_id != Some(node.node_id) {
        return None;
    }
    let now = now_ms();
    let voters = status
        .voters
        .iter()
        .map(|voter| super::rpc::ReplicaReport {
            node_id: voter.node_id,
            log_end_offset: if voter.node_id == node.node_id {
                status.last_index
            } else {
                voter.matched_index
            },
            last_fetch_timestamp_ms: if voter.recently_active { now } else { -1 },
            last_caught_up_timestamp_ms: if voter.matched_index >= status.commit_index {
                now
            } else {
                -1
            },
        })
        .collect();
    let voter_ids: Vec<i32> = status.voters.iter().map(|v| v.node_id).collect();
    let observers = node
        .controller
        .observers
        .borrow()
        .iter()
        .filter(|(id, _)| !voter_ids.contains(id))
        .map(|(&node_id, &(offset, at_ms))| super::rpc::ReplicaReport {
            node_id,
            log_end_offset: offset,
            last_fetch_timestamp_ms: at_ms,
            last_caught_up_timestamp_ms: if offset >= status.commit_index {
                at_ms
            } else {
                -1
            },
        })
        .collect();
    Some(super::rpc::QuorumReport {
        leader_id: node.node_id,
        term: status.term,
        high_watermark: status.commit_index,
        voters,
        observers,
    })
}

/// The records an admin command writes and the answer it gets, decided against `image`.
pub fn decide(
    config: &BrokerConfig,
    image: &MetadataImage,
    command: AdminCommand,
) -> (Vec<MetadataRecord>, AdminReply) {
    match command {
        AdminCommand::CreateTopics {
            topics,
            validate_only,
        } => {
            let (records, results) = create_topics(config, image, &topics);
            let records = if validate_only { Vec::new() } else { records };
            (records, AdminReply::CreateTopics(results))
        }
        AdminCommand::DeleteTopics { names } => {
            let mut records = Vec::new();
            let results = names
                .iter()
                .map(|name| match image.topic(name) {
                    // The group coordinator's state lives there: deleting it would lose every
                    // committed offset, so Kafka refuses it.
                    Some(_) if name == crate::group::OFFSETS_TOPIC => Err(AdminError::new(
                        ResponseError::InvalidTopicException,
                        format!("cannot delete internal topic {name}"),
                    )),
                    Some(topic) => {
                        records.push(MetadataRecord::DeleteTopic {
                            name: name.clone(),
                            topic_id: topic.topic_id,
                        });
                        Ok(topic.topic_id)
                    }
                    None => Err(AdminError::new(
                        ResponseError::UnknownTopicOrPartition,
                        format!("topic {name:?} does not exist"),
                    )),
                })
                .collect();
            (records, AdminReply::DeleteTopics(results))
        }
        AdminCommand::CreatePartitions {
            requests,
            validate_only,
        } => {
            let (records, results) = create_partitions(config, image, &requests);
            let records = if validate_only { Vec::new() } else { records };
            (records, AdminReply::Changes(results))
        }
        AdminCommand::AlterTopicConfigs {
            requests,
            replace_all,
            validate_only,
        } => {
            let mut records = Vec::new();
            let results = requests
                .iter()
                .map(|(name, changes)| {
                    let topic = image.topic(name).ok_or_else(|| {
                        AdminError::new(
                            ResponseError::UnknownTopicOrPartition,
                            format!("topic {name:?} does not exist"),
                        )
                    })?;
                    let mut configs = if replace_all {
                        TopicConfigs::new()
                    } else {
                        topic.configs.clone()
                    };
                    apply_config_changes(&mut configs, changes, config)?;
                    records.push(MetadataRecord::SetTopicConfigs {
                        name: name.clone(),
                        topic_id: topic.topic_id,
                        configs,
                    });
                    Ok(())
                })
                .collect();
            let records = if validate_only { Vec::new() } else { records };
            (records, AdminReply::Changes(results))
        }
        AdminCommand::AllocateProducerIds { .. } => {
            let start = image.next_producer_id_block_start;
            (
                vec![MetadataRecord::ProducerIds {
                    next_block_start: start + PRODUCER_ID_BLOCK_SIZE,
                }],
                AdminReply::ProducerIds(Ok(start)),
            )
        }
        AdminCommand::AlterScramCredentials { changes } => {
            let mut records = Vec::new();
            let results = changes
                .iter()
                .map(|change| {
                    let key = (change.user.clone(), change.mechanism);
                    if change.credential.is_none() && !image.scram_credentials.contains_key(&key) {
                        return Err(AdminError::new(
                            ResponseError::ResourceNotFound,
                            format!(
                                "no {} credential for user {}",
                                change.mechanism.name(),
                                change.user
                            ),
                        ));
                    }
                    records.push(MetadataRecord::SetScramCredential {
                        user: change.user.clone(),
                        mechanism: change.mechanism,
                        credential: change.credential.clone(),
                    });
                    Ok(())
                })
                .collect();
            (records, AdminReply::Changes(results))
        }
        AdminCommand::CreateAcls { bindings } => create_acls(config, image, &bindings),
        AdminCommand::DeleteAcls { filters } => delete_acls(image, &filters),
        AdminCommand::AlterClientQuotas {
            entries,
            validate_only,
        } => {
            let (records, reply) = alter_client_quotas(config, image, &entries);
            let records = if validate_only { Vec::new() } else { records };
            (records, reply)
        }
        AdminCommand::AlterBrokerConfigs {
            requests,
            replace_all,
            validate_only,
        } => {
            let (records, reply) = alter_broker_configs(image, &requests, replace_all);
            let records = if validate_only { Vec::new() } else { records };
            (records, reply)
        }
    }
}

/// Scopes one AlterConfigs may carry for brokers: one request is one metadata log entry.
pub const MAX_BROKER_CONFIG_SCOPES_PER_REQUEST: usize = 1_000;

/// AlterConfigs on BROKER resources: each scope's changes are applied and checked whole
/// (Kafka's dynamic config rules, [`super::broker_config::apply_changes`]) against the image
/// with the earlier scopes of the request applied; what changed becomes `SetBrokerConfig`
/// records.
fn alter_broker_configs(
    image: &MetadataImage,
    requests: &[(Option<i32>, Vec<ConfigChange>)],
    replace_all: bool,
) -> (Vec<MetadataRecord>, AdminReply) {
    use super::broker_config::{self, ChangeError};
    let mut records = Vec::new();
    let mut store = (*image.broker_configs).clone();
    let results = requests
        .iter()
        .enumerate()
        .map(|(index, (node_id, changes))| {
            if index >= MAX_BROKER_CONFIG_SCOPES_PER_REQUEST {
                return Err(AdminError::new(
                    ResponseError::InvalidRequest,
                    format!("at most {MAX_BROKER_CONFIG_SCOPES_PER_REQUEST} broker resources per request"),
                ));
            }
            let current = store.scope(*node_id).cloned().unwrap_or_default();
            let changed = broker_config::apply_changes(&current, *node_id, changes, replace_all)
                .map_err(|error| match error {
                    ChangeError::InvalidRequest(message) => {
                        AdminError::new(ResponseError::InvalidRequest, message)
                    }
                    ChangeError::InvalidConfig(message) => {
                        AdminError::new(ResponseError::InvalidConfig, message)
                    }
                })?;
            for (key, value) in &changed {
                if current.get(key) != Some(value) {
                    records.push(MetadataRecord::SetBrokerConfig {
                        node_id: *node_id,
                        key: key.clone(),
                        value: Some(value.clone()),
                    });
                    store.set(*node_id, key, Some(value));
                }
            }
            for key in current.keys().filter(|key| !changed.contains_key(*key)) {
                records.push(MetadataRecord::SetBrokerConfig {
                    node_id: *node_id,
                    key: key.clone(),
                    value: None,
                });
                store.set(*node_id, key, None);
            }
            Ok(())
        })
        .collect();
    (records, AdminReply::Changes(results))
}

/// Entries one AlterClientQuotas may carry: one request is one metadata log entry.
pub const MAX_QUOTA_ENTRIES_PER_REQUEST: usize = 10_000;

/// AlterClientQuotas: each entry is checked whole (Kafka: one bad key fails its entry and
/// changes nothing of it) against the image with the earlier entries applied; a new entity
/// past `max_client_quotas` fails.
fn alter_client_quotas(
    config: &BrokerConfig,
    image: &MetadataImage,
    entries: &[super::rpc::QuotaAlteration],
) -> (Vec<MetadataRecord>, AdminReply) {
    use crate::security::quota;
    let mut records = Vec::new();
    let mut store = (*image.client_quotas).clone();
    let results = entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let invalid = |message: String| AdminError::new(ResponseError::InvalidRequest, message);
            if index >= MAX_QUOTA_ENTRIES_PER_REQUEST {
                return Err(invalid(format!(
                    "at most {MAX_QUOTA_ENTRIES_PER_REQUEST} entries per request"
                )));
            }
            if entry.entity.user.is_none() && entry.entity.client_id.is_none() {
                return Err(invalid("Invalid empty client quota entity".into()));
            }
            let current = store.get(&entry.entity).cloned().unwrap_or_default();
            let mut changed = current.clone();
            for (key, value) in &entry.ops {
                match value {
                    Some(value) => {
                        quota::validate_value(key, *value).map_err(invalid)?;
                        changed.insert(key.clone(), *value);
                    }
                    None => {
                        changed.remove(key);
                    }
                }
            }
            if current.is_empty() && !changed.is_empty() && store.len() >= config.max_client_quotas
            {
                return Err(AdminError::new(
                    ResponseError::PolicyViolation,
                    format!(
                        "the cluster holds max_client_quotas ({}) quota entities",
                        config.max_client_quotas
                    ),
                ));
            }
            for (key, value) in &changed {
                if current.get(key) != Some(value) {
                    records.push(MetadataRecord::SetClientQuota {
                        entity: entry.entity.clone(),
                        key: key.clone(),
                        value: Some(*value),
                    });
                    store.set(&entry.entity, key, Some(*value));
                }
            }
            for key in current.keys().filter(|key| !changed.contains_key(*key)) {
                records.push(MetadataRecord::SetClientQuota {
                    entity: entry.entity.clone(),
                    key: key.clone(),
                    value: None,
                });
                store.set(&entry.entity, key, None);
            }
            Ok(())
        })
        .collect();
    (records, AdminReply::Changes(results))
}

/// Bindings one CreateAcls or DeleteAcls may add or remove: the records of one request are one
/// metadata log entry, which must stay well inside a controller frame.
pub const MAX_ACL_CHANGES_PER_REQUEST: usize = 10_000;

/// CreateAcls: each valid binding not yet present becomes a record; an existing binding is a
/// success without a record (as in Kafka); past `max_acls` a binding fails.
fn create_acls(
    config: &BrokerConfig,
    image: &MetadataImage,
    bindings: &[crate::security::acl::AclBinding],
) -> (Vec<MetadataRecord>, AdminReply) {
    let mut records = Vec::new();
    let mut added = std::collections::BTreeSet::new();
    let results = bindings
        .iter()
        .map(|binding| {
            binding
                .validate()
                .map_err(|message| AdminError::new(ResponseError::InvalidRequest, message))?;
            if image.acls.contains(binding) || added.contains(binding) {
                return Ok(());
            }
            if image.acls.len() + added.len() >= config.max_acls {
                return Err(AdminError::new(
                    ResponseError::PolicyViolation,
                    format!(
                        "the cluster holds max_acls ({}) ACL bindings",
                        config.max_acls
                    ),
                ));
            }
            if added.len() >= MAX_ACL_CHANGES_PER_REQUEST {
                return Err(AdminError::new(
                    ResponseError::InvalidRequest,
                    format!("at most {MAX_ACL_CHANGES_PER_REQUEST} ACL bindings per request"),
                ));
            }
            added.insert(binding.clone());
            records.push(MetadataRecord::CreateAcl {
                binding: binding.clone(),
            });
            Ok(())
        })
        .collect();
    (records, AdminReply::Changes(results))
}

/// DeleteAcls: every binding a filter matches is removed; a binding two filters match is
/// reported (and removed) once, under the first.
fn delete_acls(
    image: &MetadataImage,
    filters: &[crate::security::acl::AclFilter],
) -> (Vec<MetadataRecord>, AdminReply) {
    let mut records = Vec::new();
    let mut removed = std::collections::BTreeSet::new();
    let results = filters
        .iter()
        .map(|filter| {
            filter
                .validate()
                .map_err(|message| AdminError::new(ResponseError::InvalidRequest, message))?;
            let matched: Vec<_> = image
                .acls
                .matching(filter)
                .into_iter()
                .filter(|binding| !removed.contains(binding))
                .collect();
            if removed.len() + matched.len() > MAX_ACL_CHANGES_PER_REQUEST {
                return Err(AdminError::new(
                    ResponseError::InvalidRequest,
                    format!(
                        "the filters match more than {MAX_ACL_CHANGES_PER_REQUEST} ACL bindings; \
                         delete them with narrower filters"
                    ),
                ));
            }
            for binding in &matched {
                removed.insert(binding.clone());
                records.push(MetadataRecord::DeleteAcl {
                    binding: binding.clone(),
                });
            }
            Ok(matched)
        })
        .collect();
    (records, AdminReply::DeletedAcls(results))
}

fn replication_factor_error(wanted: usize, live: usize) -> AdminError {
    AdminError::new(
        ResponseError::InvalidReplicationFactor,
        format!("Replication factor: {wanted} larger than available brokers: {live}."),
    )
}

/// The leader of a new partition: its first replica that is live, else none.
fn first_live(image: &MetadataImage, replicas: &[i32]) -> i32 {
    replicas
        .iter()
        .copied()
        .find(|&id| image.is_live(id))
        .unwrap_or(NO_LEADER)
}

fn create_topics(
    config: &BrokerConfig,
    image: &MetadataImage,
    topics: &[NewTopic],
) -> (Vec<MetadataRecord>, Vec<Result<TopicRecord, AdminError>>) {
    // Later topics of the same request are placed over the load of the earlier ones.
    let mut working = image.clone();
    let mut records = Vec::new();
    let mut results = Vec::with_capacity(topics.len());
    for topic in topics {
        let outcome = check_new_topic(config, &working, topic).and_then(|(partitions, configs)| {
            let replica_lists = if topic.assignments.is_empty() {
                let factor = if topic.replication_factor == -1 {
                    config.default_replication_factor
                } else {
                    topic.replication_factor
                };
                if factor < 1 {
                    return Err(AdminError::new(
                        ResponseError::InvalidReplicationFactor,
                        "replication factor must be at least 1",
                    ));
                }
                place_replicas(&working, partitions as usize, factor as usize).map_err(
                    |PlacementError::NotEnoughBrokers { wanted, live }| {
                        replication_factor_error(wanted, live)
                    },
                )?
            } else {
                topic.assignments.clone()
            };
            let record = TopicRecord {
                name: topic.name.clone(),
                topic_id: Uuid::new_v4(),
                partitions: replica_lists
                    .into_iter()
                    .map(|replicas| {
                        let leader = first_live(&working, &replicas);
                        records::new_partition(replicas, leader)
                    })
                    .collect(),
                configs,
            };
            working
                .topics
                .insert(record.name.clone(), Arc::new(record.clone()));
            Ok(record)
        });
        if let Ok(record) = &outcome {
            records.push(MetadataRecord::CreateTopic {
                topic: record.clone(),
            });
        }
        results.push(outcome);
    }
    (records, results)
}

fn check_new_topic(
    config: &BrokerConfig,
    image: &MetadataImage,
    topic: &NewTopic,
) -> Result<(i32, TopicConfigs), AdminError> {
    validate_topic_name(&topic.name)?;
    if image.topic(&topic.name).is_some() {
        return Err(AdminError::new(
            ResponseError::TopicAlreadyExists,
            format!("Topic '{}' already exists.", topic.name),
        ));
    }
    if image.topics.len() >= config.max_topics {
        return Err(AdminError::new(
            ResponseError::PolicyViolation,
            format!(
                "the cluster holds its limit of {} topics",
                config.max_topics
            ),
        ));
    }
    let partitions = if !topic.assignments.is_empty() {
        let width = topic.assignments[0].len();
        for replicas in &topic.assignments {
            let mut distinct = replicas.clone();
            distinct.sort_unstable();
            distinct.dedup();
            if replicas.is_empty()
                || replicas.len() != width
                || distinct.len() != replicas.len()
                || replicas.iter().any(|id| !image.brokers.contains_key(id))
            {
                return Err(AdminError::new(
                    ResponseError::InvalidReplicaAssignment,
                    format!(
                        "replica assignment {replicas:?} is empty, repeats a broker, differs in size from the others or names brokers that are not registered"
                    ),
                ));
            }
        }
        topic.assignments.len() as i32
    } else if topic.partitions == -1 {
        config.num_partitions
    } else {
        topic.partitions
    };
    if partitions < 1 || partitions > config.max_partitions_per_topic {
        return Err(AdminError::new(
            ResponseError::InvalidPartitions,
            format!(
                "number of partitions must be between 1 and {}",
                config.max_partitions_per_topic
            ),
        ));
    }
    let mut configs = TopicConfigs::new();
    for (key, value) in &topic.configs {
        let Some(value) = value else { continue };
        topic_config::validate(key, value)
            .map_err(|e| AdminError::new(ResponseError::InvalidConfig, e.to_string()))?;
        configs.insert(key.clone(), value.clone());
    }
    Ok((partitions, configs))
}

fn create_partitions(
    config: &BrokerConfig,
    image: &MetadataImage,
    requests: &[(String, i32)],
) -> (Vec<MetadataRecord>, Vec<Result<(), AdminError>>) {
    let mut working = image.clone();
    let mut records = Vec::new();
    let results = requests
        .iter()
        .map(|(name, count)| {
            let topic = working.topic(name).cloned().ok_or_else(|| {
                AdminError::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!("topic {name:?} does not exist"),
                )
            })?;
            if *count <= topic.partition_count() {
                return Err(AdminError::new(
                    ResponseError::InvalidPartitions,
                    format!(
                        "Topic currently has {} partitions, which is higher than the requested {count}.",
                        topic.partition_count()
                    ),
                ));
            }
            if *count > config.max_partitions_per_topic {
                return Err(AdminError::new(
                    ResponseError::InvalidPartitions,
                    format!("at most {} partitions", config.max_partitions_per_topic),
                ));
            }
            let added = (*count - topic.partition_count()) as usize;
            let factor = topic.partitions.first().map_or(1, |p| p.replicas.len());
            let lists = place_replicas(&working, added, factor).map_err(
                |PlacementError::NotEnoughBrokers { wanted, live }| {
                    replication_factor_error(wanted, live)
                },
            )?;
            let partitions: Vec<_> = lists
                .into_iter()
                .map(|replicas| {
                    let leader = first_live(&working, &replicas);
                    records::new_partition(replicas, leader)
                })
                .collect();
            let mut record = (*topic).clone();
            record.partitions.extend(partitions.iter().cloned());
            working.topics.insert(name.clone(), Arc::new(record));
            records.push(MetadataRecord::AddPartitions {
                name: name.clone(),
                topic_id: topic.topic_id,
                partitions,
            });
            Ok(())
        })
        .collect();
    (records, results)
}

fn apply_config_changes(
    configs: &mut TopicConfigs,
    changes: &[ConfigChange],
    broker: &BrokerConfig,
) -> Result<(), AdminError> {
    let invalid = |message: String| AdminError::new(ResponseError::InvalidConfig, message);
    for change in changes {
        let current = || {
            configs
                .get(&change.key)
                .cloned()
                .unwrap_or_else(|| topic_config::default_value(&change.key, broker))
        };
        let new_value = match change.op {
            ConfigOp::Delete => {
                topic_config::validate(
                    &change.key,
                    &topic_config::default_value(&change.key, broker),
                )
                .map_err(|e| invalid(e.to_string()))?;
                configs.remove(&change.key);
                continue;
            }
            ConfigOp::Set => change
                .value
                .clone()
                .ok_or_else(|| invalid(format!("no value given for {}", change.key)))?,
            ConfigOp::Append | ConfigOp::Subtract => {
                if change.key != "cleanup.policy" {
                    return Err(invalid(format!(
                        "{} is not a list; APPEND and SUBTRACT apply to list configs only",
                        change.key
                    )));
                }
                let value = change.value.clone().unwrap_or_default();
                let mut items: Vec<String> = current()
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if change.op == ConfigOp::Append {
                        if !items.iter().any(|i| i == item) {
                            items.push(item.to_string());
                        }
                    } else {
                        items.retain(|i| i != item);
                    }
                }
                items.join(",")
            }
        };
        topic_config::validate(&change.key, &new_value).map_err(|e| invalid(e.to_string()))?;
        configs.insert(change.key.clone(), new_value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each item's error code in a per-item reply (0: applied).
    fn change_codes(reply: AdminReply) -> Vec<i16> {
        let AdminReply::Changes(results) = reply else {
            panic!("changes expected");
        };
        results
            .iter()
            .map(|r| r.as_ref().err().map_or(0, |e| e.code))
            .collect()
    }

    fn image_with_live_brokers(count: i32) -> MetadataImage {
        let mut image = MetadataImage::empty();
        for node_id in 1..=count {
            records::apply_batch(
                &mut image,
                node_id as u64 * 2 - 1,
                &[MetadataRecord::RegisterBroker {
                    node_id,
                    incarnation_id: Uuid::new_v4(),
                    host: "127.0.0.1".into(),
                    port: 9000 + node_id,
                    rack: None,
                    shard_count: 1,
                    endpoints: Vec::new(),
                }],
            );
            let epoch = image.version;
            records::apply_batch(
                &mut image,
                node_id as u64 * 2,
                &[MetadataRecord::UnfenceBroker {
                    node_id,
                    broker_epoch: epoch,
                }],
            );
        }
        image
    }

    fn new_topic(name: &str, partitions: i32, replication_factor: i16) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor,
            assignments: Vec::new(),
            configs: Vec::new(),
        }
    }

    #[test]
    fn alter_partition_checks_leader_epochs_and_membership() {
        let config = BrokerConfig::default();
        let mut image = image_with_live_brokers(3);
        let (records, _) = decide(
            &config,
            &image,
            AdminCommand::CreateTopics {
                topics: vec![new_topic("r", 1, 3)],
                validate_only: false,
            },
        );
        let next = image.version + 1;
        records::apply_batch(&mut image, next, &records);
        let topic = image.topic("r").unwrap().clone();
        let record = topic.partitions[0].clone();
        let leader = record.leader;
        let follower = *record.replicas.iter().find(|&&id| id != leader).unwrap();
        let leader_broker_epoch = image.brokers[&leader].broker_epoch;
        let topic_id = topic.topic_id;
        let request = |isr: Vec<i32>| super::super::rpc::AlterPartitionRequest {
            node_id: leader,
            broker_epoch: leader_broker_epoch,
            topic: "r".into(),
            topic_id,
            partition: 0,
            leader_epoch: record.leader_epoch,
            partition_epoch: record.partition_epoch,
            new_isr: isr,
        };
        let shrunk: Vec<i32> = record
            .isr
            .iter()
            .copied()
            .filter(|&id| id != follower)
            .collect();
        let Ok(AlterDecision::Change(change, changed)) =
            decide_alter_partition(&image, &request(shrunk.clone()))
        else {
            panic!("a valid shrink is accepted");
        };
        assert_eq!(changed.isr, shrunk);
        assert_eq!(changed.partition_epoch, record.partition_epoch + 1);
        assert_eq!(changed.leader_epoch, record.leader_epoch);
        assert_eq!(
            decide_alter_partition(&image, &request(record.isr.clone())),
            Ok(AlterDecision::Unchanged(record.clone()))
        );
        let code = |r: &super::super::rpc::AlterPartitionRequest| {
            decide_alter_partition(&image, r).unwrap_err()
        };
        let mut stale = request(shrunk.clone());
        stale.partition_epoch -= 1;
        assert_eq!(code(&stale), ResponseError::InvalidUpdateVersion.code());
        let mut old_leader = request(shrunk.clone());
        old_leader.leader_epoch -= 1;
        assert_eq!(code(&old_leader), ResponseError::FencedLeaderEpoch.code());
        let mut future = request(shrunk.clone());
        future.leader_epoch += 1;
        assert_eq!(code(&future), ResponseError::UnknownLeaderEpoch.code());
        let mut not_leader = request(shrunk.clone());
        not_leader.node_id = follower;
        not_leader.broker_epoch = image.brokers[&follower].broker_epoch;
        assert_eq!(code(&not_leader), ResponseError::NotLeaderOrFollower.code());
        let mut old_incarnation = request(shrunk.clone());
        old_incarnation.broker_epoch += 100;
        assert_eq!(
            code(&old_incarnation),
            ResponseError::StaleBrokerEpoch.code()
        );
        assert_eq!(
            code(&request(vec![follower])),
            ResponseError::InvalidRequest.code()
        );
        assert_eq!(
            code(&request(vec![leader, leader])),
            ResponseError::InvalidRequest.code()
        );
        assert_eq!(
            code(&request(vec![leader, 99])),
            ResponseError::InvalidRequest.code()
        );
        let mut other_topic = request(shrunk.clone());
        other_topic.topic_id = Uuid::new_v4();
        assert_eq!(code(&other_topic), ResponseError::UnknownTopicId.code());

        // A fenced follower cannot join.
        records::apply_batch(&mut image, next + 1, &[change]);
        let after = image.topic("r").unwrap().partitions[0].clone();
        let epoch = image.brokers[&follower].broker_epoch;
        records::apply_batch(
            &mut image,
            next + 2,
            &[MetadataRecord::FenceBroker {
                node_id: follower,
                broker_epoch: epoch,
            }],
        );
        let mut rejoin = request(record.isr.clone());
        rejoin.partition_epoch = after.partition_epoch;
        assert_eq!(
            decide_alter_partition(&image, &rejoin),
            Err(ResponseError::IneligibleReplica.code())
        );
    }

    #[test]
    fn create_topics_spreads_leaders_and_refuses_more_replicas_than_brokers() {
        let config = BrokerConfig::default();
        let image = image_with_live_brokers(3);
        let (records, reply) = decide(
            &config,
            &image,
            AdminCommand::CreateTopics {
                topics: vec![
                    new_topic("a", 6, 1),
                    new_topic("b", 1, 4),
                    new_topic("a", 1, 1),
                ],
                validate_only: false,
            },
        );
        let AdminReply::CreateTopics(results) = reply else {
            panic!("create topics reply");
        };
        let created = results[0].as_ref().unwrap();
        let mut leaders: Vec<i32> = created.partitions.iter().map(|p| p.leader).collect();
        leaders.sort();
        assert_eq!(leaders, vec![1, 1, 2, 2, 3, 3]);
        assert_eq!(
            results[1].as_ref().unwrap_err().code,
            ResponseError::InvalidReplicationFactor.code()
        );
        // The second "a" of the same request sees the first.
        assert_eq!(
            results[2].as_ref().unwrap_err().code,
            ResponseError::TopicAlreadyExists.code()
        );
        assert_eq!(records.len(), 1);
    }

    #[test]
    fn validate_only_writes_nothing_and_assignments_name_registered_brokers() {
        let config = BrokerConfig::default();
        let image = image_with_live_brokers(2);
        let mut explicit = new_topic("x", -1, -1);
        explicit.assignments = vec![vec![2], vec![1]];
        let (records, reply) = decide(
            &config,
            &image,
            AdminCommand::CreateTopics {
                topics: vec![explicit],
                validate_only: true,
            },
        );
        assert!(records.is_empty());
        let AdminReply::CreateTopics(results) = reply else {
            panic!("create topics reply");
        };
        let leaders: Vec<i32> = results[0]
            .as_ref()
            .unwrap()
            .partitions
            .iter()
            .map(|p| p.leader)
            .collect();
        assert_eq!(leaders, vec![2, 1]);
        let mut bad = new_topic("y", -1, -1);
        bad.assignments = vec![vec![7]];
        let (_, reply) = decide(
            &config,
            &image,
            AdminCommand::CreateTopics {
                topics: vec![bad],
                validate_only: false,
            },
        );
        let AdminReply::CreateTopics(results) = reply else {
            panic!("create topics reply");
        };
        assert_eq!(
            results[0].as_ref().unwrap_err().code,
            ResponseError::InvalidReplicaAssignment.code()
        );
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_x-y").is_ok());
        for bad in ["", ".", "..", "has space", "sl/ash", &"x".repeat(250)] {
            let error = validate_topic_name(bad).unwrap_err();
            assert_eq!(error.code, ResponseError::InvalidTopicException.code());
        }
    }

    #[test]
    fn incremental_changes_set_delete_append_subtract() {
        let broker = BrokerConfig::default();
        let mut configs = TopicConfigs::new();
        let change = |key: &str, op, value: Option<&str>| ConfigChange {
            key: key.into(),
            op,
            value: value.map(String::from),
        };
        apply_config_changes(
            &mut configs,
            &[
                change("retention.ms", ConfigOp::Set, Some("100")),
                change("cleanup.policy", ConfigOp::Append, Some("compact")),
            ],
            &broker,
        )
        .unwrap();
        assert_eq!(configs["retention.ms"], "100");
        assert_eq!(configs["cleanup.policy"], "delete,compact");
        apply_config_changes(
            &mut configs,
            &[
                change("retention.ms", ConfigOp::Delete, None),
                change("cleanup.policy", ConfigOp::Subtract, Some("delete")),
            ],
            &broker,
        )
        .unwrap();
        assert!(!configs.contains_key("retention.ms"));
        assert_eq!(configs["cleanup.policy"], "compact");
        let error = apply_config_changes(
            &mut configs,
            &[change("retention.ms", ConfigOp::Set, Some("x"))],
            &broker,
        )
        .unwrap_err();
        assert_eq!(error.code, ResponseError::InvalidConfig.code());
    }

    #[test]
    fn acl_commands_validate_deduplicate_and_bound() {
        use crate::security::acl::{
            AclBinding, AclFilter, Operation, PatternType, Permission, ResourceType,
        };
        let binding = |name: &str| AclBinding {
            resource_type: ResourceType::Group,
            resource_name: name.into(),
            pattern_type: PatternType::Literal,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: Operation::Read,
            permission: Permission::Allow,
        };
        let config = BrokerConfig {
            max_acls: 2,
            ..BrokerConfig::default()
        };
        let mut image = MetadataImage::empty();
        let mut bad = binding("g");
        bad.pattern_type = PatternType::Any;
        let (records, reply) = decide(
            &config,
            &image,
            AdminCommand::CreateAcls {
                bindings: vec![binding("a"), binding("a"), bad, binding("b"), binding("c")],
            },
        );
        let codes = change_codes(reply);
        assert_eq!(
            codes,
            vec![
                0,
                0,
                ResponseError::InvalidRequest.code(),
                0,
                ResponseError::PolicyViolation.code()
            ]
        );
        assert_eq!(records.len(), 2);
        records::apply_batch(&mut image, 1, &records);
        let (records, reply) = decide(
            &config,
            &image,
            AdminCommand::DeleteAcls {
                filters: vec![AclFilter::any(), AclFilter::any()],
            },
        );
        let AdminReply::DeletedAcls(results) = reply else {
            panic!("deleted ACLs expected");
        };
        assert_eq!(results[0].as_ref().unwrap().len(), 2);
        assert!(results[1].as_ref().unwrap().is_empty());
        records::apply_batch(&mut image, 2, &records);
        assert!(image.acls.is_empty());
    }

    #[test]
    fn client_quota_alterations_validate_whole_entries_and_bound_entities() {
        use super::super::rpc::QuotaAlteration;
        use crate::security::quota::{EntityName, QuotaEntity};
        let client = |name: &str| QuotaEntity {
            user: None,
            client_id: Some(EntityName::Named(name.into())),
        };
        let alter = |entity: QuotaEntity, ops: &[(&str, Option<f64>)]| QuotaAlteration {
            entity,
            ops: ops.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        };
        let config = BrokerConfig {
            max_client_quotas: 1,
            ..BrokerConfig::default()
        };
        let mut image = MetadataImage::empty();
        let command = |entries, validate_only| AdminCommand::AlterClientQuotas {
            entries,
            validate_only,
        };
        let entries = vec![
            alter(client("a"), &[("producer_byte_rate", Some(100.0))]),
            // A bad key fails the whole entry.
            alter(
                client("a"),
                &[("consumer_byte_rate", Some(5.0)), ("bogus", Some(1.0))],
            ),
            // Past max_client_quotas.
            alter(client("b"), &[("producer_byte_rate", Some(1.0))]),
            alter(client("a"), &[("request_percentage", Some(12.5))]),
        ];
        let (records, reply) = decide(&config, &image, command(entries.clone(), true));
        assert!(records.is_empty(), "validate_only writes nothing");
        let AdminReply::Changes(results) = reply.clone() else {
            panic!("changes expected");
        };
        let codes = change_codes(reply);
        assert_eq!(
            codes,
            vec![
                0,
                ResponseError::InvalidRequest.code(),
                ResponseError::PolicyViolation.code(),
                0
            ]
        );
        assert_eq!(
            results[1].as_ref().unwrap_err().message,
            "Invalid configuration key bogus"
        );
        let (records, _) = decide(&config, &image, command(entries, false));
        assert_eq!(records.len(), 2);
        records::apply_batch(&mut image, 1, &records);
        let values = image.client_quotas.get(&client("a")).unwrap();
        assert_eq!(values["producer_byte_rate"], 100.0);
        assert_eq!(values["request_percentage"], 12.5);
        // Removing every key removes the entity, which frees room for another.
        let (records, _) = decide(
            &config,
            &image,
            command(
                vec![
                    alter(
                        client("a"),
                        &[("producer_byte_rate", None), ("request_percentage", None)],
                    ),
                    alter(client("b"), &[("producer_byte_rate", Some(1.0))]),
                ],
                false,
            ),
        );
        records::apply_batch(&mut image, 2, &records);
        assert!(image.client_quotas.get(&client("a")).is_none());
        assert!(image.client_quotas.get(&client("b")).is_some());
    }

    #[test]
    fn broker_config_alterations_record_only_what_changed() {
        let config = BrokerConfig::default();
        let mut image = MetadataImage::empty();
        let set = |key: &str, value: &str| ConfigChange {
            key: key.into(),
            op: ConfigOp::Set,
            value: Some(value.into()),
        };
        let command = |requests, replace_all, validate_only| AdminCommand::AlterBrokerConfigs {
            requests,
            replace_all,
            validate_only,
        };
        let requests = vec![
            (Some(1), vec![set("log.retention.ms", "1000")]),
            (None, vec![set("message.max.bytes", "2048")]),
            (Some(1), vec![set("log.dirs", "/x")]),
            (
                None,
                vec![set("sasl.kerberos.min.time.before.relogin", "1")],
            ),
            (
                Some(1),
                vec![ConfigChange {
                    key: "num.io.threads".into(),
                    op: ConfigOp::Append,
                    value: Some("1".into()),
                }],
            ),
        ];
        let (records, reply) = decide(&config, &image, command(requests.clone(), false, true));
        assert!(records.is_empty(), "validate_only writes nothing");
        let invalid_request = ResponseError::InvalidRequest.code();
        assert_eq!(
            change_codes(reply),
            vec![
                0,
                0,
                invalid_request,
                invalid_request,
                ResponseError::InvalidConfig.code()
            ]
        );
        let (records, _) = decide(&config, &image, command(requests, false, false));
        assert_eq!(records.len(), 2);
        records::apply_batch(&mut image, 1, &records);
        assert_eq!(
            image.broker_configs.per_broker[&1]["log.retention.ms"],
            "1000"
        );
        assert_eq!(image.broker_configs.default["message.max.bytes"], "2048");
        // Setting the same value again writes nothing; the legacy form replaces the scope.
        let same = vec![(Some(1), vec![set("log.retention.ms", "1000")])];
        let (records, _) = decide(&config, &image, command(same, false, false));
        assert!(records.is_empty());
        let replace = vec![(Some(1), vec![set("num.io.threads", "4")])];
        let (records, _) = decide(&config, &image, command(replace, true, false));
        assert_eq!(records.len(), 2, "one set, one removal");
        records::apply_batch(&mut image, 2, &records);
        assert_eq!(
            image.broker_configs.per_broker[&1],
            BTreeMap::from([("num.io.threads".to_string(), "4".to_string())])
        );
        // A dynamic unclean.leader.election.enable default reaches the controller's decisions.
        let topic = TopicRecord {
            name: "t".into(),
            topic_id: Uuid::nil(),
            partitions: Vec::new(),
            configs: TopicConfigs::new(),
        };
        assert!(!unclean_allowed(&config, &image)(&topic));
        let enable = vec![(None, vec![set("unclean.leader.election.enable", "true")])];
        let (records, _) = decide(&config, &image, command(enable, false, false));
        records::apply_batch(&mut image, 3, &records);
        assert!(unclean_allowed(&config, &image)(&topic));
    }
}
