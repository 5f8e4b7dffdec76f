//! FindCoordinator (key 10): a group's coordinator is the leader of its `__consumer_offsets`
//! partition (created on first use, through the active controller); which shard of that node
//! coordinates it is internal (requests hop there). A transactional id's coordinator is the
//! leader of its `__transaction_state` partition (created on first use). v4 answers batched keys.

use super::RequestContext;
use crate::security::acl::{Operation, ResourceType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

/// Key types of FindCoordinator.
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// A coordinator's node, host and port, or the error and message the client gets.
type Found = Result<(i32, String, i32), (ResponseError, &'static str)>;

fn locate(context: &RequestContext, key_type: i8, key: &str) -> Found {
    let image = context.shard.metadata();
    let node_id = match key_type {
        KEY_TYPE_GROUP => crate::group::coordinator_node(&context.shard, key).ok_or((
            ResponseError::CoordinatorNotAvailable,
            "the group's coordinator partition has no leader",
        ))?,
        _ => crate::txn::coordinator_node(&context.shard, key).ok_or((
            ResponseError::CoordinatorNotAvailable,
            "the transaction coordinator's partition has no leader",
        ))?,
    };
    let broker = image.brokers.get(&node_id).filter(|b| !b.fenced).ok_or((
        ResponseError::CoordinatorNotAvailable,
        "the coordinator is not available yet",
    ))?;
    let (host, port) = super::broker_endpoint(context, broker).ok_or((
        ResponseError::CoordinatorNotAvailable,
        "the coordinator has no listener of this connection's name",
    ))?;
    Ok((node_id, host, port))
}

pub async fn handle(
    context: &RequestContext,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    // v0 has no key type: always a group.
    let key_type = if context.api_version >= 1 {
        request.key_type
    } else {
        KEY_TYPE_GROUP
    };
    let prepared = match key_type {
        KEY_TYPE_GROUP => crate::group::ensure_offsets_topic(&context.shard)
            .await
            .map_err(|error| (error, "the group coordinator is not available yet")),
        KEY_TYPE_TRANSACTION => crate::txn::ensure_state_topic(&context.shard)
            .await
            .map_err(|error| (error, "the transaction coordinator is not available yet")),
        _ => Err((
            ResponseError::InvalidRequest,
            "unknown coordinator key type",
        )),
    };
    let find = |key: &str| -> Found {
        // Kafka: DESCRIBE on the group, or on the transactional id.
        match key_type {
            KEY_TYPE_GROUP if !context.authorize(Operation::Describe, ResourceType::Group, key) => {
                return Err((
                    ResponseError::GroupAuthorizationFailed,
                    "Group authorization failed.",
                ))
            }
            KEY_TYPE_TRANSACTION
                if !context.authorize(Operation::Describe, ResourceType::TransactionalId, key) =>
            {
                return Err((
                    ResponseError::TransactionalIdAuthorizationFailed,
                    "Transactional Id authorization failed.",
                ))
            }
            _ => {}
        }
        prepared?;
        locate(context, key_type, key)
    };
    if context.api_version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| match find(key.as_str()) {
                Ok((node_id, host, port)) => Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(node_id))
                    .with_host(StrBytes::from_string(host))
                    .with_port(port),
                Err((error, message)) => Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(-1))
                    .with_port(-1)
                    .with_error_code(error.code())
                    .with_error_message(Some(super::str_bytes(message))),
            })
            .collect();
        FindCoordinatorResponse::default().with_coordinators(coordinators)
    } else {
        match find(request.key.as_str()) {
            Ok((node_id, host, port)) => FindCoordinatorResponse::default()
                .with_node_id(BrokerId(node_id))
                .with_host(StrBytes::from_string(host))
                .with_port(port),
            Err((error, message)) => {
                let response = FindCoordinatorResponse::default()
                    .with_node_id(BrokerId(-1))
                    .with_port(-1)
                    .with_error_code(error.code());
                if context.api_version >= 1 {
                    response.with_error_message(Some(super::str_bytes(message)))
                } else {
                    response
                }
            }
        }
    }
}
