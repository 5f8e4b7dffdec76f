//! Placement at two levels, as Redpanda splits it: the controller places replicas over brokers
//! ([`place_replicas`], part of the replicated log); each node places the partitions it hosts
//! over its own shards ([`LocalPlacement`], node-local, persisted, stable across restarts).

use super::metadata::{MetadataImage, NOT_HOSTED};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use uuid::Uuid;

/// File under the data directory with this node's partition → shard assignment.
pub const LOCAL_PLACEMENT_FILE_NAME: &str = "shard-placement.json";

/// Which shard of this node hosts each partition it has a replica of.
pub struct LocalPlacement {
    path: PathBuf,
    shards: BTreeMap<(Uuid, i32), u32>,
}

impl LocalPlacement {
    pub fn load(data_dir: &Path) -> anyhow::Result<LocalPlacement> {
        let path = data_dir.join(LOCAL_PLACEMENT_FILE_NAME);
        let shards = match std::fs::read(&path) {
            Ok(bytes) => {
                let entries: Vec<(Uuid, i32, u32)> = serde_json::from_slice(&bytes)
                    .map_err(|e| anyhow::anyhow!("{} is corrupt: {e}", path.display()))?;
                entries
                    .into_iter()
                    .map(|(topic, partition, shard)| ((topic, partition), shard))
                    .collect()
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(error) => anyhow::bail!("cannot read {}: {error}", path.display()),
        };
        Ok(LocalPlacement { path, shards })
    }

    /// Seeds the placement (legacy data directories, whose image carried the shards).
    pub fn insert(&mut self, topic_id: Uuid, partition: i32, shard: u32) {
        self.shards.insert((topic_id, partition), shard);
    }

    fn persist(&self) -> std::io::Result<()> {
        let entries: Vec<(Uuid, i32, u32)> = self
            .shards
            .iter()
            .map(|(&(topic, partition), &shard)| (topic, partition, shard))
            .collect();
        let bytes = serde_json::to_vec(&entries).map_err(std::io::Error::other)?;
        super::metadata::write_atomically(&self.path, &bytes)
    }

    /// Fills `shard` of every partition in `image`: this node's shard for partitions it has a
    /// replica of (new ones go to the least-loaded shard; ones on shards that no longer exist
    /// move), [`NOT_HOSTED`] for the rest. Persists the placement when it changed. Returns the
    /// partitions that moved shard because their shard no longer exists.
    pub fn localize(
        &mut self,
        image: &mut MetadataImage,
        node_id: i32,
        shard_count: usize,
    ) -> std::io::Result<usize> {
        assert!(shard_count > 0);
        let mut changed = false;
        let mut moved = 0;
        let known: std::collections::BTreeSet<(Uuid, i32)> = image
            .topics
            .values()
            .flat_map(|topic| (0..topic.partition_count()).map(move |p| (topic.topic_id, p)))
            .collect();
        let before = self.shards.len();
        self.shards.retain(|key, _| known.contains(key));
        changed |= self.shards.len() != before;
        let mut load = vec![0usize; shard_count];
        for &shard in self.shards.values() {
            if let Some(count) = load.get_mut(shard as usize) {
                *count += 1;
            }
        }
        for topic in image.topics.values_mut() {
            let hosted_any = topic
                .partitions
                .iter()
                .any(|p| p.replicas.contains(&node_id));
            let needs_change = topic.partitions.iter().enumerate().any(|(index, p)| {
                let want = if p.replicas.contains(&node_id) {
                    self.shards.get(&(topic.topic_id, index as i32)).copied()
                } else {
                    Some(NOT_HOSTED)
                };
                want != Some(p.shard) || (p.shard != NOT_HOSTED && p.shard as usize >= shard_count)
            });
            if !hosted_any && !needs_change {
                continue;
            }
            if !needs_change {
                continue;
            }
            let topic_id = topic.topic_id;
            let record = Arc::make_mut(topic);
            for (index, partition) in record.partitions.iter_mut().enumerate() {
                let key = (topic_id, index as i32);
                if !partition.replicas.contains(&node_id) {
                    partition.shard = NOT_HOSTED;
                    continue;
                }
                let shard = match self.shards.get(&key) {
                    Some(&shard) if (shard as usize) < shard_count => shard,
                    existing => {
                        if existing.is_some() {
                            moved += 1;
                        }
                        let shard = least_loaded(&load);
                        load[shard] += 1;
                        self.shards.insert(key, shard as u32);
                        changed = true;
                        shard as u32
                    }
                };
                partition.shard = shard;
            }
        }
        if changed {
            self.persist()?;
        }
        Ok(moved)
    }
}

fn least_loaded(load: &[usize]) -> usize {
    load.iter()
        .enumerate()
        .min_by_key(|(shard, count)| (**count, *shard))
        .map(|(shard, _)| shard)
        .expect("at least one shard")
}

/// Why replicas cannot be placed.
#[derive(Debug, Clone, PartialEq)]
pub enum PlacementError {
    /// More replicas than live brokers.
    NotEnoughBrokers { wanted: usize, live: usize },
}

/// Replica lists for `count` new partitions of `replication_factor` replicas each, over the
/// live brokers that are not shutting down: replicas of one partition on distinct brokers (and
/// on distinct racks while there are racks left), brokers balanced by replica count, leaders
/// (the first replica) balanced by leader count.
pub fn place_replicas(
    image: &MetadataImage,
    count: usize,
    replication_factor: usize,
) -> Result<Vec<Vec<i32>>, PlacementError> {
    assert!(replication_factor >= 1);
    let brokers: Vec<(i32, Option<String>)> = image
        .brokers
        .values()
        .filter(|b| !b.fenced && !b.shutting_down)
        .map(|b| (b.node_id, b.rack.clone()))
        .collect();
    if replication_factor > brokers.len() {
        return Err(PlacementError::NotEnoughBrokers {
            wanted: replication_factor,
            live: brokers.len(),
        });
    }
    let mut replica_load: BTreeMap<i32, usize> = brokers.iter().map(|(id, _)| (*id, 0)).collect();
    let mut leader_load = replica_load.clone();
    for topic in image.topics.values() {
        for partition in &topic.partitions {
            for replica in &partition.replicas {
                if let Some(load) = replica_load.get_mut(replica) {
                    *load += 1;
                }
            }
            if let Some(load) = leader_load.get_mut(&partition.leader) {
                *load += 1;
            }
        }
    }
    let mut placed = Vec::with_capacity(count);
    for _ in 0..count {
        let mut replicas: Vec<i32> = Vec::with_capacity(replication_factor);
        let mut racks_used: Vec<Option<String>> = Vec::new();
        for position in 0..replication_factor {
            let candidates = brokers.iter().filter(|(id, _)| !replicas.contains(id));
            let fresh_rack = |rack: &Option<String>| rack.is_none() || !racks_used.contains(rack);
            let any_fresh = candidates.clone().any(|(_, rack)| fresh_rack(rack));
            let (chosen, rack) = candidates
                .filter(|(_, rack)| !any_fresh || fresh_rack(rack))
                .min_by_key(|(id, _)| {
                    let leaders = if position == 0 { leader_load[id] } else { 0 };
                    (leaders, replica_load[id], *id)
                })
                .expect("enough brokers checked above");
            replicas.push(*chosen);
            racks_used.push(rack.clone());
        }
        for replica in &replicas {
            *replica_load.get_mut(replica).expect("live broker") += 1;
        }
        *leader_load.get_mut(&replicas[0]).expect("live broker") += 1;
        placed.push(replicas);
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::metadata::{BrokerRecord, TopicRecord};
    use crate::cluster::records::new_partition;

    fn image_with_brokers(racks: &[Option<&str>]) -> MetadataImage {
        let mut image = MetadataImage::empty();
        for (index, rack) in racks.iter().enumerate() {
            let node_id = index as i32 + 1;
            image.brokers.insert(
                node_id,
                BrokerRecord {
                    node_id,
                    incarnation_id: Uuid::nil(),
                    broker_epoch: 1,
                    host: "h".into(),
                    port: 1,
                    endpoints: Vec::new(),
                    rack: rack.map(String::from),
                    shard_count: 1,
                    fenced: false,
                    shutting_down: false,
                },
            );
        }
        image
    }

    #[test]
    fn leaders_and_replicas_are_balanced() {
        let image = image_with_brokers(&[None, None, None]);
        let placed = place_replicas(&image, 6, 1).unwrap();
        let mut counts = BTreeMap::new();
        for replicas in &placed {
            *counts.entry(replicas[0]).or_insert(0) += 1;
        }
        assert_eq!(counts.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        let placed = place_replicas(&image, 3, 3).unwrap();
        let leaders: std::collections::BTreeSet<i32> = placed.iter().map(|r| r[0]).collect();
        assert_eq!(leaders.len(), 3);
        assert!(placed.iter().all(|r| {
            let mut r = r.clone();
            r.sort();
            r == vec![1, 2, 3]
        }));
    }

    #[test]
    fn replicas_spread_over_racks_and_too_many_is_refused() {
        let image = image_with_brokers(&[Some("a"), Some("a"), Some("b")]);
        for replicas in place_replicas(&image, 4, 2).unwrap() {
            let racks: std::collections::BTreeSet<&str> = replicas
                .iter()
                .map(|id| image.brokers[id].rack.as_deref().unwrap())
                .collect();
            assert_eq!(racks.len(), 2, "{replicas:?}");
        }
        assert_eq!(
            place_replicas(&image, 1, 4),
            Err(PlacementError::NotEnoughBrokers { wanted: 4, live: 3 })
        );
    }

    #[test]
    fn local_placement_is_balanced_stable_and_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let mut image = image_with_brokers(&[None, None]);
        image.topics.insert(
            "t".into(),
            Arc::new(TopicRecord {
                name: "t".into(),
                topic_id: Uuid::from_u128(1),
                partitions: (0..4)
                    .map(|i| new_partition(vec![1 + i % 2], 1 + i % 2))
                    .collect(),
                configs: Default::default(),
            }),
        );
        let mut placement = LocalPlacement::load(dir.path()).unwrap();
        placement.localize(&mut image, 1, 2).unwrap();
        let shards: Vec<u32> = image.topics["t"]
            .partitions
            .iter()
            .map(|p| p.shard)
            .collect();
        assert_eq!(shards, vec![0, NOT_HOSTED, 1, NOT_HOSTED]);
        // Reloaded from disk: the same shards; with one shard left, the orphan moves.
        let mut again = LocalPlacement::load(dir.path()).unwrap();
        let mut fresh = image.clone();
        for p in &mut Arc::make_mut(fresh.topics.get_mut("t").unwrap()).partitions {
            p.shard = NOT_HOSTED;
        }
        again.localize(&mut fresh, 1, 2).unwrap();
        assert_eq!(fresh.topics["t"].partitions[2].shard, 1);
        assert_eq!(again.localize(&mut fresh, 1, 1).unwrap(), 1);
        assert_eq!(fresh.topics["t"].partitions[2].shard, 0);
    }
}
