//! The store's public vocabulary: pools, modes, versions, hybrid timestamps, operations and
//! what reads return. Every face (HTTP, Kafka, DDS) and the broker speak these types; the
//! ordering seam carries [`Op`]s and hands back [`Stamp`]s.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Longest pool name, in bytes.
pub const POOL_NAME_BYTES_MAX: usize = 249;
/// Longest key, in bytes.
pub const KEY_BYTES_MAX: usize = 1024;
/// Default largest value, in bytes (configurable per pool up to [`VALUE_BYTES_LIMIT`]).
pub const VALUE_BYTES_MAX_DEFAULT: u32 = 16 * 1024 * 1024;
/// Hard ceiling for any pool's `value_bytes_max`.
pub const VALUE_BYTES_LIMIT: u32 = 256 * 1024 * 1024;
/// Default lateness a pool tolerates for sensor-time reads, in microseconds (1 s).
pub const LATENESS_US_DEFAULT: u64 = 1_000_000;

/// What a pool keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Ordered notification to watchers; nothing is kept.
    Stateless,
    /// Only the newest value per key is kept; a new watcher sees it first.
    Latest,
    /// Every version is kept until truncate or retention removes it (a replayable queue).
    #[default]
    Versioned,
}

/// Which clock a time read uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Clock {
    /// The shard's hybrid logical clock (physical part), assigned when the update was ordered.
    #[default]
    Platform,
    /// The producer's sensor time, when it supplied one.
    Sensor,
}

/// A pool (a topic): a namespace of keys with one mode and one durability policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PoolConfig {
    /// Pool name: 1..=POOL_NAME_BYTES_MAX bytes of `[A-Za-z0-9._-]`.
    pub name: String,
    /// What the pool keeps.
    pub mode: Mode,
    /// Whether updates go to the durable log (acknowledged only after fsync).
    pub durable: bool,
    /// Versions older than this (platform time) may be removed; `None` keeps them.
    pub retention_ms: Option<u64>,
    /// Once a key's kept versions exceed this many bytes the oldest may be removed.
    pub retention_bytes: Option<u64>,
    /// Lateness tolerated for sensor-time reads, in microseconds.
    pub lateness_us: u64,
    /// Largest value accepted, in bytes.
    pub value_bytes_max: u32,
    /// Keep, per key, only the newest version of each compaction key (Kafka
    /// `cleanup.policy=compact`); versions keep their numbers, so gaps appear.
    pub compact: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            name: String::new(),
            mode: Mode::Versioned,
            durable: true,
            retention_ms: None,
            retention_bytes: None,
            lateness_us: LATENESS_US_DEFAULT,
            value_bytes_max: VALUE_BYTES_MAX_DEFAULT,
            compact: false,
        }
    }
}

/// A hybrid logical clock reading: platform microseconds since the Unix epoch plus a logical
/// counter that breaks ties. Ordered by `(physical_us, logical)`; never goes backwards in a shard.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Hlc {
    /// Platform time, microseconds since the Unix epoch.
    pub physical_us: u64,
    /// Tie-breaker among updates with the same `physical_us`.
    pub logical: u32,
}

/// Where the ordering seam placed a mutation: its position in the shard's total order and its
/// timestamp. Every replica applies the same stamped operations in the same order.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Stamp {
    /// The shard's global sequence number (strictly increasing, gaps allowed).
    pub shard_seq: u64,
    /// The hybrid timestamp (strictly increasing with `shard_seq`).
    pub time: Hlc,
}

/// The version of one update of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Version {
    /// The key's dense counter: 0, 1, 2, … (the Kafka offset of the first record).
    pub key_version: u64,
    /// How many dense counters this version occupies (≥ 1; a Kafka batch of n records takes n).
    pub span: u32,
    /// The shard's global sequence (for consistent cuts).
    pub shard_seq: u64,
    /// Hybrid timestamp assigned by the ordering seam.
    pub time: Hlc,
    /// The producer's sensor time, if it supplied one (µs since the Unix epoch).
    pub sensor_time_us: Option<u64>,
    /// The sensor time was already final (older than the sensor frontier) on arrival.
    pub late: bool,
}

impl Version {
    /// The dense counter the next version of this key gets.
    pub fn next_key_version(&self) -> u64 {
        self.key_version + u64::from(self.span)
    }
}

/// One stored (or, for stateless pools, notified) update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key (without the pool).
    pub key: String,
    /// Its version.
    pub version: Version,
    /// The value bytes (empty for a tombstone).
    pub value: Bytes,
    /// A delete: the key has no value from this version on.
    pub tombstone: bool,
    /// The compaction key (Kafka record key), for `compact` pools.
    pub compaction_key: Option<Bytes>,
}

/// The condition of a conditional put.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Expect {
    /// Unconditional.
    #[default]
    Any,
    /// The key must have no version yet (or only a tombstone as its newest).
    Absent,
    /// The key's newest version must be exactly this `key_version`.
    Version(u64),
    /// The writer claims the key's ownership (see [`crate::owner`]); with `version`, the key's
    /// newest version must also be exactly that `key_version` (an owner's compare-and-put).
    Owned {
        /// Who writes and how strongly.
        claim: crate::owner::Claim,
        /// Also a compare-and-put on this `key_version`.
        version: Option<u64>,
    },
}

impl Expect {
    /// Whether the condition holds for a key whose newest version is `newest`
    /// (`(key_version, tombstone)`, `None` for a key never written). Ownership is arbitrated
    /// apart from this (see [`crate::owner::arbitrate`]).
    pub fn holds(&self, newest: Option<(u64, bool)>) -> bool {
        match *self {
            Expect::Any | Expect::Owned { version: None, .. } => true,
            Expect::Absent => newest.is_none_or(|(_, tomb)| tomb),
            Expect::Version(v)
            | Expect::Owned {
                version: Some(v), ..
            } => newest.is_some_and(|(kv, _)| kv == v),
        }
    }
}

/// A mutation, as it travels through the ordering seam. Applying the same stamped sequence of
/// ops yields the same store on every replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create a pool (fails if it exists with a different config).
    CreatePool(PoolConfig),
    /// Delete a pool and everything in it.
    DeletePool {
        /// The pool.
        pool: String,
    },
    /// Put a value (or a tombstone) under a key.
    Put {
        /// The pool.
        pool: String,
        /// The key.
        key: String,
        /// The value (ignored for tombstones).
        value: Bytes,
        /// Producer's sensor time, µs since the Unix epoch.
        sensor_time_us: Option<u64>,
        /// Dense counters taken (≥ 1).
        span: u32,
        /// Compaction key for `compact` pools.
        compaction_key: Option<Bytes>,
        /// Conditional-put expectation.
        expect: Expect,
        /// A delete.
        tombstone: bool,
    },
    /// Change a pool's alterable settings (retention, value size limit, lateness, compaction);
    /// the mode and durability are fixed at creation. Takes effect for later ops; retention
    /// also at the next [`Op::Retain`] of each shard.
    AlterPool(PoolConfig),
    /// Apply every pool's retention (bytes, and age relative to this op's stamp time) to every
    /// key of `shard` — so age retention does not wait for a write. Ordered and logged like
    /// any op, so replicas and recovery remove the same versions.
    Retain {
        /// The shard.
        shard: ShardId,
    },
    /// Release `key`'s ownership if `writer` holds it (see [`crate::owner`]); stores no
    /// version and is a no-op when someone else (or no one) owns the key.
    Release {
        /// The pool.
        pool: String,
        /// The key.
        key: String,
        /// The writer letting go.
        writer: u64,
    },
    /// Remove every version of `key` below `before`.
    Truncate {
        /// The pool.
        pool: String,
        /// The key.
        key: String,
        /// First key_version kept.
        before: u64,
    },
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchFrom {
    /// Only updates ordered after the watch starts.
    Now,
    /// Replay from this key_version (per key) on, then continue live.
    Version(u64),
    /// Replay from this platform/sensor time on, then continue live.
    Time(u64, Clock),
}

/// What a watch follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// One key.
    Key(String),
    /// Every key starting with this prefix.
    Prefix(String),
}

/// Index of a shard inside a store (`0..StoreConfig::shards`).
pub type ShardId = u32;

/// The kept range of a key's dense counters (the broker converts it to the faces' `KeyBounds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KeyBounds {
    /// The first key_version still kept (Kafka log start offset).
    pub start: u64,
    /// The key_version the next put gets (Kafka log end offset).
    pub next: u64,
}

/// What applying one stamped [`Op`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A pool was created (or already existed with the same configuration).
    PoolCreated,
    /// A pool was deleted.
    PoolDeleted,
    /// A pool's settings were changed.
    PoolAltered,
    /// Retention ran over a shard and removed this many versions.
    Retained(u64),
    /// A put or delete was stored (or, in a stateless pool, notified) with this version.
    Put(Version),
    /// A truncate left the key with these bounds.
    Truncated(KeyBounds),
    /// A release ran; `true` when the writer did own the key and no longer does.
    Released(bool),
}

/// The result of an applied op plus, for durable pools, the log position whose fsync makes it
/// durable (see `Store::on_durable` / `Store::wait_durable`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The stamp the op was applied at.
    pub stamp: Stamp,
    /// What it did.
    pub outcome: Outcome,
    /// Log sequence number to wait for before acknowledging; `None` when nothing was logged
    /// (volatile or stateless pool, or no log).
    pub lsn: Option<u64>,
}

/// One event a watch yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// An update, in its shard's order.
    Update(Entry),
    /// The watcher fell behind the bounded recent-event ring of a stateless pool and lost up to
    /// this many shard events (the watch continues with the oldest event still kept).
    Lagged(u64),
}
