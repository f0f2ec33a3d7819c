//! [`Driver`]: runs one [`Node`] over a [`Transport`] with a real clock.
//!
//! The driver is the only place that reads the clock ([`WallClock`]: wall-clock
//! microseconds, never going backwards, so HLC stamps of different processes on one host are
//! comparable). It feeds the node every transport event, ticks it at
//! [`Node::next_timeout`], and after every batch of inputs drains the node's actions:
//!
//! * `Send` — encoded with [`codec`] and queued on the transport, **after** the batch:
//!   consecutive data batches of this node's own stream to one peer are merged into one frame
//!   (up to [`DATA_MERGE_BYTES_MAX`]) and encoded once for all peers; of the SST rows queued
//!   for a peer only the newest is sent (rows are monotone snapshots of the owner's state and
//!   receivers keep the newest; a superseded row carries nothing the newest does not). This
//!   is the opportunistic batching of the design: whatever piled up while the node ran goes
//!   out together, nothing waits to fill a batch.
//! * `Deliver`, `InstallView`, `InstallSnapshot`, `CaptureSnapshot` — handed to the
//!   [`Application`] in order.
//! * `Persist` / `PersistControl` — with [`Driver::new`], served by [`MemPersist`]: **in
//!   memory only** (records are kept, then confirmed at once). A process that dies loses
//!   them, so a restarted member must rejoin as a new member with state transfer. With
//!   [`Driver::new_durable`] (the durable mode), by a [`FilePersist`]: deliveries, control
//!   records, founding installs and installed snapshots are queued as they come out, handed
//!   to its writer thread after every drain, and confirmed to the node (`persisted`,
//!   `control_persisted`) only when the writer reports the group fsynced: the caller's
//!   loop waits on [`Driver::persist_done`] beside the transport and feeds the report to
//!   [`Driver::on_persist_done`] ([`Driver::step`] does both).
//!
//! State-transfer snapshots carry, ahead of the application's bytes, the timestamp of the
//! last delivery they cover (`phys_us u64 | logical u32`, little-endian), so that a member
//! that installed one knows its log's end timestamp ([`crate::Recovered::log`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};

use super::persist::{FilePersist, PersistDone};
use super::transport::{Transport, TransportEvent};
use crate::action::{Action, ControlRecord, Delivery, ViewInfo};
use crate::codec;
use crate::error::Error;
use crate::hlc::Hlc;
use crate::messages::{DataBatch, DataMsg, Message, Row};
use crate::node::{Node, Status};
use crate::types::{Epoch, MsgId, NodeId, ShardId, Version};

/// Merged data frames grow to at most this many payload bytes.
pub const DATA_MERGE_BYTES_MAX: usize = 1 << 20;
/// Most transport events taken in one batch before the node's actions are drained.
pub const EVENTS_PER_BATCH_MAX: usize = 4096;
/// Control records [`MemPersist`] keeps (older ones are dropped; they are only for reports).
pub const CONTROL_RECORDS_KEPT: usize = 1024;
/// Bytes the driver puts ahead of a snapshot: the timestamp of its last delivery.
pub const SNAPSHOT_TS_BYTES: usize = 12;

/// What the application does with the node's outputs.
pub trait Application {
    /// A delivered message, in the shard's total order.
    fn deliver(&mut self, now_us: u64, d: &Delivery);
    /// The application state right now (after every earlier delivery) for state transfer.
    fn capture_snapshot(&mut self, shard: ShardId, version: Version) -> Bytes;
    /// Replace the state with a snapshot from the shard's source.
    fn install_snapshot(&mut self, shard: ShardId, version: Version, data: &Bytes);
    /// A view was installed.
    fn view_installed(&mut self, _now_us: u64, _view: &ViewInfo) {}
    /// The node left (`left == true`) or was removed from the group.
    fn removed(&mut self, _left: bool) {}
    /// Durable mode: every delivery of `shard` up to `upto` is on disk (fsynced).
    fn persisted(&mut self, _shard: ShardId, _upto: Version) {}
}

/// Wall-clock microseconds that never go backwards.
#[derive(Debug, Default)]
pub struct WallClock {
    last_us: u64,
}

impl WallClock {
    /// Now, in microseconds since the Unix epoch (monotone per process).
    pub fn now_us(&mut self) -> u64 {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        self.last_us = self.last_us.max(t);
        self.last_us
    }
}

/// In-memory stand-in for the persistence the core asks for: keeps the records and the
/// flushed versions, and confirms every request at once. Nothing survives the process.
#[derive(Debug, Default)]
pub struct MemPersist {
    /// The newest control records (accepts and decisions), oldest first.
    pub records: VecDeque<ControlRecord>,
    /// Per shard, the highest version "flushed".
    pub flushed: BTreeMap<ShardId, Version>,
}

impl MemPersist {
    fn record(&mut self, r: ControlRecord) {
        if self.records.len() == CONTROL_RECORDS_KEPT {
            self.records.pop_front();
        }
        self.records.push_back(r);
    }
}

/// One input for [`Driver::recv`].
#[derive(Debug)]
pub enum DriverInput {
    /// From the transport.
    Event(TransportEvent),
    /// From the persistence writer.
    Persisted(PersistDone),
}

/// Counters of the driver.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Transport events fed to the node.
    pub events: u64,
    /// Batches of events (each followed by one drain).
    pub batches: u64,
    /// Data frames sent (after merging).
    pub data_frames: u64,
    /// Data batches the node emitted (before merging).
    pub data_batches_in: u64,
    /// Rows sent (after coalescing).
    pub rows_sent: u64,
    /// Rows the node emitted (before coalescing).
    pub rows_in: u64,
    /// Frames the transport refused.
    pub refused: u64,
    /// Deliveries handed to the application.
    pub delivered: u64,
    /// Durable mode: group commits reported done by the persistence writer.
    pub persist_groups: u64,
    /// Snapshots from a peer too short to carry the driver's timestamp prefix.
    pub bad_snapshots: u64,
    /// `PeerLost` events fed to the node.
    pub peers_lost: u64,
    /// Batches of messages fed to the node with one protocol step each ([`Driver::pump`]).
    pub input_batches: u64,
    /// Durable mode: checkpoints taken to compact the log.
    pub checkpoints: u64,
}

/// Data for one peer, gathered during a drain: consecutive batches of one stream, kept as
/// the node's own `Arc`s (merged into one frame only when there is more than one).
#[derive(Debug)]
struct DataRun {
    epoch: Epoch,
    shard: ShardId,
    rank: u32,
    first_index: u64,
    len: usize,
    bytes: usize,
    parts: Vec<Arc<DataBatch>>,
}

/// Identifies a slice of one sender's stream: (epoch, shard, rank, first index, count).
type RunKey = (Epoch, ShardId, u32, u64, usize);

impl DataRun {
    fn key(&self) -> RunKey {
        (
            self.epoch,
            self.shard,
            self.rank,
            self.first_index,
            self.len,
        )
    }
}

/// Runs a [`Node`] over a transport. See the module docs.
pub struct Driver<T: Transport, A: Application> {
    /// The protocol core.
    pub node: Node,
    /// The transport.
    pub transport: T,
    /// The application.
    pub app: A,
    /// The in-memory persistence (used when there is no file persistence).
    pub persist: MemPersist,
    file: Option<FilePersist>,
    persist_failed: Option<String>,
    /// Timestamp of the last delivery (or installed snapshot) of this node's shard.
    last_ts: Hlc,
    clock: WallClock,
    data_out: BTreeMap<NodeId, Vec<DataRun>>,
    rows_out: BTreeMap<NodeId, Arc<Row>>,
    other_out: Vec<(NodeId, Message)>,
    loopback: VecDeque<Message>,
    /// Messages taken by [`Driver::pump`] (kept for its capacity).
    inbox: Vec<(NodeId, Message)>,
    scratch: BytesMut,
    stats: DriverStats,
    removed: bool,
}

impl<T: Transport, A: Application> std::fmt::Debug for Driver<T, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("node", &self.node.id())
            .field("epoch", &self.node.epoch())
            .field("stats", &self.stats)
            .finish()
    }
}

impl<T: Transport, A: Application> Driver<T, A> {
    /// Wraps a node created by the caller (with a time from [`WallClock`]) and carries out
    /// the actions it already emitted.
    pub fn new(node: Node, transport: T, app: A) -> Self {
        Self::build(node, transport, app, None)
    }

    /// Like [`Driver::new`] for the durable mode: persistence goes to `file` (opened by the
    /// caller, whose recovery the node and the application were built from).
    pub fn new_durable(node: Node, transport: T, app: A, file: FilePersist) -> Self {
        Self::build(node, transport, app, Some(file))
    }

    fn build(node: Node, transport: T, app: A, file: Option<FilePersist>) -> Self {
        let last_ts = file.as_ref().map(|f| f.log_end().1).unwrap_or_default();
        let mut d = Driver {
            node,
            transport,
            app,
            persist: MemPersist::default(),
            file,
            persist_failed: None,
            last_ts,
            clock: WallClock::default(),
            data_out: BTreeMap::new(),
            rows_out: BTreeMap::new(),
            other_out: Vec::new(),
            loopback: VecDeque::new(),
            inbox: Vec::new(),
            scratch: BytesMut::new(),
            stats: DriverStats::default(),
            removed: false,
        };
        d.flush();
        d
    }

    /// The clock the node is fed with.
    pub fn now_us(&mut self) -> u64 {
        self.clock.now_us()
    }

    /// Counters.
    pub fn stats(&self) -> &DriverStats {
        &self.stats
    }

    /// True once the node was removed from the group or left.
    pub fn is_removed(&self) -> bool {
        self.removed
    }

    /// Durable mode: why persistence failed (the member must stop: nothing more of it
    /// will be confirmed).
    pub fn persist_failed(&self) -> Option<&str> {
        self.persist_failed.as_deref()
    }

    /// The file persistence, in durable mode.
    pub fn file_persist(&mut self) -> Option<&mut FilePersist> {
        self.file.as_mut()
    }

    /// Waits for the persistence writer's next report (never returns without file
    /// persistence). Feed it to [`Driver::on_persist_done`].
    pub async fn persist_done(&mut self) -> PersistDone {
        file_done(self.file.as_mut()).await
    }

    /// Waits for the next input of the driver's own: a transport event or a persistence
    /// report (`None` once the transport has shut down). For loops that wait on other
    /// things too; feed the result to [`Driver::handle`] (then [`Driver::pump`]) or
    /// [`Driver::on_persist_done`].
    pub async fn recv(&mut self) -> Option<DriverInput> {
        tokio::select! {
            ev = self.transport.recv() => ev.map(DriverInput::Event),
            done = file_done(self.file.as_mut()) => Some(DriverInput::Persisted(done)),
        }
    }

    /// Confirms to the node what a group commit made durable (and takes any further reports
    /// that are ready). Call [`Driver::flush`] after it.
    pub fn on_persist_done(&mut self, done: PersistDone) {
        let now = self.clock.now_us();
        let mut next = Some(done);
        while let Some(d) = next {
            self.stats.persist_groups += 1;
            if let Some(f) = d.failed {
                if self.persist_failed.is_none() {
                    self.persist_failed = Some(f);
                }
                return;
            }
            for t in d.control_tokens {
                self.node.control_persisted(now, t);
            }
            for (shard, upto) in d.persisted {
                self.app.persisted(shard, upto);
                self.node.persisted(now, shard, upto);
            }
            self.drain_actions_at(now);
            next = self.file.as_mut().and_then(|f| f.try_done());
        }
    }

    /// Feeds one transport event to the node (call [`Driver::flush`] after a batch).
    pub fn handle(&mut self, ev: TransportEvent) {
        let now = self.clock.now_us();
        self.handle_at(now, ev);
    }

    fn handle_at(&mut self, now: u64, ev: TransportEvent) {
        self.stats.events += 1;
        match ev {
            TransportEvent::Message { from, msg } => self.node.handle_message(now, from, msg),
            TransportEvent::PeerLost { peer } => {
                self.stats.peers_lost += 1;
                self.node.peer_lost(now, peer);
            }
        }
        // Deliveries must reach the application in order with everything else; draining
        // the node's queue here keeps it short without sending anything yet.
        self.drain_actions_at(now);
    }

    /// Offers an application message (call [`Driver::flush`] after a batch of sends).
    pub fn send(&mut self, payload: Bytes) -> Result<MsgId, Error> {
        let now = self.clock.now_us();
        let r = self.node.send(now, payload);
        self.drain_actions_at(now);
        r
    }

    /// Offers several application messages at once ([`Node::send_batch`]): pulled from
    /// `payloads` only while the window has room, then one protocol step for all of them.
    pub fn send_batch<I: Iterator<Item = Bytes>>(
        &mut self,
        payloads: &mut std::iter::Peekable<I>,
    ) -> Result<Vec<MsgId>, Error> {
        let now = self.clock.now_us();
        let r = self.node.send_batch(now, payloads);
        self.drain_actions_at(now);
        r
    }

    /// Ticks the node if its timeout passed.
    pub fn tick_if_due(&mut self) {
        let now = self.clock.now_us();
        if now >= self.node.next_timeout() {
            self.node.tick(now);
            self.drain_actions_at(now);
        }
    }

    /// How long until the node wants its next tick.
    pub fn until_tick(&mut self) -> Duration {
        let now = self.clock.now_us();
        Duration::from_micros(self.node.next_timeout().saturating_sub(now))
    }

    /// Takes every event the transport has ready (up to [`EVENTS_PER_BATCH_MAX`]) and feeds
    /// them to the node: the messages together ([`Node::handle_messages`]: one protocol
    /// step for all of them, not one per frame), a lost peer at once. Returns how many
    /// were taken.
    pub fn pump(&mut self) -> usize {
        self.pump_from(None)
    }

    /// Like [`Driver::pump`], starting with `first` (an event the caller already took, e.g.
    /// from [`Driver::recv`]), so that it joins the same batch.
    pub fn handle_and_pump(&mut self, first: TransportEvent) -> usize {
        self.pump_from(Some(first))
    }

    fn pump_from(&mut self, mut first: Option<TransportEvent>) -> usize {
        // One clock read for the batch: these events were all ready at the same moment.
        let now = self.clock.now_us();
        let mut n = 0;
        let mut msgs = std::mem::take(&mut self.inbox);
        while n < EVENTS_PER_BATCH_MAX {
            let Some(ev) = first.take().or_else(|| self.transport.try_recv()) else {
                break;
            };
            n += 1;
            self.stats.events += 1;
            match ev {
                TransportEvent::Message { from, msg } => msgs.push((from, msg)),
                lost @ TransportEvent::PeerLost { .. } => {
                    // In order: what came before the loss first.
                    self.feed(now, &mut msgs);
                    self.stats.events -= 1; // counted again by handle_at
                    self.handle_at(now, lost);
                }
            }
        }
        self.feed(now, &mut msgs);
        self.inbox = msgs;
        n
    }

    /// Hands `msgs` to the node as one batch (leaves `msgs` empty, capacity kept).
    fn feed(&mut self, now: u64, msgs: &mut Vec<(NodeId, Message)>) {
        if msgs.is_empty() {
            return;
        }
        self.stats.input_batches += 1;
        self.node.handle_messages(now, msgs.drain(..));
        self.drain_actions_at(now);
    }

    /// Waits for the next transport event or tick, then takes everything that is ready,
    /// ticks if due and flushes. Returns `false` when the transport has shut down.
    pub async fn step(&mut self) -> bool {
        let wait = self.until_tick();
        tokio::select! {
            ev = self.transport.recv() => {
                let Some(ev) = ev else { return false };
                self.handle_and_pump(ev);
            }
            done = file_done(self.file.as_mut()) => self.on_persist_done(done),
            _ = tokio::time::sleep(wait) => {}
        }
        self.tick_if_due();
        self.flush();
        true
    }

    /// Drains the node's actions and sends everything gathered (merged data, newest rows),
    /// and hands the queued writes to the persistence writer.
    pub fn flush(&mut self) {
        loop {
            self.drain_actions();
            self.send_gathered();
            if self.loopback.is_empty() {
                break;
            }
            let now = self.clock.now_us();
            while let Some(m) = self.loopback.pop_front() {
                let me = self.node.id();
                self.node.handle_message(now, me, m);
            }
        }
        if let Some(f) = self.file.as_mut() {
            // Bounded log: once enough entries piled up after the log's base, the
            // application's state (which is exactly the log's, up to its end) becomes the
            // new base and the writer compacts the file (`FilePersist::checkpoint`).
            if let (true, Some(shard)) = (f.wants_checkpoint(), f.holds()) {
                let (version, ts) = f.log_end();
                let data = self.app.capture_snapshot(shard, version);
                if let Err(e) = f.checkpoint(shard, version, ts, &data) {
                    self.persist_failed.get_or_insert(e.to_string());
                }
                self.stats.checkpoints += 1;
            }
            f.submit();
        }
        self.stats.batches += 1;
    }

    fn drain_actions(&mut self) {
        let now = self.clock.now_us();
        self.drain_actions_at(now);
    }

    /// Carries out the node's actions; `now` (read once by the caller) is the delivery time
    /// and the time of the confirmations fed back.
    fn drain_actions_at(&mut self, now: u64) {
        let deliver_now = now;
        while let Some(a) = self.node.poll_action() {
            match a {
                Action::Send { to, msg } => self.gather(to, msg),
                Action::Deliver(d) => {
                    self.stats.delivered += 1;
                    self.last_ts = d.ts;
                    if let Some(f) = self.file.as_mut() {
                        f.append_entry(&d);
                    }
                    self.app.deliver(deliver_now, &d);
                }
                Action::Persist { shard, upto } => match self.file.as_mut() {
                    // Confirmed when the writer reports the group durable.
                    Some(f) => f.request_persisted(shard, upto),
                    None => {
                        self.persist.flushed.insert(shard, upto);
                        self.app.persisted(shard, upto);
                        self.node.persisted(now, shard, upto);
                    }
                },
                Action::PersistControl { token, record } => match self.file.as_mut() {
                    Some(f) => f.append_control(token, &record),
                    None => {
                        self.persist.record(record);
                        self.node.control_persisted(now, token);
                    }
                },
                Action::InstallView(v) => {
                    if let (Some(f), Some(s), false) =
                        (self.file.as_mut(), v.my_shard, v.needs_state)
                    {
                        // A founding member of its shard holds the (empty) state from here
                        // on; a survivor's log simply goes on.
                        if f.holds() != Some(s) {
                            f.found(s);
                        }
                    }
                    self.app.view_installed(now, &v);
                }
                Action::CaptureSnapshot {
                    epoch,
                    shard,
                    version,
                } => {
                    let data = self.app.capture_snapshot(shard, version);
                    let mut b = BytesMut::with_capacity(SNAPSHOT_TS_BYTES + data.len());
                    b.extend_from_slice(&self.last_ts.phys_us.to_le_bytes());
                    b.extend_from_slice(&self.last_ts.logical.to_le_bytes());
                    b.extend_from_slice(&data);
                    self.node.snapshot_ready(now, epoch, shard, b.freeze());
                }
                Action::InstallSnapshot {
                    shard,
                    version,
                    data,
                } => {
                    let (ts, data) = match split_snapshot(&data) {
                        Some(x) => x,
                        None => {
                            // Not from a driver like this one: no timestamp to keep.
                            self.stats.bad_snapshots += 1;
                            (Hlc::default(), data)
                        }
                    };
                    self.last_ts = ts;
                    self.app.install_snapshot(shard, version, &data);
                    match self.file.as_mut() {
                        Some(f) => f.install_snapshot(shard, version, ts, &data),
                        None => {
                            self.persist.flushed.insert(shard, version);
                            self.app.persisted(shard, version);
                            self.node.persisted(now, shard, version);
                        }
                    }
                }
                Action::PersistenceFrontier { .. } | Action::StabilityFrontier { .. } => {}
                Action::Evicted => {
                    self.removed = true;
                    self.app.removed(false);
                }
                Action::Left => {
                    self.removed = true;
                    self.app.removed(true);
                }
            }
        }
        if matches!(self.node.status(), Status::Evicted | Status::Left) {
            self.removed = true;
        }
    }

    fn gather(&mut self, to: NodeId, msg: Message) {
        if to == self.node.id() {
            self.loopback.push_back(msg);
            return;
        }
        match msg {
            Message::Row(r) => {
                self.stats.rows_in += 1;
                self.rows_out.insert(to, r);
            }
            Message::Data(b) => {
                self.stats.data_batches_in += 1;
                let runs = self.data_out.entry(to).or_default();
                let bytes: usize = b.msgs.iter().map(msg_bytes).sum();
                if let Some(last) = runs.last_mut() {
                    if last.epoch == b.epoch
                        && last.shard == b.shard
                        && last.rank == b.sender_rank
                        && last.first_index + last.len as u64 == b.first_index
                        && last.bytes + bytes <= DATA_MERGE_BYTES_MAX
                        && last.len + b.msgs.len() <= crate::limits::BATCH_MESSAGES_MAX
                    {
                        last.len += b.msgs.len();
                        last.bytes += bytes;
                        last.parts.push(b);
                        return;
                    }
                }
                runs.push(DataRun {
                    epoch: b.epoch,
                    shard: b.shard,
                    rank: b.sender_rank,
                    first_index: b.first_index,
                    len: b.msgs.len(),
                    bytes,
                    parts: vec![b],
                });
            }
            other => self.other_out.push((to, other)),
        }
    }

    fn send_gathered(&mut self) {
        // Data first (a run with the same key is the same slice of this node's own stream,
        // so its frame is encoded once for every peer), then state transfer and joins, then
        // the newest row per peer.
        let mut cache: Vec<(RunKey, Bytes)> = Vec::new();
        let data = std::mem::take(&mut self.data_out);
        for (to, runs) in data {
            for run in runs {
                let key = run.key();
                let frame = match cache.iter().find(|(k, _)| *k == key) {
                    Some((_, f)) => f.clone(),
                    None => {
                        // One frame for the whole run, encoded from the node's batches as
                        // they are (no merged copy of the messages).
                        self.scratch.reserve(run.bytes + 64);
                        codec::encode_data_run(&run.parts, &mut self.scratch);
                        let f = self.scratch.split().freeze();
                        cache.push((key, f.clone()));
                        f
                    }
                };
                self.stats.data_frames += 1;
                if !self.transport.send(to, frame) {
                    self.stats.refused += 1;
                }
            }
        }
        for (to, msg) in std::mem::take(&mut self.other_out) {
            let f = self.encode(&msg);
            if !self.transport.send(to, f) {
                self.stats.refused += 1;
            }
        }
        let rows = std::mem::take(&mut self.rows_out);
        let mut last: Option<(*const Row, Bytes)> = None;
        for (to, row) in rows {
            let f = match &last {
                Some((p, f)) if std::ptr::eq(*p, Arc::as_ptr(&row)) => f.clone(),
                _ => {
                    let f = self.encode(&Message::Row(row.clone()));
                    last = Some((Arc::as_ptr(&row), f.clone()));
                    f
                }
            };
            self.stats.rows_sent += 1;
            if !self.transport.send(to, f) {
                self.stats.refused += 1;
            }
        }
    }

    fn encode(&mut self, msg: &Message) -> Bytes {
        codec::encode(msg, &mut self.scratch);
        self.scratch.split().freeze()
    }
}

/// The persistence writer's next report (pending forever without file persistence).
async fn file_done(file: Option<&mut FilePersist>) -> PersistDone {
    match file {
        Some(f) => match f.done().await {
            Some(d) => d,
            None => PersistDone {
                failed: Some("the persistence writer stopped".into()),
                ..PersistDone::default()
            },
        },
        None => std::future::pending().await,
    }
}

/// Splits a snapshot into the driver's timestamp prefix and the application's bytes.
fn split_snapshot(data: &Bytes) -> Option<(Hlc, Bytes)> {
    let p = data.get(..SNAPSHOT_TS_BYTES)?;
    let mut phys = [0u8; 8];
    phys.copy_from_slice(&p[..8]);
    let mut logical = [0u8; 4];
    logical.copy_from_slice(&p[8..12]);
    Some((
        Hlc {
            phys_us: u64::from_le_bytes(phys),
            logical: u32::from_le_bytes(logical),
        },
        data.slice(SNAPSHOT_TS_BYTES..),
    ))
}

fn msg_bytes(m: &DataMsg) -> usize {
    match m {
        DataMsg::Null => 1,
        DataMsg::App { payload, .. } => payload.len() + 40,
    }
}
