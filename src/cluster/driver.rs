//! The metadata node: shard 0's driver of the controller quorum (on voters) and of this node's
//! copy of the metadata image (on every node).
//!
//! On a voter it owns the sans-IO [`Quorum`]: it ticks it from a timer, steps it with the Raft
//! messages that arrive on the controller listener, and after every step runs its ready loop
//! ([`MetadataNode::drive`]): messages go to per-peer queues (each drained by its own connection
//! task; a full queue drops messages, which Raft retransmits), committed entries go to the apply
//! task. The apply task is the only writer of the image: it applies entries in log order,
//! places the partitions this node hosts on its shards, publishes the image to every shard
//! (one hop per shard, in order), then answers the proposals those entries carried.
//!
//! Broker-only nodes have no quorum; their image is fed by the metadata fetcher
//! ([`super::broker_agent`]) through the same apply task.

use super::controller::Controller;
use super::metadata::MetadataImage;
use super::placement::LocalPlacement;
use super::quorum::{Applied, DirFs, ProposalId, ProposeError, Quorum, QuorumStatus, RaftMessage};
use super::records::{self, MetadataRecord};
use crate::config::{BrokerConfig, Voter};
use crate::shard::Shard;
use futures::channel::{mpsc, oneshot};
use futures::StreamExt;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Ticks per election timeout (raft-rs randomises the timeout in [1, 2) × this).
pub const ELECTION_TICKS: usize = 10;
/// Leader heartbeats per election timeout, in ticks.
pub const HEARTBEAT_TICKS: usize = 2;
/// Raft messages one peer connection writes in one go.
const PEER_BATCH_BYTES: usize = 1024 * 1024;
/// A peer that refuses or ignores a connection is tried again after at most this long.
const PEER_CONNECT_TIMEOUT_MS: u64 = 1_000;

/// Why a proposal did not commit.
#[derive(Debug, Clone, PartialEq)]
pub enum ProposalFailure {
    /// This node is not the active controller (the leader it knows of, if any).
    NotController(Option<i32>),
    /// Not committed within the controller request timeout (no quorum reachable).
    TimedOut,
    /// This node cannot take the change now: its metadata log cannot be written (a full disk;
    /// a change already proposed may still commit once the write succeeds), or raft dropped it.
    Storage(String),
}

/// Counters for /metrics and DescribeQuorum.
#[derive(Default)]
pub struct QuorumCounters {
    pub leader_changes: Cell<u64>,
    pub proposals_committed: Cell<u64>,
    pub proposals_failed: Cell<u64>,
}

pub struct MetadataNode {
    pub node_id: i32,
    pub config: Arc<BrokerConfig>,
    pub voters: Vec<Voter>,
    /// Present on controller voters.
    quorum: Option<RefCell<Quorum<DirFs>>>,
    /// The newest applied image (the one the shards have, once published).
    image: RefCell<Arc<MetadataImage>>,
    placement: RefCell<LocalPlacement>,
    apply_sender: mpsc::UnboundedSender<Applied>,
    apply_receiver: RefCell<Option<mpsc::UnboundedReceiver<Applied>>>,
    pending: RefCell<HashMap<ProposalId, oneshot::Sender<Result<u64, String>>>>,
    /// The last poll failed to write the metadata log.
    persistence_failing: Cell<bool>,
    peers: RefCell<BTreeMap<i32, mpsc::Sender<RaftMessage>>>,
    /// The active controller as last seen (from the quorum on voters, from answers elsewhere).
    leader_hint: Cell<Option<i32>>,
    /// Term in which this node's LeaderChange record was applied: from then on its image holds
    /// every committed change, so it may serve as the active controller.
    active_term: Cell<Option<u64>>,
    applied_waiters: RefCell<Vec<(u64, oneshot::Sender<()>)>>,
    pub controller: Controller,
    pub counters: QuorumCounters,
    /// This node's block of producer ids: `next..end` handed out locally.
    pub producer_ids: Cell<(i64, i64)>,
    pub producer_ids_lock: glommio::sync::Semaphore,
    /// Set when this node began shutting down: the agent and fetcher stop.
    pub shutting_down: Cell<bool>,
    /// This broker's registration (nodes with the broker role).
    pub agent: RefCell<Option<Rc<super::broker_agent::BrokerAgent>>>,
    shard: RefCell<Weak<Shard>>,
    /// TLS of the controller listener, both ends (`None`: PLAINTEXT).
    pub controller_tls: Option<crate::security::inter_broker::ControllerTls>,
}

impl MetadataNode {
    pub fn new(
        config: Arc<BrokerConfig>,
        quorum: Option<Quorum<DirFs>>,
        image: MetadataImage,
        placement: LocalPlacement,
        controller_tls: Option<crate::security::inter_broker::ControllerTls>,
    ) -> Rc<MetadataNode> {
        let voters = config.quorum_voters().expect("validated at start");
        let (apply_sender, apply_receiver) = mpsc::unbounded();
        Rc::new(MetadataNode {
            node_id: config.node_id,
            controller: Controller::new(),
            voters,
            quorum: quorum.map(RefCell::new),
            image: RefCell::new(Arc::new(image)),
            placement: RefCell::new(placement),
            apply_sender,
            apply_receiver: RefCell::new(Some(apply_receiver)),
            pending: RefCell::new(HashMap::new()),
            persistence_failing: Cell::new(false),
            peers: RefCell::new(BTreeMap::new()),
            leader_hint: Cell::new(None),
            active_term: Cell::new(None),
            applied_waiters: RefCell::new(Vec::new()),
            counters: QuorumCounters::default(),
            producer_ids: Cell::new((0, 0)),
            producer_ids_lock: glommio::sync::Semaphore::new(1),
            shutting_down: Cell::new(false),
            agent: RefCell::new(None),
            shard: RefCell::new(Weak::new()),
            controller_tls,
            config,
        })
    }

    /// The metadata node of this process. Call on shard 0 only.
    pub fn of(shard: &Shard) -> Rc<MetadataNode> {
        shard
            .metadata_node
            .get()
            .expect("the metadata node runs on shard 0")
            .clone()
    }

    pub fn is_voter(&self) -> bool {
        self.quorum.is_some()
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    pub fn applied_offset(&self) -> u64 {
        self.image.borrow().version
    }

    /// The active controller this node knows of.
    pub fn leader_id(&self) -> Option<i32> {
        match &self.quorum {
            Some(quorum) => quorum.borrow().leader_id(),
            None => self.leader_hint.get(),
        }
    }

    pub fn set_leader_hint(&self, leader: Option<i32>) {
        if self.quorum.is_none() {
            self.leader_hint.set(leader);
        }
    }

    /// True on the active controller once its image is current (its LeaderChange applied).
    pub fn is_active(&self) -> bool {
        let Some(quorum) = &self.quorum else {
            return false;
        };
        let quorum = quorum.borrow();
        quorum.is_leader() && self.active_term.get() == Some(quorum.term())
    }

    pub fn quorum_status(&self) -> Option<QuorumStatus> {
        self.quorum.as_ref().map(|quorum| quorum.borrow().status())
    }

    /// Committed entries for an observer (see [`Quorum::committed_entries_after`]).
    pub fn committed_after(&self, after_offset: u64, max_bytes: u64) -> super::rpc::MetadataChunk {
        let Some(quorum) = &self.quorum else {
            return super::rpc::MetadataChunk::default();
        };
        let quorum = quorum.borrow();
        match quorum.committed_entries_after(after_offset, max_bytes) {
            Ok(entries) => super::rpc::MetadataChunk {
                snapshot: None,
                entries: entries.into_iter().map(|e| (e.index, e.data)).collect(),
            },
            Err(_) => super::rpc::MetadataChunk {
                snapshot: quorum
                    .latest_snapshot()
                    .map(|(index, _term, data)| (index, data)),
                entries: Vec::new(),
            },
        }
    }

    pub fn commit_index(&self) -> u64 {
        self.quorum
            .as_ref()
            .map(|quorum| quorum.borrow().status().commit_index)
            .unwrap_or(0)
    }

    /// Starts the driver's tasks on shard 0: apply task, ticker, peer connections and the
    /// controller listener (voters), the active controller's session checks.
    pub fn start(self: &Rc<Self>, shard: &Rc<Shard>) -> anyhow::Result<()> {
        assert_eq!(shard.id, 0, "the metadata node runs on shard 0");
        *self.shard.borrow_mut() = Rc::downgrade(shard);
        let receiver = self
            .apply_receiver
            .borrow_mut()
            .take()
            .expect("started once");
        glommio::spawn_local(apply_loop(self.clone(), shard.clone(), receiver)).detach();
        if self.quorum.is_some() {
            for voter in self.voters.iter().filter(|v| v.node_id != self.node_id) {
                let (sender, receiver) = mpsc::channel(self.config.controller_peer_queue_messages);
                self.peers.borrow_mut().insert(voter.node_id, sender);
                glommio::spawn_local(peer_loop(self.clone(), voter.clone(), receiver)).detach();
            }
            if let Some(address) = self.config.controller_listen_address() {
                let listener = glommio::net::TcpListener::bind(address.as_str()).map_err(|e| {
                    anyhow::anyhow!("cannot listen for the controller on {address}: {e}")
                })?;
                tracing::info!(%address, "controller listening");
                glommio::spawn_local(super::server::serve(self.clone(), listener)).detach();
            }
            let tick = Duration::from_millis(
                (self.config.controller_quorum_election_timeout_ms / ELECTION_TICKS as u64).max(5),
            );
            let node = self.clone();
            glommio::spawn_local(async move {
                loop {
                    glommio::timer::sleep(tick).await;
                    if let Some(quorum) = &node.quorum {
                        quorum.borrow_mut().tick();
                    }
                    node.drive();
                }
            })
            .detach();
            self.on_leader_changed();
            self.drive();
        }
        self.controller.start(self.clone());
        Ok(())
    }

    /// Steps the quorum with a message from a peer.
    pub fn step(self: &Rc<Self>, message: RaftMessage) {
        let Some(quorum) = &self.quorum else { return };
        if let Err(error) = quorum.borrow_mut().step(message) {
            tracing::debug!("raft message refused: {error:#}");
        }
        self.drive();
    }

    /// Runs the quorum's ready loop and hands its output on. Never awaits.
    pub fn drive(self: &Rc<Self>) {
        let Some(quorum) = &self.quorum else { return };
        let output = match quorum.borrow_mut().poll() {
            Ok(output) => output,
            Err(error) => {
                // Persistence failed: nothing that depends on it was sent; the quorum retries
                // the same writes at the next poll. Waiting callers learn now, not at their
                // timeout, and the log says so once per failure streak.
                let message = format!("metadata log cannot be written: {error:#}");
                if !self.persistence_failing.replace(true) {
                    tracing::error!("{message}; retrying every tick");
                }
                for (_, sender) in self.pending.borrow_mut().drain() {
                    let _ = sender.send(Err(message.clone()));
                }
                return;
            }
        };
        if self.persistence_failing.replace(false) {
            tracing::info!("metadata log writes succeed again");
        }
        {
            let mut peers = self.peers.borrow_mut();
            for (to, message) in output.messages {
                if let Some(peer) = peers.get_mut(&to) {
                    // A full queue (peer unreachable) drops the message; Raft resends.
                    let _ = peer.try_send(message);
                }
            }
        }
        for applied in output.applied {
            let _ = self.apply_sender.unbounded_send(applied);
        }
        if output.leader_changed {
            self.on_leader_changed();
        }
    }

    fn on_leader_changed(self: &Rc<Self>) {
        let Some(quorum) = &self.quorum else { return };
        let (is_leader, leader, term) = {
            let quorum = quorum.borrow();
            (quorum.is_leader(), quorum.leader_id(), quorum.term())
        };
        self.counters
            .leader_changes
            .set(self.counters.leader_changes.get() + 1);
        tracing::info!(leader = ?leader, term, "controller quorum leader changed");
        if !is_leader {
            // Proposals of an earlier term may still commit, but we can no longer tell:
            // their callers get NOT_CONTROLLER and retry (Kafka's semantics too).
            self.pending.borrow_mut().clear();
            self.controller.deactivate();
            return;
        }
        if self.active_term.get() == Some(term) {
            return;
        }
        let node = self.clone();
        glommio::spawn_local(async move {
            let mut records = Vec::new();
            if node.image().cluster_id.is_empty() {
                records.push(MetadataRecord::ClusterId {
                    cluster_id: uuid::Uuid::new_v4().simple().to_string(),
                });
            }
            records.push(MetadataRecord::LeaderChange {
                node_id: node.node_id,
                term,
            });
            let timeout = Duration::from_millis(node.config.controller_request_timeout_ms);
            match node.propose_raw(records, timeout).await {
                Ok(offset) => {
                    tracing::info!(term, offset, "this node is the active controller");
                }
                Err(failure) => {
                    tracing::info!(term, ?failure, "did not become the active controller")
                }
            }
        })
        .detach();
    }

    /// Proposes one batch of records and waits until it is committed and applied here (so the
    /// caller's next look at the image includes it). Only the active controller proposes
    /// changes; the LeaderChange record is proposed before it is active.
    pub async fn propose(
        self: &Rc<Self>,
        records: Vec<MetadataRecord>,
    ) -> Result<u64, ProposalFailure> {
        if !self.is_active() {
            return Err(ProposalFailure::NotController(self.leader_id()));
        }
        let timeout = Duration::from_millis(self.config.controller_request_timeout_ms);
        self.propose_raw(records, timeout).await
    }

    async fn propose_raw(
        self: &Rc<Self>,
        records: Vec<MetadataRecord>,
        timeout: Duration,
    ) -> Result<u64, ProposalFailure> {
        let Some(quorum) = &self.quorum else {
            return Err(ProposalFailure::NotController(self.leader_id()));
        };
        let proposed = quorum.borrow_mut().propose(records::encode_batch(&records));
        let id = match proposed {
            Ok(id) => id,
            Err(ProposeError::NotLeader(leader)) => {
                return Err(ProposalFailure::NotController(leader))
            }
            Err(ProposeError::Dropped(why)) => {
                tracing::debug!("proposal dropped: {why}");
                return Err(ProposalFailure::Storage(format!(
                    "metadata change refused: {why}"
                )));
            }
        };
        let (sender, receiver) = oneshot::channel();
        self.pending.borrow_mut().insert(id, sender);
        self.drive();
        let outcome = glommio::timer::timeout(timeout, async {
            Ok::<_, glommio::GlommioError<()>>(receiver.await)
        })
        .await;
        match outcome {
            Ok(Ok(Ok(offset))) => {
                self.counters
                    .proposals_committed
                    .set(self.counters.proposals_committed.get() + 1);
                Ok(offset)
            }
            Ok(Ok(Err(why))) => {
                self.counters
                    .proposals_failed
                    .set(self.counters.proposals_failed.get() + 1);
                Err(ProposalFailure::Storage(why))
            }
            Ok(Err(_cancelled)) => {
                self.counters
                    .proposals_failed
                    .set(self.counters.proposals_failed.get() + 1);
                Err(ProposalFailure::NotController(self.leader_id()))
            }
            Err(_) => {
                self.pending.borrow_mut().remove(&id);
                self.counters
                    .proposals_failed
                    .set(self.counters.proposals_failed.get() + 1);
                Err(ProposalFailure::TimedOut)
            }
        }
    }

    /// Hands entries fetched from the active controller (broker-only nodes) to the apply task.
    pub fn apply_fetched(&self, chunk: super::rpc::MetadataChunk) {
        if let Some((index, data)) = chunk.snapshot {
            let _ = self.apply_sender.unbounded_send(Applied::Restore {
                index,
                term: 0,
                data,
            });
        }
        for (index, data) in chunk.entries {
            let _ =
                self.apply_sender
                    .unbounded_send(Applied::Entry(super::quorum::CommittedEntry {
                        index,
                        term: 0,
                        data,
                        proposal: None,
                    }));
        }
    }

    /// Waits until this node's image has applied `offset`, at most `timeout`; false on timeout.
    pub async fn wait_applied(&self, offset: u64, timeout: Duration) -> bool {
        if self.applied_offset() >= offset {
            return true;
        }
        let (sender, receiver) = oneshot::channel();
        self.applied_waiters.borrow_mut().push((offset, sender));
        glommio::timer::timeout(timeout, async {
            Ok::<_, glommio::GlommioError<()>>(receiver.await)
        })
        .await
        .is_ok_and(|outcome| outcome.is_ok())
    }
}

/// Applies committed entries in order, publishes the image, answers proposals.
async fn apply_loop(
    node: Rc<MetadataNode>,
    shard: Rc<Shard>,
    mut receiver: mpsc::UnboundedReceiver<Applied>,
) {
    while let Some(first) = receiver.next().await {
        let mut batch = vec![first];
        while let Ok(more) = receiver.try_recv() {
            batch.push(more);
        }
        let mut image = (*node.image()).clone();
        let mut answered: Vec<(ProposalId, u64)> = Vec::new();
        let mut became_active: Option<u64> = None;
        for applied in batch {
            match applied {
                Applied::Restore { index, data, .. } => match MetadataImage::from_snapshot(&data) {
                    Ok(mut restored) => {
                        restored.version = index;
                        image = restored;
                        tracing::info!(offset = index, "metadata image restored from a snapshot");
                    }
                    Err(error) => tracing::error!("cannot restore metadata snapshot: {error:#}"),
                },
                Applied::Entry(entry) => {
                    if entry.index <= image.version {
                        continue; // re-delivered (a fetch overlapping what was applied)
                    }
                    let batch = match records::decode_batch(&entry.data) {
                        Ok(batch) => batch,
                        Err(error) => {
                            tracing::error!(offset = entry.index, "{error:#}");
                            Vec::new()
                        }
                    };
                    for record in &batch {
                        if let MetadataRecord::LeaderChange { node_id, term } = record {
                            if *node_id == node.node_id {
                                became_active = Some(*term);
                            }
                        }
                    }
                    records::apply_batch(&mut image, entry.index, &batch);
                    if let Some(id) = entry.proposal {
                        answered.push((id, entry.index));
                    }
                }
            }
        }
        if let Err(error) =
            node.placement
                .borrow_mut()
                .localize(&mut image, node.node_id, shard.count)
        {
            tracing::error!("cannot persist the shard placement: {error}");
        }
        let image = Arc::new(image);
        *node.image.borrow_mut() = image.clone();
        publish(&shard, image.clone()).await;
        if let Some(term) = became_active {
            let current = node.quorum.as_ref().map(|q| q.borrow().term());
            if current == Some(term) {
                node.active_term.set(Some(term));
                node.controller.activate(&image);
            }
        }
        for (id, offset) in answered {
            if let Some(sender) = node.pending.borrow_mut().remove(&id) {
                let _ = sender.send(Ok(offset));
            }
        }
        let version = image.version;
        let ready: Vec<oneshot::Sender<()>> = {
            let mut waiters = node.applied_waiters.borrow_mut();
            let (done, waiting): (Vec<_>, Vec<_>) = waiters
                .drain(..)
                .partition(|(offset, _)| *offset <= version);
            *waiters = waiting;
            done.into_iter().map(|(_, sender)| sender).collect()
        };
        for sender in ready {
            let _ = sender.send(());
        }
        if let Some(quorum) = &node.quorum {
            let wants = quorum.borrow().wants_snapshot();
            if wants {
                let data = image.to_snapshot();
                match quorum.borrow_mut().compact(version, data) {
                    Ok(()) => tracing::info!(offset = version, "metadata log snapshot taken"),
                    Err(error) => tracing::error!("metadata snapshot failed: {error:#}"),
                }
            }
        }
    }
}

/// Applies `image` on every shard, in order, before returning.
async fn publish(shard: &Rc<Shard>, image: Arc<MetadataImage>) {
    let applies = (0..shard.count).map(|target| {
        let image = image.clone();
        shard.invoke_on(target, move |owner| async move {
            super::apply_image(&owner, image)
                .await
                .map_err(|e| format!("shard {}: {e:#}", owner.id))
        })
    });
    for outcome in futures::future::join_all(applies).await {
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(message)) => tracing::error!("applying metadata failed: {message}"),
            Err(error) => tracing::warn!("metadata not applied on a shard: {error}"),
        }
    }
}

/// Writes the Raft messages queued for one peer voter over one connection, reconnecting as
/// needed; messages that cannot be written are dropped.
async fn peer_loop(node: Rc<MetadataNode>, peer: Voter, mut receiver: mpsc::Receiver<RaftMessage>) {
    use futures::AsyncWriteExt;
    use protobuf::Message as _;
    let mut stream: Option<Box<dyn super::rpc::NodeStream>> = None;
    let mut buffer = Vec::new();
    let mut refused_until: Option<Instant> = None;
    while let Some(first) = receiver.next().await {
        buffer.clear();
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message.write_to_bytes() {
                Ok(bytes) => super::rpc::encode_frame(&mut buffer, super::rpc::KIND_RAFT, &bytes),
                Err(error) => tracing::error!("cannot encode a raft message: {error}"),
            }
            if buffer.len() >= PEER_BATCH_BYTES {
                break;
            }
            next = receiver.try_recv().ok();
        }
        if stream.is_none() {
            if refused_until.is_some_and(|until| Instant::now() < until) {
                continue;
            }
            let connect =
                glommio::timer::timeout(Duration::from_millis(PEER_CONNECT_TIMEOUT_MS), async {
                    super::rpc::connect(peer.address.as_str(), node.controller_tls.as_ref())
                        .await
                        .map_err(glommio::GlommioError::IoError)
                })
                .await;
            match connect {
                Ok(connected) => {
                    stream = Some(connected);
                    refused_until = None;
                }
                Err(error) => {
                    tracing::debug!(peer = peer.node_id, "cannot connect to voter: {error}");
                    // Back off a little so a dead peer costs few syscalls.
                    refused_until = Some(Instant::now() + Duration::from_millis(100));
                    continue;
                }
            }
        }
        if let Some(connected) = stream.as_mut() {
            let written = async {
                connected.write_all(&buffer).await?;
                // TLS holds written records until flushed.
                connected.flush().await
            };
            if let Err(error) = written.await {
                tracing::debug!(peer = peer.node_id, "voter connection lost: {error}");
                stream = None;
            }
        }
    }
}
