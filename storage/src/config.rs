//! Store configuration: a plain struct with defaults and `validate()`.

use crate::error::StorageError;

/// Most shards a store may have.
pub const SHARDS_MAX: u32 = 4096;
/// Most pools a store holds.
pub const POOLS_MAX_DEFAULT: usize = 10_000;

/// How a store is laid out and bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Number of shards (keys map to shards by a stable hash of pool and key).
    pub shards: u32,
    /// Most events kept per shard in the recent-event ring watchers read from.
    pub watch_ring_events_max: usize,
    /// Most value bytes kept per shard in that ring (the ring keeps at least one event).
    pub watch_ring_bytes_max: usize,
    /// Most entries one `Watch::poll` returns.
    pub watch_poll_events_max: usize,
    /// Most pools.
    pub pools_max: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            shards: 8,
            watch_ring_events_max: 4096,
            watch_ring_bytes_max: 64 * 1024 * 1024,
            watch_poll_events_max: 1024,
            pools_max: POOLS_MAX_DEFAULT,
        }
    }
}

impl StoreConfig {
    /// Checks every field is in range.
    pub fn validate(&self) -> Result<(), StorageError> {
        if self.shards == 0 || self.shards > SHARDS_MAX {
            return Err(StorageError::Config(format!(
                "shards must be 1..={SHARDS_MAX}, got {}",
                self.shards
            )));
        }
        if self.watch_ring_events_max == 0 {
            return Err(StorageError::Config(
                "watch_ring_events_max must be > 0".into(),
            ));
        }
        if self.watch_poll_events_max == 0 {
            return Err(StorageError::Config(
                "watch_poll_events_max must be > 0".into(),
            ));
        }
        if self.pools_max == 0 {
            return Err(StorageError::Config("pools_max must be > 0".into()));
        }
        Ok(())
    }
}
