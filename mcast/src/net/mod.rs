//! Transports and the driver that runs a [`Node`](crate::Node) between real processes
//! (feature `tcp`, on by default). The protocol core (`node`, `orderer`, …) never sees
//! anything from here: tokio, sockets and clock reads live only in this module.
//!
//! | module | job |
//! |---|---|
//! | [`transport`] | the [`Transport`] trait every transport implements (TCP here; RDMA would sit behind a feature), its events, the connection handshake |
//! | [`tcp`] | [`TcpTransport`]: one TCP connection per direction per peer pair, framed with [`codec`](crate::codec), reconnect = failure suspicion |
//! | [`driver`] | [`Driver`]: feeds a `Node` from a transport and a real clock, carries out its actions (sends, deliveries, in-memory persistence, snapshots) |

pub mod driver;
pub mod tcp;
pub mod transport;

pub use driver::{Application, Driver, DriverStats, MemPersist, WallClock};
pub use tcp::{TcpConfig, TcpTransport};
pub use transport::{Transport, TransportEvent, TransportStats};
