//! Shared harness of the real-process multicast tests (`mcast_durable.rs`, `mcast_faults.rs`):
//! a `squall-mcast-member` child process whose output lines are collected, killed on drop;
//! `key=value` line parsing; group start-up and the agreement checks.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub const MEMBER: &str = env!("CARGO_BIN_EXE_squall-mcast-member");

/// How to start one member.
#[derive(Clone, Debug)]
pub struct Spec {
    pub id: u64,
    pub listen: SocketAddr,
    /// The other members' addresses as this one should dial them (`--peer`).
    pub peers: Vec<(u64, SocketAddr)>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub data_dir: Option<PathBuf>,
}

/// A running member process; killed (SIGKILL) on drop.
pub struct Member {
    pub id: u64,
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for Member {
    fn drop(&mut self) {
        // SIGCONT first: a member a test left stopped must still die and be reaped.
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Member {
    pub fn start(s: &Spec) -> Result<Self> {
        let mut cmd = Command::new(MEMBER);
        cmd.args(["--id", &s.id.to_string(), "--listen", &s.listen.to_string()]);
        for (p, a) in &s.peers {
            cmd.args(["--peer", &format!("{p}={a}")]);
        }
        if let Some(d) = &s.data_dir {
            cmd.arg("--durable").arg("--data-dir").arg(d);
        }
        for (k, v) in &s.env {
            cmd.env(k, v);
        }
        cmd.args(&s.args)
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
            id: s.id,
            child,
            stdin,
            lines,
        })
    }

    pub fn signal(&self, sig: libc::c_int) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid; no memory is involved.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    pub fn command(&mut self, c: &str) -> Result<()> {
        let s = self.stdin.as_mut().context("stdin closed")?;
        writeln!(s, "{c}")?;
        s.flush()?;
        Ok(())
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Lines starting with `prefix`, parsed.
    pub fn all(&self, prefix: &str) -> Vec<Fields> {
        self.lines()
            .iter()
            .filter_map(|l| l.strip_prefix(prefix).map(Fields::parse))
            .collect()
    }

    /// The last line starting with `prefix`.
    pub fn last(&self, prefix: &str) -> Option<Fields> {
        self.all(prefix).pop()
    }

    /// Waits for a line starting with `prefix` whose fields satisfy `pred`, at or after
    /// line index `from`.
    pub fn wait_for(
        &self,
        from: usize,
        prefix: &str,
        timeout: Duration,
        pred: impl Fn(&Fields) -> bool,
    ) -> Result<(usize, Fields)> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.lines();
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
    pub fn status(&mut self) -> Result<Fields> {
        let from = self.lines().len();
        self.command("status")?;
        Ok(self
            .wait_for(from, "STATUS ", Duration::from_secs(10), |_| true)?
            .1)
    }

    /// The digest of the first `n` delivered messages, if this member knows it.
    pub fn digest_at(&mut self, n: u64) -> Result<Option<String>> {
        let from = self.lines().len();
        self.command(&format!("digest-at {n}"))?;
        let (_, f) = self.wait_for(from, "DIGEST_AT ", Duration::from_secs(10), |f| {
            f.num("n") == n
        })?;
        Ok(match f.get("digest") {
            "unknown" => None,
            d => Some(d.to_string()),
        })
    }

    /// Waits for the process to exit by itself; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            if Instant::now() >= deadline {
                bail!(
                    "member {} did not exit within {timeout:?}; output:\n{}",
                    self.id,
                    tail(&self.lines())
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub fn tail(lines: &[String]) -> String {
    let n = lines.len().saturating_sub(30);
    lines[n..].join("\n")
}

/// `key=value` fields of one output line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fields(pub Vec<(String, String)>);

impl Fields {
    pub fn parse(s: &str) -> Fields {
        Fields(
            s.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }
    pub fn get(&self, k: &str) -> &str {
        self.0
            .iter()
            .find(|(kk, _)| kk == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
    pub fn num(&self, k: &str) -> u64 {
        self.get(k).parse().unwrap_or(0)
    }
}

pub fn free_addrs(n: usize) -> Result<Vec<SocketAddr>> {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()?;
    ls.iter().map(|l| Ok(l.local_addr()?)).collect()
}

/// The usual member options of these tests: `rate` msgs/s of 100 bytes, window 64,
/// heartbeat 10 ms, suspicion after `suspect_ms`, a status line every 200 ms.
pub fn member_args(rate: u64, suspect_ms: u64) -> Vec<String> {
    [
        "--rate",
        &rate.to_string(),
        "--size",
        "100",
        "--window",
        "64",
        "--heartbeat-ms",
        "10",
        "--suspect-ms",
        &suspect_ms.to_string(),
        "--status-ms",
        "200",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Specs of a bootstrap group `ids` listening on `addrs`, each dialling the others at
/// `dial[i][j]` (the address member i uses for member j; `addrs` unless a test puts
/// proxies in between).
pub fn group_specs(
    ids: &[u64],
    addrs: &[SocketAddr],
    dial: impl Fn(usize, usize) -> SocketAddr,
    args: &[String],
) -> Vec<Spec> {
    ids.iter()
        .enumerate()
        .map(|(i, &id)| Spec {
            id,
            listen: addrs[i],
            peers: ids
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(j, p)| (*p, dial(i, j)))
                .collect(),
            args: args.to_vec(),
            env: Vec::new(),
            data_dir: None,
        })
        .collect()
}

/// Stops every member's sending and waits until they all report the same count, digest
/// and epoch (and a count above 0). Returns (count, digest).
pub fn quiesce_and_compare(ms: &mut [&mut Member], timeout: Duration) -> Result<(u64, String)> {
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
            bail!("members did not converge on one delivered sequence: {st:?}");
        }
    }
}

/// A cuttable TCP proxy in front of every member. Member j listens on `real[j]`; its peers
/// dial it at `front[j]`. The proxy reads each connection's handshake (`Hello`) to learn
/// who dials, rewrites the dialer's advertised address to the dialer's own front (so
/// members only ever learn front addresses), and forwards both ways (the rest of the
/// handshake, the id of the member dialed, passes through unchanged). `cut(a, b)` closes
/// every connection between members a and b (by node number, any incarnation) and refuses
/// new ones until `heal`.
pub struct Proxy {
    pub front: Vec<SocketAddr>,
    pub real: Vec<SocketAddr>,
    ids: Vec<u64>,
    state: Arc<ProxyState>,
}

#[derive(Default)]
struct ProxyState {
    cut: Mutex<std::collections::BTreeSet<(u64, u64)>>,
    conns: Mutex<Vec<(u64, u64, std::net::TcpStream, std::net::TcpStream)>>,
    /// Members the proxy has connected to at least once.
    reached: Mutex<std::collections::BTreeSet<u64>>,
    stop: std::sync::atomic::AtomicBool,
}

fn pair(a: u64, b: u64) -> (u64, u64) {
    (a.min(b), a.max(b))
}

impl Proxy {
    /// A proxy for members `ids` (node numbers); binds fronts and picks real addresses.
    pub fn start(ids: &[u64]) -> Result<Proxy> {
        // Bind the fronts while the real addresses are still held, so no front can take
        // a port a member is about to listen on.
        let held: Vec<TcpListener> = ids
            .iter()
            .map(|_| TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<_>>()?;
        let real: Vec<SocketAddr> = held
            .iter()
            .map(|l| l.local_addr())
            .collect::<std::io::Result<_>>()?;
        let state = Arc::new(ProxyState::default());
        let mut front = Vec::new();
        let mut listeners = Vec::new();
        for _ in ids {
            let l = TcpListener::bind("127.0.0.1:0")?;
            l.set_nonblocking(true)?;
            front.push(l.local_addr()?);
            listeners.push(l);
        }
        drop(held);
        for (j, l) in listeners.into_iter().enumerate() {
            let st = state.clone();
            let dst = ids[j];
            let dst_real = real[j];
            let map: Vec<(u64, SocketAddr)> = ids.iter().copied().zip(front.clone()).collect();
            std::thread::spawn(move || {
                while !st.stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match l.accept() {
                        Ok((c, _)) => {
                            let st = st.clone();
                            let map = map.clone();
                            std::thread::spawn(move || {
                                let _ = forward(c, dst, dst_real, &map, &st);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        Ok(Proxy {
            front,
            real,
            ids: ids.to_vec(),
            state,
        })
    }

    /// Cuts the link between members `a` and `b` (both directions).
    pub fn cut(&self, a: u64, b: u64) {
        let p = pair(a, b);
        self.state
            .cut
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(p);
        let conns = self.state.conns.lock().unwrap_or_else(|e| e.into_inner());
        for (s, d, x, y) in conns.iter() {
            if pair(*s, *d) == p {
                let _ = x.shutdown(std::net::Shutdown::Both);
                let _ = y.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.state
            .cut
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Member specs of a bootstrap group behind this proxy.
    pub fn group_specs(&self, args: &[String]) -> Vec<Spec> {
        group_specs(&self.ids, &self.real, |_, j| self.front[j], args)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state
            .stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let conns = self.state.conns.lock().unwrap_or_else(|e| e.into_inner());
        for (_, _, x, y) in conns.iter() {
            let _ = x.shutdown(std::net::Shutdown::Both);
            let _ = y.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// One proxied connection into member `dst`.
fn forward(
    mut c: std::net::TcpStream,
    dst: u64,
    dst_real: SocketAddr,
    map: &[(u64, SocketAddr)],
    st: &ProxyState,
) -> Result<()> {
    use squall_mcast::net::transport::{Hello, HelloError};
    use squall_mcast::NodeId;
    use std::io::Read;
    c.set_nonblocking(false)?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    let (hello, used) = loop {
        let mut chunk = [0u8; 512];
        let n = c.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        match Hello::decode(&buf) {
            Ok(x) => break x,
            Err(HelloError::Incomplete) => continue,
            Err(HelloError::Invalid(e)) => bail!("bad hello: {e}"),
        }
    };
    c.set_read_timeout(None)?;
    let src = NodeId(hello.id.0).base();
    if st
        .cut
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&pair(src, dst))
    {
        return Ok(());
    }
    let listen = map
        .iter()
        .find(|(id, _)| *id == src)
        .map(|(_, a)| *a)
        .unwrap_or(hello.listen);
    // While the group starts, the member behind may not listen yet: a dialer already holds
    // a connection to the front, so keep trying instead of breaking it (which the member
    // would take as a failure). Once the member was reached, a failed connect fails at
    // once, as it would without the proxy (holding it could deliver a connection meant for
    // a dead process to the next one started on the same address).
    let seen = st
        .reached
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&dst);
    let deadline = Instant::now() + Duration::from_secs(if seen { 0 } else { 10 });
    let mut out = loop {
        match std::net::TcpStream::connect(dst_real) {
            Ok(s) => break s,
            Err(e) if Instant::now() >= deadline => return Err(e.into()),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    st.reached
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(dst);
    let _ = out.set_nodelay(true);
    let _ = c.set_nodelay(true);
    let mut h = bytes::BytesMut::new();
    Hello {
        id: hello.id,
        listen,
    }
    .encode(&mut h);
    out.write_all(&h)?;
    out.write_all(&buf[used..])?;
    {
        let mut conns = st.conns.lock().unwrap_or_else(|e| e.into_inner());
        // Cut while we were connecting: give up.
        if st
            .cut
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&pair(src, dst))
        {
            return Ok(());
        }
        conns.push((src, dst, c.try_clone()?, out.try_clone()?));
    }
    let (mut c2, mut out2) = (c.try_clone()?, out.try_clone()?);
    let t = std::thread::spawn(move || {
        let _ = std::io::copy(&mut out2, &mut c2);
        let _ = c2.shutdown(std::net::Shutdown::Both);
    });
    let _ = std::io::copy(&mut c, &mut out);
    let _ = out.shutdown(std::net::Shutdown::Both);
    let _ = t.join();
    Ok(())
}
