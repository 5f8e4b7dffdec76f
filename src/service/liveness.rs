//! Shard heartbeats: each shard stamps its slot from a timer on its own executor; the main
//! thread reads them to drive the systemd watchdog, and the admin endpoint reports them.
//!
//! One `AtomicU64` per shard, written by that shard only (relaxed stores), read by others: not
//! on the data path, no locks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Heartbeats of every shard and the broker's readiness, shared by the shards and the main
/// thread (`Arc<Liveness>`).
#[derive(Debug)]
pub struct Liveness {
    epoch: Instant,
    /// Milliseconds since `epoch` of each shard's last heartbeat, plus one (0 = never).
    beats_ms: Box<[AtomicU64]>,
    ready: AtomicBool,
}

impl Liveness {
    pub fn new(shard_count: usize) -> Liveness {
        Liveness {
            epoch: Instant::now(),
            beats_ms: (0..shard_count).map(|_| AtomicU64::new(0)).collect(),
            ready: AtomicBool::new(false),
        }
    }

    pub fn shard_count(&self) -> usize {
        self.beats_ms.len()
    }

    /// Called by shard `shard` from a timer on its executor.
    pub fn beat(&self, shard: usize) {
        let now_ms = self.epoch.elapsed().as_millis() as u64 + 1;
        self.beats_ms[shard].store(now_ms, Ordering::Relaxed);
    }

    /// Time since each shard's last heartbeat (`None`: it never stamped one).
    pub fn heartbeat_ages(&self) -> Vec<Option<Duration>> {
        let now_ms = self.epoch.elapsed().as_millis() as u64 + 1;
        self.beats_ms
            .iter()
            .map(|beat| match beat.load(Ordering::Relaxed) {
                0 => None,
                at_ms => Some(Duration::from_millis(now_ms.saturating_sub(at_ms))),
            })
            .collect()
    }

    /// Every shard is listening (set once start-up completed, cleared when shutdown begins).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_grow_until_the_next_beat() {
        let liveness = Liveness::new(2);
        assert_eq!(liveness.heartbeat_ages(), vec![None, None]);
        liveness.beat(1);
        std::thread::sleep(Duration::from_millis(30));
        let ages = liveness.heartbeat_ages();
        assert!(ages[0].is_none());
        assert!(ages[1].unwrap() >= Duration::from_millis(25), "{ages:?}");
        liveness.beat(1);
        assert!(liveness.heartbeat_ages()[1].unwrap() < Duration::from_millis(25));
        assert!(!liveness.is_ready());
        liveness.set_ready(true);
        assert!(liveness.is_ready());
    }
}
