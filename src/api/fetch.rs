//! Fetch (key 1). Each owner shard reads its partitions in one hop; if fewer than `min_bytes` came
//! back, the request waits on the owners' append notifications (never a polling timer) until data
//! arrives or `max_wait_ms` passes. Reads never go past the high watermark (the last stable
//! offset for read_committed). No incremental sessions yet: every response says session 0, which
//! tells clients to keep sending full requests (KIP-227 allows a broker to decline sessions).

use super::RequestContext;
use crate::log::LogError;
use crate::shard::Shard;
use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Upper bound on a client's `max_wait_ms`, so a request cannot pin resources indefinitely.
const MAX_FETCH_WAIT_MS: u64 = 60_000;
/// Kafka's isolation level code for read_committed.
const READ_COMMITTED: i8 = 1;

#[derive(Clone)]
struct ReadWork {
    slot: (usize, usize),
    topic: String,
    partition: i32,
    fetch_offset: i64,
    max_bytes: usize,
    current_leader_epoch: i32,
}

struct ReadReply {
    slot: (usize, usize),
    error: Option<ResponseError>,
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
    chunks: Vec<Bytes>,
    size_bytes: usize,
}

impl ReadReply {
    fn failed(slot: (usize, usize), error: ResponseError) -> ReadReply {
        ReadReply {
            slot,
            error: Some(error),
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            chunks: Vec::new(),
            size_bytes: 0,
        }
    }
}

pub async fn handle(context: &RequestContext, request: FetchRequest) -> FetchResponse {
    if request.session_id != 0 {
        // We never hand out sessions, so any id the client names is unknown to us.
        return FetchResponse::default()
            .with_error_code(ResponseError::FetchSessionIdNotFound.code())
            .with_session_id(0);
    }
    let shard = &context.shard;
    let image = shard.metadata();
    let by_id = context.api_version >= 13;
    let read_committed = request.isolation_level == READ_COMMITTED;

    let mut responses = Vec::with_capacity(request.topics.len());
    let mut work_by_owner: BTreeMap<usize, Vec<ReadWork>> = BTreeMap::new();
    for (topic_slot, fetch_topic) in request.topics.iter().enumerate() {
        let topic = if by_id {
            image.topic_by_id(fetch_topic.topic_id)
        } else {
            image.topic(fetch_topic.topic.0.as_str())
        };
        let unknown = if by_id {
            ResponseError::UnknownTopicId
        } else {
            ResponseError::UnknownTopicOrPartition
        };
        let mut partitions = Vec::with_capacity(fetch_topic.partitions.len());
        for (partition_slot, fetch_partition) in fetch_topic.partitions.iter().enumerate() {
            let record = topic.and_then(|t| {
                t.partitions
                    .get(usize::try_from(fetch_partition.partition).ok()?)
            });
            let mut data = PartitionData::default()
                .with_partition_index(fetch_partition.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1);
            match (topic, record) {
                (Some(topic), Some(record)) => {
                    work_by_owner
                        .entry(record.shard as usize)
                        .or_default()
                        .push(ReadWork {
                            slot: (topic_slot, partition_slot),
                            topic: topic.name.clone(),
                            partition: fetch_partition.partition,
                            fetch_offset: fetch_partition.fetch_offset,
                            max_bytes: usize::try_from(fetch_partition.partition_max_bytes)
                                .unwrap_or(0),
                            current_leader_epoch: fetch_partition.current_leader_epoch,
                        });
                }
                _ => {
                    let code = if topic.is_some() {
                        ResponseError::UnknownTopicOrPartition
                    } else {
                        unknown
                    };
                    data = data.with_error_code(code.code());
                }
            }
            partitions.push(data);
        }
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(fetch_topic.topic.clone())
                .with_topic_id(fetch_topic.topic_id)
                .with_partitions(partitions),
        );
    }

    let max_wait_ms = u64::try_from(request.max_wait_ms)
        .unwrap_or(0)
        .min(MAX_FETCH_WAIT_MS);
    let deadline = Instant::now() + Duration::from_millis(max_wait_ms);
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0).max(1);
    let replies = loop {
        let replies = read_all(shard, &work_by_owner, read_committed).await;
        let size_bytes: usize = replies.iter().map(|r| r.size_bytes).sum();
        let any_error = replies.iter().any(|r| r.error.is_some());
        if size_bytes >= min_bytes
            || any_error
            || Instant::now() >= deadline
            || work_by_owner.is_empty()
        {
            break replies;
        }
        wait_for_data(shard, &work_by_owner, &replies, deadline).await;
        if Instant::now() >= deadline {
            break read_all(shard, &work_by_owner, read_committed).await;
        }
    };

    // The response bound: partitions in request order until max_bytes, but always the first
    // partition that has data (KIP-74).
    let mut budget_bytes = usize::try_from(request.max_bytes).unwrap_or(usize::MAX);
    let mut replies = replies;
    replies.sort_by_key(|r| r.slot);
    let mut any_data = false;
    for reply in replies {
        let data = &mut responses[reply.slot.0].partitions[reply.slot.1];
        if let Some(error) = reply.error {
            data.error_code = error.code();
        }
        data.high_watermark = reply.high_watermark;
        data.last_stable_offset = reply.last_stable_offset;
        data.log_start_offset = reply.log_start_offset;
        if reply.size_bytes == 0 {
            data.records = Some(Bytes::new());
            continue;
        }
        if any_data && reply.size_bytes > budget_bytes {
            data.records = Some(Bytes::new());
            continue;
        }
        budget_bytes = budget_bytes.saturating_sub(reply.size_bytes);
        any_data = true;
        data.records = Some(concat(reply.chunks, reply.size_bytes));
        if read_committed {
            data.aborted_transactions = Some(Vec::new());
        }
    }
    FetchResponse::default()
        .with_session_id(0)
        .with_responses(responses)
}

fn concat(chunks: Vec<Bytes>, size_bytes: usize) -> Bytes {
    if chunks.len() == 1 {
        return chunks.into_iter().next().expect("one chunk");
    }
    let mut buffer = BytesMut::with_capacity(size_bytes);
    for chunk in chunks {
        buffer.extend_from_slice(&chunk);
    }
    buffer.freeze()
}

/// One hop per owner shard, all at once.
async fn read_all(
    shard: &Rc<Shard>,
    work_by_owner: &BTreeMap<usize, Vec<ReadWork>>,
    read_committed: bool,
) -> Vec<ReadReply> {
    let hops = work_by_owner.iter().map(|(&owner, work)| {
        let work = work.clone();
        let slots: Vec<_> = work.iter().map(|w| w.slot).collect();
        let hop = shard.invoke_on(owner, move |owner_shard| async move {
            let mut replies = Vec::with_capacity(work.len());
            for item in work {
                replies.push(read_on_owner(&owner_shard, item, read_committed).await);
            }
            replies
        });
        async move {
            hop.await.unwrap_or_else(|error| {
                tracing::warn!("fetch hop failed: {error}");
                slots
                    .into_iter()
                    .map(|slot| ReadReply::failed(slot, ResponseError::NotLeaderOrFollower))
                    .collect()
            })
        }
    });
    futures::future::join_all(hops)
        .await
        .into_iter()
        .flatten()
        .collect()
}

async fn read_on_owner(shard: &Shard, work: ReadWork, read_committed: bool) -> ReadReply {
    let Some(partition) = shard.partitions.get(&work.topic, work.partition) else {
        return ReadReply::failed(work.slot, ResponseError::NotLeaderOrFollower);
    };
    let epoch = partition.leader_epoch.get();
    if work.current_leader_epoch >= 0 && work.current_leader_epoch != epoch {
        let error = if work.current_leader_epoch > epoch {
            ResponseError::UnknownLeaderEpoch
        } else {
            ResponseError::FencedLeaderEpoch
        };
        return ReadReply::failed(work.slot, error);
    }
    let high_watermark = partition.high_watermark();
    let last_stable_offset = partition.last_stable_offset();
    let visible_end = if read_committed {
        last_stable_offset
    } else {
        high_watermark
    };
    let mut reply = ReadReply {
        slot: work.slot,
        error: None,
        high_watermark,
        last_stable_offset,
        log_start_offset: partition.log.log_start_offset(),
        chunks: Vec::new(),
        size_bytes: 0,
    };
    if work.fetch_offset >= visible_end && work.fetch_offset <= partition.log.next_offset() {
        return reply;
    }
    match partition
        .log
        .read(work.fetch_offset, work.max_bytes, visible_end)
        .await
    {
        Ok(read) => {
            reply.size_bytes = read.size_bytes;
            reply.chunks = read.chunks;
        }
        Err(LogError::OffsetOutOfRange { .. }) => {
            reply.error = Some(ResponseError::OffsetOutOfRange);
        }
        Err(error) => {
            tracing::error!(topic = %work.topic, partition = work.partition, "read failed: {error}");
            reply.error = Some(ResponseError::KafkaStorageError);
        }
    }
    reply
}

/// Waits until any partition of the request gets new data, or the deadline.
async fn wait_for_data(
    shard: &Rc<Shard>,
    work_by_owner: &BTreeMap<usize, Vec<ReadWork>>,
    replies: &[ReadReply],
    deadline: Instant,
) {
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return;
    }
    let waits = work_by_owner.iter().map(|(&owner, work)| {
        // Wait for offsets past what was just read, so data that arrived meanwhile wakes us.
        let targets: Vec<(String, i32, i64)> = work
            .iter()
            .map(|w| {
                let reply = replies.iter().find(|r| r.slot == w.slot);
                let seen = reply.map(|r| r.high_watermark).unwrap_or(w.fetch_offset);
                (w.topic.clone(), w.partition, seen.max(w.fetch_offset))
            })
            .collect();
        shard
            .invoke_on(owner, move |owner_shard| async move {
                let waits: Vec<_> = targets
                    .iter()
                    .filter_map(|(topic, partition, offset)| {
                        let partition = owner_shard.partitions.get(topic, *partition)?;
                        let offset = *offset;
                        Some(
                            async move { partition.log.wait_for_offset(offset).await }
                                .boxed_local(),
                        )
                    })
                    .collect();
                if waits.is_empty() {
                    glommio::timer::sleep(remaining).await;
                    return;
                }
                futures::select! {
                    _ = futures::future::select_all(waits).fuse() => {},
                    _ = glommio::timer::sleep(remaining).fuse() => {},
                }
            })
            .boxed_local()
    });
    let waits: Vec<_> = waits.collect();
    if waits.is_empty() {
        return;
    }
    futures::select! {
        _ = futures::future::select_all(waits).fuse() => {},
        _ = glommio::timer::sleep(remaining).fuse() => {},
    }
}
