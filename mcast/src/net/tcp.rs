//! [`TcpTransport`]: the TCP implementation of [`Transport`].
//!
//! * **Connections.** A member dials every peer it sends to and only *writes* on that
//!   connection; it only *reads* on the connections its peers dialed to it. So each peer
//!   pair has one connection per direction, each carrying both streams (data batches and
//!   SST rows, as [`codec`] frames in send order). This keeps every connection's fate
//!   simple (no dial races, no duplicate connections to resolve) and lets a member learn a
//!   joiner's address from the joiner's handshake ([`Hello`]) and dial back. The handshake
//!   ends with the full id (incarnation included) of the member the dialer meant; an
//!   acceptor refuses a connection meant for anyone else, in particular for the earlier
//!   incarnation of itself that lived on the same address (such a connection would carry
//!   frames for the dead process and shadow the dialer's real connection to this one).
//! * **Framing.** Every frame is a checksummed [`codec`] frame; every length is checked
//!   against a named limit before anything is allocated (the codec's
//!   [`FRAME_BYTES_MAX`](crate::limits::FRAME_BYTES_MAX),
//!   [`HELLO_ADDR_BYTES_MAX`](super::transport::HELLO_ADDR_BYTES_MAX)). An invalid frame or
//!   handshake closes the connection.
//! * **Failure.** When an *established* connection breaks (end of stream, reset, invalid
//!   frame, write error), the transport reports [`TransportEvent::PeerLost`]: frames queued on
//!   it may be gone, and the core treats that as a failure suspicion, never as silent loss.
//!   The next `send` to that peer redials (at most every `redial_ms`); a member that
//!   reconnects is already suspected and leaves the view through a view change (or, removed,
//!   joins again). Dials that never succeed report nothing: the core's suspicion timeout
//!   sees the silence.
//! * **Batching.** Each outbound connection has a bounded queue (`queue_bytes_max`); its
//!   writer task takes *everything* queued each time it runs and writes it with as few
//!   syscalls as it can (small frames coalesced up to [`WRITE_COALESCE_BYTES`]). Nothing waits
//!   to fill a batch.
//! * **Backpressure.** Readers hand decoded frames to the driver through a bounded channel
//!   ([`TcpConfig::events_max`]); when the driver falls behind, readers stop reading and TCP
//!   flow control pushes back on the senders. The driver never blocks on a writer (a full
//!   queue refuses the frame, see [`Transport::send`]), so no wait cycle can form.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::task::{JoinHandle, JoinSet};

use super::transport::{Hello, HelloError, Transport, TransportEvent, TransportStats};
use crate::codec;
use crate::error::Error;
use crate::messages::Message;
use crate::types::NodeId;

/// Writes of small frames are gathered into one buffer up to this size.
pub const WRITE_COALESCE_BYTES: usize = 256 << 10;
/// Frames at least this big are written straight from their buffer (no copy).
pub const WRITE_DIRECT_BYTES: usize = 32 << 10;
/// Read buffer growth step.
pub const READ_CHUNK_BYTES: usize = 256 << 10;
/// Most frames a reader decodes before handing them to the driver as one event.
pub const FRAMES_PER_EVENT_MAX: usize = 1024;
/// A dialer must send its handshake within this long.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;
/// After the [`Hello`], a dialer sends the full id of the member it dialed (u64
/// little-endian); the acceptor refuses the connection unless it is its own id.
pub const DEST_ID_BYTES: usize = 8;

/// Settings of a [`TcpTransport`].
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// This member's id.
    pub id: NodeId,
    /// Addresses known at start (more are learned from handshakes).
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// Bytes that may wait in one peer's outbound queue; beyond it `send` refuses frames.
    pub queue_bytes_max: usize,
    /// Least time between two dials of the same peer.
    pub redial_ms: u64,
    /// A dial that has not connected after this long fails.
    pub connect_timeout_ms: u64,
    /// Capacity of the reader → driver channel (in events of up to
    /// [`FRAMES_PER_EVENT_MAX`] frames).
    pub events_max: usize,
}

impl TcpConfig {
    /// Defaults for member `id` with the given known peers.
    pub fn new(id: NodeId, peers: BTreeMap<NodeId, SocketAddr>) -> Self {
        TcpConfig {
            id,
            peers,
            queue_bytes_max: 64 << 20,
            redial_ms: 100,
            connect_timeout_ms: 1_000,
            events_max: 256,
        }
    }
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), Error> {
        if self.queue_bytes_max == 0 || self.events_max == 0 || self.connect_timeout_ms == 0 {
            return Err(Error::InvalidConfig(
                "tcp: queue_bytes_max, events_max and connect_timeout_ms must be > 0".into(),
            ));
        }
        Ok(())
    }
}

/// What the connection tasks tell the transport.
enum Internal {
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

/// One outbound connection's queue, shared with its writer task.
struct TxQueue {
    frames: Mutex<VecDeque<Bytes>>,
    bytes: AtomicUsize,
    notify: Notify,
    closed: AtomicBool,
}

impl TxQueue {
    fn new() -> Self {
        TxQueue {
            frames: Mutex::new(VecDeque::new()),
            bytes: AtomicUsize::new(0),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }
    fn push(&self, frame: Bytes, max: usize) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        let queued = self.bytes.load(Ordering::Acquire);
        if queued > 0 && queued + frame.len() > max {
            return false;
        }
        self.bytes.fetch_add(frame.len(), Ordering::AcqRel);
        self.frames
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(frame);
        self.notify.notify_one();
        true
    }
    fn take_all(&self) -> VecDeque<Bytes> {
        std::mem::take(&mut *self.frames.lock().unwrap_or_else(|e| e.into_inner()))
    }
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_one();
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

/// The TCP transport. Create it inside a tokio runtime with [`TcpTransport::bind`].
pub struct TcpTransport {
    cfg: TcpConfig,
    listen: SocketAddr,
    addrs: BTreeMap<NodeId, SocketAddr>,
    out: BTreeMap<NodeId, Outbound>,
    inbound: BTreeMap<NodeId, u64>,
    next_conn: u64,
    tx: mpsc::Sender<Internal>,
    rx: mpsc::Receiver<Internal>,
    pending: VecDeque<TransportEvent>,
    stats: TransportStats,
    invalid: Arc<AtomicU64>,
    accept_task: JoinHandle<()>,
}

impl std::fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTransport")
            .field("id", &self.cfg.id)
            .field("listen", &self.listen)
            .field("peers", &self.addrs)
            .finish()
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every reader.
        self.accept_task.abort();
        for o in self.out.values() {
            o.queue.close();
            o.task.abort();
        }
    }
}

impl TcpTransport {
    /// Binds `listen` (port 0 picks a free port) and starts accepting peers.
    pub async fn bind(cfg: TcpConfig, listen: SocketAddr) -> io::Result<TcpTransport> {
        cfg.validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let listener = TcpListener::bind(listen).await?;
        let listen = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(cfg.events_max);
        let invalid = Arc::new(AtomicU64::new(0));
        let accept_task = tokio::spawn(accept_loop(listener, cfg.id, tx.clone(), invalid.clone()));
        Ok(TcpTransport {
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
            invalid,
            accept_task,
        })
    }

    /// Where this member accepts connections.
    pub fn local_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The addresses known now (configured plus learned from handshakes).
    pub fn known_peers(&self) -> &BTreeMap<NodeId, SocketAddr> {
        &self.addrs
    }

    /// True when a connection to `peer` is established in both directions.
    pub fn is_connected(&self, peer: NodeId) -> bool {
        self.out.get(&peer).is_some_and(|o| o.up && !o.dead) && self.inbound.contains_key(&peer)
    }

    /// The bootstrap barrier: dials `peers` (redialing failures) until a connection in both
    /// directions exists with each, or `timeout` passes. Events that arrive meanwhile are
    /// kept for [`Transport::recv`]. Returns the peers still unconnected.
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

    /// Dials `peer` unless a live connection (or a recent dial) exists. Returns whether a
    /// live (possibly still connecting) outbound connection exists afterwards.
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
                    // A peer that came back on a new address: let the next send dial it now.
                    if let Some(o) = self.out.get_mut(&peer) {
                        if o.dead {
                            o.dialed_at = Instant::now() - Duration::from_secs(3600);
                        }
                    }
                }
            }
            Internal::InFrames { peer, conn, msgs } => {
                if self.inbound.get(&peer) == Some(&conn) {
                    self.stats.frames_received += msgs.len() as u64;
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

    /// Peers with an outbound connection (established or being dialed).
    pub fn dialed_peers(&self) -> BTreeSet<NodeId> {
        self.out
            .iter()
            .filter(|(_, o)| !o.dead)
            .map(|(p, _)| *p)
            .collect()
    }
}

impl Transport for TcpTransport {
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
        if o.queue.push(frame, self.cfg.queue_bytes_max) {
            self.stats.frames_sent += 1;
            self.stats.bytes_sent += len;
            true
        } else {
            self.stats.frames_dropped_full += 1;
            false
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
            // Cancel-safe: nothing is taken from the channel unless this completes.
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
        s.invalid_frames = self.invalid.load(Ordering::Relaxed);
        s
    }
}

// ------------------------------------------------------------------ tasks

struct DialArgs {
    me: Hello,
    peer: NodeId,
    addr: SocketAddr,
    conn: u64,
    queue: Arc<TxQueue>,
    tx: mpsc::Sender<Internal>,
    timeout: Duration,
}

async fn dial(a: DialArgs) {
    let stream = match tokio::time::timeout(a.timeout, TcpStream::connect(a.addr)).await {
        Ok(Ok(s)) => s,
        _ => {
            a.queue.close();
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
    let _ = stream.set_nodelay(true);
    let mut hello = BytesMut::new();
    a.me.encode(&mut hello);
    // Whom this connection is for: the acceptor refuses it unless that is exactly its id.
    hello.extend_from_slice(&a.peer.0.to_le_bytes());
    let (mut rd, mut wr) = stream.into_split();
    let up = wr.write_all(&hello).await.is_ok();
    if up {
        let _ =
            a.tx.send(Internal::OutUp {
                peer: a.peer,
                conn: a.conn,
            })
            .await;
        let _ = write_loop(&mut rd, &mut wr, &a.queue).await;
    }
    a.queue.close();
    let _ =
        a.tx.send(Internal::OutDown {
            peer: a.peer,
            conn: a.conn,
            was_up: up,
        })
        .await;
}

/// Writes everything queued, as it comes; returns when the connection fails, the peer
/// closes it (or writes to it: this direction is send-only) or the queue is closed.
async fn write_loop(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    q: &TxQueue,
) -> io::Result<()> {
    let mut out = BytesMut::with_capacity(WRITE_COALESCE_BYTES);
    let mut probe = [0u8; 64];
    loop {
        let frames = q.take_all();
        if frames.is_empty() {
            if q.closed.load(Ordering::Acquire) {
                return Ok(());
            }
            tokio::select! {
                _ = q.notify.notified() => continue,
                r = rd.read(&mut probe) => {
                    return Err(match r {
                        Ok(0) => io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed"),
                        Ok(_) => io::Error::new(io::ErrorKind::InvalidData, "peer wrote on a send-only connection"),
                        Err(e) => e,
                    });
                }
            }
        }
        let mut total = 0usize;
        for f in frames {
            total += f.len();
            if f.len() >= WRITE_DIRECT_BYTES {
                if !out.is_empty() {
                    wr.write_all(&out).await?;
                    out.clear();
                }
                wr.write_all(&f).await?;
            } else {
                out.extend_from_slice(&f);
                if out.len() >= WRITE_COALESCE_BYTES {
                    wr.write_all(&out).await?;
                    out.clear();
                }
            }
        }
        if !out.is_empty() {
            wr.write_all(&out).await?;
            out.clear();
        }
        q.bytes.fetch_sub(total, Ordering::AcqRel);
    }
}

async fn accept_loop(
    listener: TcpListener,
    me: NodeId,
    tx: mpsc::Sender<Internal>,
    invalid: Arc<AtomicU64>,
) {
    let mut readers = JoinSet::new();
    let mut next_conn: u64 = 1 << 40; // apart from the outbound connection ids
    loop {
        tokio::select! {
            r = listener.accept() => {
                let Ok((stream, _)) = r else { continue };
                let _ = stream.set_nodelay(true);
                next_conn += 1;
                readers.spawn(read_loop(stream, me, next_conn, tx.clone(), invalid.clone()));
            }
            Some(_) = readers.join_next(), if !readers.is_empty() => {}
        }
    }
}

async fn read_loop(
    mut stream: TcpStream,
    me: NodeId,
    conn: u64,
    tx: mpsc::Sender<Internal>,
    invalid: Arc<AtomicU64>,
) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    // The handshake (hello, then the id of the member it is for), within a time limit.
    let hello = tokio::time::timeout(Duration::from_millis(HANDSHAKE_TIMEOUT_MS), async {
        loop {
            match Hello::decode(&buf) {
                Ok((h, used)) if buf.len() >= used + DEST_ID_BYTES => {
                    buf.advance(used);
                    let mut to = [0u8; DEST_ID_BYTES];
                    to.copy_from_slice(&buf[..DEST_ID_BYTES]);
                    buf.advance(DEST_ID_BYTES);
                    return Some((h, NodeId(u64::from_le_bytes(to))));
                }
                Ok(_) => {}
                Err(HelloError::Invalid(_)) => {
                    invalid.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                Err(HelloError::Incomplete) => {}
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    })
    .await;
    let Ok(Some((hello, to))) = hello else { return };
    if hello.id == me {
        return;
    }
    if to != me {
        // Dialed for another member, or for an earlier incarnation of this one that lived
        // on this address: its frames are not ours, and taking the connection as the
        // dialer's would shadow (and silently drop) the dialer's connection to us.
        invalid.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let peer = hello.id;
    if tx
        .send(Internal::InHello {
            peer,
            conn,
            listen: hello.listen,
        })
        .await
        .is_err()
    {
        return;
    }
    loop {
        let mut msgs = Vec::new();
        let mut bad = false;
        while msgs.len() < FRAMES_PER_EVENT_MAX {
            // A whole frame is split off the read buffer and decoded in place: payloads are
            // slices of it (no copy, no allocation per payload).
            match codec::frame_len(&buf) {
                Ok(total) if buf.len() >= total => {
                    let frame = buf.split_to(total).freeze();
                    match codec::decode_shared(&frame) {
                        Ok((m, _)) => msgs.push(m),
                        Err(_) => {
                            bad = true;
                            break;
                        }
                    }
                }
                Ok(_) | Err(Error::Incomplete) => break,
                Err(_) => {
                    bad = true;
                    break;
                }
            }
        }
        let full = msgs.len() >= FRAMES_PER_EVENT_MAX;
        if !msgs.is_empty()
            && tx
                .send(Internal::InFrames { peer, conn, msgs })
                .await
                .is_err()
        {
            return;
        }
        if bad {
            invalid.fetch_add(1, Ordering::Relaxed);
            break;
        }
        if full {
            continue; // more complete frames may be buffered
        }
        if buf.capacity() - buf.len() < READ_CHUNK_BYTES / 4 {
            buf.reserve(READ_CHUNK_BYTES);
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let _ = tx.send(Internal::InClosed { peer, conn }).await;
}
