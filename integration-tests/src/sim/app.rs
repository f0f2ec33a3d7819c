//! The replicated application the simulator runs on every node: a tiny key → version map
//! with put and compare-and-put, plus a running hash of everything delivered (the "state
//! hash" compared after state transfer), and the local history of timestamps that answers
//! "how many updates are stamped ≤ T" (the simulator's cross-shard cut reads, §7 inv 8).

use std::collections::BTreeMap;

use bytes::Bytes;
use squall_mcast::{Delivery, Hlc, NodeId, ShardId, Version};

/// Encodes an operation: `[0, key, expected u64 LE, filler]` is put(key),
/// `[1, key, expected, filler]` is cput(key, expected) (succeeds iff the key has seen
/// exactly `expected` successful writes).
pub fn encode_op(cput: bool, key: u8, expected: u64, filler: u64) -> Bytes {
    let mut v = vec![u8::from(cput), key];
    v.extend_from_slice(&expected.to_le_bytes());
    v.extend_from_slice(&filler.to_le_bytes());
    Bytes::from(v)
}

/// Decodes `(is_cput, key, expected)`.
pub fn decode_op(p: &[u8]) -> Option<(bool, u8, u64)> {
    let e = p.get(2..10)?;
    Some((
        *p.first()? == 1,
        *p.get(1)?,
        u64::from_le_bytes(e.try_into().ok()?),
    ))
}

/// One node's replica of its shard's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct App {
    /// Shard this state belongs to.
    pub shard: Option<ShardId>,
    /// Messages applied.
    pub len: usize,
    /// Running hash of (version, ts, id, payload) of everything applied.
    pub hash: u64,
    /// Per original sender: messages applied.
    pub per_sender: BTreeMap<NodeId, u64>,
    /// Key → number of successful writes.
    pub kv: BTreeMap<u8, u64>,
    /// Planted application bug: cput ignores its expectation.
    pub bug_cput_unconditional: bool,
    /// Version and timestamp of the last applied update (or of the snapshot).
    pub last_version: Version,
    /// See `last_version`.
    pub last_ts: Hlc,
    /// Length, newest timestamp and hash of the state the local history starts from (a
    /// snapshot; zeros from the start).
    pub base: (usize, Hlc, u64),
    /// Local history since `base`: (timestamp, state hash after) per applied update.
    pub hist: Vec<(Hlc, u64)>,
}

fn mix(h: u64, x: u64) -> u64 {
    let mut h = h ^ x;
    h = h.wrapping_mul(0x0000_0100_0000_01b3);
    h ^ (h >> 29)
}

impl App {
    /// Applies one delivery; returns `Some(success)` for a cput.
    pub fn apply(&mut self, d: &Delivery) -> Option<bool> {
        self.len += 1;
        let mut h = mix(self.hash, d.version.epoch);
        h = mix(h, d.version.seq);
        h = mix(h, d.ts.phys_us);
        h = mix(h, u64::from(d.ts.logical));
        h = mix(h, d.id.sender.0);
        h = mix(h, d.id.seq);
        for b in d.payload.iter() {
            h = mix(h, u64::from(*b));
        }
        self.hash = h;
        self.last_version = d.version;
        self.last_ts = d.ts;
        self.hist.push((d.ts, h));
        *self.per_sender.entry(d.id.sender).or_insert(0) += 1;
        let (cput, key, expected) = decode_op(&d.payload)?;
        let cur = self.kv.entry(key).or_insert(0);
        if cput {
            let ok = *cur == expected || self.bug_cput_unconditional;
            if ok {
                *cur += 1;
            }
            Some(ok)
        } else {
            *cur += 1;
            None
        }
    }

    /// A read "at T" from local state: how many updates are stamped ≤ T, and the state
    /// hash after them. `None` when T is older than the snapshot the history starts from.
    pub fn count_at(&self, t: Hlc) -> Option<(usize, u64)> {
        let (base_len, base_ts, base_hash) = self.base;
        if base_len > 0 && t < base_ts {
            return None;
        }
        let k = self.hist.partition_point(|(ts, _)| *ts <= t);
        let hash = if k == 0 {
            base_hash
        } else {
            self.hist[k - 1].1
        };
        Some((base_len + k, hash))
    }

    /// The state without the local history (cheap to clone per delivery).
    pub fn without_hist(&self) -> App {
        App {
            shard: self.shard,
            len: self.len,
            hash: self.hash,
            per_sender: self.per_sender.clone(),
            kv: self.kv.clone(),
            bug_cput_unconditional: self.bug_cput_unconditional,
            last_version: self.last_version,
            last_ts: self.last_ts,
            base: self.base,
            hist: Vec::new(),
        }
    }

    /// Serialises the state (the state-transfer snapshot).
    pub fn snapshot(&self) -> Bytes {
        let mut v = Vec::new();
        v.extend_from_slice(&(self.len as u64).to_le_bytes());
        v.extend_from_slice(&self.hash.to_le_bytes());
        v.extend_from_slice(&self.last_version.epoch.to_le_bytes());
        v.extend_from_slice(&self.last_version.seq.to_le_bytes());
        v.extend_from_slice(&self.last_ts.phys_us.to_le_bytes());
        v.extend_from_slice(&u64::from(self.last_ts.logical).to_le_bytes());
        v.extend_from_slice(&(self.per_sender.len() as u64).to_le_bytes());
        for (n, c) in &self.per_sender {
            v.extend_from_slice(&n.0.to_le_bytes());
            v.extend_from_slice(&c.to_le_bytes());
        }
        v.extend_from_slice(&(self.kv.len() as u64).to_le_bytes());
        for (k, c) in &self.kv {
            v.push(*k);
            v.extend_from_slice(&c.to_le_bytes());
        }
        Bytes::from(v)
    }

    /// Replaces the state with a snapshot; false if it does not parse.
    pub fn install(&mut self, shard: ShardId, data: &[u8]) -> bool {
        let mut pos = 0usize;
        let mut u64_at = |data: &[u8]| -> Option<u64> {
            let b = data.get(pos..pos + 8)?;
            pos += 8;
            Some(u64::from_le_bytes(b.try_into().ok()?))
        };
        let mut parse = || -> Option<App> {
            let len = u64_at(data)? as usize;
            let hash = u64_at(data)?;
            let last_version = Version {
                epoch: u64_at(data)?,
                seq: u64_at(data)?,
            };
            let last_ts = Hlc {
                phys_us: u64_at(data)?,
                logical: u32::try_from(u64_at(data)?).ok()?,
            };
            let ns = u64_at(data)?;
            let mut per_sender = BTreeMap::new();
            for _ in 0..ns.min(1 << 20) {
                let n = u64_at(data)?;
                let c = u64_at(data)?;
                per_sender.insert(NodeId(n), c);
            }
            let nk = u64_at(data)? as usize;
            let rest = data.get(data.len().checked_sub(nk.checked_mul(9)?)?..)?;
            let mut kv = BTreeMap::new();
            for rec in rest.chunks(9) {
                kv.insert(rec[0], u64::from_le_bytes(rec.get(1..9)?.try_into().ok()?));
            }
            Some(App {
                shard: Some(shard),
                len,
                hash,
                per_sender,
                kv,
                bug_cput_unconditional: false,
                last_version,
                last_ts,
                base: (len, last_ts, hash),
                hist: Vec::new(),
            })
        };
        match parse() {
            Some(mut a) => {
                a.bug_cput_unconditional = self.bug_cput_unconditional;
                *self = a;
                true
            }
            None => false,
        }
    }
}
