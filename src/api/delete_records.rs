//! DeleteRecords (key 21): moves each partition's log start offset up (offset -1 means the high
//! watermark). The new log start is persisted before the answer; whole segments below it are
//! deleted right after by a retention pass on the owner shard (unlinks on the blocking pool).
//! One hop per owner shard; the response keeps request order.

use super::owners::{run_on_owners, Slot, Slotted};
use super::RequestContext;
use crate::log::LogError;
use crate::security::acl::{Operation, ResourceType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use std::collections::BTreeMap;

struct Deletion {
    slot: Slot,
    topic: String,
    partition: i32,
    offset: i64,
}

struct Deleted {
    slot: Slot,
    error: Option<ResponseError>,
    low_watermark: i64,
}

pub async fn handle(
    context: &RequestContext,
    request: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let shard = &context.shard;
    let image = shard.metadata();
    let mut topics = Vec::with_capacity(request.topics.len());
    let mut by_owner: BTreeMap<usize, Vec<Deletion>> = BTreeMap::new();
    for (topic_slot, topic) in request.topics.into_iter().enumerate() {
        let record = image.topic(topic.name.0.as_str());
        let authorized = context.authorize(
            Operation::Delete,
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
            let mut result = DeleteRecordsPartitionResult::default()
                .with_partition_index(partition.partition_index)
                .with_low_watermark(-1);
            match owner {
                _ if !authorized => {
                    result.error_code = ResponseError::TopicAuthorizationFailed.code();
                }
                Some(Err(error)) => result.error_code = error.code(),
                Some(Ok(owner)) => by_owner.entry(owner).or_default().push(Deletion {
                    slot: (topic_slot, partition_slot),
                    topic: topic.name.0.to_string(),
                    partition: partition.partition_index,
                    offset: partition.offset,
                }),
                None => result.error_code = ResponseError::UnknownTopicOrPartition.code(),
            }
            partitions.push(result);
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }

    let results = run_on_owners(
        shard,
        by_owner,
        |owner_shard, deletion| async move { delete_on_owner(&owner_shard, deletion).await },
        |slot| Deleted {
            slot,
            error: Some(ResponseError::NotLeaderOrFollower),
            low_watermark: -1,
        },
    )
    .await;
    for result in results {
        let partition = &mut topics[result.slot.0].partitions[result.slot.1];
        match result.error {
            Some(error) => partition.error_code = error.code(),
            None => partition.low_watermark = result.low_watermark,
        }
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

impl Slotted for Deletion {
    fn slot(&self) -> Slot {
        self.slot
    }
}

async fn delete_on_owner(shard: &crate::shard::Shard, deletion: Deletion) -> Deleted {
    let mut deleted = Deleted {
        slot: deletion.slot,
        error: None,
        low_watermark: -1,
    };
    let Some(partition) = shard.partitions.get(&deletion.topic, deletion.partition) else {
        deleted.error = Some(ResponseError::NotLeaderOrFollower);
        return deleted;
    };
    let high_watermark = partition.high_watermark();
    match partition
        .log
        .delete_records_before(deletion.offset, high_watermark)
        .await
    {
        Ok(low_watermark) => {
            deleted.low_watermark = low_watermark;
            // Delete the whole segments below the new start now rather than at the next
            // retention tick; the response does not wait for it.
            let log = partition.log.clone();
            glommio::spawn_local(async move {
                if let Err(error) = log.enforce_retention(crate::log::now_ms()).await {
                    tracing::warn!("retention after DeleteRecords failed: {error}");
                }
            })
            .detach();
        }
        Err(LogError::OffsetOutOfRange { .. }) => {
            deleted.error = Some(ResponseError::OffsetOutOfRange);
        }
        Err(LogError::PolicyViolation(_)) => {
            deleted.error = Some(ResponseError::PolicyViolation);
        }
        Err(error) => {
            tracing::error!(topic = %deletion.topic, partition = deletion.partition,
                "delete records failed: {error}");
            deleted.error = Some(ResponseError::KafkaStorageError);
        }
    }
    deleted
}
