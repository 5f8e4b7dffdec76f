//! OffsetDelete (key 47): removes committed offsets of topics the group no longer consumes
//! (GROUP_SUBSCRIBED_TO_TOPIC for the ones it does), with tombstones in `__consumer_offsets`.

use super::{topic_name, RequestContext};
use crate::security::acl::{Operation, ResourceType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

pub async fn handle(
    context: &RequestContext,
    request: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    let group_id = request.group_id.0.to_string();
    let topics: Vec<(String, Vec<i32>)> = request
        .topics
        .into_iter()
        .map(|t| {
            (
                t.name.0.to_string(),
                t.partitions
                    .into_iter()
                    .map(|p| p.partition_index)
                    .collect(),
            )
        })
        .collect();
    if let Err(error) = crate::group::validate_group_id(&group_id) {
        return OffsetDeleteResponse::default().with_error_code(error.code());
    }
    // Kafka: DELETE on the group, and READ on each topic (others fail per partition).
    if !context.authorize(Operation::Delete, ResourceType::Group, &group_id) {
        return OffsetDeleteResponse::default()
            .with_error_code(ResponseError::GroupAuthorizationFailed.code());
    }
    let (topics, denied): (Vec<_>, Vec<_>) = topics
        .into_iter()
        .partition(|(topic, _)| context.authorize(Operation::Read, ResourceType::Topic, topic));
    let denied = denied.into_iter().map(|(topic, partitions)| {
        let code = ResponseError::TopicAuthorizationFailed.code();
        (
            topic,
            partitions
                .into_iter()
                .map(|p| (p, code))
                .collect::<Vec<_>>(),
        )
    });
    let Some(route) = crate::group::route_existing(&context.shard, &group_id) else {
        return OffsetDeleteResponse::default()
            .with_error_code(ResponseError::GroupIdNotFound.code());
    };
    let outcome = context
        .shard
        .invoke_on(route.owner, move |owner| async move {
            crate::group::delete_offsets(&owner, route.partition, group_id, topics).await
        })
        .await
        .unwrap_or(Err(ResponseError::NotCoordinator.code()));
    match outcome {
        Err(code) => OffsetDeleteResponse::default().with_error_code(code),
        Ok(topics) => OffsetDeleteResponse::default().with_topics(
            topics
                .into_iter()
                .chain(denied)
                .map(|(topic, partitions)| {
                    OffsetDeleteResponseTopic::default()
                        .with_name(topic_name(&topic))
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|(partition, code)| {
                                    OffsetDeleteResponsePartition::default()
                                        .with_partition_index(partition)
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
    }
}
