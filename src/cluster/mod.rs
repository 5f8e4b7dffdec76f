//! The cluster as one node sees it: the controller quorum and its metadata log ([`quorum`],
//! [`driver`]), the active controller that decides changes ([`controller`]), the records and the
//! image they build ([`records`], [`metadata`]), placement over brokers and shards
//! ([`placement`]), the broker lifecycle ([`broker_agent`]), calls between nodes ([`rpc`],
//! [`client`]), and the partitions this shard owns.
//!
//! A partition carries a leader epoch and a high watermark separate from its log end, so that
//! replication fits without changing its callers.

pub mod broker_agent;
pub mod broker_config;
pub mod client;
pub mod controller;
pub mod driver;
mod maintenance;
pub mod metadata;
pub mod placement;
pub mod quorum;
pub mod records;
pub mod replication;
pub mod rpc;
mod server;
pub mod startup;
pub mod topic_config;

use crate::log::{LogConfig, PartitionLog};
use crate::shard::Shard;
use crate::txn::producer_state::ProducerStateTable;
use metadata::{MetadataImage, TopicRecord};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

/// One partition on its owner shard.
pub struct Partition {
    pub topic: Arc<TopicRecord>,
    pub index: i32,
    pub log: Rc<PartitionLog>,
    pub leader_epoch: Cell<i32>,
    /// Largest batch accepted (the topic's `max.message.bytes`).
    pub max_message_bytes: Cell<usize>,
    /// Idempotent producers' sequence state; shared with the replacement `Partition` when
    /// the topic's record changes.
    pub producers: Rc<RefCell<ProducerStateTable>>,
    /// Leader or follower state; shared with the replacement `Partition` like `producers`.
    pub replication: replication::SharedReplication,
}

impl Partition {
    /// Offsets below it are committed and visible to consumers. On a single node a write is
    /// committed once it completes; with replication it becomes the lowest end offset in the ISR.
    pub fn high_watermark(&self) -> i64 {
        self.log.high_watermark()
    }

    /// KIP-320 fencing of a request's `current_leader_epoch` (-1: not checked).
    pub fn check_leader_epoch(
        &self,
        current_leader_epoch: i32,
    ) -> Result<(), kafka_protocol::error::ResponseError> {
        use kafka_protocol::error::ResponseError;
        let epoch = self.leader_epoch.get();
        if current_leader_epoch < 0 || current_leader_epoch == epoch {
            Ok(())
        } else if current_leader_epoch > epoch {
            Err(ResponseError::UnknownLeaderEpoch)
        } else {
            Err(ResponseError::FencedLeaderEpoch)
        }
    }

    /// Offsets below it hold no open transaction: read_committed consumers read up to it.
    /// The first offset of the earliest open transaction, or the high watermark if lower.
    pub fn last_stable_offset(&self) -> i64 {
        let high_watermark = self.high_watermark();
        match self.producers.borrow().first_unstable_offset() {
            Some(first_unstable) => first_unstable.min(high_watermark),
            None => high_watermark,
        }
    }
}

pub type PartitionKey = (String, i32);

/// The shard of this node that serves `record` as its leader, or the error a client gets for
/// it here: LEADER_NOT_AVAILABLE while it has no leader, NOT_LEADER_OR_FOLLOWER when another
/// node leads it.
pub fn leader_shard(
    shard: &Shard,
    record: &metadata::PartitionRecord,
) -> Result<usize, kafka_protocol::error::ResponseError> {
    use kafka_protocol::error::ResponseError;
    if record.leader == metadata::NO_LEADER {
        return Err(ResponseError::LeaderNotAvailable);
    }
    if record.leader != shard.config.node_id || record.shard as usize >= shard.count {
        return Err(ResponseError::NotLeaderOrFollower);
    }
    Ok(record.shard as usize)
}

/// The partitions a shard owns, by (topic, partition).
#[derive(Default)]
pub struct PartitionTable {
    partitions: RefCell<HashMap<PartitionKey, Rc<Partition>>>,
}

impl PartitionTable {
    pub fn get(&self, topic: &str, partition: i32) -> Option<Rc<Partition>> {
        self.partitions
            .borrow()
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    fn insert(&self, partition: Rc<Partition>) {
        let key = (partition.topic.name.clone(), partition.index);
        self.partitions.borrow_mut().insert(key, partition);
    }

    fn remove(&self, topic: &str, partition: i32) -> Option<Rc<Partition>> {
        self.partitions
            .borrow_mut()
            .remove(&(topic.to_string(), partition))
    }

    fn all(&self) -> Vec<Rc<Partition>> {
        self.partitions.borrow().values().cloned().collect()
    }

    /// Calls `visit` with every partition this shard owns, in no particular order (metrics,
    /// admin reports). `visit` must not add or remove partitions.
    pub fn for_each(&self, mut visit: impl FnMut(&Partition)) {
        for partition in self.partitions.borrow().values() {
            visit(partition);
        }
    }

    /// Like `for_each`, with the shared handle (to keep or hand to tasks).
    pub fn for_each_rc(&self, mut visit: impl FnMut(&Rc<Partition>)) {
        for partition in self.partitions.borrow().values() {
            visit(partition);
        }
    }
}

/// Smallest segment the log is given, whatever `segment.bytes` says: four blocks.
const SEGMENT_SIZE_MIN_BYTES: u64 = 16 * 1024;

/// The log's settings from the topic's configs (or the broker defaults, dynamic ones
/// included).
fn log_config(shard: &Shard, topic: &TopicRecord) -> LogConfig {
    let broker = &*shard.live_config();
    let long = |key: &str| topic_config::effective_long(&topic.configs, broker, key);
    // -1 (or any negative) means unlimited for the retention keys.
    let limit = |key: &str| u64::try_from(long(key)).ok();
    // The flush keys fall back to a dynamic broker config, then to the broker's own static
    // defaults, not Kafka's.
    let explicit_or = |key: &str, default: u64| {
        topic
            .configs
            .get(key)
            .map(String::as_str)
            .or_else(|| broker_config::topic_default_override(key, broker).map(|(value, _)| value))
            .and_then(|value| value.trim().parse::<u64>().ok())
            .unwrap_or(default)
    };
    let policy = topic
        .configs
        .get("cleanup.policy")
        .cloned()
        .unwrap_or_else(|| topic_config::default_value("cleanup.policy", broker));
    let cleanup_compact = policy.split(',').any(|part| part.trim() == "compact");
    let cleanup_delete = policy.split(',').any(|part| part.trim() == "delete");
    LogConfig {
        segment_size_bytes: limit("segment.bytes")
            .unwrap_or(broker.segment_bytes)
            .max(SEGMENT_SIZE_MIN_BYTES),
        segment_ms: limit("segment.ms").unwrap_or(u64::MAX).max(1),
        cache_size_bytes: broker.partition_cache_size_bytes,
        max_writes_in_flight: broker.log_writes_in_flight,
        prewrite_ahead_bytes: broker.log_prewrite_ahead_bytes,
        flush_messages: explicit_or("flush.messages", broker.flush_messages).max(1),
        flush_interval_ms: explicit_or("flush.ms", broker.flush_ms),
        retention_ms: limit("retention.ms"),
        retention_bytes: limit("retention.bytes"),
        cleanup_delete,
        cleanup_compact,
        delete_retention_ms: limit("delete.retention.ms").unwrap_or(0),
        min_compaction_lag_ms: limit("min.compaction.lag.ms").unwrap_or(0),
        min_cleanable_dirty_ratio_ppm: topic
            .configs
            .get("min.cleanable.dirty.ratio")
            .and_then(|value| value.trim().parse::<f64>().ok())
            .filter(|ratio| (0.0..=1.0).contains(ratio))
            .map_or(500_000, |ratio| (ratio * 1e6).round() as u32),
        max_compaction_lag_ms: limit("max.compaction.lag.ms").unwrap_or(u64::MAX),
        ..LogConfig::default()
    }
}

fn max_message_bytes(shard: &Shard, topic: &TopicRecord) -> usize {
    let live = shard.live_config();
    let value = topic_config::effective_long(&topic.configs, &live, "max.message.bytes");
    usize::try_from(value).unwrap_or(live.max_message_bytes)
}

async fn open_partition(
    shard: &Shard,
    topic: &Arc<TopicRecord>,
    index: i32,
) -> anyhow::Result<Rc<Partition>> {
    let dir = metadata::partition_dir(&shard.config.data_dir, &topic.name, index);
    let log = PartitionLog::open(dir.clone(), log_config(shard, topic))
        .await
        .map_err(|e| anyhow::anyhow!("cannot open partition log {}: {e}", dir.display()))?;
    let producers =
        match ProducerStateTable::rebuild_from_log(&log, shard.config.producer_state_rebuild_bytes)
            .await
        {
            Ok(producers) => producers,
            Err(error) => {
                // Idempotence then starts afresh for this partition, as for a new one.
                tracing::warn!(dir = %dir.display(), %error, "could not rebuild producer state");
                ProducerStateTable::default()
            }
        };
    let record = &topic.partitions[index as usize];
    Ok(Rc::new(Partition {
        topic: topic.clone(),
        index,
        log,
        leader_epoch: Cell::new(record.leader_epoch),
        max_message_bytes: Cell::new(max_message_bytes(shard, topic)),
        producers: Rc::new(RefCell::new(producers)),
        replication: Rc::default(),
    }))
}

/// Opens (and recovers) every partition the image places on this shard, and starts the
/// shard's log maintenance (flush policy, checkpoints, retention, compaction, storage retry).
pub async fn open_owned_partitions(shard: &Rc<Shard>, image: &MetadataImage) -> anyhow::Result<()> {
    let _changing = shard
        .partitions_change_lock
        .acquire_permit(1)
        .await
        .map_err(|_| anyhow::anyhow!("partition changes are closed"))?;
    crate::log::set_shard_cache_max_bytes(shard.config.log_cache_size_bytes_per_shard);
    maintenance::start(shard.clone());
    replication::start_isr_maintenance(shard.clone());
    for topic in image.topics.values() {
        for (index, record) in topic.partitions.iter().enumerate() {
            if record.shard as usize == shard.id {
                let partition = open_partition(shard, topic, index as i32).await?;
                replication::on_partition_record(shard, &partition, record);
                shard.partitions.insert(partition);
            }
        }
    }
    replication::fetcher::ensure_fetchers(shard);
    Ok(())
}

/// Makes this shard match a new image: opens partitions placed here, removes the logs of deleted
/// topics, and picks up changed topic configs.
pub async fn apply_image(shard: &Rc<Shard>, image: Arc<MetadataImage>) -> anyhow::Result<()> {
    let _changing = shard
        .partitions_change_lock
        .acquire_permit(1)
        .await
        .map_err(|_| anyhow::anyhow!("partition changes are closed"))?;
    let previous = shard.metadata();
    if image.version <= previous.version {
        return Ok(());
    }
    // Before the partitions below read their defaults from it.
    let broker_configs_changed = shard.refresh_live_config(&image);
    for (name, old_topic) in &previous.topics {
        let replaced = image
            .topic(name)
            .is_none_or(|new_topic| new_topic.topic_id != old_topic.topic_id);
        if !replaced {
            continue;
        }
        for index in 0..old_topic.partition_count() {
            if let Some(partition) = shard.partitions.remove(name, index) {
                if let Err(error) = partition.log.remove().await {
                    tracing::error!(topic = %name, partition = index, "cannot remove log: {error}");
                }
                tracing::info!(topic = %name, partition = index, "partition deleted");
            }
        }
    }
    for topic in image.topics.values() {
        for (index, record) in topic.partitions.iter().enumerate() {
            if record.shard as usize != shard.id {
                continue;
            }
            let index = index as i32;
            match shard.partitions.get(&topic.name, index) {
                Some(existing) => {
                    existing
                        .max_message_bytes
                        .set(max_message_bytes(shard, topic));
                    existing.leader_epoch.set(record.leader_epoch);
                    replication::on_partition_record(shard, &existing, record);
                    let topic_changed = !Arc::ptr_eq(&existing.topic, topic);
                    if topic_changed || broker_configs_changed {
                        if let Err(error) = existing.log.set_config(log_config(shard, topic)) {
                            tracing::error!(topic = %topic.name, partition = index,
                                "cannot apply topic config to the log: {error}");
                        }
                    }
                    if topic_changed {
                        shard.partitions.insert(Rc::new(Partition {
                            topic: topic.clone(),
                            index,
                            log: existing.log.clone(),
                            leader_epoch: Cell::new(record.leader_epoch),
                            max_message_bytes: Cell::new(max_message_bytes(shard, topic)),
                            producers: existing.producers.clone(),
                            replication: existing.replication.clone(),
                        }));
                    }
                }
                None => {
                    let partition = open_partition(shard, topic, index).await?;
                    replication::on_partition_record(shard, &partition, record);
                    shard.partitions.insert(partition);
                    tracing::info!(topic = %topic.name, partition = index, shard = shard.id, "partition created");
                }
            }
        }
    }
    shard.set_metadata(image);
    replication::fetcher::ensure_fetchers(shard);
    Ok(())
}

/// Flushes and closes every partition (shutdown).
pub async fn close_partitions(shard: &Shard) {
    for partition in shard.partitions.all() {
        if let Err(error) = partition.log.close().await {
            tracing::error!(
                topic = %partition.topic.name,
                partition = partition.index,
                "cannot close log cleanly: {error}"
            );
        }
    }
}

/// Creates an internal, compacted topic (`__consumer_offsets`, `__transaction_state`) if it
/// does not exist yet: one hop to the controller on shard 0. Any failure is
/// COORDINATOR_NOT_AVAILABLE (the client retries its FindCoordinator).
pub async fn ensure_internal_topic(
    shard: &Rc<Shard>,
    name: &'static str,
    partitions: i32,
    segment_bytes: u64,
) -> Result<(), kafka_protocol::error::ResponseError> {
    use kafka_protocol::error::ResponseError;
    if shard.metadata().topic(name).is_some() {
        return Ok(());
    }
    let created = shard
        .invoke_on(0, move |controller_shard| async move {
            let topic = controller::NewTopic {
                name: name.to_string(),
                partitions,
                replication_factor: -1,
                assignments: Vec::new(),
                configs: vec![
                    ("cleanup.policy".to_string(), Some("compact".to_string())),
                    ("segment.bytes".to_string(), Some(segment_bytes.to_string())),
                ],
            };
            client::create_topics(&controller_shard, vec![topic], false)
                .await
                .into_iter()
                .next()
                .map(|outcome| outcome.map(|_| ()).map_err(|e| (e.code, e.message)))
        })
        .await;
    match created {
        Ok(Some(Ok(()))) => {
            tracing::info!(partitions, "created {name}");
            Ok(())
        }
        Ok(Some(Err((code, _)))) if code == ResponseError::TopicAlreadyExists.code() => Ok(()),
        Ok(Some(Err((code, message)))) => {
            tracing::error!(code, "cannot create {name}: {message}");
            Err(ResponseError::CoordinatorNotAvailable)
        }
        Ok(None) | Err(_) => Err(ResponseError::CoordinatorNotAvailable),
    }
}
