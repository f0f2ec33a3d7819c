//! Outputs of the core: what the driver must carry out, in order.

use std::sync::Arc;

use bytes::Bytes;

use crate::hlc::Hlc;
use crate::messages::{Message, Proposal};
use crate::types::{Ballot, Epoch, MsgId, NodeId, ShardId, Version};

/// One delivered application message (nulls are never delivered).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Shard whose total order this belongs to.
    pub shard: ShardId,
    /// (epoch, position): identical at every replica, strictly increasing per shard.
    pub version: Version,
    /// Hybrid timestamp: identical at every replica, strictly increasing per shard.
    pub ts: Hlc,
    /// Stable message identity (the sender and its own counter).
    pub id: MsgId,
    /// The bytes given to `send`.
    pub payload: Bytes,
}

/// The view a node just installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewInfo {
    /// The new epoch.
    pub epoch: Epoch,
    /// Members in rank order.
    pub members: Vec<NodeId>,
    /// Each shard's members in sender-rank order.
    pub shards: Vec<Vec<NodeId>>,
    /// This node's shard, if any.
    pub my_shard: Option<ShardId>,
    /// True when this node is new to its shard and must wait for `InstallSnapshot`
    /// before anything is delivered.
    pub needs_state: bool,
    /// The trim this node applied to its shard when closing the previous epoch (empty for
    /// bootstrap and joiners); exposed so tests can check trim agreement.
    pub applied_trim: Vec<u64>,
    /// Last version delivered in the previous epoch (ours), for state-transfer checks.
    pub last_version: Version,
}

/// A control record that must be durable before the core goes on (`Node::control_persisted`).
/// Keep every record (in write order): [`crate::Node::restart`] rebuilds the last view and
/// the Paxos acceptor state from them after a total shutdown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlRecord {
    /// Durable mode only: this node promises not to accept ballots below `ballot` in the
    /// view change closing `epoch` (Paxos phase 1b). Written before the promise is
    /// published, so a node restarted from disk cannot go back on it.
    Promised {
        /// The epoch whose closing decision the promise is about.
        epoch: Epoch,
        /// The promised ballot.
        ballot: Ballot,
    },
    /// This node accepts `proposal` at `ballot` (Paxos phase 2b). Written before the accept
    /// is published, so an accepted view change (and its trim) is on disk first.
    Accepted {
        /// The ballot.
        ballot: Ballot,
        /// The value.
        proposal: Arc<Proposal>,
    },
    /// This node learned the decision closing `proposal.epoch`; written before it delivers
    /// by the trim and installs the next view.
    Decided {
        /// The decision.
        proposal: Arc<Proposal>,
    },
}

/// What the core asks the driver to do. Drain them with `Node::poll_action` after every input,
/// and carry them out in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Transmit `msg` to `to` (best effort: the core retransmits what matters).
    Send {
        /// Destination.
        to: NodeId,
        /// The message.
        msg: Message,
    },
    /// Hand a message to the application, in this order.
    Deliver(Delivery),
    /// Durable mode: flush the delivered log of `shard` up to `upto`, then call
    /// `Node::persisted(now, shard, upto)`.
    Persist {
        /// Shard.
        shard: ShardId,
        /// Last version to flush.
        upto: Version,
    },
    /// Write `record` durably, then call `Node::control_persisted(now, token)`.
    PersistControl {
        /// Echo this back.
        token: u64,
        /// What to write.
        record: ControlRecord,
    },
    /// A new view is in force from here on.
    InstallView(ViewInfo),
    /// Capture the application state of `shard` right now (after every delivery emitted
    /// before this action, before any emitted after it) and pass it to
    /// `Node::snapshot_ready(now, epoch, shard, bytes)`; it is sent to the shard's new members.
    CaptureSnapshot {
        /// The epoch just installed.
        epoch: Epoch,
        /// Shard.
        shard: ShardId,
        /// The last version the snapshot covers.
        version: Version,
    },
    /// Replace the application state of `shard` with `data` (covering versions up to
    /// `version`). Deliveries follow from `version`'s successor on. In durable mode, write
    /// it and call `Node::persisted(now, shard, version)`.
    InstallSnapshot {
        /// Shard.
        shard: ShardId,
        /// Last version the snapshot covers.
        version: Version,
        /// The snapshot.
        data: bytes::Bytes,
    },
    /// Durable mode: every member of the shard has flushed up to `version` (never decreases).
    PersistenceFrontier {
        /// Shard.
        shard: ShardId,
        /// The global persistence frontier.
        version: Version,
    },
    /// Nothing will be delivered in `shard` with a timestamp below `ts`, and everything below
    /// it has been delivered here (never decreases). A read "at T" is final once T < ts.
    StabilityFrontier {
        /// Shard.
        shard: ShardId,
        /// The frontier.
        ts: Hlc,
    },
    /// The group installed a view without this node: it must stop (and may rejoin as a
    /// new joiner with empty state).
    Evicted,
    /// A graceful `leave` completed.
    Left,
}
