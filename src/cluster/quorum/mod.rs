//! The controller quorum's consensus core: raft-rs driven sans-IO over the metadata log files.
//!
//! Nothing here does network or timer I/O. The caller (the metadata node on shard 0) calls
//! [`Quorum::tick`] on a timer, hands in peer messages with [`Quorum::step`], proposes metadata
//! record batches with [`Quorum::propose`], and after each of these calls [`Quorum::poll`]: it
//! runs raft-rs's ready/advance loop, writes and fsyncs what raft needs durable, and returns the
//! messages to send (safe to send only now, after the writes) and the committed entries to
//! apply, in log order.
//!
//! Raft node ids are Kafka node ids plus one, because raft-rs reserves 0 for "none".

mod fs;
mod log;
#[cfg(test)]
mod sim;
mod storage;

pub use fs::{DirFs, MetaFs};
pub use log::logger;
pub use raft::eraftpb::Message as RaftMessage;

use raft::eraftpb::{ConfState, EntryType, HardState, Snapshot};
use raft::{ProgressState, RawNode, SnapshotStatus, StateRole};
use storage::{LogStore, HARD_STATE_FILE, LOG_FILE, SNAPSHOT_FILE};

/// Ready rounds one poll runs at most; each settles one batch of raft's work.
const MAX_READY_ROUNDS_PER_POLL: usize = 64;
/// The log file is rewritten by a snapshot past this size even when few entries are in it.
const MAX_LOG_FILE_BYTES: u64 = 256 * 1024 * 1024;
/// Bytes of a proposal's context: this incarnation's nonce and its counter.
const PROPOSAL_CONTEXT_BYTES: usize = 16;
/// Election timeouts a voter may wait on a snapshot from the leader before it counts as lost.
const SNAPSHOT_TIMEOUT_ELECTIONS: usize = 2;

pub struct QuorumConfig {
    pub node_id: i32,
    /// Node ids of all voters, this one among them.
    pub voters: Vec<i32>,
    pub election_tick: usize,
    pub heartbeat_tick: usize,
    /// Applied entries after the newest snapshot before [`Quorum::wants_snapshot`] says yes.
    pub max_entries_before_snapshot: u64,
    pub max_size_per_msg_bytes: u64,
    pub max_inflight_msgs: usize,
}

/// Names a proposal of this process so its commit can be matched back to the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProposalId(pub u64);

#[derive(Clone, Debug)]
pub struct CommittedEntry {
    pub index: u64,
    pub term: u64,
    /// Empty for the entry a new leader commits to open its term.
    pub data: Vec<u8>,
    /// Set when this process proposed the entry (in this incarnation).
    pub proposal: Option<ProposalId>,
}

/// What the state machine applies, in order.
pub enum Applied {
    Entry(CommittedEntry),
    /// Replace the state machine by this snapshot, taken at `index`.
    Restore {
        index: u64,
        term: u64,
        data: Vec<u8>,
    },
}

#[derive(Default)]
pub struct QuorumOutput {
    /// (destination node id, message). Persisted state they depend on is already durable.
    pub messages: Vec<(i32, RaftMessage)>,
    pub applied: Vec<Applied>,
    /// The leader or the term changed during this poll.
    pub leader_changed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader (leader hint {0:?})")]
    NotLeader(Option<i32>),
    #[error("proposal dropped: {0}")]
    Dropped(String),
}

/// The requested entries were compacted into a snapshot: fetch [`Quorum::latest_snapshot`].
#[derive(Debug, thiserror::Error)]
#[error("metadata log entries compacted into a snapshot")]
pub struct FetchError;

pub struct VoterStatus {
    pub node_id: i32,
    /// Highest index known replicated on the voter (known on the leader only; 0 elsewhere).
    pub matched_index: u64,
    pub is_leader: bool,
    pub recently_active: bool,
}

pub struct QuorumStatus {
    pub node_id: i32,
    pub term: u64,
    pub leader_id: Option<i32>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub last_index: u64,
    pub snapshot_index: u64,
    pub voters: Vec<VoterStatus>,
    pub elections_started: u64,
    pub leader_elected_count: u64,
}

pub struct Quorum<F: MetaFs> {
    node: RawNode<LogStore>,
    fs: F,
    node_id: i32,
    voters: Vec<i32>,
    max_entries_before_snapshot: u64,
    /// Random per process start, so a proposal of an earlier run never matches a new one.
    incarnation: u64,
    next_proposal: u64,
    /// Highest index handed to the caller in [`QuorumOutput::applied`].
    applied_index: u64,
    /// Hard state as last written to disk.
    durable_hard_state: HardState,
    /// Length of the valid log file; past it may lie a partial append that failed.
    log_file_bytes: u64,
    /// An append failed part-way: cut the file back to `log_file_bytes` before the next.
    log_tail_dirty: bool,
    /// A ready whose writes failed, retried first by the next poll.
    stalled: Option<raft::Ready>,
    /// Leading: (raft id, snapshot index, ticks) of each voter waiting on a snapshot.
    snapshot_waits: Vec<(u64, u64, usize)>,
    reported: (u64, u64),
    role: StateRole,
    elections_started: u64,
    leader_elected_count: u64,
}

fn raft_id(node_id: i32) -> u64 {
    node_id as u64 + 1
}

fn node_id_of(raft_id: u64) -> Option<i32> {
    (raft_id != 0).then(|| (raft_id - 1) as i32)
}

impl<F: MetaFs> Quorum<F> {
    /// Opens the persisted state in `fs`. Returns the snapshot to restore the state machine from,
    /// if there is one; the committed entries after it come out of the first polls.
    pub fn open(
        config: QuorumConfig,
        mut fs: F,
        logger: slog::Logger,
    ) -> anyhow::Result<(Quorum<F>, Option<Applied>)> {
        anyhow::ensure!(
            config.node_id >= 0,
            "node id {} is negative",
            config.node_id
        );
        anyhow::ensure!(
            config.voters.contains(&config.node_id),
            "node {} is not among the voters {:?}",
            config.node_id,
            config.voters
        );
        let mut conf_state = ConfState::default();
        conf_state.set_voters(config.voters.iter().map(|&id| raft_id(id)).collect());
        let mut store = LogStore::new(conf_state);
        let mut restore = None;
        if let Some(bytes) = fs.read(SNAPSHOT_FILE)? {
            let snapshot: Snapshot = storage::decode_checked(SNAPSHOT_FILE, &bytes)?;
            let metadata = snapshot.get_metadata();
            restore = Some(Applied::Restore {
                index: metadata.index,
                term: metadata.term,
                data: snapshot.data.to_vec(),
            });
            store.install_snapshot(snapshot);
        }
        let mut durable_hard_state = HardState::default();
        if let Some(bytes) = fs.read(HARD_STATE_FILE)? {
            durable_hard_state = storage::decode_checked(HARD_STATE_FILE, &bytes)?;
        }
        let log_bytes = fs.read(LOG_FILE)?.unwrap_or_default();
        let (records, valid_bytes) = storage::decode_log(&log_bytes);
        if valid_bytes < log_bytes.len() {
            tracing::warn!(
                valid_bytes,
                file_bytes = log_bytes.len(),
                "metadata log ends in a torn or corrupt record; truncating it there"
            );
            fs.truncate(LOG_FILE, valid_bytes as u64)?;
        }
        let snapshot = store.snapshot.get_metadata();
        let entries = storage::fold_log(records, snapshot.index, snapshot.term)?;
        store.append(&entries)?;
        let mut hard_state = durable_hard_state.clone();
        hard_state.term = hard_state.term.max(store.hard_state.term);
        hard_state.commit = hard_state
            .commit
            .max(store.snapshot_index())
            .min(store.last());
        store.hard_state = hard_state;
        let applied = store.snapshot_index();
        let raft_config = raft::Config {
            id: raft_id(config.node_id),
            election_tick: config.election_tick,
            heartbeat_tick: config.heartbeat_tick,
            applied,
            max_size_per_msg: config.max_size_per_msg_bytes,
            max_inflight_msgs: config.max_inflight_msgs,
            pre_vote: true,
            check_quorum: true,
            ..Default::default()
        };
        raft_config.validate()?;
        let node = RawNode::new(&raft_config, store, &logger)?;
        let mut quorum = Quorum {
            node,
            fs,
            node_id: config.node_id,
            voters: config.voters,
            max_entries_before_snapshot: config.max_entries_before_snapshot,
            incarnation: uuid::Uuid::new_v4().as_u64_pair().0,
            next_proposal: 0,
            applied_index: applied,
            durable_hard_state,
            log_file_bytes: valid_bytes as u64,
            log_tail_dirty: false,
            stalled: None,
            snapshot_waits: Vec::new(),
            reported: (0, 0),
            role: StateRole::Follower,
            elections_started: 0,
            leader_elected_count: 0,
        };
        if quorum.voters.len() == 1 {
            // Alone, there is nobody to wait for: lead at once.
            quorum.campaign()?;
        }
        Ok((quorum, restore))
    }

    /// raft-rs allows no step, tick or proposal between a ready and its advance, so a node
    /// whose ready is stalled on a failed write sits out, as if cut off, until it settles.
    fn is_stalled(&self) -> bool {
        self.stalled.is_some()
    }

    pub fn tick(&mut self) {
        if self.is_stalled() {
            return;
        }
        self.node.tick();
        self.expire_snapshots();
        self.observe_role();
    }

    /// raft-rs stops replicating to a voter it sent a snapshot until the voter acknowledges it
    /// or the transport reports the send failed. Messages get lost without such a report (a full
    /// peer queue, a dropped connection), and a lost snapshot or acknowledgement would stall the
    /// voter for as long as this node leads. So a snapshot unacknowledged for a few election
    /// timeouts counts as failed: the voter is probed again, and sent a new snapshot if needed.
    fn expire_snapshots(&mut self) {
        let raft = &self.node.raft;
        if raft.state != StateRole::Leader {
            self.snapshot_waits.clear();
            return;
        }
        let limit = SNAPSHOT_TIMEOUT_ELECTIONS * raft.election_timeout();
        let mut waits = Vec::new();
        let mut failed = Vec::new();
        for (&id, progress) in raft.prs().iter() {
            if progress.state != ProgressState::Snapshot {
                continue;
            }
            let ticks = self
                .snapshot_waits
                .iter()
                .find(|&&(waiting, index, _)| waiting == id && index == progress.pending_snapshot)
                .map_or(0, |&(_, _, ticks)| ticks)
                + 1;
            if ticks >= limit {
                failed.push(id);
            } else {
                waits.push((id, progress.pending_snapshot, ticks));
            }
        }
        self.snapshot_waits = waits;
        for id in failed {
            tracing::debug!(
                voter = ?node_id_of(id),
                "no acknowledgement of the metadata snapshot sent; sending again"
            );
            self.node.report_snapshot(id, SnapshotStatus::Failure);
        }
    }

    /// Hands in a message from a peer voter.
    pub fn step(&mut self, message: RaftMessage) -> anyhow::Result<()> {
        anyhow::ensure!(
            message.to == raft_id(self.node_id),
            "raft message for node {:?} reached node {}",
            node_id_of(message.to),
            self.node_id
        );
        let from = node_id_of(message.from);
        anyhow::ensure!(
            from.is_some_and(|id| self.voters.contains(&id)),
            "raft message from {from:?}, not a voter"
        );
        anyhow::ensure!(
            !self.is_stalled(),
            "metadata log writes are failing; message dropped"
        );
        self.node.step(message)?;
        self.observe_role();
        Ok(())
    }

    pub fn propose(&mut self, data: Vec<u8>) -> Result<ProposalId, ProposeError> {
        if !self.is_leader() {
            return Err(ProposeError::NotLeader(self.leader_id()));
        }
        if self.is_stalled() {
            return Err(ProposeError::Dropped(
                "metadata log writes are failing".into(),
            ));
        }
        self.next_proposal += 1;
        let id = ProposalId(self.next_proposal);
        let mut context = Vec::with_capacity(PROPOSAL_CONTEXT_BYTES);
        context.extend_from_slice(&self.incarnation.to_le_bytes());
        context.extend_from_slice(&id.0.to_le_bytes());
        match self.node.propose(context, data) {
            Ok(()) => Ok(id),
            Err(error) => Err(ProposeError::Dropped(error.to_string())),
        }
    }

    pub fn campaign(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.is_stalled(), "metadata log writes are failing");
        self.node.campaign()?;
        self.observe_role();
        Ok(())
    }

    /// Runs the ready loop: persists, then returns messages and committed entries.
    ///
    /// When a write fails (a full disk), the ready being settled is kept and its writes are
    /// retried from the start by the next poll; nothing depending on them has left.
    pub fn poll(&mut self) -> anyhow::Result<QuorumOutput> {
        let mut output = QuorumOutput::default();
        for _ in 0..MAX_READY_ROUNDS_PER_POLL {
            let ready = match self.stalled.take() {
                Some(ready) => ready,
                None if self.node.has_ready() => self.node.ready(),
                None => break,
            };
            if let Err(error) = self.persist_ready(&ready) {
                self.stalled = Some(ready);
                return Err(error);
            }
            self.settle(ready, &mut output)?;
        }
        // The commit index is an optimisation on restart, not a safety property: write it once
        // per poll rather than per round, and let a failure wait for the next poll.
        if let Err(error) = self.persist_hard_state(true) {
            tracing::warn!("cannot write the metadata log's commit index: {error:#}");
        }
        let now = (self.node.raft.term, self.node.raft.leader_id);
        if now != self.reported {
            self.reported = now;
            output.leader_changed = true;
        }
        Ok(output)
    }

    /// Makes durable what `ready` asks for: a received snapshot, new entries, term and vote.
    /// Safe to repeat after a failure: a partial append is cut off before writing again.
    fn persist_ready(&mut self, ready: &raft::Ready) -> anyhow::Result<()> {
        if !ready.snapshot().is_empty() {
            self.persist_received_snapshot(ready.snapshot())?;
        }
        if !ready.entries().is_empty() {
            if self.log_tail_dirty {
                self.fs.truncate(LOG_FILE, self.log_file_bytes)?;
                self.log_tail_dirty = false;
            }
            let mut bytes = Vec::new();
            for entry in ready.entries() {
                storage::encode_log_record(entry, &mut bytes)?;
            }
            self.log_tail_dirty = true;
            self.fs.append(LOG_FILE, &bytes)?;
            self.fs.sync(LOG_FILE)?;
            self.log_tail_dirty = false;
            self.log_file_bytes += bytes.len() as u64;
        }
        if let Some(hard_state) = ready.hs() {
            // Votes and append responses name this term and vote: durable before they leave.
            self.write_hard_state_if_changed(hard_state, false)?;
        }
        Ok(())
    }

    /// Hands on what a persisted `ready` carries and advances raft past it.
    fn settle(&mut self, mut ready: raft::Ready, output: &mut QuorumOutput) -> anyhow::Result<()> {
        let messages = ready.take_messages();
        self.collect_messages(messages, output);
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            let metadata = snapshot.get_metadata();
            output.applied.push(Applied::Restore {
                index: metadata.index,
                term: metadata.term,
                data: snapshot.data.to_vec(),
            });
            self.applied_index = metadata.index;
            self.node.mut_store().install_snapshot(snapshot);
        }
        let committed = ready.take_committed_entries();
        self.deliver(committed, output);
        let entries = ready.take_entries();
        self.node.mut_store().append(&entries)?;
        if let Some(hard_state) = ready.hs() {
            self.node.mut_store().hard_state = hard_state.clone();
        }
        let persisted = ready.take_persisted_messages();
        self.collect_messages(persisted, output);
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.node.mut_store().hard_state.commit = commit;
        }
        let messages = light.take_messages();
        self.collect_messages(messages, output);
        let committed = light.take_committed_entries();
        self.deliver(committed, output);
        self.node.advance_apply();
        self.observe_role();
        Ok(())
    }

    fn collect_messages(&self, messages: Vec<RaftMessage>, output: &mut QuorumOutput) {
        for message in messages {
            if let Some(to) = node_id_of(message.to) {
                output.messages.push((to, message));
            }
        }
    }

    fn deliver(&mut self, entries: Vec<raft::eraftpb::Entry>, output: &mut QuorumOutput) {
        for entry in entries {
            if entry.index <= self.applied_index {
                continue;
            }
            self.applied_index = entry.index;
            if entry.get_entry_type() != EntryType::EntryNormal {
                continue;
            }
            let proposal = (entry.context.len() == PROPOSAL_CONTEXT_BYTES
                && entry.context[..8] == self.incarnation.to_le_bytes())
            .then(|| ProposalId(u64::from_le_bytes(entry.context[8..].try_into().unwrap())));
            output.applied.push(Applied::Entry(CommittedEntry {
                index: entry.index,
                term: entry.term,
                data: entry.data.to_vec(),
                proposal,
            }));
        }
    }

    fn persist_hard_state(&mut self, including_commit: bool) -> anyhow::Result<()> {
        let current = self.node.store().hard_state.clone();
        self.write_hard_state_if_changed(&current, including_commit)
    }

    /// Writes `hard_state` when its term or vote differ from the durable one (or, with
    /// `including_commit`, its commit index).
    fn write_hard_state_if_changed(
        &mut self,
        hard_state: &HardState,
        including_commit: bool,
    ) -> anyhow::Result<()> {
        let durable = &self.durable_hard_state;
        let changed = hard_state.term != durable.term
            || hard_state.vote != durable.vote
            || (including_commit && hard_state.commit != durable.commit);
        if changed {
            self.fs
                .replace(HARD_STATE_FILE, &storage::encode_checked(hard_state)?)?;
            self.durable_hard_state = hard_state.clone();
        }
        Ok(())
    }

    /// A snapshot from the leader replaces the log: snapshot file first, then an empty log, so a
    /// crash between them leaves a log whose entries the snapshot covers.
    fn persist_received_snapshot(&mut self, snapshot: &Snapshot) -> anyhow::Result<()> {
        self.fs
            .replace(SNAPSHOT_FILE, &storage::encode_checked(snapshot)?)?;
        self.fs.replace(LOG_FILE, &[])?;
        self.log_file_bytes = 0;
        Ok(())
    }

    fn observe_role(&mut self) {
        let role = self.node.raft.state;
        if role != self.role {
            match role {
                StateRole::PreCandidate => self.elections_started += 1,
                StateRole::Leader => self.leader_elected_count += 1,
                _ => {}
            }
            self.role = role;
        }
    }

    /// True when enough has been applied since the last snapshot to take a new one.
    pub fn wants_snapshot(&self) -> bool {
        let since = self
            .applied_index
            .saturating_sub(self.node.store().snapshot_index());
        since > 0
            && self.stalled.is_none()
            && (since >= self.max_entries_before_snapshot.max(1)
                || self.log_file_bytes >= MAX_LOG_FILE_BYTES)
    }

    /// Takes a snapshot of the state machine as of `applied_index` and drops the log it covers.
    pub fn compact(
        &mut self,
        applied_index: u64,
        state_machine_data: Vec<u8>,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(
            applied_index <= self.applied_index,
            "snapshot at {applied_index} past applied index {}",
            self.applied_index
        );
        let store = self.node.store();
        let snapshot = store.snapshot_at(applied_index, state_machine_data)?;
        let mut remaining = Vec::new();
        for entry in store.entries() {
            if entry.index > applied_index {
                storage::encode_log_record(entry, &mut remaining)?;
            }
        }
        self.fs
            .replace(SNAPSHOT_FILE, &storage::encode_checked(&snapshot)?)?;
        self.fs.replace(LOG_FILE, &remaining)?;
        self.log_file_bytes = remaining.len() as u64;
        self.node.mut_store().compact(snapshot);
        Ok(())
    }

    pub fn status(&self) -> QuorumStatus {
        let raft = &self.node.raft;
        let leader_id = self.leader_id();
        let leading = raft.state == StateRole::Leader;
        let voters = self
            .voters
            .iter()
            .map(|&node_id| {
                let progress = leading.then(|| raft.prs().get(raft_id(node_id))).flatten();
                VoterStatus {
                    node_id,
                    matched_index: progress.map_or(0, |p| p.matched),
                    is_leader: leader_id == Some(node_id),
                    recently_active: progress.is_some_and(|p| p.recent_active),
                }
            })
            .collect();
        QuorumStatus {
            node_id: self.node_id,
            term: raft.term,
            leader_id,
            commit_index: raft.raft_log.committed,
            applied_index: self.applied_index,
            last_index: raft.raft_log.last_index(),
            snapshot_index: self.node.store().snapshot_index(),
            voters,
            elections_started: self.elections_started,
            leader_elected_count: self.leader_elected_count,
        }
    }

    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    pub fn leader_id(&self) -> Option<i32> {
        node_id_of(self.node.raft.leader_id)
    }

    pub fn term(&self) -> u64 {
        self.node.raft.term
    }

    /// Committed entries after `after_index`, up to about `max_bytes` (at least one), for an
    /// observer that follows the log without voting.
    pub fn committed_entries_after(
        &self,
        after_index: u64,
        max_bytes: u64,
    ) -> Result<Vec<CommittedEntry>, FetchError> {
        let store = self.node.store();
        let commit = self.node.raft.raft_log.committed.min(store.last());
        if after_index >= commit {
            return Ok(Vec::new());
        }
        if after_index + 1 < store.first() {
            return Err(FetchError);
        }
        let entries = store
            .slice(after_index + 1, commit + 1, Some(max_bytes))
            .map_err(|_| FetchError)?;
        Ok(entries
            .into_iter()
            .map(|entry| CommittedEntry {
                index: entry.index,
                term: entry.term,
                data: if entry.get_entry_type() == EntryType::EntryNormal {
                    entry.data.to_vec()
                } else {
                    Vec::new()
                },
                proposal: None,
            })
            .collect())
    }

    /// The newest snapshot: (index, term, state machine data).
    pub fn latest_snapshot(&self) -> Option<(u64, u64, Vec<u8>)> {
        let store = self.node.store();
        let metadata = store.snapshot.get_metadata();
        (metadata.index > 0).then(|| (metadata.index, metadata.term, store.snapshot.data.to_vec()))
    }
}
