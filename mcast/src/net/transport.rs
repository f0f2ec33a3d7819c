//! The transport contract, its events, and the connection handshake.
//!
//! A transport moves already-encoded frames ([`codec::encode`](crate::codec::encode)) between
//! members and hands decoded messages back with the sender's id it vouches for. Its one
//! promise about loss: **a frame is never dropped silently**. Either it reaches the peer, or
//! the transport reports [`TransportEvent::PeerLost`] for that peer (the core treats that as a
//! failure suspicion), or — while no connection to the peer was ever established — the
//! peer's silence is what the core's own suspicion timeout sees.
//!
//! The only exceptions are a full outbound queue and a peer that cannot be dialed right now
//! ([`Transport::send`] returns `false`): the
//! core's sends are best effort by contract (data is retransmitted from the receivers' rows,
//! rows are re-pushed every heartbeat), so the driver counts it and goes on.

use std::future::Future;
use std::net::SocketAddr;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::messages::Message;
use crate::types::NodeId;

/// What a transport reports to its driver.
#[derive(Debug)]
pub enum TransportEvent {
    /// A decoded message from `from` (the transport vouches for the id: on TCP it is the id
    /// the peer announced in its handshake on that connection).
    Message {
        /// Sender.
        from: NodeId,
        /// The message.
        msg: Message,
    },
    /// An established connection with `peer` broke (reset, end of stream, invalid frame,
    /// write error). Frames queued for it may be lost, so this is a failure suspicion.
    PeerLost {
        /// The peer.
        peer: NodeId,
    },
}

/// Counters a transport keeps (for reports and tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Frames handed to `send`.
    pub frames_sent: u64,
    /// Frame bytes handed to `send`.
    pub bytes_sent: u64,
    /// Frames refused because the peer's outbound queue was full.
    pub frames_dropped_full: u64,
    /// Frames refused because no connection to the peer existed and no dial was due
    /// (address unknown, or the last dial failed less than `redial_ms` ago).
    pub frames_dropped_unconnected: u64,
    /// Frames decoded from peers.
    pub frames_received: u64,
    /// Connections closed because a peer sent an invalid frame or handshake.
    pub invalid_frames: u64,
    /// `PeerLost` events reported.
    pub peers_lost: u64,
    /// Outbound connections established.
    pub connects: u64,
}

/// A way to move frames between members. TCP is [`TcpTransport`](super::TcpTransport); the
/// RDMA transport (the `ibverbs` crate, feature `rdma`, `net::rdma::RdmaTransport`)
/// implements the same trait (never run on RDMA hardware, see `docs/MCAST.md`).
pub trait Transport {
    /// This member's id.
    fn local_id(&self) -> NodeId;
    /// Queues one encoded frame for `to` (connecting if needed). Never blocks. Returns
    /// `false` when the frame was refused (`to`'s queue is full, or `to` cannot be reached
    /// now); both are counted in [`TransportStats`].
    fn send(&mut self, to: NodeId, frame: Bytes) -> bool;
    /// Bytes queued for `to` and not yet written (backpressure for unordered senders).
    fn queued_bytes(&self, to: NodeId) -> usize;
    /// The next event; waits until one arrives. Cancel-safe (usable in `select!`).
    /// `None` when the transport has shut down.
    fn recv(&mut self) -> impl Future<Output = Option<TransportEvent>> + Send;
    /// The next event if one is ready now (lets a driver take everything that piled up
    /// before it runs the core: opportunistic batching).
    fn try_recv(&mut self) -> Option<TransportEvent>;
    /// Counters.
    fn stats(&self) -> TransportStats;
}

// ------------------------------------------------------------------ handshake

/// Handshake magic ("SQHI" little-endian) sent first on every connection.
pub const HELLO_MAGIC: u32 = 0x4948_5153;
/// Handshake version.
pub const HELLO_VERSION: u8 = 1;
/// Longest listen address accepted in a handshake.
pub const HELLO_ADDR_BYTES_MAX: usize = 128;
/// Fixed part of a handshake: magic, version, node id, address length.
pub const HELLO_FIXED_BYTES: usize = 4 + 1 + 8 + 2;

/// The first bytes on a connection: who dialed and where it listens (so the accepting side
/// can dial back, which is how members learn a joiner's address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The dialer's member id.
    pub id: NodeId,
    /// Where the dialer accepts connections.
    pub listen: SocketAddr,
}

/// Why a handshake was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HelloError {
    /// Not enough bytes yet.
    Incomplete,
    /// Malformed: the connection must be closed.
    Invalid(&'static str),
}

impl Hello {
    /// Appends the handshake to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let addr = self.listen.to_string();
        out.put_u32_le(HELLO_MAGIC);
        out.put_u8(HELLO_VERSION);
        out.put_u64_le(self.id.0);
        out.put_u16_le(addr.len() as u16);
        out.put_slice(addr.as_bytes());
    }

    /// Decodes a handshake from the front of `buf`: the hello and the bytes it used.
    pub fn decode(buf: &[u8]) -> Result<(Hello, usize), HelloError> {
        if buf.len() < HELLO_FIXED_BYTES {
            return Err(HelloError::Incomplete);
        }
        let mut b = &buf[..HELLO_FIXED_BYTES];
        if b.get_u32_le() != HELLO_MAGIC {
            return Err(HelloError::Invalid("bad handshake magic"));
        }
        if b.get_u8() != HELLO_VERSION {
            return Err(HelloError::Invalid("unknown handshake version"));
        }
        let id = NodeId(b.get_u64_le());
        let len = b.get_u16_le() as usize;
        if len > HELLO_ADDR_BYTES_MAX {
            return Err(HelloError::Invalid("handshake address too long"));
        }
        let total = HELLO_FIXED_BYTES + len;
        if buf.len() < total {
            return Err(HelloError::Incomplete);
        }
        let addr = std::str::from_utf8(&buf[HELLO_FIXED_BYTES..total])
            .map_err(|_| HelloError::Invalid("handshake address not UTF-8"))?;
        let listen = addr
            .parse()
            .map_err(|_| HelloError::Invalid("handshake address unparsable"))?;
        Ok((Hello { id, listen }, total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trip_and_prefixes() {
        let h = Hello {
            id: NodeId(7),
            listen: "127.0.0.1:4567".parse().expect("addr"),
        };
        let mut b = BytesMut::new();
        h.encode(&mut b);
        assert_eq!(Hello::decode(&b), Ok((h, b.len())));
        for n in 0..b.len() {
            assert_eq!(
                Hello::decode(&b[..n]),
                Err(HelloError::Incomplete),
                "prefix {n}"
            );
        }
    }

    #[test]
    fn hello_rejects_bad_input() {
        let mut b = BytesMut::new();
        Hello {
            id: NodeId(1),
            listen: "127.0.0.1:1".parse().expect("addr"),
        }
        .encode(&mut b);
        let mut bad = b.to_vec();
        bad[0] ^= 1;
        assert!(matches!(Hello::decode(&bad), Err(HelloError::Invalid(_))));
        let mut long = b[..HELLO_FIXED_BYTES].to_vec();
        long[13..15].copy_from_slice(&(u16::MAX).to_le_bytes());
        assert!(matches!(Hello::decode(&long), Err(HelloError::Invalid(_))));
        let mut garbage = b[..HELLO_FIXED_BYTES - 2].to_vec();
        garbage.extend_from_slice(&3u16.to_le_bytes());
        garbage.extend_from_slice(b"x:y");
        assert!(matches!(
            Hello::decode(&garbage),
            Err(HelloError::Invalid(_))
        ));
    }
}
