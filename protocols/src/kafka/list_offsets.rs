//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3), earliest local (-4), and by
//! timestamp through the store's time index.
//!
//! A batch is stored with its largest CreateTime as sensor time, so the store's
//! `version_at_or_after(T)` finds the first batch holding a record with timestamp ≥ T; the
//! records of that one batch are then read (never rewritten) to return the exact offset.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::*;
use kafka_protocol::records::RecordBatchDecoder;
use squall_storage::Clock;

use super::batch::{parse_batches, stored_base_offset};
use super::broker::{code, node_code, KafkaBroker};
use super::topics::partition_key;
use crate::node::{KeyBounds, Node, NodeError};

/// Batches examined forward from the time index's answer before giving up.
const TIME_SCAN_BATCHES_MAX: u64 = 64;

impl<N: Node> KafkaBroker<N> {
    pub(crate) async fn list_offsets(
        &self,
        req: ListOffsetsRequest,
        version: i16,
    ) -> ListOffsetsResponse {
        let mut topics = Vec::with_capacity(req.topics.len());
        for t in req.topics {
            let name = t.name.0.as_str().to_string();
            let meta = self.topic(&name);
            let parts = t
                .partitions
                .iter()
                .map(|p| {
                    let r = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_leader_epoch(-1);
                    let Some(m) = &meta else {
                        return r
                            .with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION)
                            .with_offset(-1)
                            .with_timestamp(-1);
                    };
                    if p.partition_index < 0 || p.partition_index as u32 >= m.partitions {
                        return r
                            .with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION)
                            .with_offset(-1)
                            .with_timestamp(-1);
                    }
                    let clock = if m.log_append_time() {
                        Clock::Platform
                    } else {
                        Clock::Sensor
                    };
                    match self.offset_for(&name, p.partition_index, p.timestamp, clock) {
                        Ok((offset, ts)) => r
                            .with_offset(offset)
                            .with_timestamp(ts)
                            .with_leader_epoch(if version >= 4 { 0 } else { -1 }),
                        Err(e) => r.with_error_code(e).with_offset(-1).with_timestamp(-1),
                    }
                })
                .collect();
            topics.push(
                ListOffsetsTopicResponse::default()
                    .with_name(t.name)
                    .with_partitions(parts),
            );
        }
        ListOffsetsResponse::default().with_topics(topics)
    }

    /// (offset, timestamp) for one partition and one ListOffsets timestamp.
    fn offset_for(
        &self,
        topic: &str,
        partition: i32,
        timestamp: i64,
        clock: Clock,
    ) -> Result<(i64, i64), i16> {
        let key = partition_key(topic, partition);
        let bounds = match self.node.bounds(topic, &key) {
            Ok(b) => b,
            Err(NodeError::NotFound) => KeyBounds::default(),
            Err(e) => return Err(node_code(&e)),
        };
        match timestamp {
            -2 | -4 => Ok((bounds.start as i64, -1)),
            -1 => Ok((bounds.next as i64, -1)),
            -3 => {
                if bounds.next == bounds.start {
                    return Ok((-1, -1));
                }
                let e = self
                    .node
                    .get_version(topic, &key, bounds.next - 1)
                    .map_err(|e| node_code(&e))?;
                let info = parse_batches(&e.value, usize::MAX)
                    .ok()
                    .and_then(|b| b.into_iter().next());
                match info {
                    Some(b) => Ok((
                        e.version.key_version as i64 + i64::from(b.last_offset_delta),
                        b.max_timestamp,
                    )),
                    None => Ok((bounds.next as i64 - 1, -1)),
                }
            }
            t if t >= 0 => {
                let t_us = (t as u64).saturating_mul(1000);
                let Some(mut v) = self
                    .node
                    .version_at_or_after(topic, &key, t_us, clock)
                    .map_err(|e| node_code(&e))?
                else {
                    return Ok((-1, -1));
                };
                // Scan forward from the indexed batch to the first record with timestamp ≥ t.
                for _ in 0..TIME_SCAN_BATCHES_MAX {
                    if v >= bounds.next {
                        break;
                    }
                    let e = match self.node.get_version(topic, &key, v) {
                        Ok(e) => e,
                        Err(NodeError::NotFound) => return Ok((-1, -1)),
                        Err(e) => return Err(node_code(&e)),
                    };
                    let base = e.version.key_version as i64;
                    let stored_base = stored_base_offset(&e.value).unwrap_or(0);
                    let mut bytes = e.value.clone();
                    if let Ok(set) = RecordBatchDecoder::decode(&mut bytes) {
                        if let Some(r) = set.records.iter().find(|r| r.timestamp >= t) {
                            return Ok((base + (r.offset - stored_base), r.timestamp));
                        }
                    } else {
                        return Ok((base, -1));
                    }
                    v = e.version.next_key_version();
                }
                Ok((-1, -1))
            }
            _ => Err(code::INVALID_REQUEST),
        }
    }
}
