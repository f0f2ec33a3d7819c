//! Topic records and topic configs.
//!
//! A topic is a pool plus a record in the internal `latest` pool [`TOPICS_POOL`] (key = topic
//! name, value = JSON [`TopicMeta`]: partition count and the configs set explicitly). Keeping the
//! record in the store replicates it like any other data. Configs map onto the pool:
//! `cleanup.policy=compact` → `compact`, `squall.mode` → the pool mode, `retention.ms`,
//! `retention.bytes` → retention, `max.message.bytes` → largest value (and checked per batch by
//! the produce handler), `squall.durable` → whether puts wait for the durable log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use squall_storage::{Mode, PoolConfig, POOL_NAME_BYTES_MAX, VALUE_BYTES_LIMIT};

/// Internal pool holding one record per topic.
pub const TOPICS_POOL: &str = "__kafka_topics";
/// Internal pool holding committed offsets, key `group/topic/partition`.
pub const OFFSETS_POOL: &str = "__consumer_offsets";
/// Internal pool whose single key's dense counter hands out producer ids.
pub const PRODUCER_IDS_POOL: &str = "__kafka_producer_ids";
/// Internal pool holding each consumer group's membership and generation, key = group id
/// (escaped like in [`OFFSETS_POOL`]), so a restarted broker keeps fencing stale members.
pub const GROUPS_POOL: &str = "__kafka_groups";
/// Most partitions one topic may have.
pub const PARTITIONS_MAX: u32 = 10_000;

/// The stored description of a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TopicMeta {
    /// Number of partitions.
    pub partitions: u32,
    /// Configs set explicitly (by CreateTopics or IncrementalAlterConfigs).
    pub configs: BTreeMap<String, String>,
}

/// How a config value is typed (DescribeConfigs `config_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    /// true/false.
    Boolean = 1,
    /// A string.
    String = 2,
    /// An i32.
    Int = 3,
    /// An i64.
    Long = 5,
}

/// A topic config this broker knows: its name, default, type, and whether Squall enforces it.
#[derive(Debug, Clone, Copy)]
pub struct ConfigDef {
    /// Kafka's name.
    pub name: &'static str,
    /// Default value.
    pub default: &'static str,
    /// Type.
    pub kind: ConfigType,
    /// Whether the broker acts on it (the others are stored and described only).
    pub enforced: bool,
}

/// Every topic config accepted, sorted by name.
pub const TOPIC_CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        name: "cleanup.policy",
        default: "delete",
        kind: ConfigType::String,
        enforced: true,
    },
    ConfigDef {
        name: "compression.type",
        default: "producer",
        kind: ConfigType::String,
        enforced: false,
    },
    ConfigDef {
        name: "delete.retention.ms",
        default: "86400000",
        kind: ConfigType::Long,
        enforced: false,
    },
    ConfigDef {
        name: "max.message.bytes",
        default: "1048588",
        kind: ConfigType::Int,
        enforced: true,
    },
    ConfigDef {
        name: "message.timestamp.type",
        default: "CreateTime",
        kind: ConfigType::String,
        enforced: true,
    },
    ConfigDef {
        name: "min.insync.replicas",
        default: "1",
        kind: ConfigType::Int,
        enforced: false,
    },
    ConfigDef {
        name: "retention.bytes",
        default: "-1",
        kind: ConfigType::Long,
        enforced: true,
    },
    ConfigDef {
        name: "retention.ms",
        default: "604800000",
        kind: ConfigType::Long,
        enforced: true,
    },
    ConfigDef {
        name: "segment.bytes",
        default: "1073741824",
        kind: ConfigType::Int,
        enforced: false,
    },
    ConfigDef {
        name: "segment.ms",
        default: "604800000",
        kind: ConfigType::Long,
        enforced: false,
    },
    ConfigDef {
        name: "squall.durable",
        default: "true",
        kind: ConfigType::Boolean,
        enforced: true,
    },
    ConfigDef {
        name: "squall.mode",
        default: "versioned",
        kind: ConfigType::String,
        enforced: true,
    },
];

/// The definition of a config name.
pub fn config_def(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Checks a config value; the error says what is wrong (sent as the error message).
pub fn validate_config(name: &str, value: &str) -> Result<(), String> {
    let Some(def) = config_def(name) else {
        return Err(format!("unknown topic config {name}"));
    };
    let ok = match def.kind {
        ConfigType::Boolean => matches!(value, "true" | "false"),
        ConfigType::Int => value.parse::<i32>().is_ok(),
        ConfigType::Long => value.parse::<i64>().is_ok(),
        ConfigType::String => true,
    };
    if !ok {
        return Err(format!("invalid value {value:?} for {name}"));
    }
    match name {
        "cleanup.policy" => {
            let policies: Vec<&str> = value.split(',').map(str::trim).collect();
            if policies.iter().any(|p| !matches!(*p, "delete" | "compact")) {
                return Err(format!(
                    "cleanup.policy must be delete and/or compact, not {value:?}"
                ));
            }
        }
        "squall.mode" if !matches!(value, "versioned" | "stateless") => {
            return Err(format!(
                "squall.mode must be versioned or stateless, not {value:?}"
            ));
        }
        "message.timestamp.type" if !matches!(value, "CreateTime" | "LogAppendTime") => {
            return Err(format!(
                "message.timestamp.type must be CreateTime or LogAppendTime, not {value:?}"
            ));
        }
        "max.message.bytes" => {
            let v: i64 = value.parse().unwrap_or(-1);
            if v < 64 || v > i64::from(VALUE_BYTES_LIMIT) {
                return Err(format!(
                    "max.message.bytes must be in 64..={VALUE_BYTES_LIMIT}"
                ));
            }
        }
        "retention.ms" | "retention.bytes" => {
            let v: i64 = value.parse().unwrap_or(-2);
            if v < -1 {
                return Err(format!("{name} must be -1 or a non-negative number"));
            }
        }
        _ => {}
    }
    Ok(())
}

impl TopicMeta {
    /// The effective value of a config: set explicitly, or its default.
    pub fn config(&self, name: &str) -> Option<&str> {
        self.configs
            .get(name)
            .map(String::as_str)
            .or_else(|| config_def(name).map(|d| d.default))
    }

    /// `cleanup.policy` includes compact.
    pub fn compact(&self) -> bool {
        self.config("cleanup.policy")
            .is_some_and(|p| p.split(',').any(|x| x.trim() == "compact"))
    }

    /// `message.timestamp.type=LogAppendTime`.
    pub fn log_append_time(&self) -> bool {
        self.config("message.timestamp.type") == Some("LogAppendTime")
    }

    /// `max.message.bytes` (the largest batch accepted).
    pub fn batch_bytes_max(&self) -> usize {
        self.config("max.message.bytes")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1_048_588)
    }

    /// The pool configuration this topic maps to.
    pub fn pool_config(&self, name: &str) -> PoolConfig {
        let long = |k: &str| self.config(k).and_then(|v| v.parse::<i64>().ok());
        PoolConfig {
            name: name.to_string(),
            mode: if self.config("squall.mode") == Some("stateless") {
                Mode::Stateless
            } else {
                Mode::Versioned
            },
            durable: self.config("squall.durable") != Some("false"),
            retention_ms: long("retention.ms").filter(|v| *v >= 0).map(|v| v as u64),
            retention_bytes: long("retention.bytes")
                .filter(|v| *v >= 0)
                .map(|v| v as u64),
            value_bytes_max: (self.batch_bytes_max() as u64).min(u64::from(VALUE_BYTES_LIMIT))
                as u32,
            compact: self.compact(),
            ..PoolConfig::default()
        }
    }

    /// Encodes for the topics pool.
    pub fn to_bytes(&self) -> bytes::Bytes {
        bytes::Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Decodes a topics pool value.
    pub fn from_bytes(b: &[u8]) -> Option<TopicMeta> {
        serde_json::from_slice(b).ok()
    }
}

/// Kafka's topic name rule: 1..=249 bytes of `[A-Za-z0-9._-]`, not `.` or `..`, and not one of
/// Squall's internal pools.
pub fn valid_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= POOL_NAME_BYTES_MAX
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !internal(name)
}

/// Whether `name` is one of the face's internal pools.
pub fn internal(name: &str) -> bool {
    matches!(
        name,
        TOPICS_POOL | OFFSETS_POOL | PRODUCER_IDS_POOL | GROUPS_POOL
    )
}

/// The key of partition `p` of `topic`.
pub fn partition_key(topic: &str, p: i32) -> String {
    format!("{topic}/{p}")
}

/// A stable topic id derived from the name (Metadata v10+ reports one; Fetch ≤ v12 does not
/// use it). Two FNV-1a passes with different offsets make 128 bits; never the nil UUID.
pub fn topic_id(name: &str) -> uuid::Uuid {
    let fnv = |seed: u64| {
        let mut h = seed;
        for b in name.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        h
    };
    let hi = fnv(0xcbf2_9ce4_8422_2325);
    let lo = fnv(0x8422_2325_cbf2_9ce4) | 1;
    uuid::Uuid::from_u64_pair(hi, lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_map_to_the_pool() {
        let mut m = TopicMeta {
            partitions: 3,
            configs: BTreeMap::new(),
        };
        let p = m.pool_config("t");
        assert_eq!(p.mode, Mode::Versioned);
        assert!(!p.compact);
        assert_eq!(p.retention_ms, Some(604_800_000));
        assert_eq!(p.retention_bytes, None);
        m.configs.insert("cleanup.policy".into(), "compact".into());
        m.configs.insert("squall.mode".into(), "stateless".into());
        m.configs.insert("retention.ms".into(), "-1".into());
        m.configs.insert("max.message.bytes".into(), "2048".into());
        let p = m.pool_config("t");
        assert!(p.compact);
        assert_eq!(p.mode, Mode::Stateless);
        assert_eq!(p.retention_ms, None);
        assert_eq!(p.value_bytes_max, 2048);
        assert_eq!(TopicMeta::from_bytes(&m.to_bytes()), Some(m));
    }

    #[test]
    fn config_validation_and_names() {
        assert!(validate_config("cleanup.policy", "compact,delete").is_ok());
        assert!(validate_config("cleanup.policy", "forever").is_err());
        assert!(validate_config("retention.ms", "abc").is_err());
        assert!(validate_config("no.such.config", "1").is_err());
        assert!(validate_config("squall.mode", "latest").is_err());
        assert!(valid_topic_name("a.b_c-1"));
        assert!(!valid_topic_name("a/b"));
        assert!(!valid_topic_name(".."));
        assert!(!valid_topic_name(TOPICS_POOL));
        assert_ne!(topic_id("a"), topic_id("b"));
        assert!(!topic_id("").is_nil());
    }
}
