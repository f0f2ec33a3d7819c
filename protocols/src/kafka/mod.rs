//! The Kafka face: Kafka clients (librdkafka, kafka-python, Java) produce, fetch, join consumer
//! groups and administer topics against a Squall [`Node`](crate::Node).
//!
//! Mapping (see `docs/KAFKA.md`): a topic is a pool, partition `p` is the key `topic/p`, a record
//! batch is one stored version whose `span` is the batch's offset count, so a Kafka offset is a
//! dense key version. Batches are stored exactly as the producer sent them (only the 8-byte base
//! offset, which the batch CRC does not cover, is rewritten when they are fetched). Topic metadata
//! lives in the internal pool [`TOPICS_POOL`], committed offsets in [`OFFSETS_POOL`], consumer
//! group membership and generations in [`GROUPS_POOL`], all `latest` pools, so they are
//! replicated like any other data.
//!
//! Modules:
//! * [`frame`]: length-prefixed framing; tells an incomplete frame from an invalid one.
//! * [`batch`]: record batch (magic 2) header parsing, CRC-32C check, base offset rewrite.
//! * [`versions`]: the API version ranges this broker advertises.
//! * [`broker`]: [`KafkaBroker`], the shared state and the request dispatcher.
//! * `metadata`, `produce`, `fetch`, `list_offsets`, `offsets`, `admin`, `group_api`: one file per
//!   family of requests.
//! * [`groups`]: the classic consumer group coordinator (join/sync/heartbeat state machine).
//! * [`topics`]: topic records and topic configs (`cleanup.policy`, `retention.ms`, …).
//! * [`server`]: the TCP listener and the per-connection handler.

pub mod batch;
pub mod broker;
mod error;
pub mod frame;
pub mod groups;
pub mod server;
pub mod topics;
pub mod versions;

mod admin;
mod fetch;
mod group_api;
mod list_offsets;
mod metadata;
mod offsets;
mod produce;

#[cfg(test)]
mod tests;

pub use broker::{Handled, KafkaBroker, KafkaConfig};
pub use error::KafkaError;
pub use server::{serve, KafkaServer};
pub use topics::{GROUPS_POOL, OFFSETS_POOL, PRODUCER_IDS_POOL, TOPICS_POOL};
