//! The pure part of replication: what a leader knows of its followers, the high watermark it
//! may reach, the ISR it wants, and where a follower truncates after a leader change. No I/O,
//! no clocks of its own (time comes in as arguments), so every rule is unit-tested.

use std::time::{Duration, Instant};

/// A follower's log end offset before its first fetch in this leader epoch.
pub const UNKNOWN_OFFSET: i64 = -1;

/// What the leader knows of one follower, from its fetches.
#[derive(Debug, Clone)]
pub struct FollowerProgress {
    pub node_id: i32,
    /// The follower's log end (its fetch offset), or [`UNKNOWN_OFFSET`].
    pub log_end_offset: i64,
    /// When the follower last had everything the leader had (Kafka's lastCaughtUpTimeMs).
    pub last_caught_up: Instant,
    /// The leader's log end and the time at the follower's previous fetch.
    previous_fetch: Option<(i64, Instant)>,
}

/// A leader's view of one partition for one leader epoch.
#[derive(Debug, Clone)]
pub struct LeaderState {
    pub node_id: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// The leader's log end when it took over: a follower joins the ISR only once it has
    /// everything from before this epoch (Kafka's leaderEpochStartOffset rule).
    pub epoch_start_offset: i64,
    pub followers: Vec<FollowerProgress>,
}

impl LeaderState {
    pub fn new(
        node_id: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        replicas: &[i32],
        isr: &[i32],
        leader_end_offset: i64,
        now: Instant,
    ) -> LeaderState {
        let mut state = LeaderState {
            node_id,
            leader_epoch,
            partition_epoch,
            replicas: Vec::new(),
            isr: isr.to_vec(),
            epoch_start_offset: leader_end_offset,
            followers: Vec::new(),
        };
        state.set_replicas(replicas, now);
        state
    }

    /// Follows a change of the replica set or ISR (committed metadata), keeping what is known
    /// of followers that stay.
    pub fn update(&mut self, partition_epoch: i32, replicas: &[i32], isr: &[i32], now: Instant) {
        self.partition_epoch = partition_epoch;
        self.isr = isr.to_vec();
        self.set_replicas(replicas, now);
    }

    fn set_replicas(&mut self, replicas: &[i32], now: Instant) {
        self.replicas = replicas.to_vec();
        let me = self.node_id;
        self.followers.retain(|f| replicas.contains(&f.node_id));
        for &id in replicas.iter().filter(|&&id| id != me) {
            if !self.followers.iter().any(|f| f.node_id == id) {
                // A follower starts with a full lag allowance (Kafka resets lastCaughtUpTime
                // to the time leadership began).
                self.followers.push(FollowerProgress {
                    node_id: id,
                    log_end_offset: UNKNOWN_OFFSET,
                    last_caught_up: now,
                    previous_fetch: None,
                });
            }
        }
    }

    /// Records a follower's fetch at `fetch_offset` while the leader's log ends at
    /// `leader_end_offset`. Returns false for a node that is not a follower of this partition.
    pub fn record_fetch(
        &mut self,
        replica: i32,
        fetch_offset: i64,
        leader_end_offset: i64,
        now: Instant,
    ) -> bool {
        let Some(follower) = self.followers.iter_mut().find(|f| f.node_id == replica) else {
            return false;
        };
        follower.log_end_offset = fetch_offset;
        // Caught up now, or caught up with what the leader had at the previous fetch.
        if fetch_offset >= leader_end_offset {
            follower.last_caught_up = now;
        } else if let Some((previous_end, previous_time)) = follower.previous_fetch {
            if fetch_offset >= previous_end {
                follower.last_caught_up = follower.last_caught_up.max(previous_time);
            }
        }
        follower.previous_fetch = Some((leader_end_offset, now));
        true
    }

    /// How far the high watermark may go: the lowest log end among the ISR's followers
    /// (`i64::MAX` when the leader is alone in the ISR). A follower in the ISR that has not
    /// fetched in this epoch holds it where it is.
    pub fn high_watermark_limit(&self) -> i64 {
        self.isr
            .iter()
            .filter(|&&id| id != self.node_id)
            .map(|&id| {
                self.followers
                    .iter()
                    .find(|f| f.node_id == id)
                    .map_or(UNKNOWN_OFFSET, |f| f.log_end_offset)
            })
            .min()
            .unwrap_or(i64::MAX)
    }

    /// The ISR the leader should propose, if it differs from the current one: followers that
    /// have not caught up for `lag_max` leave; followers that reached the high watermark and
    /// the start of this epoch join. The leader always stays.
    pub fn wanted_isr(
        &self,
        high_watermark: i64,
        now: Instant,
        lag_max: Duration,
    ) -> Option<Vec<i32>> {
        let mut wanted: Vec<i32> = Vec::with_capacity(self.replicas.len());
        for &id in &self.replicas {
            if id == self.node_id {
                wanted.push(id);
                continue;
            }
            let Some(follower) = self.followers.iter().find(|f| f.node_id == id) else {
                continue;
            };
            let in_isr = self.isr.contains(&id);
            let lagging = now.saturating_duration_since(follower.last_caught_up) > lag_max;
            let caught_up = follower.log_end_offset >= high_watermark
                && follower.log_end_offset >= self.epoch_start_offset;
            if !lagging && (in_isr || caught_up) {
                wanted.push(id);
            }
        }
        let mut current = self.isr.clone();
        current.sort_unstable();
        let mut sorted = wanted.clone();
        sorted.sort_unstable();
        (sorted != current).then_some(wanted)
    }
}

/// Where a follower cuts its log after asking the leader where an epoch ends
/// (KIP-101/KIP-279), and whether it must ask again (the leader answered with an older
/// epoch than the one asked for, so the follower's own end for that epoch decides the next
/// question).
///
/// - `leader_answer`: (epoch, end offset) from OffsetForLeaderEpoch.
/// - `local_end_for`: this log's own answer for an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    pub offset: i64,
    pub completed: bool,
}

pub fn truncation_offset(
    leader_answer: (i32, i64),
    local_end_offset: i64,
    local_high_watermark: i64,
    local_end_for: impl Fn(i32) -> (i32, i64),
) -> Truncation {
    let (leader_epoch, leader_end_offset) = leader_answer;
    if leader_end_offset < 0 {
        // The leader knows nothing of our epochs: keep only what is known committed.
        return Truncation {
            offset: local_high_watermark.min(local_end_offset),
            completed: true,
        };
    }
    if leader_epoch < 0 {
        return Truncation {
            offset: leader_end_offset.min(local_end_offset),
            completed: true,
        };
    }
    let (local_epoch, local_end) = local_end_for(leader_epoch);
    if local_epoch < 0 || local_end < 0 {
        return Truncation {
            offset: leader_end_offset.min(local_end_offset),
            completed: true,
        };
    }
    if local_epoch != leader_epoch {
        // We never had the epoch the leader ends on: cut to where our older epoch ends and
        // ask again with it.
        return Truncation {
            offset: local_end.min(local_end_offset),
            completed: false,
        };
    }
    Truncation {
        offset: leader_end_offset.min(local_end).min(local_end_offset),
        completed: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(now: Instant) -> LeaderState {
        LeaderState::new(1, 5, 10, &[1, 2, 3], &[1, 2, 3], 100, now)
    }

    #[test]
    fn high_watermark_waits_for_every_isr_follower() {
        let now = Instant::now();
        let mut state = leader(now);
        assert_eq!(state.high_watermark_limit(), UNKNOWN_OFFSET);
        assert!(state.record_fetch(2, 120, 150, now));
        assert_eq!(state.high_watermark_limit(), UNKNOWN_OFFSET);
        assert!(state.record_fetch(3, 140, 150, now));
        assert_eq!(state.high_watermark_limit(), 120);
        assert!(!state.record_fetch(9, 140, 150, now));
        state.update(11, &[1, 2, 3], &[1, 3], now);
        assert_eq!(state.high_watermark_limit(), 140);
        state.update(12, &[1, 2, 3], &[1], now);
        assert_eq!(state.high_watermark_limit(), i64::MAX);
    }

    #[test]
    fn lagging_followers_leave_and_caught_up_followers_join() {
        let start = Instant::now();
        let lag = Duration::from_secs(30);
        let mut state = leader(start);
        let later = start + Duration::from_secs(31);
        // Follower 2 keeps fetching the leader's end; follower 3 never fetches.
        state.record_fetch(2, 150, 150, later);
        assert_eq!(state.wanted_isr(150, later, lag), Some(vec![1, 2]));
        state.update(11, &[1, 2, 3], &[1, 2], later);
        assert_eq!(state.wanted_isr(150, later, lag), None);
        // Follower 3 fetches behind the high watermark: not yet.
        let t = later + Duration::from_secs(1);
        state.record_fetch(3, 90, 150, t);
        assert_eq!(state.wanted_isr(150, t, lag), None);
        // It reaches the high watermark and the epoch start: it joins.
        state.record_fetch(3, 150, 150, t);
        assert_eq!(state.wanted_isr(150, t, lag), Some(vec![1, 2, 3]));
    }

    #[test]
    fn a_follower_that_keeps_up_with_previous_fetches_is_caught_up() {
        let start = Instant::now();
        let lag = Duration::from_secs(30);
        let mut state = leader(start);
        // Steady load: each fetch reaches what the leader had at the previous fetch.
        let mut leader_end = 100;
        for second in 1..=60u64 {
            let t = start + Duration::from_secs(second);
            state.record_fetch(2, leader_end, leader_end + 10, t);
            state.record_fetch(3, leader_end, leader_end + 10, t);
            leader_end += 10;
        }
        let t = start + Duration::from_secs(60);
        assert_eq!(state.wanted_isr(100, t, lag), None);
        // Follower 3 stops making progress: it leaves after the lag time.
        for second in 61..=95u64 {
            let t = start + Duration::from_secs(second);
            state.record_fetch(2, leader_end, leader_end + 10, t);
            state.record_fetch(3, 200, leader_end + 10, t);
            leader_end += 10;
        }
        let t = start + Duration::from_secs(95);
        assert_eq!(state.wanted_isr(100, t, lag), Some(vec![1, 2]));
    }

    #[test]
    fn truncation_follows_kip_279() {
        // Local epochs: 1 from 0, 3 from 50, 4 from 80; log end 120, high watermark 60.
        let local = |epoch: i32| match epoch {
            0 => (0, 0),
            1 | 2 => (1, 50),
            3 => (3, 80),
            4 => (4, 120),
            _ => (-1, -1),
        };
        // Leader has epoch 4 and ends it at 100: cut the tail after 100.
        assert_eq!(
            truncation_offset((4, 100), 120, 60, local),
            Truncation {
                offset: 100,
                completed: true
            }
        );
        // Leader never had epoch 4; its epoch 3 ends at 90 (ours at 80): cut at 80.
        assert_eq!(
            truncation_offset((3, 90), 120, 60, local),
            Truncation {
                offset: 80,
                completed: true
            }
        );
        // Leader answers epoch 2, which we never had: cut to where our epoch 1 ends, ask again.
        assert_eq!(
            truncation_offset((2, 70), 120, 60, local),
            Truncation {
                offset: 50,
                completed: false
            }
        );
        // The leader knows nothing: keep what was committed.
        assert_eq!(
            truncation_offset((-1, -1), 120, 60, local),
            Truncation {
                offset: 60,
                completed: true
            }
        );
        // Leader's end beyond ours: nothing to cut.
        assert_eq!(
            truncation_offset((4, 500), 120, 60, local),
            Truncation {
                offset: 120,
                completed: true
            }
        );
    }
}
