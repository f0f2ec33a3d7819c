//! The JSON shapes of the HTTP API (shared with the CLI and the tests, so both ends agree).

use base64::Engine;
use serde::{Deserialize, Serialize};
use squall_storage::{Clock, Entry, Version};

/// Reply to a put, a conditional put or a delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutReply {
    /// The key's dense version (the Kafka offset).
    pub version: u64,
    /// The shard's global sequence.
    pub shard_seq: u64,
    /// Platform time, µs since the Unix epoch.
    pub time_us: u64,
    /// Hybrid clock tie-breaker.
    pub logical: u32,
    /// The producer's sensor time, if given.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sensor_time_us: Option<u64>,
    /// The sensor time was already final on arrival.
    #[serde(default)]
    pub late: bool,
}

impl From<&Version> for PutReply {
    fn from(v: &Version) -> Self {
        PutReply {
            version: v.key_version,
            shard_seq: v.shard_seq,
            time_us: v.time.physical_us,
            logical: v.time.logical,
            sensor_time_us: v.sensor_time_us,
            late: v.late,
        }
    }
}

/// One version of one key as JSON (watch events, snapshot entries, replay lines); the value is
/// base64 (standard alphabet, padded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryJson {
    /// The pool (in snapshots and replays).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pool: Option<String>,
    /// The key.
    pub key: String,
    /// The key's dense version.
    pub version: u64,
    /// Dense counters this version occupies.
    pub span: u32,
    /// The shard's global sequence.
    pub shard_seq: u64,
    /// Platform time, µs since the Unix epoch.
    pub time_us: u64,
    /// Hybrid clock tie-breaker.
    pub logical: u32,
    /// The producer's sensor time, if given.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sensor_time_us: Option<u64>,
    /// Flagged late (sensor time already final on arrival).
    #[serde(default)]
    pub late: bool,
    /// A delete.
    #[serde(default)]
    pub tombstone: bool,
    /// The value, base64.
    pub value: String,
    /// The value rendered as JSON by the pool's type (with `format=json`), if it decodes.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub json: Option<serde_json::Value>,
    /// Why the value could not be rendered (with `format=json`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub json_error: Option<String>,
}

impl EntryJson {
    /// The JSON form of an entry.
    pub fn from_entry(pool: Option<&str>, e: &Entry) -> Self {
        EntryJson {
            pool: pool.map(str::to_string),
            key: e.key.clone(),
            version: e.version.key_version,
            span: e.version.span,
            shard_seq: e.version.shard_seq,
            time_us: e.version.time.physical_us,
            logical: e.version.time.logical,
            sensor_time_us: e.version.sensor_time_us,
            late: e.version.late,
            tombstone: e.tombstone,
            value: base64::engine::general_purpose::STANDARD.encode(&e.value),
            json: None,
            json_error: None,
        }
    }

    /// Adds the JSON rendering of the value by `codec` (nothing for a delete or without codec).
    pub fn rendered(mut self, codec: Option<&dyn super::ValueCodec>, e: &Entry) -> Self {
        if let (Some(c), false) = (codec, e.tombstone) {
            match c.render_json(&e.value) {
                Ok(j) => self.json = Some(j),
                Err(m) => self.json_error = Some(m),
            }
        }
        self
    }

    /// The decoded value bytes, or `None` if `value` is not valid base64.
    pub fn value_bytes(&self) -> Option<Vec<u8>> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.value)
            .ok()
    }
}

/// One `(pool, key)` of a snapshot request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotKey {
    /// The pool.
    pub pool: String,
    /// The key.
    pub key: String,
}

/// `POST /v1/snapshot` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    /// The time of the cut, µs since the Unix epoch.
    pub at: u64,
    /// Which clock `at` is on (default platform).
    #[serde(default)]
    pub clock: Clock,
    /// How long to wait for `at` to become stable, in ms.
    #[serde(default)]
    pub wait_ms: Option<u64>,
    /// The keys, answered in this order.
    pub keys: Vec<SnapshotKey>,
}

/// `POST /v1/snapshot` reply: one entry (or `null`: no version at or before `at`) per asked key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotReply {
    /// The time of the cut.
    pub at: u64,
    /// Its clock.
    pub clock: Clock,
    /// The answers, in the asked order.
    pub entries: Vec<Option<EntryJson>>,
}

/// `POST /v1/pools/{pool}/keys/{key}/truncate` reply: the kept range after truncation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundsReply {
    /// First kept version.
    pub start: u64,
    /// Version the next put gets.
    pub next: u64,
}
