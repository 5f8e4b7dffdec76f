//! Partition work routed to the shards that own the partitions.
//!
//! A request naming partitions on several shards becomes one hop per owner shard, all owners
//! at once; each owner runs its items concurrently, and the replies come back tagged with the
//! response slot they fill, so the handler assembles the response in request order.

use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;

use crate::shard::Shard;

/// Where a partition's answer goes: (topic index, partition index) in the request, which the
/// response mirrors.
pub(crate) type Slot = (usize, usize);

/// Partition work that knows its response slot.
pub(crate) trait Slotted {
    fn slot(&self) -> Slot;
}

/// Runs every owner's share of `work_by_owner` on that owner (`run(owner_shard, item)`), and
/// returns all replies. If a hop fails (the owner shard is unreachable, e.g. shutting down),
/// each of its items is answered with `lost(slot)` and the failure is logged.
pub(crate) async fn run_on_owners<W, R, F, Fut>(
    shard: &Rc<Shard>,
    work_by_owner: BTreeMap<usize, Vec<W>>,
    run: F,
    lost: impl Fn(Slot) -> R,
) -> Vec<R>
where
    W: Slotted + Send + 'static,
    R: Send + 'static,
    F: Fn(Rc<Shard>, W) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = R> + 'static,
{
    let hops = work_by_owner.into_iter().map(|(owner, items)| {
        let slots: Vec<Slot> = items.iter().map(Slotted::slot).collect();
        let run = run.clone();
        let hop = shard.invoke_on(owner, move |owner_shard| async move {
            let runs = items.into_iter().map(|item| run(owner_shard.clone(), item));
            futures::future::join_all(runs).await
        });
        async move { (owner, slots, hop.await) }
    });
    let mut replies = Vec::new();
    for (owner, slots, outcome) in futures::future::join_all(hops).await {
        match outcome {
            Ok(done) => replies.extend(done),
            Err(error) => {
                tracing::warn!(owner, "partition work could not reach its shard: {error}");
                replies.extend(slots.into_iter().map(&lost));
            }
        }
    }
    replies
}
