//! State transfer seam: a shard's whole state as bytes (`Store::export_shard`) and its
//! installation on another store (`Store::import_shard`). A joiner installs the image at the
//! image's stamp `S`, then applies the ordered ops stamped after `S` (the log tail / the
//! multicast deliveries) with `Store::apply`; its shard digest then equals the source's.
//!
//! Image format: the checkpoint encoding (the shard's last stamp, the pools its keys belong
//! to, every key's counters) followed by `count u32` and the kept entries as log records.

use crate::error::StorageError;
use crate::log::record::{decode_body, decode_header, encode, RecordBody, HEADER_BYTES};
use crate::log::{Checkpoint, Record};

/// A decoded shard image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShardImage {
    pub meta: Checkpoint,
    pub entries: Vec<Record>,
}

impl ShardImage {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let meta = self.meta.encode();
        out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for r in &self.entries {
            encode(r, 0, &mut out);
        }
        out
    }

    /// Decodes and verifies every checksum; `record_bytes_max` bounds each record.
    pub fn decode(data: &[u8], record_bytes_max: u32) -> Result<ShardImage, StorageError> {
        let bad = |m: String| StorageError::Invalid(format!("shard image: {m}"));
        let u32_at = |p: usize| -> Result<u32, StorageError> {
            let b = data.get(p..p + 4).ok_or_else(|| bad("truncated".into()))?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let mlen = u32_at(0)? as usize;
        let meta_bytes = data
            .get(4..4 + mlen)
            .ok_or_else(|| bad("truncated meta".into()))?;
        let meta = Checkpoint::decode(meta_bytes).map_err(bad)?;
        let mut pos = 4 + mlen;
        let n = u32_at(pos)? as usize;
        pos += 4;
        if n.saturating_mul(HEADER_BYTES) > data.len() - pos {
            return Err(bad(format!("{n} entries cannot fit")));
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            let hb: [u8; HEADER_BYTES] = data
                .get(pos..pos + HEADER_BYTES)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| bad("truncated record header".into()))?;
            let h = decode_header(&hb).ok_or_else(|| bad("record header checksum".into()))?;
            if h.body_len > record_bytes_max {
                return Err(bad("record over the size limit".into()));
            }
            let start = pos + HEADER_BYTES;
            let body = data
                .get(start..start + h.body_len as usize)
                .ok_or_else(|| bad("truncated record".into()))?;
            if crc32c::crc32c(body) != h.body_crc {
                return Err(bad("record checksum".into()));
            }
            let rec = decode_body(body).map_err(bad)?;
            if !matches!(rec.body, RecordBody::Put { .. }) {
                return Err(bad("only entries may follow the meta".into()));
            }
            entries.push(rec);
            pos = start + h.body_len as usize;
        }
        if pos != data.len() {
            return Err(bad("trailing bytes".into()));
        }
        Ok(ShardImage { meta, entries })
    }
}
