//! `PartitionLog`: offset assignment, group-committed O_DIRECT appends, reads from the tail cache
//! or disk, flush with recovery checkpoint, close and removal.
//!
//! Concurrency model: everything runs on the owning shard's executor. State lives in one
//! `RefCell`, borrowed only between awaits. A single writer task per partition (spawned when an
//! append finds none running) drains the queue of pending appends, one write in flight at a
//! time: every write rewrites the partial tail block first, so two writes in flight could land
//! out of order and clobber each other's tail.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};

use bytes::{Bytes, BytesMut};
use glommio::io::{DmaBuffer, DmaFile};
use glommio::sync::Semaphore;

use super::cache::{CacheEntry, TailCache};
use super::checkpoint::{write_checkpoint, RecoveryCheckpoint};
use super::file_io::{
    align_down, align_up, blocking, io_error, open_segment_file, preallocate, sync_directory,
    write_file_atomic, WindowReader,
};
use super::recovery::{recover, RecoveredLog};
use super::segment::{index_file_name, segment_file_name, IndexFile, Segment, SparseIndex};
use super::waiters::{WaitForOffset, Waiters};
use super::{AppendOutcome, LogConfig, LogError, ReadOutcome, BLOCK_SIZE_BYTES};
use crate::protocol::record_batch::{
    set_base_offset, set_partition_leader_epoch, RecordBatchHeader, RECORD_BATCH_HEADER_SIZE_BYTES,
};

/// Smallest disk read window; larger fetches read up to `max_write_size_bytes` at a time.
const READ_WINDOW_MIN_BYTES: u64 = 64 * 1024;

pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    /// Lets `&self` methods hand an owning `Rc` to the writer task and to returned futures.
    self_ref: Weak<PartitionLog>,
    state: RefCell<LogState>,
    pub(crate) waiters: RefCell<Waiters>,
    /// Serialises flushes, so checkpoints are written in order.
    flush_lock: Semaphore,
}

struct LogState {
    /// Ordered by base offset, contiguous in offsets; the last one is active.
    segments: Vec<Segment>,
    log_start_offset: i64,
    /// Offset the next append gets.
    next_offset: i64,
    /// Every offset below it is written (and in `segments`).
    written_end_offset: i64,
    /// Appends with offsets assigned, not yet fully written, in offset order.
    pending: VecDeque<PendingAppend>,
    pending_bytes: u64,
    writer_running: bool,
    /// Bytes of the active segment from its last block boundary to its end; the next write
    /// starts with them.
    tail_block: Vec<u8>,
    cache: TailCache,
    /// Sum of segment sizes.
    size_bytes: u64,
    /// Set by the first failed write or fdatasync; the log then refuses appends and reads.
    failure: Option<(io::ErrorKind, String)>,
    /// No new appends (close or remove in progress).
    closing: bool,
    /// Files released; every call but accessors returns `Closed`.
    closed: bool,
    /// Last checkpoint written (or found at open).
    recovery_point: Option<RecoveryCheckpoint>,
    /// A segment file was created or removed since the last directory fsync.
    directory_dirty: bool,
    /// Cleared if the filesystem does not support fallocate.
    preallocate_supported: bool,
    /// O_DIRECT writes completed (appends per write shows how well group commit works).
    write_count: u64,
}

struct PendingAppend {
    /// Stamped batches, handed to the cache once written.
    data: Bytes,
    base_offset: i64,
    next_offset: i64,
    /// Bytes of `data` already written (an append larger than one write spans several).
    written_bytes: usize,
    /// Position of `data` in the active segment, set when its first byte is written.
    position_bytes: u64,
}

enum WriteStep {
    Idle,
    Roll { base_offset: i64 },
    Preallocate { file: Rc<DmaFile>, size_bytes: u64 },
    Write(WritePlan),
}

struct WritePlan {
    file: Rc<DmaFile>,
    buffer: DmaBuffer,
    position_bytes: u64,
    /// New batch bytes in this write (the buffer also holds the old tail and zero padding).
    chunk_size_bytes: usize,
    /// The tail block after this write completes.
    new_tail_block: Vec<u8>,
}

/// Where a read continues on disk.
struct DiskSource {
    file: Rc<DmaFile>,
    size_bytes: u64,
    next_offset: i64,
    start_position_bytes: u64,
}

impl PartitionLog {
    /// Opens or creates `dir` (`<data_dir>/<topic>-<partition>`), recovers it, and returns the
    /// ready log. Must run on a glommio executor (the shard owning the partition).
    pub async fn open(dir: PathBuf, config: LogConfig) -> Result<Rc<PartitionLog>, LogError> {
        config.validate()?;
        let recovered = recover(&dir, &config).await?;
        let RecoveredLog {
            segments,
            tail_block,
            checkpoint,
            needs_flush,
            directory_dirty,
        } = recovered;
        assert!(!segments.is_empty());
        let log_start_offset = segments[0].base_offset;
        let end_offset = segments.last().map(|s| s.next_offset).unwrap_or(0);
        let size_bytes = segments.iter().map(|s| s.size_bytes).sum();
        let cache = TailCache::new(config.cache_size_bytes);
        let log = Rc::new_cyclic(|self_ref| PartitionLog {
            dir,
            config,
            self_ref: self_ref.clone(),
            state: RefCell::new(LogState {
                segments,
                log_start_offset,
                next_offset: end_offset,
                written_end_offset: end_offset,
                pending: VecDeque::new(),
                pending_bytes: 0,
                writer_running: false,
                tail_block,
                cache,
                size_bytes,
                failure: None,
                closing: false,
                closed: false,
                recovery_point: checkpoint,
                directory_dirty,
                preallocate_supported: true,
                write_count: 0,
            }),
            waiters: RefCell::new(Waiters::default()),
            flush_lock: Semaphore::new(1),
        });
        if needs_flush {
            log.flush().await?;
        }
        Ok(log)
    }

    fn rc(&self) -> Rc<PartitionLog> {
        self.self_ref
            .upgrade()
            .expect("a PartitionLog is only reachable through its Rc")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
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

    /// Bytes held by the tail cache.
    pub fn cached_bytes(&self) -> u64 {
        self.state.borrow().cache.size_bytes()
    }

    /// O_DIRECT writes completed since open.
    pub fn write_count(&self) -> u64 {
        self.state.borrow().write_count
    }

    /// Tasks waiting in `append` or `wait_for_offset`.
    pub fn waiter_count(&self) -> usize {
        self.waiters.borrow().len()
    }

    pub fn segment_count(&self) -> usize {
        self.state.borrow().segments.len()
    }

    /// True after a failed write or fdatasync: the log refuses appends and reads until
    /// reopened (which recovers it from disk).
    pub fn is_failed(&self) -> bool {
        self.state.borrow().failure.is_some()
    }

    /// Appends `batches`: one or more v2 batches back to back that already passed
    /// `validate_batches`, `record_count` from its summary.
    ///
    /// Offsets are assigned when this is called (not when the future is first polled), in call
    /// order; the stored copy of each batch gets its base offset and `leader_epoch` stamped.
    /// The future resolves when the O_DIRECT write holding the last byte has completed
    /// (durable against a process crash; fdatasync is `flush`). Dropping the future does not
    /// cancel the append. Appends arriving while a write is in flight share the next write.
    pub fn append(
        &self,
        batches: Bytes,
        record_count: u32,
        leader_epoch: i32,
    ) -> impl Future<Output = Result<AppendOutcome, LogError>> + 'static {
        let enqueued = self.enqueue(batches, record_count, leader_epoch);
        let log = self.rc();
        async move {
            let outcome = enqueued?;
            WaitForOffset::new(log.clone(), outcome.last_offset).await;
            let state = log.state.borrow();
            if state.written_end_offset > outcome.last_offset {
                Ok(outcome)
            } else if let Some(failure) = &state.failure {
                Err(failure_error(failure))
            } else {
                Err(LogError::Closed)
            }
        }
    }

    /// Resolves once `written_end_offset() > offset`, or once the log is closed or failed.
    /// Woken by write completion; cancel-safe (drop it on timeout).
    pub fn wait_for_offset(&self, offset: i64) -> WaitForOffset {
        WaitForOffset::new(self.rc(), offset)
    }

    pub(crate) fn is_offset_written_or_stopped(&self, offset: i64) -> bool {
        let state = self.state.borrow();
        state.written_end_offset > offset || state.closed || state.failure.is_some()
    }

    /// The synchronous half of `append`: stamp, assign offsets, queue, start the writer.
    fn enqueue(
        &self,
        batches: Bytes,
        record_count: u32,
        leader_epoch: i32,
    ) -> Result<AppendOutcome, LogError> {
        self.state.borrow().check_appendable()?;
        if batches.len() < RECORD_BATCH_HEADER_SIZE_BYTES || record_count == 0 {
            return Err(invalid_input("append of no batches"));
        }
        // Our own exact-size copy, to stamp and to cache. Taking over a uniquely owned buffer
        // would save the copy but could pin a whole request frame in the cache, past its bound.
        let mut data = BytesMut::from(&batches[..]);
        drop(batches);
        let size_bytes = data.len();
        let mut state = self.state.borrow_mut();
        let base_offset = state.next_offset;
        let next_offset = stamp_batches(&mut data, base_offset, leader_epoch)?;
        if next_offset - base_offset != i64::from(record_count) {
            return Err(invalid_input("record_count does not match the batches"));
        }
        state.next_offset = next_offset;
        state.pending_bytes += size_bytes as u64;
        state.pending.push_back(PendingAppend {
            data: data.freeze(),
            base_offset,
            next_offset,
            written_bytes: 0,
            position_bytes: 0,
        });
        let start_writer = !state.writer_running;
        state.writer_running = true;
        drop(state);
        if start_writer {
            glommio::spawn_local(self.rc().run_writer()).detach();
        }
        Ok(AppendOutcome {
            base_offset,
            last_offset: next_offset - 1,
        })
    }

    /// The partition's writer task: runs while appends are pending, one step at a time.
    async fn run_writer(self: Rc<Self>) {
        loop {
            let step = self.state.borrow_mut().next_write_step(&self.config);
            let result = match step {
                WriteStep::Idle => return,
                WriteStep::Roll { base_offset } => self.roll(base_offset).await,
                WriteStep::Preallocate { file, size_bytes } => {
                    self.preallocate_active(file, size_bytes).await
                }
                WriteStep::Write(plan) => self.write(plan).await,
            };
            if let Err(error) = result {
                self.fail(error);
                let mut state = self.state.borrow_mut();
                state.discard_pending();
                state.writer_running = false;
                return;
            }
        }
    }

    async fn write(&self, plan: WritePlan) -> Result<(), LogError> {
        let WritePlan {
            file,
            buffer,
            position_bytes,
            chunk_size_bytes,
            new_tail_block,
        } = plan;
        let buffer_size_bytes = buffer.len();
        let written_bytes = file
            .write_at(buffer, position_bytes)
            .await
            .map_err(io_error)?;
        if written_bytes != buffer_size_bytes {
            return Err(LogError::Io(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {written_bytes} of {buffer_size_bytes} bytes"),
            )));
        }
        let written_end_offset = {
            let mut state = self.state.borrow_mut();
            if state.closed {
                // Released while the write was in flight (remove, or close after a failure):
                // the segments are gone, nothing to account.
                return Ok(());
            }
            state.commit_write(chunk_size_bytes, new_tail_block, &self.config);
            state.written_end_offset
        };
        let wakers = self.waiters.borrow_mut().take_satisfied(written_end_offset);
        wakers.into_iter().for_each(|waker| waker.wake());
        Ok(())
    }

    async fn preallocate_active(&self, file: Rc<DmaFile>, size_bytes: u64) -> Result<(), LogError> {
        let supported = preallocate(&file, size_bytes).await?;
        let mut state = self.state.borrow_mut();
        if state.closed {
            return Ok(());
        }
        if !supported {
            tracing::warn!(dir = %self.dir.display(), "filesystem cannot preallocate segments");
            state.preallocate_supported = false;
            return Ok(());
        }
        let active = state.active_mut();
        if Rc::ptr_eq(&active.file, &file) {
            active.allocated_size_bytes = active.allocated_size_bytes.max(size_bytes);
        }
        Ok(())
    }

    /// Seals the active segment and starts a new one at `base_offset`.
    async fn roll(&self, base_offset: i64) -> Result<(), LogError> {
        let path = self.dir.join(segment_file_name(base_offset));
        let file = Rc::new(open_segment_file(&path, true).await?);
        // A leftover file of that name can only hold garbage: start empty.
        file.truncate(0).await.map_err(io_error)?;

        let (sealed_file, sealed_size_bytes, index_file) = {
            let state = self.state.borrow();
            if state.closed {
                return Ok(());
            }
            let sealed = state.active();
            assert_eq!(sealed.next_offset, base_offset);
            let index_file = IndexFile {
                base_offset: sealed.base_offset,
                next_offset: sealed.next_offset,
                size_bytes: sealed.size_bytes,
                entries: sealed.index.entries.clone(),
            };
            (sealed.file.clone(), sealed.size_bytes, index_file)
        };
        // Give back the unused preallocated tail; recovery of sealed segments then knows
        // their exact size.
        sealed_file
            .truncate(sealed_size_bytes)
            .await
            .map_err(io_error)?;
        // Best effort and not synced: recovery uses it only behind a checkpoint and checks its
        // CRC and sizes, and rebuilds the index by scanning otherwise.
        let index_name = index_file_name(index_file.base_offset);
        if let Err(error) =
            write_file_atomic(&self.dir, &index_name, index_file.encode(), false).await
        {
            tracing::warn!(dir = %self.dir.display(), %error, "could not write segment index");
        }

        let mut state = self.state.borrow_mut();
        if state.closed {
            return Ok(());
        }
        state.segments.push(Segment {
            base_offset,
            file,
            size_bytes: 0,
            next_offset: base_offset,
            allocated_size_bytes: 0,
            index: SparseIndex::default(),
            dirty: false,
        });
        state.tail_block.clear();
        state.directory_dirty = true;
        tracing::debug!(dir = %self.dir.display(), base_offset, "rolled segment");
        Ok(())
    }

    /// Marks the log failed and wakes every waiter (they see the failure).
    fn fail(&self, error: LogError) {
        let (kind, message) = match &error {
            LogError::Io(io_error) => (io_error.kind(), io_error.to_string()),
            other => (io::ErrorKind::Other, other.to_string()),
        };
        tracing::error!(dir = %self.dir.display(), %error, "partition log failed");
        {
            let mut state = self.state.borrow_mut();
            if state.failure.is_none() {
                state.failure = Some((kind, message));
            }
        }
        self.wake_all();
    }

    fn wake_all(&self) {
        let wakers = self.waiters.borrow_mut().take_all();
        wakers.into_iter().for_each(|waker| waker.wake());
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
        {
            let state = self.state.borrow();
            state.check_readable()?;
            if from_offset < state.log_start_offset || from_offset > state.written_end_offset {
                return Err(LogError::OffsetOutOfRange {
                    requested: from_offset,
                    log_start: state.log_start_offset,
                    log_end: state.written_end_offset,
                });
            }
        }
        let mut outcome = ReadOutcome::default();
        let mut cursor = from_offset;
        loop {
            let source = {
                let state = self.state.borrow();
                state.check_readable()?;
                if cursor >= state.written_end_offset || cursor >= max_offset_exclusive {
                    break;
                }
                if state
                    .cache
                    .start_offset()
                    .is_some_and(|start| start <= cursor)
                {
                    read_from_cache(
                        &state.cache,
                        cursor,
                        max_bytes,
                        max_offset_exclusive,
                        &mut outcome,
                    )?;
                    break;
                }
                let after = state
                    .segments
                    .partition_point(|segment| segment.base_offset <= cursor);
                if after == 0 {
                    // The log start moved past us while we read.
                    return Err(LogError::OffsetOutOfRange {
                        requested: cursor,
                        log_start: state.log_start_offset,
                        log_end: state.written_end_offset,
                    });
                }
                let segment = &state.segments[after - 1];
                assert!(cursor < segment.next_offset);
                DiskSource {
                    file: segment.file.clone(),
                    size_bytes: segment.size_bytes,
                    next_offset: segment.next_offset,
                    start_position_bytes: segment.index.lookup(cursor),
                }
            };
            let next_offset = source.next_offset;
            let budget_bytes = max_bytes.saturating_sub(outcome.size_bytes) as u64;
            let window_bytes = budget_bytes
                .saturating_add(self.config.index_interval_bytes)
                .max(READ_WINDOW_MIN_BYTES)
                .min(self.config.max_write_size_bytes as u64);
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

    /// fdatasyncs every segment written since the last flush, then records the recovery
    /// checkpoint. Flushes are serialised.
    pub async fn flush(&self) -> Result<(), LogError> {
        let _permit = self
            .flush_lock
            .acquire_permit(1)
            .await
            .map_err(|_| LogError::Closed)?;
        let (checkpoint, files, sync_dir) = {
            let mut state = self.state.borrow_mut();
            if state.closed {
                return Err(LogError::Closed);
            }
            if let Some(failure) = &state.failure {
                return Err(failure_error(failure));
            }
            let active = state.active();
            assert_eq!(active.next_offset, state.written_end_offset);
            let checkpoint = RecoveryCheckpoint {
                offset: state.written_end_offset,
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
            if files.is_empty() && !sync_dir && state.recovery_point == Some(checkpoint) {
                return Ok(());
            }
            (checkpoint, files, sync_dir)
        };
        let results = futures::future::join_all(files.iter().map(|file| file.fdatasync())).await;
        for result in results {
            if let Err(error) = result {
                // After a failed fdatasync the page state is unknown: stop trusting the log.
                let error = LogError::Io(io_error(error));
                let reported = LogError::Io(io::Error::other(error.to_string()));
                self.fail(error);
                return Err(reported);
            }
        }
        if sync_dir {
            if let Err(error) = sync_directory(&self.dir).await {
                self.state.borrow_mut().directory_dirty = true;
                return Err(error);
            }
        }
        write_checkpoint(&self.dir, checkpoint).await?;
        self.state.borrow_mut().recovery_point = Some(checkpoint);
        Ok(())
    }

    /// Stops appends, waits for pending writes, flushes, writes the checkpoint and releases the
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
        let mut result = match failure {
            Some(failure) => Err(failure_error(&failure)),
            None => self.flush().await,
        };
        if result.is_ok() {
            result = self.write_active_index().await;
        }
        let files = self.release();
        close_files(files).await;
        tracing::info!(dir = %self.dir.display(), "closed partition log");
        result
    }

    /// Persists the active segment's index up to the checkpoint just written, so the next open
    /// scans nothing that was cleanly closed. Not synced: recovery checks it against the
    /// checkpoint and falls back to scanning.
    async fn write_active_index(&self) -> Result<(), LogError> {
        let index_file = {
            let state = self.state.borrow();
            let active = state.active();
            IndexFile {
                base_offset: active.base_offset,
                next_offset: active.next_offset,
                size_bytes: active.size_bytes,
                entries: active.index.entries.clone(),
            }
        };
        let name = index_file_name(index_file.base_offset);
        write_file_atomic(&self.dir, &name, index_file.encode(), false).await
    }

    /// Deletes the log's files and directory (topic deletion). Pending appends are written
    /// first so no write lands in a deleted file; nothing is flushed.
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

    /// Waits until every assigned offset is written (or the log failed).
    async fn drain(&self) {
        let last_assigned = self.state.borrow().next_offset - 1;
        WaitForOffset::new(self.rc(), last_assigned).await;
    }

    /// Marks the log closed, drops the cache, and hands back the segment files to close.
    fn release(&self) -> Vec<Rc<DmaFile>> {
        let files = {
            let mut state = self.state.borrow_mut();
            state.closing = true;
            state.closed = true;
            state.cache.clear();
            state.discard_pending();
            state
                .segments
                .drain(..)
                .map(|segment| segment.file)
                .collect()
        };
        self.flush_lock.close();
        self.wake_all();
        files
    }
}

impl LogState {
    fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("a log always has an active segment")
    }

    fn check_appendable(&self) -> Result<(), LogError> {
        if self.closing || self.closed {
            return Err(LogError::Closed);
        }
        if let Some(failure) = &self.failure {
            return Err(failure_error(failure));
        }
        Ok(())
    }

    fn check_readable(&self) -> Result<(), LogError> {
        if self.closed {
            return Err(LogError::Closed);
        }
        if let Some(failure) = &self.failure {
            return Err(failure_error(failure));
        }
        Ok(())
    }

    fn discard_pending(&mut self) {
        self.pending.clear();
        self.pending_bytes = 0;
    }

    /// Decides the writer's next step and, for a write, fills the DMA buffer: the old tail
    /// block, then as many pending bytes as fit in one write and in the active segment, then
    /// zeros up to the block boundary.
    fn next_write_step(&mut self, config: &LogConfig) -> WriteStep {
        if self.failure.is_some() || self.closed {
            self.discard_pending();
        }
        if self.pending.is_empty() {
            self.writer_running = false;
            return WriteStep::Idle;
        }
        let active = self.active();
        let segment_size_bytes = active.size_bytes;
        let front = self.pending.front().expect("pending is not empty");
        if front.written_bytes == 0
            && segment_size_bytes > 0
            && segment_size_bytes + front.data.len() as u64 > config.segment_size_bytes
        {
            return WriteStep::Roll {
                base_offset: front.base_offset,
            };
        }

        let position_bytes = align_down(segment_size_bytes);
        let tail_size_bytes = (segment_size_bytes - position_bytes) as usize;
        assert_eq!(tail_size_bytes, self.tail_block.len());
        assert!(tail_size_bytes < BLOCK_SIZE_BYTES as usize);
        let capacity_bytes = config.max_write_size_bytes - tail_size_bytes;
        let mut chunk_size_bytes = 0usize;
        for (index, append) in self.pending.iter().enumerate() {
            if index > 0 {
                assert_eq!(append.written_bytes, 0);
                let end = segment_size_bytes + (chunk_size_bytes + append.data.len()) as u64;
                if end > config.segment_size_bytes {
                    break; // It goes into the next segment.
                }
            }
            let remaining_bytes = append.data.len() - append.written_bytes;
            let take_bytes = remaining_bytes.min(capacity_bytes - chunk_size_bytes);
            chunk_size_bytes += take_bytes;
            if take_bytes < remaining_bytes || chunk_size_bytes == capacity_bytes {
                break;
            }
        }
        assert!(chunk_size_bytes > 0);

        let end_bytes = segment_size_bytes + chunk_size_bytes as u64;
        let aligned_end_bytes = align_up(end_bytes);
        if self.preallocate_supported && aligned_end_bytes > active.allocated_size_bytes {
            let step = config.preallocate_step_bytes;
            let stepped = end_bytes.div_ceil(step) * step;
            let segment_cap = align_up(config.segment_size_bytes.max(end_bytes));
            return WriteStep::Preallocate {
                file: active.file.clone(),
                size_bytes: aligned_end_bytes.max(stepped.min(segment_cap)),
            };
        }

        let buffer_size_bytes = (aligned_end_bytes - position_bytes) as usize;
        assert!(buffer_size_bytes <= config.max_write_size_bytes);
        let mut buffer = active.file.alloc_dma_buffer(buffer_size_bytes);
        let bytes = buffer.as_bytes_mut();
        bytes[..tail_size_bytes].copy_from_slice(&self.tail_block);
        let mut cursor = tail_size_bytes;
        let mut left_bytes = chunk_size_bytes;
        for append in &self.pending {
            let start = append.written_bytes;
            let take_bytes = (append.data.len() - start).min(left_bytes);
            bytes[cursor..cursor + take_bytes]
                .copy_from_slice(&append.data[start..start + take_bytes]);
            cursor += take_bytes;
            left_bytes -= take_bytes;
            if left_bytes == 0 {
                break;
            }
        }
        assert_eq!(cursor, tail_size_bytes + chunk_size_bytes);
        bytes[cursor..].fill(0);
        let new_tail_start = (align_down(end_bytes) - position_bytes) as usize;
        let new_tail_block = bytes[new_tail_start..cursor].to_vec();
        WriteStep::Write(WritePlan {
            file: active.file.clone(),
            buffer,
            position_bytes,
            chunk_size_bytes,
            new_tail_block,
        })
    }

    /// Applies a completed write: advances the segment, hands finished appends to the index
    /// and the cache, and moves the written end.
    fn commit_write(
        &mut self,
        chunk_size_bytes: usize,
        new_tail_block: Vec<u8>,
        config: &LogConfig,
    ) {
        let mut position_bytes = self.active().size_bytes;
        let mut left_bytes = chunk_size_bytes;
        while left_bytes > 0 {
            let append = self
                .pending
                .front_mut()
                .expect("a committed write covers pending appends");
            if append.written_bytes == 0 {
                append.position_bytes = position_bytes;
            }
            let take_bytes = (append.data.len() - append.written_bytes).min(left_bytes);
            append.written_bytes += take_bytes;
            position_bytes += take_bytes as u64;
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
            active.next_offset = append.next_offset;
            self.written_end_offset = append.next_offset;
            self.cache.push(CacheEntry {
                base_offset: append.base_offset,
                next_offset: append.next_offset,
                data: append.data,
            });
        }
        self.write_count += 1;
        let active = self.active_mut();
        assert_eq!(position_bytes, active.size_bytes + chunk_size_bytes as u64);
        active.size_bytes = position_bytes;
        active.dirty = true;
        assert_eq!(
            new_tail_block.len() as u64,
            position_bytes % BLOCK_SIZE_BYTES
        );
        self.tail_block = new_tail_block;
        self.size_bytes += chunk_size_bytes as u64;
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
fn for_each_batch(data: &[u8], mut visit: impl FnMut(&RecordBatchHeader, usize)) {
    let mut position = 0usize;
    while position < data.len() {
        let header =
            RecordBatchHeader::parse(&data[position..]).expect("stored batches were validated");
        visit(&header, position);
        position += header.total_size_bytes();
    }
    assert_eq!(position, data.len());
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
fn batch_exceeds_budget(taken_bytes: usize, batch_size_bytes: usize, max_bytes: usize) -> bool {
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

async fn close_files(files: Vec<Rc<DmaFile>>) {
    for file in files {
        // Readers may still hold a clone; the last drop closes it then.
        if let Ok(file) = Rc::try_unwrap(file) {
            if let Err(error) = file.close().await {
                tracing::warn!(%error, "closing segment file failed");
            }
        }
    }
}

fn failure_error(failure: &(io::ErrorKind, String)) -> LogError {
    LogError::Io(io::Error::new(failure.0, failure.1.clone()))
}

fn invalid_input(message: &str) -> LogError {
    LogError::Io(io::Error::new(
        io::ErrorKind::InvalidInput,
        message.to_string(),
    ))
}
