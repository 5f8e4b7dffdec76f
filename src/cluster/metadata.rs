//! The metadata image: topics, their partitions, where each partition lives, and topic configs.
//!
//! The image is immutable once built. The controller (shard 0) makes a new image for every change,
//! persists it, and hands every shard an `Arc` of it, so readers never take a lock.

use crate::cluster::topic_config::TopicConfigs;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use uuid::Uuid;

/// File under the data directory that holds the persisted image.
pub const METADATA_FILE_NAME: &str = "cluster-metadata.json";

/// Where one partition lives and under which leader epoch it is written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PartitionRecord {
    /// Shard (core index) that owns the partition's log and serves it.
    pub shard: u32,
    /// Leader epoch stamped into batches; bumped on leadership changes.
    pub leader_epoch: i32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TopicRecord {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: Vec<PartitionRecord>,
    /// Only the configs set explicitly on the topic; defaults come from the broker config.
    pub configs: TopicConfigs,
}

impl TopicRecord {
    pub fn partition_count(&self) -> i32 {
        i32::try_from(self.partitions.len()).expect("partition count bounded by config")
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MetadataImage {
    /// Increases with every change; shards apply images in order.
    pub version: u64,
    pub cluster_id: String,
    pub topics: BTreeMap<String, Arc<TopicRecord>>,
    /// Producer ids below it have been handed out (in blocks, by the controller).
    #[serde(default)]
    pub next_producer_id_block_start: i64,
}

impl MetadataImage {
    pub fn new_cluster() -> MetadataImage {
        MetadataImage {
            version: 0,
            cluster_id: Uuid::new_v4().simple().to_string(),
            topics: BTreeMap::new(),
            next_producer_id_block_start: 0,
        }
    }

    pub fn topic(&self, name: &str) -> Option<&Arc<TopicRecord>> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, topic_id: Uuid) -> Option<&Arc<TopicRecord>> {
        self.topics
            .values()
            .find(|topic| topic.topic_id == topic_id)
    }

    /// Number of partitions each shard owns, the load that placement balances.
    pub fn partitions_per_shard(&self, shard_count: usize) -> Vec<usize> {
        let mut counts = vec![0usize; shard_count];
        for topic in self.topics.values() {
            for partition in &topic.partitions {
                if let Some(count) = counts.get_mut(partition.shard as usize) {
                    *count += 1;
                }
            }
        }
        counts
    }

    /// Picks owners for `count` new partitions: each goes to the least-loaded shard, so that
    /// placement stays balanced and never depends on a hash of names or the core count.
    pub fn place_new_partitions(&self, count: usize, shard_count: usize) -> Vec<u32> {
        assert!(shard_count > 0);
        let mut load = self.partitions_per_shard(shard_count);
        (0..count)
            .map(|_| {
                let (shard, _) = load
                    .iter()
                    .enumerate()
                    .min_by_key(|(shard, count)| (**count, *shard))
                    .expect("at least one shard");
                load[shard] += 1;
                shard as u32
            })
            .collect()
    }

    /// Moves partitions whose shard no longer exists (the broker restarted with fewer cores).
    /// Returns how many moved; partitions on surviving shards never move.
    pub fn reassign_missing_shards(&mut self, shard_count: usize) -> usize {
        let mut moved = 0;
        let orphans: Vec<(String, usize)> = self
            .topics
            .values()
            .flat_map(|topic| {
                topic
                    .partitions
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.shard as usize >= shard_count)
                    .map(|(index, _)| (topic.name.clone(), index))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (name, index) in orphans {
            let shard = self.place_new_partitions(1, shard_count)[0];
            let topic = Arc::make_mut(self.topics.get_mut(&name).expect("orphan topic exists"));
            topic.partitions[index].shard = shard;
            topic.partitions[index].leader_epoch += 1;
            moved += 1;
        }
        moved
    }
}

pub fn metadata_path(data_dir: &Path) -> PathBuf {
    data_dir.join(METADATA_FILE_NAME)
}

/// Loads the persisted image, or makes a new cluster if there is none.
pub fn load_or_init(data_dir: &Path) -> anyhow::Result<MetadataImage> {
    let path = metadata_path(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("metadata file {} is corrupt: {e}", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Ok(MetadataImage::new_cluster())
        }
        Err(error) => Err(anyhow::anyhow!("cannot read {}: {error}", path.display())),
    }
}

/// Writes the image atomically: temp file, fsync, rename, fsync of the directory. Metadata
/// changes are rare (topic admin), so a blocking write on the controller shard is acceptable.
pub fn persist(data_dir: &Path, image: &MetadataImage) -> std::io::Result<()> {
    use std::io::Write;
    let path = metadata_path(data_dir);
    let temp_path = data_dir.join(format!("{METADATA_FILE_NAME}.tmp"));
    let bytes = serde_json::to_vec_pretty(image).map_err(std::io::Error::other)?;
    {
        let mut file = std::fs::File::create(&temp_path)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&temp_path, &path)?;
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(())
}

/// Directory of one partition's log, as Kafka names it.
pub fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, shards: &[u32]) -> Arc<TopicRecord> {
        Arc::new(TopicRecord {
            name: name.to_string(),
            topic_id: Uuid::new_v4(),
            partitions: shards
                .iter()
                .map(|&shard| PartitionRecord {
                    shard,
                    leader_epoch: 0,
                })
                .collect(),
            configs: TopicConfigs::default(),
        })
    }

    #[test]
    fn placement_balances_across_shards() {
        let mut image = MetadataImage::new_cluster();
        image.topics.insert("a".into(), topic("a", &[0, 0, 0]));
        let placed = image.place_new_partitions(5, 3);
        assert_eq!(placed, vec![1, 2, 1, 2, 1]);
        let mut counts = image.partitions_per_shard(3);
        for shard in placed {
            counts[shard as usize] += 1;
        }
        assert_eq!(counts, vec![3, 3, 2]);
    }

    #[test]
    fn fewer_cores_moves_only_orphans() {
        let mut image = MetadataImage::new_cluster();
        image.topics.insert("a".into(), topic("a", &[0, 1, 2, 3]));
        assert_eq!(image.reassign_missing_shards(2), 2);
        let shards: Vec<u32> = image.topics["a"]
            .partitions
            .iter()
            .map(|p| p.shard)
            .collect();
        assert_eq!(&shards[..2], &[0, 1]);
        assert!(shards.iter().all(|&s| s < 2));
        assert_eq!(image.topics["a"].partitions[2].leader_epoch, 1);
    }

    #[test]
    fn persist_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut image = MetadataImage::new_cluster();
        image.topics.insert("t".into(), topic("t", &[0, 1]));
        image.version = 7;
        persist(dir.path(), &image).unwrap();
        assert_eq!(load_or_init(dir.path()).unwrap(), image);
    }
}
