//! [`RdmaTransport`]: the RDMA implementation of [`Transport`] (feature `rdma`, off by
//! default), through the `ibverbs` crate (rdma-core's libibverbs).
//!
//! **Nothing here has run on RDMA hardware**: the machine it was written on has no RDMA
//! device. What was compiled and tested is said in `docs/MCAST.md` ("RDMA").
//!
//! * **Connections.** As with TCP, a member dials every peer it sends to and only *sends* on
//!   that connection; it only *receives* on the connections its peers dialed. A connection is
//!   a reliable-connected (RC) queue pair plus a small TCP *side channel*: the dialer sends
//!   its [`Hello`] and its queue-pair [`Endpoint`], the acceptor creates its queue pair, moves
//!   it to ready-to-send, posts all its receive buffers and answers with its endpoint; then
//!   the dialer moves its queue pair to ready-to-send and starts sending.
//! * **Data path.** Two-sided `SEND`s from registered buffers into posted receive buffers
//!   (a ring of [`RdmaConfig::slots`] slots of [`RdmaConfig::slot_bytes`] each way). Frames
//!   are the same checksummed [`codec`](crate::codec) frames as on TCP, written as one byte
//!   stream cut into slot-sized chunks ([`wire::Chunker`]); the receiver glues the chunks
//!   back in order and decodes them with the same length limits ([`wire::Reassembler`]).
//!   Derecho writes SST rows with one-sided RDMA writes into its peers' memory; this
//!   transport does not (rows travel as frames like everything else), see `docs/MCAST.md`.
//! * **Flow control.** A send is posted only against a *credit*: a receive buffer the
//!   receiver has posted and not filled. The receiver returns credits as it re-posts
//!   buffers, on the side channel (a `u32` count). So a send never meets a receiver without a
//!   buffer. When the driver falls behind, the verbs thread stops re-posting, the sender's
//!   credits run out and its bounded queue ([`RdmaConfig::queue_bytes_max`]) refuses frames.
//! * **Failure.** A failed work completion (retries exhausted, remote access error, flushed),
//!   a failed post, an invalid frame, a credit the peer did not owe, or the side channel
//!   closing all close the connection and report [`TransportEvent::PeerLost`] for an
//!   established connection: never silent loss.
//! * **Threads.** The verbs objects borrow from one another, so one OS thread owns them all
//!   (`verbs.rs`); it polls the completion queue and, when idle, waits at most
//!   [`RdmaConfig::idle_poll_us`] between polls.

mod verbs;
pub mod wire;

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::{JoinHandle, JoinSet};

use super::transport::{Hello, HelloError, Transport, TransportEvent, TransportStats};
use crate::error::Error;
use crate::messages::Message;
use crate::types::NodeId;
use verbs::{Cmd, Role};
use wire::{Endpoint, CREDIT_BYTES, ENDPOINT_BYTES};

/// The side-channel handshake (hello + endpoint) must complete within this long.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;

/// Settings of an [`RdmaTransport`].
#[derive(Clone, Debug)]
pub struct RdmaConfig {
    /// This member's id.
    pub id: NodeId,
    /// Side-channel addresses known at start (more are learned from handshakes).
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// RDMA device name (as `ibv_devices` lists it); `None` takes the first device.
    pub device: Option<String>,
    /// GID table index for the queue pairs' global route. Required on RoCE (which has no
    /// LIDs; `show_gids` lists the table), optional on InfiniBand.
    pub gid_index: Option<u32>,
    /// Registered buffers per queue pair (send slots for a dialer, receive buffers for an
    /// acceptor).
    pub slots: u32,
    /// Bytes per slot.
    pub slot_bytes: usize,
    /// Completion-queue size; live connections may not need more than this many entries in
    /// total (`slots` each).
    pub cq_entries: usize,
    /// Bytes that may wait in one peer's outbound queue; beyond it `send` refuses frames.
    pub queue_bytes_max: usize,
    /// Least time between two dials of the same peer.
    pub redial_ms: u64,
    /// A dial (TCP connect plus queue-pair handshake) that has not finished after this long
    /// fails.
    pub connect_timeout_ms: u64,
    /// Capacity of the verbs thread → driver channel (in events).
    pub events_max: usize,
    /// Longest wait between two completion-queue polls when idle (microseconds).
    pub idle_poll_us: u64,
}

impl RdmaConfig {
    /// Defaults for member `id` with the given known side-channel addresses.
    pub fn new(id: NodeId, peers: BTreeMap<NodeId, SocketAddr>) -> Self {
        RdmaConfig {
            id,
            peers,
            device: None,
            gid_index: None,
            slots: 64,
            slot_bytes: 64 << 10,
            cq_entries: 16_384,
            queue_bytes_max: 64 << 20,
            redial_ms: 100,
            connect_timeout_ms: 2_000,
            events_max: 256,
            idle_poll_us: 50,
        }
    }
    /// Checks ranges against the named limits in [`wire`].
    pub fn validate(&self) -> Result<(), Error> {
        if self.slots == 0 || self.slots > wire::SLOTS_MAX {
            return Err(Error::InvalidConfig(format!(
                "rdma: slots must be in 1..={}",
                wire::SLOTS_MAX
            )));
        }
        if !(wire::SLOT_BYTES_MIN..=wire::SLOT_BYTES_MAX).contains(&self.slot_bytes) {
            return Err(Error::InvalidConfig(format!(
                "rdma: slot_bytes must be in {}..={}",
                wire::SLOT_BYTES_MIN,
                wire::SLOT_BYTES_MAX
            )));
        }
        if self.cq_entries < self.slots as usize || self.cq_entries > i32::MAX as usize {
            return Err(Error::InvalidConfig(
                "rdma: cq_entries must be at least slots (and fit an i32)".into(),
            ));
        }
        if self.queue_bytes_max == 0 || self.events_max == 0 || self.connect_timeout_ms == 0 {
            return Err(Error::InvalidConfig(
                "rdma: queue_bytes_max, events_max and connect_timeout_ms must be > 0".into(),
            ));
        }
        Ok(())
    }
}

/// What the side-channel tasks and the verbs thread tell the transport.
pub enum Internal {
    OutUp {
        peer: NodeId,
        conn: u64,
    },
    OutDown {
        peer: NodeId,
        conn: u64,
        was_up: bool,
    },
    InHello {
        peer: NodeId,
        conn: u64,
        listen: SocketAddr,
    },
    InFrames {
        peer: NodeId,
        conn: u64,
        msgs: Vec<Message>,
    },
    InClosed {
        peer: NodeId,
        conn: u64,
    },
}

/// One outbound connection's queue, shared by the transport (push) and the verbs thread
/// (take, then count the bytes as sent once they are in a posted slot).
pub struct TxQueue {
    frames: Mutex<VecDeque<Bytes>>,
    bytes: AtomicUsize,
    closed: AtomicBool,
}

impl TxQueue {
    fn new() -> Self {
        TxQueue {
            frames: Mutex::new(VecDeque::new()),
            bytes: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        }
    }
    /// Queues a frame unless closed or over `max` bytes (one frame always fits an empty
    /// queue). Returns whether the queue was empty before (the verbs thread needs a wake).
    fn push(&self, frame: Bytes, max: usize) -> Option<bool> {
        if self.is_closed() {
            return None;
        }
        let queued = self.bytes.load(Ordering::Acquire);
        if queued > 0 && queued + frame.len() > max {
            return None;
        }
        self.bytes.fetch_add(frame.len(), Ordering::AcqRel);
        self.frames
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(frame);
        Some(queued == 0)
    }
    /// Takes every queued frame (their bytes stay counted until [`sent`](Self::sent)).
    pub fn take_all(&self) -> VecDeque<Bytes> {
        std::mem::take(&mut *self.frames.lock().unwrap_or_else(|e| e.into_inner()))
    }
    /// `n` bytes are now in a posted send.
    pub fn sent(&self, n: usize) {
        self.bytes.fetch_sub(n, Ordering::AcqRel);
    }
    /// Refuses further frames.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
    /// Whether closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// Shared between one connection's side-channel task and the verbs thread.
pub struct ConnCtl {
    broken: AtomicBool,
    why: Mutex<Option<String>>,
    credits: AtomicU64,
    notify: Notify,
    stats: Arc<Shared>,
}

impl ConnCtl {
    fn new(stats: Arc<Shared>) -> Self {
        ConnCtl {
            broken: AtomicBool::new(false),
            why: Mutex::new(None),
            credits: AtomicU64::new(0),
            notify: Notify::new(),
            stats,
        }
    }
    /// The verbs side failed: the side-channel task closes the connection.
    pub fn set_broken(&self, why: &str) {
        *self.why.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.to_string());
        self.broken.store(true, Ordering::Release);
        self.notify.notify_one();
    }
    fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }
    /// Why the connection broke, if it did.
    pub fn why(&self) -> Option<String> {
        self.why.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// A receive buffer was re-posted: one credit for the sender.
    pub fn return_credit(&self) {
        self.credits.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_one();
    }
    /// Frames decoded on this connection.
    pub fn frames_in(&self, n: usize) {
        self.stats
            .frames_received
            .fetch_add(n as u64, Ordering::Relaxed);
    }
    /// An invalid frame closed this connection.
    pub fn invalid_frame(&self) {
        self.stats.invalid.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counters updated off the transport's own task.
#[derive(Default)]
pub struct Shared {
    invalid: AtomicU64,
    frames_received: AtomicU64,
}

/// Sends commands to the verbs thread.
#[derive(Clone)]
struct Verbs {
    tx: std_mpsc::Sender<Cmd>,
}

impl Verbs {
    fn send(&self, c: Cmd) -> io::Result<()> {
        self.tx
            .send(c)
            .map_err(|_| io::Error::other("the RDMA verbs thread is gone"))
    }
    async fn prepare(
        &self,
        conn: u64,
        peer: NodeId,
        role: Role,
        ctl: Arc<ConnCtl>,
        queue: Option<Arc<TxQueue>>,
    ) -> io::Result<Endpoint> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Prepare {
            conn,
            peer,
            role,
            ctl,
            queue,
            reply,
        })?;
        rx.await
            .map_err(|_| io::Error::other("the RDMA verbs thread is gone"))?
    }
    async fn connect(&self, conn: u64, remote: Endpoint) -> io::Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Cmd::Connect {
            conn,
            remote,
            reply,
        })?;
        rx.await
            .map_err(|_| io::Error::other("the RDMA verbs thread is gone"))?
    }
}

struct Outbound {
    conn: u64,
    queue: Arc<TxQueue>,
    up: bool,
    dead: bool,
    dialed_at: Instant,
    task: JoinHandle<()>,
}

/// The RDMA transport. Create it inside a tokio runtime with [`RdmaTransport::bind`].
pub struct RdmaTransport {
    cfg: RdmaConfig,
    listen: SocketAddr,
    addrs: BTreeMap<NodeId, SocketAddr>,
    out: BTreeMap<NodeId, Outbound>,
    inbound: BTreeMap<NodeId, u64>,
    next_conn: u64,
    tx: mpsc::Sender<Internal>,
    rx: mpsc::Receiver<Internal>,
    pending: VecDeque<TransportEvent>,
    stats: TransportStats,
    shared: Arc<Shared>,
    verbs: Verbs,
    accept_task: JoinHandle<()>,
}

impl std::fmt::Debug for RdmaTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdmaTransport")
            .field("id", &self.cfg.id)
            .field("device", &self.cfg.device)
            .field("listen", &self.listen)
            .field("peers", &self.addrs)
            .finish()
    }
}

impl Drop for RdmaTransport {
    fn drop(&mut self) {
        self.accept_task.abort();
        for o in self.out.values() {
            o.queue.close();
            o.task.abort();
        }
        // Dropping `verbs` (the last command sender once the tasks are gone) ends the thread.
    }
}

impl RdmaTransport {
    /// Opens the RDMA device, starts the verbs thread and binds the side channel on
    /// `listen` (port 0 picks a free port). Fails with a clear error — never a panic — when
    /// there is no RDMA device ("no RDMA device found; …"), the named device does not
    /// exist, or the config is out of range.
    pub async fn bind(cfg: RdmaConfig, listen: SocketAddr) -> io::Result<RdmaTransport> {
        cfg.validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let (tx, rx) = mpsc::channel(cfg.events_max);
        let (cmd_tx, cmd_rx) = std_mpsc::channel();
        let (opened_tx, opened_rx) = oneshot::channel();
        let args = verbs::ThreadArgs {
            cfg: cfg.clone(),
            cmds: cmd_rx,
            events: tx.clone(),
            opened: opened_tx,
        };
        std::thread::Builder::new()
            .name(format!("squall-rdma-{}", cfg.id.0))
            .spawn(move || verbs::run(args))?;
        opened_rx
            .await
            .map_err(|_| io::Error::other("the RDMA verbs thread stopped while opening"))??;
        let verbs = Verbs { tx: cmd_tx };
        let listener = TcpListener::bind(listen).await?;
        let listen = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let accept_task = tokio::spawn(accept_loop(AcceptArgs {
            listener,
            me: cfg.id,
            tx: tx.clone(),
            verbs: verbs.clone(),
            shared: shared.clone(),
        }));
        Ok(RdmaTransport {
            addrs: cfg.peers.clone(),
            cfg,
            listen,
            out: BTreeMap::new(),
            inbound: BTreeMap::new(),
            next_conn: 1,
            tx,
            rx,
            pending: VecDeque::new(),
            stats: TransportStats::default(),
            shared,
            verbs,
            accept_task,
        })
    }

    /// Where this member's side channel accepts connections.
    pub fn local_addr(&self) -> SocketAddr {
        self.listen
    }

    /// True when a connection to `peer` is established in both directions.
    pub fn is_connected(&self, peer: NodeId) -> bool {
        self.out.get(&peer).is_some_and(|o| o.up && !o.dead) && self.inbound.contains_key(&peer)
    }

    /// The bootstrap barrier (as [`TcpTransport::connect_all`](super::TcpTransport::connect_all)):
    /// dials `peers` until a connection in both directions exists with each, or `timeout`
    /// passes. Returns the peers still unconnected.
    pub async fn connect_all(&mut self, peers: &[NodeId], timeout: Duration) -> Vec<NodeId> {
        let deadline = Instant::now() + timeout;
        loop {
            for &p in peers {
                if p != self.cfg.id {
                    self.ensure_dial(p);
                }
            }
            let missing: Vec<NodeId> = peers
                .iter()
                .copied()
                .filter(|&p| p != self.cfg.id && !self.is_connected(p))
                .collect();
            let now = Instant::now();
            if missing.is_empty() || now >= deadline {
                return missing;
            }
            let wait = (deadline - now).min(Duration::from_millis(self.cfg.redial_ms.max(1)));
            if let Ok(Some(ev)) = tokio::time::timeout(wait, self.rx.recv()).await {
                self.absorb(ev);
            }
        }
    }

    fn ensure_dial(&mut self, peer: NodeId) -> bool {
        if let Some(o) = self.out.get(&peer) {
            if !o.dead {
                return true;
            }
            if o.dialed_at.elapsed() < Duration::from_millis(self.cfg.redial_ms) {
                return false;
            }
        }
        let Some(&addr) = self.addrs.get(&peer) else {
            return false;
        };
        let conn = self.next_conn;
        self.next_conn += 1;
        let queue = Arc::new(TxQueue::new());
        let task = tokio::spawn(dial(DialArgs {
            me: Hello {
                id: self.cfg.id,
                listen: self.listen,
            },
            peer,
            addr,
            conn,
            queue: queue.clone(),
            ctl: Arc::new(ConnCtl::new(self.shared.clone())),
            verbs: self.verbs.clone(),
            tx: self.tx.clone(),
            timeout: Duration::from_millis(self.cfg.connect_timeout_ms),
        }));
        if let Some(old) = self.out.insert(
            peer,
            Outbound {
                conn,
                queue,
                up: false,
                dead: false,
                dialed_at: Instant::now(),
                task,
            },
        ) {
            old.queue.close();
            old.task.abort();
            let _ = self.verbs.send(Cmd::Close { conn: old.conn });
        }
        true
    }

    fn absorb(&mut self, ev: Internal) {
        match ev {
            Internal::OutUp { peer, conn } => {
                if let Some(o) = self.out.get_mut(&peer) {
                    if o.conn == conn {
                        o.up = true;
                        self.stats.connects += 1;
                    }
                }
            }
            Internal::OutDown { peer, conn, was_up } => {
                if let Some(o) = self.out.get_mut(&peer) {
                    if o.conn == conn {
                        o.dead = true;
                        o.up = false;
                        o.queue.close();
                        if was_up {
                            self.lost(peer);
                        }
                    }
                }
            }
            Internal::InHello { peer, conn, listen } => {
                self.inbound.insert(peer, conn);
                if self.addrs.get(&peer) != Some(&listen) {
                    self.addrs.insert(peer, listen);
                    if let Some(o) = self.out.get_mut(&peer) {
                        if o.dead {
                            o.dialed_at = Instant::now() - Duration::from_secs(3600);
                        }
                    }
                }
            }
            Internal::InFrames { peer, conn, msgs } => {
                if self.inbound.get(&peer) == Some(&conn) {
                    self.pending.extend(
                        msgs.into_iter()
                            .map(|msg| TransportEvent::Message { from: peer, msg }),
                    );
                }
            }
            Internal::InClosed { peer, conn } => {
                if self.inbound.get(&peer) == Some(&conn) {
                    self.inbound.remove(&peer);
                    self.lost(peer);
                }
            }
        }
    }

    fn lost(&mut self, peer: NodeId) {
        self.stats.peers_lost += 1;
        self.pending.push_back(TransportEvent::PeerLost { peer });
    }
}

impl Transport for RdmaTransport {
    fn local_id(&self) -> NodeId {
        self.cfg.id
    }

    fn send(&mut self, to: NodeId, frame: Bytes) -> bool {
        if to == self.cfg.id {
            return false;
        }
        let len = frame.len() as u64;
        if !self.ensure_dial(to) {
            self.stats.frames_dropped_unconnected += 1;
            return false;
        }
        let Some(o) = self.out.get(&to) else {
            return false;
        };
        match o.queue.push(frame, self.cfg.queue_bytes_max) {
            Some(was_empty) => {
                self.stats.frames_sent += 1;
                self.stats.bytes_sent += len;
                if was_empty {
                    // Cuts the verbs thread's idle wait short (it pumps every loop anyway).
                    let _ = self.verbs.send(Cmd::Wake);
                }
                true
            }
            None => {
                self.stats.frames_dropped_full += 1;
                false
            }
        }
    }

    fn queued_bytes(&self, to: NodeId) -> usize {
        self.out
            .get(&to)
            .map(|o| o.queue.bytes.load(Ordering::Acquire))
            .unwrap_or(0)
    }

    async fn recv(&mut self) -> Option<TransportEvent> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            let ev = self.rx.recv().await?;
            self.absorb(ev);
        }
    }

    fn try_recv(&mut self) -> Option<TransportEvent> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            let ev = self.rx.try_recv().ok()?;
            self.absorb(ev);
        }
    }

    fn stats(&self) -> TransportStats {
        let mut s = self.stats.clone();
        s.invalid_frames = self.shared.invalid.load(Ordering::Relaxed);
        s.frames_received = self.shared.frames_received.load(Ordering::Relaxed);
        s
    }
}

// ------------------------------------------------------------------ side channel

/// Reads one [`Hello`] (when `hello`) and one [`Endpoint`] from the side channel, within
/// the handshake time limit; every length is checked before anything grows.
async fn read_handshake(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    hello: bool,
    limit: Duration,
) -> Result<(Option<Hello>, Endpoint), &'static str> {
    tokio::time::timeout(limit, async {
        let mut h = None;
        loop {
            if hello && h.is_none() {
                match Hello::decode(buf) {
                    Ok((x, used)) => {
                        buf.advance(used);
                        h = Some(x);
                        continue;
                    }
                    Err(HelloError::Invalid(w)) => return Err(w),
                    Err(HelloError::Incomplete) => {}
                }
            } else {
                match Endpoint::decode(buf) {
                    Ok((e, used)) => {
                        buf.advance(used);
                        return Ok((h, e));
                    }
                    Err(HelloError::Invalid(w)) => return Err(w),
                    Err(HelloError::Incomplete) => {}
                }
            }
            // Never more than one hello plus one endpoint is buffered before decoding.
            if buf.len()
                > wire::ENDPOINT_BYTES
                    + super::transport::HELLO_FIXED_BYTES
                    + super::transport::HELLO_ADDR_BYTES_MAX
            {
                return Err("side-channel handshake too long");
            }
            match stream.read_buf(buf).await {
                Ok(0) => return Err("side channel closed during the handshake"),
                Err(_) => return Err("side channel failed during the handshake"),
                Ok(_) => {}
            }
        }
    })
    .await
    .map_err(|_| "side-channel handshake timed out")?
}

struct DialArgs {
    me: Hello,
    peer: NodeId,
    addr: SocketAddr,
    conn: u64,
    queue: Arc<TxQueue>,
    ctl: Arc<ConnCtl>,
    verbs: Verbs,
    tx: mpsc::Sender<Internal>,
    timeout: Duration,
}

async fn dial(a: DialArgs) {
    let setup = async {
        let mut stream = tokio::time::timeout(a.timeout, TcpStream::connect(a.addr))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let local = a
            .verbs
            .prepare(
                a.conn,
                a.peer,
                Role::Sender,
                a.ctl.clone(),
                Some(a.queue.clone()),
            )
            .await
            .map_err(|e| format!("create queue pair: {e}"))?;
        let mut out = BytesMut::new();
        a.me.encode(&mut out);
        local.encode(&mut out);
        stream
            .write_all(&out)
            .await
            .map_err(|e| format!("side channel write: {e}"))?;
        let mut buf = BytesMut::with_capacity(ENDPOINT_BYTES);
        let (_, remote) = read_handshake(&mut stream, &mut buf, false, a.timeout)
            .await
            .map_err(str::to_string)?;
        a.verbs
            .connect(a.conn, remote)
            .await
            .map_err(|e| format!("queue pair handshake: {e}"))?;
        Ok::<_, String>((stream, buf))
    };
    let (mut stream, mut buf) = match setup.await {
        Ok(x) => x,
        Err(_why) => {
            a.queue.close();
            let _ = a.verbs.send(Cmd::Close { conn: a.conn });
            let _ =
                a.tx.send(Internal::OutDown {
                    peer: a.peer,
                    conn: a.conn,
                    was_up: false,
                })
                .await;
            return;
        }
    };
    let _ =
        a.tx.send(Internal::OutUp {
            peer: a.peer,
            conn: a.conn,
        })
        .await;
    // Established: the side channel now carries credits back, and its closing (or the
    // verbs side breaking the connection) is a lost peer.
    loop {
        tokio::select! {
            r = stream.read_buf(&mut buf) => {
                match r {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                match wire::decode_credits(&buf) {
                    Ok((n, used)) => {
                        buf.advance(used);
                        if n > 0 && a.verbs.send(Cmd::Credits { conn: a.conn, n }).is_err() {
                            break;
                        }
                    }
                    Err(_) => {
                        a.ctl.invalid_frame();
                        break;
                    }
                }
                if buf.len() >= CREDIT_BYTES {
                    break; // cannot happen after a full decode; refuse to grow
                }
            }
            _ = a.ctl.notify.notified() => {
                if a.ctl.is_broken() || a.queue.is_closed() {
                    break;
                }
            }
        }
    }
    a.queue.close();
    let _ = a.verbs.send(Cmd::Close { conn: a.conn });
    let _ =
        a.tx.send(Internal::OutDown {
            peer: a.peer,
            conn: a.conn,
            was_up: true,
        })
        .await;
}

struct AcceptArgs {
    listener: TcpListener,
    me: NodeId,
    tx: mpsc::Sender<Internal>,
    verbs: Verbs,
    shared: Arc<Shared>,
}

async fn accept_loop(a: AcceptArgs) {
    let mut tasks = JoinSet::new();
    let mut next_conn: u64 = 1 << 30; // apart from the outbound connection ids (< 2^32 each)
    loop {
        tokio::select! {
            r = a.listener.accept() => {
                let Ok((stream, _)) = r else { continue };
                let _ = stream.set_nodelay(true);
                next_conn += 1;
                tasks.spawn(serve(stream, a.me, next_conn, a.tx.clone(), a.verbs.clone(), a.shared.clone()));
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

async fn serve(
    mut stream: TcpStream,
    me: NodeId,
    conn: u64,
    tx: mpsc::Sender<Internal>,
    verbs: Verbs,
    shared: Arc<Shared>,
) {
    let mut buf = BytesMut::with_capacity(256);
    let limit = Duration::from_millis(HANDSHAKE_TIMEOUT_MS);
    let (hello, remote) = match read_handshake(&mut stream, &mut buf, true, limit).await {
        Ok((Some(h), e)) => (h, e),
        Ok((None, _)) => return,
        Err(_) => {
            shared.invalid.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    if hello.id == me || !buf.is_empty() {
        return;
    }
    let peer = hello.id;
    let ctl = Arc::new(ConnCtl::new(shared));
    let setup = async {
        let local = verbs
            .prepare(conn, peer, Role::Receiver, ctl.clone(), None)
            .await?;
        // Ready to send and every receive buffer posted before the dialer learns our
        // endpoint, so its first send finds a buffer.
        verbs.connect(conn, remote).await?;
        let mut out = BytesMut::new();
        local.encode(&mut out);
        stream.write_all(&out).await?;
        Ok::<_, io::Error>(())
    };
    if setup.await.is_err() {
        let _ = verbs.send(Cmd::Close { conn });
        return;
    }
    if tx
        .send(Internal::InHello {
            peer,
            conn,
            listen: hello.listen,
        })
        .await
        .is_err()
    {
        let _ = verbs.send(Cmd::Close { conn });
        return;
    }
    let mut probe = [0u8; 16];
    loop {
        tokio::select! {
            _ = ctl.notify.notified() => {
                if ctl.is_broken() {
                    break;
                }
                let mut n = ctl.credits.swap(0, Ordering::AcqRel);
                let mut ok = true;
                while n > 0 {
                    let k = n.min(u64::from(wire::SLOTS_MAX));
                    n -= k;
                    if stream.write_all(&(k as u32).to_le_bytes()).await.is_err() {
                        ok = false;
                        break;
                    }
                }
                if !ok {
                    break;
                }
            }
            // The dialer never writes after its handshake: end of stream, an error or any
            // byte closes the connection.
            _ = stream.read(&mut probe) => break,
        }
    }
    let _ = verbs.send(Cmd::Close { conn });
    let _ = tx.send(Internal::InClosed { peer, conn }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RdmaConfig {
        RdmaConfig::new(NodeId(1), BTreeMap::new())
    }

    #[test]
    fn config_limits() {
        assert!(cfg().validate().is_ok());
        for c in [
            RdmaConfig { slots: 0, ..cfg() },
            RdmaConfig {
                slots: wire::SLOTS_MAX + 1,
                ..cfg()
            },
            RdmaConfig {
                slot_bytes: wire::SLOT_BYTES_MIN - 1,
                ..cfg()
            },
            RdmaConfig {
                slot_bytes: wire::SLOT_BYTES_MAX + 1,
                ..cfg()
            },
            RdmaConfig {
                cq_entries: 1,
                ..cfg()
            },
            RdmaConfig {
                queue_bytes_max: 0,
                ..cfg()
            },
        ] {
            assert!(
                matches!(c.validate(), Err(Error::InvalidConfig(_))),
                "{c:?}"
            );
        }
    }

    #[test]
    fn tx_queue_bounds_and_accounting() {
        let q = TxQueue::new();
        assert_eq!(q.push(Bytes::from_static(&[0; 10]), 15), Some(true));
        assert_eq!(q.push(Bytes::from_static(&[0; 10]), 15), None, "over max");
        assert_eq!(q.push(Bytes::from_static(&[0; 5]), 15), Some(false));
        assert_eq!(q.bytes.load(Ordering::Acquire), 15);
        let f = q.take_all();
        assert_eq!(f.len(), 2);
        // Taken frames stay counted until they are in a posted send.
        assert_eq!(q.bytes.load(Ordering::Acquire), 15);
        q.sent(15);
        assert_eq!(q.bytes.load(Ordering::Acquire), 0);
        // A frame bigger than max still fits an empty queue (as on TCP).
        assert_eq!(q.push(Bytes::from_static(&[0; 20]), 15), Some(true));
        q.close();
        assert_eq!(q.push(Bytes::from_static(&[0; 1]), 15), None, "closed");
    }

    /// This machine has no RDMA device: opening must fail with a clear error, not a panic.
    /// On a machine with devices, a device name that does not exist must fail the same way.
    #[tokio::test]
    async fn bind_without_a_device_fails_clearly() {
        let listen: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let have_devices = ibverbs::devices().map(|l| !l.is_empty()).unwrap_or(false);
        let c = RdmaConfig {
            device: Some("squall-no-such-device".into()),
            ..cfg()
        };
        let e = RdmaTransport::bind(c, listen)
            .await
            .expect_err("no such device");
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        eprintln!("bind with device \"squall-no-such-device\": {e}");
        if have_devices {
            assert!(
                e.to_string()
                    .contains("\"squall-no-such-device\" not found"),
                "{e}"
            );
        } else {
            assert!(e.to_string().starts_with("no RDMA device found; "), "{e}");
            // Without a device name too.
            let e = RdmaTransport::bind(cfg(), listen)
                .await
                .expect_err("no device at all");
            assert!(e.to_string().starts_with("no RDMA device found; "), "{e}");
        }
    }

    /// A connected pair of loopback TCP streams (the side channel, without a device).
    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
        (c.expect("connect"), s.expect("accept").0)
    }

    fn endpoint() -> Endpoint {
        Endpoint {
            qpn: 77,
            lid: 3,
            gid: None,
            slot_bytes: 4096,
            slots: 8,
        }
    }

    #[tokio::test]
    async fn side_channel_handshake_reads_hello_and_endpoint_in_pieces() {
        let (mut c, mut s) = pair().await;
        let hello = Hello {
            id: NodeId(9),
            listen: "127.0.0.1:4000".parse().expect("addr"),
        };
        let mut out = BytesMut::new();
        hello.encode(&mut out);
        endpoint().encode(&mut out);
        let writer = tokio::spawn(async move {
            // One byte at a time: the reader must wait for whole messages.
            for b in out.iter() {
                c.write_all(&[*b]).await.expect("write");
            }
            c
        });
        let mut buf = BytesMut::new();
        let got = read_handshake(&mut s, &mut buf, true, Duration::from_secs(5)).await;
        assert_eq!(got, Ok((Some(hello), endpoint())));
        assert!(buf.is_empty());
        drop(writer.await.expect("writer"));
    }

    #[tokio::test]
    async fn side_channel_handshake_refuses_bad_slow_and_closed_peers() {
        let limit = Duration::from_secs(5);
        // A bad endpoint after a good hello.
        let (mut c, mut s) = pair().await;
        let mut out = BytesMut::new();
        Hello {
            id: NodeId(9),
            listen: "127.0.0.1:4000".parse().expect("addr"),
        }
        .encode(&mut out);
        let mut e = BytesMut::new();
        Endpoint {
            qpn: 1,
            ..endpoint()
        }
        .encode(&mut e);
        out.extend_from_slice(&e);
        c.write_all(&out).await.expect("write");
        let mut buf = BytesMut::new();
        assert_eq!(
            read_handshake(&mut s, &mut buf, true, limit).await,
            Err("queue pair number out of range")
        );
        // Not a Squall peer at all.
        let (mut c, mut s) = pair().await;
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = BytesMut::new();
        assert_eq!(
            read_handshake(&mut s, &mut buf, true, limit).await,
            Err("bad handshake magic")
        );
        // Half an endpoint, then the peer closes.
        let (mut c, mut s) = pair().await;
        let mut e = BytesMut::new();
        endpoint().encode(&mut e);
        c.write_all(&e[..10]).await.expect("write");
        drop(c);
        let mut buf = BytesMut::new();
        assert_eq!(
            read_handshake(&mut s, &mut buf, false, limit).await,
            Err("side channel closed during the handshake")
        );
        // A peer that says nothing: the time limit.
        let (_c, mut s) = pair().await;
        let mut buf = BytesMut::new();
        assert_eq!(
            read_handshake(&mut s, &mut buf, false, Duration::from_millis(50)).await,
            Err("side-channel handshake timed out")
        );
    }

    #[tokio::test]
    async fn bind_refuses_a_bad_config_before_touching_the_device() {
        let listen: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let e = RdmaTransport::bind(RdmaConfig { slots: 0, ..cfg() }, listen)
            .await
            .expect_err("bad config");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
