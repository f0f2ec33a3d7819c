//! A small in-memory [`Node`] for the Kafka face's unit tests (one process, no replication):
//! dense key versions with spans, compaction by compaction key, stateless pools that only
//! notify, truncate, the sensor/platform time index, and watches.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use squall_storage::{Clock, Entry, Hlc, Mode, PoolConfig, Selector, Version, WatchFrom};
use tokio::sync::mpsc;

use crate::node::{KeyBounds, Node, NodeError, PutRequest, WatchEvent, WatchStream};

#[derive(Default)]
struct KeyLog {
    entries: Vec<Entry>,
    start: u64,
    next: u64,
}

#[derive(Default)]
struct State {
    pools: BTreeMap<String, (PoolConfig, BTreeMap<String, KeyLog>)>,
    seq: u64,
    clock_us: u64,
    watchers: Vec<(String, Selector, mpsc::Sender<WatchEvent>)>,
}

/// The in-memory node.
#[derive(Default)]
pub struct MemNode {
    state: Mutex<State>,
    /// Test switch: when set, puts fail with a storage error.
    pub fail_puts: std::sync::atomic::AtomicBool,
}

/// A watch on the in-memory node.
pub struct MemWatch(mpsc::Receiver<WatchEvent>);

impl WatchStream for MemWatch {
    async fn next(&mut self) -> Option<WatchEvent> {
        self.0.recv().await
    }
}

impl MemNode {
    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("mem node lock")
    }
}

fn matches(sel: &Selector, key: &str) -> bool {
    match sel {
        Selector::Key(k) => k == key,
        Selector::Prefix(p) => key.starts_with(p.as_str()),
    }
}

impl Node for MemNode {
    type Watch = MemWatch;

    async fn create_pool(&self, config: PoolConfig) -> Result<(), NodeError> {
        let mut st = self.st();
        if let Some((c, _)) = st.pools.get(&config.name) {
            return if *c == config {
                Ok(())
            } else {
                Err(NodeError::PoolExists(config.name))
            };
        }
        st.pools
            .insert(config.name.clone(), (config, BTreeMap::new()));
        Ok(())
    }

    async fn delete_pool(&self, pool: &str) -> Result<(), NodeError> {
        self.st()
            .pools
            .remove(pool)
            .map(|_| ())
            .ok_or_else(|| NodeError::NoSuchPool(pool.into()))
    }

    fn pool(&self, pool: &str) -> Option<PoolConfig> {
        self.st().pools.get(pool).map(|(c, _)| c.clone())
    }

    fn pools(&self) -> Vec<PoolConfig> {
        self.st().pools.values().map(|(c, _)| c.clone()).collect()
    }

    fn keys(&self, pool: &str, prefix: &str) -> Result<Vec<String>, NodeError> {
        let st = self.st();
        let (_, keys) = st
            .pools
            .get(pool)
            .ok_or_else(|| NodeError::NoSuchPool(pool.into()))?;
        Ok(keys
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }

    async fn put(&self, req: PutRequest) -> Result<Version, NodeError> {
        if self.fail_puts.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(NodeError::Storage("planted failure".into()));
        }
        let mut st = self.st();
        st.seq += 1;
        st.clock_us += 1000;
        let (seq, now) = (st.seq, st.clock_us);
        let State {
            pools, watchers, ..
        } = &mut *st;
        let (cfg, keys) = pools
            .get_mut(&req.pool)
            .ok_or_else(|| NodeError::NoSuchPool(req.pool.clone()))?;
        if req.value.len() > cfg.value_bytes_max as usize {
            return Err(NodeError::Invalid("value too large".into()));
        }
        let log = keys.entry(req.key.clone()).or_default();
        let version = Version {
            key_version: log.next,
            span: req.span.max(1),
            shard_seq: seq,
            time: Hlc {
                physical_us: now,
                logical: 0,
            },
            sensor_time_us: req.sensor_time_us,
            late: false,
        };
        let entry = Entry {
            key: req.key.clone(),
            version,
            value: req.value.clone(),
            tombstone: req.tombstone,
            compaction_key: req.compaction_key.clone(),
        };
        log.next = version.next_key_version();
        match cfg.mode {
            Mode::Stateless => log.start = log.next,
            Mode::Latest => {
                log.entries.clear();
                log.entries.push(entry.clone());
            }
            Mode::Versioned => {
                if cfg.compact {
                    if let Some(ck) = &req.compaction_key {
                        log.entries
                            .retain(|e| e.compaction_key.as_ref() != Some(ck));
                    }
                }
                log.entries.push(entry.clone());
            }
        }
        watchers.retain(|(p, sel, tx)| {
            if *p == req.pool && matches(sel, &req.key) {
                tx.try_send(WatchEvent::Update(entry.clone())).is_ok() || !tx.is_closed()
            } else {
                !tx.is_closed()
            }
        });
        Ok(version)
    }

    async fn truncate(&self, pool: &str, key: &str, before: u64) -> Result<KeyBounds, NodeError> {
        let mut st = self.st();
        let (_, keys) = st
            .pools
            .get_mut(pool)
            .ok_or_else(|| NodeError::NoSuchPool(pool.into()))?;
        let log = keys.get_mut(key).ok_or(NodeError::NotFound)?;
        log.entries
            .retain(|e| e.version.next_key_version() > before);
        log.start = log.start.max(before.min(log.next));
        Ok(KeyBounds {
            start: log.start,
            next: log.next,
        })
    }

    fn get(&self, pool: &str, key: &str) -> Result<Entry, NodeError> {
        let st = self.st();
        let (_, keys) = st
            .pools
            .get(pool)
            .ok_or_else(|| NodeError::NoSuchPool(pool.into()))?;
        let e = keys
            .get(key)
            .and_then(|l| l.entries.last())
            .ok_or(NodeError::NotFound)?;
        if e.tombstone {
            return Err(NodeError::NotFound);
        }
        Ok(e.clone())
    }

    fn get_version(&self, pool: &str, key: &str, kv: u64) -> Result<Entry, NodeError> {
        let st = self.st();
        let (_, keys) = st
            .pools
            .get(pool)
            .ok_or_else(|| NodeError::NoSuchPool(pool.into()))?;
        keys.get(key)
            .and_then(|l| {
                l.entries
                    .iter()
                    .find(|e| e.version.key_version <= kv && kv < e.version.next_key_version())
            })
            .cloned()
            .ok_or(NodeError::NotFound)
    }

    fn read_from(
        &self,
        pool: &str,
        key: &str,
        from: u64,
        bytes_max: usize,
        entries_max: usize,
    ) -> Result<Vec<Entry>, NodeError> {
        let st = self.st();
        let (_, keys) = st
            .pools
            .get(pool)
            .ok_or_else(|| NodeError::NoSuchPool(pool.into()))?;
        let Some(l) = keys.get(key) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut bytes = 0;
        for e in l
            .entries
            .iter()
            .filter(|e| e.version.next_key_version() > from)
        {
            if !out.is_empty() && (bytes + e.value.len() > bytes_max || out.len() >= entries_max) {
                break;
            }
            bytes += e.value.len();
            out.push(e.clone());
        }
        Ok(out)
    }

    fn bounds(&self, pool: &str, key: &str) -> Result<KeyBounds, NodeError> {
        let st = self.st();
        let (_, keys) = st
            .pools
            .get(pool)
            .ok_or_else(|| NodeError::NoSuchPool(pool.into()))?;
        let l = keys.get(key).ok_or(NodeError::NotFound)?;
        // Compaction leaves gaps but does not move the log start; only truncate does.
        Ok(KeyBounds {
            start: l.start.min(l.next),
            next: l.next,
        })
    }

    fn version_at_or_after(
        &self,
        pool: &str,
        key: &str,
        t_us: u64,
        clock: Clock,
    ) -> Result<Option<u64>, NodeError> {
        let st = self.st();
        let (_, keys) = st
            .pools
            .get(pool)
            .ok_or_else(|| NodeError::NoSuchPool(pool.into()))?;
        let Some(l) = keys.get(key) else {
            return Ok(None);
        };
        Ok(l.entries
            .iter()
            .find(|e| {
                let t = match clock {
                    Clock::Platform => Some(e.version.time.physical_us),
                    Clock::Sensor => e.version.sensor_time_us,
                };
                t.is_some_and(|t| t >= t_us)
            })
            .map(|e| e.version.key_version))
    }

    async fn get_at(
        &self,
        pool: &str,
        key: &str,
        _at_us: u64,
        _clock: Clock,
        _wait: Duration,
    ) -> Result<Option<Entry>, NodeError> {
        Ok(self.get(pool, key).ok())
    }

    async fn snapshot(
        &self,
        keys: Vec<(String, String)>,
        _at_us: u64,
        _clock: Clock,
        _wait: Duration,
    ) -> Result<Vec<Option<Entry>>, NodeError> {
        Ok(keys.iter().map(|(p, k)| self.get(p, k).ok()).collect())
    }

    fn watch(
        &self,
        pool: &str,
        selector: Selector,
        from: WatchFrom,
    ) -> Result<MemWatch, NodeError> {
        if from != WatchFrom::Now {
            return Err(NodeError::Invalid("mem node watches only from now".into()));
        }
        let mut st = self.st();
        if !st.pools.contains_key(pool) {
            return Err(NodeError::NoSuchPool(pool.into()));
        }
        let (tx, rx) = mpsc::channel(1024);
        st.watchers.push((pool.to_string(), selector, tx));
        Ok(MemWatch(rx))
    }
}

#[allow(dead_code)]
fn _assert_bytes(_: Bytes) {}
