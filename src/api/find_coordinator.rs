//! FindCoordinator (key 10): on a single node, every group and transaction coordinator is this
//! broker. The group coordinator proper arrives with consumer groups.

use super::RequestContext;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

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
    if context.api_version >= 4 {
        let coordinators = request
            .coordinator_keys
            .into_iter()
            .map(|key| {
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(node_id)
                    .with_host(host.clone())
                    .with_port(port)
            })
            .collect();
        FindCoordinatorResponse::default().with_coordinators(coordinators)
    } else {
        FindCoordinatorResponse::default()
            .with_node_id(node_id)
            .with_host(host)
            .with_port(port)
    }
}
