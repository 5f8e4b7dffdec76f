//! Wakers of tasks waiting for the written end offset (appenders waiting for their write,
//! long-polling fetches) or the durable end offset (acks=all produces under the sync flush
//! policy) to pass an offset. Woken by write and fdatasync completion, never by polling.
//! Also [`Signal`], the wake-up of a partition's writer task.

use std::cell::Cell;
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

/// Which end offset a [`WaitForOffset`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitKind {
    /// Written (O_DIRECT write completed).
    Written,
    /// Durable (fdatasync completed).
    Durable,
    /// Committed (the high watermark passed it).
    Committed,
}

/// Resolves once `written_end_offset() > offset` (or the durable end, for
/// [`WaitKind::Durable`]), or the log is closed or failed (the caller then finds out from its
/// next call). Cancel-safe: dropping it deregisters the waker.
pub struct WaitForOffset {
    log: Rc<PartitionLog>,
    offset: i64,
    kind: WaitKind,
    key: Option<WaiterKey>,
}

impl WaitForOffset {
    pub(crate) fn new(log: Rc<PartitionLog>, offset: i64) -> Self {
        Self::with_kind(log, offset, WaitKind::Written)
    }

    pub(crate) fn with_kind(log: Rc<PartitionLog>, offset: i64, kind: WaitKind) -> Self {
        WaitForOffset {
            log,
            offset,
            kind,
            key: None,
        }
    }

    fn waiters(&self) -> &std::cell::RefCell<Waiters> {
        waiters_of(&self.log, self.kind)
    }
}

impl Future for WaitForOffset {
    type Output = ();

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let reached = this
            .log
            .is_offset_reached_or_stopped(this.offset, this.kind);
        let mut waiters = waiters_of(&this.log, this.kind).borrow_mut();
        if reached {
            if let Some(key) = this.key.take() {
                waiters.deregister(key);
            }
            return Poll::Ready(());
        }
        this.key = Some(waiters.register(this.key, this.offset, context.waker()));
        Poll::Pending
    }
}

fn waiters_of(log: &PartitionLog, kind: WaitKind) -> &std::cell::RefCell<Waiters> {
    match kind {
        WaitKind::Written => &log.waiters,
        WaitKind::Durable => &log.durable_waiters,
        WaitKind::Committed => &log.committed_waiters,
    }
}

impl Drop for WaitForOffset {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.waiters().borrow_mut().deregister(key);
        }
    }
}

/// A one-slot wake-up for one task (the partition's writer): `notify` before or during `wait`
/// makes the wait return; notifications while nobody waits are remembered once.
#[derive(Default)]
pub(crate) struct Signal {
    notified: Cell<bool>,
    waker: Cell<Option<std::task::Waker>>,
}

impl Signal {
    pub(crate) fn notify(&self) {
        self.notified.set(true);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    pub(crate) fn wait(&self) -> SignalWait<'_> {
        SignalWait { signal: self }
    }
}

pub(crate) struct SignalWait<'a> {
    signal: &'a Signal,
}

impl Future for SignalWait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if self.signal.notified.replace(false) {
            return Poll::Ready(());
        }
        self.signal.waker.set(Some(context.waker().clone()));
        Poll::Pending
    }
}
