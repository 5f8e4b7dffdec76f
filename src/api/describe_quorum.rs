//! DescribeQuorum (key 55): the controller quorum of the metadata log (`__cluster_metadata`
//! partition 0) as the active controller sees it: leader, term (leader epoch), high watermark
//! (commit index), each voter's log end offset and the brokers that follow the log as observers.
//! Any node answers; it asks the active controller.

use super::RequestContext;
use crate::cluster::rpc::{ControllerRequest, ControllerResponse, ReplicaReport};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{BrokerId, DescribeQuorumRequest, DescribeQuorumResponse};
use std::time::Duration;

/// The metadata log's name, as KRaft calls it.
pub const METADATA_TOPIC: &str = "__cluster_metadata";

fn replica(report: &ReplicaReport) -> ReplicaState {
    ReplicaState::default()
        .with_replica_id(BrokerId(report.node_id))
        .with_log_end_offset(report.log_end_offset as i64)
        .with_last_fetch_timestamp(report.last_fetch_timestamp_ms)
        .with_last_caught_up_timestamp(report.last_caught_up_timestamp_ms)
}

pub async fn handle(
    context: &RequestContext,
    request: DescribeQuorumRequest,
) -> DescribeQuorumResponse {
    let asks_metadata_log = request.topics.iter().any(|topic| {
        topic.topic_name.0.as_str() == METADATA_TOPIC
            && topic.partitions.iter().any(|p| p.partition_index == 0)
    });
    if !context.authorize_cluster(crate::security::acl::Operation::Describe) {
        return DescribeQuorumResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    }
    if !asks_metadata_log {
        return DescribeQuorumResponse::default()
            .with_error_code(ResponseError::UnknownTopicOrPartition.code());
    }
    let answer = context
        .shard
        .invoke_on(0, |shard| async move {
            let node = crate::cluster::driver::MetadataNode::of(&shard);
            let timeout = Duration::from_millis(shard.config.controller_request_timeout_ms);
            crate::cluster::client::call_active(&node, ControllerRequest::DescribeQuorum, timeout)
                .await
                .ok()
        })
        .await;
    let partition = match answer {
        Ok(Some(ControllerResponse::Quorum(report))) => PartitionData::default()
            .with_partition_index(0)
            .with_leader_id(BrokerId(report.leader_id))
            .with_leader_epoch(i32::try_from(report.term).unwrap_or(i32::MAX))
            .with_high_watermark(report.high_watermark as i64)
            .with_current_voters(report.voters.iter().map(replica).collect())
            .with_observers(report.observers.iter().map(replica).collect()),
        _ => PartitionData::default()
            .with_partition_index(0)
            .with_leader_id(BrokerId(-1))
            .with_error_code(ResponseError::NotLeaderOrFollower.code())
            .with_error_message(Some(super::str_bytes("no active controller answered"))),
    };
    let nodes = context
        .shard
        .config
        .quorum_voters()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|voter| {
            let (host, port) = crate::config::split_host_port(&voter.address).ok()?;
            Some(
                Node::default()
                    .with_node_id(BrokerId(voter.node_id))
                    .with_listeners(vec![Listener::default()
                        .with_name(super::str_bytes("CONTROLLER"))
                        .with_host(super::str_bytes(&host))
                        .with_port(port as u16)]),
            )
        })
        .collect();
    DescribeQuorumResponse::default()
        .with_topics(vec![TopicData::default()
            .with_topic_name(super::topic_name(METADATA_TOPIC))
            .with_partitions(vec![partition])])
        .with_nodes(nodes)
}
