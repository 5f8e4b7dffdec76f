//! OffsetForLeaderEpoch (key 23, v2–4): for each partition, the end offset of the requested
//! leader epoch in the leader's log (the first offset of the next larger epoch, or the log end
//! for the latest epoch), and the epoch it belongs to (the requested one or the largest below
//! it). Followers ask it after every leader change to find where their log diverged
//! (KIP-101/KIP-279); clients ask it to detect a truncated position (KIP-320). Served by the
//! leader only, with the current-leader-epoch fencing of Fetch.

use super::owners::{run_on_owners, Slot, Slotted};
use super::RequestContext;
use crate::security::acl::{Operation, ResourceType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};
use std::collections::BTreeMap;

struct Lookup {
    slot: Slot,
    topic: String,
    partition: i32,
    current_leader_epoch: i32,
    leader_epoch: i32,
}

struct Found {
    slot: Slot,
    error: Option<ResponseError>,
    leader_epoch: i32,
    end_offset: i64,
}

impl Found {
    fn failed(slot: Slot, error: ResponseError) -> Found {
        Found {
            slot,
            error: Some(error),
            leader_epoch: -1,
            end_offset: -1,
        }
    }
}

impl Slotted for Lookup {
    fn slot(&self) -> Slot {
        self.slot
    }
}

pub async fn handle(
    context: &RequestContext,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let shard = &context.shard;
    let image = shard.metadata();
    // Kafka: a follower (replica id >= 0) needs CLUSTER_ACTION, and every topic DESCRIBE.
    let follower_authorized =
        request.replica_id.0 < 0 || context.authorize_cluster(Operation::ClusterAction);
    let mut topics = Vec::with_capacity(request.topics.len());
    let mut by_owner: BTreeMap<usize, Vec<Lookup>> = BTreeMap::new();
    for (topic_slot, topic) in request.topics.into_iter().enumerate() {
        let record = image.topic(topic.topic.0.as_str());
        let authorized = follower_authorized
            && context.authorize(
                Operation::Describe,
                ResourceType::Topic,
                topic.topic.0.as_str(),
            );
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for (partition_slot, partition) in topic.partitions.into_iter().enumerate() {
            let owner = record
                .and_then(|t| t.partitions.get(usize::try_from(partition.partition).ok()?))
                .map(|p| crate::cluster::leader_shard(shard, p));
            let mut response = EpochEndOffset::default()
                .with_partition(partition.partition)
                .with_leader_epoch(-1)
                .with_end_offset(-1);
            match owner {
                _ if !authorized => {
                    response.error_code = ResponseError::TopicAuthorizationFailed.code();
                }
                Some(Err(error)) => response.error_code = error.code(),
                Some(Ok(owner)) => by_owner.entry(owner).or_default().push(Lookup {
                    slot: (topic_slot, partition_slot),
                    topic: topic.topic.0.to_string(),
                    partition: partition.partition,
                    current_leader_epoch: partition.current_leader_epoch,
                    leader_epoch: partition.leader_epoch,
                }),
                None => response.error_code = ResponseError::UnknownTopicOrPartition.code(),
            }
            partitions.push(response);
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions),
        );
    }
    let found = run_on_owners(
        shard,
        by_owner,
        |owner_shard, lookup| async move { lookup_on_owner(&owner_shard, lookup) },
        |slot| Found::failed(slot, ResponseError::NotLeaderOrFollower),
    )
    .await;
    for item in found {
        let response = &mut topics[item.slot.0].partitions[item.slot.1];
        match item.error {
            Some(error) => response.error_code = error.code(),
            None => {
                response.leader_epoch = item.leader_epoch;
                response.end_offset = item.end_offset;
            }
        }
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

fn lookup_on_owner(shard: &crate::shard::Shard, lookup: Lookup) -> Found {
    let Some(partition) = shard.partitions.get(&lookup.topic, lookup.partition) else {
        return Found::failed(lookup.slot, ResponseError::NotLeaderOrFollower);
    };
    if let Err(error) = partition.check_leader_epoch(lookup.current_leader_epoch) {
        return Found::failed(lookup.slot, error);
    }
    if !partition
        .replication
        .borrow()
        .leads_in(partition.leader_epoch.get())
    {
        return Found::failed(lookup.slot, ResponseError::NotLeaderOrFollower);
    }
    let (leader_epoch, end_offset) = partition
        .log
        .end_offset_for_epoch_as_leader(lookup.leader_epoch, partition.leader_epoch.get());
    Found {
        slot: lookup.slot,
        error: None,
        leader_epoch,
        end_offset,
    }
}
