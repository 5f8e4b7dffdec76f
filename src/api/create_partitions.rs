//! CreatePartitions (key 37): grows a topic, through the controller.

use super::RequestContext;
use crate::security::acl::{Operation, ResourceType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

pub async fn handle(
    context: &RequestContext,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let names: Vec<_> = request.topics.iter().map(|t| t.name.clone()).collect();
    // Kafka: ALTER on each topic.
    let allowed: Vec<bool> = names
        .iter()
        .map(|name| context.authorize(Operation::Alter, ResourceType::Topic, name.0.as_str()))
        .collect();
    let requests: Vec<(String, i32)> = request
        .topics
        .iter()
        .zip(&allowed)
        .filter(|(_, allowed)| **allowed)
        .map(|(t, _)| (t.name.0.to_string(), t.count))
        .collect();
    let validate_only = request.validate_only;
    let outcome = context
        .shard
        .invoke_on(0, move |shard| async move {
            crate::cluster::client::create_partitions(&shard, requests, validate_only).await
        })
        .await;
    let results = match outcome {
        Ok(results) => {
            let mut results = results.into_iter();
            names
                .into_iter()
                .zip(allowed)
                .map(|(name, allowed)| {
                    let response = CreatePartitionsTopicResult::default().with_name(name);
                    if !allowed {
                        return response
                            .with_error_code(ResponseError::TopicAuthorizationFailed.code())
                            .with_error_message(Some(super::str_bytes(
                                "Topic authorization failed.",
                            )));
                    }
                    match results.next() {
                        Some(Ok(())) => response,
                        Some(Err(error)) => response
                            .with_error_code(error.code)
                            .with_error_message(Some(super::str_bytes(&error.message))),
                        None => response.with_error_code(ResponseError::UnknownServerError.code()),
                    }
                })
                .collect()
        }
        Err(error) => names
            .into_iter()
            .map(|name| {
                CreatePartitionsTopicResult::default()
                    .with_name(name)
                    .with_error_code(ResponseError::UnknownServerError.code())
                    .with_error_message(Some(super::str_bytes(&error.to_string())))
            })
            .collect(),
    };
    CreatePartitionsResponse::default().with_results(results)
}
