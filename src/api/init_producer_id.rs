//! InitProducerId (key 22). Without a transactional id: a new producer id for an idempotent
//! producer (from the controller, which reserves them in persisted blocks so no id is handed
//! out twice), always, as Kafka does. With one: the transaction
//! coordinator of that id (`txn::coordinator::init_producer_id`) bumps its epoch, fencing the
//! previous instance and aborting its open transaction.

use super::RequestContext;
use crate::security::acl::{Operation, ResourceType};
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
    let known_producer = request.producer_id.0 >= 0;
    if let Some(transactional_id) = request.transactional_id {
        if !context.authorize(
            Operation::Write,
            ResourceType::TransactionalId,
            transactional_id.0.as_str(),
        ) {
            return refused(ResponseError::TransactionalIdAuthorizationFailed);
        }
        let timeout_ms = request.transaction_timeout_ms;
        let max_timeout_ms = context.shard.config.transaction_max_timeout_ms;
        if timeout_ms <= 0 || timeout_ms as u64 > max_timeout_ms {
            return refused(ResponseError::InvalidTransactionTimeout);
        }
        let expected = (known_producer && request.producer_epoch >= 0)
            .then_some((request.producer_id.0, request.producer_epoch));
        let id = transactional_id.0.to_string();
        let logged_id = id.clone();
        let outcome = crate::txn::on_coordinator(
            &context.shard,
            &id.clone(),
            move |owner, partition| async move {
                crate::txn::coordinator::init_producer_id(
                    &owner, partition, id, timeout_ms, expected,
                )
                .await
            },
        )
        .await;
        return match outcome {
            Ok((producer_id, producer_epoch)) => InitProducerIdResponse::default()
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(producer_epoch),
            // Before v4 there is no PRODUCER_FENCED: Kafka answers INVALID_PRODUCER_EPOCH.
            Err(ResponseError::ProducerFenced) if context.api_version < 4 => {
                tracing::info!(peer = %context.peer, transactional_id = %logged_id,
                    "InitProducerId refused: the producer is fenced");
                refused(ResponseError::InvalidProducerEpoch)
            }
            Err(error) => {
                tracing::info!(peer = %context.peer, transactional_id = %logged_id,
                    "InitProducerId refused: {error:?}");
                refused(error)
            }
        };
    }
    // An idempotent producer needs IDEMPOTENT_WRITE on the cluster or WRITE on some topic.
    if !context.authorize_cluster(Operation::IdempotentWrite)
        && !context.authorize_any(Operation::Write, ResourceType::Topic)
    {
        return refused(ResponseError::ClusterAuthorizationFailed);
    }
    // Without a transactional id Kafka ignores the producer id and epoch a client sends
    // (nothing vouches for them: some clients send 0/0 by default) and always hands out a
    // fresh id with epoch 0; so does a KIP-360 epoch-bump request of an idempotent producer.
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
