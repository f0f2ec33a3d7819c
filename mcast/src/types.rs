//! Small value types shared by every module: ids, versions, ballots.

use std::fmt;

/// A member's identity. Stable for the life of one process incarnation; a node that
/// lost its volatile state rejoins under a fresh id (or the same id once it was removed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
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
