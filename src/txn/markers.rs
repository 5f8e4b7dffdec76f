//! Transaction markers: the control batch (COMMIT or ABORT) that ends a producer's transaction
//! on one partition, and its delivery to the partitions' leaders (WriteTxnMarkers).
//!
//! A marker is appended on the partition's owner shard with its offset assigned and the
//! producer state updated in the same step (no await between), so the last stable offset and
//! the aborted index always match the log's order. It is acknowledged once every in-sync replica
//! has it, like an acks=all produce. Partitions led by another node get the marker over the
//! Kafka protocol (WriteTxnMarkers to that node).

use crate::cluster::Partition;
use crate::shard::Shard;
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{ProducerId, WriteTxnMarkersRequest};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

/// The end of one producer's transaction, as written to each of its partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnMarker {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// COMMIT when true, ABORT when false.
    pub commit: bool,
    /// Epoch of the coordinator partition's leadership that decided it (fences markers of a
    /// coordinator that lost its partition).
    pub coordinator_epoch: i32,
}

/// How long a marker waits for the in-sync replicas (Kafka writes markers with acks=all and
/// `request.timeout.ms`).
const MARKER_REPLICATION_TIMEOUT_MS: u64 = 30_000;
/// Connect and request bound for markers sent to another node.
const PEER_MARKER_TIMEOUT_MS: u64 = 30_000;
/// Largest WriteTxnMarkers response read from a peer.
const PEER_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// WriteTxnMarkers version used towards peers (v1 is the flexible one every broker serves).
const PEER_MARKERS_VERSION: i16 = 1;

/// Control record type of the marker (the record key's second int16).
const CONTROL_TYPE_ABORT: i16 = 0;
const CONTROL_TYPE_COMMIT: i16 = 1;

/// The control batch of `marker`: one record whose key is (version 0, type) and whose value is
/// (version 0, coordinator epoch), with the transactional and control attribute bits, the
/// producer's id and epoch, and no sequence. Base offset and leader epoch are set by the log.
pub fn control_batch(marker: &TxnMarker, timestamp_ms: i64) -> Bytes {
    let control_type = if marker.commit {
        CONTROL_TYPE_COMMIT
    } else {
        CONTROL_TYPE_ABORT
    };
    // The record: attributes, timestamp delta 0, offset delta 0, key (4 bytes), value
    // (6 bytes), no headers; lengths are zigzag varints (4 → 8, 6 → 12).
    let mut record = Vec::with_capacity(20);
    record.push(0); // attributes
    record.push(0); // timestamp delta
    record.push(0); // offset delta
    record.push(8); // key length 4
    record.extend_from_slice(&0i16.to_be_bytes());
    record.extend_from_slice(&control_type.to_be_bytes());
    record.push(12); // value length 6
    record.extend_from_slice(&0i16.to_be_bytes());
    record.extend_from_slice(&marker.coordinator_epoch.to_be_bytes());
    record.push(0); // header count
    let record_length = record.len() as u8;
    assert!(record_length < 64, "one-byte zigzag length");

    const ATTRIBUTES: i16 = 0x10 | 0x20; // transactional | control
    let mut batch = Vec::with_capacity(61 + 1 + record.len());
    batch.extend_from_slice(&0i64.to_be_bytes()); // base offset
    batch.extend_from_slice(&0i32.to_be_bytes()); // length, set below
    batch.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    batch.push(2); // magic
    batch.extend_from_slice(&0u32.to_be_bytes()); // crc, set below
    batch.extend_from_slice(&ATTRIBUTES.to_be_bytes());
    batch.extend_from_slice(&0i32.to_be_bytes()); // last offset delta
    batch.extend_from_slice(&timestamp_ms.to_be_bytes()); // base timestamp
    batch.extend_from_slice(&timestamp_ms.to_be_bytes()); // max timestamp
    batch.extend_from_slice(&marker.producer_id.to_be_bytes());
    batch.extend_from_slice(&marker.producer_epoch.to_be_bytes());
    batch.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    batch.extend_from_slice(&1i32.to_be_bytes()); // record count
    batch.push(record_length << 1);
    batch.extend_from_slice(&record);
    let length = (batch.len() - 12) as i32;
    batch[8..12].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(batch)
}

/// Writes `marker` to every partition in `partitions` at its leader (shards of this node
/// directly, other nodes over WriteTxnMarkers), each acknowledged once every in-sync replica
/// has it. The result per partition is in the order given.
pub async fn write_markers(
    shard: &Rc<Shard>,
    marker: TxnMarker,
    partitions: Vec<(String, i32)>,
) -> Vec<((String, i32), Result<(), ResponseError>)> {
    let image = shard.metadata();
    let mut results: Vec<Option<Result<(), ResponseError>>> = vec![None; partitions.len()];
    let mut local: BTreeMap<usize, Vec<(usize, String, i32)>> = BTreeMap::new();
    let mut remote: BTreeMap<i32, Vec<(usize, String, i32)>> = BTreeMap::new();
    for (slot, (topic, partition)) in partitions.iter().enumerate() {
        let record = image
            .topic(topic)
            .and_then(|t| t.partitions.get(usize::try_from(*partition).ok()?));
        let Some(record) = record else {
            results[slot] = Some(Err(ResponseError::UnknownTopicOrPartition));
            continue;
        };
        match crate::cluster::leader_shard(shard, record) {
            Ok(owner) => local
                .entry(owner)
                .or_default()
                .push((slot, topic.clone(), *partition)),
            Err(ResponseError::NotLeaderOrFollower) if image.is_live(record.leader) => remote
                .entry(record.leader)
                .or_default()
                .push((slot, topic.clone(), *partition)),
            Err(error) => results[slot] = Some(Err(error)),
        }
    }
    let local_writes = local.into_iter().map(|(owner, work)| async move {
        let outcome = shard
            .invoke_on(owner, move |owner_shard| async move {
                let mut outcomes = Vec::with_capacity(work.len());
                for (slot, topic, partition) in work {
                    let outcome = append_marker(&owner_shard, &topic, partition, marker).await;
                    outcomes.push((slot, outcome));
                }
                outcomes
            })
            .await;
        outcome.unwrap_or_default()
    });
    let remote_writes = remote
        .into_iter()
        .map(|(node, work)| async move { send_to_node(shard, node, marker, work).await });
    let (local_outcomes, remote_outcomes) = futures::join!(
        futures::future::join_all(local_writes),
        futures::future::join_all(remote_writes)
    );
    for (slot, outcome) in local_outcomes.into_iter().chain(remote_outcomes).flatten() {
        results[slot] = Some(outcome);
    }
    partitions
        .into_iter()
        .zip(results)
        .map(|(partition, result)| {
            // A shard that could not be reached leaves its slots unanswered.
            (
                partition,
                result.unwrap_or(Err(ResponseError::NotLeaderOrFollower)),
            )
        })
        .collect()
}

/// Sends the markers of `work` to the node leading those partitions.
async fn send_to_node(
    shard: &Rc<Shard>,
    node: i32,
    marker: TxnMarker,
    work: Vec<(usize, String, i32)>,
) -> Vec<(usize, Result<(), ResponseError>)> {
    let failed = |work: &[(usize, String, i32)], error: ResponseError| {
        work.iter()
            .map(|(slot, _, _)| (*slot, Err(error)))
            .collect()
    };
    let Some(broker) = shard.metadata().brokers.get(&node).cloned() else {
        return failed(&work, ResponseError::NotLeaderOrFollower);
    };
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (_, topic, partition) in &work {
        topics.entry(topic.as_str()).or_default().push(*partition);
    }
    let request =
        WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
            .with_producer_id(ProducerId(marker.producer_id))
            .with_producer_epoch(marker.producer_epoch)
            .with_transaction_result(marker.commit)
            .with_coordinator_epoch(marker.coordinator_epoch)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(topic, partitions)| {
                        WritableTxnMarkerTopic::default()
                            .with_name(crate::api::topic_name(topic))
                            .with_partition_indexes(partitions)
                    })
                    .collect(),
            )]);
    let timeout = Duration::from_millis(PEER_MARKER_TIMEOUT_MS);
    let address = format!("{}:{}", broker.host, broker.port);
    let response = async {
        let mut connection = crate::cluster::replication::connection::PeerConnection::connect(
            &shard.inter_broker,
            &broker,
            timeout,
            PEER_MAX_RESPONSE_BYTES,
        )
        .await?;
        connection
            .call(&request, PEER_MARKERS_VERSION, timeout)
            .await
    }
    .await;
    let response = match response {
        Ok(response) => response,
        Err(error) => {
            tracing::warn!(node, %address, "cannot send transaction markers: {error}");
            return failed(&work, ResponseError::NotLeaderOrFollower);
        }
    };
    let mut codes: BTreeMap<(String, i32), i16> = BTreeMap::new();
    for result in response.markers {
        for topic in result.topics {
            for partition in topic.partitions {
                codes.insert(
                    (topic.name.0.to_string(), partition.partition_index),
                    partition.error_code,
                );
            }
        }
    }
    work.into_iter()
        .map(|(slot, topic, partition)| {
            let outcome =
                match codes.get(&(topic, partition)) {
                    Some(0) => Ok(()),
                    Some(&code) => Err(ResponseError::try_from_code(code)
                        .unwrap_or(ResponseError::UnknownServerError)),
                    None => Err(ResponseError::NotLeaderOrFollower),
                };
            (slot, outcome)
        })
        .collect()
}

/// Appends `marker` to the partition on this (its owner) shard and waits until every
/// in-sync replica has it.
pub async fn append_marker(
    shard: &Rc<Shard>,
    topic: &str,
    partition_index: i32,
    marker: TxnMarker,
) -> Result<(), ResponseError> {
    let Some(partition) = shard.partitions.get(topic, partition_index) else {
        return Err(ResponseError::NotLeaderOrFollower);
    };
    let leader_epoch = partition.leader_epoch.get();
    if !partition.replication.borrow().leads_in(leader_epoch) {
        return Err(ResponseError::NotLeaderOrFollower);
    }
    let now_ms = crate::log::now_ms();
    // Check, state change and offset assignment with no await between them.
    let marker_offset = {
        let mut producers = partition.producers.borrow_mut();
        producers.check_marker(
            marker.producer_id,
            marker.producer_epoch,
            marker.coordinator_epoch,
        )?;
        let marker_offset = partition.log.next_offset();
        producers.apply_marker(
            marker.producer_id,
            marker.producer_epoch,
            marker.commit,
            marker.coordinator_epoch,
            marker_offset,
            now_ms,
        );
        marker_offset
    };
    let appended = partition
        .log
        .append(control_batch(&marker, now_ms), 1, leader_epoch)
        .await;
    match appended {
        Ok(outcome) => assert_eq!(outcome.base_offset, marker_offset),
        Err(error) => {
            tracing::error!(
                topic,
                partition = partition_index,
                producer_id = marker.producer_id,
                "transaction marker append failed: {error}"
            );
            return Err(ResponseError::KafkaStorageError);
        }
    }
    wait_replicated(&partition, marker_offset, leader_epoch).await?;
    if topic == crate::group::OFFSETS_TOPIC {
        crate::group::complete_transaction(
            shard,
            partition_index,
            marker.producer_id,
            marker.commit,
        )
        .await;
    }
    Ok(())
}

/// Waits until the high watermark passes `offset`, or fails once this node stops leading in
/// `leader_epoch` or the timeout passes.
async fn wait_replicated(
    partition: &Partition,
    offset: i64,
    leader_epoch: i32,
) -> Result<(), ResponseError> {
    let committed = partition.log.wait_for_high_watermark(offset);
    futures::pin_mut!(committed);
    let outcome = futures::future::poll_fn(|context| {
        if std::future::Future::poll(committed.as_mut(), context).is_ready() {
            return std::task::Poll::Ready(if partition.high_watermark() > offset {
                Ok(())
            } else {
                Err(ResponseError::KafkaStorageError)
            });
        }
        if !partition.replication.borrow().leads_in(leader_epoch) {
            return std::task::Poll::Ready(Err(ResponseError::NotLeaderOrFollower));
        }
        std::task::Poll::Pending
    });
    let timeout = Duration::from_millis(MARKER_REPLICATION_TIMEOUT_MS);
    match glommio::timer::timeout(timeout, async { Ok(outcome.await) }).await {
        Ok(outcome) => outcome,
        Err(_) => Err(ResponseError::RequestTimedOut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::record_batch::{validate_batch, RecordBatchHeader};
    use crate::txn::producer_state::control_marker_type;

    #[test]
    fn control_batches_are_valid_and_say_what_they_end() {
        for commit in [true, false] {
            let marker = TxnMarker {
                producer_id: 4711,
                producer_epoch: 3,
                commit,
                coordinator_epoch: 9,
            };
            let batch = control_batch(&marker, 1_700_000_000_000);
            let header = validate_batch(&batch, usize::MAX).expect("valid batch");
            assert!(header.is_control() && header.is_transactional());
            assert_eq!(header.producer_id, 4711);
            assert_eq!(header.producer_epoch, 3);
            assert_eq!(header.base_sequence, -1);
            assert_eq!(header.record_count, 1);
            let parsed = RecordBatchHeader::parse(&batch).unwrap();
            assert_eq!(control_marker_type(&batch, &parsed), Some(commit));
        }
    }
}
