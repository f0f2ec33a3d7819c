//! What nodes send each other. Two streams: the data plane ([`DataBatch`]) and the
//! control plane ([`Row`], one SST row of monotonic counters and view-change state,
//! re-pushed on every change and every heartbeat so a lost row costs nothing).

use std::sync::Arc;

use bytes::Bytes;

use crate::hlc::Hlc;
use crate::types::{Ballot, Epoch, MsgId, NodeId, ShardId, Version};

/// A view-change decision: closes epoch `epoch` and defines view `epoch + 1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// The epoch this decision closes.
    pub epoch: Epoch,
    /// Members of the next view in rank order (survivors in old rank order, then joiners).
    pub members: Vec<NodeId>,
    /// Next view: each shard's members in sender-rank order.
    pub shards: Vec<Vec<NodeId>>,
    /// Members of the next view that were not in the closed one.
    pub joiners: Vec<NodeId>,
    /// The ragged trim: for each shard of the closed epoch, for each of its sender ranks,
    /// how many of that sender's messages (indices `0..trim`) are delivered. Everything
    /// beyond is discarded (and resent in the next epoch if its sender survives).
    pub trims: Vec<Vec<u64>>,
    /// For each shard of the next view: the survivor that serves state to its new members,
    /// or `None` when the shard had no surviving members (its new members start empty).
    pub sources: Vec<Option<NodeId>>,
    /// This decision ends a restart from disk: for each shard with restarted members,
    /// `sources` names the member holding the state (in memory, else the most advanced
    /// durable log); restarted members honour `sources` only in such a decision.
    pub restart: bool,
}

impl Proposal {
    /// The epoch this decision installs.
    pub fn next_epoch(&self) -> Epoch {
        self.epoch + 1
    }
}

/// One SST row: the sender's control state for one epoch. Counters only grow inside an
/// epoch, so applying an older row after a newer one is harmless (receivers keep the newest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// Epoch the row belongs to.
    pub epoch: Epoch,
    /// Owner of the row.
    pub from: NodeId,
    /// Increases with every change, so a receiver keeps only the newest row per owner.
    pub row_seq: u64,
    /// Per sender rank of the owner's shard: messages received contiguously (a count).
    pub received: Vec<u64>,
    /// Positions of the epoch delivered by the owner (a count; nulls included).
    pub delivered: u64,
    /// Highest version the owner has flushed to its log (durable mode).
    pub persisted: Version,
    /// Owner's local stability frontier: everything it will still originate or has pending
    /// carries a timestamp ≥ this.
    pub frontier: Hlc,
    /// False for a joiner that has not yet installed its state snapshot.
    pub state_ready: bool,
    /// The owner asked to leave and has drained its own messages.
    pub leaving: bool,
    /// The owner stopped sending and delivering (its `received` is frozen).
    pub wedged: bool,
    /// The owner restarted from its disk after a crash: it holds no in-memory state of
    /// this epoch, only its durable log, which ends at `persisted` (see `Node::restart`).
    pub restarting: bool,
    /// Members the owner suspects (sorted).
    pub suspected: Vec<NodeId>,
    /// Join requests the owner has seen (sorted).
    pub joiners: Vec<NodeId>,
    /// Highest ballot promised (Paxos phase 1b).
    pub promised: Ballot,
    /// Last accepted (and persisted) ballot and value (phase 2b).
    pub accepted: Option<(Ballot, Arc<Proposal>)>,
    /// The owner's proposer state: ballot, and the value once in phase 2.
    pub proposing: Option<(Ballot, Option<Arc<Proposal>>)>,
    /// Set once the owner knows the decision closing this epoch.
    pub decided: Option<Arc<Proposal>>,
    /// The decision that created this epoch (None for the bootstrap view): lets a member
    /// that missed the decision catch up from any row of the new epoch.
    pub installed_by: Option<Arc<Proposal>>,
}

/// One application or null message in a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataMsg {
    /// Fills a round-robin slot so others are not held up; never delivered to the app.
    Null,
    /// An application message.
    App {
        /// Its stable identity.
        id: MsgId,
        /// The sender's HLC when the message got its slot in this epoch.
        ts: Hlc,
        /// Opaque bytes.
        payload: Bytes,
    },
}

/// Consecutive messages of one sender in one epoch (indices `first_index..`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataBatch {
    /// Epoch of the messages.
    pub epoch: Epoch,
    /// Shard of the sender.
    pub shard: ShardId,
    /// Sender's rank among the shard's senders.
    pub sender_rank: u32,
    /// Index of the first message.
    pub first_index: u64,
    /// The messages.
    pub msgs: Vec<DataMsg>,
}

/// State for a member new to a shard: the source's application state at the end of the
/// previous epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateTransfer {
    /// The epoch the receiver joins.
    pub epoch: Epoch,
    /// The shard.
    pub shard: ShardId,
    /// Last version included in the snapshot.
    pub version: Version,
    /// Timestamp of that version (the next delivery is stamped above it).
    pub ts: Hlc,
    /// The source's clock when it captured the snapshot (the receiver merges it).
    pub clock: Hlc,
    /// Application snapshot bytes (snapshot plus log tail, as the application encodes it).
    pub data: Bytes,
}

/// Everything that travels between nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Data plane.
    Data(Arc<DataBatch>),
    /// Control plane.
    Row(Arc<Row>),
    /// A node asks to be admitted at the next view.
    Join {
        /// The joiner.
        from: NodeId,
    },
    /// State for a new shard member.
    State(Arc<StateTransfer>),
}
