//! [`Node`]: the protocol state machine of one member. See the crate docs for the driving
//! contract.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use crate::action::{Action, ControlRecord, Delivery, ViewInfo};
use crate::config::Config;
use crate::error::Error;
use crate::hlc::{Hlc, HlcClock};
use crate::layout::allocate;
use crate::limits;
use crate::messages::{DataBatch, DataMsg, Message, Proposal, Row, StateTransfer};
use crate::recv::RecvStream;
use crate::types::{Ballot, Epoch, MsgId, NodeId, ShardId, Version};

/// Deliberate bugs, for proving that the simulator's checkers catch them. All off by
/// default; only settable with the `planted-bugs` feature (or in this crate's tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlantedBugs {
    /// Deliver a message as soon as it is received here, ignoring the SST minimum.
    pub deliver_unstable: bool,
    /// Swap two consecutive deliverable messages.
    pub deliver_out_of_order: bool,
    /// Do not resend own messages cut by the ragged trim.
    pub no_resend: bool,
    /// Resend own trimmed messages twice.
    pub resend_twice: bool,
    /// The proposer lowers every trim by one (may cut a delivered message).
    pub trim_minus_one: bool,
    /// Apply the trim from this node's own received counters instead of the decided one.
    pub local_trim: bool,
    /// Deliver by the trim before the decision record is durable.
    pub apply_before_persist: bool,
    /// Stamp deliveries with the sender's timestamp only (no strict increase).
    pub ts_no_bump: bool,
    /// Persistence frontier from the maximum instead of the minimum over the shard.
    pub frontier_uses_max: bool,
    /// Local stability frontier ignores own pending messages.
    pub frontier_ignores_pending: bool,
    /// A bare half of the previous view is enough to decide (breaks the majority rule).
    pub quorum_half: bool,
    /// Admit up to twice the window.
    pub window_double: bool,
    /// Capture the state-transfer snapshot before delivering by the trim.
    pub snapshot_before_trim: bool,
    /// Total restart: pick the *least* advanced durable log of a shard as its source.
    pub restart_least_advanced: bool,
    /// Publish the stability frontier before delivering as far as every member reported.
    pub frontier_before_delivered: bool,
    /// Admit sends while restarting from disk (the restart view then drops them).
    pub send_while_restarting: bool,
}

/// What a node restarting from its own disk after a crash hands to [`Node::restart`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Every control record the node wrote (`Action::PersistControl`), in write order.
    pub records: Vec<ControlRecord>,
    /// The shard state on disk: its shard, the last flushed version and that version's
    /// timestamp. `None` when the node never held a shard's state durably. A founding member
    /// of a shard (bootstrap view, or a new shard started empty) holds its empty state from
    /// the install on: `Some((shard, Version::default(), Hlc::default()))`; a member new to a
    /// shard holds it once its snapshot is flushed. Everything up to the version must be in
    /// the state the driver restores for the application.
    pub log: Option<(ShardId, Version, Hlc)>,
    /// How many times this node id started before (a durable counter the driver keeps):
    /// message ids and row sequence numbers of this run start at `boot << 40`, above every
    /// earlier run's.
    pub boot: u32,
}

/// Lifecycle of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Waiting to be admitted; sends `Join` to these contacts.
    Joining(Vec<NodeId>),
    /// In a view.
    Member,
    /// Removed by a view it is not part of.
    Evicted,
    /// Left gracefully.
    Left,
}

/// The installed view.
#[derive(Clone, Debug, PartialEq, Eq)]
struct View {
    epoch: Epoch,
    members: Vec<NodeId>,
    shards: Vec<Vec<NodeId>>,
}

/// A message this node originated, in the current epoch's sender stream.
#[derive(Clone, Debug)]
struct Sent {
    index: u64,
    msg: DataMsg,
    /// Application messages (not nulls) of this epoch's stream before this one: with
    /// `EpochState::apps_sent` it counts the in-flight ones in O(1) (`outstanding`).
    apps_before: u64,
}

/// An admitted message not yet given a slot (FIFO; trimmed resends go first).
#[derive(Clone, Debug)]
struct Queued {
    id: MsgId,
    payload: Bytes,
}

/// Proposer state for the current epoch.
#[derive(Clone, Debug)]
struct Proposer {
    ballot: Ballot,
    started_us: u64,
    /// Rows that showed `promised == ballot` (their content is the promise).
    promises: BTreeMap<NodeId, Arc<Row>>,
    value: Option<Arc<Proposal>>,
}

/// Everything that is reset when a view is installed.
#[derive(Clone, Debug, Default)]
struct EpochState {
    shard: Option<ShardId>,
    /// My rank among my shard's senders.
    rank: usize,
    /// My shard's members (= senders) in rank order.
    shard_members: Vec<NodeId>,
    /// My own stream: `sent[i].index == sent_base + i`.
    sent: VecDeque<Sent>,
    sent_base: u64,
    /// Application messages ever put in `sent` this epoch.
    apps_sent: u64,
    /// Index in my stream at or below the first own application message not yet delivered
    /// here: only nulls and delivered messages lie before it, so [`Node::local_frontier`]
    /// starts there (it only moves forward within an epoch, see `advance_frontier_cursor`).
    frontier_cursor: u64,
    /// Per sender rank: received messages not yet delivered (kept as the batches they came
    /// in). Our own rank's stream stays empty: own messages are delivered from `sent`.
    recv: Vec<RecvStream>,
    /// Next position to deliver (= positions delivered).
    delivered: u64,
    rows: BTreeMap<NodeId, Arc<Row>>,
    last_heard_us: BTreeMap<NodeId, u64>,
    last_data_us: BTreeMap<NodeId, u64>,
    suspected: BTreeSet<NodeId>,
    wedged: bool,
    promised: Ballot,
    accepted: Option<(Ballot, Arc<Proposal>)>,
    accept_inflight: Option<(u64, Ballot, Arc<Proposal>)>,
    /// Durable mode: a promise being written (token, ballot); published once durable.
    promise_inflight: Option<(u64, Ballot)>,
    proposer: Option<Proposer>,
    decided: Option<Arc<Proposal>>,
    decision_inflight: Option<u64>,
    decision_durable: bool,
    installed_by: Option<Arc<Proposal>>,
    state_ready: bool,
    /// As state source: the snapshot and who still needs it.
    snapshot: Option<Arc<StateTransfer>>,
    snapshot_waiting: Vec<NodeId>,
    snapshot_sent_us: u64,
    started_us: u64,
}

impl EpochState {
    fn received(&self, r: usize) -> u64 {
        if r == self.rank {
            // Our own stream counts as received as soon as it is in `sent`.
            self.next_index()
        } else {
            self.recv[r].received()
        }
    }
    /// The message with index `k` of sender rank `r`, if still held (own messages are
    /// read from `sent`, which keeps them until they are delivered everywhere).
    fn held(&self, r: usize, k: u64) -> Option<&DataMsg> {
        if r == self.rank {
            let i = k.checked_sub(self.sent_base)?;
            self.sent.get(usize::try_from(i).ok()?).map(|s| &s.msg)
        } else {
            self.recv[r].get(k)
        }
    }
    fn next_index(&self) -> u64 {
        self.sent_base + self.sent.len() as u64
    }
    fn n(&self) -> u64 {
        self.shard_members.len() as u64
    }
}

/// The protocol state machine of one node. See the crate documentation for how to drive it.
#[derive(Debug)]
pub struct Node {
    id: NodeId,
    cfg: Config,
    status: Status,
    now_us: u64,
    clock: HlcClock,
    next_seq: u64,
    view: View,
    ep: EpochState,
    queue: VecDeque<Queued>,
    actions: VecDeque<Action>,
    /// Last delivered version and timestamp of my shard (carried across epochs).
    last_version: Version,
    last_ts: Hlc,
    persisted: Version,
    persist_requested: Version,
    persistence_frontier: Version,
    stability_frontier: Hlc,
    next_token: u64,
    row_seq: u64,
    row_dirty: bool,
    last_row_push_us: u64,
    leave_requested: bool,
    leaving_reported: bool,
    joiners: BTreeSet<NodeId>,
    /// Restarted from disk and not yet holding the shard state again: wedged, reports
    /// `restarting` and its durable log end (`persisted`) until a restart view names a
    /// source for its shard.
    restarting: bool,
    /// While restarting: the durable log is a valid state of our shard (a restarted member
    /// without one, e.g. a joiner that crashed before its snapshot was on disk, survives to
    /// be repaired but can never be a shard's source).
    restart_claim: bool,
    /// Durable mode: a joiner's admission record being written; the node does not act as a
    /// member (no rows, no promises, no sends) until it is durable, so a joiner that crashes
    /// before that never acted and can come back under the same id as a joiner.
    admission_inflight: Option<u64>,
    bugs: PlantedBugs,
}

impl Node {
    /// A member of the bootstrap view (epoch 1). Every initial member must be created with
    /// the same `members` list (it fixes ranks and the shard allocation).
    pub fn new_initial(
        id: NodeId,
        members: &[NodeId],
        cfg: Config,
        now_us: u64,
    ) -> Result<Node, Error> {
        cfg.validate()?;
        if members.is_empty() || members.len() > limits::VIEW_MEMBERS_MAX || !members.contains(&id)
        {
            return Err(Error::InvalidConfig(
                "initial members must contain this node".into(),
            ));
        }
        let empty: Vec<Vec<NodeId>> = vec![Vec::new(); cfg.layout.shards.len()];
        let shards = allocate(&cfg.layout, &empty, &[], members)
            .ok_or_else(|| Error::InvalidConfig("too few initial members for the layout".into()))?;
        let mut node = Node::blank(id, cfg, Status::Member, now_us);
        let view = View {
            epoch: 1,
            members: members.to_vec(),
            shards,
        };
        node.install(view, None, true, Vec::new());
        node.step();
        Ok(node)
    }

    /// A node asking to join through `contacts` (any current members).
    pub fn new_joiner(
        id: NodeId,
        contacts: &[NodeId],
        cfg: Config,
        now_us: u64,
    ) -> Result<Node, Error> {
        cfg.validate()?;
        if contacts.is_empty() {
            return Err(Error::InvalidConfig(
                "a joiner needs at least one contact".into(),
            ));
        }
        let mut node = Node::blank(id, cfg, Status::Joining(contacts.to_vec()), now_us);
        node.send_joins();
        Ok(node)
    }

    /// A member restarting from its own disk after a crash (durable mode; in particular after
    /// a total shutdown). `initial_members` is the bootstrap member list (as given to
    /// [`Node::new_initial`]); `rec` is what the disk holds.
    ///
    /// The node re-enters the last view its records show (the newest `Decided`, else the
    /// bootstrap view) **wedged**, with the Paxos acceptor state of that epoch restored
    /// (promises and accepts are durable), and reports in its row that it is restarting and
    /// where its durable log ends. The view change that follows (a strict majority of the
    /// view must be back, and at least one member of every shard) picks, per shard, the
    /// survivor holding the state in memory if any, else the restarted member with the most
    /// advanced durable log as the shard's source; every other member of the shard gets
    /// `InstallView{needs_state}` and then `InstallSnapshot` from that source, which
    /// replaces its state and log (the truncate-and-repair). A restarted member that learns
    /// of a newer view first catches up through it (still without state). Fails with
    /// `NotMember` when the records show this node is in no view (it must rejoin with
    /// [`Node::new_joiner`] under its next incarnation, [`NodeId::next_incarnation`]).
    pub fn restart(
        id: NodeId,
        initial_members: &[NodeId],
        cfg: Config,
        rec: &Recovered,
        now_us: u64,
    ) -> Result<Node, Error> {
        cfg.validate()?;
        let last = rec
            .records
            .iter()
            .filter_map(|r| match r {
                ControlRecord::Decided { proposal } => Some(proposal.clone()),
                _ => None,
            })
            .max_by_key(|p| p.epoch);
        let view = match &last {
            Some(p) => View {
                epoch: p.next_epoch(),
                members: p.members.clone(),
                shards: p.shards.clone(),
            },
            None => {
                if initial_members.is_empty() || initial_members.len() > limits::VIEW_MEMBERS_MAX {
                    return Err(Error::InvalidConfig("bad initial member list".into()));
                }
                let empty: Vec<Vec<NodeId>> = vec![Vec::new(); cfg.layout.shards.len()];
                let shards =
                    allocate(&cfg.layout, &empty, &[], initial_members).ok_or_else(|| {
                        Error::InvalidConfig("too few initial members for the layout".into())
                    })?;
                View {
                    epoch: 1,
                    members: initial_members.to_vec(),
                    shards,
                }
            }
        };
        if !view.members.contains(&id) {
            return Err(Error::NotMember(id));
        }
        let mut node = Node::blank(id, cfg, Status::Member, now_us);
        node.next_seq = u64::from(rec.boot) << 40;
        // Peers keep the row with the highest sequence: start above the previous run's.
        node.row_seq = u64::from(rec.boot) << 40;
        node.restarting = true;
        // The clock did not survive: start it at the physical time (after the log's last
        // stamp, observed below), so the frontier this node reports does not go back.
        node.clock.tick(now_us);
        let my_shard = view.shards.iter().position(|m| m.contains(&id));
        if let Some((s, v, ts)) = rec.log {
            if my_shard == Some(s as usize) {
                node.restart_claim = true;
                node.last_version = v;
                node.last_ts = ts;
                node.persisted = v;
                node.persist_requested = v;
                node.clock.observe(ts);
            }
        }
        // The decision that made the view named sources for the state in memory then, not
        // for the logs now: install without it (no source: stay restarting).
        node.install(view, None, false, Vec::new());
        node.ep.installed_by = last;
        let e = node.view.epoch;
        for r in &rec.records {
            match r {
                ControlRecord::Promised { epoch, ballot } if *epoch == e => {
                    node.ep.promised = node.ep.promised.max(*ballot);
                }
                ControlRecord::Accepted { ballot, proposal } if proposal.epoch == e => {
                    node.ep.promised = node.ep.promised.max(*ballot);
                    if node.ep.accepted.as_ref().is_none_or(|(b, _)| b < ballot) {
                        node.ep.accepted = Some((*ballot, proposal.clone()));
                    }
                }
                _ => {}
            }
        }
        node.step();
        Ok(node)
    }

    fn blank(id: NodeId, cfg: Config, status: Status, now_us: u64) -> Node {
        Node {
            id,
            cfg,
            status,
            now_us,
            clock: HlcClock::default(),
            next_seq: 0,
            view: View {
                epoch: 0,
                members: Vec::new(),
                shards: Vec::new(),
            },
            ep: EpochState::default(),
            queue: VecDeque::new(),
            actions: VecDeque::new(),
            last_version: Version::default(),
            last_ts: Hlc::default(),
            persisted: Version::default(),
            persist_requested: Version::default(),
            persistence_frontier: Version::default(),
            stability_frontier: Hlc::default(),
            next_token: 1,
            row_seq: 0,
            row_dirty: true,
            last_row_push_us: now_us,
            leave_requested: false,
            leaving_reported: false,
            joiners: BTreeSet::new(),
            restarting: false,
            restart_claim: false,
            admission_inflight: None,
            bugs: PlantedBugs::default(),
        }
    }

    /// Turns on deliberate bugs (simulator self-tests only).
    #[cfg(any(test, feature = "planted-bugs"))]
    pub fn plant_bugs(&mut self, bugs: PlantedBugs) {
        self.bugs = bugs;
    }

    // ----------------------------------------------------------------- accessors

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }
    /// Lifecycle state.
    pub fn status(&self) -> &Status {
        &self.status
    }
    /// Current epoch (0 before the first view).
    pub fn epoch(&self) -> Epoch {
        self.view.epoch
    }
    /// Members of the current view in rank order.
    pub fn members(&self) -> &[NodeId] {
        &self.view.members
    }
    /// This node's shard in the current view.
    pub fn shard(&self) -> Option<ShardId> {
        self.ep.shard
    }
    /// Members of this node's shard.
    pub fn shard_members(&self) -> &[NodeId] {
        &self.ep.shard_members
    }
    /// True while a view change is under way here (no sending or delivering).
    pub fn is_wedged(&self) -> bool {
        self.ep.wedged
    }
    /// False while a joiner waits for its state snapshot.
    pub fn is_state_ready(&self) -> bool {
        self.ep.state_ready
    }
    /// Contiguously received count from sender rank `r` of my shard in this epoch.
    pub fn received_from(&self, r: usize) -> u64 {
        if r < self.ep.recv.len() {
            self.ep.received(r)
        } else {
            0
        }
    }
    /// Positions delivered in this epoch.
    pub fn delivered_positions(&self) -> u64 {
        self.ep.delivered
    }
    /// Last version delivered (or installed by snapshot) in my shard.
    pub fn last_version(&self) -> Version {
        self.last_version
    }
    /// The global persistence frontier published so far.
    pub fn persistence_frontier(&self) -> Version {
        self.persistence_frontier
    }
    /// The stability frontier published so far.
    pub fn stability_frontier(&self) -> Hlc {
        self.stability_frontier
    }
    /// Admitted own messages not yet delivered at every shard member (queued included).
    pub fn outstanding(&self) -> usize {
        let in_flight = self.in_flight();
        debug_assert_eq!(
            in_flight,
            self.in_flight_by_scan(),
            "incremental in-flight count"
        );
        in_flight + self.queue.len()
    }

    /// Own application messages sent and not yet delivered at every shard member, in O(1):
    /// the stream is in index order and its positions grow with the index, so they are the
    /// suffix from the first index whose position is not below the SST's delivered minimum.
    fn in_flight(&self) -> usize {
        let n = self.ep.n();
        if n == 0 {
            return self.in_flight_by_scan();
        }
        let k = first_index_at_or_after(self.min_delivered_all(), n, self.ep.rank as u64);
        let off = k.max(self.ep.sent_base) - self.ep.sent_base;
        match self.ep.sent.get(off as usize) {
            Some(s) => (self.ep.apps_sent - s.apps_before) as usize,
            None => 0,
        }
    }

    /// The definition of [`Node::in_flight`], by a scan of the window (checked against it in
    /// debug builds).
    fn in_flight_by_scan(&self) -> usize {
        let min_delivered = self.min_delivered_all();
        let n = self.ep.n();
        self.ep
            .sent
            .iter()
            .filter(|s| {
                matches!(s.msg, DataMsg::App { .. })
                    && s.index * n + self.ep.rank as u64 >= min_delivered
            })
            .count()
    }
    /// Timestamp of the next heartbeat (call `tick` then).
    pub fn next_timeout(&self) -> u64 {
        self.last_row_push_us + self.cfg.heartbeat_us
    }

    // ----------------------------------------------------------------- inputs

    /// Whether this node may admit an application message now (both send paths).
    ///
    /// A member restarting from its disk refuses with `WouldBlock` until a view names its
    /// shard's source: that view installs it without the closed epoch's state and clears
    /// its queue, so a message admitted before it would be dropped after `send` had
    /// returned its id (simulator seed 6323: a restarted member that took a snapshot under
    /// an older, non-restart decision admitted three messages, then the restart view
    /// cleared them and they were never delivered).
    fn may_send(&self) -> Result<(), Error> {
        match self.status {
            Status::Member => {}
            Status::Joining(_) => return Err(Error::NotASender),
            Status::Evicted | Status::Left => return Err(Error::NotMember(self.id)),
        }
        if self.ep.shard.is_none() || self.leave_requested {
            return Err(Error::NotASender);
        }
        if self.restarting && !self.bugs.send_while_restarting {
            return Err(Error::WouldBlock);
        }
        Ok(())
    }

    /// Offers an application message for ordered delivery in this node's shard.
    /// Returns its id, or `WouldBlock` when W messages are outstanding (nothing is queued).
    pub fn send(&mut self, now_us: u64, payload: Bytes) -> Result<MsgId, Error> {
        self.advance(now_us);
        self.may_send()?;
        if payload.len() > self.cfg.payload_bytes_max {
            return Err(Error::PayloadTooLarge {
                size: payload.len(),
                max: self.cfg.payload_bytes_max,
            });
        }
        let window = if self.bugs.window_double {
            2 * self.cfg.window
        } else {
            self.cfg.window
        };
        if self.outstanding() >= window {
            return Err(Error::WouldBlock);
        }
        let id = MsgId {
            sender: self.id,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        self.queue.push_back(Queued { id, payload });
        self.step();
        Ok(id)
    }

    /// A timer tick: heartbeats, failure detection, retransmission, proposer retries.
    pub fn tick(&mut self, now_us: u64) {
        self.advance(now_us);
        match self.status {
            Status::Joining(_) => {
                if now_us >= self.last_row_push_us + self.cfg.heartbeat_us {
                    self.last_row_push_us = now_us;
                    self.send_joins();
                }
                return;
            }
            Status::Member => {}
            _ => return,
        }
        if self.admission_inflight.is_some() {
            return;
        }
        for &m in &self.view.members {
            if m == self.id || self.ep.suspected.contains(&m) {
                continue;
            }
            let heard = self
                .ep
                .last_heard_us
                .get(&m)
                .copied()
                .unwrap_or(self.ep.started_us);
            if now_us.saturating_sub(heard) > self.cfg.suspect_timeout_us {
                self.ep.suspected.insert(m);
                self.row_dirty = true;
            }
        }
        if !self.ep.wedged {
            self.retransmit();
        }
        self.resend_snapshot();
        self.probe_for_newer_views();
        if now_us >= self.last_row_push_us + self.cfg.heartbeat_us {
            self.row_dirty = true;
        }
        self.step();
    }

    /// The transport lost its connection to `peer`: treated as a failure suspicion.
    pub fn peer_lost(&mut self, now_us: u64, peer: NodeId) {
        self.advance(now_us);
        if self.status == Status::Member && peer != self.id && self.view.members.contains(&peer) {
            if self.ep.suspected.insert(peer) {
                self.row_dirty = true;
            }
            self.step();
        }
    }

    /// Asks to leave gracefully: no new sends; once this node's own messages are delivered
    /// everywhere, it is removed at the next view change (`Action::Left`).
    pub fn leave(&mut self, now_us: u64) {
        self.advance(now_us);
        self.leave_requested = true;
        self.row_dirty = true;
        self.step();
    }

    /// Durable mode: the delivered log of `shard` is flushed up to `upto`.
    pub fn persisted(&mut self, now_us: u64, shard: ShardId, upto: Version) {
        self.advance(now_us);
        if Some(shard) == self.ep.shard && upto > self.persisted && upto <= self.last_version {
            self.persisted = upto;
            self.row_dirty = true;
        }
        self.step();
    }

    /// A `PersistControl` record is durable.
    pub fn control_persisted(&mut self, now_us: u64, token: u64) {
        self.advance(now_us);
        if self.admission_inflight == Some(token) {
            self.admission_inflight = None;
            self.row_dirty = true;
        }
        if let Some((t, b)) = self.ep.promise_inflight {
            if t == token {
                self.ep.promise_inflight = None;
                if b > self.ep.promised {
                    self.ep.promised = b;
                    self.row_dirty = true;
                }
            }
        }
        if let Some((t, b, p)) = self.ep.accept_inflight.clone() {
            if t == token {
                self.ep.accept_inflight = None;
                if b >= self.ep.promised {
                    self.ep.accepted = Some((b, p));
                    self.row_dirty = true;
                }
            }
        }
        if self.ep.decision_inflight == Some(token) {
            self.ep.decision_inflight = None;
            self.ep.decision_durable = true;
        }
        self.step();
    }

    /// The application captured the snapshot asked for by `CaptureSnapshot`.
    pub fn snapshot_ready(&mut self, now_us: u64, epoch: Epoch, shard: ShardId, data: Bytes) {
        self.advance(now_us);
        if epoch != self.view.epoch
            || Some(shard) != self.ep.shard
            || data.len() > limits::SNAPSHOT_BYTES_MAX
        {
            return;
        }
        self.ep.snapshot = Some(Arc::new(StateTransfer {
            epoch,
            shard,
            version: self.last_version,
            ts: self.last_ts,
            clock: self.clock.last(),
            data,
        }));
        self.ep.snapshot_sent_us = 0;
        self.resend_snapshot();
        self.step();
    }

    /// A message from `from` (already authenticated as that peer by the transport).
    pub fn handle_message(&mut self, now_us: u64, from: NodeId, msg: Message) {
        self.advance(now_us);
        match msg {
            Message::Row(row) => self.on_row(from, row),
            Message::Data(batch) => self.on_data(from, batch),
            Message::Join { from: joiner } => self.on_join(joiner),
            Message::State(st) => self.on_state(from, st),
        }
        self.step();
    }

    /// Several messages that arrived together (e.g. every frame the transport had ready):
    /// each is handled as by [`Node::handle_message`], but the protocol step (delivery,
    /// nulls, pruning, frontiers, the row push) runs once after a run of data batches and
    /// rows instead of after each one, as if they had come in one packet. Joins and state
    /// transfers are stepped at once, as alone. This is safe because a step only reads the
    /// state the handlers leave: rows are monotone snapshots of which the newest counts (the
    /// sender's driver already sends only its newest row per flush), and data batches only
    /// extend the received streams; the node behaves as if the messages had come in one
    /// packet, with fewer rows and fewer per-step costs.
    pub fn handle_messages<I>(&mut self, now_us: u64, msgs: I)
    where
        I: IntoIterator<Item = (NodeId, Message)>,
    {
        self.advance(now_us);
        let mut pending = false;
        for (from, msg) in msgs {
            match msg {
                Message::Row(row) => {
                    self.on_row(from, row);
                    pending = true;
                }
                Message::Data(batch) => {
                    self.on_data(from, batch);
                    pending = true;
                }
                Message::Join { from: joiner } => {
                    self.on_join(joiner);
                    self.step();
                    pending = false;
                }
                Message::State(st) => {
                    self.on_state(from, st);
                    self.step();
                    pending = false;
                }
            }
        }
        if pending {
            self.step();
        }
    }

    /// Next action to carry out, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        let a = self.actions.pop_front();
        if self.actions.is_empty() {
            // Start the next burst at the front of the ring again: a drained `VecDeque`
            // otherwise goes on where it stopped and cycles through its whole capacity
            // (grown to the largest burst of deliveries), so every action written and read
            // back is a cache miss; restarting keeps the next burst in the memory this one
            // just used.
            self.actions.clear();
        }
        a
    }

    /// Like [`Node::send`] for several messages at once: admits payloads from `payloads`
    /// (pulled only while the window has room) and runs the protocol once, so they leave as
    /// one batch with one row push instead of one step per message. Returns the ids admitted;
    /// `WouldBlock` if the window had no room. A payload over the limit is left in the
    /// iterator (`PayloadTooLarge` if it is the first, else the batch ends before it).
    pub fn send_batch<I: Iterator<Item = Bytes>>(
        &mut self,
        now_us: u64,
        payloads: &mut std::iter::Peekable<I>,
    ) -> Result<Vec<MsgId>, Error> {
        self.advance(now_us);
        self.may_send()?;
        let window = if self.bugs.window_double {
            2 * self.cfg.window
        } else {
            self.cfg.window
        };
        let mut room = window.saturating_sub(self.outstanding());
        let mut ids = Vec::new();
        while room > 0 {
            let Some(next) = payloads.peek() else {
                break;
            };
            if next.len() > self.cfg.payload_bytes_max {
                if ids.is_empty() {
                    return Err(Error::PayloadTooLarge {
                        size: next.len(),
                        max: self.cfg.payload_bytes_max,
                    });
                }
                break;
            }
            let Some(payload) = payloads.next() else {
                break;
            };
            let id = MsgId {
                sender: self.id,
                seq: self.next_seq,
            };
            self.next_seq += 1;
            self.queue.push_back(Queued { id, payload });
            ids.push(id);
            room -= 1;
        }
        if ids.is_empty() {
            return Err(Error::WouldBlock);
        }
        self.step();
        Ok(ids)
    }

    // ----------------------------------------------------------------- input handlers

    fn advance(&mut self, now_us: u64) {
        if now_us > self.now_us {
            self.now_us = now_us;
        }
    }

    fn on_row(&mut self, from: NodeId, row: Arc<Row>) {
        if row.from != from {
            return;
        }
        if let Some(p) = &row.installed_by {
            // Also the path by which joiners learn they were admitted.
            let joining = matches!(self.status, Status::Joining(_)) && p.joiners.contains(&self.id);
            let next = self.status == Status::Member && row.epoch == self.view.epoch + 1;
            if p.epoch + 1 == row.epoch && (joining || next) {
                self.learn_from_next_epoch(p.clone());
                return;
            }
        }
        if self.status != Status::Member {
            return;
        }
        if row.epoch > self.view.epoch + 1
            || (row.epoch == self.view.epoch + 1 && row.installed_by.is_none())
        {
            // A view two or more epochs ahead exists: it cannot contain us (we never
            // promised in the epoch between), so we were removed.
            self.evict();
            return;
        }
        if row.epoch < self.view.epoch {
            // A laggard (or a removed node): show it the current epoch so it catches up or stops.
            let mine = self.my_row();
            self.actions.push_back(Action::Send {
                to: from,
                msg: Message::Row(mine),
            });
            return;
        }
        if row.epoch != self.view.epoch || !self.view.members.contains(&from) || from == self.id {
            return;
        }
        self.ep.last_heard_us.insert(from, self.now_us);
        if let Some(ts) = Some(row.frontier) {
            self.clock.observe(ts);
        }
        let old = self.ep.rows.get(&from);
        let newer = old.is_none_or(|old| old.row_seq < row.row_seq);
        if newer {
            let row = match old {
                // A member restarted from disk reports counters from zero; what its earlier
                // run reported in this epoch stays true (counters only grow): keep the
                // maximum, so nothing already delivered everywhere counts as outstanding again.
                Some(old) if row.restarting => {
                    let mut r = (*row).clone();
                    for (a, b) in r.received.iter_mut().zip(&old.received) {
                        *a = (*a).max(*b);
                    }
                    r.delivered = r.delivered.max(old.delivered);
                    Arc::new(r)
                }
                _ => row,
            };
            self.ep.rows.insert(from, row);
        }
    }

    fn on_data(&mut self, from: NodeId, b: Arc<DataBatch>) {
        if self.status != Status::Member
            || b.epoch != self.view.epoch
            || Some(b.shard) != self.ep.shard
        {
            return;
        }
        let r = b.sender_rank as usize;
        if r >= self.ep.shard_members.len() || self.ep.shard_members[r] != from || from == self.id {
            return;
        }
        self.ep.last_heard_us.insert(from, self.now_us);
        if self.ep.wedged {
            return; // received counters are frozen once wedged
        }
        let first_index = b.first_index;
        let next = self.ep.received(r);
        if first_index > next || first_index + b.msgs.len() as u64 <= next {
            return; // a gap (retransmission will fill it) or nothing new
        }
        // The batch is normally ours alone (just decoded): take its messages, no clones.
        let mut msgs = Arc::try_unwrap(b).map_or_else(|b| b.msgs.clone(), |b| b.msgs);
        let new_from = (next - first_index) as usize;
        for (i, m) in msgs.iter().enumerate().skip(new_from) {
            if let DataMsg::App { ts, payload, .. } = m {
                if payload.len() > self.cfg.payload_bytes_max {
                    msgs.truncate(i); // a peer violating the limit: ignore the rest
                    break;
                }
                self.clock.observe(*ts);
            }
        }
        if self.ep.recv[r].push_batch(first_index, msgs) > 0 {
            self.row_dirty = true;
        }
    }

    fn on_join(&mut self, joiner: NodeId) {
        if self.status != Status::Member || self.view.members.contains(&joiner) {
            return;
        }
        // A newer incarnation of a member asks in: the old incarnation is gone for sure.
        let superseded: Vec<NodeId> = self
            .view
            .members
            .iter()
            .copied()
            .filter(|m| *m != self.id && m.superseded_by(joiner))
            .collect();
        for m in superseded {
            if self.ep.suspected.insert(m) {
                self.row_dirty = true;
            }
        }
        if self.joiners.len() < limits::PENDING_JOINERS_MAX && self.joiners.insert(joiner) {
            self.row_dirty = true;
        }
    }

    fn on_state(&mut self, from: NodeId, st: Arc<StateTransfer>) {
        if self.status != Status::Member
            || self.ep.state_ready
            || st.epoch != self.view.epoch
            || Some(st.shard) != self.ep.shard
            || self
                .ep
                .installed_by
                .as_ref()
                .and_then(|p| p.sources.get(st.shard as usize).copied().flatten())
                != Some(from)
        {
            return;
        }
        self.clock.observe(st.clock);
        self.clock.observe(st.ts);
        self.last_version = st.version;
        self.last_ts = st.ts;
        self.persisted = Version::default();
        self.persist_requested = st.version;
        self.ep.state_ready = true;
        self.row_dirty = true;
        self.actions.push_back(Action::InstallSnapshot {
            shard: st.shard,
            version: st.version,
            data: st.data.clone(),
        });
    }

    // ----------------------------------------------------------------- the predicate loop

    /// Re-evaluates every rule until nothing changes, then pushes the row if it changed.
    fn step(&mut self) {
        if self.admission_inflight.is_some() {
            return;
        }
        for _ in 0..4 {
            if self.status != Status::Member {
                return;
            }
            let epoch = self.view.epoch;
            self.merge_rows();
            self.acceptor();
            self.proposer();
            self.acceptor();
            self.proposer();
            self.learn();
            if self.view.epoch != epoch {
                continue; // a new view: run the rules again in it
            }
            if !self.ep.wedged {
                self.send_path();
                self.deliver_stable();
                self.prune();
            }
            self.advance_frontier_cursor();
            self.frontiers();
            break;
        }
        self.push_row_if_dirty();
    }

    /// Suspicions spread (from rows of members we still trust), join requests are merged,
    /// and any change of membership wedges the epoch.
    fn merge_rows(&mut self) {
        let mut new_susp = Vec::new();
        let mut new_join = Vec::new();
        for (from, row) in &self.ep.rows {
            if self.ep.suspected.contains(from) {
                continue;
            }
            for s in &row.suspected {
                if *s != self.id && self.view.members.contains(s) && !self.ep.suspected.contains(s)
                {
                    new_susp.push(*s);
                }
            }
            for j in &row.joiners {
                if !self.view.members.contains(j) && !self.joiners.contains(j) {
                    new_join.push(*j);
                }
            }
        }
        for s in new_susp {
            self.ep.suspected.insert(s);
            self.row_dirty = true;
        }
        for j in new_join {
            if self.joiners.len() < limits::PENDING_JOINERS_MAX {
                self.joiners.insert(j);
                self.row_dirty = true;
            }
        }
        if !self.ep.suspected.is_empty() {
            self.wedge();
        }
        if self.leaving_now() && !self.leaving_reported {
            // `leaving` is reported in the row only once own messages are delivered everywhere.
            self.leaving_reported = true;
            self.row_dirty = true;
        }
    }

    fn leaving_now(&self) -> bool {
        self.leave_requested && (self.ep.wedged || self.outstanding() == 0)
    }

    fn wedge(&mut self) {
        if !self.ep.wedged {
            self.ep.wedged = true;
            self.row_dirty = true;
        }
    }

    fn quorum(&self, count: usize) -> bool {
        let n = self.view.members.len();
        if self.bugs.quorum_half {
            count * 2 >= n
        } else {
            count * 2 > n
        }
    }

    /// The member that should run the view change: the lowest-ranked one this node has
    /// heard from within the suspicion timeout (or itself). Suspicions are permanent within
    /// an epoch and may be mutual after pauses or partitions; leadership instead follows who
    /// is demonstrably alive, so after healing exactly one proposer remains.
    fn leader(&self) -> Option<NodeId> {
        self.view.members.iter().copied().find(|m| {
            *m == self.id
                || self
                    .ep
                    .last_heard_us
                    .get(m)
                    .is_some_and(|t| self.now_us.saturating_sub(*t) <= self.cfg.suspect_timeout_us)
        })
    }

    /// Paxos acceptor over the rows: promise to the highest ballot of a trusted proposer,
    /// accept its value (after making it durable).
    fn acceptor(&mut self) {
        if self.ep.accept_inflight.is_some() || self.ep.decided.is_some() {
            return;
        }
        let mut best: Option<(Ballot, Option<Arc<Proposal>>)> = self
            .ep
            .proposer
            .as_ref()
            .map(|p| (p.ballot, p.value.clone()));
        // Any member's ballot counts (Paxos safety does not depend on who proposes); the
        // highest one wins.
        for (from, row) in &self.ep.rows {
            if let Some((b, v)) = &row.proposing {
                if b.node == from.0 && best.as_ref().is_none_or(|(bb, _)| b > bb) {
                    best = Some((*b, v.clone()));
                }
            }
        }
        let Some((b, v)) = best else { return };
        if b > self.ep.promised {
            self.promise(b);
        }
        if b == self.ep.promised && self.ep.promise_inflight.is_none() {
            if let Some(v) = v {
                if self.ep.accepted.as_ref().is_none_or(|(ab, _)| *ab != b) {
                    let token = self.token();
                    self.ep.accept_inflight = Some((token, b, v.clone()));
                    self.actions.push_back(Action::PersistControl {
                        token,
                        record: ControlRecord::Accepted {
                            ballot: b,
                            proposal: v,
                        },
                    });
                }
            }
        }
    }

    /// Promises ballot `b` (wedging first). In durable mode the promise is written
    /// (`ControlRecord::Promised`) and published only once durable, so a node restarted
    /// from disk never goes back on a promise it made.
    fn promise(&mut self, b: Ballot) {
        self.wedge();
        if !self.cfg.durable {
            if b > self.ep.promised {
                self.ep.promised = b;
                self.row_dirty = true;
            }
            return;
        }
        if b <= self.ep.promised || self.ep.promise_inflight.is_some_and(|(_, ib)| ib >= b) {
            return;
        }
        let token = self.token();
        self.ep.promise_inflight = Some((token, b));
        self.actions.push_back(Action::PersistControl {
            token,
            record: ControlRecord::Promised {
                epoch: self.view.epoch,
                ballot: b,
            },
        });
    }

    fn token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token += 1;
        t
    }

    /// A view change is needed: someone suspects someone, is wedged, leaves, or wants in.
    fn triggered(&self) -> bool {
        // A restarted member needs a view that names its shard's source.
        self.restarting
            || !self.ep.suspected.is_empty()
            || (self.leaving_now() && self.leave_honorable(self.id))
            || self.ep.rows.values().any(|r| {
                r.wedged || !r.suspected.is_empty() || (r.leaving && self.leave_honorable(r.from))
            })
            || !self.joiners.is_empty()
    }

    /// Can `l` leave now without taking the last copy of its shard's state with it?
    /// (Otherwise its leave waits until another member of the shard holds the state.)
    fn leave_honorable(&self, l: NodeId) -> bool {
        let Some(shard) = self.view.shards.iter().find(|m| m.contains(&l)) else {
            return true;
        };
        shard.iter().any(|m| {
            *m != l
                && if *m == self.id {
                    self.ep.state_ready && !self.leaving_now()
                } else {
                    self.ep
                        .rows
                        .get(m)
                        .is_some_and(|r| r.state_ready && !r.leaving)
                }
        })
    }

    /// Paxos proposer, run by the lowest-ranked member this node does not suspect.
    fn proposer(&mut self) {
        if self.ep.decided.is_some() {
            return;
        }
        if self.leader() != Some(self.id) || !self.triggered() {
            if self.ep.proposer.take().is_some() {
                self.row_dirty = true;
            }
            return;
        }
        let expired = self
            .ep
            .proposer
            .as_ref()
            .is_some_and(|p| self.now_us >= p.started_us + self.cfg.view_change_retry_us);
        if self.ep.proposer.is_none() || expired {
            if self.ep.accept_inflight.is_some() {
                return;
            }
            let mut round = self.ep.promised.round;
            if let Some((_, b)) = self.ep.promise_inflight {
                round = round.max(b.round);
            }
            for row in self.ep.rows.values() {
                round = round.max(row.promised.round);
            }
            let ballot = Ballot {
                round: round + 1,
                node: self.id.0,
            };
            self.ep.proposer = Some(Proposer {
                ballot,
                started_us: self.now_us,
                promises: BTreeMap::new(),
                value: None,
            });
            self.promise(ballot);
            self.row_dirty = true;
        }
        let mine = self.my_row();
        let me = self.id;
        let ep = &mut self.ep;
        let Some(p) = ep.proposer.as_mut() else {
            return;
        };
        let ballot = p.ballot;
        if mine.promised == ballot {
            p.promises.entry(me).or_insert(mine.clone());
        }
        for (from, row) in &ep.rows {
            if row.promised == ballot {
                p.promises.entry(*from).or_insert(row.clone());
            }
        }
        let Some(p) = self.ep.proposer.as_ref() else {
            return;
        };
        if p.value.is_none() {
            let promised = p.promises.len();
            let all_trusted = self
                .view
                .members
                .iter()
                .filter(|m| !self.ep.suspected.contains(m))
                .all(|m| p.promises.contains_key(m));
            let waited = self.now_us >= p.started_us + self.cfg.view_change_retry_us / 2;
            if !self.quorum(promised) || !(all_trusted || waited) {
                return;
            }
            // Adopt the value accepted at the highest ballot, if any promise reports one.
            let adopted = p
                .promises
                .values()
                .filter_map(|r| r.accepted.clone())
                .max_by(|a, b| a.0.cmp(&b.0))
                .map(|(_, v)| v);
            let value = match adopted {
                Some(v) => Some(v),
                None => self.fresh_proposal(),
            };
            let Some(value) = value else { return }; // inadequate: stay wedged, wait
            if let Some(p) = self.ep.proposer.as_mut() {
                p.value = Some(value);
            }
            self.row_dirty = true;
            return; // acceptor picks it up on the next pass
        }
        // Phase 2: decided once a strict majority of the closed view accepted, and every
        // trusted survivor accepted (so the trim is on disk there before anyone applies it).
        let Some(value) = p.value.clone() else { return };
        let accepted_by = |row: &Row| row.accepted.as_ref().is_some_and(|(b, _)| *b == ballot);
        let mut count = usize::from(accepted_by(&mine));
        let mut acc = BTreeSet::new();
        if accepted_by(&mine) {
            acc.insert(self.id);
        }
        for (from, row) in &self.ep.rows {
            if accepted_by(row) {
                count += 1;
                acc.insert(*from);
            }
        }
        let survivors_ok = value
            .members
            .iter()
            .filter(|m| self.view.members.contains(m) && !self.ep.suspected.contains(m))
            .all(|m| acc.contains(m));
        if self.quorum(count) && survivors_ok {
            self.ep.decided = Some(value);
            self.row_dirty = true;
        }
    }

    /// Computes a new view from the promises: survivors are the promisers (that are not
    /// leaving and have their state), the trim per shard is the
    /// minimum of the survivors' frozen received counters.
    fn fresh_proposal(&self) -> Option<Arc<Proposal>> {
        let p = self.ep.proposer.as_ref()?;
        let survivors: Vec<NodeId> = self
            .view
            .members
            .iter()
            .copied()
            // A member that promised this ballot is alive and reachable, even if it was
            // suspected earlier in the epoch: keeping it avoids needless evictions (and an
            // inadequate layout when it is the last member of a shard). A member restarted
            // from disk survives too: it holds its durable log.
            .filter(|m| {
                p.promises
                    .get(m)
                    .is_some_and(|r| r.state_ready || r.restarting)
            })
            .collect();
        // Leavers go, unless one is the last holder of its shard's state (then the first
        // such leaver stays until a replacement holds the state).
        let mut survivors: Vec<NodeId> = survivors
            .iter()
            .copied()
            .filter(|m| {
                let leaving = p.promises.get(m).is_some_and(|r| r.leaving);
                if !leaving {
                    return true;
                }
                let Some(shard) = self.view.shards.iter().find(|s| s.contains(m)) else {
                    return false;
                };
                let others = shard.iter().any(|o| {
                    o != m && survivors.contains(o) && p.promises.get(o).is_some_and(|r| !r.leaving)
                });
                let first_leaver = shard
                    .iter()
                    .find(|o| survivors.contains(o))
                    .is_some_and(|o| o == m);
                !others && first_leaver
            })
            .collect();
        survivors.dedup();
        if survivors.is_empty() {
            return None;
        }
        let joiners: Vec<NodeId> = self
            .joiners
            .iter()
            .copied()
            .filter(|j| !self.view.members.contains(j))
            .take(limits::JOINS_PER_VIEW_MAX)
            .collect();
        let shards = allocate(&self.cfg.layout, &self.view.shards, &survivors, &joiners)?;
        let restarting = |m: &NodeId| p.promises.get(m).is_some_and(|r| r.restarting);
        let mut trims = Vec::with_capacity(self.view.shards.len());
        // Per old shard: who holds its state for the next view.
        let mut holder: Vec<Option<NodeId>> = Vec::with_capacity(self.view.shards.len());
        for old in &self.view.shards {
            let mut t = vec![u64::MAX; old.len()];
            let in_memory: Vec<NodeId> = old
                .iter()
                .copied()
                .filter(|m| survivors.contains(m) && !restarting(m))
                .collect();
            // Restarted members whose durable log is a valid state of the shard.
            let restarted: Vec<NodeId> = old
                .iter()
                .copied()
                .filter(|m| {
                    survivors.contains(m)
                        && restarting(m)
                        && p.promises.get(m).is_some_and(|r| r.state_ready)
                })
                .collect();
            if !in_memory.is_empty() {
                // The normal ragged trim, over the members that kept the epoch in memory.
                for m in &in_memory {
                    let row = p.promises.get(m)?;
                    for (r, slot) in t.iter_mut().enumerate() {
                        *slot = (*slot).min(row.received.get(r).copied().unwrap_or(0));
                    }
                }
                holder.push(in_memory.first().copied());
            } else if !restarted.is_empty() {
                // Restart after a total shutdown: nothing of the epoch is left in memory, so
                // nothing is delivered by a trim; the shard continues from the most advanced
                // durable log (every log is a prefix of the one agreed sequence).
                t.iter_mut().for_each(|x| *x = 0);
                let log_end = |m: &NodeId| p.promises.get(m).map(|r| r.persisted);
                let pick = if self.bugs.restart_least_advanced {
                    restarted.iter().copied().min_by_key(log_end)
                } else {
                    // Highest log; the lowest rank among equals.
                    restarted.iter().copied().rev().max_by_key(log_end)
                };
                holder.push(pick);
            } else if !old.is_empty() {
                return None; // a shard lost every member holding its state: wait
            } else {
                t.iter_mut().for_each(|x| *x = 0);
                holder.push(None);
            }
            if self.bugs.trim_minus_one {
                t.iter_mut().for_each(|x| *x = x.saturating_sub(1));
            }
            trims.push(t);
        }
        let mut sources = Vec::with_capacity(shards.len());
        for (s, members) in shards.iter().enumerate() {
            let old = self.view.shards.get(s).cloned().unwrap_or_default();
            // New members and restarted ones (to be repaired, or the source itself, which
            // learns that its log is the shard's state) need a named source.
            let needs = members.iter().any(|m| !old.contains(m) || restarting(m));
            sources.push(if needs {
                holder.get(s).copied().flatten()
            } else {
                None
            });
        }
        let restart = survivors.iter().any(restarting);
        let mut members = survivors;
        members.extend(joiners.iter().copied());
        Some(Arc::new(Proposal {
            epoch: self.view.epoch,
            members,
            shards,
            joiners,
            trims,
            sources,
            restart,
        }))
    }

    /// Learns the decision (own, or from any row), makes it durable, then applies it.
    fn learn(&mut self) {
        if self.ep.decided.is_none() {
            let found = self.ep.rows.values().find_map(|r| r.decided.clone());
            if let Some(v) = found {
                self.ep.decided = Some(v);
                self.wedge();
                self.row_dirty = true;
            }
        }
        let Some(v) = self.ep.decided.clone() else {
            return;
        };
        if !self.ep.decision_durable && !self.bugs.apply_before_persist {
            if self.ep.decision_inflight.is_none() {
                let token = self.token();
                self.ep.decision_inflight = Some(token);
                self.actions.push_back(Action::PersistControl {
                    token,
                    record: ControlRecord::Decided { proposal: v },
                });
            }
            return;
        }
        self.apply(v);
    }

    /// A row of the next epoch carries the decision that closed ours.
    fn learn_from_next_epoch(&mut self, v: Arc<Proposal>) {
        match self.status {
            Status::Joining(_) if v.members.contains(&self.id) && v.joiners.contains(&self.id) => {
                let view = View {
                    epoch: v.next_epoch(),
                    members: v.members.clone(),
                    shards: v.shards.clone(),
                };
                self.status = Status::Member;
                // Recorded so that a restart from disk knows this node is a member. In
                // durable mode the node acts as a member only once it is on disk.
                let token = self.token();
                if self.cfg.durable {
                    self.admission_inflight = Some(token);
                }
                self.actions.push_back(Action::PersistControl {
                    token,
                    record: ControlRecord::Decided {
                        proposal: v.clone(),
                    },
                });
                self.install(view, Some(v), false, Vec::new());
            }
            Status::Member if v.epoch == self.view.epoch && self.ep.decided.is_none() => {
                self.ep.decided = Some(v);
                self.wedge();
                self.row_dirty = true;
            }
            _ => {}
        }
    }

    fn evict(&mut self) {
        if self.status == Status::Member {
            self.status = if self.leave_requested {
                Status::Left
            } else {
                Status::Evicted
            };
            self.actions.push_back(if self.leave_requested {
                Action::Left
            } else {
                Action::Evicted
            });
        }
    }

    /// Ragged-trim delivery, resend of own trimmed messages, then the next view.
    fn apply(&mut self, v: Arc<Proposal>) {
        if !v.members.contains(&self.id) {
            self.evict();
            return;
        }
        if self.restarting {
            // Nothing of the closed epoch is in memory: no trim to deliver, nothing to
            // resend. The next view names our shard's source (or we stay restarting).
            let view = View {
                epoch: v.next_epoch(),
                members: v.members.clone(),
                shards: v.shards.clone(),
            };
            self.install(view, Some(v), false, Vec::new());
            return;
        }
        let mut applied = Vec::new();
        if let Some(s) = self.ep.shard {
            let mut trim = v.trims.get(s as usize).cloned().unwrap_or_default();
            if self.bugs.local_trim {
                trim = (0..self.ep.shard_members.len())
                    .map(|r| self.ep.received(r))
                    .collect();
            }
            if self.bugs.snapshot_before_trim {
                self.capture_if_source(&v, s);
            }
            self.deliver_trim(&trim);
            applied = trim.clone();
            // Own messages beyond the cut go back to the head of the queue in FIFO order.
            let mine = trim.get(self.ep.rank).copied().unwrap_or(0);
            let mut resend: Vec<Queued> = Vec::new();
            if !self.bugs.no_resend {
                for s in &self.ep.sent {
                    if s.index >= mine {
                        if let DataMsg::App { id, payload, .. } = &s.msg {
                            resend.push(Queued {
                                id: *id,
                                payload: payload.clone(),
                            });
                        }
                    }
                }
            }
            if self.bugs.resend_twice {
                let again = resend.clone();
                resend.extend(again);
            }
            for q in resend.into_iter().rev() {
                self.queue.push_front(q);
            }
        }
        let view = View {
            epoch: v.next_epoch(),
            members: v.members.clone(),
            shards: v.shards.clone(),
        };
        self.install(view, Some(v), true, applied);
    }

    fn deliver_trim(&mut self, trim: &[u64]) {
        let n = self.ep.n();
        if n == 0 {
            return;
        }
        let end = trim
            .iter()
            .enumerate()
            .filter(|(_, t)| **t > 0)
            .map(|(r, t)| (t - 1) * n + r as u64 + 1)
            .max();
        let Some(end) = end else { return };
        while self.ep.delivered < end {
            let q = self.ep.delivered;
            let (k, r) = (q / n, (q % n) as usize);
            if k < trim.get(r).copied().unwrap_or(0) {
                if !self.deliver_position(q) {
                    // Cannot happen for a correct trim (it is a minimum over survivors'
                    // frozen counters, ours included). Stop rather than invent data.
                    break;
                }
            } else {
                self.ep.delivered += 1;
            }
        }
    }

    fn capture_if_source(&mut self, v: &Proposal, old_shard: ShardId) {
        let _ = old_shard;
        let next_shard = v
            .shards
            .iter()
            .position(|m| m.contains(&self.id))
            .map(|s| s as ShardId);
        if let Some(ns) = next_shard {
            if v.sources.get(ns as usize).copied().flatten() == Some(self.id) {
                self.actions.push_back(Action::CaptureSnapshot {
                    epoch: v.next_epoch(),
                    shard: ns,
                    version: self.last_version,
                });
            }
        }
    }

    /// Installs `view`; `has_state` is false for a member new to its shard that has a source.
    fn install(
        &mut self,
        view: View,
        by: Option<Arc<Proposal>>,
        has_state: bool,
        applied: Vec<u64>,
    ) {
        let my_shard = view
            .shards
            .iter()
            .position(|m| m.contains(&self.id))
            .map(|s| s as ShardId);
        let old_shard_members = self.ep.shard_members.clone();
        let shard_members = my_shard
            .map(|s| view.shards[s as usize].clone())
            .unwrap_or_default();
        let rank = shard_members
            .iter()
            .position(|m| *m == self.id)
            .unwrap_or(0);
        let new_to_shard =
            my_shard.is_some() && (!has_state || !old_shard_members.contains(&self.id));
        let source = my_shard.and_then(|s| {
            by.as_ref()
                // A restarted member trusts only a restart decision to name its source (an
                // older decision adopted after the restart was made for in-memory state).
                .filter(|p| p.restart || !self.restarting)
                .and_then(|p| p.sources.get(s as usize).copied().flatten())
        });
        let needs_state = new_to_shard && source.is_some() && source != Some(self.id);
        // A restarted member stays restarting (wedged, no state) until a view names its
        // shard's source: itself (its log is the state) or another (repair by transfer).
        self.restarting = self.restarting && my_shard.is_some() && source.is_none();
        let n = shard_members.len();
        let snapshot_waiting: Vec<NodeId> = if source == Some(self.id) {
            // New members, and old ones that restarted (or that we have no row from).
            shard_members
                .iter()
                .copied()
                .filter(|m| {
                    *m != self.id
                        && (!old_shard_members.contains(m)
                            || self.ep.rows.get(m).is_none_or(|r| r.restarting))
                })
                .collect()
        } else {
            Vec::new()
        };
        self.ep = EpochState {
            shard: my_shard,
            rank,
            shard_members,
            sent: VecDeque::new(),
            sent_base: 0,
            recv: vec![RecvStream::default(); n],
            delivered: 0,
            state_ready: !needs_state && !self.restarting,
            wedged: self.restarting,
            installed_by: by.clone(),
            snapshot_waiting,
            started_us: self.now_us,
            ..EpochState::default()
        };
        if needs_state {
            self.queue.clear(); // a member new to a shard has nothing of its own outstanding
        }
        self.joiners.retain(|j| !view.members.contains(j));
        self.view = view;
        self.row_dirty = true;
        self.actions.push_back(Action::InstallView(ViewInfo {
            epoch: self.view.epoch,
            members: self.view.members.clone(),
            shards: self.view.shards.clone(),
            my_shard,
            needs_state: needs_state || self.restarting,
            applied_trim: applied,
            last_version: self.last_version,
        }));
        if !self.bugs.snapshot_before_trim {
            if let (Some(p), Some(s)) = (by.as_ref(), my_shard) {
                if p.sources.get(s as usize).copied().flatten() == Some(self.id)
                    && !self.ep.snapshot_waiting.is_empty()
                {
                    self.actions.push_back(Action::CaptureSnapshot {
                        epoch: self.view.epoch,
                        shard: s,
                        version: self.last_version,
                    });
                }
            }
        }
    }

    // ----------------------------------------------------------------- normal path

    /// Nulls in reaction to traffic, then every queued message (opportunistic batching).
    fn send_path(&mut self) {
        let Some(shard) = self.ep.shard else { return };
        let n = self.ep.shard_members.len();
        let me = self.ep.rank;
        let mut need = 0u64;
        for r in 0..n {
            if r == me {
                continue;
            }
            let c = self.ep.received(r);
            if c == 0 {
                continue;
            }
            // Others' message index c-1 must not wait for our slot: ranks below them need
            // index ≥ c-1 filled (count c), ranks above need count c-1.
            let want = if me < r { c } else { c - 1 };
            need = need.max(want);
        }
        let first = self.ep.next_index();
        let can_send_real = self.ep.state_ready;
        while self.ep.next_index() < need || (can_send_real && !self.queue.is_empty()) {
            let index = self.ep.next_index();
            let msg = match self.queue.front() {
                Some(_) if can_send_real => {
                    let Some(q) = self.queue.pop_front() else {
                        break;
                    };
                    let ts = self.clock.tick(self.now_us);
                    DataMsg::App {
                        id: q.id,
                        ts,
                        payload: q.payload,
                    }
                }
                _ => DataMsg::Null,
            };
            let apps_before = self.ep.apps_sent;
            if matches!(msg, DataMsg::App { .. }) {
                self.ep.apps_sent += 1;
            }
            self.ep.sent.push_back(Sent {
                index,
                msg,
                apps_before,
            });
        }
        let last = self.ep.next_index();
        if last > first {
            self.row_dirty = true;
            // Our own messages count as received from here (`EpochState::received`) and are
            // delivered from `sent`: no second copy.
            let peers: Vec<NodeId> = self
                .ep
                .shard_members
                .iter()
                .copied()
                .filter(|m| *m != self.id)
                .collect();
            self.send_range(&peers, shard, first, last);
        }
    }

    /// Sends my stream's `from..to_excl` to each of `to`, in batches of at most
    /// `batch_messages_max`; each batch is built once and shared by every peer.
    fn send_range(&mut self, to: &[NodeId], shard: ShardId, from: u64, to_excl: u64) {
        let mut i = from.max(self.ep.sent_base);
        while i < to_excl {
            let end = to_excl.min(i + self.cfg.batch_messages_max as u64);
            let msgs: Vec<DataMsg> = (i..end)
                .map(|j| self.ep.sent[(j - self.ep.sent_base) as usize].msg.clone())
                .collect();
            let batch = DataBatch {
                epoch: self.view.epoch,
                shard,
                sender_rank: self.ep.rank as u32,
                first_index: i,
                msgs,
            };
            let batch = Arc::new(batch);
            for &p in to {
                self.actions.push_back(Action::Send {
                    to: p,
                    msg: Message::Data(batch.clone()),
                });
            }
            i = end;
        }
        for &p in to {
            self.ep.last_data_us.insert(p, self.now_us);
        }
    }

    fn retransmit(&mut self) {
        let Some(shard) = self.ep.shard else { return };
        let me = self.ep.rank;
        let next = self.ep.next_index();
        let peers: Vec<NodeId> = self
            .ep
            .shard_members
            .iter()
            .copied()
            .filter(|m| *m != self.id)
            .collect();
        for p in peers {
            let theirs = self
                .ep
                .rows
                .get(&p)
                .and_then(|r| r.received.get(me).copied())
                .unwrap_or(0);
            let last = self.ep.last_data_us.get(&p).copied().unwrap_or(0);
            if theirs < next && self.now_us >= last + self.cfg.retransmit_us {
                let upto = next.min(theirs + self.cfg.batch_messages_max as u64);
                self.send_range(&[p], shard, theirs, upto);
            }
        }
    }

    fn resend_snapshot(&mut self) {
        let Some(snap) = self.ep.snapshot.clone() else {
            return;
        };
        let waiting: Vec<NodeId> = self
            .ep
            .snapshot_waiting
            .iter()
            .copied()
            .filter(|m| !self.ep.rows.get(m).is_some_and(|r| r.state_ready))
            .collect();
        self.ep.snapshot_waiting = waiting.clone();
        if waiting.is_empty() || self.now_us < self.ep.snapshot_sent_us + self.cfg.retransmit_us {
            return;
        }
        self.ep.snapshot_sent_us = self.now_us;
        for m in waiting {
            self.actions.push_back(Action::Send {
                to: m,
                msg: Message::State(snap.clone()),
            });
        }
    }

    /// For sender rank r: the minimum received count over the shard (the SST column minimum).
    fn stable_received(&self, r: usize) -> u64 {
        let mut min = self.ep.received(r);
        for m in &self.ep.shard_members {
            if *m == self.id {
                continue;
            }
            let c = self
                .ep
                .rows
                .get(m)
                .and_then(|row| row.received.get(r).copied())
                .unwrap_or(0);
            min = min.min(c);
        }
        min
    }

    fn deliver_stable(&mut self) {
        if !self.ep.state_ready || self.ep.shard.is_none() {
            return;
        }
        let n = self.ep.n();
        let stable: Vec<u64> = (0..n as usize)
            .map(|r| {
                if self.bugs.deliver_unstable {
                    self.ep.received(r)
                } else {
                    self.stable_received(r)
                }
            })
            .collect();
        let mut swapped = false;
        loop {
            let q = self.ep.delivered;
            let (k, r) = (q / n, (q % n) as usize);
            if k >= stable[r] {
                break;
            }
            if self.bugs.deliver_out_of_order && !swapped {
                let q2 = q + 1;
                let (k2, r2) = (q2 / n, (q2 % n) as usize);
                let both_app = |me: &Self, k: u64, r: usize| {
                    me.ep
                        .held(r, k)
                        .is_some_and(|m| matches!(m, DataMsg::App { .. }))
                };
                if k2 < stable[r2] && both_app(self, k, r) && both_app(self, k2, r2) {
                    swapped = true;
                    self.ep.delivered = q2;
                    self.deliver_position_at(q2, q2);
                    self.ep.delivered = q;
                    self.deliver_position_at(q, q + 2);
                    continue;
                }
            }
            if !self.deliver_position(q) {
                break;
            }
        }
        if self.cfg.durable && self.last_version > self.persist_requested {
            self.persist_requested = self.last_version;
            if let Some(s) = self.ep.shard {
                self.actions.push_back(Action::Persist {
                    shard: s,
                    upto: self.last_version,
                });
            }
        }
    }

    fn deliver_position(&mut self, q: u64) -> bool {
        self.deliver_position_at(q, q + 1)
    }

    /// Delivers position `q` (must be held) and sets the delivered count to `next`.
    fn deliver_position_at(&mut self, q: u64, next: u64) -> bool {
        let n = self.ep.n();
        let (k, r) = (q / n, (q % n) as usize);
        // A peer's message is taken, not cloned: a delivered position is never read again
        // (`prune` drops it). An own message stays in `sent` for retransmission until it is
        // delivered everywhere: its payload is shared.
        let msg = if r == self.ep.rank {
            self.ep.held(r, k).cloned()
        } else {
            self.ep.recv[r].take(k)
        };
        let Some(msg) = msg else {
            return false;
        };
        self.ep.delivered = next;
        self.row_dirty = true;
        if let DataMsg::App { id, ts, payload } = msg {
            let stamped = if self.bugs.ts_no_bump {
                ts
            } else {
                ts.max(self.last_ts.succ())
            };
            self.last_ts = stamped;
            let version = Version {
                epoch: self.view.epoch,
                seq: q,
            };
            self.last_version = version;
            let shard = self.ep.shard.unwrap_or(0);
            self.actions.push_back(Action::Deliver(Delivery {
                shard,
                version,
                ts: stamped,
                id,
                payload,
            }));
        }
        true
    }

    fn min_delivered_all(&self) -> u64 {
        let mut min = self.ep.delivered;
        for m in &self.ep.shard_members {
            if *m != self.id {
                min = min.min(self.ep.rows.get(m).map(|r| r.delivered).unwrap_or(0));
            }
        }
        min
    }

    /// Drops received messages already delivered here and own messages delivered everywhere.
    fn prune(&mut self) {
        let n = self.ep.n();
        if n == 0 {
            return;
        }
        let d = self.ep.delivered;
        for r in 0..n as usize {
            // Index k of rank r is delivered iff k*n + r < d.
            let done = if d > r as u64 {
                (d - r as u64).div_ceil(n)
            } else {
                0
            };
            self.ep.recv[r].prune_below(done);
        }
        let all = self.min_delivered_all();
        let me = self.ep.rank as u64;
        while let Some(front) = self.ep.sent.front() {
            if front.index * n + me < all {
                self.ep.sent.pop_front();
                self.ep.sent_base += 1;
            } else {
                break;
            }
        }
    }

    // ----------------------------------------------------------------- frontiers and rows

    /// The lowest stamp of my own messages not yet delivered here, else my clock + 1.
    /// Own messages are stamped by a strictly increasing clock in index order, so the lowest
    /// is the first application message at or after the first undelivered index: found from
    /// `frontier_cursor` (normally in one look, see `advance_frontier_cursor`).
    fn local_frontier(&self) -> Hlc {
        let f = self.clock.last().succ();
        if self.bugs.frontier_ignores_pending {
            return f;
        }
        let fast = match self.first_pending_app(self.ep.frontier_cursor) {
            (Some(ts), _) => f.min(ts),
            (None, _) => f,
        };
        debug_assert_eq!(fast, self.local_frontier_by_scan(), "incremental frontier");
        fast
    }

    /// From index `from` on (at least the first undelivered one): the stamp of the first own
    /// application message not yet delivered here, and the index where the search stopped
    /// (that message's, or the end of the stream).
    fn first_pending_app(&self, from: u64) -> (Option<Hlc>, u64) {
        let n = self.ep.n();
        let base = self.ep.sent_base;
        let mut i = if n == 0 {
            base
        } else {
            from.max(first_index_at_or_after(
                self.ep.delivered,
                n,
                self.ep.rank as u64,
            ))
            .max(base)
        };
        while let Some(s) = self.ep.sent.get((i - base) as usize) {
            if let DataMsg::App { ts, .. } = &s.msg {
                return (Some(*ts), i);
            }
            i += 1;
        }
        (None, i)
    }

    /// Moves `frontier_cursor` past the nulls and delivered messages before the first
    /// pending one. It never passes a pending application message: what it skips is a null
    /// or below the delivered count, which only grows within an epoch (the cursor is reset
    /// with the epoch state).
    fn advance_frontier_cursor(&mut self) {
        let (_, at) = self.first_pending_app(self.ep.frontier_cursor);
        self.ep.frontier_cursor = at;
    }

    /// The definition of [`Node::local_frontier`], by a scan of the window (checked against
    /// it in debug builds).
    fn local_frontier_by_scan(&self) -> Hlc {
        let mut f = self.clock.last().succ();
        let n = self.ep.n();
        for s in &self.ep.sent {
            if let DataMsg::App { ts, .. } = &s.msg {
                if s.index * n + self.ep.rank as u64 >= self.ep.delivered {
                    f = f.min(*ts);
                }
            }
        }
        f
    }

    fn frontiers(&mut self) {
        let Some(shard) = self.ep.shard else { return };
        if !self.ep.state_ready {
            return;
        }
        let mut rows: Vec<(u64, Hlc, Version)> =
            vec![(self.ep.delivered, self.local_frontier(), self.persisted)];
        let mut complete = true;
        for m in &self.ep.shard_members {
            if *m == self.id {
                continue;
            }
            match self.ep.rows.get(m) {
                Some(r) if r.state_ready => rows.push((r.delivered, r.frontier, r.persisted)),
                _ => complete = false,
            }
        }
        if !complete {
            return;
        }
        let max_delivered = rows.iter().map(|r| r.0).max().unwrap_or(0);
        let min_persisted = rows.iter().map(|r| r.2).min().unwrap_or_default();
        let caught_up = self.ep.delivered >= max_delivered || self.bugs.frontier_before_delivered;
        // Durable mode: a timestamp becomes final only once everything delivered here is on
        // disk at every member, so a total shutdown cannot take back an answer given below
        // the frontier (the restart keeps at least the global persistence frontier).
        let durable_ok = !self.cfg.durable || min_persisted >= self.last_version;
        if caught_up && durable_ok && !self.ep.wedged {
            let f = rows.iter().map(|r| r.1).min().unwrap_or_default();
            if f > self.stability_frontier {
                self.stability_frontier = f;
                self.actions
                    .push_back(Action::StabilityFrontier { shard, ts: f });
            }
        }
        if self.cfg.durable {
            let pf = if self.bugs.frontier_uses_max {
                rows.iter().map(|r| r.2).max().unwrap_or_default()
            } else {
                min_persisted
            };
            if pf > self.persistence_frontier {
                self.persistence_frontier = pf;
                self.actions
                    .push_back(Action::PersistenceFrontier { shard, version: pf });
            }
        }
    }

    fn my_row(&self) -> Arc<Row> {
        let n = self.ep.shard_members.len();
        Arc::new(Row {
            epoch: self.view.epoch,
            from: self.id,
            row_seq: self.row_seq,
            received: (0..n).map(|r| self.ep.received(r)).collect(),
            delivered: self.ep.delivered,
            persisted: self.persisted,
            frontier: self.local_frontier(),
            // A restarting member reports whether its durable log is its shard's state.
            state_ready: self.ep.state_ready || (self.restarting && self.restart_claim),
            leaving: self.leaving_now(),
            wedged: self.ep.wedged,
            restarting: self.restarting,
            suspected: self.ep.suspected.iter().copied().collect(),
            joiners: self.joiners.iter().copied().collect(),
            promised: self.ep.promised,
            accepted: self.ep.accepted.clone(),
            proposing: self
                .ep
                .proposer
                .as_ref()
                .map(|p| (p.ballot, p.value.clone())),
            decided: self.ep.decided.clone(),
            installed_by: self.ep.installed_by.clone(),
        })
    }

    fn push_row_if_dirty(&mut self) {
        if !self.row_dirty || self.status != Status::Member {
            return;
        }
        self.row_dirty = false;
        self.row_seq += 1;
        self.last_row_push_us = self.now_us;
        let row = self.my_row();
        for &m in &self.view.members {
            if m != self.id {
                self.actions.push_back(Action::Send {
                    to: m,
                    msg: Message::Row(row.clone()),
                });
            }
        }
    }

    /// A node wedged for long may have been left behind by views it never heard of (its
    /// whole view moved on or is gone). The joiners it has heard of may be members of those
    /// views: show them our row; a member of a newer view answers with its own, from which
    /// we learn the decision or that we were removed.
    fn probe_for_newer_views(&mut self) {
        let stuck_us = self.now_us.saturating_sub(self.ep.started_us);
        if !self.ep.wedged
            || stuck_us < 4 * self.cfg.suspect_timeout_us
            || self.now_us < self.last_row_push_us + self.cfg.heartbeat_us
        {
            return;
        }
        let row = self.my_row();
        for &j in &self.joiners {
            self.actions.push_back(Action::Send {
                to: j,
                msg: Message::Row(row.clone()),
            });
        }
    }

    fn send_joins(&mut self) {
        if let Status::Joining(contacts) = &self.status {
            for &c in contacts {
                self.actions.push_back(Action::Send {
                    to: c,
                    msg: Message::Join { from: self.id },
                });
            }
        }
    }

    /// Next views this node is proposing, accepting or has accepted
    /// (for the simulator's fault budget: it must not crash a majority of a view that may
    /// be about to install).
    #[doc(hidden)]
    pub fn pending_next_views(&self) -> Vec<Arc<Proposal>> {
        let mut out = Vec::new();
        if let Some(v) = self.ep.proposer.as_ref().and_then(|p| p.value.as_ref()) {
            out.push(v.clone());
        }
        if let Some((_, v)) = &self.ep.accepted {
            out.push(v.clone());
        }
        if let Some((_, _, v)) = &self.ep.accept_inflight {
            out.push(v.clone());
        }
        if let Some(v) = &self.ep.decided {
            out.push(v.clone());
        }
        out
    }

    /// One line of internal state, for debugging simulator failures.
    #[doc(hidden)]
    pub fn debug_summary(&self) -> String {
        format!(
            "{} {:?} e={} shard={:?} wedged={} ready={} susp={:?} joiners={:?} promised={:?} accepted={:?} proposer={:?} decided={} inflight={:?}/{:?} leave={} restarting={} claim={} fresh={:?} rows={:?}",
            self.id,
            self.status,
            self.view.epoch,
            self.ep.shard,
            self.ep.wedged,
            self.ep.state_ready,
            self.ep.suspected,
            self.joiners,
            self.ep.promised,
            self.ep.accepted.as_ref().map(|a| a.0),
            self.ep.proposer.as_ref().map(|p| (p.ballot, p.promises.keys().collect::<Vec<_>>(), p.value.as_ref().map(|v| v.members.clone()))),
            self.ep.decided.is_some(),
            self.ep.accept_inflight.as_ref().map(|a| a.1),
            self.ep.decision_inflight,
            self.leave_requested,
            self.restarting,
            self.restart_claim,
            self.fresh_proposal().map(|p| (p.members.clone(), p.sources.clone())),
            self.ep.rows.iter().map(|(k, r)| (k.0, r.promised.round, r.promised.node, r.wedged, r.suspected.clone(), r.accepted.as_ref().map(|a| a.0))).collect::<Vec<_>>(),
        )
    }

    // ----------------------------------------------------------------- invariants

    /// Checks the internal invariants of this node; the simulator calls it after every step.
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.status != Status::Member {
            return Ok(());
        }
        let n = self.ep.n();
        if self.ep.shard.is_some() {
            if self.ep.recv.len() as u64 != n {
                return Err("receive buffers do not match the shard size".into());
            }
            if self.ep.shard_members.get(self.ep.rank) != Some(&self.id) {
                return Err("own rank does not point at self".into());
            }
            for (i, s) in self.ep.sent.iter().enumerate() {
                if s.index != self.ep.sent_base + i as u64 {
                    return Err(format!("sent stream not contiguous at {i}"));
                }
            }
            if self.ep.received(self.ep.rank) != self.ep.next_index() {
                return Err("own stream not counted as received".into());
            }
            // Delivered never passes what is held.
            let d = self.ep.delivered;
            for r in 0..n as usize {
                let delivered_of_r = if d > r as u64 {
                    (d - r as u64).div_ceil(n)
                } else {
                    0
                };
                if !self.ep.wedged
                    && self.ep.decided.is_none()
                    && delivered_of_r > self.ep.received(r)
                {
                    return Err(format!(
                        "delivered {delivered_of_r} of rank {r} but received {}",
                        self.ep.received(r)
                    ));
                }
            }
        }
        if let Some((b, _)) = &self.ep.accepted {
            if *b > self.ep.promised {
                return Err("accepted a ballot above the promise".into());
            }
        }
        let window = if self.bugs.window_double {
            2 * self.cfg.window
        } else {
            self.cfg.window
        };
        if self.outstanding() > window {
            return Err(format!(
                "outstanding {} beyond window {window}",
                self.outstanding()
            ));
        }
        if self.stability_frontier > self.clock.last().succ() && !self.bugs.frontier_ignores_pending
        {
            return Err("stability frontier ahead of the local clock".into());
        }
        Ok(())
    }
}

/// The first index `k` of sender rank `rank` (of `n`) whose position `k·n + rank` is at least
/// `pos`.
fn first_index_at_or_after(pos: u64, n: u64, rank: u64) -> u64 {
    if pos > rank {
        (pos - rank).div_ceil(n)
    } else {
        0
    }
}
