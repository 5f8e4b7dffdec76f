//! CreateTopics (key 19): forwarded to the controller on shard 0.

use super::RequestContext;
use crate::cluster::controller::AdminError;
use crate::cluster::controller::NewTopic;
use crate::cluster::topic_config;
use crate::security::acl::{Operation, ResourceType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

pub async fn handle(
    context: &RequestContext,
    request: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let names: Vec<_> = request.topics.iter().map(|t| t.name.clone()).collect();
    // Kafka: CREATE on the cluster, or else on each topic.
    let cluster_create = context.authorize_cluster(Operation::Create);
    let allowed: Vec<bool> = names
        .iter()
        .map(|name| {
            cluster_create
                || context.authorize(Operation::Create, ResourceType::Topic, name.0.as_str())
        })
        .collect();
    let new_topics: Vec<NewTopic> = request
        .topics
        .into_iter()
        .zip(&allowed)
        .filter(|(_, allowed)| **allowed)
        .map(|(topic, _)| NewTopic {
            name: topic.name.0.to_string(),
            partitions: topic.num_partitions,
            replication_factor: topic.replication_factor,
            assignments: topic
                .assignments
                .into_iter()
                .map(|a| a.broker_ids.into_iter().map(|b| b.0).collect())
                .collect(),
            configs: topic
                .configs
                .into_iter()
                .map(|c| (c.name.to_string(), c.value.map(|v| v.to_string())))
                .collect(),
        })
        .collect();
    let validate_only = request.validate_only;
    let outcome = context
        .shard
        .invoke_on(0, move |shard| async move {
            crate::cluster::client::create_topics(&shard, new_topics, validate_only).await
        })
        .await;
    let live = context.shard.live_config();
    let broker = &*live;
    let topics = match outcome {
        Ok(results) => {
            let mut results = results.into_iter();
            names
                .into_iter()
                .zip(allowed.iter().map(|&allowed| {
                    allowed.then(|| {
                        results.next().unwrap_or_else(|| {
                            Err(AdminError::new(
                                ResponseError::UnknownServerError,
                                "no result",
                            ))
                        })
                    })
                }))
                .map(|(name, result)| match result {
                    None => CreatableTopicResult::default()
                        .with_name(name)
                        .with_num_partitions(-1)
                        .with_replication_factor(-1)
                        .with_error_code(ResponseError::TopicAuthorizationFailed.code())
                        .with_error_message(Some(super::str_bytes("Topic authorization failed."))),
                    Some(Ok(record)) => CreatableTopicResult::default()
                        .with_name(name)
                        .with_topic_id(record.topic_id)
                        .with_num_partitions(record.partition_count())
                        .with_replication_factor(
                            record
                                .partitions
                                .first()
                                .map_or(0, |p| p.replicas.len() as i16),
                        )
                        .with_configs(Some(
                            topic_config::effective_configs(&record.configs, broker)
                                .into_iter()
                                .map(|(key, value, source)| {
                                    CreatableTopicConfigs::default()
                                        .with_name(super::str_bytes(key))
                                        .with_value(Some(super::str_bytes(&value)))
                                        .with_config_source(source)
                                })
                                .collect(),
                        )),
                    Some(Err(error)) => CreatableTopicResult::default()
                        .with_name(name)
                        .with_num_partitions(-1)
                        .with_replication_factor(-1)
                        .with_error_code(error.code)
                        .with_error_message(Some(super::str_bytes(&error.message))),
                })
                .collect()
        }
        Err(error) => names
            .into_iter()
            .map(|name| {
                CreatableTopicResult::default()
                    .with_name(name)
                    .with_error_code(ResponseError::UnknownServerError.code())
                    .with_error_message(Some(super::str_bytes(&error.to_string())))
            })
            .collect(),
    };
    CreateTopicsResponse::default().with_topics(topics)
}
