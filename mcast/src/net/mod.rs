//! Transports and the driver that runs a [`Node`](crate::Node) between real processes
//! (feature `tcp`, on by default). The protocol core (`node`, `orderer`, …) never sees
//! anything from here: tokio, sockets and clock reads live only in this module.
//!
//! | module | job |
//! |---|---|
//! | [`transport`] | the [`Transport`] trait every transport implements (TCP here; RDMA would sit behind a feature), its events, the connection handshake |
//! | [`tcp`] | [`TcpTransport`]: one TCP connection per direction per peer pair, framed with [`codec`](crate::codec), reconnect = failure suspicion |
//! | [`driver`] | [`Driver`]: feeds a `Node` from a transport and a real clock, carries out its actions (sends, deliveries, persistence in memory or on disk, snapshots) |
//! | [`persist`] | [`FilePersist`]: the durable mode's write-ahead file (checksummed frames, group commit on a writer thread, torn-tail recovery) and what it recovers for `Node::restart` |

pub mod driver;
pub mod persist;
pub mod tcp;
pub mod transport;

pub use driver::{Application, Driver, DriverStats, MemPersist, WallClock};
pub use persist::{FilePersist, FileRecovery, PersistBugs, PersistDone};
pub use tcp::{TcpConfig, TcpTransport};
pub use transport::{Transport, TransportEvent, TransportStats};
