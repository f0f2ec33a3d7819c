//! The HTTP face's accept loop: hyper's HTTP/1 server with the two limits `axum::serve` does not
//! set, so a slow or idle client cannot hold the node's connections:
//! * a header-read timeout: a request whose head has not fully arrived within
//!   `header_read_timeout` (counted from the first byte; an idle keep-alive connection before
//!   any byte counts too) gets its connection closed (slowloris);
//! * a connection limit: past `connections_max` open connections, a new one is closed at once
//!   (it costs one accept, no task and no buffer), and a warning is logged at most once a second.
//!
//! Shutdown: when `shutdown` resolves the listener closes, every connection is told to finish
//! its in-flight request and close (HTTP/1 graceful shutdown), and `serve` returns once all are
//! gone. SSE streams end on the face's own shutdown signal, so they do not hold it up.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// The accept loop's limits (from `[http]` in the config: see [`super::HttpConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Most connections open at once.
    pub connections_max: usize,
    /// Longest time a request head may take to arrive.
    pub header_read_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            connections_max: 4_096,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// An accept failure (out of file descriptors, say) is retried after this pause.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Serves `router` on `listener` with `limits` until `shutdown` resolves, then drains.
pub async fn serve_with_limits(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.connections_max.max(1)));
    let (close_tx, close_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    let mut last_refusal_warning: Option<Instant> = None;
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            // Reap finished connections so the set does not grow with every one ever served.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    log::warn!("http: accept failed: {e}; retrying in {ACCEPT_RETRY:?}");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if last_refusal_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                log::warn!(
                    "http: {} connections open (http.connections_max); closing new ones",
                    limits.connections_max
                );
                last_refusal_warning = Some(Instant::now());
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let mut close = close_rx.clone();
        conns.spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
            tokio::select! {
                // Errors here are the client's (a timeout, a reset, a malformed head hyper
                // already answered with 400): nothing for the node to do.
                _ = conn.as_mut() => return,
                _ = close.wait_for(|closing| *closing) => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = close_tx.send(true);
    while conns.join_next().await.is_some() {}
    Ok(())
}
