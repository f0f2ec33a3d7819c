//! The Kafka side of a DDS topic (`kafka_topic = "…"` in `[[dds.topic]]`): the codec part
//! (sans-IO). The running bridge lives in `face` (see docs/DDS.md, "Kafka").
//!
//! Kafka keys a partition as `topic/p` and offsets are that key's dense versions; DDS keys an
//! instance as `pool/instance-key`. The bridge maps them the way a Kafka user of a keyed topic
//! expects: **one Kafka record per DDS sample, the record key is the instance key**, the value
//! is the sample as stored (CDR with its encapsulation header; `null` for a dispose, Kafka's
//! tombstone), the timestamp is the source timestamp (ms), and the partition is Kafka's default
//! partitioner on the key (murmur2), so a Kafka producer keying by flight id writes the same
//! partition the bridge does. In the other direction a record's key names the instance and its
//! value is the CDR sample (with header) or a JSON object of the configured type. Records the
//! bridge wrote carry the header `squall-origin: dds` and are never bridged back.

use bytes::{Bytes, BytesMut};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
};

use super::error::DdsError;

/// The record header marking records the bridge produced from DDS.
pub const ORIGIN_HEADER: &str = "squall-origin";
/// Its value.
pub const ORIGIN_DDS: &[u8] = b"dds";
/// Most records taken from one stored Kafka batch (larger batches are refused).
pub const RECORDS_PER_BATCH_MAX: usize = 10_000;
/// Record header that makes a record an ownership claim on its instance (EXCLUSIVE topics):
/// the editor's name (its writer id is `writer_id("kafka:<name>")`).
pub const OWNER_HEADER: &str = "squall-owner";
/// The claim's strength (an i32 as text); default: the topic's `editor_strength`.
pub const STRENGTH_HEADER: &str = "squall-strength";
/// The claim's lease in ms (a u64 as text); default: the topic's `editor_lease_ms`.
pub const LEASE_HEADER: &str = "squall-lease-ms";
/// Longest `squall-owner` name.
pub const OWNER_NAME_BYTES_MAX: usize = 128;
/// Kafka topic config the face sets on a bridged topic: the DDS pool its records go to (the
/// Kafka face checks ownership claims against it when a batch is produced).
pub const DDS_POOL_CONFIG: &str = "squall.dds.pool";
/// Kafka topic config: the DDS topic's `editor_strength` (the default strength of a claim).
pub const DDS_STRENGTH_CONFIG: &str = "squall.dds.editor_strength";
/// Kafka topic config: the DDS topic's `editor_lease_ms` (the default lease of a claim).
pub const DDS_LEASE_CONFIG: &str = "squall.dds.editor_lease_ms";

/// An ownership claim carried by a record's headers, before defaults are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordClaim {
    /// The editor's name (`squall-owner`).
    pub owner: String,
    /// `squall-strength`, if given.
    pub strength: Option<i32>,
    /// `squall-lease-ms`, if given.
    pub lease_ms: Option<u64>,
}

impl RecordClaim {
    /// The store claim, with the topic's defaults for what the record did not say.
    pub fn to_claim(
        &self,
        editor_strength: i32,
        editor_lease_ms: u64,
    ) -> squall_storage::owner::Claim {
        squall_storage::owner::Claim {
            writer: squall_storage::owner::writer_id(&format!("kafka:{}", self.owner)),
            strength: self.strength.unwrap_or(editor_strength),
            lease_us: self
                .lease_ms
                .unwrap_or(editor_lease_ms)
                .saturating_mul(1000),
        }
    }
}

/// The claim in a record's headers: `Ok(None)` without `squall-owner`; `Err` says which header
/// is malformed (strength or lease without an owner, a bad number, an empty or long name).
fn claim_of(
    headers: &kafka_protocol::indexmap::IndexMap<StrBytes, Option<Bytes>>,
) -> Result<Option<RecordClaim>, String> {
    let text = |name: &str| -> Result<Option<String>, String> {
        match headers.iter().find(|(k, _)| &***k == name).map(|(_, v)| v) {
            None => Ok(None),
            Some(v) => v
                .as_deref()
                .and_then(|b| std::str::from_utf8(b).ok())
                .map(|s| Some(s.trim().to_owned()))
                .ok_or_else(|| format!("record header {name} must be UTF-8 text")),
        }
    };
    let strength = text(STRENGTH_HEADER)?
        .map(|s| s.parse::<i32>())
        .transpose()
        .map_err(|_| format!("record header {STRENGTH_HEADER} must be an integer (i32)"))?;
    let lease_ms = text(LEASE_HEADER)?
        .map(|s| s.parse::<u64>())
        .transpose()
        .map_err(|_| format!("record header {LEASE_HEADER} must be a number of milliseconds"))?;
    match text(OWNER_HEADER)? {
        None if strength.is_some() || lease_ms.is_some() => Err(format!(
            "record headers {STRENGTH_HEADER} and {LEASE_HEADER} go with {OWNER_HEADER}"
        )),
        None => Ok(None),
        Some(o) if o.is_empty() || o.len() > OWNER_NAME_BYTES_MAX => Err(format!(
            "record header {OWNER_HEADER} must be a name of 1..={OWNER_NAME_BYTES_MAX} bytes"
        )),
        Some(owner) => Ok(Some(RecordClaim {
            owner,
            strength,
            lease_ms,
        })),
    }
}

/// One record as the bridge sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeRecord {
    /// The record key (the instance key text), if any.
    pub key: Option<Bytes>,
    /// The value; `None` is a Kafka tombstone (a dispose).
    pub value: Option<Bytes>,
    /// The record's timestamp in ms since the Unix epoch (-1 if none).
    pub timestamp_ms: i64,
    /// Whether the bridge itself produced it from DDS.
    pub from_dds: bool,
    /// The ownership claim its headers make (`squall-owner`, …), or why they are malformed.
    pub claim: Result<Option<RecordClaim>, String>,
}

/// Kafka's murmur2 (the Java client's `Utils.murmur2`, seed 0x9747b28c).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for a keyed record.
pub fn partition_for(key: &[u8], partitions: u32) -> i32 {
    let positive = (murmur2(key) & 0x7fff_ffff) as u32;
    (positive % partitions.max(1)) as i32
}

/// One record (key, value or tombstone, timestamp, the origin header) as a v2 record batch,
/// the form the Kafka face stores.
pub fn encode_record(
    key: &str,
    value: Option<Bytes>,
    timestamp_ms: i64,
) -> Result<Bytes, DdsError> {
    let mut rec = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
        producer_id: NO_PRODUCER_ID,
        producer_epoch: NO_PRODUCER_EPOCH,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: NO_SEQUENCE,
        timestamp: timestamp_ms,
        key: Some(Bytes::copy_from_slice(key.as_bytes())),
        value,
        headers: Default::default(),
    };
    rec.headers.insert(
        StrBytes::from_static_str(ORIGIN_HEADER),
        Some(Bytes::from_static(ORIGIN_DDS)),
    );
    let mut out = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut out,
        [&rec],
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| DdsError::Invalid(format!("encoding a Kafka record: {e}")))?;
    Ok(out.freeze())
}

/// The records of one stored Kafka batch (the Kafka face checked its framing at produce time;
/// compression is undone here). Control records are skipped.
pub fn decode_records(batch: &Bytes) -> Result<Vec<BridgeRecord>, DdsError> {
    let mut buf = batch.clone();
    let set = RecordBatchDecoder::decode(&mut buf)
        .map_err(|e| DdsError::Invalid(format!("a stored Kafka batch does not decode: {e}")))?;
    if set.records.len() > RECORDS_PER_BATCH_MAX {
        return Err(DdsError::Invalid(format!(
            "a Kafka batch of {} records is above the bridge's limit of {RECORDS_PER_BATCH_MAX}",
            set.records.len()
        )));
    }
    Ok(set
        .records
        .into_iter()
        .filter(|r| !r.control)
        .map(|r| {
            let from_dds = r
                .headers
                .iter()
                .any(|(k, v)| &**k == ORIGIN_HEADER && v.as_deref() == Some(ORIGIN_DDS));
            let claim = claim_of(&r.headers);
            BridgeRecord {
                key: r.key,
                value: r.value,
                timestamp_ms: r.timestamp,
                from_dds,
                claim,
            }
        })
        .collect())
}

/// Why a produced batch is refused before it is appended (the Kafka face's hook, see
/// [`check_claims`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimRefusal {
    /// A record's claim headers are malformed (Kafka `INVALID_RECORD`).
    Malformed(String),
    /// A record would be refused by the instance's owner (Kafka `POLICY_VIOLATION`).
    NotOwner(String),
}

impl std::fmt::Display for ClaimRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClaimRefusal::Malformed(m) | ClaimRefusal::NotOwner(m) => f.write_str(m),
        }
    }
}

/// The Kafka face's check of a batch produced to a topic bridged to a DDS pool (the topic has
/// [`DDS_POOL_CONFIG`]): each record goes to the instance its key names, and is refused now,
/// with a message a Kafka user can act on, if the store would refuse it: the instance has a
/// live owner and the record makes no claim (`squall-owner`) or a weaker one. A stronger claim,
/// or the owner's own, passes; records later in the batch see the claims of earlier ones.
/// This is the answer the producer gets; the store still arbitrates each put when the bridge
/// makes it (a claim that races another writer may lose there: counted in
/// `ownership_rejected`).
pub fn check_claims<N: crate::node::Node>(
    node: &N,
    configs: &std::collections::BTreeMap<String, String>,
    batch: &Bytes,
) -> Result<(), ClaimRefusal> {
    use squall_storage::owner::arbitrate;
    let Some(pool) = configs.get(DDS_POOL_CONFIG) else {
        return Ok(());
    };
    let num = |k: &str| configs.get(k).and_then(|v| v.parse::<i64>().ok());
    let strength = num(DDS_STRENGTH_CONFIG)
        .and_then(|v| i32::try_from(v).ok())
        .unwrap_or(0);
    let lease_ms = num(DDS_LEASE_CONFIG)
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(0);
    // An undecodable batch is the bridge's to count, not a claim to refuse.
    let Ok(records) = decode_records(batch) else {
        return Ok(());
    };
    let mut owners: std::collections::BTreeMap<String, Option<squall_storage::owner::Owner>> =
        std::collections::BTreeMap::new();
    for r in records.into_iter().filter(|r| !r.from_dds) {
        let Some(key) = r.key.as_deref().and_then(|k| std::str::from_utf8(k).ok()) else {
            continue;
        };
        let claim = r
            .claim
            .map_err(ClaimRefusal::Malformed)?
            .map(|c| c.to_claim(strength, lease_ms));
        let current = match owners.get(key) {
            Some(o) => *o,
            None => node.owner(pool, key).unwrap_or(None),
        };
        // `owner` gives live owners only, so any time before their lease end will do.
        match arbitrate(current, claim, r.value.is_none(), 0) {
            Ok(after) => {
                owners.insert(key.to_owned(), after);
            }
            Err(_) => {
                let o = current.map_or((0, 0), |o| (o.writer, o.strength));
                return Err(ClaimRefusal::NotOwner(match claim {
                    None => format!(
                        "instance {key:?} of DDS topic pool {pool} is owned (writer {:#018x}, strength {}); \
                         claim it with the record headers {OWNER_HEADER}: <name> and {STRENGTH_HEADER} above {}",
                        o.0, o.1, o.1
                    ),
                    Some(c) => format!(
                        "instance {key:?} of DDS topic pool {pool} is owned (writer {:#018x}, strength {}): \
                         the claim's strength {} is not above it",
                        o.0, o.1, c.strength
                    ),
                }));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Values from Kafka's own UtilsTest.testMurmur2.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
        assert!((0..3).contains(&partition_for(b"FP1", 3)));
    }

    #[test]
    fn records_round_trip_with_their_origin() {
        let b = encode_record(
            "FP1",
            Some(Bytes::from_static(b"\x00\x01\x00\x00xyz")),
            1234,
        )
        .unwrap();
        let r = decode_records(&b).unwrap();
        assert_eq!(
            r,
            vec![BridgeRecord {
                key: Some(Bytes::from_static(b"FP1")),
                value: Some(Bytes::from_static(b"\x00\x01\x00\x00xyz")),
                timestamp_ms: 1234,
                from_dds: true,
                claim: Ok(None),
            }]
        );
        let t = decode_records(&encode_record("FP2", None, 5).unwrap()).unwrap();
        assert_eq!(t[0].value, None);
        assert!(decode_records(&Bytes::from_static(b"garbage")).is_err());
    }

    #[test]
    fn claim_headers_parse_and_bad_ones_are_named() {
        let h = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| {
                    (
                        StrBytes::from_string((*k).to_owned()),
                        Some(Bytes::copy_from_slice(v.as_bytes())),
                    )
                })
                .collect::<kafka_protocol::indexmap::IndexMap<_, _>>()
        };
        assert_eq!(claim_of(&h(&[])), Ok(None));
        let c = claim_of(&h(&[("squall-owner", "ops-7"), ("squall-strength", "30")]))
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.owner.as_str(), c.strength, c.lease_ms),
            ("ops-7", Some(30), None)
        );
        let claim = c.to_claim(15, 2_000);
        assert_eq!(claim.strength, 30);
        assert_eq!(claim.lease_us, 2_000_000, "the topic's lease by default");
        assert_eq!(
            claim.writer,
            squall_storage::owner::writer_id("kafka:ops-7")
        );
        for bad in [
            &[("squall-strength", "3")][..],
            &[("squall-owner", "x"), ("squall-strength", "strong")],
            &[("squall-owner", "x"), ("squall-lease-ms", "-1")],
            &[("squall-owner", " ")],
        ] {
            assert!(claim_of(&h(bad)).is_err(), "{bad:?}");
        }
    }
}
