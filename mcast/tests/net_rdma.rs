//! The RDMA transport on a real RDMA device (feature `rdma`), in one process: two
//! transports connect through the device (a loopback queue pair), frames arrive in order
//! with the announced id in both directions across many small slots (so frames span slot
//! boundaries and the credits wrap many times), and a peer that goes away is reported as
//! `PeerLost`, never silent loss.
//!
//! These tests need an RDMA device (a NIC, or a soft-RoCE link) and are `#[ignore]`d: the
//! machine this was written on has none, so **they have never been run**. On a machine with
//! one:
//!
//! ```text
//! SQUALL_RDMA_DEVICE=mlx5_0 SQUALL_RDMA_GID_INDEX=1 \
//!   cargo test -p squall-mcast --features rdma --test net_rdma -- --ignored
//! ```
//! (`SQUALL_RDMA_GID_INDEX` is needed on RoCE, see `show_gids`; leave it out on InfiniBand.)
#![cfg(feature = "rdma")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use squall_mcast::codec;
use squall_mcast::net::rdma::{RdmaConfig, RdmaTransport};
use squall_mcast::net::{Transport, TransportEvent};
use squall_mcast::{Message, NodeId};

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);

fn cfg(id: NodeId, peers: BTreeMap<NodeId, SocketAddr>) -> RdmaConfig {
    let mut c = RdmaConfig::new(id, peers);
    c.device = std::env::var("SQUALL_RDMA_DEVICE").ok();
    c.gid_index = std::env::var("SQUALL_RDMA_GID_INDEX")
        .ok()
        .map(|s| s.parse().expect("SQUALL_RDMA_GID_INDEX is a number"));
    // Small slots and few of them: frames cross slot boundaries, credits run out and wrap.
    c.slots = 4;
    c.slot_bytes = 4096;
    c
}

async fn transport(id: NodeId, peers: BTreeMap<NodeId, SocketAddr>) -> RdmaTransport {
    RdmaTransport::bind(cfg(id, peers), "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind (is an RDMA device present? see the file's header)")
}

async fn next(t: &mut RdmaTransport) -> Option<TransportEvent> {
    tokio::time::timeout(Duration::from_secs(10), t.recv())
        .await
        .ok()
        .flatten()
}

fn frame(msg: &Message) -> bytes::Bytes {
    let mut b = BytesMut::new();
    codec::encode(msg, &mut b);
    b.freeze()
}

#[tokio::test]
#[ignore = "needs an RDMA device (none on the machine this was written on)"]
async fn frames_cross_the_device_in_order_both_ways() {
    let mut b = transport(B, BTreeMap::new()).await;
    let mut a = transport(A, BTreeMap::from([(B, b.local_addr())])).await;
    // A dials B; B learns A's side channel from A's hello and dials back.
    let (ma, mb) = tokio::join!(
        a.connect_all(&[B], Duration::from_secs(10)),
        b.connect_all(&[A], Duration::from_secs(10))
    );
    assert!(
        ma.is_empty() && mb.is_empty(),
        "not connected: A {ma:?}, B {mb:?}"
    );

    const N: u64 = 20_000; // ~400 KB of 20-byte frames over 4 KiB slots: ~100 chunks
    let mut sent_a = 0;
    let mut got_b = 0u64;
    let mut sent_b = 0;
    let mut got_a = 0u64;
    while got_b < N || got_a < N {
        // Offer what the queues take (they refuse when full: backpressure, counted).
        while sent_a < N
            && a.send(
                B,
                frame(&Message::Join {
                    from: NodeId(sent_a),
                }),
            )
        {
            sent_a += 1;
        }
        while sent_b < N
            && b.send(
                A,
                frame(&Message::Join {
                    from: NodeId(sent_b),
                }),
            )
        {
            sent_b += 1;
        }
        tokio::select! {
            e = next(&mut b), if got_b < N => match e {
                Some(TransportEvent::Message { from, msg: Message::Join { from: i } }) => {
                    assert_eq!(from, A);
                    assert_eq!(i, NodeId(got_b), "in order");
                    got_b += 1;
                }
                other => panic!("B got {other:?} after {got_b} frames"),
            },
            e = next(&mut a), if got_a < N => match e {
                Some(TransportEvent::Message { from, msg: Message::Join { from: i } }) => {
                    assert_eq!(from, B);
                    assert_eq!(i, NodeId(got_a), "in order");
                    got_a += 1;
                }
                other => panic!("A got {other:?} after {got_a} frames"),
            },
        }
    }
    assert_eq!(a.queued_bytes(B), 0);
    let s = a.stats();
    assert_eq!(s.frames_sent, N);
    assert_eq!(s.frames_received, N);
    assert_eq!(s.invalid_frames, 0);
    assert_eq!(s.peers_lost, 0);

    // B goes away: A must report it lost (its side channel closes, its queue pairs die).
    drop(b);
    loop {
        match next(&mut a).await {
            Some(TransportEvent::PeerLost { peer }) => {
                assert_eq!(peer, B);
                break;
            }
            Some(TransportEvent::Message { .. }) => {}
            None => panic!("B's departure was not reported"),
        }
    }
}
