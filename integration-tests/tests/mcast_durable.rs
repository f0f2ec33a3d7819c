//! The durable mode over TCP between real processes (`squall-mcast-member --durable
//! --data-dir`, issue 3): the driver's file persistence (`FilePersist`) must let a group
//! survive a **total shutdown** (every member SIGKILLed at once) without losing a message
//! that any member reported delivered *and* fsynced, and the restart must follow the
//! core's rule (a strict majority of the last view before any view installs).
//!
//! * `total_shutdown_restart_keeps_every_durable_message`: three durable members send under
//!   load; all are SIGKILLed; all restart from their data dirs (`RECOVERED`), the group
//!   installs a new view and sends again. Checked: for each member's last `DURABLE
//!   count=c digest=d` line before the kill, the restarted group's sequence has exactly
//!   digest d after c messages (asked with `digest-at c`; at least one member knows it,
//!   all that know agree), and every member ends with the same count and digest.
//! * `no_loss_checker_catches_planted_lost_writes`: the same run with the planted bug
//!   `drop_entries` (persistence confirmed, delivered entries never written): the no-loss
//!   check above must fail.
//! * `restart_waits_for_a_majority_of_the_last_view`: after a total shutdown only member 1
//!   restarts: it must stay wedged (no view, nothing delivered) for several suspicion
//!   timeouts; once member 2 restarts too, both install a new view and deliver again; the
//!   late member 3, left out of that view, is removed and exits cleanly.
//! * `durable_joiner_survives_total_shutdown`: a fourth durable member joins (its log starts
//!   with the transferred snapshot), then all four are SIGKILLed and restarted: the joiner
//!   recovers its snapshot plus the entries after it, the four-member view restarts, nothing
//!   reported durable is lost, all converge.
//! * `damaged_files_torn_tail_is_cut_corruption_is_a_clear_error`: after a total shutdown,
//!   member 1's file gets half a frame appended (a write cut short) and member 2's file a
//!   flipped byte with valid frames after it: member 1 recovers, reporting the 7 bytes cut;
//!   member 2 exits with an error naming `mcast.wal`, the offset and "corrupt frame" (no
//!   panic); members 1 and 3, a majority of the last view, restart the group.
//! * `checkpoints_keep_files_bounded_and_restart_exact`: three durable members with a
//!   16 KiB checkpoint threshold deliver 6 000 messages (~0.9 MB of entries each); every
//!   member's file stays under 128 KiB throughout; after they stop and are SIGKILLed, each
//!   recovers from its compacted file exactly the count and digest (which chains the whole
//!   delivered sequence) it had before the kill; the restarted group converges.
//!
//! Every test is bounded (< 30 s of work, with generous waits on a loaded machine), uses
//! loopback only, and kills its processes on drop (also when it fails).

mod mcast_support;

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mcast_support::{free_addrs, group_specs, member_args, quiesce_and_compare, Member, Spec};

const IDS: [u64; 3] = [1, 2, 3];
const SUSPECT_MS: u64 = 1000;

/// Three durable member specs with their own temp data dirs (kept alive by the caller).
fn durable_specs(bug: Option<&str>) -> Result<(Vec<Spec>, Vec<tempfile::TempDir>)> {
    let addrs = free_addrs(IDS.len())?;
    let mut specs = group_specs(
        &IDS,
        &addrs,
        |_, j| addrs[j],
        &member_args(1000, SUSPECT_MS),
    );
    let mut dirs = Vec::new();
    for s in &mut specs {
        let d = tempfile::tempdir()?;
        s.data_dir = Some(d.path().to_path_buf());
        if let Some(b) = bug {
            s.env.push(("SQUALL_MCAST_MEMBER_BUG".into(), b.into()));
        }
        dirs.push(d);
    }
    Ok((specs, dirs))
}

/// Waits until every member reported delivering at least `n` messages.
fn wait_count(ms: &[Member], n: u64, timeout: Duration) -> Result<()> {
    for m in ms {
        m.wait_for(0, "STATUS ", timeout, |f| f.num("count") >= n)?;
    }
    Ok(())
}

/// SIGKILLs every member (back to back) and returns each one's last `DURABLE` report:
/// (id, count, digest).
fn kill_all(ms: &mut Vec<Member>) -> Result<Vec<(u64, u64, String)>> {
    for m in ms.iter_mut() {
        m.signal(libc::SIGKILL);
    }
    let mut out = Vec::new();
    for mut m in ms.drain(..) {
        m.child.wait()?;
        // The reader threads may still be taking the last lines off the pipe.
        std::thread::sleep(Duration::from_millis(50));
        let d = m
            .last("DURABLE ")
            .with_context(|| format!("member {} never reported anything durable", m.id))?;
        out.push((m.id, d.num("count"), d.get("digest").to_string()));
    }
    Ok(out)
}

/// The no-loss check: every (count, digest) a member reported durable before the kill is
/// a prefix of the restarted group's sequence.
fn check_no_loss(ms: &mut [Member], durable: &[(u64, u64, String)]) -> Result<()> {
    for (id, count, digest) in durable {
        let mut known = Vec::new();
        for m in ms.iter_mut() {
            if let Some(d) = m.digest_at(*count)? {
                known.push((m.id, d));
            }
        }
        if known.is_empty() {
            bail!("member {id} reported {count} messages durable; no restarted member has them");
        }
        for (m, d) in &known {
            if d != digest {
                bail!(
                    "member {id} reported {count} messages durable with digest {digest}; after \
                     the restart member {m} has digest {d} for its first {count}: lost or changed"
                );
            }
        }
    }
    Ok(())
}

/// Total shutdown and restart; returns the durable reports and the restarted members
/// (after they delivered past every durable report).
type Shutdown = (Vec<(u64, u64, String)>, Vec<Member>, Vec<tempfile::TempDir>);

fn total_shutdown(bug: Option<&str>) -> Result<Shutdown> {
    let (specs, dirs) = durable_specs(bug)?;
    let mut ms: Vec<Member> = specs.iter().map(Member::start).collect::<Result<_>>()?;
    wait_count(&ms, 3000, Duration::from_secs(20))?;
    let durable = kill_all(&mut ms)?;
    eprintln!("durable reports at the kill: {durable:?}");
    let mut ms: Vec<Member> = specs.iter().map(Member::start).collect::<Result<_>>()?;
    for m in &ms {
        let (i, r) = m.wait_for(0, "RECOVERED ", Duration::from_secs(10), |_| true)?;
        eprintln!("member {} recovered {r:?}", m.id);
        // It re-enters its last view wedged, then the restart view (a higher epoch)
        // installs once a majority is back.
        let (_, v) = m.wait_for(i, "VIEW ", Duration::from_secs(10), |_| true)?;
        m.wait_for(i, "VIEW ", Duration::from_secs(15), |f| {
            f.num("epoch") > v.num("epoch")
        })?;
    }
    // The group delivers beyond every durable report.
    let top = durable.iter().map(|d| d.1).max().unwrap_or(0);
    wait_count(&ms, top + 1000, Duration::from_secs(15))?;
    for m in ms.iter_mut() {
        m.command("stop")?;
    }
    Ok((durable, std::mem::take(&mut ms), dirs))
}

#[test]
fn total_shutdown_restart_keeps_every_durable_message() -> Result<()> {
    let t0 = Instant::now();
    let (durable, mut ms, _dirs) = total_shutdown(None)?;
    for m in &ms {
        // Restarted from disk, every member holds a log (no member restarted empty).
        let r = m.last("RECOVERED ").context("recovered")?;
        assert!(r.num("boot") == 1 && r.num("count") > 0, "{r:?}");
    }
    check_no_loss(&mut ms, &durable)?;
    let mut refs: Vec<&mut Member> = ms.iter_mut().collect();
    let (count, digest) = quiesce_and_compare(&mut refs, Duration::from_secs(10))?;
    eprintln!(
        "after the restart: count={count} digest={digest} in {:?}",
        t0.elapsed()
    );
    Ok(())
}

#[test]
fn no_loss_checker_catches_planted_lost_writes() -> Result<()> {
    let (durable, mut ms, _dirs) = match total_shutdown(Some("drop_entries")) {
        Ok(x) => x,
        Err(e) => panic!("the scenario itself must run with the planted bug: {e:#}"),
    };
    for m in &ms {
        // The planted bug wrote no entries: every member recovered an empty log.
        let r = m.last("RECOVERED ").context("recovered")?;
        assert_eq!(r.num("count"), 0, "{r:?}");
    }
    let err = check_no_loss(&mut ms, &durable)
        .expect_err("the no-loss check must catch confirmed-but-unwritten deliveries");
    eprintln!("checker failed as it must: {err:#}");
    Ok(())
}

#[test]
fn restart_waits_for_a_majority_of_the_last_view() -> Result<()> {
    let (specs, _dirs) = durable_specs(None)?;
    let mut ms: Vec<Member> = specs.iter().map(Member::start).collect::<Result<_>>()?;
    wait_count(&ms, 2000, Duration::from_secs(20))?;
    kill_all(&mut ms)?;

    // Only member 1 comes back: one of three is no majority of the last view.
    let m1 = Member::start(&specs[0])?;
    let (_, rec) = m1.wait_for(0, "RECOVERED ", Duration::from_secs(10), |_| true)?;
    let recovered_epoch = m1
        .wait_for(0, "VIEW ", Duration::from_secs(5), |_| true)?
        .1
        .num("epoch");
    std::thread::sleep(Duration::from_millis(4 * SUSPECT_MS));
    let views: Vec<u64> = m1.all("VIEW ").iter().map(|f| f.num("epoch")).collect();
    assert!(
        views.iter().all(|e| *e == recovered_epoch),
        "member 1 installed a view alone: {views:?}"
    );
    let st = m1.last("STATUS ").context("status")?;
    assert_eq!(
        (st.num("count"), st.get("digest")),
        (rec.num("count"), rec.get("digest")),
        "member 1 delivered while alone"
    );

    // Member 2 restarts: two of three is a majority; the restart proceeds.
    let m2 = Member::start(&specs[1])?;
    let mut back = vec![m1, m2];
    for m in &back {
        m.wait_for(0, "VIEW ", Duration::from_secs(15), |f| {
            f.num("epoch") > recovered_epoch
        })?;
    }
    let base = rec.num("count");
    wait_count(&back, base + 1000, Duration::from_secs(15))?;

    // Member 3 comes back late: the view it restarts into is gone and it is not in the
    // new one, so it is removed and exits cleanly (it may rejoin as 3#1 with an empty dir).
    let mut late = specs[2].clone();
    late.args.push("--exit-on-removed".into());
    let mut m3 = Member::start(&late)?;
    m3.wait_for(0, "REMOVED ", Duration::from_secs(15), |_| true)?;
    let st = m3.wait_exit(Duration::from_secs(5))?;
    assert!(st.success(), "member 3 exit status {st:?}");
    // It delivered nothing beyond what it recovered.
    let r3 = m3.last("RECOVERED ").context("recovered")?;
    for s in m3.all("STATUS ") {
        assert_eq!(s.num("count"), r3.num("count"));
    }
    let mut refs: Vec<&mut Member> = back.iter_mut().collect();
    quiesce_and_compare(&mut refs, Duration::from_secs(10))?;
    Ok(())
}

#[test]
fn damaged_files_torn_tail_is_cut_corruption_is_a_clear_error() -> Result<()> {
    let (specs, dirs) = durable_specs(None)?;
    let mut ms: Vec<Member> = specs.iter().map(Member::start).collect::<Result<_>>()?;
    wait_count(&ms, 2000, Duration::from_secs(20))?;
    kill_all(&mut ms)?;
    let wal = |i: usize| dirs[i].path().join(squall_mcast::net::persist::WAL_FILE);

    // Member 1's file ends in half a frame (a write cut short): recovery cuts it and says so.
    let mut f = std::fs::OpenOptions::new().append(true).open(wal(0))?;
    std::io::Write::write_all(&mut f, &[0x53, 0x51, 0x4d, 0x57, 0xff, 0x00, 0x00])?;
    drop(f);
    // Member 2's file has a flipped byte in its first frame, with valid frames after it.
    let mut b = std::fs::read(wal(1))?;
    b[40] ^= 0x10;
    std::fs::write(wal(1), &b)?;

    let m1 = Member::start(&specs[0])?;
    let mut m2 = Member::start(&specs[1])?;
    let (_, r1) = m1.wait_for(0, "RECOVERED ", Duration::from_secs(10), |_| true)?;
    assert_eq!(r1.num("torn"), 7, "{r1:?}");
    let st = m2.wait_exit(Duration::from_secs(10))?;
    assert!(!st.success(), "member 2 must refuse its damaged file");
    std::thread::sleep(Duration::from_millis(100));
    let out = m2.lines().join("\n");
    assert!(
        out.contains("mcast.wal") && out.contains("offset") && out.contains("corrupt frame"),
        "member 2's error does not name the file and the offset:\n{out}"
    );
    assert!(!out.contains("panicked"), "member 2 panicked:\n{out}");
    // Members 1 and 3 are a majority of the last view: the restart proceeds without 2.
    let m3 = Member::start(&specs[2])?;
    let mut back = vec![m1, m3];
    for m in &back {
        let (i, _) = m.wait_for(0, "RECOVERED ", Duration::from_secs(10), |_| true)?;
        let (_, v) = m.wait_for(i, "VIEW ", Duration::from_secs(10), |_| true)?;
        m.wait_for(i, "VIEW ", Duration::from_secs(15), |f| {
            f.num("epoch") > v.num("epoch")
        })?;
    }
    let mut refs: Vec<&mut Member> = back.iter_mut().collect();
    quiesce_and_compare(&mut refs, Duration::from_secs(10))?;
    Ok(())
}

#[test]
fn durable_joiner_survives_total_shutdown() -> Result<()> {
    let (mut specs, mut dirs) = durable_specs(None)?;
    let mut ms: Vec<Member> = specs.iter().map(Member::start).collect::<Result<_>>()?;
    wait_count(&ms, 1000, Duration::from_secs(20))?;
    // Member 4 joins with its own data dir: admitted by a view change, state by transfer
    // (the snapshot record), then delivered entries after it.
    let d4 = tempfile::tempdir()?;
    let mut s4 = specs[0].clone();
    s4.id = 4;
    s4.listen = free_addrs(1)?[0];
    s4.peers = specs.iter().map(|s| (s.id, s.listen)).collect();
    s4.data_dir = Some(d4.path().to_path_buf());
    s4.args.push("--join".into());
    dirs.push(d4);
    specs.push(s4);
    ms.push(Member::start(&specs[3])?);
    let (_, st) = ms[3].wait_for(0, "STATE ", Duration::from_secs(15), |_| true)?;
    wait_count(&ms, st.num("count") + 1000, Duration::from_secs(15))?;
    let durable = kill_all(&mut ms)?;
    let mut ms: Vec<Member> = specs.iter().map(Member::start).collect::<Result<_>>()?;
    for m in &ms {
        let (i, r) = m.wait_for(0, "RECOVERED ", Duration::from_secs(10), |_| true)?;
        if m.id == 4 {
            // The joiner's log is its snapshot plus what it delivered after it.
            assert!(r.num("count") > st.num("count"), "{r:?} vs {st:?}");
        }
        let (_, v) = m.wait_for(i, "VIEW ", Duration::from_secs(10), |_| true)?;
        m.wait_for(i, "VIEW ", Duration::from_secs(15), |f| {
            f.num("epoch") > v.num("epoch") && f.get("members") == "1,2,3,4"
        })?;
    }
    let top = durable.iter().map(|d| d.1).max().unwrap_or(0);
    wait_count(&ms, top + 500, Duration::from_secs(15))?;
    check_no_loss(&mut ms, &durable)?;
    let mut refs: Vec<&mut Member> = ms.iter_mut().collect();
    quiesce_and_compare(&mut refs, Duration::from_secs(10))?;
    Ok(())
}

#[test]
fn checkpoints_keep_files_bounded_and_restart_exact() -> Result<()> {
    const THRESHOLD: u64 = 16 << 10;
    const BOUND: u64 = 128 << 10;
    let (mut specs, dirs) = durable_specs(None)?;
    for s in &mut specs {
        s.args
            .extend(["--checkpoint-bytes".into(), THRESHOLD.to_string()]);
    }
    let wal = |i: usize| dirs[i].path().join(squall_mcast::net::persist::WAL_FILE);
    let mut ms: Vec<Member> = specs.iter().map(Member::start).collect::<Result<_>>()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut largest = 0;
    loop {
        for (i, m) in ms.iter().enumerate() {
            let len = std::fs::metadata(wal(i)).map(|m| m.len()).unwrap_or(0);
            largest = largest.max(len);
            assert!(len < BOUND, "member {}'s file grew to {len} bytes", m.id);
        }
        let least = ms
            .iter()
            .map(|m| m.last("STATUS ").map(|f| f.num("count")).unwrap_or(0))
            .min()
            .unwrap_or(0);
        if least >= 6000 {
            break;
        }
        if Instant::now() >= deadline {
            bail!("the group did not deliver 6000 messages in time (least {least})");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("largest file seen: {largest} bytes");
    let mut refs: Vec<&mut Member> = ms.iter_mut().collect();
    let (count, digest) = quiesce_and_compare(&mut refs, Duration::from_secs(10))?;
    // Every delivery is fsynced well within this (one group commit after each drain).
    std::thread::sleep(Duration::from_millis(500));
    for m in ms.iter_mut() {
        m.signal(libc::SIGKILL);
        m.child.wait()?;
    }
    ms.clear();
    let mut ms: Vec<Member> = specs.iter().map(Member::start).collect::<Result<_>>()?;
    for m in &ms {
        let (_, r) = m.wait_for(0, "RECOVERED ", Duration::from_secs(10), |_| true)?;
        assert_eq!(
            (r.num("count"), r.get("digest")),
            (count, digest.as_str()),
            "member {} did not recover its delivered sequence from the compacted file",
            m.id
        );
    }
    // Restarted members send again on their own.
    wait_count(&ms, count + 1000, Duration::from_secs(20))?;
    let mut refs: Vec<&mut Member> = ms.iter_mut().collect();
    quiesce_and_compare(&mut refs, Duration::from_secs(10))?;
    Ok(())
}
