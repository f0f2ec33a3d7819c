//! Fetch: whole stored batches from the asked offset on, with long polling.
//!
//! A fetch at an offset inside a batch returns that whole batch (the client skips the records
//! before its offset). Byte limits: per partition `partition_max_bytes`, per response
//! `max_bytes`; the first batch of a response is always returned even if it is larger (KIP-74),
//! so a consumer never gets stuck. Long poll: when fewer than `min_bytes` are available the
//! handler watches the fetched partitions and answers on the first new data or at `max_wait_ms`.
//! Stateless topics keep nothing, so their batches are delivered from the watch itself.

use std::collections::HashMap;
use std::time::Instant;

use bytes::BytesMut;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::*;
use squall_storage::{Entry, Mode, Selector, WatchFrom};

use super::batch::put_with_base_offset;
use super::broker::{clamp_ms, code, node_code, KafkaBroker};
use super::topics::partition_key;
use crate::node::{KeyBounds, Node, NodeError, WatchEvent, WatchStream};

/// Most stored batches read for one partition in one fetch.
const FETCH_ENTRIES_MAX: usize = 10_000;
/// Most live entries held per partition while a stateless fetch waits.
const STATELESS_HELD_MAX: usize = 1024;

type Held = HashMap<(usize, usize), Vec<Entry>>;

impl<N: Node> KafkaBroker<N> {
    pub(crate) async fn fetch(&self, req: FetchRequest, _version: i16) -> FetchResponse {
        let max_wait = clamp_ms(req.max_wait_ms, self.config.fetch_wait_ms_max);
        let min_bytes = req.min_bytes.max(0) as usize;
        let max_bytes = if req.max_bytes <= 0 {
            self.config.fetch_response_bytes_max
        } else {
            (req.max_bytes as usize).min(self.config.fetch_response_bytes_max)
        };
        let mut held: Held = HashMap::new();
        let (resp, bytes, errors) = self.fetch_once(&req, max_bytes, &held);
        if bytes >= min_bytes.max(1) || errors || max_wait.is_zero() {
            return resp;
        }
        let deadline = Instant::now() + max_wait;
        // Watch every fetched partition, then read again so nothing written in between is missed.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<((usize, usize), WatchEvent)>(256);
        let mut tasks = tokio::task::JoinSet::new();
        for (ti, t) in req.topics.iter().enumerate() {
            for (pi, p) in t.partitions.iter().enumerate() {
                let key = partition_key(t.topic.0.as_str(), p.partition);
                if let Ok(mut w) =
                    self.node
                        .watch(t.topic.0.as_str(), Selector::Key(key), WatchFrom::Now)
                {
                    let tx = tx.clone();
                    tasks.spawn(async move {
                        while let Some(ev) = w.next().await {
                            if tx.send(((ti, pi), ev)).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            }
        }
        drop(tx);
        let (mut resp, mut bytes, mut errors) = self.fetch_once(&req, max_bytes, &held);
        while bytes < min_bytes.max(1) && !errors {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Some((idx, WatchEvent::Update(entry)))) => {
                    let stateless = req
                        .topics
                        .get(idx.0)
                        .and_then(|t| self.node.pool(t.topic.0.as_str()))
                        .is_some_and(|p| p.mode == Mode::Stateless);
                    if stateless {
                        let h = held.entry(idx).or_default();
                        if h.len() < STATELESS_HELD_MAX {
                            h.push(entry);
                        }
                    }
                }
                Ok(Some((_, WatchEvent::Lagged(_)))) => {}
                Ok(None) | Err(_) => break,
            }
            // Drain whatever else arrived, then read once.
            while let Ok((idx, ev)) = rx.try_recv() {
                if let WatchEvent::Update(entry) = ev {
                    let h = held.entry(idx).or_default();
                    if h.len() < STATELESS_HELD_MAX {
                        h.push(entry);
                    }
                }
            }
            (resp, bytes, errors) = self.fetch_once(&req, max_bytes, &held);
        }
        tasks.abort_all();
        resp
    }

    /// One pass over the request: (response, record bytes in it, whether a partition errored).
    fn fetch_once(
        &self,
        req: &FetchRequest,
        max_bytes: usize,
        held: &Held,
    ) -> (FetchResponse, usize, bool) {
        let mut total = 0usize;
        let mut errors = false;
        let mut topics = Vec::with_capacity(req.topics.len());
        for (ti, t) in req.topics.iter().enumerate() {
            let name = t.topic.0.as_str();
            let meta = self.topic(name);
            let stateless = self
                .node
                .pool(name)
                .is_some_and(|p| p.mode == Mode::Stateless);
            let mut parts = Vec::with_capacity(t.partitions.len());
            for (pi, p) in t.partitions.iter().enumerate() {
                let mut pd = PartitionData::default()
                    .with_partition_index(p.partition)
                    .with_aborted_transactions(Some(Vec::new()));
                let Some(m) = &meta else {
                    errors = true;
                    parts.push(pd.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION));
                    continue;
                };
                if p.partition < 0 || p.partition as u32 >= m.partitions {
                    errors = true;
                    parts.push(pd.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION));
                    continue;
                }
                let key = partition_key(name, p.partition);
                let bounds = match self.node.bounds(name, &key) {
                    Ok(b) => b,
                    Err(NodeError::NotFound) => KeyBounds::default(),
                    Err(e) => {
                        errors = true;
                        parts.push(pd.with_error_code(node_code(&e)));
                        continue;
                    }
                };
                pd = pd
                    .with_high_watermark(bounds.next as i64)
                    .with_last_stable_offset(bounds.next as i64)
                    .with_log_start_offset(bounds.start as i64);
                let offset = p.fetch_offset;
                if offset < 0
                    || (offset as u64) > bounds.next
                    || ((offset as u64) < bounds.start && !stateless)
                {
                    errors = true;
                    parts.push(pd.with_error_code(code::OFFSET_OUT_OF_RANGE));
                    continue;
                }
                let limit =
                    (p.partition_max_bytes.max(0) as usize).min(max_bytes.saturating_sub(total));
                let mut out = BytesMut::new();
                let push = |e: &Entry, out: &mut BytesMut, total: &mut usize| -> bool {
                    if e.tombstone || e.value.is_empty() {
                        return true;
                    }
                    let first = *total == 0 && out.is_empty();
                    if !first && out.len() + e.value.len() > limit {
                        return false;
                    }
                    put_with_base_offset(out, &e.value, e.version.key_version as i64);
                    *total += e.value.len();
                    true
                };
                if (offset as u64) < bounds.next && !stateless {
                    match self.node.read_from(
                        name,
                        &key,
                        offset as u64,
                        limit.max(1),
                        FETCH_ENTRIES_MAX,
                    ) {
                        Ok(entries) => {
                            for e in &entries {
                                if !push(e, &mut out, &mut total) {
                                    break;
                                }
                            }
                        }
                        Err(NodeError::NotFound) => {}
                        Err(e) => {
                            errors = true;
                            parts.push(pd.with_error_code(node_code(&e)));
                            continue;
                        }
                    }
                }
                if stateless {
                    if let Some(entries) = held.get(&(ti, pi)) {
                        for e in entries
                            .iter()
                            .filter(|e| e.version.next_key_version() > offset as u64)
                        {
                            if !push(e, &mut out, &mut total) {
                                break;
                            }
                        }
                    }
                }
                parts.push(pd.with_records(Some(out.freeze())));
            }
            topics.push(
                FetchableTopicResponse::default()
                    .with_topic(t.topic.clone())
                    .with_partitions(parts),
            );
        }
        (
            FetchResponse::default().with_responses(topics),
            total,
            errors,
        )
    }
}
