//! # squall-mcast: Derecho-style ordered multicast with managed membership
//!
//! A sans-IO protocol core: [`Node`] is a deterministic state machine with no sockets, no
//! clock reads and no randomness. Time comes in with every input (`now_us`, microseconds of
//! the driver's wall clock, also used as the physical part of the hybrid clock).
//!
//! ## Modules
//! | module | job |
//! |---|---|
//! | [`node`] | the state machine: ordering, SST rows, view change, joins, frontiers |
//! | [`messages`] | what nodes send each other (data batches, SST rows, join, state transfer) |
//! | [`codec`] | the wire format of messages: checksummed, length-limited frames |
//! | [`action`] | what the core asks the driver to do |
//! | [`config`] | [`Config`] and the shard [`Layout`], with `validate()` |
//! | [`layout`] | the fixed key → shard hash (FNV-1a 64) and the shard allocator |
//! | [`hlc`] | the hybrid logical clock |
//! | [`orderer`] | the store's ordering seam ([`Orderer`]) |
//! | [`limits`] | named limits |
//! | `net` | (feature `tcp`, default) the transport trait, the TCP transport and the driver that runs a node between processes; the only module with tokio, sockets and clock reads |
//!
//! ## Driving contract
//! The driver owns the transport, the timers, the disk and the application. It:
//! 1. creates a node with [`Node::new_initial`] (same member list everywhere),
//!    [`Node::new_joiner`], or, after a crash in durable mode, [`Node::restart`] from what its
//!    disk holds ([`Recovered`]: every control record written, the delivered log's end, a boot
//!    counter); a node with nothing usable on disk rejoins as [`NodeId::next_incarnation`];
//! 2. feeds inputs, each with the current time: [`Node::handle_message`] for every message
//!    from a peer (the transport vouches for the sender id; [`Node::handle_messages`] for
//!    several that arrived together: one protocol step for all of them), [`Node::tick`] at
//!    [`Node::next_timeout`] (or more often), [`Node::send`] for application messages,
//!    [`Node::peer_lost`] when a connection breaks (a suspicion, never silent loss),
//!    [`Node::persisted`] / [`Node::control_persisted`] when a requested write is durable,
//!    [`Node::snapshot_ready`] answering a `CaptureSnapshot`, [`Node::leave`];
//! 3. after **every** input drains [`Node::poll_action`] until `None` and carries the
//!    actions out **in order**: `Send` (best effort; loss is repaired by the core),
//!    `Deliver` (apply to the application), `PersistControl` (write, then confirm),
//!    `Persist` (flush the delivered log, then confirm), `InstallView`,
//!    `CaptureSnapshot` (snapshot the application *before* carrying out any later action,
//!    then call `snapshot_ready`), `InstallSnapshot`, the two frontier notices, and
//!    `Evicted`/`Left` (stop feeding the node).
//!
//! ## Protocol in one page
//! * **Order.** Each shard's members are its senders, ranked. Message *k* of rank *r* has
//!   position `k·n + r`. A member delivers position *q* once every member's received
//!   counter for that sender covers it (the minimum over the SST rows). A sender whose
//!   stream would hold others back sends nulls (only in reaction to traffic). Batches are
//!   opportunistic: whatever is queued when the node runs.
//! * **Flow control.** At most `window` own messages not yet delivered at every member;
//!   `send` beyond it returns [`Error::WouldBlock`], never drops.
//! * **Control plane.** Each node's [`Row`] (received counters, delivered, persisted,
//!   frontier, suspicions, joins, Paxos state) is pushed on change and every heartbeat.
//! * **View change.** A silent member (or a broken connection) is suspected; suspicion
//!   spreads through rows; members wedge (freeze their received counters). The
//!   lowest-ranked unsuspected member runs single-decree Paxos over the rows, with the
//!   members of the closing view as acceptors: phase 1 collects frozen counters, the value
//!   is the next view plus the per-shard **ragged trim** (per sender, the minimum received
//!   count over surviving shard members), or the highest-ballot accepted value if any
//!   promise carries one (leader takeover). Acceptors persist the value before accepting;
//!   it is decided with a **strict majority of the closing view** (a minority stays
//!   wedged) and once every unsuspected survivor accepted. Each member makes the decision
//!   durable, delivers up to the trim in position order, requeues its own trimmed messages
//!   at the head of its queue (resent once, in FIFO order, in the next epoch), and
//!   installs the next view.
//! * **Joins** ride the next view change; the lowest-ranked surviving member of the
//!   joiner's shard captures a snapshot at the exact end of the old epoch and sends it; the
//!   joiner delivers nothing and sends no data before installing it.
//! * **Versions and time.** A delivery's version is `(epoch, position)`; its timestamp is
//!   `max(sender HLC, previous timestamp + 1)`, so identical at every replica and strictly
//!   increasing per shard. The stability frontier is the minimum over members of each
//!   member's lowest pending own timestamp (or clock), published only when this node has
//!   delivered as far as any member reported.
//! * **Durability.** In durable mode the persisted counters give the global persistence
//!   frontier (the minimum over the shard); Paxos promises, accepts and decisions are
//!   written before they are used. After a total shutdown, restarted members re-enter their
//!   last view wedged; a Paxos round of a strict majority of it (and a member per shard)
//!   picks per shard the most advanced durable log as the source and repairs the others
//!   from it by state transfer.
//!
//! See `docs/MCAST.md` for the invariants and what is not built yet.

pub mod action;
pub mod codec;
pub mod config;
pub mod error;
pub mod hlc;
pub mod layout;
pub mod limits;
pub mod messages;
#[cfg(feature = "tcp")]
pub mod net;
pub mod node;
pub mod orderer;
mod recv;
pub mod types;

pub use action::{Action, ControlRecord, Delivery, ViewInfo};
pub use config::{Config, Layout, ShardSpec};
pub use error::Error;
pub use hlc::{Hlc, HlcClock};
pub use layout::{fnv1a64, key_to_shard};
pub use messages::{DataBatch, DataMsg, Message, Proposal, Row, StateTransfer};
pub use node::{Node, PlantedBugs, Recovered, Status};
pub use orderer::{LocalOrderer, OrderedEvent, Orderer};
pub use types::{Ballot, Epoch, MsgId, NodeId, ShardId, Version};
