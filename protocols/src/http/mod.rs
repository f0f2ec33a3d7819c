//! The HTTP face: pools, puts, reads (latest, by version, at a time), consistent snapshots,
//! server-sent-event watches, replays, truncation, `/metrics` and `/healthz`, all written
//! against the [`Node`] trait (the face translates and never stores). The API is documented
//! for users in `docs/HTTP.md`.
//!
//! Built on axum (over hyper 1): it gives routing, typed extractors whose rejections we turn into
//! JSON errors, a body-limit layer applied before a body is buffered, SSE with keep-alives and
//! graceful shutdown, all on the tokio runtime the rest of the node already uses, with less
//! code to review than hand-written hyper services.
//!
//! Modules:
//! * [`wire`]: the JSON shapes (shared with the CLI and the tests);
//! * `error`: [`ApiError`], the one error reply shape, and the [`NodeError`] → status mapping;
//! * `pools`, `keys`, `snapshot`, `watch`: one file per group of endpoints;
//! * `metrics`: [`HttpMetrics`] and the request-tracking middleware.
//!
//! Driving it: build an [`HttpFace`], take its [`HttpFace::router`], and run it with [`serve`]
//! on a listener the caller bound (so the caller can print the real address and use port 0).

mod error;
mod keys;
mod metrics;
mod pools;
mod serve;
mod snapshot;
mod watch;
pub mod wire;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use prometheus::Registry;
use serde::{Deserialize, Serialize};
use squall_storage::{
    KEY_BYTES_MAX, POOL_NAME_BYTES_MAX, VALUE_BYTES_LIMIT, VALUE_BYTES_MAX_DEFAULT,
};

pub use error::ApiError;
pub use metrics::HttpMetrics;
pub use serve::{serve_with_limits, ConnLimits};

use crate::node::Node;

/// Largest JSON request body (pool creation, snapshot requests), in bytes.
pub const JSON_BODY_BYTES_MAX: usize = 1024 * 1024;
/// Most keys in one snapshot request.
pub const SNAPSHOT_KEYS_MAX: usize = 10_000;
/// Most keys listed by one `GET /v1/pools/{pool}/keys`.
pub const LIST_KEYS_MAX: usize = 100_000;
/// Most keys one replay may cover (a prefix matching more is refused).
pub const REPLAY_KEYS_MAX: usize = 10_000;

/// The HTTP face's configuration (a section of the broker's config file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest value accepted by a PUT (a pool may set a smaller one), in bytes.
    pub value_bytes_max: u32,
    /// Wait for a time read to become stable when the request gives no `wait_ms`, in ms.
    pub wait_ms_default: u64,
    /// Longest `wait_ms` a request may ask for, in ms.
    pub wait_ms_max: u64,
    /// Most open SSE watch streams; more get 429.
    pub watchers_max: u32,
    /// SSE keep-alive comment interval, in ms.
    pub keep_alive_ms: u64,
    /// Most HTTP connections open at once; past it a new connection is closed at accept.
    pub connections_max: u32,
    /// Longest time a request head may take to arrive before the connection is closed, in ms
    /// (slow or idle clients cannot hold connections).
    pub header_read_timeout_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            value_bytes_max: VALUE_BYTES_MAX_DEFAULT,
            wait_ms_default: 1_000,
            wait_ms_max: 60_000,
            watchers_max: 10_000,
            keep_alive_ms: 15_000,
            connections_max: ConnLimits::default().connections_max as u32,
            header_read_timeout_ms: ConnLimits::default().header_read_timeout.as_millis() as u64,
        }
    }
}

impl HttpConfig {
    /// Checks the values; the error names the field at fault and the allowed range.
    pub fn validate(&self) -> Result<(), String> {
        if self.value_bytes_max == 0 || self.value_bytes_max > VALUE_BYTES_LIMIT {
            return Err(format!(
                "http.value_bytes_max = {} is out of range: use 1..={VALUE_BYTES_LIMIT}",
                self.value_bytes_max
            ));
        }
        if self.wait_ms_default > self.wait_ms_max {
            return Err(format!(
                "http.wait_ms_default = {} is above http.wait_ms_max = {}",
                self.wait_ms_default, self.wait_ms_max
            ));
        }
        if self.wait_ms_max > 3_600_000 {
            return Err(format!(
                "http.wait_ms_max = {} is above one hour (3600000)",
                self.wait_ms_max
            ));
        }
        if self.watchers_max == 0 {
            return Err("http.watchers_max must be at least 1".into());
        }
        if self.keep_alive_ms == 0 {
            return Err("http.keep_alive_ms must be at least 1".into());
        }
        if self.connections_max == 0 {
            return Err("http.connections_max must be at least 1".into());
        }
        if self.header_read_timeout_ms == 0 || self.header_read_timeout_ms > 3_600_000 {
            return Err(format!(
                "http.header_read_timeout_ms = {} is out of range: use 1..=3600000",
                self.header_read_timeout_ms
            ));
        }
        Ok(())
    }

    /// The accept loop's limits ([`serve_with_limits`]).
    pub fn limits(&self) -> ConnLimits {
        ConnLimits {
            connections_max: self.connections_max as usize,
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
        }
    }
}

/// Renders a pool's stored values as JSON and builds them from JSON (e.g. the CDR of a DDS
/// topic's configured type), for `?format=json` / `Accept: application/json` and JSON bodies.
pub trait ValueCodec: Send + Sync {
    /// The JSON form of a stored value.
    fn render_json(&self, value: &[u8]) -> Result<serde_json::Value, String>;
    /// The stored value for a JSON form.
    fn parse_json(&self, json: &serde_json::Value) -> Result<Vec<u8>, String>;
}

/// What the HTTP face knows about a pool beyond its storage config, given by the broker from
/// another face's configuration (a DDS topic's editor strength and type).
#[derive(Clone, Default)]
pub struct PoolProfile {
    /// Strength of an ownership claim (`Squall-Owner`) that gives no `Squall-Strength`.
    pub editor_strength: i32,
    /// Lease of such a claim in ms when the request gives no `Squall-Lease-Ms` (0 = until the
    /// key is released).
    pub editor_lease_ms: u64,
    /// The pool's value codec, if its values have a described type.
    pub codec: Option<Arc<dyn ValueCodec>>,
}

impl std::fmt::Debug for PoolProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolProfile")
            .field("editor_strength", &self.editor_strength)
            .field("editor_lease_ms", &self.editor_lease_ms)
            .field("codec", &self.codec.is_some())
            .finish()
    }
}

/// The `format=` query parameter: `raw` (default) or `json` (values rendered by the pool's
/// type). `accept_json` is true when the request's `Accept` asks for JSON (plain GETs only).
/// Returns the pool's codec when JSON is asked for; a pool without a described type is a 400.
pub(crate) fn json_codec<N: Node>(
    st: &St<N>,
    pool: &str,
    format: Option<&str>,
    accept_json: bool,
) -> Result<Option<Arc<dyn ValueCodec>>, ApiError> {
    let json = match format {
        None => accept_json,
        Some("raw") => false,
        Some("json") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                "bad_query",
                format!("format={other:?}: use format=raw or format=json"),
            ))
        }
    };
    if !json {
        return Ok(None);
    }
    match st.profiles.get(pool).and_then(|p| p.codec.clone()) {
        Some(c) => Ok(Some(c)),
        None => Err(ApiError::bad_request(
            "no_type",
            format!("pool {pool:?} has no described type, so its values cannot be rendered as JSON (a [[dds.topic]] with fields gives its pool one); ask for format=raw"),
        )),
    }
}

/// Called before `/metrics` renders, so the owner can refresh gauges (log size, frontier lag).
pub type ScrapeHook = Arc<dyn Fn() + Send + Sync>;

/// Everything a handler needs.
pub(crate) struct Shared<N> {
    pub node: Arc<N>,
    pub cfg: HttpConfig,
    pub metrics: Arc<HttpMetrics>,
    pub registry: Registry,
    pub on_scrape: Option<ScrapeHook>,
    /// Flips to `true` at shutdown: open watch streams end so graceful shutdown can finish.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Per-pool extras (editor claims, JSON codecs), by pool name.
    pub profiles: std::collections::BTreeMap<String, PoolProfile>,
}

pub(crate) type St<N> = Arc<Shared<N>>;

/// The HTTP face over a node.
pub struct HttpFace<N: Node> {
    shared: St<N>,
}

impl<N: Node> std::fmt::Debug for HttpFace<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpFace")
            .field("cfg", &self.shared.cfg)
            .finish()
    }
}

impl<N: Node> HttpFace<N> {
    /// A face over `node`, registering its metrics in `registry` (which `/metrics` renders).
    /// `shutdown` flipping to `true` ends the open watch streams.
    pub fn new(
        node: Arc<N>,
        cfg: HttpConfig,
        registry: Registry,
        on_scrape: Option<ScrapeHook>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Self, String> {
        cfg.validate()?;
        let metrics =
            HttpMetrics::new(&registry).map_err(|e| format!("metrics registration: {e}"))?;
        Ok(HttpFace {
            shared: Arc::new(Shared {
                node,
                cfg,
                metrics: Arc::new(metrics),
                registry,
                on_scrape,
                shutdown,
                profiles: std::collections::BTreeMap::new(),
            }),
        })
    }

    /// Sets the per-pool extras (editor claims, JSON codecs); call before [`HttpFace::router`].
    pub fn set_profiles(&mut self, profiles: std::collections::BTreeMap<String, PoolProfile>) {
        if let Some(s) = Arc::get_mut(&mut self.shared) {
            s.profiles = profiles;
        }
    }

    /// The routes (see `docs/HTTP.md`).
    pub fn router(&self) -> Router {
        let st = self.shared.clone();
        let json_limit = DefaultBodyLimit::max(JSON_BODY_BYTES_MAX);
        Router::new()
            .route("/healthz", get(healthz))
            .route("/metrics", get(render_metrics::<N>))
            .route(
                "/v1/pools",
                get(pools::list::<N>)
                    .post(pools::create::<N>)
                    .layer(json_limit),
            )
            .route(
                "/v1/pools/{pool}",
                get(pools::show::<N>).delete(pools::delete::<N>),
            )
            .route("/v1/pools/{pool}/keys", get(keys::list::<N>))
            .route(
                "/v1/pools/{pool}/keys/{key}",
                get(keys::get::<N>)
                    .put(keys::put::<N>)
                    .delete(keys::delete::<N>),
            )
            .route(
                "/v1/pools/{pool}/keys/{key}/truncate",
                post(keys::truncate::<N>),
            )
            .route("/v1/pools/{pool}/watch", get(watch::watch::<N>))
            .route("/v1/pools/{pool}/replay", get(watch::replay::<N>))
            .route(
                "/v1/snapshot",
                post(snapshot::snapshot::<N>).layer(json_limit),
            )
            .fallback(not_found)
            .with_state(st.clone())
            // PUT bodies are streamed under the pool's own limit (keys::put); this caps anything
            // else that would buffer a body.
            .layer(DefaultBodyLimit::max(st.cfg.value_bytes_max as usize))
            .layer(axum::middleware::from_fn_with_state(
                st.metrics.clone(),
                metrics::track,
            ))
    }
}

/// Serves `router` on `listener` with the default [`ConnLimits`] until `shutdown` resolves,
/// then drains open requests ([`serve_with_limits`] takes the limits).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_limits(listener, router, ConnLimits::default(), shutdown).await
}

async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "ok"}))
}

async fn not_found() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "no_such_route",
        "no such endpoint (see docs/HTTP.md for the API)",
    )
}

async fn render_metrics<N: Node>(
    axum::extract::State(st): axum::extract::State<St<N>>,
) -> Result<([(axum::http::HeaderName, &'static str); 1], String), ApiError> {
    if let Some(hook) = &st.on_scrape {
        hook();
    }
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&st.registry.gather())
        .map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "metrics",
                e.to_string(),
            )
        })?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    ))
}

/// Checks a pool name from a request: 1..=POOL_NAME_BYTES_MAX bytes of `[A-Za-z0-9._-]`.
pub(crate) fn check_pool_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > POOL_NAME_BYTES_MAX {
        return Err(ApiError::bad_request(
            "bad_pool_name",
            format!(
                "pool name must be 1..={POOL_NAME_BYTES_MAX} bytes (got {})",
                name.len()
            ),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(ApiError::bad_request(
            "bad_pool_name",
            format!("pool name may only use A-Z a-z 0-9 . _ - (found {c:?})"),
        ));
    }
    Ok(())
}

/// Checks a key from a request: 1..=KEY_BYTES_MAX bytes.
pub(crate) fn check_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > KEY_BYTES_MAX {
        return Err(ApiError::bad_request(
            "bad_key",
            format!("key must be 1..={KEY_BYTES_MAX} bytes (got {})", key.len()),
        ));
    }
    Ok(())
}

/// Checks a key prefix: at most KEY_BYTES_MAX bytes (may be empty: the whole pool).
pub(crate) fn check_prefix(prefix: &str) -> Result<(), ApiError> {
    if prefix.len() > KEY_BYTES_MAX {
        return Err(ApiError::bad_request(
            "bad_key",
            format!(
                "prefix must be at most {KEY_BYTES_MAX} bytes (got {})",
                prefix.len()
            ),
        ));
    }
    Ok(())
}

/// The wait a request asked for, checked against the configured ceiling.
pub(crate) fn wait_of(cfg: &HttpConfig, wait_ms: Option<u64>) -> Result<Duration, ApiError> {
    let ms = wait_ms.unwrap_or(cfg.wait_ms_default);
    if ms > cfg.wait_ms_max {
        return Err(ApiError::bad_request(
            "bad_wait",
            format!("wait_ms = {ms} is above the limit {}", cfg.wait_ms_max),
        ));
    }
    Ok(Duration::from_millis(ms))
}

/// Platform time now, µs since the Unix epoch (the face may read the clock; the store does not).
pub(crate) fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Refuses a time read that cannot become stable within the wait (T in the future).
pub(crate) fn check_not_future(
    at_us: u64,
    lateness_us: u64,
    wait: Duration,
) -> Result<(), ApiError> {
    let now = now_us();
    let reachable = now.saturating_add(wait.as_micros() as u64);
    let needed = at_us.saturating_add(lateness_us);
    if needed > reachable {
        return Err(ApiError::bad_request(
            "time_in_future",
            format!(
                "time {at_us} is in the future: it cannot be final before {needed} (now {now}, \
                 wait {} ms); ask again later or pass a longer wait_ms",
                wait.as_millis()
            ),
        )
        .with("at_us", serde_json::json!(at_us))
        .with("now_us", serde_json::json!(now)));
    }
    Ok(())
}

/// Turns an extractor rejection into a JSON 400.
pub(crate) fn rejection(code: &'static str, r: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(code, r.to_string())
}
