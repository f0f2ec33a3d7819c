//! The crate's one error type.

use crate::types::Stamp;

/// Why a store or log operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The pool does not exist.
    #[error("no such pool: {0}")]
    NoSuchPool(String),
    /// A pool with this name exists with a different configuration.
    #[error("pool already exists with another configuration: {0}")]
    PoolExists(String),
    /// The key, or the asked version of it, does not exist (never written, deleted, or removed
    /// by truncate, retention or compaction).
    #[error("not found")]
    NotFound,
    /// A conditional put found the key elsewhere; nothing changed.
    #[error("conditional put failed: key is at version {current:?}")]
    Conflict {
        /// The key's newest key_version (tombstones included), if any.
        current: Option<u64>,
    },
    /// The key has another live owner and the write's claim (if any) is not stronger; nothing
    /// changed.
    #[error("the key is owned by writer {owner:#018x} with strength {strength}{}", claimed.map(|c| format!(" (the claim had strength {c})")).unwrap_or_else(|| " (the write made no claim)".into()))]
    NotOwner {
        /// The owning writer's id.
        owner: u64,
        /// Its strength.
        strength: i32,
        /// The refused writer's strength, if it made a claim.
        claimed: Option<i32>,
    },
    /// The operation does not fit the pool's mode (e.g. a version read on a `latest` pool).
    #[error("operation not supported by this pool's mode: {0}")]
    WrongMode(String),
    /// A time read asked about a time the shard's stable frontier has not passed yet.
    #[error("time {at_us} is not yet stable (frontier {frontier_us})")]
    NotYetStable {
        /// The asked time (µs).
        at_us: u64,
        /// The frontier the read needs to pass: `at_us` (+ lateness for sensor reads) must be ≤ it.
        frontier_us: u64,
    },
    /// The input breaks a limit or is malformed.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The ordering seam handed over a stamp that is not after the shard's last one.
    #[error("stamp {got:?} is not after the shard's last stamp {last:?}")]
    StampOutOfOrder {
        /// The shard's last applied stamp.
        last: Stamp,
        /// The offending stamp.
        got: Stamp,
    },
    /// The ordering seam handed over a stamp at or below the frontier it announced.
    #[error("stamp {got:?} is not after the stable frontier {frontier_us}")]
    StampBelowFrontier {
        /// The shard's frontier.
        frontier_us: u64,
        /// The offending stamp.
        got: Stamp,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Too many watchers, pools or waiters.
    #[error("limit reached: {0}")]
    Overloaded(String),
    /// A disk operation failed (full disk, IO error); the write was not stored.
    #[error("io error on {path}: {message}")]
    Io {
        /// The file involved.
        path: String,
        /// What the OS said.
        message: String,
    },
    /// A log record failed its checksum or framing in the middle of a segment.
    #[error("corrupt log record in {file} at offset {offset}: {reason}")]
    Corrupt {
        /// The segment file.
        file: String,
        /// Byte offset of the bad record in that file.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// An earlier fsync failed: the log no longer accepts durable writes (restart to recover
    /// from what is on disk).
    #[error("log failed earlier and is read-only: {0}")]
    LogFailed(String),
    /// The store or log is shutting down.
    #[error("shutting down")]
    ShuttingDown,
}

impl StorageError {
    pub(crate) fn io(path: impl Into<String>, err: &std::io::Error) -> Self {
        StorageError::Io {
            path: path.into(),
            message: err.to_string(),
        }
    }
}
