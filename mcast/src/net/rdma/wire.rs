//! The RDMA transport's pure logic, testable without a device: the queue-pair endpoint
//! exchanged over the TCP side channel, the credit messages, the send and receive ring
//! accounting, the sender's byte-stream chunker and the receiver's frame reassembler.
//!
//! Nothing here touches verbs; `verbs.rs` drives these types from completions.

use std::collections::VecDeque;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::super::transport::HelloError;
use crate::codec;
use crate::error::Error;
use crate::messages::Message;

/// Endpoint magic ("SQRD" little-endian), sent after the [`Hello`](super::super::transport::Hello)
/// on the side channel, in both directions.
pub const ENDPOINT_MAGIC: u32 = 0x4452_5153;
/// Endpoint encoding version.
pub const ENDPOINT_VERSION: u8 = 1;
/// Encoded size of an [`Endpoint`]: magic, version, qpn, lid, gid flag, gid, slot bytes, slots.
pub const ENDPOINT_BYTES: usize = 4 + 1 + 4 + 2 + 1 + 16 + 4 + 4;
/// Largest queue-pair number (QPNs are 24 bits).
pub const QPN_MAX: u32 = 0x00FF_FFFF;
/// Smallest QPN of an RC queue pair (0 and 1 are the special SMI and GSI queue pairs).
pub const QPN_MIN: u32 = 2;
/// Smallest registered slot (one send or receive buffer).
pub const SLOT_BYTES_MIN: usize = 4 << 10;
/// Largest registered slot.
pub const SLOT_BYTES_MAX: usize = 1 << 20;
/// Most slots in one ring (send or receive work requests outstanding on one queue pair).
pub const SLOTS_MAX: u32 = 4096;
/// Bytes of one credit message (a little-endian `u32`: receive buffers re-posted).
pub const CREDIT_BYTES: usize = 4;

/// One side of a reliable-connected queue pair, as exchanged over the side channel: what the
/// other side needs to move its queue pair to ready-to-receive, plus this side's ring shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Queue pair number.
    pub qpn: u32,
    /// Local identifier of the port (InfiniBand; 0 on RoCE).
    pub lid: u16,
    /// Global identifier (required on RoCE, optional on InfiniBand), network byte order.
    pub gid: Option<[u8; 16]>,
    /// Bytes of each registered slot on this side.
    pub slot_bytes: u32,
    /// Slots on this side (for a receiver: receive buffers posted, the sender's first credits).
    pub slots: u32,
}

impl Endpoint {
    /// Appends the endpoint to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u32_le(ENDPOINT_MAGIC);
        out.put_u8(ENDPOINT_VERSION);
        out.put_u32_le(self.qpn);
        out.put_u16_le(self.lid);
        out.put_u8(u8::from(self.gid.is_some()));
        out.put_slice(&self.gid.unwrap_or([0; 16]));
        out.put_u32_le(self.slot_bytes);
        out.put_u32_le(self.slots);
    }

    /// Decodes an endpoint from the front of `buf`: the endpoint and the bytes it used.
    /// Every field is checked against its limit.
    pub fn decode(buf: &[u8]) -> Result<(Endpoint, usize), HelloError> {
        if buf.len() < ENDPOINT_BYTES {
            return Err(HelloError::Incomplete);
        }
        let mut b = &buf[..ENDPOINT_BYTES];
        if b.get_u32_le() != ENDPOINT_MAGIC {
            return Err(HelloError::Invalid("bad endpoint magic"));
        }
        if b.get_u8() != ENDPOINT_VERSION {
            return Err(HelloError::Invalid("unknown endpoint version"));
        }
        let qpn = b.get_u32_le();
        if !(QPN_MIN..=QPN_MAX).contains(&qpn) {
            return Err(HelloError::Invalid("queue pair number out of range"));
        }
        let lid = b.get_u16_le();
        let has_gid = b.get_u8();
        let mut gid = [0u8; 16];
        b.copy_to_slice(&mut gid);
        let gid = match has_gid {
            0 if gid == [0; 16] => None,
            0 => return Err(HelloError::Invalid("gid bytes without the gid flag")),
            1 => Some(gid),
            _ => return Err(HelloError::Invalid("bad gid flag")),
        };
        let slot_bytes = b.get_u32_le();
        if !(SLOT_BYTES_MIN..=SLOT_BYTES_MAX).contains(&(slot_bytes as usize)) {
            return Err(HelloError::Invalid("slot size out of range"));
        }
        let slots = b.get_u32_le();
        if !(1..=SLOTS_MAX).contains(&slots) {
            return Err(HelloError::Invalid("slot count out of range"));
        }
        Ok((
            Endpoint {
                qpn,
                lid,
                gid,
                slot_bytes,
                slots,
            },
            ENDPOINT_BYTES,
        ))
    }
}

/// Decodes the credit messages at the front of `buf` (the receiver tells the sender how many
/// receive buffers it re-posted). Returns the credits and the bytes used; a zero credit is
/// invalid (never sent).
pub fn decode_credits(buf: &[u8]) -> Result<(u64, usize), &'static str> {
    let mut total = 0u64;
    let mut used = 0;
    while buf.len() - used >= CREDIT_BYTES {
        let mut b = &buf[used..used + CREDIT_BYTES];
        let n = b.get_u32_le();
        if n == 0 || n > SLOTS_MAX {
            return Err("credit message out of range");
        }
        total += u64::from(n);
        used += CREDIT_BYTES;
    }
    Ok((total, used))
}

/// Why a ring refused a step: the peer (or the device) broke the protocol, so the connection
/// is closed and the peer reported lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingError(pub &'static str);

impl std::fmt::Display for RingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// The sender's ring: `slots` local registered buffers, used in order, each busy from its
/// send's post until its completion; and the credits, the receive buffers the receiver has
/// posted and not yet filled. A send is posted only with a free local slot *and* a credit,
/// so a send never finds the receiver without a buffer (no receiver-not-ready retries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendRing {
    slots: u32,
    next: u32,
    oldest: u32,
    in_flight: u32,
    credits: u64,
    credits_max: u64,
}

impl SendRing {
    /// A ring of `slots` local buffers (≥ 1) towards a receiver that posted `remote_slots`.
    pub fn new(slots: u32, remote_slots: u32) -> Self {
        SendRing {
            slots: slots.max(1),
            next: 0,
            oldest: 0,
            in_flight: 0,
            credits: u64::from(remote_slots),
            credits_max: u64::from(remote_slots),
        }
    }
    /// Whether a send can be posted now.
    pub fn can_post(&self) -> bool {
        self.credits > 0 && self.in_flight < self.slots
    }
    /// Takes the next slot and one credit for a send; `None` when [`can_post`](Self::can_post)
    /// is false.
    pub fn post(&mut self) -> Option<u32> {
        if !self.can_post() {
            return None;
        }
        let s = self.next;
        self.next = (self.next + 1) % self.slots;
        self.in_flight += 1;
        self.credits -= 1;
        Some(s)
    }
    /// A send completed: frees its slot. Completions of one queue pair arrive in post order;
    /// anything else is an error.
    pub fn complete(&mut self, slot: u32) -> Result<(), RingError> {
        if self.in_flight == 0 {
            return Err(RingError("send completion with nothing in flight"));
        }
        if slot != self.oldest {
            return Err(RingError("send completion out of order"));
        }
        self.oldest = (self.oldest + 1) % self.slots;
        self.in_flight -= 1;
        Ok(())
    }
    /// The receiver re-posted `n` buffers. More credits than buffers it ever had outstanding
    /// is a protocol violation.
    pub fn add_credits(&mut self, n: u64) -> Result<(), RingError> {
        if n == 0 || self.credits + n > self.credits_max {
            return Err(RingError("receiver returned more credits than it was owed"));
        }
        self.credits += n;
        Ok(())
    }
    /// Sends posted and not completed.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }
    /// Credits left.
    pub fn credits(&self) -> u64 {
        self.credits
    }
}

/// The receiver's ring: `slots` registered buffers, all posted at connect; each completes in
/// post order and is re-posted after its bytes were taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecvRing {
    slots: u32,
    next: u32,
    posted: u32,
}

impl RecvRing {
    /// A ring of `slots` (≥ 1) buffers, none posted yet.
    pub fn new(slots: u32) -> Self {
        RecvRing {
            slots: slots.max(1),
            next: 0,
            posted: 0,
        }
    }
    /// Records that buffer `slot` was posted (at connect, or re-posted after a completion).
    pub fn posted(&mut self, _slot: u32) -> Result<(), RingError> {
        if self.posted >= self.slots {
            return Err(RingError("more receive buffers posted than slots"));
        }
        self.posted += 1;
        Ok(())
    }
    /// A receive completed into `slot` with `len` bytes (slots are `slot_bytes` long).
    pub fn complete(&mut self, slot: u32, len: usize, slot_bytes: usize) -> Result<(), RingError> {
        if self.posted == 0 {
            return Err(RingError("receive completion with no buffer posted"));
        }
        if slot != self.next {
            return Err(RingError("receive completion out of order"));
        }
        if len == 0 || len > slot_bytes {
            return Err(RingError("receive completion length out of range"));
        }
        self.next = (self.next + 1) % self.slots;
        self.posted -= 1;
        Ok(())
    }
    /// Buffers posted now.
    pub fn posted_count(&self) -> u32 {
        self.posted
    }
}

/// The sender's byte stream: queued frames are cut into slot-sized chunks in order (small
/// frames share a chunk; a large frame spans many). The receiver glues chunks back in order
/// ([`Reassembler`]); a reliable-connected queue pair delivers sends in order, exactly once.
#[derive(Debug, Default)]
pub struct Chunker {
    frames: VecDeque<Bytes>,
    front_used: usize,
    bytes: usize,
}

impl Chunker {
    /// Appends frames.
    pub fn extend(&mut self, frames: impl IntoIterator<Item = Bytes>) {
        for f in frames {
            if !f.is_empty() {
                self.bytes += f.len();
                self.frames.push_back(f);
            }
        }
    }
    /// Bytes not yet cut into chunks.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    /// True when nothing is left.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }
    /// Copies the next at most `dst.len()` bytes of the stream into `dst`; returns how many.
    pub fn fill(&mut self, dst: &mut [u8]) -> usize {
        let mut n = 0;
        while n < dst.len() {
            let Some(front) = self.frames.front() else {
                break;
            };
            let rest = &front[self.front_used..];
            let k = rest.len().min(dst.len() - n);
            dst[n..n + k].copy_from_slice(&rest[..k]);
            n += k;
            self.front_used += k;
            if self.front_used == front.len() {
                self.frames.pop_front();
                self.front_used = 0;
            }
        }
        self.bytes -= n;
        n
    }
}

/// The receiver's side of the byte stream: chunks in order, decoded with the same codec,
/// checksums and length limits as TCP ([`codec::decode`] checks a frame's length against
/// [`FRAME_BYTES_MAX`](crate::limits::FRAME_BYTES_MAX) before anything grows).
#[derive(Debug, Default)]
pub struct Reassembler {
    buf: BytesMut,
}

impl Reassembler {
    /// Adds one received chunk and appends every complete frame to `out`. An invalid frame
    /// is an error (the connection must be closed); the frames before it in the stream are
    /// in `out` all the same, as TCP hands over the frames read before a bad one.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<Message>) -> Result<(), Error> {
        if chunk.is_empty() {
            return Err(Error::InvalidFrame("empty RDMA chunk"));
        }
        self.buf.extend_from_slice(chunk);
        loop {
            match codec::decode(&self.buf) {
                Ok((m, used)) => {
                    self.buf.advance(used);
                    out.push(m);
                }
                Err(Error::Incomplete) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
    /// Bytes of an incomplete frame held.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::NodeId;

    fn ep() -> Endpoint {
        Endpoint {
            qpn: 0x12_3456,
            lid: 7,
            gid: Some([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]),
            slot_bytes: 64 << 10,
            slots: 64,
        }
    }

    #[test]
    fn endpoint_round_trip_and_prefixes() {
        for e in [ep(), Endpoint { gid: None, ..ep() }] {
            let mut b = BytesMut::new();
            e.encode(&mut b);
            assert_eq!(b.len(), ENDPOINT_BYTES);
            assert_eq!(Endpoint::decode(&b), Ok((e, ENDPOINT_BYTES)));
            for n in 0..b.len() {
                assert_eq!(
                    Endpoint::decode(&b[..n]),
                    Err(HelloError::Incomplete),
                    "prefix {n}"
                );
            }
        }
    }

    #[test]
    fn endpoint_rejects_bad_input() {
        let mut good = BytesMut::new();
        ep().encode(&mut good);
        let bad = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.to_vec();
            f(&mut b);
            Endpoint::decode(&b)
        };
        // magic, version
        assert_eq!(
            bad(&|b| b[0] ^= 1),
            Err(HelloError::Invalid("bad endpoint magic"))
        );
        assert_eq!(
            bad(&|b| b[4] = 9),
            Err(HelloError::Invalid("unknown endpoint version"))
        );
        // qpn: 0, 1 and above 24 bits
        for q in [0u32, 1, QPN_MAX + 1, u32::MAX] {
            assert_eq!(
                bad(&|b| b[5..9].copy_from_slice(&q.to_le_bytes())),
                Err(HelloError::Invalid("queue pair number out of range")),
                "qpn {q}"
            );
        }
        // gid flag
        assert_eq!(
            bad(&|b| b[11] = 2),
            Err(HelloError::Invalid("bad gid flag"))
        );
        assert_eq!(
            bad(&|b| b[11] = 0),
            Err(HelloError::Invalid("gid bytes without the gid flag"))
        );
        // slot size and count beyond their limits
        for s in [
            0u32,
            SLOT_BYTES_MIN as u32 - 1,
            SLOT_BYTES_MAX as u32 + 1,
            u32::MAX,
        ] {
            assert_eq!(
                bad(&|b| b[28..32].copy_from_slice(&s.to_le_bytes())),
                Err(HelloError::Invalid("slot size out of range")),
                "slot bytes {s}"
            );
        }
        for s in [0u32, SLOTS_MAX + 1, u32::MAX] {
            assert_eq!(
                bad(&|b| b[32..36].copy_from_slice(&s.to_le_bytes())),
                Err(HelloError::Invalid("slot count out of range")),
                "slots {s}"
            );
        }
        // garbage of the right length never panics and is never accepted as-is
        let mut x = 0x9e37_79b9_u32;
        for _ in 0..2000 {
            let g: Vec<u8> = (0..ENDPOINT_BYTES)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            assert!(matches!(Endpoint::decode(&g), Err(HelloError::Invalid(_))));
        }
    }

    #[test]
    fn credits_decode_and_reject() {
        let mut b = Vec::new();
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&5u32.to_le_bytes());
        b.extend_from_slice(&[1, 0]); // half of a third message stays buffered
        assert_eq!(decode_credits(&b), Ok((8, 8)));
        assert_eq!(
            decode_credits(&0u32.to_le_bytes()),
            Err("credit message out of range")
        );
        assert_eq!(
            decode_credits(&(SLOTS_MAX + 1).to_le_bytes()),
            Err("credit message out of range")
        );
    }

    #[test]
    fn send_ring_needs_a_slot_and_a_credit() {
        // 3 local slots, receiver posted 2 buffers: credits are the limit.
        let mut r = SendRing::new(3, 2);
        assert_eq!(r.post(), Some(0));
        assert_eq!(r.post(), Some(1));
        assert_eq!(r.post(), None, "no credit left");
        assert_eq!(r.credits(), 0);
        r.add_credits(1).expect("one owed");
        assert_eq!(r.post(), Some(2));
        r.add_credits(2).expect("two owed");
        assert_eq!(r.post(), None, "all 3 local slots in flight");
        assert_eq!(r.in_flight(), 3);
        // completions free slots in order; slots are reused round-robin
        assert_eq!(
            r.complete(1),
            Err(RingError("send completion out of order"))
        );
        r.complete(0).expect("oldest");
        assert_eq!(r.post(), Some(0));
        for s in [1, 2, 0] {
            r.complete(s).expect("in order");
        }
        assert_eq!(
            r.complete(1),
            Err(RingError("send completion with nothing in flight"))
        );
        // credits: 2 max outstanding; 1 is left, 1 owed
        assert_eq!(r.credits(), 1);
        assert!(r.add_credits(2).is_err(), "more than owed");
        assert!(r.add_credits(0).is_err(), "zero credit");
        r.add_credits(1).expect("owed");
        assert!(r.add_credits(1).is_err(), "nothing owed any more");
    }

    #[test]
    fn send_ring_accounting_holds_over_a_long_random_run() {
        // Model check: credits + unreturned == credits_max, in_flight <= slots, slot ids in
        // post order, under a seeded random interleaving of post / complete / return.
        let (slots, remote) = (5u32, 4u32);
        let mut r = SendRing::new(slots, remote);
        let mut in_flight = VecDeque::new();
        let mut owed = 0u64; // buffers the receiver filled and has not returned
        let mut next = 0u32;
        let mut x = 12345u64;
        for _ in 0..100_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            match (x >> 33) % 3 {
                0 => {
                    let can = (in_flight.len() as u32) < slots && r.credits() > 0;
                    assert_eq!(r.can_post(), can);
                    if let Some(s) = r.post() {
                        assert_eq!(s, next);
                        next = (next + 1) % slots;
                        in_flight.push_back(s);
                        owed += 1;
                    }
                }
                1 => {
                    if let Some(s) = in_flight.pop_front() {
                        r.complete(s).expect("in order");
                    }
                }
                _ => {
                    if owed > 0 {
                        let n = 1 + (x >> 40) % owed;
                        r.add_credits(n).expect("owed");
                        owed -= n;
                    }
                }
            }
            assert_eq!(r.credits() + owed, u64::from(remote));
            assert_eq!(r.in_flight() as usize, in_flight.len());
        }
    }

    #[test]
    fn recv_ring_checks_order_count_and_length() {
        let mut r = RecvRing::new(2);
        assert!(r.complete(0, 10, 100).is_err(), "nothing posted");
        r.posted(0).expect("room");
        r.posted(1).expect("room");
        assert!(r.posted(0).is_err(), "3rd buffer in a 2-slot ring");
        assert_eq!(
            r.complete(1, 10, 100),
            Err(RingError("receive completion out of order"))
        );
        assert_eq!(
            r.complete(0, 0, 100),
            Err(RingError("receive completion length out of range"))
        );
        assert_eq!(
            r.complete(0, 101, 100),
            Err(RingError("receive completion length out of range"))
        );
        r.complete(0, 100, 100).expect("full slot");
        r.posted(0).expect("re-post");
        r.complete(1, 1, 100).expect("in order");
        r.complete(0, 5, 100).expect("wrapped");
        assert_eq!(r.posted_count(), 0);
    }

    fn frame(m: &Message) -> Bytes {
        let mut b = BytesMut::new();
        codec::encode(m, &mut b);
        b.freeze()
    }

    #[test]
    fn chunker_and_reassembler_carry_frames_across_any_chunk_size() {
        let msgs: Vec<Message> = (0..50u64)
            .map(|i| Message::Join { from: NodeId(i) })
            .collect();
        let frames: Vec<Bytes> = msgs.iter().map(frame).collect();
        let total: usize = frames.iter().map(Bytes::len).sum();
        for chunk in [1usize, 7, 20, 21, 64, 4096] {
            let mut c = Chunker::default();
            c.extend(frames.iter().cloned());
            assert_eq!(c.bytes(), total);
            let mut r = Reassembler::default();
            let mut got = Vec::new();
            let mut slot = vec![0u8; chunk];
            while !c.is_empty() {
                let n = c.fill(&mut slot);
                assert!(n > 0 && n <= chunk);
                r.push(&slot[..n], &mut got).expect("valid stream");
            }
            assert_eq!(r.buffered(), 0, "chunk {chunk}");
            assert_eq!(got.len(), msgs.len(), "chunk {chunk}");
            for (g, m) in got.iter().zip(&msgs) {
                assert_eq!(frame(g), frame(m));
            }
        }
    }

    #[test]
    fn reassembler_rejects_bad_frames_and_empty_chunks() {
        let good = frame(&Message::Join { from: NodeId(3) });
        // A flipped body byte: checksum mismatch.
        let mut bad = good.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let mut out = Vec::new();
        let mut r = Reassembler::default();
        assert!(matches!(
            r.push(&bad, &mut out),
            Err(Error::InvalidFrame(_))
        ));
        // A header claiming a frame longer than the limit is refused before any growth.
        let mut huge = good[..codec::HEADER_BYTES].to_vec();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut r = Reassembler::default();
        assert_eq!(
            r.push(&huge, &mut out),
            Err(Error::InvalidFrame("frame longer than FRAME_BYTES_MAX"))
        );
        // Zero-length chunk (never sent by a correct peer).
        assert_eq!(
            Reassembler::default().push(&[], &mut out),
            Err(Error::InvalidFrame("empty RDMA chunk"))
        );
        assert!(out.is_empty());
        // A good frame followed by garbage in the same chunk: the good frame is handed over,
        // then the error closes the connection.
        let mut chunk = good.to_vec();
        chunk.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut r = Reassembler::default();
        assert_eq!(
            r.push(&chunk, &mut out),
            Err(Error::InvalidFrame("bad magic"))
        );
        assert_eq!(out.len(), 1);
        assert_eq!(frame(&out[0]), good);
    }
}
