//! ConsumerGroupHeartbeat (key 68, KIP-848): join, stay, reconcile and leave in one RPC; the
//! assignment is computed on the coordinator shard by a server-side assignor (uniform, range).

use super::{str_bytes, RequestContext};
use crate::group::assignor::Assignment;
use crate::group::consumer::{self, HeartbeatParams, HeartbeatResult};
use crate::security::acl::{Operation, ResourceType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::consumer_group_heartbeat_response::{
    Assignment as WireAssignment, TopicPartitions,
};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};

pub async fn handle(
    context: &RequestContext,
    request: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let version = context.api_version;
    let group_id = request.group_id.0.to_string();
    let mut params = HeartbeatParams {
        member_id: request.member_id.to_string(),
        member_epoch: request.member_epoch,
        instance_id: request.instance_id.map(|i| i.to_string()),
        rack_id: request.rack_id.map(|r| r.to_string()),
        rebalance_timeout_ms: request.rebalance_timeout_ms,
        subscribed_topic_names: request
            .subscribed_topic_names
            .map(|names| names.into_iter().map(|n| n.0.to_string()).collect()),
        // An empty regex clears a regex subscription (librdkafka sends one with names).
        subscribed_topic_regex: request.subscribed_topic_regex.map(|r| r.to_string()),
        server_assignor: request.server_assignor.map(|a| a.to_string()),
        owned: request.topic_partitions.map(|owned| {
            let mut assignment = Assignment::new();
            for topic in owned {
                assignment
                    .entry(topic.topic_id)
                    .or_default()
                    .extend(topic.partitions);
            }
            assignment
        }),
        client_id: super::join_group::client_id(context),
        client_host: format!("/{}", context.peer.ip()),
    };
    if group_id.is_empty() {
        return response(HeartbeatResult::error(
            ResponseError::InvalidRequest.code(),
            "GroupId can't be empty.",
        ));
    }
    if !context.authorize(Operation::Read, ResourceType::Group, &group_id) {
        return response(HeartbeatResult::error(
            ResponseError::GroupAuthorizationFailed.code(),
            "Group authorization failed.",
        ));
    }
    // As Kafka: a member may not subscribe to a topic it cannot describe (the assignment
    // would reveal it); the whole heartbeat is refused, naming no topic.
    let undescribable = params.subscribed_topic_names.as_ref().is_some_and(|names| {
        names
            .iter()
            .any(|name| !context.authorize(Operation::Describe, ResourceType::Topic, name))
    });
    if undescribable {
        return response(HeartbeatResult::error(
            ResponseError::TopicAuthorizationFailed.code(),
            "Topic authorization failed.",
        ));
    }
    if version == 0 && params.member_id.is_empty() && params.member_epoch == consumer::JOIN_EPOCH {
        // v0: the coordinator names new members.
        params.member_id = uuid::Uuid::new_v4().simple().to_string();
    }
    if let Err((code, message)) = consumer::validate(&params, version) {
        return response(HeartbeatResult::error(code, message));
    }
    let route = match crate::group::route(&context.shard, &group_id).await {
        Ok(route) => route,
        Err(error) => return response(HeartbeatResult::error(error.code(), error.to_string())),
    };
    let result = context
        .shard
        .invoke_on(route.owner, move |owner| async move {
            crate::group::consumer_group_heartbeat(&owner, route.partition, group_id, params).await
        })
        .await
        .unwrap_or_else(|_| {
            HeartbeatResult::error(
                ResponseError::NotCoordinator.code(),
                "coordinator unreachable",
            )
        });
    response(result)
}

fn response(result: HeartbeatResult) -> ConsumerGroupHeartbeatResponse {
    ConsumerGroupHeartbeatResponse::default()
        .with_error_code(result.error)
        .with_error_message(result.message.as_deref().map(str_bytes))
        .with_member_id(result.member_id.as_deref().map(str_bytes))
        .with_member_epoch(result.member_epoch)
        .with_heartbeat_interval_ms(result.heartbeat_interval_ms)
        .with_assignment(result.assignment.map(|assignment| {
            WireAssignment::default().with_topic_partitions(
                assignment
                    .into_iter()
                    .map(|(topic_id, partitions)| {
                        TopicPartitions::default()
                            .with_topic_id(topic_id)
                            .with_partitions(partitions.into_iter().collect())
                    })
                    .collect(),
            )
        }))
}
