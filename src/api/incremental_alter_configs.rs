//! IncrementalAlterConfigs (key 44): SET / DELETE / APPEND / SUBTRACT per topic or dynamic
//! broker config key, and SET / DELETE of this broker's log levels (BROKER_LOGGER).

use super::describe_configs::{
    broker_scope, logger_scope, RESOURCE_BROKER, RESOURCE_BROKER_LOGGER, RESOURCE_TOPIC,
};
use super::RequestContext;
use crate::cluster::controller::{ConfigChange, ConfigOp};
use crate::security::acl::{Operation, ResourceType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;

/// (resource type, resource name, error code, error message) per resource, in request order.
pub type AlterResult = (i8, StrBytes, i16, Option<String>);

pub async fn handle(
    context: &RequestContext,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut invalid_ops = Vec::new();
    let resources = request
        .resources
        .into_iter()
        .map(|resource| {
            let changes = resource
                .configs
                .into_iter()
                .map(|config| {
                    let op = match config.config_operation {
                        0 => ConfigOp::Set,
                        1 => ConfigOp::Delete,
                        2 => ConfigOp::Append,
                        3 => ConfigOp::Subtract,
                        other => {
                            invalid_ops.push((resource.resource_name.clone(), other));
                            ConfigOp::Set
                        }
                    };
                    ConfigChange {
                        key: config.name.to_string(),
                        op,
                        value: config.value.map(|v| v.to_string()),
                    }
                })
                .collect();
            (resource.resource_type, resource.resource_name, changes)
        })
        .collect::<Vec<_>>();
    let results = if invalid_ops.is_empty() {
        alter(context, resources, false, request.validate_only).await
    } else {
        resources
            .into_iter()
            .map(|(resource_type, name, _)| {
                (
                    resource_type,
                    name,
                    ResponseError::InvalidRequest.code(),
                    Some(format!("unknown config operation in {invalid_ops:?}")),
                )
            })
            .collect()
    };
    IncrementalAlterConfigsResponse::default().with_responses(
        results
            .into_iter()
            .map(|(resource_type, name, code, message)| {
                AlterConfigsResourceResponse::default()
                    .with_resource_type(resource_type)
                    .with_resource_name(name)
                    .with_error_code(code)
                    .with_error_message(message.map(|m| super::str_bytes(&m)))
            })
            .collect(),
    )
}

/// A resource of an alter request after its authorization and name checks.
enum Checked {
    Topic,
    /// A broker resource: its broker id, or `None` for the cluster-wide default.
    Broker(Option<i32>),
    /// Done here, without the controller (log levels are this process's own).
    Done,
    Refused(ResponseError, Option<String>),
}

/// Log level changes of a BROKER_LOGGER resource, checked and (unless `validate_only`)
/// applied as Kafka does: all or none, SET and DELETE only, legacy AlterConfigs refused.
fn alter_log_levels(
    name: &str,
    node_id: i32,
    changes: &[ConfigChange],
    replace_all: bool,
    validate_only: bool,
) -> Checked {
    use crate::service::logging::{apply_level_changes, check_level_changes};
    if replace_all {
        return Checked::Refused(
            ResponseError::InvalidRequest,
            Some(
                "AlterConfigs does not support the BROKER_LOGGER resource type: use \
                 IncrementalAlterConfigs"
                    .to_string(),
            ),
        );
    }
    if let Err(message) = logger_scope(name, node_id) {
        return Checked::Refused(ResponseError::InvalidRequest, Some(message));
    }
    let mut level_changes = Vec::with_capacity(changes.len());
    for change in changes {
        let level = match change.op {
            ConfigOp::Set => Some(change.value.clone().unwrap_or_else(|| "null".to_string())),
            ConfigOp::Delete => None,
            ConfigOp::Append | ConfigOp::Subtract => {
                let op = if change.op == ConfigOp::Append {
                    "APPEND"
                } else {
                    "SUBTRACT"
                };
                return Checked::Refused(
                    ResponseError::InvalidRequest,
                    Some(format!(
                        "{op} operation is not allowed for the BROKER_LOGGER resource"
                    )),
                );
            }
        };
        level_changes.push((change.key.clone(), level));
    }
    if let Err((invalid_config, message)) = check_level_changes(&level_changes) {
        let error = if invalid_config {
            ResponseError::InvalidConfig
        } else {
            ResponseError::InvalidRequest
        };
        return Checked::Refused(error, Some(message));
    }
    if validate_only {
        return Checked::Done;
    }
    match apply_level_changes(&level_changes) {
        Ok(()) => Checked::Done,
        Err(message) => Checked::Refused(ResponseError::UnknownServerError, Some(message)),
    }
}

/// Shared by AlterConfigs and IncrementalAlterConfigs: topic changes and broker changes (a
/// broker id for this broker's own dynamic configs, the empty name for the cluster-wide
/// default) go to the controller, which validates and records them.
pub async fn alter(
    context: &RequestContext,
    resources: Vec<(i8, StrBytes, Vec<ConfigChange>)>,
    replace_all: bool,
    validate_only: bool,
) -> Vec<AlterResult> {
    let node_id = context.shard.config.node_id;
    // Kafka: ALTER_CONFIGS on the topic, or on the cluster for broker configs; then the
    // resource itself must make sense here.
    let checked: Vec<Checked> = resources
        .iter()
        .map(|(resource_type, name, changes)| match *resource_type {
            RESOURCE_TOPIC => {
                if context.authorize(Operation::AlterConfigs, ResourceType::Topic, name.as_str()) {
                    Checked::Topic
                } else {
                    Checked::Refused(ResponseError::TopicAuthorizationFailed, None)
                }
            }
            RESOURCE_BROKER => {
                if !context.authorize_cluster(Operation::AlterConfigs) {
                    return Checked::Refused(ResponseError::ClusterAuthorizationFailed, None);
                }
                match broker_scope(name.as_str(), node_id, false) {
                    Ok(scope) => Checked::Broker(scope),
                    Err(message) => Checked::Refused(ResponseError::InvalidRequest, Some(message)),
                }
            }
            RESOURCE_BROKER_LOGGER => {
                if !context.authorize_cluster(Operation::AlterConfigs) {
                    return Checked::Refused(ResponseError::ClusterAuthorizationFailed, None);
                }
                alter_log_levels(name.as_str(), node_id, changes, replace_all, validate_only)
            }
            other => Checked::Refused(
                ResponseError::InvalidRequest,
                Some(format!("Unsupported resource type: {other}")),
            ),
        })
        .collect();
    // Operators learn from the log which of the keys they set change nothing here.
    let without_effect: Vec<Vec<String>> = resources
        .iter()
        .map(|(resource_type, _, changes)| {
            changes
                .iter()
                .filter(|change| {
                    *resource_type == RESOURCE_BROKER
                        && change.op != ConfigOp::Delete
                        && !crate::cluster::broker_config::is_applied(&change.key)
                })
                .map(|change| change.key.clone())
                .collect()
        })
        .collect();
    let topic_requests: Vec<(String, Vec<ConfigChange>)> = resources
        .iter()
        .zip(&checked)
        .filter(|(_, checked)| matches!(checked, Checked::Topic))
        .map(|((_, name, changes), _)| (name.to_string(), changes.clone()))
        .collect();
    let broker_requests: Vec<(Option<i32>, Vec<ConfigChange>)> = resources
        .iter()
        .zip(&checked)
        .filter_map(|((_, _, changes), checked)| match checked {
            Checked::Broker(scope) => Some((*scope, changes.clone())),
            _ => None,
        })
        .collect();
    let outcome = context
        .shard
        .invoke_on(0, move |shard| async move {
            let topics = if topic_requests.is_empty() {
                Vec::new()
            } else {
                crate::cluster::client::alter_topic_configs(
                    &shard,
                    topic_requests,
                    replace_all,
                    validate_only,
                )
                .await
            };
            let brokers = if broker_requests.is_empty() {
                Vec::new()
            } else {
                crate::cluster::client::alter_broker_configs(
                    &shard,
                    broker_requests,
                    replace_all,
                    validate_only,
                )
                .await
            };
            (topics, brokers)
        })
        .await;
    let (mut topic_results, mut broker_results) = match outcome {
        Ok((topics, brokers)) => (topics.into_iter(), brokers.into_iter()),
        Err(error) => {
            tracing::warn!("alter configs failed: {error}");
            (Vec::new().into_iter(), Vec::new().into_iter())
        }
    };
    resources
        .into_iter()
        .zip(checked)
        .zip(without_effect)
        .map(|(((resource_type, name, _), checked), without_effect)| {
            match checked {
                Checked::Refused(error, message) => {
                    if let Some(message) = &message {
                        tracing::info!(resource_type, resource = %name.as_str(), "AlterConfigs refused: {message}");
                    }
                    return (resource_type, name, error.code(), message);
                }
                Checked::Done => return (resource_type, name, 0, None),
                Checked::Topic | Checked::Broker(_) => {}
            }
            let outcome = if resource_type == RESOURCE_TOPIC {
                topic_results.next()
            } else {
                broker_results.next()
            };
            match outcome {
                Some(Ok(())) => {
                    if resource_type == RESOURCE_BROKER && !validate_only {
                        tracing::info!(resource = %name.as_str(), ?without_effect,
                            "dynamic broker configs changed (keys without effect in Riptide are only stored)");
                    }
                    (resource_type, name, 0, None)
                }
                Some(Err(error)) => {
                    tracing::info!(resource_type, resource = %name.as_str(),
                        "AlterConfigs refused: {}", error.message);
                    (resource_type, name, error.code, Some(error.message))
                }
                None => (
                    resource_type,
                    name,
                    ResponseError::UnknownServerError.code(),
                    None,
                ),
            }
        })
        .collect()
}
