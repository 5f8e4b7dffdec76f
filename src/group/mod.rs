//! Consumer groups: the group coordinator and committed offsets.
//!
//! Placement: a group id maps to partition `abs(javaStringHashCode(group_id)) % N` of the internal
//! topic `__consumer_offsets` (N partitions, compacted), exactly as Kafka maps it. The shard that
//! owns that partition is the group's coordinator: the group's state lives there (in `Rc`/`RefCell`,
//! never shared), and requests that arrive on any other shard hop there with `invoke_on`
//! (the API handlers in `src/api/` do the hop; everything in [`coordinator`] runs on the owner).
//!
//! Persistence: offset commits and group metadata are records of that partition, appended through
//! its `PartitionLog` and acknowledged once the write completed; a coordinator rebuilds its groups by
//! replaying the partition the first time it is used after start-up ([`records`] holds the layouts,
//! which follow Kafka's own schemas).
//!
//! Protocols: the classic one (JoinGroup/SyncGroup/Heartbeat/LeaveGroup, [`classic`]) and KIP-848
//! (ConsumerGroupHeartbeat with server-side assignors, [`consumer`], [`assignor`]). The state
//! machines are plain data: they return [`Effect`]s (timers to start, metadata to persist) that the
//! coordinator runs, so they are unit-tested without an executor.

pub mod assignor;
pub mod classic;
pub mod consumer;
mod coordinator;
pub mod offsets;
pub mod records;

pub use coordinator::{
    commit_offsets, complete_transaction, consumer_group_describe, consumer_group_heartbeat,
    delete_groups, delete_offsets, describe_groups, fetch_offsets, heartbeat, join_group,
    leave_group, list_groups, start, sync_group, CommitItem, CommitWork, FetchGroup, FetchedGroup,
    FetchedPartition, GroupShard, ListedGroupInfo,
};

use crate::shard::Shard;
use kafka_protocol::error::ResponseError;
use std::rc::Rc;
use std::time::Duration;

/// The internal topic that stores offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Segment size of `__consumer_offsets` (Kafka's `offsets.topic.segment.bytes`).
pub const OFFSETS_TOPIC_SEGMENT_BYTES: u64 = 100 * 1024 * 1024;

/// Longest group id accepted (bytes). Kafka sets no bound; this keeps keys and memory bounded.
pub const MAX_GROUP_ID_BYTES: usize = 4096;
/// Longest member or group instance id accepted (bytes).
pub const MAX_MEMBER_ID_BYTES: usize = 1024;
/// Protocols (assignors) one JoinGroup may offer.
pub const MAX_PROTOCOLS_PER_MEMBER: usize = 64;
/// Sum of the protocol metadata of one JoinGroup member.
pub const MAX_MEMBER_METADATA_BYTES: usize = 1024 * 1024;
/// Assignment bytes of one member in SyncGroup.
pub const MAX_MEMBER_ASSIGNMENT_BYTES: usize = 1024 * 1024;
/// Topics one KIP-848 member may subscribe to by name.
pub const MAX_SUBSCRIBED_TOPICS: usize = 10_000;
/// A new member waiting in JoinGroup is dropped after this long without completing a join
/// (Kafka's `newMemberJoinTimeoutMs`): its client gave up or will retry.
pub const NEW_MEMBER_JOIN_TIMEOUT: Duration = Duration::from_secs(300);

/// A Kafka error code; 0 is no error.
pub type Code = i16;
pub const NONE: Code = 0;

/// Java's `String.hashCode()`: `s[0]*31^(n-1) + … + s[n-1]` over UTF-16 code units, wrapping.
pub fn java_string_hash(value: &str) -> i32 {
    value.encode_utf16().fold(0i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// Kafka's `Utils.abs`: `Math.abs`, except that `Integer.MIN_VALUE` maps to 0 (Math.abs would
/// leave it negative).
pub fn kafka_abs(value: i32) -> i32 {
    if value == i32::MIN {
        0
    } else {
        value.abs()
    }
}

/// The `__consumer_offsets` partition of a group: `Utils.abs(groupId.hashCode()) % partitions`.
pub fn partition_for(group_id: &str, partition_count: i32) -> i32 {
    assert!(partition_count > 0, "__consumer_offsets has partitions");
    kafka_abs(java_string_hash(group_id)) % partition_count
}

/// Where a group's coordinator lives: its `__consumer_offsets` partition and the shard owning it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub partition: i32,
    pub owner: usize,
}

/// Checks a group id the way Kafka does (non-empty) plus our length bound.
pub fn validate_group_id(group_id: &str) -> Result<(), ResponseError> {
    if group_id.is_empty() || group_id.len() > MAX_GROUP_ID_BYTES {
        return Err(ResponseError::InvalidGroupId);
    }
    Ok(())
}

/// Finds a group's coordinator shard, creating `__consumer_offsets` through the controller the
/// first time a group needs it. Runs on any shard; no hop unless the topic must be created.
pub async fn route(shard: &Rc<Shard>, group_id: &str) -> Result<Route, ResponseError> {
    validate_group_id(group_id)?;
    ensure_offsets_topic(shard).await?;
    if let Some(route) = route_existing(shard, group_id) {
        return Ok(route);
    }
    // Another node leads the group's partition (NOT_COORDINATOR sends the client to
    // FindCoordinator), or nobody does yet.
    match coordinator_node(shard, group_id) {
        Some(node) if node != shard.config.node_id => Err(ResponseError::NotCoordinator),
        _ => Err(ResponseError::CoordinatorNotAvailable),
    }
}

/// The node that leads the group's `__consumer_offsets` partition, if it has a live leader.
pub fn coordinator_node(shard: &Shard, group_id: &str) -> Option<i32> {
    let image = shard.metadata();
    let topic = image.topic(OFFSETS_TOPIC)?;
    let count = topic.partition_count();
    if count < 1 {
        return None;
    }
    let leader = topic.partitions[partition_for(group_id, count) as usize].leader;
    image.is_live(leader).then_some(leader)
}

/// The route of a group if `__consumer_offsets` exists (no creation, no hop).
pub fn route_existing(shard: &Shard, group_id: &str) -> Option<Route> {
    let image = shard.metadata();
    let topic = image.topic(OFFSETS_TOPIC)?;
    let count = topic.partition_count();
    if count < 1 {
        return None;
    }
    let partition = partition_for(group_id, count);
    let owner = crate::cluster::leader_shard(shard, &topic.partitions[partition as usize]).ok()?;
    Some(Route { partition, owner })
}

/// Shards that own at least one `__consumer_offsets` partition (where groups can live).
pub fn coordinator_shards(shard: &Shard) -> Vec<usize> {
    let image = shard.metadata();
    let Some(topic) = image.topic(OFFSETS_TOPIC) else {
        return Vec::new();
    };
    let mut owners: Vec<usize> = topic
        .partitions
        .iter()
        .filter_map(|p| crate::cluster::leader_shard(shard, p).ok())
        .collect();
    owners.sort_unstable();
    owners.dedup();
    owners
}

/// Creates `__consumer_offsets` if it does not exist yet (one hop to the controller on shard 0).
pub async fn ensure_offsets_topic(shard: &Rc<Shard>) -> Result<(), ResponseError> {
    crate::cluster::ensure_internal_topic(
        shard,
        OFFSETS_TOPIC,
        shard.config.offsets_topic_num_partitions,
        OFFSETS_TOPIC_SEGMENT_BYTES,
    )
    .await
}

/// Bounds and timings of the coordinator, from the broker config.
#[derive(Debug, Clone)]
pub struct GroupLimits {
    pub max_size: usize,
    pub initial_rebalance_delay: Duration,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub consumer_session_timeout: Duration,
    pub consumer_heartbeat_interval_ms: i32,
    pub offset_metadata_max_bytes: usize,
}

impl GroupLimits {
    pub fn from_config(config: &crate::config::BrokerConfig) -> GroupLimits {
        GroupLimits {
            max_size: config.group_max_size,
            initial_rebalance_delay: Duration::from_millis(config.group_initial_rebalance_delay_ms),
            min_session_timeout_ms: config.group_min_session_timeout_ms,
            max_session_timeout_ms: config.group_max_session_timeout_ms,
            consumer_session_timeout: Duration::from_millis(
                config.group_consumer_session_timeout_ms,
            ),
            consumer_heartbeat_interval_ms: i32::try_from(
                config.group_consumer_heartbeat_interval_ms,
            )
            .unwrap_or(i32::MAX),
            offset_metadata_max_bytes: config.offset_metadata_max_bytes,
        }
    }
}

impl Default for GroupLimits {
    fn default() -> Self {
        GroupLimits::from_config(&crate::config::BrokerConfig::default())
    }
}

/// The current time, both monotonic (deadlines) and wall clock (timestamps that are persisted).
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub instant: std::time::Instant,
    pub wall_ms: i64,
}

impl Now {
    pub fn current() -> Now {
        Now {
            instant: std::time::Instant::now(),
            wall_ms: wall_clock_ms(),
        }
    }

    /// This moment `delta` later (tests drive time with it).
    pub fn plus(&self, delta: Duration) -> Now {
        Now {
            instant: self.instant + delta,
            wall_ms: self.wall_ms + i64::try_from(delta.as_millis()).unwrap_or(i64::MAX),
        }
    }
}

pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Work a state machine asks the coordinator to do after a transition.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Call `on_join_timer(seq)` after `delay` (initial delay or rebalance timeout).
    JoinTimer { seq: u64, delay: Duration },
    /// Call `on_sync_timer(generation)` after `delay`: members that have not synced are removed.
    SyncTimer { generation: i32, delay: Duration },
    /// Check the member's liveness after `delay` (and again as long as it lives).
    WatchMember {
        member_id: String,
        incarnation: u64,
        delay: Duration,
    },
    /// A member id handed out with MEMBER_ID_REQUIRED expires unless it joins within `delay`.
    PendingMemberTimer { member_id: String, delay: Duration },
    /// Persist the classic group's metadata. With `sync_assignments`, the generation completes
    /// (members get these assignments) once the write succeeded.
    PersistClassic {
        generation: i32,
        sync_assignments: Option<std::collections::HashMap<String, bytes::Bytes>>,
    },
    /// Persist a KIP-848 group's epoch.
    PersistConsumer { epoch: i32 },
    /// A KIP-848 member must have revoked its partitions by then, or it is fenced.
    RevocationTimer {
        member_id: String,
        incarnation: u64,
        delay: Duration,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_hash_code_matches_known_values() {
        // Values printed by Java's String.hashCode().
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        assert_eq!(java_string_hash("Hello World"), -862_545_276);
        assert_eq!(java_string_hash("Aa"), java_string_hash("BB"));
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        // Non-ASCII: hashed over UTF-16 code units, a surrogate pair counts twice.
        assert_eq!(java_string_hash("é"), 233);
        assert_eq!(java_string_hash("😀"), 0xD83D * 31 + 0xDE00);
    }

    #[test]
    fn partition_uses_kafka_abs_not_a_bit_mask() {
        assert_eq!(kafka_abs(i32::MIN), 0);
        assert_eq!(kafka_abs(-5), 5);
        assert_eq!(partition_for("hello", 50), 99_162_322 % 50);
        // Negative hash: Kafka's abs gives 862545276 % 50 = 26 (a `& 0x7fffffff` mask would
        // give 1284938372 % 50 = 22).
        assert_eq!(partition_for("Hello World", 50), 26);
        assert_eq!(partition_for("polygenelubricants", 50), 0);
        // Printed by Java: hashCode -1906497762 and -1132918423, `Utils.abs(h) % 50`.
        assert_eq!(java_string_hash("my-group"), -1_906_497_762);
        assert_eq!(partition_for("my-group", 50), 12);
        assert_eq!(java_string_hash("riptide-it"), -1_132_918_423);
        assert_eq!(partition_for("riptide-it", 50), 23);
        for id in ["", "g", "group-1", "consumer-group-with-a-long-name"] {
            assert!((0..7).contains(&partition_for(id, 7)));
        }
    }

    #[test]
    fn group_ids_are_checked() {
        assert!(validate_group_id("g").is_ok());
        assert_eq!(validate_group_id(""), Err(ResponseError::InvalidGroupId));
        assert_eq!(
            validate_group_id(&"x".repeat(MAX_GROUP_ID_BYTES + 1)),
            Err(ResponseError::InvalidGroupId)
        );
    }
}
