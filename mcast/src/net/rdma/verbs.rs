//! The verbs thread: the one OS thread that owns the device context, the protection domain,
//! the completion queue, every queue pair and every registered buffer. The `ibverbs` types
//! borrow from each other (a queue pair borrows its protection domain and completion queue),
//! so they all live on this thread's stack and the async side talks to it by commands
//! ([`Cmd`]) and shared queues ([`TxQueue`], [`ConnCtl`]).
//!
//! Its loop: take commands, move queued frames into free send slots (while credits last),
//! poll the completion queue, hand received frames to the transport, re-post receive buffers
//! and count the credits to return. When nothing happened for a while it waits on the command
//! channel for at most [`RdmaConfig::idle_poll_us`] (the crate does not expose completion
//! channels, so an idle thread polls at that period rather than sleeping on an event).
//!
//! This is the only module of the crate with `unsafe`: posting a work request hands a slice
//! of a registered buffer to the device, which reads (send) or writes (receive) it until the
//! completion arrives. The rings ([`SendRing`], [`RecvRing`]) guarantee that a slot is neither
//! written by us nor re-posted while a work request on it is outstanding, and the queue pair
//! is dropped (destroyed, its work requests flushed) before its buffer is deregistered.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io;
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::Duration;

use ibverbs::{ibv_qp_type, ibv_wc, Context, MemoryRegion, PreparedQueuePair, QueuePair};
use tokio::sync::{mpsc, oneshot};

use super::wire::{Chunker, Endpoint, Reassembler, RecvRing, SendRing};
use super::{ConnCtl, Internal, RdmaConfig, TxQueue};
use crate::error::Error;
use crate::types::NodeId;

/// Completions taken from the completion queue per poll.
pub const POLL_BATCH: usize = 64;
/// Busy polls with nothing to do before the thread starts waiting between polls.
pub const SPINS_BEFORE_WAIT: u32 = 256;

/// Which way a queue pair carries data (each member dials the peers it sends to and only
/// sends on that queue pair; it only receives on the queue pairs its peers dialed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Dialer: posts sends.
    Sender,
    /// Acceptor: posts receives.
    Receiver,
}

/// What the async side asks of the verbs thread.
pub enum Cmd {
    /// Create a queue pair and its registered ring for connection `conn`; reply with the
    /// local endpoint.
    Prepare {
        conn: u64,
        peer: NodeId,
        role: Role,
        ctl: Arc<ConnCtl>,
        queue: Option<Arc<TxQueue>>,
        reply: oneshot::Sender<io::Result<Endpoint>>,
    },
    /// Move `conn`'s queue pair to ready-to-send against `remote` (a receiver then posts all
    /// its receive buffers).
    Connect {
        conn: u64,
        remote: Endpoint,
        reply: oneshot::Sender<io::Result<()>>,
    },
    /// The receiver of `conn` re-posted `n` buffers.
    Credits { conn: u64, n: u64 },
    /// Frames were queued: look at the send queues.
    Wake,
    /// Destroy `conn`'s queue pair and buffer.
    Close { conn: u64 },
}

/// Opens the device named `name` (or the only/first one): the context, or a clear error.
pub fn open_device(name: Option<&str>) -> io::Result<Context> {
    let list = ibverbs::devices().map_err(|e| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no RDMA device found; listing devices failed ({e}): this needs an RDMA NIC \
                 (InfiniBand, RoCE, iWARP) or a soft-RoCE link (rdma_rxe), see docs/MCAST.md"
            ),
        )
    })?;
    let names: Vec<String> = list
        .iter()
        .map(|d| {
            d.name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    if names.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "no RDMA device found; this needs an RDMA NIC (InfiniBand, RoCE, iWARP) or a \
             soft-RoCE link (rdma_rxe), see docs/MCAST.md"
                .to_string(),
        ));
    }
    let index = match name {
        None => 0,
        Some(want) => names.iter().position(|n| n == want).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("RDMA device {want:?} not found; devices here: {names:?}"),
            )
        })?,
    };
    let dev = list
        .get(index)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "RDMA device list changed"))?;
    dev.open().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("RDMA device {:?} could not be opened: {e}", names[index]),
        )
    })
}

/// Everything the thread needs besides the context.
pub struct ThreadArgs {
    pub cfg: RdmaConfig,
    pub cmds: std_mpsc::Receiver<Cmd>,
    pub events: mpsc::Sender<Internal>,
    pub opened: oneshot::Sender<io::Result<()>>,
}

/// The thread body: opens the device, reports the outcome, then serves until the command
/// channel closes (the transport was dropped) or the event channel does.
pub fn run(a: ThreadArgs) {
    let ctx = match open_device(a.cfg.device.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            let _ = a.opened.send(Err(e));
            return;
        }
    };
    if let Some(g) = a.cfg.gid_index {
        // The crate keeps only the valid entries and asserts (panics) when the position of
        // an entry differs from its index: refuse such an index here instead.
        let valid = ctx
            .gid_table()
            .get(g as usize)
            .is_some_and(|e| e.gid_index == g);
        if !valid {
            let _ = a.opened.send(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "gid_index {g} is not usable: the port's valid GID entries are {:?}",
                    ctx.gid_table()
                        .iter()
                        .map(|e| e.gid_index)
                        .collect::<Vec<_>>()
                ),
            )));
            return;
        }
    }
    let pd = match ctx.alloc_pd() {
        Ok(p) => p,
        Err(e) => {
            let _ = a.opened.send(Err(e));
            return;
        }
    };
    let cq_entries = i32::try_from(a.cfg.cq_entries).unwrap_or(i32::MAX);
    let cq = match ctx.create_cq(cq_entries, 0) {
        Ok(c) => c,
        Err(e) => {
            let _ = a.opened.send(Err(e));
            return;
        }
    };
    if a.opened.send(Ok(())).is_err() {
        return;
    }
    let mut t = Thread {
        cfg: a.cfg,
        conns: HashMap::new(),
        cq_used: 0,
        events: a.events,
    };
    let mut wcs = [ibv_wc::default(); POLL_BATCH];
    let mut idle = 0u32;
    loop {
        let mut busy = false;
        // Commands.
        loop {
            match a.cmds.try_recv() {
                Ok(c) => {
                    busy = true;
                    t.command(c, &pd, &cq);
                }
                Err(std_mpsc::TryRecvError::Empty) => break,
                Err(std_mpsc::TryRecvError::Disconnected) => return,
            }
        }
        // Sends.
        busy |= t.pump_all();
        // Completions.
        match cq.poll(&mut wcs) {
            Ok(done) => {
                if !done.is_empty() {
                    busy = true;
                }
                for wc in done.iter() {
                    t.completion(wc);
                }
            }
            Err(e) => {
                // The completion queue itself failed: every queue pair on it is unusable.
                let ids: Vec<u64> = t.conns.keys().copied().collect();
                for id in ids {
                    t.broken(id, &format!("completion queue poll failed: {e}"));
                }
            }
        }
        if !t.flush_events() {
            return;
        }
        if busy {
            idle = 0;
            continue;
        }
        idle = idle.saturating_add(1);
        if idle < SPINS_BEFORE_WAIT {
            std::thread::yield_now();
            continue;
        }
        match a
            .cmds
            .recv_timeout(Duration::from_micros(t.cfg.idle_poll_us.max(1)))
        {
            Ok(c) => {
                idle = 0;
                t.command(c, &pd, &cq);
            }
            Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

struct Conn<'a> {
    // Field order is drop order: the queue pair goes first (its outstanding work requests
    // are flushed), then the registered buffer.
    prepared: Option<PreparedQueuePair<'a>>,
    qp: Option<QueuePair<'a>>,
    mr: MemoryRegion<u8>,
    peer: NodeId,
    role: Role,
    ctl: Arc<ConnCtl>,
    slot_bytes: usize,
    slots: u32,
    send: Option<SendSide>,
    recv: Option<RecvSide>,
    dead: bool,
}

struct SendSide {
    queue: Arc<TxQueue>,
    ring: SendRing,
    chunker: Chunker,
    /// Bytes per send: the smaller of our slot and the receiver's.
    chunk_bytes: usize,
}

struct RecvSide {
    ring: RecvRing,
    reasm: Reassembler,
}

struct Thread<'a> {
    cfg: RdmaConfig,
    conns: HashMap<u64, Conn<'a>>,
    /// Completion-queue entries the live connections may need at once.
    cq_used: usize,
    events: mpsc::Sender<Internal>,
}

fn wr_id(conn: u64, slot: u32) -> u64 {
    (conn << 32) | u64::from(slot)
}

impl<'a> Thread<'a> {
    fn command(
        &mut self,
        c: Cmd,
        pd: &'a ibverbs::ProtectionDomain<'a>,
        cq: &'a ibverbs::CompletionQueue<'a>,
    ) {
        match c {
            Cmd::Prepare {
                conn,
                peer,
                role,
                ctl,
                queue,
                reply,
            } => {
                let _ = reply.send(self.prepare(conn, peer, role, ctl, queue, pd, cq));
            }
            Cmd::Connect {
                conn,
                remote,
                reply,
            } => {
                let r = self.connect(conn, remote);
                if let Err(e) = &r {
                    self.broken(conn, &format!("connect: {e}"));
                }
                let _ = reply.send(r);
            }
            Cmd::Credits { conn, n } => {
                let bad = match self.conns.get_mut(&conn).and_then(|c| c.send.as_mut()) {
                    Some(s) => s.ring.add_credits(n).err(),
                    None => None,
                };
                if let Some(e) = bad {
                    self.broken(conn, &e.to_string());
                }
            }
            Cmd::Wake => {}
            Cmd::Close { conn } => self.close(conn),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn prepare(
        &mut self,
        conn: u64,
        peer: NodeId,
        role: Role,
        ctl: Arc<ConnCtl>,
        queue: Option<Arc<TxQueue>>,
        pd: &'a ibverbs::ProtectionDomain<'a>,
        cq: &'a ibverbs::CompletionQueue<'a>,
    ) -> io::Result<Endpoint> {
        let slots = self.cfg.slots;
        let slot_bytes = self.cfg.slot_bytes;
        if self.cq_used + slots as usize > self.cfg.cq_entries {
            return Err(io::Error::other(format!(
                "completion queue full: {} entries in use of cq_entries = {} (raise it, or \
                 lower slots)",
                self.cq_used, self.cfg.cq_entries
            )));
        }
        let mut b = pd.create_qp(cq, cq, ibv_qp_type::IBV_QPT_RC);
        match role {
            Role::Sender => b.set_max_send_wr(slots).set_max_recv_wr(1),
            Role::Receiver => b.set_max_send_wr(1).set_max_recv_wr(slots),
        };
        if let Some(g) = self.cfg.gid_index {
            // Checked against the GID table when the device was opened.
            b.set_gid_index(g);
        }
        let prepared = b.build()?;
        let e = prepared.endpoint();
        let mr = pd.allocate::<u8>(slots as usize * slot_bytes)?;
        let gid = e.gid.map(|g| {
            let mut raw = [0u8; 16];
            raw[..8].copy_from_slice(&g.subnet_prefix().to_be_bytes());
            raw[8..].copy_from_slice(&g.interface_id().to_be_bytes());
            raw
        });
        let send = queue.map(|queue| SendSide {
            queue,
            ring: SendRing::new(slots, 0),
            chunker: Chunker::default(),
            chunk_bytes: slot_bytes,
        });
        self.cq_used += slots as usize;
        if let Some(old) = self.conns.insert(
            conn,
            Conn {
                prepared: Some(prepared),
                qp: None,
                mr,
                peer,
                role,
                ctl,
                slot_bytes,
                slots,
                send,
                recv: None,
                dead: false,
            },
        ) {
            self.cq_used -= old.slots as usize;
        }
        Ok(Endpoint {
            qpn: e.num,
            lid: e.lid,
            gid,
            slot_bytes: slot_bytes as u32,
            slots,
        })
    }

    fn connect(&mut self, conn: u64, remote: Endpoint) -> io::Result<()> {
        let c = self
            .conns
            .get_mut(&conn)
            .ok_or_else(|| io::Error::other("connect: unknown connection"))?;
        let prepared = c
            .prepared
            .take()
            .ok_or_else(|| io::Error::other("connect: queue pair already connected"))?;
        let gid = remote
            .gid
            .map(|raw| ibverbs::Gid::from(ibverbs_sys::ibv_gid { raw }));
        let mut qp = prepared.handshake(ibverbs::QueuePairEndpoint {
            num: remote.qpn,
            lid: remote.lid,
            gid,
        })?;
        match c.role {
            Role::Sender => {
                if let Some(s) = c.send.as_mut() {
                    s.ring = SendRing::new(c.slots, remote.slots);
                    s.chunk_bytes = c.slot_bytes.min(remote.slot_bytes as usize);
                }
            }
            Role::Receiver => {
                let mut ring = RecvRing::new(c.slots);
                for slot in 0..c.slots {
                    let start = slot as usize * c.slot_bytes;
                    // SAFETY: slot `slot` of `mr` is not posted (fresh ring) and stays
                    // untouched by us until its completion; `mr` outlives `qp` (drop order).
                    unsafe {
                        qp.post_receive(&mut c.mr, start..start + c.slot_bytes, wr_id(conn, slot))
                    }?;
                    ring.posted(slot)
                        .map_err(|e| io::Error::other(e.to_string()))?;
                }
                c.recv = Some(RecvSide {
                    ring,
                    reasm: Reassembler::default(),
                });
            }
        }
        c.qp = Some(qp);
        Ok(())
    }

    fn close(&mut self, conn: u64) {
        if let Some(c) = self.conns.remove(&conn) {
            self.cq_used -= c.slots as usize;
            if let Some(s) = &c.send {
                s.queue.close();
            }
        }
    }

    /// Marks `conn` broken (the side-channel task then reports the peer lost and closes).
    fn broken(&mut self, conn: u64, why: &str) {
        if let Some(c) = self.conns.get_mut(&conn) {
            if !c.dead {
                c.dead = true;
                c.ctl.set_broken(why);
                if let Some(s) = &c.send {
                    s.queue.close();
                }
            }
        }
    }

    /// Moves queued frames into free send slots; true if anything was posted.
    fn pump_all(&mut self) -> bool {
        let mut any = false;
        let mut failed = Vec::new();
        let mut closed = Vec::new();
        for (&id, c) in self.conns.iter_mut() {
            if c.dead {
                continue;
            }
            let (Some(qp), Some(s)) = (c.qp.as_mut(), c.send.as_mut()) else {
                continue;
            };
            if s.queue.is_closed() {
                closed.push(id);
                continue;
            }
            while s.ring.can_post() {
                if s.chunker.is_empty() {
                    s.chunker.extend(s.queue.take_all());
                    if s.chunker.is_empty() {
                        break;
                    }
                }
                let Some(slot) = s.ring.post() else { break };
                let start = slot as usize * c.slot_bytes;
                let n = s.chunker.fill(&mut c.mr[start..start + s.chunk_bytes]);
                s.queue.sent(n);
                // SAFETY: the ring gave out `slot` only because no send on it is
                // outstanding; it stays untouched until its completion frees it; `mr`
                // outlives `qp` (drop order).
                if let Err(e) =
                    unsafe { qp.post_send(&mut c.mr, start..start + n, wr_id(id, slot)) }
                {
                    failed.push((id, format!("post send: {e}")));
                    break;
                }
                any = true;
            }
        }
        for (id, why) in failed {
            self.broken(id, &why);
        }
        for id in closed {
            // The transport replaced or dropped this connection.
            self.close(id);
        }
        any
    }

    fn completion(&mut self, wc: &ibv_wc) {
        let conn = wc.wr_id() >> 32;
        let slot = (wc.wr_id() & 0xffff_ffff) as u32;
        let Some(c) = self.conns.get_mut(&conn) else {
            return; // a flushed completion of a connection already closed
        };
        if c.dead {
            return;
        }
        if let Some((status, vendor)) = wc.error() {
            let why = format!("work completion failed: status {status}, vendor error {vendor}");
            self.broken(conn, &why);
            return;
        }
        match c.role {
            Role::Sender => {
                let r = match c.send.as_mut() {
                    Some(s) => s.ring.complete(slot),
                    None => Ok(()),
                };
                if let Err(e) = r {
                    self.broken(conn, &e.to_string());
                }
            }
            Role::Receiver => {
                let r = self.received(conn, slot, wc.len());
                if let Err(why) = r {
                    self.broken(conn, &why);
                }
            }
        }
    }

    fn received(&mut self, conn: u64, slot: u32, len: usize) -> Result<(), String> {
        let Some(c) = self.conns.get_mut(&conn) else {
            return Ok(());
        };
        let (Some(r), Some(qp)) = (c.recv.as_mut(), c.qp.as_mut()) else {
            return Err("receive completion before connect".into());
        };
        r.ring
            .complete(slot, len, c.slot_bytes)
            .map_err(|e| e.to_string())?;
        let start = slot as usize * c.slot_bytes;
        let mut msgs = Vec::new();
        let bad = r.reasm.push(&c.mr[start..start + len], &mut msgs).err();
        if !msgs.is_empty() {
            c.ctl.frames_in(msgs.len());
            // Backpressure: when the driver falls behind, this blocks, no buffer is
            // re-posted, the sender runs out of credits and its queue refuses frames.
            if self
                .events
                .blocking_send(Internal::InFrames {
                    peer: c.peer,
                    conn,
                    msgs,
                })
                .is_err()
            {
                return Ok(()); // transport gone; the loop ends on the next flush
            }
        }
        if let Some(e) = bad {
            c.ctl.invalid_frame();
            return Err(match e {
                Error::InvalidFrame(w) => format!("invalid frame: {w}"),
                other => other.to_string(),
            });
        }
        // SAFETY: the completion just handed `slot` back to us and its bytes were copied
        // out above; the device owns it again until the next completion; `mr` outlives
        // `qp` (drop order).
        unsafe { qp.post_receive(&mut c.mr, start..start + c.slot_bytes, wr_id(conn, slot)) }
            .map_err(|e| format!("re-post receive: {e}"))?;
        r.ring.posted(slot).map_err(|e| e.to_string())?;
        c.ctl.return_credit();
        Ok(())
    }

    /// False when the transport is gone.
    fn flush_events(&self) -> bool {
        !self.events.is_closed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wr_id_keeps_conn_and_slot_apart() {
        let id = wr_id(0xdead_beef, 4095);
        assert_eq!(id >> 32, 0xdead_beef);
        assert_eq!(id & 0xffff_ffff, 4095);
    }
}
