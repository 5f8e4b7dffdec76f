//! Committed offsets of one group, and the retention rule that expires them.
//!
//! Bound: offsets exist only for partitions that exist (commits for unknown topics are refused,
//! offsets of deleted topics are dropped by the retention pass), so a group holds at most one entry
//! per partition of the cluster.

use std::collections::{BTreeMap, HashMap, HashSet};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetEntry {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// Offsets by topic, then partition (ordered, so "fetch all" answers in a stable order).
#[derive(Debug, Default)]
pub struct GroupOffsets {
    topics: BTreeMap<String, BTreeMap<i32, OffsetEntry>>,
    /// Commits appended but not yet written, per partition (OffsetFetch `require_stable`).
    pending: HashMap<(String, i32), u32>,
    count: usize,
}

impl GroupOffsets {
    pub fn get(&self, topic: &str, partition: i32) -> Option<&OffsetEntry> {
        self.topics.get(topic)?.get(&partition)
    }

    pub fn insert(&mut self, topic: &str, partition: i32, entry: OffsetEntry) {
        let partitions = match self.topics.get_mut(topic) {
            Some(partitions) => partitions,
            None => self.topics.entry(topic.to_string()).or_default(),
        };
        if partitions.insert(partition, entry).is_none() {
            self.count += 1;
        }
    }

    pub fn remove(&mut self, topic: &str, partition: i32) -> Option<OffsetEntry> {
        let partitions = self.topics.get_mut(topic)?;
        let removed = partitions.remove(&partition);
        if partitions.is_empty() {
            self.topics.remove(topic);
        }
        if removed.is_some() {
            self.count -= 1;
        }
        removed
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Every offset, by topic and partition.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i32, &OffsetEntry)> {
        self.topics.iter().flat_map(|(topic, partitions)| {
            partitions
                .iter()
                .map(move |(partition, entry)| (topic.as_str(), *partition, entry))
        })
    }

    /// Partitions of `topic` that have an offset.
    pub fn partitions_of(&self, topic: &str) -> Vec<i32> {
        self.topics
            .get(topic)
            .map(|partitions| partitions.keys().copied().collect())
            .unwrap_or_default()
    }

    pub fn add_pending(&mut self, topic: &str, partition: i32) {
        *self
            .pending
            .entry((topic.to_string(), partition))
            .or_default() += 1;
    }

    pub fn remove_pending(&mut self, topic: &str, partition: i32) {
        let key = (topic.to_string(), partition);
        if let Some(count) = self.pending.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                self.pending.remove(&key);
            }
        }
    }

    pub fn has_pending(&self, topic: &str, partition: i32) -> bool {
        self.pending.contains_key(&(topic.to_string(), partition))
    }

    pub fn has_any_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// How a group's offsets age out (Kafka's `offsets.retention.minutes` rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expiry {
    /// No member: every offset expires `retention` after the later of its commit and the moment
    /// the group became empty.
    Empty { since_ms: i64 },
    /// Members consume `subscribed`: offsets of other topics expire `retention` after their
    /// commit. `None`: subscriptions unknown, nothing expires.
    Active { subscribed: Option<HashSet<String>> },
}

/// Offsets past retention, plus offsets of topics that no longer exist (`topic_exists`).
pub fn expired_offsets(
    offsets: &GroupOffsets,
    expiry: &Expiry,
    now_ms: i64,
    retention_ms: i64,
    topic_exists: impl Fn(&str, i32) -> bool,
) -> Vec<(String, i32)> {
    offsets
        .iter()
        .filter(|(topic, partition, _)| !offsets.has_pending(topic, *partition))
        .filter(|(topic, partition, entry)| {
            if !topic_exists(topic, *partition) {
                return true;
            }
            let base_ms = match expiry {
                Expiry::Empty { since_ms } => entry.commit_timestamp_ms.max(*since_ms),
                Expiry::Active { subscribed: None } => return false,
                Expiry::Active {
                    subscribed: Some(topics),
                } => {
                    if topics.contains(*topic) {
                        return false;
                    }
                    entry.commit_timestamp_ms
                }
            };
            base_ms.saturating_add(retention_ms) <= now_ms
        })
        .map(|(topic, partition, _)| (topic.to_string(), partition))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(offset: i64, at_ms: i64) -> OffsetEntry {
        OffsetEntry {
            offset,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp_ms: at_ms,
        }
    }

    #[test]
    fn insert_remove_and_count() {
        let mut offsets = GroupOffsets::default();
        offsets.insert("a", 0, entry(1, 0));
        offsets.insert("a", 0, entry(2, 0));
        offsets.insert("b", 3, entry(3, 0));
        assert_eq!(offsets.len(), 2);
        assert_eq!(offsets.get("a", 0).unwrap().offset, 2);
        assert_eq!(offsets.partitions_of("b"), vec![3]);
        assert!(offsets.remove("a", 0).is_some());
        assert!(offsets.remove("a", 0).is_none());
        assert_eq!(offsets.len(), 1);
        offsets.add_pending("b", 3);
        offsets.add_pending("b", 3);
        offsets.remove_pending("b", 3);
        assert!(offsets.has_pending("b", 3));
        offsets.remove_pending("b", 3);
        assert!(!offsets.has_any_pending());
    }

    #[test]
    fn retention_of_empty_and_active_groups() {
        let minute = 60_000;
        let mut offsets = GroupOffsets::default();
        offsets.insert("old", 0, entry(1, 0));
        offsets.insert("fresh", 0, entry(1, 9 * minute));
        offsets.insert("gone", 0, entry(1, 9 * minute));
        let exists = |topic: &str, _| topic != "gone";
        // Empty since minute 5, retention 5 minutes, now minute 11: "old" (base = minute 5)
        // expires, "fresh" (base = its commit at minute 9) does not, "gone" always does.
        let mut expired = expired_offsets(
            &offsets,
            &Expiry::Empty {
                since_ms: 5 * minute,
            },
            11 * minute,
            5 * minute,
            exists,
        );
        expired.sort();
        assert_eq!(expired, vec![("gone".into(), 0), ("old".into(), 0)]);
        // Active group subscribed to "old": only unsubscribed, old-enough offsets expire.
        let subscribed = Expiry::Active {
            subscribed: Some(HashSet::from(["old".to_string()])),
        };
        let expired = expired_offsets(&offsets, &subscribed, 15 * minute, 5 * minute, exists);
        assert_eq!(
            expired,
            vec![("fresh".to_string(), 0), ("gone".to_string(), 0)]
        );
        let unknown = Expiry::Active { subscribed: None };
        assert_eq!(
            expired_offsets(&offsets, &unknown, i64::MAX, 1, exists),
            vec![("gone".to_string(), 0)]
        );
        // A commit in flight is never expired under it.
        offsets.add_pending("gone", 0);
        assert!(expired_offsets(&offsets, &unknown, i64::MAX, 1, exists).is_empty());
    }
}
