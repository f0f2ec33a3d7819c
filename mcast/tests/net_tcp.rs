//! The TCP transport on 127.0.0.1, in one process: frames arrive with the id the peer
//! announced; bad input (a malformed handshake, a corrupt frame, a frame whose length is
//! beyond the limit) closes the connection without a panic and, once the peer was known,
//! is reported as `PeerLost` (a failure suspicion, never silent loss); a peer that goes
//! away is reported as `PeerLost` too.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::BytesMut;
use squall_mcast::codec;
use squall_mcast::net::transport::Hello;
use squall_mcast::net::{TcpConfig, TcpTransport, Transport, TransportEvent};
use squall_mcast::{Message, NodeId};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);

async fn transport(id: NodeId, peers: BTreeMap<NodeId, std::net::SocketAddr>) -> TcpTransport {
    TcpTransport::bind(
        TcpConfig::new(id, peers),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("bind")
}

async fn next(t: &mut TcpTransport) -> Option<TransportEvent> {
    tokio::time::timeout(Duration::from_secs(5), t.recv())
        .await
        .ok()
        .flatten()
}

fn frame(msg: &Message) -> bytes::Bytes {
    let mut b = BytesMut::new();
    codec::encode(msg, &mut b);
    b.freeze()
}

/// A raw connection to `to` that introduces itself as `id`.
async fn raw_peer(to: std::net::SocketAddr, id: NodeId) -> TcpStream {
    let mut s = TcpStream::connect(to).await.expect("connect");
    let mut h = BytesMut::new();
    Hello {
        id,
        listen: "127.0.0.1:1".parse().expect("addr"),
    }
    .encode(&mut h);
    // The handshake ends with the id of the member dialed (every raw peer here dials B).
    h.extend_from_slice(&B.0.to_le_bytes());
    s.write_all(&h).await.expect("hello");
    s
}

#[tokio::test]
async fn frames_arrive_with_the_announced_id() {
    let mut b = transport(B, BTreeMap::new()).await;
    let mut a = transport(A, BTreeMap::from([(B, b.local_addr())])).await;
    for i in 0..3u64 {
        assert!(a.send(
            B,
            frame(&Message::Join {
                from: NodeId(100 + i)
            })
        ));
    }
    for i in 0..3u64 {
        match next(&mut b).await {
            Some(TransportEvent::Message { from, msg }) => {
                assert_eq!(from, A);
                assert_eq!(
                    msg,
                    Message::Join {
                        from: NodeId(100 + i)
                    }
                );
            }
            other => panic!("expected a message, got {other:?}"),
        }
    }
    // B learned A's listen address from the handshake and can answer without configuration.
    assert_eq!(b.known_peers().get(&A), Some(&a.local_addr()));
    assert!(b.send(A, frame(&Message::Join { from: B })));
    match next(&mut a).await {
        Some(TransportEvent::Message { from, .. }) => assert_eq!(from, B),
        other => panic!("expected a message, got {other:?}"),
    }
}

#[tokio::test]
async fn corrupt_frame_closes_the_connection_and_reports_peer_lost() {
    let mut b = transport(B, BTreeMap::new()).await;
    let mut s = raw_peer(b.local_addr(), NodeId(9)).await;
    let mut f = frame(&Message::Join { from: NodeId(9) }).to_vec();
    let last = f.len() - 1;
    f[last] ^= 0xff; // breaks the checksum
    s.write_all(&f).await.expect("write");
    match next(&mut b).await {
        Some(TransportEvent::PeerLost { peer }) => assert_eq!(peer, NodeId(9)),
        other => panic!("expected PeerLost, got {other:?}"),
    }
    assert_eq!(b.stats().invalid_frames, 1);
}

#[tokio::test]
async fn frame_longer_than_the_limit_is_refused_before_reading_it() {
    let mut b = transport(B, BTreeMap::new()).await;
    let mut s = raw_peer(b.local_addr(), NodeId(9)).await;
    // A valid header claiming a 4 GiB body: refused from the header alone.
    let mut h = Vec::new();
    h.extend_from_slice(&codec::MAGIC.to_le_bytes());
    h.push(codec::VERSION);
    h.push(1);
    h.extend_from_slice(&u32::MAX.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    s.write_all(&h).await.expect("write");
    match next(&mut b).await {
        Some(TransportEvent::PeerLost { peer }) => assert_eq!(peer, NodeId(9)),
        other => panic!("expected PeerLost, got {other:?}"),
    }
    assert_eq!(b.stats().invalid_frames, 1);
}

#[tokio::test]
async fn malformed_handshake_is_dropped_without_an_event() {
    let mut b = transport(B, BTreeMap::new()).await;
    let mut s = TcpStream::connect(b.local_addr()).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    // Then a good peer still gets through.
    let mut a = transport(A, BTreeMap::from([(B, b.local_addr())])).await;
    assert!(a.send(B, frame(&Message::Join { from: A })));
    match next(&mut b).await {
        Some(TransportEvent::Message { from, .. }) => assert_eq!(from, A),
        other => panic!("expected A's message, got {other:?}"),
    }
    for _ in 0..500 {
        if b.stats().invalid_frames == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(b.stats().invalid_frames, 1);
    assert_eq!(b.stats().peers_lost, 0);
}

#[tokio::test]
async fn a_peer_that_goes_away_is_reported_lost() {
    let mut a = transport(A, BTreeMap::new()).await;
    let mut b = transport(B, BTreeMap::from([(A, a.local_addr())])).await;
    // Connect both ways (B dials A; A learns B's address from the handshake and dials back).
    assert!(b.send(A, frame(&Message::Join { from: B })));
    assert!(matches!(
        next(&mut a).await,
        Some(TransportEvent::Message { .. })
    ));
    let missing = a.connect_all(&[B], Duration::from_secs(5)).await;
    assert!(missing.is_empty(), "not connected to {missing:?}");
    drop(b); // closes every socket of B
    match next(&mut a).await {
        Some(TransportEvent::PeerLost { peer }) => assert_eq!(peer, B),
        other => panic!("expected PeerLost, got {other:?}"),
    }
}
