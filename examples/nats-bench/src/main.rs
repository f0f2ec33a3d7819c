//! NATS JetStream publish benchmark: the peer the Kafka face is compared with in
//! examples/kafka-bench/run.sh (issue 4). It (re)creates stream `BENCH` (subject `bench.>`,
//! file storage, one replica), sends warm-up publishes, then publishes `--records` payloads of
//! `--size` bytes to `bench.a` with the official client (`async-nats`), keeping at most
//! `--inflight` un-acked publishes (async publish; `--inflight 1` is sync). Optionally paced to
//! `--rate` records/s. Latency is publish → JetStream ack.
//!
//! ```text
//! nats-bench [--server 127.0.0.1:4222] [--records 200000] [--size 1024] [--inflight 512] [--rate N]
//! ```
//!
//! Prints one `result` line in the same tab-separated format as `kafka_bench`:
//! `result <label> <records/s> <MB/s> <p50 ms> <p99 ms> <p99.9 ms>` (MB = 1e6 bytes of payload).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};

struct Args {
    server: String,
    records: usize,
    size: usize,
    inflight: usize,
    rate: Option<f64>,
    label: String,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        server: "127.0.0.1:4222".into(),
        records: 200_000,
        size: 1024,
        inflight: 512,
        rate: None,
        label: "nats-jetstream".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--server" => a.server = val()?,
            "--records" => a.records = val()?.parse()?,
            "--size" => a.size = val()?.parse()?,
            "--inflight" => a.inflight = val()?.parse()?,
            "--rate" => a.rate = Some(val()?.parse()?),
            "--label" => a.label = val()?,
            other => bail!("unknown flag {other}"),
        }
    }
    if a.inflight == 0 || a.records == 0 {
        bail!("--inflight and --records must be positive");
    }
    Ok(a)
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i.min(sorted.len() - 1)]) / 1000.0
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let client = async_nats::connect(&a.server)
        .await
        .with_context(|| format!("connect to {}", a.server))?;
    let js = jetstream::new(client);
    let _ = js.delete_stream("BENCH").await;
    js.create_stream(stream::Config {
        name: "BENCH".into(),
        subjects: vec!["bench.>".into()],
        storage: stream::StorageType::File,
        num_replicas: 1,
        ..Default::default()
    })
    .await
    .context("create stream BENCH")?;
    let payload = Bytes::from(vec![b'x'; a.size]);
    for _ in 0..500 {
        js.publish("bench.a", payload.clone()).await?.await?;
    }

    let mut lat_us: Vec<u32> = Vec::with_capacity(a.records);
    let mut pending = FuturesUnordered::new();
    let t0 = Instant::now();
    let mut last = t0;
    for i in 0..a.records {
        if let Some(rate) = a.rate {
            let due = t0 + Duration::from_secs_f64(i as f64 / rate);
            let now = Instant::now();
            if due > now {
                // Drain acks while waiting for the next send slot.
                let _ = tokio::time::timeout(due - now, async {
                    while let Some(r) = pending.next().await {
                        let r: anyhow::Result<u32> = r;
                        lat_us.push(r?);
                    }
                    anyhow::Ok(())
                })
                .await;
                tokio::time::sleep_until(due.into()).await;
            }
        }
        while pending.len() >= a.inflight {
            if let Some(r) = pending.next().await {
                lat_us.push(r?);
            }
        }
        let sent = Instant::now();
        let ack = js.publish("bench.a", payload.clone()).await?;
        pending.push(async move {
            ack.await?;
            anyhow::Ok(sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32)
        });
        if last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            eprint!(
                "\r  {}: sent {i}, acked {} ({:.0}/s)   ",
                a.label,
                lat_us.len(),
                lat_us.len() as f64 / t0.elapsed().as_secs_f64()
            );
        }
    }
    while let Some(r) = pending.next().await {
        lat_us.push(r?);
    }
    let secs = t0.elapsed().as_secs_f64();
    eprintln!();
    lat_us.sort_unstable();
    let n = lat_us.len() as f64;
    println!(
        "result\t{}\t{:.0}\t{:.1}\t{:.2}\t{:.2}\t{:.2}",
        a.label,
        n / secs,
        n * a.size as f64 / secs / 1e6,
        pct(&lat_us, 0.5),
        pct(&lat_us, 0.99),
        pct(&lat_us, 0.999)
    );
    let _ = js.delete_stream("BENCH").await;
    Ok(())
}
