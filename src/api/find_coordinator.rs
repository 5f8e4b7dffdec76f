//! FindCoordinator (key 10): on a single node, every group and transaction coordinator is this
//! broker. For group keys, `__consumer_offsets` is created on first use (through the controller),
//! so the coordinator can serve the group as soon as the client connects; which shard inside the
//! broker coordinates the group is internal (requests hop there). v4 answers batched keys.

use super::RequestContext;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

/// Key types of FindCoordinator.
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

pub async fn handle(
    context: &RequestContext,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let config = &context.shard.config;
    let (host, port) = config
        .advertised_host_port()
        .expect("advertised address validated at start");
    let node_id = BrokerId(config.node_id);
    let host = super::str_bytes(&host);
    // v0 has no key type: always a group.
    let key_type = if context.api_version >= 1 {
        request.key_type
    } else {
        KEY_TYPE_GROUP
    };
    let outcome = match key_type {
        KEY_TYPE_GROUP => crate::group::ensure_offsets_topic(&context.shard)
            .await
            .map_err(|error| (error, "the group coordinator is not available yet")),
        KEY_TYPE_TRANSACTION => Ok(()),
        _ => Err((
            ResponseError::InvalidRequest,
            "unknown coordinator key type",
        )),
    };
    if context.api_version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| match outcome {
                Ok(()) => Coordinator::default()
                    .with_key(key)
                    .with_node_id(node_id)
                    .with_host(host.clone())
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
        match outcome {
            Ok(()) => FindCoordinatorResponse::default()
                .with_node_id(node_id)
                .with_host(host)
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
