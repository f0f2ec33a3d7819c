//! Produce and InitProducerId: batches validated and stored as sent, idempotent producers.
//!
//! Each batch of a partition becomes one put whose `span` is the batch's offset count, so the
//! returned key version is the batch's base offset. For idempotent producers the per-partition
//! state (epoch, last sequence, the last few batches) is checked and updated under one lock per
//! partition held across the put, so a retried batch is either recognised (same offsets returned)
//! or rejected with the code Kafka uses.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::records::RecordBatchDecoder;

use super::batch::{parse_batches, with_log_append_time, BatchError, BatchInfo};
use super::broker::{code, node_code, now_ms, sb, KafkaBroker};
use super::topics::{partition_key, TopicMeta, PRODUCER_IDS_POOL};
use super::KafkaError;
use crate::node::{Durable, Node, PutRequest};

/// Batches remembered per producer and partition for duplicate detection (Kafka keeps 5).
pub const PRODUCER_BATCHES_CACHED: usize = 5;
/// How far back (in offsets) a partition's producer state is rebuilt from after a restart,
/// and how many stored batches are read per step while doing it.
const PRODUCER_REBUILD_OFFSETS_MAX: u64 = 1 << 20;
const PRODUCER_REBUILD_PAGE_ENTRIES: usize = 4096;

/// A produce request whose batches are applied: resolves once they are durable, with the
/// response (`None` for acks=0).
pub(crate) type ProducePending =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<ProduceResponse>> + Send>>;

/// Producer ids start here (0 is never handed out).
const PRODUCER_ID_BASE: i64 = 1000;

/// What is remembered about one idempotent producer on one partition.
#[derive(Debug, Clone, Default)]
pub struct ProducerState {
    /// Current epoch.
    pub epoch: i16,
    /// Sequence of the last record written.
    pub last_sequence: i32,
    /// The last batches written: (first sequence, last sequence, base offset).
    pub recent: VecDeque<(i32, i32, i64)>,
}

/// Idempotent-producer state of one partition, by producer id.
#[derive(Debug, Default)]
pub struct PartitionProducers {
    /// By producer id.
    pub producers: HashMap<i64, ProducerState>,
    /// Whether the state was rebuilt from the partition's stored batches since this broker
    /// started (it is, before the first idempotent batch is checked).
    pub loaded: bool,
}

/// The verdict for one batch of an idempotent producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Write it.
    Append,
    /// Already written at this base offset: answer success without writing.
    Duplicate(i64),
    /// Reject with this Kafka error code.
    Reject(i16),
}

impl PartitionProducers {
    /// Checks `batch` against the producer's state (Kafka's rules for idempotent producers).
    pub fn check(&self, b: &BatchInfo) -> SequenceCheck {
        if b.producer_id < 0 {
            return SequenceCheck::Append;
        }
        let Some(s) = self.producers.get(&b.producer_id) else {
            // Unknown producer (new, or state lost in a restart): accept from any sequence.
            return SequenceCheck::Append;
        };
        if b.producer_epoch < s.epoch {
            return SequenceCheck::Reject(code::INVALID_PRODUCER_EPOCH);
        }
        if b.producer_epoch > s.epoch {
            return if b.base_sequence == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::Reject(code::OUT_OF_ORDER_SEQUENCE_NUMBER)
            };
        }
        if let Some(&(_, _, base)) = s
            .recent
            .iter()
            .find(|(first, last, _)| *first == b.base_sequence && *last == b.last_sequence())
        {
            return SequenceCheck::Duplicate(base);
        }
        let expected = if s.last_sequence == i32::MAX {
            0
        } else {
            s.last_sequence + 1
        };
        if b.base_sequence == expected {
            SequenceCheck::Append
        } else if b.base_sequence < expected {
            SequenceCheck::Reject(code::DUPLICATE_SEQUENCE_NUMBER)
        } else {
            SequenceCheck::Reject(code::OUT_OF_ORDER_SEQUENCE_NUMBER)
        }
    }

    /// Forgets every producer and marks the state for a rebuild from the stored batches:
    /// called when a write of this partition failed to become durable, because the state
    /// recorded that write (and maybe later ones) as done when it was applied. The rebuild,
    /// once everything applied is flushed, sees only what was made durable, so a producer's
    /// retry of the lost batch is appended (once), not answered as a duplicate of data that
    /// is gone.
    pub fn forget(&mut self) {
        self.producers.clear();
        self.loaded = false;
    }

    /// Records a written batch.
    pub fn record(&mut self, b: &BatchInfo, base_offset: i64) {
        self.record_fields(
            b.producer_id,
            b.producer_epoch,
            b.base_sequence,
            b.last_sequence(),
            base_offset,
        );
    }

    /// Records a written batch from its producer fields.
    fn record_fields(&mut self, pid: i64, epoch: i16, first: i32, last: i32, base_offset: i64) {
        if pid < 0 {
            return;
        }
        let s = self.producers.entry(pid).or_default();
        if epoch != s.epoch {
            s.recent.clear();
        }
        s.epoch = epoch;
        s.last_sequence = last;
        s.recent.push_back((first, last, base_offset));
        while s.recent.len() > PRODUCER_BATCHES_CACHED {
            s.recent.pop_front();
        }
    }
}

/// One partition's outcome once its batches are applied; success is reported only once every
/// wait in `durable` resolved.
struct PartitionResult {
    error: i16,
    message: Option<String>,
    base_offset: i64,
    log_append_time_ms: i64,
    log_start_offset: i64,
    durable: Vec<Durable>,
    /// The partition's idempotent-producer state, when an idempotent batch was applied: it is
    /// forgotten (rebuilt later from what is durable) if a wait in `durable` fails.
    producers: Option<Arc<tokio::sync::Mutex<PartitionProducers>>>,
}

impl PartitionResult {
    fn err(error: i16, message: impl Into<String>) -> Self {
        PartitionResult {
            error,
            message: Some(message.into()),
            base_offset: -1,
            log_append_time_ms: -1,
            log_start_offset: -1,
            durable: Vec::new(),
            producers: None,
        }
    }
}

fn batch_error_code(e: &BatchError) -> i16 {
    match e {
        BatchError::Magic(_) => code::UNSUPPORTED_FOR_MESSAGE_FORMAT,
        BatchError::Header("batch larger than max.message.bytes") => code::MESSAGE_TOO_LARGE,
        _ => code::CORRUPT_MESSAGE,
    }
}

/// For compacted topics: the one record key shared by every record of the batch (the store
/// compacts by it), `Ok(None)` when keys differ (the batch is then kept whole, which is safe:
/// compaction keeps at least the newest record per key), or an error when a record has no key.
fn compaction_key(batch: &Bytes) -> Result<Option<Bytes>, String> {
    let mut buf = batch.clone();
    let set =
        RecordBatchDecoder::decode(&mut buf).map_err(|e| format!("cannot read records: {e}"))?;
    let mut common: Option<Bytes> = None;
    let mut mixed = false;
    for r in &set.records {
        let Some(k) = &r.key else {
            return Err("compacted topic: every record needs a key".into());
        };
        match &common {
            None => common = Some(k.clone()),
            Some(c) if c != k => mixed = true,
            Some(_) => {}
        }
    }
    Ok(if mixed { None } else { common })
}

impl<N: Node> KafkaBroker<N> {
    /// Rebuilds a partition's idempotent-producer state from its newest stored batches (their
    /// headers keep producer id, epoch and sequences, as Kafka rebuilds it from its log), so a
    /// producer known before a restart continues its sequence and a retry that straddles the
    /// restart is answered as a duplicate. Producers whose last batch is more than
    /// [`PRODUCER_REBUILD_OFFSETS_MAX`] offsets back are unknown again (accepted from any
    /// sequence, like an expired producer in Kafka).
    fn rebuild_producers(&self, topic: &str, key: &str, p: &mut PartitionProducers) {
        p.loaded = true;
        let Ok(bounds) = self.node.bounds(topic, key) else {
            return;
        };
        let mut from = bounds
            .next
            .saturating_sub(PRODUCER_REBUILD_OFFSETS_MAX)
            .max(bounds.start);
        // Oldest first, a page at a time, so the newest batch of each producer wins.
        loop {
            let Ok(entries) =
                self.node
                    .read_from(topic, key, from, usize::MAX, PRODUCER_REBUILD_PAGE_ENTRIES)
            else {
                return;
            };
            let Some(last) = entries.last() else { return };
            from = last.version.next_key_version();
            for e in &entries {
                if let Some((pid, epoch, first, count)) = super::batch::stored_producer(&e.value) {
                    if pid >= 0 && first >= 0 && count > 0 {
                        let last = ((i64::from(first) + i64::from(count) - 1)
                            % (i64::from(i32::MAX) + 1)) as i32;
                        p.record_fields(pid, epoch, first, last, e.version.key_version as i64);
                    }
                }
            }
            if entries.len() < PRODUCER_REBUILD_PAGE_ENTRIES || from >= bounds.next {
                return;
            }
        }
    }

    /// Whether the batch stored at `base` is `b` (same producer, epoch and first sequence).
    fn batch_stored_at(&self, topic: &str, key: &str, base: i64, b: &BatchInfo) -> bool {
        let Ok(e) = self.node.get_version(topic, key, base.max(0) as u64) else {
            return false;
        };
        e.version.key_version as i64 == base
            && super::batch::stored_producer(&e.value).is_some_and(|(pid, epoch, first, _)| {
                pid == b.producer_id && epoch == b.producer_epoch && first == b.base_sequence
            })
    }

    pub(crate) fn partition_producers(
        &self,
        key: &str,
    ) -> Arc<tokio::sync::Mutex<PartitionProducers>> {
        let mut map = match self.producers.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.entry(key.to_string()).or_default().clone()
    }

    /// Produce v3+, in two steps: this applies every batch (in order per partition) and
    /// returns a future that waits for the batches to be on disk and then yields the response
    /// (`None` for acks=0, which waits for nothing). The server starts the connection's next
    /// request once this returns, so consecutive produce requests share group-commit fsyncs
    /// instead of each waiting for its own one; their responses still go out in order.
    ///
    /// The partitions of one request are applied concurrently. A request that names the same
    /// partition twice is served one partition at a time, in request order. A partition whose
    /// fsync failed is answered with KAFKA_STORAGE_ERROR.
    pub(crate) async fn produce(&self, req: ProduceRequest, _version: i16) -> ProducePending {
        let acks = req.acks;
        let transactional = req
            .transactional_id
            .as_ref()
            .is_some_and(|t| !t.0.is_empty());
        let distinct = {
            let mut seen = HashSet::new();
            req.topic_data.iter().all(|t| {
                t.partition_data
                    .iter()
                    .all(|pd| seen.insert((t.name.0.as_str(), pd.index)))
            })
        };
        let mut topics = Vec::with_capacity(req.topic_data.len());
        let mut jobs = Vec::new();
        for topic in req.topic_data {
            let name = topic.name.0.as_str().to_string();
            let meta = self.topic(&name);
            topics.push((topic.name, topic.partition_data.len()));
            for pd in topic.partition_data {
                let (name, meta) = (name.clone(), meta.clone());
                jobs.push(async move {
                    let r = if !matches!(acks, -1..=1) {
                        PartitionResult::err(code::INVALID_REQUIRED_ACKS, "acks must be -1, 0 or 1")
                    } else if transactional {
                        PartitionResult::err(
                            code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                            "transactions are not supported by Squall yet",
                        )
                    } else {
                        match &meta {
                            None => PartitionResult::err(
                                code::UNKNOWN_TOPIC_OR_PARTITION,
                                "unknown topic",
                            ),
                            Some(m) if pd.index < 0 || pd.index as u32 >= m.partitions => {
                                PartitionResult::err(
                                    code::UNKNOWN_TOPIC_OR_PARTITION,
                                    "unknown partition",
                                )
                            }
                            Some(m) => self.produce_partition(&name, m, pd.index, pd.records).await,
                        }
                    };
                    (pd.index, r)
                });
            }
        }
        let done = if distinct {
            futures_util::future::join_all(jobs).await
        } else {
            let mut done = Vec::with_capacity(jobs.len());
            for job in jobs {
                done.push(job.await);
            }
            done
        };
        Box::pin(async move {
            if acks == 0 {
                return None;
            }
            let mut done =
                futures_util::future::join_all(done.into_iter().map(|(index, mut r)| async move {
                    for d in std::mem::take(&mut r.durable) {
                        if let Err(e) = d.await {
                            // Before the producer hears of the failure (and retries), so its
                            // retry is checked against what is actually stored.
                            if let Some(p) = r.producers.take() {
                                p.lock().await.forget();
                            }
                            r = PartitionResult::err(code::KAFKA_STORAGE_ERROR, e.to_string());
                            break;
                        }
                    }
                    PartitionProduceResponse::default()
                        .with_index(index)
                        .with_error_code(r.error)
                        .with_base_offset(r.base_offset)
                        .with_log_append_time_ms(r.log_append_time_ms)
                        .with_log_start_offset(r.log_start_offset)
                        .with_error_message(r.message.map(|m| sb(&m)))
                }))
                .await
                .into_iter();
            let responses = topics
                .into_iter()
                .map(|(name, n)| {
                    TopicProduceResponse::default()
                        .with_name(name)
                        .with_partition_responses(done.by_ref().take(n).collect())
                })
                .collect();
            Some(ProduceResponse::default().with_responses(responses))
        })
    }

    async fn produce_partition(
        &self,
        topic: &str,
        meta: &TopicMeta,
        partition: i32,
        records: Option<Bytes>,
    ) -> PartitionResult {
        let Some(records) = records else {
            return PartitionResult::err(code::CORRUPT_MESSAGE, "no records");
        };
        let batches = match parse_batches(&records, meta.batch_bytes_max()) {
            Ok(b) => b,
            Err(e) => return PartitionResult::err(batch_error_code(&e), e.to_string()),
        };
        if batches.iter().any(|b| b.transactional || b.control) {
            return PartitionResult::err(
                code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                "transactional batches are not supported by Squall yet",
            );
        }
        // A topic bridged to a DDS pool: refuse now what the instance's owner would refuse
        // (hook of the DDS face, crate::dds::kafka_bridge::check_claims).
        #[cfg(feature = "dds")]
        for b in &batches {
            use crate::dds::kafka_bridge::{check_claims, ClaimRefusal};
            match check_claims(
                &*self.node,
                &meta.configs,
                &records.slice(b.start..b.start + b.len),
            ) {
                Ok(()) => {}
                Err(ClaimRefusal::Malformed(m)) => {
                    return PartitionResult::err(code::INVALID_RECORD, m)
                }
                Err(ClaimRefusal::NotOwner(m)) => {
                    return PartitionResult::err(code::POLICY_VIOLATION, m)
                }
            }
        }
        let compact = meta.compact();
        let mut keys = Vec::with_capacity(batches.len());
        for b in &batches {
            let bytes = records.slice(b.start..b.start + b.len);
            if compact {
                match compaction_key(&bytes) {
                    Ok(k) => keys.push(k),
                    Err(m) => return PartitionResult::err(code::INVALID_RECORD, m),
                }
            } else {
                keys.push(None);
            }
        }
        let key = partition_key(topic, partition);
        let idempotent = batches.iter().any(|b| b.producer_id >= 0);
        let producers = idempotent.then(|| self.partition_producers(&key));
        let mut guard = match &producers {
            Some(p) => Some(p.lock().await),
            None => None,
        };
        if let Some(g) = guard.as_mut() {
            if !g.loaded {
                // Wait until everything applied is durable (or known lost), so the rebuild
                // reads every batch that will survive and no batch that will not.
                if let Err(e) = self.node.flushed().await {
                    return PartitionResult::err(code::KAFKA_STORAGE_ERROR, e.to_string());
                }
                self.rebuild_producers(topic, &key, g);
            }
        }
        let log_append = meta.log_append_time();
        let mut first_base: Option<i64> = None;
        let mut append_ms = -1;
        let mut durable = Vec::new();
        for (b, ckey) in batches.iter().zip(keys) {
            if let Some(g) = guard.as_mut() {
                let mut verdict = g.check(b);
                if let SequenceCheck::Duplicate(base) = verdict {
                    // Answer a duplicate only for a batch that is really stored: wait until
                    // what is applied is durable, then look. A batch recorded here but lost
                    // (its fsync failed, and nobody was left to forget it: acks=0, or the
                    // connection closed first) must be written again, not acknowledged.
                    if let Err(e) = self.node.flushed().await {
                        return PartitionResult::err(code::KAFKA_STORAGE_ERROR, e.to_string());
                    }
                    if !self.batch_stored_at(topic, &key, base, b) {
                        g.forget();
                        self.rebuild_producers(topic, &key, g);
                        verdict = g.check(b);
                    }
                }
                match verdict {
                    SequenceCheck::Append => {}
                    SequenceCheck::Duplicate(base) => {
                        // The original may still wait for its fsync (an earlier request of
                        // this producer): answer once everything applied so far is on disk.
                        first_base.get_or_insert(base);
                        durable.push(self.node.flushed());
                        continue;
                    }
                    SequenceCheck::Reject(c) => {
                        return PartitionResult::err(
                            c,
                            "idempotent producer sequence check failed",
                        );
                    }
                }
            }
            let mut value = records.slice(b.start..b.start + b.len);
            let mut sensor_time_us = (b.max_timestamp > 0).then(|| b.max_timestamp as u64 * 1000);
            if log_append {
                append_ms = now_ms();
                value = with_log_append_time(&value, append_ms);
                sensor_time_us = None;
            }
            let mut put = PutRequest::new(topic, key.clone(), value);
            put.span = b.span();
            put.sensor_time_us = sensor_time_us;
            put.compaction_key = ckey;
            match self.node.put_applied(put).await {
                Ok((v, d)) => {
                    durable.push(d);
                    let base = v.key_version as i64;
                    first_base.get_or_insert(base);
                    if let Some(g) = guard.as_mut() {
                        g.record(b, base);
                    }
                }
                Err(e) => return PartitionResult::err(node_code(&e), e.to_string()),
            }
        }
        drop(guard);
        let log_start = self
            .node
            .bounds(topic, &key)
            .map(|b| b.start as i64)
            .unwrap_or(0);
        PartitionResult {
            error: code::NONE,
            message: None,
            base_offset: first_base.unwrap_or(-1),
            log_append_time_ms: append_ms,
            log_start_offset: log_start,
            durable,
            producers,
        }
    }

    pub(crate) async fn init_producer_id(
        &self,
        req: InitProducerIdRequest,
    ) -> InitProducerIdResponse {
        if req
            .transactional_id
            .as_ref()
            .is_some_and(|t| !t.0.is_empty())
        {
            return InitProducerIdResponse::default()
                .with_error_code(code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1);
        }
        // An existing producer asking for an epoch bump (KIP-360) keeps its id.
        if req.producer_id.0 >= PRODUCER_ID_BASE && req.producer_epoch >= 0 {
            let epoch = req.producer_epoch.checked_add(1).unwrap_or(0);
            return InitProducerIdResponse::default()
                .with_producer_id(req.producer_id)
                .with_producer_epoch(epoch);
        }
        // The dense counter of one key hands out unique, replicated ids.
        match self
            .node
            .put(PutRequest::new(PRODUCER_IDS_POOL, "next", Bytes::new()))
            .await
        {
            Ok(v) => InitProducerIdResponse::default()
                .with_producer_id(ProducerId(PRODUCER_ID_BASE + v.key_version as i64))
                .with_producer_epoch(0),
            Err(e) => InitProducerIdResponse::default()
                .with_error_code(if node_code(&e) == code::KAFKA_STORAGE_ERROR {
                    code::COORDINATOR_NOT_AVAILABLE
                } else {
                    node_code(&e)
                })
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        }
    }
}

/// Most topics or partitions read from a legacy produce request (each needs ≥ 4 bytes anyway).
const LEGACY_ARRAY_MAX: i32 = 100_000;

/// Answers Produce v0–v2 (advertised for old librdkafka's feature detection, never decoded into
/// the log) with UNSUPPORTED_VERSION for every partition, in the v0–v2 response format. `None`
/// when acks=0; an error (connection closed) when the request does not parse.
pub(crate) fn legacy_produce_unsupported(
    body: Bytes,
    version: i16,
    correlation_id: i32,
) -> Result<Option<BytesMut>, KafkaError> {
    let bad = |reason: &str| KafkaError::Malformed {
        api_key: 0,
        api_version: version,
        reason: reason.to_string(),
    };
    let mut b = body;
    b.advance(8);
    // client_id: nullable string (i16 length).
    if b.remaining() < 2 {
        return Err(bad("truncated client id"));
    }
    let cid = b.get_i16();
    if cid > 0 {
        if b.remaining() < cid as usize {
            return Err(bad("truncated client id"));
        }
        b.advance(cid as usize);
    }
    if b.remaining() < 2 + 4 + 4 {
        return Err(bad("truncated produce header"));
    }
    let acks = b.get_i16();
    let _timeout = b.get_i32();
    let topics = b.get_i32();
    if !(0..=LEGACY_ARRAY_MAX).contains(&topics) {
        return Err(bad("topic count out of range"));
    }
    let mut out_topics: Vec<(Bytes, Vec<i32>)> = Vec::new();
    for _ in 0..topics {
        if b.remaining() < 2 {
            return Err(bad("truncated topic"));
        }
        let n = b.get_i16();
        if n < 0 || b.remaining() < n as usize + 4 {
            return Err(bad("truncated topic name"));
        }
        let name = b.split_to(n as usize);
        let parts = b.get_i32();
        if !(0..=LEGACY_ARRAY_MAX).contains(&parts) {
            return Err(bad("partition count out of range"));
        }
        let mut ps = Vec::new();
        for _ in 0..parts {
            if b.remaining() < 8 {
                return Err(bad("truncated partition"));
            }
            ps.push(b.get_i32());
            let size = b.get_i32();
            if size > 0 {
                if b.remaining() < size as usize {
                    return Err(bad("truncated message set"));
                }
                b.advance(size as usize);
            }
        }
        out_topics.push((name, ps));
    }
    if acks == 0 {
        return Ok(None);
    }
    let mut out = BytesMut::new();
    out.put_i32(0);
    out.put_i32(correlation_id);
    out.put_i32(out_topics.len() as i32);
    for (name, ps) in &out_topics {
        out.put_i16(name.len() as i16);
        out.put_slice(name);
        out.put_i32(ps.len() as i32);
        for p in ps {
            out.put_i32(*p);
            out.put_i16(code::UNSUPPORTED_VERSION);
            out.put_i64(-1);
            if version >= 2 {
                out.put_i64(-1);
            }
        }
    }
    if version >= 1 {
        out.put_i32(0);
    }
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(Some(out))
}
