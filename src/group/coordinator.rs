//! The group coordinator of one shard: the groups of the `__consumer_offsets` partitions this
//! shard owns. Everything here runs on the owner shard (the API handlers hop here first).
//!
//! - Loading: the first time a partition is used (or at start-up, in the background), its log is
//!   replayed to rebuild committed offsets and group metadata; requests for it wait meanwhile.
//! - Writes: records are appended through the partition's log; a commit is acknowledged once its
//!   write completed. Offsets change in memory in log order (a queue of pending writes, applied
//!   as the log's written end passes them), so memory always matches what a replay would build.
//! - Effects of the state machines: timers are glommio timers in small tasks (no polling), and
//!   metadata writes call back into the state machine when done.
//! - Bounds: members per group (`group_max_size`), groups per shard (this shard's share of
//!   `group_max_groups`), metadata sizes (constants in `group/mod.rs`).

use super::classic::{ClassicGroup, ClassicState, JoinParams, JoinResult, MemberCheck, SyncResult};
use super::consumer::{ConsumerGroup, HeartbeatParams, HeartbeatResult};
use super::offsets::{self, Expiry, GroupOffsets, OffsetEntry};
use super::records::{self, Record, RecordKey};
use super::{Code, Effect, GroupLimits, Now, NONE, OFFSETS_TOPIC};
use crate::cluster::Partition;
use crate::log::{LogError, PartitionLog};
use crate::protocol::record_batch::validate_batch;
use crate::shard::Shard;
use bytes::{Bytes, BytesMut};
use futures::channel::oneshot;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use kafka_protocol::error::ResponseError as E;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::rc::{Rc, Weak};
use std::time::Duration;

/// Bytes read per step while replaying a partition.
const REPLAY_READ_BYTES: usize = 1024 * 1024;
/// Sum of member metadata one classic group may hold (bounds its metadata record).
const MAX_GROUP_METADATA_BYTES: usize = 32 * 1024 * 1024;
/// Shortest pause between two liveness checks of one member.
const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(10);

fn spawn(future: impl Future<Output = ()> + 'static) {
    glommio::spawn_local(future).detach();
}

async fn sleep(delay: Duration) {
    glommio::timer::sleep(delay).await;
}

/// The coordinator's state on one shard (a field of `Shard`). Created on first use.
#[derive(Default)]
pub struct GroupShard {
    coordinator: RefCell<Option<Rc<Coordinator>>>,
}

impl GroupShard {
    fn coordinator(&self, shard: &Rc<Shard>) -> Rc<Coordinator> {
        if let Some(coordinator) = self.coordinator.borrow().as_ref() {
            return coordinator.clone();
        }
        let coordinator = Rc::new(Coordinator::new(shard));
        *self.coordinator.borrow_mut() = Some(coordinator.clone());
        coordinator.start_background(shard);
        coordinator
    }
}

/// What every partition of the shard shares.
struct Shared {
    limits: GroupLimits,
    stopping: Cell<bool>,
    group_count: Cell<usize>,
    max_groups: usize,
}

struct Coordinator {
    shared: Rc<Shared>,
    partitions: RefCell<HashMap<i32, Rc<CoordPartition>>>,
    retention_ms: i64,
    retention_check_interval: Duration,
}

pub(crate) struct Group {
    id: String,
    kind: Kind,
    offsets: GroupOffsets,
}

enum Kind {
    Classic(ClassicGroup),
    Consumer(ConsumerGroup),
}

type GroupRef = Rc<RefCell<Group>>;

impl Group {
    fn classic(&mut self) -> Option<&mut ClassicGroup> {
        match &mut self.kind {
            Kind::Classic(group) => Some(group),
            Kind::Consumer(_) => None,
        }
    }

    fn is_dead(&self) -> bool {
        matches!(&self.kind, Kind::Classic(g) if g.state() == ClassicState::Dead)
    }

    /// No members, nothing pending, no offsets: nothing worth keeping.
    fn is_unused(&self) -> bool {
        let idle = match &self.kind {
            Kind::Classic(g) => g.is_idle() && g.state() == ClassicState::Empty,
            Kind::Consumer(g) => g.is_empty(),
        };
        idle && self.offsets.is_empty() && !self.offsets.has_any_pending()
    }

    fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Classic(_) => "classic",
            Kind::Consumer(_) => "consumer",
        }
    }
}

/// A change to offsets that takes effect when its write completes.
enum Mutation {
    Commit {
        group: String,
        topic: String,
        partition: i32,
        entry: OffsetEntry,
    },
    Delete {
        group: String,
        topic: String,
        partition: i32,
    },
    /// A transactional commit: held until the producer's transaction ends
    /// (`complete_transaction`).
    TxnCommit {
        producer_id: i64,
        group: String,
        topic: String,
        partition: i32,
        entry: OffsetEntry,
    },
}

/// Records (key, value) of transactions seen in a replay without their marker yet, by producer.
type HeldTxnRecords = HashMap<i64, Vec<(Vec<u8>, Option<Vec<u8>>)>>;

/// An offset committed inside a transaction, waiting for the transaction's marker.
struct TxnOffset {
    group: String,
    topic: String,
    partition: i32,
    entry: OffsetEntry,
}

struct PendingWrite {
    last_offset: i64,
    mutations: Vec<Mutation>,
}

/// One `__consumer_offsets` partition owned by this shard, and its groups.
struct CoordPartition {
    index: i32,
    partition: RefCell<Rc<Partition>>,
    shared: Rc<Shared>,
    loaded: Cell<bool>,
    /// Leader epoch of the partition when its state was loaded: a later leadership (after
    /// this node followed and the log grew by replication) must load again.
    loaded_epoch: Cell<i32>,
    load_lock: futures::lock::Mutex<()>,
    groups: RefCell<HashMap<String, GroupRef>>,
    writes: RefCell<VecDeque<PendingWrite>>,
    /// Transactional offset commits written, by producer id, until their marker.
    txn_offsets: RefCell<HashMap<i64, Vec<TxnOffset>>>,
}

/// How long an offsets-topic write waits for the ISR (Kafka's `offsets.commit.timeout.ms`).
const OFFSETS_COMMIT_TIMEOUT_MS: u64 = 5_000;

/// Kafka maps storage failures of the offsets topic to NOT_COORDINATOR (clients look again).
fn write_error(error: &LogError) -> Code {
    match error {
        LogError::Io(io) if io.kind() == std::io::ErrorKind::InvalidInput => {
            E::InvalidCommitOffsetSize.code()
        }
        _ => E::NotCoordinator.code(),
    }
}

impl Coordinator {
    fn new(shard: &Shard) -> Coordinator {
        let config = &shard.config;
        Coordinator {
            shared: Rc::new(Shared {
                limits: GroupLimits::from_config(config),
                stopping: Cell::new(false),
                group_count: Cell::new(0),
                max_groups: config.group_max_groups.div_ceil(shard.count.max(1)),
            }),
            partitions: RefCell::new(HashMap::new()),
            retention_ms: i64::try_from(config.offsets_retention_minutes)
                .unwrap_or(i64::MAX / 60_000)
                .saturating_mul(60_000),
            retention_check_interval: Duration::from_millis(
                config.offsets_retention_check_interval_ms.max(1),
            ),
        }
    }

    fn start_background(self: &Rc<Self>, shard: &Rc<Shard>) {
        // On shutdown, parked JoinGroup/SyncGroup requests are answered so connections drain.
        let weak = Rc::downgrade(self);
        let stopped = shard.stopped();
        spawn(async move {
            let _ = stopped.await;
            if let Some(coordinator) = weak.upgrade() {
                coordinator.shutdown();
            }
        });
        let weak = Rc::downgrade(self);
        let shard = shard.clone();
        let interval = self.retention_check_interval;
        spawn(async move {
            let mut stopped = shard.stopped().fuse();
            loop {
                futures::select! {
                    _ = stopped => return,
                    _ = sleep(interval).fuse() => {}
                }
                let Some(coordinator) = weak.upgrade() else {
                    return;
                };
                coordinator.expire_offsets(&shard).await;
            }
        });
    }

    fn shutdown(&self) {
        self.shared.stopping.set(true);
        for part in self.partitions.borrow().values() {
            for group in part.groups.borrow().values() {
                if let Some(classic) = group.borrow_mut().classic() {
                    classic.fail_waiters(E::NotCoordinator.code());
                }
            }
        }
    }

    /// The retention pass: expired offsets and offsets of deleted topics get tombstones; empty
    /// groups without offsets are removed.
    async fn expire_offsets(&self, shard: &Rc<Shard>) {
        let parts: Vec<Rc<CoordPartition>> = self
            .partitions
            .borrow()
            .values()
            .filter(|p| p.loaded.get())
            .cloned()
            .collect();
        let image = shard.metadata();
        let exists = |topic: &str, partition: i32| {
            image
                .topic(topic)
                .is_some_and(|t| (0..t.partition_count()).contains(&partition))
        };
        let now = Now::current();
        for part in parts {
            let groups: Vec<GroupRef> = part.groups.borrow().values().cloned().collect();
            for group in groups {
                let (expired, id) = {
                    let g = group.borrow();
                    let expiry = match &g.kind {
                        Kind::Classic(c) if c.state() == ClassicState::Dead => continue,
                        Kind::Classic(c) if c.state() == ClassicState::Empty => Expiry::Empty {
                            since_ms: c.state_since_ms(),
                        },
                        Kind::Classic(c) => Expiry::Active {
                            subscribed: c.subscribed_topics(),
                        },
                        Kind::Consumer(c) if c.is_empty() => Expiry::Empty {
                            since_ms: c.state_since_ms(),
                        },
                        Kind::Consumer(c) => Expiry::Active {
                            subscribed: Some(c.subscribed_topics()),
                        },
                    };
                    (
                        offsets::expired_offsets(
                            &g.offsets,
                            &expiry,
                            now.wall_ms,
                            self.retention_ms,
                            exists,
                        ),
                        g.id.clone(),
                    )
                };
                if !expired.is_empty() {
                    tracing::info!(group = %id, offsets = expired.len(), "expiring committed offsets");
                    let (records, mutations) = tombstones(&id, expired);
                    if let Err(code) = part.append(records, mutations).await {
                        tracing::warn!(group = %id, code, "cannot write offset tombstones");
                        continue;
                    }
                }
                if group.borrow().is_unused() {
                    part.remove_group(&group, true).await;
                }
            }
        }
    }
}

fn tombstones(group: &str, partitions: Vec<(String, i32)>) -> (Vec<Record>, Vec<Mutation>) {
    let mut records = Vec::with_capacity(partitions.len());
    let mut mutations = Vec::with_capacity(partitions.len());
    for (topic, partition) in partitions {
        records.push(Record {
            key: records::encode_key(&RecordKey::Offset {
                group: group.to_string(),
                topic: topic.clone(),
                partition,
            }),
            value: None,
        });
        mutations.push(Mutation::Delete {
            group: group.to_string(),
            topic,
            partition,
        });
    }
    (records, mutations)
}

/// What a replay found for one group.
#[derive(Default)]
struct Replayed {
    offsets: GroupOffsets,
    meta: Option<ReplayedMeta>,
}

enum ReplayedMeta {
    Classic(records::ClassicGroupValue),
    Consumer(records::ConsumerGroupValue),
}

fn replay_record(groups: &mut HashMap<String, Replayed>, key: &[u8], value: Option<&[u8]>) {
    let key = match records::decode_key(key) {
        Ok(key) => key,
        Err(error) => {
            tracing::warn!("skipping {OFFSETS_TOPIC} record with an unreadable key: {error}");
            return;
        }
    };
    let entry = groups.entry(key.group().to_string()).or_default();
    let result = match key {
        RecordKey::Offset {
            topic, partition, ..
        } => match value {
            Some(value) => records::decode_offset_value(value).map(|value| {
                entry.offsets.insert(
                    &topic,
                    partition,
                    OffsetEntry {
                        offset: value.offset,
                        leader_epoch: value.leader_epoch,
                        metadata: value.metadata,
                        commit_timestamp_ms: value.commit_timestamp_ms,
                    },
                );
            }),
            None => {
                entry.offsets.remove(&topic, partition);
                Ok(())
            }
        },
        RecordKey::ClassicGroup { .. } => match value {
            Some(value) => records::decode_classic_group_value(value)
                .map(|value| entry.meta = Some(ReplayedMeta::Classic(value))),
            None => {
                if matches!(entry.meta, Some(ReplayedMeta::Classic(_))) {
                    entry.meta = None;
                }
                Ok(())
            }
        },
        RecordKey::ConsumerGroup { .. } => match value {
            Some(value) => records::decode_consumer_group_value(value)
                .map(|value| entry.meta = Some(ReplayedMeta::Consumer(value))),
            None => {
                if matches!(entry.meta, Some(ReplayedMeta::Consumer(_))) {
                    entry.meta = None;
                }
                Ok(())
            }
        },
    };
    if let Err(error) = result {
        tracing::warn!("skipping an unreadable {OFFSETS_TOPIC} record: {error}");
    }
}

impl CoordPartition {
    fn log(&self) -> Rc<PartitionLog> {
        self.partition.borrow().log.clone()
    }

    async fn ensure_loaded(self: &Rc<Self>) -> Result<(), Code> {
        if self.loaded.get() {
            return Ok(());
        }
        let _guard = self.load_lock.lock().await;
        if self.loaded.get() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        self.loaded_epoch
            .set(self.partition.borrow().leader_epoch.get());
        match self.replay().await {
            Ok(records) => {
                self.loaded.set(true);
                tracing::info!(
                    partition = self.index,
                    groups = self.groups.borrow().len(),
                    records,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "loaded group coordinator state"
                );
                Ok(())
            }
            Err(error) => {
                tracing::error!(
                    partition = self.index,
                    "cannot load {OFFSETS_TOPIC}: {error}"
                );
                Err(E::CoordinatorNotAvailable.code())
            }
        }
    }

    /// Rebuilds groups and offsets from the log. Returns the number of records read.
    async fn replay(self: &Rc<Self>) -> Result<u64, LogError> {
        let log = self.log();
        let end = log.written_end_offset();
        let mut cursor = log.log_start_offset();
        let mut replayed: HashMap<String, Replayed> = HashMap::new();
        // Records of transactions without a marker yet, by producer id.
        let mut txn_held: HeldTxnRecords = HashMap::new();
        let mut count = 0u64;
        while cursor < end {
            let read = log.read(cursor, REPLAY_READ_BYTES, end).await?;
            if read.size_bytes == 0 {
                break;
            }
            let mut buffer = BytesMut::with_capacity(read.size_bytes);
            for chunk in &read.chunks {
                buffer.extend_from_slice(chunk);
            }
            let before = cursor;
            let mut position = 0usize;
            while position < buffer.len() {
                let header = match validate_batch(&buffer[position..], usize::MAX) {
                    Ok(header) => header,
                    Err(error) => {
                        tracing::warn!(
                            partition = self.index,
                            cursor,
                            "stopping replay at a bad batch: {error}"
                        );
                        position = buffer.len();
                        cursor = end;
                        continue;
                    }
                };
                let size = header.total_size_bytes();
                let batch = &buffer[position..position + size];
                position += size;
                if header.last_offset() < cursor {
                    continue;
                }
                cursor = header.last_offset() + 1;
                if header.is_control() {
                    // A transaction marker: the producer's offsets count (COMMIT) or not.
                    let commit = crate::txn::producer_state::control_marker_type(batch, &header);
                    let held = txn_held.remove(&header.producer_id).unwrap_or_default();
                    if commit == Some(true) {
                        for (key, value) in held {
                            replay_record(&mut replayed, &key, value.as_deref());
                        }
                    }
                    continue;
                }
                if header.compression_codec() != 0 {
                    tracing::warn!(partition = self.index, "skipping a compressed batch");
                    continue;
                }
                match records::decode_batch_records(batch, header.base_offset, header.record_count)
                {
                    Ok(stored) if header.is_transactional() => {
                        let held = txn_held.entry(header.producer_id).or_default();
                        for record in stored {
                            count += 1;
                            if let Some(key) = record.key {
                                held.push((key.to_vec(), record.value.map(<[u8]>::to_vec)));
                            }
                        }
                    }
                    Ok(stored) => {
                        for record in stored {
                            count += 1;
                            if let Some(key) = record.key {
                                replay_record(&mut replayed, key, record.value);
                            }
                        }
                    }
                    Err(error) => {
                        tracing::warn!(partition = self.index, "skipping a bad batch: {error}")
                    }
                }
            }
            if cursor <= before {
                break;
            }
        }
        let now = Now::current();
        let mut restored = Vec::new();
        {
            let mut groups = self.groups.borrow_mut();
            for (id, found) in replayed {
                if found.meta.is_none() && found.offsets.is_empty() {
                    continue;
                }
                let (kind, effects) = match found.meta {
                    Some(ReplayedMeta::Classic(value)) => {
                        let (group, effects) = ClassicGroup::restore(value, now);
                        (Kind::Classic(group), effects)
                    }
                    Some(ReplayedMeta::Consumer(value)) => (
                        Kind::Consumer(ConsumerGroup::with_epoch(value.epoch, now)),
                        Vec::new(),
                    ),
                    None => (Kind::Classic(ClassicGroup::new(now)), Vec::new()),
                };
                let group = Rc::new(RefCell::new(Group {
                    id: id.clone(),
                    kind,
                    offsets: found.offsets,
                }));
                groups.insert(id, group.clone());
                self.shared
                    .group_count
                    .set(self.shared.group_count.get() + 1);
                restored.push((group, effects));
            }
        }
        for (group, effects) in restored {
            run_effects(self, &group, effects);
        }
        self.restore_open_transactions(txn_held);
        Ok(count)
    }

    /// Offsets of transactions still open at the end of a replay wait for their marker.
    fn restore_open_transactions(&self, held: HeldTxnRecords) {
        for (producer_id, records) in held {
            for (key, value) in records {
                let (
                    Ok(RecordKey::Offset {
                        group,
                        topic,
                        partition,
                    }),
                    Some(value),
                ) = (records::decode_key(&key), value)
                else {
                    continue;
                };
                let Ok(value) = records::decode_offset_value(&value) else {
                    continue;
                };
                let Ok(group_ref) = self.group_or_create(&group, false) else {
                    continue;
                };
                group_ref
                    .borrow_mut()
                    .offsets
                    .add_pending(&topic, partition);
                self.txn_offsets
                    .borrow_mut()
                    .entry(producer_id)
                    .or_default()
                    .push(TxnOffset {
                        group,
                        topic,
                        partition,
                        entry: OffsetEntry {
                            offset: value.offset,
                            leader_epoch: value.leader_epoch,
                            metadata: value.metadata,
                            commit_timestamp_ms: value.commit_timestamp_ms,
                        },
                    });
            }
        }
    }

    fn group(&self, id: &str) -> Option<GroupRef> {
        self.groups
            .borrow()
            .get(id)
            .filter(|g| !g.borrow().is_dead())
            .cloned()
    }

    /// The group, or a new empty one (classic or consumer) within the shard's group bound.
    fn group_or_create(&self, id: &str, consumer: bool) -> Result<GroupRef, Code> {
        if let Some(group) = self.group(id) {
            return Ok(group);
        }
        if self.shared.group_count.get() >= self.shared.max_groups {
            tracing::warn!(
                group = id,
                limit = self.shared.max_groups,
                "group limit of this shard reached"
            );
            return Err(E::GroupMaxSizeReached.code());
        }
        let now = Now::current();
        let kind = if consumer {
            Kind::Consumer(ConsumerGroup::new(now))
        } else {
            Kind::Classic(ClassicGroup::new(now))
        };
        let group = Rc::new(RefCell::new(Group {
            id: id.to_string(),
            kind,
            offsets: GroupOffsets::default(),
        }));
        self.groups
            .borrow_mut()
            .insert(id.to_string(), group.clone());
        self.shared
            .group_count
            .set(self.shared.group_count.get() + 1);
        Ok(group)
    }

    /// Drops a group that has nothing worth keeping (e.g. created by a join that failed).
    fn forget_if_unused(&self, group: &GroupRef) {
        let unused = {
            let g = group.borrow();
            g.is_unused()
                && match &g.kind {
                    Kind::Classic(c) => c.generation() == 0,
                    Kind::Consumer(c) => c.group_epoch() == 0,
                }
        };
        if unused {
            let id = group.borrow().id.clone();
            let mut groups = self.groups.borrow_mut();
            if groups.get(&id).is_some_and(|g| Rc::ptr_eq(g, group)) {
                groups.remove(&id);
                self.shared
                    .group_count
                    .set(self.shared.group_count.get().saturating_sub(1));
            }
        }
    }

    /// Removes a group (deleted, or expired) and writes tombstones for its metadata (and, with
    /// `offsets`, for the offsets it still has).
    async fn remove_group(self: &Rc<Self>, group: &GroupRef, metadata_only: bool) -> Code {
        let (id, offsets) = {
            let mut g = group.borrow_mut();
            let now = Now::current();
            if let Some(classic) = g.classic() {
                classic.mark_dead(now, E::CoordinatorNotAvailable.code());
            } else {
                g.kind = Kind::Classic({
                    let mut dead = ClassicGroup::new(now);
                    dead.mark_dead(now, NONE);
                    dead
                });
            }
            let offsets: Vec<(String, i32)> = if metadata_only {
                Vec::new()
            } else {
                g.offsets
                    .iter()
                    .map(|(t, p, _)| (t.to_string(), p))
                    .collect()
            };
            (g.id.clone(), offsets)
        };
        {
            let mut groups = self.groups.borrow_mut();
            if groups.get(&id).is_some_and(|g| Rc::ptr_eq(g, group)) {
                groups.remove(&id);
                self.shared
                    .group_count
                    .set(self.shared.group_count.get().saturating_sub(1));
            }
        }
        let (mut records, mutations) = tombstones(&id, offsets);
        records.push(Record {
            key: records::encode_key(&RecordKey::ClassicGroup { group: id.clone() }),
            value: None,
        });
        records.push(Record {
            key: records::encode_key(&RecordKey::ConsumerGroup { group: id.clone() }),
            value: None,
        });
        tracing::info!(group = %id, "group removed");
        match self.append(records, mutations).await {
            Ok(()) => NONE,
            Err(code) => code,
        }
    }

    /// Appends `records` as one batch; `mutations` apply in log order once written. Offsets are
    /// assigned now (before the first await), so writes are ordered by call.
    fn append(
        self: &Rc<Self>,
        records: Vec<Record>,
        mutations: Vec<Mutation>,
    ) -> LocalBoxFuture<'static, Result<(), Code>> {
        self.append_as(records, mutations, None)
    }

    /// Like `append`, as a transactional batch of `producer` when given.
    fn append_as(
        self: &Rc<Self>,
        records: Vec<Record>,
        mutations: Vec<Mutation>,
        producer: Option<records::TxnProducer>,
    ) -> LocalBoxFuture<'static, Result<(), Code>> {
        let partition = self.partition.borrow().clone();
        let log = partition.log.clone();
        let count = records.len() as u32;
        let batch = records::encode_batch_as(&records, super::wall_clock_ms(), producer);
        let base_offset = log.next_offset();
        let write = log.append(batch, count, partition.leader_epoch.get());
        let last_offset = base_offset + i64::from(count) - 1;
        let enqueued = log.next_offset() == last_offset + 1;
        if enqueued {
            self.writes.borrow_mut().push_back(PendingWrite {
                last_offset,
                mutations,
            });
        } else {
            self.release_pending(&mutations);
        }
        let part = self.clone();
        async move {
            match write.await {
                Ok(_) => {
                    part.apply_written();
                    // Acknowledged once every in-sync replica has it (Kafka's acks=all for
                    // the offsets topic); at once on a lone replica.
                    let replicated = glommio::timer::timeout(
                        std::time::Duration::from_millis(OFFSETS_COMMIT_TIMEOUT_MS),
                        async {
                            log.wait_for_high_watermark(last_offset).await;
                            Ok(())
                        },
                    )
                    .await;
                    if replicated.is_err() || log.high_watermark() <= last_offset {
                        tracing::warn!(
                            partition = part.index,
                            last_offset,
                            "{OFFSETS_TOPIC} write not replicated in time"
                        );
                        return Err(E::CoordinatorNotAvailable.code());
                    }
                    Ok(())
                }
                Err(error) => {
                    tracing::error!(
                        partition = part.index,
                        "{OFFSETS_TOPIC} write failed: {error}"
                    );
                    if enqueued {
                        let failed = {
                            let mut writes = part.writes.borrow_mut();
                            writes
                                .iter()
                                .position(|w| w.last_offset == last_offset)
                                .and_then(|at| writes.remove(at))
                        };
                        if let Some(failed) = failed {
                            part.release_pending(&failed.mutations);
                        }
                    }
                    Err(write_error(&error))
                }
            }
        }
        .boxed_local()
    }

    /// Applies, in log order, every pending write the log has written.
    fn apply_written(&self) {
        let written_end = self.log().written_end_offset();
        loop {
            let next = {
                let mut writes = self.writes.borrow_mut();
                match writes.front() {
                    Some(front) if front.last_offset < written_end => writes.pop_front(),
                    _ => None,
                }
            };
            let Some(write) = next else {
                return;
            };
            let groups = self.groups.borrow();
            for mutation in write.mutations {
                match mutation {
                    Mutation::Commit {
                        group,
                        topic,
                        partition,
                        entry,
                    } => {
                        if let Some(group) = groups.get(&group) {
                            let mut g = group.borrow_mut();
                            g.offsets.remove_pending(&topic, partition);
                            if !g.is_dead() {
                                g.offsets.insert(&topic, partition, entry);
                            }
                        }
                    }
                    Mutation::Delete {
                        group,
                        topic,
                        partition,
                    } => {
                        if let Some(group) = groups.get(&group) {
                            group.borrow_mut().offsets.remove(&topic, partition);
                        }
                    }
                    Mutation::TxnCommit {
                        producer_id,
                        group,
                        topic,
                        partition,
                        entry,
                    } => {
                        // Stays pending (OffsetFetch require_stable answers
                        // UNSTABLE_OFFSET_COMMIT) until the marker.
                        self.txn_offsets
                            .borrow_mut()
                            .entry(producer_id)
                            .or_default()
                            .push(TxnOffset {
                                group,
                                topic,
                                partition,
                                entry,
                            });
                    }
                }
            }
        }
    }

    /// The transaction of `producer_id` ended: its offsets become committed (`commit`) or are
    /// dropped.
    fn complete_transaction(&self, producer_id: i64, commit: bool) {
        let Some(offsets) = self.txn_offsets.borrow_mut().remove(&producer_id) else {
            return;
        };
        let groups = self.groups.borrow();
        for offset in offsets {
            if let Some(group) = groups.get(&offset.group) {
                let mut g = group.borrow_mut();
                g.offsets.remove_pending(&offset.topic, offset.partition);
                if commit && !g.is_dead() {
                    g.offsets
                        .insert(&offset.topic, offset.partition, offset.entry);
                }
            }
        }
    }

    fn release_pending(&self, mutations: &[Mutation]) {
        let groups = self.groups.borrow();
        for mutation in mutations {
            if let Mutation::Commit {
                group,
                topic,
                partition,
                ..
            }
            | Mutation::TxnCommit {
                group,
                topic,
                partition,
                ..
            } = mutation
            {
                if let Some(group) = groups.get(group) {
                    group.borrow_mut().offsets.remove_pending(topic, *partition);
                }
            }
        }
    }
}

/// Runs what a state machine asked for. Callers hold no borrow of `group`.
fn run_effects(part: &Rc<CoordPartition>, group: &GroupRef, effects: Vec<Effect>) {
    for effect in effects {
        let weak: Weak<RefCell<Group>> = Rc::downgrade(group);
        let owner = part.clone();
        match effect {
            Effect::JoinTimer { seq, delay } => spawn(async move {
                sleep(delay).await;
                with_group(&owner, &weak, |g, limits| match g.classic() {
                    Some(classic) => classic.on_join_timer(seq, Now::current(), limits),
                    None => Vec::new(),
                });
            }),
            Effect::SyncTimer { generation, delay } => spawn(async move {
                sleep(delay).await;
                with_group(&owner, &weak, |g, limits| match g.classic() {
                    Some(classic) => classic.on_sync_timer(generation, Now::current(), limits),
                    None => Vec::new(),
                });
            }),
            Effect::PendingMemberTimer { member_id, delay } => spawn(async move {
                sleep(delay).await;
                with_group(&owner, &weak, |g, _| match g.classic() {
                    Some(classic) => classic.on_pending_member_timeout(&member_id, Now::current()),
                    None => Vec::new(),
                });
            }),
            Effect::RevocationTimer {
                member_id,
                incarnation,
                delay,
            } => spawn(async move {
                sleep(delay).await;
                with_group(&owner, &weak, |g, _| match &mut g.kind {
                    Kind::Consumer(consumer) => {
                        consumer.on_revocation_timer(&member_id, incarnation, Now::current())
                    }
                    Kind::Classic(_) => Vec::new(),
                });
            }),
            Effect::WatchMember {
                member_id,
                incarnation,
                delay,
            } => spawn(async move {
                let mut wait = delay;
                loop {
                    sleep(wait.max(MIN_CHECK_INTERVAL)).await;
                    let mut next = None;
                    let alive = with_group(&owner, &weak, |g, limits| {
                        let now = Now::current();
                        match &mut g.kind {
                            Kind::Classic(classic) => {
                                let (check, effects) =
                                    classic.check_member(&member_id, incarnation, now, limits);
                                if let MemberCheck::Alive(after) = check {
                                    next = Some(after);
                                }
                                effects
                            }
                            Kind::Consumer(consumer) => {
                                let (_, after, effects) =
                                    consumer.check_member(&member_id, incarnation, now);
                                next = after;
                                effects
                            }
                        }
                    });
                    match (alive, next) {
                        (true, Some(after)) => wait = after,
                        _ => return,
                    }
                }
            }),
            Effect::PersistClassic {
                generation,
                sync_assignments,
            } => {
                let record = {
                    let mut g = group.borrow_mut();
                    let id = g.id.clone();
                    match g.classic() {
                        Some(classic) if classic.state() != ClassicState::Dead => Some(Record {
                            key: records::encode_key(&RecordKey::ClassicGroup { group: id }),
                            value: Some(records::encode_classic_group_value(
                                &classic.to_value(sync_assignments.as_ref()),
                            )),
                        }),
                        _ => None,
                    }
                };
                let Some(record) = record else { continue };
                let write = part.append(vec![record], Vec::new());
                spawn(async move {
                    let code = write.await.err().unwrap_or(NONE);
                    if sync_assignments.is_some() {
                        with_group(&owner, &weak, |g, limits| match g.classic() {
                            Some(classic) => classic.on_persisted(
                                generation,
                                sync_assignments,
                                code,
                                Now::current(),
                                limits,
                            ),
                            None => Vec::new(),
                        });
                    }
                });
            }
            Effect::PersistConsumer { epoch } => {
                let id = group.borrow().id.clone();
                let record = Record {
                    key: records::encode_key(&RecordKey::ConsumerGroup { group: id.clone() }),
                    value: Some(records::encode_consumer_group_value(
                        &records::ConsumerGroupValue { epoch },
                    )),
                };
                let write = part.append(vec![record], Vec::new());
                spawn(async move {
                    if let Err(code) = write.await {
                        tracing::warn!(group = %id, epoch, code, "cannot persist the group epoch");
                    }
                });
            }
        }
    }
}

/// Runs `step` on the group if it still exists, then its effects. Returns whether it existed.
fn with_group(
    part: &Rc<CoordPartition>,
    weak: &Weak<RefCell<Group>>,
    step: impl FnOnce(&mut Group, &GroupLimits) -> Vec<Effect>,
) -> bool {
    let Some(group) = weak.upgrade() else {
        return false;
    };
    let effects = step(&mut group.borrow_mut(), &part.shared.limits);
    run_effects(part, &group, effects);
    true
}

/// The coordinator partition `index` on this shard, loaded.
async fn open(shard: &Rc<Shard>, index: i32) -> Result<Rc<CoordPartition>, Code> {
    let coordinator = shard.groups.coordinator(shard);
    let Some(partition) = shard.partitions.get(OFFSETS_TOPIC, index) else {
        return Err(E::NotCoordinator.code());
    };
    let part = {
        let mut parts = coordinator.partitions.borrow_mut();
        match parts.get(&index) {
            Some(part)
                if Rc::ptr_eq(&part.partition.borrow().log, &partition.log)
                    && (!part.loaded.get()
                        || part.loaded_epoch.get() == partition.leader_epoch.get()) =>
            {
                if !Rc::ptr_eq(&part.partition.borrow(), &partition) {
                    *part.partition.borrow_mut() = partition;
                }
                part.clone()
            }
            previous => {
                if let Some(previous) = previous {
                    // The topic was deleted and made again (the old state is gone with its
                    // log), or leadership came back in a new epoch (the log may have grown
                    // or been cut by replication meanwhile): load from the log again.
                    for group in previous.groups.borrow().values() {
                        if let Some(classic) = group.borrow_mut().classic() {
                            classic.fail_waiters(E::NotCoordinator.code());
                        }
                    }
                    let dropped = previous.groups.borrow().len();
                    coordinator
                        .shared
                        .group_count
                        .set(coordinator.shared.group_count.get().saturating_sub(dropped));
                }
                let part = Rc::new(CoordPartition {
                    index,
                    partition: RefCell::new(partition),
                    shared: coordinator.shared.clone(),
                    loaded: Cell::new(false),
                    loaded_epoch: Cell::new(-1),
                    load_lock: futures::lock::Mutex::new(()),
                    groups: RefCell::new(HashMap::new()),
                    writes: RefCell::new(VecDeque::new()),
                    txn_offsets: RefCell::new(HashMap::new()),
                });
                parts.insert(index, part.clone());
                part
            }
        }
    };
    part.ensure_loaded().await?;
    Ok(part)
}

/// Called once per shard at start-up: loads this shard's coordinator partitions in the
/// background (requests for a partition wait for its load) and starts the retention pass.
pub fn start(shard: &Rc<Shard>) {
    let _ = shard.groups.coordinator(shard);
    let image = shard.metadata();
    let Some(topic) = image.topic(OFFSETS_TOPIC) else {
        return;
    };
    let owned: Vec<i32> = topic
        .partitions
        .iter()
        .enumerate()
        .filter(|(_, p)| p.shard as usize == shard.id)
        .map(|(index, _)| index as i32)
        .collect();
    if owned.is_empty() {
        return;
    }
    let shard = shard.clone();
    spawn(async move {
        for index in owned {
            if let Err(code) = open(&shard, index).await {
                tracing::warn!(
                    partition = index,
                    code,
                    "cannot load group coordinator partition"
                );
            }
        }
    });
}

// ---- API entry points (on the coordinator shard) -----------------------------------------------

fn check_session_timeout(limits: &GroupLimits, session_timeout_ms: i32) -> Result<(), Code> {
    if session_timeout_ms < limits.min_session_timeout_ms
        || session_timeout_ms > limits.max_session_timeout_ms
    {
        return Err(E::InvalidSessionTimeout.code());
    }
    Ok(())
}

pub async fn join_group(
    shard: &Rc<Shard>,
    index: i32,
    group_id: String,
    params: JoinParams,
) -> JoinResult {
    let part = match open(shard, index).await {
        Ok(part) => part,
        Err(code) => return JoinResult::error(code, &params.member_id),
    };
    let limits = &part.shared.limits;
    if let Err(code) = check_session_timeout(limits, params.session_timeout_ms) {
        return JoinResult::error(code, &params.member_id);
    }
    let metadata_bytes: usize = params
        .protocols
        .iter()
        .map(|(n, m)| n.len() + m.len())
        .sum();
    if params.protocols.len() > super::MAX_PROTOCOLS_PER_MEMBER
        || metadata_bytes > super::MAX_MEMBER_METADATA_BYTES
        || params.instance_id.as_deref() == Some("")
        || params
            .instance_id
            .as_ref()
            .is_some_and(|i| i.len() > super::MAX_MEMBER_ID_BYTES)
    {
        return JoinResult::error(E::InvalidRequest.code(), &params.member_id);
    }
    if params.member_id.len() > super::MAX_MEMBER_ID_BYTES {
        return JoinResult::error(E::UnknownMemberId.code(), &params.member_id);
    }
    if part.shared.stopping.get() {
        return JoinResult::error(E::NotCoordinator.code(), &params.member_id);
    }
    let group = if params.member_id.is_empty() {
        match part.group_or_create(&group_id, false) {
            Ok(group) => group,
            Err(code) => return JoinResult::error(code, ""),
        }
    } else {
        match part.group(&group_id) {
            Some(group) => group,
            None => return JoinResult::error(E::UnknownMemberId.code(), &params.member_id),
        }
    };
    let member_id = params.member_id.clone();
    let (sender, receiver) = oneshot::channel();
    let effects = {
        let mut g = group.borrow_mut();
        let now = Now::current();
        if let Kind::Consumer(consumer) = &g.kind {
            if consumer.is_empty() {
                g.kind = Kind::Classic(ClassicGroup::new(now));
            }
        }
        match &mut g.kind {
            Kind::Classic(classic) => {
                let held: usize = classic
                    .members()
                    .map(|m| {
                        m.protocols
                            .iter()
                            .map(|(n, d)| n.len() + d.len())
                            .sum::<usize>()
                    })
                    .sum();
                if held + metadata_bytes > MAX_GROUP_METADATA_BYTES
                    && classic.member(&member_id).is_none()
                {
                    let _ =
                        sender.send(JoinResult::error(E::GroupMaxSizeReached.code(), &member_id));
                    Vec::new()
                } else {
                    classic.join(params, sender, now, limits)
                }
            }
            Kind::Consumer(_) => {
                let _ = sender.send(JoinResult::error(
                    E::InconsistentGroupProtocol.code(),
                    &member_id,
                ));
                Vec::new()
            }
        }
    };
    run_effects(&part, &group, effects);
    part.forget_if_unused(&group);
    receiver
        .await
        .unwrap_or_else(|_| JoinResult::error(E::NotCoordinator.code(), &member_id))
}

#[allow(clippy::too_many_arguments)]
pub async fn sync_group(
    shard: &Rc<Shard>,
    index: i32,
    group_id: String,
    member_id: String,
    instance_id: Option<String>,
    generation: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    assignments: Vec<(String, Bytes)>,
) -> SyncResult {
    let part = match open(shard, index).await {
        Ok(part) => part,
        Err(code) => return SyncResult::error(code),
    };
    if assignments
        .iter()
        .any(|(_, assignment)| assignment.len() > super::MAX_MEMBER_ASSIGNMENT_BYTES)
    {
        return SyncResult::error(E::InvalidRequest.code());
    }
    if part.shared.stopping.get() {
        return SyncResult::error(E::NotCoordinator.code());
    }
    let Some(group) = part.group(&group_id) else {
        return SyncResult::error(E::UnknownMemberId.code());
    };
    let (sender, receiver) = oneshot::channel();
    let effects = {
        let mut g = group.borrow_mut();
        match g.classic() {
            Some(classic) => classic.sync(
                &member_id,
                instance_id.as_deref(),
                generation,
                protocol_type.as_deref(),
                protocol_name.as_deref(),
                assignments,
                sender,
                Now::current(),
            ),
            None => {
                let _ = sender.send(SyncResult::error(E::UnknownMemberId.code()));
                Vec::new()
            }
        }
    };
    run_effects(&part, &group, effects);
    receiver
        .await
        .unwrap_or_else(|_| SyncResult::error(E::NotCoordinator.code()))
}

pub async fn heartbeat(
    shard: &Rc<Shard>,
    index: i32,
    group_id: String,
    member_id: String,
    instance_id: Option<String>,
    generation: i32,
) -> Code {
    let part = match open(shard, index).await {
        Ok(part) => part,
        Err(code) => return code,
    };
    let Some(group) = part.group(&group_id) else {
        return E::UnknownMemberId.code();
    };
    let mut g = group.borrow_mut();
    match g.classic() {
        Some(classic) => classic.heartbeat(
            &member_id,
            instance_id.as_deref(),
            generation,
            Now::current(),
        ),
        None => E::UnknownMemberId.code(),
    }
}

/// LeaveGroup: one code per leaving member, or a group-level error.
pub async fn leave_group(
    shard: &Rc<Shard>,
    index: i32,
    group_id: String,
    members: Vec<(String, Option<String>)>,
) -> Result<Vec<Code>, Code> {
    let part = open(shard, index).await?;
    let Some(group) = part.group(&group_id) else {
        return Ok(vec![E::UnknownMemberId.code(); members.len()]);
    };
    let (codes, effects) = {
        let mut g = group.borrow_mut();
        match g.classic() {
            Some(classic) => classic.leave(&members, Now::current(), &part.shared.limits),
            None => (vec![E::UnknownMemberId.code(); members.len()], Vec::new()),
        }
    };
    run_effects(&part, &group, effects);
    Ok(codes)
}

/// One partition of an OffsetCommit (already checked on the connection's shard).
#[derive(Debug, Clone)]
pub struct CommitItem {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

#[derive(Debug, Clone)]
pub struct CommitWork {
    pub group_id: String,
    pub generation: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub version: i16,
    pub items: Vec<CommitItem>,
    /// TxnOffsetCommit: the transaction's producer (the commits count once it commits).
    pub producer: Option<records::TxnProducer>,
}

/// OffsetCommit: validates against the group, appends the commits as one batch and returns once
/// they are written (one code for all items).
pub async fn commit_offsets(shard: &Rc<Shard>, index: i32, work: CommitWork) -> Code {
    let part = match open(shard, index).await {
        Ok(part) => part,
        Err(code) => return code,
    };
    // A transactional commit without group metadata (TxnOffsetCommit before v3, or a producer
    // outside any group) is not checked against the group, as in Kafka.
    let unchecked_txn = work.producer.is_some()
        && work.generation < 0
        && work.member_id.is_empty()
        && work.instance_id.is_none();
    let group = match part.group(&work.group_id) {
        Some(group) => group,
        None if work.generation < 0 || work.producer.is_some() => {
            match part.group_or_create(&work.group_id, false) {
                Ok(group) => group,
                Err(code) => return code,
            }
        }
        None if work.version >= 9 => return E::GroupIdNotFound.code(),
        None => return E::IllegalGeneration.code(),
    };
    let now = Now::current();
    let write = {
        let mut g = group.borrow_mut();
        let checked = match &mut g.kind {
            _ if unchecked_txn => Ok(()),
            Kind::Classic(classic) => classic.validate_commit(
                &work.member_id,
                work.instance_id.as_deref(),
                work.generation,
                now,
            ),
            Kind::Consumer(consumer) => {
                consumer.validate_commit(&work.member_id, work.generation, work.version)
            }
        };
        if let Err(code) = checked {
            drop(g);
            part.forget_if_unused(&group);
            return code;
        }
        if work.items.is_empty() {
            return NONE;
        }
        let mut records = Vec::with_capacity(work.items.len());
        let mut mutations = Vec::with_capacity(work.items.len());
        for item in work.items {
            let entry = OffsetEntry {
                offset: item.offset,
                leader_epoch: item.leader_epoch,
                metadata: item.metadata,
                commit_timestamp_ms: now.wall_ms,
            };
            records.push(Record {
                key: records::encode_key(&RecordKey::Offset {
                    group: work.group_id.clone(),
                    topic: item.topic.clone(),
                    partition: item.partition,
                }),
                value: Some(records::encode_offset_value(&records::OffsetValue {
                    offset: entry.offset,
                    leader_epoch: entry.leader_epoch,
                    metadata: entry.metadata.clone(),
                    commit_timestamp_ms: entry.commit_timestamp_ms,
                })),
            });
            g.offsets.add_pending(&item.topic, item.partition);
            mutations.push(match work.producer {
                Some(producer) => Mutation::TxnCommit {
                    producer_id: producer.producer_id,
                    group: work.group_id.clone(),
                    topic: item.topic,
                    partition: item.partition,
                    entry,
                },
                None => Mutation::Commit {
                    group: work.group_id.clone(),
                    topic: item.topic,
                    partition: item.partition,
                    entry,
                },
            });
        }
        drop(g);
        part.append_as(records, mutations, work.producer)
    };
    match write.await {
        Ok(()) => NONE,
        Err(code) => code,
    }
}

/// One group of an OffsetFetch.
#[derive(Debug, Clone)]
pub struct FetchGroup {
    pub group_id: String,
    /// `None`: every committed offset.
    pub topics: Option<Vec<(String, Vec<i32>)>>,
    pub member_id: Option<String>,
    pub member_epoch: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FetchedPartition {
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub error: Code,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FetchedGroup {
    pub error: Code,
    pub topics: Vec<(String, Vec<FetchedPartition>)>,
}

pub async fn fetch_offsets(
    shard: &Rc<Shard>,
    index: i32,
    request: FetchGroup,
    require_stable: bool,
) -> FetchedGroup {
    let part = match open(shard, index).await {
        Ok(part) => part,
        Err(code) => {
            return FetchedGroup {
                error: code,
                topics: Vec::new(),
            }
        }
    };
    let group = part.group(&request.group_id);
    let g = group.as_ref().map(|g| g.borrow());
    if let (Some(g), Some(member_id)) = (&g, request.member_id.as_deref()) {
        if let Kind::Consumer(consumer) = &g.kind {
            if !member_id.is_empty() || request.member_epoch >= 0 {
                if let Err(code) = consumer.validate_fetch(member_id, request.member_epoch) {
                    return FetchedGroup {
                        error: code,
                        topics: Vec::new(),
                    };
                }
            }
        }
    }
    let lookup = |topic: &str, partition: i32| -> FetchedPartition {
        let offsets = g.as_ref().map(|g| &g.offsets);
        if require_stable && offsets.is_some_and(|o| o.has_pending(topic, partition)) {
            return FetchedPartition {
                partition,
                offset: -1,
                leader_epoch: -1,
                metadata: String::new(),
                error: E::UnstableOffsetCommit.code(),
            };
        }
        match offsets.and_then(|o| o.get(topic, partition)) {
            Some(entry) => FetchedPartition {
                partition,
                offset: entry.offset,
                leader_epoch: entry.leader_epoch,
                metadata: entry.metadata.clone(),
                error: NONE,
            },
            None => FetchedPartition {
                partition,
                offset: -1,
                leader_epoch: -1,
                metadata: String::new(),
                error: NONE,
            },
        }
    };
    let topics = match request.topics {
        Some(topics) => topics
            .into_iter()
            .map(|(topic, partitions)| {
                let fetched = partitions.into_iter().map(|p| lookup(&topic, p)).collect();
                (topic, fetched)
            })
            .collect(),
        None => {
            let mut by_topic: Vec<(String, Vec<FetchedPartition>)> = Vec::new();
            if let Some(g) = &g {
                for (topic, partition, _) in g.offsets.iter() {
                    let fetched = lookup(topic, partition);
                    match by_topic.last_mut() {
                        Some((last, partitions)) if last == topic => partitions.push(fetched),
                        _ => by_topic.push((topic.to_string(), vec![fetched])),
                    }
                }
            }
            by_topic
        }
    };
    FetchedGroup {
        error: NONE,
        topics,
    }
}

/// OffsetDelete: per-partition codes, or a group-level error.
pub async fn delete_offsets(
    shard: &Rc<Shard>,
    index: i32,
    group_id: String,
    topics: Vec<(String, Vec<i32>)>,
) -> Result<Vec<(String, Vec<(i32, Code)>)>, Code> {
    let part = open(shard, index).await?;
    let Some(group) = part.group(&group_id) else {
        return Err(E::GroupIdNotFound.code());
    };
    let (results, to_delete) = {
        let g = group.borrow();
        let subscribed: Option<std::collections::HashSet<String>> = match &g.kind {
            Kind::Classic(c) if c.state() == ClassicState::Empty => Some(Default::default()),
            Kind::Classic(c) => {
                if c.protocol_type() != Some("consumer") {
                    return Err(E::NonEmptyGroup.code());
                }
                c.subscribed_topics()
            }
            Kind::Consumer(c) => Some(c.subscribed_topics()),
        };
        let mut results = Vec::with_capacity(topics.len());
        let mut to_delete = Vec::new();
        for (topic, partitions) in topics {
            let is_subscribed = subscribed.as_ref().is_none_or(|s| s.contains(&topic));
            let codes = partitions
                .into_iter()
                .map(|partition| {
                    if is_subscribed {
                        (partition, E::GroupSubscribedToTopic.code())
                    } else {
                        if g.offsets.get(&topic, partition).is_some() {
                            to_delete.push((topic.clone(), partition));
                        }
                        (partition, NONE)
                    }
                })
                .collect();
            results.push((topic, codes));
        }
        (results, to_delete)
    };
    if to_delete.is_empty() {
        return Ok(results);
    }
    let (records, mutations) = tombstones(&group_id, to_delete);
    if let Err(code) = part.append(records, mutations).await {
        return Ok(results
            .into_iter()
            .map(|(topic, codes)| {
                let codes = codes
                    .into_iter()
                    .map(|(p, c)| (p, if c == NONE { code } else { c }))
                    .collect();
                (topic, codes)
            })
            .collect());
    }
    Ok(results)
}

/// DeleteGroups for groups on partition `index`.
pub async fn delete_groups(shard: &Rc<Shard>, index: i32, ids: Vec<String>) -> Vec<(String, Code)> {
    let part = match open(shard, index).await {
        Ok(part) => part,
        Err(code) => return ids.into_iter().map(|id| (id, code)).collect(),
    };
    let mut results = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(group) = part.group(&id) else {
            results.push((id, E::GroupIdNotFound.code()));
            continue;
        };
        let non_empty = match &group.borrow().kind {
            Kind::Classic(c) => c.state() != ClassicState::Empty || !c.is_idle(),
            Kind::Consumer(c) => !c.is_empty(),
        };
        if non_empty {
            results.push((id, E::NonEmptyGroup.code()));
            continue;
        }
        let code = part.remove_group(&group, false).await;
        results.push((id, code));
    }
    results
}

/// One group as ListGroups reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedGroupInfo {
    pub group_id: String,
    pub protocol_type: String,
    pub state: String,
    pub group_type: String,
}

/// Every group this shard coordinates (loading its partitions first).
pub async fn list_groups(shard: &Rc<Shard>) -> Result<Vec<ListedGroupInfo>, Code> {
    let image = shard.metadata();
    let Some(topic) = image.topic(OFFSETS_TOPIC) else {
        return Ok(Vec::new());
    };
    let mut listed = Vec::new();
    for (index, record) in topic.partitions.iter().enumerate() {
        if record.shard as usize != shard.id {
            continue;
        }
        let part = open(shard, index as i32).await?;
        for group in part.groups.borrow().values() {
            let g = group.borrow();
            let (protocol_type, state) = match &g.kind {
                Kind::Classic(c) if c.state() == ClassicState::Dead => continue,
                Kind::Classic(c) => (
                    c.protocol_type().unwrap_or_default().to_string(),
                    c.state().name(),
                ),
                Kind::Consumer(c) => ("consumer".to_string(), c.state().name()),
            };
            listed.push(ListedGroupInfo {
                group_id: g.id.clone(),
                protocol_type,
                state: state.to_string(),
                group_type: g.type_name().to_string(),
            });
        }
    }
    Ok(listed)
}

/// DescribeGroups (classic API) for groups on partition `index`.
pub async fn describe_groups(
    shard: &Rc<Shard>,
    index: i32,
    ids: Vec<String>,
) -> Vec<kafka_protocol::messages::describe_groups_response::DescribedGroup> {
    use kafka_protocol::messages::describe_groups_response::{
        DescribedGroup, DescribedGroupMember,
    };
    use kafka_protocol::messages::GroupId;
    let str_bytes = |s: &str| kafka_protocol::protocol::StrBytes::from_string(s.to_string());
    let part = open(shard, index).await;
    ids.into_iter()
        .map(|id| {
            let described = DescribedGroup::default().with_group_id(GroupId(str_bytes(&id)));
            let part = match &part {
                Ok(part) => part,
                Err(code) => return described.with_error_code(*code),
            };
            let Some(group) = part.group(&id) else {
                return described.with_group_state(str_bytes("Dead"));
            };
            let g = group.borrow();
            match &g.kind {
                Kind::Classic(classic) => {
                    let protocol = match classic.state() {
                        ClassicState::Stable | ClassicState::CompletingRebalance => {
                            classic.protocol().unwrap_or_default()
                        }
                        _ => "",
                    };
                    let members = classic
                        .members()
                        .map(|m| {
                            let (metadata, assignment) = classic.describe_member(m);
                            DescribedGroupMember::default()
                                .with_member_id(str_bytes(&m.member_id))
                                .with_group_instance_id(m.instance_id.as_deref().map(str_bytes))
                                .with_client_id(str_bytes(&m.client_id))
                                .with_client_host(str_bytes(&m.client_host))
                                .with_member_metadata(metadata)
                                .with_member_assignment(assignment)
                        })
                        .collect();
                    described
                        .with_group_state(str_bytes(classic.state().name()))
                        .with_protocol_type(str_bytes(classic.protocol_type().unwrap_or_default()))
                        .with_protocol_data(str_bytes(protocol))
                        .with_members(members)
                }
                Kind::Consumer(_) => described
                    .with_error_code(E::GroupIdNotFound.code())
                    .with_error_message(Some(str_bytes(&format!(
                        "Group {id} is not a classic group."
                    )))),
            }
        })
        .collect()
}

pub async fn consumer_group_heartbeat(
    shard: &Rc<Shard>,
    index: i32,
    group_id: String,
    params: HeartbeatParams,
) -> HeartbeatResult {
    let part = match open(shard, index).await {
        Ok(part) => part,
        Err(code) => return HeartbeatResult::error(code, "The coordinator is not available."),
    };
    let leaving = params.member_epoch < 0;
    let group = match part.group(&group_id) {
        Some(group) => group,
        None if params.member_epoch == super::consumer::JOIN_EPOCH => {
            match part.group_or_create(&group_id, true) {
                Ok(group) => group,
                Err(code) => {
                    return HeartbeatResult::error(code, "Too many groups on this broker.")
                }
            }
        }
        None if leaving => {
            return HeartbeatResult::error(E::UnknownMemberId.code(), "The group does not exist.")
        }
        None => {
            return HeartbeatResult::error(
                E::UnknownMemberId.code(),
                format!(
                    "Member {} is not a member of group {group_id}.",
                    params.member_id
                ),
            )
        }
    };
    let image = shard.metadata();
    let (result, effects) = {
        let mut g = group.borrow_mut();
        let now = Now::current();
        if let Kind::Classic(classic) = &g.kind {
            if classic.is_idle() && classic.state() == ClassicState::Empty {
                let epoch = 0;
                g.kind = Kind::Consumer(ConsumerGroup::with_epoch(epoch, now));
            }
        }
        match &mut g.kind {
            Kind::Consumer(consumer) => {
                consumer.heartbeat(params, image.as_ref(), now, &part.shared.limits)
            }
            Kind::Classic(_) => (
                HeartbeatResult::error(
                    E::GroupIdNotFound.code(),
                    format!("Group {group_id} is not a consumer group."),
                ),
                Vec::new(),
            ),
        }
    };
    run_effects(&part, &group, effects);
    part.forget_if_unused(&group);
    result
}

/// ConsumerGroupDescribe for groups on partition `index`.
pub async fn consumer_group_describe(
    shard: &Rc<Shard>,
    index: i32,
    ids: Vec<String>,
) -> Vec<kafka_protocol::messages::consumer_group_describe_response::DescribedGroup> {
    use kafka_protocol::messages::consumer_group_describe_response::{
        Assignment, DescribedGroup, Member, TopicPartitions,
    };
    use kafka_protocol::messages::{GroupId, TopicName};
    let str_bytes = |s: &str| kafka_protocol::protocol::StrBytes::from_string(s.to_string());
    let image = shard.metadata();
    let to_wire = |assignment: &super::assignor::Assignment| {
        Assignment::default().with_topic_partitions(
            assignment
                .iter()
                .map(|(topic_id, partitions)| {
                    let name = image
                        .topic_by_id(*topic_id)
                        .map(|t| t.name.clone())
                        .unwrap_or_default();
                    TopicPartitions::default()
                        .with_topic_id(*topic_id)
                        .with_topic_name(TopicName(str_bytes(&name)))
                        .with_partitions(partitions.iter().copied().collect())
                })
                .collect(),
        )
    };
    let part = open(shard, index).await;
    ids.into_iter()
        .map(|id| {
            let described = DescribedGroup::default()
                .with_group_id(GroupId(str_bytes(&id)))
                .with_authorized_operations(i32::MIN);
            let part = match &part {
                Ok(part) => part,
                Err(code) => return described.with_error_code(*code),
            };
            let not_found = |message: String| {
                DescribedGroup::default()
                    .with_group_id(GroupId(str_bytes(&id)))
                    .with_authorized_operations(i32::MIN)
                    .with_error_code(E::GroupIdNotFound.code())
                    .with_error_message(Some(str_bytes(&message)))
            };
            let Some(group) = part.group(&id) else {
                return not_found(format!("Group {id} not found."));
            };
            let g = group.borrow();
            let Kind::Consumer(consumer) = &g.kind else {
                return not_found(format!("Group {id} is not a consumer group."));
            };
            let members = consumer
                .members()
                .map(|m| {
                    Member::default()
                        .with_member_id(str_bytes(&m.member_id))
                        .with_instance_id(m.instance_id.as_deref().map(str_bytes))
                        .with_rack_id(m.rack_id.as_deref().map(str_bytes))
                        .with_member_epoch(m.epoch)
                        .with_client_id(str_bytes(&m.client_id))
                        .with_client_host(str_bytes(&m.client_host))
                        .with_subscribed_topic_names(
                            m.subscribed_topic_names
                                .iter()
                                .map(|t| TopicName(str_bytes(t)))
                                .collect(),
                        )
                        .with_subscribed_topic_regex(
                            m.subscribed_topic_regex
                                .as_ref()
                                .map(|r| str_bytes(&r.pattern)),
                        )
                        .with_assignment(to_wire(&m.assigned))
                        .with_target_assignment(to_wire(&consumer.target_of(&m.member_id)))
                        .with_member_type(1)
                })
                .collect();
            described
                .with_group_state(str_bytes(consumer.state().name()))
                .with_group_epoch(consumer.group_epoch())
                .with_assignment_epoch(consumer.assignment_epoch())
                .with_assignor_name(str_bytes(consumer.assignor_name()))
                .with_members(members)
        })
        .collect()
}

/// A transaction marker was appended to `__consumer_offsets` partition `index` on this shard:
/// the producer's transactional offset commits there become committed offsets (`commit`) or
/// are dropped.
pub async fn complete_transaction(shard: &Rc<Shard>, index: i32, producer_id: i64, commit: bool) {
    match open(shard, index).await {
        Ok(part) => part.complete_transaction(producer_id, commit),
        Err(code) => tracing::warn!(
            partition = index,
            producer_id,
            code,
            "transaction marker on an offsets partition that cannot be loaded"
        ),
    }
}
