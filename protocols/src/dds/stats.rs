//! Counters of the DDS face (exported by the broker on `/metrics`).

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Live counters, shared by the face's tasks.
        #[derive(Debug, Default)]
        pub struct DdsStats { $($(#[$doc])* pub $name: AtomicU64,)* }

        impl DdsStats {
            /// `(metric name, value)` pairs, in a fixed order.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((concat!("squall_dds_", stringify!($name)), self.$name.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters! {
    /// Samples received from DDS writers (valid or not).
    samples_received,
    /// DDS samples stored as new versions.
    samples_stored,
    /// Disposes stored as tombstones.
    disposes_stored,
    /// Samples that did not decode for the configured type.
    undecodable,
    /// Samples whose instance maps to a store key already used by another instance, or to an
    /// invalid store key.
    key_collisions,
    /// Writes dropped because another writer owns the instance.
    ownership_rejected,
    /// Ownership changes (take-overs and releases).
    ownership_changes,
    /// Remote writers (or their participants) lost.
    writers_lost,
    /// Instance events recorded in `<pool>.events` (writer lost).
    events_recorded,
    /// Remote writers seen on topics the face does not serve.
    unknown_topic_writers,
    /// Samples and disposes the face published to DDS.
    published,
    /// Store updates not published because they came from DDS on the same topic (loop guard).
    loops_suppressed,
    /// Failed node calls.
    node_errors,
    /// Failed DDS writes.
    write_errors,
    /// Kafka records bridged into the topic's pool (`kafka_topic`).
    kafka_records_in,
    /// Versions of the topic's pool produced as Kafka records (`kafka_topic`).
    kafka_records_out,
    /// Kafka records not bridged: no or a non-UTF-8 key, a value that is not a sample of the
    /// type (CDR or JSON), or a key that differs from the sample's instance key.
    kafka_records_bad,
}

/// Adds one to a counter.
pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}
