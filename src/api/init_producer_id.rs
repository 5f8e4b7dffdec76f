//! InitProducerId (key 22): producer ids for idempotent producers. Ids come from the controller
//! (shard 0), which reserves them in persisted blocks so no id is ever handed out twice.
//! Transactional ids are refused until the transaction coordinator exists.

use super::RequestContext;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

pub async fn handle(
    context: &RequestContext,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let refused = |error: ResponseError| {
        InitProducerIdResponse::default()
            .with_error_code(error.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if request.transactional_id.is_some() {
        tracing::warn!(peer = %context.peer, "refused a transactional producer: transactions are not supported");
        return refused(ResponseError::TransactionalIdAuthorizationFailed);
    }
    // KIP-360: an idempotent producer may ask to bump its epoch after an unknown-sequence error.
    let known_producer = request.producer_id.0 >= 0;
    if known_producer && request.producer_epoch >= 0 && request.producer_epoch < i16::MAX - 1 {
        return InitProducerIdResponse::default()
            .with_producer_id(request.producer_id)
            .with_producer_epoch(request.producer_epoch + 1);
    }
    let allocated = context
        .shard
        .invoke_on(0, |shard| async move {
            crate::cluster::client::allocate_producer_id(&shard).await
        })
        .await;
    match allocated {
        Ok(Ok(producer_id)) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(0),
        Ok(Err(error)) => {
            tracing::error!("cannot allocate a producer id: {}", error.message);
            refused(ResponseError::CoordinatorNotAvailable)
        }
        Err(error) => {
            tracing::error!("cannot reach the controller: {error}");
            refused(ResponseError::CoordinatorNotAvailable)
        }
    }
}
