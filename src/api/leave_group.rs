//! LeaveGroup (key 13): one member (v0–2) or a batch identified by member id and/or
//! `group.instance.id` (v3+, KIP-345), removed on the coordinator shard.

use super::{str_bytes, RequestContext};
use crate::security::acl::{Operation, ResourceType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

pub async fn handle(context: &RequestContext, request: LeaveGroupRequest) -> LeaveGroupResponse {
    let version = context.api_version;
    let group_id = request.group_id.0.to_string();
    if !context.authorize(Operation::Read, ResourceType::Group, &group_id) {
        return LeaveGroupResponse::default()
            .with_error_code(ResponseError::GroupAuthorizationFailed.code());
    }
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        request
            .members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let outcome = match crate::group::route(&context.shard, &group_id).await {
        Err(error) => Err(error.code()),
        Ok(route) => {
            let leaving = members.clone();
            context
                .shard
                .invoke_on(route.owner, move |owner| async move {
                    crate::group::leave_group(&owner, route.partition, group_id, leaving).await
                })
                .await
                .unwrap_or(Err(ResponseError::NotCoordinator.code()))
        }
    };
    match outcome {
        Err(code) => LeaveGroupResponse::default().with_error_code(code),
        Ok(codes) if version < 3 => {
            LeaveGroupResponse::default().with_error_code(codes.first().copied().unwrap_or(0))
        }
        Ok(codes) => LeaveGroupResponse::default().with_members(
            members
                .into_iter()
                .zip(codes)
                .map(|((member_id, instance_id), code)| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(&member_id))
                        .with_group_instance_id(instance_id.as_deref().map(str_bytes))
                        .with_error_code(code)
                })
                .collect(),
        ),
    }
}
