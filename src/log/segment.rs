//! One segment file and its sparse offset index.

use std::rc::Rc;

use glommio::io::DmaFile;

use crate::protocol::record_batch::RecordBatchHeader;

/// Characters of the zero-padded base offset in file names (Kafka's convention).
const BASE_OFFSET_DIGITS: usize = 20;

pub(crate) const SEGMENT_SUFFIX: &str = ".log";
pub(crate) const INDEX_SUFFIX: &str = ".index";

pub(crate) fn segment_file_name(base_offset: i64) -> String {
    assert!(base_offset >= 0);
    format!(
        "{base_offset:0width$}{SEGMENT_SUFFIX}",
        width = BASE_OFFSET_DIGITS
    )
}

pub(crate) fn index_file_name(base_offset: i64) -> String {
    assert!(base_offset >= 0);
    format!(
        "{base_offset:0width$}{INDEX_SUFFIX}",
        width = BASE_OFFSET_DIGITS
    )
}

/// Parses `<20 digits><suffix>` into the base offset.
pub(crate) fn parse_file_name(name: &str, suffix: &str) -> Option<i64> {
    let digits = name.strip_suffix(suffix)?;
    if digits.len() != BASE_OFFSET_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<i64>().ok()
}

/// Kafka's "no timestamp": batches without one, and segments without batches.
pub(crate) const NO_TIMESTAMP: i64 = -1;

/// One sparse index entry: where a batch starts, and the largest timestamp of every batch of
/// the segment before it. The prefix maximum never decreases along a segment, so it serves
/// both offset lookups (by `offset`) and timestamp lookups (by `max_timestamp_before_ms`)
/// with a binary search, and a lookup then scans at most one index interval of batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// Base offset of the batch at `position_bytes`.
    pub(crate) offset: i64,
    pub(crate) position_bytes: u64,
    /// Largest batch max-timestamp strictly before this batch in the segment
    /// ([`NO_TIMESTAMP`] if none).
    pub(crate) max_timestamp_before_ms: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct SparseIndex {
    pub(crate) entries: Vec<IndexEntry>,
    /// Batch bytes added since the last entry.
    bytes_since_entry: u64,
    /// Largest batch max-timestamp in the segment ([`NO_TIMESTAMP`] if none).
    pub(crate) max_timestamp_ms: i64,
    /// Base offset of the first batch carrying `max_timestamp_ms` (-1 if none).
    pub(crate) offset_of_max_timestamp: i64,
}

impl Default for SparseIndex {
    fn default() -> Self {
        SparseIndex {
            entries: Vec::new(),
            bytes_since_entry: 0,
            max_timestamp_ms: NO_TIMESTAMP,
            offset_of_max_timestamp: -1,
        }
    }
}

impl SparseIndex {
    pub(crate) fn from_parts(
        entries: Vec<IndexEntry>,
        bytes_since_entry: u64,
        max_timestamp_ms: i64,
        offset_of_max_timestamp: i64,
    ) -> Self {
        SparseIndex {
            entries,
            bytes_since_entry,
            max_timestamp_ms,
            offset_of_max_timestamp,
        }
    }

    /// Records a batch appended at `position_bytes`; adds an entry for it once at least
    /// `interval_bytes` of batches went by without one. Per batch, never per record.
    pub(crate) fn on_batch(
        &mut self,
        header: &RecordBatchHeader,
        position_bytes: u64,
        interval_bytes: u64,
    ) {
        if let Some(last) = self.entries.last() {
            debug_assert!(last.offset < header.base_offset);
            debug_assert!(last.position_bytes < position_bytes);
        }
        if self.bytes_since_entry >= interval_bytes {
            self.entries.push(IndexEntry {
                offset: header.base_offset,
                position_bytes,
                max_timestamp_before_ms: self.max_timestamp_ms,
            });
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += header.total_size_bytes() as u64;
        if header.max_timestamp_ms > self.max_timestamp_ms {
            self.max_timestamp_ms = header.max_timestamp_ms;
            self.offset_of_max_timestamp = header.base_offset;
        }
    }

    /// Position of a batch at or before the batch containing `offset`: a safe place to start
    /// scanning forward from.
    pub(crate) fn lookup(&self, offset: i64) -> u64 {
        let after = self.entries.partition_point(|entry| entry.offset <= offset);
        if after == 0 {
            0
        } else {
            self.entries[after - 1].position_bytes
        }
    }

    /// Position of a batch at or before the first batch whose max timestamp is at least
    /// `timestamp_ms`: scanning forward from it finds that batch within one index interval
    /// (if the segment holds one at all).
    pub(crate) fn lookup_timestamp(&self, timestamp_ms: i64) -> u64 {
        let after = self
            .entries
            .partition_point(|entry| entry.max_timestamp_before_ms < timestamp_ms);
        if after == 0 {
            0
        } else {
            self.entries[after - 1].position_bytes
        }
    }
}

pub(crate) struct Segment {
    pub(crate) base_offset: i64,
    pub(crate) file: Rc<DmaFile>,
    /// Bytes of complete, written batches. Everything past it is zeros or garbage to ignore.
    pub(crate) size_bytes: u64,
    /// Offset after the last offset this segment covers (`base_offset` when empty). For a
    /// sealed segment this is the next segment's base offset, even if compaction removed the
    /// batches at its end.
    pub(crate) next_offset: i64,
    /// File size reached by fallocate; writes stay below it so they never extend the file.
    pub(crate) allocated_size_bytes: u64,
    /// Blocks below it were zero-filled ahead of the writer and synced (or hold data): writes
    /// there change no file metadata. Only ever counts zero-fills of this segment's file.
    pub(crate) prewritten_size_bytes: u64,
    pub(crate) index: SparseIndex,
    /// Largest batch timestamp in this segment and every segment before it: a non-decreasing
    /// sequence over the log, so the first segment holding a timestamp at or after T is found
    /// by binary search. Recomputed when segments are removed from the front.
    pub(crate) prefix_max_timestamp_ms: i64,
    /// Wall-clock time (ms) the segment got its first batch, or was found at recovery; drives
    /// `segment.ms` rolls and is the retention time of segments without timestamps.
    pub(crate) created_at_ms: i64,
    /// Written since the last fdatasync.
    pub(crate) dirty: bool,
    /// Rewritten by compaction: offsets may have gaps and batches fewer records than offsets.
    pub(crate) compacted: bool,
    /// The same file opened without O_DIRECT, for zero-copy sends through the page cache;
    /// opened on the first cold read.
    pub(crate) read_file: Option<std::sync::Arc<std::fs::File>>,
}

impl Segment {
    pub(crate) fn new_empty(base_offset: i64, file: Rc<DmaFile>, now_ms: i64) -> Segment {
        Segment {
            base_offset,
            file,
            size_bytes: 0,
            next_offset: base_offset,
            allocated_size_bytes: 0,
            prewritten_size_bytes: 0,
            index: SparseIndex::default(),
            prefix_max_timestamp_ms: NO_TIMESTAMP,
            created_at_ms: now_ms,
            dirty: false,
            compacted: false,
            read_file: None,
        }
    }

    pub(crate) fn index_file(&self) -> IndexFile {
        IndexFile {
            base_offset: self.base_offset,
            next_offset: self.next_offset,
            size_bytes: self.size_bytes,
            max_timestamp_ms: self.index.max_timestamp_ms,
            offset_of_max_timestamp: self.index.offset_of_max_timestamp,
            compacted: self.compacted,
            entries: self.index.entries.clone(),
        }
    }

    /// The time retention measures a segment's age by: its largest batch timestamp, or when
    /// it has none, when it was created.
    pub(crate) fn retention_timestamp_ms(&self) -> i64 {
        if self.index.max_timestamp_ms >= 0 {
            self.index.max_timestamp_ms
        } else {
            self.created_at_ms
        }
    }
}

/// Recomputes `prefix_max_timestamp_ms` of every segment (after removals at the front).
pub(crate) fn recompute_prefix_max(segments: &mut [Segment]) {
    let mut running = NO_TIMESTAMP;
    for segment in segments {
        running = running.max(segment.index.max_timestamp_ms);
        segment.prefix_max_timestamp_ms = running;
    }
}

/// The persisted form of a segment's index (sealed segments, and the active segment up to the
/// recovery checkpoint). Little-endian binary: magic "RTIX", version u32, flags u32,
/// base_offset i64, next_offset i64, size_bytes u64, max_timestamp i64,
/// offset_of_max_timestamp i64, entry_count u32, entries (offset i64, position u64,
/// max_timestamp_before i64)*, crc32c u32 over all that precedes. Version 1 files (no
/// timestamps) fail to decode and are rebuilt by scanning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexFile {
    pub(crate) base_offset: i64,
    pub(crate) next_offset: i64,
    pub(crate) size_bytes: u64,
    pub(crate) max_timestamp_ms: i64,
    pub(crate) offset_of_max_timestamp: i64,
    pub(crate) compacted: bool,
    pub(crate) entries: Vec<IndexEntry>,
}

const INDEX_MAGIC: &[u8; 4] = b"RTIX";
const INDEX_VERSION: u32 = 2;
const INDEX_FLAG_COMPACTED: u32 = 1;
const INDEX_HEADER_SIZE_BYTES: usize = 4 + 4 + 4 + 8 + 8 + 8 + 8 + 8 + 4;
const INDEX_ENTRY_SIZE_BYTES: usize = 24;
const INDEX_CRC_SIZE_BYTES: usize = 4;

impl IndexFile {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let size = INDEX_HEADER_SIZE_BYTES
            + self.entries.len() * INDEX_ENTRY_SIZE_BYTES
            + INDEX_CRC_SIZE_BYTES;
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(INDEX_MAGIC);
        out.extend_from_slice(&INDEX_VERSION.to_le_bytes());
        let flags = if self.compacted {
            INDEX_FLAG_COMPACTED
        } else {
            0
        };
        out.extend_from_slice(&flags.to_le_bytes());
        out.extend_from_slice(&self.base_offset.to_le_bytes());
        out.extend_from_slice(&self.next_offset.to_le_bytes());
        out.extend_from_slice(&self.size_bytes.to_le_bytes());
        out.extend_from_slice(&self.max_timestamp_ms.to_le_bytes());
        out.extend_from_slice(&self.offset_of_max_timestamp.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for entry in &self.entries {
            out.extend_from_slice(&entry.offset.to_le_bytes());
            out.extend_from_slice(&entry.position_bytes.to_le_bytes());
            out.extend_from_slice(&entry.max_timestamp_before_ms.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(out.len(), size);
        out
    }

    /// Decodes and checks internal consistency; `None` on any defect.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < INDEX_HEADER_SIZE_BYTES + INDEX_CRC_SIZE_BYTES {
            return None;
        }
        let (body, crc_bytes) = bytes.split_at(bytes.len() - INDEX_CRC_SIZE_BYTES);
        if crc32c::crc32c(body) != u32::from_le_bytes(crc_bytes.try_into().ok()?) {
            return None;
        }
        if &body[0..4] != INDEX_MAGIC || u32_at(body, 4) != INDEX_VERSION {
            return None;
        }
        let flags = u32_at(body, 8);
        if flags & !INDEX_FLAG_COMPACTED != 0 {
            return None;
        }
        let base_offset = u64_at(body, 12) as i64;
        let next_offset = u64_at(body, 20) as i64;
        let size_bytes = u64_at(body, 28);
        let max_timestamp_ms = u64_at(body, 36) as i64;
        let offset_of_max_timestamp = u64_at(body, 44) as i64;
        let entry_count = u32_at(body, 52) as usize;
        if body.len()
            != INDEX_HEADER_SIZE_BYTES + entry_count.checked_mul(INDEX_ENTRY_SIZE_BYTES)?
        {
            return None;
        }
        if base_offset < 0 || next_offset < base_offset {
            return None;
        }
        let max_known = max_timestamp_ms >= 0;
        if max_known
            && (offset_of_max_timestamp < base_offset || offset_of_max_timestamp >= next_offset)
        {
            return None;
        }
        let mut entries = Vec::with_capacity(entry_count);
        for index in 0..entry_count {
            let at = INDEX_HEADER_SIZE_BYTES + index * INDEX_ENTRY_SIZE_BYTES;
            let entry = IndexEntry {
                offset: u64_at(body, at) as i64,
                position_bytes: u64_at(body, at + 8),
                max_timestamp_before_ms: u64_at(body, at + 16) as i64,
            };
            let in_range = entry.offset >= base_offset
                && entry.offset < next_offset
                && entry.position_bytes < size_bytes
                && entry.max_timestamp_before_ms <= max_timestamp_ms.max(NO_TIMESTAMP);
            let increasing = entries.last().is_none_or(|last: &IndexEntry| {
                last.offset < entry.offset
                    && last.position_bytes < entry.position_bytes
                    && last.max_timestamp_before_ms <= entry.max_timestamp_before_ms
            });
            if !in_range || !increasing {
                return None;
            }
            entries.push(entry);
        }
        Some(IndexFile {
            base_offset,
            next_offset,
            size_bytes,
            max_timestamp_ms,
            offset_of_max_timestamp,
            compacted: flags & INDEX_FLAG_COMPACTED != 0,
            entries,
        })
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut buf = [0u8; 8];
    buf.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(segment_file_name(0), "00000000000000000000.log");
        assert_eq!(index_file_name(42), "00000000000000000042.index");
        assert_eq!(
            parse_file_name("00000000000000000042.log", ".log"),
            Some(42)
        );
        assert_eq!(parse_file_name("0000000000000000042.log", ".log"), None);
        assert_eq!(parse_file_name("0000000000000000004x.log", ".log"), None);
        assert_eq!(parse_file_name("00000000000000000042.index", ".log"), None);
    }

    #[test]
    fn index_file_round_trip_and_damage() {
        let file = IndexFile {
            base_offset: 100,
            next_offset: 200,
            size_bytes: 90_000,
            max_timestamp_ms: 5_000,
            offset_of_max_timestamp: 150,
            compacted: true,
            entries: vec![
                IndexEntry {
                    offset: 130,
                    position_bytes: 33_000,
                    max_timestamp_before_ms: 1_000,
                },
                IndexEntry {
                    offset: 170,
                    position_bytes: 66_000,
                    max_timestamp_before_ms: 5_000,
                },
            ],
        };
        let encoded = file.encode();
        assert_eq!(IndexFile::decode(&encoded), Some(file));
        for index in 0..encoded.len() {
            let mut damaged = encoded.clone();
            damaged[index] ^= 0x10;
            assert_eq!(IndexFile::decode(&damaged), None);
        }
        for cut in 0..encoded.len() {
            assert_eq!(IndexFile::decode(&encoded[..cut]), None);
        }
    }

    #[test]
    fn sparse_index_lookup() {
        let index = SparseIndex::from_parts(
            vec![
                IndexEntry {
                    offset: 10,
                    position_bytes: 4000,
                    max_timestamp_before_ms: 100,
                },
                IndexEntry {
                    offset: 20,
                    position_bytes: 8000,
                    max_timestamp_before_ms: 300,
                },
            ],
            0,
            400,
            25,
        );
        assert_eq!(index.lookup(0), 0);
        assert_eq!(index.lookup(9), 0);
        assert_eq!(index.lookup(10), 4000);
        assert_eq!(index.lookup(19), 4000);
        assert_eq!(index.lookup(25), 8000);
        // Timestamps: the first batch at or after T lies after the last entry whose prefix
        // maximum is below T.
        assert_eq!(index.lookup_timestamp(50), 0);
        assert_eq!(index.lookup_timestamp(100), 0);
        assert_eq!(index.lookup_timestamp(101), 4000);
        assert_eq!(index.lookup_timestamp(300), 4000);
        assert_eq!(index.lookup_timestamp(301), 8000);
        assert_eq!(index.lookup_timestamp(i64::MAX), 8000);
    }

    /// Property: for random batch streams, the index-guided scans find exactly what a full
    /// scan finds, for offsets and timestamps, within one interval.
    #[test]
    fn sparse_index_lookups_match_a_full_scan() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..50 {
            let interval = 1 + next() % 5000;
            let mut index = SparseIndex::default();
            // (base_offset, last_offset, position, size, max_timestamp)
            let mut batches = Vec::new();
            let mut offset = 0i64;
            let mut position = 0u64;
            for _ in 0..(1 + next() % 300) {
                let count = 1 + (next() % 10) as i64;
                let size = 61 + next() % 3000;
                let timestamp = (next() % 10_000) as i64 - 100; // some negative: no timestamp
                let header = RecordBatchHeader {
                    base_offset: offset,
                    batch_length_bytes: (size - 12) as i32,
                    partition_leader_epoch: 0,
                    magic: 2,
                    crc: 0,
                    attributes: 0,
                    last_offset_delta: (count - 1) as i32,
                    base_timestamp_ms: timestamp,
                    max_timestamp_ms: timestamp,
                    producer_id: -1,
                    producer_epoch: -1,
                    base_sequence: -1,
                    record_count: count as i32,
                };
                index.on_batch(&header, position, interval);
                batches.push((offset, offset + count - 1, position, size, timestamp));
                offset += count;
                position += size;
            }
            for target in 0..offset {
                let start = index.lookup(target);
                let first = batches
                    .iter()
                    .position(|b| b.2 == start)
                    .expect("a batch start");
                let found = batches[first..].iter().find(|b| b.1 >= target).unwrap();
                assert!(found.0 <= target && target <= found.1, "round {round}");
                assert!(found.2 - start <= interval + 3061, "scan bounded");
            }
            let overall_max = batches.iter().map(|b| b.4).max().unwrap().max(NO_TIMESTAMP);
            assert_eq!(index.max_timestamp_ms, overall_max);
            for _ in 0..50 {
                let target = (next() % 10_200) as i64 - 100;
                let expected = batches.iter().find(|b| b.4 >= target);
                let start = index.lookup_timestamp(target);
                let first = batches
                    .iter()
                    .position(|b| b.2 == start)
                    .expect("a batch start");
                let found = batches[first..].iter().find(|b| b.4 >= target);
                assert_eq!(found, expected, "round {round} target {target}");
            }
        }
    }
}
