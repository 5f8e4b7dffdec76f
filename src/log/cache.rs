//! The batch cache: the most recently written batches of each partition, kept as the `Bytes`
//! they were stored from, so fetches near the end of a log are served without disk I/O
//! (O_DIRECT writes bypass the page cache, so nothing else would keep them in memory).
//!
//! Two bounds, both in bytes:
//! - per partition (`LogConfig::cache_size_bytes`): one hot partition cannot take it all;
//! - per shard ([`set_shard_cache_max_bytes`], the broker's `log_cache_size_bytes_per_shard`):
//!   the memory the whole shard spends on cached batches. Past it, the shard's oldest cached
//!   append is evicted, whichever partition holds it (a global FIFO, so the tails of all
//!   partitions stay cached in proportion to how recently they were written).
//!
//! Each partition's entries are whole appends, contiguous in offsets and ending at the
//! written end; eviction only ever drops a partition's oldest entry, so that stays true.
//! The shard is one thread, so the shard-wide state is a thread-local.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::{Rc, Weak};

use bytes::Bytes;

pub(crate) struct CacheEntry {
    pub(crate) base_offset: i64,
    /// Offset after the entry's last batch.
    pub(crate) next_offset: i64,
    /// One or more whole batches back to back.
    pub(crate) data: Bytes,
    /// Shard-wide insertion number; orders entries in the shard's eviction queue.
    sequence: u64,
}

impl CacheEntry {
    pub(crate) fn new(base_offset: i64, next_offset: i64, data: Bytes) -> Self {
        CacheEntry {
            base_offset,
            next_offset,
            data,
            sequence: 0,
        }
    }
}

/// Default shard budget until the broker sets one: 256 MiB.
const DEFAULT_SHARD_CACHE_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// Stale queue items tolerated beyond the live ones before the queue is rebuilt.
const STALE_QUEUE_SLACK: usize = 1024;

struct ShardBudget {
    max_bytes: u64,
    total_bytes: u64,
    /// (cache id, entry sequence, size) in insertion order. Items whose entry was already
    /// dropped for another reason (per-partition bound, clear) are stale and skipped.
    queue: VecDeque<(u64, u64, u64)>,
    stale_items: usize,
    caches: HashMap<u64, Weak<RefCell<TailCache>>>,
    next_cache_id: u64,
    next_sequence: u64,
}

thread_local! {
    static BUDGET: RefCell<ShardBudget> = RefCell::new(ShardBudget {
        max_bytes: DEFAULT_SHARD_CACHE_MAX_BYTES,
        total_bytes: 0,
        queue: VecDeque::new(),
        stale_items: 0,
        caches: HashMap::new(),
        next_cache_id: 0,
        next_sequence: 0,
    });
    static EVICTIONS: Cell<u64> = const { Cell::new(0) };
}

/// Sets this shard's cache budget (call on the shard's thread, at start).
pub fn set_shard_cache_max_bytes(max_bytes: u64) {
    BUDGET.with(|budget| budget.borrow_mut().max_bytes = max_bytes);
    enforce_shard_budget();
}

/// Bytes cached on this shard, over all partitions.
pub fn shard_cached_bytes() -> u64 {
    BUDGET.with(|budget| budget.borrow().total_bytes)
}

/// Entries evicted to keep this shard within its budget (for metrics).
pub fn shard_cache_evictions() -> u64 {
    EVICTIONS.with(Cell::get)
}

pub(crate) struct TailCache {
    id: u64,
    entries: VecDeque<CacheEntry>,
    size_bytes: u64,
    max_size_bytes: u64,
}

impl TailCache {
    /// A cache registered with this shard's budget.
    pub(crate) fn new_shared(max_size_bytes: u64) -> Rc<RefCell<TailCache>> {
        let id = BUDGET.with(|budget| {
            let mut budget = budget.borrow_mut();
            budget.next_cache_id += 1;
            budget.next_cache_id
        });
        let cache = Rc::new(RefCell::new(TailCache {
            id,
            entries: VecDeque::new(),
            size_bytes: 0,
            max_size_bytes,
        }));
        BUDGET.with(|budget| {
            budget.borrow_mut().caches.insert(id, Rc::downgrade(&cache));
        });
        cache
    }

    /// First offset served from memory, if any.
    pub(crate) fn start_offset(&self) -> Option<i64> {
        self.entries.front().map(|entry| entry.base_offset)
    }

    pub(crate) fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    pub(crate) fn set_max_size_bytes(&mut self, max_size_bytes: u64) {
        self.max_size_bytes = max_size_bytes;
        self.evict_to_own_bound();
    }

    /// Adds the next written append, evicts this partition's oldest entries down to its own
    /// bound, then the shard's oldest entries down to the shard bound. An append larger than
    /// the partition bound is not kept.
    pub(crate) fn push(cache: &Rc<RefCell<TailCache>>, mut entry: CacheEntry) {
        {
            let mut this = cache.borrow_mut();
            if let Some(last) = this.entries.back() {
                assert_eq!(
                    last.next_offset, entry.base_offset,
                    "cache must stay contiguous"
                );
            }
            assert!(entry.next_offset > entry.base_offset);
            let size_bytes = entry.data.len() as u64;
            entry.sequence = BUDGET.with(|budget| {
                let mut budget = budget.borrow_mut();
                budget.next_sequence += 1;
                let sequence = budget.next_sequence;
                budget.queue.push_back((this.id, sequence, size_bytes));
                budget.total_bytes += size_bytes;
                sequence
            });
            this.size_bytes += size_bytes;
            this.entries.push_back(entry);
            this.evict_to_own_bound();
        }
        enforce_shard_budget();
    }

    fn evict_to_own_bound(&mut self) {
        while self.size_bytes > self.max_size_bytes {
            if self.pop_front().is_none() {
                break;
            }
            BUDGET.with(|budget| budget.borrow_mut().stale_items += 1);
        }
        self.check_size();
    }

    /// Drops the oldest entry, keeping the shard total in step; returns its sequence.
    fn pop_front(&mut self) -> Option<u64> {
        let evicted = self.entries.pop_front()?;
        let size_bytes = evicted.data.len() as u64;
        self.size_bytes -= size_bytes;
        BUDGET.with(|budget| budget.borrow_mut().total_bytes -= size_bytes);
        Some(evicted.sequence)
    }

    /// Drops every entry starting below `offset` (compaction rewrote those offsets on disk:
    /// reads must see the compacted data, not the cached original).
    pub(crate) fn evict_before(&mut self, offset: i64) {
        while self
            .entries
            .front()
            .is_some_and(|entry| entry.base_offset < offset)
        {
            self.pop_front();
            BUDGET.with(|budget| budget.borrow_mut().stale_items += 1);
        }
    }

    pub(crate) fn clear(&mut self) {
        while let Some(entry) = self.entries.pop_front() {
            let size_bytes = entry.data.len() as u64;
            BUDGET.with(|budget| {
                let mut budget = budget.borrow_mut();
                budget.total_bytes -= size_bytes;
                budget.stale_items += 1;
            });
        }
        self.size_bytes = 0;
    }

    /// Entries from the one containing `offset` on.
    pub(crate) fn entries_from(&self, offset: i64) -> impl Iterator<Item = &CacheEntry> {
        let first = self
            .entries
            .partition_point(|entry| entry.next_offset <= offset);
        self.entries.range(first..)
    }

    fn check_size(&self) {
        debug_assert_eq!(
            self.size_bytes,
            self.entries
                .iter()
                .map(|e| e.data.len() as u64)
                .sum::<u64>()
        );
    }

    fn holds_sequence(&self, sequence: u64) -> bool {
        let at = self
            .entries
            .partition_point(|entry| entry.sequence < sequence);
        self.entries
            .get(at)
            .is_some_and(|entry| entry.sequence == sequence)
    }
}

impl Drop for TailCache {
    fn drop(&mut self) {
        let size_bytes = self.size_bytes;
        let id = self.id;
        let entry_count = self.entries.len();
        // `try_with`: the thread-local may already be gone at thread exit.
        let _ = BUDGET.try_with(|budget| {
            if let Ok(mut budget) = budget.try_borrow_mut() {
                budget.total_bytes -= size_bytes;
                budget.stale_items += entry_count;
                budget.caches.remove(&id);
            }
        });
    }
}

/// Evicts the shard's oldest cached appends until the total is within the budget, and
/// rebuilds the eviction queue when stale items dominate it.
fn enforce_shard_budget() {
    loop {
        // Pop under the budget borrow, act on the cache after releasing it.
        let item = BUDGET.with(|budget| {
            let mut budget = budget.borrow_mut();
            if budget.total_bytes <= budget.max_bytes {
                return None;
            }
            let (id, sequence, _) = budget
                .queue
                .pop_front()
                .expect("cached bytes have queue items");
            let cache = budget.caches.get(&id).and_then(Weak::upgrade);
            Some((cache, sequence))
        });
        let Some((cache, sequence)) = item else {
            break;
        };
        let evicted = cache.as_ref().is_some_and(|cache| {
            let mut cache = cache.borrow_mut();
            if cache.entries.front().map(|entry| entry.sequence) == Some(sequence) {
                cache.pop_front();
                true
            } else {
                false
            }
        });
        drop(cache);
        if evicted {
            EVICTIONS.with(|count| count.set(count.get() + 1));
        } else {
            BUDGET.with(|budget| {
                let mut budget = budget.borrow_mut();
                budget.stale_items = budget.stale_items.saturating_sub(1);
            });
        }
    }
    let rebuild = BUDGET.with(|budget| {
        let budget = budget.borrow();
        budget.stale_items > STALE_QUEUE_SLACK && budget.stale_items * 2 > budget.queue.len()
    });
    if rebuild {
        rebuild_queue();
    }
}

/// Drops queue items whose entries are gone. O(queue length), amortised over the stale items
/// that triggered it.
fn rebuild_queue() {
    let (queue, caches) = BUDGET.with(|budget| {
        let mut budget = budget.borrow_mut();
        let caches: HashMap<u64, Rc<RefCell<TailCache>>> = budget
            .caches
            .iter()
            .filter_map(|(id, weak)| Some((*id, weak.upgrade()?)))
            .collect();
        (std::mem::take(&mut budget.queue), caches)
    });
    let live: VecDeque<(u64, u64, u64)> = queue
        .into_iter()
        .filter(|(id, sequence, _)| {
            caches
                .get(id)
                .is_some_and(|cache| cache.borrow().holds_sequence(*sequence))
        })
        .collect();
    drop(caches);
    BUDGET.with(|budget| {
        let mut budget = budget.borrow_mut();
        budget.queue = live;
        budget.stale_items = 0;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(base_offset: i64, next_offset: i64, size_bytes: usize) -> CacheEntry {
        CacheEntry::new(base_offset, next_offset, Bytes::from(vec![0u8; size_bytes]))
    }

    #[test]
    fn evicts_oldest_beyond_partition_bound() {
        std::thread::spawn(|| {
            let cache = TailCache::new_shared(250);
            TailCache::push(&cache, entry(0, 10, 100));
            TailCache::push(&cache, entry(10, 20, 100));
            assert_eq!(cache.borrow().start_offset(), Some(0));
            TailCache::push(&cache, entry(20, 30, 100));
            assert_eq!(cache.borrow().start_offset(), Some(10));
            assert_eq!(cache.borrow().size_bytes(), 200);
            assert_eq!(shard_cached_bytes(), 200);
            assert_eq!(
                cache.borrow().entries_from(15).next().unwrap().base_offset,
                10
            );
            assert_eq!(
                cache.borrow().entries_from(20).next().unwrap().base_offset,
                20
            );
            assert!(cache.borrow().entries_from(30).next().is_none());
            TailCache::push(&cache, entry(30, 31, 1000));
            assert_eq!(cache.borrow().start_offset(), None);
            assert_eq!(cache.borrow().size_bytes(), 0);
            assert_eq!(shard_cached_bytes(), 0);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn shard_budget_evicts_globally_oldest() {
        std::thread::spawn(|| {
            set_shard_cache_max_bytes(300);
            let a = TailCache::new_shared(1000);
            let b = TailCache::new_shared(1000);
            TailCache::push(&a, entry(0, 1, 100)); // oldest
            TailCache::push(&b, entry(0, 1, 100));
            TailCache::push(&a, entry(1, 2, 100));
            assert_eq!(shard_cached_bytes(), 300);
            TailCache::push(&b, entry(1, 2, 100)); // evicts a's first
            assert_eq!(a.borrow().start_offset(), Some(1));
            assert_eq!(b.borrow().start_offset(), Some(0));
            assert_eq!(shard_cached_bytes(), 300);
            // Dropping a cache returns its bytes.
            drop(a);
            assert_eq!(shard_cached_bytes(), 200);
            TailCache::push(&b, entry(2, 3, 100));
            TailCache::push(&b, entry(3, 4, 100)); // stale items of `a` are skipped
            assert_eq!(b.borrow().start_offset(), Some(1));
            assert_eq!(shard_cached_bytes(), 300);
            // Many own-bound evictions leave stale items; the queue stays bounded.
            let c = TailCache::new_shared(10);
            for offset in 0..10_000 {
                TailCache::push(&c, entry(offset, offset + 1, 10));
            }
            let queue_len = BUDGET.with(|budget| budget.borrow().queue.len());
            assert!(queue_len < 3 * STALE_QUEUE_SLACK, "{queue_len}");
            // c's first push went past the shard bound and evicted b's oldest.
            assert_eq!(b.borrow().start_offset(), Some(2));
            assert_eq!(shard_cached_bytes(), 210);
        })
        .join()
        .unwrap();
    }
}
