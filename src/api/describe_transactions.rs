//! DescribeTransactions (key 65): the coordinator's view of each transactional id: state,
//! producer id and epoch, timeout, start time and partitions. Ids coordinated by another node
//! answer NOT_COORDINATOR (the admin client asks that node).

use super::RequestContext;
use crate::security::acl::{Operation, ResourceType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TransactionalId,
};

/// Ids one request may describe.
const MAX_IDS_PER_REQUEST: usize = 10_000;

pub async fn handle(
    context: &RequestContext,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let mut states = Vec::with_capacity(request.transactional_ids.len().min(MAX_IDS_PER_REQUEST));
    for requested in request
        .transactional_ids
        .into_iter()
        .take(MAX_IDS_PER_REQUEST)
    {
        let id = requested.0.to_string();
        let lookup = id.clone();
        let described =
            if context.authorize(Operation::Describe, ResourceType::TransactionalId, &id) {
                crate::txn::on_coordinator(&context.shard, &id, move |owner, index| async move {
                    crate::txn::coordinator::describe(&owner, index, lookup).await
                })
                .await
            } else {
                Err(ResponseError::TransactionalIdAuthorizationFailed)
            };
        let state = TransactionState::default()
            .with_transactional_id(TransactionalId(super::str_bytes(&id)));
        states.push(match described {
            Ok(txn) => {
                let mut topics: Vec<TopicData> = Vec::new();
                for (topic, partition) in txn.partitions {
                    match topics.last_mut() {
                        Some(last) if last.topic.0.as_str() == topic => {
                            last.partitions.push(partition)
                        }
                        _ => topics.push(
                            TopicData::default()
                                .with_topic(super::topic_name(&topic))
                                .with_partitions(vec![partition]),
                        ),
                    }
                }
                state
                    .with_transaction_state(super::str_bytes(txn.state.name()))
                    .with_transaction_timeout_ms(txn.timeout_ms)
                    .with_transaction_start_time_ms(txn.start_ms)
                    .with_producer_id(ProducerId(txn.producer_id))
                    .with_producer_epoch(txn.producer_epoch)
                    .with_topics(topics)
            }
            Err(error) => state
                .with_error_code(error.code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
                .with_transaction_start_time_ms(-1),
        });
    }
    DescribeTransactionsResponse::default().with_transaction_states(states)
}
