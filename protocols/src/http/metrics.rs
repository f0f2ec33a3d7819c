//! Request metrics of the HTTP face (Prometheus): counts and latency per route, bytes in and
//! out, open watchers. The broker registers its own metrics (fsync latency, log size, frontier
//! lag) in the same registry; `GET /metrics` renders all of them.

use std::sync::Arc;
use std::time::Instant;

use axum::body::HttpBody;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// The HTTP face's metrics, registered in a caller-owned registry.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    latency: HistogramVec,
    bytes_in: IntCounter,
    bytes_out: IntCounter,
    /// Open SSE watch streams.
    pub watchers: IntGauge,
}

impl std::fmt::Debug for HttpMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpMetrics")
    }
}

impl HttpMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "squall_http_requests_total",
                "HTTP requests by route, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "squall_http_request_duration_seconds",
                "HTTP request latency (until the response head) by route and method",
            )
            .buckets(vec![
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
                0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["route", "method"],
        )?;
        let bytes_in = IntCounter::new(
            "squall_http_bytes_in_total",
            "request body bytes received (by Content-Length)",
        )?;
        let bytes_out = IntCounter::new(
            "squall_http_bytes_out_total",
            "response body bytes sent (sized bodies)",
        )?;
        let watchers = IntGauge::new("squall_http_watchers", "open SSE watch streams")?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(bytes_in.clone()))?;
        registry.register(Box::new(bytes_out.clone()))?;
        registry.register(Box::new(watchers.clone()))?;
        Ok(HttpMetrics {
            requests,
            latency,
            bytes_in,
            bytes_out,
            watchers,
        })
    }
}

/// Middleware: counts and times every request under its matched route.
pub(crate) async fn track(State(m): State<Arc<HttpMetrics>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().as_str().to_string();
    let len_in = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    m.latency
        .with_label_values(&[route.as_str(), method.as_str()])
        .observe(start.elapsed().as_secs_f64());
    m.requests
        .with_label_values(&[route.as_str(), method.as_str(), status.as_str()])
        .inc();
    m.bytes_in.inc_by(len_in);
    if let Some(n) = resp.body().size_hint().exact() {
        m.bytes_out.inc_by(n);
    }
    resp
}
