//! Retention: delete the oldest segments by time (`retention.ms`), by size
//! (`retention.bytes`), and below the log start offset (DeleteRecords); and DeleteRecords
//! itself.
//!
//! Only whole sealed segments are deleted, oldest first, at most
//! [`MAX_SEGMENTS_PER_PASS`] per pass; the files are unlinked on the blocking pool, so a pass
//! never stalls the shard. If every segment has expired, the active segment is rolled first
//! (by the writer, at its next step) and deleted by a later pass, as Kafka does, so an idle
//! topic's data still goes away. The log start offset is persisted before any file is
//! unlinked, so a crash can never bring back an offset below it.

use std::io;

use super::checkpoint::OffsetFile;
use super::file_io::remove_files;
use super::partition::{close_files, PartitionLog};
use super::segment::{index_file_name, recompute_prefix_max, segment_file_name};
use super::{LogConfig, LogError};

/// Segments deleted per retention pass at most (each is two unlinks on the blocking pool).
pub(crate) const MAX_SEGMENTS_PER_PASS: usize = 16;

/// What a retention pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    pub log_start_offset: i64,
    /// Everything had expired: the active segment will roll so a later pass can delete it.
    pub roll_requested: bool,
}

/// A segment as retention sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentSummary {
    pub(crate) next_offset: i64,
    pub(crate) size_bytes: u64,
    pub(crate) retention_timestamp_ms: i64,
}

/// How many of the oldest segments to delete (never the last, active one), and whether to
/// roll the active segment because it has expired too.
pub(crate) fn plan_deletion(
    segments: &[SegmentSummary],
    config: &LogConfig,
    log_start_offset: i64,
    now_ms: i64,
) -> (usize, bool) {
    assert!(!segments.is_empty());
    let expired = |segment: &SegmentSummary| {
        config.cleanup_delete
            && config.retention_ms.is_some_and(|retention_ms| {
                now_ms.saturating_sub(segment.retention_timestamp_ms) > retention_ms as i64
            })
    };
    let total_bytes: u64 = segments.iter().map(|s| s.size_bytes).sum();
    let mut remaining_bytes = total_bytes;
    let mut count = 0;
    for segment in &segments[..segments.len() - 1] {
        let below_start = segment.next_offset <= log_start_offset;
        let oversize = config.cleanup_delete
            && config
                .retention_bytes
                .is_some_and(|limit| remaining_bytes - segment.size_bytes >= limit);
        if !(below_start || expired(segment) || oversize) {
            break;
        }
        remaining_bytes -= segment.size_bytes;
        count += 1;
    }
    let active = segments.last().expect("not empty");
    let roll = count == segments.len() - 1
        && active.size_bytes > 0
        && (expired(active) || active.next_offset <= log_start_offset);
    (count, roll)
}

impl PartitionLog {
    /// One retention pass (see the module docs). Skipped (`Ok` with nothing done) while
    /// compaction holds the log.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<RetentionOutcome, LogError> {
        let Ok(_permit) = self.maintenance_lock.try_acquire_permit(1) else {
            return Ok(RetentionOutcome {
                log_start_offset: self.log_start_offset(),
                ..RetentionOutcome::default()
            });
        };
        let config = self.config();
        let (count, roll, new_start, first_base) = {
            let state = self.state.borrow();
            state.check_readable()?;
            let summaries: Vec<SegmentSummary> = state
                .segments
                .iter()
                .map(|segment| SegmentSummary {
                    next_offset: segment.next_offset,
                    size_bytes: segment.size_bytes,
                    retention_timestamp_ms: segment.retention_timestamp_ms(),
                })
                .collect();
            let (count, roll) = plan_deletion(&summaries, &config, state.log_start_offset, now_ms);
            let count = count.min(MAX_SEGMENTS_PER_PASS);
            let new_start = state
                .log_start_offset
                .max(state.segments[count].base_offset);
            (count, roll, new_start, state.segments[0].base_offset)
        };
        let mut outcome = RetentionOutcome {
            log_start_offset: new_start,
            roll_requested: roll,
            ..RetentionOutcome::default()
        };
        if roll {
            self.state.borrow_mut().roll_requested = true;
            self.ensure_writer();
        }
        if count == 0 {
            return Ok(outcome);
        }
        OffsetFile::LogStart.write(&self.dir, new_start).await?;
        let removed = {
            let mut state = self.state.borrow_mut();
            state.check_readable()?;
            if state.segments[0].base_offset != first_base || state.segments.len() <= count {
                return Ok(outcome); // Changed under us (reopened): try again next pass.
            }
            let removed: Vec<_> = state.segments.drain(..count).collect();
            let bytes: u64 = removed.iter().map(|s| s.size_bytes).sum();
            state.size_bytes -= bytes;
            state.log_start_offset = state.log_start_offset.max(new_start);
            recompute_prefix_max(&mut state.segments);
            state.directory_dirty = true;
            state.stats.segments_deleted += count as u64;
            state.stats.bytes_deleted += bytes;
            outcome.bytes_deleted = bytes;
            outcome.segments_deleted = count;
            removed
        };
        let paths = removed
            .iter()
            .flat_map(|segment| {
                [
                    self.dir.join(segment_file_name(segment.base_offset)),
                    self.dir.join(index_file_name(segment.base_offset)),
                ]
            })
            .collect();
        close_files(removed.into_iter().map(|segment| segment.file).collect()).await;
        remove_files(paths).await?;
        tracing::info!(dir = %self.dir.display(), segments = outcome.segments_deleted,
            bytes = outcome.bytes_deleted, log_start_offset = new_start, "retention deleted segments");
        Ok(outcome)
    }

    /// DeleteRecords: moves the log start offset up to `offset` (-1 means the high
    /// watermark), persisted before returning; whole segments below it are deleted by the
    /// next retention pass. Returns the new log start offset (the low watermark).
    pub async fn delete_records_before(
        &self,
        offset: i64,
        high_watermark: i64,
    ) -> Result<i64, LogError> {
        let config = self.config();
        if config.cleanup_compact && !config.cleanup_delete {
            return Err(LogError::PolicyViolation(
                "DeleteRecords is not allowed on a compact-only topic".into(),
            ));
        }
        let target = if offset == -1 { high_watermark } else { offset };
        let (log_start, end) = {
            let state = self.state.borrow();
            state.check_readable()?;
            (state.log_start_offset, state.written_end_offset)
        };
        if target < 0 || target > high_watermark || target > end {
            return Err(LogError::OffsetOutOfRange {
                requested: target,
                log_start,
                log_end: high_watermark.min(end),
            });
        }
        if target <= log_start {
            return Ok(log_start);
        }
        OffsetFile::LogStart
            .write(&self.dir, target)
            .await
            .map_err(|error| {
                LogError::Io(io::Error::other(format!(
                    "cannot persist the log start: {error}"
                )))
            })?;
        let mut state = self.state.borrow_mut();
        state.log_start_offset = state.log_start_offset.max(target);
        Ok(state.log_start_offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(next_offset: i64, size_bytes: u64, timestamp: i64) -> SegmentSummary {
        SegmentSummary {
            next_offset,
            size_bytes,
            retention_timestamp_ms: timestamp,
        }
    }

    #[test]
    fn plans_by_time_size_and_log_start() {
        let segments = [
            summary(10, 100, 1_000),
            summary(20, 100, 2_000),
            summary(30, 100, 3_000),
            summary(35, 50, 4_000), // active
        ];
        let none = LogConfig {
            retention_ms: None,
            retention_bytes: None,
            ..LogConfig::default()
        };
        assert_eq!(plan_deletion(&segments, &none, 0, 10_000), (0, false));
        // Log start inside the second segment: only the first goes.
        assert_eq!(plan_deletion(&segments, &none, 15, 10_000), (1, false));
        // Log start at the end: all sealed, and the active rolls.
        assert_eq!(plan_deletion(&segments, &none, 35, 10_000), (3, true));
        // Time: older than 2.5 s at now = 4.5 s: the first two.
        let by_time = LogConfig {
            retention_ms: Some(2_500),
            ..none.clone()
        };
        assert_eq!(plan_deletion(&segments, &by_time, 0, 4_500), (1, false));
        assert_eq!(plan_deletion(&segments, &by_time, 0, 5_000), (2, false));
        assert_eq!(plan_deletion(&segments, &by_time, 0, 100_000), (3, true));
        // Size: keep at least 120 bytes: 350 → drop 100 (250), 100 (150); not the third.
        let by_size = LogConfig {
            retention_bytes: Some(120),
            ..none.clone()
        };
        assert_eq!(plan_deletion(&segments, &by_size, 0, 0), (2, false));
        // The active segment is never deleted by size.
        let tiny = LogConfig {
            retention_bytes: Some(1),
            ..none.clone()
        };
        assert_eq!(plan_deletion(&segments, &tiny, 0, 0), (3, false));
        // compact-only topics ignore time and size, but not the log start.
        let compact = LogConfig {
            cleanup_delete: false,
            cleanup_compact: true,
            ..by_time
        };
        assert_eq!(plan_deletion(&segments, &compact, 0, 100_000), (0, false));
        assert_eq!(plan_deletion(&segments, &compact, 20, 100_000), (2, false));
    }
}
