//! DeleteTopics (key 20): by name (v0-5) or by topic id (v6), through the controller.

use super::RequestContext;
use crate::security::acl::{Operation, ResourceType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use uuid::Uuid;

pub async fn handle(
    context: &RequestContext,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let image = context.shard.metadata();
    // (name as requested, topic id as requested, resolved name)
    let mut targets: Vec<(Option<String>, Uuid, Option<String>)> = Vec::new();
    if context.api_version >= 6 {
        for state in request.topics {
            match state.name {
                Some(name) => {
                    let name = name.0.to_string();
                    targets.push((Some(name.clone()), state.topic_id, Some(name)));
                }
                None => {
                    let resolved = image.topic_by_id(state.topic_id).map(|t| t.name.clone());
                    targets.push((None, state.topic_id, resolved));
                }
            }
        }
    } else {
        for name in request.topic_names {
            let name = name.0.to_string();
            targets.push((Some(name.clone()), Uuid::nil(), Some(name)));
        }
    }
    // Kafka: DELETE on each topic.
    let allowed: Vec<bool> = targets
        .iter()
        .map(|(_, _, resolved)| {
            resolved
                .as_deref()
                .is_some_and(|name| context.authorize(Operation::Delete, ResourceType::Topic, name))
        })
        .collect();
    let names: Vec<String> = targets
        .iter()
        .zip(&allowed)
        .filter(|(_, allowed)| **allowed)
        .filter_map(|(t, _)| t.2.clone())
        .collect();
    let outcome = context
        .shard
        .invoke_on(0, move |shard| async move {
            crate::cluster::client::delete_topics(&shard, names).await
        })
        .await;
    let mut results = match outcome {
        Ok(results) => results.into_iter(),
        Err(error) => {
            tracing::warn!("delete topics failed: {error}");
            Vec::new().into_iter()
        }
    };
    let responses = targets
        .into_iter()
        .zip(allowed)
        .map(|((requested_name, requested_id, resolved), allowed)| {
            let result = DeletableTopicResult::default()
                .with_name(requested_name.as_deref().map(super::topic_name))
                .with_topic_id(requested_id);
            if resolved.is_none() {
                return result.with_error_code(ResponseError::UnknownTopicId.code());
            }
            if !allowed {
                return result.with_error_code(ResponseError::TopicAuthorizationFailed.code());
            }
            match results.next() {
                Some(Ok(topic_id)) => result.with_topic_id(topic_id),
                Some(Err(error)) => result
                    .with_error_code(error.code)
                    .with_error_message(Some(super::str_bytes(&error.message))),
                None => result.with_error_code(ResponseError::UnknownServerError.code()),
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}
