//! DescribeCluster (key 60): the live brokers and the controller id clients are told.

use super::RequestContext;
use crate::security::acl::{Operation, ResourceType};
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

pub async fn handle(
    context: &RequestContext,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let image = context.shard.metadata();
    let node_id = context.shard.config.node_id;
    let brokers = image
        .live_brokers()
        .filter_map(|broker| {
            let (host, port) = super::broker_endpoint(context, broker)?;
            Some(
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(broker.node_id))
                    .with_host(super::str_bytes(&host))
                    .with_port(port)
                    .with_rack(broker.rack.as_deref().map(super::str_bytes)),
            )
        })
        .collect();
    DescribeClusterResponse::default()
        .with_cluster_id(super::str_bytes(&image.cluster_id))
        .with_controller_id(BrokerId(super::metadata::controller_id(&image, node_id)))
        .with_cluster_authorized_operations(cluster_authorized_operations(context, &request))
        .with_brokers(brokers)
}

/// Kafka: the cluster's authorized operations when asked for and the principal may DESCRIBE
/// the cluster, else none (0); `i32::MIN` when not asked for.
pub(crate) fn cluster_authorized_operations(
    context: &RequestContext,
    request: &DescribeClusterRequest,
) -> i32 {
    if !request.include_cluster_authorized_operations {
        i32::MIN
    } else if context.authorize_cluster(Operation::Describe) {
        context.authorized_operations(ResourceType::Cluster, crate::security::acl::CLUSTER_NAME)
    } else {
        0
    }
}
