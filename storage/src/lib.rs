//! squall-storage: the versioned, time-indexed object store and its durable log.
//!
//! Sans-IO logic: no tokio, no sockets, no clock reads — callers pass `now_us`. The log module
//! does file IO and runs one committer thread.
//!
//! * [`types`]: the public vocabulary (pools, modes, versions, hybrid timestamps, ops).
//! * [`store`]: [`Store`] — pools, sharded keys, `apply(shard, stamp, op)`, reads (latest, by
//!   version, at a time, consistent cuts), the stable frontier, invariants, digests.
//! * [`sequencer`]: the ordering seam ([`Sequencer`]) and its single-node [`LocalSequencer`].
//! * [`watch`]: [`Watch`] — replay then live, no gap and no duplicate, bounded memory.
//! * [`log`]: the durable segmented log (group commit, recovery, retention) and its file layer.
//! * [`transfer`]: shard images for state transfer (`Store::export_shard` / `import_shard`).
//! * [`owner`]: exclusive ownership of a key, arbitrated where ops are ordered.
//! * `key`, `shard`: one key's history and one shard's state (internal).
//!
//! # Driving it (what the broker does)
//!
//! 1. `Store::open(StoreConfig, LogConfig)` (or `Store::new` for volatile only);
//!    `store.set_notify(hook)` to learn when a shard changed.
//! 2. A write: `store.validate_op(&op)?`, then `sequencer.submit(&store, op, now_us)?`; if the
//!    returned `Applied::lsn` is `Some`, acknowledge only from `store.on_durable(lsn, cb)`.
//! 3. Periodically (every few ms) and before time reads: `store.advance_frontier(now_us)`.
//!    A time read that returns `NotYetStable` is retried after the shard's generation moves,
//!    until the caller's timeout.
//! 4. A watch: `store.watch(..)`, then `watch.poll(&store)`; on `Idle` wait until a generation
//!    of one of `watch.shards()` moves past the value read before the poll.

pub mod config;
pub mod error;
mod key;
pub mod log;
pub mod owner;
pub mod sequencer;
mod shard;
pub mod store;
pub mod transfer;
pub mod types;
pub mod watch;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod visibility_tests;

pub use config::StoreConfig;
pub use error::StorageError;
pub use log::{LogConfig, SyncPolicy};
pub use sequencer::{LocalSequencer, Sequencer};
pub use store::{DurableCallback, NotifyHook, Store, META_SHARD};
pub use types::*;
pub use watch::{Watch, WatchPoll};
