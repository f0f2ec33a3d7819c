//! The Kafka face's error type.
//!
//! The crate's shared [`NodeError`](crate::NodeError) is the contract with the broker; this enum
//! covers what only the Kafka face can fail at (framing, decoding). Wire error codes are chosen in
//! the handlers, never here.

/// Why a Kafka request could not be served (the connection is closed for these).
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// A frame's length prefix is negative or larger than `socket.request.max.bytes`.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The announced length.
        len: i64,
        /// The limit.
        max: usize,
    },
    /// The request header or body does not decode at the announced version.
    #[error("malformed request (api key {api_key}, version {api_version}): {reason}")]
    Malformed {
        /// The API key.
        api_key: i16,
        /// The API version.
        api_version: i16,
        /// What the decoder said.
        reason: String,
    },
    /// An API key this broker does not serve.
    #[error("unsupported api key {0}")]
    UnsupportedApi(i16),
    /// An API version outside the advertised range (other than ApiVersions, which gets an answer).
    #[error("unsupported version {api_version} of api key {api_key}")]
    UnsupportedVersion {
        /// The API key.
        api_key: i16,
        /// The API version.
        api_version: i16,
    },
    /// A response failed to encode (a bug or a value out of the wire type's range).
    #[error("response encoding failed: {0}")]
    Encode(String),
    /// The node failed in a way no Kafka error code covers (creating the internal pools).
    #[error("node: {0}")]
    Node(crate::node::NodeError),
    /// Socket IO failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}
