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

/// Offset → byte position of the batch starting there, one entry per `index_interval_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    /// Base offset of the batch at `position_bytes`.
    pub(crate) offset: i64,
    pub(crate) position_bytes: u64,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct SparseIndex {
    pub(crate) entries: Vec<IndexEntry>,
    /// Batch bytes added since the last entry.
    bytes_since_entry: u64,
}

impl SparseIndex {
    pub(crate) fn from_entries(entries: Vec<IndexEntry>, bytes_since_entry: u64) -> Self {
        SparseIndex {
            entries,
            bytes_since_entry,
        }
    }

    /// Records a batch appended at `position_bytes`; adds an entry for it once at least
    /// `interval_bytes` of batches went by without one.
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
            });
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += header.total_size_bytes() as u64;
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
}

pub(crate) struct Segment {
    pub(crate) base_offset: i64,
    pub(crate) file: Rc<DmaFile>,
    /// Bytes of complete, written batches. Everything past it is zeros or garbage to ignore.
    pub(crate) size_bytes: u64,
    /// Offset after the last batch in this segment (`base_offset` when empty).
    pub(crate) next_offset: i64,
    /// File size reached by fallocate; writes stay below it so they never extend the file.
    pub(crate) allocated_size_bytes: u64,
    pub(crate) index: SparseIndex,
    /// Written since the last fdatasync.
    pub(crate) dirty: bool,
}

/// The persisted form of a sealed segment's index. Little-endian binary:
/// magic "RTIX", version u32, base_offset i64, next_offset i64, size_bytes u64,
/// entry_count u32, entries (offset i64, position u64)*, crc32c u32 over all that precedes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexFile {
    pub(crate) base_offset: i64,
    pub(crate) next_offset: i64,
    pub(crate) size_bytes: u64,
    pub(crate) entries: Vec<IndexEntry>,
}

const INDEX_MAGIC: &[u8; 4] = b"RTIX";
const INDEX_VERSION: u32 = 1;
const INDEX_HEADER_SIZE_BYTES: usize = 4 + 4 + 8 + 8 + 8 + 4;
const INDEX_ENTRY_SIZE_BYTES: usize = 16;
const INDEX_CRC_SIZE_BYTES: usize = 4;

impl IndexFile {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let size = INDEX_HEADER_SIZE_BYTES
            + self.entries.len() * INDEX_ENTRY_SIZE_BYTES
            + INDEX_CRC_SIZE_BYTES;
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(INDEX_MAGIC);
        out.extend_from_slice(&INDEX_VERSION.to_le_bytes());
        out.extend_from_slice(&self.base_offset.to_le_bytes());
        out.extend_from_slice(&self.next_offset.to_le_bytes());
        out.extend_from_slice(&self.size_bytes.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for entry in &self.entries {
            out.extend_from_slice(&entry.offset.to_le_bytes());
            out.extend_from_slice(&entry.position_bytes.to_le_bytes());
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
        let base_offset = u64_at(body, 8) as i64;
        let next_offset = u64_at(body, 16) as i64;
        let size_bytes = u64_at(body, 24);
        let entry_count = u32_at(body, 32) as usize;
        if body.len()
            != INDEX_HEADER_SIZE_BYTES + entry_count.checked_mul(INDEX_ENTRY_SIZE_BYTES)?
        {
            return None;
        }
        if base_offset < 0 || next_offset < base_offset {
            return None;
        }
        let mut entries = Vec::with_capacity(entry_count);
        for index in 0..entry_count {
            let at = INDEX_HEADER_SIZE_BYTES + index * INDEX_ENTRY_SIZE_BYTES;
            let entry = IndexEntry {
                offset: u64_at(body, at) as i64,
                position_bytes: u64_at(body, at + 8),
            };
            let in_range = entry.offset >= base_offset
                && entry.offset < next_offset
                && entry.position_bytes < size_bytes;
            let increasing = entries.last().is_none_or(|last: &IndexEntry| {
                last.offset < entry.offset && last.position_bytes < entry.position_bytes
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
            entries: vec![
                IndexEntry {
                    offset: 130,
                    position_bytes: 33_000,
                },
                IndexEntry {
                    offset: 170,
                    position_bytes: 66_000,
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
        let index = SparseIndex::from_entries(
            vec![
                IndexEntry {
                    offset: 10,
                    position_bytes: 4000,
                },
                IndexEntry {
                    offset: 20,
                    position_bytes: 8000,
                },
            ],
            0,
        );
        assert_eq!(index.lookup(0), 0);
        assert_eq!(index.lookup(9), 0);
        assert_eq!(index.lookup(10), 4000);
        assert_eq!(index.lookup(19), 4000);
        assert_eq!(index.lookup(25), 8000);
    }
}
