//! Plain configuration structs with defaults and `validate()`.

use crate::error::Error;

/// One shard's size bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardSpec {
    /// Below this many members the view is inadequate and is not installed (the group
    /// stays wedged and waits for joins).
    pub min_members: usize,
    /// Extra nodes are not added beyond this.
    pub max_members: usize,
}

/// The shard layout of the (single) replicated subgroup. Every shard member is a sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Shards in index order.
    pub shards: Vec<ShardSpec>,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            shards: vec![ShardSpec {
                min_members: 1,
                max_members: 3,
            }],
        }
    }
}

impl Layout {
    /// A layout of `n` shards with the same bounds.
    pub fn uniform(n: usize, min_members: usize, max_members: usize) -> Self {
        Layout {
            shards: vec![
                ShardSpec {
                    min_members,
                    max_members
                };
                n
            ],
        }
    }
    /// Checks the bounds.
    pub fn validate(&self) -> Result<(), Error> {
        if self.shards.is_empty() || self.shards.len() > crate::limits::SHARDS_MAX {
            return Err(Error::InvalidConfig(format!(
                "shard count {} not in 1..={}",
                self.shards.len(),
                crate::limits::SHARDS_MAX
            )));
        }
        for (i, s) in self.shards.iter().enumerate() {
            if s.min_members == 0
                || s.min_members > s.max_members
                || s.max_members > crate::limits::SHARD_MEMBERS_MAX
            {
                return Err(Error::InvalidConfig(format!(
                    "shard {i}: bad bounds {}..={}",
                    s.min_members, s.max_members
                )));
            }
        }
        Ok(())
    }
}

/// Timing, window and mode settings. Times are microseconds of the driver's clock
/// (the same clock passed as `now_us` to every input).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The shard layout (must be identical on every node).
    pub layout: Layout,
    /// W: at most this many of a sender's own messages may be not yet delivered at every
    /// shard member (queued ones included). `send` beyond it returns `WouldBlock`.
    pub window: usize,
    /// How often a row is re-pushed even without change (the heartbeat).
    pub heartbeat_us: u64,
    /// A member not heard from for this long is suspected.
    pub suspect_timeout_us: u64,
    /// A receiver lagging behind what we sent for this long gets the missing messages again.
    pub retransmit_us: u64,
    /// A proposer that has not decided within this long restarts with a higher ballot;
    /// it also stops waiting for promises from slow unsuspected members after this long.
    pub view_change_retry_us: u64,
    /// Largest accepted application payload.
    pub payload_bytes_max: usize,
    /// Most messages carried by one data batch (opportunistic batching never waits to fill it).
    pub batch_messages_max: usize,
    /// Durable mode: deliveries are followed by `Action::Persist` and the persisted counters
    /// drive the global persistence frontier.
    pub durable: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            layout: Layout::default(),
            window: 16,
            heartbeat_us: 10_000,
            suspect_timeout_us: 100_000,
            retransmit_us: 30_000,
            view_change_retry_us: 300_000,
            payload_bytes_max: 1 << 20,
            batch_messages_max: 256,
            durable: false,
        }
    }
}

impl Config {
    /// Checks ranges and relations between fields.
    pub fn validate(&self) -> Result<(), Error> {
        self.layout.validate()?;
        if self.window == 0 || self.window > crate::limits::WINDOW_MAX {
            return Err(Error::InvalidConfig(format!(
                "window {} not in 1..={}",
                self.window,
                crate::limits::WINDOW_MAX
            )));
        }
        if self.heartbeat_us == 0 || self.suspect_timeout_us <= self.heartbeat_us {
            return Err(Error::InvalidConfig(
                "need 0 < heartbeat_us < suspect_timeout_us".into(),
            ));
        }
        if self.retransmit_us == 0 || self.view_change_retry_us == 0 {
            return Err(Error::InvalidConfig(
                "retransmit_us and view_change_retry_us must be > 0".into(),
            ));
        }
        if self.payload_bytes_max == 0 || self.payload_bytes_max > crate::limits::PAYLOAD_BYTES_MAX
        {
            return Err(Error::InvalidConfig(
                "payload_bytes_max out of range".into(),
            ));
        }
        if self.batch_messages_max == 0
            || self.batch_messages_max > crate::limits::BATCH_MESSAGES_MAX
        {
            return Err(Error::InvalidConfig(
                "batch_messages_max out of range".into(),
            ));
        }
        Ok(())
    }
}
