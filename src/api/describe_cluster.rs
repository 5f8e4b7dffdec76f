//! DescribeCluster (key 60): the live brokers and the controller id clients are told.

use super::RequestContext;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

pub async fn handle(
    context: &RequestContext,
    _request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let image = context.shard.metadata();
    let node_id = context.shard.config.node_id;
    let brokers = image
        .live_brokers()
        .map(|broker| {
            let (host, port) = super::broker_endpoint(context, broker);
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(broker.node_id))
                .with_host(super::str_bytes(&host))
                .with_port(port)
                .with_rack(broker.rack.as_deref().map(super::str_bytes))
        })
        .collect();
    DescribeClusterResponse::default()
        .with_cluster_id(super::str_bytes(&image.cluster_id))
        .with_controller_id(BrokerId(super::metadata::controller_id(&image, node_id)))
        .with_cluster_authorized_operations(i32::MIN)
        .with_brokers(brokers)
}
