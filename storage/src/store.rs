//! The store: pools, sharded keys, the apply path every mutation takes, and the reads.
//!
//! Every mutation is `apply(shard, stamp, op)` (or `apply_local`, which stamps it with the
//! shard's local hybrid clock first) under that shard's lock, so a shard's state is a pure
//! function of the stamped ops it applied, in order. Reads take the shard's read lock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;

use crate::config::StoreConfig;
use crate::error::StorageError;
use crate::key::{KeyState, Stored, CHECKPOINT_LSN, NO_LSN};
use crate::log::{Checkpoint, KeyMark, Log, LogConfig, OwnerMark, Record, RecordBody};
use crate::shard::{Fnv, PoolKeys, RingEvent, Shard};
use crate::types::*;
use crate::watch::Watch;

/// The shard that orders pool creation and deletion.
pub const META_SHARD: ShardId = 0;

/// Called (outside any lock) after a shard changed: an op applied, the frontier moved, or a
/// group commit made writes durable. An async driver wakes its watchers and waiters from it.
pub type NotifyHook = Arc<dyn Fn(ShardId) + Send + Sync>;

/// Called once the log position it waits for is durable (or the log failed).
pub type DurableCallback = Box<dyn FnOnce(Result<(), StorageError>) + Send>;

/// A pool as the store knows it.
#[derive(Debug)]
pub(crate) struct Pool {
    pub config: PoolConfig,
    /// Incarnation: the meta shard_seq that created it.
    pub id: u64,
}

/// Switches that plant bugs on purpose, so tests can show each invariant checker catching one.
#[derive(Debug, Default)]
pub(crate) struct Bugs {
    /// The local clock reuses the last time instead of ticking the logical counter.
    pub hlc_reuse: AtomicBool,
    /// The local clock skips a shard_seq.
    pub seq_skip: AtomicBool,
    /// A put advances the key's counter by one too many.
    pub counter_skip: AtomicBool,
    /// Sensor-indexed entries are not indexed.
    pub sensor_index_skip: AtomicBool,
    /// The ring never evicts.
    pub ring_no_evict: AtomicBool,
    /// The frontier ignores unsynced writes.
    pub frontier_ignores_unsynced: AtomicBool,
    /// Reads and watches of durable pools show versions before their fsync.
    pub reads_ignore_unsynced: AtomicBool,
}

/// The versioned, time-indexed object store. `Send + Sync`; every method takes `&self`.
pub struct Store {
    config: StoreConfig,
    shards: Vec<RwLock<Shard>>,
    pools: RwLock<BTreeMap<String, Arc<Pool>>>,
    generations: Arc<Vec<AtomicU64>>,
    hook: Arc<RwLock<Option<NotifyHook>>>,
    log: Option<Log>,
    /// Per shard: log records below this lsn are covered by the checkpoint.
    cuts: Mutex<Vec<u64>>,
    /// One checkpoint writer at a time.
    checkpointing: Mutex<()>,
    pub(crate) bugs: Bugs,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("config", &self.config)
            .field("durable", &self.log.is_some())
            .finish()
    }
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}
fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Checks a pool configuration against the limits.
/// Checks an [`Op::AlterPool`]: a valid config that keeps the pool's mode and durability.
pub fn validate_alter(current: &PoolConfig, new: &PoolConfig) -> Result<(), StorageError> {
    validate_pool_config(new)?;
    if new.mode != current.mode || new.durable != current.durable {
        return Err(StorageError::Invalid(
            "a pool's mode and durability are fixed at creation".into(),
        ));
    }
    Ok(())
}

pub fn validate_pool_config(c: &PoolConfig) -> Result<(), StorageError> {
    if c.name.is_empty() || c.name.len() > POOL_NAME_BYTES_MAX {
        return Err(StorageError::Invalid(format!(
            "pool name must be 1..={POOL_NAME_BYTES_MAX} bytes"
        )));
    }
    if !c
        .name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(StorageError::Invalid(
            "pool name may only hold [A-Za-z0-9._-]".into(),
        ));
    }
    if c.value_bytes_max == 0 || c.value_bytes_max > VALUE_BYTES_LIMIT {
        return Err(StorageError::Invalid(format!(
            "value_bytes_max must be 1..={VALUE_BYTES_LIMIT}"
        )));
    }
    if c.compact && c.mode != Mode::Versioned {
        return Err(StorageError::Invalid(
            "compact needs a versioned pool".into(),
        ));
    }
    if c.retention_ms
        .is_some_and(|ms| ms.checked_mul(1000).is_none())
    {
        return Err(StorageError::Invalid("retention_ms too large".into()));
    }
    Ok(())
}

/// Checks a key against the limits.
pub fn validate_key(key: &str) -> Result<(), StorageError> {
    if key.is_empty() || key.len() > KEY_BYTES_MAX {
        return Err(StorageError::Invalid(format!(
            "key must be 1..={KEY_BYTES_MAX} bytes"
        )));
    }
    Ok(())
}

impl Store {
    /// A store without a log: every pool behaves as volatile.
    pub fn new(config: StoreConfig) -> Result<Store, StorageError> {
        Store::build(config, None)
    }

    /// A store backed by a durable log in `log_config.dir`: recovers what the log holds (a torn
    /// tail is cut off; a corrupt record mid-segment is an error naming file and offset).
    pub fn open(config: StoreConfig, log_config: LogConfig) -> Result<Store, StorageError> {
        let (log, checkpoint, records) = Log::open(log_config)?;
        let store = Store::build(config, Some(log))?;
        if let Some(log) = &store.log {
            // After each group commit, tell the driver every shard may have moved (reads and
            // watches of durable pools now show what the commit made durable).
            let hook = store.hook.clone();
            let gens = store.generations.clone();
            let n = store.config.shards;
            log.set_hook(Arc::new(move || {
                for g in gens.iter() {
                    g.fetch_add(1, Ordering::AcqRel);
                }
                let h = read(&hook).clone();
                if let Some(h) = h {
                    for i in 0..n {
                        h(i);
                    }
                }
            }));
        }
        if let Some(c) = checkpoint {
            store.load_checkpoint(c)?;
        }
        let cuts = lock(&store.cuts).clone();
        for rec in records {
            if rec.lsn >= cuts.get(rec.shard as usize).copied().unwrap_or(0) {
                store.recover(rec)?;
            }
        }
        for s in &store.shards {
            let mut s = write(s);
            s.ops = s.last.shard_seq;
            s.frontier_us = s.last.time.physical_us;
        }
        Ok(store)
    }

    fn build(config: StoreConfig, log: Option<Log>) -> Result<Store, StorageError> {
        config.validate()?;
        let shard_count = config.shards as usize;
        let shards = (0..config.shards)
            .map(|i| RwLock::new(Shard::new(i)))
            .collect();
        let generations = Arc::new((0..config.shards).map(|_| AtomicU64::new(0)).collect());
        Ok(Store {
            config,
            shards,
            pools: RwLock::new(BTreeMap::new()),
            generations,
            hook: Arc::new(RwLock::new(None)),
            log,
            cuts: Mutex::new(vec![0; shard_count]),
            checkpointing: Mutex::new(()),
            bugs: Bugs::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Number of shards.
    pub fn shard_count(&self) -> u32 {
        self.config.shards
    }

    /// The shard a key lives in: a stable hash of pool and key (the same on every node).
    pub fn shard_of(&self, pool: &str, key: &str) -> ShardId {
        let mut h = Fnv::new();
        h.bytes(pool.as_bytes());
        h.bytes(key.as_bytes());
        (h.finish() % u64::from(self.config.shards)) as ShardId
    }

    /// The shard that orders `op`: pool ops go to [`META_SHARD`], the rest to their key's shard.
    pub fn shard_for(&self, op: &Op) -> ShardId {
        match op {
            Op::CreatePool(_) | Op::DeletePool { .. } | Op::AlterPool(_) => META_SHARD,
            Op::Retain { shard } => *shard,
            Op::Put { pool, key, .. }
            | Op::Truncate { pool, key, .. }
            | Op::Release { pool, key, .. } => self.shard_of(pool, key),
        }
    }

    /// Checks `op` against the limits and the pool's config before it is ordered (so garbage
    /// never takes a place in the order). `apply` checks again.
    pub fn validate_op(&self, op: &Op) -> Result<(), StorageError> {
        match op {
            Op::CreatePool(c) => validate_pool_config(c),
            Op::DeletePool { pool } => self.pool_arc(pool).map(|_| ()),
            Op::AlterPool(c) => validate_alter(&self.pool_arc(&c.name)?.config, c),
            Op::Retain { shard } => self.shard(*shard).map(|_| ()),
            Op::Put {
                pool,
                key,
                value,
                span,
                ..
            } => {
                let p = self.pool_arc(pool)?;
                validate_put(&p.config, key, value, *span)
            }
            Op::Release { pool, key, .. } => {
                validate_key(key)?;
                self.pool_arc(pool).map(|_| ())
            }
            Op::Truncate { pool, key, .. } => {
                validate_key(key)?;
                let p = self.pool_arc(pool)?;
                if p.config.mode != Mode::Versioned {
                    return Err(StorageError::WrongMode(
                        "truncate needs a versioned pool".into(),
                    ));
                }
                Ok(())
            }
        }
    }

    /// Sets the hook called after a shard changes.
    pub fn set_notify(&self, hook: NotifyHook) {
        *write(&self.hook) = Some(hook);
    }

    /// A counter that grows whenever `shard` changes (an op, the frontier, a sync): a driver
    /// reads it before polling and waits for it to move, so no wake-up is lost.
    pub fn generation(&self, shard: ShardId) -> u64 {
        self.generations
            .get(shard as usize)
            .map_or(0, |g| g.load(Ordering::Acquire))
    }

    fn changed(&self, shard: ShardId) {
        if let Some(g) = self.generations.get(shard as usize) {
            g.fetch_add(1, Ordering::AcqRel);
        }
        let hook = read(&self.hook).clone();
        if let Some(h) = hook {
            h(shard);
        }
    }

    pub(crate) fn shard(&self, shard: ShardId) -> Result<&RwLock<Shard>, StorageError> {
        self.shards
            .get(shard as usize)
            .ok_or_else(|| StorageError::Invalid(format!("no shard {shard}")))
    }

    pub(crate) fn pool_arc(&self, pool: &str) -> Result<Arc<Pool>, StorageError> {
        read(&self.pools)
            .get(pool)
            .cloned()
            .ok_or_else(|| StorageError::NoSuchPool(pool.to_owned()))
    }

    // ---------------------------------------------------------------- mutations

    /// Applies an op the ordering seam stamped. The stamp must be after the shard's last one
    /// (shard_seq and time both strictly greater) and, for a time read to stay final, after the
    /// frontier the orderer announced. Deterministic: the same stamped sequence gives the same
    /// shard on every replica. A failed op (conflict, unknown pool, bad input) still takes its
    /// place in the order and changes nothing else; only an IO error leaves the order untouched.
    pub fn apply(&self, shard: ShardId, stamp: Stamp, op: Op) -> Result<Applied, StorageError> {
        let mut s = write(self.shard(shard)?);
        if stamp.shard_seq <= s.last.shard_seq || stamp.time <= s.last.time {
            return Err(StorageError::StampOutOfOrder {
                last: s.last,
                got: stamp,
            });
        }
        if stamp.time.physical_us <= s.frontier_us {
            // The orderer promised (through `set_frontier`) that nothing at or below the
            // frontier would still come: accepting it would change a final answer.
            return Err(StorageError::StampBelowFrontier {
                frontier_us: s.frontier_us,
                got: stamp,
            });
        }
        if stamp.shard_seq != s.last.shard_seq + 1 {
            s.dense = false;
        }
        let r = self.apply_locked(&mut s, stamp, op);
        drop(s);
        self.after_apply(shard, r)
    }

    /// Stamps `op` with the shard's local hybrid clock (shard_seq + 1; time = the later of
    /// `now_us` and just after the last stamp and the frontier) and applies it: the
    /// single-node ordering seam.
    pub fn apply_local(
        &self,
        shard: ShardId,
        op: Op,
        now_us: u64,
    ) -> Result<Applied, StorageError> {
        let mut s = write(self.shard(shard)?);
        let mut stamp = s.next_local_stamp(now_us, self.bugs.hlc_reuse.load(Ordering::Relaxed));
        if self.bugs.seq_skip.load(Ordering::Relaxed) {
            stamp.shard_seq += 1;
        }
        let r = self.apply_locked(&mut s, stamp, op);
        drop(s);
        self.after_apply(shard, r)
    }

    fn after_apply(
        &self,
        shard: ShardId,
        r: Result<(Applied, Option<(String, u64)>), StorageError>,
    ) -> Result<Applied, StorageError> {
        let r = r.map(|(applied, sweep)| {
            if let Some((name, id)) = sweep {
                for (i, sh) in self.shards.iter().enumerate() {
                    let mut sh = write(sh);
                    if sh.pools.get(&name).is_some_and(|pk| pk.pool_id == id) {
                        sh.pools.remove(&name);
                    }
                    drop(sh);
                    if i as ShardId != shard {
                        self.changed(i as ShardId);
                    }
                }
            }
            applied
        });
        self.changed(shard);
        r
    }

    fn log_append(&self, rec: &Record) -> Result<Option<u64>, StorageError> {
        match &self.log {
            None => Ok(None),
            Some(log) => log.append(rec).map(Some),
        }
    }

    fn consume(s: &mut Shard, stamp: Stamp, lsn: Option<u64>) {
        s.last = stamp;
        s.ops += 1;
        if let Some(lsn) = lsn {
            s.unsynced.push_back((lsn, stamp.time));
        }
    }

    #[allow(clippy::type_complexity)]
    fn apply_locked(
        &self,
        s: &mut Shard,
        stamp: Stamp,
        op: Op,
    ) -> Result<(Applied, Option<(String, u64)>), StorageError> {
        // Drop the synced prefix of the unsynced queue here too, so it stays short even if the
        // driver rarely advances the frontier.
        if let Some(log) = &self.log {
            let synced = log.synced_lsn();
            while s.unsynced.front().is_some_and(|&(lsn, _)| lsn <= synced) {
                s.unsynced.pop_front();
            }
        }
        // Deterministic failures consume the stamp; IO failures do not.
        macro_rules! fail {
            ($e:expr) => {{
                Self::consume(s, stamp, None);
                return Err($e);
            }};
        }
        match op {
            Op::CreatePool(config) => {
                if let Err(e) = validate_pool_config(&config) {
                    fail!(e);
                }
                let mut pools = write(&self.pools);
                if let Some(p) = pools.get(&config.name) {
                    if p.config == config {
                        Self::consume(s, stamp, None);
                        return Ok((
                            Applied {
                                stamp,
                                outcome: Outcome::PoolCreated,
                                lsn: None,
                            },
                            None,
                        ));
                    }
                    fail!(StorageError::PoolExists(config.name));
                }
                if pools.len() >= self.config.pools_max {
                    fail!(StorageError::Overloaded(format!(
                        "at most {} pools",
                        self.config.pools_max
                    )));
                }
                let rec = Record {
                    shard: s.id,
                    stamp,
                    body: RecordBody::CreatePool(config.clone()),
                    lsn: 0,
                };
                let lsn = self.log_append(&rec)?;
                Self::consume(s, stamp, lsn);
                pools.insert(
                    config.name.clone(),
                    Arc::new(Pool {
                        config,
                        id: stamp.shard_seq,
                    }),
                );
                Ok((
                    Applied {
                        stamp,
                        outcome: Outcome::PoolCreated,
                        lsn,
                    },
                    None,
                ))
            }
            Op::DeletePool { pool } => {
                let mut pools = write(&self.pools);
                let Some(p) = pools.get(&pool).cloned() else {
                    fail!(StorageError::NoSuchPool(pool));
                };
                let rec = Record {
                    shard: s.id,
                    stamp,
                    body: RecordBody::DeletePool {
                        pool: pool.clone(),
                        pool_id: p.id,
                    },
                    lsn: 0,
                };
                let lsn = self.log_append(&rec)?;
                Self::consume(s, stamp, lsn);
                pools.remove(&pool);
                Ok((
                    Applied {
                        stamp,
                        outcome: Outcome::PoolDeleted,
                        lsn,
                    },
                    Some((pool, p.id)),
                ))
            }
            Op::AlterPool(config) => {
                let mut pools = write(&self.pools);
                let Some(p) = pools.get(&config.name).cloned() else {
                    fail!(StorageError::NoSuchPool(config.name));
                };
                if let Err(e) = validate_alter(&p.config, &config) {
                    fail!(e);
                }
                let rec = Record {
                    shard: s.id,
                    stamp,
                    body: RecordBody::AlterPool {
                        pool_id: p.id,
                        config: config.clone(),
                    },
                    lsn: 0,
                };
                let lsn = self.log_append(&rec)?;
                Self::consume(s, stamp, lsn);
                pools.insert(config.name.clone(), Arc::new(Pool { config, id: p.id }));
                Ok((
                    Applied {
                        stamp,
                        outcome: Outcome::PoolAltered,
                        lsn,
                    },
                    None,
                ))
            }
            Op::Retain { shard } => {
                if shard != s.id {
                    fail!(StorageError::Invalid(format!(
                        "retain for shard {shard} ordered in shard {}",
                        s.id
                    )));
                }
                let keys = self.retention_plan(s, stamp.time);
                let lsn = if keys.is_empty() {
                    None
                } else {
                    self.log_append(&Record {
                        shard: s.id,
                        stamp,
                        body: RecordBody::Retain { keys: keys.clone() },
                        lsn: 0,
                    })?
                };
                Self::consume(s, stamp, lsn);
                let removed = Self::retain_keys(s, &keys);
                Ok((
                    Applied {
                        stamp,
                        outcome: Outcome::Retained(removed),
                        lsn,
                    },
                    None,
                ))
            }
            Op::Put {
                pool,
                key,
                value,
                sensor_time_us,
                span,
                compaction_key,
                expect,
                tombstone,
            } => {
                // The pools lock is held until the put is logged and installed, so an
                // AlterPool (which logs under the write lock) is wholly before or after it in
                // log order too, and recovery applies the same config.
                let pools_guard = read(&self.pools);
                let p = match pools_guard.get(&pool).cloned() {
                    Some(p) => p,
                    None => fail!(StorageError::NoSuchPool(pool)),
                };
                let value = if tombstone { Bytes::new() } else { value };
                if let Err(e) = validate_put(&p.config, &key, &value, span) {
                    fail!(e);
                }
                let (next, newest, owner) = match s.pools.get(&pool).filter(|pk| pk.pool_id == p.id)
                {
                    Some(pk) => pk
                        .keys
                        .get(&key)
                        .map_or((0, None, None), |ks| (ks.next, ks.newest, ks.owner)),
                    None => (0, None, None),
                };
                // Ownership first (a refused writer learns who owns the key, not its version).
                let claim = match expect {
                    Expect::Owned { claim, .. } => Some(claim),
                    _ => None,
                };
                let owner_after = match crate::owner::arbitrate(
                    owner,
                    claim,
                    tombstone,
                    stamp.time.physical_us,
                ) {
                    Ok(o) => o,
                    Err(e) => fail!(e),
                };
                if !expect.holds(newest) {
                    fail!(StorageError::Conflict {
                        current: newest.map(|(kv, _)| kv)
                    });
                }
                let late = sensor_time_us.is_some_and(|st| {
                    st.saturating_add(p.config.lateness_us) < stamp.time.physical_us
                });
                let version = Version {
                    key_version: next,
                    span,
                    shard_seq: stamp.shard_seq,
                    time: stamp.time,
                    sensor_time_us,
                    late,
                };
                let logged = p.config.durable && p.config.mode != Mode::Stateless;
                let owner_change = (owner_after != owner).then_some(owner_after);
                let stored = Stored {
                    version,
                    value,
                    tombstone,
                    compaction_key: if p.config.compact {
                        compaction_key
                    } else {
                        None
                    },
                    lsn: NO_LSN,
                    dead: false,
                };
                // Retention's result is decided now and logged with the put.
                let retained = match p.config.mode {
                    Mode::Versioned => {
                        let (bytes_max, floor) = retention_limits(&p.config, stamp.time);
                        let ks = s
                            .pools
                            .get(&pool)
                            .filter(|pk| pk.pool_id == p.id)
                            .and_then(|pk| pk.keys.get(&key));
                        Some(ks.map_or(0, |ks| {
                            ks.retention_start(
                                Some((stored.value.len() as u64, stored.compaction_key.as_ref())),
                                bytes_max,
                                floor,
                            )
                        }))
                    }
                    _ => None,
                };
                let lsn = if logged {
                    self.log_append(&Record {
                        shard: s.id,
                        stamp,
                        body: RecordBody::Put {
                            pool: pool.clone(),
                            pool_id: p.id,
                            key: key.clone(),
                            version,
                            value: stored.value.clone(),
                            tombstone,
                            compaction_key: stored.compaction_key.clone(),
                            retained,
                            owner: owner_change,
                        },
                        lsn: 0,
                    })?
                } else {
                    None
                };
                Self::consume(s, stamp, lsn);
                let stored = Stored {
                    lsn: lsn.unwrap_or(NO_LSN),
                    ..stored
                };
                let retention = retained.map_or(Retention::Skip, Retention::To);
                self.install(s, &p, &key, stored, retention);
                if let Some(o) = owner_change {
                    if let Some(ks) = Self::pool_keys(s, &p).keys.get_mut(&key) {
                        ks.owner = o;
                    }
                }
                Ok((
                    Applied {
                        stamp,
                        outcome: Outcome::Put(version),
                        lsn,
                    },
                    None,
                ))
            }
            Op::Release { pool, key, writer } => {
                let p = match self.pool_arc(&pool) {
                    Ok(p) => p,
                    Err(e) => fail!(e),
                };
                let released = s
                    .pools
                    .get(&pool)
                    .filter(|pk| pk.pool_id == p.id)
                    .and_then(|pk| pk.keys.get(&key))
                    .is_some_and(|ks| ks.owner.is_some_and(|o| o.writer == writer));
                let logged = p.config.durable && p.config.mode != Mode::Stateless;
                let lsn = if released && logged {
                    self.log_append(&Record {
                        shard: s.id,
                        stamp,
                        body: RecordBody::Owner {
                            pool: pool.clone(),
                            pool_id: p.id,
                            key: key.clone(),
                            owner: None,
                        },
                        lsn: 0,
                    })?
                } else {
                    None
                };
                Self::consume(s, stamp, lsn);
                if released {
                    if let Some(ks) = Self::pool_keys(s, &p).keys.get_mut(&key) {
                        ks.owner = None;
                    }
                }
                Ok((
                    Applied {
                        stamp,
                        outcome: Outcome::Released(released),
                        lsn,
                    },
                    None,
                ))
            }
            Op::Truncate { pool, key, before } => {
                let p = match self.pool_arc(&pool) {
                    Ok(p) => p,
                    Err(e) => fail!(e),
                };
                if p.config.mode != Mode::Versioned {
                    fail!(StorageError::WrongMode(
                        "truncate needs a versioned pool".into()
                    ));
                }
                let Some(next) = s
                    .pools
                    .get(&pool)
                    .filter(|pk| pk.pool_id == p.id)
                    .and_then(|pk| pk.keys.get(&key))
                    .map(|ks| ks.next)
                else {
                    fail!(StorageError::NotFound);
                };
                // The record holds the result, the point actually truncated to: replayed on
                // counters a checkpoint set later, an unclamped `before` would cut more.
                let before = before.min(next);
                let lsn = if p.config.durable {
                    self.log_append(&Record {
                        shard: s.id,
                        stamp,
                        body: RecordBody::Truncate {
                            pool: pool.clone(),
                            pool_id: p.id,
                            key: key.clone(),
                            before,
                        },
                        lsn: 0,
                    })?
                } else {
                    None
                };
                Self::consume(s, stamp, lsn);
                let bounds = Self::truncate_key(s, &p, &key, before);
                Ok((
                    Applied {
                        stamp,
                        outcome: Outcome::Truncated(bounds),
                        lsn,
                    },
                    None,
                ))
            }
        }
    }

    /// What an [`Op::Retain`] at `now` removes: (pool, incarnation, key, start after) for
    /// every key whose start moves, at most [`RETAIN_KEYS_MAX`] (the rest wait for the next
    /// run), in key order.
    fn retention_plan(&self, s: &Shard, now: Hlc) -> Vec<(String, u64, String, u64)> {
        let pools = read(&self.pools);
        let mut plan = Vec::new();
        for (name, pk) in &s.pools {
            let Some(p) = pools.get(name).filter(|p| p.id == pk.pool_id) else {
                continue;
            };
            let (bytes_max, floor) = retention_limits(&p.config, now);
            if bytes_max.is_none() && floor.is_none() {
                continue;
            }
            for (k, ks) in &pk.keys {
                let to = ks.retention_start(None, bytes_max, floor);
                if to > ks.start {
                    plan.push((name.clone(), pk.pool_id, k.clone(), to));
                    if plan.len() >= RETAIN_KEYS_MAX {
                        return plan;
                    }
                }
            }
        }
        plan
    }

    /// Carries out a retention plan (live, or replayed from its record). Returns the number
    /// of versions removed.
    fn retain_keys(s: &mut Shard, keys: &[(String, u64, String, u64)]) -> u64 {
        let mut removed = 0u64;
        for (pool, pool_id, key, to) in keys {
            let Some(ks) = s
                .pools
                .get_mut(pool)
                .filter(|pk| pk.pool_id == *pool_id)
                .and_then(|pk| pk.keys.get_mut(key))
            else {
                continue;
            };
            let before = ks.entries.len() - ks.dead;
            ks.retain_to(*to);
            removed += (before - (ks.entries.len() - ks.dead)) as u64;
        }
        removed
    }

    /// Whether an [`Op::Retain`] of `shard` at `now_us` would remove anything (so a driver
    /// running retention periodically orders an op only when there is work).
    pub fn retention_due(&self, shard: ShardId, now_us: u64) -> Result<bool, StorageError> {
        let s = read(self.shard(shard)?);
        let now = Hlc {
            physical_us: now_us,
            logical: 0,
        };
        Ok(!self.retention_plan(&s, now).is_empty())
    }

    fn pool_keys<'a>(s: &'a mut Shard, pool: &Pool) -> &'a mut PoolKeys {
        let pk = s
            .pools
            .entry(pool.config.name.clone())
            .or_insert_with(|| PoolKeys {
                pool_id: pool.id,
                compact: pool.config.compact,
                keys: BTreeMap::new(),
            });
        if pk.pool_id != pool.id {
            *pk = PoolKeys {
                pool_id: pool.id,
                compact: pool.config.compact,
                keys: BTreeMap::new(),
            };
        }
        pk
    }

    fn truncate_key(s: &mut Shard, pool: &Pool, key: &str, before: u64) -> KeyBounds {
        let pk = Self::pool_keys(s, pool);
        match pk.keys.get_mut(key) {
            Some(ks) => {
                ks.truncate(before);
                KeyBounds {
                    start: ks.start,
                    next: ks.next,
                }
            }
            None => KeyBounds::default(),
        }
    }

    /// Stores (or, stateless, counts) an entry whose version is already decided, applies
    /// retention as `retention` says, and tells watchers.
    fn install(
        &self,
        s: &mut Shard,
        pool: &Pool,
        key: &str,
        mut stored: Stored,
        retention: Retention,
    ) {
        let c = &pool.config;
        if self.bugs.counter_skip.load(Ordering::Relaxed) {
            stored.version.key_version += 1;
        }
        if stored.version.late {
            s.late += 1;
        }
        let event = RingEvent {
            pool_id: pool.id,
            entry: stored.to_entry(key),
            lsn: stored.lsn,
        };
        let sensor_skip = self.bugs.sensor_index_skip.load(Ordering::Relaxed);
        let pk = Self::pool_keys(s, pool);
        // A compaction key is stored only while the pool compacts (or comes from a record or
        // an image that had one); once a key may have compaction gaps its pool stays marked.
        pk.compact |= stored.compaction_key.is_some();
        let ks = pk.keys.entry(key.to_owned()).or_default();
        match c.mode {
            Mode::Stateless => ks.count_only(&stored.version, stored.tombstone),
            Mode::Latest => ks.replace(stored),
            Mode::Versioned => {
                let start_after = match retention {
                    Retention::Skip => None,
                    Retention::To(s) => Some(s),
                    Retention::Config => {
                        let (bytes_max, floor) = retention_limits(c, stored.version.time);
                        Some(ks.retention_start(
                            Some((stored.value.len() as u64, stored.compaction_key.as_ref())),
                            bytes_max,
                            floor,
                        ))
                    }
                };
                let had_sensor = ks.sensor.is_some();
                ks.push(stored);
                if sensor_skip && had_sensor {
                    if let (Some(idx), Some(e)) = (&mut ks.sensor, ks.entries.back()) {
                        idx.remove(&(e.sensor_key(), e.version.key_version));
                    }
                }
                if let Some(to) = start_after {
                    ks.retain_to(to);
                }
            }
        }
        let (events_max, bytes_max) = if self.bugs.ring_no_evict.load(Ordering::Relaxed) {
            (usize::MAX, usize::MAX)
        } else {
            (
                self.config.watch_ring_events_max,
                self.config.watch_ring_bytes_max,
            )
        };
        s.ring_push(event, events_max, bytes_max);
    }

    /// Installs a checkpoint (before the records from its cut on are replayed).
    fn load_checkpoint(&self, c: Checkpoint) -> Result<(), StorageError> {
        let (ck_cut, ck_shard_cuts, ck_entries) = (c.cut_lsn, c.shard_cuts, c.entries);
        let ck_owners = c.owners;
        for (sid, stamp) in c.stamps {
            let mut s = write(self.shard(sid)?);
            if stamp > s.last {
                s.last = stamp;
            }
        }
        {
            let mut pools = write(&self.pools);
            for (id, config) in c.pools {
                pools.insert(config.name.clone(), Arc::new(Pool { config, id }));
            }
        }
        for m in c.keys {
            let Ok(p) = self.pool_arc(&m.pool) else {
                continue;
            };
            if p.id != m.pool_id {
                continue;
            }
            let sid = self.shard_of(&m.pool, &m.key);
            if sid != m.shard {
                return Err(StorageError::Config(
                    "the log was written with a different shard count".into(),
                ));
            }
            let mut s = write(self.shard(sid)?);
            let ks = Self::pool_keys(&mut s, &p).keys.entry(m.key).or_default();
            ks.start = m.start;
            ks.next = m.next;
            ks.newest = m.newest;
        }
        {
            let mut cuts = lock(&self.cuts);
            for c in cuts.iter_mut() {
                *c = ck_cut;
            }
            for (sid, cut) in ck_shard_cuts {
                if let Some(c) = cuts.get_mut(sid as usize) {
                    *c = cut;
                }
            }
        }
        // Entries that live only in the checkpoint (a state transfer installed them).
        let mut ck_entries = ck_entries;
        ck_entries.sort_by_key(|r| (r.shard, r.stamp.shard_seq));
        for mut rec in ck_entries {
            rec.lsn = CHECKPOINT_LSN;
            self.recover(rec)?;
        }
        for m in ck_owners {
            self.install_owner(m)?;
        }
        Ok(())
    }

    /// Installs a saved owner (checkpoint or state-transfer image).
    fn install_owner(&self, m: OwnerMark) -> Result<(), StorageError> {
        let Ok(p) = self.pool_arc(&m.pool) else {
            return Ok(());
        };
        if p.id != m.pool_id {
            return Ok(());
        }
        let sid = self.shard_of(&m.pool, &m.key);
        if sid != m.shard {
            return Err(StorageError::Invalid(
                "owner of a key in another shard (or another shard count)".into(),
            ));
        }
        let mut s = write(self.shard(sid)?);
        Self::pool_keys(&mut s, &p)
            .keys
            .entry(m.key)
            .or_default()
            .owner = Some(m.owner);
        Ok(())
    }

    /// Replays one recovered log record. Records are results (versions already decided), and
    /// replaying them on top of a checkpoint taken later is harmless: versions already below a
    /// key's start are skipped, records of a pool incarnation that no longer exists are
    /// ignored.
    fn recover(&self, rec: Record) -> Result<(), StorageError> {
        let sid = rec.shard;
        let mut s = write(self.shard(sid)?);
        if rec.stamp > s.last {
            s.last = rec.stamp;
        }
        let id = rec.stamp.shard_seq;
        match rec.body {
            RecordBody::CreatePool(config) => {
                let mut pools = write(&self.pools);
                let newer = pools.get(&config.name).is_some_and(|p| p.id >= id);
                if !newer {
                    pools.insert(config.name.clone(), Arc::new(Pool { config, id }));
                }
            }
            RecordBody::DeletePool { pool, pool_id } => {
                let mut pools = write(&self.pools);
                if pools.get(&pool).is_some_and(|p| p.id == pool_id) {
                    pools.remove(&pool);
                }
                drop(pools);
                drop(s);
                for sh in &self.shards {
                    let mut sh = write(sh);
                    if sh.pools.get(&pool).is_some_and(|pk| pk.pool_id == pool_id) {
                        sh.pools.remove(&pool);
                    }
                }
            }
            RecordBody::Put {
                pool,
                pool_id,
                key,
                version,
                value,
                tombstone,
                compaction_key,
                retained,
                owner,
            } => {
                let Ok(p) = self.pool_arc(&pool) else {
                    return Ok(());
                };
                if p.id != pool_id {
                    return Ok(());
                }
                if self.shard_of(&pool, &key) != sid {
                    return Err(StorageError::Config(
                        "the log was written with a different shard count".into(),
                    ));
                }
                // Owner changes replay in log order even when the version itself is already
                // covered: the last one in the log is the key's owner (or the checkpoint's).
                if let Some(o) = owner {
                    Self::pool_keys(&mut s, &p)
                        .keys
                        .entry(key.clone())
                        .or_default()
                        .owner = o;
                }
                if let Some(ks) = s
                    .pools
                    .get(&pool)
                    .filter(|pk| pk.pool_id == p.id)
                    .and_then(|pk| pk.keys.get(&key))
                {
                    let below_start = version.next_key_version() <= ks.start && ks.next > 0;
                    let older = ks
                        .entries
                        .back()
                        .is_some_and(|b| version.key_version < b.version.next_key_version());
                    if below_start || older {
                        return Ok(());
                    }
                }
                let stored = Stored {
                    version,
                    value,
                    tombstone,
                    compaction_key,
                    lsn: rec.lsn,
                    dead: false,
                };
                let retention = if rec.lsn == CHECKPOINT_LSN {
                    Retention::Skip
                } else {
                    retained.map_or(Retention::Config, Retention::To)
                };
                self.install(&mut s, &p, &key, stored, retention);
            }
            RecordBody::Truncate {
                pool,
                pool_id,
                key,
                before,
            } => {
                if let Ok(p) = self.pool_arc(&pool) {
                    if p.id == pool_id {
                        Self::truncate_key(&mut s, &p, &key, before);
                    }
                }
            }
            RecordBody::AlterPool { pool_id, config } => {
                let mut pools = write(&self.pools);
                if pools.get(&config.name).is_some_and(|p| p.id == pool_id) {
                    pools.insert(
                        config.name.clone(),
                        Arc::new(Pool {
                            config,
                            id: pool_id,
                        }),
                    );
                }
            }
            RecordBody::Retain { keys } => {
                Self::retain_keys(&mut s, &keys);
            }
            RecordBody::Owner {
                pool,
                pool_id,
                key,
                owner,
            } => {
                if let Ok(p) = self.pool_arc(&pool) {
                    if p.id == pool_id {
                        if let Some(ks) = Self::pool_keys(&mut s, &p).keys.get_mut(&key) {
                            ks.owner = owner;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The whole state of `shard` as bytes (state transfer: see [`crate::transfer`]): its last
    /// stamp, the pools its keys belong to, every key's counters and kept entries.
    pub fn export_shard(&self, shard: ShardId) -> Result<Vec<u8>, StorageError> {
        let pools = read(&self.pools).clone();
        let s = read(self.shard(shard)?);
        let mut meta = Checkpoint {
            stamps: vec![(s.id, s.last)],
            ..Checkpoint::default()
        };
        let mut entries = Vec::new();
        for (pname, pk) in &s.pools {
            let Some(p) = pools.get(pname).filter(|p| p.id == pk.pool_id) else {
                continue;
            };
            meta.pools.push((p.id, p.config.clone()));
            for (k, ks) in &pk.keys {
                meta.keys.push(KeyMark {
                    shard: s.id,
                    pool: pname.clone(),
                    pool_id: pk.pool_id,
                    key: k.clone(),
                    start: ks.start,
                    next: ks.next,
                    newest: ks.newest,
                });
                if let Some(owner) = ks.owner {
                    meta.owners.push(OwnerMark {
                        shard: s.id,
                        pool: pname.clone(),
                        pool_id: pk.pool_id,
                        key: k.clone(),
                        owner,
                    });
                }
                for e in ks.entries.iter().filter(|e| !e.dead) {
                    entries.push(put_record(s.id, pname, pk.pool_id, k, e));
                }
            }
        }
        Ok(crate::transfer::ShardImage { meta, entries }.encode())
    }

    /// Replaces `shard`'s state with an image from [`Store::export_shard`] (a joiner's state
    /// transfer); afterwards apply the ops stamped after the image's stamp. Pools the image
    /// needs are created if missing (same incarnation required if present). Fails without
    /// effect on a malformed image, a pool incarnation mismatch or an image older than the
    /// shard. On a store with a log, the imported state of durable pools is made durable by
    /// writing a checkpoint that holds it and covers every earlier record of the shard; if
    /// that write fails the error is returned, the state is imported in memory only, and a
    /// restart brings back the old state (transfer again).
    pub fn import_shard(&self, shard: ShardId, image: &[u8]) -> Result<(), StorageError> {
        let img = crate::transfer::ShardImage::decode(image, crate::log::RECORD_BYTES_MAX_DEFAULT)?;
        let stamp = match img.meta.stamps.as_slice() {
            [(sid, st)] if *sid == shard => *st,
            _ => return Err(StorageError::Invalid("image is for another shard".into())),
        };
        for (id, c) in &img.meta.pools {
            validate_pool_config(c)?;
            if let Some(p) = read(&self.pools).get(&c.name) {
                if p.id != *id {
                    return Err(StorageError::Invalid(format!(
                        "pool {} is incarnation {} here, {id} in the image",
                        c.name, p.id
                    )));
                }
            }
        }
        for m in &img.meta.keys {
            validate_key(&m.key)?;
            if self.shard_of(&m.pool, &m.key) != shard {
                return Err(StorageError::Invalid("image key in another shard".into()));
            }
        }
        {
            let mut pools = write(&self.pools);
            for (id, c) in &img.meta.pools {
                pools.entry(c.name.clone()).or_insert_with(|| {
                    Arc::new(Pool {
                        config: c.clone(),
                        id: *id,
                    })
                });
            }
        }
        let mut s = write(self.shard(shard)?);
        if stamp < s.last {
            return Err(StorageError::Invalid("image older than the shard".into()));
        }
        s.pools.clear();
        s.ring.clear();
        s.ring_bytes = 0;
        s.ring_evicted_seq = stamp.shard_seq;
        s.unsynced.clear();
        s.last = stamp;
        s.ops = stamp.shard_seq;
        s.dense = false;
        s.frontier_us = s.frontier_us.max(stamp.time.physical_us.saturating_sub(1));
        for m in img.meta.keys {
            let Ok(p) = self.pool_arc(&m.pool) else {
                continue;
            };
            let ks = Self::pool_keys(&mut s, &p).keys.entry(m.key).or_default();
            ks.start = m.start;
            ks.next = m.next;
            ks.newest = m.newest;
        }
        for m in img.meta.owners {
            let Ok(p) = self.pool_arc(&m.pool) else {
                continue;
            };
            if p.id == m.pool_id && self.shard_of(&m.pool, &m.key) == shard {
                Self::pool_keys(&mut s, &p)
                    .keys
                    .entry(m.key)
                    .or_default()
                    .owner = Some(m.owner);
            }
        }
        for rec in img.entries {
            if let RecordBody::Put {
                pool,
                key,
                version,
                value,
                tombstone,
                compaction_key,
                ..
            } = rec.body
            {
                let Ok(p) = self.pool_arc(&pool) else {
                    continue;
                };
                // Durable pools' imported entries live in the checkpoint written below.
                let lsn = if self.log.is_some() && p.config.durable {
                    CHECKPOINT_LSN
                } else {
                    NO_LSN
                };
                let stored = Stored {
                    version,
                    value,
                    tombstone,
                    compaction_key,
                    lsn,
                    dead: false,
                };
                self.install(&mut s, &p, &key, stored, Retention::Skip);
            }
        }
        // The image's entries are history, not new events for watchers.
        s.ring.clear();
        s.ring_bytes = 0;
        s.late = 0;
        // Every record of this shard logged so far describes the state just replaced.
        let raise = self.log.as_ref().map(|l| (shard, l.written_lsn() + 1));
        drop(s);
        self.changed(shard);
        if let (Some(log), Some(raise)) = (&self.log, raise) {
            let _one = lock(&self.checkpointing);
            let c = self.build_checkpoint(0, Some(raise));
            log.write_checkpoint(&c)?;
            self.adopt_cuts(&c);
        }
        Ok(())
    }

    /// Log retention: deletes every closed segment that holds nothing the store still needs.
    /// Kept entries pin their segments (so retention, truncation, compaction and overwrites in
    /// latest pools are what free them); pool configurations, shard stamps and key counters
    /// are first saved in a checkpoint. Returns the number of segments deleted. The driver
    /// calls it now and then.
    pub fn compact_log(&self) -> Result<usize, StorageError> {
        let Some(log) = &self.log else { return Ok(0) };
        let _one = lock(&self.checkpointing);
        let cut = self.min_live_lsn().min(log.synced_lsn() + 1);
        let segs = log.segments();
        let deletable = segs.len() > 1 && segs[0].1 <= cut;
        if !deletable {
            return Ok(0);
        }
        let c = self.build_checkpoint(cut, None);
        log.write_checkpoint(&c)?;
        self.adopt_cuts(&c);
        log.remove_segments_below(cut)
    }

    fn adopt_cuts(&self, c: &Checkpoint) {
        let mut cuts = lock(&self.cuts);
        for &(sid, cut) in &c.shard_cuts {
            if let Some(x) = cuts.get_mut(sid as usize) {
                *x = cut;
            }
        }
    }

    /// The checkpoint of the current state: pools, stamps, per-shard cuts (each at least
    /// `cut`; `raise` lifts one shard's further), counters of keys their kept entries do not
    /// imply, and the entries that live only in the checkpoint.
    fn build_checkpoint(&self, cut: u64, raise: Option<(ShardId, u64)>) -> Checkpoint {
        let pools: Vec<(u64, PoolConfig)> = read(&self.pools)
            .values()
            .map(|p| (p.id, p.config.clone()))
            .collect();
        let durable: BTreeMap<String, bool> = pools
            .iter()
            .map(|(_, c)| (c.name.clone(), c.durable))
            .collect();
        // Pools whose puts are logged: their owners are kept across restarts.
        let logged: BTreeMap<String, bool> = pools
            .iter()
            .map(|(_, c)| (c.name.clone(), c.durable && c.mode != Mode::Stateless))
            .collect();
        let old_cuts = lock(&self.cuts).clone();
        let mut c = Checkpoint {
            cut_lsn: cut,
            pools,
            ..Checkpoint::default()
        };
        for sh in &self.shards {
            let s = read(sh);
            let mut sc = old_cuts.get(s.id as usize).copied().unwrap_or(0).max(cut);
            if let Some((rs, rc)) = raise {
                if rs == s.id {
                    sc = sc.max(rc);
                }
            }
            c.shard_cuts.push((s.id, sc));
            c.stamps.push((s.id, s.last));
            for (pname, pk) in &s.pools {
                let pool_durable = durable.get(pname).copied().unwrap_or(false);
                for (k, ks) in &pk.keys {
                    // A replay from a fresh key starts it at its first replayed entry. In a
                    // compact pool records of compacted-away versions may lie between the cut
                    // and the first kept entry (and `start` may sit in a gap), so those keys
                    // are always marked.
                    let implied = !pk.compact
                        && ks
                            .entries
                            .front()
                            .is_some_and(|f| f.version.key_version == ks.start);
                    if !implied || ks.entries.iter().any(|e| e.lsn == CHECKPOINT_LSN) {
                        c.keys.push(KeyMark {
                            shard: s.id,
                            pool: pname.clone(),
                            pool_id: pk.pool_id,
                            key: k.clone(),
                            start: ks.start,
                            next: ks.next,
                            newest: ks.newest,
                        });
                    }
                    if let Some(owner) = ks.owner {
                        if logged.get(pname).copied().unwrap_or(false) {
                            c.owners.push(OwnerMark {
                                shard: s.id,
                                pool: pname.clone(),
                                pool_id: pk.pool_id,
                                key: k.clone(),
                                owner,
                            });
                        }
                    }
                    if !pool_durable {
                        continue;
                    }
                    for e in ks
                        .entries
                        .iter()
                        .filter(|e| !e.dead && e.lsn == CHECKPOINT_LSN)
                    {
                        c.entries.push(put_record(s.id, pname, pk.pool_id, k, e));
                    }
                }
            }
        }
        c
    }

    // ---------------------------------------------------------------- durability & frontier

    /// Calls `cb` once log position `lsn` is durable (at once if it already is, or if there is
    /// no log). With `SyncPolicy::None` that is once it is written.
    pub fn on_durable(&self, lsn: u64, cb: DurableCallback) {
        match &self.log {
            None => cb(Ok(())),
            Some(log) => log.on_durable(lsn, cb),
        }
    }

    /// Blocks until `lsn` is durable (for threads; the async broker uses `on_durable`).
    pub fn wait_durable(&self, lsn: u64) -> Result<(), StorageError> {
        match &self.log {
            None => Ok(()),
            Some(log) => log.wait_durable(lsn),
        }
    }

    /// The log, if the store has one.
    pub fn log(&self) -> Option<&Log> {
        self.log.as_ref()
    }

    /// Moves every shard's stable frontier to just below `now_us`, but never past a durable op
    /// that is not synced yet. After this, local stamps are all > the frontier, so a time read at
    /// T ≤ frontier is final. The single-node driver calls it periodically and before time reads.
    pub fn advance_frontier(&self, now_us: u64) {
        let synced = self.log.as_ref().map_or(u64::MAX, |l| l.synced_lsn());
        let ignore = self.bugs.frontier_ignores_unsynced.load(Ordering::Relaxed);
        for (i, sh) in self.shards.iter().enumerate() {
            let mut s = write(sh);
            while s.unsynced.front().is_some_and(|&(lsn, _)| lsn <= synced) {
                s.unsynced.pop_front();
            }
            let mut f = now_us.saturating_sub(1);
            if !ignore {
                if let Some(&(_, t)) = s.unsynced.front() {
                    f = f.min(t.physical_us.saturating_sub(1));
                }
            }
            let moved = f > s.frontier_us;
            if moved {
                s.frontier_us = f;
            }
            drop(s);
            if moved {
                self.changed(i as ShardId);
            }
        }
    }

    /// Moves a shard's frontier to `frontier_us` (never backwards, never past an unsynced local
    /// write): for an external orderer that knows its group's stability frontier. The orderer
    /// must then only hand over stamps with time > the frontier.
    pub fn set_frontier(&self, shard: ShardId, frontier_us: u64) -> Result<(), StorageError> {
        let synced = self.log.as_ref().map_or(u64::MAX, |l| l.synced_lsn());
        let mut s = write(self.shard(shard)?);
        while s.unsynced.front().is_some_and(|&(lsn, _)| lsn <= synced) {
            s.unsynced.pop_front();
        }
        let mut f = frontier_us;
        if let Some(&(_, t)) = s.unsynced.front() {
            f = f.min(t.physical_us.saturating_sub(1));
        }
        let moved = f > s.frontier_us;
        if moved {
            s.frontier_us = f;
        }
        drop(s);
        if moved {
            self.changed(shard);
        }
        Ok(())
    }

    /// A shard's stable frontier (µs): everything with platform time ≤ it is applied and synced.
    pub fn frontier_us(&self, shard: ShardId) -> u64 {
        self.shard(shard).map_or(0, |s| read(s).frontier_us)
    }

    /// A shard's last applied stamp.
    pub fn last_stamp(&self, shard: ShardId) -> Stamp {
        self.shard(shard).map_or(Stamp::default(), |s| read(s).last)
    }

    /// Updates that arrived with an already-final sensor time, summed over shards.
    pub fn late_updates(&self) -> u64 {
        self.shards.iter().map(|s| read(s).late).sum()
    }

    // ---------------------------------------------------------------- reads

    /// The configuration of one pool.
    pub fn pool(&self, pool: &str) -> Option<PoolConfig> {
        self.pool_arc(pool).ok().map(|p| p.config.clone())
    }

    /// Every pool, sorted by name.
    pub fn pools(&self) -> Vec<PoolConfig> {
        read(&self.pools)
            .values()
            .map(|p| p.config.clone())
            .collect()
    }

    /// Keys of `pool` starting with `prefix` whose newest version is not a delete, sorted.
    pub fn keys(&self, pool: &str, prefix: &str) -> Result<Vec<String>, StorageError> {
        self.list_keys(pool, prefix, false)
    }

    /// Keys of `pool` starting with `prefix` that have any version, deleted ones included
    /// (their history is still kept until truncated), sorted: what an audit replay walks.
    pub fn keys_with_history(&self, pool: &str, prefix: &str) -> Result<Vec<String>, StorageError> {
        self.list_keys(pool, prefix, true)
    }

    fn list_keys(
        &self,
        pool: &str,
        prefix: &str,
        deleted_too: bool,
    ) -> Result<Vec<String>, StorageError> {
        let p = self.pool_arc(pool)?;
        let mut out = Vec::new();
        for sh in &self.shards {
            let s = read(sh);
            if let Some(pk) = s.pools.get(pool).filter(|pk| pk.pool_id == p.id) {
                out.extend(
                    pk.keys
                        .range(prefix.to_owned()..)
                        .take_while(|(k, _)| k.starts_with(prefix))
                        .filter(|(_, ks)| ks.newest.is_some_and(|(_, tomb)| deleted_too || !tomb))
                        .map(|(k, _)| k.clone()),
                );
            }
        }
        out.sort();
        Ok(out)
    }

    /// The highest log position a reader of `pool` may see: the log's synced position for a
    /// durable pool on a store with a log, `u64::MAX` otherwise (everything applied is
    /// visible). One atomic load.
    ///
    /// The rule (consistency first): a latest, version or bounds read and a watch show a
    /// durable pool's version only once its log record is fsynced, so nothing a reader saw
    /// can vanish in a crash and its key_version (a Kafka offset) can never come back with a
    /// different value. Conditional puts still compare with the newest *applied* version:
    /// they are ordered after it, and their own acknowledgement waits for the fsync that
    /// covers both.
    pub(crate) fn visible_lsn(&self, p: &Pool) -> u64 {
        match &self.log {
            Some(log)
                if p.config.durable
                    && p.config.mode != Mode::Stateless
                    && !self.bugs.reads_ignore_unsynced.load(Ordering::Relaxed) =>
            {
                log.synced_lsn()
            }
            _ => u64::MAX,
        }
    }

    /// Runs `f` on the key's state under the shard's read lock; `f` also gets the pool's
    /// visible log position (see [`Store::visible_lsn`]).
    fn with_key<R>(
        &self,
        pool: &str,
        key: &str,
        f: impl FnOnce(&Pool, &Shard, Option<&KeyState>, u64) -> Result<R, StorageError>,
    ) -> Result<R, StorageError> {
        let p = self.pool_arc(pool)?;
        let s = read(self.shard(self.shard_of(pool, key))?);
        // Loaded under the shard lock: entries applied later cannot be below it anyway (the
        // synced position only grows and every new append is above it).
        let synced = self.visible_lsn(&p);
        let ks = s
            .pools
            .get(pool)
            .filter(|pk| pk.pool_id == p.id)
            .and_then(|pk| pk.keys.get(key));
        f(&p, &s, ks, synced)
    }

    fn need_mode(p: &Pool, ok: &[Mode], what: &str) -> Result<(), StorageError> {
        if ok.contains(&p.config.mode) {
            Ok(())
        } else {
            Err(StorageError::WrongMode(format!(
                "{what} is not available on a {:?} pool",
                p.config.mode
            )))
        }
    }

    /// The key's live owner at `now_us`, if any (see [`crate::owner`]).
    pub fn owner(
        &self,
        pool: &str,
        key: &str,
        now_us: u64,
    ) -> Result<Option<crate::owner::Owner>, StorageError> {
        let p = self.pool_arc(pool)?;
        let s = read(self.shard(self.shard_of(pool, key))?);
        Ok(s.pools
            .get(pool)
            .filter(|pk| pk.pool_id == p.id)
            .and_then(|pk| pk.keys.get(key))
            .and_then(|ks| ks.owner)
            .filter(|o| o.alive_at(now_us)))
    }

    /// The newest durable entry of a key (see [`Store::visible_lsn`]); a delete counts as no
    /// value (`NotFound`).
    pub fn get(&self, pool: &str, key: &str) -> Result<Entry, StorageError> {
        self.with_key(pool, key, |p, _, ks, synced| {
            Self::need_mode(p, &[Mode::Latest, Mode::Versioned], "get")?;
            let e = ks
                .and_then(|ks| ks.newest_for_get(synced))
                .ok_or(StorageError::NotFound)?;
            if e.tombstone {
                return Err(StorageError::NotFound);
            }
            Ok(e.to_entry(key))
        })
    }

    /// The durable entry whose dense range covers `key_version` (versioned pools). A
    /// tombstone is returned as such (`tombstone: true`).
    pub fn get_version(
        &self,
        pool: &str,
        key: &str,
        key_version: u64,
    ) -> Result<Entry, StorageError> {
        self.with_key(pool, key, |p, _, ks, synced| {
            Self::need_mode(p, &[Mode::Versioned], "a version read")?;
            ks.and_then(|ks| ks.covering_visible(key_version, synced))
                .map(|e| e.to_entry(key))
                .ok_or(StorageError::NotFound)
        })
    }

    /// Durable entries from the one covering `from` (or the first kept) on, in order, until
    /// `bytes_max` value bytes (at least one entry when any exists) or `entries_max` entries.
    pub fn read_from(
        &self,
        pool: &str,
        key: &str,
        from: u64,
        bytes_max: usize,
        entries_max: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        self.with_key(pool, key, |p, _, ks, synced| {
            Self::need_mode(p, &[Mode::Versioned], "a version read")?;
            let mut out = Vec::new();
            let Some(ks) = ks else { return Ok(out) };
            let mut bytes = 0usize;
            for e in ks.iter_from(from) {
                if e.lsn > synced {
                    break; // the rest is not durable yet
                }
                if out.len() >= entries_max
                    || (!out.is_empty() && bytes + e.value.len() > bytes_max)
                {
                    break;
                }
                bytes += e.value.len();
                out.push(e.to_entry(key));
            }
            Ok(out)
        })
    }

    /// The kept range of a key's dense counters as readers see it (`{0, 0}` for a key never
    /// written): `next` is the durable end (a Kafka high watermark), the key_version after the
    /// newest durable entry; see [`Store::applied_bounds`] for the applied end.
    pub fn bounds(&self, pool: &str, key: &str) -> Result<KeyBounds, StorageError> {
        self.with_key(pool, key, |_, _, ks, synced| {
            Ok(ks.map_or(KeyBounds::default(), |ks| {
                let (start, next) = ks.visible_bounds(synced);
                KeyBounds { start, next }
            }))
        })
    }

    /// The kept range including versions applied but not yet durable (what the next put
    /// continues from). Not for answering readers: a crash may take back `next`.
    pub fn applied_bounds(&self, pool: &str, key: &str) -> Result<KeyBounds, StorageError> {
        self.with_key(pool, key, |_, _, ks, _| {
            Ok(ks.map_or(KeyBounds::default(), |ks| KeyBounds {
                start: ks.start,
                next: ks.next,
            }))
        })
    }

    /// The first kept durable key_version whose time is ≥ `t_us` (Kafka ListOffsets by time).
    pub fn version_at_or_after(
        &self,
        pool: &str,
        key: &str,
        t_us: u64,
        clock: Clock,
    ) -> Result<Option<u64>, StorageError> {
        self.with_key(pool, key, |p, _, ks, synced| {
            Self::need_mode(p, &[Mode::Versioned], "a time lookup")?;
            Ok(ks.and_then(|ks| {
                let v = match clock {
                    Clock::Platform => ks.first_platform_at_or_after(t_us),
                    Clock::Sensor => ks.first_sensor_at_or_after(t_us, synced),
                }?;
                ks.covering_visible(v, synced)
                    .map(|e| e.version.key_version)
            }))
        })
    }

    /// The frontier a time read at `at_us` needs, for this pool and clock.
    fn needed_frontier(p: &Pool, at_us: u64, clock: Clock) -> Option<u64> {
        match clock {
            Clock::Platform => Some(at_us),
            Clock::Sensor => at_us.checked_add(p.config.lateness_us),
        }
    }

    /// The newest entry with time ≤ `at_us` (`None`: no value then, or a delete), once the
    /// answer is final: platform reads need `at_us` ≤ the shard's frontier, sensor reads need
    /// `at_us + lateness` ≤ it; otherwise `NotYetStable` (call `advance_frontier`, wait, retry).
    /// Sensor reads ignore late updates, so an answer never changes.
    pub fn get_at(
        &self,
        pool: &str,
        key: &str,
        at_us: u64,
        clock: Clock,
    ) -> Result<Option<Entry>, StorageError> {
        self.with_key(pool, key, |p, s, ks, _| {
            Self::need_mode(p, &[Mode::Versioned], "a time read")?;
            let need = Self::needed_frontier(p, at_us, clock);
            if need.is_none_or(|n| n > s.frontier_us) {
                return Err(StorageError::NotYetStable {
                    at_us,
                    frontier_us: s.frontier_us,
                });
            }
            let Some(ks) = ks else { return Ok(None) };
            let e = match clock {
                Clock::Platform => ks.at_platform(at_us),
                Clock::Sensor => ks.at_sensor(at_us),
            };
            Ok(e.filter(|e| !e.tombstone).map(|e| e.to_entry(key)))
        })
    }

    /// One consistent cut at `at_us` over many `(pool, key)`s, in the asked order: every answer
    /// is final (each shard's frontier has passed T), so together they are exactly the updates
    /// with time ≤ T. `NotYetStable` if any shard is not there yet.
    pub fn snapshot(
        &self,
        keys: &[(String, String)],
        at_us: u64,
        clock: Clock,
    ) -> Result<Vec<Option<Entry>>, StorageError> {
        keys.iter()
            .map(|(p, k)| self.get_at(p, k, at_us, clock))
            .collect()
    }

    /// Follows a key or a prefix: replays kept history from `from`, then live updates, with no
    /// gap and no duplicate at the switch. Poll it with [`Watch::poll`].
    pub fn watch(
        &self,
        pool: &str,
        selector: Selector,
        from: WatchFrom,
    ) -> Result<Watch, StorageError> {
        if let Selector::Key(k) = &selector {
            validate_key(k)?;
        }
        let p = self.pool_arc(pool)?;
        Watch::new(self, &p, selector, from)
    }

    // ---------------------------------------------------------------- checking

    /// A digest of one shard's state: equal on replicas that applied the same stamped ops, and
    /// equal before a crash and after recovery for durable pools.
    pub fn digest(&self, shard: ShardId) -> Result<u64, StorageError> {
        Ok(read(self.shard(shard)?).digest())
    }

    /// Checks every invariant (per shard: stamps strictly increasing and, for the local clock,
    /// dense; HLC strictly increasing with shard_seq over kept entries; dense counters
    /// contiguous except compaction gaps; sensor and compaction indexes match the entries; the
    /// watch ring within its limits; the frontier below every unsynced write; pool incarnations
    /// known). `Err` says which rule broke where.
    pub fn check_invariants(&self) -> Result<(), String> {
        let pools = read(&self.pools).clone();
        for sh in &self.shards {
            let s = read(sh);
            s.check(
                self.config.watch_ring_events_max,
                self.config.watch_ring_bytes_max,
            )?;
            for (name, pk) in &s.pools {
                if let Some(p) = pools.get(name) {
                    if pk.pool_id > p.id {
                        return Err(format!(
                            "shard {}: pool {name} incarnation {} newer than registry {}",
                            s.id, pk.pool_id, p.id
                        ));
                    }
                }
            }
        }
        if let Some(log) = &self.log {
            log.check_invariants()?;
        }
        Ok(())
    }

    /// Smallest log position still holding a kept entry ([`u64::MAX`] if none); segments wholly
    /// below it hold nothing the store still needs, apart from pool configs, stamps and key
    /// counters, which `compact_log` saves in a checkpoint first.
    pub(crate) fn min_live_lsn(&self) -> u64 {
        let mut m = NO_LSN;
        for sh in &self.shards {
            let s = read(sh);
            for pk in s.pools.values() {
                for ks in pk.keys.values() {
                    m = m.min(ks.min_lsn());
                }
            }
        }
        m
    }
}

fn validate_put(c: &PoolConfig, key: &str, value: &Bytes, span: u32) -> Result<(), StorageError> {
    validate_key(key)?;
    if value.len() > c.value_bytes_max as usize {
        return Err(StorageError::Invalid(format!(
            "value of {} bytes exceeds the pool's limit of {}",
            value.len(),
            c.value_bytes_max
        )));
    }
    if span == 0 {
        return Err(StorageError::Invalid("span must be ≥ 1".into()));
    }
    Ok(())
}

/// The log record that re-creates one kept entry (for a shard export or a checkpoint).
/// How [`Store::install`] applies retention to a key it stores into.
#[derive(Debug, Clone, Copy)]
enum Retention {
    /// None: the entry is part of a kept state (an image, a checkpoint).
    Skip,
    /// Up to the start the original run computed (from the log record).
    To(u64),
    /// From the pool's current config (a record written before the log held the result).
    Config,
}

/// A pool's retention as (bytes_max, age floor in µs) at time `now`.
/// Most keys one [`Op::Retain`] changes (its log record stays small; the rest wait for the next
/// run).
pub const RETAIN_KEYS_MAX: usize = 4096;

fn retention_limits(c: &PoolConfig, now: Hlc) -> (Option<u64>, Option<u64>) {
    if c.mode != Mode::Versioned {
        return (None, None);
    }
    let floor = c
        .retention_ms
        .map(|ms| now.physical_us.saturating_sub(ms.saturating_mul(1000)));
    (c.retention_bytes, floor)
}

fn put_record(shard: ShardId, pool: &str, pool_id: u64, key: &str, e: &Stored) -> Record {
    Record {
        shard,
        stamp: Stamp {
            shard_seq: e.version.shard_seq,
            time: e.version.time,
        },
        body: RecordBody::Put {
            pool: pool.to_string(),
            pool_id,
            key: key.to_string(),
            version: e.version,
            value: e.value.clone(),
            tombstone: e.tombstone,
            compaction_key: e.compaction_key.clone(),
            retained: None,
            owner: None,
        },
        lsn: 0,
    }
}
