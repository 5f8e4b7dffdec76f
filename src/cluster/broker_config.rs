//! Dynamic broker configs, as Kafka has them: values set through AlterConfigs /
//! IncrementalAlterConfigs on a `BROKER` resource, either for one broker (its id as the name,
//! Kafka's DYNAMIC_BROKER_CONFIG) or for every broker (the empty name, Kafka's
//! DYNAMIC_DEFAULT_BROKER_CONFIG). They live in the replicated metadata log
//! ([`super::records::MetadataRecord::SetBrokerConfig`]), so they survive restarts and reach
//! every node; each shard overlays the ones for its node onto its static config
//! ([`live_config`]). Precedence, as in Kafka: per-broker dynamic, cluster-wide dynamic, static
//! (the config file and flags), built-in default.
//!
//! Only the keys Kafka updates dynamically are accepted. The `log.*`-style synonyms of topic
//! configs change the default of every topic that does not set the key itself; the others are
//! stored and described for tools that set them but change nothing in Riptide (see
//! [`KEYS`]'s `applied`).

use super::controller::{ConfigChange, ConfigOp};
use super::topic_config::{self, int_from, long_from, ValueKind};
use crate::config::BrokerConfig;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Kafka's DescribeConfigs config sources.
pub const SOURCE_DYNAMIC_BROKER: i8 = 2;
pub const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
pub const SOURCE_STATIC_BROKER: i8 = 4;
pub const SOURCE_DEFAULT: i8 = 5;

/// Dynamic configs of one scope, by Kafka key.
pub type ConfigMap = BTreeMap<String, String>;

/// Every dynamic broker config of the cluster (part of the metadata image).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BrokerConfigStore {
    /// The cluster-wide defaults (resource name "").
    #[serde(default)]
    pub default: ConfigMap,
    /// Per-broker values, by broker id.
    #[serde(default)]
    pub per_broker: BTreeMap<i32, ConfigMap>,
}

impl BrokerConfigStore {
    /// The configs of one scope: `None` is the cluster-wide default.
    pub fn scope(&self, node_id: Option<i32>) -> Option<&ConfigMap> {
        match node_id {
            None => Some(&self.default),
            Some(id) => self.per_broker.get(&id),
        }
    }

    /// Sets (`Some`) or removes (`None`) one value.
    pub fn set(&mut self, node_id: Option<i32>, key: &str, value: Option<&str>) {
        let map = match node_id {
            None => &mut self.default,
            Some(id) => self.per_broker.entry(id).or_default(),
        };
        match value {
            Some(value) => {
                map.insert(key.to_string(), value.to_string());
            }
            None => {
                map.remove(key);
            }
        }
        if let Some(id) = node_id {
            if self.per_broker.get(&id).is_some_and(BTreeMap::is_empty) {
                self.per_broker.remove(&id);
            }
        }
    }

    /// What one node runs with.
    pub fn for_node(&self, node_id: i32) -> DynamicConfigs {
        DynamicConfigs {
            node: self.per_broker.get(&node_id).cloned().unwrap_or_default(),
            default: self.default.clone(),
        }
    }
}

/// The dynamic configs one node runs with (a field of its live [`BrokerConfig`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DynamicConfigs {
    /// This broker's own values (DYNAMIC_BROKER_CONFIG).
    pub node: ConfigMap,
    /// The cluster-wide defaults (DYNAMIC_DEFAULT_BROKER_CONFIG).
    pub default: ConfigMap,
}

impl DynamicConfigs {
    /// The value in effect for `key` and its source, if one is set dynamically.
    pub fn get(&self, key: &str) -> Option<(&str, i8)> {
        self.node
            .get(key)
            .map(|value| (value.as_str(), SOURCE_DYNAMIC_BROKER))
            .or_else(|| {
                self.default
                    .get(key)
                    .map(|value| (value.as_str(), SOURCE_DYNAMIC_DEFAULT_BROKER))
            })
    }
}

/// Where a key may be set.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scope {
    /// Per broker or cluster-wide.
    Any,
    /// Only per broker (Kafka refuses these at the cluster-wide default).
    PerBroker,
}

/// What one dynamic key is.
struct KeySpec {
    name: &'static str,
    kind: ValueKind,
    scope: Scope,
    /// The topic config it is the broker-wide default of (Kafka's synonyms).
    topic_key: Option<&'static str>,
    /// Whether Riptide acts on it (else stored and described only).
    applied: bool,
    /// Kafka's default, for keys Riptide has no static setting of.
    kafka_default: &'static str,
}

const fn topic_default(name: &'static str, topic_key: &'static str, applied: bool) -> KeySpec {
    KeySpec {
        name,
        // Replaced by the topic key's kind on lookup.
        kind: ValueKind::Text,
        scope: Scope::Any,
        topic_key: Some(topic_key),
        applied,
        kafka_default: "",
    }
}

const fn stored(
    name: &'static str,
    kind: ValueKind,
    scope: Scope,
    default: &'static str,
) -> KeySpec {
    KeySpec {
        name,
        kind,
        scope,
        topic_key: None,
        applied: false,
        kafka_default: default,
    }
}

/// Every broker config Riptide accepts dynamically: Kafka's dynamic broker configs (3.x)
/// except the listener and SSL keystore ones (Riptide's listeners and certificates come from
/// its static config; certificates are reloaded when their files change) and the plugin
/// classes (`metric.reporters`).
const KEYS: &[KeySpec] = &[
    stored("background.threads", int_from(1), Scope::Any, "10"),
    topic_default("compression.type", "compression.type", false),
    stored(
        "follower.replication.throttled.rate",
        long_from(0),
        Scope::PerBroker,
        "9223372036854775807",
    ),
    stored(
        "leader.replication.throttled.rate",
        long_from(0),
        Scope::PerBroker,
        "9223372036854775807",
    ),
    stored("log.cleaner.backoff.ms", long_from(0), Scope::Any, "15000"),
    stored(
        "log.cleaner.dedupe.buffer.size",
        long_from(0),
        Scope::Any,
        "134217728",
    ),
    topic_default(
        "log.cleaner.delete.retention.ms",
        "delete.retention.ms",
        true,
    ),
    stored(
        "log.cleaner.io.buffer.load.factor",
        ValueKind::Double { min: 0.0, max: 1.0 },
        Scope::Any,
        "0.9",
    ),
    stored(
        "log.cleaner.io.buffer.size",
        int_from(0),
        Scope::Any,
        "524288",
    ),
    stored(
        "log.cleaner.io.max.bytes.per.second",
        ValueKind::Double {
            min: 0.0,
            max: f64::MAX,
        },
        Scope::Any,
        "1.7976931348623157E308",
    ),
    topic_default(
        "log.cleaner.max.compaction.lag.ms",
        "max.compaction.lag.ms",
        true,
    ),
    topic_default(
        "log.cleaner.min.cleanable.ratio",
        "min.cleanable.dirty.ratio",
        true,
    ),
    topic_default(
        "log.cleaner.min.compaction.lag.ms",
        "min.compaction.lag.ms",
        true,
    ),
    stored("log.cleaner.threads", int_from(0), Scope::Any, "1"),
    topic_default("log.cleanup.policy", "cleanup.policy", true),
    topic_default("log.flush.interval.messages", "flush.messages", true),
    topic_default("log.flush.interval.ms", "flush.ms", true),
    topic_default("log.index.interval.bytes", "index.interval.bytes", false),
    topic_default("log.index.size.max.bytes", "segment.index.bytes", false),
    topic_default(
        "log.message.downconversion.enable",
        "message.downconversion.enable",
        false,
    ),
    topic_default(
        "log.message.timestamp.after.max.ms",
        "message.timestamp.after.max.ms",
        true,
    ),
    topic_default(
        "log.message.timestamp.before.max.ms",
        "message.timestamp.before.max.ms",
        true,
    ),
    topic_default(
        "log.message.timestamp.difference.max.ms",
        "message.timestamp.difference.max.ms",
        true,
    ),
    topic_default("log.message.timestamp.type", "message.timestamp.type", true),
    topic_default("log.preallocate", "preallocate", false),
    topic_default("log.retention.bytes", "retention.bytes", true),
    topic_default("log.retention.ms", "retention.ms", true),
    topic_default("log.roll.jitter.ms", "segment.jitter.ms", false),
    topic_default("log.roll.ms", "segment.ms", true),
    topic_default("log.segment.bytes", "segment.bytes", true),
    topic_default("log.segment.delete.delay.ms", "file.delete.delay.ms", false),
    stored(
        "max.connection.creation.rate",
        int_from(0),
        Scope::Any,
        "2147483647",
    ),
    stored("max.connections", int_from(0), Scope::Any, "2147483647"),
    stored(
        "max.connections.per.ip",
        int_from(0),
        Scope::Any,
        "2147483647",
    ),
    stored(
        "max.connections.per.ip.overrides",
        ValueKind::Text,
        Scope::Any,
        "",
    ),
    topic_default("message.max.bytes", "max.message.bytes", true),
    topic_default("min.insync.replicas", "min.insync.replicas", true),
    stored("num.io.threads", int_from(1), Scope::Any, "8"),
    stored("num.network.threads", int_from(1), Scope::Any, "3"),
    stored(
        "num.recovery.threads.per.data.dir",
        int_from(1),
        Scope::Any,
        "1",
    ),
    stored("num.replica.fetchers", int_from(1), Scope::Any, "1"),
    stored(
        "replica.alter.log.dirs.io.max.bytes.per.second",
        long_from(0),
        Scope::PerBroker,
        "9223372036854775807",
    ),
    stored(
        "sasl.kerberos.kinit.cmd",
        ValueKind::Text,
        Scope::PerBroker,
        "/usr/bin/kinit",
    ),
    stored(
        "sasl.kerberos.min.time.before.relogin",
        long_from(i64::MIN),
        Scope::PerBroker,
        "60000",
    ),
    stored(
        "sasl.kerberos.principal.to.local.rules",
        ValueKind::List,
        Scope::PerBroker,
        "DEFAULT",
    ),
    stored(
        "sasl.kerberos.service.name",
        ValueKind::Text,
        Scope::PerBroker,
        "",
    ),
    stored(
        "sasl.kerberos.ticket.renew.jitter",
        ValueKind::Double {
            min: f64::MIN,
            max: f64::MAX,
        },
        Scope::PerBroker,
        "0.05",
    ),
    stored(
        "sasl.kerberos.ticket.renew.window.factor",
        ValueKind::Double {
            min: f64::MIN,
            max: f64::MAX,
        },
        Scope::PerBroker,
        "0.8",
    ),
    topic_default(
        "unclean.leader.election.enable",
        "unclean.leader.election.enable",
        true,
    ),
];

fn spec(key: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|spec| spec.name == key)
}

fn kind(spec: &KeySpec) -> ValueKind {
    spec.topic_key
        .and_then(topic_config::kind_of)
        .unwrap_or(spec.kind)
}

/// Whether `key` may be set dynamically.
pub fn is_dynamic(key: &str) -> bool {
    spec(key).is_some()
}

/// Whether a dynamic value of `key` changes what Riptide does (else it is only stored).
pub fn is_applied(key: &str) -> bool {
    spec(key).is_some_and(|spec| spec.applied)
}

/// The broker config that supplies the default of topic config `topic_key`.
pub fn broker_synonym(topic_key: &str) -> Option<&'static str> {
    KEYS.iter()
        .find(|spec| spec.topic_key == Some(topic_key))
        .map(|spec| spec.name)
}

/// The dynamic value, and its source, that supplies the default of topic config `topic_key`
/// on a broker running with `broker`.
pub fn topic_default_override<'a>(
    topic_key: &str,
    broker: &'a BrokerConfig,
) -> Option<(&'a str, i8)> {
    broker.dynamic.get(broker_synonym(topic_key)?)
}

/// Kafka's config type of a dynamic key, for DescribeConfigs.
pub fn describe_type(key: &str) -> Option<i8> {
    spec(key).map(|spec| kind(spec).describe_type())
}

/// The value of a dynamic key without any dynamic setting, and its source: the static config
/// where Riptide has a setting for it and it differs from the built-in default, else the
/// default (Riptide's where it has one, Kafka's otherwise).
pub fn static_value(key: &str, broker: &BrokerConfig) -> Option<(String, i8)> {
    let spec = spec(key)?;
    Some(match spec.topic_key {
        Some(topic_key) => {
            let value = topic_config::static_default_value(topic_key, broker);
            let default = topic_config::static_default_value(topic_key, &BrokerConfig::default());
            let source = if value != default {
                SOURCE_STATIC_BROKER
            } else {
                SOURCE_DEFAULT
            };
            (value, source)
        }
        None => (spec.kafka_default.to_string(), SOURCE_DEFAULT),
    })
}

/// Why a dynamic change was refused. Kafka answers every one with INVALID_REQUEST (its
/// ConfigAdminManager turns the validator's ConfigException into it; KAFKA-13609), except
/// APPEND/SUBTRACT on a non-list key (INVALID_CONFIG).
#[derive(Debug, Clone, PartialEq)]
pub enum ChangeError {
    InvalidRequest(String),
    InvalidConfig(String),
}

/// Applies `changes` to `current` (a scope's configs; `node_id` `None` is the cluster-wide
/// default) as Kafka does: the changes apply in order, then the result is validated as a whole.
/// `replace_all` (the legacy AlterConfigs) starts from nothing.
pub fn apply_changes(
    current: &ConfigMap,
    node_id: Option<i32>,
    changes: &[ConfigChange],
    replace_all: bool,
) -> Result<ConfigMap, ChangeError> {
    let mut configs = if replace_all {
        ConfigMap::new()
    } else {
        current.clone()
    };
    for change in changes {
        match change.op {
            ConfigOp::Set => match &change.value {
                Some(value) => {
                    configs.insert(change.key.clone(), value.clone());
                }
                None => {
                    return Err(ChangeError::InvalidRequest(format!(
                        "no value given for {}",
                        change.key
                    )))
                }
            },
            ConfigOp::Delete => {
                configs.remove(&change.key);
            }
            ConfigOp::Append | ConfigOp::Subtract => {
                let is_list = spec(&change.key).is_some_and(|spec| {
                    matches!(kind(spec), ValueKind::List | ValueKind::CleanupPolicy)
                });
                if !is_list {
                    let verb = if change.op == ConfigOp::Append {
                        "append"
                    } else {
                        "subtract"
                    };
                    return Err(ChangeError::InvalidConfig(format!(
                        "Config value {verb} is not allowed for config key: {}",
                        change.key
                    )));
                }
                let mut items: Vec<String> = configs
                    .get(&change.key)
                    .map(|value| {
                        value
                            .split(',')
                            .map(|s| s.trim().to_string())
                            .filter(|s| !s.is_empty())
                            .collect()
                    })
                    .unwrap_or_default();
                let given = change.value.clone().unwrap_or_default();
                for item in given.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if change.op == ConfigOp::Append {
                        if !items.iter().any(|i| i == item) {
                            items.push(item.to_string());
                        }
                    } else {
                        items.retain(|i| i != item);
                    }
                }
                if items.is_empty() {
                    configs.remove(&change.key);
                } else {
                    configs.insert(change.key.clone(), items.join(","));
                }
            }
        }
    }
    validate(&configs, node_id)?;
    Ok(configs)
}

/// Kafka's checks of a scope's dynamic configs, in its order: keys that are not dynamic, keys
/// only a broker may set at the cluster-wide default, then each value.
fn validate(configs: &ConfigMap, node_id: Option<i32>) -> Result<(), ChangeError> {
    let not_dynamic: BTreeSet<&str> = configs
        .keys()
        .map(String::as_str)
        .filter(|key| !is_dynamic(key))
        .collect();
    if !not_dynamic.is_empty() {
        return Err(ChangeError::InvalidRequest(format!(
            "Cannot update these configs dynamically: {}",
            scala_set(&not_dynamic)
        )));
    }
    if node_id.is_none() {
        let per_broker: BTreeSet<&str> = configs
            .keys()
            .map(String::as_str)
            .filter(|key| spec(key).is_some_and(|spec| spec.scope == Scope::PerBroker))
            .collect();
        if !per_broker.is_empty() {
            return Err(ChangeError::InvalidRequest(format!(
                "Cannot update these configs at default cluster level, broker id must be specified: {}",
                scala_set(&per_broker)
            )));
        }
    }
    for (key, value) in configs {
        let spec = spec(key).expect("checked above");
        topic_config::validate_kind(key, value, kind(spec))
            .map_err(|error| ChangeError::InvalidRequest(error.to_string()))?;
    }
    Ok(())
}

/// Kafka's messages print key sets the Scala way.
fn scala_set(keys: &BTreeSet<&str>) -> String {
    format!(
        "Set({})",
        keys.iter().copied().collect::<Vec<_>>().join(", ")
    )
}

/// The config a node runs with: its static config with the dynamic values for it overlaid.
pub fn live_config(static_config: &BrokerConfig, store: &BrokerConfigStore) -> BrokerConfig {
    BrokerConfig {
        dynamic: store.for_node(static_config.node_id),
        ..static_config.clone()
    }
}

/// One entry of a broker's DescribeConfigs: its value and source, and the synonyms in Kafka's
/// order (per-broker dynamic, cluster-wide dynamic, static, default).
#[derive(Debug, Clone, PartialEq)]
pub struct Described {
    pub name: &'static str,
    pub value: String,
    pub source: i8,
    pub synonyms: Vec<(String, i8)>,
}

/// Every dynamic key as broker `node_id` sees it (`None`: the cluster-wide default resource,
/// which shows only the keys set there, as Kafka does).
pub fn describe_dynamic(
    static_config: &BrokerConfig,
    store: &BrokerConfigStore,
    node_id: Option<i32>,
) -> Vec<Described> {
    let empty = ConfigMap::new();
    let own = match node_id {
        Some(id) => store.per_broker.get(&id).unwrap_or(&empty),
        None => &empty,
    };
    KEYS.iter()
        .filter(|spec| node_id.is_some() || store.default.contains_key(spec.name))
        .map(|spec| {
            let mut synonyms = Vec::new();
            if let Some(value) = own.get(spec.name) {
                synonyms.push((value.clone(), SOURCE_DYNAMIC_BROKER));
            }
            if let Some(value) = store.default.get(spec.name) {
                synonyms.push((value.clone(), SOURCE_DYNAMIC_DEFAULT_BROKER));
            }
            if node_id.is_some() {
                let (value, source) = static_value(spec.name, static_config).expect("a key");
                synonyms.push((value, source));
                if source == SOURCE_STATIC_BROKER {
                    let defaults = BrokerConfig::default();
                    let (default, _) = static_value(spec.name, &defaults).expect("a key");
                    synonyms.push((default, SOURCE_DEFAULT));
                }
            }
            let (value, source) = synonyms[0].clone();
            Described {
                name: spec.name,
                value,
                source,
                synonyms,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, value: &str) -> ConfigChange {
        ConfigChange {
            key: key.into(),
            op: ConfigOp::Set,
            value: Some(value.into()),
        }
    }

    #[test]
    fn every_key_is_sorted_and_its_default_is_valid() {
        assert!(
            KEYS.windows(2).all(|w| w[0].name < w[1].name),
            "sorted, unique"
        );
        let broker = BrokerConfig::default();
        for spec in KEYS {
            let (value, _) = static_value(spec.name, &broker).unwrap();
            if let Some(topic_key) = spec.topic_key {
                assert!(topic_config::kind_of(topic_key).is_some(), "{}", spec.name);
            }
            let node_id = if spec.scope == Scope::PerBroker {
                Some(1)
            } else {
                None
            };
            let configs = ConfigMap::from([(spec.name.to_string(), value.clone())]);
            assert_eq!(
                validate(&configs, node_id),
                Ok(()),
                "{} = {value}",
                spec.name
            );
        }
    }

    #[test]
    fn refuses_what_kafka_refuses_with_its_messages() {
        let empty = ConfigMap::new();
        let refused = apply_changes(
            &empty,
            Some(1),
            &[set("log.dirs", "/x"), set("broker.id", "2")],
            false,
        );
        assert_eq!(
            refused,
            Err(ChangeError::InvalidRequest(
                "Cannot update these configs dynamically: Set(broker.id, log.dirs)".into()
            ))
        );
        let refused = apply_changes(
            &empty,
            None,
            &[set("sasl.kerberos.min.time.before.relogin", "1")],
            false,
        );
        assert!(
            matches!(refused, Err(ChangeError::InvalidRequest(ref m)) if m.contains("default cluster level")),
            "{refused:?}"
        );
        let refused = apply_changes(&empty, None, &[set("log.retention.ms", "soon")], false);
        assert!(
            matches!(refused, Err(ChangeError::InvalidRequest(ref m)) if m.contains("log.retention.ms")),
            "{refused:?}"
        );
        let refused = apply_changes(
            &empty,
            None,
            &[ConfigChange {
                key: "log.retention.ms".into(),
                op: ConfigOp::Append,
                value: Some("1".into()),
            }],
            false,
        );
        assert!(
            matches!(refused, Err(ChangeError::InvalidConfig(_))),
            "{refused:?}"
        );
    }

    #[test]
    fn changes_apply_in_order_and_legacy_alter_replaces_the_scope() {
        let current = ConfigMap::from([("log.retention.ms".to_string(), "1000".to_string())]);
        let changed = apply_changes(
            &current,
            Some(1),
            &[
                set("message.max.bytes", "2048"),
                ConfigChange {
                    key: "log.retention.ms".into(),
                    op: ConfigOp::Delete,
                    value: None,
                },
                ConfigChange {
                    key: "log.cleanup.policy".into(),
                    op: ConfigOp::Append,
                    value: Some("compact".into()),
                },
            ],
            false,
        )
        .unwrap();
        assert_eq!(
            changed,
            ConfigMap::from([
                ("log.cleanup.policy".to_string(), "compact".to_string()),
                ("message.max.bytes".to_string(), "2048".to_string()),
            ])
        );
        let replaced =
            apply_changes(&current, Some(1), &[set("num.io.threads", "4")], true).unwrap();
        assert_eq!(
            replaced,
            ConfigMap::from([("num.io.threads".to_string(), "4".to_string())])
        );
    }

    #[test]
    fn per_broker_wins_over_default_over_static() {
        let mut store = BrokerConfigStore::default();
        let broker = BrokerConfig {
            node_id: 1,
            segment_bytes: 64 * 1024 * 1024,
            ..BrokerConfig::default()
        };
        let retention = |store: &BrokerConfigStore| {
            let live = live_config(&broker, store);
            (
                topic_config::default_value("retention.ms", &live),
                topic_default_override("retention.ms", &live).map(|(_, source)| source),
            )
        };
        assert_eq!(retention(&store), ("604800000".to_string(), None));
        store.set(None, "log.retention.ms", Some("5000"));
        assert_eq!(
            retention(&store),
            ("5000".to_string(), Some(SOURCE_DYNAMIC_DEFAULT_BROKER))
        );
        store.set(Some(1), "log.retention.ms", Some("7000"));
        assert_eq!(
            retention(&store),
            ("7000".to_string(), Some(SOURCE_DYNAMIC_BROKER))
        );
        // Another broker's value is not this one's.
        store.set(Some(2), "log.retention.ms", Some("9000"));
        assert_eq!(retention(&store).0, "7000");

        let described = describe_dynamic(&broker, &store, Some(1));
        let entry = described
            .iter()
            .find(|d| d.name == "log.retention.ms")
            .unwrap();
        assert_eq!(
            (entry.value.as_str(), entry.source),
            ("7000", SOURCE_DYNAMIC_BROKER)
        );
        assert_eq!(
            entry.synonyms,
            vec![
                ("7000".to_string(), SOURCE_DYNAMIC_BROKER),
                ("5000".to_string(), SOURCE_DYNAMIC_DEFAULT_BROKER),
                ("604800000".to_string(), SOURCE_DEFAULT),
            ]
        );
        let segment = described
            .iter()
            .find(|d| d.name == "log.segment.bytes")
            .unwrap();
        assert_eq!(segment.source, SOURCE_STATIC_BROKER);
        assert_eq!(segment.synonyms.last().unwrap().1, SOURCE_DEFAULT);
        // The default resource lists only what is set there.
        let defaults = describe_dynamic(&broker, &store, None);
        assert_eq!(defaults.len(), 1);
        assert_eq!(defaults[0].source, SOURCE_DYNAMIC_DEFAULT_BROKER);

        store.set(Some(1), "log.retention.ms", None);
        store.set(Some(2), "log.retention.ms", None);
        assert!(store.per_broker.is_empty(), "empty scopes are dropped");
    }
}
