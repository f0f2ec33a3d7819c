//! The checkpoint: what the store needs from log records that segment retention deletes —
//! pool configurations, each shard's last stamp, and the counters of keys whose kept entries
//! do not imply them (fully truncated keys, keys truncated mid-batch). Written atomically
//! (temporary file, fsync, rename, directory fsync) before any segment goes; recovery loads it
//! and replays the records from `cut_lsn` on, which is idempotent on top of it. Key owners
//! (see [`crate::owner`]) are saved too, as a trailing section older checkpoints lack.

use crate::log::record::{
    decode_body, decode_header, encode, put_bytes, put_owner, put_pool, read_owner, read_pool,
    Reader, Record, RecordBody, HEADER_BYTES,
};
use crate::owner::Owner;
use crate::types::{Hlc, PoolConfig, ShardId, Stamp, KEY_BYTES_MAX, POOL_NAME_BYTES_MAX};

/// A key's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMark {
    /// Its shard.
    pub shard: ShardId,
    /// Its pool.
    pub pool: String,
    /// The pool's incarnation.
    pub pool_id: u64,
    /// The key.
    pub key: String,
    /// First kept key_version.
    pub start: u64,
    /// Next key_version.
    pub next: u64,
    /// Newest version applied: (key_version, tombstone).
    pub newest: Option<(u64, bool)>,
}

/// A key's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerMark {
    /// Its shard.
    pub shard: ShardId,
    /// Its pool.
    pub pool: String,
    /// The pool's incarnation.
    pub pool_id: u64,
    /// The key.
    pub key: String,
    /// The owner (lapsed leases included: expiry is decided at the next op's time).
    pub owner: Owner,
}

/// A checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// Records below this lsn are covered (their segments may be gone).
    pub cut_lsn: u64,
    /// Each shard's last stamp.
    pub stamps: Vec<(ShardId, Stamp)>,
    /// Pools: (incarnation, config).
    pub pools: Vec<(u64, PoolConfig)>,
    /// Key counters not implied by kept entries.
    pub keys: Vec<KeyMark>,
    /// Per shard, records below this lsn are covered (a shard that received a state transfer
    /// covers its whole past); shards not listed use `cut_lsn`.
    pub shard_cuts: Vec<(ShardId, u64)>,
    /// Entries that live only here (installed by a state transfer), as `Put` records.
    pub entries: Vec<Record>,
    /// Owned keys of durable pools (their owner records may be in deleted segments).
    pub owners: Vec<OwnerMark>,
}

impl Checkpoint {
    /// `len u32 | crc32c u32 | body`.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&self.cut_lsn.to_le_bytes());
        b.extend_from_slice(&(self.stamps.len() as u32).to_le_bytes());
        for (sh, st) in &self.stamps {
            b.extend_from_slice(&sh.to_le_bytes());
            b.extend_from_slice(&st.shard_seq.to_le_bytes());
            b.extend_from_slice(&st.time.physical_us.to_le_bytes());
            b.extend_from_slice(&st.time.logical.to_le_bytes());
        }
        b.extend_from_slice(&(self.pools.len() as u32).to_le_bytes());
        for (id, c) in &self.pools {
            b.extend_from_slice(&id.to_le_bytes());
            put_pool(&mut b, c);
        }
        b.extend_from_slice(&(self.keys.len() as u32).to_le_bytes());
        for k in &self.keys {
            b.extend_from_slice(&k.shard.to_le_bytes());
            put_bytes(&mut b, k.pool.as_bytes());
            b.extend_from_slice(&k.pool_id.to_le_bytes());
            put_bytes(&mut b, k.key.as_bytes());
            b.extend_from_slice(&k.start.to_le_bytes());
            b.extend_from_slice(&k.next.to_le_bytes());
            match k.newest {
                None => b.push(0),
                Some((kv, tomb)) => {
                    b.push(1 | (u8::from(tomb) << 1));
                    b.extend_from_slice(&kv.to_le_bytes());
                }
            }
        }
        b.extend_from_slice(&(self.shard_cuts.len() as u32).to_le_bytes());
        for (sh, cut) in &self.shard_cuts {
            b.extend_from_slice(&sh.to_le_bytes());
            b.extend_from_slice(&cut.to_le_bytes());
        }
        b.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for r in &self.entries {
            encode(r, 0, &mut b);
        }
        b.extend_from_slice(&(self.owners.len() as u32).to_le_bytes());
        for o in &self.owners {
            b.extend_from_slice(&o.shard.to_le_bytes());
            put_bytes(&mut b, o.pool.as_bytes());
            b.extend_from_slice(&o.pool_id.to_le_bytes());
            put_bytes(&mut b, o.key.as_bytes());
            put_owner(&mut b, Some(o.owner));
        }
        let mut out = Vec::with_capacity(b.len() + 8);
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(&b).to_le_bytes());
        out.extend_from_slice(&b);
        out
    }

    /// Decodes and verifies; `Err` says what is wrong.
    pub fn decode(data: &[u8]) -> Result<Checkpoint, String> {
        if data.len() < 8 {
            return Err("checkpoint shorter than its header".into());
        }
        let len = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let crc = u32::from_le_bytes([data[4], data[5], data[6], data[7]]);
        if data.len() != 8 + len {
            return Err(format!(
                "checkpoint length {} but header says {len}",
                data.len() - 8
            ));
        }
        let body = &data[8..];
        if crc32c::crc32c(body) != crc {
            return Err("checkpoint checksum mismatch".into());
        }
        let mut r = Reader { b: body, pos: 0 };
        let cut_lsn = r.u64()?;
        // Counts are checked against the bytes left before anything is allocated.
        let count = |r: &mut Reader<'_>, min_each: usize| -> Result<usize, String> {
            let n = r.u32()? as usize;
            if n.saturating_mul(min_each) > r.b.len() - r.pos {
                return Err(format!("count {n} larger than the checkpoint"));
            }
            Ok(n)
        };
        let n = count(&mut r, 24)?;
        let mut stamps = Vec::with_capacity(n);
        for _ in 0..n {
            let sh = r.u32()?;
            let shard_seq = r.u64()?;
            let physical_us = r.u64()?;
            let logical = r.u32()?;
            stamps.push((
                sh,
                Stamp {
                    shard_seq,
                    time: Hlc {
                        physical_us,
                        logical,
                    },
                },
            ));
        }
        let n = count(&mut r, 8)?;
        let mut pools = Vec::with_capacity(n);
        for _ in 0..n {
            let id = r.u64()?;
            pools.push((id, read_pool(&mut r)?));
        }
        let n = count(&mut r, 30)?;
        let mut keys = Vec::with_capacity(n);
        for _ in 0..n {
            let shard = r.u32()?;
            let pool = r.string(POOL_NAME_BYTES_MAX)?;
            let pool_id = r.u64()?;
            let key = r.string(KEY_BYTES_MAX)?;
            let start = r.u64()?;
            let next = r.u64()?;
            let f = r.u8()?;
            let newest = if f & 1 != 0 {
                Some((r.u64()?, f & 2 != 0))
            } else {
                None
            };
            keys.push(KeyMark {
                shard,
                pool,
                pool_id,
                key,
                start,
                next,
                newest,
            });
        }
        let n = count(&mut r, 12)?;
        let mut shard_cuts = Vec::with_capacity(n);
        for _ in 0..n {
            shard_cuts.push((r.u32()?, r.u64()?));
        }
        let n = count(&mut r, HEADER_BYTES)?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let hb: [u8; HEADER_BYTES] = r
                .take(HEADER_BYTES)?
                .try_into()
                .map_err(|_| "short record header".to_string())?;
            let h = decode_header(&hb).ok_or("record header checksum mismatch")?;
            let rb = r.take(h.body_len as usize)?;
            if crc32c::crc32c(rb) != h.body_crc {
                return Err("record checksum mismatch".into());
            }
            let rec = decode_body(rb)?;
            if !matches!(rec.body, RecordBody::Put { .. }) {
                return Err("checkpoint entries must be puts".into());
            }
            entries.push(rec);
        }
        // Owners: absent in checkpoints written before they were kept.
        let mut owners = Vec::new();
        if r.pos != body.len() {
            let n = count(&mut r, 30)?;
            owners.reserve(n);
            for _ in 0..n {
                let shard = r.u32()?;
                let pool = r.string(POOL_NAME_BYTES_MAX)?;
                let pool_id = r.u64()?;
                let key = r.string(KEY_BYTES_MAX)?;
                let owner = read_owner(&mut r)?.ok_or("owner mark without an owner")?;
                owners.push(OwnerMark {
                    shard,
                    pool,
                    pool_id,
                    key,
                    owner,
                });
            }
        }
        if r.pos != body.len() {
            return Err("trailing bytes in checkpoint".into());
        }
        Ok(Checkpoint {
            cut_lsn,
            stamps,
            pools,
            keys,
            shard_cuts,
            entries,
            owners,
        })
    }
}
