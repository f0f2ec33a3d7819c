//! A tiny in-memory [`Node`] for the HTTP face's unit tests: one shard, everything below "now"
//! is stable, no durability. Not a store: it exists so the face can be tested without the broker.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use squall_storage::{Clock, Entry, Expect, Hlc, Mode, PoolConfig, Selector, Version, WatchFrom};
use tokio::sync::broadcast;

use crate::node::{KeyBounds, Node, NodeError, PutRequest, WatchEvent, WatchStream};

#[derive(Default)]
struct Inner {
    pools: BTreeMap<String, PoolConfig>,
    keys: BTreeMap<(String, String), Vec<Entry>>,
    seq: u64,
    last_us: u64,
}

pub(crate) struct MemNode {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<(String, Entry)>,
    /// How far the stable frontier trails the clock (µs), to test "not yet stable".
    pub(crate) frontier_lag_us: std::sync::atomic::AtomicU64,
    /// Writes fail as a full disk would, to test the error path.
    pub(crate) disk_full: std::sync::atomic::AtomicBool,
}

impl MemNode {
    pub(crate) fn new() -> Self {
        MemNode {
            inner: Mutex::new(Inner::default()),
            tx: broadcast::channel(1024).0,
            frontier_lag_us: std::sync::atomic::AtomicU64::new(0),
            disk_full: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

pub(crate) struct MemWatch {
    pool: String,
    sel: Selector,
    replay: VecDeque<Entry>,
    rx: broadcast::Receiver<(String, Entry)>,
    from: WatchFrom,
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
                Ok((p, e))
                    if p == self.pool && matches(&self.sel, &e.key) && passes(self.from, &e) =>
                {
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
    super::now_us()
}

impl MemNode {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    fn versions(&self, pool: &str, key: &str) -> Result<Vec<Entry>, NodeError> {
        self.with(|i| {
            if !i.pools.contains_key(pool) {
                return Err(NodeError::NoSuchPool(pool.into()));
            }
            i.keys
                .get(&(pool.to_string(), key.to_string()))
                .cloned()
                .ok_or(NodeError::NotFound)
        })
    }

    fn at(
        &self,
        pool: &str,
        key: &str,
        at_us: u64,
        clock: Clock,
    ) -> Result<Option<Entry>, NodeError> {
        let vs = match self.versions(pool, key) {
            Ok(v) => v,
            Err(NodeError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(vs
            .into_iter()
            .filter(|e| match clock {
                Clock::Platform => e.version.time.physical_us <= at_us,
                Clock::Sensor => e.version.sensor_time_us.is_some_and(|s| s <= at_us),
            })
            .max_by_key(|e| e.version.shard_seq))
    }

    async fn wait_stable(&self, at_us: u64, wait: Duration) -> Result<(), NodeError> {
        let deadline = tokio::time::Instant::now() + wait;
        let lag = &self.frontier_lag_us;
        let frontier = || now_us().saturating_sub(lag.load(std::sync::atomic::Ordering::Relaxed));
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
        if self.disk_full.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(NodeError::Storage(
                "io error on log/00000000.seg: No space left on device (os error 28)".into(),
            ));
        }
        let tx = self.tx.clone();
        self.with(|i| {
            let cfg = i
                .pools
                .get(&req.pool)
                .cloned()
                .ok_or(NodeError::NoSuchPool(req.pool.clone()))?;
            let list = i
                .keys
                .entry((req.pool.clone(), req.key.clone()))
                .or_default();
            let newest = list.last().map(|e| e.version);
            let ok = match req.expect {
                Expect::Any => true,
                Expect::Absent => list.last().is_none_or(|e| e.tombstone),
                Expect::Version(v) => newest.map(|n| n.key_version) == Some(v),
            };
            if !ok {
                return Err(NodeError::Conflict {
                    current: newest.map(|n| n.key_version),
                });
            }
            i.seq += 1;
            i.last_us = now_us().max(i.last_us + 1);
            let version = Version {
                key_version: newest.map(|n| n.next_key_version()).unwrap_or(0),
                span: req.span,
                shard_seq: i.seq,
                time: Hlc {
                    physical_us: i.last_us,
                    logical: 0,
                },
                sensor_time_us: req.sensor_time_us,
                late: false,
            };
            let e = Entry {
                key: req.key.clone(),
                version,
                value: req.value,
                tombstone: req.tombstone,
                compaction_key: None,
            };
            let list = i
                .keys
                .entry((req.pool.clone(), req.key.clone()))
                .or_default();
            match cfg.mode {
                Mode::Versioned => list.push(e.clone()),
                Mode::Latest => *list = vec![e.clone()],
                Mode::Stateless => {}
            }
            let _ = tx.send((req.pool, e));
            Ok(version)
        })
    }

    async fn truncate(&self, pool: &str, key: &str, before: u64) -> Result<KeyBounds, NodeError> {
        self.with(|i| {
            let list = i
                .keys
                .get_mut(&(pool.to_string(), key.to_string()))
                .ok_or(NodeError::NotFound)?;
            let next = list
                .last()
                .map(|e| e.version.next_key_version())
                .unwrap_or(0);
            list.retain(|e| e.version.key_version >= before);
            Ok(KeyBounds {
                start: list.first().map(|e| e.version.key_version).unwrap_or(next),
                next,
            })
        })
    }

    fn get(&self, pool: &str, key: &str) -> Result<Entry, NodeError> {
        self.versions(pool, key)?
            .pop()
            .filter(|e| !e.tombstone)
            .ok_or(NodeError::NotFound)
    }

    fn get_version(&self, pool: &str, key: &str, key_version: u64) -> Result<Entry, NodeError> {
        self.versions(pool, key)?
            .into_iter()
            .find(|e| {
                e.version.key_version <= key_version && key_version < e.version.next_key_version()
            })
            .ok_or(NodeError::NotFound)
    }

    fn read_from(
        &self,
        pool: &str,
        key: &str,
        from: u64,
        _bytes_max: usize,
        entries_max: usize,
    ) -> Result<Vec<Entry>, NodeError> {
        Ok(self
            .versions(pool, key)?
            .into_iter()
            .filter(|e| e.version.next_key_version() > from)
            .take(entries_max)
            .collect())
    }

    fn bounds(&self, pool: &str, key: &str) -> Result<KeyBounds, NodeError> {
        let vs = self.versions(pool, key)?;
        let next = vs.last().map(|e| e.version.next_key_version()).unwrap_or(0);
        Ok(KeyBounds {
            start: vs.first().map(|e| e.version.key_version).unwrap_or(next),
            next,
        })
    }

    fn version_at_or_after(
        &self,
        pool: &str,
        key: &str,
        t_us: u64,
        _clock: Clock,
    ) -> Result<Option<u64>, NodeError> {
        Ok(self
            .versions(pool, key)?
            .into_iter()
            .find(|e| e.version.time.physical_us >= t_us)
            .map(|e| e.version.key_version))
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
                    .flat_map(|(_, v)| v.iter().filter(|e| passes(from, e)).cloned())
                    .collect();
                all.sort_by_key(|e| e.version.shard_seq);
                all.into()
            };
            Ok(MemWatch {
                pool: pool.into(),
                sel: selector,
                replay,
                rx: self.tx.subscribe(),
                from: WatchFrom::Now,
            })
        })
    }
}
