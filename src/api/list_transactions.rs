//! ListTransactions (key 66): the transactional ids this node coordinates, over every shard
//! (one hop each), filtered by state, producer id and (v1+) minimum running time. Unknown state
//! names are echoed back in `unknown_state_filters`, as Kafka does. (v2's id pattern, a Java
//! regex, is not served.)

use super::RequestContext;
use crate::security::acl::{Operation, ResourceType};
use crate::txn::records::TxnState;
use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};

pub async fn handle(
    context: &RequestContext,
    request: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let mut states = Vec::new();
    let mut unknown = Vec::new();
    for name in &request.state_filters {
        match TxnState::from_name(name.as_str()) {
            Some(state) => states.push(state),
            None => unknown.push(name.clone()),
        }
    }
    let producer_ids: Vec<i64> = request.producer_id_filters.iter().map(|p| p.0).collect();
    let min_duration_ms = if context.api_version >= 1 {
        request.duration_filter
    } else {
        -1
    };
    let now_ms = crate::group::wall_clock_ms();
    let shard = &context.shard;
    let per_shard = (0..shard.count).map(|target| {
        shard.invoke_on(target, |owner| async move {
            crate::txn::coordinator::list(&owner).await
        })
    });
    let listed: Vec<_> = futures::future::join_all(per_shard)
        .await
        .into_iter()
        .flat_map(|listed| listed.unwrap_or_default())
        .filter(|txn| states.is_empty() || states.contains(&txn.state))
        .filter(|txn| producer_ids.is_empty() || producer_ids.contains(&txn.producer_id))
        // Kafka: only the ids the principal may DESCRIBE.
        .filter(|txn| {
            context.authorize(
                Operation::Describe,
                ResourceType::TransactionalId,
                &txn.transactional_id,
            )
        })
        .filter(|txn| {
            min_duration_ms < 0 || (txn.start_ms >= 0 && now_ms - txn.start_ms >= min_duration_ms)
        })
        .map(|txn| {
            TransactionState::default()
                .with_transactional_id(TransactionalId(super::str_bytes(&txn.transactional_id)))
                .with_producer_id(ProducerId(txn.producer_id))
                .with_transaction_state(super::str_bytes(txn.state.name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_unknown_state_filters(unknown)
        .with_transaction_states(listed)
}
