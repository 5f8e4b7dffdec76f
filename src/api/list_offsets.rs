//! ListOffsets (key 2): earliest (-2), latest (-1), max timestamp (-3) and offset for a timestamp.

use super::RequestContext;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use std::collections::BTreeMap;

const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const READ_COMMITTED: i8 = 1;

struct Lookup {
    slot: (usize, usize),
    topic: String,
    partition: i32,
    timestamp: i64,
}

struct Found {
    slot: (usize, usize),
    error: Option<ResponseError>,
    offset: i64,
    timestamp: i64,
    leader_epoch: i32,
}

pub async fn handle(context: &RequestContext, request: ListOffsetsRequest) -> ListOffsetsResponse {
    let shard = &context.shard;
    let image = shard.metadata();
    let read_committed = request.isolation_level == READ_COMMITTED;
    let mut topics = Vec::with_capacity(request.topics.len());
    let mut by_owner: BTreeMap<usize, Vec<Lookup>> = BTreeMap::new();
    for (topic_slot, topic) in request.topics.into_iter().enumerate() {
        let record = image.topic(topic.name.0.as_str());
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for (partition_slot, partition) in topic.partitions.into_iter().enumerate() {
            let owner = record
                .and_then(|t| {
                    t.partitions
                        .get(usize::try_from(partition.partition_index).ok()?)
                })
                .map(|p| p.shard as usize);
            let mut response = ListOffsetsPartitionResponse::default()
                .with_partition_index(partition.partition_index)
                .with_timestamp(-1)
                .with_offset(-1)
                .with_leader_epoch(-1);
            match owner {
                Some(owner) => by_owner.entry(owner).or_default().push(Lookup {
                    slot: (topic_slot, partition_slot),
                    topic: topic.name.0.to_string(),
                    partition: partition.partition_index,
                    timestamp: partition.timestamp,
                }),
                None => {
                    response.error_code = ResponseError::UnknownTopicOrPartition.code();
                }
            }
            partitions.push(response);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }

    let hops = by_owner.into_iter().map(|(owner, lookups)| {
        shard.invoke_on(owner, move |owner_shard| async move {
            let mut found = Vec::with_capacity(lookups.len());
            for lookup in lookups {
                found.push(lookup_on_owner(&owner_shard, lookup, read_committed).await);
            }
            found
        })
    });
    for outcome in futures::future::join_all(hops).await {
        let Ok(found) = outcome else { continue };
        for item in found {
            let response = &mut topics[item.slot.0].partitions[item.slot.1];
            match item.error {
                Some(error) => response.error_code = error.code(),
                None => {
                    response.offset = item.offset;
                    response.timestamp = item.timestamp;
                    // The leader epoch field exists from v4 on.
                    if context.api_version >= 4 {
                        response.leader_epoch = item.leader_epoch;
                    }
                }
            }
        }
    }
    ListOffsetsResponse::default().with_topics(topics)
}

async fn lookup_on_owner(
    shard: &crate::shard::Shard,
    lookup: Lookup,
    read_committed: bool,
) -> Found {
    let mut found = Found {
        slot: lookup.slot,
        error: None,
        offset: -1,
        timestamp: -1,
        leader_epoch: -1,
    };
    let Some(partition) = shard.partitions.get(&lookup.topic, lookup.partition) else {
        found.error = Some(ResponseError::NotLeaderOrFollower);
        return found;
    };
    found.leader_epoch = partition.leader_epoch.get();
    match lookup.timestamp {
        LATEST_TIMESTAMP => {
            found.offset = if read_committed {
                partition.last_stable_offset()
            } else {
                partition.high_watermark()
            };
        }
        EARLIEST_TIMESTAMP => found.offset = partition.log.log_start_offset(),
        MAX_TIMESTAMP | 0.. => {
            let high_watermark = partition.high_watermark();
            let result = scan_timestamps(&partition.log, lookup.timestamp, high_watermark).await;
            match result {
                Ok(Some((offset, timestamp))) => {
                    found.offset = offset;
                    found.timestamp = timestamp;
                }
                // No record at or after the timestamp: Kafka answers offset -1.
                Ok(None) => {}
                Err(error) => {
                    tracing::error!(topic = %lookup.topic, partition = lookup.partition, "timestamp lookup failed: {error}");
                    found.error = Some(ResponseError::KafkaStorageError);
                }
            }
        }
        _ => found.error = Some(ResponseError::InvalidRequest),
    }
    found
}

/// Bytes read per step of a timestamp scan.
const TIMESTAMP_SCAN_STEP_BYTES: usize = 1024 * 1024;

/// Finds, by reading batch headers from the log start, the batch that answers the lookup (the
/// first whose max timestamp is at or after `timestamp`, or for [`MAX_TIMESTAMP`] the one with
/// the largest), then the record inside it, as Kafka answers: the first record at or after the
/// timestamp, or the first record carrying the largest timestamp. Linear in the log size.
async fn scan_timestamps(
    log: &crate::log::PartitionLog,
    timestamp: i64,
    high_watermark: i64,
) -> Result<Option<(i64, i64)>, crate::log::LogError> {
    use crate::protocol::record_batch::RecordBatchHeader;
    let mut offset = log.log_start_offset();
    // (batch bytes, its max timestamp) of the best candidate so far.
    let mut best: Option<(bytes::Bytes, i64)> = None;
    'scan: while offset < high_watermark {
        let read = log.read(offset, TIMESTAMP_SCAN_STEP_BYTES, high_watermark).await?;
        if read.size_bytes == 0 {
            break;
        }
        for chunk in &read.chunks {
            let mut position = 0;
            while position < chunk.len() {
                let Ok(header) = RecordBatchHeader::parse(&chunk[position..]) else {
                    return Err(crate::log::LogError::Corrupt(format!(
                        "unparseable batch at offset {offset}"
                    )));
                };
                let end = position + header.total_size_bytes();
                let batch = chunk.slice(position..end.min(chunk.len()));
                if timestamp == MAX_TIMESTAMP {
                    if best.as_ref().is_none_or(|(_, max)| header.max_timestamp_ms > *max) {
                        best = Some((batch, header.max_timestamp_ms));
                    }
                } else if header.max_timestamp_ms >= timestamp && !header.is_control() {
                    best = Some((batch, header.max_timestamp_ms));
                    break 'scan;
                }
                offset = header.last_offset() + 1;
                position = end;
            }
        }
    }
    let Some((batch, max_timestamp_ms)) = best else {
        return Ok(None);
    };
    let target = if timestamp == MAX_TIMESTAMP {
        max_timestamp_ms
    } else {
        timestamp
    };
    Ok(Some(record_at_or_after(batch, target, timestamp == MAX_TIMESTAMP)?))
}

/// The first record of `batch` whose timestamp is at or after `target` (or equal to it, when
/// `exact`). Decodes the batch, decompressing if needed.
fn record_at_or_after(
    mut batch: bytes::Bytes,
    target: i64,
    exact: bool,
) -> Result<(i64, i64), crate::log::LogError> {
    let base_offset = crate::protocol::record_batch::RecordBatchHeader::parse(&batch)
        .map(|header| (header.base_offset, header.max_timestamp_ms))
        .map_err(|e| crate::log::LogError::Corrupt(e.to_string()))?;
    let records = kafka_protocol::records::RecordBatchDecoder::decode(&mut batch)
        .map_err(|e| crate::log::LogError::Corrupt(format!("cannot decode batch: {e}")))?;
    let found = records.records.iter().find(|record| {
        if exact {
            record.timestamp == target
        } else {
            record.timestamp >= target
        }
    });
    // The batch header promised such a record; fall back to the batch start if records disagree.
    Ok(found
        .map(|record| (record.offset, record.timestamp))
        .unwrap_or(base_offset))
}
