//! `GET /v1/pools/{pool}/watch` (server-sent events: history replayed, then live) and
//! `GET /v1/pools/{pool}/replay` (every version in a time window, as JSON lines: the audit view).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use prometheus::IntGauge;
use serde::Deserialize;
use squall_storage::{Clock, Entry, Mode, Selector, WatchFrom};

use super::wire::EntryJson;
use super::{
    check_key, check_not_future, check_pool_name, check_prefix, json_codec, rejection, wait_of,
    ApiError, St, ValueCodec, REPLAY_KEYS_MAX,
};
use crate::node::{Node, NodeError, WatchEvent, WatchStream};

/// Entries read from the node per replay step, per key.
const REPLAY_CHUNK_ENTRIES: usize = 1024;
/// Value bytes read from the node per replay step, per key.
const REPLAY_CHUNK_BYTES: usize = 1024 * 1024;
/// Replay output is sent in pieces of about this many bytes.
const REPLAY_PIECE_BYTES: usize = 64 * 1024;
/// Pieces buffered between the replay task and the connection (backpressure beyond that).
const REPLAY_PIECES_QUEUED: usize = 16;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WatchParams {
    key: Option<String>,
    prefix: Option<String>,
    from_version: Option<u64>,
    from_time: Option<u64>,
    clock: Option<Clock>,
    format: Option<String>,
}

fn selector_of(key: Option<String>, prefix: Option<String>) -> Result<Selector, ApiError> {
    match (key, prefix) {
        (Some(k), None) => {
            check_key(&k)?;
            Ok(Selector::Key(k))
        }
        (None, Some(p)) => {
            check_prefix(&p)?;
            Ok(Selector::Prefix(p))
        }
        _ => Err(ApiError::bad_request(
            "bad_query",
            "give exactly one of key=K or prefix=P (prefix= with nothing after it follows the whole pool)",
        )),
    }
}

/// Decrements the open-watchers gauge when the stream is dropped.
struct WatcherSlot(IntGauge);

impl Drop for WatcherSlot {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn event_of(e: &Entry, codec: Option<&dyn ValueCodec>) -> Event {
    let data = serde_json::to_string(&EntryJson::from_entry(None, e).rendered(codec, e))
        .unwrap_or_default();
    Event::default()
        .id(e.version.key_version.to_string())
        .event(if e.tombstone { "delete" } else { "put" })
        .data(data)
}

pub(crate) async fn watch<N: Node>(
    State(st): State<St<N>>,
    pool: Result<Path<String>, PathRejection>,
    q: Result<Query<WatchParams>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(pool) = pool.map_err(|r| rejection("bad_path", r))?;
    check_pool_name(&pool)?;
    let Query(q) = q.map_err(|r| rejection("bad_query", r))?;
    let selector = selector_of(q.key, q.prefix)?;
    let codec = json_codec(&st, &pool, q.format.as_deref(), false)?;
    let from = match (q.from_version, q.from_time) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "bad_query",
                "give from_version= or from_time=, not both",
            ))
        }
        (Some(v), None) => WatchFrom::Version(v),
        (None, Some(t)) => WatchFrom::Time(t, q.clock.unwrap_or_default()),
        (None, None) => {
            // An EventSource reconnecting to a one-key watch resumes after the last event it saw.
            let last = headers
                .get("last-event-id")
                .map(|v| v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()));
            match (last, &selector) {
                (Some(Some(id)), Selector::Key(_)) => WatchFrom::Version(id.saturating_add(1)),
                (Some(None), _) => {
                    return Err(ApiError::bad_request(
                        "bad_header",
                        "Last-Event-ID must be a version number",
                    ))
                }
                _ => WatchFrom::Now,
            }
        }
    };
    if q.clock.is_some() && q.from_time.is_none() {
        return Err(ApiError::bad_request(
            "bad_query",
            "clock= only goes with from_time=",
        ));
    }
    if st.node.pool(&pool).is_none() {
        return Err(NodeError::NoSuchPool(pool).into());
    }
    if st.metrics.watchers.get() >= i64::from(st.cfg.watchers_max) {
        return Err(NodeError::Overloaded(format!(
            "{} watchers open (http.watchers_max)",
            st.cfg.watchers_max
        ))
        .into());
    }
    let w = st.node.watch(&pool, selector, from)?;
    st.metrics.watchers.inc();
    let slot = WatcherSlot(st.metrics.watchers.clone());
    let events = futures_util::stream::unfold((w, slot), move |(mut w, slot)| {
        let codec = codec.clone();
        async move {
            match w.next().await {
                Some(WatchEvent::Update(e)) => Some((
                    Ok::<Event, Infallible>(event_of(&e, codec.as_deref())),
                    (w, slot),
                )),
                Some(WatchEvent::Lagged(n)) => {
                    // The node dropped events for this slow watcher; say so and carry on with what
                    // it still has (a client that needs every event re-watches from its last id).
                    let ev = Event::default().event("lagged").data(format!(
                    "{{\"dropped\":{n},\"message\":\"this watcher fell behind and lost events; watch again from the last version seen to fill the gap\"}}"
                ));
                    Some((Ok(ev), (w, slot)))
                }
                None => None,
            }
        }
    });
    let mut shutdown = st.shutdown.clone();
    let stop = async move {
        if shutdown.wait_for(|v| *v).await.is_err() {
            // The owner dropped the switch without flipping it: never stop from here.
            std::future::pending::<()>().await;
        }
    };
    let stream = events.take_until(Box::pin(stop));
    let keep_alive = KeepAlive::new().interval(Duration::from_millis(st.cfg.keep_alive_ms));
    Ok(Sse::new(stream).keep_alive(keep_alive).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplayParams {
    key: Option<String>,
    prefix: Option<String>,
    from_time: u64,
    to_time: u64,
    clock: Option<Clock>,
    wait_ms: Option<u64>,
    format: Option<String>,
}

/// Where one key's replay is.
struct Cursor {
    key: String,
    /// Next key_version to read.
    next: u64,
    /// Stop before this key_version (the key's end when the replay started).
    end: u64,
    buf: VecDeque<Entry>,
    done: bool,
}

struct Window {
    pool: String,
    clock: Clock,
    from: u64,
    to: u64,
}

impl Window {
    fn contains(&self, e: &Entry) -> bool {
        let t = match self.clock {
            Clock::Platform => Some(e.version.time.physical_us),
            Clock::Sensor => e.version.sensor_time_us,
        };
        t.is_some_and(|t| t >= self.from && t <= self.to)
    }

    /// Merge order: the window's clock first, then the shard order.
    fn order(&self, e: &Entry) -> (u64, u64, u32, u64) {
        let primary = match self.clock {
            Clock::Platform => e.version.time.physical_us,
            Clock::Sensor => e.version.sensor_time_us.unwrap_or(0),
        };
        (
            primary,
            e.version.time.physical_us,
            e.version.time.logical,
            e.version.shard_seq,
        )
    }
}

impl Cursor {
    fn start<N: Node>(node: &N, w: &Window, key: String) -> Result<Self, NodeError> {
        let b = match node.bounds(&w.pool, &key) {
            Ok(b) => b,
            Err(NodeError::NotFound) => {
                return Ok(Cursor {
                    key,
                    next: 0,
                    end: 0,
                    buf: VecDeque::new(),
                    done: true,
                })
            }
            Err(e) => return Err(e),
        };
        let first = match w.clock {
            Clock::Platform => node.version_at_or_after(&w.pool, &key, w.from, Clock::Platform)?,
            // Sensor times are not monotonic in version order: scan what is kept.
            Clock::Sensor => Some(b.start),
        };
        Ok(Cursor {
            key,
            next: first.unwrap_or(b.next),
            end: b.next,
            buf: VecDeque::new(),
            done: first.is_none(),
        })
    }

    /// The next entry of this key inside the window, reading more from the node when needed.
    fn peek<N: Node>(&mut self, node: &N, w: &Window) -> Result<Option<&Entry>, NodeError> {
        while self.buf.is_empty() && !self.done && self.next < self.end {
            let got = match node.read_from(
                &w.pool,
                &self.key,
                self.next,
                REPLAY_CHUNK_BYTES,
                REPLAY_CHUNK_ENTRIES,
            ) {
                Ok(got) => got,
                Err(NodeError::WrongMode(_)) => {
                    // A `latest` pool keeps only the newest version: that is all there is.
                    self.done = true;
                    match node.get(&w.pool, &self.key) {
                        Ok(e) if w.contains(&e) => self.buf.push_back(e),
                        Ok(_) | Err(NodeError::NotFound) => {}
                        Err(e) => return Err(e),
                    }
                    break;
                }
                Err(NodeError::NotFound) => {
                    // Truncated under us: continue from the first kept version, if later.
                    let b = node.bounds(&w.pool, &self.key)?;
                    if b.start > self.next {
                        self.next = b.start;
                        continue;
                    }
                    self.done = true;
                    break;
                }
                Err(e) => return Err(e),
            };
            if got.is_empty() {
                self.done = true;
            }
            for e in got {
                if e.version.key_version >= self.end {
                    self.done = true;
                    break;
                }
                self.next = e.version.next_key_version();
                if w.clock == Clock::Platform && e.version.time.physical_us > w.to {
                    self.done = true;
                    break;
                }
                if w.contains(&e) {
                    self.buf.push_back(e);
                }
            }
        }
        Ok(self.buf.front())
    }
}

fn error_line(e: &ApiError) -> bytes::Bytes {
    let v = serde_json::json!({"error": e.code, "message": e.message});
    bytes::Bytes::from(format!("{v}\n"))
}

/// Merges the keys' cursors in window order and sends JSON lines into `tx`.
async fn run_replay<N: Node>(
    node: std::sync::Arc<N>,
    w: Window,
    keys: Vec<String>,
    codec: Option<std::sync::Arc<dyn ValueCodec>>,
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
) {
    let mut cursors = Vec::with_capacity(keys.len());
    for k in keys {
        match Cursor::start(&*node, &w, k) {
            Ok(c) => cursors.push(c),
            Err(e) => {
                let _ = tx.send(error_line(&e.into())).await;
                return;
            }
        }
    }
    let mut heap = BinaryHeap::new();
    for (i, c) in cursors.iter_mut().enumerate() {
        match c.peek(&*node, &w) {
            Ok(Some(e)) => heap.push(Reverse((w.order(e), i))),
            Ok(None) => {}
            Err(e) => {
                let _ = tx.send(error_line(&e.into())).await;
                return;
            }
        }
    }
    let mut piece = Vec::with_capacity(REPLAY_PIECE_BYTES);
    while let Some(Reverse((_, i))) = heap.pop() {
        let Some(c) = cursors.get_mut(i) else { break };
        let Some(e) = c.buf.pop_front() else { continue };
        let line = EntryJson::from_entry(Some(&w.pool), &e).rendered(codec.as_deref(), &e);
        if serde_json::to_writer(&mut piece, &line).is_err() {
            break;
        }
        piece.push(b'\n');
        match c.peek(&*node, &w) {
            Ok(Some(e)) => heap.push(Reverse((w.order(e), i))),
            Ok(None) => {}
            Err(e) => {
                piece.extend_from_slice(&error_line(&e.into()));
                let _ = tx.send(bytes::Bytes::from(piece)).await;
                return;
            }
        }
        if piece.len() >= REPLAY_PIECE_BYTES {
            let out = std::mem::replace(&mut piece, Vec::with_capacity(REPLAY_PIECE_BYTES));
            if tx.send(bytes::Bytes::from(out)).await.is_err() {
                return; // the client went away
            }
        }
    }
    if !piece.is_empty() {
        let _ = tx.send(bytes::Bytes::from(piece)).await;
    }
}

pub(crate) async fn replay<N: Node>(
    State(st): State<St<N>>,
    pool: Result<Path<String>, PathRejection>,
    q: Result<Query<ReplayParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(pool) = pool.map_err(|r| rejection("bad_path", r))?;
    check_pool_name(&pool)?;
    let Query(q) = q.map_err(|r| {
        rejection(
            "bad_query",
            format!("{r} (expected from_time=µs&to_time=µs and key= or prefix=)"),
        )
    })?;
    let selector = selector_of(q.key, q.prefix)?;
    let codec = json_codec(&st, &pool, q.format.as_deref(), false)?;
    if q.from_time > q.to_time {
        return Err(ApiError::bad_request(
            "bad_query",
            "from_time is after to_time",
        ));
    }
    let cfg = st
        .node
        .pool(&pool)
        .ok_or_else(|| NodeError::NoSuchPool(pool.clone()))?;
    if cfg.mode == Mode::Stateless {
        return Err(ApiError::bad_request(
            "wrong_mode",
            format!("pool {pool:?} is stateless: it keeps nothing to replay"),
        ));
    }
    let clock = q.clock.unwrap_or_default();
    let wait = wait_of(&st.cfg, q.wait_ms)?;
    check_not_future(
        q.to_time,
        if clock == Clock::Sensor {
            cfg.lateness_us
        } else {
            0
        },
        wait,
    )?;
    let keys = match selector {
        Selector::Key(k) => vec![k],
        Selector::Prefix(p) => st.node.keys_with_history(&pool, &p)?,
    };
    if keys.len() > REPLAY_KEYS_MAX {
        return Err(ApiError::bad_request(
            "too_many_keys",
            format!(
                "the prefix matches {} keys; a replay covers at most {REPLAY_KEYS_MAX}",
                keys.len()
            ),
        ));
    }
    // Wait until to_time is final, so the replay is the same whoever asks and whenever.
    let probe: Vec<(String, String)> = keys.iter().map(|k| (pool.clone(), k.clone())).collect();
    st.node.snapshot(probe, q.to_time, clock, wait).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(REPLAY_PIECES_QUEUED);
    let window = Window {
        pool,
        clock,
        from: q.from_time,
        to: q.to_time,
    };
    tokio::spawn(run_replay(st.node.clone(), window, keys, codec, tx));
    let body = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|o| o.map(Ok::<_, Infallible>))
    });
    let mut resp = (StatusCode::OK, Body::from_stream(body)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(resp)
}
