//! What replication needs of a partition log: the high watermark (bounded by what the ISR
//! holds), appends of the leader's batches as they are, the leader-epoch cache, and the two
//! ways a follower's log is cut back to the leader's: truncation of a divergent tail and a
//! restart at the leader's log start.
//!
//! Truncation is crash-safe by ordering: everything below the cut is made durable, a recovery
//! checkpoint at the cut is written, then later segments go (newest first), then the cut
//! segment's tail. A crash at any step leaves a log that recovery reads as a prefix of the
//! old one, at least as long as the cut (the follower then truncates again). The in-memory
//! state is then rebuilt by the same recovery that runs at open.

use std::future::Future;
use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::checkpoint::{write_checkpoint, OffsetFile, RecoveryCheckpoint, CHECKPOINT_FILE_NAME};
use super::file_io::{io_error, remove_files, sync_directory, WindowReader};
use super::leader_epochs::LeaderEpochCache;
use super::partition::{close_files, invalid_input, read_header_at, PartitionLog};
use super::recovery::recover;
use super::segment::{index_file_name, segment_file_name};
use super::waiters::{WaitForOffset, WaitKind};
use super::{AppendOutcome, LogError};
use crate::protocol::record_batch::{
    batch_crc_matches, RecordBatchHeader, RECORD_BATCH_HEADER_SIZE_BYTES,
};

/// Read window of header walks (truncation, epoch rebuilds).
const HEADER_WALK_WINDOW_BYTES: u64 = 1024 * 1024;

impl PartitionLog {
    /// Offsets below it are committed: consumers may read them.
    pub fn high_watermark(&self) -> i64 {
        self.state.borrow().high_watermark
    }

    /// Bounds the high watermark by what replication reports: the lowest log end in the ISR
    /// on a leader, the leader's high watermark on a follower, `i64::MAX` for a lone replica.
    /// The high watermark never moves back here (only truncation lowers it).
    pub fn set_high_watermark_limit(&self, limit_offset: i64) {
        self.state.borrow_mut().high_watermark_limit = limit_offset;
        self.advance_high_watermark();
    }

    /// Moves the high watermark up to `min(written end, limit)` and wakes who waits for it.
    pub(super) fn advance_high_watermark(&self) {
        let high_watermark = {
            let mut state = self.state.borrow_mut();
            let reachable = state.written_end_offset.min(state.high_watermark_limit);
            if reachable <= state.high_watermark {
                return;
            }
            state.high_watermark = reachable;
            reachable
        };
        let wakers = self
            .committed_waiters
            .borrow_mut()
            .take_satisfied(high_watermark);
        wakers.into_iter().for_each(|waker| waker.wake());
    }

    /// Resolves once the high watermark passes `offset`, or the log fails, closes or is
    /// truncated. Cancel-safe.
    pub fn wait_for_high_watermark(&self, offset: i64) -> WaitForOffset {
        WaitForOffset::with_kind(self.rc(), offset, WaitKind::Committed)
    }

    /// Wakes every `wait_for_high_watermark` (leadership changed: waiters re-check it).
    pub fn wake_committed_waiters(&self) {
        let wakers = self.committed_waiters.borrow_mut().take_all();
        wakers.into_iter().for_each(|waker| waker.wake());
    }

    /// Writes the `high-watermark` file if the high watermark moved since the last write.
    pub(super) async fn persist_high_watermark(&self) {
        let high_watermark = {
            let state = self.state.borrow();
            if state.closed || state.high_watermark == state.persisted_high_watermark {
                return;
            }
            state.high_watermark
        };
        match OffsetFile::HighWatermark
            .write(&self.dir, high_watermark)
            .await
        {
            Ok(()) => self.state.borrow_mut().persisted_high_watermark = high_watermark,
            Err(error) => {
                tracing::warn!(dir = %self.dir.display(), %error, "could not write the high watermark")
            }
        }
    }

    /// The newest leader epoch that wrote to this log.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.borrow().latest_epoch()
    }

    /// OffsetForLeaderEpoch: the epoch (the requested one or the largest below it) and the
    /// offset where it ends in this log; `(-1, -1)` for an unknown future epoch.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        let end = self.written_end_offset();
        self.epochs.borrow().end_offset_for(epoch, end)
    }

    /// [`end_offset_for_epoch`](Self::end_offset_for_epoch) as the leader in `current_epoch`
    /// answers it (Kafka's cache holds the leader's epoch from the moment it leads).
    pub fn end_offset_for_epoch_as_leader(&self, epoch: i32, current_epoch: i32) -> (i32, i64) {
        let end = self.written_end_offset();
        self.epochs
            .borrow()
            .end_offset_for_leader(epoch, current_epoch, end)
    }

    /// Writes `leader-epoch-checkpoint` in the background (rewrites are serialised; each
    /// writes the cache as it is when its turn comes, so the last one wins).
    pub(super) fn persist_leader_epochs(&self) {
        let log = self.rc();
        glommio::spawn_local(async move { log.write_leader_epochs().await }).detach();
    }

    async fn write_leader_epochs(&self) {
        let Ok(_permit) = self.epoch_file_lock.acquire_permit(1).await else {
            return;
        };
        if self.state.borrow().closed {
            return;
        }
        let snapshot = self.epochs.borrow().clone();
        if let Err(error) = snapshot.write(&self.dir).await {
            tracing::warn!(dir = %self.dir.display(), %error, "could not write leader-epoch-checkpoint");
        }
    }

    /// Loads the leader-epoch cache at open and reconciles it with the batches: entries past
    /// the end go; epochs the file missed (a crash before its rewrite) are found by walking
    /// the batch headers after its last entry; a missing file is rebuilt from every batch.
    pub(super) async fn load_leader_epochs(&self) -> Result<(), LogError> {
        let loaded = LeaderEpochCache::read(&self.dir).await?;
        let (start, end) = (self.log_start_offset(), self.written_end_offset());
        let mut cache = loaded.clone().unwrap_or_default();
        cache.truncate_from_end(end);
        let walk_from = match &loaded {
            None => Some(start),
            Some(_) => {
                let last_epoch = self.last_batch_epoch().await?;
                let behind = last_epoch.is_some_and(|epoch| Some(epoch) > cache.latest_epoch());
                behind.then(|| cache.entries().last().map_or(start, |e| e.start_offset))
            }
        };
        if let Some(from_offset) = walk_from {
            if end > start {
                tracing::info!(dir = %self.dir.display(), from_offset,
                    "rebuilding the leader-epoch cache from batch headers");
            }
            self.walk_headers(from_offset, |header| {
                cache.assign(header.partition_leader_epoch, header.base_offset);
            })
            .await?;
        }
        cache.truncate_from_start(start);
        let changed = loaded.as_ref() != Some(&cache);
        *self.epochs.borrow_mut() = cache;
        if changed {
            self.write_leader_epochs().await;
        }
        Ok(())
    }

    /// The leader epoch of the last batch in the log (a walk of at most one index interval).
    async fn last_batch_epoch(&self) -> Result<Option<i32>, LogError> {
        let end = self.written_end_offset();
        if end <= self.log_start_offset() {
            return Ok(None);
        }
        let mut last = None;
        self.walk_headers(end - 1, |header| {
            last = Some(header.partition_leader_epoch);
        })
        .await?;
        Ok(last)
    }

    /// Calls `visit` with the header of every batch from the one containing `from_offset` to
    /// the written end, in order. Reads the data (windows), so it is for rare paths only.
    async fn walk_headers(
        &self,
        from_offset: i64,
        mut visit: impl FnMut(&RecordBatchHeader),
    ) -> Result<(), LogError> {
        let sources: Vec<_> = {
            let state = self.state.borrow();
            state.check_readable()?;
            state
                .segments
                .iter()
                .filter(|segment| segment.next_offset > from_offset && segment.size_bytes > 0)
                .map(|segment| {
                    let start = if segment.base_offset <= from_offset {
                        segment.index.lookup(from_offset)
                    } else {
                        0
                    };
                    (segment.file.clone(), segment.size_bytes, start)
                })
                .collect()
        };
        for (file, size_bytes, start_bytes) in sources {
            let mut reader = WindowReader::new(file, size_bytes, HEADER_WALK_WINDOW_BYTES);
            let mut position = start_bytes;
            while position + RECORD_BATCH_HEADER_SIZE_BYTES as u64 <= size_bytes {
                let header = read_header_at(&mut reader, position, size_bytes).await?;
                if header.last_offset() >= from_offset {
                    visit(&header);
                }
                position += header.total_size_bytes() as u64;
            }
        }
        Ok(())
    }

    /// Appends the leader's batches as they are (offsets, leader epochs, CRCs untouched):
    /// whole v2 batches back to back, the first starting at `next_offset()`, each following
    /// the one before. Resolves like `append`.
    pub fn append_replica(
        &self,
        batches: Bytes,
    ) -> impl Future<Output = Result<AppendOutcome, LogError>> + 'static {
        let enqueued = self.enqueue_replica(batches);
        self.appended(enqueued)
    }

    fn enqueue_replica(&self, batches: Bytes) -> Result<(AppendOutcome, u64), LogError> {
        self.state.borrow().check_appendable()?;
        let base_offset = self.state.borrow().next_offset;
        let mut next_offset = base_offset;
        let mut epoch_starts: Vec<(i32, i64)> = Vec::new();
        let mut position = 0usize;
        while position < batches.len() {
            let header = RecordBatchHeader::parse(&batches[position..]).map_err(|error| {
                invalid_input(&format!("replica batch at byte {position}: {error}"))
            })?;
            let size_bytes = header.total_size_bytes();
            if size_bytes > batches.len() - position || header.last_offset_delta < 0 {
                return Err(invalid_input("replica batch overruns the data"));
            }
            if header.base_offset != next_offset {
                return Err(invalid_input(&format!(
                    "replica batch at offset {} does not follow offset {}",
                    header.base_offset,
                    next_offset - 1
                )));
            }
            if !batch_crc_matches(&header, &batches[position..position + size_bytes]) {
                return Err(LogError::Corrupt(format!(
                    "replica batch at offset {} fails its CRC",
                    header.base_offset
                )));
            }
            if epoch_starts
                .last()
                .is_none_or(|&(epoch, _)| header.partition_leader_epoch > epoch)
            {
                epoch_starts.push((header.partition_leader_epoch, header.base_offset));
            }
            next_offset = header.last_offset() + 1;
            position += size_bytes;
        }
        if next_offset == base_offset {
            return Err(invalid_input("append of no batches"));
        }
        let data = BytesMut::from(&batches[..]);
        drop(batches);
        let mut changed = false;
        for (epoch, offset) in epoch_starts {
            changed |= self.epochs.borrow_mut().assign(epoch, offset);
        }
        if changed {
            self.persist_leader_epochs();
        }
        let offset_count = (next_offset - base_offset) as u64;
        self.push_pending(data, base_offset, next_offset, offset_count)
    }

    /// Cuts the log back so it ends at or below `offset`, on a batch boundary (a batch that
    /// spans `offset` goes too); returns the new end. Below the log start the log restarts
    /// empty at `offset`. Appends are refused while it runs.
    pub async fn truncate_to(&self, offset: i64) -> Result<i64, LogError> {
        assert!(offset >= 0);
        if self.written_end_offset() <= offset && self.next_offset() <= offset {
            return Ok(self.written_end_offset());
        }
        self.exclusively(|log| async move {
            let (start, end) = (log.log_start_offset(), log.written_end_offset());
            if offset >= end {
                return Ok(end);
            }
            if offset <= start {
                log.restart_empty_at(offset).await?;
                return Ok(offset);
            }
            log.cut_tail(offset).await
        })
        .await
    }

    /// Empties the log and restarts it at `offset` (a follower whose end lies below the
    /// leader's log start: the leader no longer has what lies between).
    pub async fn reset_to(&self, offset: i64) -> Result<(), LogError> {
        assert!(offset >= 0);
        self.exclusively(|log| async move { log.restart_empty_at(offset).await })
            .await
    }

    /// Runs `work` with retention, compaction and checkpoints excluded, appends refused and
    /// every pending write finished; wakes every waiter afterwards (offsets changed meaning).
    async fn exclusively<T, F, Fut>(&self, work: F) -> Result<T, LogError>
    where
        F: FnOnce(std::rc::Rc<PartitionLog>) -> Fut,
        Fut: Future<Output = Result<T, LogError>>,
    {
        let _maintenance = self
            .maintenance_lock
            .acquire_permit(1)
            .await
            .map_err(|_| LogError::Closed)?;
        let _checkpoint = self
            .checkpoint_lock
            .acquire_permit(1)
            .await
            .map_err(|_| LogError::Closed)?;
        self.state.borrow_mut().truncating = true;
        let result = match self.quiesce().await {
            Ok(()) => work(self.rc()).await,
            Err(error) => Err(error),
        };
        self.state.borrow_mut().truncating = false;
        self.wake_all();
        result
    }

    /// Waits until no write, fallocate or fdatasync is in flight and the writer and syncer
    /// tasks have stopped.
    async fn quiesce(&self) -> Result<(), LogError> {
        self.drain().await;
        loop {
            {
                let state = self.state.borrow();
                if state.closed || state.closing {
                    return Err(LogError::Closed);
                }
                if let Some(failure) = &state.failure {
                    return Err(failure.error());
                }
                if !state.writer_running && !state.sync_running && state.in_flight.is_empty() {
                    assert!(state.pending.is_empty());
                    return Ok(());
                }
            }
            self.writer_signal.notify();
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn cut_tail(&self, offset: i64) -> Result<i64, LogError> {
        // A checkpoint at the cut claims everything below it durable.
        self.sync().await?;
        let (cut_index, file, size_bytes, base_offset, scan_from_bytes, later_bases) = {
            let state = self.state.borrow();
            let after = state
                .segments
                .partition_point(|segment| segment.base_offset <= offset);
            assert!(after > 0, "offset {offset} is above the log start");
            let segment = &state.segments[after - 1];
            (
                after - 1,
                segment.file.clone(),
                segment.size_bytes,
                segment.base_offset,
                segment.index.lookup(offset),
                state.segments[after..]
                    .iter()
                    .rev()
                    .map(|segment| segment.base_offset)
                    .collect::<Vec<_>>(),
            )
        };
        let mut reader = WindowReader::new(file.clone(), size_bytes, HEADER_WALK_WINDOW_BYTES);
        let mut position = scan_from_bytes;
        let mut new_end = base_offset;
        while position + RECORD_BATCH_HEADER_SIZE_BYTES as u64 <= size_bytes {
            let header = read_header_at(&mut reader, position, size_bytes).await?;
            if position == scan_from_bytes {
                new_end = header.base_offset;
            }
            if header.last_offset() >= offset {
                break;
            }
            new_end = header.last_offset() + 1;
            position += header.total_size_bytes() as u64;
        }
        drop(reader);
        let cut = RecoveryCheckpoint {
            offset: new_end,
            segment_base_offset: base_offset,
            position_bytes: position,
        };
        write_checkpoint(&self.dir, cut).await?;
        let mut paths = Vec::with_capacity(2 * later_bases.len() + 1);
        for base in later_bases {
            paths.push(self.dir.join(segment_file_name(base)));
            paths.push(self.dir.join(index_file_name(base)));
        }
        // The cut segment's index may name batches past the cut: recovery rebuilds it.
        paths.push(self.dir.join(index_file_name(base_offset)));
        remove_files(paths).await?;
        file.truncate(position).await.map_err(io_error)?;
        file.fdatasync().await.map_err(io_error)?;
        sync_directory(&self.dir).await?;
        drop(file);
        self.reload_from_disk().await?;
        debug_assert_eq!(self.state.borrow().segments.len(), cut_index + 1);
        let end = self.written_end_offset();
        if end != new_end {
            tracing::warn!(dir = %self.dir.display(), expected = new_end, end,
                "truncation recovered a different end than planned");
        }
        if self.epochs.borrow_mut().truncate_from_end(end) {
            self.write_leader_epochs().await;
        }
        tracing::info!(dir = %self.dir.display(), requested = offset, end,
            "truncated the log to the leader's");
        Ok(end)
    }

    async fn restart_empty_at(&self, offset: i64) -> Result<(), LogError> {
        // The persisted log start wins over whatever segments survive a crash from here on.
        OffsetFile::LogStart.write(&self.dir, offset).await?;
        let mut paths: Vec<_> = {
            let state = self.state.borrow();
            state
                .segments
                .iter()
                .flat_map(|segment| {
                    [
                        self.dir.join(segment_file_name(segment.base_offset)),
                        self.dir.join(index_file_name(segment.base_offset)),
                    ]
                })
                .collect()
        };
        paths.push(self.dir.join(CHECKPOINT_FILE_NAME));
        remove_files(paths).await?;
        sync_directory(&self.dir).await?;
        self.reload_from_disk().await?;
        {
            let mut state = self.state.borrow_mut();
            state.high_watermark = state.written_end_offset;
        }
        self.epochs.borrow_mut().clear();
        self.write_leader_epochs().await;
        tracing::info!(dir = %self.dir.display(), offset, "restarted the log empty at the leader's log start");
        Ok(())
    }

    /// Rebuilds the in-memory state from disk (recovery), keeping this `PartitionLog`, its
    /// stats and its high watermark (clamped to the new end).
    async fn reload_from_disk(&self) -> Result<(), LogError> {
        let (files, generation, stats) = {
            let state = self.state.borrow();
            let files: Vec<_> = state.segments.iter().map(|s| s.file.clone()).collect();
            (files, state.generation + 1, state.stats)
        };
        let config = self.config();
        let recovered = match recover(&self.dir, &config).await {
            Ok(recovered) => recovered,
            Err(error) => {
                let message = format!("recovery after truncation failed: {error}");
                self.fail(LogError::Io(io::Error::other(message.clone())), true);
                return Err(LogError::Io(io::Error::other(message)));
            }
        };
        self.install_recovered(recovered, generation);
        self.state.borrow_mut().stats = stats;
        close_files(files).await;
        Ok(())
    }
}
