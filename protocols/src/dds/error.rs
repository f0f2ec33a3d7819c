//! The DDS face's error type.

use crate::node::NodeError;

/// Why a DDS face operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DdsError {
    /// The `[dds]` configuration is invalid (names what and why).
    #[error("invalid DDS configuration: {0}")]
    Config(String),
    /// A sample or key does not decode for the configured type.
    #[error("undecodable sample: {0}")]
    Undecodable(String),
    /// A value (JSON or stored bytes) does not fit the type or a limit.
    #[error("invalid value: {0}")]
    Invalid(String),
    /// rustdds refused an operation (create an entity, write).
    #[error("DDS error: {0}")]
    Dds(String),
    /// The node refused an operation.
    #[error("node error: {0}")]
    Node(#[from] NodeError),
}
