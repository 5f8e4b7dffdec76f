//! EndTxn (key 26): commit or abort the producer's transaction at its coordinator. Answered
//! once the COMMIT/ABORT markers are on every partition of the transaction (bounded: the
//! decision is durable once PrepareCommit/PrepareAbort is written).

use super::RequestContext;
use crate::security::acl::{Operation, ResourceType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse};

pub async fn handle(context: &RequestContext, request: EndTxnRequest) -> EndTxnResponse {
    let id = request.transactional_id.0.to_string();
    if !context.authorize(Operation::Write, ResourceType::TransactionalId, &id) {
        return EndTxnResponse::default()
            .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
            .with_producer_id(request.producer_id)
            .with_producer_epoch(request.producer_epoch);
    }
    let producer_id = request.producer_id.0;
    let producer_epoch = request.producer_epoch;
    let commit = request.committed;
    let outcome = crate::txn::on_coordinator(
        &context.shard,
        &id.clone(),
        move |owner, index| async move {
            crate::txn::coordinator::end_transaction(
                &owner,
                index,
                id,
                producer_id,
                producer_epoch,
                commit,
            )
            .await
        },
    )
    .await;
    let code = match outcome {
        Ok(()) => 0,
        Err(ResponseError::ProducerFenced) if context.api_version < 2 => {
            ResponseError::InvalidProducerEpoch.code()
        }
        Err(error) => error.code(),
    };
    EndTxnResponse::default()
        .with_error_code(code)
        .with_producer_id(request.producer_id)
        .with_producer_epoch(producer_epoch)
}
