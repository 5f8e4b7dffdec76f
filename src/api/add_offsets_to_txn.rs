//! AddOffsetsToTxn (key 25): the producer will commit a group's offsets in its transaction, so
//! the group's `__consumer_offsets` partition joins the transaction (and gets its marker).

use super::RequestContext;
use crate::security::acl::{Operation, ResourceType};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};

pub async fn handle(
    context: &RequestContext,
    request: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let outcome = add(context, request).await;
    let code = match outcome {
        Ok(()) => 0,
        Err(ResponseError::ProducerFenced) if context.api_version < 2 => {
            ResponseError::InvalidProducerEpoch.code()
        }
        Err(error) => error.code(),
    };
    AddOffsetsToTxnResponse::default().with_error_code(code)
}

async fn add(
    context: &RequestContext,
    request: AddOffsetsToTxnRequest,
) -> Result<(), ResponseError> {
    let group_id = request.group_id.0.to_string();
    // Kafka: WRITE on the transactional id, then READ on the group.
    if !context.authorize(
        Operation::Write,
        ResourceType::TransactionalId,
        request.transactional_id.0.as_str(),
    ) {
        return Err(ResponseError::TransactionalIdAuthorizationFailed);
    }
    if !context.authorize(Operation::Read, ResourceType::Group, &group_id) {
        return Err(ResponseError::GroupAuthorizationFailed);
    }
    crate::group::validate_group_id(&group_id)?;
    crate::group::ensure_offsets_topic(&context.shard).await?;
    let count = context
        .shard
        .metadata()
        .topic(crate::group::OFFSETS_TOPIC)
        .map_or(0, |topic| topic.partition_count());
    if count < 1 {
        return Err(ResponseError::CoordinatorNotAvailable);
    }
    let partition = (
        crate::group::OFFSETS_TOPIC.to_string(),
        crate::group::partition_for(&group_id, count),
    );
    let id = request.transactional_id.0.to_string();
    let producer_id = request.producer_id.0;
    let producer_epoch = request.producer_epoch;
    crate::txn::on_coordinator(
        &context.shard,
        &id.clone(),
        move |owner, index| async move {
            crate::txn::coordinator::add_partitions(
                &owner,
                index,
                id,
                producer_id,
                producer_epoch,
                vec![partition],
            )
            .await
        },
    )
    .await
}
