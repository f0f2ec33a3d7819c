//! Record batches (magic 2) as opaque bytes: header parsing without decompressing, the CRC-32C
//! check, and the base offset rewrite done at fetch time.
//!
//! The broker never re-encodes records: a batch is stored byte for byte as the producer sent it,
//! so duplicate headers, compression and batch boundaries survive. The base offset (bytes 0..8) and
//! the partition leader epoch (bytes 12..16) lie outside the CRC, so rewriting them keeps the batch
//! valid. Anything inside the CRC (attributes, timestamps) is only rewritten together with a new
//! CRC (LogAppendTime topics).

use bytes::{Bytes, BytesMut};

/// Size of the fixed batch header (up to and including the record count).
pub const BATCH_HEADER_BYTES: usize = 61;
/// Offset of the length field.
const LENGTH_OFFSET: usize = 8;
/// Offset of the magic byte.
const MAGIC_OFFSET: usize = 16;
/// Offset of the CRC field; the CRC covers everything from [`ATTRIBUTES_OFFSET`] on.
const CRC_OFFSET: usize = 17;
/// Offset of the attributes field.
const ATTRIBUTES_OFFSET: usize = 21;
/// Bytes of the batch before the length field's coverage starts (base offset + length).
const LOG_OVERHEAD: usize = 12;
/// Largest record count accepted in one batch (a named limit before any per-record work).
pub const BATCH_RECORDS_MAX: i32 = 1 << 20;

/// Compression codecs of the batch attributes (bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// No compression.
    None,
    /// gzip.
    Gzip,
    /// snappy (xerial framing).
    Snappy,
    /// lz4 frame.
    Lz4,
    /// zstd.
    Zstd,
}

/// A batch header, decoded without touching the records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchInfo {
    /// Byte range of the whole batch inside the buffer it came from.
    pub start: usize,
    /// Length in bytes of the whole batch.
    pub len: usize,
    /// Base offset as written in the batch.
    pub base_offset: i64,
    /// Offset of the last record relative to the base offset.
    pub last_offset_delta: i32,
    /// Number of records.
    pub record_count: i32,
    /// Timestamp of the first record (ms).
    pub base_timestamp: i64,
    /// Largest timestamp in the batch (ms).
    pub max_timestamp: i64,
    /// Producer id (−1 without idempotence).
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
    /// Sequence of the first record (−1 without idempotence).
    pub base_sequence: i32,
    /// Compression codec.
    pub codec: Codec,
    /// Timestamps are LogAppendTime.
    pub log_append_time: bool,
    /// Part of a transaction.
    pub transactional: bool,
    /// A control batch (transaction markers).
    pub control: bool,
}

impl BatchInfo {
    /// Number of offsets the batch takes (`last_offset_delta + 1`).
    pub fn span(&self) -> u32 {
        (self.last_offset_delta as u32).saturating_add(1)
    }

    /// Sequence of the last record, wrapping at `i32::MAX` like Kafka.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return -1;
        }
        let last = i64::from(self.base_sequence) + i64::from(self.record_count) - 1;
        (last % (i64::from(i32::MAX) + 1)) as i32
    }
}

/// Why a record set was rejected (each maps to a Kafka error code in the produce handler).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Cut short: a header or a batch runs past the end of the record set.
    #[error("record set truncated")]
    Truncated,
    /// A magic byte other than 2 (message sets v0/v1 are not accepted).
    #[error("unsupported record batch magic {0}")]
    Magic(i8),
    /// The CRC-32C over the batch does not match.
    #[error("record batch CRC mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Crc {
        /// CRC written in the batch.
        stored: u32,
        /// CRC computed over the bytes.
        computed: u32,
    },
    /// Compression bits 5, 6 or 7.
    #[error("unknown compression codec {0}")]
    Codec(u8),
    /// Counts or deltas that contradict each other or break a limit.
    #[error("invalid batch header: {0}")]
    Header(&'static str),
    /// An empty record set.
    #[error("empty record set")]
    Empty,
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// Parses every batch of a produce request's record set, checking lengths, magic, CRC and codec.
/// `batch_bytes_max` is the topic's `max.message.bytes` (a batch above it is
/// [`BatchError::Header`]`("too large")`).
pub fn parse_batches(records: &[u8], batch_bytes_max: usize) -> Result<Vec<BatchInfo>, BatchError> {
    if records.is_empty() {
        return Err(BatchError::Empty);
    }
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < records.len() {
        let rest = &records[at..];
        if rest.len() < LOG_OVERHEAD + 5 {
            return Err(BatchError::Truncated);
        }
        let magic = rest[MAGIC_OFFSET] as i8;
        if magic != 2 {
            return Err(BatchError::Magic(magic));
        }
        let length = be_i32(rest, LENGTH_OFFSET);
        if length < (BATCH_HEADER_BYTES - LOG_OVERHEAD) as i32 {
            return Err(BatchError::Header("batch length below the header size"));
        }
        let len = LOG_OVERHEAD + length as usize;
        if len > batch_bytes_max {
            return Err(BatchError::Header("batch larger than max.message.bytes"));
        }
        if rest.len() < len {
            return Err(BatchError::Truncated);
        }
        let b = &rest[..len];
        let stored = be_u32(b, CRC_OFFSET);
        let computed = crc32c::crc32c(&b[ATTRIBUTES_OFFSET..]);
        if stored != computed {
            return Err(BatchError::Crc { stored, computed });
        }
        let attributes = be_i16(b, ATTRIBUTES_OFFSET);
        let codec = match attributes & 0x7 {
            0 => Codec::None,
            1 => Codec::Gzip,
            2 => Codec::Snappy,
            3 => Codec::Lz4,
            4 => Codec::Zstd,
            other => return Err(BatchError::Codec(other as u8)),
        };
        let last_offset_delta = be_i32(b, 23);
        let record_count = be_i32(b, 57);
        if !(0..=BATCH_RECORDS_MAX).contains(&record_count) {
            return Err(BatchError::Header("record count out of range"));
        }
        if last_offset_delta < 0 || (record_count > 0 && last_offset_delta < record_count - 1) {
            return Err(BatchError::Header(
                "last offset delta below the record count",
            ));
        }
        out.push(BatchInfo {
            start: at,
            len,
            base_offset: be_i64(b, 0),
            last_offset_delta,
            record_count,
            base_timestamp: be_i64(b, 27),
            max_timestamp: be_i64(b, 35),
            producer_id: be_i64(b, 43),
            producer_epoch: be_i16(b, 51),
            base_sequence: be_i32(b, 53),
            codec,
            log_append_time: attributes & (1 << 3) != 0,
            transactional: attributes & (1 << 4) != 0,
            control: attributes & (1 << 5) != 0,
        });
        at += len;
    }
    Ok(out)
}

/// Appends `batch` to `out` with its base offset set to `base_offset` (outside the CRC).
pub fn put_with_base_offset(out: &mut BytesMut, batch: &[u8], base_offset: i64) {
    if batch.len() < BATCH_HEADER_BYTES {
        // Not a batch we stored (never happens for values written by this face); pass through.
        out.extend_from_slice(batch);
        return;
    }
    out.extend_from_slice(&base_offset.to_be_bytes());
    out.extend_from_slice(&batch[8..]);
}

/// Returns a copy of `batch` with LogAppendTime set: attribute bit 3, max timestamp = `now_ms`,
/// and a recomputed CRC (the records themselves are untouched).
pub fn with_log_append_time(batch: &[u8], now_ms: i64) -> Bytes {
    let mut b = BytesMut::from(batch);
    if b.len() < BATCH_HEADER_BYTES {
        return b.freeze();
    }
    let attributes = be_i16(&b, ATTRIBUTES_OFFSET) | (1 << 3);
    b[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    b[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&b[ATTRIBUTES_OFFSET..]);
    b[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

/// A stored batch's idempotent-producer fields: (producer id, epoch, base sequence, record
/// count), read from its header without touching the records.
pub fn stored_producer(batch: &[u8]) -> Option<(i64, i16, i32, i32)> {
    (batch.len() >= BATCH_HEADER_BYTES).then(|| {
        (
            be_i64(batch, 43),
            be_i16(batch, 51),
            be_i32(batch, 53),
            be_i32(batch, 57),
        )
    })
}

/// The base offset written in a stored batch's header.
pub fn stored_base_offset(batch: &[u8]) -> Option<i64> {
    (batch.len() >= BATCH_HEADER_BYTES).then(|| be_i64(batch, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    };

    pub(crate) fn encode(records: &[(Option<&str>, &str)], compression: Compression) -> Bytes {
        let recs: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, (k, v))| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // offset − sequence must be constant or the encoder splits the batch.
                sequence: i as i32 - 1,
                timestamp: 1_700_000_000_000 + i as i64,
                key: k.map(|k| Bytes::copy_from_slice(k.as_bytes())),
                value: Some(Bytes::copy_from_slice(v.as_bytes())),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &recs,
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
        )
        .expect("encode");
        buf.freeze()
    }

    #[test]
    fn parses_a_batch_written_by_the_reference_encoder() {
        for c in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = encode(&[(Some("k"), "a"), (None, "bb"), (Some("k2"), "ccc")], c);
            let infos = parse_batches(&b, 1 << 20).expect("valid");
            assert_eq!(infos.len(), 1);
            assert_eq!(infos[0].record_count, 3);
            assert_eq!(infos[0].span(), 3);
            assert_eq!(infos[0].len, b.len());
            assert_eq!(infos[0].max_timestamp, 1_700_000_000_002);
        }
    }

    #[test]
    fn corrupt_crc_bad_codec_truncation_and_magic_are_rejected() {
        let b = encode(&[(Some("k"), "value")], Compression::None);
        let mut bad = b.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(matches!(
            parse_batches(&bad, 1 << 20),
            Err(BatchError::Crc { .. })
        ));
        assert_eq!(
            parse_batches(&b[..b.len() - 1], 1 << 20),
            Err(BatchError::Truncated)
        );
        assert_eq!(parse_batches(&b[..10], 1 << 20), Err(BatchError::Truncated));
        let mut magic = b.to_vec();
        magic[16] = 1;
        assert_eq!(parse_batches(&magic, 1 << 20), Err(BatchError::Magic(1)));
        // Codec 7 with a CRC fixed up so only the codec is wrong.
        let mut codec = b.to_vec();
        codec[22] |= 0x7;
        let crc = crc32c::crc32c(&codec[21..]);
        codec[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(parse_batches(&codec, 1 << 20), Err(BatchError::Codec(7)));
        assert!(matches!(parse_batches(&b, 10), Err(BatchError::Header(_))));
        assert_eq!(parse_batches(&[], 10), Err(BatchError::Empty));
    }

    #[test]
    fn base_offset_rewrite_keeps_the_batch_valid_and_records_intact() {
        let b = encode(&[(Some("k"), "a"), (Some("k"), "b")], Compression::Lz4);
        let mut out = BytesMut::new();
        put_with_base_offset(&mut out, &b, 42);
        let infos = parse_batches(&out, 1 << 20).expect("still valid");
        assert_eq!(infos[0].base_offset, 42);
        let mut bytes = out.freeze();
        let set = RecordBatchDecoder::decode(&mut bytes).expect("decodes");
        let offsets: Vec<i64> = set.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![42, 43]);
    }

    #[test]
    fn log_append_time_rewrite_recomputes_the_crc() {
        let b = encode(&[(Some("k"), "a")], Compression::None);
        let l = with_log_append_time(&b, 5);
        let infos = parse_batches(&l, 1 << 20).expect("valid crc");
        assert!(infos[0].log_append_time);
        assert_eq!(infos[0].max_timestamp, 5);
    }

    #[test]
    fn agrees_with_the_crate_header_decoder() {
        let b = encode(&[(Some("x"), "1"), (Some("y"), "2")], Compression::Gzip);
        let mut two = BytesMut::from(&b[..]);
        two.extend_from_slice(&b);
        let ours = parse_batches(&two, 1 << 20).expect("valid");
        let mut bytes = two.freeze();
        let theirs = RecordBatchDecoder::decode_batch_info(&mut bytes).expect("valid");
        assert_eq!(ours.len(), theirs.len());
        for (o, t) in ours.iter().zip(theirs.iter()) {
            assert_eq!(o.record_count, t.record_count);
            assert_eq!(o.base_sequence, t.base_sequence);
            assert_eq!(o.producer_id, t.producer_id);
            assert_eq!(o.base_timestamp, t.min_timestamp);
        }
    }
}
