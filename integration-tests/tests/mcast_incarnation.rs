//! Node ids across incarnations on the TCP transport (issue 3). The core identifies a member
//! across restarts by `NodeId::base` and tells incarnations apart by the full id; the
//! transport keys connections by the full id. A process that dies and is replaced by its
//! next incarnation **on the same address** (what a restarted member with a fixed port
//! does) must not receive frames addressed to the dead incarnation: a peer keeps sending
//! to the old id until the view change that removes it, redialling its address, and such a
//! dial reaches the new process. Before the fix, the new process took that connection as
//! "member 1's connection" (the handshake named only the dialer), received frames meant for
//! the old incarnation, and, holding two inbound connections from member 1, silently
//! dropped the frames of whichever handshake came first: possibly every frame member 1
//! addressed to it (a silent loss the transport contract forbids).
//!
//! `frames_for_a_dead_incarnation_never_reach_its_successor`: member 1 sends tagged frames
//! both to `3` (dead) and to `3#1` (alive on the same port) for two seconds; `3#1` must get
//! none of the frames for `3` and every frame for `3#1` from some point on, in order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use squall_mcast::net::{TcpConfig, TcpTransport, Transport, TransportEvent};
use squall_mcast::{codec, DataBatch, DataMsg, Hlc, Message, MsgId, NodeId};

/// A data frame whose single payload is `tag` + sequence number.
fn frame(from: NodeId, tag: u8, seq: u64) -> Bytes {
    let mut p = vec![tag];
    p.extend_from_slice(&seq.to_le_bytes());
    let b = DataBatch {
        epoch: 1,
        shard: 0,
        sender_rank: 0,
        first_index: seq,
        msgs: vec![DataMsg::App {
            id: MsgId { sender: from, seq },
            ts: Hlc::default(),
            payload: Bytes::from(p),
        }],
    };
    let mut out = BytesMut::new();
    codec::encode(&Message::Data(Arc::new(b)), &mut out);
    out.freeze()
}

/// (tag, seq) of a frame built by [`frame`].
fn tag_of(m: &Message) -> Option<(u8, u64)> {
    let Message::Data(b) = m else { return None };
    let DataMsg::App { payload, .. } = b.msgs.first()? else {
        return None;
    };
    let mut s = [0u8; 8];
    s.copy_from_slice(payload.get(1..9)?);
    Some((*payload.first()?, u64::from_le_bytes(s)))
}

const OLD: u8 = b'o';
const NEW: u8 = b'n';

#[tokio::test(flavor = "current_thread")]
async fn frames_for_a_dead_incarnation_never_reach_its_successor() -> Result<()> {
    let one = NodeId::new(1, 0);
    let old = NodeId::new(3, 0);
    let new = NodeId::new(3, 1);
    let any: std::net::SocketAddr = "127.0.0.1:0".parse()?;

    // 3 up; 1 connected to it.
    let mut t3 = TcpTransport::bind(TcpConfig::new(old, BTreeMap::new()), any).await?;
    let port = t3.local_addr();
    let mut t1 =
        TcpTransport::bind(TcpConfig::new(one, BTreeMap::from([(old, port)])), any).await?;
    t1.send(old, frame(one, OLD, 0));
    match tokio::time::timeout(Duration::from_secs(5), t3.recv()).await {
        Ok(Some(TransportEvent::Message { from, .. })) if from == one => {}
        other => bail!("3 did not get 1's first frame: {other:?}"),
    }
    // 3 dies; its next incarnation starts on the same address and talks to 1 (so 1 learns
    // 3#1's address from the handshake).
    drop(t3);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut t31 = TcpTransport::bind(
        TcpConfig::new(new, BTreeMap::from([(one, t1.local_addr())])),
        port,
    )
    .await
    .context("rebinding the dead incarnation's port")?;
    t31.send(one, frame(new, NEW, 0));

    // 1 goes on sending to both ids, as a core does until the view change removes 3.
    let mut got = Vec::new();
    let mut seq = 1u64;
    let end = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < end {
        t1.send(old, frame(one, OLD, seq));
        t1.send(new, frame(one, NEW, seq));
        seq += 1;
        while t1.try_recv().is_some() {}
        tokio::time::sleep(Duration::from_millis(2)).await;
        while let Some(ev) = t31.try_recv() {
            if let TransportEvent::Message { from, msg } = ev {
                if from == one {
                    got.extend(tag_of(&msg));
                }
            }
        }
    }
    let misdelivered = got.iter().filter(|(t, _)| *t == OLD).count();
    let fresh: Vec<u64> = got
        .iter()
        .filter(|(t, _)| *t == NEW)
        .map(|(_, s)| *s)
        .collect();
    eprintln!(
        "sent {seq} to each id; 3#1 got {} frames for 3#1 (first {:?}, last {:?}) and \
         {misdelivered} for the dead 3",
        fresh.len(),
        fresh.first(),
        fresh.last()
    );
    assert_eq!(
        misdelivered, 0,
        "frames addressed to the dead incarnation reached its successor"
    );
    let first = *fresh.first().context("3#1 got nothing addressed to it")?;
    assert!(
        fresh.iter().copied().eq(first..first + fresh.len() as u64),
        "3#1 lost or reordered frames addressed to it: {fresh:?}"
    );
    assert!(
        fresh.last().copied().unwrap_or(0) + 20 >= seq,
        "3#1 stopped receiving frames addressed to it (last {:?} of {seq})",
        fresh.last()
    );
    Ok(())
}
