//! WriteTxnMarkers (key 27): the transaction coordinator of another node (or of this one, over
//! the wire) asks the partition leaders here to append COMMIT/ABORT markers. Each marker goes to
//! its partitions' owner shards (`txn::markers::write_markers`); a partition answers once every
//! in-sync replica has the marker.

use super::RequestContext;
use crate::security::acl::Operation;
use crate::txn::markers::{write_markers, TxnMarker};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};

/// Markers accepted in one request; more is refused as a malformed request would be.
const MAX_MARKERS_PER_REQUEST: usize = 10_000;

pub async fn handle(
    context: &RequestContext,
    request: WriteTxnMarkersRequest,
) -> WriteTxnMarkersResponse {
    // Kafka: only brokers write markers: CLUSTER_ACTION on the cluster, else every partition
    // fails.
    let authorized = context.authorize_cluster(Operation::ClusterAction);
    let mut results = Vec::with_capacity(request.markers.len().min(MAX_MARKERS_PER_REQUEST));
    for written in request.markers.into_iter().take(MAX_MARKERS_PER_REQUEST) {
        let marker = TxnMarker {
            producer_id: written.producer_id.0,
            producer_epoch: written.producer_epoch,
            commit: written.transaction_result,
            coordinator_epoch: written.coordinator_epoch,
        };
        let partitions: Vec<(String, i32)> = written
            .topics
            .iter()
            .flat_map(|topic| {
                topic
                    .partition_indexes
                    .iter()
                    .map(|&partition| (topic.name.0.to_string(), partition))
            })
            .collect();
        let outcomes = if authorized {
            write_markers(&context.shard, marker, partitions).await
        } else {
            partitions
                .into_iter()
                .map(|partition| (partition, Err(ResponseError::ClusterAuthorizationFailed)))
                .collect()
        };
        let mut topics: Vec<WritableTxnMarkerTopicResult> = Vec::new();
        for ((topic, partition), outcome) in outcomes {
            let code = outcome.err().map_or(0, |error| error.code());
            if code != 0 {
                tracing::warn!(
                    topic,
                    partition,
                    producer_id = marker.producer_id,
                    code,
                    "transaction marker not written"
                );
            }
            let result = WritableTxnMarkerPartitionResult::default()
                .with_partition_index(partition)
                .with_error_code(code);
            match topics.last_mut() {
                Some(last) if last.name.0.as_str() == topic => last.partitions.push(result),
                _ => topics.push(
                    WritableTxnMarkerTopicResult::default()
                        .with_name(super::topic_name(&topic))
                        .with_partitions(vec![result]),
                ),
            }
        }
        results.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(written.producer_id)
                .with_topics(topics),
        );
    }
    WriteTxnMarkersResponse::default().with_markers(results)
}
