//! SyncGroup (key 14): hops to the coordinator shard; followers stay parked until the leader's
//! assignment is persisted and handed out.

use super::{str_bytes, RequestContext};
use crate::group::classic::SyncResult;
use crate::security::acl::{Operation, ResourceType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

pub async fn handle(context: &RequestContext, request: SyncGroupRequest) -> SyncGroupResponse {
    let version = context.api_version;
    let group_id = request.group_id.0.to_string();
    if !context.authorize(Operation::Read, ResourceType::Group, &group_id) {
        return response(
            version,
            SyncResult::error(ResponseError::GroupAuthorizationFailed.code()),
        );
    }
    let route = match crate::group::route(&context.shard, &group_id).await {
        Ok(route) => route,
        Err(error) => return response(version, SyncResult::error(error.code())),
    };
    let member_id = request.member_id.to_string();
    let instance_id = request.group_instance_id.map(|id| id.to_string());
    let generation = request.generation_id;
    let protocol_type = request.protocol_type.map(|p| p.to_string());
    let protocol_name = request.protocol_name.map(|p| p.to_string());
    let assignments: Vec<(String, bytes::Bytes)> = request
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let result = context
        .shard
        .invoke_on(route.owner, move |owner| async move {
            crate::group::sync_group(
                &owner,
                route.partition,
                group_id,
                member_id,
                instance_id,
                generation,
                protocol_type,
                protocol_name,
                assignments,
            )
            .await
        })
        .await
        .unwrap_or_else(|_| SyncResult::error(ResponseError::NotCoordinator.code()));
    response(version, result)
}

fn response(version: i16, result: SyncResult) -> SyncGroupResponse {
    let (protocol_type, protocol_name) = if version >= 5 {
        (
            result.protocol_type.as_deref().map(str_bytes),
            result.protocol.as_deref().map(str_bytes),
        )
    } else {
        (None, None)
    };
    SyncGroupResponse::default()
        .with_error_code(result.error)
        .with_protocol_type(protocol_type)
        .with_protocol_name(protocol_name)
        .with_assignment(result.assignment)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Encodable;

    #[test]
    fn responses_encode_in_every_version() {
        let result = SyncResult {
            error: 0,
            protocol_type: Some("consumer".into()),
            protocol: Some("range".into()),
            assignment: bytes::Bytes::from_static(b"a"),
        };
        for version in 0..=5 {
            let mut buf = bytes::BytesMut::new();
            response(version, result.clone())
                .encode(&mut buf, version)
                .unwrap();
        }
    }
}
