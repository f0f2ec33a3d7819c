//! The on-disk record format.
//!
//! ```text
//! header (12 bytes): body_len u32 LE | body_crc32c u32 LE | header_crc32c u32 LE (of the first 8)
//! body:              lsn u64 | shard u32 | shard_seq u64 | hlc physical_us u64 | hlc logical u32
//!                    | kind u8 | kind-specific fields
//! ```
//! Strings and byte strings are `u32 length | bytes`, options a `u8` flag then the value. The
//! header has its own checksum so a flipped length is told apart from a torn write: a torn tail
//! leaves a short file or zeros, never a header whose checksum holds but whose body is cut
//! short in the middle of a segment.

use bytes::Bytes;

use crate::owner::Owner;
use crate::types::{Hlc, Mode, PoolConfig, ShardId, Stamp, Version, POOL_NAME_BYTES_MAX};

/// Header size in bytes.
pub const HEADER_BYTES: usize = 12;
/// Smallest body: lsn, shard, seq, physical, logical, kind.
pub const BODY_BYTES_MIN: usize = 8 + 4 + 8 + 8 + 4 + 1;

const KIND_CREATE_POOL: u8 = 1;
const KIND_DELETE_POOL: u8 = 2;
const KIND_PUT: u8 = 3;
const KIND_TRUNCATE: u8 = 4;
const KIND_ALTER_POOL: u8 = 5;
const KIND_RETAIN: u8 = 6;
const KIND_OWNER: u8 = 7;

/// What a record says happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordBody {
    /// A pool was created.
    CreatePool(PoolConfig),
    /// A pool was deleted.
    DeletePool {
        /// The pool.
        pool: String,
        /// Its incarnation (the creation's shard_seq).
        pool_id: u64,
    },
    /// A version was stored (its key_version already decided).
    Put {
        /// The pool.
        pool: String,
        /// Its incarnation.
        pool_id: u64,
        /// The key.
        key: String,
        /// The version (shard_seq and time equal the record's stamp).
        version: Version,
        /// The value.
        value: Bytes,
        /// A delete.
        tombstone: bool,
        /// Compaction key.
        compaction_key: Option<Bytes>,
        /// The key's start after the retention applied with this put (the result, so replay
        /// does not depend on the pool's retention config at replay time); `None` in records
        /// written before the log held it (replay then applies the current config) and in
        /// images and checkpoints (kept state: no retention).
        retained: Option<u64>,
        /// `Some(owner after)` when this put changed the key's owner (see [`crate::owner`]):
        /// logged in the same record, so the write and its claim are durable together.
        owner: Option<Option<Owner>>,
    },
    /// A key was truncated.
    Truncate {
        /// The pool.
        pool: String,
        /// Its incarnation.
        pool_id: u64,
        /// The key.
        key: String,
        /// First key_version kept.
        before: u64,
    },
    /// A pool's alterable settings changed (same incarnation).
    AlterPool {
        /// Its incarnation.
        pool_id: u64,
        /// The new configuration.
        config: PoolConfig,
    },
    /// Retention ran over the shard: each listed key's start moved to the given point (the
    /// results, so replay does not depend on the config).
    Retain {
        /// (pool, pool incarnation, key, start after).
        keys: Vec<(String, u64, String, u64)>,
    },
    /// A key's owner changed (see [`crate::owner`]): the owner after the change, `None` once
    /// released. Logged right after the put that changed it (or alone, for a release), so
    /// replaying the log in order ends at the owner every replica computed.
    Owner {
        /// The pool.
        pool: String,
        /// Its incarnation.
        pool_id: u64,
        /// The key.
        key: String,
        /// The owner after the change.
        owner: Option<Owner>,
    },
}

/// One log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The shard whose order it belongs to.
    pub shard: ShardId,
    /// Its stamp in that order.
    pub stamp: Stamp,
    /// What happened.
    pub body: RecordBody,
    /// Its log sequence number (assigned by the log on append; filled on read).
    pub lsn: u64,
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Encodes a pool configuration.
pub(crate) fn put_pool(out: &mut Vec<u8>, c: &PoolConfig) {
    put_bytes(out, c.name.as_bytes());
    out.push(match c.mode {
        Mode::Stateless => 0,
        Mode::Latest => 1,
        Mode::Versioned => 2,
    });
    out.push(u8::from(c.durable) | (u8::from(c.compact) << 1));
    put_opt_u64(out, c.retention_ms);
    put_opt_u64(out, c.retention_bytes);
    out.extend_from_slice(&c.lateness_us.to_le_bytes());
    out.extend_from_slice(&c.value_bytes_max.to_le_bytes());
}

/// Decodes a pool configuration.
pub(crate) fn read_pool(r: &mut Reader<'_>) -> Result<PoolConfig, String> {
    let name = r.string(POOL_NAME_BYTES_MAX)?;
    let mode = match r.u8()? {
        0 => Mode::Stateless,
        1 => Mode::Latest,
        2 => Mode::Versioned,
        m => return Err(format!("bad mode {m}")),
    };
    let flags = r.u8()?;
    Ok(PoolConfig {
        name,
        mode,
        durable: flags & 1 != 0,
        compact: flags & 2 != 0,
        retention_ms: r.opt_u64()?,
        retention_bytes: r.opt_u64()?,
        lateness_us: r.u64()?,
        value_bytes_max: r.u32()?,
    })
}

/// Encodes an optional owner: `u8` flag, then writer u64, strength i32, lease end (option u64).
pub(crate) fn put_owner(out: &mut Vec<u8>, o: Option<Owner>) {
    match o {
        None => out.push(0),
        Some(o) => {
            out.push(1);
            out.extend_from_slice(&o.writer.to_le_bytes());
            out.extend_from_slice(&o.strength.to_le_bytes());
            put_opt_u64(out, o.until_us);
        }
    }
}

/// Decodes what [`put_owner`] wrote.
pub(crate) fn read_owner(r: &mut Reader<'_>) -> Result<Option<Owner>, String> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(Owner {
            writer: r.u64()?,
            strength: r.u32()? as i32,
            until_us: r.opt_u64()?,
        })),
        f => Err(format!("bad owner flag {f}")),
    }
}

pub(crate) fn put_opt_u64(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        Some(x) => {
            out.push(1);
            out.extend_from_slice(&x.to_le_bytes());
        }
        None => out.push(0),
    }
}

/// A put's value at least this large is not copied by [`encode_split`]: the log writes it
/// from the caller's buffer (a produce request's batch), saving a copy of every byte.
pub const SPLIT_VALUE_BYTES_MIN: usize = 64 * 1024;

/// Encodes `rec` with log sequence number `lsn` (header included) into `out`.
pub fn encode(rec: &Record, lsn: u64, out: &mut Vec<u8>) {
    encode_with(rec, lsn, out, usize::MAX);
}

/// Like [`encode`], but a put whose value has at least [`SPLIT_VALUE_BYTES_MIN`] bytes leaves
/// the value out of `out` and returns `(at, value)`: the encoded record is `out[..at]`, then
/// `value`, then `out[at..]` — byte for byte what [`encode`] writes (header, length and
/// checksum included). `None`: `out` holds the whole record. Only for a record starting at
/// the beginning of `out`.
pub fn encode_split<'a>(rec: &'a Record, lsn: u64, out: &mut Vec<u8>) -> Option<(usize, &'a [u8])> {
    debug_assert!(out.is_empty());
    encode_with(rec, lsn, out, SPLIT_VALUE_BYTES_MIN)
}

fn encode_with<'a>(
    rec: &'a Record,
    lsn: u64,
    out: &mut Vec<u8>,
    split_min: usize,
) -> Option<(usize, &'a [u8])> {
    let mut split: Option<(usize, &'a [u8])> = None;
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_BYTES]);
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&rec.shard.to_le_bytes());
    out.extend_from_slice(&rec.stamp.shard_seq.to_le_bytes());
    out.extend_from_slice(&rec.stamp.time.physical_us.to_le_bytes());
    out.extend_from_slice(&rec.stamp.time.logical.to_le_bytes());
    match &rec.body {
        RecordBody::CreatePool(c) => {
            out.push(KIND_CREATE_POOL);
            put_pool(out, c);
        }
        RecordBody::DeletePool { pool, pool_id } => {
            out.push(KIND_DELETE_POOL);
            put_bytes(out, pool.as_bytes());
            out.extend_from_slice(&pool_id.to_le_bytes());
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
            out.push(KIND_PUT);
            put_bytes(out, pool.as_bytes());
            out.extend_from_slice(&pool_id.to_le_bytes());
            put_bytes(out, key.as_bytes());
            out.extend_from_slice(&version.key_version.to_le_bytes());
            out.extend_from_slice(&version.span.to_le_bytes());
            put_opt_u64(out, version.sensor_time_us);
            // Bits 2 and 3 say which trailers follow; records without them (older logs) may
            // carry only `retained`, told by the body's length.
            out.push(
                u8::from(version.late)
                    | (u8::from(*tombstone) << 1)
                    | (u8::from(retained.is_some()) << 2)
                    | (u8::from(owner.is_some()) << 3),
            );
            match compaction_key {
                Some(ck) => {
                    out.push(1);
                    put_bytes(out, ck);
                }
                None => out.push(0),
            }
            if value.len() >= split_min {
                out.extend_from_slice(&(value.len() as u32).to_le_bytes());
                split = Some((out.len(), &value[..]));
            } else {
                put_bytes(out, value);
            }
            if let Some(r) = retained {
                out.extend_from_slice(&r.to_le_bytes());
            }
            if let Some(o) = owner {
                put_owner(out, *o);
            }
        }
        RecordBody::Truncate {
            pool,
            pool_id,
            key,
            before,
        } => {
            out.push(KIND_TRUNCATE);
            put_bytes(out, pool.as_bytes());
            out.extend_from_slice(&pool_id.to_le_bytes());
            put_bytes(out, key.as_bytes());
            out.extend_from_slice(&before.to_le_bytes());
        }
        RecordBody::AlterPool { pool_id, config } => {
            out.push(KIND_ALTER_POOL);
            out.extend_from_slice(&pool_id.to_le_bytes());
            put_pool(out, config);
        }
        RecordBody::Retain { keys } => {
            out.push(KIND_RETAIN);
            out.extend_from_slice(&(keys.len() as u32).to_le_bytes());
            for (pool, pool_id, key, start) in keys {
                put_bytes(out, pool.as_bytes());
                out.extend_from_slice(&pool_id.to_le_bytes());
                put_bytes(out, key.as_bytes());
                out.extend_from_slice(&start.to_le_bytes());
            }
        }
        RecordBody::Owner {
            pool,
            pool_id,
            key,
            owner,
        } => {
            out.push(KIND_OWNER);
            put_bytes(out, pool.as_bytes());
            out.extend_from_slice(&pool_id.to_le_bytes());
            put_bytes(out, key.as_bytes());
            put_owner(out, *owner);
        }
    }
    let body = start + HEADER_BYTES;
    let (body_len, body_crc) = match split {
        None => (out.len() - body, crc32c::crc32c(&out[body..])),
        Some((at, value)) => {
            let crc = crc32c::crc32c(&out[body..at]);
            let crc = crc32c::crc32c_append(crc, value);
            (
                out.len() - body + value.len(),
                crc32c::crc32c_append(crc, &out[at..]),
            )
        }
    };
    out[start..start + 4].copy_from_slice(&(body_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&body_crc.to_le_bytes());
    let hcrc = crc32c::crc32c(&out[start..start + 8]);
    out[start + 8..start + 12].copy_from_slice(&hcrc.to_le_bytes());
    split
}

/// A parsed, checksum-verified header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Body length.
    pub body_len: u32,
    /// Body checksum.
    pub body_crc: u32,
}

/// Parses a header; `None` if its checksum fails.
pub fn decode_header(h: &[u8; HEADER_BYTES]) -> Option<Header> {
    let u = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    (crc32c::crc32c(&h[..8]) == u(8)).then(|| Header {
        body_len: u(0),
        body_crc: u(4),
    })
}

pub(crate) struct Reader<'a> {
    pub b: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or_else(|| format!("field of {n} bytes runs past the body"))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32, String> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, String> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub(crate) fn string(&mut self, max: usize) -> Result<String, String> {
        let b = self.bytes()?;
        if b.len() > max {
            return Err(format!("string of {} bytes over limit {max}", b.len()));
        }
        String::from_utf8(b.to_vec()).map_err(|_| "string is not UTF-8".to_string())
    }
    pub(crate) fn opt_u64(&mut self) -> Result<Option<u64>, String> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.u64()?)),
            f => Err(format!("bad option flag {f}")),
        }
    }
}

/// Decodes a checksum-verified body. `Err` says what is malformed.
pub fn decode_body(raw: &[u8]) -> Result<Record, String> {
    let mut r = Reader { b: raw, pos: 0 };
    let lsn = r.u64()?;
    let shard = r.u32()?;
    let shard_seq = r.u64()?;
    let physical_us = r.u64()?;
    let logical = r.u32()?;
    let stamp = Stamp {
        shard_seq,
        time: Hlc {
            physical_us,
            logical,
        },
    };
    let key_max = crate::types::KEY_BYTES_MAX;
    let body = match r.u8()? {
        KIND_CREATE_POOL => RecordBody::CreatePool(read_pool(&mut r)?),
        KIND_DELETE_POOL => RecordBody::DeletePool {
            pool: r.string(POOL_NAME_BYTES_MAX)?,
            pool_id: r.u64()?,
        },
        KIND_PUT => {
            let pool = r.string(POOL_NAME_BYTES_MAX)?;
            let pool_id = r.u64()?;
            let key = r.string(key_max)?;
            let key_version = r.u64()?;
            let span = r.u32()?;
            let sensor_time_us = r.opt_u64()?;
            let flags = r.u8()?;
            let compaction_key = match r.u8()? {
                0 => None,
                1 => Some(Bytes::copy_from_slice(r.bytes()?)),
                f => return Err(format!("bad option flag {f}")),
            };
            let value = Bytes::copy_from_slice(r.bytes()?);
            let (retained, owner) = if flags & 0b1100 == 0 {
                // Older records: an optional `retained` told by the length.
                let retained = if r.pos == raw.len() {
                    None
                } else {
                    Some(r.u64()?)
                };
                (retained, None)
            } else {
                let retained = if flags & 4 != 0 { Some(r.u64()?) } else { None };
                let owner = if flags & 8 != 0 {
                    Some(read_owner(&mut r)?)
                } else {
                    None
                };
                (retained, owner)
            };
            RecordBody::Put {
                pool,
                pool_id,
                key,
                version: Version {
                    key_version,
                    span,
                    shard_seq,
                    time: stamp.time,
                    sensor_time_us,
                    late: flags & 1 != 0,
                },
                value,
                tombstone: flags & 2 != 0,
                compaction_key,
                retained,
                owner,
            }
        }
        KIND_TRUNCATE => RecordBody::Truncate {
            pool: r.string(POOL_NAME_BYTES_MAX)?,
            pool_id: r.u64()?,
            key: r.string(key_max)?,
            before: r.u64()?,
        },
        KIND_ALTER_POOL => RecordBody::AlterPool {
            pool_id: r.u64()?,
            config: read_pool(&mut r)?,
        },
        KIND_RETAIN => {
            let n = r.u32()? as usize;
            // Each entry takes at least 24 bytes: the count is checked before allocating.
            if n > (raw.len() - r.pos) / 24 {
                return Err(format!("retain record claims {n} keys"));
            }
            let mut keys = Vec::with_capacity(n);
            for _ in 0..n {
                keys.push((
                    r.string(POOL_NAME_BYTES_MAX)?,
                    r.u64()?,
                    r.string(key_max)?,
                    r.u64()?,
                ));
            }
            RecordBody::Retain { keys }
        }
        KIND_OWNER => RecordBody::Owner {
            pool: r.string(POOL_NAME_BYTES_MAX)?,
            pool_id: r.u64()?,
            key: r.string(key_max)?,
            owner: read_owner(&mut r)?,
        },
        k => return Err(format!("unknown record kind {k}")),
    };
    if r.pos != raw.len() {
        return Err(format!("{} trailing bytes", raw.len() - r.pos));
    }
    Ok(Record {
        shard,
        stamp,
        body,
        lsn,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A put record round-trips with every combination of its two trailers (retention result,
    /// owner change), and a record in the older format (no trailer flags, `retained` told by
    /// the length) still decodes.
    #[test]
    fn put_trailers_round_trip_and_old_records_decode() {
        let owner = Owner {
            writer: 7,
            strength: -3,
            until_us: Some(99),
        };
        for retained in [None, Some(5)] {
            for o in [None, Some(None), Some(Some(owner))] {
                let rec = Record {
                    shard: 1,
                    stamp: Stamp {
                        shard_seq: 9,
                        time: Hlc {
                            physical_us: 1000,
                            logical: 2,
                        },
                    },
                    body: RecordBody::Put {
                        pool: "p".into(),
                        pool_id: 3,
                        key: "k".into(),
                        version: Version {
                            key_version: 4,
                            span: 1,
                            shard_seq: 9,
                            time: Hlc {
                                physical_us: 1000,
                                logical: 2,
                            },
                            sensor_time_us: None,
                            late: false,
                        },
                        value: Bytes::from_static(b"v"),
                        tombstone: false,
                        compaction_key: None,
                        retained,
                        owner: o,
                    },
                    lsn: 11,
                };
                let mut out = Vec::new();
                encode(&rec, 11, &mut out);
                let got = decode_body(&out[HEADER_BYTES..]).unwrap();
                assert_eq!(got, rec);
                if o.is_none() && retained.is_some() {
                    // The older format: the same bytes without the trailer flag bit.
                    let mut old = out[HEADER_BYTES..].to_vec();
                    let flags_at = old.len() - 8 - (4 + 1) - 1 - 1; // retained, value, ck flag
                    assert_eq!(old[flags_at], 4, "flags byte located");
                    old[flags_at] = 0;
                    assert_eq!(decode_body(&old).unwrap(), rec);
                }
            }
        }
        // An owner record.
        let rec = Record {
            shard: 0,
            stamp: Stamp::default(),
            body: RecordBody::Owner {
                pool: "p".into(),
                pool_id: 1,
                key: "k".into(),
                owner: None,
            },
            lsn: 2,
        };
        let mut out = Vec::new();
        encode(&rec, 2, &mut out);
        assert_eq!(decode_body(&out[HEADER_BYTES..]).unwrap(), rec);
    }

    /// The split encoding (a large value written from its own buffer) must put exactly the
    /// bytes of the plain encoding on disk, checksums included; small values are not split.
    #[test]
    fn split_encoding_is_byte_identical() {
        for (len, retained, owner) in [
            (SPLIT_VALUE_BYTES_MIN, None, None),
            (SPLIT_VALUE_BYTES_MIN + 7, Some(5u64), None),
            (
                3 * SPLIT_VALUE_BYTES_MIN,
                Some(9),
                Some(Owner {
                    writer: 3,
                    strength: -2,
                    until_us: Some(77),
                }),
            ),
            (SPLIT_VALUE_BYTES_MIN - 1, None, None),
        ] {
            let value: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let rec = Record {
                shard: 2,
                stamp: Stamp {
                    shard_seq: 9,
                    time: Hlc {
                        physical_us: 1000,
                        logical: 2,
                    },
                },
                body: RecordBody::Put {
                    pool: "pool".into(),
                    pool_id: 3,
                    key: "topic/0".into(),
                    version: Version {
                        key_version: 4,
                        span: 1000,
                        shard_seq: 9,
                        time: Hlc {
                            physical_us: 1000,
                            logical: 2,
                        },
                        sensor_time_us: Some(5),
                        late: false,
                    },
                    value: Bytes::from(value),
                    tombstone: false,
                    compaction_key: None,
                    retained,
                    owner: owner.map(Some),
                },
                lsn: 11,
            };
            let mut plain = Vec::new();
            encode(&rec, 11, &mut plain);
            let mut out = Vec::new();
            let joined = match encode_split(&rec, 11, &mut out) {
                Some((at, v)) => {
                    assert!(len >= SPLIT_VALUE_BYTES_MIN, "split a {len}-byte value");
                    assert_eq!(v.len(), len);
                    [&out[..at], v, &out[at..]].concat()
                }
                None => {
                    assert!(
                        len < SPLIT_VALUE_BYTES_MIN,
                        "did not split a {len}-byte value"
                    );
                    out
                }
            };
            // (assert! rather than assert_eq!: a failure would print megabytes)
            assert!(joined == plain, "value of {len} bytes: encodings differ");
            assert!(decode_body(&joined[HEADER_BYTES..]).unwrap() == rec);
        }
    }
}
