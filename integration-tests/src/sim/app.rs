//! The replicated application the simulator runs on every node: a tiny key → version map
//! with put and compare-and-put, plus a running hash of everything delivered (the "state
//! hash" compared after state transfer).

use std::collections::BTreeMap;

use bytes::Bytes;
use squall_mcast::{Delivery, NodeId, ShardId};

/// Encodes an operation: `[0, key]` is put(key), `[1, key, expected]` is cput(key, expected).
pub fn encode_op(cput: bool, key: u8, expected: u8, filler: u64) -> Bytes {
    let mut v = vec![u8::from(cput), key, expected];
    v.extend_from_slice(&filler.to_le_bytes());
    Bytes::from(v)
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
    pub kv: BTreeMap<u8, u8>,
    /// Planted application bug: cput ignores its expectation.
    pub bug_cput_unconditional: bool,
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
        *self.per_sender.entry(d.id.sender).or_insert(0) += 1;
        let p = &d.payload;
        if p.len() < 3 {
            return None;
        }
        let (kind, key, expected) = (p[0], p[1], p[2]);
        let cur = self.kv.entry(key).or_insert(0);
        if kind == 1 {
            let ok = *cur == expected || self.bug_cput_unconditional;
            if ok {
                *cur = cur.wrapping_add(1);
            }
            Some(ok)
        } else {
            *cur = cur.wrapping_add(1);
            None
        }
    }

    /// Serialises the state (the state-transfer snapshot).
    pub fn snapshot(&self) -> Bytes {
        let mut v = Vec::new();
        v.extend_from_slice(&(self.len as u64).to_le_bytes());
        v.extend_from_slice(&self.hash.to_le_bytes());
        v.extend_from_slice(&(self.per_sender.len() as u64).to_le_bytes());
        for (n, c) in &self.per_sender {
            v.extend_from_slice(&n.0.to_le_bytes());
            v.extend_from_slice(&c.to_le_bytes());
        }
        v.extend_from_slice(&(self.kv.len() as u64).to_le_bytes());
        for (k, c) in &self.kv {
            v.push(*k);
            v.push(*c);
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
            let ns = u64_at(data)?;
            let mut per_sender = BTreeMap::new();
            for _ in 0..ns.min(1 << 20) {
                let n = u64_at(data)?;
                let c = u64_at(data)?;
                per_sender.insert(NodeId(n), c);
            }
            let nk = u64_at(data)? as usize;
            let rest = data.get(data.len().checked_sub(nk.checked_mul(2)?)?..)?;
            let mut kv = BTreeMap::new();
            for pair in rest.chunks(2) {
                kv.insert(pair[0], pair[1]);
            }
            Some(App {
                shard: Some(shard),
                len,
                hash,
                per_sender,
                kv,
                bug_cput_unconditional: false,
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
