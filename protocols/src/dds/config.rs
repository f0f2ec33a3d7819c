//! `[dds]` configuration: the domain, the interfaces, and the topics the face serves
//! (`[[dds.topic]]`). Plain structs with `Default` and `validate()`; the broker reads the file.

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};
use squall_storage::{Mode, PoolConfig, POOL_NAME_BYTES_MAX};

use super::cdr::{FieldDesc, TypeDesc};
use super::error::DdsError;

/// Most topics one face serves.
pub const TOPICS_MAX: usize = 256;
/// Deepest KEEP_LAST history accepted.
pub const DEPTH_MAX: u32 = 10_000;

/// The DDS face of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DdsConfig {
    /// DDS domain id (0 by default).
    pub domain_id: u16,
    /// Local addresses DDS may use for multicast and advertise; loopback only by default.
    pub interfaces: Vec<IpAddr>,
    /// The topics (`[[dds.topic]]`).
    pub topic: Vec<DdsTopicConfig>,
}

impl Default for DdsConfig {
    fn default() -> Self {
        DdsConfig {
            domain_id: 0,
            interfaces: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            topic: Vec::new(),
        }
    }
}

impl DdsConfig {
    /// Checks every topic and the cross-topic rules (unique names and pools).
    pub fn validate(&self) -> Result<(), DdsError> {
        if self.domain_id > 232 {
            return Err(DdsError::Config(format!(
                "domain_id {} > 232",
                self.domain_id
            )));
        }
        if self.topic.len() > TOPICS_MAX {
            return Err(DdsError::Config(format!("more than {TOPICS_MAX} topics")));
        }
        let mut names = std::collections::BTreeSet::new();
        let mut pools = std::collections::BTreeSet::new();
        for t in &self.topic {
            t.validate()?;
            if !names.insert(t.name.as_str()) {
                return Err(DdsError::Config(format!(
                    "topic {} configured twice",
                    t.name
                )));
            }
            if !pools.insert(t.pool.as_str()) {
                return Err(DdsError::Config(format!(
                    "pool {} used by two topics",
                    t.pool
                )));
            }
        }
        Ok(())
    }
}

/// RELIABILITY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Reliability {
    /// Every sample, in order, repaired on loss.
    #[default]
    Reliable,
    /// Fire and forget.
    BestEffort,
}

/// DURABILITY. The broker is the durability service, so TRANSIENT and PERSISTENT are served
/// from the store (PERSISTENT also makes the pool durable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Only samples written after a reader matched: a `stateless` pool.
    Volatile,
    /// Late joiners get the current instances: a `latest` (or KEEP_LAST n `versioned`) pool.
    #[default]
    TransientLocal,
    /// Like TRANSIENT_LOCAL, served after the writer is gone.
    Transient,
    /// Like TRANSIENT, and the pool is durable (on disk).
    Persistent,
}

/// HISTORY kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum History {
    /// The newest `depth` samples per instance.
    #[default]
    KeepLast,
    /// Every sample: a `versioned` pool.
    KeepAll,
}

/// OWNERSHIP kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OwnershipKind {
    /// Every writer's samples are recorded.
    #[default]
    Shared,
    /// One owner per instance, decided in the store (see `ownership`).
    Exclusive,
}

/// One `[[dds.topic]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DdsTopicConfig {
    /// DDS topic name.
    pub name: String,
    /// DDS type name (must match the peers' type name).
    pub type_name: String,
    /// Pool the instances are stored in (key = instance key).
    pub pool: String,
    /// Pool mode; derived from the QoS when absent.
    pub mode: Option<Mode>,
    /// The type: fields in declaration order; `key = true` marks key fields.
    pub fields: Vec<FieldDesc>,
    /// RELIABILITY.
    pub reliability: Reliability,
    /// DURABILITY.
    pub durability: Durability,
    /// HISTORY kind.
    pub history: History,
    /// HISTORY depth for KEEP_LAST.
    pub depth: u32,
    /// OWNERSHIP kind.
    pub ownership: OwnershipKind,
    /// Strength of edits that reach an EXCLUSIVE topic from another face (HTTP, Kafka).
    pub editor_strength: i32,
    /// How long an editor keeps ownership after its last edit, in milliseconds.
    pub editor_lease_ms: u64,
    /// Publish the store's view of the topic on this DDS topic instead of the recorded one
    /// (for EXCLUSIVE topics: see docs/DDS.md, "EXCLUSIVE readers").
    pub publish_topic: Option<String>,
    /// Bridge the topic to this Kafka topic (created with `kafka_partitions` if missing): every
    /// version of the pool becomes a record keyed by the instance key, and records produced
    /// to it are stored as samples (see docs/DDS.md, "Kafka").
    pub kafka_topic: Option<String>,
    /// Partitions of `kafka_topic` when the face creates it.
    pub kafka_partitions: u32,
}

impl Default for DdsTopicConfig {
    fn default() -> Self {
        DdsTopicConfig {
            name: String::new(),
            type_name: String::new(),
            pool: String::new(),
            mode: None,
            fields: Vec::new(),
            reliability: Reliability::Reliable,
            durability: Durability::TransientLocal,
            history: History::KeepLast,
            depth: 1,
            ownership: OwnershipKind::Shared,
            editor_strength: 0,
            editor_lease_ms: 10_000,
            publish_topic: None,
            kafka_topic: None,
            kafka_partitions: 1,
        }
    }
}

impl DdsTopicConfig {
    /// Checks names, the type and the QoS combination.
    pub fn validate(&self) -> Result<(), DdsError> {
        let bad = |m: String| Err(DdsError::Config(format!("topic {:?}: {m}", self.name)));
        if self.name.is_empty() || self.name.len() > 256 {
            return bad("name must have 1..=256 bytes".into());
        }
        if self.type_name.is_empty() || self.type_name.len() > 256 {
            return bad("type_name must have 1..=256 bytes".into());
        }
        let pool_ok = !self.pool.is_empty()
            && self.pool.len() + ".events".len() <= POOL_NAME_BYTES_MAX
            && self
                .pool
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !pool_ok {
            return bad(format!("pool {:?} is not a valid pool name", self.pool));
        }
        self.type_desc()
            .validate()
            .map_err(|e| DdsError::Config(format!("topic {:?}: {e}", self.name)))?;
        if self.depth == 0 || self.depth > DEPTH_MAX {
            return bad(format!("depth must be 1..={DEPTH_MAX}"));
        }
        if self.durability == Durability::Volatile
            && self.mode.is_some_and(|m| m != Mode::Stateless)
        {
            return bad("VOLATILE durability needs mode stateless".into());
        }
        if self.mode == Some(Mode::Stateless) && self.durability != Durability::Volatile {
            return bad("mode stateless keeps nothing: durability must be volatile".into());
        }
        if let Some(k) = &self.kafka_topic {
            let ok = !k.is_empty()
                && k.len() <= 249
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok || *k == self.pool {
                return bad(format!(
                    "kafka_topic {k:?} must be a valid Kafka topic name other than the pool"
                ));
            }
        }
        if self.kafka_partitions == 0 || self.kafka_partitions > 10_000 {
            return bad("kafka_partitions must be 1..=10000".into());
        }
        if let Some(p) = &self.publish_topic {
            if p.is_empty() || p.len() > 256 {
                return bad("publish_topic must have 1..=256 bytes".into());
            }
        }
        Ok(())
    }

    /// The type description.
    pub fn type_desc(&self) -> TypeDesc {
        TypeDesc {
            fields: self.fields.clone(),
        }
    }

    /// The pool mode: explicit, or VOLATILE → stateless, KEEP_ALL or KEEP_LAST n>1 →
    /// versioned, KEEP_LAST 1 → latest.
    pub fn pool_mode(&self) -> Mode {
        if let Some(m) = self.mode {
            return m;
        }
        match (self.durability, self.history, self.depth) {
            (Durability::Volatile, _, _) => Mode::Stateless,
            (_, History::KeepAll, _) => Mode::Versioned,
            (_, History::KeepLast, 1) => Mode::Latest,
            (_, History::KeepLast, _) => Mode::Versioned,
        }
    }

    /// The data pool's configuration.
    pub fn pool_config(&self) -> PoolConfig {
        PoolConfig {
            name: self.pool.clone(),
            mode: self.pool_mode(),
            durable: self.durability == Durability::Persistent,
            ..PoolConfig::default()
        }
    }

    /// The versioned pool recording per instance what is not a sample: a writer lost (deleted,
    /// or its participant's lease expired), with the writer and the reason, as JSON. Not a
    /// tombstone: the instance keeps its value (late joiners still get it).
    pub fn events_pool(&self) -> String {
        format!("{}.events", self.pool)
    }

    /// Versions kept per key for KEEP_LAST n on a versioned pool (older ones are truncated).
    pub fn keep_versions(&self) -> Option<u32> {
        (self.history == History::KeepLast && self.pool_mode() == Mode::Versioned)
            .then_some(self.depth)
    }

    /// The topic the face publishes on.
    pub fn publish_topic(&self) -> &str {
        self.publish_topic.as_deref().unwrap_or(&self.name)
    }

    /// Whether the face publishes on the topic it records (then DDS-originated samples are not
    /// re-published live: their readers already have them from the writer).
    pub fn bridges_same_topic(&self) -> bool {
        self.publish_topic() == self.name
    }
}

#[cfg(feature = "http")]
impl crate::http::ValueCodec for TypeDesc {
    fn render_json(&self, value: &[u8]) -> Result<serde_json::Value, String> {
        TypeDesc::to_json(self, value).map_err(|e| e.to_string())
    }

    fn parse_json(&self, json: &serde_json::Value) -> Result<Vec<u8>, String> {
        TypeDesc::from_json(self, json).map_err(|e| e.to_string())
    }
}

#[cfg(feature = "http")]
impl DdsConfig {
    /// What the HTTP face should know about the topics' pools: the editor claim defaults
    /// (EXCLUSIVE topics) and the type, for JSON rendering.
    pub fn http_profiles(&self) -> std::collections::BTreeMap<String, crate::http::PoolProfile> {
        self.topic
            .iter()
            .map(|t| {
                let codec: std::sync::Arc<dyn crate::http::ValueCodec> =
                    std::sync::Arc::new(t.type_desc());
                (
                    t.pool.clone(),
                    crate::http::PoolProfile {
                        editor_strength: t.editor_strength,
                        editor_lease_ms: t.editor_lease_ms,
                        codec: Some(codec),
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dds::cdr::FieldType;

    fn topic() -> DdsTopicConfig {
        DdsTopicConfig {
            name: "FlightPlan".into(),
            type_name: "FlightPlan".into(),
            pool: "flightplans".into(),
            fields: vec![
                FieldDesc {
                    name: "flight_id".into(),
                    ty: FieldType::String,
                    key: true,
                },
                FieldDesc {
                    name: "route".into(),
                    ty: FieldType::String,
                    key: false,
                },
            ],
            ..DdsTopicConfig::default()
        }
    }

    #[test]
    fn qos_maps_to_modes() {
        let mut t = topic();
        assert_eq!(t.pool_mode(), Mode::Latest);
        t.depth = 4;
        assert_eq!(t.pool_mode(), Mode::Versioned);
        assert_eq!(t.keep_versions(), Some(4));
        t.history = History::KeepAll;
        assert_eq!(t.keep_versions(), None);
        t.durability = Durability::Volatile;
        assert_eq!(t.pool_mode(), Mode::Stateless);
        assert!(t.validate().is_ok());
    }

    #[test]
    fn validate_rejects_bad_topics() {
        let mut t = topic();
        t.fields[0].key = false;
        assert!(t.validate().is_err(), "no key field");
        let mut t = topic();
        t.pool = "a/b".into();
        assert!(t.validate().is_err());
        let mut t = topic();
        t.mode = Some(Mode::Stateless);
        assert!(t.validate().is_err(), "stateless needs volatile");
        let c = DdsConfig {
            topic: vec![topic(), topic()],
            ..DdsConfig::default()
        };
        assert!(c.validate().is_err(), "duplicate topic");
    }

    #[test]
    fn parses_from_toml_shape() {
        let j = serde_json::json!({
            "domain_id": 3,
            "topic": [{"name": "T", "type_name": "T", "pool": "t",
                       "fields": [{"name": "id", "type": "uint32", "key": true}],
                       "durability": "volatile", "ownership": "exclusive"}]
        });
        let c: DdsConfig = serde_json::from_value(j).unwrap();
        assert_eq!(c.domain_id, 3);
        assert_eq!(c.topic[0].ownership, OwnershipKind::Exclusive);
        assert!(c.validate().is_ok());
    }
}
