//! The controller: the only writer of the metadata image. It runs on shard 0; requests from other
//! shards reach it with `invoke_on(0, ..)`. Changes are serialised, persisted, then applied on every
//! shard before the caller hears back, so a client that created a topic can use it at once on any
//! connection.

use super::metadata::{MetadataImage, PartitionRecord, TopicRecord};
use super::topic_config::{self, TopicConfigs};
use crate::config::BrokerConfig;
use crate::shard::Shard;
use kafka_protocol::error::ResponseError;
use std::rc::Rc;
use std::sync::Arc;
use uuid::Uuid;

/// Longest topic name Kafka allows.
pub const MAX_TOPIC_NAME_LENGTH: usize = 249;

/// Producer ids the controller reserves in the metadata log at a time.
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

pub struct Controller {
    config: Arc<BrokerConfig>,
    /// One metadata change at a time.
    change_lock: glommio::sync::Semaphore,
    /// Producer ids reserved (persisted) but not yet handed out: `next..end`.
    producer_ids: std::cell::Cell<(i64, i64)>,
}

/// A refused admin operation: the Kafka error code and a message for the client.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminError {
    pub code: i16,
    pub message: String,
}

impl AdminError {
    pub fn new(error: ResponseError, message: impl Into<String>) -> AdminError {
        AdminError {
            code: error.code(),
            message: message.into(),
        }
    }
}

pub struct NewTopic {
    pub name: String,
    /// -1: the broker's `num_partitions`.
    pub partitions: i32,
    /// -1: the broker default (1 on a single node).
    pub replication_factor: i16,
    /// Explicit replica assignment per partition, if the client gave one.
    pub assignments: Vec<Vec<i32>>,
    pub configs: Vec<(String, Option<String>)>,
}

/// How IncrementalAlterConfigs changes one key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ConfigOp {
    Set,
    Delete,
    Append,
    Subtract,
}

pub struct ConfigChange {
    pub key: String,
    pub op: ConfigOp,
    pub value: Option<String>,
}

/// Kafka's rule for topic names.
pub fn validate_topic_name(name: &str) -> Result<(), AdminError> {
    let invalid = |why: &str| {
        Err(AdminError::new(
            ResponseError::InvalidTopicException,
            format!("topic name {name:?} is illegal: {why}"),
        ))
    };
    if name.is_empty() {
        return invalid("empty");
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are not allowed");
    }
    if name.len() > MAX_TOPIC_NAME_LENGTH {
        return invalid("longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return invalid("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

impl Controller {
    /// The controller of shard 0. Call only on shard 0 (reach it with `invoke_on(0, ..)`).
    pub fn of(shard: &Shard) -> &Controller {
        shard
            .controller
            .as_ref()
            .expect("the controller runs on shard 0 only")
    }

    pub fn new(config: Arc<BrokerConfig>) -> Controller {
        Controller {
            config,
            change_lock: glommio::sync::Semaphore::new(1),
            producer_ids: std::cell::Cell::new((0, 0)),
        }
    }

    fn check_new_topic(
        &self,
        image: &MetadataImage,
        topic: &NewTopic,
    ) -> Result<(i32, TopicConfigs), AdminError> {
        validate_topic_name(&topic.name)?;
        if image.topic(&topic.name).is_some() {
            return Err(AdminError::new(
                ResponseError::TopicAlreadyExists,
                format!("Topic '{}' already exists.", topic.name),
            ));
        }
        if image.topics.len() >= self.config.max_topics {
            return Err(AdminError::new(
                ResponseError::PolicyViolation,
                format!(
                    "the broker holds its limit of {} topics",
                    self.config.max_topics
                ),
            ));
        }
        let partitions = if !topic.assignments.is_empty() {
            for replicas in &topic.assignments {
                if replicas.iter().any(|&broker| broker != self.config.node_id)
                    || replicas.len() != 1
                {
                    return Err(AdminError::new(
                        ResponseError::InvalidReplicaAssignment,
                        format!("replica assignment {replicas:?} names brokers that do not exist"),
                    ));
                }
            }
            topic.assignments.len() as i32
        } else if topic.partitions == -1 {
            self.config.num_partitions
        } else {
            topic.partitions
        };
        if partitions < 1 || partitions > self.config.max_partitions_per_topic {
            return Err(AdminError::new(
                ResponseError::InvalidPartitions,
                format!(
                    "number of partitions must be between 1 and {}",
                    self.config.max_partitions_per_topic
                ),
            ));
        }
        if topic.replication_factor != -1 && topic.replication_factor != 1 {
            return Err(AdminError::new(
                ResponseError::InvalidReplicationFactor,
                format!(
                    "Replication factor: {} larger than available brokers: 1.",
                    topic.replication_factor
                ),
            ));
        }
        let mut configs = TopicConfigs::new();
        for (key, value) in &topic.configs {
            let Some(value) = value else { continue };
            topic_config::validate(key, value)
                .map_err(|e| AdminError::new(ResponseError::InvalidConfig, e.to_string()))?;
            configs.insert(key.clone(), value.clone());
        }
        Ok((partitions, configs))
    }

    /// Persists `image` and applies it on every shard before returning.
    async fn commit(&self, shard: &Rc<Shard>, mut image: MetadataImage) -> Result<(), AdminError> {
        image.version = shard.metadata().version + 1;
        if let Err(error) = super::metadata::persist(&self.config.data_dir, &image) {
            tracing::error!("cannot persist metadata: {error}");
            return Err(AdminError::new(
                ResponseError::KafkaStorageError,
                format!("cannot persist metadata: {error}"),
            ));
        }
        let image = Arc::new(image);
        let applies = (0..shard.count).map(|target| {
            let image = image.clone();
            shard.invoke_on(target, move |owner| async move {
                super::apply_image(&owner, image)
                    .await
                    .map_err(|e| format!("shard {}: {e:#}", owner.id))
            })
        });
        for outcome in futures::future::join_all(applies).await {
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(message)) => {
                    tracing::error!("applying metadata failed: {message}");
                    return Err(AdminError::new(ResponseError::KafkaStorageError, message));
                }
                Err(error) => {
                    return Err(AdminError::new(
                        ResponseError::UnknownServerError,
                        error.to_string(),
                    ))
                }
            }
        }
        Ok(())
    }

    pub async fn create_topics(
        &self,
        shard: &Rc<Shard>,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> Vec<Result<Arc<TopicRecord>, AdminError>> {
        let _permit = self.change_lock.acquire_permit(1).await;
        let mut image = (*shard.metadata()).clone();
        let mut results = Vec::with_capacity(topics.len());
        for topic in &topics {
            let outcome = self
                .check_new_topic(&image, topic)
                .map(|(partitions, configs)| {
                    let shards = image.place_new_partitions(partitions as usize, shard.count);
                    let record = Arc::new(TopicRecord {
                        name: topic.name.clone(),
                        topic_id: Uuid::new_v4(),
                        partitions: shards
                            .into_iter()
                            .map(|shard| PartitionRecord {
                                shard,
                                leader_epoch: 0,
                            })
                            .collect(),
                        configs,
                    });
                    if !validate_only {
                        image.topics.insert(topic.name.clone(), record.clone());
                    }
                    record
                });
            results.push(outcome);
        }
        let changed = !validate_only && results.iter().any(Result::is_ok);
        if changed {
            if let Err(error) = self.commit(shard, image).await {
                return results
                    .into_iter()
                    .map(|r| r.and(Err(error.clone())))
                    .collect();
            }
            for record in results.iter().flatten() {
                tracing::info!(
                    topic = %record.name,
                    partitions = record.partitions.len(),
                    "topic created"
                );
            }
        }
        results
    }

    /// Hands out a producer id never given before, even across restarts: ids come from blocks
    /// whose reservation is persisted before any id of them is used.
    pub async fn allocate_producer_id(&self, shard: &Rc<Shard>) -> Result<i64, AdminError> {
        let _permit = self.change_lock.acquire_permit(1).await;
        let (next, end) = self.producer_ids.get();
        if next < end {
            self.producer_ids.set((next + 1, end));
            return Ok(next);
        }
        let mut image = (*shard.metadata()).clone();
        let start = image.next_producer_id_block_start;
        image.next_producer_id_block_start = start + PRODUCER_ID_BLOCK_SIZE;
        self.commit(shard, image).await?;
        self.producer_ids
            .set((start + 1, start + PRODUCER_ID_BLOCK_SIZE));
        Ok(start)
    }

    pub async fn delete_topics(
        &self,
        shard: &Rc<Shard>,
        names: Vec<String>,
    ) -> Vec<Result<Uuid, AdminError>> {
        let _permit = self.change_lock.acquire_permit(1).await;
        let mut image = (*shard.metadata()).clone();
        let results: Vec<Result<Uuid, AdminError>> = names
            .iter()
            .map(|name| match image.topics.remove(name) {
                Some(topic) => Ok(topic.topic_id),
                None => Err(AdminError::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!("topic {name:?} does not exist"),
                )),
            })
            .collect();
        if results.iter().any(Result::is_ok) {
            if let Err(error) = self.commit(shard, image).await {
                return results
                    .into_iter()
                    .map(|r| r.and(Err(error.clone())))
                    .collect();
            }
            for (name, _) in names.iter().zip(&results).filter(|(_, r)| r.is_ok()) {
                tracing::info!(topic = %name, "topic deleted");
            }
        }
        results
    }

    pub async fn create_partitions(
        &self,
        shard: &Rc<Shard>,
        requests: Vec<(String, i32)>,
        validate_only: bool,
    ) -> Vec<Result<(), AdminError>> {
        let _permit = self.change_lock.acquire_permit(1).await;
        let mut image = (*shard.metadata()).clone();
        let mut results = Vec::with_capacity(requests.len());
        for (name, count) in &requests {
            let outcome = match image.topic(name).cloned() {
                None => Err(AdminError::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!("topic {name:?} does not exist"),
                )),
                Some(topic) if *count <= topic.partition_count() => Err(AdminError::new(
                    ResponseError::InvalidPartitions,
                    format!(
                        "Topic currently has {} partitions, which is higher than the requested {count}.",
                        topic.partition_count()
                    ),
                )),
                Some(_) if *count > self.config.max_partitions_per_topic => Err(AdminError::new(
                    ResponseError::InvalidPartitions,
                    format!("at most {} partitions", self.config.max_partitions_per_topic),
                )),
                Some(topic) => {
                    let added = (*count - topic.partition_count()) as usize;
                    let shards = image.place_new_partitions(added, shard.count);
                    let mut record = (*topic).clone();
                    record.partitions.extend(shards.into_iter().map(|shard| PartitionRecord {
                        shard,
                        leader_epoch: 0,
                    }));
                    if !validate_only {
                        image.topics.insert(name.clone(), Arc::new(record));
                    }
                    Ok(())
                }
            };
            results.push(outcome);
        }
        if !validate_only && results.iter().any(Result::is_ok) {
            if let Err(error) = self.commit(shard, image).await {
                return results
                    .into_iter()
                    .map(|r| r.and(Err(error.clone())))
                    .collect();
            }
        }
        results
    }

    /// Changes topic configs. `replace_all` is the legacy AlterConfigs: the given set replaces
    /// every explicit config; otherwise each change applies on its own (IncrementalAlterConfigs).
    pub async fn alter_topic_configs(
        &self,
        shard: &Rc<Shard>,
        requests: Vec<(String, Vec<ConfigChange>)>,
        replace_all: bool,
        validate_only: bool,
    ) -> Vec<Result<(), AdminError>> {
        let _permit = self.change_lock.acquire_permit(1).await;
        let mut image = (*shard.metadata()).clone();
        let mut results = Vec::with_capacity(requests.len());
        for (name, changes) in &requests {
            let outcome = match image.topic(name).cloned() {
                None => Err(AdminError::new(
                    ResponseError::UnknownTopicOrPartition,
                    format!("topic {name:?} does not exist"),
                )),
                Some(topic) => {
                    let mut configs = if replace_all {
                        TopicConfigs::new()
                    } else {
                        topic.configs.clone()
                    };
                    apply_config_changes(&mut configs, changes, &self.config).map(|()| {
                        if !validate_only {
                            let mut record = (*topic).clone();
                            record.configs = configs;
                            image.topics.insert(name.clone(), Arc::new(record));
                        }
                    })
                }
            };
            results.push(outcome);
        }
        if !validate_only && results.iter().any(Result::is_ok) {
            if let Err(error) = self.commit(shard, image).await {
                return results
                    .into_iter()
                    .map(|r| r.and(Err(error.clone())))
                    .collect();
            }
            tracing::info!(topics = requests.len(), "topic configs altered");
        }
        results
    }
}

fn apply_config_changes(
    configs: &mut TopicConfigs,
    changes: &[ConfigChange],
    broker: &BrokerConfig,
) -> Result<(), AdminError> {
    let invalid = |message: String| AdminError::new(ResponseError::InvalidConfig, message);
    for change in changes {
        let current = || {
            configs
                .get(&change.key)
                .cloned()
                .unwrap_or_else(|| topic_config::default_value(&change.key, broker))
        };
        let new_value = match change.op {
            ConfigOp::Delete => {
                topic_config::validate(
                    &change.key,
                    &topic_config::default_value(&change.key, broker),
                )
                .map_err(|e| invalid(e.to_string()))?;
                configs.remove(&change.key);
                continue;
            }
            ConfigOp::Set => change
                .value
                .clone()
                .ok_or_else(|| invalid(format!("no value given for {}", change.key)))?,
            ConfigOp::Append | ConfigOp::Subtract => {
                if change.key != "cleanup.policy" {
                    return Err(invalid(format!(
                        "{} is not a list; APPEND and SUBTRACT apply to list configs only",
                        change.key
                    )));
                }
                let value = change.value.clone().unwrap_or_default();
                let mut items: Vec<String> = current()
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if change.op == ConfigOp::Append {
                        if !items.iter().any(|i| i == item) {
                            items.push(item.to_string());
                        }
                    } else {
                        items.retain(|i| i != item);
                    }
                }
                items.join(",")
            }
        };
        topic_config::validate(&change.key, &new_value).map_err(|e| invalid(e.to_string()))?;
        configs.insert(change.key.clone(), new_value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_x-y").is_ok());
        for bad in ["", ".", "..", "has space", "sl/ash", &"x".repeat(250)] {
            let error = validate_topic_name(bad).unwrap_err();
            assert_eq!(error.code, ResponseError::InvalidTopicException.code());
        }
    }

    #[test]
    fn incremental_changes_set_delete_append_subtract() {
        let broker = BrokerConfig::default();
        let mut configs = TopicConfigs::new();
        let change = |key: &str, op, value: Option<&str>| ConfigChange {
            key: key.into(),
            op,
            value: value.map(String::from),
        };
        apply_config_changes(
            &mut configs,
            &[
                change("retention.ms", ConfigOp::Set, Some("100")),
                change("cleanup.policy", ConfigOp::Append, Some("compact")),
            ],
            &broker,
        )
        .unwrap();
        assert_eq!(configs["retention.ms"], "100");
        assert_eq!(configs["cleanup.policy"], "delete,compact");
        apply_config_changes(
            &mut configs,
            &[
                change("retention.ms", ConfigOp::Delete, None),
                change("cleanup.policy", ConfigOp::Subtract, Some("delete")),
            ],
            &broker,
        )
        .unwrap();
        assert!(!configs.contains_key("retention.ms"));
        assert_eq!(configs["cleanup.policy"], "compact");
        let error = apply_config_changes(
            &mut configs,
            &[change("retention.ms", ConfigOp::Set, Some("x"))],
            &broker,
        )
        .unwrap_err();
        assert_eq!(error.code, ResponseError::InvalidConfig.code());
    }
}
