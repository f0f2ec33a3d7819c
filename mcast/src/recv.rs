//! [`RecvStream`]: the messages of one sender held by a node until it delivers them (a
//! peer's; the node's own messages are delivered from its `sent` stream).
//!
//! Messages arrive in batches (a decoded [`DataBatch`](crate::messages::DataBatch) holds up
//! to `batch_messages_max` of them) and leave one by one, in index order, at delivery. The
//! stream keeps each batch's vector as it came (a *chunk*) instead of copying every message
//! into one ring: a received batch costs one push, not one per message, and a delivered
//! chunk is freed as a whole. At 100-byte messages the per-message copies into and out of
//! a ring of tens of thousands of entries (cache misses on a working set larger than L2)
//! were a visible share of the core's time.

use std::collections::VecDeque;

use crate::messages::DataMsg;

/// A run of consecutive messages: index `first + i` is `msgs[i]`.
#[derive(Clone, Debug)]
struct Chunk {
    first: u64,
    msgs: Vec<DataMsg>,
}

impl Chunk {
    fn end(&self) -> u64 {
        self.first + self.msgs.len() as u64
    }
}

/// One sender's messages with indices `base..received()`, contiguous. Indices below
/// `base` were delivered and dropped.
#[derive(Clone, Debug, Default)]
pub(crate) struct RecvStream {
    /// Lowest index still held (everything below was pruned).
    base: u64,
    /// Chunks in index order, contiguous; the first may start below `base` (its messages
    /// before `base` are dead), none is empty.
    chunks: VecDeque<Chunk>,
}

impl RecvStream {
    /// Messages received contiguously (a count: the next index expected).
    pub(crate) fn received(&self) -> u64 {
        self.chunks.back().map_or(self.base, Chunk::end)
    }

    /// Lowest index still held.
    #[cfg(test)]
    fn base(&self) -> u64 {
        self.base
    }

    /// Appends `msgs`, whose first message has index `first`: the part at or after
    /// [`RecvStream::received`] is kept, the part before it (already held) is dropped. A
    /// batch starting beyond `received()` (a gap) is dropped whole. Returns how many
    /// messages were added.
    pub(crate) fn push_batch(&mut self, first: u64, mut msgs: Vec<DataMsg>) -> usize {
        let next = self.received();
        if first > next {
            return 0;
        }
        let skip = (next - first) as usize;
        if skip >= msgs.len() {
            return 0;
        }
        if skip > 0 {
            msgs.drain(..skip);
        }
        let added = msgs.len();
        match self.chunks.back_mut() {
            // Small batches are folded into the previous chunk: a chunk per message (as a
            // lone sender's trickle of nulls would make) would cost more than the ring.
            Some(last) if added < CHUNK_APPEND_MAX && last.msgs.len() < CHUNK_MESSAGES_MAX => {
                last.msgs.append(&mut msgs);
            }
            _ => self.chunks.push_back(Chunk { first: next, msgs }),
        }
        added
    }

    fn locate(&self, index: u64) -> Option<(usize, usize)> {
        if index < self.base || index >= self.received() {
            return None;
        }
        // Deliveries walk forward from the front: look there first.
        let c = match self.chunks.front() {
            Some(f) if index < f.end() => 0,
            _ => self.chunks.partition_point(|c| c.end() <= index),
        };
        let chunk = self.chunks.get(c)?;
        Some((c, (index - chunk.first) as usize))
    }

    /// The message with `index`, if held.
    pub(crate) fn get(&self, index: u64) -> Option<&DataMsg> {
        let (c, i) = self.locate(index)?;
        self.chunks.get(c)?.msgs.get(i)
    }

    /// Takes the message with `index` out (leaving a null in its place: a delivered
    /// position is never read again), if held.
    pub(crate) fn take(&mut self, index: u64) -> Option<DataMsg> {
        let (c, i) = self.locate(index)?;
        let m = self.chunks.get_mut(c)?.msgs.get_mut(i)?;
        Some(std::mem::replace(m, DataMsg::Null))
    }

    /// Drops every message with an index below `done` (no further than what is held).
    pub(crate) fn prune_below(&mut self, done: u64) {
        let done = done.min(self.received());
        if done <= self.base {
            return;
        }
        self.base = done;
        while self.chunks.front().is_some_and(|c| c.end() <= done) {
            self.chunks.pop_front();
        }
    }
}

/// A batch smaller than this is appended to the last chunk rather than made a chunk.
const CHUNK_APPEND_MAX: usize = 64;
/// A chunk grows by appends to at most this many messages.
const CHUNK_MESSAGES_MAX: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::Hlc;
    use crate::types::{MsgId, NodeId};
    use bytes::Bytes;

    fn app(seq: u64) -> DataMsg {
        DataMsg::App {
            id: MsgId {
                sender: NodeId(1),
                seq,
            },
            ts: Hlc::default(),
            payload: Bytes::from(seq.to_le_bytes().to_vec()),
        }
    }

    fn seq_of(m: &DataMsg) -> Option<u64> {
        match m {
            DataMsg::App { id, .. } => Some(id.seq),
            DataMsg::Null => None,
        }
    }

    #[test]
    fn batches_overlaps_gaps_take_and_prune() {
        let mut s = RecvStream::default();
        assert_eq!(s.push_batch(0, (0..100).map(app).collect()), 100);
        // Overlap: only 100..150 are new.
        assert_eq!(s.push_batch(80, (80..150).map(app).collect()), 50);
        // Gap: dropped whole.
        assert_eq!(s.push_batch(151, (151..160).map(app).collect()), 0);
        // Entirely old: nothing.
        assert_eq!(s.push_batch(10, (10..20).map(app).collect()), 0);
        assert_eq!(s.push_batch(150, vec![app(150)]), 1);
        assert_eq!(s.received(), 151);
        for i in 0..151 {
            assert_eq!(s.get(i).and_then(seq_of), Some(i), "index {i}");
        }
        assert!(s.get(151).is_none());
        assert_eq!(s.take(5).as_ref().and_then(seq_of), Some(5));
        assert_eq!(s.get(5).and_then(seq_of), None, "taken leaves a null");
        s.prune_below(120);
        assert_eq!(s.base(), 120);
        assert!(s.get(119).is_none());
        assert_eq!(s.get(120).and_then(seq_of), Some(120));
        assert_eq!(s.received(), 151);
        // Pruning never passes what is held.
        s.prune_below(1_000);
        assert_eq!((s.base(), s.received()), (151, 151));
        assert!(s.get(150).is_none());
        // After everything was pruned, the stream goes on at the same count.
        assert_eq!(s.push_batch(151, (151..153).map(app).collect()), 2);
        assert_eq!(s.get(152).and_then(seq_of), Some(152));
    }

    #[test]
    fn many_small_batches_share_chunks() {
        let mut s = RecvStream::default();
        for i in 0..10_000u64 {
            assert_eq!(s.push_batch(i, vec![app(i)]), 1);
        }
        assert!(s.chunks.len() <= 10_000 / CHUNK_MESSAGES_MAX + 1);
        for i in (0..10_000).step_by(97) {
            assert_eq!(s.get(i).and_then(seq_of), Some(i));
        }
    }
}
