//! ListOffsets (key 2): earliest (-2), earliest local (-4), latest (-1), max timestamp (-3) and
//! offset for a timestamp, the last two through the log's time index.

use super::owners::{run_on_owners, Slot, Slotted};
use super::RequestContext;
use crate::security::acl::{Operation, ResourceType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use std::collections::BTreeMap;

const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
/// KIP-405: the earliest offset on local storage (the log start here: no tiered storage).
const EARLIEST_LOCAL_TIMESTAMP: i64 = -4;
const READ_COMMITTED: i8 = 1;

struct Lookup {
    slot: Slot,
    topic: String,
    partition: i32,
    timestamp: i64,
}

struct Found {
    slot: Slot,
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
        let authorized = context.authorize(
            Operation::Describe,
            ResourceType::Topic,
            topic.name.0.as_str(),
        );
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for (partition_slot, partition) in topic.partitions.into_iter().enumerate() {
            let owner = record
                .and_then(|t| {
                    t.partitions
                        .get(usize::try_from(partition.partition_index).ok()?)
                })
                .map(|p| crate::cluster::leader_shard(shard, p));
            let mut response = ListOffsetsPartitionResponse::default()
                .with_partition_index(partition.partition_index)
                .with_timestamp(-1)
                .with_offset(-1)
                .with_leader_epoch(-1);
            match owner {
                _ if !authorized => {
                    response.error_code = ResponseError::TopicAuthorizationFailed.code();
                }
                Some(Err(error)) => response.error_code = error.code(),
                Some(Ok(owner)) => by_owner.entry(owner).or_default().push(Lookup {
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

    let found = run_on_owners(
        shard,
        by_owner,
        move |owner_shard, lookup| async move {
            lookup_on_owner(&owner_shard, lookup, read_committed).await
        },
        |slot| Found {
            slot,
            error: Some(ResponseError::NotLeaderOrFollower),
            offset: -1,
            timestamp: -1,
            leader_epoch: -1,
        },
    )
    .await;
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
    ListOffsetsResponse::default().with_topics(topics)
}

impl Slotted for Lookup {
    fn slot(&self) -> Slot {
        self.slot
    }
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
        EARLIEST_LOCAL_TIMESTAMP => found.offset = partition.log.log_start_offset(),
        MAX_TIMESTAMP | 0.. => {
            // Through the segments' time index: O(log n) in segments and index entries, then
            // one index interval of headers and one batch decoded.
            let high_watermark = partition.high_watermark();
            let result = if lookup.timestamp == MAX_TIMESTAMP {
                partition.log.offset_of_max_timestamp(high_watermark).await
            } else {
                partition
                    .log
                    .offset_for_timestamp(lookup.timestamp, high_watermark)
                    .await
            };
            match result {
                Ok(Some(hit)) => {
                    found.offset = hit.offset;
                    found.timestamp = hit.timestamp_ms;
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
