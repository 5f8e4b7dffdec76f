//! The leader-epoch cache: for every leader epoch whose leader appended to this log, the
//! first offset it wrote. Followers ask for it after a leader change (OffsetForLeaderEpoch,
//! KIP-101/KIP-279) to find where their log diverges from the leader's.
//!
//! Persisted as `leader-epoch-checkpoint`: a text file, a tag line, one `<epoch> <offset>` line
//! per entry and a CRC-32C line over everything before it. It is rewritten (atomically) when
//! an epoch starts, the log is truncated or its start moves. A stale or missing file is
//! reconciled at open against the batches themselves (`PartitionLog::open`).

use std::path::Path;

use super::file_io::{read_file_optional, write_file_atomic};
use super::LogError;

pub(crate) const LEADER_EPOCH_FILE_NAME: &str = "leader-epoch-checkpoint";

const TAG: &str = "riptide-leader-epochs v1";

/// Bound on the entries kept (and parsed): far more leader changes than a partition sees;
/// beyond it the oldest entries go (their offsets are long below every replica's end).
pub(crate) const LEADER_EPOCH_ENTRIES_MAX: usize = 4096;

/// "No epoch" and "no offset" in OffsetForLeaderEpoch answers.
pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EpochEntry {
    pub(crate) epoch: i32,
    pub(crate) start_offset: i64,
}

/// Entries strictly increasing in both epoch and start offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    pub(crate) fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub(crate) fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|entry| entry.epoch)
    }

    /// Records that `epoch` wrote a batch at `offset`. Returns true if the cache changed. A
    /// batch of an older epoch than the latest (compacted or replicated history) changes
    /// nothing; a newer epoch starting at or below the latest entry's offset replaces the
    /// entries it covers (they cannot have written anything that survives).
    pub(crate) fn assign(&mut self, epoch: i32, offset: i64) -> bool {
        if epoch < 0 {
            return false;
        }
        if let Some(last) = self.entries.last() {
            if epoch <= last.epoch {
                return false;
            }
        }
        while self
            .entries
            .last()
            .is_some_and(|last| last.start_offset >= offset)
        {
            self.entries.pop();
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset: offset,
        });
        if self.entries.len() > LEADER_EPOCH_ENTRIES_MAX {
            self.entries.remove(0);
        }
        self.check_invariants();
        true
    }

    /// Drops entries starting at or after `end_offset` (the log was truncated there).
    pub(crate) fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|entry| entry.start_offset < end_offset);
        before != self.entries.len()
    }

    /// The log now starts at `start_offset`: entries wholly before it go, the one covering it
    /// starts there.
    pub(crate) fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let covering = self
            .entries
            .partition_point(|entry| entry.start_offset <= start_offset);
        if covering == 0 {
            return false;
        }
        let mut changed = covering > 1;
        self.entries.drain(..covering - 1);
        let first = &mut self.entries[0];
        if first.start_offset < start_offset {
            first.start_offset = start_offset;
            changed = true;
        }
        changed
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    /// Kafka's answer to "where does `requested_epoch` end": the requested epoch (or the
    /// largest known epoch below it) and the start offset of the first epoch after it; the
    /// log end for the latest epoch; undefined for an epoch after the latest.
    pub(crate) fn end_offset_for(&self, requested_epoch: i32, log_end_offset: i64) -> (i32, i64) {
        let undefined = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        if requested_epoch == UNDEFINED_EPOCH {
            return undefined;
        }
        let Some(latest) = self.latest_epoch() else {
            return undefined;
        };
        if requested_epoch == latest {
            return (latest, log_end_offset);
        }
        let higher = self
            .entries
            .partition_point(|entry| entry.epoch <= requested_epoch);
        let Some(higher_entry) = self.entries.get(higher) else {
            return undefined; // After the latest epoch.
        };
        match higher.checked_sub(1).map(|floor| self.entries[floor]) {
            Some(floor_entry) => (floor_entry.epoch, higher_entry.start_offset),
            None => (requested_epoch, higher_entry.start_offset),
        }
    }

    /// [`end_offset_for`](Self::end_offset_for) as the leader in `current_epoch` answers it.
    /// Kafka writes the leader's epoch into its cache at the log end the moment it becomes
    /// leader; this cache learns an epoch with its first append. Until that append, the
    /// current epoch starts at the log end, so a consumer or follower asking for it (or for
    /// an epoch between the last one written and it) is not told "undefined" — which clients
    /// take for a truncated log (librdkafka resets its position).
    pub(crate) fn end_offset_for_leader(
        &self,
        requested_epoch: i32,
        current_epoch: i32,
        log_end_offset: i64,
    ) -> (i32, i64) {
        let latest = self.latest_epoch();
        let unrecorded =
            |epoch: i32| epoch >= 0 && epoch <= current_epoch && latest.is_none_or(|l| l < epoch);
        if unrecorded(current_epoch) && unrecorded(requested_epoch) {
            if requested_epoch == current_epoch {
                return (current_epoch, log_end_offset);
            }
            return (latest.unwrap_or(requested_epoch), log_end_offset);
        }
        self.end_offset_for(requested_epoch, log_end_offset)
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut body = format!("{TAG}\n");
        for entry in &self.entries {
            body.push_str(&format!("{} {}\n", entry.epoch, entry.start_offset));
        }
        let crc = crc32c::crc32c(body.as_bytes());
        body.push_str(&format!("{crc:08x}\n"));
        body.into_bytes()
    }

    /// Parses the file; `None` if it is malformed in any way.
    pub(crate) fn decode(contents: &[u8]) -> Option<LeaderEpochCache> {
        let text = std::str::from_utf8(contents).ok()?;
        let text = text.strip_suffix('\n')?;
        let (body, crc_hex) = text.rsplit_once('\n')?;
        let body_with_newline = &contents[..body.len() + 1];
        if crc32c::crc32c(body_with_newline) != u32::from_str_radix(crc_hex, 16).ok()? {
            return None;
        }
        let mut lines = body.split('\n');
        if lines.next()? != TAG {
            return None;
        }
        let mut cache = LeaderEpochCache::default();
        for line in lines {
            let (epoch, offset) = line.split_once(' ')?;
            let entry = EpochEntry {
                epoch: epoch.parse().ok()?,
                start_offset: offset.parse().ok()?,
            };
            let ordered = cache.entries.last().is_none_or(|last| {
                last.epoch < entry.epoch && last.start_offset < entry.start_offset
            });
            if !ordered || entry.epoch < 0 || entry.start_offset < 0 {
                return None;
            }
            if cache.entries.len() == LEADER_EPOCH_ENTRIES_MAX {
                return None;
            }
            cache.entries.push(entry);
        }
        Some(cache)
    }

    /// Reads the persisted cache; `None` if absent or malformed (a malformed file is logged).
    pub(crate) async fn read(dir: &Path) -> Result<Option<LeaderEpochCache>, LogError> {
        let Some(contents) = read_file_optional(dir.join(LEADER_EPOCH_FILE_NAME)).await? else {
            return Ok(None);
        };
        let cache = LeaderEpochCache::decode(&contents);
        if cache.is_none() {
            tracing::warn!(dir = %dir.display(), "ignoring malformed leader-epoch-checkpoint");
        }
        Ok(cache)
    }

    pub(crate) async fn write(&self, dir: &Path) -> Result<(), LogError> {
        write_file_atomic(dir, LEADER_EPOCH_FILE_NAME, self.encode(), true).await
    }

    fn check_invariants(&self) {
        debug_assert!(self.entries.windows(2).all(|pair| {
            pair[0].epoch < pair[1].epoch && pair[0].start_offset < pair[1].start_offset
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> LeaderEpochCache {
        let mut cache = LeaderEpochCache::default();
        for &(epoch, offset) in entries {
            assert!(cache.assign(epoch, offset));
        }
        cache
    }

    #[test]
    fn end_offsets_follow_kafka() {
        let cache = cache(&[(1, 0), (3, 10), (4, 25)]);
        assert_eq!(cache.end_offset_for(4, 40), (4, 40));
        assert_eq!(cache.end_offset_for(3, 40), (3, 25));
        // Epoch 2 never wrote: it ends where 3 starts, answered as the epoch below it.
        assert_eq!(cache.end_offset_for(2, 40), (1, 10));
        assert_eq!(cache.end_offset_for(1, 40), (1, 10));
        // Before the first known epoch: the first entry's start.
        assert_eq!(cache.end_offset_for(0, 40), (0, 0));
        assert_eq!(cache.end_offset_for(5, 40), (-1, -1));
        assert_eq!(cache.end_offset_for(-1, 40), (-1, -1));
        assert_eq!(
            LeaderEpochCache::default().end_offset_for(0, 0),
            (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)
        );
    }

    #[test]
    fn assign_ignores_older_epochs_and_replaces_overlapped_entries() {
        let mut cache = cache(&[(1, 0), (2, 10)]);
        assert!(!cache.assign(2, 15));
        assert!(!cache.assign(1, 20));
        assert!(cache.assign(5, 10));
        assert_eq!(
            cache.entries(),
            &[
                EpochEntry {
                    epoch: 1,
                    start_offset: 0
                },
                EpochEntry {
                    epoch: 5,
                    start_offset: 10
                }
            ]
        );
    }

    #[test]
    fn truncation_from_either_end() {
        let mut cache = cache(&[(1, 0), (2, 10), (3, 20)]);
        assert!(cache.truncate_from_end(20));
        assert_eq!(cache.latest_epoch(), Some(2));
        assert!(!cache.truncate_from_end(30));
        assert!(cache.truncate_from_start(12));
        assert_eq!(
            cache.entries(),
            &[EpochEntry {
                epoch: 2,
                start_offset: 12
            }]
        );
        assert!(!cache.truncate_from_start(5));
    }

    #[test]
    fn file_round_trip_and_damage() {
        let cache = cache(&[(0, 0), (7, 1234), (9, 99_999)]);
        let encoded = cache.encode();
        assert_eq!(LeaderEpochCache::decode(&encoded), Some(cache.clone()));
        for index in 0..encoded.len() {
            let mut damaged = encoded.clone();
            damaged[index] ^= 0x01;
            assert_ne!(LeaderEpochCache::decode(&damaged), Some(cache.clone()));
        }
        assert_eq!(
            LeaderEpochCache::decode(&LeaderEpochCache::default().encode()),
            Some(LeaderEpochCache::default())
        );
        assert_eq!(LeaderEpochCache::decode(b""), None);
    }

    #[test]
    fn the_leaders_current_epoch_starts_at_the_log_end_before_its_first_append() {
        let mut cache = LeaderEpochCache::default();
        // Empty log led in epoch 0: epoch 0 ends at the log end, not "undefined".
        assert_eq!(cache.end_offset_for_leader(0, 0, 0), (0, 0));
        assert_eq!(
            cache.end_offset_for_leader(1, 0, 0),
            (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)
        );
        cache.assign(2, 0);
        cache.assign(3, 10);
        // Led in epoch 6 with nothing written in it yet (log end 25).
        assert_eq!(cache.end_offset_for_leader(6, 6, 25), (6, 25));
        assert_eq!(cache.end_offset_for_leader(5, 6, 25), (3, 25));
        assert_eq!(cache.end_offset_for_leader(3, 6, 25), (3, 25));
        assert_eq!(cache.end_offset_for_leader(2, 6, 25), (2, 10));
        assert_eq!(
            cache.end_offset_for_leader(7, 6, 25),
            (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)
        );
        // Once epoch 6 wrote, the cache answers alone.
        cache.assign(6, 25);
        assert_eq!(cache.end_offset_for_leader(5, 6, 30), (3, 25));
        assert_eq!(cache.end_offset_for_leader(6, 6, 30), (6, 30));
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::LeaderEpochCache;

    /// The file contents for the given (epoch, start offset) entries.
    pub(crate) fn encode(entries: &[(i32, i64)]) -> Vec<u8> {
        let mut cache = LeaderEpochCache::default();
        for &(epoch, offset) in entries {
            cache.assign(epoch, offset);
        }
        cache.encode()
    }
}
