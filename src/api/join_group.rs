//! JoinGroup (key 11): hops to the group's coordinator shard, where the request stays parked until
//! the rebalance answers it (see `group::classic`).

use super::{str_bytes, RequestContext};
use crate::group::classic::{JoinParams, JoinResult};
use crate::security::acl::{Operation, ResourceType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

pub async fn handle(context: &RequestContext, request: JoinGroupRequest) -> JoinGroupResponse {
    let version = context.api_version;
    let group_id = request.group_id.0.to_string();
    let member_id = request.member_id.to_string();
    if !context.authorize(Operation::Read, ResourceType::Group, &group_id) {
        return response(
            version,
            JoinResult::error(ResponseError::GroupAuthorizationFailed.code(), &member_id),
        );
    }
    let route = match crate::group::route(&context.shard, &group_id).await {
        Ok(route) => route,
        Err(error) => return response(version, JoinResult::error(error.code(), &member_id)),
    };
    let params = JoinParams {
        member_id: member_id.clone(),
        instance_id: request.group_instance_id.map(|id| id.to_string()),
        client_id: client_id(context),
        client_host: format!("/{}", context.peer.ip()),
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|protocol| (protocol.name.to_string(), protocol.metadata))
            .collect(),
        require_known_member_id: version >= 4,
    };
    let result = context
        .shard
        .invoke_on(route.owner, move |owner| async move {
            crate::group::join_group(&owner, route.partition, group_id, params).await
        })
        .await
        .unwrap_or_else(|_| JoinResult::error(ResponseError::NotCoordinator.code(), &member_id));
    response(version, result)
}

pub(crate) fn client_id(context: &RequestContext) -> String {
    context
        .header
        .client_id
        .as_ref()
        .map(|id| id.to_string())
        .unwrap_or_default()
}

/// The response for `version`: fields the version lacks stay at their defaults.
pub(crate) fn response(version: i16, result: JoinResult) -> JoinGroupResponse {
    let members = result
        .members
        .into_iter()
        .map(|member| {
            JoinGroupResponseMember::default()
                .with_member_id(str_bytes(&member.member_id))
                .with_group_instance_id(if version >= 5 {
                    member.instance_id.as_deref().map(str_bytes)
                } else {
                    None
                })
                .with_metadata(member.metadata)
        })
        .collect();
    let protocol_name = match (version >= 7, result.protocol) {
        (true, protocol) => protocol.as_deref().map(str_bytes),
        // Not nullable before v7.
        (false, protocol) => Some(str_bytes(protocol.as_deref().unwrap_or_default())),
    };
    JoinGroupResponse::default()
        .with_error_code(result.error)
        .with_generation_id(result.generation)
        .with_protocol_type(if version >= 7 {
            result.protocol_type.as_deref().map(str_bytes)
        } else {
            None
        })
        .with_protocol_name(protocol_name)
        .with_leader(str_bytes(&result.leader))
        .with_member_id(str_bytes(&result.member_id))
        .with_members(members)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::classic::JoinedMember;
    use kafka_protocol::protocol::Encodable;

    #[test]
    fn responses_encode_in_every_version() {
        let result = JoinResult {
            error: 0,
            generation: 3,
            protocol_type: Some("consumer".into()),
            protocol: Some("range".into()),
            leader: "m1".into(),
            member_id: "m1".into(),
            members: vec![JoinedMember {
                member_id: "m1".into(),
                instance_id: Some("i1".into()),
                metadata: bytes::Bytes::from_static(b"meta"),
            }],
        };
        for version in 0..=9 {
            let mut buf = bytes::BytesMut::new();
            response(version, result.clone())
                .encode(&mut buf, version)
                .unwrap();
            let mut buf = bytes::BytesMut::new();
            response(version, JoinResult::error(79, "x"))
                .encode(&mut buf, version)
                .unwrap();
        }
    }
}
