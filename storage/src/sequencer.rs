//! The ordering seam: how an op gets its place in a shard's total order and is applied.
//!
//! The broker hands every mutation to a [`Sequencer`]. This crate ships [`LocalSequencer`]:
//! on a single node the shard's own lock is the order, and the shard's hybrid clock stamps the
//! op (`shard_seq` + 1; time = max(`now_us`, last + 1 logical, frontier + 1)) inside the same
//! critical section that applies it ([`Store::apply_local`]).
//!
//! The multicast issue replaces it with a sequencer that sends the op to the shard's group;
//! every replica's delivery upcall then calls [`Store::apply`] with the stamp the delivery
//! fixed — `shard_seq` from the delivery position ((epoch, seq) packed so it rises across
//! epochs), `time` from the sender's HLC ticked so it rises in delivery order — and the
//! submitting replica answers its caller with the result of its own apply. The frontier moves
//! from the group's stability/persistence frontier instead of `advance_frontier(now_us)`. The
//! store does not change: it only ever sees stamped ops in order.

use crate::error::StorageError;
use crate::store::Store;
use crate::types::{Applied, Op};

/// Orders an op in its shard and has the store apply it.
pub trait Sequencer: Send + Sync {
    /// Orders `op` (its shard is `store.shard_for(&op)`), applies it, returns what it did.
    /// `now_us` is the caller's clock reading (µs since the Unix epoch). The op must have
    /// passed `store.validate_op` first. Durability is awaited separately (`Applied::lsn`).
    fn submit(&self, store: &Store, op: Op, now_us: u64) -> Result<Applied, StorageError>;
}

/// The single-node sequencer: the shard lock orders, the shard's HLC stamps.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalSequencer;

impl Sequencer for LocalSequencer {
    fn submit(&self, store: &Store, op: Op, now_us: u64) -> Result<Applied, StorageError> {
        let shard = store.shard_for(&op);
        store.apply_local(shard, op, now_us)
    }
}
