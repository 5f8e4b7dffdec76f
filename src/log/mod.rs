//! The per-partition segmented log, stored with O_DIRECT through glommio's DMA files.
//!
//! One [`PartitionLog`] per (topic, partition), living on the shard that owns the partition
//! (`!Send`, shared as `Rc<PartitionLog>`). On disk, `<data_dir>/<topic>-<partition>/` holds:
//!
//! - `<base_offset:020>.log`: segments of v2 record batches laid back to back, preallocated in
//!   steps and written in aligned blocks; the partial tail block lives in memory and is rewritten
//!   by the next write.
//! - `<base_offset:020>.index`: the sparse offset index of a sealed segment, written when the
//!   segment rolls (the active segment's index is rebuilt by recovery).
//! - `recovery-checkpoint`: the offset below which everything is known durable, with its
//!   segment and byte position; written atomically on flush and close.
//!
//! Appends are group-committed: appends that arrive while a write is in flight go out together
//! in the next write, and there is at most one write in flight per partition, which keeps the
//! rewrites of the tail block ordered. The most recent batches stay in a bounded in-memory cache
//! so fetches at the tail need no disk I/O.
//!
//! glommio stays behind this module: its types do not appear in the public API.

mod cache;
mod checkpoint;
mod file_io;
mod partition;
mod recovery;
mod segment;
mod waiters;

#[cfg(test)]
mod tests;

pub use file_io::fallback_read_count;
pub use partition::PartitionLog;
pub use waiters::WaitForOffset;

use bytes::Bytes;

/// Tuning of one partition log. Defaults follow the starting points in ARCHITECTURE.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A segment rolls when the next append would take it past this size.
    pub segment_size_bytes: u64,
    /// One sparse index entry per this many bytes of batches.
    pub index_interval_bytes: u64,
    /// Bound of the in-memory cache of the most recently written batches.
    pub cache_size_bytes: u64,
    /// Upper bound of one O_DIRECT write (and of one disk read window).
    pub max_write_size_bytes: usize,
    /// Segments grow by fallocate in steps of this size, so O_DIRECT writes do not extend the
    /// file (ext4 serialises extending writes).
    pub preallocate_step_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_size_bytes: 128 * 1024 * 1024,
            index_interval_bytes: 32 * 1024,
            cache_size_bytes: 8 * 1024 * 1024,
            max_write_size_bytes: 1024 * 1024,
            preallocate_step_bytes: 32 * 1024 * 1024,
        }
    }
}

impl LogConfig {
    /// Rejects settings the log cannot honour.
    pub fn validate(&self) -> Result<(), LogError> {
        let block = BLOCK_SIZE_BYTES as usize;
        let problem = if self.segment_size_bytes == 0 {
            Some("segment_size_bytes must be positive")
        } else if self.index_interval_bytes == 0 {
            Some("index_interval_bytes must be positive")
        } else if self.max_write_size_bytes < 2 * block
            || !self.max_write_size_bytes.is_multiple_of(block)
        {
            Some("max_write_size_bytes must be a multiple of 4096 and at least 8192")
        } else if self.max_write_size_bytes > MAX_WRITE_SIZE_LIMIT_BYTES {
            Some("max_write_size_bytes must be at most 64 MiB")
        } else if self.preallocate_step_bytes == 0
            || !self.preallocate_step_bytes.is_multiple_of(BLOCK_SIZE_BYTES)
        {
            Some("preallocate_step_bytes must be a positive multiple of 4096")
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

/// Alignment of every O_DIRECT write position and size.
pub(crate) const BLOCK_SIZE_BYTES: u64 = 4096;

/// Sanity bound on `max_write_size_bytes`.
const MAX_WRITE_SIZE_LIMIT_BYTES: usize = 64 * 1024 * 1024;

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
