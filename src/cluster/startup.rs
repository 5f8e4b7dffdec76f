//! Opening this node's metadata at start-up, before the shards start: the quorum's persisted
//! state replayed into an image (voters), the one-voter quorum of a single node brought to a
//! registered, unfenced broker, and a data directory of the single-node broker from before the
//! metadata log bootstrapped into the log.

use super::metadata::{self, MetadataImage, TopicRecord, NO_LEADER};
use super::placement::LocalPlacement;
use super::quorum::{Applied, DirFs, Quorum, QuorumConfig};
use super::records::{self, MetadataRecord};
use crate::config::BrokerConfig;
use std::sync::Arc;
use uuid::Uuid;

/// Directory of the metadata log under the data directory (KRaft's name).
pub const METADATA_LOG_DIR_NAME: &str = "__cluster_metadata";
/// Ready-loop rounds at start-up before giving up on replaying the log (each applies a batch).
const MAX_STARTUP_POLLS: usize = 100_000;

/// What the shards start with.
pub struct StartupMetadata {
    pub quorum: Option<Quorum<DirFs>>,
    pub image: MetadataImage,
    pub placement: LocalPlacement,
    pub incarnation_id: Uuid,
    /// Broker epoch when the registration was already written (single node).
    pub broker_epoch: Option<u64>,
}

fn quorum_config(config: &BrokerConfig) -> anyhow::Result<QuorumConfig> {
    let voters = config.quorum_voters()?;
    let voter_ids = if voters.is_empty() {
        vec![config.node_id]
    } else {
        voters.iter().map(|v| v.node_id).collect()
    };
    Ok(QuorumConfig {
        node_id: config.node_id,
        voters: voter_ids,
        election_tick: super::driver::ELECTION_TICKS,
        heartbeat_tick: super::driver::HEARTBEAT_TICKS,
        max_entries_before_snapshot: config.metadata_log_max_entries_before_snapshot,
        max_size_per_msg_bytes: 1024 * 1024,
        max_inflight_msgs: 256,
    })
}

/// Applies what the quorum hands out until it has nothing more.
fn replay(quorum: &mut Quorum<DirFs>, image: &mut MetadataImage) -> anyhow::Result<()> {
    for _ in 0..MAX_STARTUP_POLLS {
        let output = quorum.poll()?;
        if output.applied.is_empty() {
            return Ok(());
        }
        for applied in output.applied {
            apply_one(image, applied);
        }
    }
    anyhow::bail!("the metadata log did not finish replaying")
}

fn apply_one(image: &mut MetadataImage, applied: Applied) {
    match applied {
        Applied::Restore { index, data, .. } => match MetadataImage::from_snapshot(&data) {
            Ok(mut restored) => {
                restored.version = index;
                *image = restored;
            }
            Err(error) => tracing::error!("cannot restore the metadata snapshot: {error:#}"),
        },
        Applied::Entry(entry) => {
            if entry.index <= image.version {
                return;
            }
            let batch = records::decode_batch(&entry.data).unwrap_or_else(|error| {
                tracing::error!(offset = entry.index, "{error:#}");
                Vec::new()
            });
            records::apply_batch(image, entry.index, &batch);
        }
    }
}

/// Proposes `batch` on a one-voter quorum and applies it (commits inside one poll).
fn commit_alone(
    quorum: &mut Quorum<DirFs>,
    image: &mut MetadataImage,
    batch: Vec<MetadataRecord>,
) -> anyhow::Result<u64> {
    quorum
        .propose(records::encode_batch(&batch))
        .map_err(|e| anyhow::anyhow!("single-node quorum refused a proposal: {e}"))?;
    replay(quorum, image)?;
    Ok(image.version)
}

/// The records that carry a legacy single-node image into the metadata log.
fn legacy_records(
    legacy: &metadata::LegacyImage,
    node_id: i32,
    placement: &mut LocalPlacement,
) -> Vec<MetadataRecord> {
    let mut batch = vec![MetadataRecord::ClusterId {
        cluster_id: legacy.cluster_id.clone(),
    }];
    for topic in legacy.topics.values() {
        let partitions = topic
            .partitions
            .iter()
            .enumerate()
            .map(|(index, old)| {
                placement.insert(topic.topic_id, index as i32, old.shard);
                let mut partition = records::new_partition(vec![node_id], node_id);
                partition.leader_epoch = old.leader_epoch;
                partition
            })
            .collect();
        batch.push(MetadataRecord::CreateTopic {
            topic: TopicRecord {
                name: topic.name.clone(),
                topic_id: topic.topic_id,
                partitions,
                configs: topic.configs.clone(),
            },
        });
    }
    if legacy.next_producer_id_block_start > 0 {
        batch.push(MetadataRecord::ProducerIds {
            next_block_start: legacy.next_producer_id_block_start,
        });
    }
    batch
}

pub fn open(config: &Arc<BrokerConfig>, shard_count: usize) -> anyhow::Result<StartupMetadata> {
    let roles = config.roles()?;
    let single_node = config.quorum_voters()?.is_empty();
    let mut placement = LocalPlacement::load(&config.data_dir)?;
    let mut image = MetadataImage::empty();
    let incarnation_id = Uuid::new_v4();
    let mut broker_epoch = None;
    let mut quorum = None;
    if roles.controller {
        let dir = config.data_dir.join(METADATA_LOG_DIR_NAME);
        let fs =
            DirFs::open(&dir).map_err(|e| anyhow::anyhow!("cannot open {}: {e}", dir.display()))?;
        let (mut opened, restore) =
            Quorum::open(quorum_config(config)?, fs, super::quorum::logger())?;
        if let Some(restore) = restore {
            apply_one(&mut image, restore);
        }
        replay(&mut opened, &mut image)?;
        if single_node {
            anyhow::ensure!(opened.is_leader(), "a one-voter quorum leads itself");
            let mut batch = Vec::new();
            let legacy_path = metadata::legacy_metadata_path(&config.data_dir);
            let legacy = if image.version == 0 {
                metadata::load_legacy(&config.data_dir)?
            } else {
                None
            };
            if let Some(legacy) = &legacy {
                tracing::info!(
                    topics = legacy.topics.len(),
                    "carrying the single-node metadata file into the metadata log"
                );
                batch.extend(legacy_records(legacy, config.node_id, &mut placement));
            } else if image.cluster_id.is_empty() {
                batch.push(MetadataRecord::ClusterId {
                    cluster_id: Uuid::new_v4().simple().to_string(),
                });
            }
            let (host, port) = config.advertised_host_port()?;
            batch.push(MetadataRecord::RegisterBroker {
                node_id: config.node_id,
                incarnation_id,
                host,
                port,
                rack: config.rack.clone(),
                shard_count: shard_count as u32,
                endpoints: config.advertised_endpoints()?,
            });
            let epoch = commit_alone(&mut opened, &mut image, batch)?;
            if legacy.is_some() {
                let mut migrated = legacy_path.as_os_str().to_os_string();
                migrated.push(".migrated");
                std::fs::rename(&legacy_path, &migrated)?;
            }
            let mut unfence = vec![MetadataRecord::UnfenceBroker {
                node_id: config.node_id,
                broker_epoch: epoch,
            }];
            unfence.extend(records::leaders_onto(
                &image,
                config.node_id,
                super::controller::unclean_allowed(config, &image),
            ));
            commit_alone(&mut opened, &mut image, unfence)?;
            broker_epoch = Some(epoch);
        }
        quorum = Some(opened);
    }
    let moved = placement.localize(&mut image, config.node_id, shard_count)?;
    if moved > 0 {
        tracing::info!(
            moved,
            shard_count,
            "placed partitions of removed shards on remaining shards"
        );
    }
    debug_assert!(image
        .topics
        .values()
        .flat_map(|t| t.partitions.iter())
        .all(|p| p.leader == NO_LEADER || p.leader >= 0));
    Ok(StartupMetadata {
        quorum,
        image,
        placement,
        incarnation_id,
        broker_epoch,
    })
}
