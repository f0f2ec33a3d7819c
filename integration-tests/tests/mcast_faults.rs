//! Faults between real `squall-mcast-member` processes on loopback (issue 3): a member
//! paused (SIGSTOP) past the suspicion timeout, and network partitions made by cutting a
//! TCP proxy that sits between every pair of members (`mcast_support::Proxy`).
//!
//! What must hold (Derecho's rules): the group goes on without the paused or cut-off
//! member once a strict majority of the view agrees; a side without a strict majority
//! wedges and never installs a view; a member that was removed stops (here: exits cleanly)
//! and may rejoin as its next incarnation by state transfer; and whatever any member
//! delivered, even one that was wedged or removed, is a prefix of the one agreed sequence
//! (checked with `digest-at`: the survivors' digest after the same number of messages).
//!
//! * `sigstop_member_is_excluded_then_rejoins`
//! * `partition_minority_wedges_majority_continues_then_rejoin`
//! * `even_split_installs_no_view_on_either_side`: 2 | 2 of four members: neither half is
//!   a strict majority, so neither may install a view (no split brain) and all four wedge;
//!   once healed, a view of a strict majority installs (the core's leader is whoever is
//!   demonstrably alive, so the mutual suspicions do not block it), a member left out is
//!   removed and exits, and the view's members agree.
//! * `*_checker_catches_*`: the same scenarios with a planted bug must fail their checker:
//!   `swap_order` (the paused/cut-off member applies deliveries in a wrong order) fails the
//!   prefix check; the core's `quorum_half` in the 2 | 2 split makes both halves install a
//!   view, which the no-view check must catch.
//!
//! Each test is bounded (< 30 s of work), uses loopback only, and kills its processes on
//! drop (SIGCONT first, so a stopped one dies too), also when it fails.

mod mcast_support;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mcast_support::{
    free_addrs, group_specs, member_args, quiesce_and_compare, Fields, Member, Proxy, Spec,
};

const SUSPECT_MS: u64 = 1000;

fn wait_count(ms: &[&Member], n: u64, timeout: Duration) -> Result<()> {
    for m in ms {
        m.wait_for(0, "STATUS ", timeout, |f| f.num("count") >= n)?;
    }
    Ok(())
}

/// The prefix check: `(count, digest)` that member `who` delivered must be the digest the
/// reference member has after the same number of messages.
fn check_prefix(who: u64, count: u64, digest: &str, reference: &mut Member) -> Result<()> {
    match reference.digest_at(count)? {
        Some(d) if d == digest => Ok(()),
        Some(d) => bail!(
            "member {who} delivered {count} messages with digest {digest}; the agreed sequence \
             (member {}) has {d} there: delivered out of the agreed order",
            reference.id
        ),
        None => bail!(
            "member {who} delivered {count} messages; member {} does not know that prefix",
            reference.id
        ),
    }
}

/// Waits until `m` reported being removed and exited cleanly; its final (count, digest).
fn removed_and_exited(m: &mut Member, timeout: Duration) -> Result<(u64, String)> {
    let (_, r) = m.wait_for(0, "REMOVED ", timeout, |_| true)?;
    let st = m.wait_exit(Duration::from_secs(5))?;
    if !st.success() {
        bail!("member {} exited with {st:?}", m.id);
    }
    m.wait_for(0, "EXIT ", Duration::from_secs(2), |_| true)?;
    Ok((r.num("count"), r.get("digest").to_string()))
}

/// Starts member `base` again as its next incarnation, joining through `contacts`.
fn rejoin(spec: &Spec, incarnation: u16) -> Result<Member> {
    let mut s = spec.clone();
    s.args.extend(
        ["--join", "--incarnation", &incarnation.to_string()]
            .iter()
            .map(|x| x.to_string()),
    );
    Member::start(&s)
}

/// SIGSTOP scenario. `bug` goes to member 3 (the paused one).
fn sigstop_scenario(bug: Option<&str>) -> Result<()> {
    let t0 = Instant::now();
    let addrs = free_addrs(3)?;
    let mut args = member_args(1000, SUSPECT_MS);
    args.push("--exit-on-removed".into());
    let mut specs = group_specs(&[1, 2, 3], &addrs, |_, j| addrs[j], &args);
    if let Some(b) = bug {
        specs[2]
            .env
            .push(("SQUALL_MCAST_MEMBER_BUG".into(), b.into()));
    }
    let mut m1 = Member::start(&specs[0])?;
    let mut m2 = Member::start(&specs[1])?;
    let mut m3 = Member::start(&specs[2])?;
    wait_count(&[&m1, &m2, &m3], 2000, Duration::from_secs(20))?;

    // Pause member 3 for three suspicion timeouts.
    m3.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    for m in [&m1, &m2] {
        m.wait_for(0, "VIEW ", Duration::from_secs(10), |f| {
            f.get("members") == "1,2"
        })?;
    }
    let base = m1.status()?.num("count");
    wait_count(&[&m1, &m2], base + 500, Duration::from_secs(10))?;
    let pause = Duration::from_millis(3 * SUSPECT_MS);
    if let Some(rest) = pause.checked_sub(stopped.elapsed()) {
        std::thread::sleep(rest);
    }
    m3.signal(libc::SIGCONT);

    // Member 3 wakes up in a group that removed it: it must stop, never having delivered
    // anything out of the agreed order.
    let (c3, d3) = removed_and_exited(&mut m3, Duration::from_secs(10))?;
    for v in m3.all("VIEW ") {
        if v.num("epoch") != 1 {
            bail!("member 3 installed a view while cut off: {v:?}");
        }
    }
    check_prefix(3, c3, &d3, &mut m1)?;
    // Every status it printed is a prefix too (it may have delivered after the pause).
    let statuses: Vec<Fields> = m3.all("STATUS ");
    for s in statuses.iter().rev().take(3) {
        check_prefix(3, s.num("count"), s.get("digest"), &mut m1)?;
    }
    drop(m3);

    // It rejoins as 3#1 by state transfer and the three agree again.
    let mut m3 = rejoin(&specs[2], 1)?;
    let (_, st) = m3.wait_for(0, "STATE ", Duration::from_secs(15), |_| true)?;
    check_prefix(3, st.num("count"), st.get("digest"), &mut m1)?;
    let after = st.num("count");
    wait_count(&[&m3], after + 500, Duration::from_secs(10))?;
    let (count, digest) =
        quiesce_and_compare(&mut [&mut m1, &mut m2, &mut m3], Duration::from_secs(10))?;
    eprintln!(
        "sigstop: removed member had {c3}; final count={count} digest={digest} in {:?}",
        t0.elapsed()
    );
    Ok(())
}

#[test]
fn sigstop_member_is_excluded_then_rejoins() -> Result<()> {
    sigstop_scenario(None)
}

#[test]
fn sigstop_checker_catches_planted_swapped_order() {
    let err = sigstop_scenario(Some("swap_order"))
        .expect_err("a member applying deliveries out of order must fail the prefix check");
    let msg = format!("{err:#}");
    eprintln!("checker failed as it must: {msg}");
    assert!(msg.contains("out of the agreed order"), "{msg}");
}

/// Partition {3} | {1, 2}. `bug` goes to member 3 (the minority).
fn partition_scenario(bug: Option<&str>) -> Result<()> {
    let t0 = Instant::now();
    let proxy = Proxy::start(&[1, 2, 3])?;
    let mut args = member_args(1000, SUSPECT_MS);
    args.push("--exit-on-removed".into());
    let mut specs = proxy.group_specs(&args);
    if let Some(b) = bug {
        specs[2]
            .env
            .push(("SQUALL_MCAST_MEMBER_BUG".into(), b.into()));
    }
    let mut m1 = Member::start(&specs[0])?;
    let mut m2 = Member::start(&specs[1])?;
    let mut m3 = Member::start(&specs[2])?;
    wait_count(&[&m1, &m2, &m3], 2000, Duration::from_secs(20))?;

    proxy.cut(1, 3);
    proxy.cut(2, 3);
    // The majority installs a view without 3 and goes on delivering.
    for m in [&m1, &m2] {
        m.wait_for(0, "VIEW ", Duration::from_secs(10), |f| {
            f.get("members") == "1,2"
        })?;
    }
    let base = m1.status()?.num("count");
    wait_count(&[&m1, &m2], base + 1000, Duration::from_secs(10))?;
    // The minority wedges and installs nothing, for as long as the partition lasts.
    let w = m3.wait_for(0, "STATUS ", Duration::from_secs(5), |f| {
        f.get("wedged") == "true"
    })?;
    std::thread::sleep(Duration::from_millis(2 * SUSPECT_MS));
    for v in m3.all("VIEW ") {
        if v.num("epoch") != 1 {
            bail!("the minority member 3 installed a view: {v:?}");
        }
    }
    let frozen = m3.status()?;
    if frozen.get("wedged") != "true" || frozen.num("count") != w.1.num("count") {
        bail!("the wedged minority delivered: {:?} then {frozen:?}", w.1);
    }
    check_prefix(3, frozen.num("count"), frozen.get("digest"), &mut m1)?;

    // Heal: 3 hears it was removed, stops, and rejoins as 3#1.
    proxy.heal();
    let (c3, d3) = removed_and_exited(&mut m3, Duration::from_secs(10))?;
    check_prefix(3, c3, &d3, &mut m1)?;
    drop(m3);
    let mut m3 = rejoin(&specs[2], 1)?;
    let (_, st) = m3.wait_for(0, "STATE ", Duration::from_secs(15), |_| true)?;
    wait_count(&[&m3], st.num("count") + 500, Duration::from_secs(10))?;
    let (count, digest) =
        quiesce_and_compare(&mut [&mut m1, &mut m2, &mut m3], Duration::from_secs(10))?;
    eprintln!(
        "partition: minority frozen at {}; final count={count} digest={digest} in {:?}",
        frozen.num("count"),
        t0.elapsed()
    );
    Ok(())
}

#[test]
fn partition_minority_wedges_majority_continues_then_rejoin() -> Result<()> {
    partition_scenario(None)
}

#[test]
fn partition_checker_catches_planted_swapped_order() {
    let err = partition_scenario(Some("swap_order"))
        .expect_err("a minority member applying deliveries out of order must be caught");
    let msg = format!("{err:#}");
    eprintln!("checker failed as it must: {msg}");
    assert!(msg.contains("out of the agreed order"), "{msg}");
}

/// Partition {1, 2} | {3, 4} of four members: no side has a strict majority.
fn even_split_scenario(bug: Option<&str>) -> Result<()> {
    let t0 = Instant::now();
    let proxy = Proxy::start(&[1, 2, 3, 4])?;
    let mut args = member_args(500, SUSPECT_MS);
    args.push("--exit-on-removed".into());
    let mut specs = proxy.group_specs(&args);
    if let Some(b) = bug {
        for s in &mut specs {
            s.env.push(("SQUALL_MCAST_MEMBER_BUG".into(), b.into()));
        }
    }
    let mut ms: Vec<Member> = specs.iter().map(Member::start).collect::<Result<_>>()?;
    wait_count(
        &ms.iter().collect::<Vec<_>>(),
        1000,
        Duration::from_secs(20),
    )?;
    for (a, b) in [(1, 3), (1, 4), (2, 3), (2, 4)] {
        proxy.cut(a, b);
    }
    // Both halves suspect the other half and must stay without a view, wedged.
    std::thread::sleep(Duration::from_millis(3 * SUSPECT_MS));
    for m in &ms {
        for v in m.all("VIEW ") {
            if v.num("epoch") != 1 {
                bail!(
                    "member {} installed a view with half of the previous one: {v:?}",
                    m.id
                );
            }
        }
    }
    let mut wedged = Vec::new();
    for m in ms.iter_mut() {
        let st = m.status()?;
        if st.get("wedged") != "true" {
            bail!(
                "member {} is not wedged in a split without majority: {st:?}",
                m.id
            );
        }
        wedged.push(st);
    }
    // Healed, a view of a strict majority (three or four of the four) installs; a member
    // left out is removed and exits; the view's members agree on one sequence, and
    // everything delivered anywhere is a prefix of it.
    proxy.heal();
    let (_, v) = ms[0].wait_for(0, "VIEW ", Duration::from_secs(15), |f| f.num("epoch") > 1)?;
    let members: Vec<u64> = v
        .get("members")
        .split(',')
        .map(|x| x.parse().context("member id"))
        .collect::<Result<_>>()?;
    if members.len() * 2 <= ms.len() {
        bail!("a view of {members:?} out of four installed");
    }
    let mut out = Vec::new();
    let mut inside = Vec::new();
    for m in ms.drain(..) {
        if members.contains(&m.id) {
            inside.push(m);
        } else {
            out.push(m);
        }
    }
    for m in out.iter_mut() {
        let (c, d) = removed_and_exited(m, Duration::from_secs(10))?;
        check_prefix(m.id, c, &d, &mut inside[0])?;
    }
    for st in &wedged {
        check_prefix(
            st.num("id"),
            st.num("count"),
            st.get("digest"),
            &mut inside[0],
        )?;
    }
    let top = wedged.iter().map(|s| s.num("count")).max().unwrap_or(0);
    wait_count(
        &inside.iter().collect::<Vec<_>>(),
        top + 500,
        Duration::from_secs(15),
    )?;
    let mut refs: Vec<&mut Member> = inside.iter_mut().collect();
    let (count, digest) =
        quiesce_and_compare(&mut refs, Duration::from_secs(10)).context("after healing")?;
    eprintln!(
        "even split: wedged at {:?}; after healing view {members:?}, count={count} \
         digest={digest} in {:?}",
        wedged.iter().map(|s| s.num("count")).collect::<Vec<_>>(),
        t0.elapsed()
    );
    Ok(())
}

#[test]
fn even_split_installs_no_view_on_either_side() -> Result<()> {
    even_split_scenario(None)
}

#[test]
fn even_split_checker_catches_planted_half_quorum() {
    let err = even_split_scenario(Some("quorum_half"))
        .expect_err("half of the view installing a view must be caught");
    let msg = format!("{err:#}");
    eprintln!("checker failed as it must: {msg}");
    assert!(msg.contains("installed a view with half"), "{msg}");
}
