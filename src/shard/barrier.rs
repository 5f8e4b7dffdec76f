//! A barrier for shard start-up and shutdown phases.
//!
//! Blocking the executor thread on `std::sync::Barrier` would stop it serving tasks from other
//! shards, which they may need to reach the barrier themselves. This one yields to the executor
//! with a short timer while it waits; it is used twice in a process's life, never on the data path.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

const POLL_INTERVAL_MS: u64 = 2;

pub struct ShardBarrier {
    parties: usize,
    arrived: AtomicUsize,
    poisoned: AtomicBool,
}

impl ShardBarrier {
    pub fn new(parties: usize) -> ShardBarrier {
        assert!(parties > 0);
        ShardBarrier {
            parties,
            arrived: AtomicUsize::new(0),
            poisoned: AtomicBool::new(false),
        }
    }

    /// Resolves once every party has arrived; fails if start-up was abandoned.
    pub async fn wait(&self) -> anyhow::Result<()> {
        let arrived = self.arrived.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(
            arrived <= self.parties,
            "more parties than the barrier was built for"
        );
        while self.arrived.load(Ordering::SeqCst) < self.parties {
            anyhow::ensure!(
                !self.poisoned.load(Ordering::SeqCst),
                "another shard failed; giving up"
            );
            glommio::timer::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
        }
        Ok(())
    }

    /// Releases waiters with an error (a shard failed to start).
    pub fn poison(&self) {
        self.poisoned.store(true, Ordering::SeqCst);
    }
}
