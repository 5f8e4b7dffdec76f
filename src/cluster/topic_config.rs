//! Topic configuration keys Riptide knows, their types, defaults and validation.
//!
//! Only keys set explicitly on a topic are stored; everything else is the broker default. Unknown
//! keys and malformed values are rejected with INVALID_CONFIG, as Kafka does.

use crate::config::BrokerConfig;
use std::collections::BTreeMap;

/// Explicitly set topic configs, by Kafka key.
pub type TopicConfigs = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq)]
enum ValueKind {
    /// A 64-bit integer at or above the minimum.
    Long { min: i64 },
    /// One of a fixed set of words.
    Choice(&'static [&'static str]),
    /// `delete`, `compact`, or both separated by a comma.
    CleanupPolicy,
}

struct KeySpec {
    name: &'static str,
    kind: ValueKind,
}

const KEYS: &[KeySpec] = &[
    KeySpec {
        name: "cleanup.policy",
        kind: ValueKind::CleanupPolicy,
    },
    KeySpec {
        name: "compression.type",
        kind: ValueKind::Choice(&["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"]),
    },
    KeySpec {
        name: "delete.retention.ms",
        kind: ValueKind::Long { min: 0 },
    },
    KeySpec {
        name: "file.delete.delay.ms",
        kind: ValueKind::Long { min: 0 },
    },
    KeySpec {
        name: "flush.messages",
        kind: ValueKind::Long { min: 1 },
    },
    KeySpec {
        name: "flush.ms",
        kind: ValueKind::Long { min: 0 },
    },
    KeySpec {
        name: "max.compaction.lag.ms",
        kind: ValueKind::Long { min: 1 },
    },
    KeySpec {
        name: "max.message.bytes",
        kind: ValueKind::Long { min: 0 },
    },
    KeySpec {
        name: "message.timestamp.type",
        kind: ValueKind::Choice(&["CreateTime", "LogAppendTime"]),
    },
    KeySpec {
        name: "min.cleanable.dirty.ratio",
        kind: ValueKind::Choice(&["0.5"]),
    },
    KeySpec {
        name: "min.compaction.lag.ms",
        kind: ValueKind::Long { min: 0 },
    },
    KeySpec {
        name: "min.insync.replicas",
        kind: ValueKind::Long { min: 1 },
    },
    KeySpec {
        name: "retention.bytes",
        kind: ValueKind::Long { min: -1 },
    },
    KeySpec {
        name: "retention.ms",
        kind: ValueKind::Long { min: -1 },
    },
    KeySpec {
        name: "segment.bytes",
        kind: ValueKind::Long { min: 14 },
    },
    KeySpec {
        name: "segment.ms",
        kind: ValueKind::Long { min: 1 },
    },
    KeySpec {
        name: "unclean.leader.election.enable",
        kind: ValueKind::Choice(&["true", "false"]),
    },
];

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

/// Checks one key and value against the known set.
pub fn validate(key: &str, value: &str) -> Result<(), ConfigError> {
    let spec = KEYS
        .iter()
        .find(|spec| spec.name == key)
        .ok_or_else(|| ConfigError::UnknownKey(key.to_string()))?;
    let invalid = |reason| ConfigError::InvalidValue {
        key: key.to_string(),
        value: value.to_string(),
        reason,
    };
    match spec.kind {
        ValueKind::Long { min } => {
            let number: i64 = value.trim().parse().map_err(|_| invalid("not a number"))?;
            if number < min {
                return Err(invalid("below the minimum"));
            }
        }
        ValueKind::Choice(words) => {
            if !words.contains(&value) {
                return Err(invalid("not one of the allowed values"));
            }
        }
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

/// Every known key with its effective value: the topic's own, else the broker default.
/// The flag says whether the value is the default.
pub fn effective_configs(
    configs: &TopicConfigs,
    broker: &BrokerConfig,
) -> Vec<(&'static str, String, bool)> {
    KEYS.iter()
        .map(|spec| match configs.get(spec.name) {
            Some(value) => (spec.name, value.clone(), false),
            None => (spec.name, default_value(spec.name, broker), true),
        })
        .collect()
}

/// Broker-wide default of a topic config (Kafka's defaults where Riptide has no own setting).
pub fn default_value(key: &str, broker: &BrokerConfig) -> String {
    match key {
        "cleanup.policy" => "delete".into(),
        "compression.type" => "producer".into(),
        "delete.retention.ms" => "86400000".into(),
        "file.delete.delay.ms" => "60000".into(),
        "flush.messages" => i64::MAX.to_string(),
        "flush.ms" => i64::MAX.to_string(),
        "max.compaction.lag.ms" => i64::MAX.to_string(),
        "max.message.bytes" => broker.max_message_bytes.to_string(),
        "message.timestamp.type" => "CreateTime".into(),
        "min.cleanable.dirty.ratio" => "0.5".into(),
        "min.compaction.lag.ms" => "0".into(),
        "min.insync.replicas" => broker.min_insync_replicas.to_string(),
        "retention.bytes" => "-1".into(),
        "retention.ms" => "604800000".into(),
        "segment.bytes" => broker.segment_bytes.to_string(),
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
        == "true"
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
        assert_eq!((retention.1.as_str(), retention.2), ("5", false));
        let segment = effective
            .iter()
            .find(|(k, _, _)| *k == "segment.bytes")
            .unwrap();
        assert_eq!(segment.1, broker.segment_bytes.to_string());
        assert!(segment.2);
        assert_eq!(
            effective_long(&configs, &broker, "max.message.bytes"),
            broker.max_message_bytes as i64
        );
    }
}
