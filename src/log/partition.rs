//! `PartitionLog`: offset assignment, group-committed O_DIRECT appends with several writes in
//! flight, group-committed fdatasync under the flush policy, reads from the batch cache or
//! disk, recovery checkpoints, disk-fault handling, close and removal.
//!
//! Concurrency model: everything runs on the owning shard's executor. State lives in one
//! `RefCell`, borrowed only between awaits.
//!
//! Writes. One writer task per partition (spawned when an append finds none running) plans
//! writes from the queue of pending appends and issues each as its own task, up to
//! `max_writes_in_flight` at once. In-flight writes never touch the same block: a write that
//! fills its buffer ends on a block boundary, so the next one can start at once; a write that
//! ends mid-block carries that partial block (the tail block, kept in memory), and the write
//! after it rewrites that block, so it waits until the first completed. Completions are
//! committed in issue order, so the written end only ever moves over a contiguous prefix.
//!
//! Durability. `written_end_offset` moves when writes complete (safe against a process crash);
//! `durable_end_offset` moves when an fdatasync that started after those writes completes (safe
//! against power loss). One fdatasync is in flight per partition; every append it covers shares
//! it (group commit). The flush policy (`flush_messages`, `flush_interval_ms`) decides when one
//! starts; the sync policy (`flush_messages <= 1` or `flush_interval_ms == 0`) starts one after
//! every write, and acks=all produces wait for it. Under the sync policy the region ahead of
//! the writer is also zero-filled and synced in the background (`prewrite_ahead`), so those
//! writes overwrite written blocks and their fdatasync needs no journal commit.
//!
//! Failures. A failed write, fallocate or roll fails the pending appends and refuses new ones
//! (KAFKA_STORAGE_ERROR), but the written state in memory is intact, so reads go on and
//! `try_resume` (called periodically by the shard) continues from it once the disk accepts
//! allocations again. A failed fdatasync, or a vanished directory, is fatal for the open log:
//! nothing can be trusted past the last checkpoint, so `try_resume` reopens it from disk.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use glommio::io::{DmaBuffer, DmaFile};
use glommio::sync::Semaphore;

use super::cache::{CacheEntry, TailCache};
use super::checkpoint::{write_checkpoint, OffsetFile, RecoveryCheckpoint};
use super::file_io::{
    align_down, align_up, blocking, io_error, open_segment_file, preallocate, sync_directory,
    write_file_atomic, WindowReader,
};
use super::leader_epochs::LeaderEpochCache;
use super::recovery::{recover, RecoveredLog};
use super::segment::{index_file_name, segment_file_name, Segment, NO_TIMESTAMP};
use super::waiters::{Signal, WaitForOffset, WaitKind, Waiters};
use super::{
    now_ms, AppendOutcome, FileRegion, LogConfig, LogError, LogStats, ReadChunk, ReadOutcome,
    ZeroCopyRead, BLOCK_SIZE_BYTES,
};
use crate::protocol::record_batch::{
    set_base_offset, set_partition_leader_epoch, RecordBatchHeader, RECORD_BATCH_HEADER_SIZE_BYTES,
};
use std::fs::File;
use std::sync::Arc;

/// Smallest disk read window; larger fetches read up to `max_write_size_bytes` at a time.
const READ_WINDOW_MIN_BYTES: u64 = 64 * 1024;

pub struct PartitionLog {
    pub(super) dir: PathBuf,
    pub(super) config: RefCell<LogConfig>,
    /// Lets `&self` methods hand an owning `Rc` to tasks and to returned futures.
    self_ref: Weak<PartitionLog>,
    pub(super) state: RefCell<LogState>,
    /// The partition's part of the shard's batch cache (its own `RefCell`: the shard budget
    /// evicts from other partitions' caches while one partition's state is borrowed).
    pub(super) cache: Rc<RefCell<TailCache>>,
    pub(crate) waiters: RefCell<Waiters>,
    pub(crate) durable_waiters: RefCell<Waiters>,
    /// Tasks waiting for the high watermark (consumer fetches, acks=all produces).
    pub(crate) committed_waiters: RefCell<Waiters>,
    /// First offset of every leader epoch in the log (`leader_epochs.rs`).
    pub(super) epochs: RefCell<LeaderEpochCache>,
    /// Serialises rewrites of `leader-epoch-checkpoint`.
    pub(super) epoch_file_lock: Semaphore,
    /// Wakes the writer task: new appends, write completions, roll requests, failures.
    pub(super) writer_signal: Signal,
    /// Serialises checkpoint and metadata-file writes, so they land in order.
    pub(super) checkpoint_lock: Semaphore,
    /// Serialises retention and compaction, which both replace segments.
    pub(super) maintenance_lock: Semaphore,
}

pub(super) struct LogState {
    /// Ordered by base offset, contiguous in offset coverage; the last one is active.
    pub(super) segments: Vec<Segment>,
    pub(super) log_start_offset: i64,
    /// Offset the next append gets.
    pub(super) next_offset: i64,
    /// Every offset below it is written (and in `segments`).
    pub(super) written_end_offset: i64,
    /// Every offset below it was covered by a completed fdatasync.
    pub(super) durable_end_offset: i64,
    /// Where `durable_end_offset` lies on disk: what a recovery checkpoint may claim.
    durable_point: RecoveryCheckpoint,
    /// Bumped when the log resumes after a failure: futures of appends from before cannot
    /// mistake reused offsets for their own.
    pub(super) generation: u64,
    /// Appends with offsets assigned, not yet fully written, in offset order.
    pub(super) pending: VecDeque<PendingAppend>,
    pending_bytes: u64,
    /// Active-segment position where the next planned byte goes: the committed size plus
    /// the bytes of writes in flight.
    planned_size_bytes: u64,
    /// Bytes from the last block boundary to `planned_size_bytes`; the next write starts
    /// with them.
    planned_tail_block: Vec<u8>,
    /// The same for the committed size (what a resume after a failure starts from).
    pub(super) tail_block: Vec<u8>,
    /// Issued writes, in issue (= offset) order.
    pub(super) in_flight: VecDeque<InFlightWrite>,
    next_write_id: u64,
    pub(super) writer_running: bool,
    /// Retention or an operator wants the active segment sealed even without appends.
    pub(super) roll_requested: bool,
    pub(super) sync_running: bool,
    /// Exclusive end someone asked to make durable.
    sync_requested_end: i64,
    /// Records written since the last fdatasync started, and when the first of them was.
    unflushed_records: u64,
    unflushed_since: Option<Instant>,
    /// Sum of segment sizes.
    pub(super) size_bytes: u64,
    pub(super) failure: Option<Failure>,
    /// No new appends (close or remove in progress).
    pub(super) closing: bool,
    /// Files released; every call but accessors returns `Closed`.
    pub(super) closed: bool,
    /// Last checkpoint written (or found at open).
    recovery_point: Option<RecoveryCheckpoint>,
    /// A segment file was created or removed since the last directory fsync.
    pub(super) directory_dirty: bool,
    /// Cleared if the filesystem does not support fallocate.
    preallocate_supported: bool,
    /// A fallocate of the active segment is in flight.
    preallocating: bool,
    /// The zero-fill ahead of the writer in flight (`prewrite_ahead`): no data write may
    /// touch its range, and the segment may not roll, until it completes.
    pub(super) prewriting: Option<PrewriteRange>,
    /// Compaction rewrote segments below this offset (persisted in `cleaner-offset`).
    pub(super) cleaner_offset: i64,
    /// Offsets below it are committed: replicated to every in-sync replica (on a single
    /// replica, written). Never above the written end; only moves back on truncation.
    pub(super) high_watermark: i64,
    /// What replication allows the high watermark to reach (the lowest log end in the ISR,
    /// or the leader's high watermark on a follower); `i64::MAX` for a lone replica.
    pub(super) high_watermark_limit: i64,
    /// Last value written to the `high-watermark` file (-1: none).
    pub(super) persisted_high_watermark: i64,
    /// A truncation is replacing the tail: appends wait for it to finish.
    pub(super) truncating: bool,
    pub(super) stats: LogStats,
}

#[derive(Debug, Clone)]
pub(super) struct Failure {
    kind: io::ErrorKind,
    message: String,
    /// The on-disk state past the last checkpoint is unknown: reopen from disk to resume.
    fatal: bool,
}

pub(super) struct PendingAppend {
    /// Stamped batches, handed to the cache once written.
    data: Bytes,
    base_offset: i64,
    next_offset: i64,
    record_count: u64,
    /// Bytes of `data` in writes already issued.
    planned_bytes: usize,
    /// Bytes of `data` in writes completed.
    written_bytes: usize,
    /// Position of `data` in the active segment, set when its first byte is planned.
    position_bytes: u64,
}

/// Blocks `[start_bytes, end_bytes)` of `file` being zero-filled.
pub(super) struct PrewriteRange {
    file: Rc<DmaFile>,
    start_bytes: u64,
    end_bytes: u64,
}

pub(super) struct InFlightWrite {
    id: u64,
    segment_base_offset: i64,
    /// Block-aligned end of the write.
    end_aligned_bytes: u64,
    /// New batch bytes in this write.
    chunk_size_bytes: usize,
    /// The committed tail block once this write completes.
    new_tail_block: Vec<u8>,
    /// `None` while in flight; the error message if it failed.
    outcome: Option<Result<(), (io::ErrorKind, String)>>,
}

enum WriteStep {
    Idle,
    /// Nothing can be issued until something completes (or an append arrives).
    Wait,
    Roll {
        base_offset: i64,
    },
    Preallocate {
        file: Rc<DmaFile>,
        size_bytes: u64,
    },
    Write(WritePlan),
}

struct WritePlan {
    id: u64,
    file: Rc<DmaFile>,
    /// One or two block-disjoint pieces (position, buffer), written concurrently; see
    /// `next_write_step` for when a write is split.
    pieces: Vec<(u64, DmaBuffer)>,
}

/// Fills the consecutive pieces of one write as if they were a single buffer.
struct PieceFiller<'a> {
    pieces: &'a mut [(u64, DmaBuffer)],
    piece: usize,
    offset_bytes: usize,
}

impl<'a> PieceFiller<'a> {
    fn new(pieces: &'a mut [(u64, DmaBuffer)]) -> Self {
        PieceFiller {
            pieces,
            piece: 0,
            offset_bytes: 0,
        }
    }

    fn put(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let buffer = self.pieces[self.piece].1.as_bytes_mut();
            let room_bytes = buffer.len() - self.offset_bytes;
            if room_bytes == 0 {
                self.piece += 1;
                self.offset_bytes = 0;
                continue;
            }
            let take_bytes = room_bytes.min(bytes.len());
            buffer[self.offset_bytes..self.offset_bytes + take_bytes]
                .copy_from_slice(&bytes[..take_bytes]);
            self.offset_bytes += take_bytes;
            bytes = &bytes[take_bytes..];
        }
    }

    /// Zero-fills everything after the last byte put.
    fn zero_rest(&mut self) {
        for (index, (_, buffer)) in self.pieces.iter_mut().enumerate().skip(self.piece) {
            let from = if index == self.piece {
                self.offset_bytes
            } else {
                0
            };
            buffer.as_bytes_mut()[from..].fill(0);
        }
    }
}

/// Where a read continues on disk.
pub(super) struct DiskSource {
    pub(super) file: Rc<DmaFile>,
    pub(super) size_bytes: u64,
    pub(super) next_offset: i64,
    pub(super) start_position_bytes: u64,
}

impl PartitionLog {
    /// Opens or creates `dir` (`<data_dir>/<topic>-<partition>`), recovers it, and returns the
    /// ready log. Must run on a glommio executor (the shard owning the partition).
    pub async fn open(dir: PathBuf, config: LogConfig) -> Result<Rc<PartitionLog>, LogError> {
        config.validate()?;
        let recovered = recover(&dir, &config).await?;
        let cache = TailCache::new_shared(config.cache_size_bytes);
        let log = Rc::new_cyclic(|self_ref| PartitionLog {
            dir,
            config: RefCell::new(config),
            self_ref: self_ref.clone(),
            state: RefCell::new(LogState::placeholder()),
            cache,
            waiters: RefCell::new(Waiters::default()),
            durable_waiters: RefCell::new(Waiters::default()),
            committed_waiters: RefCell::new(Waiters::default()),
            epochs: RefCell::new(LeaderEpochCache::default()),
            epoch_file_lock: Semaphore::new(1),
            writer_signal: Signal::default(),
            checkpoint_lock: Semaphore::new(1),
            maintenance_lock: Semaphore::new(1),
        });
        let needs_flush = log.install_recovered(recovered, 0);
        let end_offset = log.written_end_offset();
        let checkpointed = OffsetFile::HighWatermark.read(&log.dir).await?;
        {
            let mut state = log.state.borrow_mut();
            state.high_watermark = checkpointed.unwrap_or(end_offset).clamp(0, end_offset);
            state.persisted_high_watermark = checkpointed.unwrap_or(-1);
        }
        log.load_leader_epochs().await?;
        if needs_flush {
            log.flush().await?;
        }
        Ok(log)
    }

    /// Replaces the state with a freshly recovered one; returns whether a checkpoint is due.
    pub(super) fn install_recovered(&self, recovered: RecoveredLog, generation: u64) -> bool {
        let RecoveredLog {
            mut segments,
            tail_block,
            checkpoint,
            needs_flush,
            directory_dirty,
            log_start_offset,
            cleaner_offset,
        } = recovered;
        assert!(!segments.is_empty());
        let end_offset = segments.last().map(|s| s.next_offset).unwrap_or(0);
        assert!(log_start_offset <= end_offset);
        let size_bytes = segments.iter().map(|s| s.size_bytes).sum();
        // Everything past the checkpoint was read back from disk, but may not have been
        // synced before the crash: sync it before claiming it durable.
        let durable_from_segment = checkpoint.map_or(i64::MIN, |c| c.segment_base_offset);
        for segment in &mut segments {
            if segment.base_offset >= durable_from_segment {
                segment.dirty = true;
            }
        }
        let active = segments.last().expect("at least one segment");
        let durable_point = checkpoint.unwrap_or(RecoveryCheckpoint {
            offset: segments[0].base_offset,
            segment_base_offset: segments[0].base_offset,
            position_bytes: 0,
        });
        let planned_size_bytes = active.size_bytes;
        self.cache.borrow_mut().clear();
        let (previous_high_watermark, previous_limit, previous_persisted) = {
            let state = self.state.borrow();
            (
                state.high_watermark,
                state.high_watermark_limit,
                state.persisted_high_watermark,
            )
        };
        *self.state.borrow_mut() = LogState {
            segments,
            log_start_offset,
            next_offset: end_offset,
            written_end_offset: end_offset,
            durable_end_offset: durable_point.offset,
            durable_point,
            generation,
            pending: VecDeque::new(),
            pending_bytes: 0,
            planned_size_bytes,
            planned_tail_block: tail_block.clone(),
            tail_block,
            in_flight: VecDeque::new(),
            next_write_id: 0,
            writer_running: false,
            roll_requested: false,
            sync_running: false,
            sync_requested_end: 0,
            unflushed_records: 0,
            unflushed_since: None,
            size_bytes,
            failure: None,
            closing: false,
            closed: false,
            recovery_point: checkpoint,
            directory_dirty,
            preallocate_supported: true,
            preallocating: false,
            prewriting: None,
            cleaner_offset,
            high_watermark: previous_high_watermark.min(end_offset),
            high_watermark_limit: previous_limit,
            persisted_high_watermark: previous_persisted,
            truncating: false,
            stats: LogStats::default(),
        };
        needs_flush || checkpoint.is_none_or(|c| c.offset != end_offset)
    }

    pub(super) fn rc(&self) -> Rc<PartitionLog> {
        self.self_ref
            .upgrade()
            .expect("a PartitionLog is only reachable through its Rc")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> LogConfig {
        self.config.borrow().clone()
    }

    /// Applies changed topic or broker settings (flush policy, retention, segment size, ...).
    /// Takes effect from the next write, sync or maintenance pass.
    pub fn set_config(&self, config: LogConfig) -> Result<(), LogError> {
        config.validate()?;
        self.cache
            .borrow_mut()
            .set_max_size_bytes(config.cache_size_bytes);
        let became_sync = config.is_sync() && !self.config.borrow().is_sync();
        *self.config.borrow_mut() = config;
        if became_sync {
            let end = self.state.borrow().written_end_offset;
            self.request_sync(end);
        }
        Ok(())
    }

    /// True under the sync flush policy: acks=all produces wait for `wait_durable`.
    pub fn is_sync_policy(&self) -> bool {
        self.config.borrow().is_sync()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.state.borrow().log_start_offset
    }

    /// Offset the next append gets (counts appends still being written).
    pub fn next_offset(&self) -> i64 {
        self.state.borrow().next_offset
    }

    /// Every offset below it is written and readable.
    pub fn written_end_offset(&self) -> i64 {
        self.state.borrow().written_end_offset
    }

    /// Every offset below it was made durable by an fdatasync.
    pub fn durable_end_offset(&self) -> i64 {
        self.state.borrow().durable_end_offset
    }

    /// Offset below which everything was fdatasync'ed and checkpointed (0 if never).
    pub fn recovery_point_offset(&self) -> i64 {
        self.state
            .borrow()
            .recovery_point
            .map_or(0, |checkpoint| checkpoint.offset)
    }

    /// Bytes of batches in segments (written data only).
    pub fn size_bytes(&self) -> u64 {
        self.state.borrow().size_bytes
    }

    /// Bytes accepted by `append` and not yet written: what backpressure should watch.
    pub fn pending_bytes(&self) -> u64 {
        self.state.borrow().pending_bytes
    }

    /// Bytes held by this partition in the shard's batch cache.
    pub fn cached_bytes(&self) -> u64 {
        self.cache.borrow().size_bytes()
    }

    /// O_DIRECT writes completed since open.
    pub fn write_count(&self) -> u64 {
        self.state.borrow().stats.writes
    }

    /// Counters since open (writes, fdatasyncs, retention, compaction).
    pub fn stats(&self) -> LogStats {
        self.state.borrow().stats
    }

    /// Tasks waiting in `append`, `wait_for_offset` or `wait_durable`.
    pub fn waiter_count(&self) -> usize {
        self.waiters.borrow().len()
            + self.durable_waiters.borrow().len()
            + self.committed_waiters.borrow().len()
    }

    pub fn segment_count(&self) -> usize {
        self.state.borrow().segments.len()
    }

    /// Where a scan of the most recent `tail_bytes` of the log starts: the base offset of an
    /// indexed batch at most `tail_bytes` (plus one index interval) before the written end, or
    /// the log start if the log is smaller.
    pub fn offset_before_end(&self, tail_bytes: u64) -> i64 {
        let state = self.state.borrow();
        let mut left_bytes = tail_bytes;
        for segment in state.segments.iter().rev() {
            if segment.size_bytes > left_bytes {
                let boundary_bytes = segment.size_bytes - left_bytes;
                let entries = &segment.index.entries;
                let at_or_before = entries.partition_point(|e| e.position_bytes <= boundary_bytes);
                let offset = match at_or_before {
                    0 => segment.base_offset,
                    found => entries[found - 1].offset,
                };
                return offset.max(state.log_start_offset);
            }
            left_bytes -= segment.size_bytes;
        }
        state.log_start_offset
    }

    /// True after a failed write, fdatasync or roll: the log refuses appends (and after a
    /// fatal failure, reads) until `try_resume` succeeds.
    pub fn is_failed(&self) -> bool {
        self.state.borrow().failure.is_some()
    }

    /// Appends `batches`: one or more v2 batches back to back that already passed
    /// `validate_batches`, `record_count` from its summary.
    ///
    /// Offsets are assigned when this is called (not when the future is first polled), in call
    /// order; the stored copy of each batch gets its base offset and `leader_epoch` stamped.
    /// The future resolves when the O_DIRECT writes holding its bytes have completed (safe
    /// against a process crash; `wait_durable` waits for the fdatasync). Dropping the future
    /// does not cancel the append. Appends arriving while a write is in flight share the next
    /// write.
    pub fn append(
        &self,
        batches: Bytes,
        record_count: u32,
        leader_epoch: i32,
    ) -> impl Future<Output = Result<AppendOutcome, LogError>> + 'static {
        let enqueued = self.enqueue(batches, record_count, leader_epoch);
        self.appended(enqueued)
    }

    /// The future of an enqueued append: resolves once its writes completed.
    pub(super) fn appended(
        &self,
        enqueued: Result<(AppendOutcome, u64), LogError>,
    ) -> impl Future<Output = Result<AppendOutcome, LogError>> + 'static {
        let log = self.rc();
        async move {
            let (outcome, generation) = enqueued?;
            WaitForOffset::new(log.clone(), outcome.last_offset).await;
            let state = log.state.borrow();
            if state.generation == generation && state.written_end_offset > outcome.last_offset {
                Ok(outcome)
            } else if let Some(failure) = &state.failure {
                Err(failure.error())
            } else if state.closed || state.closing {
                Err(LogError::Closed)
            } else {
                Err(LogError::Io(io::Error::other(
                    "append lost to a storage failure",
                )))
            }
        }
    }

    /// Resolves once every offset up to `offset` is durable (fdatasync completed), starting
    /// an fdatasync if none is due. Fails if the log fails or closes first.
    pub fn wait_durable(
        &self,
        offset: i64,
    ) -> impl Future<Output = Result<(), LogError>> + 'static {
        self.request_sync(offset + 1);
        let generation = self.state.borrow().generation;
        let log = self.rc();
        async move {
            WaitForOffset::with_kind(log.clone(), offset, WaitKind::Durable).await;
            let state = log.state.borrow();
            if state.generation == generation && state.durable_end_offset > offset {
                Ok(())
            } else if let Some(failure) = &state.failure {
                Err(failure.error())
            } else if state.closed {
                Err(LogError::Closed)
            } else {
                Err(LogError::Io(io::Error::other(
                    "sync lost to a storage failure",
                )))
            }
        }
    }

    /// Resolves once `written_end_offset() > offset`, or once the log is closed or failed.
    /// Woken by write completion; cancel-safe (drop it on timeout).
    pub fn wait_for_offset(&self, offset: i64) -> WaitForOffset {
        WaitForOffset::new(self.rc(), offset)
    }

    pub(crate) fn is_offset_reached_or_stopped(&self, offset: i64, kind: WaitKind) -> bool {
        let state = self.state.borrow();
        if state.closed {
            return true;
        }
        match kind {
            WaitKind::Written => state.written_end_offset > offset || state.failure.is_some(),
            WaitKind::Committed => state.high_watermark > offset || state.failure.is_some(),
            WaitKind::Durable => {
                state.durable_end_offset > offset
                    || state
                        .failure
                        .as_ref()
                        .is_some_and(|failure| failure.fatal || offset >= state.written_end_offset)
            }
        }
    }

    /// The synchronous half of `append`: stamp, assign offsets, queue, wake the writer.
    fn enqueue(
        &self,
        batches: Bytes,
        record_count: u32,
        leader_epoch: i32,
    ) -> Result<(AppendOutcome, u64), LogError> {
        self.state.borrow().check_appendable()?;
        if batches.len() < RECORD_BATCH_HEADER_SIZE_BYTES || record_count == 0 {
            return Err(invalid_input("append of no batches"));
        }
        // Our own exact-size copy, to stamp and to cache. Taking over a uniquely owned buffer
        // would save the copy but could pin a whole request frame in the cache, past its bound.
        let mut data = BytesMut::from(&batches[..]);
        drop(batches);
        let base_offset = self.state.borrow().next_offset;
        let next_offset = stamp_batches(&mut data, base_offset, leader_epoch)?;
        if next_offset - base_offset != i64::from(record_count) {
            return Err(invalid_input("record_count does not match the batches"));
        }
        if self.epochs.borrow_mut().assign(leader_epoch, base_offset) {
            self.persist_leader_epochs();
        }
        self.push_pending(data, base_offset, next_offset, u64::from(record_count))
    }

    /// Queues stamped batches covering `[base_offset, next_offset)` (which must start at the
    /// next offset) and wakes the writer.
    pub(super) fn push_pending(
        &self,
        data: BytesMut,
        base_offset: i64,
        next_offset: i64,
        record_count: u64,
    ) -> Result<(AppendOutcome, u64), LogError> {
        let size_bytes = data.len();
        let mut state = self.state.borrow_mut();
        assert_eq!(state.next_offset, base_offset);
        assert!(next_offset > base_offset);
        state.next_offset = next_offset;
        state.pending_bytes += size_bytes as u64;
        state.pending.push_back(PendingAppend {
            data: data.freeze(),
            base_offset,
            next_offset,
            record_count,
            planned_bytes: 0,
            written_bytes: 0,
            position_bytes: 0,
        });
        let generation = state.generation;
        drop(state);
        self.ensure_writer();
        Ok((
            AppendOutcome {
                base_offset,
                last_offset: next_offset - 1,
            },
            generation,
        ))
    }

    /// Starts the writer task if it is not running, and wakes it.
    pub(super) fn ensure_writer(&self) {
        let start = {
            let mut state = self.state.borrow_mut();
            let start = !state.writer_running;
            state.writer_running = true;
            start
        };
        if start {
            glommio::spawn_local(self.rc().run_writer()).detach();
        }
        self.writer_signal.notify();
    }

    /// The partition's writer task: plans and issues writes while there is work.
    async fn run_writer(self: Rc<Self>) {
        loop {
            let step = {
                let config = self.config.borrow();
                self.state.borrow_mut().next_write_step(&config, now_ms())
            };
            let result = match step {
                WriteStep::Idle => return,
                WriteStep::Wait => {
                    self.writer_signal.wait().await;
                    Ok(())
                }
                WriteStep::Roll { base_offset } => self.roll(base_offset).await,
                WriteStep::Preallocate { file, size_bytes } => {
                    self.preallocate_active(file, size_bytes).await
                }
                WriteStep::Write(plan) => {
                    self.issue_write(plan);
                    self.preallocate_ahead();
                    self.prewrite_ahead();
                    Ok(())
                }
            };
            if let Err(error) = result {
                self.fail(error, false);
            }
        }
    }

    fn issue_write(&self, plan: WritePlan) {
        let WritePlan { id, file, pieces } = plan;
        let log = self.rc();
        glommio::spawn_local(async move {
            let issued = Instant::now();
            let writes = pieces.into_iter().map(|(position_bytes, buffer)| {
                let file = file.clone();
                async move {
                    let buffer_size_bytes = buffer.len();
                    match super::file_io::write_at(&file, buffer, position_bytes).await {
                        Ok(written) if written == buffer_size_bytes => Ok(()),
                        Ok(written) => Err((
                            io::ErrorKind::WriteZero,
                            format!("short write: {written} of {buffer_size_bytes} bytes"),
                        )),
                        Err(error) => Err((error.kind(), error.to_string())),
                    }
                }
            });
            let results = futures::future::join_all(writes).await;
            log.state.borrow_mut().stats.write_micros_total += issued.elapsed().as_micros() as u64;
            log.complete_write(id, results.into_iter().collect());
        })
        .detach();
    }

    /// Records a write's outcome and commits every completed write at the front, in order.
    fn complete_write(&self, id: u64, result: Result<(), (io::ErrorKind, String)>) {
        let mut failed: Option<(io::ErrorKind, String)> = None;
        let (written_end_offset, start_sync) = {
            let mut state = self.state.borrow_mut();
            let config = self.config.borrow();
            let write = state
                .in_flight
                .iter_mut()
                .find(|write| write.id == id)
                .expect("a completed write is in flight");
            write.outcome = Some(result);
            let mut committed_records = 0u64;
            while state
                .in_flight
                .front()
                .is_some_and(|write| write.outcome.is_some())
            {
                let mut write = state.in_flight.pop_front().expect("front exists");
                match write.outcome.take().expect("checked above") {
                    Err(error) => {
                        failed.get_or_insert(error);
                    }
                    Ok(()) if state.failure.is_none() && failed.is_none() && !state.closed => {
                        committed_records += state.commit_write(write, &self.cache, &config);
                    }
                    Ok(()) => {} // After a failure: its appends were discarded.
                }
            }
            let mut start_sync = false;
            if committed_records > 0 {
                state.unflushed_records += committed_records;
                state.unflushed_since.get_or_insert_with(Instant::now);
                let due = config.is_sync() || state.unflushed_records >= config.flush_messages;
                if due {
                    state.sync_requested_end =
                        state.sync_requested_end.max(state.written_end_offset);
                }
                start_sync = state.sync_requested_end > state.durable_end_offset;
            }
            (state.written_end_offset, start_sync)
        };
        if let Some((kind, message)) = failed {
            self.fail(LogError::Io(io::Error::new(kind, message)), false);
        }
        let wakers = self.waiters.borrow_mut().take_satisfied(written_end_offset);
        wakers.into_iter().for_each(|waker| waker.wake());
        self.advance_high_watermark();
        if start_sync {
            self.start_syncer();
        }
        self.writer_signal.notify();
    }

    /// Grows the active segment by one step in the background once the writes are within half
    /// of the next step of the allocated end, so appends rarely wait for a fallocate. A
    /// failure here is left for the foreground allocation to meet (and report) when the space
    /// is needed.
    fn preallocate_ahead(&self) {
        let job = {
            let mut state = self.state.borrow_mut();
            let config = self.config.borrow();
            let cap = align_up(config.segment_size_bytes);
            let active = state.active();
            let allocated = align_up(active.allocated_size_bytes);
            let step = config.preallocate_step_after(allocated);
            let due = align_up(state.planned_size_bytes) + step / 2 >= allocated;
            if !state.preallocate_supported || state.preallocating || !due || allocated >= cap {
                return;
            }
            let file = active.file.clone();
            state.preallocating = true;
            (file, (allocated + step).min(cap))
        };
        let log = self.rc();
        glommio::spawn_local(async move {
            let (file, size_bytes) = job;
            let result = log.preallocate_active(file, size_bytes).await;
            if let Err(error) = result {
                tracing::debug!(dir = %log.dir.display(), %error, "background preallocation failed");
            }
            log.writer_signal.notify();
        })
        .detach();
    }

    /// Under the sync policy, zero-fills the allocated region ahead of the writer and syncs
    /// it, in the background, so appends overwrite written blocks: ext4 then has no extent
    /// conversion to journal, and the fdatasync each acknowledgement waits for is a device
    /// flush alone. A round runs once less than half of `prewrite_ahead_bytes` is ready and
    /// fills up to the full distance (bounded by the fallocated size). The first
    /// `max_write_size_bytes` past the planned end are left to the writer, so the next write
    /// does not wait for a round. Failures only cost the speed-up: the writer then writes into
    /// unwritten blocks as it would without this.
    fn prewrite_ahead(&self) {
        let job = {
            let mut state = self.state.borrow_mut();
            let config = self.config.borrow();
            let ahead_bytes = config.prewrite_ahead_bytes;
            if !config.is_sync()
                || ahead_bytes == 0
                || !state.preallocate_supported
                || state.prewriting.is_some()
                || state.failure.is_some()
                || state.closing
                || state.truncating
            {
                return;
            }
            let floor_bytes =
                align_up(state.planned_size_bytes) + config.max_write_size_bytes as u64;
            let active = state.active();
            let ready_bytes = active.prewritten_size_bytes.saturating_sub(floor_bytes);
            if ready_bytes >= ahead_bytes / 2 {
                return;
            }
            let start_bytes = active.prewritten_size_bytes.max(floor_bytes);
            let end_bytes = (floor_bytes + ahead_bytes).min(active.allocated_size_bytes);
            if start_bytes >= end_bytes {
                return;
            }
            let range = PrewriteRange {
                file: active.file.clone(),
                start_bytes,
                end_bytes,
            };
            let job = (
                range.file.clone(),
                start_bytes,
                end_bytes,
                config.max_write_size_bytes,
            );
            state.prewriting = Some(range);
            job
        };
        let log = self.rc();
        glommio::spawn_local(async move {
            let (file, start_bytes, end_bytes, chunk_bytes) = job;
            let result = zero_fill(&file, start_bytes, end_bytes, chunk_bytes).await;
            {
                let mut state = log.state.borrow_mut();
                state.prewriting = None;
                match result {
                    Ok(()) if !state.closed => {
                        state.stats.prewritten_bytes += end_bytes - start_bytes;
                        let active = state.active_mut();
                        if Rc::ptr_eq(&active.file, &file) {
                            active.prewritten_size_bytes =
                                active.prewritten_size_bytes.max(end_bytes);
                        }
                    }
                    Ok(()) => {}
                    Err(error) => {
                        tracing::debug!(dir = %log.dir.display(), %error, "zero-fill ahead of the writer failed");
                    }
                }
            }
            log.writer_signal.notify();
        })
        .detach();
    }

    async fn preallocate_active(&self, file: Rc<DmaFile>, size_bytes: u64) -> Result<(), LogError> {
        self.state.borrow_mut().preallocating = true;
        let result = preallocate(&file, size_bytes).await;
        let mut state = self.state.borrow_mut();
        state.preallocating = false;
        let supported = result?;
        if state.closed {
            return Ok(());
        }
        if !supported {
            state.preallocation_unsupported(&self.dir);
            return Ok(());
        }
        let active = state.active_mut();
        if Rc::ptr_eq(&active.file, &file) {
            active.allocated_size_bytes = active.allocated_size_bytes.max(size_bytes);
        }
        Ok(())
    }

    /// Seals the active segment and starts a new one at `base_offset`. Runs with no write in
    /// flight.
    async fn roll(&self, base_offset: i64) -> Result<(), LogError> {
        let (sealed_file, sealed_size_bytes, index_file) = {
            let state = self.state.borrow();
            if state.closed {
                return Ok(());
            }
            assert!(state.in_flight.is_empty());
            let sealed = state.active();
            assert_eq!(sealed.next_offset, base_offset);
            (sealed.file.clone(), sealed.size_bytes, sealed.index_file())
        };
        let first_step_bytes = {
            let config = self.config.borrow();
            let supported = self.state.borrow().preallocate_supported;
            supported.then(|| {
                config
                    .preallocate_step_after(0)
                    .min(align_up(config.segment_size_bytes))
            })
        };
        // Appends wait while a roll runs, so its independent steps run at once: the next
        // segment is created and gets its first preallocation step while the sealed one is
        // trimmed and its index written.
        let open_next = async {
            let path = self.dir.join(segment_file_name(base_offset));
            let file = Rc::new(open_segment_file(&path, true).await?);
            // A leftover file of that name can only hold garbage: start empty.
            file.truncate(0).await.map_err(io_error)?;
            let allocated_bytes = match first_step_bytes {
                Some(step_bytes) if preallocate(&file, step_bytes).await? => Some(step_bytes),
                Some(_) => None, // Not supported by the filesystem.
                None => Some(0),
            };
            Ok::<_, LogError>((file, allocated_bytes))
        };
        let seal = async {
            // Give back the unused preallocated tail; recovery of sealed segments then knows
            // their exact size.
            sealed_file
                .truncate(sealed_size_bytes)
                .await
                .map_err(io_error)?;
            // Best effort and not synced: recovery checks its CRC and sizes against the
            // segment, and rebuilds the index by scanning otherwise.
            let index_name = index_file_name(index_file.base_offset);
            if let Err(error) =
                write_file_atomic(&self.dir, &index_name, index_file.encode(), false).await
            {
                tracing::warn!(dir = %self.dir.display(), %error, "could not write segment index");
            }
            Ok::<_, LogError>(())
        };
        let (opened, sealed) = futures::join!(open_next, seal);
        sealed?;
        let (file, allocated_bytes) = opened?;

        let mut state = self.state.borrow_mut();
        if state.closed {
            return Ok(());
        }
        let prefix_max = state.active().prefix_max_timestamp_ms;
        let mut segment = Segment::new_empty(base_offset, file, now_ms());
        segment.prefix_max_timestamp_ms = prefix_max;
        match allocated_bytes {
            Some(bytes) => segment.allocated_size_bytes = bytes,
            None => state.preallocation_unsupported(&self.dir),
        }
        state.segments.push(segment);
        state.tail_block.clear();
        state.planned_tail_block.clear();
        state.planned_size_bytes = 0;
        state.roll_requested = false;
        state.directory_dirty = true;
        state.stats.rolls += 1;
        tracing::debug!(dir = %self.dir.display(), base_offset, "rolled segment");
        Ok(())
    }

    /// Marks the log failed and wakes every waiter (they see the failure).
    pub(super) fn fail(&self, error: LogError, fatal: bool) {
        let (kind, message) = match &error {
            LogError::Io(io_error) => (io_error.kind(), io_error.to_string()),
            other => (io::ErrorKind::Other, other.to_string()),
        };
        {
            let mut state = self.state.borrow_mut();
            if state.closed {
                return;
            }
            match &mut state.failure {
                Some(existing) => existing.fatal |= fatal,
                None => {
                    tracing::error!(dir = %self.dir.display(), %error, fatal,
                        "partition log failed: appends refused until the disk recovers");
                    state.failure = Some(Failure {
                        kind,
                        message,
                        fatal,
                    });
                    state.stats.failures += 1;
                }
            }
        }
        self.wake_all();
        self.writer_signal.notify();
    }

    pub(super) fn wake_all(&self) {
        let wakers = self.waiters.borrow_mut().take_all();
        wakers.into_iter().for_each(|waker| waker.wake());
        let wakers = self.durable_waiters.borrow_mut().take_all();
        wakers.into_iter().for_each(|waker| waker.wake());
        let wakers = self.committed_waiters.borrow_mut().take_all();
        wakers.into_iter().for_each(|waker| waker.wake());
    }

    /// Asks for everything below `end_offset` to become durable; starts the syncer if needed.
    pub(super) fn request_sync(&self, end_offset: i64) {
        let start = {
            let mut state = self.state.borrow_mut();
            state.sync_requested_end = state.sync_requested_end.max(end_offset);
            state.sync_requested_end > state.durable_end_offset
                && state.written_end_offset > state.durable_end_offset
        };
        if start {
            self.start_syncer();
        }
    }

    fn start_syncer(&self) {
        let start = {
            let mut state = self.state.borrow_mut();
            let start = !state.sync_running && !state.closed;
            state.sync_running |= start;
            start
        };
        if start {
            glommio::spawn_local(self.rc().run_syncer()).detach();
        }
    }

    /// The partition's syncer: one fdatasync round at a time, each covering every write
    /// completed before it started, until nothing more is requested.
    async fn run_syncer(self: Rc<Self>) {
        loop {
            let job = {
                let mut state = self.state.borrow_mut();
                let fatal = state.failure.as_ref().is_some_and(|f| f.fatal);
                let wanted = state.sync_requested_end.min(state.written_end_offset);
                if state.closed || fatal || wanted <= state.durable_end_offset {
                    state.sync_running = false;
                    return;
                }
                let target = state.written_end_offset;
                let active = state.active();
                assert_eq!(active.next_offset, target);
                let point = RecoveryCheckpoint {
                    offset: target,
                    segment_base_offset: active.base_offset,
                    position_bytes: active.size_bytes,
                };
                let files: Vec<Rc<DmaFile>> = state
                    .segments
                    .iter_mut()
                    .filter(|segment| segment.dirty)
                    .map(|segment| {
                        segment.dirty = false;
                        segment.file.clone()
                    })
                    .collect();
                let sync_dir = std::mem::take(&mut state.directory_dirty);
                state.unflushed_records = 0;
                state.unflushed_since = None;
                (point, files, sync_dir, state.generation)
            };
            let (point, files, sync_dir, generation) = job;
            let started = Instant::now();
            let results =
                futures::future::join_all(files.iter().map(|file| file.fdatasync())).await;
            let mut error = results
                .into_iter()
                .find_map(|result| result.err())
                .map(|error| LogError::Io(io_error(error)));
            if error.is_none() && sync_dir {
                error = sync_directory(&self.dir).await.err();
            }
            if let Some(error) = error {
                // The durability of everything since the last sync is unknown now.
                self.fail(error, true);
                self.state.borrow_mut().sync_running = false;
                return;
            }
            let durable_end_offset = {
                let mut state = self.state.borrow_mut();
                if state.generation == generation && point.offset > state.durable_end_offset {
                    state.durable_end_offset = point.offset;
                    state.durable_point = point;
                }
                state.stats.syncs += 1;
                state.stats.sync_micros_total += started.elapsed().as_micros() as u64;
                crate::metrics::record_fsync(started.elapsed());
                state.durable_end_offset
            };
            let wakers = self
                .durable_waiters
                .borrow_mut()
                .take_satisfied(durable_end_offset);
            wakers.into_iter().for_each(|waker| waker.wake());
        }
    }

    /// Makes everything written so far durable.
    pub async fn sync(&self) -> Result<(), LogError> {
        let end = self.state.borrow().written_end_offset;
        if end == 0 || self.state.borrow().durable_end_offset >= end {
            return self.state.borrow().check_readable();
        }
        self.wait_durable(end - 1).await
    }

    /// Starts an fdatasync if the flush policy's time bound (`flush_interval_ms`) has passed
    /// since the oldest unsynced write. Called by the shard's maintenance tick.
    pub fn sync_if_due(&self, now: Instant) {
        let interval_ms = self.config.borrow().flush_interval_ms;
        let end = {
            let state = self.state.borrow();
            match state.unflushed_since {
                Some(since)
                    if now.saturating_duration_since(since).as_millis()
                        >= u128::from(interval_ms) =>
                {
                    state.written_end_offset
                }
                _ => return,
            }
        };
        self.request_sync(end);
    }

    /// Whole batches from the one containing `from_offset`, in order, only batches whose last
    /// offset is below `max_offset_exclusive` (the high watermark), up to `max_bytes` but at
    /// least one batch if any qualifies (KIP-74). The tail comes from the cache, older data
    /// from disk. `from_offset` outside `[log_start, written_end]` is `OffsetOutOfRange`.
    pub async fn read(
        &self,
        from_offset: i64,
        max_bytes: usize,
        max_offset_exclusive: i64,
    ) -> Result<ReadOutcome, LogError> {
        self.state.borrow().check_read_start(from_offset)?;
        let mut outcome = ReadOutcome::default();
        let mut cursor = from_offset;
        loop {
            let source = {
                let state = self.state.borrow();
                state.check_readable()?;
                if cursor >= state.written_end_offset || cursor >= max_offset_exclusive {
                    break;
                }
                let cache = self.cache.borrow();
                if cache_holds(&cache, cursor) {
                    read_from_cache(
                        &cache,
                        cursor,
                        max_bytes,
                        max_offset_exclusive,
                        &mut outcome,
                    )?;
                    break;
                }
                drop(cache);
                match state.disk_source(cursor) {
                    Some(source) => source,
                    None => {
                        // The log start moved past us while we read.
                        return Err(LogError::OffsetOutOfRange {
                            requested: cursor,
                            log_start: state.log_start_offset,
                            log_end: state.written_end_offset,
                        });
                    }
                }
            };
            let next_offset = source.next_offset;
            let budget_bytes = max_bytes.saturating_sub(outcome.size_bytes) as u64;
            let config = self.config.borrow().clone();
            let window_bytes = budget_bytes
                .saturating_add(config.index_interval_bytes)
                .max(READ_WINDOW_MIN_BYTES)
                .min(config.max_write_size_bytes as u64);
            let stopped = read_from_segment(
                source,
                cursor,
                max_bytes,
                max_offset_exclusive,
                window_bytes,
                &mut outcome,
            )
            .await?;
            if stopped {
                break;
            }
            cursor = next_offset;
        }
        debug_assert_eq!(
            outcome.size_bytes,
            outcome.chunks.iter().map(|c| c.len()).sum::<usize>()
        );
        Ok(outcome)
    }

    /// Like `read`, but data from disk comes back as regions of the segment files, to be sent
    /// with `send_file_region` (page cache to socket, no copy through user space); the cache
    /// still serves the tail from memory. Regions end on batch boundaries (from the sparse
    /// index, or a walk of at most one index interval of headers). A segment the visible end
    /// (`max_offset_exclusive`) cuts through is read by copying, as `read` does.
    pub async fn read_zero_copy(
        &self,
        from_offset: i64,
        max_bytes: usize,
        max_offset_exclusive: i64,
    ) -> Result<ZeroCopyRead, LogError> {
        self.state.borrow().check_read_start(from_offset)?;
        let mut outcome = ZeroCopyRead {
            next_offset: from_offset,
            ..ZeroCopyRead::default()
        };
        let mut cursor = from_offset;
        let mut retries = 0u32;
        loop {
            let plan = {
                let state = self.state.borrow();
                state.check_readable()?;
                if cursor >= state.written_end_offset || cursor >= max_offset_exclusive {
                    break;
                }
                let cache = self.cache.borrow();
                if cache_holds(&cache, cursor) {
                    let mut memory = ReadOutcome {
                        chunks: Vec::new(),
                        size_bytes: outcome.size_bytes,
                    };
                    read_from_cache(&cache, cursor, max_bytes, max_offset_exclusive, &mut memory)?;
                    outcome.size_bytes = memory.size_bytes;
                    if let Some(last) = memory.chunks.last() {
                        outcome.next_offset = offset_after_batches(last)?;
                    }
                    outcome
                        .chunks
                        .extend(memory.chunks.into_iter().map(ReadChunk::Memory));
                    break;
                }
                drop(cache);
                let after = state
                    .segments
                    .partition_point(|segment| segment.base_offset <= cursor);
                if after == 0 {
                    return Err(LogError::OffsetOutOfRange {
                        requested: cursor,
                        log_start: state.log_start_offset,
                        log_end: state.written_end_offset,
                    });
                }
                let segment = &state.segments[after - 1];
                let start = segment.index.lookup(cursor);
                let horizon = start
                    .saturating_add(max_bytes as u64)
                    .saturating_add(self.config.borrow().index_interval_bytes);
                let entries = &segment.index.entries;
                let from = entries.partition_point(|e| e.position_bytes <= start);
                let to = entries.partition_point(|e| e.position_bytes <= horizon);
                ColdPlan {
                    base_offset: segment.base_offset,
                    source: DiskSource {
                        file: segment.file.clone(),
                        size_bytes: segment.size_bytes,
                        next_offset: segment.next_offset,
                        start_position_bytes: start,
                    },
                    read_file: segment.read_file.clone(),
                    boundaries: entries[from..to]
                        .iter()
                        .map(|e| (e.position_bytes, e.offset))
                        .collect(),
                    visible_end_inside: segment.next_offset > max_offset_exclusive,
                }
            };
            let next_offset = plan.source.next_offset;
            if plan.visible_end_inside || retries > 3 {
                let mut copied = ReadOutcome {
                    chunks: Vec::new(),
                    size_bytes: outcome.size_bytes,
                };
                let window_bytes = self.config.borrow().max_write_size_bytes as u64;
                let stopped = read_from_segment(
                    plan.source,
                    cursor,
                    max_bytes,
                    max_offset_exclusive,
                    window_bytes,
                    &mut copied,
                )
                .await?;
                outcome.size_bytes = copied.size_bytes;
                if let Some(last) = copied.chunks.last() {
                    outcome.next_offset = offset_after_batches(last)?;
                }
                outcome
                    .chunks
                    .extend(copied.chunks.into_iter().map(ReadChunk::Memory));
                if stopped {
                    break;
                }
                cursor = next_offset;
                continue;
            }
            let Some((start_bytes, end_bytes, region_next_offset)) =
                cold_region(&plan, cursor, outcome.size_bytes, max_bytes).await?
            else {
                if outcome.size_bytes > 0 {
                    break; // The next batch does not fit the budget.
                }
                cursor = next_offset; // Nothing at or after the cursor in this segment.
                continue;
            };
            let Some(read_file) = self.buffered_file(&plan).await? else {
                retries += 1; // Compaction swapped the file under us: plan again.
                continue;
            };
            let size_bytes = (end_bytes - start_bytes) as usize;
            outcome.chunks.push(ReadChunk::File(FileRegion {
                file: read_file,
                position_bytes: start_bytes,
                size_bytes,
            }));
            outcome.size_bytes += size_bytes;
            outcome.next_offset = region_next_offset;
            if end_bytes < plan.source.size_bytes {
                break; // Budget reached.
            }
            cursor = next_offset;
        }
        Ok(outcome)
    }

    /// The segment's file opened without O_DIRECT (opened once, on the blocking pool); `None`
    /// if the segment's file changed meanwhile (compaction).
    async fn buffered_file(&self, plan: &ColdPlan) -> Result<Option<Arc<File>>, LogError> {
        if let Some(file) = &plan.read_file {
            return Ok(Some(file.clone()));
        }
        let path = self.dir.join(segment_file_name(plan.base_offset));
        let inode = plan.source.file.inode();
        let file = blocking(move || -> io::Result<Option<File>> {
            use std::os::unix::fs::MetadataExt;
            let file = File::open(path)?;
            Ok((file.metadata()?.ino() == inode).then_some(file))
        })
        .await?;
        let Some(file) = file else {
            return Ok(None);
        };
        let file = Arc::new(file);
        let mut state = self.state.borrow_mut();
        let segment = state
            .segments
            .iter_mut()
            .find(|segment| segment.base_offset == plan.base_offset);
        match segment {
            Some(segment) if Rc::ptr_eq(&segment.file, &plan.source.file) => {
                segment.read_file.get_or_insert_with(|| file.clone());
                Ok(Some(file))
            }
            _ => Ok(None),
        }
    }

    /// fdatasyncs everything written, then records the recovery checkpoint (and the active
    /// segment's index up to it, so recovery skips straight to the checkpoint). Checkpoints
    /// are serialised. Recovery after a crash validates only what was written after the last
    /// checkpoint, so the checkpoint interval bounds restart time.
    pub async fn checkpoint(&self) -> Result<(), LogError> {
        let _permit = self
            .checkpoint_lock
            .acquire_permit(1)
            .await
            .map_err(|_| LogError::Closed)?;
        let (point, index_file) = {
            let state = self.state.borrow();
            state.check_readable()?;
            let active = state.active();
            assert_eq!(active.next_offset, state.written_end_offset);
            let point = RecoveryCheckpoint {
                offset: state.written_end_offset,
                segment_base_offset: active.base_offset,
                position_bytes: active.size_bytes,
            };
            let unchanged = state.recovery_point == Some(point) && !state.directory_dirty;
            (point, (!unchanged).then(|| active.index_file()))
        };
        let Some(index_file) = index_file else {
            self.persist_high_watermark().await;
            return Ok(());
        };
        if point.offset > 0 {
            self.wait_durable(point.offset - 1).await?;
        }
        if self.state.borrow().directory_dirty {
            // A roll or removal not yet covered by a sync.
            sync_directory(&self.dir).await?;
        }
        // Index first, then the checkpoint that vouches for it: recovery uses the index only
        // if it ends exactly at the checkpoint.
        let name = index_file_name(index_file.base_offset);
        if let Err(error) = write_file_atomic(&self.dir, &name, index_file.encode(), false).await {
            tracing::warn!(dir = %self.dir.display(), %error, "could not write segment index");
        }
        if let Err(error) = write_checkpoint(&self.dir, point).await {
            self.check_directory().await;
            return Err(error);
        }
        self.persist_high_watermark().await;
        let mut state = self.state.borrow_mut();
        state.stats.checkpoints += 1;
        if state
            .recovery_point
            .is_none_or(|c| c.offset <= point.offset)
        {
            state.recovery_point = Some(point);
        }
        Ok(())
    }

    /// Kept for callers of the first version: `checkpoint`.
    pub async fn flush(&self) -> Result<(), LogError> {
        self.checkpoint().await
    }

    /// Fails the log (fatally) if its directory is gone: writes to open files would still
    /// succeed, but nothing written from now on could be found after a restart.
    pub async fn check_directory(&self) -> bool {
        let dir = self.dir.clone();
        let exists = blocking(move || dir.is_dir()).await;
        if !exists && !self.state.borrow().closed {
            self.fail(
                LogError::Io(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("log directory {} was removed", self.dir.display()),
                )),
                true,
            );
        }
        exists
    }

    /// After a failure: continues the log if the disk accepts allocations again (a write
    /// failure), or reopens it from disk (a fatal failure). Returns true if the log accepts
    /// appends again. Called periodically by the shard; cheap when nothing is wrong.
    pub async fn try_resume(&self) -> Result<bool, LogError> {
        let (fatal, file, committed_size_bytes, probe_size_bytes, preallocate_supported) = {
            let state = self.state.borrow();
            let Some(failure) = &state.failure else {
                return Ok(true);
            };
            if state.closed
                || state.closing
                || !state.in_flight.is_empty()
                || state.prewriting.is_some()
            {
                return Ok(false);
            }
            let active = state.active();
            let committed_aligned_bytes = align_up(active.size_bytes);
            let step = self
                .config
                .borrow()
                .preallocate_step_after(committed_aligned_bytes);
            (
                failure.fatal,
                active.file.clone(),
                active.size_bytes,
                committed_aligned_bytes + step,
                state.preallocate_supported,
            )
        };
        if fatal {
            return self.reopen_in_place().await;
        }
        // Cut whatever failed writes left past the committed end, durably, so it can never
        // be read back as batches; then check that space can be allocated again.
        let probe = async {
            file.truncate(committed_size_bytes)
                .await
                .map_err(io_error)?;
            file.fdatasync().await.map_err(io_error)?;
            if preallocate_supported {
                preallocate(&file, probe_size_bytes).await?;
            }
            Ok::<(), LogError>(())
        };
        if let Err(error) = probe.await {
            tracing::debug!(dir = %self.dir.display(), %error, "storage still failing");
            return Ok(false);
        }
        let mut state = self.state.borrow_mut();
        if state.closed || state.failure.as_ref().is_none_or(|f| f.fatal) {
            return Ok(false);
        }
        assert!(state.in_flight.is_empty() && state.pending.is_empty());
        state.failure = None;
        state.generation += 1;
        state.next_offset = state.written_end_offset;
        state.planned_size_bytes = committed_size_bytes;
        state.planned_tail_block = state.tail_block.clone();
        let active = state.active_mut();
        active.allocated_size_bytes = if preallocate_supported {
            probe_size_bytes
        } else {
            committed_size_bytes
        };
        tracing::info!(dir = %self.dir.display(), "partition log resumed after a storage failure");
        Ok(true)
    }

    /// Recovers the log from disk in place (after a fatal failure), keeping the same
    /// `PartitionLog` so its holders (partition table, waiting fetches) carry on.
    async fn reopen_in_place(&self) -> Result<bool, LogError> {
        let dir = self.dir.clone();
        if !blocking(move || dir.is_dir()).await {
            return Ok(false);
        }
        let files = {
            let mut state = self.state.borrow_mut();
            if state.closed
                || state.writer_running
                || state.sync_running
                || state.prewriting.is_some()
            {
                return Ok(false);
            }
            state.discard_pending();
            state
                .segments
                .iter()
                .map(|segment| segment.file.clone())
                .collect::<Vec<_>>()
        };
        let config = self.config.borrow().clone();
        let recovered = match recover(&self.dir, &config).await {
            Ok(recovered) => recovered,
            Err(error) => {
                tracing::debug!(dir = %self.dir.display(), %error, "reopen failed");
                return Ok(false);
            }
        };
        let generation = {
            let state = self.state.borrow();
            if state.closed
                || state.writer_running
                || state.sync_running
                || state.prewriting.is_some()
            {
                return Ok(false);
            }
            state.generation + 1
        };
        let stats = self.state.borrow().stats;
        self.install_recovered(recovered, generation);
        self.state.borrow_mut().stats = stats;
        close_files(files).await;
        tracing::warn!(dir = %self.dir.display(), end = self.written_end_offset(),
            "partition log reopened from disk after a fatal storage failure");
        if let Err(error) = self.checkpoint().await {
            tracing::warn!(dir = %self.dir.display(), %error, "checkpoint after reopen failed");
        }
        Ok(true)
    }

    /// Stops appends, waits for pending writes, syncs, writes the checkpoint and releases the
    /// files. Later calls return `Closed` (a second `close` returns `Ok`).
    pub async fn close(&self) -> Result<(), LogError> {
        {
            let mut state = self.state.borrow_mut();
            if state.closing || state.closed {
                return Ok(());
            }
            state.closing = true;
        }
        self.drain().await;
        let failure = self.state.borrow().failure.clone();
        let result = match failure {
            Some(failure) => Err(failure.error()),
            None => self.checkpoint().await,
        };
        let files = self.release();
        close_files(files).await;
        tracing::info!(dir = %self.dir.display(), "closed partition log");
        result
    }

    /// Deletes the log's files and directory (topic deletion). Pending appends are written
    /// first so no write lands in a deleted file; nothing is flushed. The removal runs on the
    /// blocking pool, never on the shard.
    pub async fn remove(&self) -> Result<(), LogError> {
        self.state.borrow_mut().closing = true;
        self.drain().await;
        let files = self.release();
        close_files(files).await;
        let dir = self.dir.clone();
        blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        })
        .await?;
        tracing::info!(dir = %self.dir.display(), "removed partition log");
        Ok(())
    }

    /// Waits until every assigned offset is written and no write is in flight (or the log
    /// failed).
    pub(super) async fn drain(&self) {
        let last_assigned = self.state.borrow().next_offset - 1;
        WaitForOffset::new(self.rc(), last_assigned).await;
        while !self.state.borrow().in_flight.is_empty() || self.state.borrow().prewriting.is_some()
        {
            self.writer_signal.notify();
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Marks the log closed, drops the cache, and hands back the segment files to close.
    fn release(&self) -> Vec<Rc<DmaFile>> {
        let files = {
            let mut state = self.state.borrow_mut();
            state.closing = true;
            state.closed = true;
            state.discard_pending();
            state
                .segments
                .drain(..)
                .map(|segment| segment.file)
                .collect()
        };
        self.cache.borrow_mut().clear();
        self.checkpoint_lock.close();
        self.maintenance_lock.close();
        self.wake_all();
        self.writer_signal.notify();
        files
    }
}

impl LogState {
    /// An empty state, replaced by `install_recovered` before the log is used.
    fn placeholder() -> LogState {
        LogState {
            segments: Vec::new(),
            log_start_offset: 0,
            next_offset: 0,
            written_end_offset: 0,
            durable_end_offset: 0,
            durable_point: RecoveryCheckpoint {
                offset: 0,
                segment_base_offset: 0,
                position_bytes: 0,
            },
            generation: 0,
            pending: VecDeque::new(),
            pending_bytes: 0,
            planned_size_bytes: 0,
            planned_tail_block: Vec::new(),
            tail_block: Vec::new(),
            in_flight: VecDeque::new(),
            next_write_id: 0,
            writer_running: false,
            roll_requested: false,
            sync_running: false,
            sync_requested_end: 0,
            unflushed_records: 0,
            unflushed_since: None,
            size_bytes: 0,
            failure: None,
            closing: false,
            closed: true,
            recovery_point: None,
            directory_dirty: false,
            preallocate_supported: true,
            preallocating: false,
            prewriting: None,
            cleaner_offset: 0,
            high_watermark: 0,
            high_watermark_limit: i64::MAX,
            persisted_high_watermark: -1,
            truncating: false,
            stats: LogStats::default(),
        }
    }

    pub(super) fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("a log always has an active segment")
    }

    pub(super) fn check_appendable(&self) -> Result<(), LogError> {
        if self.closing || self.closed {
            return Err(LogError::Closed);
        }
        if self.truncating {
            return Err(LogError::Io(io::Error::new(
                io::ErrorKind::WouldBlock,
                "the log is being truncated",
            )));
        }
        if let Some(failure) = &self.failure {
            return Err(failure.error());
        }
        Ok(())
    }

    /// Reads go on after a write failure (the written data is intact) but not after a fatal
    /// one (the files may be gone or unreliable).
    pub(super) fn check_readable(&self) -> Result<(), LogError> {
        if self.closed {
            return Err(LogError::Closed);
        }
        match &self.failure {
            Some(failure) if failure.fatal => Err(failure.error()),
            _ => Ok(()),
        }
    }

    /// The filesystem refused fallocate: segments grow by their writes from now on.
    fn preallocation_unsupported(&mut self, dir: &Path) {
        tracing::warn!(dir = %dir.display(), "filesystem cannot preallocate segments");
        self.preallocate_supported = false;
    }

    /// A read may start anywhere in `[log_start, written_end]` of a readable log.
    fn check_read_start(&self, from_offset: i64) -> Result<(), LogError> {
        self.check_readable()?;
        if from_offset < self.log_start_offset || from_offset > self.written_end_offset {
            return Err(LogError::OffsetOutOfRange {
                requested: from_offset,
                log_start: self.log_start_offset,
                log_end: self.written_end_offset,
            });
        }
        Ok(())
    }

    pub(super) fn discard_pending(&mut self) {
        self.pending.clear();
        self.pending_bytes = 0;
    }

    /// The segment covering `offset` and where to start scanning it; `None` below the first.
    pub(super) fn disk_source(&self, offset: i64) -> Option<DiskSource> {
        let after = self
            .segments
            .partition_point(|segment| segment.base_offset <= offset);
        if after == 0 {
            return None;
        }
        let segment = &self.segments[after - 1];
        assert!(offset < segment.next_offset || after == self.segments.len());
        Some(DiskSource {
            file: segment.file.clone(),
            size_bytes: segment.size_bytes,
            next_offset: segment.next_offset,
            start_position_bytes: segment.index.lookup(offset),
        })
    }

    /// Decides the writer's next step and, for a write, fills the DMA buffer: the planned
    /// tail block, then as many pending bytes as fit in one write and in the active segment,
    /// then zeros up to the block boundary.
    fn next_write_step(&mut self, config: &LogConfig, now_ms: i64) -> WriteStep {
        if self.failure.is_some() || self.closed {
            self.discard_pending();
            if self.in_flight.is_empty() {
                self.writer_running = false;
                return WriteStep::Idle;
            }
            return WriteStep::Wait;
        }
        let first_unplanned = self
            .pending
            .iter()
            .position(|append| append.planned_bytes < append.data.len());
        let Some(first) = first_unplanned else {
            if !self.in_flight.is_empty() {
                return WriteStep::Wait;
            }
            if self.roll_requested && self.active().size_bytes > 0 {
                if self.prewriting.is_some() {
                    return WriteStep::Wait; // The sealed file is trimmed: no zeros past it.
                }
                return WriteStep::Roll {
                    base_offset: self.written_end_offset,
                };
            }
            self.roll_requested = false;
            self.writer_running = false;
            return WriteStep::Idle;
        };

        let active = self.active();
        let front = &self.pending[first];
        if front.planned_bytes == 0 && self.planned_size_bytes > 0 {
            let too_big =
                self.planned_size_bytes + front.data.len() as u64 > config.segment_size_bytes;
            let age_ms = now_ms.saturating_sub(active.created_at_ms);
            let too_old = age_ms >= 0 && age_ms as u64 >= config.segment_ms;
            if too_big || too_old || self.roll_requested {
                if !self.in_flight.is_empty() || self.prewriting.is_some() {
                    return WriteStep::Wait;
                }
                return WriteStep::Roll {
                    base_offset: front.base_offset,
                };
            }
        }
        if self.in_flight.len() >= config.max_writes_in_flight {
            return WriteStep::Wait;
        }
        let position_bytes = align_down(self.planned_size_bytes);
        let tail_size_bytes = (self.planned_size_bytes - position_bytes) as usize;
        assert_eq!(tail_size_bytes, self.planned_tail_block.len());
        assert!(tail_size_bytes < BLOCK_SIZE_BYTES as usize);
        // The block holding the planned tail is being written: rewriting it now could land
        // before that write and be overwritten by its older copy.
        if tail_size_bytes > 0
            && self
                .in_flight
                .back()
                .is_some_and(|write| write.end_aligned_bytes > position_bytes)
        {
            return WriteStep::Wait;
        }

        let capacity_bytes = config.max_write_size_bytes - tail_size_bytes;
        let mut chunk_size_bytes = 0usize;
        for (index, append) in self.pending.iter().enumerate().skip(first) {
            if index > first {
                assert_eq!(append.planned_bytes, 0);
                let end = self.planned_size_bytes + (chunk_size_bytes + append.data.len()) as u64;
                if end > config.segment_size_bytes {
                    break; // It goes into the next segment.
                }
            }
            let remaining_bytes = append.data.len() - append.planned_bytes;
            let take_bytes = remaining_bytes.min(capacity_bytes - chunk_size_bytes);
            chunk_size_bytes += take_bytes;
            if take_bytes < remaining_bytes || chunk_size_bytes == capacity_bytes {
                break;
            }
        }
        assert!(chunk_size_bytes > 0);

        let end_bytes = self.planned_size_bytes + chunk_size_bytes as u64;
        let aligned_end_bytes = align_up(end_bytes);
        if self.preallocate_supported && aligned_end_bytes > active.allocated_size_bytes {
            // Writes in flight below the allocated size may go on meanwhile (the kernel
            // orders them against the fallocate); one fallocate at a time.
            if self.preallocating {
                return WriteStep::Wait;
            }
            // Steps from the allocated end, each as large as the allocation so far (up to the
            // full step), until the write fits.
            let mut stepped = align_up(active.allocated_size_bytes);
            while stepped < aligned_end_bytes {
                stepped += config.preallocate_step_after(stepped);
            }
            let segment_cap = align_up(config.segment_size_bytes.max(end_bytes));
            return WriteStep::Preallocate {
                file: active.file.clone(),
                size_bytes: aligned_end_bytes.max(stepped.min(segment_cap)),
            };
        }

        // A zero-fill in flight may land after this write: never let them share a block.
        if self.prewriting.as_ref().is_some_and(|range| {
            Rc::ptr_eq(&range.file, &active.file)
                && aligned_end_bytes > range.start_bytes
                && position_bytes < range.end_bytes
        }) {
            return WriteStep::Wait;
        }
        let buffer_size_bytes = (aligned_end_bytes - position_bytes) as usize;
        assert!(buffer_size_bytes <= config.max_write_size_bytes);
        let file = active.file.clone();
        let segment_base_offset = active.base_offset;
        if self.planned_size_bytes == 0 {
            // segment.ms counts from the first batch, not from when the file was created.
            self.active_mut().created_at_ms = now_ms;
        }
        // A write that rewrites the partial tail block and goes on into fresh blocks is split
        // at the first block boundary. ext4 serves a direct write spanning a written block and
        // preallocated (unwritten) ones only under the exclusive inode lock, so io_uring hands
        // it to a worker thread: a context switch on the shard's core for every such write,
        // which under the sync policy (small writes, each ending mid-block) is every write.
        // Each piece alone is a pure overwrite or a pure write into preallocated blocks, issued
        // inline.
        let block_size_bytes = BLOCK_SIZE_BYTES as usize;
        let mut pieces = if tail_size_bytes > 0 && buffer_size_bytes > block_size_bytes {
            vec![
                (position_bytes, file.alloc_dma_buffer(block_size_bytes)),
                (
                    position_bytes + BLOCK_SIZE_BYTES,
                    file.alloc_dma_buffer(buffer_size_bytes - block_size_bytes),
                ),
            ]
        } else {
            vec![(position_bytes, file.alloc_dma_buffer(buffer_size_bytes))]
        };
        let mut filler = PieceFiller::new(&mut pieces);
        filler.put(&self.planned_tail_block);
        let mut cursor = tail_size_bytes;
        let mut left_bytes = chunk_size_bytes;
        let mut segment_position = self.planned_size_bytes;
        for append in self.pending.iter_mut().skip(first) {
            let start = append.planned_bytes;
            let take_bytes = (append.data.len() - start).min(left_bytes);
            if start == 0 {
                append.position_bytes = segment_position;
            }
            filler.put(&append.data[start..start + take_bytes]);
            append.planned_bytes += take_bytes;
            cursor += take_bytes;
            segment_position += take_bytes as u64;
            left_bytes -= take_bytes;
            if left_bytes == 0 {
                break;
            }
        }
        assert_eq!(cursor, tail_size_bytes + chunk_size_bytes);
        filler.zero_rest();
        // The new partial tail lies in the last piece (a split write ends past its first block).
        let (last_position_bytes, last_buffer) = pieces.last().expect("a write has a piece");
        assert!(align_down(end_bytes) >= *last_position_bytes);
        let new_tail_start = (align_down(end_bytes) - last_position_bytes) as usize;
        let new_tail_end = (end_bytes - last_position_bytes) as usize;
        let new_tail_block = last_buffer.as_bytes()[new_tail_start..new_tail_end].to_vec();
        self.planned_size_bytes = end_bytes;
        self.planned_tail_block.clone_from(&new_tail_block);
        self.next_write_id += 1;
        let id = self.next_write_id;
        self.in_flight.push_back(InFlightWrite {
            id,
            segment_base_offset,
            end_aligned_bytes: aligned_end_bytes,
            chunk_size_bytes,
            new_tail_block,
            outcome: None,
        });
        WriteStep::Write(WritePlan { id, file, pieces })
    }

    /// Applies a completed write (the oldest in flight): advances the segment, hands finished
    /// appends to the index and the cache, and moves the written end. Returns the records of
    /// the appends it finished.
    fn commit_write(
        &mut self,
        write: InFlightWrite,
        cache: &Rc<RefCell<TailCache>>,
        config: &LogConfig,
    ) -> u64 {
        assert_eq!(write.segment_base_offset, self.active().base_offset);
        let chunk_size_bytes = write.chunk_size_bytes;
        let mut left_bytes = chunk_size_bytes;
        let mut finished_records = 0u64;
        while left_bytes > 0 {
            let append = self
                .pending
                .front_mut()
                .expect("a committed write covers pending appends");
            let take_bytes = (append.data.len() - append.written_bytes).min(left_bytes);
            append.written_bytes += take_bytes;
            assert!(append.written_bytes <= append.planned_bytes);
            left_bytes -= take_bytes;
            if append.written_bytes < append.data.len() {
                assert_eq!(left_bytes, 0);
                break;
            }
            let append = self.pending.pop_front().expect("front exists");
            self.pending_bytes -= append.data.len() as u64;
            assert_eq!(append.base_offset, self.written_end_offset);
            let active = self.active_mut();
            assert_eq!(active.next_offset, append.base_offset);
            for_each_batch(&append.data, |header, offset_in_data| {
                active.index.on_batch(
                    header,
                    append.position_bytes + offset_in_data as u64,
                    config.index_interval_bytes,
                );
            });
            active.prefix_max_timestamp_ms = active
                .prefix_max_timestamp_ms
                .max(active.index.max_timestamp_ms);
            active.next_offset = append.next_offset;
            self.written_end_offset = append.next_offset;
            finished_records += append.record_count;
            TailCache::push(
                cache,
                CacheEntry::new(append.base_offset, append.next_offset, append.data),
            );
        }
        self.stats.writes += 1;
        self.stats.written_bytes += chunk_size_bytes as u64;
        let active = self.active_mut();
        active.size_bytes += chunk_size_bytes as u64;
        active.dirty = true;
        let size_bytes = active.size_bytes;
        assert_eq!(
            write.new_tail_block.len() as u64,
            size_bytes % BLOCK_SIZE_BYTES
        );
        assert!(size_bytes <= self.planned_size_bytes);
        self.tail_block = write.new_tail_block;
        self.size_bytes += chunk_size_bytes as u64;
        finished_records
    }
}

impl Failure {
    pub(super) fn error(&self) -> LogError {
        LogError::Io(io::Error::new(self.kind, self.message.clone()))
    }
}

/// Stamps base offsets (consecutive from `base_offset`) and the leader epoch into each batch;
/// returns the offset after the last batch.
fn stamp_batches(data: &mut [u8], base_offset: i64, leader_epoch: i32) -> Result<i64, LogError> {
    let mut position = 0usize;
    let mut next_offset = base_offset;
    while position < data.len() {
        let header = RecordBatchHeader::parse(&data[position..])
            .map_err(|error| invalid_input(&format!("append of an invalid batch: {error}")))?;
        let size_bytes = header.total_size_bytes();
        if size_bytes > data.len() - position || header.last_offset_delta < 0 {
            return Err(invalid_input("append of an invalid batch"));
        }
        let batch = &mut data[position..position + size_bytes];
        set_base_offset(batch, next_offset);
        set_partition_leader_epoch(batch, leader_epoch);
        next_offset = next_offset
            .checked_add(header.offset_count())
            .ok_or_else(|| invalid_input("offset overflow"))?;
        position += size_bytes;
    }
    Ok(next_offset)
}

/// Calls `visit` with each batch header in `data` (trusted: stamped by `enqueue`) and its
/// position in `data`.
pub(super) fn for_each_batch(data: &[u8], mut visit: impl FnMut(&RecordBatchHeader, usize)) {
    let mut position = 0usize;
    while position < data.len() {
        let header =
            RecordBatchHeader::parse(&data[position..]).expect("stored batches were validated");
        visit(&header, position);
        position += header.total_size_bytes();
    }
    assert_eq!(position, data.len());
}

/// True if the read continuing at `cursor` is served by the tail cache (counted as a batch
/// cache hit or miss).
fn cache_holds(cache: &TailCache, cursor: i64) -> bool {
    let cached = cache.start_offset().is_some_and(|start| start <= cursor);
    crate::metrics::record_batch_cache_read(cached);
    cached
}

/// Serves a read from the tail cache: zero-copy slices of the cached appends.
fn read_from_cache(
    cache: &TailCache,
    from_offset: i64,
    max_bytes: usize,
    max_offset_exclusive: i64,
    outcome: &mut ReadOutcome,
) -> Result<(), LogError> {
    for entry in cache.entries_from(from_offset) {
        let data = &entry.data;
        let mut position = 0usize;
        let mut run_start = 0usize;
        let mut run_size_bytes = 0usize;
        let mut stop = false;
        while position < data.len() {
            let header = RecordBatchHeader::parse(&data[position..])
                .map_err(|error| LogError::Corrupt(format!("cached batch: {error}")))?;
            let size_bytes = header.total_size_bytes();
            if header.last_offset() < from_offset {
                position += size_bytes;
                continue;
            }
            if header.last_offset() >= max_offset_exclusive
                || batch_exceeds_budget(outcome.size_bytes + run_size_bytes, size_bytes, max_bytes)
            {
                stop = true;
                break;
            }
            if run_size_bytes == 0 {
                run_start = position;
            }
            run_size_bytes += size_bytes;
            position += size_bytes;
        }
        if run_size_bytes > 0 {
            outcome
                .chunks
                .push(data.slice(run_start..run_start + run_size_bytes));
            outcome.size_bytes += run_size_bytes;
        }
        if stop {
            break;
        }
    }
    Ok(())
}

/// KIP-74: the first batch is always taken; later ones only while they fit.
pub(super) fn batch_exceeds_budget(
    taken_bytes: usize,
    batch_size_bytes: usize,
    max_bytes: usize,
) -> bool {
    taken_bytes > 0 && taken_bytes.saturating_add(batch_size_bytes) > max_bytes
}

/// Reads qualifying batches of one segment from disk into one chunk. Returns true if the read
/// is complete (budget or offset limit reached), false if the segment ran out first.
async fn read_from_segment(
    source: DiskSource,
    from_offset: i64,
    max_bytes: usize,
    max_offset_exclusive: i64,
    window_bytes: u64,
    outcome: &mut ReadOutcome,
) -> Result<bool, LogError> {
    let mut reader = WindowReader::new(source.file, source.size_bytes, window_bytes);
    let mut position = source.start_position_bytes;
    let mut chunk = BytesMut::new();
    let mut stopped = false;
    while position < source.size_bytes {
        if source.size_bytes - position < RECORD_BATCH_HEADER_SIZE_BYTES as u64 {
            return Err(LogError::Corrupt(format!(
                "partial batch header at position {position}"
            )));
        }
        let header_bytes = reader
            .bytes(position, RECORD_BATCH_HEADER_SIZE_BYTES)
            .await?;
        let header = RecordBatchHeader::parse(header_bytes)
            .map_err(|error| LogError::Corrupt(format!("batch at position {position}: {error}")))?;
        let size_bytes = header.total_size_bytes();
        if position + size_bytes as u64 > source.size_bytes {
            return Err(LogError::Corrupt(format!(
                "batch at position {position} overruns the segment"
            )));
        }
        if header.last_offset() < from_offset {
            position += size_bytes as u64;
            continue;
        }
        if header.last_offset() >= max_offset_exclusive
            || batch_exceeds_budget(outcome.size_bytes + chunk.len(), size_bytes, max_bytes)
        {
            stopped = true;
            break;
        }
        if chunk.capacity() == 0 {
            // Sized for the likely result, bounded so a huge max_bytes does not allocate
            // ahead of data that may not qualify.
            let budget_bytes = max_bytes.saturating_sub(outcome.size_bytes).max(size_bytes);
            let segment_left_bytes = (source.size_bytes - position) as usize;
            chunk.reserve(
                budget_bytes
                    .min(segment_left_bytes)
                    .min(window_bytes.max(size_bytes as u64) as usize),
            );
        }
        chunk.extend_from_slice(reader.bytes(position, size_bytes).await?);
        position += size_bytes as u64;
    }
    if !chunk.is_empty() {
        outcome.size_bytes += chunk.len();
        outcome.chunks.push(chunk.freeze());
    }
    Ok(stopped)
}

/// What a zero-copy read needs of one segment.
struct ColdPlan {
    base_offset: i64,
    source: DiskSource,
    read_file: Option<Arc<File>>,
    /// Batch boundaries (position, base offset of the batch there) from the sparse index near
    /// the read.
    boundaries: Vec<(u64, i64)>,
    /// The visible end lies inside the segment: regions could expose data past it.
    visible_end_inside: bool,
}

/// Read window for header walks of zero-copy reads.
const HEADER_WINDOW_BYTES: u64 = 64 * 1024;

/// The byte range of whole batches to send from one segment: from the batch containing
/// `cursor`, within the budget (at least one batch if nothing was taken yet, KIP-74), and the
/// offset a read continues from after it. `None` if no batch qualifies (none at or after the
/// cursor, or the first does not fit).
async fn cold_region(
    plan: &ColdPlan,
    cursor: i64,
    taken_bytes: usize,
    max_bytes: usize,
) -> Result<Option<(u64, u64, i64)>, LogError> {
    let size = plan.source.size_bytes;
    let mut reader = WindowReader::new(plan.source.file.clone(), size, HEADER_WINDOW_BYTES);
    let mut position = plan.source.start_position_bytes;
    let first_size = loop {
        if position + RECORD_BATCH_HEADER_SIZE_BYTES as u64 > size {
            return Ok(None);
        }
        let header = read_header_at(&mut reader, position, size).await?;
        if header.last_offset() >= cursor {
            break header.total_size_bytes();
        }
        position += header.total_size_bytes() as u64;
    };
    if batch_exceeds_budget(taken_bytes, first_size, max_bytes) {
        return Ok(None);
    }
    let budget = (max_bytes.saturating_sub(taken_bytes)).max(first_size) as u64;
    let limit = position.saturating_add(budget);
    if size <= limit {
        return Ok(Some((position, size, plan.source.next_offset)));
    }
    if let Some(&(boundary, offset)) = plan
        .boundaries
        .iter()
        .rev()
        .find(|&&(b, _)| b > position && b <= limit)
    {
        return Ok(Some((position, boundary, offset)));
    }
    // No index entry in range (a budget below the index interval): walk the headers.
    let mut end = position + first_size as u64;
    let mut next_offset = plan.source.next_offset;
    while end + RECORD_BATCH_HEADER_SIZE_BYTES as u64 <= size {
        let header = read_header_at(&mut reader, end, size).await?;
        next_offset = header.base_offset;
        let next = end + header.total_size_bytes() as u64;
        if next > limit {
            break;
        }
        end = next;
        next_offset = plan.source.next_offset;
    }
    Ok(Some((position, end, next_offset)))
}

/// The offset after the last batch of `batches` (whole batches back to back).
fn offset_after_batches(batches: &[u8]) -> Result<i64, LogError> {
    let mut position = 0usize;
    let mut next_offset = None;
    while position < batches.len() {
        let header = RecordBatchHeader::parse(&batches[position..])
            .map_err(|error| LogError::Corrupt(format!("batch: {error}")))?;
        next_offset = Some(header.last_offset() + 1);
        position += header.total_size_bytes();
    }
    next_offset.ok_or_else(|| LogError::Corrupt("empty chunk".into()))
}

pub(super) async fn read_header_at(
    reader: &mut WindowReader,
    position: u64,
    size_bytes: u64,
) -> Result<RecordBatchHeader, LogError> {
    let bytes = reader
        .bytes(position, RECORD_BATCH_HEADER_SIZE_BYTES)
        .await?;
    let header = RecordBatchHeader::parse(bytes)
        .map_err(|error| LogError::Corrupt(format!("batch at position {position}: {error}")))?;
    if position + header.total_size_bytes() as u64 > size_bytes {
        return Err(LogError::Corrupt(format!(
            "batch at position {position} overruns the segment"
        )));
    }
    Ok(header)
}

pub(super) async fn close_files(files: Vec<Rc<DmaFile>>) {
    for file in files {
        // Readers may still hold a clone; the last drop closes it then.
        if let Ok(file) = Rc::try_unwrap(file) {
            if let Err(error) = file.close().await {
                tracing::warn!(%error, "closing segment file failed");
            }
        }
    }
}

pub(super) fn invalid_input(message: &str) -> LogError {
    LogError::Io(io::Error::new(
        io::ErrorKind::InvalidInput,
        message.to_string(),
    ))
}

#[allow(dead_code)]
const _: i64 = NO_TIMESTAMP;

/// Writes zeros over `[start_bytes, end_bytes)` of `file` (block-aligned, inside its size)
/// one write of at most `chunk_bytes` at a time, then fdatasyncs it. One at a time: several
/// megabytes of zeros queued on the device ahead of an append's write and fdatasync would
/// delay that acknowledgement by as much.
async fn zero_fill(
    file: &Rc<DmaFile>,
    start_bytes: u64,
    end_bytes: u64,
    chunk_bytes: usize,
) -> Result<(), LogError> {
    debug_assert!(start_bytes.is_multiple_of(BLOCK_SIZE_BYTES));
    debug_assert!(end_bytes.is_multiple_of(BLOCK_SIZE_BYTES));
    let chunk_bytes = (chunk_bytes as u64).min(end_bytes - start_bytes);
    let mut zeros = file.alloc_dma_buffer(chunk_bytes as usize);
    zeros.as_bytes_mut().fill(0);
    let zeros = Rc::new(zeros);
    let mut position_bytes = start_bytes;
    while position_bytes < end_bytes {
        let size_bytes = chunk_bytes.min(end_bytes - position_bytes);
        let written = if size_bytes == chunk_bytes {
            file.write_rc_at(zeros.clone(), position_bytes).await
        } else {
            let mut tail = file.alloc_dma_buffer(size_bytes as usize);
            tail.as_bytes_mut().fill(0);
            file.write_at(tail, position_bytes).await
        };
        let written = written.map_err(io_error)? as u64;
        if written != size_bytes {
            return Err(LogError::Io(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short zero-fill: {written} of {size_bytes} bytes"),
            )));
        }
        position_bytes += size_bytes;
    }
    file.fdatasync().await.map_err(io_error)?;
    Ok(())
}
