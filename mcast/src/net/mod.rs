//! Transports and the driver that runs a [`Node`](crate::Node) between real processes
//! (feature `tcp`, on by default). The protocol core (`node`, `orderer`, …) never sees
//! anything from here: tokio, sockets and clock reads live only in this module.
//!
//! | module | job |
//! |---|---|
//! | [`transport`] | the [`Transport`] trait every transport implements (TCP; RDMA behind the `rdma` feature), its events, the connection handshake |
//! | `rdma` | `RdmaTransport` (feature `rdma`, off by default): RC queue pairs through `ibverbs`, set up over a TCP side channel; never run on RDMA hardware (see `docs/MCAST.md`) |
//! | [`tcp`] | [`TcpTransport`]: one TCP connection per direction per peer pair, framed with [`codec`](crate::codec), reconnect = failure suspicion |
//! | [`driver`] | [`Driver`]: feeds a `Node` from a transport and a real clock, carries out its actions (sends, deliveries, persistence in memory or on disk, snapshots) |
//! | [`persist`] | [`FilePersist`]: the durable mode's write-ahead file (checksummed frames, group commit on a writer thread, torn-tail recovery) and what it recovers for `Node::restart` |

pub mod driver;
pub mod persist;
#[cfg(feature = "rdma")]
pub mod rdma;
pub mod tcp;
pub mod transport;

pub use driver::{Application, Driver, DriverInput, DriverStats, MemPersist, WallClock};
pub use persist::{FilePersist, FileRecovery, PersistBugs, PersistDone};
pub use tcp::{TcpConfig, TcpTransport};
pub use transport::{Transport, TransportEvent, TransportStats};
