//! The Raft log as raft-rs reads it ([`LogStore`], in memory) and as it lies on disk
//! ([`encode_log_record`] and the loaders): entries after the newest snapshot, the hard state,
//! the snapshot itself.
//!
//! On disk, `log` is a sequence of `[u32 length][u32 crc32c][protobuf Entry]` records. Raft may
//! overwrite an uncommitted tail, so a record supersedes every earlier one with an index at or
//! past its own; a torn or corrupt tail (a crash mid-append) ends the log there. `hard_state` and
//! `snapshot` are `[u32 crc32c][protobuf]`, replaced atomically.

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

pub const LOG_FILE: &str = "log";
pub const HARD_STATE_FILE: &str = "hard_state";
pub const SNAPSHOT_FILE: &str = "snapshot";
/// Header of a log record: length and checksum.
const RECORD_HEADER_BYTES: usize = 8;
/// Bound on one encoded entry; a length past it is corruption, not an allocation to attempt.
pub const MAX_ENTRY_BYTES: usize = 64 * 1024 * 1024;

/// The in-memory log raft-rs reads: contiguous entries after the snapshot.
pub struct LogStore {
    pub hard_state: HardState,
    pub conf_state: ConfState,
    /// Newest snapshot; index 0 when there is none.
    pub snapshot: Snapshot,
    entries: Vec<Entry>,
}

impl LogStore {
    pub fn new(conf_state: ConfState) -> LogStore {
        LogStore {
            hard_state: HardState::default(),
            conf_state,
            snapshot: Snapshot::default(),
            entries: Vec::new(),
        }
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    fn snapshot_term(&self) -> u64 {
        self.snapshot.get_metadata().term
    }

    pub fn first(&self) -> u64 {
        self.snapshot_index() + 1
    }

    pub fn last(&self) -> u64 {
        self.snapshot_index() + self.entries.len() as u64
    }

    pub fn entry_term(&self, index: u64) -> Option<u64> {
        if index == self.snapshot_index() {
            return Some(self.snapshot_term());
        }
        if index < self.first() || index > self.last() {
            return None;
        }
        Some(self.entries[(index - self.first()) as usize].term)
    }

    /// Entries in `[low, high)`, at most `max_bytes` of them but at least one.
    pub fn slice(
        &self,
        low: u64,
        high: u64,
        max_bytes: Option<u64>,
    ) -> Result<Vec<Entry>, StorageError> {
        if low < self.first() {
            return Err(StorageError::Compacted);
        }
        if high > self.last() + 1 || low > high {
            return Err(StorageError::Unavailable);
        }
        let first = self.first();
        let mut entries = self.entries[(low - first) as usize..(high - first) as usize].to_vec();
        raft::util::limit_size(&mut entries, max_bytes);
        Ok(entries)
    }

    /// Appends `entries` (contiguous), replacing any tail they overlap.
    pub fn append(&mut self, entries: &[Entry]) -> anyhow::Result<()> {
        let Some(head) = entries.first() else {
            return Ok(());
        };
        anyhow::ensure!(
            head.index <= self.last() + 1,
            "log hole: appending at {} after last index {}",
            head.index,
            self.last()
        );
        // Entries at or before the snapshot are already in it.
        let skip = self.first().saturating_sub(head.index) as usize;
        let entries = &entries[skip.min(entries.len())..];
        let Some(head) = entries.first() else {
            return Ok(());
        };
        self.entries.truncate((head.index - self.first()) as usize);
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    /// Installs `snapshot`, dropping the entries it covers (all of them: raft-rs installs a
    /// snapshot only past its own log).
    pub fn install_snapshot(&mut self, snapshot: Snapshot) {
        let metadata = snapshot.get_metadata();
        self.hard_state.commit = self.hard_state.commit.max(metadata.index);
        self.hard_state.term = self.hard_state.term.max(metadata.term);
        self.conf_state = metadata.get_conf_state().clone();
        self.entries.clear();
        self.snapshot = snapshot;
    }

    /// A snapshot at `index` (applied) holding `data`, not yet installed: it is written to disk
    /// first, then [`LogStore::compact`] drops what it covers.
    pub fn snapshot_at(&self, index: u64, data: Vec<u8>) -> anyhow::Result<Snapshot> {
        anyhow::ensure!(
            index > self.snapshot_index() && index <= self.last(),
            "cannot snapshot at {index}: log holds {}..={}",
            self.first(),
            self.last()
        );
        let term = self.entry_term(index).expect("index is inside the log");
        let mut snapshot = Snapshot::default();
        snapshot.set_data(data.into());
        let metadata = snapshot.mut_metadata();
        metadata.index = index;
        metadata.term = term;
        metadata.set_conf_state(self.conf_state.clone());
        Ok(snapshot)
    }

    /// Installs a snapshot made by [`LogStore::snapshot_at`], dropping the entries it covers.
    pub fn compact(&mut self, snapshot: Snapshot) {
        let index = snapshot.get_metadata().index;
        assert!(index > self.snapshot_index() && index <= self.last());
        let drop = (index + 1 - self.first()) as usize;
        self.entries.drain(..drop);
        self.snapshot = snapshot;
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }
}

impl Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.slice(low, high, max_size.into())
            .map_err(raft::Error::Store)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        if index < self.snapshot_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.entry_term(index)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot_index() == 0 || self.snapshot_index() < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}

pub fn encode_log_record(entry: &Entry, out: &mut Vec<u8>) -> anyhow::Result<()> {
    let body = entry.write_to_bytes()?;
    anyhow::ensure!(
        body.len() <= MAX_ENTRY_BYTES,
        "metadata log entry of {} bytes",
        body.len()
    );
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

/// The entries of a log file in order of writing, and the length of its valid prefix (shorter
/// than the file when its tail is torn).
pub fn decode_log(bytes: &[u8]) -> (Vec<Entry>, usize) {
    let mut entries = Vec::new();
    let mut position = 0;
    while bytes.len() - position >= RECORD_HEADER_BYTES {
        let length = u32::from_le_bytes(bytes[position..position + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(bytes[position + 4..position + 8].try_into().unwrap());
        let start = position + RECORD_HEADER_BYTES;
        if length > MAX_ENTRY_BYTES || bytes.len() - start < length {
            break;
        }
        let body = &bytes[start..start + length];
        if crc32c::crc32c(body) != crc {
            break;
        }
        match Entry::parse_from_bytes(body) {
            Ok(entry) => entries.push(entry),
            Err(_) => break,
        }
        position = start + length;
    }
    (entries, position)
}

/// Folds the records of a log file into the contiguous log they describe after the snapshot at
/// `snapshot_index` of `snapshot_term`.
///
/// A crash between writing a snapshot and rewriting the log leaves the old log behind the new
/// snapshot. A record at or before the snapshot's index still supersedes the records past it that
/// came before it; and when the newest record at the snapshot's index has another term, the log
/// diverged from the snapshot (it was replaced by a leader's), so nothing past it is kept.
pub fn fold_log(
    records: Vec<Entry>,
    snapshot_index: u64,
    snapshot_term: u64,
) -> anyhow::Result<Vec<Entry>> {
    let mut log: Vec<Entry> = Vec::new();
    let mut term_at_snapshot = None;
    for entry in records {
        if entry.index == 0 {
            // Not an entry (a zero-filled tail decodes as one); it supersedes nothing.
            continue;
        }
        if entry.index <= snapshot_index {
            log.clear();
            term_at_snapshot = (entry.index == snapshot_index).then_some(entry.term);
            continue;
        }
        let first = snapshot_index + 1;
        let next = first + log.len() as u64;
        anyhow::ensure!(
            entry.index <= next,
            "metadata log hole: entry {} follows {}",
            entry.index,
            next - 1
        );
        log.truncate((entry.index - first) as usize);
        log.push(entry);
    }
    if term_at_snapshot.is_some_and(|term| term != snapshot_term) {
        log.clear();
    }
    Ok(log)
}

pub fn encode_checked<M: protobuf::Message>(message: &M) -> anyhow::Result<Vec<u8>> {
    let body = message.write_to_bytes()?;
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

pub fn decode_checked<M: protobuf::Message>(name: &str, bytes: &[u8]) -> anyhow::Result<M> {
    anyhow::ensure!(bytes.len() >= 4, "{name}: {} bytes, too short", bytes.len());
    let crc = u32::from_le_bytes(bytes[..4].try_into().unwrap());
    anyhow::ensure!(
        crc32c::crc32c(&bytes[4..]) == crc,
        "{name}: checksum mismatch"
    );
    Ok(M::parse_from_bytes(&bytes[4..])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8; 3].into(),
            ..Default::default()
        }
    }

    #[test]
    fn later_records_supersede_the_tail_and_a_torn_tail_ends_the_log() {
        let mut bytes = Vec::new();
        for e in [entry(1, 1), entry(2, 1), entry(3, 1), entry(2, 2)] {
            encode_log_record(&e, &mut bytes).unwrap();
        }
        let valid = bytes.len();
        encode_log_record(&entry(3, 2), &mut bytes).unwrap();
        bytes.truncate(bytes.len() - 2);
        let (records, length) = decode_log(&bytes);
        assert_eq!(length, valid);
        let log = fold_log(records, 0, 0).unwrap();
        assert_eq!(
            log.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(),
            vec![(1, 1), (2, 2)]
        );
    }

    #[test]
    fn a_flipped_bit_ends_the_log_and_holes_are_refused() {
        let mut bytes = Vec::new();
        encode_log_record(&entry(1, 1), &mut bytes).unwrap();
        let first = bytes.len();
        encode_log_record(&entry(2, 1), &mut bytes).unwrap();
        bytes[first + 9] ^= 1;
        assert_eq!(decode_log(&bytes).1, first);
        assert!(fold_log(vec![entry(1, 1), entry(3, 1)], 0, 0).is_err());
        assert_eq!(
            fold_log(vec![entry(1, 1), entry(5, 1), entry(6, 1)], 4, 1)
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn compaction_keeps_terms_for_matching() {
        let mut store = LogStore::new(ConfState::default());
        store
            .append(&[entry(1, 1), entry(2, 1), entry(3, 2)])
            .unwrap();
        let snapshot = store.snapshot_at(2, b"image".to_vec()).unwrap();
        store.compact(snapshot);
        assert_eq!(store.first(), 3);
        assert_eq!(store.term(2).unwrap(), 1);
        assert!(matches!(
            store.term(1),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert!(matches!(
            store.slice(2, 4, None),
            Err(StorageError::Compacted)
        ));
        assert_eq!(store.slice(3, 4, None).unwrap().len(), 1);
        store.append(&[entry(3, 3), entry(4, 3)]).unwrap();
        assert_eq!(store.last(), 4);
        assert_eq!(store.term(3).unwrap(), 3);
        assert!(store.append(&[entry(9, 3)]).is_err());
        assert!(store.snapshot_at(2, Vec::new()).is_err());
    }
}
