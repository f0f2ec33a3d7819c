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
            BridgeRecord {
                key: r.key,
                value: r.value,
                timestamp_ms: r.timestamp,
                from_dds,
            }
        })
        .collect())
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
            }]
        );
        let t = decode_records(&encode_record("FP2", None, 5).unwrap()).unwrap();
        assert_eq!(t[0].value, None);
        assert!(decode_records(&Bytes::from_static(b"garbage")).is_err());
    }
}
