//! squall-storage: the versioned, time-indexed object store and its durable log.
//!
//! * [`types`]: the public vocabulary (pools, modes, versions, hybrid timestamps, ops).

pub mod types;

pub use types::*;
