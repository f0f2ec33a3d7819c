//! `squall serve`: opens the store, starts the faces, prints where it listens, and shuts down
//! cleanly on SIGINT/SIGTERM (stop accepting, end watches, flush and close the log).

use std::sync::Arc;

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
    let face = HttpFace::new(
        node.clone(),
        cfg.http.clone(),
        registry.clone(),
        Some(Arc::new(move || scrape_node.refresh_metrics())),
        shutdown_rx.clone(),
    )
    .map_err(|e| anyhow::anyhow!("http config: {e}"))?;
    let listener = TcpListener::bind(cfg.http.listen).await.with_context(|| {
        format!(
            "cannot listen for HTTP on {} (is another squall running? change it with --http-listen or [http] listen)",
            cfg.http.listen
        )
    })?;
    let http_addr = listener.local_addr()?;
    let mut http_stop = shutdown_rx.clone();
    let http_task = tokio::spawn(http::serve(listener, face.router(), async move {
        let _ = http_stop.wait_for(|v| *v).await;
    }));
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
    node.close()
        .await
        .context("closing the store (flushing the log)")?;
    println!("squall: stopped cleanly");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("installing the SIGINT handler")?,
        _ = term.recv() => {}
    }
    Ok(())
}
