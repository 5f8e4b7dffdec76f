//! Producers and transactions: idempotent-producer and open-transaction state per partition
//! (`producer_state`), control batches and their delivery to partition leaders (`markers`), and
//! the transaction coordinator of the `__transaction_state` partitions a shard leads.

pub mod coordinator;
pub mod markers;
pub mod producer_state;
pub mod records;
pub mod state;

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

/// Segment size of `__transaction_state` (Kafka's `transaction.state.log.segment.bytes`).
pub const TRANSACTION_STATE_SEGMENT_BYTES: u64 = 100 * 1024 * 1024;
/// Longest transactional id accepted (bytes). Kafka sets no bound; this keeps keys bounded.
pub const MAX_TRANSACTIONAL_ID_BYTES: usize = 4096;

/// Where a transactional id's coordinator lives: its `__transaction_state` partition and the
/// shard leading it on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub partition: i32,
    pub owner: usize,
}

/// Creates `__transaction_state` if it does not exist yet (one hop to the controller).
pub async fn ensure_state_topic(shard: &Rc<Shard>) -> Result<(), ResponseError> {
    crate::cluster::ensure_internal_topic(
        shard,
        TRANSACTION_STATE_TOPIC,
        shard.config.transaction_state_log_num_partitions,
        TRANSACTION_STATE_SEGMENT_BYTES,
    )
    .await
}

/// The node leading the id's `__transaction_state` partition, if it has a live leader.
pub fn coordinator_node(shard: &Shard, transactional_id: &str) -> Option<i32> {
    let image = shard.metadata();
    let topic = image.topic(TRANSACTION_STATE_TOPIC)?;
    let count = topic.partition_count();
    if count < 1 {
        return None;
    }
    let leader = topic.partitions[partition_for(transactional_id, count) as usize].leader;
    image.is_live(leader).then_some(leader)
}

/// Finds the id's coordinator shard on this node, creating `__transaction_state` the first
/// time it is needed. NOT_COORDINATOR when another node coordinates it.
pub async fn route(shard: &Rc<Shard>, transactional_id: &str) -> Result<Route, ResponseError> {
    if transactional_id.is_empty() || transactional_id.len() > MAX_TRANSACTIONAL_ID_BYTES {
        return Err(ResponseError::InvalidRequest);
    }
    ensure_state_topic(shard).await?;
    let image = shard.metadata();
    let topic = image
        .topic(TRANSACTION_STATE_TOPIC)
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    let count = topic.partition_count();
    if count < 1 {
        return Err(ResponseError::CoordinatorNotAvailable);
    }
    let partition = partition_for(transactional_id, count);
    match crate::cluster::leader_shard(shard, &topic.partitions[partition as usize]) {
        Ok(owner) => Ok(Route { partition, owner }),
        Err(_) => match coordinator_node(shard, transactional_id) {
            Some(node) if node != shard.config.node_id => Err(ResponseError::NotCoordinator),
            _ => Err(ResponseError::CoordinatorNotAvailable),
        },
    }
}

/// How long a partition leader waits for another node's coordinator to verify a partition.
const VERIFY_TIMEOUT_MS: u64 = 5_000;

/// KIP-890 part 1: before the first transactional batch of a producer lands on a partition,
/// the partition leader asks the coordinator whether the partition was added to the producer's
/// open transaction. Err(INVALID_TXN_STATE) when it was not, PRODUCER_FENCED /
/// INVALID_PRODUCER_ID_MAPPING for a stale producer, NOT_COORDINATOR / COORDINATOR_NOT_AVAILABLE
/// when the coordinator cannot answer (the producer retries). A coordinator on another node is
/// asked with AddPartitionsToTxn v4 `verify_only`.
pub async fn verify_partition_in_transaction(
    shard: &Rc<Shard>,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    topic: &str,
    partition: i32,
) -> Result<(), ResponseError> {
    let outcome = match route(shard, transactional_id).await {
        Ok(route) => {
            let id = transactional_id.to_string();
            let topic = topic.to_string();
            shard
                .invoke_on(route.owner, move |owner| async move {
                    coordinator::verify(
                        &owner,
                        route.partition,
                        id,
                        producer_id,
                        producer_epoch,
                        (topic, partition),
                    )
                    .await
                })
                .await
                .unwrap_or(Err(ResponseError::NotCoordinator))
        }
        Err(ResponseError::NotCoordinator) => {
            verify_on_node(
                shard,
                transactional_id,
                producer_id,
                producer_epoch,
                topic,
                partition,
            )
            .await
        }
        Err(error) => Err(error),
    };
    // Kafka answers a produce whose coordinator cannot be asked with NOT_ENOUGH_REPLICAS
    // (retriable); the coordinator's own refusals pass through.
    match outcome {
        Err(
            ResponseError::NotCoordinator
            | ResponseError::CoordinatorNotAvailable
            | ResponseError::CoordinatorLoadInProgress,
        ) => Err(ResponseError::NotEnoughReplicas),
        Err(ResponseError::InvalidProducerIdMapping) => Err(ResponseError::InvalidTxnState),
        // A fenced producer's batch gets INVALID_PRODUCER_EPOCH, as Kafka's log answers it
        // (clients treat that as fencing on Produce; PRODUCER_FENCED there is abortable).
        Err(ResponseError::ProducerFenced) => Err(ResponseError::InvalidProducerEpoch),
        other => other,
    }
}

async fn verify_on_node(
    shard: &Rc<Shard>,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    topic: &str,
    partition: i32,
) -> Result<(), ResponseError> {
    use kafka_protocol::messages::add_partitions_to_txn_request::{
        AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
    };
    use kafka_protocol::messages::{
        AddPartitionsToTxnRequest, ProducerId, TopicName, TransactionalId,
    };
    use kafka_protocol::protocol::StrBytes;
    let node =
        coordinator_node(shard, transactional_id).ok_or(ResponseError::CoordinatorNotAvailable)?;
    let broker = shard
        .metadata()
        .brokers
        .get(&node)
        .cloned()
        .ok_or(ResponseError::CoordinatorNotAvailable)?;
    let request = AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(
                transactional_id.to_string(),
            )))
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(producer_epoch)
            .with_verify_only(true)
            .with_topics(vec![AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![partition])]),
    ]);
    let timeout = std::time::Duration::from_millis(VERIFY_TIMEOUT_MS);
    let address = format!("{}:{}", broker.host, broker.port);
    let response = async {
        let mut connection = crate::cluster::replication::connection::PeerConnection::connect(
            &shard.inter_broker,
            &broker,
            timeout,
            1024 * 1024,
        )
        .await?;
        connection.call(&request, 4, timeout).await
    }
    .await
    .map_err(|error| {
        tracing::warn!(node, %address, "cannot verify a transaction with its coordinator: {error}");
        ResponseError::CoordinatorNotAvailable
    })?;
    if response.error_code != 0 {
        return Err(ResponseError::try_from_code(response.error_code)
            .unwrap_or(ResponseError::UnknownServerError));
    }
    let code = response
        .results_by_transaction
        .iter()
        .flat_map(|result| result.topic_results.iter())
        .flat_map(|topic| topic.results_by_partition.iter())
        .find(|result| result.partition_index == partition)
        .map_or(ResponseError::InvalidTxnState.code(), |result| {
            result.partition_error_code
        });
    match code {
        0 => Ok(()),
        code => {
            Err(ResponseError::try_from_code(code).unwrap_or(ResponseError::UnknownServerError))
        }
    }
}

/// Runs `work` on the shard coordinating `transactional_id` (with its partition index): one
/// explicit hop from the connection's shard. Errors of routing (NOT_COORDINATOR: another node)
/// come back as they are.
pub async fn on_coordinator<T, F, Fut>(
    shard: &Rc<Shard>,
    transactional_id: &str,
    work: F,
) -> Result<T, ResponseError>
where
    F: FnOnce(Rc<Shard>, i32) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, ResponseError>> + 'static,
    T: Send + 'static,
{
    let route = route(shard, transactional_id).await?;
    shard
        .invoke_on(route.owner, move |owner| work(owner, route.partition))
        .await
        .unwrap_or(Err(ResponseError::NotCoordinator))
}
