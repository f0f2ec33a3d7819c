//! The ordered multicast over real TCP between real processes on 127.0.0.1
//! (`squall-mcast-member`, issue 3).
//!
//! * `two_members_agree`: two processes multicast under load, stop, and must end with the
//!   same delivered count and the same digest of the delivered sequence (the smoke test of
//!   the transport: framing, handshake, the driver's batching, the bootstrap barrier).
//! * `sigkill_then_rejoin_by_state_transfer`: three processes multicast under load; one is
//!   killed with SIGKILL; the survivors must install a view without it and agree on the
//!   delivered sequence up to that view (digests over the same prefix: everything delivered
//!   in the closed epoch, after the ragged trim); the killed member restarts with empty
//!   state (its persistence was in memory) and rejoins as the next incarnation of the same
//!   node number (`3#1`, as the core prescribes for a process that lost its state),
//!   receives the state by transfer, and must then have exactly the digest of the others at
//!   the view it entered, and the same final digest once everyone stops sending.
//!
//! Each test is bounded in time and kills its processes on drop (also when it fails).

mod mcast_support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mcast_support::{free_addrs, group_specs, member_args, Member, Spec};

/// The shared member options with `size`-byte messages and suspicion after 2 s.
fn args(rate: u64, size: usize) -> Vec<String> {
    let mut a = member_args(rate, 2000);
    if let Some(i) = a.iter().position(|x| x == "--size") {
        a[i + 1] = size.to_string();
    }
    a
}

/// Starts members `ids` as the bootstrap group, each sending `rate` msgs/s of `size` bytes.
fn start_group(ids: &[u64], rate: u64, size: usize) -> Result<(Vec<Member>, Vec<SocketAddr>)> {
    let addrs = free_addrs(ids.len())?;
    let ms = group_specs(ids, &addrs, |_, j| addrs[j], &args(rate, size))
        .iter()
        .map(Member::start)
        .collect::<Result<_>>()?;
    Ok((ms, addrs))
}

/// Stops every member's sending and waits until they all report the same count and digest.
fn quiesce_and_compare(ms: &mut [Member], timeout: Duration) -> Result<(u64, String)> {
    let mut refs: Vec<&mut Member> = ms.iter_mut().collect();
    mcast_support::quiesce_and_compare(&mut refs, timeout)
}

#[test]
fn two_members_agree() -> Result<()> {
    let t0 = Instant::now();
    let (mut ms, _) = start_group(&[1, 2], 3000, 256)?;
    for m in &ms {
        m.wait_for(0, "STATUS ", Duration::from_secs(20), |f| {
            f.num("count") >= 3000
        })?;
    }
    let (count, digest) = quiesce_and_compare(&mut ms, Duration::from_secs(15))?;
    eprintln!(
        "two members: count={count} digest={digest} in {:?}",
        t0.elapsed()
    );
    // Both senders' messages are in the agreed sequence.
    assert!(count >= 3000, "count {count}");
    assert!(t0.elapsed() < Duration::from_secs(60));
    Ok(())
}

#[test]
fn sigkill_then_rejoin_by_state_transfer() -> Result<()> {
    let t0 = Instant::now();
    let (mut ms, addrs) = start_group(&[1, 2, 3], 2000, 200)?;
    // Everyone delivers under load.
    for m in &ms {
        m.wait_for(0, "STATUS ", Duration::from_secs(20), |f| {
            f.num("count") >= 3000
        })?;
    }
    // SIGKILL member 3 (std's Child::kill sends SIGKILL).
    let mut victim = ms.pop().context("three members")?;
    victim.child.kill()?;
    victim.child.wait()?;
    drop(victim);
    let killed_at = Instant::now();

    // The survivors install epoch 2 = {1, 2} and agree on everything delivered before it.
    let mut views = Vec::new();
    for m in &ms {
        let (_, v) = m.wait_for(0, "VIEW ", Duration::from_secs(15), |f| {
            f.num("epoch") >= 2 && f.get("members") == "1,2"
        })?;
        views.push(v);
    }
    eprintln!(
        "survivors' views after {:?}: {views:?}",
        killed_at.elapsed()
    );
    assert_eq!(views[0].get("epoch"), views[1].get("epoch"));
    assert!(views[0].num("count") >= 3000, "{views:?}");
    assert_eq!(
        (views[0].num("count"), views[0].get("digest")),
        (views[1].num("count"), views[1].get("digest")),
        "survivors disagree on the sequence delivered before the new view"
    );
    let epoch_after_kill = views[0].num("epoch");

    // Member 3 comes back with empty state as a joiner: same node number, next incarnation.
    let peers: Vec<(u64, SocketAddr)> = vec![(1, addrs[0]), (2, addrs[1])];
    let listen: SocketAddr = "127.0.0.1:0".parse()?;
    let mut rejoin_args: Vec<String> = ["--join", "--incarnation", "1"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    rejoin_args.extend(args(2000, 200));
    let rejoined = Member::start(&Spec {
        id: 3,
        listen,
        peers,
        args: rejoin_args,
        env: Vec::new(),
        data_dir: None,
    })?;
    let (_, st) = rejoined.wait_for(0, "STATE ", Duration::from_secs(15), |_| true)?;
    let (_, jv) = rejoined.wait_for(0, "VIEW ", Duration::from_secs(5), |f| {
        f.get("members") == "1,2,3#1"
    })?;
    let join_epoch = jv.num("epoch");
    assert!(join_epoch > epoch_after_kill);
    // The snapshot equals what the old members had delivered when they installed that view.
    for m in &ms {
        let (_, v) = m.wait_for(0, "VIEW ", Duration::from_secs(10), |f| {
            f.num("epoch") == join_epoch
        })?;
        assert_eq!(v.get("members"), "1,2,3#1");
        assert_eq!(
            (v.num("count"), v.get("digest")),
            (st.num("count"), st.get("digest")),
            "state transferred to the rejoined member differs from member {}'s",
            m.id
        );
    }
    eprintln!(
        "rejoined at epoch {join_epoch} with {st:?} after {:?}",
        t0.elapsed()
    );
    ms.push(rejoined);
    // It takes part: it delivers new messages (its own included) beyond the snapshot.
    let base = st.num("count");
    ms[2].wait_for(0, "STATUS ", Duration::from_secs(10), |f| {
        f.num("count") >= base + 2000
    })?;

    // Everyone stops; all three end with the same sequence.
    let (count, digest) = quiesce_and_compare(&mut ms, Duration::from_secs(15))?;
    eprintln!("final: count={count} digest={digest} in {:?}", t0.elapsed());
    assert!(count > base);
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "took {:?}",
        t0.elapsed()
    );
    Ok(())
}
