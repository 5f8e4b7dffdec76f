//! Timestamp lookups for ListOffsets: the first record at or after a timestamp
//! (`offsets_for_times`), and the record with the largest timestamp (`MAX_TIMESTAMP`).
//!
//! Both are O(log n) in segments (binary search over the non-decreasing prefix maximum of
//! segment timestamps) and in index entries (the sparse index carries the prefix maximum at
//! each entry), then scan at most one index interval of batch headers from disk, and decode
//! the one batch found to answer with the exact record (decompressing it if needed). The
//! record decode happens per lookup, never on the produce path.

use super::file_io::WindowReader;
use super::partition::{DiskSource, PartitionLog};
use super::LogError;
use crate::protocol::record_batch::{RecordBatchHeader, RECORD_BATCH_HEADER_SIZE_BYTES};
use crate::protocol::records::{parse_records, records_section};

/// Read window of timestamp scans: one index interval plus a batch usually fits.
const LOOKUP_WINDOW_BYTES: u64 = 64 * 1024;

/// A record found by a timestamp lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampHit {
    pub offset: i64,
    pub timestamp_ms: i64,
}

/// What to look for in the batch found.
#[derive(Clone, Copy)]
enum Target {
    AtOrAfter(i64),
    Max(i64),
}

impl PartitionLog {
    /// The in-memory half of a timestamp lookup: the segment (by base offset) and the byte
    /// position to scan from for the first batch at or after `timestamp_ms`, found by binary
    /// search over segments and index entries. For diagnostics and benchmarks.
    pub fn locate_timestamp(&self, timestamp_ms: i64) -> Option<(i64, u64)> {
        let state = self.state.borrow();
        let first = state
            .segments
            .partition_point(|segment| segment.prefix_max_timestamp_ms < timestamp_ms);
        let segment = state.segments.get(first)?;
        Some((
            segment.base_offset,
            segment.index.lookup_timestamp(timestamp_ms),
        ))
    }

    /// The first record (at or above the log start, below `max_offset_exclusive`) whose
    /// timestamp is at least `timestamp_ms`; `None` if there is none.
    pub async fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
        max_offset_exclusive: i64,
    ) -> Result<Option<TimestampHit>, LogError> {
        // The segment to start from: the first whose prefix maximum reaches the timestamp,
        // or the one holding the log start if that is later.
        let mut cursor = {
            let state = self.state.borrow();
            state.check_readable()?;
            let first = state
                .segments
                .partition_point(|segment| segment.prefix_max_timestamp_ms < timestamp_ms);
            let Some(segment) = state.segments.get(first) else {
                return Ok(None);
            };
            segment.base_offset.max(state.log_start_offset)
        };
        loop {
            let (source, log_start) = {
                let state = self.state.borrow();
                state.check_readable()?;
                if cursor >= max_offset_exclusive || cursor >= state.written_end_offset {
                    return Ok(None);
                }
                let Some(mut source) = state.disk_source(cursor) else {
                    return Ok(None);
                };
                let after = state
                    .segments
                    .partition_point(|segment| segment.base_offset <= cursor);
                let segment = &state.segments[after - 1];
                if segment.index.max_timestamp_ms < timestamp_ms {
                    // Nothing here (only possible after skipping to the log start).
                    cursor = segment.next_offset;
                    continue;
                }
                let by_time = segment.index.lookup_timestamp(timestamp_ms);
                source.start_position_bytes = source.start_position_bytes.max(by_time);
                (source, state.log_start_offset)
            };
            let next_segment = source.next_offset;
            let found = scan_for(
                source,
                Target::AtOrAfter(timestamp_ms),
                log_start,
                max_offset_exclusive,
            )
            .await?;
            match found {
                Scan::Found(hit) => return Ok(Some(hit)),
                Scan::Hidden => return Ok(None),
                Scan::NotHere => cursor = next_segment,
            }
        }
    }

    /// The record with the largest timestamp (the first such), if it lies at or above the log
    /// start and below `max_offset_exclusive`.
    pub async fn offset_of_max_timestamp(
        &self,
        max_offset_exclusive: i64,
    ) -> Result<Option<TimestampHit>, LogError> {
        let (source, max_timestamp_ms, log_start) = {
            let state = self.state.borrow();
            state.check_readable()?;
            let max_timestamp_ms = state.active().prefix_max_timestamp_ms;
            if max_timestamp_ms < 0 {
                return Ok(None);
            }
            let index = state
                .segments
                .partition_point(|segment| segment.prefix_max_timestamp_ms < max_timestamp_ms);
            let segment = &state.segments[index];
            assert_eq!(segment.index.max_timestamp_ms, max_timestamp_ms);
            let batch_offset = segment.index.offset_of_max_timestamp;
            let Some(source) = state.disk_source(batch_offset.max(segment.base_offset)) else {
                return Ok(None);
            };
            (source, max_timestamp_ms, state.log_start_offset)
        };
        match scan_for(
            source,
            Target::Max(max_timestamp_ms),
            log_start,
            max_offset_exclusive,
        )
        .await?
        {
            Scan::Found(hit) => Ok(Some(hit)),
            Scan::Hidden | Scan::NotHere => Ok(None),
        }
    }
}

enum Scan {
    Found(TimestampHit),
    /// The batch found lies past the visible end.
    Hidden,
    /// Not in this segment.
    NotHere,
}

/// Walks batch headers of one segment from the source position to the first batch matching
/// `target`, then finds the exact record in it.
async fn scan_for(
    source: DiskSource,
    target: Target,
    log_start: i64,
    max_offset_exclusive: i64,
) -> Result<Scan, LogError> {
    let mut reader = WindowReader::new(source.file, source.size_bytes, LOOKUP_WINDOW_BYTES);
    let mut position = source.start_position_bytes;
    while position + RECORD_BATCH_HEADER_SIZE_BYTES as u64 <= source.size_bytes {
        let header_bytes = reader
            .bytes(position, RECORD_BATCH_HEADER_SIZE_BYTES)
            .await?;
        let header = RecordBatchHeader::parse(header_bytes)
            .map_err(|error| LogError::Corrupt(format!("batch at position {position}: {error}")))?;
        let size_bytes = header.total_size_bytes();
        let matches = match target {
            Target::AtOrAfter(timestamp_ms) => header.max_timestamp_ms >= timestamp_ms,
            Target::Max(timestamp_ms) => header.max_timestamp_ms == timestamp_ms,
        };
        if matches && header.last_offset() >= log_start {
            if header.last_offset() >= max_offset_exclusive {
                return Ok(Scan::Hidden);
            }
            let batch = reader.bytes(position, size_bytes).await?;
            return Ok(Scan::Found(exact_record(batch, &header, target, log_start)));
        }
        position += size_bytes as u64;
    }
    Ok(Scan::NotHere)
}

/// The first record of `batch` matching `target` at or above `log_start`. Falls back to the
/// batch's first visible offset and max timestamp if the records cannot be decoded.
///
/// Reads with Riptide's own bounded record parser: record deltas are producer-controlled
/// varints, added with saturation (a delta of i64::MAX overflowed kafka-protocol's decoder),
/// and nothing is reserved from the header's record count (a compressed batch may claim
/// 2^31-1 records around one).
fn exact_record(
    batch: &[u8],
    header: &RecordBatchHeader,
    target: Target,
    log_start: i64,
) -> TimestampHit {
    let fallback = TimestampHit {
        offset: header.base_offset.max(log_start),
        timestamp_ms: header.max_timestamp_ms,
    };
    if header.is_log_append_time() {
        // Every record carries the batch's max timestamp.
        return fallback;
    }
    let Ok(section) = records_section(batch, header.compression_codec()) else {
        return fallback;
    };
    let Ok(records) = parse_records(&section) else {
        return fallback;
    };
    records
        .iter()
        .map(|record| TimestampHit {
            offset: header.base_offset.saturating_add(record.offset_delta),
            timestamp_ms: header
                .base_timestamp_ms
                .saturating_add(record.timestamp_delta_ms),
        })
        .find(|hit| {
            hit.offset >= log_start
                && match target {
                    Target::AtOrAfter(timestamp_ms) => hit.timestamp_ms >= timestamp_ms,
                    Target::Max(timestamp_ms) => hit.timestamp_ms == timestamp_ms,
                }
        })
        .unwrap_or(fallback)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::record_batch::test_support::{build_uncompressed_batch, BatchParams};

    fn lookup(batch: &[u8], target: Target, log_start: i64) -> TimestampHit {
        let header = RecordBatchHeader::parse(batch).unwrap();
        exact_record(batch, &header, target, log_start)
    }

    #[test]
    fn finds_the_exact_record_by_timestamp_and_above_the_log_start() {
        let params = BatchParams {
            base_offset: 100,
            base_timestamp_ms: 1_000,
            ..BatchParams::default()
        };
        // Record i has offset 100 + i and timestamp 1,000 + i.
        let batch = build_uncompressed_batch(params, &[b"a", b"b", b"c", b"d"]);
        let hit = |offset, timestamp_ms| TimestampHit {
            offset,
            timestamp_ms,
        };
        assert_eq!(lookup(&batch, Target::AtOrAfter(1_002), 0), hit(102, 1_002));
        assert_eq!(lookup(&batch, Target::AtOrAfter(0), 103), hit(103, 1_003));
        assert_eq!(lookup(&batch, Target::Max(1_001), 0), hit(101, 1_001));
        // Nothing matches: the batch's first visible offset and max timestamp.
        assert_eq!(
            lookup(&batch, Target::AtOrAfter(5_000), 101),
            hit(101, 1_003)
        );
    }

    /// The fuzzing reproducers that overflowed kafka-protocol's record decoder or made it
    /// reserve 2^31-1 records (files: a flags byte, then one batch).
    #[test]
    fn fuzzing_reproducers_answer_without_overflow_or_huge_reservations() {
        let directory = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/regressions/record_batch");
        for name in [
            "gzip-record-count-i32max",
            "kp-recordbatchdecoder-offset-add-overflow",
            "kp-recordbatchdecoder-reserve-record-count",
        ] {
            let file = std::fs::read(format!("{directory}/{name}")).unwrap();
            let batch = &file[1..];
            let header = RecordBatchHeader::parse(batch).unwrap();
            let size_bytes = header.total_size_bytes().min(batch.len());
            for target in [Target::AtOrAfter(0), Target::Max(header.max_timestamp_ms)] {
                exact_record(&batch[..size_bytes], &header, target, 0);
            }
        }
        // One record whose timestamp delta is i64::MAX: its timestamp saturates.
        let file =
            std::fs::read(format!("{directory}/timestamp-delta-i64max-valid-batch")).unwrap();
        let batch = &file[1..];
        assert_eq!(
            lookup(batch, Target::AtOrAfter(0), 0),
            TimestampHit {
                offset: 0,
                timestamp_ms: i64::MAX
            }
        );
    }
}
