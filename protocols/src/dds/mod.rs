//! The DDS face (issue 5): the node joins a DDS domain (rustdds) and records, serves and bridges
//! the keyed topics configured in `[[dds.topic]]` through the store. See docs/DDS.md.
//!
//! * [`config`]: `[dds]` / `[[dds.topic]]` and the QoS → pool-mode mapping.
//! * [`cdr`]: a small plain-CDR codec for the configured struct types (keys, key hashes, JSON).
//! * [`sample`]: the raw sample type and the rustdds adapters that keep wire bytes as they are.
//! * `kafka_bridge` (with the `kafka` feature): DDS samples as Kafka records and back.
//! * [`face`]: the running face (participant, reader → store, store → writer, discovery).
//! * [`stats`]: counters for `/metrics`.

pub mod cdr;
pub mod config;
pub mod error;
pub mod face;
#[cfg(feature = "kafka")]
pub mod kafka_bridge;
pub mod sample;
pub mod stats;

pub use config::{DdsConfig, DdsTopicConfig};
pub use error::DdsError;
pub use face::DdsFace;
pub use stats::DdsStats;
