//! The transaction coordinator of one shard: the transactional ids of the `__transaction_state`
//! partitions this shard leads. Everything here runs on the owner shard (the API handlers hop
//! here first).
//!
//! - Loading: the first time a partition is used after it was led in a new epoch (or at
//!   start-up, in the background), its log is replayed to rebuild every id's state; a
//!   transaction found prepared resumes its markers.
//! - Writes: a state change is one record appended to the partition and acknowledged once every
//!   in-sync replica has it; memory changes only after that (the id is `busy` meanwhile).
//! - Commit and abort: PrepareCommit/PrepareAbort is written, then COMMIT/ABORT markers go to
//!   every partition of the transaction (`markers::write_markers`, local shards and other nodes),
//!   retried until they land or this node stops leading the partition, then
//!   CompleteCommit/CompleteAbort is written. EndTxn answers once the markers are written (or
//!   after `END_TXN_WAIT_MS`: the decision is durable and the markers go on in the background).
//! - Housekeeping every `transaction_cleanup_interval_ms`: transactions past their timeout are
//!   aborted with a fencing epoch bump; ids idle past `transactional_id_expiration_ms` are
//!   removed with a tombstone.

use super::markers::{write_markers, TxnMarker};
use super::records::{self as txn_records, TxnLogValue, TxnState};
use super::state::{EndStep, InitStep, TxnMetadata};
use super::TRANSACTION_STATE_TOPIC;
use crate::cluster::Partition;
use crate::group::records::{encode_batch, Record};
use crate::log::LogError;
use crate::protocol::record_batch::validate_batch;
use crate::shard::Shard;
use bytes::BytesMut;
use futures::channel::oneshot;
use futures::FutureExt;
use kafka_protocol::error::ResponseError as E;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

/// Bytes read per step while replaying a partition.
const REPLAY_READ_BYTES: usize = 1024 * 1024;
/// How long a state write waits for the in-sync replicas.
const STATE_WRITE_TIMEOUT_MS: u64 = 5_000;
/// How long EndTxn waits for the markers before answering (the outcome is decided already).
const END_TXN_WAIT_MS: u64 = 10_000;
/// Pause between rounds of markers that could not be written (leader moving, node down).
const MARKER_RETRY_MIN_MS: u64 = 50;
const MARKER_RETRY_MAX_MS: u64 = 2_000;
/// Partitions one transaction may span.
pub const MAX_PARTITIONS_PER_TRANSACTION: usize = 100_000;

fn spawn(future: impl Future<Output = ()> + 'static) {
    glommio::spawn_local(future).detach();
}

type TxnRef = Rc<RefCell<TxnMetadata>>;

/// The coordinator's state on one shard (a field of `Shard`). Created on first use.
#[derive(Default)]
pub struct TxnShard {
    coordinator: RefCell<Option<Rc<Coordinator>>>,
}

impl TxnShard {
    fn coordinator(&self, shard: &Rc<Shard>) -> Rc<Coordinator> {
        if let Some(coordinator) = self.coordinator.borrow().as_ref() {
            return coordinator.clone();
        }
        let coordinator = Rc::new(Coordinator {
            partitions: RefCell::new(HashMap::new()),
            txn_count: Cell::new(0),
            max_txns: shard.config.transaction_max_ids_per_shard,
        });
        *self.coordinator.borrow_mut() = Some(coordinator.clone());
        start_housekeeping(shard, &coordinator);
        coordinator
    }
}

struct Coordinator {
    partitions: RefCell<HashMap<i32, Rc<TxnPartition>>>,
    /// Transactional ids held over all partitions of this shard.
    txn_count: Cell<usize>,
    max_txns: usize,
}

/// One `__transaction_state` partition led by this shard, and its transactional ids.
struct TxnPartition {
    index: i32,
    /// The shard (weak: the shard owns this state).
    shard: std::rc::Weak<Shard>,
    partition: Rc<Partition>,
    /// The partition's leader epoch when this state was loaded; markers carry it, so a
    /// coordinator that lost the partition cannot overwrite a newer one's decisions.
    coordinator_epoch: i32,
    loaded: Cell<bool>,
    load_lock: futures::lock::Mutex<()>,
    txns: RefCell<HashMap<String, TxnRef>>,
    /// Completion signals of transactions whose markers are in flight.
    completions: RefCell<HashMap<String, Vec<oneshot::Sender<()>>>>,
}

impl TxnPartition {
    fn still_leads(&self) -> bool {
        self.partition
            .replication
            .borrow()
            .leads_in(self.coordinator_epoch)
    }

    async fn ensure_loaded(self: &Rc<Self>, coordinator: &Coordinator) -> Result<(), E> {
        if self.loaded.get() {
            return Ok(());
        }
        let _guard = self.load_lock.lock().await;
        if self.loaded.get() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let replayed = match self.replay().await {
            Ok(replayed) => replayed,
            Err(error) => {
                tracing::error!(
                    partition = self.index,
                    "cannot load {TRANSACTION_STATE_TOPIC}: {error}"
                );
                return Err(E::CoordinatorLoadInProgress);
            }
        };
        let mut resume = Vec::new();
        {
            let mut txns = self.txns.borrow_mut();
            for (id, value) in replayed {
                let prepared = matches!(
                    value.state,
                    TxnState::PrepareCommit | TxnState::PrepareAbort
                );
                let txn = Rc::new(RefCell::new(TxnMetadata::from_value(&id, value)));
                if prepared {
                    txn.borrow_mut().busy = true;
                    resume.push(txn.clone());
                }
                txns.insert(id, txn);
            }
            coordinator
                .txn_count
                .set(coordinator.txn_count.get() + txns.len());
        }
        self.loaded.set(true);
        tracing::info!(
            partition = self.index,
            transactional_ids = self.txns.borrow().len(),
            resumed = resume.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded transaction coordinator state"
        );
        for txn in resume {
            let part = self.clone();
            spawn(async move { part.complete(txn).await });
        }
        Ok(())
    }

    /// The last record of every transactional id in the log (tombstones remove).
    async fn replay(&self) -> Result<HashMap<String, TxnLogValue>, LogError> {
        let log = self.partition.log.clone();
        let end = log.written_end_offset();
        let mut cursor = log.log_start_offset();
        let mut found: HashMap<String, TxnLogValue> = HashMap::new();
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
                let Ok(header) = validate_batch(&buffer[position..], usize::MAX) else {
                    tracing::warn!(
                        partition = self.index,
                        cursor,
                        "stopping replay at a bad batch"
                    );
                    cursor = end;
                    break;
                };
                let size = header.total_size_bytes();
                let batch = &buffer[position..position + size];
                position += size;
                if header.last_offset() < cursor {
                    continue;
                }
                cursor = header.last_offset() + 1;
                if header.compression_codec() != 0 || header.is_control() {
                    continue;
                }
                let Ok(stored) = crate::group::records::decode_batch_records(
                    batch,
                    header.base_offset,
                    header.record_count,
                ) else {
                    tracing::warn!(partition = self.index, "skipping an unreadable batch");
                    continue;
                };
                for record in stored {
                    let Some(key) = record.key else { continue };
                    let Ok(id) = txn_records::decode_key(key) else {
                        tracing::warn!(
                            partition = self.index,
                            "skipping a record with an unreadable key"
                        );
                        continue;
                    };
                    match record.value.map(txn_records::decode_value) {
                        None => {
                            found.remove(&id);
                        }
                        Some(Ok(value)) => {
                            found.insert(id, value);
                        }
                        Some(Err(error)) => tracing::warn!(
                            partition = self.index,
                            transactional_id = %id,
                            "skipping an unreadable transaction record: {error}"
                        ),
                    }
                }
            }
            if cursor <= before {
                break;
            }
        }
        Ok(found)
    }

    /// Appends the record of `id` (`None`: a tombstone) and waits until every in-sync replica
    /// has it. Storage failures send the client to look for the coordinator again.
    async fn write(&self, id: &str, value: Option<&TxnLogValue>) -> Result<(), E> {
        if !self.still_leads() {
            return Err(E::NotCoordinator);
        }
        let record = Record {
            key: txn_records::encode_key(id),
            value: value.map(txn_records::encode_value),
        };
        let log = self.partition.log.clone();
        let batch = encode_batch(std::slice::from_ref(&record), crate::group::wall_clock_ms());
        let written = log.append(batch, 1, self.coordinator_epoch).await;
        let outcome = match written {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::error!(
                    partition = self.index,
                    transactional_id = id,
                    "{TRANSACTION_STATE_TOPIC} write failed: {error}"
                );
                return Err(E::NotCoordinator);
            }
        };
        let last_offset = outcome.base_offset;
        let replicated =
            glommio::timer::timeout(Duration::from_millis(STATE_WRITE_TIMEOUT_MS), async {
                log.wait_for_high_watermark(last_offset).await;
                Ok(())
            })
            .await;
        if replicated.is_err() || log.high_watermark() <= last_offset {
            tracing::warn!(
                partition = self.index,
                transactional_id = id,
                last_offset,
                "{TRANSACTION_STATE_TOPIC} write not replicated in time"
            );
            return Err(E::CoordinatorNotAvailable);
        }
        if !self.still_leads() {
            return Err(E::NotCoordinator);
        }
        Ok(())
    }

    /// Writes `value` for `txn` while holding it busy, then applies it.
    async fn transition(&self, txn: &TxnRef, value: TxnLogValue) -> Result<(), E> {
        let id = {
            let mut t = txn.borrow_mut();
            assert!(!t.busy, "one transition of an id at a time");
            t.busy = true;
            t.transactional_id.clone()
        };
        let written = self.write(&id, Some(&value)).await;
        let mut t = txn.borrow_mut();
        t.busy = false;
        written?;
        t.apply(value);
        Ok(())
    }

    /// Writes the markers of a prepared transaction, then its completion. Runs until done or
    /// until this node stops leading the partition (the next coordinator resumes it from the
    /// prepared record). `txn` is busy throughout and is released at the end.
    async fn complete(self: Rc<Self>, txn: TxnRef) {
        let (id, marker, mut remaining) = {
            let t = txn.borrow();
            assert!(t.busy, "a completing transaction is busy");
            let marker = TxnMarker {
                producer_id: t.producer_id,
                producer_epoch: t.producer_epoch,
                commit: t.state == TxnState::PrepareCommit,
                coordinator_epoch: self.coordinator_epoch,
            };
            let partitions: Vec<(String, i32)> = t.partitions.iter().cloned().collect();
            (t.transactional_id.clone(), marker, partitions)
        };
        let Some(shard) = self.shard.upgrade() else {
            return;
        };
        let mut backoff_ms = MARKER_RETRY_MIN_MS;
        while !remaining.is_empty() {
            if !self.still_leads() {
                tracing::info!(transactional_id = %id, "lost the coordinator partition; markers left to the next coordinator");
                self.finish(&txn, &id);
                return;
            }
            let outcomes = write_markers(&shard, marker, std::mem::take(&mut remaining)).await;
            for (partition, outcome) in outcomes {
                match outcome {
                    Ok(()) => {}
                    // Gone, or superseded by a newer producer epoch or coordinator: nothing to
                    // write any more (Kafka drops such markers too).
                    Err(
                        error @ (E::UnknownTopicOrPartition
                        | E::InvalidProducerEpoch
                        | E::TransactionCoordinatorFenced),
                    ) => tracing::warn!(transactional_id = %id, topic = %partition.0,
                        partition = partition.1, "transaction marker dropped: {error:?}"),
                    Err(error) => {
                        tracing::debug!(transactional_id = %id, topic = %partition.0,
                            partition = partition.1, "transaction marker will be retried: {error:?}");
                        remaining.push(partition);
                    }
                }
            }
            if !remaining.is_empty() {
                glommio::timer::sleep(Duration::from_millis(backoff_ms)).await;
                backoff_ms = (backoff_ms * 2).min(MARKER_RETRY_MAX_MS);
            }
        }
        let completion = txn.borrow().completion(crate::group::wall_clock_ms());
        loop {
            match self.write(&id, Some(&completion)).await {
                Ok(()) => {
                    txn.borrow_mut().apply(completion);
                    break;
                }
                Err(_) if self.still_leads() => {
                    glommio::timer::sleep(Duration::from_millis(backoff_ms)).await;
                    backoff_ms = (backoff_ms * 2).min(MARKER_RETRY_MAX_MS);
                }
                Err(_) => break,
            }
        }
        self.finish(&txn, &id);
    }

    fn finish(&self, txn: &TxnRef, id: &str) {
        txn.borrow_mut().busy = false;
        for waiter in self.completions.borrow_mut().remove(id).unwrap_or_default() {
            let _ = waiter.send(());
        }
    }

    /// Starts the markers of `txn` (prepared and written) and returns a signal of their end.
    fn start_completion(self: &Rc<Self>, txn: &TxnRef) -> oneshot::Receiver<()> {
        let (sender, receiver) = oneshot::channel();
        let id = {
            let mut t = txn.borrow_mut();
            assert!(!t.busy);
            t.busy = true;
            t.transactional_id.clone()
        };
        self.completions
            .borrow_mut()
            .entry(id)
            .or_default()
            .push(sender);
        let part = self.clone();
        let txn = txn.clone();
        spawn(async move { part.complete(txn).await });
        receiver
    }

    fn txn(&self, id: &str) -> Option<TxnRef> {
        self.txns.borrow().get(id).cloned()
    }
}

/// The coordinator partition `index` on this shard, loaded, if this shard leads it.
async fn open(shard: &Rc<Shard>, index: i32) -> Result<Rc<TxnPartition>, E> {
    let coordinator = shard.txns.coordinator(shard);
    let Some(partition) = shard.partitions.get(TRANSACTION_STATE_TOPIC, index) else {
        return Err(E::NotCoordinator);
    };
    let leader_epoch = partition.leader_epoch.get();
    if !partition.replication.borrow().leads_in(leader_epoch) {
        return Err(E::NotCoordinator);
    }
    let part = {
        let mut parts = coordinator.partitions.borrow_mut();
        match parts.get(&index) {
            Some(part)
                if Rc::ptr_eq(&part.partition, &partition)
                    && part.coordinator_epoch == leader_epoch =>
            {
                part.clone()
            }
            previous => {
                // First use, the topic was made again, or leadership came back in a new
                // epoch (the log may have changed by replication meanwhile): load again.
                if let Some(previous) = previous {
                    let dropped = previous.txns.borrow().len();
                    coordinator
                        .txn_count
                        .set(coordinator.txn_count.get().saturating_sub(dropped));
                }
                let part = Rc::new(TxnPartition {
                    index,
                    shard: Rc::downgrade(shard),
                    partition,
                    coordinator_epoch: leader_epoch,
                    loaded: Cell::new(false),
                    load_lock: futures::lock::Mutex::new(()),
                    txns: RefCell::new(HashMap::new()),
                    completions: RefCell::new(HashMap::new()),
                });
                parts.insert(index, part.clone());
                part
            }
        }
    };
    part.ensure_loaded(&coordinator).await?;
    Ok(part)
}

/// Indexes of the `__transaction_state` partitions this shard leads.
fn led_partitions(shard: &Rc<Shard>) -> Vec<i32> {
    let image = shard.metadata();
    let Some(topic) = image.topic(TRANSACTION_STATE_TOPIC) else {
        return Vec::new();
    };
    topic
        .partitions
        .iter()
        .enumerate()
        .filter(|(_, record)| crate::cluster::leader_shard(shard, record).ok() == Some(shard.id))
        .map(|(index, _)| index as i32)
        .collect()
}

/// Called once per shard at start-up: loads the partitions this shard leads (prepared
/// transactions resume their markers) and starts the housekeeping pass.
pub fn start(shard: &Rc<Shard>) {
    let _ = shard.txns.coordinator(shard);
}

fn start_housekeeping(shard: &Rc<Shard>, coordinator: &Rc<Coordinator>) {
    let weak = Rc::downgrade(coordinator);
    let shard = shard.clone();
    let interval = Duration::from_millis(shard.config.transaction_cleanup_interval_ms.max(1));
    spawn(async move {
        let mut stopped = shard.stopped().fuse();
        loop {
            if weak.upgrade().is_none() {
                return;
            }
            housekeeping(&shard).await;
            futures::select! {
                _ = stopped => return,
                _ = glommio::timer::sleep(interval).fuse() => {}
            }
        }
    });
}

/// Loads newly led partitions, aborts transactions past their timeout, removes expired ids.
async fn housekeeping(shard: &Rc<Shard>) {
    let now_ms = crate::group::wall_clock_ms();
    let expiration_ms =
        i64::try_from(shard.config.transactional_id_expiration_ms).unwrap_or(i64::MAX);
    for index in led_partitions(shard) {
        let part = match open(shard, index).await {
            Ok(part) => part,
            Err(error) => {
                tracing::debug!(
                    partition = index,
                    "transaction partition not loaded: {error:?}"
                );
                continue;
            }
        };
        let txns: Vec<TxnRef> = part.txns.borrow().values().cloned().collect();
        for txn in txns {
            let timed_out = txn.borrow().timed_out(now_ms);
            if let Some(abort) = timed_out {
                let id = txn.borrow().transactional_id.clone();
                tracing::info!(transactional_id = %id, producer_id = abort.producer_id,
                    "aborting a transaction past its timeout");
                if part.transition(&txn, abort).await.is_ok() {
                    // Nobody waits for this completion; the markers run on their own.
                    drop(part.start_completion(&txn));
                }
                continue;
            }
            if txn.borrow().expired(now_ms, expiration_ms) {
                let id = txn.borrow().transactional_id.clone();
                txn.borrow_mut().busy = true;
                let removed = part.write(&id, None).await;
                txn.borrow_mut().busy = false;
                if removed.is_ok() {
                    let mut t = txn.borrow_mut();
                    t.state = TxnState::Dead;
                    part.txns.borrow_mut().remove(&id);
                    let coordinator = shard.txns.coordinator(shard);
                    coordinator
                        .txn_count
                        .set(coordinator.txn_count.get().saturating_sub(1));
                    tracing::info!(transactional_id = %id, "transactional id expired");
                }
            }
        }
    }
}

// ---- API entry points (on the coordinator shard) -----------------------------------------------

/// InitProducerId for `id`: a producer id and a bumped epoch; an open transaction of the
/// previous producer is aborted first.
pub async fn init_producer_id(
    shard: &Rc<Shard>,
    index: i32,
    id: String,
    timeout_ms: i32,
    expected: Option<(i64, i16)>,
) -> Result<(i64, i16), E> {
    let part = open(shard, index).await?;
    let now_ms = crate::group::wall_clock_ms();
    let txn = match part.txn(&id) {
        Some(txn) => txn,
        None => {
            // A new id ignores the producer id and epoch the client sends (Kafka starts it
            // at epoch -1, which accepts any): some clients send 0/0 by default.
            let coordinator = shard.txns.coordinator(shard);
            if coordinator.txn_count.get() >= coordinator.max_txns {
                tracing::warn!(transactional_id = %id, limit = coordinator.max_txns,
                    "transactional id limit of this shard reached");
                return Err(E::CoordinatorNotAvailable);
            }
            let producer_id = allocate_producer_id(shard).await?;
            // Another request may have created it while the id was allocated.
            if let Some(txn) = part.txn(&id) {
                txn
            } else {
                let value = fresh_producer(producer_id, timeout_ms, now_ms);
                let txn = Rc::new(RefCell::new(TxnMetadata::from_value(&id, value.clone())));
                txn.borrow_mut().busy = true;
                part.txns.borrow_mut().insert(id.clone(), txn.clone());
                coordinator.txn_count.set(coordinator.txn_count.get() + 1);
                let written = part.write(&id, Some(&value)).await;
                txn.borrow_mut().busy = false;
                if let Err(error) = written {
                    part.txns.borrow_mut().remove(&id);
                    coordinator
                        .txn_count
                        .set(coordinator.txn_count.get().saturating_sub(1));
                    return Err(error);
                }
                tracing::debug!(transactional_id = %id, producer_id, "new transactional id");
                return Ok((producer_id, 0));
            }
        }
    };
    // An open transaction is aborted first (bounded: each round needs a new, fenced state).
    for _ in 0..2 {
        let step = txn.borrow().init(expected, timeout_ms, now_ms)?;
        match step {
            InitStep::Current(producer_id, producer_epoch) => {
                return Ok((producer_id, producer_epoch))
            }
            InitStep::Bump(value) => {
                let bumped = (value.producer_id, value.producer_epoch);
                part.transition(&txn, value).await?;
                return Ok(bumped);
            }
            InitStep::NewProducerId => {
                let producer_id = allocate_producer_id(shard).await?;
                let value = fresh_producer(producer_id, timeout_ms, now_ms);
                part.transition(&txn, value).await?;
                return Ok((producer_id, 0));
            }
            InitStep::AbortFirst(abort) => {
                tracing::info!(transactional_id = %id, "fencing the previous producer: aborting its open transaction");
                part.transition(&txn, abort).await?;
                let done = part.start_completion(&txn);
                let waited =
                    glommio::timer::timeout(Duration::from_millis(END_TXN_WAIT_MS), async {
                        let _ = done.await;
                        Ok(())
                    })
                    .await;
                if waited.is_err() {
                    return Err(E::ConcurrentTransactions);
                }
            }
        }
    }
    Err(E::ConcurrentTransactions)
}

/// The state of an id with a newly allocated producer id: epoch 0, no transaction.
fn fresh_producer(producer_id: i64, timeout_ms: i32, now_ms: i64) -> TxnLogValue {
    TxnLogValue {
        producer_id,
        producer_epoch: 0,
        timeout_ms,
        state: TxnState::Empty,
        partitions: BTreeSet::new(),
        last_update_ms: now_ms,
        start_ms: -1,
    }
}

async fn allocate_producer_id(shard: &Rc<Shard>) -> Result<i64, E> {
    let allocated = shard
        .invoke_on(0, |shard| async move {
            crate::cluster::client::allocate_producer_id(&shard).await
        })
        .await;
    match allocated {
        Ok(Ok(producer_id)) => Ok(producer_id),
        Ok(Err(error)) => {
            tracing::error!("cannot allocate a producer id: {}", error.message);
            Err(E::CoordinatorNotAvailable)
        }
        Err(error) => {
            tracing::error!("cannot reach the controller: {error}");
            Err(E::CoordinatorNotAvailable)
        }
    }
}

/// AddPartitionsToTxn / AddOffsetsToTxn: adds `partitions` to the producer's transaction
/// (starting one if none is open).
pub async fn add_partitions(
    shard: &Rc<Shard>,
    index: i32,
    id: String,
    producer_id: i64,
    producer_epoch: i16,
    partitions: Vec<(String, i32)>,
) -> Result<(), E> {
    let part = open(shard, index).await?;
    let txn = part.txn(&id).ok_or(E::InvalidProducerIdMapping)?;
    if txn.borrow().partitions.len() + partitions.len() > MAX_PARTITIONS_PER_TRANSACTION {
        return Err(E::InvalidRequest);
    }
    let now_ms = crate::group::wall_clock_ms();
    let value = txn
        .borrow()
        .add_partitions(producer_id, producer_epoch, &partitions, now_ms)?;
    match value {
        Some(value) => part.transition(&txn, value).await,
        None => Ok(()),
    }
}

/// KIP-890 part 1: is the partition in the producer's open transaction?
pub async fn verify(
    shard: &Rc<Shard>,
    index: i32,
    id: String,
    producer_id: i64,
    producer_epoch: i16,
    partition: (String, i32),
) -> Result<(), E> {
    let part = open(shard, index).await?;
    let txn = part.txn(&id).ok_or(E::InvalidProducerIdMapping)?;
    let verified = txn.borrow().verify(producer_id, producer_epoch, &partition);
    verified
}

/// EndTxn: commits or aborts the producer's transaction. Answers once the markers are
/// written, or after `END_TXN_WAIT_MS` while they are still retried.
pub async fn end_transaction(
    shard: &Rc<Shard>,
    index: i32,
    id: String,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
) -> Result<(), E> {
    let part = open(shard, index).await?;
    let txn = part.txn(&id).ok_or(E::InvalidProducerIdMapping)?;
    let now_ms = crate::group::wall_clock_ms();
    let step = txn
        .borrow()
        .end(producer_id, producer_epoch, commit, now_ms)?;
    let prepared = match step {
        EndStep::AlreadyDone => return Ok(()),
        EndStep::Prepare(prepared) => prepared,
    };
    part.transition(&txn, prepared).await?;
    let done = part.start_completion(&txn);
    let _ = glommio::timer::timeout(Duration::from_millis(END_TXN_WAIT_MS), async {
        let _ = done.await;
        Ok(())
    })
    .await;
    Ok(())
}

/// One transactional id as DescribeTransactions and ListTransactions show it.
#[derive(Debug, Clone)]
pub struct TxnDescription {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub state: TxnState,
    pub timeout_ms: i32,
    pub start_ms: i64,
    pub partitions: Vec<(String, i32)>,
}

fn describe_one(txn: &TxnMetadata) -> TxnDescription {
    TxnDescription {
        transactional_id: txn.transactional_id.clone(),
        producer_id: txn.producer_id,
        producer_epoch: txn.producer_epoch,
        state: txn.state,
        timeout_ms: txn.timeout_ms,
        start_ms: txn.start_ms,
        partitions: txn.partitions.iter().cloned().collect(),
    }
}

/// DescribeTransactions of one id (TRANSACTIONAL_ID_NOT_FOUND when unknown).
pub async fn describe(shard: &Rc<Shard>, index: i32, id: String) -> Result<TxnDescription, E> {
    let part = open(shard, index).await?;
    let txn = part.txn(&id).ok_or(E::TransactionalIdNotFound)?;
    let described = describe_one(&txn.borrow());
    Ok(described)
}

/// Every transactional id this shard coordinates (ListTransactions filters them).
pub async fn list(shard: &Rc<Shard>) -> Vec<TxnDescription> {
    let mut listed = Vec::new();
    for index in led_partitions(shard) {
        let Ok(part) = open(shard, index).await else {
            continue;
        };
        listed.extend(
            part.txns
                .borrow()
                .values()
                .map(|t| describe_one(&t.borrow())),
        );
    }
    listed
}
