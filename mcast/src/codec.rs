//! Wire codec for [`Message`]: length-prefixed frames with a CRC32C of the body.
//!
//! ```text
//! frame  = magic u16 "SQ" (0x5153 LE) | version u8 (1) | kind u8 | body_len u32 | crc32c(body) u32 | body
//! ```
//! All integers are little-endian. Decoding is two-pass (mini-redis style): [`decode`] first
//! checks that a whole frame is buffered (`Error::Incomplete` otherwise, nothing consumed),
//! then validates the header, the length (against [`limits::FRAME_BYTES_MAX`] before anything
//! is allocated), the checksum, and every count inside the body against its named limit
//! (`Error::InvalidFrame`). A transport closes the connection on an invalid frame; that is a
//! failure suspicion for the core, never silent loss.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::Error;
use crate::hlc::Hlc;
use crate::limits;
use crate::messages::{DataBatch, DataMsg, Message, Proposal, Row, StateTransfer};
use crate::types::{Ballot, MsgId, NodeId, Version};

/// Frame magic ("SQ").
pub const MAGIC: u16 = 0x5153;
/// Codec version.
pub const VERSION: u8 = 1;
/// Header bytes before the body.
pub const HEADER_BYTES: usize = 12;

const KIND_DATA: u8 = 1;
const KIND_ROW: u8 = 2;
const KIND_JOIN: u8 = 3;
const KIND_STATE: u8 = 4;

/// Appends one frame carrying `msg` to `out` (a buffer the caller owns and reuses).
pub fn encode(msg: &Message, out: &mut BytesMut) {
    let kind = match msg {
        Message::Data(_) => KIND_DATA,
        Message::Row(_) => KIND_ROW,
        Message::Join { .. } => KIND_JOIN,
        Message::State(_) => KIND_STATE,
    };
    framed(out, kind, |out| match msg {
        Message::Data(b) => put_data(out, b),
        Message::Row(r) => put_row(out, r),
        Message::Join { from } => out.put_u64_le(from.0),
        Message::State(s) => put_state(out, s),
    });
}

/// Encodes consecutive data batches of one sender's stream as **one** data frame: the same
/// bytes as [`encode`] of a `Message::Data` holding all their messages (first index
/// `parts[0].first_index`), without building that merged batch (no per-message clone).
/// `parts` must be consecutive slices of one stream (same epoch, shard and sender rank,
/// each starting where the previous one ends); the caller checks that.
pub fn encode_data_run(parts: &[Arc<DataBatch>], out: &mut BytesMut) {
    let Some(first) = parts.first() else {
        return;
    };
    debug_assert!(parts.windows(2).all(|w| w[0].epoch == w[1].epoch
        && w[0].shard == w[1].shard
        && w[0].sender_rank == w[1].sender_rank
        && w[0].first_index + w[0].msgs.len() as u64 == w[1].first_index));
    let count: usize = parts.iter().map(|p| p.msgs.len()).sum();
    framed(out, KIND_DATA, |out| {
        put_data_header(out, first, count);
        for p in parts {
            put_data_msgs(out, &p.msgs);
        }
    });
}

/// Writes a frame header, the body written by `body`, then patches length and checksum.
fn framed(out: &mut BytesMut, kind: u8, body: impl FnOnce(&mut BytesMut)) {
    let start = out.len();
    out.put_u16_le(MAGIC);
    out.put_u8(VERSION);
    out.put_u8(kind);
    out.put_u32_le(0); // length, patched below
    out.put_u32_le(0); // checksum, patched below
    let body_at = out.len();
    body(out);
    let len = (out.len() - body_at) as u32;
    let crc = crc32c::crc32c(&out[body_at..]);
    out[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes the first frame in `buf`: the message and the bytes it used.
/// `Err(Incomplete)`: read more and call again; `Err(InvalidFrame)`: close the connection.
/// Payloads are copied out of `buf`; [`decode_shared`] avoids that.
pub fn decode(buf: &[u8]) -> Result<(Message, usize), Error> {
    let total = frame_len(buf)?;
    decode_body(buf, total, None)
}

/// Like [`decode`], but payloads and snapshots are slices of `buf` (no copy, no allocation
/// per payload). They keep `buf`'s whole allocation alive as long as they live: a holder
/// that keeps messages for long should copy them.
pub fn decode_shared(buf: &Bytes) -> Result<(Message, usize), Error> {
    let total = frame_len(buf)?;
    decode_body(buf, total, Some(buf))
}

/// The length of the frame at the start of `buf` (header included) once its header is
/// buffered and valid: `Err(Incomplete)` if the header is not all there, `Err(InvalidFrame)`
/// for a bad magic, version or a length over [`limits::FRAME_BYTES_MAX`]. The body may still
/// be incomplete.
pub fn frame_len(buf: &[u8]) -> Result<usize, Error> {
    if buf.len() < HEADER_BYTES {
        return Err(Error::Incomplete);
    }
    let magic = u16::from_le_bytes([buf[0], buf[1]]);
    if magic != MAGIC {
        return Err(Error::InvalidFrame("bad magic"));
    }
    if buf[2] != VERSION {
        return Err(Error::InvalidFrame("unknown codec version"));
    }
    let len = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    if len > limits::FRAME_BYTES_MAX {
        return Err(Error::InvalidFrame("frame longer than FRAME_BYTES_MAX"));
    }
    Ok(HEADER_BYTES + len)
}

/// Decodes the frame of `total` bytes (header checked by [`frame_len`]) at the start of
/// `buf`; with `shared` (the same bytes as `buf`), payloads are slices of it.
fn decode_body(
    buf: &[u8],
    total: usize,
    shared: Option<&Bytes>,
) -> Result<(Message, usize), Error> {
    if buf.len() < total {
        return Err(Error::Incomplete);
    }
    let kind = buf[3];
    let crc = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]);
    let body = &buf[HEADER_BYTES..total];
    if crc32c::crc32c(body) != crc {
        return Err(Error::InvalidFrame("checksum mismatch"));
    }
    let mut r = Reader {
        buf: body,
        pos: 0,
        shared,
    };
    let msg = match kind {
        KIND_DATA => Message::Data(Arc::new(r.data()?)),
        KIND_ROW => Message::Row(Arc::new(r.row()?)),
        KIND_JOIN => Message::Join {
            from: NodeId(r.u64()?),
        },
        KIND_STATE => Message::State(Arc::new(r.state()?)),
        _ => return Err(Error::InvalidFrame("unknown message kind")),
    };
    if r.pos != body.len() {
        return Err(Error::InvalidFrame("trailing bytes in frame"));
    }
    Ok((msg, total))
}

// ------------------------------------------------------------------ encoding helpers

fn put_ids(out: &mut BytesMut, ids: &[NodeId]) {
    out.put_u32_le(ids.len() as u32);
    for i in ids {
        out.put_u64_le(i.0);
    }
}

fn put_u64s(out: &mut BytesMut, v: &[u64]) {
    out.put_u32_le(v.len() as u32);
    for x in v {
        out.put_u64_le(*x);
    }
}

fn put_hlc(out: &mut BytesMut, h: Hlc) {
    out.put_u64_le(h.phys_us);
    out.put_u32_le(h.logical);
}

fn put_version(out: &mut BytesMut, v: Version) {
    out.put_u64_le(v.epoch);
    out.put_u64_le(v.seq);
}

fn put_ballot(out: &mut BytesMut, b: Ballot) {
    out.put_u32_le(b.round);
    out.put_u64_le(b.node);
}

fn put_bytes(out: &mut BytesMut, b: &[u8]) {
    out.put_u32_le(b.len() as u32);
    out.put_slice(b);
}

fn put_proposal(out: &mut BytesMut, p: &Proposal) {
    out.put_u64_le(p.epoch);
    put_ids(out, &p.members);
    out.put_u32_le(p.shards.len() as u32);
    for s in &p.shards {
        put_ids(out, s);
    }
    put_ids(out, &p.joiners);
    out.put_u32_le(p.trims.len() as u32);
    for t in &p.trims {
        put_u64s(out, t);
    }
    out.put_u32_le(p.sources.len() as u32);
    for s in &p.sources {
        match s {
            Some(n) => {
                out.put_u8(1);
                out.put_u64_le(n.0);
            }
            None => out.put_u8(0),
        }
    }
    out.put_u8(u8::from(p.restart));
}

fn put_opt_proposal(out: &mut BytesMut, p: &Option<Arc<Proposal>>) {
    match p {
        Some(p) => {
            out.put_u8(1);
            put_proposal(out, p);
        }
        None => out.put_u8(0),
    }
}

fn put_data(out: &mut BytesMut, b: &DataBatch) {
    put_data_header(out, b, b.msgs.len());
    put_data_msgs(out, &b.msgs);
}

/// The header of a data body: `b`'s stream position, with `count` messages following.
fn put_data_header(out: &mut BytesMut, b: &DataBatch, count: usize) {
    out.put_u64_le(b.epoch);
    out.put_u32_le(b.shard);
    out.put_u32_le(b.sender_rank);
    out.put_u64_le(b.first_index);
    out.put_u32_le(count as u32);
}

fn put_data_msgs(out: &mut BytesMut, msgs: &[DataMsg]) {
    for m in msgs {
        match m {
            DataMsg::Null => out.put_u8(0),
            DataMsg::App { id, ts, payload } => {
                out.put_u8(1);
                out.put_u64_le(id.sender.0);
                out.put_u64_le(id.seq);
                put_hlc(out, *ts);
                put_bytes(out, payload);
            }
        }
    }
}

fn put_row(out: &mut BytesMut, r: &Row) {
    out.put_u64_le(r.epoch);
    out.put_u64_le(r.from.0);
    out.put_u64_le(r.row_seq);
    put_u64s(out, &r.received);
    out.put_u64_le(r.delivered);
    put_version(out, r.persisted);
    put_hlc(out, r.frontier);
    out.put_u8(
        u8::from(r.state_ready)
            | (u8::from(r.leaving) << 1)
            | (u8::from(r.wedged) << 2)
            | (u8::from(r.restarting) << 3),
    );
    put_ids(out, &r.suspected);
    put_ids(out, &r.joiners);
    put_ballot(out, r.promised);
    match &r.accepted {
        Some((b, p)) => {
            out.put_u8(1);
            put_ballot(out, *b);
            put_proposal(out, p);
        }
        None => out.put_u8(0),
    }
    match &r.proposing {
        Some((b, p)) => {
            out.put_u8(1);
            put_ballot(out, *b);
            put_opt_proposal(out, p);
        }
        None => out.put_u8(0),
    }
    put_opt_proposal(out, &r.decided);
    put_opt_proposal(out, &r.installed_by);
}

fn put_state(out: &mut BytesMut, s: &StateTransfer) {
    out.put_u64_le(s.epoch);
    out.put_u32_le(s.shard);
    put_version(out, s.version);
    put_hlc(out, s.ts);
    put_hlc(out, s.clock);
    put_bytes(out, &s.data);
}

// ------------------------------------------------------------------ decoding

struct Reader<'a> {
    /// The frame body.
    buf: &'a [u8],
    pos: usize,
    /// The whole frame (header included) when byte strings are to be sliced, not copied.
    shared: Option<&'a Bytes>,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Error> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(Error::InvalidFrame("length overflow"))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(Error::InvalidFrame("body shorter than its fields"))?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, Error> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, Error> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn flag(&mut self) -> Result<bool, Error> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Error::InvalidFrame("bad option tag")),
        }
    }
    /// A count checked against `max` (and against the bytes left, at `min_item` bytes per
    /// item) before anything is allocated for it.
    fn count(&mut self, max: usize, min_item: usize, what: &'static str) -> Result<usize, Error> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(Error::InvalidFrame(what));
        }
        if n.saturating_mul(min_item) > self.buf.len() - self.pos {
            return Err(Error::InvalidFrame("count larger than the frame"));
        }
        Ok(n)
    }
    fn ids(&mut self, max: usize) -> Result<Vec<NodeId>, Error> {
        let n = self.count(max, 8, "too many node ids")?;
        (0..n).map(|_| Ok(NodeId(self.u64()?))).collect()
    }
    fn u64s(&mut self, max: usize) -> Result<Vec<u64>, Error> {
        let n = self.count(max, 8, "too many counters")?;
        (0..n).map(|_| self.u64()).collect()
    }
    fn hlc(&mut self) -> Result<Hlc, Error> {
        Ok(Hlc {
            phys_us: self.u64()?,
            logical: self.u32()?,
        })
    }
    fn version(&mut self) -> Result<Version, Error> {
        Ok(Version {
            epoch: self.u64()?,
            seq: self.u64()?,
        })
    }
    fn ballot(&mut self) -> Result<Ballot, Error> {
        Ok(Ballot {
            round: self.u32()?,
            node: self.u64()?,
        })
    }
    fn bytes(&mut self, max: usize) -> Result<Bytes, Error> {
        let n = self.count(max, 1, "byte string longer than its limit")?;
        let start = self.pos;
        self.take(n)?;
        let end = start + n;
        Ok(match self.shared {
            Some(frame) => frame.slice(HEADER_BYTES + start..HEADER_BYTES + end),
            None => Bytes::copy_from_slice(&self.buf[start..end]),
        })
    }
    fn proposal(&mut self) -> Result<Proposal, Error> {
        let epoch = self.u64()?;
        let members = self.ids(limits::VIEW_MEMBERS_MAX)?;
        let ns = self.count(limits::SHARDS_MAX, 4, "too many shards")?;
        let shards = (0..ns)
            .map(|_| self.ids(limits::SHARD_MEMBERS_MAX))
            .collect::<Result<Vec<_>, _>>()?;
        let joiners = self.ids(limits::JOINS_PER_VIEW_MAX)?;
        let nt = self.count(limits::SHARDS_MAX, 4, "too many trims")?;
        let trims = (0..nt)
            .map(|_| self.u64s(limits::SHARD_MEMBERS_MAX))
            .collect::<Result<Vec<_>, _>>()?;
        let nsrc = self.count(limits::SHARDS_MAX, 1, "too many sources")?;
        let sources = (0..nsrc)
            .map(|_| {
                Ok(if self.flag()? {
                    Some(NodeId(self.u64()?))
                } else {
                    None
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let restart = self.flag()?;
        Ok(Proposal {
            epoch,
            members,
            shards,
            joiners,
            trims,
            sources,
            restart,
        })
    }
    fn opt_proposal(&mut self) -> Result<Option<Arc<Proposal>>, Error> {
        Ok(if self.flag()? {
            Some(Arc::new(self.proposal()?))
        } else {
            None
        })
    }
    fn data(&mut self) -> Result<DataBatch, Error> {
        let epoch = self.u64()?;
        let shard = self.u32()?;
        let sender_rank = self.u32()?;
        let first_index = self.u64()?;
        let n = self.count(
            limits::BATCH_MESSAGES_MAX,
            1,
            "batch larger than BATCH_MESSAGES_MAX",
        )?;
        let mut msgs = Vec::with_capacity(n);
        for _ in 0..n {
            msgs.push(if self.flag()? {
                let id = MsgId {
                    sender: NodeId(self.u64()?),
                    seq: self.u64()?,
                };
                let ts = self.hlc()?;
                let payload = self.bytes(limits::PAYLOAD_BYTES_MAX)?;
                DataMsg::App { id, ts, payload }
            } else {
                DataMsg::Null
            });
        }
        Ok(DataBatch {
            epoch,
            shard,
            sender_rank,
            first_index,
            msgs,
        })
    }
    fn row(&mut self) -> Result<Row, Error> {
        let epoch = self.u64()?;
        let from = NodeId(self.u64()?);
        let row_seq = self.u64()?;
        let received = self.u64s(limits::SHARD_MEMBERS_MAX)?;
        let delivered = self.u64()?;
        let persisted = self.version()?;
        let frontier = self.hlc()?;
        let flags = self.u8()?;
        if flags & !0b1111 != 0 {
            return Err(Error::InvalidFrame("unknown row flags"));
        }
        let suspected = self.ids(limits::VIEW_MEMBERS_MAX)?;
        let joiners = self.ids(limits::PENDING_JOINERS_MAX)?;
        let promised = self.ballot()?;
        let accepted = if self.flag()? {
            Some((self.ballot()?, Arc::new(self.proposal()?)))
        } else {
            None
        };
        let proposing = if self.flag()? {
            Some((self.ballot()?, self.opt_proposal()?))
        } else {
            None
        };
        let decided = self.opt_proposal()?;
        let installed_by = self.opt_proposal()?;
        Ok(Row {
            epoch,
            from,
            row_seq,
            received,
            delivered,
            persisted,
            frontier,
            state_ready: flags & 1 != 0,
            leaving: flags & 2 != 0,
            wedged: flags & 4 != 0,
            restarting: flags & 8 != 0,
            suspected,
            joiners,
            promised,
            accepted,
            proposing,
            decided,
            installed_by,
        })
    }
    fn state(&mut self) -> Result<StateTransfer, Error> {
        Ok(StateTransfer {
            epoch: self.u64()?,
            shard: self.u32()?,
            version: self.version()?,
            ts: self.hlc()?,
            clock: self.hlc()?,
            data: self.bytes(limits::SNAPSHOT_BYTES_MAX)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_run_encodes_as_the_merged_batch() {
        let app = |seq: u64| DataMsg::App {
            id: MsgId {
                sender: NodeId(5),
                seq,
            },
            ts: Hlc {
                phys_us: 100 + seq,
                logical: 1,
            },
            payload: Bytes::from(vec![seq as u8; seq as usize % 7]),
        };
        let msgs: Vec<DataMsg> = (0..10)
            .map(|i| if i % 4 == 3 { DataMsg::Null } else { app(i) })
            .collect();
        let part = |from: usize, to: usize| {
            Arc::new(DataBatch {
                epoch: 3,
                shard: 1,
                sender_rank: 2,
                first_index: 40 + from as u64,
                msgs: msgs[from..to].to_vec(),
            })
        };
        let mut merged = BytesMut::new();
        encode(&Message::Data(part(0, 10)), &mut merged);
        let mut run = BytesMut::new();
        encode_data_run(&[part(0, 3), part(3, 4), part(4, 10)], &mut run);
        assert_eq!(run, merged);
        let (m, used) = decode(&run).expect("decodes");
        assert_eq!(used, run.len());
        assert_eq!(m, Message::Data(part(0, 10)));
        // One part is the plain encoding of that part.
        let mut one = BytesMut::new();
        encode_data_run(&[part(2, 5)], &mut one);
        let mut plain = BytesMut::new();
        encode(&Message::Data(part(2, 5)), &mut plain);
        assert_eq!(one, plain);
    }

    fn proposal() -> Arc<Proposal> {
        Arc::new(Proposal {
            epoch: 7,
            members: vec![NodeId(1), NodeId(3), NodeId(9)],
            shards: vec![vec![NodeId(1), NodeId(9)], vec![NodeId(3)]],
            joiners: vec![NodeId(9)],
            trims: vec![vec![4, 5], vec![2]],
            sources: vec![Some(NodeId(1)), None],
            restart: true,
        })
    }

    fn samples() -> Vec<Message> {
        let p = proposal();
        vec![
            Message::Join { from: NodeId(42) },
            Message::Data(Arc::new(DataBatch {
                epoch: 3,
                shard: 1,
                sender_rank: 2,
                first_index: 10,
                msgs: vec![
                    DataMsg::Null,
                    DataMsg::App {
                        id: MsgId {
                            sender: NodeId(5),
                            seq: 77,
                        },
                        ts: Hlc {
                            phys_us: 123,
                            logical: 4,
                        },
                        payload: Bytes::from_static(b"hello"),
                    },
                ],
            })),
            Message::Row(Arc::new(Row {
                epoch: 7,
                from: NodeId(3),
                row_seq: 99,
                received: vec![1, 2, 3],
                delivered: 6,
                persisted: Version { epoch: 6, seq: 11 },
                frontier: Hlc {
                    phys_us: 1000,
                    logical: 1,
                },
                state_ready: true,
                leaving: false,
                wedged: true,
                restarting: true,
                suspected: vec![NodeId(2)],
                joiners: vec![NodeId(9)],
                promised: Ballot { round: 3, node: 1 },
                accepted: Some((Ballot { round: 3, node: 1 }, p.clone())),
                proposing: Some((Ballot { round: 3, node: 1 }, Some(p.clone()))),
                decided: Some(p.clone()),
                installed_by: None,
            })),
            Message::State(Arc::new(StateTransfer {
                epoch: 8,
                shard: 0,
                version: Version { epoch: 7, seq: 40 },
                ts: Hlc {
                    phys_us: 5,
                    logical: 0,
                },
                clock: Hlc {
                    phys_us: 6,
                    logical: 2,
                },
                data: Bytes::from_static(b"snapshot"),
            })),
        ]
    }

    #[test]
    fn every_message_kind_round_trips_and_frames_concatenate() {
        let mut buf = BytesMut::new();
        for m in samples() {
            encode(&m, &mut buf);
        }
        let mut at = 0;
        for m in samples() {
            let (got, used) = decode(&buf[at..]).unwrap();
            assert_eq!(got, m);
            at += used;
        }
        assert_eq!(at, buf.len());
    }

    #[test]
    fn shared_decoding_gives_the_same_messages_with_payloads_sliced_from_the_buffer() {
        let mut buf = BytesMut::new();
        for m in samples() {
            encode(&m, &mut buf);
        }
        let mut rest = buf.freeze();
        let range = rest.as_ptr_range();
        for m in samples() {
            assert_eq!(frame_len(&rest), decode(&rest).map(|(_, used)| used));
            let (got, used) = decode_shared(&rest).unwrap();
            assert_eq!(got, m);
            let sliced = match &got {
                Message::Data(b) => b.msgs.iter().find_map(|m| match m {
                    DataMsg::App { payload, .. } => Some(payload.clone()),
                    DataMsg::Null => None,
                }),
                Message::State(s) => Some(s.data.clone()),
                _ => None,
            };
            if let Some(p) = sliced {
                // No copy: the payload points into the received buffer.
                assert!(range.contains(&p.as_ptr()), "payload was copied");
            }
            let _ = rest.split_to(used);
        }
        assert!(rest.is_empty());
    }

    #[test]
    fn every_strict_prefix_is_incomplete_never_invalid() {
        for m in samples() {
            let mut buf = BytesMut::new();
            encode(&m, &mut buf);
            for cut in 0..buf.len() {
                assert_eq!(
                    decode(&buf[..cut]).unwrap_err(),
                    Error::Incomplete,
                    "prefix {cut} of {m:?}"
                );
                assert_eq!(
                    decode_shared(&Bytes::copy_from_slice(&buf[..cut])).unwrap_err(),
                    Error::Incomplete,
                    "prefix {cut} of {m:?}"
                );
            }
        }
    }

    #[test]
    fn corruption_is_invalid() {
        let mut buf = BytesMut::new();
        encode(&samples()[1], &mut buf);
        let mut bad = buf.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert_eq!(
            decode(&bad).unwrap_err(),
            Error::InvalidFrame("checksum mismatch")
        );
        let mut bad = buf.to_vec();
        bad[0] = 0;
        assert_eq!(decode(&bad).unwrap_err(), Error::InvalidFrame("bad magic"));
        let mut bad = buf.to_vec();
        bad[3] = 200;
        assert_eq!(
            decode(&bad).unwrap_err(),
            Error::InvalidFrame("unknown message kind")
        );
    }

    #[test]
    fn huge_lengths_are_refused_before_allocating() {
        // Header announcing a 4 GiB body.
        let mut h = vec![0x53, 0x51, VERSION, KIND_DATA];
        h.extend_from_slice(&u32::MAX.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(
            decode(&h).unwrap_err(),
            Error::InvalidFrame("frame longer than FRAME_BYTES_MAX")
        );
        // A well-formed frame whose batch count claims 1e9 messages.
        let mut body = BytesMut::new();
        body.put_u64_le(1);
        body.put_u32_le(0);
        body.put_u32_le(0);
        body.put_u64_le(0);
        body.put_u32_le(1_000_000_000);
        let mut f = vec![0x53, 0x51, VERSION, KIND_DATA];
        f.extend_from_slice(&(body.len() as u32).to_le_bytes());
        f.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        f.extend_from_slice(&body);
        assert_eq!(
            decode(&f).unwrap_err(),
            Error::InvalidFrame("batch larger than BATCH_MESSAGES_MAX")
        );
    }

    #[test]
    fn random_bytes_and_bit_flips_never_panic() {
        // Deterministic pseudo-random inputs (SplitMix64); decode must return, not panic.
        let mut s: u64 = 0x1234_5678;
        let mut next = || {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let mut valid = BytesMut::new();
        encode(&samples()[2], &mut valid);
        for _ in 0..20_000 {
            let mut v = valid.to_vec();
            let i = (next() as usize) % v.len();
            v[i] ^= (next() as u8) | 1;
            let shared = decode_shared(&Bytes::copy_from_slice(&v));
            assert_eq!(decode(&v), shared);
            let n = (next() % 64) as usize;
            let junk: Vec<u8> = (0..n).map(|_| next() as u8).collect();
            let _ = decode(&junk);
        }
        // Re-checksummed bodies with flipped bits exercise the field parsers themselves.
        for _ in 0..20_000 {
            let mut v = valid.to_vec();
            let i = HEADER_BYTES + (next() as usize) % (v.len() - HEADER_BYTES);
            v[i] ^= (next() as u8) | 1;
            let crc = crc32c::crc32c(&v[HEADER_BYTES..]);
            v[8..12].copy_from_slice(&crc.to_le_bytes());
            let _ = decode(&v);
        }
    }
}
