//! AddPartitionsToTxn (key 24). v0–3: a producer adds partitions to its transaction. v4–5
//! (KIP-890): batched, from clients or from partition leaders, which send `verify_only` to ask
//! whether a partition is already in the producer's open transaction. Partitions of unknown
//! topics fail the whole transaction's request (the others answer OPERATION_NOT_ATTEMPTED), as
//! in Kafka; the rest travel in one hop to the id's coordinator shard.

use super::RequestContext;
use crate::security::acl::{Operation, ResourceType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, TransactionalId,
};

/// Transactions one batched request may carry.
const MAX_TRANSACTIONS_PER_REQUEST: usize = 10_000;

pub async fn handle(
    context: &RequestContext,
    request: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    if context.api_version <= 3 {
        let results = add(
            context,
            request.v3_and_below_transactional_id.0.to_string(),
            request.v3_and_below_producer_id.0,
            request.v3_and_below_producer_epoch,
            false,
            request.v3_and_below_topics,
        )
        .await;
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results);
    }
    // Kafka: the batched versions are for brokers only, which need CLUSTER_ACTION.
    if !context.authorize_cluster(Operation::ClusterAction) {
        return AddPartitionsToTxnResponse::default()
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code());
    }
    let mut results =
        Vec::with_capacity(request.transactions.len().min(MAX_TRANSACTIONS_PER_REQUEST));
    for transaction in request
        .transactions
        .into_iter()
        .take(MAX_TRANSACTIONS_PER_REQUEST)
    {
        let id = transaction.transactional_id.0.to_string();
        let topics = add(
            context,
            id.clone(),
            transaction.producer_id.0,
            transaction.producer_epoch,
            transaction.verify_only,
            transaction.topics,
        )
        .await;
        results.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(TransactionalId(super::str_bytes(&id)))
                .with_topic_results(topics),
        );
    }
    AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
}

/// Adds (or verifies) the partitions of one transaction; one result per partition asked.
async fn add(
    context: &RequestContext,
    id: String,
    producer_id: i64,
    producer_epoch: i16,
    verify_only: bool,
    topics: Vec<AddPartitionsToTxnTopic>,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let image = context.shard.metadata();
    let asked: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|topic| {
            let name = topic.name.0.to_string();
            topic.partitions.iter().map(move |&p| (name.clone(), p))
        })
        .collect();
    let known = |topic: &str, partition: i32| {
        image
            .topic(topic)
            .is_some_and(|t| (0..t.partition_count()).contains(&partition))
    };
    let internal = |topic: &str| topic == crate::txn::TRANSACTION_STATE_TOPIC;
    // Kafka: WRITE on the transactional id (else every partition fails), and on each topic.
    let txn_authorized = context.authorize(Operation::Write, ResourceType::TransactionalId, &id);
    let denied: Vec<String> = topics
        .iter()
        .map(|topic| topic.name.0.as_str())
        .filter(|topic| !context.authorize(Operation::Write, ResourceType::Topic, topic))
        .map(str::to_string)
        .collect();
    let topic_denied = |topic: &str| denied.iter().any(|denied| denied == topic);
    let any_unknown = asked
        .iter()
        .any(|(t, p)| !known(t, *p) || internal(t) || topic_denied(t));
    let outcome: Result<(), ResponseError> = if !txn_authorized {
        Err(ResponseError::TransactionalIdAuthorizationFailed)
    } else if any_unknown {
        Err(ResponseError::OperationNotAttempted)
    } else if asked.is_empty() {
        Ok(())
    } else {
        let partitions = asked.clone();
        crate::txn::on_coordinator(
            &context.shard,
            &id.clone(),
            move |owner, index| async move {
                if verify_only {
                    for partition in partitions {
                        crate::txn::coordinator::verify(
                            &owner,
                            index,
                            id.clone(),
                            producer_id,
                            producer_epoch,
                            partition,
                        )
                        .await?;
                    }
                    Ok(())
                } else {
                    crate::txn::coordinator::add_partitions(
                        &owner,
                        index,
                        id,
                        producer_id,
                        producer_epoch,
                        partitions,
                    )
                    .await
                }
            },
        )
        .await
    };
    let code_of = |topic: &str, partition: i32| -> i16 {
        if !txn_authorized {
            return ResponseError::TransactionalIdAuthorizationFailed.code();
        }
        if topic_denied(topic) {
            return ResponseError::TopicAuthorizationFailed.code();
        }
        if !known(topic, partition) {
            return ResponseError::UnknownTopicOrPartition.code();
        }
        if internal(topic) {
            return ResponseError::TopicAuthorizationFailed.code();
        }
        match outcome {
            Ok(()) => 0,
            // Before v2 there is no PRODUCER_FENCED: Kafka answers INVALID_PRODUCER_EPOCH.
            Err(ResponseError::ProducerFenced) if context.api_version < 2 => {
                ResponseError::InvalidProducerEpoch.code()
            }
            Err(error) => error.code(),
        }
    };
    topics
        .into_iter()
        .map(|topic| {
            let name = topic.name.0.to_string();
            let results = topic
                .partitions
                .iter()
                .map(|&partition| {
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(partition)
                        .with_partition_error_code(code_of(&name, partition))
                })
                .collect();
            AddPartitionsToTxnTopicResult::default()
                .with_name(topic.name)
                .with_results_by_partition(results)
        })
        .collect()
}
