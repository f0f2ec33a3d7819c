//! The crate's one error type.

use crate::types::NodeId;

/// Everything the core or the codec can refuse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The send window is full (W own messages not yet delivered everywhere, or the view
    /// is changing with W queued): retry after more deliveries. Nothing was queued.
    #[error("send window full: retry later")]
    WouldBlock,
    /// This node is not (or no longer) a member of any shard that can send.
    #[error("not a shard member able to send")]
    NotASender,
    /// The node left the group or was removed from it; it accepts no more input.
    #[error("node {0} is no longer a member")]
    NotMember(NodeId),
    /// The payload is larger than `Config::payload_bytes_max`.
    #[error("payload of {size} bytes exceeds the limit of {max}")]
    PayloadTooLarge {
        /// Offered size.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// A configuration value is out of range.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// A frame is shorter than its header says: read more bytes and try again.
    #[error("incomplete frame: need more bytes")]
    Incomplete,
    /// A frame is malformed (bad checksum, unknown tag, length beyond a limit).
    #[error("invalid frame: {0}")]
    InvalidFrame(&'static str),
    /// The driver's file persistence (`net::FilePersist`) failed or found a damaged file;
    /// the text names the file (and the offset, for damage).
    #[error("persistence: {0}")]
    Persist(String),
}
