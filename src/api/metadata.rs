//! Metadata (key 3): brokers, topics, partitions and their leaders. Creates unknown topics when
//! `auto_create_topics` is on and the client allows it.

use super::RequestContext;
use crate::cluster::controller::{validate_topic_name, NewTopic};
use crate::cluster::metadata::{MetadataImage, TopicRecord, NO_LEADER};
use crate::security::acl::{self, Operation, ResourceType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use std::sync::Arc;
use uuid::Uuid;

/// Placeholder Kafka uses when authorized operations were not asked for.
const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

pub async fn handle(context: &RequestContext, request: MetadataRequest) -> MetadataResponse {
    let shard = &context.shard;
    let config = &shard.config;
    let node_id = BrokerId(config.node_id);
    let image = MetadataImage::serving_view(shard.metadata(), config.node_id);

    let may_create =
        config.auto_create_topics && (context.api_version < 4 || request.allow_auto_topic_creation);
    let mut topics = Vec::new();
    match request.topics {
        None => {
            // Kafka: topics the principal may not DESCRIBE are left out.
            topics.extend(
                image
                    .topics
                    .values()
                    .filter(|t| {
                        context.authorize(Operation::Describe, ResourceType::Topic, &t.name)
                    })
                    .map(|t| describe_topic(context, &image, t)),
            );
        }
        Some(requested) => {
            let mut to_create = Vec::new();
            // Kafka: auto-creation needs CREATE on the cluster or on the topic.
            let cluster_create = may_create && context.authorize_cluster(Operation::Create);
            for topic in requested {
                match topic.name {
                    Some(name) => {
                        let name = name.0.to_string();
                        if !context.authorize(Operation::Describe, ResourceType::Topic, &name) {
                            topics.push(unauthorized_topic(Some(&name), Uuid::nil()));
                            continue;
                        }
                        match image.topic(&name) {
                            Some(record) => topics.push(describe_topic(context, &image, record)),
                            None if may_create
                                && !cluster_create
                                && !context.authorize(
                                    Operation::Create,
                                    ResourceType::Topic,
                                    &name,
                                ) =>
                            {
                                topics.push(unauthorized_topic(Some(&name), Uuid::nil()))
                            }
                            None if may_create => match validate_topic_name(&name) {
                                Ok(()) => to_create.push(name),
                                // Kafka answers an illegal name with INVALID_TOPIC_EXCEPTION.
                                Err(error) => topics.push(
                                    unknown_topic(Some(&name), Uuid::nil())
                                        .with_error_code(error.code),
                                ),
                            },
                            None => topics.push(unknown_topic(Some(&name), Uuid::nil())),
                        }
                    }
                    None => match image.topic_by_id(topic.topic_id) {
                        Some(record)
                            if !context.authorize(
                                Operation::Describe,
                                ResourceType::Topic,
                                &record.name,
                            ) =>
                        {
                            topics.push(unauthorized_topic(None, topic.topic_id))
                        }
                        Some(record) => topics.push(describe_topic(context, &image, record)),
                        None => topics.push(
                            MetadataResponseTopic::default()
                                .with_topic_id(topic.topic_id)
                                .with_error_code(ResponseError::UnknownTopicId.code())
                                .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED),
                        ),
                    },
                }
            }
            if !to_create.is_empty() {
                topics.extend(auto_create(context, to_create).await);
            }
        }
    }
    for topic in &mut topics {
        topic.topic_authorized_operations = match &topic.name {
            Some(name) if request.include_topic_authorized_operations && topic.error_code == 0 => {
                context.authorized_operations(ResourceType::Topic, name.0.as_str())
            }
            _ => AUTHORIZED_OPERATIONS_OMITTED,
        };
    }
    // v8–10 only; later versions ask DescribeCluster.
    let cluster_authorized_operations = if !request.include_cluster_authorized_operations {
        AUTHORIZED_OPERATIONS_OMITTED
    } else if context.authorize_cluster(Operation::Describe) {
        context.authorized_operations(ResourceType::Cluster, acl::CLUSTER_NAME)
    } else {
        0
    };

    let brokers = image
        .live_brokers()
        .filter_map(|broker| {
            let (host, port) = super::broker_endpoint(context, broker)?;
            Some(
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(broker.node_id))
                    .with_host(super::str_bytes(&host))
                    .with_port(port)
                    .with_rack(broker.rack.as_deref().map(super::str_bytes)),
            )
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(super::str_bytes(&image.cluster_id)))
        .with_controller_id(BrokerId(controller_id(&image, node_id.0)))
        .with_cluster_authorized_operations(cluster_authorized_operations)
        .with_topics(topics)
}

async fn auto_create(context: &RequestContext, names: Vec<String>) -> Vec<MetadataResponseTopic> {
    let new_topics = names
        .iter()
        .map(|name| NewTopic {
            name: name.clone(),
            partitions: -1,
            replication_factor: -1,
            assignments: Vec::new(),
            configs: Vec::new(),
        })
        .collect();
    let outcome = context
        .shard
        .invoke_on(0, move |controller_shard| async move {
            crate::cluster::client::create_topics(&controller_shard, new_topics, false).await
        })
        .await;
    let image = MetadataImage::serving_view(context.shard.metadata(), context.shard.config.node_id);
    match outcome {
        Ok(results) => names
            .iter()
            .zip(results)
            .map(|(name, result)| match (result, image.topic(name)) {
                // Another request may have created it first: describe what exists.
                (_, Some(record)) => describe_topic(context, &image, record),
                // Created meanwhile by another node's request, not yet in this node's image: a
                // retriable answer (any other topic error is permanent to librdkafka, which then
                // fails every message queued for the topic).
                (Err(error), None) if error.code == ResponseError::TopicAlreadyExists.code() => {
                    unknown_topic(Some(name), Uuid::nil())
                        .with_error_code(ResponseError::LeaderNotAvailable.code())
                }
                (Err(error), None) => {
                    tracing::warn!(topic = %name, "auto-creation failed: {}", error.message);
                    unknown_topic(Some(name), Uuid::nil()).with_error_code(error.code)
                }
                (Ok(_), None) => unknown_topic(Some(name), Uuid::nil())
                    .with_error_code(ResponseError::LeaderNotAvailable.code()),
            })
            .collect(),
        Err(error) => names
            .iter()
            .map(|name| {
                tracing::warn!(topic = %name, "auto-creation failed: {error}");
                unknown_topic(Some(name), Uuid::nil())
                    .with_error_code(ResponseError::LeaderNotAvailable.code())
            })
            .collect(),
    }
}

fn unauthorized_topic(name: Option<&str>, topic_id: Uuid) -> MetadataResponseTopic {
    unknown_topic(name, topic_id).with_error_code(ResponseError::TopicAuthorizationFailed.code())
}

fn unknown_topic(name: Option<&str>, topic_id: Uuid) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(name.map(super::topic_name))
        .with_topic_id(topic_id)
        .with_error_code(ResponseError::UnknownTopicOrPartition.code())
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}

/// The controller id clients are told: as in KRaft, controllers are not reachable by clients, so
/// this is a live broker — this node when it is one, else the lowest live broker id.
pub(crate) fn controller_id(image: &MetadataImage, this_node: i32) -> i32 {
    image
        .live_brokers()
        .map(|broker| broker.node_id)
        .min_by_key(|&id| id != this_node)
        .unwrap_or(this_node)
}

fn describe_topic(
    context: &RequestContext,
    image: &MetadataImage,
    topic: &Arc<TopicRecord>,
) -> MetadataResponseTopic {
    let listener = context.session.listener.name.as_str();
    let ids = |nodes: &[i32]| nodes.iter().map(|&id| BrokerId(id)).collect::<Vec<_>>();
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(index, record)| {
            let offline: Vec<i32> = record
                .replicas
                .iter()
                .copied()
                .filter(|&id| !image.is_live(id))
                .collect();
            let leader_reachable = image
                .brokers
                .get(&record.leader)
                .is_some_and(|broker| broker.endpoint(listener).is_some());
            let leader = if image.is_live(record.leader) && leader_reachable {
                record.leader
            } else {
                NO_LEADER
            };
            let response = MetadataResponsePartition::default()
                .with_partition_index(index as i32)
                .with_leader_id(BrokerId(leader))
                .with_leader_epoch(record.leader_epoch)
                .with_replica_nodes(ids(&record.replicas))
                .with_isr_nodes(ids(&record.isr))
                .with_offline_replicas(ids(&offline));
            if leader == NO_LEADER && image.is_live(record.leader) && context.api_version >= 6 {
                // Kafka's answer when the leader has no listener of this connection's name.
                response.with_error_code(ResponseError::ListenerNotFound.code())
            } else if leader == NO_LEADER {
                response.with_error_code(ResponseError::LeaderNotAvailable.code())
            } else {
                response
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(super::topic_name(&topic.name)))
        .with_topic_id(topic.topic_id)
        .with_is_internal(topic.name.starts_with("__"))
        .with_partitions(partitions)
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}
