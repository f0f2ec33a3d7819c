//! squall-protocols: the faces of a Squall node (translate, never store).
//!
//! * [`node`]: the [`Node`] trait every face is written against; the broker implements it.
//! * `kafka` (issue 4), `dds` (issue 5), `http`: the faces themselves.
//! * `testing` (feature `testing`, and this crate's tests): `MemNode`, an in-memory `Node`.

pub mod node;

#[cfg(feature = "kafka")]
pub mod kafka;

pub use node::{
    durable_now, Durable, KeyBounds, Node, NodeError, NotOwner, PutRequest, WatchEvent, WatchStream,
};

#[cfg(feature = "http")]
pub mod http;

#[cfg(feature = "dds")]
pub mod dds;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
