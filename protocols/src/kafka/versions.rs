//! The API versions this broker advertises in ApiVersions, and therefore promises to decode.
//!
//! Ranges are chosen to cover librdkafka 2.x, kafka-python 2.x/3.x and Kafka 3.x/4.x clients
//! (see `shared/research/kafka.md` section 3) while staying inside what the `kafka-protocol`
//! crate can decode. Produce is advertised from v0 because librdkafka before 2.11.1 enables
//! compression only when Produce v0 is listed; v0–v2 requests are answered UNSUPPORTED_VERSION
//! (Kafka 4.0 does the same, KAFKA-18659). Fetch stops at v12 (the last version addressed by
//! topic name) and Metadata at v12.
//!
//! Transactions are not served yet: AddPartitionsToTxn, AddOffsetsToTxn, EndTxn and
//! TxnOffsetCommit are not advertised (librdkafka then refuses `init_transactions` itself), and
//! InitProducerId or FindCoordinator for a transactional id get TRANSACTIONAL_ID_AUTHORIZATION_FAILED
//! with a message saying so: a clear, non-retriable error instead of a hang.

use kafka_protocol::messages::ApiKey;

/// One advertised range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// The API.
    pub key: ApiKey,
    /// Lowest advertised version.
    pub min: i16,
    /// Highest advertised version.
    pub max: i16,
}

/// Produce versions below this are advertised but answered with UNSUPPORTED_VERSION.
pub const PRODUCE_DECODED_MIN: i16 = 3;

/// Every API served, in key order.
pub const SERVED: &[Served] = &[
    Served {
        key: ApiKey::Produce,
        min: 0,
        max: 11,
    },
    Served {
        key: ApiKey::Fetch,
        min: 4,
        max: 12,
    },
    Served {
        key: ApiKey::ListOffsets,
        min: 1,
        max: 8,
    },
    Served {
        key: ApiKey::Metadata,
        min: 0,
        max: 12,
    },
    Served {
        key: ApiKey::OffsetCommit,
        min: 2,
        max: 9,
    },
    Served {
        key: ApiKey::OffsetFetch,
        min: 1,
        max: 8,
    },
    Served {
        key: ApiKey::FindCoordinator,
        min: 0,
        max: 4,
    },
    Served {
        key: ApiKey::JoinGroup,
        min: 0,
        max: 9,
    },
    Served {
        key: ApiKey::Heartbeat,
        min: 0,
        max: 4,
    },
    Served {
        key: ApiKey::LeaveGroup,
        min: 0,
        max: 5,
    },
    Served {
        key: ApiKey::SyncGroup,
        min: 0,
        max: 5,
    },
    Served {
        key: ApiKey::DescribeGroups,
        min: 0,
        max: 5,
    },
    Served {
        key: ApiKey::ListGroups,
        min: 0,
        max: 4,
    },
    Served {
        key: ApiKey::ApiVersions,
        min: 0,
        max: 4,
    },
    Served {
        key: ApiKey::CreateTopics,
        min: 2,
        max: 7,
    },
    Served {
        key: ApiKey::DeleteTopics,
        min: 1,
        max: 6,
    },
    Served {
        key: ApiKey::DeleteRecords,
        min: 0,
        max: 2,
    },
    Served {
        key: ApiKey::InitProducerId,
        min: 0,
        max: 5,
    },
    Served {
        key: ApiKey::DescribeConfigs,
        min: 1,
        max: 4,
    },
    Served {
        key: ApiKey::AlterConfigs,
        min: 0,
        max: 2,
    },
    Served {
        key: ApiKey::CreatePartitions,
        min: 0,
        max: 3,
    },
    Served {
        key: ApiKey::DeleteGroups,
        min: 0,
        max: 2,
    },
    Served {
        key: ApiKey::IncrementalAlterConfigs,
        min: 0,
        max: 1,
    },
    Served {
        key: ApiKey::DescribeCluster,
        min: 0,
        max: 1,
    },
];

/// The advertised range of `key`, if it is served.
pub fn served(key: ApiKey) -> Option<Served> {
    SERVED.iter().copied().find(|s| s.key == key)
}

/// Whether a request at `version` of `key` is decoded (advertised and, for Produce, ≥ v3).
pub fn decodes(key: ApiKey, version: i16) -> bool {
    match served(key) {
        Some(s) => {
            let min = if key == ApiKey::Produce {
                PRODUCE_DECODED_MIN
            } else {
                s.min
            };
            version >= min && version <= s.max
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_advertised_decodable_range_is_inside_what_the_codec_knows() {
        for s in SERVED {
            let codec = s.key.valid_versions();
            let min = if s.key == ApiKey::Produce {
                PRODUCE_DECODED_MIN
            } else {
                s.min
            };
            assert!(
                min >= codec.min && s.max <= codec.max,
                "{:?} {}..{} vs {}",
                s.key,
                min,
                s.max,
                codec
            );
        }
        assert!(decodes(ApiKey::Produce, 3));
        assert!(!decodes(ApiKey::Produce, 2));
        assert!(!decodes(ApiKey::Fetch, 13));
    }
}
