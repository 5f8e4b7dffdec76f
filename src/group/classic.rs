//! The classic group protocol (JoinGroup / SyncGroup / Heartbeat / LeaveGroup) as a state machine:
//!
//! ```text
//!   Empty ──join──▶ PreparingRebalance ──all joined / timeout──▶ CompletingRebalance
//!     ▲                  ▲        │                                      │ leader's SyncGroup
//!     │                  │        └──no members left──▶ Empty            ▼ (persisted)
//!     │                  └──join / leave / expiry / changed metadata── Stable
//!     └── Dead (deleted) — terminal
//! ```
//!
//! JoinGroup and SyncGroup answers are delayed: the member's oneshot sender is parked here and
//! completed by the transition that answers it. Timers and persistence are requested as
//! [`Effect`]s; the coordinator runs them and calls back (`on_join_timer`, `on_sync_timer`,
//! `check_member`, `on_persisted`, ...). Nothing here blocks or sleeps.
//!
//! Follows Kafka's GroupCoordinator: KIP-394 member-id-required joins, KIP-345 static membership
//! (replacement without rebalance, fencing of a stale instance, batch leave), the initial
//! rebalance delay, the rebalance timeout that drops members which did not rejoin (a client past
//! `max.poll.interval.ms`), and the sync timeout that drops members which joined but never synced.

use super::records::{ClassicGroupValue, MemberValue};
use super::{Code, Effect, GroupLimits, Now, NEW_MEMBER_JOIN_TIMEOUT, NONE};
use bytes::Bytes;
use futures::channel::oneshot;
use indexmap::IndexMap;
use kafka_protocol::error::ResponseError as E;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassicState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl ClassicState {
    /// The name Kafka uses in DescribeGroups and ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            ClassicState::Empty => "Empty",
            ClassicState::PreparingRebalance => "PreparingRebalance",
            ClassicState::CompletingRebalance => "CompletingRebalance",
            ClassicState::Stable => "Stable",
            ClassicState::Dead => "Dead",
        }
    }
}

/// A JoinGroup request, already checked for bounds by the coordinator.
#[derive(Debug, Clone)]
pub struct JoinParams {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new dynamic member first gets its id with MEMBER_ID_REQUIRED (KIP-394).
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JoinResult {
    pub error: Code,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Only the leader gets the members (with their metadata for the selected protocol).
    pub members: Vec<JoinedMember>,
}

impl JoinResult {
    pub fn error(error: Code, member_id: &str) -> JoinResult {
        JoinResult {
            error,
            generation: -1,
            protocol_type: None,
            protocol: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyncResult {
    pub error: Code,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(error: Code) -> SyncResult {
        SyncResult {
            error,
            protocol_type: None,
            protocol: None,
            assignment: Bytes::new(),
        }
    }
}

pub type JoinWaiter = oneshot::Sender<JoinResult>;
pub type SyncWaiter = oneshot::Sender<SyncResult>;

fn reply_join(waiter: JoinWaiter, result: JoinResult) {
    // The client may have gone away; its answer is then dropped.
    let _ = waiter.send(result);
}

fn reply_sync(waiter: SyncWaiter, result: SyncResult) {
    let _ = waiter.send(result);
}

#[derive(Debug)]
pub struct ClassicMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    join_waiter: Option<JoinWaiter>,
    sync_waiter: Option<SyncWaiter>,
    heartbeat_deadline: std::time::Instant,
    joined_at: std::time::Instant,
    /// Joined in the current rebalance and never completed a join before (Kafka's `isNew`).
    is_new: bool,
    /// Distinguishes this member from an earlier one with the same id (timers check it).
    incarnation: u64,
}

impl ClassicMember {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }

    pub fn is_awaiting_join(&self) -> bool {
        self.join_waiter.is_some()
    }
}

/// What a liveness check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberCheck {
    /// Gone or replaced: stop watching.
    Gone,
    /// Alive: check again after this long.
    Alive(Duration),
    /// Expired and removed.
    Expired,
}

/// Phase of a rebalance started from an empty group (Kafka's InitialDelayedJoin).
#[derive(Debug, Clone, Copy)]
struct InitialDelay {
    remaining: Duration,
}

#[derive(Debug)]
pub struct ClassicGroup {
    state: ClassicState,
    state_since_ms: i64,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    /// In join order: the first joined member is the leader candidate.
    members: IndexMap<String, ClassicMember>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not yet joined.
    pending_members: HashSet<String>,
    /// group.instance.id → member id.
    static_members: HashMap<String, String>,
    /// Members that joined this generation but have not sent SyncGroup.
    pending_sync: HashSet<String>,
    rebalance_seq: u64,
    initial_delay: Option<InitialDelay>,
    new_member_added: bool,
    next_incarnation: u64,
}

impl ClassicGroup {
    pub fn new(now: Now) -> ClassicGroup {
        ClassicGroup {
            state: ClassicState::Empty,
            state_since_ms: now.wall_ms,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: IndexMap::new(),
            pending_members: HashSet::new(),
            static_members: HashMap::new(),
            pending_sync: HashSet::new(),
            rebalance_seq: 0,
            initial_delay: None,
            new_member_added: false,
            next_incarnation: 1,
        }
    }

    // ---- accessors ---------------------------------------------------------------------------

    pub fn state(&self) -> ClassicState {
        self.state
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    pub fn state_since_ms(&self) -> i64 {
        self.state_since_ms
    }

    pub fn members(&self) -> impl Iterator<Item = &ClassicMember> {
        self.members.values()
    }

    pub fn member(&self, member_id: &str) -> Option<&ClassicMember> {
        self.members.get(member_id)
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// No members and none about to join: the group may be removed once it has no offsets.
    pub fn is_idle(&self) -> bool {
        self.members.is_empty() && self.pending_members.is_empty()
    }

    /// Member metadata (for the selected protocol) as DescribeGroups shows it: only when Stable.
    pub fn describe_member(&self, member: &ClassicMember) -> (Bytes, Bytes) {
        match (self.state, &self.protocol) {
            (ClassicState::Stable, Some(protocol)) => {
                (member.metadata(protocol), member.assignment.clone())
            }
            _ => (Bytes::new(), Bytes::new()),
        }
    }

    /// Topics the members subscribe to, from their consumer-protocol metadata. `None` when they
    /// cannot be known (another protocol type, or metadata that does not parse).
    pub fn subscribed_topics(&self) -> Option<HashSet<String>> {
        if self.members.is_empty() {
            return Some(HashSet::new());
        }
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol.as_ref()?;
        let mut topics = HashSet::new();
        for member in self.members.values() {
            topics.extend(parse_subscription(&member.metadata(protocol))?);
        }
        Some(topics)
    }

    fn next_incarnation(&mut self) -> u64 {
        let incarnation = self.next_incarnation;
        self.next_incarnation += 1;
        incarnation
    }

    fn set_state(&mut self, state: ClassicState, now: Now) {
        self.state = state;
        self.state_since_ms = now.wall_ms;
    }

    /// Marks the group deleted; every parked request gets `error`.
    pub fn mark_dead(&mut self, now: Now, error: Code) {
        self.fail_waiters(error);
        self.set_state(ClassicState::Dead, now);
    }

    /// Answers every parked JoinGroup and SyncGroup with `error` (shutdown, deletion).
    pub fn fail_waiters(&mut self, error: Code) {
        for member in self.members.values_mut() {
            if let Some(waiter) = member.join_waiter.take() {
                reply_join(waiter, JoinResult::error(error, &member.member_id));
            }
            if let Some(waiter) = member.sync_waiter.take() {
                reply_sync(waiter, SyncResult::error(error));
            }
        }
    }

    fn max_rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO)
    }

    fn is_full(&self, limits: &GroupLimits) -> bool {
        self.members.len() + self.pending_members.len() >= limits.max_size
    }

    /// Kafka's `supportsProtocols`: an empty group takes any non-empty protocol list; otherwise
    /// the type must match and at least one protocol must be supported by every member.
    fn supports_protocols(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(theirs, _)| theirs == name))
        })
    }

    /// The vote: each member votes for its most preferred protocol among those every member
    /// supports; most votes wins, ties go to the protocol listed first by the earliest member.
    pub fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&str> = first
            .protocols
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(theirs, _)| theirs == name))
            })
            .collect();
        let mut votes: Vec<(&str, usize)> = candidates.iter().map(|c| (*c, 0)).collect();
        for member in self.members.values() {
            if let Some((name, _)) = member
                .protocols
                .iter()
                .find(|(name, _)| candidates.contains(&name.as_str()))
            {
                if let Some(vote) = votes.iter_mut().find(|(c, _)| c == name) {
                    vote.1 += 1;
                }
            }
        }
        let mut best: Option<(&str, usize)> = None;
        for (name, count) in votes {
            if best.is_none_or(|(_, best_count)| count > best_count) {
                best = Some((name, count));
            }
        }
        best.map(|(name, _)| name.to_string())
    }

    /// FENCED_INSTANCE_ID if `instance_id` belongs to another member id, UNKNOWN_MEMBER_ID if
    /// the member is not in the group.
    fn validate_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), Code> {
        if let Some(instance) = instance_id {
            if let Some(current) = self.static_members.get(instance) {
                if current != member_id {
                    return Err(E::FencedInstanceId.code());
                }
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(E::UnknownMemberId.code());
        }
        Ok(())
    }

    fn renew(&mut self, member_id: &str, now: Now) {
        if let Some(member) = self.members.get_mut(member_id) {
            member.heartbeat_deadline = now.instant + member.session_timeout;
        }
    }

    fn join_result_for(&self, member_id: &str) -> JoinResult {
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol.clone();
        let members = if member_id == leader {
            let protocol = protocol.as_deref().unwrap_or_default();
            self.members
                .values()
                .map(|m| JoinedMember {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    metadata: m.metadata(protocol),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResult {
            error: NONE,
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol,
            leader,
            member_id: member_id.to_string(),
            members,
        }
    }

    // ---- JoinGroup ---------------------------------------------------------------------------

    pub fn join(
        &mut self,
        params: JoinParams,
        waiter: JoinWaiter,
        now: Now,
        limits: &GroupLimits,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        if self.state == ClassicState::Dead {
            // Being deleted: the client retries and finds a fresh group.
            reply_join(
                waiter,
                JoinResult::error(E::CoordinatorNotAvailable.code(), &params.member_id),
            );
            return effects;
        }
        if !self.supports_protocols(&params.protocol_type, &params.protocols) {
            reply_join(
                waiter,
                JoinResult::error(E::InconsistentGroupProtocol.code(), &params.member_id),
            );
            return effects;
        }
        if params.member_id.is_empty() {
            let prefix = params.instance_id.as_deref().unwrap_or(&params.client_id);
            let new_id = new_member_id(prefix);
            if let Some(instance) = &params.instance_id {
                if let Some(old_id) = self.static_members.get(instance).cloned() {
                    self.replace_static_member(
                        &old_id,
                        new_id,
                        params,
                        waiter,
                        now,
                        limits,
                        &mut effects,
                    );
                    return effects;
                }
            } else if params.require_known_member_id {
                if self.is_full(limits) {
                    reply_join(waiter, JoinResult::error(E::GroupMaxSizeReached.code(), ""));
                    return effects;
                }
                self.pending_members.insert(new_id.clone());
                effects.push(Effect::PendingMemberTimer {
                    member_id: new_id.clone(),
                    delay: Duration::from_millis(params.session_timeout_ms.max(0) as u64),
                });
                reply_join(
                    waiter,
                    JoinResult::error(E::MemberIdRequired.code(), &new_id),
                );
                return effects;
            }
            if self.is_full(limits) {
                reply_join(waiter, JoinResult::error(E::GroupMaxSizeReached.code(), ""));
                return effects;
            }
            self.add_member_and_rebalance(new_id, params, waiter, now, limits, &mut effects);
            return effects;
        }

        if self.pending_members.remove(&params.member_id) {
            let member_id = params.member_id.clone();
            self.add_member_and_rebalance(member_id, params, waiter, now, limits, &mut effects);
            return effects;
        }
        if let Err(code) = self.validate_member(&params.member_id, params.instance_id.as_deref()) {
            reply_join(waiter, JoinResult::error(code, &params.member_id));
            return effects;
        }
        let member_id = params.member_id.clone();
        let unchanged = self
            .members
            .get(&member_id)
            .is_some_and(|m| m.protocols == params.protocols);
        match self.state {
            ClassicState::PreparingRebalance => {
                self.update_member(&member_id, params, waiter, now);
                self.try_complete_join(now, &mut effects);
            }
            ClassicState::CompletingRebalance => {
                if unchanged {
                    // The member missed its JoinGroup answer: send it again.
                    tracing::debug!(member = %member_id, "join answered again (completing rebalance)");
                    self.renew(&member_id, now);
                    reply_join(waiter, self.join_result_for(&member_id));
                } else {
                    self.update_member(&member_id, params, waiter, now);
                    self.prepare_rebalance(now, limits, &mut effects);
                    self.try_complete_join(now, &mut effects);
                }
            }
            ClassicState::Stable => {
                let is_leader = self.leader.as_deref() == Some(member_id.as_str());
                if is_leader || !unchanged {
                    // A leader rejoining (e.g. topic metadata changed) or new metadata: rebalance.
                    // If that member was the only one, everyone has rejoined already: Kafka
                    // completes the join now rather than after the rebalance timeout.
                    self.update_member(&member_id, params, waiter, now);
                    self.prepare_rebalance(now, limits, &mut effects);
                    self.try_complete_join(now, &mut effects);
                } else {
                    tracing::debug!(member = %member_id, "join answered from the stable generation");
                    self.renew(&member_id, now);
                    let mut result = self.join_result_for(&member_id);
                    result.members.clear();
                    reply_join(waiter, result);
                }
            }
            ClassicState::Empty | ClassicState::Dead => {
                reply_join(
                    waiter,
                    JoinResult::error(E::UnknownMemberId.code(), &member_id),
                );
            }
        }
        effects
    }

    fn update_member(&mut self, member_id: &str, params: JoinParams, waiter: JoinWaiter, now: Now) {
        tracing::debug!(
            member = member_id,
            state = self.state.name(),
            "member rejoins"
        );
        let member = self
            .members
            .get_mut(member_id)
            .expect("caller checked membership");
        member.protocols = params.protocols;
        member.session_timeout = Duration::from_millis(params.session_timeout_ms.max(0) as u64);
        member.rebalance_timeout = Duration::from_millis(params.rebalance_timeout_ms.max(0) as u64);
        member.client_id = params.client_id;
        member.client_host = params.client_host;
        member.heartbeat_deadline = now.instant + member.session_timeout;
        if let Some(previous) = member.join_waiter.replace(waiter) {
            // A second JoinGroup replaces the first; the first gets an answer to retry.
            reply_join(
                previous,
                JoinResult::error(E::RebalanceInProgress.code(), member_id),
            );
        }
    }

    fn add_member_and_rebalance(
        &mut self,
        member_id: String,
        params: JoinParams,
        waiter: JoinWaiter,
        now: Now,
        limits: &GroupLimits,
        effects: &mut Vec<Effect>,
    ) {
        tracing::debug!(member = %member_id, state = self.state.name(), "member joins the group");
        let incarnation = self.next_incarnation();
        let session_timeout = Duration::from_millis(params.session_timeout_ms.max(0) as u64);
        if self.members.is_empty() {
            self.protocol_type = Some(params.protocol_type.clone());
        }
        if let Some(instance) = &params.instance_id {
            self.static_members
                .insert(instance.clone(), member_id.clone());
        }
        self.members.insert(
            member_id.clone(),
            ClassicMember {
                member_id: member_id.clone(),
                instance_id: params.instance_id,
                client_id: params.client_id,
                client_host: params.client_host,
                session_timeout,
                rebalance_timeout: Duration::from_millis(params.rebalance_timeout_ms.max(0) as u64),
                protocol_type: params.protocol_type,
                protocols: params.protocols,
                assignment: Bytes::new(),
                join_waiter: Some(waiter),
                sync_waiter: None,
                heartbeat_deadline: now.instant + session_timeout,
                joined_at: now.instant,
                is_new: true,
                incarnation,
            },
        );
        self.new_member_added = true;
        effects.push(Effect::WatchMember {
            member_id,
            incarnation,
            delay: session_timeout,
        });
        self.maybe_prepare_rebalance(now, limits, effects);
        self.try_complete_join(now, effects);
    }

    /// A static member came back with a new member id (KIP-345): it takes over the old member's
    /// place; the old incarnation is fenced. A stable group with an unchanged protocol choice does
    /// not rebalance: the member gets the current generation and its old assignment.
    #[allow(clippy::too_many_arguments)]
    fn replace_static_member(
        &mut self,
        old_id: &str,
        new_id: String,
        params: JoinParams,
        waiter: JoinWaiter,
        now: Now,
        limits: &GroupLimits,
        effects: &mut Vec<Effect>,
    ) {
        let previous_leader = self.leader.clone();
        let Some(index) = self.members.get_index_of(old_id) else {
            reply_join(waiter, JoinResult::error(E::UnknownMemberId.code(), ""));
            return;
        };
        let (_, mut member) = self
            .members
            .shift_remove_index(index)
            .expect("index is in range");
        if let Some(old_waiter) = member.join_waiter.take() {
            reply_join(
                old_waiter,
                JoinResult::error(E::FencedInstanceId.code(), old_id),
            );
        }
        if let Some(old_waiter) = member.sync_waiter.take() {
            reply_sync(old_waiter, SyncResult::error(E::FencedInstanceId.code()));
        }
        let incarnation = self.next_incarnation();
        member.member_id = new_id.clone();
        member.incarnation = incarnation;
        member.protocols = params.protocols;
        member.client_id = params.client_id;
        member.client_host = params.client_host;
        member.session_timeout = Duration::from_millis(params.session_timeout_ms.max(0) as u64);
        member.rebalance_timeout = Duration::from_millis(params.rebalance_timeout_ms.max(0) as u64);
        member.heartbeat_deadline = now.instant + member.session_timeout;
        member.joined_at = now.instant;
        let session_timeout = member.session_timeout;
        self.members.shift_insert(index, new_id.clone(), member);
        if let Some(instance) = &params.instance_id {
            self.static_members.insert(instance.clone(), new_id.clone());
        }
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.clone());
        }
        if self.pending_sync.remove(old_id) {
            self.pending_sync.insert(new_id.clone());
        }
        effects.push(Effect::WatchMember {
            member_id: new_id.clone(),
            incarnation,
            delay: session_timeout,
        });
        match self.state {
            ClassicState::Stable if self.select_protocol() == self.protocol => {
                effects.push(Effect::PersistClassic {
                    generation: self.generation,
                    sync_assignments: None,
                });
                // The old leader id is returned on purpose: the replaced member must not think
                // it leads (a stable group would not broadcast a new assignment).
                let mut result = self.join_result_for(&new_id);
                result.members.clear();
                result.leader = previous_leader.unwrap_or_default();
                reply_join(waiter, result);
            }
            ClassicState::PreparingRebalance => {
                self.members
                    .get_mut(&new_id)
                    .expect("just inserted")
                    .join_waiter = Some(waiter);
                self.try_complete_join(now, effects);
            }
            _ => {
                self.members
                    .get_mut(&new_id)
                    .expect("just inserted")
                    .join_waiter = Some(waiter);
                self.prepare_rebalance(now, limits, effects);
                self.try_complete_join(now, effects);
            }
        }
    }

    fn maybe_prepare_rebalance(
        &mut self,
        now: Now,
        limits: &GroupLimits,
        effects: &mut Vec<Effect>,
    ) {
        if matches!(
            self.state,
            ClassicState::Empty | ClassicState::Stable | ClassicState::CompletingRebalance
        ) {
            self.prepare_rebalance(now, limits, effects);
        }
    }

    fn prepare_rebalance(&mut self, now: Now, limits: &GroupLimits, effects: &mut Vec<Effect>) {
        tracing::debug!(
            generation = self.generation,
            from = self.state.name(),
            members = self.members.len(),
            "group prepares a rebalance"
        );
        if self.state == ClassicState::CompletingRebalance {
            self.reset_assignments(E::RebalanceInProgress.code());
        }
        self.pending_sync.clear();
        let from_empty = self.state == ClassicState::Empty;
        self.set_state(ClassicState::PreparingRebalance, now);
        self.rebalance_seq += 1;
        let delay = if from_empty {
            let delay = limits.initial_rebalance_delay;
            self.initial_delay = Some(InitialDelay {
                remaining: self.max_rebalance_timeout().saturating_sub(delay),
            });
            self.new_member_added = false;
            delay
        } else {
            self.initial_delay = None;
            self.max_rebalance_timeout()
        };
        effects.push(Effect::JoinTimer {
            seq: self.rebalance_seq,
            delay,
        });
    }

    /// Clears assignments and answers parked SyncGroups with `error`.
    fn reset_assignments(&mut self, error: Code) {
        for member in self.members.values_mut() {
            member.assignment = Bytes::new();
            if let Some(waiter) = member.sync_waiter.take() {
                reply_sync(waiter, SyncResult::error(error));
            }
        }
    }

    fn all_members_joined(&self) -> bool {
        self.pending_members.is_empty() && self.members.values().all(|m| m.join_waiter.is_some())
    }

    fn try_complete_join(&mut self, now: Now, effects: &mut Vec<Effect>) {
        if self.state == ClassicState::PreparingRebalance
            && self.initial_delay.is_none()
            && self.all_members_joined()
        {
            self.complete_join(now, effects);
        }
    }

    pub fn on_join_timer(&mut self, seq: u64, now: Now, limits: &GroupLimits) -> Vec<Effect> {
        let mut effects = Vec::new();
        if seq != self.rebalance_seq || self.state != ClassicState::PreparingRebalance {
            return effects;
        }
        if let Some(initial) = &mut self.initial_delay {
            if self.new_member_added && !initial.remaining.is_zero() {
                // Members keep arriving: wait a little longer, within the rebalance timeout.
                self.new_member_added = false;
                let delay = limits.initial_rebalance_delay.min(initial.remaining);
                initial.remaining -= delay;
                self.rebalance_seq += 1;
                effects.push(Effect::JoinTimer {
                    seq: self.rebalance_seq,
                    delay,
                });
                return effects;
            }
            self.initial_delay = None;
        }
        self.complete_join(now, &mut effects);
        effects
    }

    fn complete_join(&mut self, now: Now, effects: &mut Vec<Effect>) {
        // Dynamic members that did not rejoin in time are out (static ones keep their place
        // until their session expires).
        let missing: Vec<String> = self
            .members
            .values()
            .filter(|m| m.join_waiter.is_none() && m.instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in missing {
            self.drop_member(&member_id, E::UnknownMemberId.code());
        }
        self.pending_members.clear();
        let leader_joined = self
            .leader
            .as_ref()
            .and_then(|leader| self.members.get(leader))
            .is_some_and(|m| m.join_waiter.is_some());
        if !leader_joined {
            self.leader = self
                .members
                .values()
                .find(|m| m.join_waiter.is_some())
                .map(|m| m.member_id.clone());
        }
        if self.leader.is_none() && !self.members.is_empty() {
            // Only static members that have not rejoined: give them another rebalance timeout.
            self.rebalance_seq += 1;
            effects.push(Effect::JoinTimer {
                seq: self.rebalance_seq,
                delay: self.max_rebalance_timeout(),
            });
            return;
        }
        self.generation = self.generation.wrapping_add(1).max(1);
        if self.members.is_empty() {
            self.protocol = None;
            self.leader = None;
            self.set_state(ClassicState::Empty, now);
            effects.push(Effect::PersistClassic {
                generation: self.generation,
                sync_assignments: None,
            });
            return;
        }
        self.protocol = self.select_protocol();
        self.set_state(ClassicState::CompletingRebalance, now);
        tracing::debug!(
            generation = self.generation,
            leader = ?self.leader,
            members = ?self.members.keys().collect::<Vec<_>>(),
            protocol = ?self.protocol,
            "group join completed"
        );
        let member_ids: Vec<String> = self.members.keys().cloned().collect();
        for member_id in &member_ids {
            let result = self.join_result_for(member_id);
            let member = self.members.get_mut(member_id).expect("listed above");
            member.is_new = false;
            member.heartbeat_deadline = now.instant + member.session_timeout;
            if let Some(waiter) = member.join_waiter.take() {
                reply_join(waiter, result);
            }
        }
        self.pending_sync = member_ids.into_iter().collect();
        effects.push(Effect::SyncTimer {
            generation: self.generation,
            delay: self.max_rebalance_timeout(),
        });
    }

    // ---- SyncGroup ---------------------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        waiter: SyncWaiter,
        now: Now,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        if self.state == ClassicState::Dead {
            reply_sync(waiter, SyncResult::error(E::CoordinatorNotAvailable.code()));
            return effects;
        }
        if let Err(code) = self.validate_member(member_id, instance_id) {
            reply_sync(waiter, SyncResult::error(code));
            return effects;
        }
        if generation != self.generation {
            reply_sync(waiter, SyncResult::error(E::IllegalGeneration.code()));
            return effects;
        }
        if protocol_type.is_some_and(|t| Some(t) != self.protocol_type.as_deref())
            || protocol_name.is_some_and(|p| Some(p) != self.protocol.as_deref())
        {
            reply_sync(
                waiter,
                SyncResult::error(E::InconsistentGroupProtocol.code()),
            );
            return effects;
        }
        match self.state {
            ClassicState::Empty | ClassicState::Dead => {
                reply_sync(waiter, SyncResult::error(E::UnknownMemberId.code()));
            }
            ClassicState::PreparingRebalance => {
                reply_sync(waiter, SyncResult::error(E::RebalanceInProgress.code()));
            }
            ClassicState::CompletingRebalance => {
                tracing::debug!(member = member_id, generation, "member syncs");
                self.renew(member_id, now);
                self.pending_sync.remove(member_id);
                let member = self.members.get_mut(member_id).expect("validated");
                if let Some(previous) = member.sync_waiter.replace(waiter) {
                    reply_sync(previous, SyncResult::error(E::RebalanceInProgress.code()));
                }
                if self.leader.as_deref() == Some(member_id) {
                    let assignments: HashMap<String, Bytes> = assignments
                        .into_iter()
                        .filter(|(id, _)| self.members.contains_key(id))
                        .collect();
                    effects.push(Effect::PersistClassic {
                        generation: self.generation,
                        sync_assignments: Some(assignments),
                    });
                }
            }
            ClassicState::Stable => {
                self.renew(member_id, now);
                self.pending_sync.remove(member_id);
                let member = &self.members[member_id];
                reply_sync(
                    waiter,
                    SyncResult {
                        error: NONE,
                        protocol_type: self.protocol_type.clone(),
                        protocol: self.protocol.clone(),
                        assignment: member.assignment.clone(),
                    },
                );
            }
        }
        effects
    }

    /// A metadata write finished. For the leader's SyncGroup write, the generation completes:
    /// every member gets its assignment (or the error, and the group rebalances).
    pub fn on_persisted(
        &mut self,
        generation: i32,
        sync_assignments: Option<HashMap<String, Bytes>>,
        error: Code,
        now: Now,
        limits: &GroupLimits,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        let Some(assignments) = sync_assignments else {
            return effects;
        };
        if self.state != ClassicState::CompletingRebalance || self.generation != generation {
            return effects;
        }
        if error != NONE {
            self.reset_assignments(error);
            self.prepare_rebalance(now, limits, &mut effects);
            return effects;
        }
        let protocol_type = self.protocol_type.clone();
        let protocol = self.protocol.clone();
        for member in self.members.values_mut() {
            member.assignment = assignments
                .get(&member.member_id)
                .cloned()
                .unwrap_or_default();
            if let Some(waiter) = member.sync_waiter.take() {
                reply_sync(
                    waiter,
                    SyncResult {
                        error: NONE,
                        protocol_type: protocol_type.clone(),
                        protocol: protocol.clone(),
                        assignment: member.assignment.clone(),
                    },
                );
            }
        }
        self.set_state(ClassicState::Stable, now);
        tracing::debug!(generation, "group stable");
        effects
    }

    /// Members that joined generation `generation` but never sent SyncGroup are removed.
    pub fn on_sync_timer(
        &mut self,
        generation: i32,
        now: Now,
        limits: &GroupLimits,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        if generation != self.generation
            || !matches!(
                self.state,
                ClassicState::CompletingRebalance | ClassicState::Stable
            )
            || self.pending_sync.is_empty()
        {
            return effects;
        }
        let missing: Vec<String> = self.pending_sync.drain().collect();
        for member_id in missing {
            self.drop_member(&member_id, E::UnknownMemberId.code());
        }
        self.prepare_rebalance(now, limits, &mut effects);
        self.try_complete_join(now, &mut effects);
        effects
    }

    // ---- Heartbeat, LeaveGroup, liveness -------------------------------------------------------

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Now,
    ) -> Code {
        if self.state == ClassicState::Dead {
            return E::CoordinatorNotAvailable.code();
        }
        if let Err(code) = self.validate_member(member_id, instance_id) {
            tracing::debug!(member = member_id, code, "heartbeat refused");
            return code;
        }
        match self.state {
            ClassicState::Empty | ClassicState::Dead => E::UnknownMemberId.code(),
            ClassicState::PreparingRebalance => {
                self.renew(member_id, now);
                E::RebalanceInProgress.code()
            }
            ClassicState::CompletingRebalance | ClassicState::Stable => {
                if generation != self.generation {
                    return E::IllegalGeneration.code();
                }
                self.renew(member_id, now);
                NONE
            }
        }
    }

    /// LeaveGroup for `(member_id, instance_id)` pairs (v3+ batch; v0–2 send one with no
    /// instance). Returns one code per pair.
    pub fn leave(
        &mut self,
        leaving: &[(String, Option<String>)],
        now: Now,
        limits: &GroupLimits,
    ) -> (Vec<Code>, Vec<Effect>) {
        let mut effects = Vec::new();
        let mut codes = Vec::with_capacity(leaving.len());
        for (member_id, instance_id) in leaving {
            let code = self.leave_one(member_id, instance_id.as_deref(), now, limits, &mut effects);
            codes.push(code);
        }
        (codes, effects)
    }

    fn leave_one(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now: Now,
        limits: &GroupLimits,
        effects: &mut Vec<Effect>,
    ) -> Code {
        if self.state == ClassicState::Dead {
            return E::CoordinatorNotAvailable.code();
        }
        let member_id = match (member_id.is_empty(), instance_id) {
            (true, Some(instance)) => match self.static_members.get(instance) {
                Some(current) => current.clone(),
                None => return E::UnknownMemberId.code(),
            },
            _ => member_id.to_string(),
        };
        if self.pending_members.remove(&member_id) {
            self.try_complete_join(now, effects);
            return NONE;
        }
        if let Err(code) = self.validate_member(&member_id, instance_id) {
            return code;
        }
        self.remove_member(&member_id, now, limits, effects);
        NONE
    }

    /// Removes a member without triggering a rebalance (the caller decides).
    fn drop_member(&mut self, member_id: &str, error: Code) {
        let Some(member) = self.members.shift_remove(member_id) else {
            return;
        };
        tracing::debug!(
            member = member_id,
            state = self.state.name(),
            "member removed"
        );
        if let Some(instance) = &member.instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        if let Some(waiter) = member.join_waiter {
            reply_join(waiter, JoinResult::error(error, member_id));
        }
        if let Some(waiter) = member.sync_waiter {
            reply_sync(waiter, SyncResult::error(error));
        }
        self.pending_sync.remove(member_id);
        if self.leader.as_deref() == Some(member_id) {
            self.leader = self.members.keys().next().cloned();
        }
    }

    /// Removes a member (left, expired, fenced) and rebalances the rest.
    fn remove_member(
        &mut self,
        member_id: &str,
        now: Now,
        limits: &GroupLimits,
        effects: &mut Vec<Effect>,
    ) {
        self.drop_member(member_id, E::UnknownMemberId.code());
        match self.state {
            ClassicState::Stable | ClassicState::CompletingRebalance => {
                self.prepare_rebalance(now, limits, effects);
                self.try_complete_join(now, effects);
            }
            ClassicState::PreparingRebalance => self.try_complete_join(now, effects),
            ClassicState::Empty | ClassicState::Dead => {}
        }
    }

    /// Liveness of one member: its session expires unless it is parked in a JoinGroup (bounded
    /// by the new-member join timeout for new members) or a SyncGroup.
    pub fn check_member(
        &mut self,
        member_id: &str,
        incarnation: u64,
        now: Now,
        limits: &GroupLimits,
    ) -> (MemberCheck, Vec<Effect>) {
        let mut effects = Vec::new();
        let Some(member) = self.members.get(member_id) else {
            return (MemberCheck::Gone, effects);
        };
        if member.incarnation != incarnation || self.state == ClassicState::Dead {
            return (MemberCheck::Gone, effects);
        }
        let expired = if member.join_waiter.is_some() {
            if member.is_new {
                let deadline = member.joined_at + NEW_MEMBER_JOIN_TIMEOUT;
                if now.instant < deadline {
                    // Look again within a session timeout: once the join completes, the
                    // member's session runs and must expire on time even if it never
                    // heartbeats (it may have vanished while parked).
                    let next = (deadline - now.instant).min(member.session_timeout);
                    return (MemberCheck::Alive(next), effects);
                }
                true
            } else {
                return (MemberCheck::Alive(member.session_timeout), effects);
            }
        } else if member.sync_waiter.is_some() {
            return (MemberCheck::Alive(member.session_timeout), effects);
        } else {
            now.instant >= member.heartbeat_deadline
        };
        if !expired {
            let remaining = member.heartbeat_deadline - now.instant;
            return (MemberCheck::Alive(remaining), effects);
        }
        tracing::info!(member = member_id, "group member session expired");
        self.remove_member(member_id, now, limits, &mut effects);
        (MemberCheck::Expired, effects)
    }

    /// A member id handed out with MEMBER_ID_REQUIRED was never used: forget it.
    pub fn on_pending_member_timeout(&mut self, member_id: &str, now: Now) -> Vec<Effect> {
        let mut effects = Vec::new();
        if self.pending_members.remove(member_id) {
            self.try_complete_join(now, &mut effects);
        }
        effects
    }

    // ---- OffsetCommit --------------------------------------------------------------------------

    /// Kafka's checks for an OffsetCommit against this group; renews the member's session.
    pub fn validate_commit(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now: Now,
    ) -> Result<(), Code> {
        if self.state == ClassicState::Dead {
            return Err(E::CoordinatorNotAvailable.code());
        }
        if let Some(instance) = instance_id {
            if self
                .static_members
                .get(instance)
                .is_some_and(|current| current != member_id)
            {
                return Err(E::FencedInstanceId.code());
            }
        }
        if generation < 0 && self.state == ClassicState::Empty {
            // A consumer that does not use group management (or an admin tool).
            return Ok(());
        }
        if self.state == ClassicState::CompletingRebalance {
            return Err(E::RebalanceInProgress.code());
        }
        if !self.members.contains_key(member_id) {
            return Err(E::UnknownMemberId.code());
        }
        if generation != self.generation {
            return Err(E::IllegalGeneration.code());
        }
        self.renew(member_id, now);
        Ok(())
    }

    // ---- persistence -------------------------------------------------------------------------

    /// The record to persist; `sync_assignments` replace the members' assignments.
    pub fn to_value(&self, sync_assignments: Option<&HashMap<String, Bytes>>) -> ClassicGroupValue {
        let protocol = self.protocol.clone().unwrap_or_default();
        ClassicGroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp_ms: self.state_since_ms,
            members: self
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: duration_ms(m.rebalance_timeout),
                    session_timeout_ms: duration_ms(m.session_timeout),
                    subscription: m.metadata(&protocol),
                    assignment: match sync_assignments {
                        Some(assignments) => {
                            assignments.get(&m.member_id).cloned().unwrap_or_default()
                        }
                        None => m.assignment.clone(),
                    },
                })
                .collect(),
        }
    }

    /// Rebuilds a group from its persisted metadata (coordinator start-up). Members are back as
    /// Stable with fresh sessions: those whose clients are gone expire as usual.
    pub fn restore(value: ClassicGroupValue, now: Now) -> (ClassicGroup, Vec<Effect>) {
        let mut group = ClassicGroup::new(now);
        let mut effects = Vec::new();
        group.generation = value.generation;
        group.protocol_type = (!value.protocol_type.is_empty()).then_some(value.protocol_type);
        group.state_since_ms = value.state_timestamp_ms;
        if value.members.is_empty() || value.protocol.is_none() {
            return (group, effects);
        }
        let protocol = value.protocol.clone().unwrap_or_default();
        group.protocol = value.protocol;
        group.leader = value.leader;
        for member in value.members {
            let incarnation = group.next_incarnation();
            let session_timeout = Duration::from_millis(member.session_timeout_ms.max(0) as u64);
            if let Some(instance) = &member.instance_id {
                group
                    .static_members
                    .insert(instance.clone(), member.member_id.clone());
            }
            effects.push(Effect::WatchMember {
                member_id: member.member_id.clone(),
                incarnation,
                delay: session_timeout,
            });
            group.members.insert(
                member.member_id.clone(),
                ClassicMember {
                    member_id: member.member_id,
                    instance_id: member.instance_id,
                    client_id: member.client_id,
                    client_host: member.client_host,
                    session_timeout,
                    rebalance_timeout: Duration::from_millis(
                        member.rebalance_timeout_ms.max(0) as u64
                    ),
                    protocol_type: group.protocol_type.clone().unwrap_or_default(),
                    protocols: vec![(protocol.clone(), member.subscription)],
                    assignment: member.assignment,
                    join_waiter: None,
                    sync_waiter: None,
                    heartbeat_deadline: now.instant + session_timeout,
                    joined_at: now.instant,
                    is_new: false,
                    incarnation,
                },
            );
        }
        if group
            .leader
            .as_ref()
            .is_none_or(|leader| !group.members.contains_key(leader))
        {
            group.leader = group.members.keys().next().cloned();
        }
        group.state = ClassicState::Stable;
        (group, effects)
    }
}

fn duration_ms(duration: Duration) -> i32 {
    i32::try_from(duration.as_millis()).unwrap_or(i32::MAX)
}

/// `<prefix>-<uuid>`, as Kafka makes member ids; the prefix is cut to keep ids bounded.
fn new_member_id(prefix: &str) -> String {
    const MAX_PREFIX_BYTES: usize = 255;
    let mut end = prefix.len().min(MAX_PREFIX_BYTES);
    while !prefix.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}-{}", &prefix[..end], uuid::Uuid::new_v4())
}

/// Topics of a consumer-protocol subscription (`ConsumerProtocolSubscription`, any version).
pub fn parse_subscription(metadata: &[u8]) -> Option<Vec<String>> {
    crate::protocol::consumer_protocol::subscription_topics(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::oneshot::Receiver;

    fn limits() -> GroupLimits {
        GroupLimits {
            max_size: 3,
            initial_rebalance_delay: Duration::from_millis(100),
            ..GroupLimits::default()
        }
    }

    fn params(member_id: &str, protocols: &[&str]) -> JoinParams {
        JoinParams {
            member_id: member_id.to_string(),
            instance_id: None,
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(format!("meta-{p}"))))
                .collect(),
            require_known_member_id: false,
        }
    }

    fn join(
        group: &mut ClassicGroup,
        params: JoinParams,
        now: Now,
    ) -> (Receiver<JoinResult>, Vec<Effect>) {
        let (sender, receiver) = oneshot::channel();
        let effects = group.join(params, sender, now, &limits());
        (receiver, effects)
    }

    fn sync(
        group: &mut ClassicGroup,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Now,
    ) -> (Receiver<SyncResult>, Vec<Effect>) {
        let (sender, receiver) = oneshot::channel();
        let effects = group.sync(
            member_id,
            None,
            generation,
            None,
            None,
            assignments,
            sender,
            now,
        );
        (receiver, effects)
    }

    fn ready<T>(receiver: &mut Receiver<T>) -> T {
        receiver.try_recv().unwrap().expect("answered")
    }

    fn pending<T>(receiver: &mut Receiver<T>) {
        assert!(receiver.try_recv().unwrap().is_none(), "still parked");
    }

    fn join_timer_seq(effects: &[Effect]) -> u64 {
        effects
            .iter()
            .find_map(|e| match e {
                Effect::JoinTimer { seq, .. } => Some(*seq),
                _ => None,
            })
            .expect("a join timer")
    }

    /// Two members join an empty group and complete generation 1 through SyncGroup.
    fn stable_pair(now: Now) -> (ClassicGroup, String, String) {
        let mut group = ClassicGroup::new(now);
        let (mut first, effects) = join(&mut group, params("", &["range"]), now);
        assert_eq!(group.state(), ClassicState::PreparingRebalance);
        let seq = join_timer_seq(&effects);
        let (mut second, _) = join(&mut group, params("", &["range"]), now);
        pending(&mut first);
        // Initial delay: new members extend it once, then the join completes.
        let effects = group.on_join_timer(seq, now, &limits());
        let seq = join_timer_seq(&effects);
        assert!(group
            .on_join_timer(seq, now, &limits())
            .iter()
            .any(|e| matches!(e, Effect::SyncTimer { generation: 1, .. })));
        let first = ready(&mut first);
        let second = ready(&mut second);
        assert_eq!(group.state(), ClassicState::CompletingRebalance);
        assert_eq!((first.generation, second.generation), (1, 1));
        assert_eq!(first.leader, first.member_id, "the first joiner leads");
        assert_eq!(first.members.len(), 2);
        assert!(second.members.is_empty());
        let (mut follower, _) = sync(&mut group, &second.member_id, 1, vec![], now);
        pending(&mut follower);
        let assignments = vec![
            (first.member_id.clone(), Bytes::from_static(b"a1")),
            (second.member_id.clone(), Bytes::from_static(b"a2")),
        ];
        let (mut leader, effects) = sync(&mut group, &first.member_id, 1, assignments, now);
        let Some(Effect::PersistClassic {
            generation: 1,
            sync_assignments: Some(assignments),
        }) = effects.into_iter().next()
        else {
            panic!("leader sync persists the assignment");
        };
        pending(&mut leader);
        group.on_persisted(1, Some(assignments), NONE, now, &limits());
        assert_eq!(group.state(), ClassicState::Stable);
        assert_eq!(ready(&mut leader).assignment, Bytes::from_static(b"a1"));
        assert_eq!(ready(&mut follower).assignment, Bytes::from_static(b"a2"));
        (group, first.member_id, second.member_id)
    }

    #[test]
    fn empty_to_stable_and_heartbeats() {
        let now = Now::current();
        let (mut group, leader, follower) = stable_pair(now);
        assert_eq!(group.heartbeat(&leader, None, 1, now), NONE);
        assert_eq!(
            group.heartbeat(&follower, None, 0, now),
            E::IllegalGeneration.code()
        );
        assert_eq!(
            group.heartbeat("nobody", None, 1, now),
            E::UnknownMemberId.code()
        );
        let (mut late, _) = sync(&mut group, &follower, 1, vec![], now);
        assert_eq!(ready(&mut late).assignment, Bytes::from_static(b"a2"));
    }

    #[test]
    fn member_id_required_then_join() {
        let now = Now::current();
        let mut group = ClassicGroup::new(now);
        let mut first = params("", &["range"]);
        first.require_known_member_id = true;
        let (mut receiver, effects) = join(&mut group, first.clone(), now);
        let result = ready(&mut receiver);
        assert_eq!(result.error, E::MemberIdRequired.code());
        assert!(result.member_id.starts_with("client-"));
        assert!(matches!(effects[0], Effect::PendingMemberTimer { .. }));
        assert_eq!(group.state(), ClassicState::Empty);
        first.member_id = result.member_id.clone();
        let (mut receiver, effects) = join(&mut group, first, now);
        assert_eq!(group.state(), ClassicState::PreparingRebalance);
        group.on_join_timer(join_timer_seq(&effects), now, &limits());
        let joined = ready(&mut receiver);
        assert_eq!(joined.error, NONE);
        assert_eq!(joined.member_id, result.member_id);
        // An id that was never handed out is unknown.
        let (mut receiver, _) = join(&mut group, params("made-up", &["range"]), now);
        assert_eq!(ready(&mut receiver).error, E::UnknownMemberId.code());
    }

    #[test]
    fn rejoin_rebalances_and_missing_members_are_dropped() {
        let now = Now::current();
        let (mut group, leader, follower) = stable_pair(now);
        // The follower rejoins with new metadata: rebalance; the leader must rejoin too.
        let (mut follower_join, effects) =
            join(&mut group, params(&follower, &["range", "roundrobin"]), now);
        assert_eq!(group.state(), ClassicState::PreparingRebalance);
        assert_eq!(
            group.heartbeat(&leader, None, 1, now),
            E::RebalanceInProgress.code()
        );
        pending(&mut follower_join);
        // The leader never rejoins: at the rebalance timeout it is dropped, the follower leads.
        let seq = join_timer_seq(&effects);
        group.on_join_timer(seq, now, &limits());
        let result = ready(&mut follower_join);
        assert_eq!(result.generation, 2);
        assert_eq!(result.leader, follower);
        assert_eq!(result.members.len(), 1);
        assert!(group.member(&leader).is_none());
    }

    #[test]
    fn protocol_vote() {
        let now = Now::current();
        let mut group = ClassicGroup::new(now);
        let (_r1, _) = join(&mut group, params("", &["roundrobin", "range"]), now);
        let (_r2, _) = join(&mut group, params("", &["range", "roundrobin"]), now);
        let (_r3, _) = join(&mut group, params("", &["range", "roundrobin"]), now);
        assert_eq!(group.select_protocol().as_deref(), Some("range"));
        // A member that shares no protocol with the group cannot join.
        let (mut odd, _) = join(&mut group, params("", &["sticky"]), now);
        assert_eq!(ready(&mut odd).error, E::InconsistentGroupProtocol.code());
        let mut other_type = params("", &["range"]);
        other_type.protocol_type = "connect".into();
        let (mut odd, _) = join(&mut group, other_type, now);
        assert_eq!(ready(&mut odd).error, E::InconsistentGroupProtocol.code());
    }

    #[test]
    fn group_size_is_bounded() {
        let now = Now::current();
        let mut group = ClassicGroup::new(now);
        for _ in 0..3 {
            let _ = join(&mut group, params("", &["range"]), now);
        }
        let (mut fourth, _) = join(&mut group, params("", &["range"]), now);
        assert_eq!(ready(&mut fourth).error, E::GroupMaxSizeReached.code());
    }

    #[test]
    fn leader_leaving_elects_another_and_last_leave_empties() {
        let now = Now::current();
        let (mut group, leader, follower) = stable_pair(now);
        let (codes, effects) = group.leave(&[(leader.clone(), None)], now, &limits());
        assert_eq!(codes, vec![NONE]);
        assert_eq!(group.leader(), Some(follower.as_str()));
        assert_eq!(group.state(), ClassicState::PreparingRebalance);
        let (mut rejoin, _) = join(&mut group, params(&follower, &["range"]), now);
        let result = ready(&mut rejoin);
        assert_eq!(
            (result.generation, result.leader.as_str()),
            (2, follower.as_str())
        );
        drop(effects);
        let (codes, effects) = group.leave(
            &[(follower.clone(), None), ("ghost".into(), None)],
            now,
            &limits(),
        );
        assert_eq!(codes, vec![NONE, E::UnknownMemberId.code()]);
        assert_eq!(group.state(), ClassicState::Empty);
        assert_eq!(group.generation(), 3);
        assert!(effects
            .iter()
            .any(|e| matches!(e, Effect::PersistClassic { generation: 3, .. })));
    }

    #[test]
    fn lone_member_rejoining_a_stable_group_completes_at_once() {
        let now = Now::current();
        let mut group = ClassicGroup::new(now);
        let (mut first, effects) = join(&mut group, params("", &["range"]), now);
        group.on_join_timer(join_timer_seq(&effects), now, &limits());
        let joined = ready(&mut first);
        let assignments = vec![(joined.member_id.clone(), Bytes::from_static(b"a"))];
        let (_, effects) = sync(&mut group, &joined.member_id, 1, assignments, now);
        let Some(Effect::PersistClassic {
            sync_assignments, ..
        }) = effects.into_iter().next()
        else {
            panic!("leader sync persists the assignment");
        };
        group.on_persisted(1, sync_assignments, NONE, now, &limits());
        assert_eq!(group.state(), ClassicState::Stable);
        // The leader rejoins (e.g. its regex now matches another topic): nobody else to wait for.
        let (mut rejoin, _) = join(&mut group, params(&joined.member_id, &["range"]), now);
        let rejoined = ready(&mut rejoin);
        assert_eq!(rejoined.error, NONE);
        assert_eq!(rejoined.generation, 2);
        assert_eq!(group.state(), ClassicState::CompletingRebalance);
    }

    #[test]
    fn rejoin_with_new_metadata_completes_once_every_member_rejoined() {
        let now = Now::current();
        let (mut group, leader, follower) = stable_pair(now);
        let (mut leader_join, _) = join(&mut group, params(&leader, &["range", "roundrobin"]), now);
        pending(&mut leader_join);
        assert_eq!(
            group.heartbeat(&follower, None, 1, now),
            E::RebalanceInProgress.code()
        );
        let (mut follower_join, _) =
            join(&mut group, params(&follower, &["range", "roundrobin"]), now);
        assert_eq!(ready(&mut leader_join).generation, 2);
        assert_eq!(ready(&mut follower_join).generation, 2);
    }

    #[test]
    fn member_vanishing_during_its_first_join_expires_after_its_session() {
        let now = Now::current();
        let mut group = ClassicGroup::new(now);
        let (mut first, effects) = join(&mut group, params("", &["range"]), now);
        let (mut second, _) = join(&mut group, params("", &["range"]), now);
        let incarnation = |group: &ClassicGroup, id: &str| group.member(id).unwrap().incarnation;
        let seq = join_timer_seq(&effects);
        let effects = group.on_join_timer(seq, now, &limits());
        group.on_join_timer(join_timer_seq(&effects), now, &limits());
        let leader = ready(&mut first);
        let follower = ready(&mut second);
        assert_eq!(leader.leader, leader.member_id);
        // While parked in its first join, the member's check comes back within a session.
        let (check, _) = group.check_member(
            &leader.member_id,
            incarnation(&group, &leader.member_id),
            now,
            &limits(),
        );
        let MemberCheck::Alive(next) = check else {
            panic!("alive after the join");
        };
        assert!(
            next <= Duration::from_secs(10),
            "re-checked within the session timeout"
        );
        // The leader never syncs nor heartbeats; the follower waits in SyncGroup.
        let (mut follower_sync, _) = sync(&mut group, &follower.member_id, 1, vec![], now);
        pending(&mut follower_sync);
        let later = now.plus(Duration::from_secs(11));
        let (check, _) = group.check_member(
            &leader.member_id,
            incarnation(&group, &leader.member_id),
            later,
            &limits(),
        );
        assert_eq!(check, MemberCheck::Expired);
        assert_eq!(
            ready(&mut follower_sync).error,
            E::RebalanceInProgress.code()
        );
    }

    #[test]
    fn session_expiry_removes_member() {
        let now = Now::current();
        let (mut group, leader, follower) = stable_pair(now);
        let incarnation = group.member(&follower).unwrap().incarnation;
        let (check, _) = group.check_member(&follower, incarnation, now, &limits());
        assert!(matches!(check, MemberCheck::Alive(_)));
        group.heartbeat(&leader, None, 1, now.plus(Duration::from_secs(9)));
        let later = now.plus(Duration::from_secs(11));
        let (check, effects) = group.check_member(&follower, incarnation, later, &limits());
        assert_eq!(check, MemberCheck::Expired);
        assert!(group.member(&follower).is_none());
        assert_eq!(group.state(), ClassicState::PreparingRebalance);
        assert!(effects
            .iter()
            .any(|e| matches!(e, Effect::JoinTimer { .. })));
        let (check, _) = group.check_member(&follower, incarnation, later, &limits());
        assert_eq!(check, MemberCheck::Gone);
    }

    #[test]
    fn sync_timeout_drops_members_that_never_synced() {
        let now = Now::current();
        let mut group = ClassicGroup::new(now);
        let (mut a, effects) = join(&mut group, params("", &["range"]), now);
        let (mut b, _) = join(&mut group, params("", &["range"]), now);
        let seq = join_timer_seq(&effects);
        let effects = group.on_join_timer(seq, now, &limits());
        let effects = group.on_join_timer(join_timer_seq(&effects), now, &limits());
        assert!(effects
            .iter()
            .any(|e| matches!(e, Effect::SyncTimer { .. })));
        let a = ready(&mut a);
        let b = ready(&mut b);
        let (mut a_sync, _) = sync(&mut group, &a.member_id, 1, vec![], now);
        group.on_sync_timer(1, now, &limits());
        assert!(group.member(&b.member_id).is_none());
        assert_eq!(ready(&mut a_sync).error, E::RebalanceInProgress.code());
    }

    #[test]
    fn offset_commit_checks() {
        let now = Now::current();
        let mut empty = ClassicGroup::new(now);
        assert_eq!(empty.validate_commit("", None, -1, now), Ok(()));
        let (mut group, leader, _) = stable_pair(now);
        assert_eq!(group.validate_commit(&leader, None, 1, now), Ok(()));
        assert_eq!(
            group.validate_commit(&leader, None, 7, now),
            Err(E::IllegalGeneration.code())
        );
        assert_eq!(
            group.validate_commit("", None, -1, now),
            Err(E::UnknownMemberId.code())
        );
        let _ = join(&mut group, params("", &["range"]), now);
        // PreparingRebalance: the old generation may still commit.
        assert_eq!(group.validate_commit(&leader, None, 1, now), Ok(()));
    }

    #[test]
    fn commit_during_completing_rebalance_is_refused() {
        let now = Now::current();
        let mut group = ClassicGroup::new(now);
        let (mut a, effects) = join(&mut group, params("", &["range"]), now);
        let effects = group.on_join_timer(join_timer_seq(&effects), now, &limits());
        assert!(effects
            .iter()
            .any(|e| matches!(e, Effect::SyncTimer { .. })));
        let a = ready(&mut a);
        assert_eq!(
            group.validate_commit(&a.member_id, None, 1, now),
            Err(E::RebalanceInProgress.code())
        );
    }

    #[test]
    fn static_member_rejoins_without_rebalance_and_old_instance_is_fenced() {
        let now = Now::current();
        let mut group = ClassicGroup::new(now);
        let mut a = params("", &["range"]);
        a.instance_id = Some("instance-a".into());
        let mut b = params("", &["range"]);
        b.instance_id = Some("instance-b".into());
        let (mut ra, effects) = join(&mut group, a.clone(), now);
        let (mut rb, _) = join(&mut group, b, now);
        let effects = group.on_join_timer(join_timer_seq(&effects), now, &limits());
        group.on_join_timer(join_timer_seq(&effects), now, &limits());
        let ja = ready(&mut ra);
        let jb = ready(&mut rb);
        let assignments = vec![
            (ja.member_id.clone(), Bytes::from_static(b"A")),
            (jb.member_id.clone(), Bytes::from_static(b"B")),
        ];
        let leader = if ja.leader == ja.member_id { &ja } else { &jb };
        let (_s, effects) = sync(&mut group, &leader.member_id, 1, assignments, now);
        let Some(Effect::PersistClassic {
            sync_assignments, ..
        }) = effects.into_iter().next()
        else {
            panic!("persist");
        };
        group.on_persisted(1, sync_assignments, NONE, now, &limits());
        assert_eq!(group.state(), ClassicState::Stable);

        // Instance b restarts: new member id, same generation, no rebalance, same assignment.
        let mut b_again = params("", &["range"]);
        b_again.instance_id = Some("instance-b".into());
        let (mut rb2, effects) = join(&mut group, b_again, now);
        let rejoined = ready(&mut rb2);
        assert_eq!(rejoined.error, NONE);
        assert_eq!(rejoined.generation, 1);
        assert_ne!(rejoined.member_id, jb.member_id);
        assert_eq!(group.state(), ClassicState::Stable);
        assert!(effects
            .iter()
            .any(|e| matches!(e, Effect::PersistClassic { .. })));
        let (mut s, _) = sync(&mut group, &rejoined.member_id, 1, vec![], now);
        assert_eq!(ready(&mut s).assignment, Bytes::from_static(b"B"));
        // The old incarnation is fenced.
        assert_eq!(
            group.heartbeat(&jb.member_id, Some("instance-b"), 1, now),
            E::FencedInstanceId.code()
        );
        assert_eq!(
            group.validate_commit(&jb.member_id, Some("instance-b"), 1, now),
            Err(E::FencedInstanceId.code())
        );
        // Static leave by instance id only.
        let (codes, _) = group.leave(
            &[(String::new(), Some("instance-b".into()))],
            now,
            &limits(),
        );
        assert_eq!(codes, vec![NONE]);
        assert_eq!(group.member_count(), 1);
    }

    #[test]
    fn persist_failure_rebalances() {
        let now = Now::current();
        let mut group = ClassicGroup::new(now);
        let (mut a, effects) = join(&mut group, params("", &["range"]), now);
        group.on_join_timer(join_timer_seq(&effects), now, &limits());
        let a = ready(&mut a);
        let (mut s, effects) = sync(&mut group, &a.member_id, 1, vec![], now);
        let Some(Effect::PersistClassic {
            sync_assignments, ..
        }) = effects.into_iter().next()
        else {
            panic!("persist");
        };
        group.on_persisted(
            1,
            sync_assignments,
            E::NotCoordinator.code(),
            now,
            &limits(),
        );
        assert_eq!(ready(&mut s).error, E::NotCoordinator.code());
        assert_eq!(group.state(), ClassicState::PreparingRebalance);
    }

    #[test]
    fn restore_round_trip() {
        let now = Now::current();
        let (group, leader, follower) = stable_pair(now);
        let value = group.to_value(None);
        assert_eq!(value.members.len(), 2);
        let (restored, effects) = ClassicGroup::restore(value, now);
        assert_eq!(restored.state(), ClassicState::Stable);
        assert_eq!(restored.generation(), 1);
        assert_eq!(restored.leader(), Some(leader.as_str()));
        assert_eq!(
            restored.member(&follower).unwrap().assignment,
            Bytes::from_static(b"a2")
        );
        assert_eq!(effects.len(), 2);
    }

    #[test]
    fn subscriptions_parse_from_consumer_metadata() {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::{Encodable, StrBytes};
        let subscription = ConsumerProtocolSubscription::default()
            .with_topics(vec![StrBytes::from_static_str("orders")]);
        let mut buf = bytes::BytesMut::new();
        buf.extend_from_slice(&1i16.to_be_bytes());
        subscription.encode(&mut buf, 1).unwrap();
        assert_eq!(parse_subscription(&buf), Some(vec!["orders".to_string()]));
        assert_eq!(parse_subscription(b"x"), None);
    }
}
