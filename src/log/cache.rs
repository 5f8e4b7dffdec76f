//! The tail cache: the most recently written batches, kept as the `Bytes` they were stored
//! from, so fetches near the end of the log are served without disk I/O (O_DIRECT writes
//! bypass the page cache, so nothing else would keep them in memory).
//!
//! Entries are whole appends, contiguous in offsets and ending at the written end; eviction
//! drops the oldest entries once the total passes the byte bound.

use std::collections::VecDeque;

use bytes::Bytes;

pub(crate) struct CacheEntry {
    pub(crate) base_offset: i64,
    /// Offset after the entry's last batch.
    pub(crate) next_offset: i64,
    /// One or more whole batches back to back.
    pub(crate) data: Bytes,
}

pub(crate) struct TailCache {
    entries: VecDeque<CacheEntry>,
    size_bytes: u64,
    max_size_bytes: u64,
}

impl TailCache {
    pub(crate) fn new(max_size_bytes: u64) -> Self {
        TailCache {
            entries: VecDeque::new(),
            size_bytes: 0,
            max_size_bytes,
        }
    }

    /// First offset served from memory, if any.
    pub(crate) fn start_offset(&self) -> Option<i64> {
        self.entries.front().map(|entry| entry.base_offset)
    }

    pub(crate) fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Adds the next written append and evicts from the front down to the bound. An append
    /// larger than the whole bound is not kept.
    pub(crate) fn push(&mut self, entry: CacheEntry) {
        if let Some(last) = self.entries.back() {
            assert_eq!(
                last.next_offset, entry.base_offset,
                "cache must stay contiguous"
            );
        }
        assert!(entry.next_offset > entry.base_offset);
        self.size_bytes += entry.data.len() as u64;
        self.entries.push_back(entry);
        while self.size_bytes > self.max_size_bytes {
            let Some(evicted) = self.entries.pop_front() else {
                break;
            };
            self.size_bytes -= evicted.data.len() as u64;
        }
        debug_assert_eq!(
            self.size_bytes,
            self.entries
                .iter()
                .map(|e| e.data.len() as u64)
                .sum::<u64>()
        );
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.size_bytes = 0;
    }

    /// Entries from the one containing `offset` on.
    pub(crate) fn entries_from(&self, offset: i64) -> impl Iterator<Item = &CacheEntry> {
        let first = self
            .entries
            .partition_point(|entry| entry.next_offset <= offset);
        self.entries.range(first..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(base_offset: i64, next_offset: i64, size_bytes: usize) -> CacheEntry {
        CacheEntry {
            base_offset,
            next_offset,
            data: Bytes::from(vec![0u8; size_bytes]),
        }
    }

    #[test]
    fn evicts_oldest_beyond_bound() {
        let mut cache = TailCache::new(250);
        cache.push(entry(0, 10, 100));
        cache.push(entry(10, 20, 100));
        assert_eq!(cache.start_offset(), Some(0));
        cache.push(entry(20, 30, 100));
        assert_eq!(cache.start_offset(), Some(10));
        assert_eq!(cache.size_bytes(), 200);
        assert_eq!(cache.entries_from(15).next().unwrap().base_offset, 10);
        assert_eq!(cache.entries_from(20).next().unwrap().base_offset, 20);
        assert!(cache.entries_from(30).next().is_none());
        cache.push(entry(30, 31, 1000));
        assert_eq!(cache.start_offset(), None);
        assert_eq!(cache.size_bytes(), 0);
    }
}
