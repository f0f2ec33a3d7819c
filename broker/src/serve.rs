//! `squall serve`: opens the store, starts the faces and the log compactor, prints where it
//! listens, and shuts down cleanly on SIGINT/SIGTERM (stop accepting, end watches, flush and
//! close the log).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use squall_protocols::http::{self, HttpFace};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::node::LocalNode;

/// Runs the node until SIGINT or SIGTERM.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let node = Arc::new(LocalNode::open(&cfg)?);
    println!("squall: data in {}", cfg.data_dir.display());

    let registry = prometheus::Registry::new();
    node.register_metrics(&registry)
        .context("registering the node's metrics")?;
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);

    // DDS face (issue 5): joins the domain when [[dds.topic]] is configured.
    let dds_face = crate::dds::start(&cfg.dds, node.clone(), &registry).await?;

    // HTTP face (and /metrics).
    let scrape_node = node.clone();
    let mut face = HttpFace::new(
        node.clone(),
        cfg.http.clone(),
        registry.clone(),
        Some(Arc::new(move || scrape_node.refresh_metrics())),
        shutdown_rx.clone(),
    )
    .map_err(|e| anyhow::anyhow!("http config: {e}"))?;
    // DDS topics' pools: editor claims (Squall-Owner) and JSON rendering of their type.
    face.set_profiles(cfg.dds.http_profiles());
    let listener = TcpListener::bind(cfg.http.listen).await.with_context(|| {
        format!(
            "cannot listen for HTTP on {} (is another squall running? change it with --http-listen or [http] listen)",
            cfg.http.listen
        )
    })?;
    let http_addr = listener.local_addr()?;
    let mut http_stop = shutdown_rx.clone();
    let http_task = tokio::spawn(http::serve_with_limits(
        listener,
        face.router(),
        cfg.http.limits(),
        async move {
            let _ = http_stop.wait_for(|v| *v).await;
        },
    ));
    println!("squall: http listening on {http_addr} (API /v1, metrics /metrics, health /healthz)");

    // Faces that run as tasks: each prints "squall: <face> listening on ADDR" (tests parse
    // it), watches `shutdown_rx`, and is awaited at shutdown before the store closes.
    // Kafka face (issue 4): default 127.0.0.1:9092.
    let mut faces: Vec<tokio::task::JoinHandle<anyhow::Result<()>>> = Vec::new();
    if cfg.kafka.enabled {
        let (addr, task) =
            crate::kafka::start(node.clone(), &cfg.kafka, shutdown_rx.clone()).await?;
        println!("squall: kafka listening on {addr}");
        faces.push(task);
    }

    // Log retention: without it the log only grows.
    let compactor = {
        let node = node.clone();
        tokio::spawn(periodically(
            "log compaction",
            Duration::from_millis(cfg.storage.compact_interval_ms),
            shutdown_rx.clone(),
            move || {
                let node = node.clone();
                async move { node.compact_log().await }
            },
        ))
    };

    // Retention without writes (age retention would otherwise wait for the next write).
    let retainer = {
        let node = node.clone();
        tokio::spawn(periodically(
            "retention",
            Duration::from_millis(RETAIN_INTERVAL_MS),
            shutdown_rx.clone(),
            move || {
                let node = node.clone();
                async move { node.run_retention().await }
            },
        ))
    };

    println!("squall: ready (Ctrl-C or SIGTERM to stop)");
    wait_for_signal().await?;
    println!("squall: shutting down");
    let _ = shutdown_tx.send(true);
    match http_task.await {
        Ok(r) => r.context("http face")?,
        Err(e) => anyhow::bail!("http face task failed: {e}"),
    }
    for f in faces {
        f.await.context("face task failed")??;
    }
    if let Some(f) = dds_face {
        f.shutdown();
    }
    // A compaction in progress finishes before the log is closed.
    compactor.await.context("log compactor task failed")?;
    retainer.await.context("retention task failed")?;
    node.close()
        .await
        .context("closing the store (flushing the log)")?;
    println!("squall: stopped cleanly");
    Ok(())
}

/// Runs `round` every `interval` until `shutdown` turns true (or its sender is gone); the first
/// round runs one interval after start. A failed round is reported on stderr as `what` failed
/// and retried next round. Used for log compaction (a checkpoint is written before any segment
/// is deleted, so the store stays consistent either way) and for retention.
pub(crate) async fn periodically<F, Fut, T, E>(
    what: &'static str,
    interval: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    mut round: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick fires at once.
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = round().await {
            eprintln!("squall: {what} failed (retrying in {interval:?}): {e:#}");
        }
    }
}

/// How often `squall serve` applies retention to pools nobody writes to (Kafka checks every
/// `log.retention.check.interval.ms`, 5 minutes by default; a second keeps tests short and
/// costs a scan of the keys when nothing is due).
const RETAIN_INTERVAL_MS: u64 = 1000;

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("installing the SIGINT handler")?,
        _ = term.recv() => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The periodic log compaction of `squall serve`: with small segments and a key overwritten
    //! in a `latest` pool, old segments hold nothing kept, so the compactor must delete them
    //! (the log would otherwise only grow), and it must stop when shutdown is signalled.
    use super::*;
    use squall_protocols::{Node, PutRequest};
    use squall_storage::{Mode, PoolConfig};

    #[tokio::test]
    async fn the_compactor_deletes_dead_segments_and_stops_on_shutdown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        cfg.storage.segment_bytes_max = 4096;
        cfg.validate().expect("config");
        let node = Arc::new(LocalNode::open(&cfg).expect("open"));
        node.create_pool(PoolConfig {
            name: "p".into(),
            mode: Mode::Latest,
            durable: true,
            ..PoolConfig::default()
        })
        .await
        .expect("pool");
        for i in 0..200u32 {
            let value = bytes::Bytes::from(vec![i as u8; 200]);
            node.put(PutRequest::new("p", "k", value))
                .await
                .expect("put");
        }
        let before = node.log_segments();
        assert!(
            before >= 8,
            "the writes should span many segments: {before}"
        );

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let task = {
            let node = node.clone();
            tokio::spawn(periodically(
                "log compaction",
                Duration::from_millis(10),
                stop_rx,
                move || {
                    let node = node.clone();
                    async move { node.compact_log().await }
                },
            ))
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while node.log_segments() > 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "segments not deleted: {} of {before} left",
                node.log_segments()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The newest value survives (and so does its segment).
        assert_eq!(node.get("p", "k").expect("get").value[0], 199);

        stop_tx.send(true).expect("send");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the compactor stops on shutdown")
            .expect("task");
        node.close().await.expect("close");
    }
}
