//! DescribeProducers (key 61): the producers a partition leader remembers — epoch, last
//! sequence and timestamp, coordinator epoch, and the first offset of the open transaction
//! (what `kafka-transactions.sh find-hanging` looks at). Each partition is read on its owner
//! shard.

use super::RequestContext;
use crate::security::acl::{Operation, ResourceType};
use crate::txn::producer_state::ProducerSummary;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

pub async fn handle(
    context: &RequestContext,
    request: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let shard = &context.shard;
    let image = shard.metadata();
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic_request in request.topics {
        let name = topic_request.name.0.to_string();
        let authorized = context.authorize(Operation::Read, ResourceType::Topic, &name);
        let mut partitions = Vec::with_capacity(topic_request.partition_indexes.len());
        for index in topic_request.partition_indexes {
            let record = image
                .topic(&name)
                .and_then(|t| t.partitions.get(usize::try_from(index).ok()?));
            let owner = match record {
                _ if !authorized => Err(ResponseError::TopicAuthorizationFailed),
                None => Err(ResponseError::UnknownTopicOrPartition),
                Some(record) => crate::cluster::leader_shard(shard, record),
            };
            let described: Result<Vec<ProducerSummary>, ResponseError> = match owner {
                Err(error) => Err(error),
                Ok(owner) => {
                    let topic = name.clone();
                    shard
                        .invoke_on(owner, move |owner_shard| async move {
                            owner_shard
                                .partitions
                                .get(&topic, index)
                                .map(|p| p.producers.borrow().summaries())
                                .ok_or(ResponseError::NotLeaderOrFollower)
                        })
                        .await
                        .unwrap_or(Err(ResponseError::NotLeaderOrFollower))
                }
            };
            let response = PartitionResponse::default().with_partition_index(index);
            partitions.push(match described {
                Ok(producers) => response.with_active_producers(
                    producers
                        .into_iter()
                        .map(|p| {
                            ProducerState::default()
                                .with_producer_id(ProducerId(p.producer_id))
                                .with_producer_epoch(i32::from(p.producer_epoch))
                                .with_last_sequence(p.last_sequence)
                                .with_last_timestamp(p.last_timestamp_ms)
                                .with_coordinator_epoch(p.coordinator_epoch)
                                .with_current_txn_start_offset(p.current_txn_start_offset)
                        })
                        .collect(),
                ),
                Err(error) => response.with_error_code(error.code()),
            });
        }
        topics.push(
            TopicResponse::default()
                .with_name(topic_request.name)
                .with_partitions(partitions),
        );
    }
    DescribeProducersResponse::default().with_topics(topics)
}
