//! Watches: replay kept history, then follow live updates from the shard's recent-event ring,
//! with no gap and no duplicate at the switch.
//!
//! A watch holds, per shard it follows, a cursor: the last shard_seq it has passed. At creation
//! it notes the shard's last shard_seq `S` under the shard lock; history up to `S` comes from
//! the store, everything after `S` from the ring (which every apply feeds under the same lock),
//! so the switch can neither miss nor repeat an update. A watcher that falls behind the ring
//! catches up from the store again (versioned and latest pools: a latest pool only has the
//! newest value per key to give) or, in a stateless pool where nothing is kept, gets a
//! [`WatchEvent::Lagged`] notice and continues with the oldest event still in the ring. Memory
//! is bounded by the ring's limits whatever the watchers do.
//!
//! A watch on a durable pool delivers an update only once its log record is synced (see
//! `Store::visible_lsn`): a cursor stops just before the first unsynced update of its pool
//! and continues from there after the group commit (whose notify hook wakes the driver), so
//! updates still come in order, with no gap and no duplicate, and none can vanish in a crash.

use std::sync::RwLockReadGuard;

use crate::error::StorageError;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::key::KeyState;
use crate::shard::Shard;
use crate::store::{Pool, Store};
use crate::types::*;

/// What one poll of a watch found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchPoll {
    /// Events, in each shard's order (shards interleave).
    Events(Vec<WatchEvent>),
    /// Nothing new now: wait for one of [`Watch::shards`] to change (see
    /// `Store::generation` / `Store::set_notify`), then poll again.
    Idle,
    /// The pool was deleted: the watch is over.
    Ended,
}

#[derive(Debug, Clone)]
struct Cursor {
    shard: ShardId,
    /// Last shard_seq passed.
    after: u64,
    /// History up to this shard_seq still comes from the store.
    replay_upto: u64,
}

/// A watch on a key or a prefix of one pool.
#[derive(Debug)]
pub struct Watch {
    pool: String,
    pool_id: u64,
    mode: Mode,
    selector: Selector,
    from: WatchFrom,
    cursors: Vec<Cursor>,
    next_cursor: usize,
    ended: bool,
}

fn lock(s: &std::sync::RwLock<Shard>) -> RwLockReadGuard<'_, Shard> {
    s.read().unwrap_or_else(|e| e.into_inner())
}

impl Watch {
    pub(crate) fn new(
        store: &Store,
        pool: &Pool,
        selector: Selector,
        from: WatchFrom,
    ) -> Result<Watch, StorageError> {
        let shards: Vec<ShardId> = match &selector {
            Selector::Key(k) => vec![store.shard_of(&pool.config.name, k)],
            Selector::Prefix(_) => (0..store.shard_count()).collect(),
        };
        let mode = pool.config.mode;
        let mut cursors = Vec::with_capacity(shards.len());
        for sid in shards {
            let s = lock(store.shard(sid)?);
            let last = s.last.shard_seq;
            let replay = match (mode, from) {
                (Mode::Stateless, _) => false,
                (Mode::Latest, _) => true,
                (Mode::Versioned, WatchFrom::Now) => false,
                (Mode::Versioned, _) => true,
            };
            cursors.push(if replay {
                Cursor {
                    shard: sid,
                    after: 0,
                    replay_upto: last,
                }
            } else {
                Cursor {
                    shard: sid,
                    after: last,
                    replay_upto: 0,
                }
            });
        }
        Ok(Watch {
            pool: pool.config.name.clone(),
            pool_id: pool.id,
            mode,
            selector,
            from: if mode == Mode::Stateless {
                WatchFrom::Now
            } else {
                from
            },
            cursors,
            next_cursor: 0,
            ended: false,
        })
    }

    /// The shards this watch follows (wait on their generations when a poll is `Idle`).
    pub fn shards(&self) -> Vec<ShardId> {
        self.cursors.iter().map(|c| c.shard).collect()
    }

    /// The pool watched.
    pub fn pool(&self) -> &str {
        &self.pool
    }

    fn selects(&self, key: &str) -> bool {
        match &self.selector {
            Selector::Key(k) => k == key,
            Selector::Prefix(p) => key.starts_with(p.as_str()),
        }
    }

    fn passes_from(&self, v: &Version, sensor_key: u64) -> bool {
        match self.from {
            WatchFrom::Now => true,
            WatchFrom::Version(kv) => v.next_key_version() > kv,
            WatchFrom::Time(t, Clock::Platform) => v.time.physical_us >= t,
            WatchFrom::Time(t, Clock::Sensor) => sensor_key >= t,
        }
    }

    /// The next events (at most `StoreConfig::watch_poll_events_max`), without blocking.
    pub fn poll(&mut self, store: &Store) -> WatchPoll {
        if self.ended {
            return WatchPoll::Ended;
        }
        let synced = match store.pool_arc(&self.pool) {
            Ok(p) if p.id == self.pool_id => store.visible_lsn(&p),
            _ => {
                self.ended = true;
                return WatchPoll::Ended;
            }
        };
        let max = store.config().watch_poll_events_max;
        let n = self.cursors.len();
        let mut out = Vec::new();
        for i in 0..n {
            if out.len() >= max {
                break;
            }
            let ci = (self.next_cursor + i) % n;
            self.poll_shard(store, ci, max - out.len(), synced, &mut out);
        }
        self.next_cursor = (self.next_cursor + 1) % n.max(1);
        if out.is_empty() {
            WatchPoll::Idle
        } else {
            WatchPoll::Events(out)
        }
    }

    /// Polls one shard's cursor; updates of this pool with a log position above `synced` are
    /// not delivered yet (the cursor stops just before the first one).
    fn poll_shard(
        &mut self,
        store: &Store,
        ci: usize,
        max: usize,
        synced: u64,
        out: &mut Vec<WatchEvent>,
    ) {
        let Ok(lk) = store.shard(self.cursors[ci].shard) else {
            return;
        };
        let s = lock(lk);
        let mut c = self.cursors[ci].clone();
        let mut budget = max;
        loop {
            if c.after >= c.replay_upto && c.after < s.ring_evicted_seq {
                // Fell behind the ring.
                if self.mode == Mode::Stateless {
                    out.push(WatchEvent::Lagged(s.ring_evicted_seq - c.after));
                    c.after = s.ring_evicted_seq;
                } else {
                    c.replay_upto = s.last.shard_seq;
                }
            }
            if c.after < c.replay_upto {
                let before = out.len();
                let blocked = self.replay(&s, &mut c, budget, synced, out);
                budget -= out.len() - before;
                if budget == 0 || blocked {
                    break;
                }
                // Replay done: check the ring still covers what follows, then go live.
                continue;
            }
            let start = s
                .ring
                .partition_point(|ev| ev.entry.version.shard_seq <= c.after);
            let mut taken = 0;
            let mut last_seen = c.after;
            let mut blocked = false;
            for ev in s.ring.range(start..) {
                if taken >= budget {
                    break;
                }
                if ev.pool_id == self.pool_id && ev.lsn > synced {
                    // Not durable yet: stop just before it (later updates of this pool were
                    // logged after it, so none of them is durable either).
                    last_seen = ev.entry.version.shard_seq - 1;
                    blocked = true;
                    break;
                }
                last_seen = ev.entry.version.shard_seq;
                let e = &ev.entry;
                let sensor_key = e
                    .version
                    .sensor_time_us
                    .unwrap_or(e.version.time.physical_us);
                if ev.pool_id == self.pool_id
                    && self.selects(&e.key)
                    && self.passes_from(&e.version, sensor_key)
                {
                    out.push(WatchEvent::Update(e.clone()));
                    taken += 1;
                }
            }
            c.after = if taken < budget && !blocked {
                last_seen.max(s.last.shard_seq)
            } else {
                last_seen
            };
            break;
        }
        self.cursors[ci] = c;
    }

    /// Kept entries with shard_seq in `(after, replay_upto]`, ascending, at most `max`, up to
    /// the first one with a log position above `synced` (then `true`: blocked there).
    fn replay(
        &self,
        s: &Shard,
        c: &mut Cursor,
        max: usize,
        synced: u64,
        out: &mut Vec<WatchEvent>,
    ) -> bool {
        let Some(pk) = s
            .pools
            .get(&self.pool)
            .filter(|pk| pk.pool_id == self.pool_id)
        else {
            c.after = c.replay_upto;
            return false;
        };
        let keys: Box<dyn Iterator<Item = (&String, &KeyState)>> = match &self.selector {
            Selector::Key(k) => Box::new(pk.keys.get_key_value(k).into_iter()),
            Selector::Prefix(p) => Box::new(
                pk.keys
                    .range(p.clone()..)
                    .take_while(move |(k, _)| k.starts_with(p.as_str())),
            ),
        };
        // A k-way merge by shard_seq over the matching keys: memory O(keys), not O(entries).
        let mut heads: Vec<(&String, &KeyState, usize)> = Vec::new();
        let mut heap = BinaryHeap::new();
        for (k, ks) in keys {
            let by_seq = ks
                .entries
                .partition_point(|e| e.version.shard_seq <= c.after);
            let by_from = match self.from {
                WatchFrom::Version(v) => ks
                    .entries
                    .partition_point(|e| e.version.next_key_version() <= v),
                WatchFrom::Time(t, Clock::Platform) => ks
                    .entries
                    .partition_point(|e| e.version.time.physical_us < t),
                _ => 0,
            };
            let i = heads.len();
            heads.push((k, ks, by_seq.max(by_from)));
            if let Some(seq) = self.next_passing(&mut heads[i], c.replay_upto) {
                heap.push(Reverse((seq, i)));
            }
        }
        let mut taken = 0;
        while let Some(Reverse((seq, i))) = heap.pop() {
            if taken >= max {
                break;
            }
            let (k, ks, pos) = heads[i];
            if ks.entries[pos].lsn > synced {
                // The merge is in shard order, which is log order: nothing after it is
                // durable either.
                c.after = c.after.max(seq - 1);
                return true;
            }
            out.push(WatchEvent::Update(ks.entries[pos].to_entry(k)));
            taken += 1;
            c.after = seq;
            heads[i].2 += 1;
            if let Some(seq) = self.next_passing(&mut heads[i], c.replay_upto) {
                heap.push(Reverse((seq, i)));
            }
        }
        if taken < max {
            c.after = c.replay_upto;
        }
        false
    }

    /// Moves `head` to its next entry that passes the filters and is ≤ `upto`; its shard_seq.
    fn next_passing(&self, head: &mut (&String, &KeyState, usize), upto: u64) -> Option<u64> {
        let ks = head.1;
        while let Some(e) = ks.entries.get(head.2) {
            if e.version.shard_seq > upto {
                return None;
            }
            if !e.dead && self.passes_from(&e.version, e.sensor_key()) {
                return Some(e.version.shard_seq);
            }
            head.2 += 1;
        }
        None
    }
}
