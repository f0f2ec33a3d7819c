//! Named limits. Every queue, batch and wire length is bounded by one of these.

/// Most shards in a layout.
pub const SHARDS_MAX: usize = 1024;
/// Most members of one shard.
pub const SHARD_MEMBERS_MAX: usize = 64;
/// Most members of a view.
pub const VIEW_MEMBERS_MAX: usize = 4096;
/// Largest send window.
pub const WINDOW_MAX: usize = 65_536;
/// Largest payload any config may allow (64 MiB).
pub const PAYLOAD_BYTES_MAX: usize = 64 << 20;
/// Largest batch of data messages.
pub const BATCH_MESSAGES_MAX: usize = 4096;
/// Joiners admitted by one view change; the rest wait for the next one.
pub const JOINS_PER_VIEW_MAX: usize = 64;
/// Pending join requests remembered by one member.
pub const PENDING_JOINERS_MAX: usize = 256;
/// Largest state-transfer snapshot (256 MiB).
pub const SNAPSHOT_BYTES_MAX: usize = 256 << 20;
/// Largest encoded frame (a snapshot plus headers).
pub const FRAME_BYTES_MAX: usize = SNAPSHOT_BYTES_MAX + (1 << 20);
