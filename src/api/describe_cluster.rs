//! DescribeCluster (key 60): this broker is the whole cluster and its controller.

use super::RequestContext;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

pub async fn handle(
    context: &RequestContext,
    _request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let config = &context.shard.config;
    let (host, port) = config
        .advertised_host_port()
        .expect("advertised address validated at start");
    let node_id = BrokerId(config.node_id);
    DescribeClusterResponse::default()
        .with_cluster_id(super::str_bytes(&context.shard.metadata().cluster_id))
        .with_controller_id(node_id)
        .with_cluster_authorized_operations(i32::MIN)
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(node_id)
            .with_host(super::str_bytes(&host))
            .with_port(port)])
}
