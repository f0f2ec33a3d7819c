//! Runnable examples of Squall (see the `examples/` folder's binaries).
