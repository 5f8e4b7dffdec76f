//! IncrementalAlterConfigs (key 44): SET / DELETE / APPEND / SUBTRACT per topic config key.

use super::describe_configs::{RESOURCE_BROKER, RESOURCE_TOPIC};
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

/// Shared by AlterConfigs and IncrementalAlterConfigs: topic changes go to the controller;
/// broker configs are static (set at start) and refused.
pub async fn alter(
    context: &RequestContext,
    resources: Vec<(i8, StrBytes, Vec<ConfigChange>)>,
    replace_all: bool,
    validate_only: bool,
) -> Vec<AlterResult> {
    // Kafka: ALTER_CONFIGS on the topic, or on the cluster for broker configs.
    let denied: Vec<Option<ResponseError>> = resources
        .iter()
        .map(|(resource_type, name, _)| match *resource_type {
            RESOURCE_TOPIC => {
                (!context.authorize(Operation::AlterConfigs, ResourceType::Topic, name.as_str()))
                    .then_some(ResponseError::TopicAuthorizationFailed)
            }
            RESOURCE_BROKER => (!context.authorize_cluster(Operation::AlterConfigs))
                .then_some(ResponseError::ClusterAuthorizationFailed),
            _ => None,
        })
        .collect();
    let topic_requests: Vec<(String, Vec<ConfigChange>)> = resources
        .iter()
        .zip(&denied)
        .filter(|((resource_type, _, _), denied)| {
            *resource_type == RESOURCE_TOPIC && denied.is_none()
        })
        .map(|((_, name, changes), _)| {
            (
                name.to_string(),
                changes
                    .iter()
                    .map(|c| ConfigChange {
                        key: c.key.clone(),
                        op: c.op,
                        value: c.value.clone(),
                    })
                    .collect(),
            )
        })
        .collect();
    let outcome = context
        .shard
        .invoke_on(0, move |shard| async move {
            crate::cluster::client::alter_topic_configs(
                &shard,
                topic_requests,
                replace_all,
                validate_only,
            )
            .await
        })
        .await;
    let mut topic_results = match outcome {
        Ok(results) => results.into_iter(),
        Err(error) => {
            tracing::warn!("alter configs failed: {error}");
            Vec::new().into_iter()
        }
    };
    resources
        .into_iter()
        .zip(denied)
        .map(|((resource_type, name, _), denied)| {
            if let Some(error) = denied {
                return (resource_type, name, error.code(), None);
            }
            if resource_type != RESOURCE_TOPIC {
                return (
                    resource_type,
                    name,
                    ResponseError::InvalidRequest.code(),
                    Some("only topic configs can be altered; broker configs are static".into()),
                );
            }
            match topic_results.next() {
                Some(Ok(())) => (resource_type, name, 0, None),
                Some(Err(error)) => (resource_type, name, error.code, Some(error.message)),
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
