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

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const MEMBER: &str = env!("CARGO_BIN_EXE_squall-mcast-member");

/// A running member process; killed (SIGKILL) on drop.
struct Member {
    id: u64,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Member {
    fn start(
        id: u64,
        listen: SocketAddr,
        peers: &[(u64, SocketAddr)],
        extra: &[&str],
    ) -> Result<Self> {
        let mut cmd = Command::new(MEMBER);
        cmd.args(["--id", &id.to_string(), "--listen", &listen.to_string()]);
        for (p, a) in peers {
            cmd.args(["--peer", &format!("{p}={a}")]);
        }
        cmd.args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().context("spawning squall-mcast-member")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().context("stdout")?;
        let err = child.stderr.take().context("stderr")?;
        for (stream, tag) in [
            (Box::new(out) as Box<dyn std::io::Read + Send>, ""),
            (Box::new(err), "stderr: "),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(stream).lines() {
                    let Ok(l) = l else { break };
                    lines
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("{tag}{l}"));
                }
            });
        }
        let stdin = child.stdin.take();
        Ok(Member {
            id,
            child,
            stdin,
            lines,
        })
    }

    fn command(&mut self, c: &str) -> Result<()> {
        let s = self.stdin.as_mut().context("stdin closed")?;
        writeln!(s, "{c}")?;
        s.flush()?;
        Ok(())
    }

    fn snapshot(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits for a line starting with `prefix` whose fields satisfy `pred`, at or after
    /// line index `from`.
    fn wait_for(
        &self,
        from: usize,
        prefix: &str,
        timeout: Duration,
        pred: impl Fn(&Fields) -> bool,
    ) -> Result<(usize, Fields)> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.snapshot();
            for (i, l) in lines.iter().enumerate().skip(from) {
                if let Some(rest) = l.strip_prefix(prefix) {
                    let f = Fields::parse(rest);
                    if pred(&f) {
                        return Ok((i, f));
                    }
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "member {}: no `{prefix}` line as expected within {timeout:?}; output:\n{}",
                    self.id,
                    tail(&lines)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asks for a status line and returns it.
    fn status(&mut self) -> Result<Fields> {
        let from = self.snapshot().len();
        self.command("status")?;
        Ok(self
            .wait_for(from, "STATUS ", Duration::from_secs(10), |_| true)?
            .1)
    }
}

fn tail(lines: &[String]) -> String {
    let n = lines.len().saturating_sub(30);
    lines[n..].join("\n")
}

/// `key=value` fields of one output line.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Fields(Vec<(String, String)>);

impl Fields {
    fn parse(s: &str) -> Fields {
        Fields(
            s.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }
    fn get(&self, k: &str) -> &str {
        self.0
            .iter()
            .find(|(kk, _)| kk == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
    fn num(&self, k: &str) -> u64 {
        self.get(k).parse().unwrap_or(0)
    }
}

fn free_addrs(n: usize) -> Result<Vec<SocketAddr>> {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()?;
    ls.iter().map(|l| Ok(l.local_addr()?)).collect()
}

/// Starts members `ids` as the bootstrap group, each sending `rate` msgs/s of `size` bytes.
fn start_group(ids: &[u64], rate: u64, size: usize) -> Result<(Vec<Member>, Vec<SocketAddr>)> {
    let addrs = free_addrs(ids.len())?;
    let mut ms = Vec::new();
    for (i, &id) in ids.iter().enumerate() {
        let peers: Vec<(u64, SocketAddr)> = ids
            .iter()
            .zip(&addrs)
            .filter(|(p, _)| **p != id)
            .map(|(p, a)| (*p, *a))
            .collect();
        ms.push(Member::start(
            id,
            addrs[i],
            &peers,
            &[
                "--rate",
                &rate.to_string(),
                "--size",
                &size.to_string(),
                "--window",
                "64",
                "--heartbeat-ms",
                "10",
                "--suspect-ms",
                "2000",
                "--status-ms",
                "200",
            ],
        )?);
    }
    Ok((ms, addrs))
}

/// Stops every member's sending and waits until they all report the same count and digest.
fn quiesce_and_compare(ms: &mut [Member], timeout: Duration) -> Result<(u64, String)> {
    for m in ms.iter_mut() {
        m.command("stop")?;
    }
    let deadline = Instant::now() + timeout;
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let st: Vec<Fields> = ms.iter_mut().map(|m| m.status()).collect::<Result<_>>()?;
        let first = (st[0].num("count"), st[0].get("digest").to_string());
        let same = st.iter().all(|f| {
            f.num("count") == first.0
                && f.get("digest") == first.1
                && f.get("epoch") == st[0].get("epoch")
        });
        if same && first.0 > 0 {
            return Ok(first);
        }
        if Instant::now() >= deadline {
            bail!("members did not converge: {st:?}");
        }
    }
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
    let rejoined = Member::start(
        3,
        listen,
        &peers,
        &[
            "--join",
            "--incarnation",
            "1",
            "--rate",
            "2000",
            "--size",
            "200",
            "--window",
            "64",
            "--heartbeat-ms",
            "10",
            "--suspect-ms",
            "2000",
            "--status-ms",
            "200",
        ],
    )?;
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
