//! Shared helpers for Squall's end-to-end tests and the simulator binary.
//!
//! * [`process`]: start the real `squall` binary on free ports with a temporary data
//!   directory, find its addresses, run CLI commands, SIGKILL or SIGTERM it.
//! * [`sim`]: the seeded simulator of the multicast layer.

pub mod process;
pub mod sim;

pub use process::{http_agent, squall_bin, Squall, START_TIMEOUT};
