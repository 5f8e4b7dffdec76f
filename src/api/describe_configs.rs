//! DescribeConfigs (key 32): topic configs (explicit and defaults) and the broker's static ones.

use super::RequestContext;
use crate::cluster::topic_config;
use crate::config::BrokerConfig;
use crate::security::acl::{Operation, ResourceType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;
const TYPE_STRING: i8 = 2;
const TYPE_LONG: i8 = 5;
const TYPE_BOOLEAN: i8 = 1;

fn config_type(key: &str) -> i8 {
    if let Some(kind) = crate::cluster::topic_config::describe_type(key) {
        return kind;
    }
    match key {
        "log.dirs" => TYPE_STRING,
        "auto.create.topics.enable" => TYPE_BOOLEAN,
        _ => TYPE_LONG,
    }
}

fn broker_configs(config: &BrokerConfig) -> Vec<(&'static str, String)> {
    let rack = config.rack.iter().map(|rack| ("broker.rack", rack.clone()));
    let mut configs = vec![
        ("broker.id", config.node_id.to_string()),
        ("node.id", config.node_id.to_string()),
        (
            "auto.create.topics.enable",
            config.auto_create_topics.to_string(),
        ),
        ("num.partitions", config.num_partitions.to_string()),
        ("log.segment.bytes", config.segment_bytes.to_string()),
        ("message.max.bytes", config.max_message_bytes.to_string()),
        (
            "socket.request.max.bytes",
            config.max_request_size_bytes.to_string(),
        ),
        ("log.dirs", config.data_dir.display().to_string()),
        (
            "default.replication.factor",
            config.default_replication_factor.to_string(),
        ),
        (
            "min.insync.replicas",
            config.min_insync_replicas.to_string(),
        ),
        (
            "connections.max.idle.ms",
            config.connections_max_idle_ms.to_string(),
        ),
        (
            "transaction.max.timeout.ms",
            config.transaction_max_timeout_ms.to_string(),
        ),
        (
            "offsets.topic.num.partitions",
            config.offsets_topic_num_partitions.to_string(),
        ),
        (
            "transaction.state.log.num.partitions",
            config.transaction_state_log_num_partitions.to_string(),
        ),
        (
            "unclean.leader.election.enable",
            config.unclean_leader_election_enable.to_string(),
        ),
    ];
    configs.extend(rack);
    configs
}

pub async fn handle(
    context: &RequestContext,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let shard = &context.shard;
    let image = shard.metadata();
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let wanted = |key: &str| {
                resource
                    .configuration_keys
                    .as_ref()
                    .is_none_or(|keys| keys.iter().any(|k| k.as_str() == key))
            };
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            // Kafka: DESCRIBE_CONFIGS on the topic, or on the cluster for broker configs.
            let denied = match resource.resource_type {
                RESOURCE_TOPIC => (!context.authorize(
                    Operation::DescribeConfigs,
                    ResourceType::Topic,
                    resource.resource_name.as_str(),
                ))
                .then_some(ResponseError::TopicAuthorizationFailed),
                RESOURCE_BROKER => (!context.authorize_cluster(Operation::DescribeConfigs))
                    .then_some(ResponseError::ClusterAuthorizationFailed),
                _ => None,
            };
            if let Some(error) = denied {
                return result.with_error_code(error.code());
            }
            match resource.resource_type {
                RESOURCE_TOPIC => match image.topic(resource.resource_name.as_str()) {
                    Some(topic) => result.with_configs(
                        topic_config::effective_configs(&topic.configs, &shard.config)
                            .into_iter()
                            .filter(|(key, _, _)| wanted(key))
                            .map(|(key, value, is_default)| {
                                DescribeConfigsResourceResult::default()
                                    .with_name(super::str_bytes(key))
                                    .with_value(Some(super::str_bytes(&value)))
                                    .with_config_source(if is_default {
                                        SOURCE_DEFAULT
                                    } else {
                                        SOURCE_DYNAMIC_TOPIC
                                    })
                                    .with_config_type(config_type(key))
                            })
                            .collect(),
                    ),
                    None => result
                        .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        .with_error_message(Some(super::str_bytes(&format!(
                            "topic {} does not exist",
                            resource.resource_name.as_str()
                        )))),
                },
                RESOURCE_BROKER => {
                    let name = resource.resource_name.as_str();
                    if !name.is_empty() && name != shard.config.node_id.to_string() {
                        return result
                            .with_error_code(ResponseError::InvalidRequest.code())
                            .with_error_message(Some(super::str_bytes(&format!(
                                "broker {name} is not this broker"
                            ))));
                    }
                    result.with_configs(
                        broker_configs(&shard.config)
                            .into_iter()
                            .filter(|(key, _)| wanted(key))
                            .map(|(key, value)| {
                                DescribeConfigsResourceResult::default()
                                    .with_name(super::str_bytes(key))
                                    .with_value(Some(super::str_bytes(&value)))
                                    .with_read_only(true)
                                    .with_config_source(SOURCE_STATIC_BROKER)
                                    .with_config_type(config_type(key))
                            })
                            .collect(),
                    )
                }
                other => result
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(Some(super::str_bytes(&format!(
                        "resource type {other} has no configs here"
                    )))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}
