//! The driver (`net::Driver`) running two real nodes over `TcpTransport` on 127.0.0.1 in one
//! process: both multicast, both must deliver the same sequence (same message ids in the same
//! order with the same versions), and the driver's batching must show: no more data frames and
//! rows on the wire than the node emitted (merged batches, newest row per peer only), and
//! frames that were ready together fed to the node as one batch (one protocol step, so
//! fewer steps than frames).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use squall_mcast::net::{Application, Driver, TcpConfig, TcpTransport};
use squall_mcast::{Config, Delivery, MsgId, Node, NodeId, ShardId, Version};

#[derive(Debug, Default)]
struct Log(Vec<(Version, MsgId)>);

impl Application for Log {
    fn deliver(&mut self, _now_us: u64, d: &Delivery) {
        self.0.push((d.version, d.id));
    }
    fn capture_snapshot(&mut self, _shard: ShardId, _version: Version) -> Bytes {
        Bytes::new()
    }
    fn install_snapshot(&mut self, _shard: ShardId, _version: Version, _data: &Bytes) {}
}

const PER_SENDER: u64 = 2_000;

async fn member(me: NodeId, peer: NodeId, transport: TcpTransport) -> Driver<TcpTransport, Log> {
    let mut transport = transport;
    let missing = transport
        .connect_all(&[peer], Duration::from_secs(10))
        .await;
    assert!(missing.is_empty(), "{me}: not connected to {missing:?}");
    let cfg = Config {
        window: 64,
        suspect_timeout_us: 5_000_000,
        ..Config::default()
    };
    let mut members = vec![me, peer];
    members.sort();
    let mut clock = squall_mcast::net::WallClock::default();
    let node = Node::new_initial(me, &members, cfg, clock.now_us()).expect("node");
    let mut d = Driver::new(node, transport, Log::default());
    let mut sent = 0u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while (d.app.0.len() as u64) < 2 * PER_SENDER {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{me}: timed out: {d:?}"
        );
        if sent < PER_SENDER {
            let mut payloads = (sent..PER_SENDER)
                .map(|i| Bytes::from(format!("{me}-{i}")))
                .peekable();
            if let Ok(ids) = d.send_batch(&mut payloads) {
                sent += ids.len() as u64;
            }
            d.flush();
        }
        assert!(d.step().await, "transport closed");
    }
    d
}

#[tokio::test]
async fn two_drivers_deliver_the_same_sequence_with_batching() {
    let (a, b) = (NodeId(1), NodeId(2));
    let ta = TcpTransport::bind(
        TcpConfig::new(a, BTreeMap::new()),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("bind a");
    let tb = TcpTransport::bind(
        TcpConfig::new(b, BTreeMap::from([(a, ta.local_addr())])),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("bind b");
    // A learns B's address from B's handshake.
    let ja = tokio::spawn(member(a, b, ta));
    let jb = tokio::spawn(member(b, a, tb));
    let da = ja.await.expect("member a");
    let db = jb.await.expect("member b");
    let n = (2 * PER_SENDER) as usize;
    assert_eq!(
        da.app.0[..n],
        db.app.0[..n],
        "the two members' sequences differ"
    );
    for d in [&da, &db] {
        let s = d.stats();
        // Since the node steps once per input batch it rarely emits two rows for a peer
        // within one flush, so the driver's coalescing seldom has anything to drop.
        assert!(s.rows_sent <= s.rows_in, "rows not coalesced: {s:?}");
        assert!(s.input_batches < s.events, "inputs not batched: {s:?}");
        assert!(s.data_frames <= s.data_batches_in, "{s:?}");
        assert_eq!(s.peers_lost, 0, "{s:?}");
    }
}
