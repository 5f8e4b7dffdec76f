//! Per-shard log maintenance: the flush policy's time bound (`flush.ms`), recovery
//! checkpoints, retention, compaction, and retries of partitions that failed on storage
//! errors.
//!
//! Each job is its own task on the shard, woken by a timer (never a spinning loop), and works
//! through the shard's partitions one at a time; the expensive parts run inside the log in
//! bounded steps (fdatasync and file removal on io_uring or the blocking pool, compaction in
//! slices), so request handling on the shard keeps its latency. All tasks end when shutdown
//! begins; `close_partitions` then writes the final checkpoints.

use crate::txn::producer_state::ProducerStateTable;
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::FutureExt;

use crate::log::{CompactionLimits, LogError};
use crate::shard::Shard;

/// How often the flush policy's time bound is checked: the resolution of `flush.ms`.
const FLUSH_TICK_MS: u64 = 20;

/// Starts the shard's maintenance tasks.
pub(super) fn start(shard: Rc<Shard>) {
    let config = shard.config.clone();
    spawn_every(shard.clone(), FLUSH_TICK_MS, |shard| async move {
        let now = Instant::now();
        shard
            .partitions
            .for_each(|partition| partition.log.sync_if_due(now));
    });
    spawn_every(
        shard.clone(),
        config.recovery_checkpoint_interval_ms,
        checkpoint_all,
    );
    spawn_every(
        shard.clone(),
        config.retention_check_interval_ms,
        retention_all,
    );
    spawn_every(shard.clone(), config.compaction_interval_ms, compact_all);
    spawn_every(shard, config.storage_retry_interval_ms, retry_failed);
}

/// Runs `work` every `interval_ms` until shutdown begins. A round that takes longer than the
/// interval delays the next one (rounds never overlap).
pub(super) fn spawn_every<F, Fut>(shard: Rc<Shard>, interval_ms: u64, mut work: F)
where
    F: FnMut(Rc<Shard>) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let interval = Duration::from_millis(interval_ms.max(1));
    glommio::spawn_local(async move {
        let mut stopped = shard.stopped().fuse();
        loop {
            futures::select! {
                _ = stopped => return,
                _ = glommio::timer::sleep(interval).fuse() => {}
            }
            if shard.is_stopping() {
                return;
            }
            work(shard.clone()).await;
        }
    })
    .detach();
}

/// Syncs and checkpoints every partition, and notices removed log directories.
async fn checkpoint_all(shard: Rc<Shard>) {
    for partition in shard.partitions.all() {
        if shard.is_stopping() {
            return;
        }
        let log = &partition.log;
        if log.is_failed() {
            continue;
        }
        match log.checkpoint().await {
            Ok(()) => snapshot_producers(&shard, &partition).await,
            Err(LogError::Closed) => {} // Deleted meanwhile.
            Err(error) => tracing::warn!(topic = %partition.topic.name,
                partition = partition.index, "recovery checkpoint failed: {error}"),
        }
        log.check_directory().await;
    }
}

/// Expires idle producers, forgets aborted transactions below the log start, and writes a
/// producer-state snapshot if the table changed since the last one. The snapshot is taken at
/// the log's next offset with no await in between, so it reflects exactly the batches below.
async fn snapshot_producers(shard: &Shard, partition: &crate::cluster::Partition) {
    let log = &partition.log;
    let snapshot = {
        let mut producers = partition.producers.borrow_mut();
        let expiration_ms =
            i64::try_from(shard.config.producer_id_expiration_ms).unwrap_or(i64::MAX);
        producers.expire_idle(crate::log::now_ms(), expiration_ms);
        producers.forget_aborted_below(log.log_start_offset());
        producers.needs_snapshot().then(|| {
            let offset = log.next_offset();
            (
                producers.encode_snapshot(offset),
                offset,
                producers.generation(),
            )
        })
    };
    let Some((contents, offset, generation)) = snapshot else {
        return;
    };
    match ProducerStateTable::write_snapshot(log, contents, offset).await {
        Ok(()) => partition
            .producers
            .borrow_mut()
            .mark_snapshotted(generation),
        Err(LogError::Closed) => {}
        Err(error) => tracing::warn!(topic = %partition.topic.name,
            partition = partition.index, "producer-state snapshot failed: {error}"),
    }
}

async fn retention_all(shard: Rc<Shard>) {
    let now_ms = crate::log::now_ms();
    for partition in shard.partitions.all() {
        if shard.is_stopping() {
            return;
        }
        match partition.log.enforce_retention(now_ms).await {
            Ok(_) | Err(LogError::Closed) => {}
            Err(error) => tracing::warn!(topic = %partition.topic.name,
                partition = partition.index, "retention failed: {error}"),
        }
    }
}

async fn compact_all(shard: Rc<Shard>) {
    let limits = CompactionLimits {
        slice_bytes: shard.config.compaction_slice_bytes,
        max_keys: shard.config.compaction_max_keys,
    };
    for partition in shard.partitions.all() {
        if shard.is_stopping() {
            return;
        }
        if !partition.log.config().cleanup_compact || partition.log.is_failed() {
            continue;
        }
        let transactions = partition.producers.borrow().compaction_view();
        match partition
            .log
            .compact(crate::log::now_ms(), &limits, &transactions)
            .await
        {
            Ok(Some(outcome)) => {
                partition
                    .producers
                    .borrow_mut()
                    .forget_aborted_below(outcome.aborted_cleaned_below);
                // Before a later pass may drop their markers, no snapshot may still hold the
                // retired entries (a restart would revive an entry without its marker).
                snapshot_producers(&shard, &partition).await;
            }
            Ok(None) | Err(LogError::Closed) => {}
            Err(error) => tracing::warn!(topic = %partition.topic.name,
                partition = partition.index, "compaction failed: {error}"),
        }
    }
}

/// Partitions failed on storage errors resume once the disk accepts writes again.
async fn retry_failed(shard: Rc<Shard>) {
    for partition in shard.partitions.all() {
        if shard.is_stopping() {
            return;
        }
        if !partition.log.is_failed() {
            continue;
        }
        match partition.log.try_resume().await {
            Ok(true) => tracing::info!(topic = %partition.topic.name,
                partition = partition.index, "partition resumed after a storage failure"),
            Ok(false) => {}
            Err(error) => tracing::debug!(topic = %partition.topic.name,
                partition = partition.index, "storage still failing: {error}"),
        }
    }
}
