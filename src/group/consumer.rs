//! KIP-848 consumer groups (`group.protocol=consumer`): one ConsumerGroupHeartbeat RPC, assignment
//! computed here with a server-side assignor, members converging incrementally.
//!
//! Epochs: the *group epoch* goes up whenever membership, a subscription, or the partition count of
//! a subscribed topic changes; the *assignment epoch* is the group epoch the target assignment was
//! computed for; each member's *member epoch* reaches the assignment epoch once it owns its target.
//! Reconciliation per member (Kafka's CurrentAssignmentBuilder): partitions leaving a member are
//! revoked first (the member keeps its epoch and must confirm, within its rebalance timeout, by
//! heartbeating without them), then it moves to the new epoch and receives the partitions no other
//! member still holds; any still held arrive on a later heartbeat.

use super::assignor::{self, Assignment, MemberSpec};
use super::{Code, Effect, GroupLimits, Now, NONE};
use kafka_protocol::error::ResponseError as E;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;
use uuid::Uuid;

/// Member epoch that asks to join.
pub const JOIN_EPOCH: i32 = 0;
/// Member epoch that leaves the group.
pub const LEAVE_EPOCH: i32 = -1;
/// Member epoch of a static member leaving temporarily (it will rejoin with its instance id).
pub const STATIC_LEAVE_EPOCH: i32 = -2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerState {
    Empty,
    Assigning,
    Reconciling,
    Stable,
}

impl ConsumerState {
    pub fn name(self) -> &'static str {
        match self {
            ConsumerState::Empty => "Empty",
            ConsumerState::Assigning => "Assigning",
            ConsumerState::Reconciling => "Reconciling",
            ConsumerState::Stable => "Stable",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Stable,
    /// Must give back `pending_revocation` before getting anything new.
    UnrevokedPartitions,
    /// At the new epoch, waiting for partitions another member still holds.
    UnreleasedPartitions,
}

/// A topic as the metadata image knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub id: Uuid,
    pub partitions: i32,
}

/// Lookup of topics by name (the metadata image; a map in tests).
pub trait Topics {
    fn by_name(&self, name: &str) -> Option<TopicInfo>;
    /// Names of the topics a regex subscription may match (internal topics excluded, as Kafka
    /// does), in name order.
    fn subscribable_names(&self) -> Vec<&str>;
}

/// Internal topics never match a regex subscription.
fn is_internal(name: &str) -> bool {
    name == crate::group::OFFSETS_TOPIC || name == crate::txn::TRANSACTION_STATE_TOPIC
}

impl Topics for crate::cluster::metadata::MetadataImage {
    fn by_name(&self, name: &str) -> Option<TopicInfo> {
        self.topic(name).map(|topic| TopicInfo {
            id: topic.topic_id,
            partitions: topic.partition_count(),
        })
    }

    fn subscribable_names(&self) -> Vec<&str> {
        self.topics
            .keys()
            .map(String::as_str)
            .filter(|name| !is_internal(name))
            .collect()
    }
}

impl Topics for HashMap<String, TopicInfo> {
    fn by_name(&self, name: &str) -> Option<TopicInfo> {
        self.get(name).cloned()
    }

    fn subscribable_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .keys()
            .map(String::as_str)
            .filter(|name| !is_internal(name))
            .collect();
        names.sort_unstable();
        names
    }
}

/// Longest SubscribedTopicRegex accepted.
pub const MAX_REGEX_BYTES: usize = 4096;
/// Memory one compiled subscription regex may take.
const REGEX_SIZE_LIMIT_BYTES: usize = 1 << 20;

/// A SubscribedTopicRegex, compiled (Kafka uses RE2/J; the `regex` crate has RE2's syntax and
/// its linear-time guarantee, so a hostile pattern cannot stall the coordinator shard). Matches
/// whole topic names, as Kafka's `Pattern.matcher(topic).matches()`.
#[derive(Debug, Clone)]
pub struct TopicRegex {
    pub pattern: String,
    anchored: regex::Regex,
}

impl TopicRegex {
    pub fn compile(pattern: &str) -> Result<TopicRegex, String> {
        if pattern.len() > MAX_REGEX_BYTES {
            return Err(format!(
                "SubscribedTopicRegex is longer than {MAX_REGEX_BYTES} bytes."
            ));
        }
        regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
            .size_limit(REGEX_SIZE_LIMIT_BYTES)
            .build()
            .map(|anchored| TopicRegex {
                pattern: pattern.to_string(),
                anchored,
            })
            .map_err(|error| format!("SubscribedTopicRegex {pattern} is invalid: {error}"))
    }

    pub fn matches(&self, topic: &str) -> bool {
        self.anchored.is_match(topic)
    }
}

impl PartialEq for TopicRegex {
    fn eq(&self, other: &TopicRegex) -> bool {
        self.pattern == other.pattern
    }
}

/// One ConsumerGroupHeartbeat, decoded.
#[derive(Debug, Clone, Default)]
pub struct HeartbeatParams {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Option<Vec<String>>,
    /// `Some("")` clears a regex subscription; `None` leaves it as it is.
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatResult {
    pub error: Code,
    pub message: Option<String>,
    pub member_id: Option<String>,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    pub assignment: Option<Assignment>,
}

impl HeartbeatResult {
    pub fn error(error: Code, message: impl Into<String>) -> HeartbeatResult {
        HeartbeatResult {
            error,
            message: Some(message.into()),
            member_id: None,
            member_epoch: 0,
            heartbeat_interval_ms: 0,
            assignment: None,
        }
    }
}

/// Kafka's request checks (INVALID_REQUEST / UNSUPPORTED_ASSIGNOR), before any state is touched.
pub fn validate(params: &HeartbeatParams, version: i16) -> Result<(), (Code, String)> {
    let invalid = |message: &str| Err((E::InvalidRequest.code(), message.to_string()));
    if params.instance_id.as_deref() == Some("") {
        return invalid("InstanceId can't be empty.");
    }
    if params.rack_id.as_deref() == Some("") {
        return invalid("RackId can't be empty.");
    }
    if params.member_id.len() > super::MAX_MEMBER_ID_BYTES
        || params
            .instance_id
            .as_ref()
            .is_some_and(|i| i.len() > super::MAX_MEMBER_ID_BYTES)
    {
        return invalid("MemberId or InstanceId is too long.");
    }
    if version >= 1 && params.member_id.is_empty() {
        return invalid("MemberId can't be empty.");
    }
    if params
        .subscribed_topic_names
        .as_ref()
        .is_some_and(|names| names.len() > super::MAX_SUBSCRIBED_TOPICS)
    {
        return invalid("Too many subscribed topics.");
    }
    match params.member_epoch {
        JOIN_EPOCH => {
            if params.rebalance_timeout_ms == -1 {
                return invalid("RebalanceTimeoutMs must be provided when joining.");
            }
            let has_names = params
                .subscribed_topic_names
                .as_ref()
                .is_some_and(|names| !names.is_empty());
            let has_regex = params
                .subscribed_topic_regex
                .as_ref()
                .is_some_and(|r| !r.is_empty());
            if !has_names && !has_regex {
                return invalid(
                    "SubscribedTopicNames or SubscribedTopicRegex must be set when joining.",
                );
            }
            if params.owned.as_ref().is_some_and(|owned| !owned.is_empty()) {
                return invalid("TopicPartitions must be empty when (re-)joining.");
            }
        }
        LEAVE_EPOCH => {
            if params.member_id.is_empty() {
                return invalid("MemberId can't be empty.");
            }
        }
        STATIC_LEAVE_EPOCH => {
            if params.member_id.is_empty() {
                return invalid("MemberId can't be empty.");
            }
            if params.instance_id.is_none() {
                return invalid("InstanceId can't be null.");
            }
        }
        epoch if epoch > 0 => {
            if params.member_id.is_empty() {
                return invalid("MemberId can't be empty.");
            }
        }
        _ => return invalid("MemberEpoch is invalid."),
    }
    if let Some(pattern) = params.subscribed_topic_regex.as_ref() {
        if !pattern.is_empty() {
            if let Err(message) = TopicRegex::compile(pattern) {
                return Err((E::InvalidRegularExpression.code(), message));
            }
        }
    }
    if let Some(name) = &params.server_assignor {
        if !assignor::is_supported(name) {
            return Err((
                E::UnsupportedAssignor.code(),
                format!(
                    "ServerAssignor {name} is not supported. Supported assignors: uniform, range."
                ),
            ));
        }
    }
    Ok(())
}

#[derive(Debug)]
pub struct ConsumerMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub epoch: i32,
    previous_epoch: i32,
    pub state: MemberState,
    pub assigned: Assignment,
    pub pending_revocation: Assignment,
    pub subscribed_topic_names: Vec<String>,
    /// Topics matching it are subscribed too (re-resolved as topics come and go).
    pub subscribed_topic_regex: Option<TopicRegex>,
    pub server_assignor: Option<String>,
    rebalance_timeout: Duration,
    session_deadline: std::time::Instant,
    revocation_deadline: Option<std::time::Instant>,
    incarnation: u64,
}

#[derive(Debug)]
pub struct ConsumerGroup {
    group_epoch: i32,
    assignment_epoch: i32,
    members: BTreeMap<String, ConsumerMember>,
    static_members: HashMap<String, String>,
    target: HashMap<String, Assignment>,
    /// Subscribed topics that exist, with their partition counts, as of the last target.
    subscription_metadata: BTreeMap<String, TopicInfo>,
    /// Who holds each partition (assigned or still revoking), across members.
    owners: HashMap<(Uuid, i32), String>,
    state_since_ms: i64,
    next_incarnation: u64,
}

impl ConsumerGroup {
    pub fn new(now: Now) -> ConsumerGroup {
        ConsumerGroup::with_epoch(0, now)
    }

    /// A group rebuilt from its persisted epoch (no members: they rejoin).
    pub fn with_epoch(epoch: i32, now: Now) -> ConsumerGroup {
        ConsumerGroup {
            group_epoch: epoch,
            assignment_epoch: epoch,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            target: HashMap::new(),
            subscription_metadata: BTreeMap::new(),
            owners: HashMap::new(),
            state_since_ms: now.wall_ms,
            next_incarnation: 1,
        }
    }

    pub fn group_epoch(&self) -> i32 {
        self.group_epoch
    }

    pub fn assignment_epoch(&self) -> i32 {
        self.assignment_epoch
    }

    pub fn members(&self) -> impl Iterator<Item = &ConsumerMember> {
        self.members.values()
    }

    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn state_since_ms(&self) -> i64 {
        self.state_since_ms
    }

    pub fn target_of(&self, member_id: &str) -> Assignment {
        self.target.get(member_id).cloned().unwrap_or_default()
    }

    /// The assignor the members prefer (most requested), `uniform` by default.
    pub fn assignor_name(&self) -> &'static str {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for member in self.members.values() {
            if let Some(name) = member.server_assignor.as_deref() {
                *votes.entry(name).or_default() += 1;
            }
        }
        let mut best = (assignor::UNIFORM, 0usize);
        for (name, count) in votes {
            if count > best.1 {
                if let Some(known) = assignor::ASSIGNORS.iter().find(|a| **a == name) {
                    best = (known, count);
                }
            }
        }
        best.0
    }

    pub fn state(&self) -> ConsumerState {
        if self.members.is_empty() {
            ConsumerState::Empty
        } else if self.group_epoch > self.assignment_epoch {
            ConsumerState::Assigning
        } else if self
            .members
            .values()
            .any(|m| m.epoch != self.assignment_epoch || m.state != MemberState::Stable)
        {
            ConsumerState::Reconciling
        } else {
            ConsumerState::Stable
        }
    }

    /// Topics the members subscribe to: by name, and the existing ones their regexes match.
    pub fn subscribed_topics(&self) -> HashSet<String> {
        self.members
            .values()
            .flat_map(|m| m.subscribed_topic_names.iter().cloned())
            .chain(self.subscription_metadata.keys().cloned())
            .collect()
    }

    fn bump_epoch(&mut self, effects: &mut Vec<Effect>) {
        self.group_epoch = self.group_epoch.saturating_add(1);
        effects.push(Effect::PersistConsumer {
            epoch: self.group_epoch,
        });
    }

    fn set_member_partitions(
        &mut self,
        member_id: &str,
        assigned: Assignment,
        pending: Assignment,
    ) {
        let member = self.members.get_mut(member_id).expect("member exists");
        for (topic, set) in member
            .assigned
            .iter()
            .chain(member.pending_revocation.iter())
        {
            for partition in set {
                if self.owners.get(&(*topic, *partition)).map(String::as_str) == Some(member_id) {
                    self.owners.remove(&(*topic, *partition));
                }
            }
        }
        for (topic, set) in assigned.iter().chain(pending.iter()) {
            for partition in set {
                self.owners
                    .insert((*topic, *partition), member_id.to_string());
            }
        }
        member.assigned = assigned;
        member.pending_revocation = pending;
    }

    fn remove_member(&mut self, member_id: &str, now: Now, effects: &mut Vec<Effect>) {
        if !self.members.contains_key(member_id) {
            return;
        }
        self.set_member_partitions(member_id, Assignment::new(), Assignment::new());
        let member = self.members.remove(member_id).expect("checked above");
        if let Some(instance) = &member.instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        self.target.remove(member_id);
        self.bump_epoch(effects);
        if self.members.is_empty() {
            self.state_since_ms = now.wall_ms;
        }
    }

    /// Kafka's rules for OffsetCommit against a consumer group (member epoch must match).
    pub fn validate_commit(
        &self,
        member_id: &str,
        member_epoch: i32,
        version: i16,
    ) -> Result<(), Code> {
        if member_epoch < 0 && self.members.is_empty() {
            return Ok(());
        }
        let Some(member) = self.members.get(member_id) else {
            return Err(E::UnknownMemberId.code());
        };
        if version < 9 {
            return Err(E::UnsupportedVersion.code());
        }
        if member_epoch != member.epoch {
            return Err(E::StaleMemberEpoch.code());
        }
        Ok(())
    }

    /// OffsetFetch v9 with a member: it must be a member at that epoch.
    pub fn validate_fetch(&self, member_id: &str, member_epoch: i32) -> Result<(), Code> {
        let Some(member) = self.members.get(member_id) else {
            return Err(E::UnknownMemberId.code());
        };
        if member_epoch != member.epoch {
            return Err(E::StaleMemberEpoch.code());
        }
        Ok(())
    }

    pub fn heartbeat(
        &mut self,
        params: HeartbeatParams,
        topics: &dyn Topics,
        now: Now,
        limits: &GroupLimits,
    ) -> (HeartbeatResult, Vec<Effect>) {
        let mut effects = Vec::new();
        if params.member_epoch == LEAVE_EPOCH || params.member_epoch == STATIC_LEAVE_EPOCH {
            return (self.leave(&params, now, &mut effects), effects);
        }
        let member_id = params.member_id.clone();
        let mut membership_changed = false;
        if params.member_epoch == JOIN_EPOCH {
            match self.join_member(&params, now, limits, &mut effects) {
                Ok(changed) => membership_changed = changed,
                Err(result) => return (result, effects),
            }
        } else {
            let Some(member) = self.members.get(&member_id) else {
                return (
                    HeartbeatResult::error(
                        E::UnknownMemberId.code(),
                        format!("Member {member_id} is not a member of the group."),
                    ),
                    effects,
                );
            };
            if member.epoch == STATIC_LEAVE_EPOCH {
                return (
                    HeartbeatResult::error(E::UnknownMemberId.code(), "Member left the group."),
                    effects,
                );
            }
            let fenced = if params.member_epoch > member.epoch {
                true
            } else if params.member_epoch < member.epoch {
                // A lost response: the previous epoch with a subset of the assignment is fine.
                params.member_epoch != member.previous_epoch
                    || !params
                        .owned
                        .as_ref()
                        .is_none_or(|owned| is_subset(owned, &member.assigned))
            } else {
                false
            };
            if fenced {
                return (
                    HeartbeatResult::error(
                        E::FencedMemberEpoch.code(),
                        format!(
                            "The member epoch {} does not match the expected epoch {}.",
                            params.member_epoch, member.epoch
                        ),
                    ),
                    effects,
                );
            }
        }

        // Subscription and member fields (null means unchanged).
        let member = self
            .members
            .get_mut(&member_id)
            .expect("joined or validated");
        if let Some(names) = &params.subscribed_topic_names {
            let mut names = names.clone();
            names.sort();
            names.dedup();
            if names != member.subscribed_topic_names {
                member.subscribed_topic_names = names;
                membership_changed = true;
            }
        }
        if let Some(pattern) = &params.subscribed_topic_regex {
            let regex =
                (!pattern.is_empty()).then(|| TopicRegex::compile(pattern).expect("validated"));
            if regex != member.subscribed_topic_regex {
                member.subscribed_topic_regex = regex;
                membership_changed = true;
            }
        }
        if params.server_assignor.is_some() && params.server_assignor != member.server_assignor {
            member.server_assignor = params.server_assignor.clone();
            membership_changed = true;
        }
        if params.rebalance_timeout_ms >= 0 {
            member.rebalance_timeout = Duration::from_millis(params.rebalance_timeout_ms as u64);
        }
        if params.rack_id.is_some() {
            member.rack_id = params.rack_id.clone();
        }
        member.client_id = params.client_id.clone();
        member.client_host = params.client_host.clone();
        member.session_deadline = now.instant + limits.consumer_session_timeout;

        // Topic metadata: a subscribed topic appearing or gaining partitions bumps the epoch.
        let metadata = self.resolve_subscriptions(topics);
        if metadata != self.subscription_metadata {
            self.subscription_metadata = metadata;
            membership_changed = true;
        }
        if membership_changed {
            self.bump_epoch(&mut effects);
        }
        if self.group_epoch > self.assignment_epoch {
            self.compute_target();
        }

        let before = self.members[&member_id].assigned.clone();
        self.reconcile(&member_id, params.owned.as_ref(), now, &mut effects);
        let member = &self.members[&member_id];
        let full_request = params.member_epoch == JOIN_EPOCH
            || (params.rebalance_timeout_ms != -1
                && (params.subscribed_topic_names.is_some()
                    || params.subscribed_topic_regex.is_some())
                && params.owned.is_some());
        let assignment =
            (full_request || member.assigned != before).then(|| member.assigned.clone());
        (
            HeartbeatResult {
                error: NONE,
                message: None,
                member_id: Some(member_id),
                member_epoch: member.epoch,
                heartbeat_interval_ms: limits.consumer_heartbeat_interval_ms,
                assignment,
            },
            effects,
        )
    }

    /// Epoch 0: a new member, a member rejoining after being fenced (it lost its partitions), or
    /// a static member taking over its instance. Returns whether membership changed.
    fn join_member(
        &mut self,
        params: &HeartbeatParams,
        now: Now,
        limits: &GroupLimits,
        effects: &mut Vec<Effect>,
    ) -> Result<bool, HeartbeatResult> {
        let member_id = params.member_id.clone();
        if let Some(instance) = &params.instance_id {
            if let Some(existing) = self.static_members.get(instance).cloned() {
                if existing != member_id {
                    let holder = &self.members[&existing];
                    if holder.epoch != STATIC_LEAVE_EPOCH {
                        return Err(HeartbeatResult::error(
                            E::UnreleasedInstanceId.code(),
                            format!("Static member {existing} with instance id {instance} is still active."),
                        ));
                    }
                    // Take over the previous incarnation: same assignment and epoch, no rebalance.
                    let mut old = self
                        .members
                        .remove(&existing)
                        .expect("static member exists");
                    let target = self.target.remove(&existing);
                    for owner in self.owners.values_mut() {
                        if *owner == existing {
                            owner.clone_from(&member_id);
                        }
                    }
                    old.member_id = member_id.clone();
                    old.epoch = old.previous_epoch.max(0);
                    old.incarnation = self.next_incarnation;
                    self.next_incarnation += 1;
                    old.session_deadline = now.instant + limits.consumer_session_timeout;
                    effects.push(Effect::WatchMember {
                        member_id: member_id.clone(),
                        incarnation: old.incarnation,
                        delay: limits.consumer_session_timeout,
                    });
                    if let Some(target) = target {
                        self.target.insert(member_id.clone(), target);
                    }
                    self.members.insert(member_id.clone(), old);
                    self.static_members.insert(instance.clone(), member_id);
                    return Ok(false);
                }
            }
        }
        if self.members.contains_key(&member_id) {
            // Rejoining with epoch 0: the client gave up its partitions.
            self.set_member_partitions(&member_id, Assignment::new(), Assignment::new());
            let incarnation = self.next_incarnation;
            self.next_incarnation += 1;
            let member = self.members.get_mut(&member_id).expect("checked");
            member.epoch = 0;
            member.previous_epoch = -1;
            member.state = MemberState::Stable;
            member.revocation_deadline = None;
            member.incarnation = incarnation;
            effects.push(Effect::WatchMember {
                member_id,
                incarnation,
                delay: limits.consumer_session_timeout,
            });
            return Ok(false);
        }
        if self.members.len() >= limits.max_size {
            return Err(HeartbeatResult::error(
                E::GroupMaxSizeReached.code(),
                format!(
                    "The consumer group has reached its maximum capacity of {} members.",
                    limits.max_size
                ),
            ));
        }
        let incarnation = self.next_incarnation;
        self.next_incarnation += 1;
        if let Some(instance) = &params.instance_id {
            self.static_members
                .insert(instance.clone(), member_id.clone());
        }
        self.members.insert(
            member_id.clone(),
            ConsumerMember {
                member_id: member_id.clone(),
                instance_id: params.instance_id.clone(),
                rack_id: params.rack_id.clone(),
                client_id: params.client_id.clone(),
                client_host: params.client_host.clone(),
                epoch: 0,
                previous_epoch: -1,
                state: MemberState::Stable,
                assigned: Assignment::new(),
                pending_revocation: Assignment::new(),
                subscribed_topic_names: Vec::new(),
                subscribed_topic_regex: None,
                server_assignor: None,
                rebalance_timeout: Duration::from_millis(params.rebalance_timeout_ms.max(0) as u64),
                session_deadline: now.instant + limits.consumer_session_timeout,
                revocation_deadline: None,
                incarnation,
            },
        );
        effects.push(Effect::WatchMember {
            member_id,
            incarnation,
            delay: limits.consumer_session_timeout,
        });
        Ok(true)
    }

    fn leave(
        &mut self,
        params: &HeartbeatParams,
        now: Now,
        effects: &mut Vec<Effect>,
    ) -> HeartbeatResult {
        let Some(member) = self.members.get_mut(&params.member_id) else {
            return HeartbeatResult::error(
                E::UnknownMemberId.code(),
                format!("Member {} is not a member of the group.", params.member_id),
            );
        };
        if params.member_epoch == STATIC_LEAVE_EPOCH && member.instance_id.is_some() {
            // Keeps its partitions until it comes back or its session expires.
            member.previous_epoch = member.epoch;
            member.epoch = STATIC_LEAVE_EPOCH;
        } else {
            let member_id = params.member_id.clone();
            self.remove_member(&member_id, now, effects);
        }
        HeartbeatResult {
            error: NONE,
            message: None,
            member_id: Some(params.member_id.clone()),
            member_epoch: params.member_epoch,
            heartbeat_interval_ms: 0,
            assignment: None,
        }
    }

    /// The existing topics the members subscribe to, by name or by regex.
    fn resolve_subscriptions(&self, topics: &dyn Topics) -> BTreeMap<String, TopicInfo> {
        let mut resolved: BTreeMap<String, TopicInfo> = self
            .members
            .values()
            .flat_map(|m| m.subscribed_topic_names.iter())
            .filter_map(|name| topics.by_name(name).map(|info| (name.clone(), info)))
            .collect();
        let regexes: BTreeMap<&str, &TopicRegex> = self
            .members
            .values()
            .filter_map(|m| m.subscribed_topic_regex.as_ref())
            .map(|regex| (regex.pattern.as_str(), regex))
            .collect();
        if !regexes.is_empty() {
            for name in topics.subscribable_names() {
                if resolved.contains_key(name) || !regexes.values().any(|r| r.matches(name)) {
                    continue;
                }
                if let Some(info) = topics.by_name(name) {
                    resolved.insert(name.to_string(), info);
                }
            }
        }
        resolved
    }

    /// A member's subscribed topics that exist (as of the last resolution).
    fn member_topics(&self, member: &ConsumerMember) -> BTreeSet<Uuid> {
        let by_name = member
            .subscribed_topic_names
            .iter()
            .filter_map(|name| self.subscription_metadata.get(name).map(|i| i.id));
        let by_regex = member.subscribed_topic_regex.iter().flat_map(|regex| {
            self.subscription_metadata
                .iter()
                .filter(|(name, _)| regex.matches(name))
                .map(|(_, info)| info.id)
        });
        by_name.chain(by_regex).collect()
    }

    fn compute_target(&mut self) {
        let partitions: BTreeMap<Uuid, i32> = self
            .subscription_metadata
            .values()
            .map(|info| (info.id, info.partitions))
            .collect();
        let specs: Vec<MemberSpec> = self
            .members
            .values()
            .map(|m| MemberSpec {
                member_id: m.member_id.clone(),
                topics: self.member_topics(m),
            })
            .collect();
        self.target = assignor::assign(self.assignor_name(), &specs, &partitions, &self.target);
        self.assignment_epoch = self.group_epoch;
    }

    /// Moves one member towards its target (see the module comment).
    fn reconcile(
        &mut self,
        member_id: &str,
        owned: Option<&Assignment>,
        now: Now,
        effects: &mut Vec<Effect>,
    ) {
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let assignment_epoch = self.assignment_epoch;
        let member = &self.members[member_id];
        match member.state {
            MemberState::UnrevokedPartitions => {
                let revoked =
                    owned.is_some_and(|owned| !intersects(owned, &member.pending_revocation));
                if !revoked {
                    return;
                }
                let assigned = member.assigned.clone();
                self.set_member_partitions(member_id, assigned, Assignment::new());
                let member = self.members.get_mut(member_id).expect("exists");
                member.state = MemberState::Stable;
                member.revocation_deadline = None;
            }
            MemberState::Stable
                if member.epoch == assignment_epoch && member.assigned == target =>
            {
                return;
            }
            _ => {}
        }
        let member = &self.members[member_id];
        let kept = intersection(&member.assigned, &target);
        let to_revoke = difference(&member.assigned, &target);
        if !to_revoke.is_empty() {
            let incarnation = member.incarnation;
            let delay = member.rebalance_timeout;
            self.set_member_partitions(member_id, kept, to_revoke);
            let member = self.members.get_mut(member_id).expect("exists");
            member.state = MemberState::UnrevokedPartitions;
            member.revocation_deadline = Some(now.instant + delay);
            effects.push(Effect::RevocationTimer {
                member_id: member_id.to_string(),
                incarnation,
                delay,
            });
            return;
        }
        let mut assigned = kept;
        let mut unreleased = false;
        for (topic, set) in &target {
            for &partition in set {
                match self.owners.get(&(*topic, partition)) {
                    Some(owner) if owner != member_id => unreleased = true,
                    _ => {
                        assigned.entry(*topic).or_default().insert(partition);
                    }
                }
            }
        }
        self.set_member_partitions(member_id, assigned, Assignment::new());
        let member = self.members.get_mut(member_id).expect("exists");
        if member.epoch != assignment_epoch {
            member.previous_epoch = member.epoch;
            member.epoch = assignment_epoch;
        }
        member.state = if unreleased {
            MemberState::UnreleasedPartitions
        } else {
            MemberState::Stable
        };
    }

    /// Session expiry (and the end of a static member's temporary leave).
    pub fn check_member(
        &mut self,
        member_id: &str,
        incarnation: u64,
        now: Now,
    ) -> (bool, Option<Duration>, Vec<Effect>) {
        let mut effects = Vec::new();
        let Some(member) = self.members.get(member_id) else {
            return (false, None, effects);
        };
        if member.incarnation != incarnation {
            return (false, None, effects);
        }
        if now.instant < member.session_deadline {
            return (false, Some(member.session_deadline - now.instant), effects);
        }
        tracing::info!(member = member_id, "consumer group member session expired");
        self.remove_member(member_id, now, &mut effects);
        (true, None, effects)
    }

    /// A member that has not revoked its partitions within its rebalance timeout is fenced.
    pub fn on_revocation_timer(
        &mut self,
        member_id: &str,
        incarnation: u64,
        now: Now,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        let Some(member) = self.members.get(member_id) else {
            return effects;
        };
        let overdue = member.incarnation == incarnation
            && member.state == MemberState::UnrevokedPartitions
            && member
                .revocation_deadline
                .is_some_and(|deadline| now.instant >= deadline);
        if overdue {
            tracing::info!(
                member = member_id,
                "member did not revoke its partitions in time: fenced"
            );
            self.remove_member(member_id, now, &mut effects);
        }
        effects
    }
}

fn is_subset(small: &Assignment, big: &Assignment) -> bool {
    small.iter().all(|(topic, set)| {
        set.is_empty() || big.get(topic).is_some_and(|theirs| set.is_subset(theirs))
    })
}

fn intersects(a: &Assignment, b: &Assignment) -> bool {
    a.iter()
        .any(|(topic, set)| b.get(topic).is_some_and(|theirs| !set.is_disjoint(theirs)))
}

fn intersection(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = Assignment::new();
    for (topic, set) in a {
        if let Some(theirs) = b.get(topic) {
            let common: BTreeSet<i32> = set.intersection(theirs).copied().collect();
            if !common.is_empty() {
                out.insert(*topic, common);
            }
        }
    }
    out
}

fn difference(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = Assignment::new();
    for (topic, set) in a {
        let rest: BTreeSet<i32> = match b.get(topic) {
            Some(theirs) => set.difference(theirs).copied().collect(),
            None => set.clone(),
        };
        if !rest.is_empty() {
            out.insert(*topic, rest);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> HashMap<String, TopicInfo> {
        HashMap::from([(
            "orders".to_string(),
            TopicInfo {
                id: Uuid::from_bytes([1; 16]),
                partitions: 4,
            },
        )])
    }

    fn orders() -> Uuid {
        Uuid::from_bytes([1; 16])
    }

    fn join_params(member_id: &str) -> HeartbeatParams {
        HeartbeatParams {
            member_id: member_id.into(),
            member_epoch: 0,
            rebalance_timeout_ms: 30_000,
            subscribed_topic_names: Some(vec!["orders".into()]),
            owned: Some(Assignment::new()),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            ..HeartbeatParams::default()
        }
    }

    fn beat(member_id: &str, epoch: i32, owned: Option<Assignment>) -> HeartbeatParams {
        HeartbeatParams {
            member_id: member_id.into(),
            member_epoch: epoch,
            rebalance_timeout_ms: -1,
            owned,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            ..HeartbeatParams::default()
        }
    }

    fn partitions(result: &HeartbeatResult) -> BTreeSet<i32> {
        result
            .assignment
            .as_ref()
            .expect("assignment in response")
            .get(&orders())
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn validation() {
        assert!(validate(&join_params("m"), 1).is_ok());
        assert_eq!(
            validate(&join_params(""), 1).unwrap_err().0,
            E::InvalidRequest.code()
        );
        let mut no_subscription = join_params("m");
        no_subscription.subscribed_topic_names = None;
        assert!(validate(&no_subscription, 1).is_err());
        let mut bad_assignor = join_params("m");
        bad_assignor.server_assignor = Some("sticky".into());
        assert_eq!(
            validate(&bad_assignor, 1).unwrap_err().0,
            E::UnsupportedAssignor.code()
        );
        let mut static_leave = beat("m", STATIC_LEAVE_EPOCH, None);
        assert!(validate(&static_leave, 1).is_err());
        static_leave.instance_id = Some("i".into());
        assert!(validate(&static_leave, 1).is_ok());
        assert!(validate(&beat("m", -3, None), 1).is_err());
    }

    fn info(byte: u8, partitions: i32) -> TopicInfo {
        TopicInfo {
            id: Uuid::from_bytes([byte; 16]),
            partitions,
        }
    }

    fn assigned_topics(result: &HeartbeatResult) -> BTreeSet<Uuid> {
        result
            .assignment
            .as_ref()
            .expect("assignment in response")
            .iter()
            .filter(|(_, partitions)| !partitions.is_empty())
            .map(|(id, _)| *id)
            .collect()
    }

    #[test]
    fn regex_subscriptions_follow_topics_as_they_come() {
        let now = Now::current();
        let limits = GroupLimits::default();
        let mut metadata = HashMap::from([
            ("orders-eu".to_string(), info(1, 2)),
            ("orders-us".to_string(), info(2, 2)),
            ("payments".to_string(), info(3, 2)),
            ("__consumer_offsets".to_string(), info(9, 50)),
        ]);
        let mut join = join_params("a");
        join.subscribed_topic_names = None;
        join.subscribed_topic_regex = Some("orders-.*|__.*".into());
        assert!(validate(&join, 1).is_ok());
        let mut group = ConsumerGroup::new(now);
        let (a, _) = group.heartbeat(join, &metadata, now, &limits);
        assert_eq!(a.error, NONE);
        // Whole names only, internal topics never.
        assert_eq!(
            assigned_topics(&a),
            BTreeSet::from([info(1, 2).id, info(2, 2).id])
        );
        let describe_epoch = a.member_epoch;

        // A new matching topic: the next heartbeat bumps the epoch and assigns it.
        metadata.insert("orders-apac".to_string(), info(4, 1));
        metadata.insert("xorders-apac".to_string(), info(5, 1));
        let (a2, _) = group.heartbeat(beat("a", describe_epoch, None), &metadata, now, &limits);
        assert!(a2.member_epoch > describe_epoch);
        assert_eq!(
            assigned_topics(&a2),
            BTreeSet::from([info(1, 2).id, info(2, 2).id, info(4, 1).id])
        );
        assert!(group.subscribed_topics().contains("orders-apac"));

        // An empty regex clears it; names take over.
        let mut names = beat("a", a2.member_epoch, None);
        names.subscribed_topic_regex = Some(String::new());
        names.subscribed_topic_names = Some(vec!["payments".into()]);
        names.rebalance_timeout_ms = 30_000;
        names.owned = Some(a2.assignment.clone().unwrap());
        let (a3, _) = group.heartbeat(names, &metadata, now, &limits);
        assert!(a3.member_epoch >= a2.member_epoch);
        // Revocation first: the old topics go before the new one arrives.
        let (a4, _) = group.heartbeat(
            beat("a", a3.member_epoch, Some(Assignment::new())),
            &metadata,
            now,
            &limits,
        );
        assert_eq!(assigned_topics(&a4), BTreeSet::from([info(3, 2).id]));
    }

    #[test]
    fn invalid_or_oversized_regexes_are_refused() {
        for pattern in ["orders-(", "a{100000}{100000}"] {
            let mut join = join_params("m");
            join.subscribed_topic_regex = Some(pattern.into());
            assert_eq!(
                validate(&join, 1).unwrap_err().0,
                E::InvalidRegularExpression.code(),
                "{pattern}"
            );
        }
        let mut long = join_params("m");
        long.subscribed_topic_regex = Some("a".repeat(MAX_REGEX_BYTES + 1));
        assert_eq!(
            validate(&long, 1).unwrap_err().0,
            E::InvalidRegularExpression.code()
        );
    }

    #[test]
    fn join_reconcile_and_leave() {
        let now = Now::current();
        let limits = GroupLimits::default();
        let mut group = ConsumerGroup::new(now);
        let (a, effects) = group.heartbeat(join_params("a"), &topics(), now, &limits);
        assert_eq!(a.error, NONE);
        assert_eq!(a.member_epoch, 1);
        assert_eq!(partitions(&a), BTreeSet::from([0, 1, 2, 3]));
        assert!(effects
            .iter()
            .any(|e| matches!(e, Effect::PersistConsumer { epoch: 1 })));
        assert_eq!(group.state(), ConsumerState::Stable);

        // b joins: epoch 2; a must first revoke two partitions; b gets them once released.
        let (b, _) = group.heartbeat(join_params("b"), &topics(), now, &limits);
        assert_eq!(b.member_epoch, 2);
        assert!(partitions(&b).is_empty(), "a still holds b's partitions");
        assert_eq!(group.state(), ConsumerState::Reconciling);
        let (a2, effects) = group.heartbeat(beat("a", 1, None), &topics(), now, &limits);
        assert_eq!(
            a2.member_epoch, 1,
            "epoch stays until revocation is confirmed"
        );
        let kept = partitions(&a2);
        assert_eq!(kept.len(), 2);
        assert!(effects
            .iter()
            .any(|e| matches!(e, Effect::RevocationTimer { .. })));
        // a confirms by heartbeating with only the kept partitions.
        let owned = Assignment::from([(orders(), kept.clone())]);
        let (a3, _) = group.heartbeat(beat("a", 1, Some(owned)), &topics(), now, &limits);
        assert_eq!(a3.member_epoch, 2);
        let (b2, _) = group.heartbeat(beat("b", 2, None), &topics(), now, &limits);
        assert_eq!(partitions(&b2).len(), 2);
        assert!(partitions(&b2).is_disjoint(&kept));
        assert_eq!(group.state(), ConsumerState::Stable);

        // b leaves: a gets everything back at epoch 3.
        let (left, _) = group.heartbeat(beat("b", LEAVE_EPOCH, None), &topics(), now, &limits);
        assert_eq!(left.member_epoch, LEAVE_EPOCH);
        let (a4, _) = group.heartbeat(beat("a", 2, None), &topics(), now, &limits);
        assert_eq!(a4.member_epoch, 3);
        assert_eq!(partitions(&a4).len(), 4);
    }

    #[test]
    fn epochs_are_checked() {
        let now = Now::current();
        let limits = GroupLimits::default();
        let mut group = ConsumerGroup::new(now);
        group.heartbeat(join_params("a"), &topics(), now, &limits);
        let (r, _) = group.heartbeat(beat("a", 5, None), &topics(), now, &limits);
        assert_eq!(r.error, E::FencedMemberEpoch.code());
        let (r, _) = group.heartbeat(beat("zz", 1, None), &topics(), now, &limits);
        assert_eq!(r.error, E::UnknownMemberId.code());
        assert_eq!(group.validate_commit("a", 1, 9), Ok(()));
        assert_eq!(
            group.validate_commit("a", 0, 9),
            Err(E::StaleMemberEpoch.code())
        );
        assert_eq!(
            group.validate_commit("x", 1, 9),
            Err(E::UnknownMemberId.code())
        );
        assert_eq!(
            group.validate_commit("a", 1, 8),
            Err(E::UnsupportedVersion.code())
        );
        assert_eq!(
            group.validate_commit("", -1, 9),
            Err(E::UnknownMemberId.code())
        );
    }

    #[test]
    fn partitions_added_to_a_topic_bump_the_epoch() {
        let now = Now::current();
        let limits = GroupLimits::default();
        let mut group = ConsumerGroup::new(now);
        group.heartbeat(join_params("a"), &topics(), now, &limits);
        let mut grown = topics();
        grown.get_mut("orders").unwrap().partitions = 6;
        let (r, _) = group.heartbeat(beat("a", 1, None), &grown, now, &limits);
        assert_eq!(r.member_epoch, 2);
        assert_eq!(partitions(&r).len(), 6);
    }

    #[test]
    fn session_expiry_and_revocation_timeout_fence() {
        let now = Now::current();
        let limits = GroupLimits::default();
        let mut group = ConsumerGroup::new(now);
        group.heartbeat(join_params("a"), &topics(), now, &limits);
        let incarnation = group.members["a"].incarnation;
        let (expired, again, _) = group.check_member("a", incarnation, now);
        assert!(!expired && again.is_some());
        group.heartbeat(join_params("b"), &topics(), now, &limits);
        let (_, effects) = group.heartbeat(beat("a", 1, None), &topics(), now, &limits);
        assert!(effects
            .iter()
            .any(|e| matches!(e, Effect::RevocationTimer { .. })));
        let late = now.plus(Duration::from_secs(31));
        group.on_revocation_timer("a", incarnation, late);
        assert!(!group.members.contains_key("a"));
        let (b, _) = group.heartbeat(beat("b", 2, None), &topics(), late, &limits);
        assert_eq!(partitions(&b).len(), 4);
        let b_incarnation = group.members["b"].incarnation;
        let (expired, _, _) = group.check_member(
            "b",
            b_incarnation,
            late.plus(limits.consumer_session_timeout),
        );
        assert!(expired);
        assert_eq!(group.state(), ConsumerState::Empty);
    }

    #[test]
    fn static_member_temporary_leave_and_takeover() {
        let now = Now::current();
        let limits = GroupLimits::default();
        let mut group = ConsumerGroup::new(now);
        let mut a = join_params("a1");
        a.instance_id = Some("instance-a".into());
        let (first, _) = group.heartbeat(a, &topics(), now, &limits);
        let epoch = group.group_epoch();
        let mut leave = beat("a1", STATIC_LEAVE_EPOCH, None);
        leave.instance_id = Some("instance-a".into());
        let (left, _) = group.heartbeat(leave, &topics(), now, &limits);
        assert_eq!(left.member_epoch, STATIC_LEAVE_EPOCH);
        // Another process with the same instance id while a1 is still active would be refused;
        // after the temporary leave it takes over without a new group epoch.
        let mut again = join_params("a2");
        again.instance_id = Some("instance-a".into());
        let (second, _) = group.heartbeat(again, &topics(), now, &limits);
        assert_eq!(second.error, NONE);
        assert_eq!(group.group_epoch(), epoch);
        assert_eq!(partitions(&second), partitions(&first));
        let mut third = join_params("a3");
        third.instance_id = Some("instance-a".into());
        let (refused, _) = group.heartbeat(third, &topics(), now, &limits);
        assert_eq!(refused.error, E::UnreleasedInstanceId.code());
    }

    #[test]
    fn rejoin_with_epoch_zero_resets_member() {
        let now = Now::current();
        let limits = GroupLimits::default();
        let mut group = ConsumerGroup::new(now);
        group.heartbeat(join_params("a"), &topics(), now, &limits);
        let (again, _) = group.heartbeat(join_params("a"), &topics(), now, &limits);
        assert_eq!(again.error, NONE);
        assert_eq!(partitions(&again).len(), 4);
        assert_eq!(group.member_count(), 1);
    }
}
