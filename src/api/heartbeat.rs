//! Heartbeat (key 12): keeps a classic group member's session alive; answered on the coordinator
//! shard with REBALANCE_IN_PROGRESS when the member must rejoin.

use super::RequestContext;
use crate::security::acl::{Operation, ResourceType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

pub async fn handle(context: &RequestContext, request: HeartbeatRequest) -> HeartbeatResponse {
    let group_id = request.group_id.0.to_string();
    if !context.authorize(Operation::Read, ResourceType::Group, &group_id) {
        return HeartbeatResponse::default()
            .with_error_code(ResponseError::GroupAuthorizationFailed.code());
    }
    let route = match crate::group::route(&context.shard, &group_id).await {
        Ok(route) => route,
        Err(error) => return HeartbeatResponse::default().with_error_code(error.code()),
    };
    let member_id = request.member_id.to_string();
    let instance_id = request.group_instance_id.map(|id| id.to_string());
    let generation = request.generation_id;
    let code = context
        .shard
        .invoke_on(route.owner, move |owner| async move {
            crate::group::heartbeat(
                &owner,
                route.partition,
                group_id,
                member_id,
                instance_id,
                generation,
            )
            .await
        })
        .await
        .unwrap_or(ResponseError::NotCoordinator.code());
    HeartbeatResponse::default().with_error_code(code)
}
