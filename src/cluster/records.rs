//! Records of the metadata log and how the image applies them.
//!
//! Each log entry is one batch of records that the active controller decided together (a
//! CreateTopics request, a broker fencing with its leader changes); a batch applies whole or,
//! for records that no longer fit the image, record by record with a warning. Applying is a pure
//! function of the image and the records, so every node that applies the same log reaches the
//! same image.

use super::metadata::{BrokerRecord, MetadataImage, PartitionRecord, TopicRecord, NO_LEADER};
use super::topic_config::TopicConfigs;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

/// One change of the metadata image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type")]
pub enum MetadataRecord {
    /// First record of a cluster's log (and of a log bootstrapped from a legacy data directory).
    ClusterId {
        cluster_id: String,
    },
    /// Written by each new active controller (Kafka's LeaderChangeMessage); applying it tells
    /// the controller its image is current.
    LeaderChange {
        node_id: i32,
        term: u64,
    },
    /// A broker registered; replaces an earlier incarnation of the same node id. Its broker
    /// epoch is the offset of this record. A new registration is fenced until it catches up.
    RegisterBroker {
        node_id: i32,
        incarnation_id: Uuid,
        host: String,
        port: i32,
        rack: Option<String>,
        shard_count: u32,
        #[serde(default)]
        endpoints: Vec<super::metadata::BrokerEndpoint>,
    },
    FenceBroker {
        node_id: i32,
        broker_epoch: u64,
    },
    UnfenceBroker {
        node_id: i32,
        broker_epoch: u64,
    },
    /// A broker began a controlled shutdown.
    BrokerShuttingDown {
        node_id: i32,
        broker_epoch: u64,
    },
    CreateTopic {
        topic: TopicRecord,
    },
    DeleteTopic {
        name: String,
        topic_id: Uuid,
    },
    /// Partitions appended to a topic (CreatePartitions).
    AddPartitions {
        name: String,
        topic_id: Uuid,
        partitions: Vec<PartitionRecord>,
    },
    /// The topic's explicit configs, whole.
    SetTopicConfigs {
        name: String,
        topic_id: Uuid,
        configs: TopicConfigs,
    },
    /// New leader and ISR of one partition (election, fencing, AlterPartition).
    ChangePartition {
        name: String,
        topic_id: Uuid,
        partition: i32,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    },
    /// Producer ids below `next_block_start` are handed out.
    ProducerIds {
        next_block_start: i64,
    },
    SetClusterConfig {
        key: String,
        value: Option<String>,
    },
    /// A user's SCRAM credential for one mechanism, salted (`None` removes it).
    SetScramCredential {
        user: String,
        mechanism: crate::security::scram::Mechanism,
        credential: Option<crate::security::scram::ScramCredential>,
    },
    /// An ACL binding added (CreateAcls); validated by the controller.
    CreateAcl {
        binding: crate::security::acl::AclBinding,
    },
    /// An ACL binding removed (DeleteAcls).
    DeleteAcl {
        binding: crate::security::acl::AclBinding,
    },
    /// One quota of a client quota entity set (`Some`) or removed (`None`); validated by the
    /// controller (Kafka's ClientQuotaRecord).
    SetClientQuota {
        entity: crate::security::quota::QuotaEntity,
        key: String,
        value: Option<f64>,
    },
    /// One dynamic broker config set (`Some`) or removed (`None`), for broker `node_id` or,
    /// with `None`, for every broker (the cluster-wide default); validated by the controller.
    SetBrokerConfig {
        #[serde(default)]
        node_id: Option<i32>,
        key: String,
        value: Option<String>,
    },
}

/// Encodes one entry (a batch of records) of the metadata log.
pub fn encode_batch(records: &[MetadataRecord]) -> Vec<u8> {
    serde_json::to_vec(records).expect("metadata records serialise")
}

pub fn decode_batch(data: &[u8]) -> anyhow::Result<Vec<MetadataRecord>> {
    if data.is_empty() {
        return Ok(Vec::new()); // raft's own entries (a new leader's empty entry)
    }
    serde_json::from_slice(data)
        .map_err(|e| anyhow::anyhow!("metadata log entry does not decode: {e}"))
}

/// Applies one committed entry at log offset `offset` to `image`. Records that do not fit
/// (a topic that no longer exists, a stale broker epoch) are skipped with a warning: the
/// controller validated them against an image at most a few entries older.
pub fn apply_batch(image: &mut MetadataImage, offset: u64, records: &[MetadataRecord]) {
    assert!(
        offset > image.version,
        "metadata log entry {offset} applied after {}",
        image.version
    );
    for record in records {
        if let Err(why) = apply_record(image, offset, record) {
            tracing::warn!(offset, ?record, "metadata record skipped: {why}");
        }
    }
    image.version = offset;
}

fn topic_mut<'a>(
    image: &'a mut MetadataImage,
    name: &str,
    topic_id: Uuid,
) -> Result<&'a mut TopicRecord, String> {
    match image.topics.get_mut(name) {
        Some(topic) if topic.topic_id == topic_id => Ok(Arc::make_mut(topic)),
        _ => Err(format!("topic {name} ({topic_id}) does not exist")),
    }
}

fn apply_record(
    image: &mut MetadataImage,
    offset: u64,
    record: &MetadataRecord,
) -> Result<(), String> {
    match record {
        MetadataRecord::ClusterId { cluster_id } => {
            if image.cluster_id.is_empty() {
                image.cluster_id = cluster_id.clone();
            } else if image.cluster_id != *cluster_id {
                return Err(format!("cluster id is {} already", image.cluster_id));
            }
        }
        MetadataRecord::LeaderChange { .. } => {}
        MetadataRecord::RegisterBroker {
            node_id,
            incarnation_id,
            host,
            port,
            rack,
            shard_count,
            endpoints,
        } => {
            image.brokers.insert(
                *node_id,
                BrokerRecord {
                    node_id: *node_id,
                    incarnation_id: *incarnation_id,
                    broker_epoch: offset,
                    host: host.clone(),
                    port: *port,
                    endpoints: endpoints.clone(),
                    rack: rack.clone(),
                    shard_count: *shard_count,
                    fenced: true,
                    shutting_down: false,
                },
            );
        }
        MetadataRecord::FenceBroker {
            node_id,
            broker_epoch,
        }
        | MetadataRecord::UnfenceBroker {
            node_id,
            broker_epoch,
        }
        | MetadataRecord::BrokerShuttingDown {
            node_id,
            broker_epoch,
        } => {
            let broker = image
                .brokers
                .get_mut(node_id)
                .filter(|broker| broker.broker_epoch == *broker_epoch)
                .ok_or_else(|| {
                    format!("broker {node_id} epoch {broker_epoch} is not registered")
                })?;
            match record {
                MetadataRecord::FenceBroker { .. } => broker.fenced = true,
                MetadataRecord::UnfenceBroker { .. } => {
                    broker.fenced = false;
                    broker.shutting_down = false;
                }
                _ => broker.shutting_down = true,
            }
        }
        MetadataRecord::CreateTopic { topic } => {
            if image.topics.contains_key(&topic.name) {
                return Err(format!("topic {} exists", topic.name));
            }
            image
                .topics
                .insert(topic.name.clone(), Arc::new(topic.clone()));
        }
        MetadataRecord::DeleteTopic { name, topic_id } => {
            topic_mut(image, name, *topic_id)?;
            image.topics.remove(name);
        }
        MetadataRecord::AddPartitions {
            name,
            topic_id,
            partitions,
        } => {
            topic_mut(image, name, *topic_id)?
                .partitions
                .extend(partitions.iter().cloned());
        }
        MetadataRecord::SetTopicConfigs {
            name,
            topic_id,
            configs,
        } => {
            topic_mut(image, name, *topic_id)?.configs = configs.clone();
        }
        MetadataRecord::ChangePartition {
            name,
            topic_id,
            partition,
            leader,
            leader_epoch,
            partition_epoch,
            isr,
        } => {
            let topic = topic_mut(image, name, *topic_id)?;
            let record = usize::try_from(*partition)
                .ok()
                .and_then(|index| topic.partitions.get_mut(index))
                .ok_or_else(|| format!("partition {name}-{partition} does not exist"))?;
            if *partition_epoch <= record.partition_epoch || *leader_epoch < record.leader_epoch {
                return Err(format!(
                    "stale change of {name}-{partition}: partition epoch {partition_epoch} <= {}",
                    record.partition_epoch
                ));
            }
            record.leader = *leader;
            record.leader_epoch = *leader_epoch;
            record.partition_epoch = *partition_epoch;
            record.isr = isr.clone();
        }
        MetadataRecord::ProducerIds { next_block_start } => {
            if *next_block_start <= image.next_producer_id_block_start {
                return Err("producer id blocks only grow".into());
            }
            image.next_producer_id_block_start = *next_block_start;
        }
        MetadataRecord::SetClusterConfig { key, value } => match value {
            Some(value) => {
                image.cluster_configs.insert(key.clone(), value.clone());
            }
            None => {
                image.cluster_configs.remove(key);
            }
        },
        MetadataRecord::SetScramCredential {
            user,
            mechanism,
            credential,
        } => match credential {
            Some(credential) => {
                image
                    .scram_credentials
                    .insert((user.clone(), *mechanism), credential.clone());
            }
            None => {
                image.scram_credentials.remove(&(user.clone(), *mechanism));
            }
        },
        // The controller validated the binding (limits may change between versions; the log
        // replays as written); only a pattern the store cannot index is skipped.
        MetadataRecord::CreateAcl { binding } => {
            if image.acls.contains(binding) {
                return Err("the ACL binding exists".into());
            }
            if !Arc::make_mut(&mut image.acls).insert(binding) {
                return Err("not a LITERAL or PREFIXED binding of a concrete resource type".into());
            }
        }
        MetadataRecord::DeleteAcl { binding } => {
            if !image.acls.contains(binding) {
                return Err("the ACL binding does not exist".into());
            }
            Arc::make_mut(&mut image.acls).remove(binding);
        }
        // As validated by the controller; only what the store cannot hold is skipped.
        MetadataRecord::SetClientQuota { entity, key, value } => {
            if entity.user.is_none() && entity.client_id.is_none() {
                return Err("a quota entity without user or client-id".into());
            }
            if value.is_some_and(|value| !value.is_finite()) {
                return Err(format!("quota {key} is not a finite number"));
            }
            if value.is_none()
                && image
                    .client_quotas
                    .get(entity)
                    .is_none_or(|v| !v.contains_key(key))
            {
                return Err(format!("quota {key} of {entity:?} is not set"));
            }
            Arc::make_mut(&mut image.client_quotas).set(entity, key, *value);
        }
        // As validated by the controller (keys may change between versions; the log replays
        // as written).
        MetadataRecord::SetBrokerConfig {
            node_id,
            key,
            value,
        } => {
            if value.is_none()
                && image
                    .broker_configs
                    .scope(*node_id)
                    .is_none_or(|configs| !configs.contains_key(key))
            {
                return Err(format!("broker config {key} of {node_id:?} is not set"));
            }
            Arc::make_mut(&mut image.broker_configs).set(*node_id, key, value.as_deref());
        }
    }
    Ok(())
}

/// A new partition with its replicas; the first live replica leads.
pub fn new_partition(replicas: Vec<i32>, leader: i32) -> PartitionRecord {
    assert!(!replicas.is_empty(), "a partition has at least one replica");
    PartitionRecord {
        shard: super::metadata::NOT_HOSTED,
        isr: replicas.clone(),
        replicas,
        leader,
        leader_epoch: 0,
        partition_epoch: 0,
    }
}

/// Leader changes when `node_id` stops being available (fenced or shutting down): every
/// partition it leads moves to another live member of its ISR, or to no leader. The ISR keeps
/// the node when it is the last member (Kafka keeps the last replica in the ISR so it can lead
/// again without data loss); otherwise the node leaves it. Where no ISR member is alive and
/// `unclean(topic)` allows it, a live out-of-sync replica leads alone (unclean election).
pub fn leaders_away_from(
    image: &MetadataImage,
    node_id: i32,
    unclean: impl Fn(&TopicRecord) -> bool,
) -> Vec<MetadataRecord> {
    let available = |id: i32| {
        id != node_id
            && image
                .brokers
                .get(&id)
                .is_some_and(|b| !b.fenced && !b.shutting_down)
    };
    let mut records = Vec::new();
    for topic in image.topics.values() {
        for (index, partition) in topic.partitions.iter().enumerate() {
            let leads = partition.leader == node_id;
            let in_isr = partition.isr.contains(&node_id);
            if !leads && !in_isr {
                continue;
            }
            let mut isr: Vec<i32> = partition.isr.clone();
            if isr.len() > 1 {
                isr.retain(|&id| id != node_id);
            }
            let mut leader = partition.leader;
            if leads {
                leader = isr
                    .iter()
                    .copied()
                    .find(|&id| available(id))
                    .unwrap_or(NO_LEADER);
                if leader == NO_LEADER && unclean(topic) {
                    if let Some(id) = partition.replicas.iter().copied().find(|&id| available(id)) {
                        tracing::warn!(topic = %topic.name, partition = index, leader = id,
                            "unclean leader election: records it lacks are lost");
                        leader = id;
                        isr = vec![id];
                    }
                }
            }
            if leader == partition.leader && isr == partition.isr {
                continue;
            }
            records.push(MetadataRecord::ChangePartition {
                name: topic.name.clone(),
                topic_id: topic.topic_id,
                partition: index as i32,
                leader,
                leader_epoch: partition.leader_epoch + i32::from(leader != partition.leader),
                partition_epoch: partition.partition_epoch + 1,
                isr,
            });
        }
    }
    records
}

/// Leader changes when `node_id` becomes available: partitions without a leader whose ISR
/// holds it get it as leader; where `unclean(topic)` allows it, so do partitions it holds a
/// replica of whose ISR members are all down (it leads alone, with what it has).
pub fn leaders_onto(
    image: &MetadataImage,
    node_id: i32,
    unclean: impl Fn(&TopicRecord) -> bool,
) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics.values() {
        for (index, partition) in topic.partitions.iter().enumerate() {
            if partition.has_leader() || !partition.replicas.contains(&node_id) {
                continue;
            }
            let isr = if partition.isr.contains(&node_id) {
                partition.isr.clone()
            } else if unclean(topic) && !partition.isr.iter().any(|&id| image.is_live(id)) {
                tracing::warn!(topic = %topic.name, partition = index, leader = node_id,
                    "unclean leader election: records it lacks are lost");
                vec![node_id]
            } else {
                continue;
            };
            records.push(MetadataRecord::ChangePartition {
                name: topic.name.clone(),
                topic_id: topic.topic_id,
                partition: index as i32,
                leader: node_id,
                leader_epoch: partition.leader_epoch + 1,
                partition_epoch: partition.partition_epoch + 1,
                isr,
            });
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(node_id: i32) -> MetadataRecord {
        MetadataRecord::RegisterBroker {
            node_id,
            incarnation_id: Uuid::from_u128(node_id as u128),
            host: "127.0.0.1".into(),
            port: 9092 + node_id,
            rack: None,
            shard_count: 1,
            endpoints: Vec::new(),
        }
    }

    fn cluster_with_topic() -> MetadataImage {
        let mut image = MetadataImage::empty();
        apply_batch(
            &mut image,
            1,
            &[
                MetadataRecord::ClusterId {
                    cluster_id: "c1".into(),
                },
                register(1),
                register(2),
            ],
        );
        apply_batch(
            &mut image,
            2,
            &[
                MetadataRecord::UnfenceBroker {
                    node_id: 1,
                    broker_epoch: 1,
                },
                MetadataRecord::UnfenceBroker {
                    node_id: 2,
                    broker_epoch: 1,
                },
                MetadataRecord::CreateTopic {
                    topic: TopicRecord {
                        name: "t".into(),
                        topic_id: Uuid::from_u128(7),
                        partitions: vec![new_partition(vec![1], 1), new_partition(vec![2], 2)],
                        configs: TopicConfigs::new(),
                    },
                },
            ],
        );
        image
    }

    #[test]
    fn applying_the_same_log_gives_the_same_image() {
        let a = cluster_with_topic();
        let b = cluster_with_topic();
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.version, 2);
        assert!(a.is_live(1) && a.is_live(2));
        assert_eq!(a.brokers[&1].broker_epoch, 1);
    }

    #[test]
    fn fencing_the_only_replica_leaves_no_leader_and_unfencing_restores_it() {
        let mut image = cluster_with_topic();
        let away = leaders_away_from(&image, 1, |_| false);
        assert_eq!(away.len(), 1);
        let mut batch = vec![MetadataRecord::FenceBroker {
            node_id: 1,
            broker_epoch: 1,
        }];
        batch.extend(away);
        apply_batch(&mut image, 3, &batch);
        let partition = &image.topics["t"].partitions[0];
        assert_eq!(partition.leader, NO_LEADER);
        assert_eq!(partition.isr, vec![1]);
        assert_eq!(partition.leader_epoch, 1);
        let onto = leaders_onto(&image, 1, |_| false);
        let mut batch = vec![MetadataRecord::UnfenceBroker {
            node_id: 1,
            broker_epoch: 1,
        }];
        batch.extend(onto);
        apply_batch(&mut image, 4, &batch);
        let partition = &image.topics["t"].partitions[0];
        assert_eq!(partition.leader, 1);
        assert_eq!(partition.leader_epoch, 2);
        assert_eq!(partition.partition_epoch, 2);
        // The other node's partition never moved.
        assert_eq!(image.topics["t"].partitions[1].leader_epoch, 0);
    }

    #[test]
    fn unclean_election_only_when_allowed_and_no_isr_member_lives() {
        let mut image = cluster_with_topic();
        // Partition 0 of "u": replicas 1 and 2, only 1 in sync and leading.
        let mut partition = new_partition(vec![1, 2], 1);
        partition.isr = vec![1];
        apply_batch(
            &mut image,
            3,
            &[MetadataRecord::CreateTopic {
                topic: TopicRecord {
                    name: "u".into(),
                    topic_id: Uuid::from_u128(8),
                    partitions: vec![partition],
                    configs: TopicConfigs::new(),
                },
            }],
        );
        let change_of_u = |records: &[MetadataRecord]| {
            records.iter().find_map(|r| match r {
                MetadataRecord::ChangePartition {
                    name, leader, isr, ..
                } if name == "u" => Some((*leader, isr.clone())),
                _ => None,
            })
        };
        // Clean: the last in-sync replica stays in the ISR, and nobody leads.
        let clean = leaders_away_from(&image, 1, |_| false);
        assert_eq!(change_of_u(&clean), Some((NO_LEADER, vec![1])));
        // Unclean: the live out-of-sync replica leads alone.
        let unclean = leaders_away_from(&image, 1, |topic| topic.name == "u");
        assert_eq!(change_of_u(&unclean), Some((2, vec![2])));

        // Leaderless with 1 fenced: 2 coming back takes it only if unclean is allowed.
        let mut batch = vec![MetadataRecord::FenceBroker {
            node_id: 1,
            broker_epoch: 1,
        }];
        batch.extend(clean);
        apply_batch(&mut image, 4, &batch);
        assert_eq!(change_of_u(&leaders_onto(&image, 2, |_| false)), None);
        assert_eq!(
            change_of_u(&leaders_onto(&image, 2, |_| true)),
            Some((2, vec![2]))
        );
        // 1 coming back is in the ISR: clean election.
        assert_eq!(
            change_of_u(&leaders_onto(&image, 1, |_| false)),
            Some((1, vec![1]))
        );
    }

    #[test]
    fn a_stale_partition_change_is_skipped() {
        let mut image = cluster_with_topic();
        let stale = MetadataRecord::ChangePartition {
            name: "t".into(),
            topic_id: Uuid::from_u128(7),
            partition: 0,
            leader: 2,
            leader_epoch: 1,
            partition_epoch: 0,
            isr: vec![2],
        };
        apply_batch(&mut image, 3, &[stale]);
        assert_eq!(image.topics["t"].partitions[0].leader, 1);
        assert_eq!(image.version, 3);
    }

    #[test]
    fn records_round_trip_and_a_reregistration_fences_the_old_incarnation() {
        let batch = vec![
            register(3),
            MetadataRecord::ProducerIds {
                next_block_start: 1000,
            },
        ];
        assert_eq!(decode_batch(&encode_batch(&batch)).unwrap(), batch);
        let mut image = cluster_with_topic();
        apply_batch(&mut image, 5, &[register(1)]);
        assert!(image.brokers[&1].fenced);
        assert_eq!(image.brokers[&1].broker_epoch, 5);
        // A fence for the old epoch no longer applies.
        apply_batch(
            &mut image,
            6,
            &[MetadataRecord::UnfenceBroker {
                node_id: 1,
                broker_epoch: 1,
            }],
        );
        assert!(image.brokers[&1].fenced);
    }

    #[test]
    fn acl_records_apply_and_survive_a_snapshot() {
        use crate::security::acl::{AclBinding, Operation, PatternType, Permission, ResourceType};
        let binding = AclBinding {
            resource_type: ResourceType::Topic,
            resource_name: "orders".into(),
            pattern_type: PatternType::Prefixed,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: Operation::Write,
            permission: Permission::Allow,
        };
        let mut image = cluster_with_topic();
        let before = image.clone();
        apply_batch(
            &mut image,
            3,
            &[
                MetadataRecord::CreateAcl {
                    binding: binding.clone(),
                },
                // A duplicate is skipped, not counted twice.
                MetadataRecord::CreateAcl {
                    binding: binding.clone(),
                },
            ],
        );
        assert_eq!(image.acls.len(), 1);
        // Copies of the image share the store until it changes.
        assert_eq!(before.acls.len(), 0);
        let restored = MetadataImage::from_snapshot(&image.to_snapshot()).unwrap();
        assert_eq!(restored.digest(), image.digest());
        assert!(restored.acls.contains(&binding));
        let mut invalid = binding.clone();
        invalid.pattern_type = PatternType::Match;
        apply_batch(
            &mut image,
            4,
            &[
                MetadataRecord::CreateAcl { binding: invalid },
                MetadataRecord::DeleteAcl {
                    binding: binding.clone(),
                },
                MetadataRecord::DeleteAcl { binding },
            ],
        );
        assert!(image.acls.is_empty());
        assert_eq!(image.version, 4);
    }

    #[test]
    fn client_quota_records_apply_and_survive_a_snapshot() {
        use crate::security::quota::{EntityName, QuotaEntity, QuotaKey};
        let alice = QuotaEntity {
            user: Some(EntityName::Named("alice".into())),
            client_id: Some(EntityName::Default),
        };
        let set = |key: &str, value: Option<f64>| MetadataRecord::SetClientQuota {
            entity: alice.clone(),
            key: key.into(),
            value,
        };
        let mut image = cluster_with_topic();
        let before = image.clone();
        apply_batch(
            &mut image,
            3,
            &[
                set("producer_byte_rate", Some(1024.0)),
                set("consumer_byte_rate", Some(2048.0)),
                // Removing a key that is not set is skipped.
                set("request_percentage", None),
                MetadataRecord::SetClientQuota {
                    entity: QuotaEntity {
                        user: None,
                        client_id: None,
                    },
                    key: "producer_byte_rate".into(),
                    value: Some(1.0),
                },
            ],
        );
        assert_eq!(image.client_quotas.len(), 1);
        assert!(before.client_quotas.is_empty());
        let resolved = image
            .client_quotas
            .resolve(QuotaKey::ProducerByteRate, "alice", "app");
        assert_eq!(resolved.map(|(_, bound)| bound), Some(1024.0));
        let restored = MetadataImage::from_snapshot(&image.to_snapshot()).unwrap();
        assert_eq!(restored.digest(), image.digest());
        assert_eq!(restored.client_quotas, image.client_quotas);
        let batch = vec![
            set("producer_byte_rate", None),
            set("consumer_byte_rate", None),
        ];
        assert_eq!(decode_batch(&encode_batch(&batch)).unwrap(), batch);
        apply_batch(&mut image, 4, &batch);
        assert!(image.client_quotas.is_empty());
    }

    #[test]
    fn broker_config_records_apply_survive_a_snapshot_and_read_old_forms() {
        let set = |node_id: Option<i32>, key: &str, value: Option<&str>| {
            MetadataRecord::SetBrokerConfig {
                node_id,
                key: key.into(),
                value: value.map(str::to_string),
            }
        };
        let mut image = cluster_with_topic();
        let before = image.clone();
        apply_batch(
            &mut image,
            3,
            &[
                set(Some(1), "log.retention.ms", Some("1000")),
                set(None, "message.max.bytes", Some("2048")),
                // Removing a value that is not set is skipped.
                set(Some(2), "log.retention.ms", None),
            ],
        );
        assert!(before.broker_configs.per_broker.is_empty());
        assert_eq!(
            image.broker_configs.per_broker[&1]["log.retention.ms"],
            "1000"
        );
        assert_eq!(image.broker_configs.default["message.max.bytes"], "2048");
        assert!(!image.broker_configs.per_broker.contains_key(&2));
        let restored = MetadataImage::from_snapshot(&image.to_snapshot()).unwrap();
        assert_eq!(restored.digest(), image.digest());
        assert_eq!(restored.broker_configs, image.broker_configs);
        // A cluster-wide record written without the field, and a snapshot from before the
        // field existed, both read.
        let decoded =
            decode_batch(br#"[{"type":"SetBrokerConfig","key":"num.io.threads","value":"4"}]"#)
                .unwrap();
        assert_eq!(decoded, vec![set(None, "num.io.threads", Some("4"))]);
        let mut old = serde_json::to_value(&before).unwrap();
        old.as_object_mut().unwrap().remove("broker_configs");
        let old = MetadataImage::from_snapshot(&serde_json::to_vec(&old).unwrap()).unwrap();
        assert!(old.broker_configs.default.is_empty());
        apply_batch(&mut image, 4, &[set(Some(1), "log.retention.ms", None)]);
        assert!(image.broker_configs.per_broker.is_empty());
    }
}
