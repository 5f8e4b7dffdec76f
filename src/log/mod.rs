//! The per-partition segmented log, stored with O_DIRECT through glommio's DMA files.
//!
//! One [`PartitionLog`] per (topic, partition), living on the shard that owns the partition
//! (`!Send`, shared as `Rc<PartitionLog>`). On disk, `<data_dir>/<topic>-<partition>/` holds:
//!
//! - `<base_offset:020>.log`: segments of v2 record batches laid back to back, preallocated in
//!   steps that double from a small first one while the partition keeps writing (ahead of the
//!   writer, in the background; under the sync policy also zero-filled
//!   ahead of it, so fdatasync finds no unwritten extents to convert) and written in aligned
//!   blocks; the partial tail block lives in memory and is rewritten by the next write.
//! - `<base_offset:020>.index`: the segment's sparse index, one entry per
//!   `index_interval_bytes` of batches, each carrying the batch's offset, position and the
//!   largest timestamp before it, so it serves offset and timestamp lookups alike (see
//!   `segment.rs`). Written when a segment rolls and, for the active segment, with every
//!   checkpoint; CRC-checked and rebuilt by scanning if missing or damaged. In memory: 24 bytes
//!   per entry (0.07% of the data at the default interval).
//! - `recovery-checkpoint`: the offset below which everything is known durable, with its
//!   segment and byte position. Recovery validates only what lies after it.
//! - `log-start-offset`, `cleaner-offset`: the log start set by DeleteRecords/retention, and
//!   the end of the compacted range (both written durably before they take effect).
//! - `high-watermark`: the high watermark at the last checkpoint.
//! - `leader-epoch-checkpoint`: the first offset of each leader epoch (`leader_epochs.rs`).
//!
//! Replicas (`replica.rs`): a follower appends the leader's batches as they are, truncates a
//! divergent tail, or restarts empty at the leader's log start; the high watermark is bounded
//! by what replication reports.
//!
//! Writes (`partition.rs`): appends that arrive while writes are in flight are coalesced into
//! the next write (group commit); up to `max_writes_in_flight` block-disjoint writes are in
//! flight. Durability: a separate group-committed fdatasync per partition, driven by the flush
//! policy (`flush_messages`, `flush_interval_ms`); under the sync policy acks=all produces wait
//! for it. Reads: the tail from the per-shard batch cache (`cache.rs`), older data from disk,
//! by copying (`read`) or as file regions sent with splice (`read_zero_copy`, `splice.rs`).
//! Maintenance, driven by the shard in bounded steps: checkpoints, retention and DeleteRecords
//! (`retention.rs`), compaction in slices (`compaction.rs`), timestamp lookups
//! (`timestamps.rs`), recovery (`recovery.rs`), resuming after storage failures.
//!
//! glommio stays behind this module: its types do not appear in the public API.

mod cache;
mod checkpoint;
mod compaction;
mod file_io;
mod leader_epochs;
mod partition;
mod recovery;
mod replica;
mod retention;
mod segment;
mod splice;
mod state_files;
mod timestamps;
mod waiters;

#[cfg(test)]
mod tests;

pub use cache::{set_shard_cache_max_bytes, shard_cache_evictions, shard_cached_bytes};
pub use compaction::{AbortedRange, CompactionLimits, CompactionOutcome, TransactionView};
pub use file_io::fallback_read_count;
pub use leader_epochs::{UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET};
pub use partition::PartitionLog;
pub use retention::RetentionOutcome;
pub use splice::{send_file_region, FileRegion};
pub use timestamps::TimestampHit;
pub use waiters::WaitForOffset;

use bytes::Bytes;

/// Tuning and policy of one partition log. Geometry defaults follow the starting points in
/// ARCHITECTURE.md; policy defaults are Kafka's topic defaults. Changed at run time with
/// `PartitionLog::set_config` (topic config changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A segment rolls when the next append would take it past this size (`segment.bytes`).
    pub segment_size_bytes: u64,
    /// A segment rolls at the first append this long after its first batch (`segment.ms`).
    pub segment_ms: u64,
    /// One sparse index entry per this many bytes of batches.
    pub index_interval_bytes: u64,
    /// This partition's bound in the shard's batch cache.
    pub cache_size_bytes: u64,
    /// Upper bound of one O_DIRECT write (and of one disk read window).
    pub max_write_size_bytes: usize,
    /// O_DIRECT writes in flight at once per partition (several only when a backlog fills
    /// whole writes; a write ending mid-block is always followed by a wait).
    pub max_writes_in_flight: usize,
    /// Segments grow by fallocate in steps, so O_DIRECT writes do not extend the file (ext4
    /// serialises extending writes). A segment's first step is this size; each next step is
    /// as large as the segment's allocation so far (the allocation doubles while the
    /// partition keeps writing), up to `preallocate_step_bytes`. So a partition that writes
    /// little reserves little disk (10,000 of them at full steps would reserve 320 GiB).
    /// A value above `preallocate_step_bytes` is cut to it.
    pub preallocate_first_step_bytes: u64,
    /// The largest fallocate step: what a segment that keeps being written grows by.
    pub preallocate_step_bytes: u64,
    /// Under the sync policy, the preallocated region of the active segment is zero-filled
    /// and fdatasync'ed in the background up to this far ahead of the writer (0: off). ext4
    /// records a write into fallocated (unwritten) blocks as an extent change, so the
    /// fdatasync after it must commit the journal; after an overwrite of written blocks it is
    /// a device cache flush alone.
    pub prewrite_ahead_bytes: u64,
    /// fdatasync once this many records were written since the last one (`flush.messages`).
    /// 1 is the sync policy.
    pub flush_messages: u64,
    /// fdatasync once the oldest unsynced write is this old (`flush.ms`); 0 is the sync
    /// policy. Enforced by the shard's maintenance tick, so its resolution is the tick.
    pub flush_interval_ms: u64,
    /// Delete segments whose newest timestamp is older than this (`retention.ms`); `None`
    /// keeps them forever.
    pub retention_ms: Option<u64>,
    /// Delete the oldest segments while the log stays at least this large without them
    /// (`retention.bytes`); `None` for no size bound.
    pub retention_bytes: Option<u64>,
    /// `cleanup.policy` contains `delete`: time and size retention apply.
    pub cleanup_delete: bool,
    /// `cleanup.policy` contains `compact`: keep the latest record per key.
    pub cleanup_compact: bool,
    /// Tombstones older than this are removed by compaction (`delete.retention.ms`).
    pub delete_retention_ms: u64,
    /// Records younger than this are not compacted (`min.compaction.lag.ms`).
    pub min_compaction_lag_ms: u64,
    /// A pass runs once the dirty part is at least this share of the cleanable bytes, in
    /// parts per million (`min.cleanable.dirty.ratio` × 10⁶)...
    pub min_cleanable_dirty_ratio_ppm: u32,
    /// ...or once dirty data has waited this long (`max.compaction.lag.ms`).
    pub max_compaction_lag_ms: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_size_bytes: 128 * 1024 * 1024,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 32 * 1024,
            cache_size_bytes: 8 * 1024 * 1024,
            max_write_size_bytes: 1024 * 1024,
            max_writes_in_flight: 4,
            preallocate_first_step_bytes: 1024 * 1024,
            preallocate_step_bytes: 32 * 1024 * 1024,
            prewrite_ahead_bytes: 0,
            flush_messages: u64::MAX,
            flush_interval_ms: u64::MAX,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            cleanup_delete: true,
            cleanup_compact: false,
            delete_retention_ms: 24 * 3600 * 1000,
            min_compaction_lag_ms: 0,
            min_cleanable_dirty_ratio_ppm: 500_000,
            max_compaction_lag_ms: u64::MAX,
        }
    }
}

impl LogConfig {
    /// The sync flush policy: every write is followed by an fdatasync, and acks=all produces
    /// are acknowledged only once it covers them.
    pub fn is_sync(&self) -> bool {
        self.flush_messages <= 1 || self.flush_interval_ms == 0
    }

    /// The fallocate step for a segment with `allocated_bytes` (block-aligned) allocated: the
    /// first step, then as much as is allocated, at most `preallocate_step_bytes`; never
    /// below one block.
    pub(crate) fn preallocate_step_after(&self, allocated_bytes: u64) -> u64 {
        allocated_bytes
            .max(self.preallocate_first_step_bytes)
            .min(self.preallocate_step_bytes)
            .max(BLOCK_SIZE_BYTES)
    }

    /// Rejects settings the log cannot honour.
    pub fn validate(&self) -> Result<(), LogError> {
        let block = BLOCK_SIZE_BYTES as usize;
        let problem = if self.segment_size_bytes == 0 {
            Some("segment_size_bytes must be positive")
        } else if self.segment_ms == 0 {
            Some("segment_ms must be positive")
        } else if self.index_interval_bytes == 0 {
            Some("index_interval_bytes must be positive")
        } else if self.max_write_size_bytes < 2 * block
            || !self.max_write_size_bytes.is_multiple_of(block)
        {
            Some("max_write_size_bytes must be a multiple of 4096 and at least 8192")
        } else if self.max_write_size_bytes > MAX_WRITE_SIZE_LIMIT_BYTES {
            Some("max_write_size_bytes must be at most 64 MiB")
        } else if self.max_writes_in_flight == 0
            || self.max_writes_in_flight > MAX_WRITES_IN_FLIGHT_LIMIT
        {
            Some("max_writes_in_flight must be in 1..=64")
        } else if self.preallocate_step_bytes == 0
            || !self.preallocate_step_bytes.is_multiple_of(BLOCK_SIZE_BYTES)
        {
            Some("preallocate_step_bytes must be a positive multiple of 4096")
        } else if self.preallocate_first_step_bytes == 0
            || !self
                .preallocate_first_step_bytes
                .is_multiple_of(BLOCK_SIZE_BYTES)
        {
            Some("preallocate_first_step_bytes must be a positive multiple of 4096")
        } else if !self.prewrite_ahead_bytes.is_multiple_of(BLOCK_SIZE_BYTES) {
            Some("prewrite_ahead_bytes must be a multiple of 4096")
        } else if self.flush_messages == 0 {
            Some("flush_messages must be at least 1")
        } else {
            None
        };
        match problem {
            Some(message) => Err(LogError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                message,
            ))),
            None => Ok(()),
        }
    }
}

/// Counters of one partition log since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// O_DIRECT writes completed (appends per write shows how well group commit works).
    pub writes: u64,
    pub written_bytes: u64,
    /// Sum of the O_DIRECT writes' latencies (issue to completion).
    pub write_micros_total: u64,
    /// fdatasync rounds completed (records per sync shows how well they are shared).
    pub syncs: u64,
    pub sync_micros_total: u64,
    pub checkpoints: u64,
    pub rolls: u64,
    /// Bytes zero-filled ahead of the writer under the sync policy (`prewrite_ahead_bytes`).
    pub prewritten_bytes: u64,
    /// Storage failures (each refuses appends until the log resumes).
    pub failures: u64,
    pub segments_deleted: u64,
    pub bytes_deleted: u64,
    pub compactions: u64,
    pub compaction_bytes_removed: u64,
}

/// Wall-clock milliseconds since the Unix epoch (Kafka timestamps).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// Alignment of every O_DIRECT write position and size.
pub(crate) const BLOCK_SIZE_BYTES: u64 = 4096;

/// Sanity bound on `max_write_size_bytes`.
const MAX_WRITE_SIZE_LIMIT_BYTES: usize = 64 * 1024 * 1024;

/// Sanity bound on `max_writes_in_flight`.
const MAX_WRITES_IN_FLIGHT_LIMIT: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("offset {requested} out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        requested: i64,
        log_start: i64,
        log_end: i64,
    },
    /// An I/O failure, or `InvalidInput` for misuse (bad config, append of malformed batches).
    /// After a failed write or fdatasync the log refuses further appends until reopened.
    #[error("log I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("log corrupt: {0}")]
    Corrupt(String),
    #[error("log closed")]
    Closed,
    /// The request conflicts with the topic's cleanup policy (e.g. DeleteRecords on a
    /// compact-only topic).
    #[error("not allowed by the cleanup policy: {0}")]
    PolicyViolation(String),
}

/// Offsets given to one `append` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub base_offset: i64,
    pub last_offset: i64,
}

/// Whole batches, in offset order; the chunks are laid back to back on the wire.
#[derive(Debug, Clone, Default)]
pub struct ReadOutcome {
    pub chunks: Vec<Bytes>,
    pub size_bytes: usize,
}

/// One piece of a zero-copy read: batches in memory (the cache), or a region of a segment file
/// to send with [`send_file_region`].
#[derive(Debug, Clone)]
pub enum ReadChunk {
    Memory(Bytes),
    File(FileRegion),
}

impl ReadChunk {
    pub fn size_bytes(&self) -> usize {
        match self {
            ReadChunk::Memory(bytes) => bytes.len(),
            ReadChunk::File(region) => region.size_bytes,
        }
    }
}

/// Whole batches, in offset order, as memory and file pieces laid back to back on the wire.
#[derive(Debug, Clone, Default)]
pub struct ZeroCopyRead {
    pub chunks: Vec<ReadChunk>,
    pub size_bytes: usize,
    /// Where the next read continues: the offset after the last batch returned (the read's
    /// start offset if it returned nothing).
    pub next_offset: i64,
}
