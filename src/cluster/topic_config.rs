//! Topic configuration keys Riptide knows, their types, defaults and validation.
//!
//! Only keys set explicitly on a topic are stored; everything else is the broker default. Unknown
//! keys and malformed values are rejected with INVALID_CONFIG, as Kafka does.

use crate::config::BrokerConfig;
use std::collections::BTreeMap;

/// Explicitly set topic configs, by Kafka key.
pub type TopicConfigs = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ValueKind {
    /// A 32-bit integer in `min..=max`.
    Int { min: i32, max: i32 },
    /// A 64-bit integer in `min..=max`.
    Long { min: i64, max: i64 },
    /// A finite double in `min..=max`.
    Double { min: f64, max: f64 },
    /// `true` or `false`, any case.
    Bool,
    /// One of a fixed set of words (case-sensitive, as Kafka's).
    Choice(&'static [&'static str]),
    /// `delete`, `compact`, or both separated by a comma.
    CleanupPolicy,
    /// A comma-separated list (replication throttles: `partition:broker` pairs or `*`).
    List,
    /// Free text (kept for clients that still send it, e.g. `message.format.version`).
    Text,
}

impl ValueKind {
    /// Kafka's `ConfigType` as DescribeConfigs reports it.
    pub(crate) fn describe_type(self) -> i8 {
        match self {
            ValueKind::Bool => 1,
            ValueKind::Choice(_) | ValueKind::Text => 2,
            ValueKind::Int { .. } => 3,
            ValueKind::Long { .. } => 5,
            ValueKind::Double { .. } => 6,
            ValueKind::CleanupPolicy | ValueKind::List => 7,
        }
    }
}

pub(crate) const fn long_from(min: i64) -> ValueKind {
    ValueKind::Long { min, max: i64::MAX }
}

pub(crate) const fn int_from(min: i32) -> ValueKind {
    ValueKind::Int { min, max: i32::MAX }
}

struct KeySpec {
    name: &'static str,
    kind: ValueKind,
}

/// Every topic config Kafka 3.x has that a broker without tiered storage can honour, with
/// Kafka's types and ranges. Keys that tune Kafka's own file formats (`index.interval.bytes`,
/// `segment.index.bytes`, `preallocate`, `message.downconversion.enable`,
/// `message.format.version`) are accepted and reported so tools that set them work; Riptide's
/// segment index is sized by its own limits and it always preallocates.
const KEYS: &[KeySpec] = &[
    KeySpec {
        name: "cleanup.policy",
        kind: ValueKind::CleanupPolicy,
    },
    KeySpec {
        name: "compression.gzip.level",
        kind: ValueKind::Int { min: -1, max: 9 },
    },
    KeySpec {
        name: "compression.lz4.level",
        kind: ValueKind::Int { min: 1, max: 17 },
    },
    KeySpec {
        name: "compression.type",
        kind: ValueKind::Choice(&["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"]),
    },
    KeySpec {
        name: "compression.zstd.level",
        kind: ValueKind::Int {
            min: -131_072,
            max: 22,
        },
    },
    KeySpec {
        name: "delete.retention.ms",
        kind: long_from(0),
    },
    KeySpec {
        name: "file.delete.delay.ms",
        kind: long_from(0),
    },
    KeySpec {
        name: "flush.messages",
        kind: long_from(1),
    },
    KeySpec {
        name: "flush.ms",
        kind: long_from(0),
    },
    KeySpec {
        name: "follower.replication.throttled.replicas",
        kind: ValueKind::List,
    },
    KeySpec {
        name: "index.interval.bytes",
        kind: int_from(0),
    },
    KeySpec {
        name: "leader.replication.throttled.replicas",
        kind: ValueKind::List,
    },
    KeySpec {
        name: "local.retention.bytes",
        kind: long_from(-2),
    },
    KeySpec {
        name: "local.retention.ms",
        kind: long_from(-2),
    },
    KeySpec {
        name: "max.compaction.lag.ms",
        kind: long_from(1),
    },
    KeySpec {
        name: "max.message.bytes",
        kind: int_from(0),
    },
    KeySpec {
        name: "message.downconversion.enable",
        kind: ValueKind::Bool,
    },
    KeySpec {
        name: "message.format.version",
        kind: ValueKind::Text,
    },
    KeySpec {
        name: "message.timestamp.after.max.ms",
        kind: long_from(0),
    },
    KeySpec {
        name: "message.timestamp.before.max.ms",
        kind: long_from(0),
    },
    KeySpec {
        name: "message.timestamp.difference.max.ms",
        kind: long_from(0),
    },
    KeySpec {
        name: "message.timestamp.type",
        kind: ValueKind::Choice(&["CreateTime", "LogAppendTime"]),
    },
    KeySpec {
        name: "min.cleanable.dirty.ratio",
        kind: ValueKind::Double { min: 0.0, max: 1.0 },
    },
    KeySpec {
        name: "min.compaction.lag.ms",
        kind: long_from(0),
    },
    KeySpec {
        name: "min.insync.replicas",
        kind: int_from(1),
    },
    KeySpec {
        name: "preallocate",
        kind: ValueKind::Bool,
    },
    KeySpec {
        // No tiered storage: only `false` (Kafka refuses `true` on such a broker too).
        name: "remote.storage.enable",
        kind: ValueKind::Choice(&["false"]),
    },
    KeySpec {
        name: "retention.bytes",
        kind: long_from(i64::MIN),
    },
    KeySpec {
        name: "retention.ms",
        kind: long_from(-1),
    },
    KeySpec {
        name: "segment.bytes",
        kind: int_from(14),
    },
    KeySpec {
        name: "segment.index.bytes",
        kind: int_from(4),
    },
    KeySpec {
        name: "segment.jitter.ms",
        kind: long_from(0),
    },
    KeySpec {
        name: "segment.ms",
        kind: long_from(1),
    },
    KeySpec {
        name: "unclean.leader.election.enable",
        kind: ValueKind::Bool,
    },
];

/// Kafka's `ConfigType` of a topic config key, for DescribeConfigs.
pub fn describe_type(key: &str) -> Option<i8> {
    KEYS.iter()
        .find(|spec| spec.name == key)
        .map(|spec| spec.kind.describe_type())
}

/// Why a config was refused; becomes INVALID_CONFIG with this message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown topic config name: {0}")]
    UnknownKey(String),
    #[error("invalid value {value:?} for configuration {key}: {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: &'static str,
    },
}

/// The value kind of a topic config key.
pub(crate) fn kind_of(key: &str) -> Option<ValueKind> {
    KEYS.iter()
        .find(|spec| spec.name == key)
        .map(|spec| spec.kind)
}

/// Checks one key and value against the known set.
pub fn validate(key: &str, value: &str) -> Result<(), ConfigError> {
    let kind = kind_of(key).ok_or_else(|| ConfigError::UnknownKey(key.to_string()))?;
    validate_kind(key, value, kind)
}

/// Checks a value against a kind; `key` names it in the error.
pub(crate) fn validate_kind(key: &str, value: &str, kind: ValueKind) -> Result<(), ConfigError> {
    let invalid = |reason| ConfigError::InvalidValue {
        key: key.to_string(),
        value: value.to_string(),
        reason,
    };
    match kind {
        ValueKind::Int { min, max } => {
            let number: i32 = value.trim().parse().map_err(|_| invalid("not an int"))?;
            if !(min..=max).contains(&number) {
                return Err(invalid("out of range"));
            }
        }
        ValueKind::Long { min, max } => {
            let number: i64 = value.trim().parse().map_err(|_| invalid("not a long"))?;
            if !(min..=max).contains(&number) {
                return Err(invalid("out of range"));
            }
        }
        ValueKind::Double { min, max } => {
            let number: f64 = value.trim().parse().map_err(|_| invalid("not a double"))?;
            if !number.is_finite() || !(min..=max).contains(&number) {
                return Err(invalid("out of range"));
            }
        }
        ValueKind::Bool => {
            let word = value.trim();
            if !word.eq_ignore_ascii_case("true") && !word.eq_ignore_ascii_case("false") {
                return Err(invalid("must be true or false"));
            }
        }
        ValueKind::Choice(words) => {
            if !words.contains(&value.trim()) {
                return Err(invalid("not one of the allowed values"));
            }
        }
        ValueKind::List | ValueKind::Text => {}
        ValueKind::CleanupPolicy => {
            let ok = value
                .split(',')
                .map(str::trim)
                .all(|part| part == "delete" || part == "compact");
            if !ok || value.trim().is_empty() {
                return Err(invalid("must be delete, compact or compact,delete"));
            }
        }
    }
    Ok(())
}

/// DescribeConfigs' source of a value set on the topic.
pub const SOURCE_TOPIC: i8 = 1;

/// Every known key with its effective value and Kafka's source of it: the topic's own
/// ([`SOURCE_TOPIC`]), else a dynamic broker config, else the default.
pub fn effective_configs(
    configs: &TopicConfigs,
    broker: &BrokerConfig,
) -> Vec<(&'static str, String, i8)> {
    KEYS.iter()
        .map(|spec| match configs.get(spec.name) {
            Some(value) => (spec.name, value.clone(), SOURCE_TOPIC),
            None => match super::broker_config::topic_default_override(spec.name, broker) {
                Some((value, source)) => (spec.name, value.to_string(), source),
                None => (
                    spec.name,
                    static_default_value(spec.name, broker),
                    super::broker_config::SOURCE_DEFAULT,
                ),
            },
        })
        .collect()
}

/// The synonyms DescribeConfigs lists for topic config `key` (with `include_synonyms`), in
/// Kafka's order: the topic's own value, then the broker config that supplies its default
/// (per-broker dynamic, cluster-wide dynamic, the default). Each is (name, value, source).
pub fn synonyms(
    key: &'static str,
    configs: &TopicConfigs,
    broker: &BrokerConfig,
) -> Vec<(&'static str, String, i8)> {
    use super::broker_config::{
        SOURCE_DEFAULT, SOURCE_DYNAMIC_BROKER, SOURCE_DYNAMIC_DEFAULT_BROKER,
    };
    let mut list = Vec::new();
    if let Some(value) = configs.get(key) {
        list.push((key, value.clone(), SOURCE_TOPIC));
    }
    let Some(broker_key) = super::broker_config::broker_synonym(key) else {
        list.push((key, static_default_value(key, broker), SOURCE_DEFAULT));
        return list;
    };
    if let Some(value) = broker.dynamic.node.get(broker_key) {
        list.push((broker_key, value.clone(), SOURCE_DYNAMIC_BROKER));
    }
    if let Some(value) = broker.dynamic.default.get(broker_key) {
        list.push((broker_key, value.clone(), SOURCE_DYNAMIC_DEFAULT_BROKER));
    }
    list.push((
        broker_key,
        static_default_value(key, broker),
        SOURCE_DEFAULT,
    ));
    list
}

/// Broker-wide default of a topic config: a dynamic broker config for it if one is set (see
/// [`super::broker_config`]), else [`static_default_value`].
pub fn default_value(key: &str, broker: &BrokerConfig) -> String {
    match super::broker_config::topic_default_override(key, broker) {
        Some((value, _)) => value.to_string(),
        None => static_default_value(key, broker),
    }
}

/// Broker-wide default of a topic config from the static config (Kafka's defaults where
/// Riptide has no own setting).
pub fn static_default_value(key: &str, broker: &BrokerConfig) -> String {
    match key {
        "cleanup.policy" => "delete".into(),
        "compression.gzip.level" => "-1".into(),
        "compression.lz4.level" => "9".into(),
        "compression.type" => "producer".into(),
        "compression.zstd.level" => "3".into(),
        "delete.retention.ms" => "86400000".into(),
        "file.delete.delay.ms" => "60000".into(),
        "flush.messages" => i64::MAX.to_string(),
        "flush.ms" => i64::MAX.to_string(),
        "follower.replication.throttled.replicas" => String::new(),
        "index.interval.bytes" => "4096".into(),
        "leader.replication.throttled.replicas" => String::new(),
        "local.retention.bytes" => "-2".into(),
        "local.retention.ms" => "-2".into(),
        "max.compaction.lag.ms" => i64::MAX.to_string(),
        "max.message.bytes" => broker.max_message_bytes.to_string(),
        "message.downconversion.enable" => "true".into(),
        "message.format.version" => "3.0-IV1".into(),
        "message.timestamp.after.max.ms" => i64::MAX.to_string(),
        "message.timestamp.before.max.ms" => i64::MAX.to_string(),
        "message.timestamp.difference.max.ms" => i64::MAX.to_string(),
        "message.timestamp.type" => "CreateTime".into(),
        "min.cleanable.dirty.ratio" => "0.5".into(),
        "min.compaction.lag.ms" => "0".into(),
        "min.insync.replicas" => broker.min_insync_replicas.to_string(),
        "preallocate" => "false".into(),
        "remote.storage.enable" => "false".into(),
        "retention.bytes" => "-1".into(),
        "retention.ms" => "604800000".into(),
        "segment.bytes" => broker.segment_bytes.to_string(),
        "segment.index.bytes" => "10485760".into(),
        "segment.jitter.ms" => "0".into(),
        "segment.ms" => "604800000".into(),
        "unclean.leader.election.enable" => broker.unclean_leader_election_enable.to_string(),
        _ => String::new(),
    }
}

/// The effective value of a numeric key, for code that acts on it.
pub fn effective_long(configs: &TopicConfigs, broker: &BrokerConfig, key: &str) -> i64 {
    configs
        .get(key)
        .cloned()
        .unwrap_or_else(|| default_value(key, broker))
        .trim()
        .parse()
        .unwrap_or(i64::MAX)
}

/// The effective value of a boolean key.
pub fn effective_bool(configs: &TopicConfigs, broker: &BrokerConfig, key: &str) -> bool {
    configs
        .get(key)
        .cloned()
        .unwrap_or_else(|| default_value(key, broker))
        .trim()
        .eq_ignore_ascii_case("true")
}

/// Bounds on a CreateTime record's timestamp relative to the broker's clock: (how far in the
/// past, how far in the future), in ms. The deprecated `message.timestamp.difference.max.ms`
/// applies to a side whose own key is not set (KIP-937).
pub fn timestamp_bounds_ms(configs: &TopicConfigs, broker: &BrokerConfig) -> (i64, i64) {
    // All three default to unbounded; parsed without allocating (the produce path asks).
    // The topic's keys first, then the dynamic broker defaults (`log.message.timestamp.*`).
    let explicit = |key: &str| configs.get(key).and_then(|v| v.trim().parse::<i64>().ok());
    let dynamic = |key: &str| {
        super::broker_config::topic_default_override(key, broker)
            .and_then(|(value, _)| value.trim().parse::<i64>().ok())
    };
    let side = |key: &str| {
        explicit(key)
            .or_else(|| explicit("message.timestamp.difference.max.ms"))
            .or_else(|| dynamic(key))
            .or_else(|| dynamic("message.timestamp.difference.max.ms"))
            .unwrap_or(i64::MAX)
    };
    (
        side("message.timestamp.before.max.ms"),
        side("message.timestamp.after.max.ms"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_known_keys_and_values() {
        assert!(validate("retention.ms", "1000").is_ok());
        assert!(validate("retention.ms", "-1").is_ok());
        assert!(validate("retention.ms", "-2").is_err());
        assert!(validate("retention.ms", "soon").is_err());
        assert!(validate("cleanup.policy", "compact,delete").is_ok());
        assert!(validate("cleanup.policy", "shred").is_err());
        assert_eq!(
            validate("no.such.key", "1"),
            Err(ConfigError::UnknownKey("no.such.key".into()))
        );
    }

    /// Every key: its default is valid, and a value Kafka refuses is refused.
    #[test]
    fn every_key_accepts_its_default_and_refuses_what_kafka_refuses() {
        let broker = BrokerConfig::default();
        for spec in KEYS {
            let default = default_value(spec.name, &broker);
            assert_eq!(
                validate(spec.name, &default),
                Ok(()),
                "default of {}",
                spec.name
            );
            let refused: &[&str] = match spec.kind {
                ValueKind::Int { min, max } => &[
                    "x",
                    "1.5",
                    &*Box::leak(format!("{}", i64::from(min) - 1).into_boxed_str()),
                    &*Box::leak(format!("{}", i64::from(max) + 1).into_boxed_str()),
                ],
                ValueKind::Long { min, .. } if min > i64::MIN => {
                    &["x", &*Box::leak(format!("{}", min - 1).into_boxed_str())]
                }
                ValueKind::Long { .. } => &["x", "9223372036854775808"],
                ValueKind::Double { .. } => &["x", "-0.1", "1.01", "NaN"],
                ValueKind::Bool => &["yes", "1"],
                ValueKind::Choice(_) => &["no-such-word"],
                ValueKind::CleanupPolicy => &["shred", ""],
                ValueKind::List | ValueKind::Text => &[],
            };
            for value in refused {
                assert!(
                    validate(spec.name, value).is_err(),
                    "{} = {value:?}",
                    spec.name
                );
            }
            assert!(describe_type(spec.name).is_some());
        }
        assert!(
            KEYS.windows(2).all(|w| w[0].name < w[1].name),
            "sorted, no duplicates"
        );
    }

    #[test]
    fn kafka_ranges_that_were_refused_before() {
        for ratio in ["0", "0.01", "0.5", "1", "1.0"] {
            assert!(
                validate("min.cleanable.dirty.ratio", ratio).is_ok(),
                "{ratio}"
            );
        }
        assert!(validate("unclean.leader.election.enable", "TRUE").is_ok());
        assert!(
            validate("max.message.bytes", "2147483648").is_err(),
            "an int"
        );
        assert!(validate("retention.bytes", "-5").is_ok(), "any long");
        assert!(validate("remote.storage.enable", "true").is_err());
    }

    #[test]
    fn timestamp_bounds_fall_back_to_the_deprecated_difference() {
        let broker = BrokerConfig::default();
        let mut configs = TopicConfigs::new();
        assert_eq!(timestamp_bounds_ms(&configs, &broker), (i64::MAX, i64::MAX));
        configs.insert("message.timestamp.difference.max.ms".into(), "1000".into());
        assert_eq!(timestamp_bounds_ms(&configs, &broker), (1000, 1000));
        configs.insert("message.timestamp.after.max.ms".into(), "10".into());
        assert_eq!(timestamp_bounds_ms(&configs, &broker), (1000, 10));
    }

    #[test]
    fn effective_values_fall_back_to_broker_defaults() {
        let broker = BrokerConfig::default();
        let mut configs = TopicConfigs::new();
        configs.insert("retention.ms".into(), "5".into());
        let effective = effective_configs(&configs, &broker);
        let retention = effective
            .iter()
            .find(|(k, _, _)| *k == "retention.ms")
            .unwrap();
        assert_eq!((retention.1.as_str(), retention.2), ("5", SOURCE_TOPIC));
        let segment = effective
            .iter()
            .find(|(k, _, _)| *k == "segment.bytes")
            .unwrap();
        assert_eq!(segment.1, broker.segment_bytes.to_string());
        assert_eq!(segment.2, super::super::broker_config::SOURCE_DEFAULT);
        assert_eq!(
            effective_long(&configs, &broker, "max.message.bytes"),
            broker.max_message_bytes as i64
        );
    }

    #[test]
    fn dynamic_broker_defaults_fill_in_for_topics_without_their_own() {
        use super::super::broker_config::{SOURCE_DEFAULT, SOURCE_DYNAMIC_DEFAULT_BROKER};
        let mut broker = BrokerConfig::default();
        broker
            .dynamic
            .default
            .insert("log.message.timestamp.after.max.ms".into(), "5000".into());
        broker
            .dynamic
            .default
            .insert("log.retention.ms".into(), "1000".into());
        let mut configs = TopicConfigs::new();
        assert_eq!(timestamp_bounds_ms(&configs, &broker), (i64::MAX, 5000));
        // The topic's own deprecated key still wins over a broker default.
        configs.insert("message.timestamp.difference.max.ms".into(), "7".into());
        assert_eq!(timestamp_bounds_ms(&configs, &broker), (7, 7));
        assert_eq!(effective_long(&configs, &broker, "retention.ms"), 1000);
        assert_eq!(
            synonyms("retention.ms", &configs, &broker),
            vec![
                (
                    "log.retention.ms",
                    "1000".to_string(),
                    SOURCE_DYNAMIC_DEFAULT_BROKER
                ),
                ("log.retention.ms", "604800000".to_string(), SOURCE_DEFAULT),
            ]
        );
        configs.insert("retention.ms".into(), "5".into());
        assert_eq!(effective_long(&configs, &broker, "retention.ms"), 5);
        assert_eq!(
            synonyms("retention.ms", &configs, &broker)[0].2,
            SOURCE_TOPIC
        );
    }
}
