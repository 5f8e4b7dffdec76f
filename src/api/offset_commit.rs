//! OffsetCommit (key 8). Partitions of unknown topics and oversized metadata are refused here, on
//! the connection's shard (the metadata image is everywhere); the rest travels in one hop to the
//! group's coordinator shard, which checks generation/member and answers once the commit records
//! are written to `__consumer_offsets`.

use super::{topic_name, RequestContext};
use crate::group::{CommitItem, CommitWork};
use crate::security::acl::{Operation, ResourceType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

pub async fn handle(
    context: &RequestContext,
    request: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let shard = &context.shard;
    let image = shard.metadata();
    let metadata_max_bytes = shard.config.offset_metadata_max_bytes;
    let group_id = request.group_id.0.to_string();
    // Kafka: READ on the group (else every partition fails), then READ on each topic.
    let group_authorized = context.authorize(Operation::Read, ResourceType::Group, &group_id);
    let route = crate::group::route(shard, &group_id).await;

    // Per partition: Err(code) decided here, Ok(slot) sent to the coordinator.
    let mut topics: Vec<OffsetCommitResponseTopic> = Vec::with_capacity(request.topics.len());
    let mut items = Vec::new();
    let mut slots = Vec::new();
    for (topic_slot, topic) in request.topics.into_iter().enumerate() {
        let name = topic.name.0.to_string();
        let known = image.topic(&name);
        let topic_authorized =
            group_authorized && context.authorize(Operation::Read, ResourceType::Topic, &name);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for (partition_slot, partition) in topic.partitions.into_iter().enumerate() {
            let metadata = partition
                .committed_metadata
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            let code = if !group_authorized {
                ResponseError::GroupAuthorizationFailed.code()
            } else if let Err(error) = route {
                error.code()
            } else if !topic_authorized {
                ResponseError::TopicAuthorizationFailed.code()
            } else if !known
                .is_some_and(|t| (0..t.partition_count()).contains(&partition.partition_index))
            {
                ResponseError::UnknownTopicOrPartition.code()
            } else if metadata.len() > metadata_max_bytes {
                ResponseError::OffsetMetadataTooLarge.code()
            } else {
                items.push(CommitItem {
                    topic: name.clone(),
                    partition: partition.partition_index,
                    offset: partition.committed_offset,
                    leader_epoch: if context.api_version >= 6 {
                        partition.committed_leader_epoch
                    } else {
                        -1
                    },
                    metadata,
                });
                slots.push((topic_slot, partition_slot));
                0
            };
            partitions.push(
                OffsetCommitResponsePartition::default()
                    .with_partition_index(partition.partition_index)
                    .with_error_code(code),
            );
        }
        topics.push(
            OffsetCommitResponseTopic::default()
                .with_name(topic_name(&name))
                .with_partitions(partitions),
        );
    }
    if let (Ok(route), true) = (route, group_authorized) {
        let work = CommitWork {
            group_id,
            generation: request.generation_id_or_member_epoch,
            member_id: request.member_id.to_string(),
            instance_id: request.group_instance_id.map(|id| id.to_string()),
            version: context.api_version,
            items,
            producer: None,
        };
        let code = shard
            .invoke_on(route.owner, move |owner| async move {
                crate::group::commit_offsets(&owner, route.partition, work).await
            })
            .await
            .unwrap_or(ResponseError::NotCoordinator.code());
        if code != 0 {
            for (topic_slot, partition_slot) in slots {
                topics[topic_slot].partitions[partition_slot].error_code = code;
            }
        }
    }
    OffsetCommitResponse::default().with_topics(topics)
}
