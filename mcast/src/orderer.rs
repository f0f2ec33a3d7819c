//! The store's ordering seam: what `storage`/`broker` will use to get operations
//! replicated in one total order per shard.
//!
//! The store does not see views, nulls or SST rows. It submits opaque operation bytes to
//! the shard that owns the key (`layout::key_to_shard`), and receives, on every replica of
//! that shard, the same operations in the same order, each with a [`Version`] and an
//! [`Hlc`] timestamp that strictly increase in delivery order. Applying them
//! deterministically keeps the replicas identical (that is how `cput` gets one answer
//! everywhere). The broker implements [`Orderer`] by driving a [`crate::Node`] (or, for
//! a single-node broker, by [`LocalOrderer`], which orders trivially).

use std::collections::VecDeque;

use bytes::Bytes;

use crate::action::Delivery;
use crate::error::Error;
use crate::hlc::{Hlc, HlcClock};
use crate::types::{MsgId, NodeId, ShardId, Version};

/// An event the store consumes, in order, from its orderer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderedEvent {
    /// Apply this operation (same order, version and timestamp on every replica).
    Op(Delivery),
    /// Replace the shard's state with this snapshot (a new replica's catch-up); the next
    /// `Op` follows `version`.
    Snapshot {
        /// Shard.
        shard: ShardId,
        /// Last version covered.
        version: Version,
        /// The bytes produced by the source's `Orderer::provide_snapshot` caller.
        data: Bytes,
    },
    /// Capture the shard's state now and hand it to `provide_snapshot`.
    SnapshotWanted {
        /// Shard.
        shard: ShardId,
        /// Epoch to pass back.
        epoch: u64,
    },
    /// Reads at a time below `ts` are final on this replica.
    Stable {
        /// Shard.
        shard: ShardId,
        /// Stability frontier.
        ts: Hlc,
    },
    /// Every replica has flushed up to `version` (durable pools).
    Durable {
        /// Shard.
        shard: ShardId,
        /// Persistence frontier.
        version: Version,
    },
}

/// A replicated orderer of one shard's operations.
pub trait Orderer {
    /// Submits an operation. `Err(WouldBlock)` is backpressure: nothing was queued, retry
    /// after `poll_event` returns more deliveries. The returned id comes back in the
    /// `Delivery` so the caller can complete the request (with its version and time).
    fn submit(&mut self, now_us: u64, op: Bytes) -> Result<MsgId, Error>;
    /// Next ordered event, if any.
    fn poll_event(&mut self) -> Option<OrderedEvent>;
    /// Answers a `SnapshotWanted`.
    fn provide_snapshot(&mut self, now_us: u64, epoch: u64, shard: ShardId, data: Bytes);
}

/// A one-replica orderer (no network): delivers every submission at once, with versions
/// `(1, 0), (1, 1), …` and a strictly increasing HLC. For single-node brokers and tests.
#[derive(Debug)]
pub struct LocalOrderer {
    me: NodeId,
    shard: ShardId,
    seq: u64,
    clock: HlcClock,
    last_ts: Hlc,
    events: VecDeque<OrderedEvent>,
    window: usize,
}

impl LocalOrderer {
    /// An orderer for `shard` on node `me` holding at most `window` undrained deliveries.
    pub fn new(me: NodeId, shard: ShardId, window: usize) -> Self {
        LocalOrderer {
            me,
            shard,
            seq: 0,
            clock: HlcClock::default(),
            last_ts: Hlc::default(),
            events: VecDeque::new(),
            window: window.max(1),
        }
    }
}

impl Orderer for LocalOrderer {
    fn submit(&mut self, now_us: u64, op: Bytes) -> Result<MsgId, Error> {
        if self.events.len() >= self.window {
            return Err(Error::WouldBlock);
        }
        let id = MsgId {
            sender: self.me,
            seq: self.seq,
        };
        let ts = self.clock.tick(now_us).max(self.last_ts.succ());
        self.last_ts = ts;
        self.events.push_back(OrderedEvent::Op(Delivery {
            shard: self.shard,
            version: Version {
                epoch: 1,
                seq: self.seq,
            },
            ts,
            id,
            payload: op,
        }));
        self.events.push_back(OrderedEvent::Stable {
            shard: self.shard,
            ts: ts.succ(),
        });
        self.seq += 1;
        Ok(id)
    }
    fn poll_event(&mut self) -> Option<OrderedEvent> {
        self.events.pop_front()
    }
    fn provide_snapshot(&mut self, _now_us: u64, _epoch: u64, _shard: ShardId, _data: Bytes) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn local_orderer_orders_and_backpressures() {
        let mut o = LocalOrderer::new(NodeId(1), 0, 4);
        let a = o.submit(10, Bytes::from_static(b"a")).unwrap();
        let b = o.submit(10, Bytes::from_static(b"b")).unwrap();
        assert_eq!(
            o.submit(10, Bytes::from_static(b"c")),
            Err(Error::WouldBlock)
        );
        let mut ops = Vec::new();
        while let Some(e) = o.poll_event() {
            if let OrderedEvent::Op(d) = e {
                ops.push(d);
            }
        }
        assert_eq!(ops.len(), 2);
        assert_eq!((ops[0].id, ops[1].id), (a, b));
        assert!(ops[0].version < ops[1].version && ops[0].ts < ops[1].ts);
    }
}
