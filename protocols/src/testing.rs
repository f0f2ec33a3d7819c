//! An in-memory [`Node`] for tests of the faces (HTTP and Kafka unit tests, DDS integration
//! tests): one shard, no replication, no durability. Not a store: it lets a face be tested
//! without the broker. Compiled for this crate's tests and behind the `testing` feature.
//!
//! What it models, close to `squall_storage::Store`: dense key versions with spans (span 0 is
//! refused), the pool's value size limit, conditional puts against the newest version ever
//! applied, `latest` pools that keep one entry, `stateless` pools that only count and notify,
//! compaction by compaction key in `compact` pools, truncation (the log start moves, an entry
//! straddling it is kept), reads bounded by bytes and entries, time lookups by platform or
//! sensor clock, reads at a time that wait for the stable frontier, and watches that replay
//! history then go live with no gap and no duplicate (a slow watcher gets `Lagged`).
//!
//! Time is the wall clock (µs, strictly increasing per put); the stable frontier is "now"
//! minus [`MemNode::frontier_lag_us`]. Switches for error paths: [`MemNode::frontier_lag_us`],
//! [`MemNode::disk_full`] (a write refused before it is applied) and [`MemNode::fsync_fails`]
//! (a write applied but lost because its fsync failed).
//!
//! As in the store (and Kafka), compaction leaves gaps but never moves a key's log start (only
//! truncation and retention do). Where it differs from the store: `bounds` of a key never
//! written is `NotFound`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use squall_storage::owner::{arbitrate, Owner};
use squall_storage::{Clock, Entry, Expect, Hlc, Mode, PoolConfig, Selector, Version, WatchFrom};
use tokio::sync::{broadcast, watch};

use crate::node::{
    Durable, KeyBounds, Node, NodeError, NotOwner, PutRequest, WatchEvent, WatchStream,
};

/// Updates buffered for watchers before the slowest one gets [`WatchEvent::Lagged`] (large, so
/// tests that publish bursts without reading do not lag).
pub const WATCH_BUFFER_MAX: usize = 65536;

/// One key's kept history and dense counters.
#[derive(Default)]
struct KeyLog {
    /// Kept entries, ascending key_version.
    entries: Vec<Entry>,
    /// First key_version still kept (log start).
    start: u64,
    /// key_version of the next put.
    next: u64,
    /// The newest version ever applied (key_version, tombstone): what a conditional put
    /// compares with, even when truncation or a stateless pool kept nothing.
    newest: Option<(u64, bool)>,
    /// The key's owner (EXCLUSIVE ownership, the store's rule `squall_storage::owner`).
    owner: Option<Owner>,
}

#[derive(Default)]
struct Inner {
    pools: BTreeMap<String, PoolConfig>,
    keys: BTreeMap<(String, String), KeyLog>,
    seq: u64,
    last_us: u64,
}

/// The in-memory node.
pub struct MemNode {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<(String, Entry)>,
    /// How far the stable frontier trails the clock (µs), to test "not yet stable".
    pub frontier_lag_us: AtomicU64,
    /// Puts fail as on a full disk (`NodeError::Storage`, nothing stored), to test error paths.
    pub disk_full: AtomicBool,
    /// Writes fail as on a failed fsync whose data did not survive: [`Node::put_applied`]
    /// returns the version the write would have had, stores nothing, and its [`Durable`]
    /// resolves with `NodeError::Storage`; [`Node::put`] and [`Node::flushed`] fail too. A
    /// write made while this is set is lost, as a node restarted from its synced log would
    /// have lost it; once cleared, the node accepts writes again.
    pub fsync_fails: AtomicBool,
    /// While `true`, writes through [`Node::put_applied`] are applied but their [`Durable`]
    /// does not resolve (an fsync that takes as long as the test wants); see
    /// [`MemNode::hold_durable`].
    durable_held: watch::Sender<bool>,
}

impl Default for MemNode {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemNode").finish_non_exhaustive()
    }
}

impl MemNode {
    /// An empty node: no pools, frontier at "now", puts succeed.
    pub fn new() -> Self {
        MemNode {
            inner: Mutex::new(Inner::default()),
            tx: broadcast::channel(WATCH_BUFFER_MAX).0,
            frontier_lag_us: AtomicU64::new(0),
            disk_full: AtomicBool::new(false),
            fsync_fails: AtomicBool::new(false),
            durable_held: watch::channel(false).0,
        }
    }

    /// Holds (`true`) or releases (`false`) durability: while held, [`Node::put_applied`]
    /// applies writes at once but their [`Durable`] (and [`Node::flushed`]) resolves only once
    /// released, to test callers that overlap writes with fsyncs.
    pub fn hold_durable(&self, held: bool) {
        self.durable_held.send_replace(held);
    }

    fn durable_gate(&self) -> Durable {
        let mut rx = self.durable_held.subscribe();
        let fails = self.fsync_fails.load(Ordering::SeqCst);
        Box::pin(async move {
            while *rx.borrow_and_update() {
                if rx.changed().await.is_err() {
                    break;
                }
            }
            if fails {
                return Err(fsync_error());
            }
            Ok(())
        })
    }

    /// The version a put of `span` to `pool`/`key` would get now (for a write that is lost).
    fn would_get(&self, pool: &str, key: &str, span: u32) -> Result<Version, NodeError> {
        self.with(|i| {
            if !i.pools.contains_key(pool) {
                return Err(NodeError::NoSuchPool(pool.into()));
            }
            if span == 0 {
                return Err(NodeError::Invalid("span must be ≥ 1".into()));
            }
            let next = i
                .keys
                .get(&(pool.to_string(), key.to_string()))
                .map_or(0, |l| l.next);
            Ok(Version {
                key_version: next,
                span,
                shard_seq: i.seq + 1,
                time: Hlc {
                    physical_us: now_us().max(i.last_us + 1),
                    logical: 0,
                },
                sensor_time_us: None,
                late: false,
            })
        })
    }
}

fn fsync_error() -> NodeError {
    NodeError::Storage("fsync of log/00000000.seg failed: Input/output error (os error 5)".into())
}

/// A watch on the in-memory node: the replayed history, then live updates.
pub struct MemWatch {
    pool: String,
    sel: Selector,
    replay: VecDeque<Entry>,
    rx: broadcast::Receiver<(String, Entry)>,
}

impl std::fmt::Debug for MemWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemWatch")
            .field("pool", &self.pool)
            .field("replay", &self.replay.len())
            .finish_non_exhaustive()
    }
}

fn matches(sel: &Selector, key: &str) -> bool {
    match sel {
        Selector::Key(k) => k == key,
        Selector::Prefix(p) => key.starts_with(p.as_str()),
    }
}

fn passes(from: WatchFrom, e: &Entry) -> bool {
    match from {
        WatchFrom::Now => true,
        WatchFrom::Version(v) => e.version.next_key_version() > v,
        WatchFrom::Time(t, Clock::Platform) => e.version.time.physical_us >= t,
        WatchFrom::Time(t, Clock::Sensor) => e.version.sensor_time_us.is_some_and(|s| s >= t),
    }
}

impl WatchStream for MemWatch {
    async fn next(&mut self) -> Option<WatchEvent> {
        if let Some(e) = self.replay.pop_front() {
            return Some(WatchEvent::Update(e));
        }
        loop {
            match self.rx.recv().await {
                Ok((p, e)) if p == self.pool && matches(&self.sel, &e.key) => {
                    return Some(WatchEvent::Update(e))
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => return Some(WatchEvent::Lagged(n)),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl MemNode {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    /// Runs `f` on a key's log (`None`: never written); `NoSuchPool` if the pool is missing.
    fn with_key<T>(
        &self,
        pool: &str,
        key: &str,
        f: impl FnOnce(Option<&KeyLog>) -> Result<T, NodeError>,
    ) -> Result<T, NodeError> {
        self.with(|i| {
            if !i.pools.contains_key(pool) {
                return Err(NodeError::NoSuchPool(pool.into()));
            }
            f(i.keys.get(&(pool.to_string(), key.to_string())))
        })
    }

    /// The newest entry with time ≤ `at_us` on `clock`.
    fn at(
        &self,
        pool: &str,
        key: &str,
        at_us: u64,
        clock: Clock,
    ) -> Result<Option<Entry>, NodeError> {
        self.with_key(pool, key, |log| {
            Ok(log.and_then(|l| {
                l.entries
                    .iter()
                    .filter(|e| match clock {
                        Clock::Platform => e.version.time.physical_us <= at_us,
                        Clock::Sensor => e.version.sensor_time_us.is_some_and(|s| s <= at_us),
                    })
                    .max_by_key(|e| e.version.shard_seq)
                    .cloned()
            }))
        })
    }

    async fn wait_stable(&self, at_us: u64, wait: Duration) -> Result<(), NodeError> {
        let deadline = tokio::time::Instant::now() + wait;
        let frontier = || now_us().saturating_sub(self.frontier_lag_us.load(Ordering::SeqCst));
        while frontier() <= at_us {
            if tokio::time::Instant::now() >= deadline {
                return Err(NodeError::NotYetStable {
                    at_us,
                    frontier_us: frontier(),
                });
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }
}

impl Node for MemNode {
    type Watch = MemWatch;

    async fn put_applied(&self, req: PutRequest) -> Result<(Version, Durable), NodeError> {
        if self.fsync_fails.load(Ordering::SeqCst) && !self.disk_full.load(Ordering::SeqCst) {
            let v = self.would_get(&req.pool, &req.key, req.span)?;
            return Ok((v, self.durable_gate()));
        }
        let v = self.put(req).await?;
        Ok((v, self.durable_gate()))
    }

    fn flushed(&self) -> Durable {
        self.durable_gate()
    }

    async fn alter_pool(&self, config: PoolConfig) -> Result<(), NodeError> {
        self.with(|i| {
            let Some(c) = i.pools.get_mut(&config.name) else {
                return Err(NodeError::NoSuchPool(config.name.clone()));
            };
            if c.mode != config.mode || c.durable != config.durable {
                return Err(NodeError::Invalid(
                    "a pool's mode and durability are fixed at creation".into(),
                ));
            }
            *c = config;
            Ok(())
        })
    }

    async fn create_pool(&self, config: PoolConfig) -> Result<(), NodeError> {
        self.with(|i| match i.pools.get(&config.name) {
            Some(c) if *c == config => Ok(()),
            Some(_) => Err(NodeError::PoolExists(config.name.clone())),
            None => {
                i.pools.insert(config.name.clone(), config);
                Ok(())
            }
        })
    }

    async fn delete_pool(&self, pool: &str) -> Result<(), NodeError> {
        self.with(|i| {
            i.pools
                .remove(pool)
                .ok_or(NodeError::NoSuchPool(pool.into()))?;
            i.keys.retain(|(p, _), _| p != pool);
            Ok(())
        })
    }

    fn pool(&self, pool: &str) -> Option<PoolConfig> {
        self.with(|i| i.pools.get(pool).cloned())
    }

    fn pools(&self) -> Vec<PoolConfig> {
        self.with(|i| i.pools.values().cloned().collect())
    }

    fn keys(&self, pool: &str, prefix: &str) -> Result<Vec<String>, NodeError> {
        self.with(|i| {
            if !i.pools.contains_key(pool) {
                return Err(NodeError::NoSuchPool(pool.into()));
            }
            Ok(i.keys
                .keys()
                .filter(|(p, k)| p == pool && k.starts_with(prefix))
                .map(|(_, k)| k.clone())
                .collect())
        })
    }

    async fn put(&self, req: PutRequest) -> Result<Version, NodeError> {
        if self.disk_full.load(Ordering::SeqCst) {
            return Err(NodeError::Storage(
                "io error on log/00000000.seg: No space left on device (os error 28)".into(),
            ));
        }
        if self.fsync_fails.load(Ordering::SeqCst) {
            return Err(fsync_error());
        }
        self.with(|i| {
            let cfg = i
                .pools
                .get(&req.pool)
                .cloned()
                .ok_or(NodeError::NoSuchPool(req.pool.clone()))?;
            if req.value.len() > cfg.value_bytes_max as usize {
                return Err(NodeError::Invalid(format!(
                    "value of {} bytes exceeds the pool's limit of {}",
                    req.value.len(),
                    cfg.value_bytes_max
                )));
            }
            if req.span == 0 {
                return Err(NodeError::Invalid("span must be ≥ 1".into()));
            }
            let (newest, owner) = i
                .keys
                .get(&(req.pool.clone(), req.key.clone()))
                .map_or((None, None), |l| (l.newest, l.owner));
            let time_us = now_us().max(i.last_us + 1);
            let claim = match req.expect {
                Expect::Owned { claim, .. } => Some(claim),
                _ => None,
            };
            let owner_after =
                arbitrate(owner, claim, req.tombstone, time_us).map_err(|e| match e {
                    squall_storage::StorageError::NotOwner {
                        owner,
                        strength,
                        claimed,
                    } => NodeError::NotOwner(NotOwner {
                        owner,
                        strength,
                        claimed,
                    }),
                    other => NodeError::Storage(other.to_string()),
                })?;
            if !req.expect.holds(newest) {
                return Err(NodeError::Conflict {
                    current: newest.map(|(kv, _)| kv),
                });
            }
            i.seq += 1;
            i.last_us = time_us;
            let (seq, time_us) = (i.seq, i.last_us);
            let log = i
                .keys
                .entry((req.pool.clone(), req.key.clone()))
                .or_default();
            let version = Version {
                key_version: log.next,
                span: req.span,
                shard_seq: seq,
                time: Hlc {
                    physical_us: time_us,
                    logical: 0,
                },
                sensor_time_us: req.sensor_time_us,
                late: false,
            };
            let e = Entry {
                key: req.key,
                version,
                value: req.value,
                tombstone: req.tombstone,
                compaction_key: if cfg.compact {
                    req.compaction_key
                } else {
                    None
                },
            };
            log.next = version.next_key_version();
            log.newest = Some((version.key_version, e.tombstone));
            log.owner = owner_after;
            match cfg.mode {
                Mode::Stateless => log.start = log.next,
                Mode::Latest => {
                    log.start = version.key_version;
                    log.entries = vec![e.clone()];
                }
                Mode::Versioned => {
                    if let Some(ck) = &e.compaction_key {
                        // Compaction leaves a gap; the log start does not move.
                        log.entries
                            .retain(|old| old.compaction_key.as_ref() != Some(ck));
                    }
                    log.entries.push(e.clone());
                }
            }
            // No receiver is not an error: nobody watches.
            let _ = self.tx.send((req.pool, e));
            Ok(version)
        })
    }

    async fn release(&self, pool: &str, key: &str, writer: u64) -> Result<bool, NodeError> {
        self.with(|i| {
            if !i.pools.contains_key(pool) {
                return Err(NodeError::NoSuchPool(pool.into()));
            }
            i.last_us = now_us().max(i.last_us + 1);
            Ok(match i.keys.get_mut(&(pool.to_string(), key.to_string())) {
                Some(l) if l.owner.is_some_and(|o| o.writer == writer) => {
                    l.owner = None;
                    true
                }
                _ => false,
            })
        })
    }

    fn owner(&self, pool: &str, key: &str) -> Result<Option<Owner>, NodeError> {
        let now = now_us();
        self.with_key(pool, key, |log| {
            Ok(log.and_then(|l| l.owner).filter(|o| o.alive_at(now)))
        })
    }

    async fn truncate(&self, pool: &str, key: &str, before: u64) -> Result<KeyBounds, NodeError> {
        self.with(|i| {
            if !i.pools.contains_key(pool) {
                return Err(NodeError::NoSuchPool(pool.into()));
            }
            let log = i
                .keys
                .get_mut(&(pool.to_string(), key.to_string()))
                .ok_or(NodeError::NotFound)?;
            let before = before.min(log.next);
            log.entries
                .retain(|e| e.version.next_key_version() > before);
            log.start = log.start.max(before);
            Ok(KeyBounds {
                start: log.start,
                next: log.next,
            })
        })
    }

    fn get(&self, pool: &str, key: &str) -> Result<Entry, NodeError> {
        self.with_key(pool, key, |log| {
            log.and_then(|l| l.entries.last())
                .filter(|e| !e.tombstone)
                .cloned()
                .ok_or(NodeError::NotFound)
        })
    }

    fn get_version(&self, pool: &str, key: &str, key_version: u64) -> Result<Entry, NodeError> {
        self.with_key(pool, key, |log| {
            log.and_then(|l| {
                l.entries.iter().find(|e| {
                    e.version.key_version <= key_version
                        && key_version < e.version.next_key_version()
                })
            })
            .cloned()
            .ok_or(NodeError::NotFound)
        })
    }

    fn read_from(
        &self,
        pool: &str,
        key: &str,
        from: u64,
        bytes_max: usize,
        entries_max: usize,
    ) -> Result<Vec<Entry>, NodeError> {
        self.with_key(pool, key, |log| {
            let mut out = Vec::new();
            let Some(l) = log else { return Ok(out) };
            let mut bytes = 0usize;
            for e in l
                .entries
                .iter()
                .filter(|e| e.version.next_key_version() > from)
            {
                if out.len() >= entries_max
                    || (!out.is_empty() && bytes + e.value.len() > bytes_max)
                {
                    break;
                }
                bytes += e.value.len();
                out.push(e.clone());
            }
            Ok(out)
        })
    }

    fn bounds(&self, pool: &str, key: &str) -> Result<KeyBounds, NodeError> {
        self.with_key(pool, key, |log| {
            let l = log.ok_or(NodeError::NotFound)?;
            Ok(KeyBounds {
                start: l.start.min(l.next),
                next: l.next,
            })
        })
    }

    fn version_at_or_after(
        &self,
        pool: &str,
        key: &str,
        t_us: u64,
        clock: Clock,
    ) -> Result<Option<u64>, NodeError> {
        self.with_key(pool, key, |log| {
            Ok(log.and_then(|l| {
                l.entries
                    .iter()
                    .find(|e| {
                        let t = match clock {
                            Clock::Platform => Some(e.version.time.physical_us),
                            Clock::Sensor => e.version.sensor_time_us,
                        };
                        t.is_some_and(|t| t >= t_us)
                    })
                    .map(|e| e.version.key_version)
            }))
        })
    }

    async fn get_at(
        &self,
        pool: &str,
        key: &str,
        at_us: u64,
        clock: Clock,
        wait: Duration,
    ) -> Result<Option<Entry>, NodeError> {
        self.wait_stable(at_us, wait).await?;
        self.at(pool, key, at_us, clock)
    }

    async fn snapshot(
        &self,
        keys: Vec<(String, String)>,
        at_us: u64,
        clock: Clock,
        wait: Duration,
    ) -> Result<Vec<Option<Entry>>, NodeError> {
        self.wait_stable(at_us, wait).await?;
        keys.iter()
            .map(|(p, k)| self.at(p, k, at_us, clock))
            .collect()
    }

    fn watch(
        &self,
        pool: &str,
        selector: Selector,
        from: WatchFrom,
    ) -> Result<MemWatch, NodeError> {
        // Replay and subscribe under the lock puts take: no gap, no duplicate at the switch.
        self.with(|i| {
            if !i.pools.contains_key(pool) {
                return Err(NodeError::NoSuchPool(pool.into()));
            }
            let replay = if from == WatchFrom::Now {
                VecDeque::new()
            } else {
                let mut all: Vec<Entry> = i
                    .keys
                    .iter()
                    .filter(|((p, k), _)| p == pool && matches(&selector, k))
                    .flat_map(|(_, l)| l.entries.iter().filter(|e| passes(from, e)).cloned())
                    .collect();
                all.sort_by_key(|e| e.version.shard_seq);
                all.into()
            };
            Ok(MemWatch {
                pool: pool.into(),
                sel: selector,
                replay,
                rx: self.tx.subscribe(),
            })
        })
    }
}
