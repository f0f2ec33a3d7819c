//! Small value types shared by every module: ids, versions, ballots.

use std::fmt;

/// A member's identity: the configured node number (`base`, low 48 bits) plus an
/// incarnation number (high 16 bits, 0 for a first start).
///
/// A process that lost its volatile state (crashed without durable state, or whose durable
/// state no longer matches any view) rejoins under **its same base id with the next
/// incarnation**, as Derecho lets a restarted process rejoin as a new incarnation. To the
/// protocol the two incarnations are different members: the old one is removed by a view
/// change (a `Join` from a newer incarnation makes members suspect the older one at once),
/// the new one is admitted as a joiner with state transfer, and message ids never collide
/// because [`MsgId::sender`] carries the incarnation. A node restarting from its own disk
/// after a total shutdown ([`crate::Node::restart`]) keeps its full id, incarnation
/// included: it is the same Paxos acceptor. Transports address peers by [`NodeId::base`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

impl NodeId {
    /// Bits of the id below the incarnation.
    pub const BASE_BITS: u32 = 48;

    /// The id of incarnation `incarnation` of node `base` (`base` must fit 48 bits).
    pub fn new(base: u64, incarnation: u16) -> NodeId {
        NodeId((base & ((1 << Self::BASE_BITS) - 1)) | (u64::from(incarnation) << Self::BASE_BITS))
    }
    /// The configured node number (what a transport uses to find the peer's address).
    pub fn base(self) -> u64 {
        self.0 & ((1 << Self::BASE_BITS) - 1)
    }
    /// The incarnation (0 for a first start).
    pub fn incarnation(self) -> u16 {
        (self.0 >> Self::BASE_BITS) as u16
    }
    /// The same node's next incarnation (saturates at the last one).
    pub fn next_incarnation(self) -> NodeId {
        NodeId::new(self.base(), self.incarnation().saturating_add(1))
    }
    /// True when `other` is a later incarnation of the same node.
    pub fn superseded_by(self, other: NodeId) -> bool {
        self.base() == other.base() && other.incarnation() > self.incarnation()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.incarnation() == 0 {
            write!(f, "n{}", self.0)
        } else {
            write!(f, "n{}#{}", self.base(), self.incarnation())
        }
    }
}

/// Index of a shard in the layout (0-based).
pub type ShardId = u32;

/// Epoch (view id). Epoch 1 is the bootstrap view; every installed view is the previous plus one.
pub type Epoch = u64;

/// The identity of one application message: its sender and the sender's local counter.
/// It never changes when a trimmed message is resent in a later epoch, so the
/// "delivered exactly once" property is stated over it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MsgId {
    /// The node that called `send`.
    pub sender: NodeId,
    /// 0, 1, 2, … per sender incarnation, in `send` order.
    pub seq: u64,
}

/// Version of a delivered message: epoch-major, then the global round-robin position
/// inside the epoch. Versions of one shard strictly increase in delivery order; nulls
/// consume a position but never produce a version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version {
    /// The epoch in which the message was delivered.
    pub epoch: Epoch,
    /// Its position `k * n_senders + rank` in that epoch.
    pub seq: u64,
}

impl Version {
    /// The packed form `(epoch << 32) | seq` (Derecho's `version_t`); both parts must fit 32 bits.
    pub fn packed(self) -> u64 {
        (self.epoch << 32) | (self.seq & 0xffff_ffff)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.epoch, self.seq)
    }
}

/// A Paxos ballot for one epoch's view-change decision. Ordered by round, then by the
/// proposer's id, so two proposers never share a ballot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ballot {
    /// Increases each time a proposer (re)starts; 0 means "no ballot".
    pub round: u32,
    /// The proposer.
    pub node: u64,
}

impl Ballot {
    /// True for the "nothing promised yet" ballot.
    pub fn is_zero(self) -> bool {
        self.round == 0
    }
}
