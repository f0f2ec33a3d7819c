//! `squall-mcast-member`: one member of an ordered-multicast group over TCP (or, with
//! `--mode raw`, the same process doing a raw unordered TCP fan-out, the benchmark baseline).
//!
//! ```text
//! squall-mcast-member --id N [--incarnation I] [--listen ADDR] --peer ID=ADDR ... [--join]
//!     [--mode ordered|raw] [--size BYTES] [--rate MSGS_PER_S] [--window W]
//!     [--heartbeat-ms MS] [--suspect-ms MS] [--paused] [--status-ms MS]
//!     [--warmup-ms MS --measure-ms MS [--drain-ms MS] [--linger-ms MS]]
//!     [--durable --data-dir DIR [--checkpoint-bytes N]] [--exit-on-removed]
//! ```
//! * `--peer` names the other initial members (`--join`: the contacts to join through).
//!   Without `--join` the member waits until it is connected to every peer, then starts
//!   the bootstrap view of `{id} ∪ peers`.
//! * `--rate 0` (the default) sends as fast as flow control allows; otherwise that many
//!   messages per second. Each payload starts with its send time (µs) so receivers measure
//!   delivery latency.
//! * With `--measure-ms` the member sends for warm-up + measurement, stops, waits
//!   `--drain-ms`, prints one `RESULT` line and exits after `--linger-ms`.
//! * `--incarnation I` (default 0): a process that lost its state rejoins (with `--join`)
//!   under the same node number and the next incarnation (`NodeId::new(N, I)`); ids print
//!   as `N` or `N#I`.
//! * `--durable --data-dir DIR`: the core's durable mode with a [`FilePersist`] in `DIR`
//!   (deliveries, Paxos records and snapshots fsynced before the core hears they are
//!   persisted). A first start (empty dir) bootstraps or joins as usual; a start that finds
//!   an earlier run's files restores the application from them (snapshot + delivered
//!   entries), prints `RECOVERED …` and calls `Node::restart` (no bootstrap barrier: the
//!   core waits for a strict majority of its last view itself).
//!   `--checkpoint-bytes N` (default `CHECKPOINT_BYTES_DEFAULT`, 64 MiB): once the entries
//!   after the log's base pass N bytes (or the base snapshot's size, if larger) the driver
//!   checkpoints the application's state and the file is compacted to it.
//! * `--exit-on-removed`: exit (status 0, after `EXIT reason=removed`) once the group
//!   removed this member (it must come back as a joiner under its next incarnation, with
//!   an empty data dir); without it the process stays up, idle.
//! * Commands on stdin: `start`, `stop` (sending), `status`, `digest-at N` (the digest of
//!   the first N delivered messages, if this process knows it), `quit`.
//! * Planted bugs for the fault tests' self-checks (`SQUALL_MCAST_MEMBER_BUG`):
//!   `drop_entries` (confirm persistence without writing the delivered entries),
//!   `swap_order` (the application applies two consecutive deliveries in swapped order),
//!   `quorum_half` (the core's planted bug: half of the previous view may install the next).
//!
//! Lines on stdout (one event each, `key=value` fields):
//! `LISTEN addr=…` once bound; `READY …` once the bootstrap view (or join request) is up;
//! `VIEW epoch=… members=a,b,c count=… digest=…` at every view install, with the number of
//! messages delivered before it and the digest of that delivered sequence (so members
//! compare the same prefix: everything up to the end of the previous epoch);
//! `STATE count=… digest=…` after a state transfer was installed; `STATUS …` on request;
//! `REMOVED`; `RESULT …` in measuring mode; durable mode: `RECOVERED count=… digest=…
//! version=… boot=… torn=…` at a restart, `DURABLE count=… digest=… version=…` (at most
//! every 10 ms) when deliveries up to that point are fsynced; `DIGEST_AT n=… digest=…`.
//!
//! The digest chains, for every delivered message in order, its version, sender, sender
//! sequence and the CRC32C of its payload.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use squall_mcast::net::{
    Application, Driver, DriverInput, FilePersist, FileRecovery, PersistBugs, TcpConfig,
    TcpTransport, Transport, TransportEvent,
};
use squall_mcast::{
    codec, fnv1a64, Config, DataBatch, DataMsg, Delivery, Hlc, Layout, Message, MsgId, Node,
    NodeId, ShardId, Version, ViewInfo,
};
use tokio::sync::mpsc;

/// Latency samples kept per run (beyond it the rest are not recorded).
const LAT_SAMPLES_MAX: usize = 8 << 20;
/// Digests reserved up front in a measured run (more still fit, by growing).
const HIST_RESERVED: usize = 16 << 20;
/// Raw mode: bytes that may wait in a peer's queue before the sender pauses.
const RAW_QUEUE_BYTES: usize = 4 << 20;
/// Raw mode: most messages per frame.
const RAW_BATCH_MAX: usize = 256;
/// Smallest payload (it carries its send time and sequence).
const PAYLOAD_MIN: usize = 16;
/// Messages offered in one burst before the loop looks at the network again.
const SEND_BURST_MAX: usize = 4096;

#[derive(Clone, Debug)]
struct Opts {
    id: u64,
    listen: SocketAddr,
    peers: BTreeMap<NodeId, SocketAddr>,
    join: bool,
    raw: bool,
    size: usize,
    rate: u64,
    window: usize,
    heartbeat_ms: u64,
    suspect_ms: u64,
    paused: bool,
    status_ms: u64,
    warmup_ms: u64,
    measure_ms: u64,
    drain_ms: u64,
    linger_ms: u64,
    durable: bool,
    data_dir: Option<PathBuf>,
    checkpoint_bytes: u64,
    exit_on_removed: bool,
}

fn parse() -> Result<Opts> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut o = Opts {
        id: 0,
        listen: "127.0.0.1:0".parse()?,
        peers: BTreeMap::new(),
        join: false,
        raw: false,
        size: 100,
        rate: 0,
        window: 256,
        heartbeat_ms: 10,
        suspect_ms: 1000,
        paused: false,
        status_ms: 0,
        warmup_ms: 0,
        measure_ms: 0,
        drain_ms: 1000,
        linger_ms: 1000,
        durable: false,
        data_dir: None,
        checkpoint_bytes: squall_mcast::net::persist::CHECKPOINT_BYTES_DEFAULT,
        exit_on_removed: false,
    };
    let mut have_id = false;
    let mut incarnation: u16 = 0;
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].clone();
        let mut val = || -> Result<String> {
            i += 1;
            args.get(i)
                .cloned()
                .with_context(|| format!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--id" => {
                o.id = val()?.parse()?;
                have_id = true;
            }
            "--listen" => o.listen = val()?.parse()?,
            "--peer" => {
                let v = val()?;
                let (id, addr) = v.split_once('=').context("--peer wants ID=ADDR")?;
                o.peers.insert(NodeId(id.parse()?), addr.parse()?);
            }
            "--join" => o.join = true,
            "--incarnation" => incarnation = val()?.parse()?,
            "--mode" => {
                o.raw = match val()?.as_str() {
                    "ordered" => false,
                    "raw" => true,
                    m => bail!("unknown mode {m}"),
                }
            }
            "--size" => o.size = val()?.parse()?,
            "--rate" => o.rate = val()?.parse()?,
            "--window" => o.window = val()?.parse()?,
            "--heartbeat-ms" => o.heartbeat_ms = val()?.parse()?,
            "--suspect-ms" => o.suspect_ms = val()?.parse()?,
            "--paused" => o.paused = true,
            "--status-ms" => o.status_ms = val()?.parse()?,
            "--warmup-ms" => o.warmup_ms = val()?.parse()?,
            "--measure-ms" => o.measure_ms = val()?.parse()?,
            "--drain-ms" => o.drain_ms = val()?.parse()?,
            "--linger-ms" => o.linger_ms = val()?.parse()?,
            "--durable" => o.durable = true,
            "--exit-on-removed" => o.exit_on_removed = true,
            "--data-dir" => o.data_dir = Some(PathBuf::from(val()?)),
            "--checkpoint-bytes" => o.checkpoint_bytes = val()?.parse()?,
            a => bail!("unknown argument {a}"),
        }
        i += 1;
    }
    if !have_id {
        bail!("--id is required");
    }
    if o.id >> NodeId::BASE_BITS != 0 {
        bail!("--id must fit {} bits", NodeId::BASE_BITS);
    }
    o.id = NodeId::new(o.id, incarnation).0;
    if o.size < PAYLOAD_MIN {
        bail!("--size must be at least {PAYLOAD_MIN}");
    }
    if o.durable != o.data_dir.is_some() {
        bail!("--durable and --data-dir go together");
    }
    if o.join && o.peers.is_empty() {
        bail!("--join needs at least one --peer to contact");
    }
    Ok(o)
}

/// The application: a digest of the delivered sequence plus measurement counters.
#[derive(Debug, Default)]
struct App {
    me: u64,
    count: u64,
    digest: u64,
    last_version: Version,
    epoch: u64,
    members: Vec<NodeId>,
    views: u64,
    // measurement window (wall µs)
    from_us: u64,
    to_us: u64,
    win_count: u64,
    win_bytes: u64,
    lat_us: Vec<u32>,
    // durable mode
    durable: bool,
    /// Deliveries not yet reported durable: (version, count, digest) after each.
    unpersisted: VecDeque<(Version, u64, u64)>,
    last_durable_print: Option<Instant>,
    /// Digest after each delivery from `hist_base` on (`hist[i]`: after `hist_base + i + 1`
    /// deliveries); `hist_base_digest` is the digest after `hist_base` deliveries.
    hist: Vec<u64>,
    hist_base: u64,
    hist_base_digest: u64,
    /// Planted bug: apply two consecutive deliveries swapped.
    bug_swap: bool,
    held: Option<(u64, MsgId, Version, Bytes)>,
}

impl App {
    fn record(&mut self, now_us: u64, id: MsgId, version: Version, payload: &[u8]) {
        let crc = crc32c::crc32c(payload);
        let mut b = [0u8; 44];
        b[0..8].copy_from_slice(&self.digest.to_le_bytes());
        b[8..16].copy_from_slice(&version.epoch.to_le_bytes());
        b[16..24].copy_from_slice(&version.seq.to_le_bytes());
        b[24..32].copy_from_slice(&id.sender.0.to_le_bytes());
        b[32..40].copy_from_slice(&id.seq.to_le_bytes());
        b[40..44].copy_from_slice(&crc.to_le_bytes());
        self.digest = fnv1a64(&b);
        self.count += 1;
        self.last_version = version;
        self.hist.push(self.digest);
        if self.durable {
            self.unpersisted
                .push_back((version, self.count, self.digest));
        }
        if now_us >= self.from_us && now_us < self.to_us {
            self.win_count += 1;
            self.win_bytes += payload.len() as u64;
            if id.sender.0 != self.me && payload.len() >= 8 && self.lat_us.len() < LAT_SAMPLES_MAX {
                let mut t = [0u8; 8];
                t.copy_from_slice(&payload[..8]);
                let sent = u64::from_le_bytes(t);
                self.lat_us
                    .push(now_us.saturating_sub(sent).min(u32::MAX as u64) as u32);
            }
        }
    }
    fn digest_at(&self, n: u64) -> Option<u64> {
        if n == self.hist_base {
            return Some(self.hist_base_digest);
        }
        let i = n.checked_sub(self.hist_base + 1)?;
        self.hist.get(usize::try_from(i).ok()?).copied()
    }
    /// Restores the state recovered from the data dir (no output but one `RECOVERED` line).
    fn restore(&mut self, rec: &FileRecovery) -> Result<()> {
        if let Some((_, version, data)) = &rec.snapshot {
            let (c, g) = parse_snapshot(data).context("recovered snapshot")?;
            self.count = c;
            self.digest = g;
            self.last_version = *version;
            self.hist.clear();
            self.hist_base = c;
            self.hist_base_digest = g;
        }
        for d in &rec.entries {
            self.record(0, d.id, d.version, &d.payload);
        }
        self.unpersisted.clear();
        println!(
            "RECOVERED id={} count={} digest={:016x} version={} boot={} torn={} records={}",
            fmt_id(self.me),
            self.count,
            self.digest,
            self.last_version,
            rec.recovered.boot,
            rec.torn.map(|t| t.1).unwrap_or(0),
            rec.recovered.records.len()
        );
        Ok(())
    }
    fn status(&self) -> String {
        format!(
            "id={} epoch={} members={} count={} digest={:016x} version={}",
            fmt_id(self.me),
            self.epoch,
            join_ids(&self.members),
            self.count,
            self.digest,
            self.last_version
        )
    }
}

fn parse_snapshot(data: &[u8]) -> Option<(u64, u64)> {
    if data.len() != 16 {
        return None;
    }
    let mut c = [0u8; 8];
    c.copy_from_slice(&data[0..8]);
    let mut g = [0u8; 8];
    g.copy_from_slice(&data[8..16]);
    Some((u64::from_le_bytes(c), u64::from_le_bytes(g)))
}

impl Application for App {
    fn deliver(&mut self, now_us: u64, d: &Delivery) {
        if self.bug_swap {
            // Planted bug: every pair of deliveries is applied second-first.
            match self.held.take() {
                None => {
                    self.held = Some((now_us, d.id, d.version, d.payload.clone()));
                    return;
                }
                Some((t, id, v, p)) => {
                    self.record(now_us, d.id, d.version, &d.payload);
                    self.record(t, id, v, &p);
                    return;
                }
            }
        }
        self.record(now_us, d.id, d.version, &d.payload);
    }
    fn persisted(&mut self, _shard: ShardId, upto: Version) {
        let mut last = None;
        while let Some(&(v, c, g)) = self.unpersisted.front() {
            if v > upto {
                break;
            }
            last = Some((v, c, g));
            self.unpersisted.pop_front();
        }
        let due = self
            .last_durable_print
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(10));
        if let (Some((v, c, g)), true) = (last, due) {
            self.last_durable_print = Some(Instant::now());
            println!(
                "DURABLE id={} count={c} digest={g:016x} version={v}",
                fmt_id(self.me)
            );
        }
    }
    fn capture_snapshot(&mut self, _shard: ShardId, _version: Version) -> Bytes {
        let mut b = BytesMut::with_capacity(16);
        b.put_u64_le(self.count);
        b.put_u64_le(self.digest);
        b.freeze()
    }
    fn install_snapshot(&mut self, _shard: ShardId, version: Version, data: &Bytes) {
        let Some((c, g)) = parse_snapshot(data) else {
            println!("ERROR snapshot of {} bytes ignored", data.len());
            return;
        };
        self.count = c;
        self.digest = g;
        self.last_version = version;
        self.hist.clear();
        self.hist_base = c;
        self.hist_base_digest = g;
        self.unpersisted.clear();
        if self.durable {
            self.unpersisted.push_back((version, c, g));
        }
        println!(
            "STATE id={} count={} digest={:016x} version={}",
            fmt_id(self.me),
            self.count,
            self.digest,
            version
        );
    }
    fn view_installed(&mut self, _now_us: u64, v: &ViewInfo) {
        self.epoch = v.epoch;
        self.members = v.members.clone();
        self.views += 1;
        println!(
            "VIEW id={} epoch={} members={} count={} digest={:016x} needs_state={}",
            fmt_id(self.me),
            v.epoch,
            join_ids(&v.members),
            self.count,
            self.digest,
            v.needs_state
        );
    }
    fn removed(&mut self, left: bool) {
        println!(
            "REMOVED id={} left={left} count={} digest={:016x}",
            fmt_id(self.me),
            self.count,
            self.digest
        );
    }
}

/// `3` for the first incarnation of node 3, `3#1` for its next one.
fn fmt_id(id: u64) -> String {
    let n = NodeId(id);
    if n.incarnation() == 0 {
        n.base().to_string()
    } else {
        format!("{}#{}", n.base(), n.incarnation())
    }
}

fn join_ids(ids: &[NodeId]) -> String {
    ids.iter()
        .map(|i| fmt_id(i.0))
        .collect::<Vec<_>>()
        .join(",")
}

fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Payloads are cut from slabs of this many bytes (or one payload, if bigger).
const PAYLOAD_SLAB_BYTES: usize = 1 << 20;

/// Makes payloads as slices of a shared slab: one allocation per slab instead of one per
/// message, and a clone of a payload (the core keeps its own message for retransmission
/// and sends another copy) is a reference-count increment, not a promotion to a new
/// shared allocation as for a `Bytes` frozen from its own `Vec`.
#[derive(Debug, Default)]
struct Payloads {
    slab: BytesMut,
}

impl Payloads {
    /// A payload of `size` bytes carrying its send time and a sequence number.
    fn make(&mut self, size: usize, seq: u64, now_us: u64) -> Bytes {
        if self.slab.capacity() < size {
            self.slab = BytesMut::with_capacity(PAYLOAD_SLAB_BYTES.max(size));
        }
        self.slab.put_u64_le(now_us);
        self.slab.put_u64_le(seq);
        self.slab.resize(size, (seq & 0xff) as u8);
        self.slab.split().freeze()
    }
}

/// CPU time of this process (user + system, all threads) in µs, from `/proc/self/stat`
/// (clock ticks, taken as the Linux default of 100 per second); 0 where unreadable.
fn cpu_us() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // After the command name in parentheses, fields start at the state (field 3); utime and
    // stime are fields 14 and 15.
    let Some(rest) = s.rfind(')').map(|i| &s[i + 1..]) else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    (tick(11) + tick(12)) * 10_000
}

/// The process's CPU time over the measured window (sampled by the main loop when it sees
/// the window start and end, so within a loop turn of them).
#[derive(Debug, Default)]
struct CpuWindow {
    start: Option<(u64, u64)>,
    end: Option<(u64, u64)>,
}

impl CpuWindow {
    fn poll(&mut self, app: &App) {
        if self.end.is_some() {
            return;
        }
        let now = wall_us();
        if self.start.is_none() && now >= app.from_us {
            self.start = Some((now, cpu_us()));
        } else if self.start.is_some() && now >= app.to_us {
            self.end = Some((now, cpu_us()));
        }
    }
    /// `cpu_pct=` (share of one core over the window) and `cpu_ns_per_msg=` (CPU time per
    /// delivered message in the window), for the RESULT line.
    fn fields(&self, delivered: u64) -> String {
        match (self.start, self.end) {
            (Some((w0, c0)), Some((w1, c1))) if w1 > w0 => format!(
                "cpu_pct={:.0} cpu_ns_per_msg={:.0}",
                100.0 * (c1 - c0) as f64 / (w1 - w0) as f64,
                1000.0 * (c1 - c0) as f64 / delivered.max(1) as f64
            ),
            _ => "cpu_pct=0 cpu_ns_per_msg=0".into(),
        }
    }
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Pacing: how many messages may be offered now.
#[derive(Debug)]
struct Pacer {
    rate: u64,
    start: Instant,
    offered: u64,
}

impl Pacer {
    fn allowance(&self) -> usize {
        if self.rate == 0 {
            return SEND_BURST_MAX;
        }
        let due = (self.start.elapsed().as_secs_f64() * self.rate as f64) as u64;
        due.saturating_sub(self.offered).min(SEND_BURST_MAX as u64) as usize
    }
}

fn main() -> Result<()> {
    let o = parse()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The loop runs as a spawned task, not as the `block_on` future: waking a task from
    // another task on the same thread is a local queue push, while waking the `block_on`
    // future goes through the I/O driver's waker (a syscall per wake-up).
    rt.block_on(async move { tokio::spawn(run(o)).await })?
}

async fn run(o: Opts) -> Result<()> {
    let me = NodeId(o.id);
    let tcfg = TcpConfig::new(me, o.peers.clone());
    let mut transport = TcpTransport::bind(tcfg, o.listen).await?;
    println!("LISTEN id={} addr={}", fmt_id(o.id), transport.local_addr());

    let (cmd_tx, mut cmd_rx) = mpsc::channel::<String>(16);
    // Commands from stdin, read on a plain thread (blocking reads).
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::stdin().lock().lines() {
            let Ok(l) = l else { break };
            if cmd_tx.blocking_send(l.trim().to_string()).is_err() {
                return;
            }
        }
        let _ = cmd_tx.blocking_send("eof".into());
    });

    let peers: Vec<NodeId> = o.peers.keys().copied().collect();
    let bug = std::env::var("SQUALL_MCAST_MEMBER_BUG").unwrap_or_default();
    let mut app = App {
        me: o.id,
        durable: o.durable,
        bug_swap: bug == "swap_order",
        ..App::default()
    };
    // Durable mode: what the data dir holds from an earlier run.
    let mut file = None;
    if let Some(dir) = &o.data_dir {
        let (mut f, rec) = FilePersist::open(dir)?;
        if bug == "drop_entries" {
            f.plant_bugs(PersistBugs {
                drop_entries: true,
                ..PersistBugs::default()
            });
        }
        f.set_checkpoint_bytes(o.checkpoint_bytes);
        let restarting = rec.recovered.boot > 0;
        if restarting {
            app.restore(&rec)?;
        }
        file = Some((f, restarting.then_some(rec)));
    }
    let restarting = matches!(&file, Some((_, Some(_))));
    if !o.join && !restarting {
        let missing = transport.connect_all(&peers, Duration::from_secs(30)).await;
        if !missing.is_empty() {
            bail!("could not connect to peers {missing:?} within 30 s");
        }
    }
    if o.measure_ms > 0 {
        let now = wall_us();
        app.from_us = now + o.warmup_ms * 1000;
        app.to_us = app.from_us + o.measure_ms * 1000;
        // Room for every sample and digest of a measured run up front: growing these by
        // doubling copies tens of MB in the middle of the run, a stall of milliseconds
        // that shows in the latency tail (of all three members, in ordered mode). Pages
        // are only touched as they fill.
        app.lat_us.reserve(LAT_SAMPLES_MAX);
        app.hist.reserve(HIST_RESERVED);
    } else {
        app.to_us = u64::MAX;
    }
    if o.raw {
        run_raw(o, transport, app, &mut cmd_rx).await
    } else {
        let cfg = Config {
            layout: Layout::uniform(1, 1, 16),
            window: o.window,
            heartbeat_us: o.heartbeat_ms * 1000,
            suspect_timeout_us: o.suspect_ms * 1000,
            retransmit_us: (o.suspect_ms * 1000 / 4).max(o.heartbeat_ms * 2000),
            view_change_retry_us: o.suspect_ms * 3000,
            payload_bytes_max: o.size.max(1 << 20),
            batch_messages_max: 1024,
            durable: o.durable,
        };
        let now = wall_us();
        let mut members = peers.clone();
        members.push(me);
        members.sort();
        let mut node = match &file {
            Some((_, Some(rec))) => match Node::restart(me, &members, cfg, &rec.recovered, now) {
                Ok(n) => n,
                Err(e) => {
                    println!("NOT_MEMBER id={} error={e}", fmt_id(o.id));
                    bail!("restart from {:?}: {e}", o.data_dir);
                }
            },
            _ if o.join => Node::new_joiner(me, &peers, cfg, now)?,
            _ => Node::new_initial(me, &members, cfg, now)?,
        };
        if bug == "quorum_half" {
            // Planted bug: half of the previous view is enough to install the next one.
            node.plant_bugs(squall_mcast::PlantedBugs {
                quorum_half: true,
                ..Default::default()
            });
        }
        let driver = match file {
            Some((f, _)) => Driver::new_durable(node, transport, app, f),
            None => Driver::new(node, transport, app),
        };
        run_ordered(o, driver, &mut cmd_rx).await
    }
}

/// What the main loop should do after a stdin command.
fn command(line: &str, sending: &mut bool, pacer: &mut Pacer, status: impl Fn() -> String) -> bool {
    match line {
        "start" if !*sending => {
            *sending = true;
            pacer.start = Instant::now();
            pacer.offered = 0;
        }
        "stop" => *sending = false,
        "status" => println!("STATUS {}", status()),
        "quit" => return false,
        _ => {}
    }
    true
}

/// `digest-at N`: the digest after the first N deliveries, if known here.
fn digest_at_command(line: &str, app: &App) -> bool {
    let Some(n) = line.strip_prefix("digest-at ") else {
        return false;
    };
    match n
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| Some((n, app.digest_at(n)?)))
    {
        Some((n, g)) => println!("DIGEST_AT id={} n={n} digest={g:016x}", fmt_id(app.me)),
        None => println!(
            "DIGEST_AT id={} n={} digest=unknown",
            fmt_id(app.me),
            n.trim()
        ),
    }
    true
}

fn result_line(o: &Opts, app: &mut App, sent: u64, extra: &str) {
    app.lat_us.sort_unstable();
    let secs = o.measure_ms as f64 / 1000.0;
    println!(
        "RESULT id={} mode={} size={} rate={} delivered={} secs={:.3} msgs_per_s={:.0} mb_per_s={:.2} \
         p50_us={} p99_us={} lat_samples={} sent={} count={} digest={:016x} {}",
        fmt_id(o.id),
        if o.raw { "raw" } else { "ordered" },
        o.size,
        o.rate,
        app.win_count,
        secs,
        app.win_count as f64 / secs,
        app.win_bytes as f64 / secs / 1e6,
        percentile(&app.lat_us, 0.50),
        percentile(&app.lat_us, 0.99),
        app.lat_us.len(),
        sent,
        app.count,
        app.digest,
        extra
    );
}

async fn run_ordered(
    o: Opts,
    mut d: Driver<TcpTransport, App>,
    cmds: &mut mpsc::Receiver<String>,
) -> Result<()> {
    println!(
        "READY id={} mode=ordered joining={} epoch={}",
        fmt_id(o.id),
        o.join,
        d.node.epoch()
    );
    let mut sending = !o.paused;
    let mut pacer = Pacer {
        rate: o.rate,
        start: Instant::now(),
        offered: 0,
    };
    let mut seq = 0u64;
    let mut pace = tokio::time::interval(Duration::from_millis(1));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut status = tokio::time::interval(Duration::from_millis(o.status_ms.max(1)));
    let measuring = o.measure_ms > 0;
    let stop_at = Instant::now() + Duration::from_millis(o.warmup_ms + o.measure_ms);
    let report_at = stop_at + Duration::from_millis(o.drain_ms);
    let mut reported = false;
    let mut cmds_open = true;
    let mut window_may_have_room = true;
    // The node is ticked when due (`tick_if_due`); this timer only makes sure the loop looks
    // at least twice per heartbeat (one persistent timer instead of a new sleep per turn).
    let mut heartbeat =
        tokio::time::interval(Duration::from_micros((o.heartbeat_ms * 500).max(500)));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut cpu = CpuWindow::default();
    let mut payloads = Payloads::default();
    loop {
        tokio::select! {
            inp = d.recv() => {
                match inp {
                    None => break,
                    Some(DriverInput::Event(ev)) => {
                        d.handle_and_pump(ev);
                    }
                    Some(DriverInput::Persisted(done)) => {
                        d.on_persist_done(done);
                        if let Some(e) = d.persist_failed() {
                            println!("ERROR persistence failed: {e}");
                            bail!("persistence failed: {e}");
                        }
                    }
                }
                window_may_have_room = true;
            }
            _ = heartbeat.tick() => window_may_have_room = true,
            _ = pace.tick(), if sending => {}
            c = cmds.recv(), if cmds_open => {
                let c = c.unwrap_or_else(|| "eof".into());
                if c == "eof" {
                    // Stdin is closed: stop listening to it (a closed channel is always
                    // ready, so polling it again would spin). A measured run keeps going.
                    cmds_open = false;
                    if !measuring {
                        break;
                    }
                } else if digest_at_command(&c, &d.app) {
                } else if !command(&c, &mut sending, &mut pacer, || {
                    format!("{} wedged={}", d.app.status(), d.node.is_wedged())
                }) {
                    break;
                }
            }
            _ = status.tick(), if o.status_ms > 0 => {
                println!("STATUS {} wedged={}", d.app.status(), d.node.is_wedged())
            }
        }
        d.tick_if_due();
        if o.exit_on_removed && d.is_removed() {
            d.flush();
            println!("EXIT id={} reason=removed", fmt_id(o.id));
            break;
        }
        if sending && window_may_have_room && !d.is_removed() && d.node.is_state_ready() {
            let n = pacer.allowance();
            if n > 0 {
                let now = wall_us();
                let first = seq;
                let mut gen = (first..first + n as u64)
                    .map(|s| payloads.make(o.size, s, now))
                    .peekable();
                match d.send_batch(&mut gen) {
                    Ok(ids) => {
                        seq += ids.len() as u64;
                        pacer.offered += ids.len() as u64;
                    }
                    // Only input from peers (rows, deliveries) or a tick can free the
                    // window: do not scan it again before one arrives.
                    Err(_) => window_may_have_room = false,
                }
            }
        }
        d.flush();
        if measuring {
            cpu.poll(&d.app);
            let now = Instant::now();
            if sending && now >= stop_at {
                sending = false;
            }
            if !reported && now >= report_at {
                reported = true;
                let s = d.stats().clone();
                let t = d.transport.stats();
                let extra = format!(
                    "{} epoch={} persist_groups={} input_batches={} data_frames={} data_batches_in={} rows_sent={} rows_in={} refused={} bytes_out={}",
                    cpu.fields(d.app.win_count),
                    d.node.epoch(),
                    s.persist_groups,
                    s.input_batches,
                    s.data_frames,
                    s.data_batches_in,
                    s.rows_sent,
                    s.rows_in,
                    s.refused,
                    t.bytes_sent
                );
                result_line(&o, &mut d.app, seq, &extra);
            }
            if reported && now >= report_at + Duration::from_millis(o.linger_ms) {
                break;
            }
        }
    }
    Ok(())
}

async fn run_raw(
    o: Opts,
    mut t: TcpTransport,
    mut app: App,
    cmds: &mut mpsc::Receiver<String>,
) -> Result<()> {
    let me = NodeId(o.id);
    let peers: Vec<NodeId> = o.peers.keys().copied().collect();
    let mut members = peers.clone();
    members.push(me);
    members.sort();
    app.members = members;
    println!("READY id={} mode=raw", fmt_id(o.id));
    let mut sending = !o.paused;
    let mut pacer = Pacer {
        rate: o.rate,
        start: Instant::now(),
        offered: 0,
    };
    let mut seq = 0u64;
    let mut pace = tokio::time::interval(Duration::from_millis(1));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let measuring = o.measure_ms > 0;
    let stop_at = Instant::now() + Duration::from_millis(o.warmup_ms + o.measure_ms);
    let report_at = stop_at + Duration::from_millis(o.drain_ms);
    let mut reported = false;
    let mut scratch = BytesMut::new();
    let mut cmds_open = true;
    // Raw deliveries are numbered per sender in arrival order (no agreed order exists).
    let mut recv_count: BTreeMap<NodeId, u64> = BTreeMap::new();
    let mut cpu = CpuWindow::default();
    let mut payloads = Payloads::default();
    loop {
        tokio::select! {
            ev = t.recv() => {
                let Some(ev) = ev else { break };
                let mut next = Some(ev);
                let mut n = 0;
                while let Some(ev) = next {
                    if let TransportEvent::Message { from, msg: Message::Data(b) } = ev {
                        let now = wall_us();
                        for m in &b.msgs {
                            if let DataMsg::App { id, payload, .. } = m {
                                let c = recv_count.entry(from).or_default();
                                *c += 1;
                                app.record(now, *id, Version { epoch: 0, seq: *c }, payload);
                            }
                        }
                    }
                    n += 1;
                    next = if n < 4096 { t.try_recv() } else { None };
                }
            }
            _ = pace.tick(), if sending => {}
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            c = cmds.recv(), if cmds_open => {
                let c = c.unwrap_or_else(|| "eof".into());
                if c == "eof" {
                    cmds_open = false;
                    if !measuring {
                        break;
                    }
                } else if !command(&c, &mut sending, &mut pacer, || app.status()) {
                    break;
                }
            }
        }
        if sending {
            let mut budget = pacer.allowance();
            while budget > 0 {
                let room = peers
                    .iter()
                    .map(|p| RAW_QUEUE_BYTES.saturating_sub(t.queued_bytes(*p)))
                    .min()
                    .unwrap_or(RAW_QUEUE_BYTES);
                let fit = (room / (o.size + 40)).min(RAW_BATCH_MAX).min(budget);
                if fit == 0 {
                    break;
                }
                let now = wall_us();
                let mut msgs = Vec::with_capacity(fit);
                for _ in 0..fit {
                    let p = payloads.make(o.size, seq, now);
                    let id = MsgId { sender: me, seq };
                    app.record(now, id, Version { epoch: 0, seq }, &p);
                    msgs.push(DataMsg::App {
                        id,
                        ts: Hlc {
                            phys_us: now,
                            logical: 0,
                        },
                        payload: p,
                    });
                    seq += 1;
                }
                pacer.offered += fit as u64;
                budget -= fit;
                let batch = DataBatch {
                    epoch: 0,
                    shard: 0,
                    sender_rank: 0,
                    first_index: seq - fit as u64,
                    msgs,
                };
                codec::encode(&Message::Data(std::sync::Arc::new(batch)), &mut scratch);
                let frame = scratch.split().freeze();
                for p in &peers {
                    t.send(*p, frame.clone());
                }
            }
        }
        if measuring {
            cpu.poll(&app);
            let now = Instant::now();
            if sending && now >= stop_at {
                sending = false;
            }
            if !reported && now >= report_at {
                reported = true;
                let st = t.stats();
                let extra = format!(
                    "{} bytes_out={} dropped={}",
                    cpu.fields(app.win_count),
                    st.bytes_sent,
                    st.frames_dropped_full
                );
                result_line(&o, &mut app, seq, &extra);
            }
            if reported && now >= report_at + Duration::from_millis(o.linger_ms) {
                break;
            }
        }
    }
    Ok(())
}
