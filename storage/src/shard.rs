//! One shard's state: its position in the total order, its keys, its recent-event ring for
//! watchers, and its stable frontier. The [`Store`](crate::Store) locks one shard at a time.

use std::collections::{BTreeMap, VecDeque};

use crate::key::KeyState;
use crate::types::{Entry, Hlc, ShardId, Stamp};

/// The keys of one pool inside a shard.
#[derive(Debug, Clone, Default)]
pub(crate) struct PoolKeys {
    /// Which incarnation of the pool (its creation's shard_seq); a recreated pool starts empty.
    pub pool_id: u64,
    /// Whether the pool is `compact` (needed by the checker).
    pub compact: bool,
    pub keys: BTreeMap<String, KeyState>,
}

/// An update as watchers see it, kept in the shard's bounded ring.
#[derive(Debug, Clone)]
pub(crate) struct RingEvent {
    pub pool_id: u64,
    pub entry: Entry,
    /// Log position of the entry's record ([`crate::key::NO_LSN`] if not logged): watchers of
    /// a durable pool get the event only once it is synced.
    pub lsn: u64,
}

/// A shard.
#[derive(Debug, Default)]
pub(crate) struct Shard {
    pub id: ShardId,
    /// The last applied stamp (`shard_seq` 0: none yet).
    pub last: Stamp,
    /// Stamps consumed so far; equals `last.shard_seq` while the order is dense.
    pub ops: u64,
    /// Whether shard_seq must be dense (the local sequencer); an external orderer may leave gaps.
    pub dense: bool,
    /// Everything with platform time ≤ this is applied and, if durable, synced.
    pub frontier_us: u64,
    pub pools: BTreeMap<String, PoolKeys>,
    /// Recent events, ascending shard_seq.
    pub ring: VecDeque<RingEvent>,
    pub ring_bytes: usize,
    /// Highest shard_seq evicted from the ring (0: nothing evicted).
    pub ring_evicted_seq: u64,
    /// Durable ops applied but not yet synced: (lsn, time), ascending.
    pub unsynced: VecDeque<(u64, Hlc)>,
    /// Updates that arrived with an already-final sensor time.
    pub late: u64,
}

impl Shard {
    pub fn new(id: ShardId) -> Self {
        Shard {
            id,
            dense: true,
            ..Shard::default()
        }
    }

    /// Adds an event, evicting the oldest ones past the limits (at least one event stays).
    pub fn ring_push(&mut self, ev: RingEvent, events_max: usize, bytes_max: usize) {
        self.ring_bytes += ev.entry.value.len();
        self.ring.push_back(ev);
        while self.ring.len() > 1 && (self.ring.len() > events_max || self.ring_bytes > bytes_max) {
            if let Some(old) = self.ring.pop_front() {
                self.ring_bytes -= old.entry.value.len();
                self.ring_evicted_seq = old.entry.version.shard_seq;
            }
        }
    }

    /// The next local stamp: shard_seq + 1, and a time strictly after both the last stamp and
    /// the frontier, at least `now_us`.
    pub fn next_local_stamp(&self, now_us: u64, reuse_bug: bool) -> Stamp {
        let floor = Hlc {
            physical_us: now_us.max(self.frontier_us.saturating_add(1)),
            logical: 0,
        };
        let time = if floor > self.last.time {
            floor
        } else if reuse_bug {
            self.last.time
        } else {
            Hlc {
                physical_us: self.last.time.physical_us,
                logical: self.last.time.logical.saturating_add(1),
            }
        };
        Stamp {
            shard_seq: self.last.shard_seq + 1,
            time,
        }
    }

    /// Checks the shard's own rules; `Err` names the broken one.
    pub fn check(&self, events_max: usize, bytes_max: usize) -> Result<(), String> {
        let sid = self.id;
        if self.dense && self.ops != self.last.shard_seq {
            return Err(format!(
                "shard {sid}: {} ops applied but last shard_seq is {} (not dense)",
                self.ops, self.last.shard_seq
            ));
        }
        // Every kept entry, in shard order, has a strictly increasing time, and none is after
        // the last stamp.
        let mut all: Vec<(u64, Hlc)> = Vec::new();
        for (pname, pk) in &self.pools {
            for (k, ks) in &pk.keys {
                ks.check()
                    .map_err(|e| format!("shard {sid}: key {pname}/{k}: {e}"))?;
                if !pk.compact {
                    let mut prev: Option<u64> = None;
                    for e in &ks.entries {
                        if let Some(p) = prev {
                            if e.version.key_version != p {
                                return Err(format!(
                                    "shard {sid}: key {pname}/{k}: gap before {} (expected {p})",
                                    e.version.key_version
                                ));
                            }
                        }
                        prev = Some(e.version.next_key_version());
                    }
                }
                all.extend(
                    ks.entries
                        .iter()
                        .map(|e| (e.version.shard_seq, e.version.time)),
                );
            }
        }
        all.sort_unstable();
        for w in all.windows(2) {
            if w[0].0 == w[1].0 || w[0].1 >= w[1].1 {
                return Err(format!(
                    "shard {sid}: HLC not strictly increasing with shard_seq: {:?} then {:?}",
                    w[0], w[1]
                ));
            }
        }
        if let Some(&(seq, t)) = all.last() {
            if seq > self.last.shard_seq || t > self.last.time {
                return Err(format!("shard {sid}: entry after the last stamp"));
            }
        }
        // Ring: ascending, after the evicted mark, within limits, bytes add up.
        let mut prev = self.ring_evicted_seq;
        let mut bytes = 0usize;
        for ev in &self.ring {
            let s = ev.entry.version.shard_seq;
            if s <= prev {
                return Err(format!("shard {sid}: ring out of order at seq {s}"));
            }
            prev = s;
            bytes += ev.entry.value.len();
        }
        if bytes != self.ring_bytes {
            return Err(format!(
                "shard {sid}: ring_bytes {} but ring holds {bytes}",
                self.ring_bytes
            ));
        }
        if self.ring.len() > 1 && (self.ring.len() > events_max || bytes > bytes_max) {
            return Err(format!(
                "shard {sid}: ring over its limits ({} events, {bytes} bytes)",
                self.ring.len()
            ));
        }
        // Frontier: below every unsynced op; unsynced ascending.
        let mut prev_lsn = None;
        for &(lsn, t) in &self.unsynced {
            if t.physical_us <= self.frontier_us {
                return Err(format!(
                    "shard {sid}: frontier {} passed unsynced op at {t:?}",
                    self.frontier_us
                ));
            }
            if prev_lsn.is_some_and(|p| p >= lsn) {
                return Err(format!("shard {sid}: unsynced lsns out of order"));
            }
            prev_lsn = Some(lsn);
        }
        Ok(())
    }

    /// A digest of the shard's state (pools, keys, counters, kept versions and values; not the
    /// order position, which volatile ops move without logging):
    /// replicas that applied the same stamped sequence have equal digests.
    pub fn digest(&self) -> u64 {
        let mut h = Fnv::new();
        for (pname, pk) in &self.pools {
            h.bytes(pname.as_bytes());
            h.u64(pk.pool_id);
            for (k, ks) in &pk.keys {
                h.bytes(k.as_bytes());
                h.u64(ks.start);
                h.u64(ks.next);
                if let Some(o) = ks.owner {
                    h.u64(o.writer);
                    h.u64(u64::from(o.strength as u32));
                    h.u64(o.until_us.unwrap_or(u64::MAX));
                }
                for e in ks.entries.iter().filter(|e| !e.dead) {
                    let v = &e.version;
                    h.u64(v.key_version);
                    h.u64(u64::from(v.span));
                    h.u64(v.shard_seq);
                    h.u64(v.time.physical_us);
                    h.u64(u64::from(v.time.logical));
                    h.u64(v.sensor_time_us.map_or(u64::MAX, |s| s));
                    h.u64(u64::from(v.late) | (u64::from(e.tombstone) << 1));
                    h.bytes(&e.value);
                    if let Some(ck) = &e.compaction_key {
                        h.bytes(ck);
                    }
                }
            }
        }
        h.finish()
    }
}

/// FNV-1a 64: a stable hash (same on every machine and build) for shard routing and digests.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Fnv {
    pub fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        for &x in b {
            self.0 ^= u64::from(x);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    pub fn u64(&mut self, x: u64) {
        for &b in &x.to_le_bytes() {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    pub fn finish(self) -> u64 {
        self.0
    }
}
