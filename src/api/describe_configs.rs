//! DescribeConfigs (key 32): topic configs (explicit, dynamic broker defaults and defaults) and
//! the broker's configs (dynamic, per broker and cluster-wide, over the static ones).

use super::RequestContext;
use crate::cluster::broker_config::{self, BrokerConfigStore, SOURCE_STATIC_BROKER};
use crate::cluster::topic_config;
use crate::config::BrokerConfig;
use crate::security::acl::{Operation, ResourceType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
pub const RESOURCE_BROKER_LOGGER: i8 = 8;
/// Config source of a logger's level (Kafka's DYNAMIC_BROKER_LOGGER_CONFIG).
const SOURCE_DYNAMIC_BROKER_LOGGER: i8 = 6;
const TYPE_STRING: i8 = 2;
const TYPE_BOOLEAN: i8 = 1;
const TYPE_LONG: i8 = 5;

fn config_type(key: &str) -> i8 {
    if let Some(kind) = topic_config::describe_type(key) {
        return kind;
    }
    if let Some(kind) = broker_config::describe_type(key) {
        return kind;
    }
    match key {
        "log.dirs" => TYPE_STRING,
        "auto.create.topics.enable" => TYPE_BOOLEAN,
        _ => TYPE_LONG,
    }
}

/// The broker resource a DescribeConfigs or AlterConfigs names: `None` for the cluster-wide
/// default (the empty name), else the broker id. Kafka's messages for the other cases.
pub fn broker_scope(name: &str, this_node: i32, describe: bool) -> Result<Option<i32>, String> {
    if name.is_empty() {
        return Ok(None);
    }
    let Ok(id) = name.parse::<i32>() else {
        return Err(if describe {
            format!("Broker id must be an integer, but it is: {name}")
        } else {
            format!("Node id must be an integer, but it is: {name}")
        });
    };
    if id != this_node {
        // A broker describes and alters its own configs; clients send a broker's resource
        // to that broker.
        return Err(if describe {
            format!(
                "Unexpected broker id, expected {this_node} or empty string, but received {name}"
            )
        } else {
            format!("Unexpected broker id, expected {this_node}, but received {name}")
        });
    }
    Ok(Some(id))
}

/// The broker a BROKER_LOGGER resource names must be this one, by id (loggers have no
/// cluster-wide default). Kafka's messages.
pub fn logger_scope(name: &str, this_node: i32) -> Result<(), String> {
    if name.is_empty() {
        return Err("Broker id must not be empty".to_string());
    }
    broker_scope(name, this_node, false).map(|_| ())
}

/// A BROKER_LOGGER resource's entries: every logger and the level it logs at.
fn logger_entries(wanted: impl Fn(&str) -> bool) -> Vec<DescribeConfigsResourceResult> {
    crate::service::logging::loggers()
        .into_iter()
        .filter(|(logger, _)| wanted(logger))
        .map(|(logger, level)| {
            DescribeConfigsResourceResult::default()
                .with_name(super::str_bytes(&logger))
                .with_value(Some(super::str_bytes(&level)))
                .with_read_only(false)
                .with_config_source(SOURCE_DYNAMIC_BROKER_LOGGER)
                .with_config_type(TYPE_STRING)
        })
        .collect()
}

/// A broker resource's entries: its dynamic keys ([`broker_config::describe_dynamic`]) and,
/// for a broker id, the static ones (read-only).
fn broker_entries(
    config: &BrokerConfig,
    store: &BrokerConfigStore,
    scope: Option<i32>,
    include_synonyms: bool,
    wanted: impl Fn(&str) -> bool,
) -> Vec<DescribeConfigsResourceResult> {
    let synonyms = |name: &str, list: Vec<(String, i8)>| {
        if !include_synonyms {
            return Vec::new();
        }
        list.into_iter()
            .map(|(value, source)| {
                DescribeConfigsSynonym::default()
                    .with_name(super::str_bytes(name))
                    .with_value(Some(super::str_bytes(&value)))
                    .with_source(source)
            })
            .collect()
    };
    let mut entries: Vec<DescribeConfigsResourceResult> =
        broker_config::describe_dynamic(config, store, scope)
            .into_iter()
            .filter(|entry| wanted(entry.name))
            .map(|entry| {
                DescribeConfigsResourceResult::default()
                    .with_name(super::str_bytes(entry.name))
                    .with_value(Some(super::str_bytes(&entry.value)))
                    .with_read_only(false)
                    .with_config_source(entry.source)
                    .with_config_type(config_type(entry.name))
                    .with_synonyms(synonyms(entry.name, entry.synonyms))
            })
            .collect();
    if scope.is_some() {
        entries.extend(
            broker_configs(config)
                .into_iter()
                .filter(|(key, _)| wanted(key) && !broker_config::is_dynamic(key))
                .map(|(key, value)| {
                    DescribeConfigsResourceResult::default()
                        .with_name(super::str_bytes(key))
                        .with_value(Some(super::str_bytes(&value)))
                        .with_read_only(true)
                        .with_config_source(SOURCE_STATIC_BROKER)
                        .with_config_type(config_type(key))
                        .with_synonyms(synonyms(key, vec![(value, SOURCE_STATIC_BROKER)]))
                }),
        );
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    entries
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
    let include_synonyms = request.include_synonyms;
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
                RESOURCE_BROKER | RESOURCE_BROKER_LOGGER => (!context
                    .authorize_cluster(Operation::DescribeConfigs))
                .then_some(ResponseError::ClusterAuthorizationFailed),
                _ => None,
            };
            if let Some(error) = denied {
                return result.with_error_code(error.code());
            }
            match resource.resource_type {
                RESOURCE_TOPIC => match image.topic(resource.resource_name.as_str()) {
                    Some(topic) => {
                        let live = shard.live_config();
                        result.with_configs(
                            topic_config::effective_configs(&topic.configs, &live)
                                .into_iter()
                                .filter(|(key, _, _)| wanted(key))
                                .map(|(key, value, source)| {
                                    let synonyms = if include_synonyms {
                                        topic_config::synonyms(key, &topic.configs, &live)
                                            .into_iter()
                                            .map(|(name, value, source)| {
                                                DescribeConfigsSynonym::default()
                                                    .with_name(super::str_bytes(name))
                                                    .with_value(Some(super::str_bytes(&value)))
                                                    .with_source(source)
                                            })
                                            .collect()
                                    } else {
                                        Vec::new()
                                    };
                                    DescribeConfigsResourceResult::default()
                                        .with_name(super::str_bytes(key))
                                        .with_value(Some(super::str_bytes(&value)))
                                        .with_config_source(source)
                                        .with_config_type(config_type(key))
                                        .with_synonyms(synonyms)
                                })
                                .collect(),
                        )
                    }
                    None => result
                        .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                        .with_error_message(Some(super::str_bytes(&format!(
                            "topic {} does not exist",
                            resource.resource_name.as_str()
                        )))),
                },
                RESOURCE_BROKER => {
                    let name = resource.resource_name.as_str();
                    match broker_scope(name, shard.config.node_id, true) {
                        Ok(scope) => result.with_configs(broker_entries(
                            &shard.config,
                            &image.broker_configs,
                            scope,
                            include_synonyms,
                            wanted,
                        )),
                        Err(message) => {
                            tracing::info!(resource = name, "DescribeConfigs refused: {message}");
                            result
                                .with_error_code(ResponseError::InvalidRequest.code())
                                .with_error_message(Some(super::str_bytes(&message)))
                        }
                    }
                }
                RESOURCE_BROKER_LOGGER => {
                    let name = resource.resource_name.as_str();
                    match logger_scope(name, shard.config.node_id) {
                        Ok(()) => result.with_configs(logger_entries(wanted)),
                        Err(message) => {
                            tracing::info!(resource = name, "DescribeConfigs refused: {message}");
                            result
                                .with_error_code(ResponseError::InvalidRequest.code())
                                .with_error_message(Some(super::str_bytes(&message)))
                        }
                    }
                }
                other => {
                    tracing::info!(
                        resource_type = other,
                        "DescribeConfigs of an unsupported resource type"
                    );
                    result
                        .with_error_code(ResponseError::InvalidRequest.code())
                        .with_error_message(Some(super::str_bytes(&format!(
                            "Unsupported resource type: {other}"
                        ))))
                }
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}
