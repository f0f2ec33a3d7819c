//! The node as the faces see it: one trait every face (HTTP, Kafka, DDS) is written against and
//! the broker implements (on a single node today, on a replicated cluster later). Faces
//! translate their protocol into these calls and never store anything themselves.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use squall_storage::owner::Owner;
use squall_storage::{Clock, Entry, Expect, PoolConfig, Selector, Version, WatchFrom};

/// Why a node call failed. Faces map each variant to their own wire error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// The pool does not exist.
    #[error("no such pool: {0}")]
    NoSuchPool(String),
    /// The pool already exists with a different configuration.
    #[error("pool already exists: {0}")]
    PoolExists(String),
    /// The key (or the asked version of it) does not exist or was truncated away.
    #[error("not found")]
    NotFound,
    /// A conditional put found the key at another version.
    #[error("conditional put failed: key is at version {current:?}")]
    Conflict {
        /// The key's newest version, if any.
        current: Option<u64>,
    },
    /// The key is owned by another writer (EXCLUSIVE ownership, `squall_storage::owner`) and
    /// the write's claim, if any, is not stronger. Nothing changed.
    #[error("{0}")]
    NotOwner(NotOwner),
    /// The operation does not fit the pool's mode (e.g. a version read on a `latest` pool).
    #[error("operation not supported by this pool's mode: {0}")]
    WrongMode(String),
    /// The asked time is not below the stable frontier yet (even after waiting).
    #[error("time {at_us} is not yet stable (frontier {frontier_us})")]
    NotYetStable {
        /// The asked time.
        at_us: u64,
        /// The frontier when the wait ended.
        frontier_us: u64,
    },
    /// The input breaks a limit or is malformed (names what and why).
    #[error("invalid input: {0}")]
    Invalid(String),
    /// Too many callers waiting; try again.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The disk (or log) failed; nothing was stored.
    #[error("storage failure: {0}")]
    Storage(String),
    /// The node is shutting down.
    #[error("shutting down")]
    ShuttingDown,
}

/// Who holds a key a write was refused on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the key is owned by writer {owner:#018x} with strength {strength}{}", match claimed { Some(c) => format!(", stronger than the claim ({c})"), None => " and the write made no ownership claim".into() })]
pub struct NotOwner {
    /// The owning writer's id (`squall_storage::owner::writer_id` of its name).
    pub owner: u64,
    /// Its strength.
    pub strength: i32,
    /// The refused write's strength, if it claimed.
    pub claimed: Option<i32>,
}

/// A write request (a put, a conditional put, or a delete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutRequest {
    /// The pool.
    pub pool: String,
    /// The key.
    pub key: String,
    /// The value.
    pub value: Bytes,
    /// The producer's sensor time, µs since the Unix epoch.
    pub sensor_time_us: Option<u64>,
    /// Dense counters taken (Kafka: records in the batch); 1 otherwise.
    pub span: u32,
    /// Compaction key (Kafka record key) for compacted pools.
    pub compaction_key: Option<Bytes>,
    /// Conditional-put expectation.
    pub expect: Expect,
    /// A delete (tombstone version).
    pub tombstone: bool,
}

impl PutRequest {
    /// A plain put of `value` under `pool`/`key`.
    pub fn new(pool: impl Into<String>, key: impl Into<String>, value: Bytes) -> Self {
        PutRequest {
            pool: pool.into(),
            key: key.into(),
            value,
            sensor_time_us: None,
            span: 1,
            compaction_key: None,
            expect: Expect::Any,
            tombstone: false,
        }
    }
}

/// The kept range of a key's dense counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyBounds {
    /// The first key_version still kept (Kafka log start offset).
    pub start: u64,
    /// The key_version the next put gets (Kafka high watermark / log end offset).
    pub next: u64,
}

/// One event of a watch: an entry, or a notice that the watcher fell behind and lost events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// An update, in the shard's order.
    Update(Entry),
    /// The watcher was too slow; this many events were dropped for it (it should re-watch).
    Lagged(u64),
}

/// Resolves once a write applied by [`Node::put_applied`] is durable (at once for volatile
/// pools), or with the error that kept it from becoming durable.
pub type Durable = Pin<Box<dyn Future<Output = Result<(), NodeError>> + Send + 'static>>;

/// A [`Durable`] that is already resolved with success.
pub fn durable_now() -> Durable {
    Box::pin(std::future::ready(Ok(())))
}

/// A live watch: replayed history then live updates, no gap and no duplicate at the switch.
pub trait WatchStream: Send {
    /// The next event; `None` once the watch ended (pool deleted, node shutting down).
    fn next(&mut self) -> impl Future<Output = Option<WatchEvent>> + Send;
}

/// The node API the faces use.
pub trait Node: Send + Sync + 'static {
    /// The watch stream type.
    type Watch: WatchStream + 'static;

    /// Creates a pool (idempotent when the config is identical).
    fn create_pool(&self, config: PoolConfig)
        -> impl Future<Output = Result<(), NodeError>> + Send;
    /// Deletes a pool and all its keys.
    fn delete_pool(&self, pool: &str) -> impl Future<Output = Result<(), NodeError>> + Send;
    /// Changes a pool's alterable settings (retention, value size limit, lateness,
    /// compaction of later writes); the mode and durability stay as created (`Invalid`
    /// otherwise). Added for the Kafka face's IncrementalAlterConfigs; the default refuses.
    fn alter_pool(&self, config: PoolConfig) -> impl Future<Output = Result<(), NodeError>> + Send {
        async move {
            Err(NodeError::Invalid(format!(
                "this node cannot alter pool {}",
                config.name
            )))
        }
    }
    /// The configuration of one pool.
    fn pool(&self, pool: &str) -> Option<PoolConfig>;
    /// All pools, sorted by name.
    fn pools(&self) -> Vec<PoolConfig>;
    /// Keys of a pool starting with `prefix`, sorted.
    fn keys(&self, pool: &str, prefix: &str) -> Result<Vec<String>, NodeError>;
    /// Keys starting with `prefix` that have any kept version, including keys whose newest
    /// version is a delete, sorted (an audit replay must show a deleted key's history).
    /// The default lists only live keys; a node that keeps deleted keys' history overrides it.
    fn keys_with_history(&self, pool: &str, prefix: &str) -> Result<Vec<String>, NodeError> {
        self.keys(pool, prefix)
    }

    /// Orders and applies a write; resolves once it is applied and, for durable pools, on disk.
    fn put(&self, req: PutRequest) -> impl Future<Output = Result<Version, NodeError>> + Send;
    /// Orders and applies a write and resolves as soon as it is applied (its version fixed,
    /// visible to reads), together with a [`Durable`] that resolves once it is on disk. A
    /// caller that acknowledges durability must await that first; in the meantime it may
    /// apply its next write, so the fsyncs of consecutive writes overlap and one group commit
    /// covers several of them. The default waits for durability inside [`Node::put`].
    fn put_applied(
        &self,
        req: PutRequest,
    ) -> impl Future<Output = Result<(Version, Durable), NodeError>> + Send {
        async move {
            let v = self.put(req).await?;
            Ok((v, durable_now()))
        }
    }
    /// A [`Durable`] for everything applied so far (a write answered from memory, such as a
    /// recognised duplicate, is acknowledged only once the original is on disk too). The
    /// default is resolved at once (for nodes whose `put` only returns once durable).
    fn flushed(&self) -> Durable {
        durable_now()
    }
    /// Releases `key`'s ownership if `writer` holds it (an ordered op; storing no version).
    /// Resolves with whether it did. Nodes without ownership support refuse it.
    fn release(
        &self,
        pool: &str,
        key: &str,
        writer: u64,
    ) -> impl Future<Output = Result<bool, NodeError>> + Send {
        let _ = (pool, key, writer);
        async {
            Err(NodeError::Invalid(
                "this node does not track ownership".into(),
            ))
        }
    }
    /// The key's live owner, if any.
    fn owner(&self, pool: &str, key: &str) -> Result<Option<Owner>, NodeError> {
        let _ = (pool, key);
        Ok(None)
    }
    /// Removes every version of `key` below `before`; resolves with the new bounds.
    fn truncate(
        &self,
        pool: &str,
        key: &str,
        before: u64,
    ) -> impl Future<Output = Result<KeyBounds, NodeError>> + Send;

    /// The newest entry of a key (a tombstone counts as "no value": `NotFound`).
    fn get(&self, pool: &str, key: &str) -> Result<Entry, NodeError>;
    /// The entry whose dense range covers `key_version` (Kafka: the batch holding an offset).
    fn get_version(&self, pool: &str, key: &str, key_version: u64) -> Result<Entry, NodeError>;
    /// Entries from the one covering `from` on, in order, stopping after `bytes_max` value bytes
    /// (always at least one entry when any exists) or `entries_max` entries.
    fn read_from(
        &self,
        pool: &str,
        key: &str,
        from: u64,
        bytes_max: usize,
        entries_max: usize,
    ) -> Result<Vec<Entry>, NodeError>;
    /// The kept range of a key's dense counters.
    fn bounds(&self, pool: &str, key: &str) -> Result<KeyBounds, NodeError>;
    /// The first key_version whose time is ≥ `t_us` (Kafka ListOffsets by timestamp), if any.
    fn version_at_or_after(
        &self,
        pool: &str,
        key: &str,
        t_us: u64,
        clock: Clock,
    ) -> Result<Option<u64>, NodeError>;

    /// The newest entry with time ≤ `at_us`, once `at_us` is stable; waits up to `wait`.
    fn get_at(
        &self,
        pool: &str,
        key: &str,
        at_us: u64,
        clock: Clock,
        wait: Duration,
    ) -> impl Future<Output = Result<Option<Entry>, NodeError>> + Send;
    /// One consistent cut at `at_us` over many `(pool, key)`s, in the asked order.
    fn snapshot(
        &self,
        keys: Vec<(String, String)>,
        at_us: u64,
        clock: Clock,
        wait: Duration,
    ) -> impl Future<Output = Result<Vec<Option<Entry>>, NodeError>> + Send;
    /// Follows a key or a prefix from a version or a time on.
    fn watch(
        &self,
        pool: &str,
        selector: Selector,
        from: WatchFrom,
    ) -> Result<Self::Watch, NodeError>;
}
