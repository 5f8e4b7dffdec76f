//! TxnOffsetCommit (key 28): a transactional producer commits a group's offsets inside its
//! transaction (consume-transform-produce). The commits go, as one transactional batch of the
//! producer, to the group's `__consumer_offsets` partition on its coordinator shard; they count
//! once the transaction's COMMIT marker lands there and vanish on ABORT. With the KIP-447 group
//! metadata (v3+: generation, member id, instance id) the commit is checked against the group
//! like an OffsetCommit, so a zombie consumer's producer cannot commit.

use super::{topic_name, RequestContext};
use crate::group::records::TxnProducer;
use crate::group::{CommitItem, CommitWork};
use crate::security::acl::{Operation, ResourceType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

pub async fn handle(
    context: &RequestContext,
    request: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    let shard = &context.shard;
    let image = shard.metadata();
    let metadata_max_bytes = shard.config.offset_metadata_max_bytes;
    let group_id = request.group_id.0.to_string();
    // Kafka: WRITE on the transactional id, READ on the group (either failing fails every
    // partition), then READ on each topic.
    let denied_all = if !context.authorize(
        Operation::Write,
        ResourceType::TransactionalId,
        request.transactional_id.0.as_str(),
    ) {
        Some(ResponseError::TransactionalIdAuthorizationFailed)
    } else if !context.authorize(Operation::Read, ResourceType::Group, &group_id) {
        Some(ResponseError::GroupAuthorizationFailed)
    } else {
        None
    };
    let route = crate::group::route(shard, &group_id).await;

    let mut topics: Vec<TxnOffsetCommitResponseTopic> = Vec::with_capacity(request.topics.len());
    let mut items = Vec::new();
    let mut slots = Vec::new();
    for (topic_slot, topic) in request.topics.into_iter().enumerate() {
        let name = topic.name.0.to_string();
        let known = image.topic(&name);
        let topic_authorized = context.authorize(Operation::Read, ResourceType::Topic, &name);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for (partition_slot, partition) in topic.partitions.into_iter().enumerate() {
            let metadata = partition
                .committed_metadata
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            let code = if let Some(error) = denied_all {
                error.code()
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
                    leader_epoch: if context.api_version >= 2 {
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
                TxnOffsetCommitResponsePartition::default()
                    .with_partition_index(partition.partition_index)
                    .with_error_code(code),
            );
        }
        topics.push(
            TxnOffsetCommitResponseTopic::default()
                .with_name(topic_name(&name))
                .with_partitions(partitions),
        );
    }
    if let (Ok(route), None) = (route, denied_all) {
        let with_group_metadata = context.api_version >= 3;
        let work = CommitWork {
            group_id,
            generation: if with_group_metadata {
                request.generation_id
            } else {
                -1
            },
            member_id: if with_group_metadata {
                request.member_id.to_string()
            } else {
                String::new()
            },
            instance_id: request
                .group_instance_id
                .filter(|_| with_group_metadata)
                .map(|id| id.to_string()),
            // v5 carries KIP-848 member epochs, as OffsetCommit v9 does.
            version: if context.api_version >= 5 { 9 } else { 8 },
            items,
            producer: Some(TxnProducer {
                producer_id: request.producer_id.0,
                producer_epoch: request.producer_epoch,
            }),
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
    TxnOffsetCommitResponse::default().with_topics(topics)
}
