//! CreatePartitions (key 37): grows a topic, through the controller.

use super::RequestContext;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

pub async fn handle(
    context: &RequestContext,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let names: Vec<_> = request.topics.iter().map(|t| t.name.clone()).collect();
    let requests: Vec<(String, i32)> = request
        .topics
        .iter()
        .map(|t| (t.name.0.to_string(), t.count))
        .collect();
    let validate_only = request.validate_only;
    let outcome = context
        .shard
        .invoke_on(0, move |shard| async move {
            crate::cluster::client::create_partitions(&shard, requests, validate_only).await
        })
        .await;
    let results = match outcome {
        Ok(results) => names
            .into_iter()
            .zip(results)
            .map(|(name, result)| {
                let response = CreatePartitionsTopicResult::default().with_name(name);
                match result {
                    Ok(()) => response,
                    Err(error) => response
                        .with_error_code(error.code)
                        .with_error_message(Some(super::str_bytes(&error.message))),
                }
            })
            .collect(),
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
