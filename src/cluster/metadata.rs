//! The metadata image: brokers, topics, their partitions (replicas, leader, epochs, ISR) and
//! topic configs, as the committed metadata log has made them.
//!
//! The image is immutable once built. Every node applies the committed log in order
//! ([`super::records`]) to a new image and hands every shard an `Arc` of it, so readers never
//! take a lock. The image is the same on every node at the same offset (see [`MetadataImage::digest`])
//! except for one node-local field: the shard that hosts a partition on this node
//! ([`PartitionRecord::shard`]), filled from the node's own placement ([`super::placement`]).

use crate::cluster::topic_config::TopicConfigs;
use crate::security::scram::{Mechanism, ScramCredential};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use uuid::Uuid;

/// File under the data directory of the single-node broker before the metadata log existed;
/// read once to bootstrap the log, then renamed.
pub const LEGACY_METADATA_FILE_NAME: &str = "cluster-metadata.json";

/// `shard` of a partition this node does not host.
pub const NOT_HOSTED: u32 = u32::MAX;

/// No leader (Kafka's -1).
pub const NO_LEADER: i32 = -1;

fn not_hosted() -> u32 {
    NOT_HOSTED
}

/// One partition: where its replicas are, who leads it, under which epochs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PartitionRecord {
    /// Node-local: the shard (core index) of this node that owns the partition's log, or
    /// [`NOT_HOSTED`]. Not part of the replicated image.
    #[serde(skip, default = "not_hosted")]
    pub shard: u32,
    /// Node ids holding a replica, preferred leader first.
    pub replicas: Vec<i32>,
    /// In-sync replicas (for replication factor 1, the one replica).
    pub isr: Vec<i32>,
    /// Current leader, or [`NO_LEADER`] while no replica of the ISR is available.
    pub leader: i32,
    /// Leader epoch stamped into batches; bumped on every leadership change.
    pub leader_epoch: i32,
    /// Bumped on every change of the partition (leader or ISR); AlterPartition checks it.
    pub partition_epoch: i32,
}

impl PartitionRecord {
    pub fn has_leader(&self) -> bool {
        self.leader != NO_LEADER
    }
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

/// A registered broker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BrokerRecord {
    pub node_id: i32,
    /// New on every start of the broker process; a registration with a new one replaces the
    /// old incarnation.
    pub incarnation_id: Uuid,
    /// Offset of the registration record in the metadata log (Kafka's broker epoch).
    pub broker_epoch: u64,
    /// Advertised address of the broker's first listener (registrations from before
    /// per-listener endpoints carry only this).
    pub host: String,
    pub port: i32,
    /// Advertised address of every listener: clients get the one named like the listener
    /// they connected on, brokers the inter-broker listener's.
    #[serde(default)]
    pub endpoints: Vec<BrokerEndpoint>,
    pub rack: Option<String>,
    pub shard_count: u32,
    /// Fenced brokers lead nothing and are not shown to clients.
    pub fenced: bool,
    /// In a controlled shutdown: gets no new leaderships.
    #[serde(default)]
    pub shutting_down: bool,
}

/// One advertised listener of a broker (Kafka's BrokerEndpoint).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BrokerEndpoint {
    /// Listener name (`PLAINTEXT`, `INTERNAL`, ...).
    pub name: String,
    pub host: String,
    pub port: i32,
    /// Its security protocol, as Kafka names it.
    pub security_protocol: String,
}

impl BrokerRecord {
    /// Where a client of listener `name` reaches this broker: the endpoint of that name;
    /// the registered address when the broker registered before endpoints existed; `None`
    /// when the broker has no such listener (Kafka leaves such brokers out of answers).
    pub fn endpoint(&self, name: &str) -> Option<(String, i32)> {
        if self.endpoints.is_empty() {
            return Some((self.host.clone(), self.port));
        }
        self.endpoints
            .iter()
            .find(|endpoint| endpoint.name == name)
            .map(|endpoint| (endpoint.host.clone(), endpoint.port))
    }
}

/// JSON maps need string keys: the credentials are stored as a list.
mod scram_credentials_serde {
    use super::{Mechanism, ScramCredential};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    type Map = BTreeMap<(String, Mechanism), ScramCredential>;

    pub fn serialize<S: Serializer>(map: &Map, serializer: S) -> Result<S::Ok, S::Error> {
        let list: Vec<(&String, &Mechanism, &ScramCredential)> =
            map.iter().map(|((u, m), c)| (u, m, c)).collect();
        list.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Map, D::Error> {
        let list: Vec<(String, Mechanism, ScramCredential)> = Vec::deserialize(deserializer)?;
        Ok(list.into_iter().map(|(u, m, c)| ((u, m), c)).collect())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MetadataImage {
    /// Offset of the last metadata log entry applied (0: nothing yet).
    pub version: u64,
    pub cluster_id: String,
    pub brokers: BTreeMap<i32, BrokerRecord>,
    pub topics: BTreeMap<String, Arc<TopicRecord>>,
    /// Producer ids below it have been handed out (in blocks, by the controller).
    pub next_producer_id_block_start: i64,
    /// Cluster-wide configs set through the metadata log.
    pub cluster_configs: BTreeMap<String, String>,
    /// SCRAM credentials by (user, mechanism): salted, never the password.
    #[serde(default, with = "scram_credentials_serde")]
    pub scram_credentials: BTreeMap<(String, Mechanism), ScramCredential>,
    /// ACL bindings, indexed for per-request checks. Behind an `Arc` because the image is
    /// copied for every applied batch of the log; only ACL changes copy the store.
    #[serde(default)]
    pub acls: Arc<crate::security::acl::AclStore>,
    /// Client quotas by entity (AlterClientQuotas); behind an `Arc` for the same reason.
    #[serde(default)]
    pub client_quotas: Arc<crate::security::quota::QuotaStore>,
    /// Dynamic broker configs (AlterConfigs on BROKER resources); behind an `Arc` for the
    /// same reason.
    #[serde(default)]
    pub broker_configs: Arc<crate::cluster::broker_config::BrokerConfigStore>,
    /// Node-local: the active controller as this node last saw it (not replicated).
    #[serde(skip)]
    pub active_controller_id: Option<i32>,
}

impl MetadataImage {
    /// An empty image; the cluster id arrives with the first record of the log.
    pub fn empty() -> MetadataImage {
        MetadataImage {
            version: 0,
            cluster_id: String::new(),
            brokers: BTreeMap::new(),
            topics: BTreeMap::new(),
            next_producer_id_block_start: 0,
            cluster_configs: BTreeMap::new(),
            scram_credentials: BTreeMap::new(),
            acls: Arc::default(),
            client_quotas: Arc::default(),
            broker_configs: Arc::default(),
            active_controller_id: None,
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

    /// Brokers clients may use: registered and not fenced.
    /// The image as this node answers clients with it: a node that answers requests is alive,
    /// even before the controller unfences it after a restart. Leaving itself out of Metadata
    /// then makes clients drop the node (librdkafka decommissions it and can lose track of the
    /// coordinators it hosts). Copies the image only in that window.
    pub fn serving_view(image: Arc<MetadataImage>, this_node: i32) -> Arc<MetadataImage> {
        match image.brokers.get(&this_node) {
            Some(broker) if broker.fenced => {
                let mut view = (*image).clone();
                if let Some(broker) = view.brokers.get_mut(&this_node) {
                    broker.fenced = false;
                }
                Arc::new(view)
            }
            _ => image,
        }
    }

    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerRecord> {
        self.brokers.values().filter(|broker| !broker.fenced)
    }

    pub fn is_live(&self, node_id: i32) -> bool {
        self.brokers
            .get(&node_id)
            .is_some_and(|broker| !broker.fenced)
    }

    /// Number of partitions each shard of this node hosts, the load that local placement
    /// balances.
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

    /// A digest of the replicated part of the image (node-local fields excluded): equal on
    /// every node that applied the log to the same offset.
    pub fn digest(&self) -> String {
        let bytes = serde_json::to_vec(self).expect("the image serialises");
        let low = crc32c::crc32c(&bytes);
        let high = crc32c::crc32c_append(low ^ 0x5bd1_e995, &bytes);
        format!("{high:08x}{low:08x}-{}", bytes.len())
    }

    /// Snapshot form of the replicated image (the metadata log's snapshot data).
    pub fn to_snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("the image serialises")
    }

    pub fn from_snapshot(data: &[u8]) -> anyhow::Result<MetadataImage> {
        serde_json::from_slice(data)
            .map_err(|e| anyhow::anyhow!("metadata snapshot does not decode: {e}"))
    }
}

/// The image of the single-node broker before the metadata log (version 1 of the data
/// directory): topics with the shard of each partition.
#[derive(Debug, Deserialize)]
pub struct LegacyImage {
    pub cluster_id: String,
    pub topics: BTreeMap<String, LegacyTopic>,
    #[serde(default)]
    pub next_producer_id_block_start: i64,
}

#[derive(Debug, Deserialize)]
pub struct LegacyTopic {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: Vec<LegacyPartition>,
    pub configs: TopicConfigs,
}

#[derive(Debug, Deserialize)]
pub struct LegacyPartition {
    pub shard: u32,
    pub leader_epoch: i32,
}

pub fn legacy_metadata_path(data_dir: &Path) -> PathBuf {
    data_dir.join(LEGACY_METADATA_FILE_NAME)
}

/// The legacy image, if this data directory has one.
pub fn load_legacy(data_dir: &Path) -> anyhow::Result<Option<LegacyImage>> {
    let path = legacy_metadata_path(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("metadata file {} is corrupt: {e}", path.display())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(anyhow::anyhow!("cannot read {}: {error}", path.display())),
    }
}

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, fsync of the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp_name = path.file_name().unwrap_or_default().to_os_string();
    temp_name.push(".tmp");
    let temp_path = dir.join(temp_name);
    {
        let mut file = std::fs::File::create(&temp_path)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&temp_path, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Directory of one partition's log, as Kafka names it.
pub fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(leader: i32) -> PartitionRecord {
        PartitionRecord {
            shard: 3,
            replicas: vec![leader],
            isr: vec![leader],
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
        }
    }

    #[test]
    fn digest_ignores_node_local_fields() {
        let mut image = MetadataImage::empty();
        image.cluster_id = "c".into();
        image.topics.insert(
            "t".into(),
            Arc::new(TopicRecord {
                name: "t".into(),
                topic_id: Uuid::nil(),
                partitions: vec![partition(1)],
                configs: TopicConfigs::default(),
            }),
        );
        let mut other = image.clone();
        Arc::make_mut(other.topics.get_mut("t").unwrap()).partitions[0].shard = 0;
        other.active_controller_id = Some(2);
        assert_eq!(image.digest(), other.digest());
        Arc::make_mut(other.topics.get_mut("t").unwrap()).partitions[0].leader_epoch = 1;
        assert_ne!(image.digest(), other.digest());
    }

    #[test]
    fn snapshot_round_trips_without_local_fields() {
        let mut image = MetadataImage::empty();
        image.version = 9;
        image.topics.insert(
            "t".into(),
            Arc::new(TopicRecord {
                name: "t".into(),
                topic_id: Uuid::new_v4(),
                partitions: vec![partition(2)],
                configs: TopicConfigs::default(),
            }),
        );
        let restored = MetadataImage::from_snapshot(&image.to_snapshot()).unwrap();
        assert_eq!(restored.version, 9);
        assert_eq!(restored.topics["t"].partitions[0].shard, NOT_HOSTED);
        assert_eq!(restored.digest(), image.digest());
    }

    #[test]
    fn legacy_image_parses() {
        let text = r#"{"version":3,"cluster_id":"abc","topics":{"t":{"name":"t",
            "topic_id":"00000000-0000-0000-0000-000000000001",
            "partitions":[{"shard":1,"leader_epoch":2}],"configs":{}}},
            "next_producer_id_block_start":2000}"#;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(legacy_metadata_path(dir.path()), text).unwrap();
        let legacy = load_legacy(dir.path()).unwrap().unwrap();
        assert_eq!(legacy.cluster_id, "abc");
        assert_eq!(legacy.topics["t"].partitions[0].shard, 1);
        assert_eq!(legacy.next_producer_id_block_start, 2000);
    }
}
