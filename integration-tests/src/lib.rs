//! Shared helpers for Squall's end-to-end tests and the simulator binary.

pub mod sim;
