//! Produce (key 0). Batches are validated on the connection's shard (CRC, length, count, without
//! decompressing; record by record only where the topic's policy needs it: `record_policy`),
//! then each owner shard appends its partitions' batches; one hop per owner shard
//! per request, however many partitions it owns. The response is assembled in request order.
//!
//! acks=all: refused with NOT_ENOUGH_REPLICAS before appending while the ISR is smaller than
//! `min.insync.replicas`; after appending, answered once the high watermark passes the batch
//! (every ISR member has it), or with REQUEST_TIMED_OUT at the request's timeout,
//! NOT_LEADER_OR_FOLLOWER if leadership moved meanwhile, NOT_ENOUGH_REPLICAS_AFTER_APPEND if
//! the ISR shrank below the minimum on the way.

use super::owners::{run_on_owners, Slot, Slotted};
use super::record_policy::{stamp_log_append_time, RecordPolicy, RecordRejection};
use super::{Outcome, RequestContext};
use crate::cluster::topic_config;
use crate::log::LogError;
use crate::protocol::record_batch::{validate_batches, BatchError};
use crate::security::acl::{Operation, ResourceType};
use crate::security::quota::QuotaKind;
use crate::shard::Shard;
use crate::txn::producer_state::{ProducerBatch, SequenceCheck};
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::Decodable;
use std::collections::BTreeMap;
use std::rc::Rc;

/// One partition's batches on their way to the owner shard.
struct AppendWork {
    slot: Slot,
    topic: String,
    partition: i32,
    batches: Bytes,
    record_count: u32,
    /// Idempotent producer fields, when the batches carry a producer id.
    producer: Option<ProducerBatch>,
    /// The request's transactional id (transactional batches are checked against it).
    transactional_id: Option<String>,
    /// acks=1 or all: under the sync flush policy, answer only once fdatasync covered it (as
    /// Kafka flushes in the append path before answering, whatever the acks).
    acknowledged: bool,
    /// acks=all: answer once every in-sync replica has the batches, within `timeout_ms`.
    acks_all: bool,
    timeout_ms: u64,
}

/// Longest an acks=all produce waits for its replicas, whatever the request asks.
const MAX_PRODUCE_TIMEOUT_MS: u64 = 300_000;

/// What the owner shard reports back for one partition.
struct AppendReply {
    slot: Slot,
    /// `None` when the append succeeded.
    error: Option<ResponseError>,
    base_offset: i64,
    log_start_offset: i64,
}

pub async fn handle_frame(context: &RequestContext, mut body: Bytes) -> Outcome {
    let request = match ProduceRequest::decode(&mut body, context.api_version) {
        Ok(request) => request,
        Err(error) => {
            return Outcome::Close(format!(
                "malformed Produce v{} request: {error}",
                context.api_version
            ))
        }
    };
    let acks = request.acks;
    let quota = context.client_quota(QuotaKind::Produce);
    let mut response = handle(context, request).await;
    if let Some((tags, bound)) = quota {
        // Kafka counts the whole request against producer_byte_rate, acks=0 included.
        let throttle_ms = context.record_quota(
            QuotaKind::Produce,
            tags,
            bound,
            context.request_size_bytes as f64,
        );
        response.throttle_time_ms = i32::try_from(throttle_ms).unwrap_or(i32::MAX);
    }
    if acks == 0 {
        // No response is expected, so an error is told the way Kafka tells it: by closing the
        // connection, after which the client refreshes its metadata.
        let first_error = response
            .responses
            .iter()
            .flat_map(|topic| topic.partition_responses.iter())
            .find(|partition| partition.error_code != 0);
        if let Some(partition) = first_error {
            return Outcome::Close(format!(
                "an acks=0 Produce failed (partition {}: error {}); closing so the client \
                 refreshes its metadata",
                partition.index, partition.error_code
            ));
        }
        return Outcome::NoResponse;
    }
    super::respond(context, ApiKey::Produce, &response)
}

fn batch_error_code(error: &BatchError) -> ResponseError {
    match error {
        BatchError::UnsupportedMagic(_) => ResponseError::UnsupportedVersion,
        BatchError::TooLarge { .. } => ResponseError::MessageTooLarge,
        _ => ResponseError::CorruptMessage,
    }
}

fn refusal(error: ResponseError, message: String) -> RecordRejection {
    RecordRejection {
        error,
        record_errors: Vec::new(),
        message,
    }
}

async fn handle(context: &RequestContext, request: ProduceRequest) -> ProduceResponse {
    let shard = &context.shard;
    let image = shard.metadata();
    let acks_valid = matches!(request.acks, -1..=1);
    // Kafka: a transactional produce needs WRITE on its transactional id (else every partition
    // fails), then each topic needs WRITE; authorized partitions are still written.
    let transactional_id_authorized = request.transactional_id.as_ref().is_none_or(|id| {
        context.authorize(
            Operation::Write,
            ResourceType::TransactionalId,
            id.0.as_str(),
        )
    });

    let mut responses: Vec<TopicProduceResponse> = Vec::with_capacity(request.topic_data.len());
    let mut work_by_owner: BTreeMap<usize, Vec<AppendWork>> = BTreeMap::new();
    for (topic_slot, topic_data) in request.topic_data.into_iter().enumerate() {
        let topic = if context.api_version >= 13 {
            image.topic_by_id(topic_data.topic_id).cloned()
        } else {
            image.topic(topic_data.name.0.as_str()).cloned()
        };
        let topic_authorized = match &topic {
            Some(topic) => context.authorize(Operation::Write, ResourceType::Topic, &topic.name),
            // An unknown topic id stays unknown; an unknown name needs WRITE on it.
            None => {
                context.api_version >= 13
                    || context.authorize(
                        Operation::Write,
                        ResourceType::Topic,
                        topic_data.name.0.as_str(),
                    )
            }
        };
        let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
        for (partition_slot, data) in topic_data.partition_data.into_iter().enumerate() {
            let mut response = PartitionProduceResponse::default()
                .with_index(data.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            let owner = topic
                .as_ref()
                .and_then(|t| t.partitions.get(usize::try_from(data.index).ok()?))
                .map(|record| crate::cluster::leader_shard(shard, record));
            let outcome: Result<AppendWork, RecordRejection> = match (&topic, owner) {
                _ if !transactional_id_authorized => Err(refusal(
                    ResponseError::TransactionalIdAuthorizationFailed,
                    "Transactional Id authorization failed.".to_string(),
                )),
                _ if !topic_authorized => Err(refusal(
                    ResponseError::TopicAuthorizationFailed,
                    "Topic authorization failed.".to_string(),
                )),
                _ if !acks_valid => Err(refusal(
                    ResponseError::InvalidRequiredAcks,
                    format!("acks must be -1, 0 or 1, not {}", request.acks),
                )),
                (Some(topic), _)
                    if topic.name == crate::group::OFFSETS_TOPIC
                        || topic.name == crate::txn::TRANSACTION_STATE_TOPIC =>
                {
                    Err(refusal(
                        ResponseError::InvalidTopicException,
                        format!("Cannot append to internal topic {}", topic.name),
                    ))
                }
                (Some(_), Some(Err(error))) => Err(refusal(
                    error,
                    format!(
                        "this broker (node {}) does not lead this partition",
                        shard.config.node_id
                    ),
                )),
                (Some(topic), Some(Ok(_))) => {
                    let records = data.records.unwrap_or_default();
                    let live = shard.live_config();
                    let max_bytes = usize::try_from(topic_config::effective_long(
                        &topic.configs,
                        &live,
                        "max.message.bytes",
                    ))
                    .unwrap_or(live.max_message_bytes);
                    let policy = RecordPolicy::of(&topic.configs, &live);
                    let now_ms = crate::log::now_ms();
                    let checked = validate_batches(&records, max_bytes)
                        .map_err(|error| refusal(batch_error_code(&error), error.to_string()))
                        .and_then(|summary| {
                            if summary.is_control {
                                return Err(refusal(
                                    ResponseError::InvalidRecord,
                                    "clients may not append control batches".to_string(),
                                ));
                            }
                            if summary.is_transactional && summary.producer_id < 0 {
                                return Err(refusal(
                                    ResponseError::InvalidRecord,
                                    "a transactional batch needs a producer id".to_string(),
                                ));
                            }
                            if policy.inspects_records() {
                                let partition_name = format!("{}-{}", topic.name, data.index);
                                policy.check(&records, &partition_name, now_ms)?;
                            }
                            Ok(summary)
                        });
                    match checked {
                        Ok(summary) => Ok(AppendWork {
                            slot: (topic_slot, partition_slot),
                            topic: topic.name.clone(),
                            partition: data.index,
                            batches: if policy.log_append_time {
                                response.log_append_time_ms = now_ms;
                                stamp_log_append_time(&records, now_ms)
                            } else {
                                records
                            },
                            record_count: summary.record_count,
                            producer: (summary.producer_id >= 0).then_some(ProducerBatch {
                                producer_id: summary.producer_id,
                                producer_epoch: summary.producer_epoch,
                                first_sequence: summary.base_sequence,
                                record_count: summary.record_count,
                                transactional: summary.is_transactional,
                            }),
                            transactional_id: request
                                .transactional_id
                                .as_ref()
                                .map(|id| id.0.to_string()),
                            acknowledged: request.acks != 0,
                            acks_all: request.acks == -1,
                            timeout_ms: u64::try_from(request.timeout_ms)
                                .unwrap_or(0)
                                .clamp(1, MAX_PRODUCE_TIMEOUT_MS),
                        }),
                        Err(rejection) => {
                            tracing::warn!(
                                peer = %context.peer,
                                topic = %topic.name,
                                partition = data.index,
                                records_refused = rejection.record_errors.len(),
                                "rejected produce batch: {}",
                                rejection.message
                            );
                            Err(rejection)
                        }
                    }
                }
                _ => Err(refusal(
                    ResponseError::UnknownTopicOrPartition,
                    "This server does not host this topic-partition.".to_string(),
                )),
            };
            match outcome {
                Ok(work) => work_by_owner
                    .entry(owner.and_then(Result::ok).expect("valid work has an owner"))
                    .or_default()
                    .push(work),
                Err(rejection) => {
                    response = response
                        .with_error_code(rejection.error.code())
                        .with_error_message(Some(super::str_bytes(&rejection.message)))
                        .with_record_errors(
                            rejection
                                .record_errors
                                .into_iter()
                                .map(|(batch_index, message)| {
                                    BatchIndexAndErrorMessage::default()
                                        .with_batch_index(batch_index)
                                        .with_batch_index_error_message(Some(super::str_bytes(
                                            &message,
                                        )))
                                })
                                .collect(),
                        );
                }
            }
            partitions.push(response);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic_data.name)
                .with_topic_id(topic_data.topic_id)
                .with_partition_responses(partitions),
        );
    }

    let replies = run_on_owners(
        shard,
        work_by_owner,
        |owner_shard, work| async move { append_on_owner(&owner_shard, work).await },
        |slot| AppendReply {
            slot,
            error: Some(ResponseError::NotLeaderOrFollower),
            base_offset: -1,
            log_start_offset: -1,
        },
    )
    .await;
    for reply in replies {
        let response = &mut responses[reply.slot.0].partition_responses[reply.slot.1];
        match reply.error {
            None => {
                response.base_offset = reply.base_offset;
                response.log_start_offset = reply.log_start_offset;
            }
            Some(error) => {
                response.error_code = error.code();
                response.log_append_time_ms = -1;
            }
        }
    }
    ProduceResponse::default().with_responses(responses)
}

impl Slotted for AppendWork {
    fn slot(&self) -> Slot {
        self.slot
    }
}

impl AppendReply {
    fn failed(slot: Slot, error: ResponseError) -> AppendReply {
        AppendReply {
            slot,
            error: Some(error),
            base_offset: -1,
            log_start_offset: -1,
        }
    }
}

/// KIP-890 part 1: the first transactional batch of a producer on a partition is accepted
/// only if the coordinator has the partition in the producer's open transaction (a late batch
/// of an aborted or timed-out transaction must not open a new one by itself).
async fn verify_transaction(
    shard: &Rc<Shard>,
    work: &AppendWork,
    partition: &crate::cluster::Partition,
) -> Result<(), ResponseError> {
    let Some(producer) = work.producer.filter(|producer| producer.transactional) else {
        return Ok(());
    };
    if partition
        .producers
        .borrow()
        .open_transaction(producer.producer_id)
        .is_some()
    {
        return Ok(());
    }
    let Some(transactional_id) = work.transactional_id.as_deref() else {
        return Err(ResponseError::InvalidTxnState);
    };
    crate::txn::verify_partition_in_transaction(
        shard,
        transactional_id,
        producer.producer_id,
        producer.producer_epoch,
        &work.topic,
        work.partition,
    )
    .await
}

/// Runs on the owner shard.
async fn append_on_owner(shard: &Rc<Shard>, mut work: AppendWork) -> AppendReply {
    let Some(partition) = shard.partitions.get(&work.topic, work.partition) else {
        return AppendReply::failed(work.slot, ResponseError::NotLeaderOrFollower);
    };
    let leader_epoch = partition.leader_epoch.get();
    let min_insync = crate::cluster::replication::min_insync_replicas(shard, &partition);
    {
        let replication = partition.replication.borrow();
        if !replication.leads_in(leader_epoch) {
            return AppendReply::failed(work.slot, ResponseError::NotLeaderOrFollower);
        }
        if work.acks_all && replication.isr.len() < min_insync {
            tracing::debug!(topic = %work.topic, partition = work.partition,
                isr = ?replication.isr, min_insync, "acks=all refused: ISR too small");
            return AppendReply::failed(work.slot, ResponseError::NotEnoughReplicas);
        }
    }
    if let Err(error) = verify_transaction(shard, &work, &partition).await {
        tracing::debug!(topic = %work.topic, partition = work.partition,
            "refused a transactional batch: {error:?}");
        return AppendReply::failed(work.slot, error);
    }
    if !partition.replication.borrow().leads_in(leader_epoch) {
        return AppendReply::failed(work.slot, ResponseError::NotLeaderOrFollower);
    }
    // Sequence check, state update and offset assignment happen with no await between them,
    // so concurrent appends of the same producer cannot interleave.
    if let Some(producer) = &work.producer {
        let check = partition.producers.borrow().check(producer);
        match check {
            SequenceCheck::Append => {
                let base_offset = partition.log.next_offset();
                partition.producers.borrow_mut().record(
                    producer,
                    base_offset,
                    crate::log::now_ms(),
                );
            }
            SequenceCheck::Duplicate { base_offset } => {
                return AppendReply {
                    slot: work.slot,
                    error: None,
                    base_offset,
                    log_start_offset: partition.log.log_start_offset(),
                };
            }
            SequenceCheck::Reject(error) => {
                tracing::debug!(
                    topic = %work.topic,
                    partition = work.partition,
                    producer_id = producer.producer_id,
                    "refused idempotent batch: {error:?}"
                );
                return AppendReply {
                    slot: work.slot,
                    error: Some(error),
                    base_offset: -1,
                    log_start_offset: -1,
                };
            }
        }
    }
    match partition
        .log
        .append(
            std::mem::take(&mut work.batches),
            work.record_count,
            leader_epoch,
        )
        .await
    {
        Ok(appended) => {
            // Sync flush policy: an answered produce is on stable storage. The fdatasync is
            // shared by every append it covers (group commit in the log).
            if work.acknowledged && partition.log.is_sync_policy() {
                if let Err(error) = partition.log.wait_durable(appended.last_offset).await {
                    tracing::error!(topic = %work.topic, partition = work.partition,
                        "fdatasync failed: {error}");
                    return AppendReply::failed(work.slot, ResponseError::KafkaStorageError);
                }
            }
            if work.acks_all {
                let replicated =
                    wait_replicated(&partition, appended.last_offset, leader_epoch, &work).await;
                if let Err(error) = replicated {
                    return AppendReply::failed(work.slot, error);
                }
                if partition.replication.borrow().isr.len() < min_insync {
                    return AppendReply::failed(
                        work.slot,
                        ResponseError::NotEnoughReplicasAfterAppend,
                    );
                }
            }
            AppendReply {
                slot: work.slot,
                error: None,
                base_offset: appended.base_offset,
                log_start_offset: partition.log.log_start_offset(),
            }
        }
        Err(error) => {
            if let Some(producer) = &work.producer {
                partition.producers.borrow_mut().forget(producer);
            }
            tracing::error!(
                topic = %work.topic,
                partition = work.partition,
                "append failed: {error}"
            );
            AppendReply {
                slot: work.slot,
                error: Some(match error {
                    LogError::Io(_) | LogError::Corrupt(_) => ResponseError::KafkaStorageError,
                    _ => ResponseError::NotLeaderOrFollower,
                }),
                base_offset: -1,
                log_start_offset: -1,
            }
        }
    }
}

/// Waits until the high watermark passes `last_offset` (every in-sync replica has it). Fails
/// with NOT_LEADER_OR_FOLLOWER once this node stops leading in `leader_epoch` (the waiters are
/// woken on every leadership change) and with REQUEST_TIMED_OUT at the work's timeout.
async fn wait_replicated(
    partition: &crate::cluster::Partition,
    last_offset: i64,
    leader_epoch: i32,
    work: &AppendWork,
) -> Result<(), ResponseError> {
    let committed = partition.log.wait_for_high_watermark(last_offset);
    futures::pin_mut!(committed);
    let outcome = futures::future::poll_fn(|context| {
        if std::future::Future::poll(committed.as_mut(), context).is_ready() {
            let reached = partition.high_watermark() > last_offset;
            return std::task::Poll::Ready(if reached {
                Ok(())
            } else {
                // The log failed or is closing.
                Err(ResponseError::KafkaStorageError)
            });
        }
        if !partition.replication.borrow().leads_in(leader_epoch) {
            return std::task::Poll::Ready(Err(ResponseError::NotLeaderOrFollower));
        }
        std::task::Poll::Pending
    });
    let timeout = std::time::Duration::from_millis(work.timeout_ms);
    match glommio::timer::timeout(timeout, async { Ok(outcome.await) }).await {
        Ok(outcome) => outcome,
        Err(_) => {
            tracing::debug!(topic = %work.topic, partition = work.partition, last_offset,
                "acks=all produce timed out waiting for the ISR");
            Err(ResponseError::RequestTimedOut)
        }
    }
}
