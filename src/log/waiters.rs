//! Wakers of tasks waiting for the written end offset to pass an offset: appenders waiting for
//! their write, and long-polling fetches. Woken by write completion, never by polling.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::partition::PartitionLog;

/// Key: (offset waited for, registration id). Ordered by offset, so one write completion
/// wakes exactly the prefix it satisfied.
type WaiterKey = (i64, u64);

#[derive(Default)]
pub(crate) struct Waiters {
    next_id: u64,
    by_offset: BTreeMap<WaiterKey, Waker>,
}

impl Waiters {
    fn register(&mut self, key: Option<WaiterKey>, offset: i64, waker: &Waker) -> WaiterKey {
        if let Some(key) = key {
            if let Some(existing) = self.by_offset.get_mut(&key) {
                if !existing.will_wake(waker) {
                    existing.clone_from(waker);
                }
                return key;
            }
        }
        let key = (offset, self.next_id);
        self.next_id += 1;
        self.by_offset.insert(key, waker.clone());
        key
    }

    fn deregister(&mut self, key: WaiterKey) {
        self.by_offset.remove(&key);
    }

    /// Removes and returns the wakers of everyone waiting for an offset below `written_end`.
    pub(crate) fn take_satisfied(&mut self, written_end_offset: i64) -> Vec<Waker> {
        let pending = self.by_offset.split_off(&(written_end_offset, 0));
        let satisfied = std::mem::replace(&mut self.by_offset, pending);
        satisfied.into_values().collect()
    }

    /// Removes and returns every waker (close, failure).
    pub(crate) fn take_all(&mut self) -> Vec<Waker> {
        std::mem::take(&mut self.by_offset).into_values().collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.by_offset.len()
    }
}

/// Resolves once `written_end_offset() > offset`, or the log is closed or failed (the caller
/// then finds out from its next call). Cancel-safe: dropping it deregisters the waker.
pub struct WaitForOffset {
    log: Rc<PartitionLog>,
    offset: i64,
    key: Option<WaiterKey>,
}

impl WaitForOffset {
    pub(crate) fn new(log: Rc<PartitionLog>, offset: i64) -> Self {
        WaitForOffset {
            log,
            offset,
            key: None,
        }
    }
}

impl Future for WaitForOffset {
    type Output = ();

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut waiters = this.log.waiters.borrow_mut();
        if this.log.is_offset_written_or_stopped(this.offset) {
            if let Some(key) = this.key.take() {
                waiters.deregister(key);
            }
            return Poll::Ready(());
        }
        this.key = Some(waiters.register(this.key, this.offset, context.waker()));
        Poll::Pending
    }
}

impl Drop for WaitForOffset {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.log.waiters.borrow_mut().deregister(key);
        }
    }
}
