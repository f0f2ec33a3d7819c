//! Kafka producer benchmark over librdkafka, for any Kafka-compatible broker (Squall, Kafka,
//! Redpanda, tansu, …), plus two same-run baselines.
//!
//! ```text
//! cargo run -p squall-examples --release --example kafka_bench -- --bootstrap 127.0.0.1:9092
//!     [--records 200000] [--sizes 100,1024] [--partitions 3] [--linger-ms 5] [--e2e 2000]
//!     [--topic-config squall.durable=false] [--raw-append DIR] [--raw-tcp]
//! ```
//!
//! For each record size: producer throughput (records/s, MB/s of payload) and ack latency
//! p50/p99/p99.9 at acks=all, with a progress line once a second; then end-to-end latency
//! (produce → a consumer polling the same partition, one record per ms). `--raw-append DIR` times
//! the same payload bytes appended to a file with one fdatasync per MiB (the disk's synced
//! sequential-append bandwidth); `--raw-tcp` streams the same bytes through a loopback TCP socket.
//! Results print as Markdown table rows for docs/BENCHMARKS.md.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

struct Args {
    bootstrap: String,
    records: usize,
    sizes: Vec<usize>,
    partitions: i32,
    linger_ms: u32,
    e2e: usize,
    topic_configs: Vec<(String, String)>,
    raw_append: Option<String>,
    raw_tcp: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        bootstrap: "127.0.0.1:9092".into(),
        records: 200_000,
        sizes: vec![100, 1024],
        partitions: 3,
        linger_ms: 5,
        e2e: 2000,
        topic_configs: Vec::new(),
        raw_append: None,
        raw_tcp: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bootstrap" => a.bootstrap = val()?,
            "--records" => a.records = val()?.parse()?,
            "--sizes" => {
                a.sizes = val()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--partitions" => a.partitions = val()?.parse()?,
            "--linger-ms" => a.linger_ms = val()?.parse()?,
            "--e2e" => a.e2e = val()?.parse()?,
            "--topic-config" => {
                let v = val()?;
                let (k, x) = v.split_once('=').context("--topic-config KEY=VALUE")?;
                a.topic_configs.push((k.into(), x.into()));
            }
            "--raw-append" => a.raw_append = Some(val()?),
            "--raw-tcp" => a.raw_tcp = true,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

/// Collects ack latencies (µs) from librdkafka's delivery callbacks.
struct Acks {
    latencies_us: Mutex<Vec<u32>>,
    acked: AtomicU64,
    failed: AtomicU64,
}

struct Ctx(Arc<Acks>);
impl ClientContext for Ctx {}
impl ProducerContext for Ctx {
    type DeliveryOpaque = Box<Instant>;
    fn delivery(&self, r: &DeliveryResult<'_>, sent: Box<Instant>) {
        match r {
            Ok(_) => {
                let us = sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                if let Ok(mut l) = self.0.latencies_us.lock() {
                    l.push(us);
                }
                self.0.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i.min(sorted.len() - 1)]) / 1000.0
}

async fn create_topic(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    configs: &[(String, String)],
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    for r in admin.create_topics([&t], &AdminOptions::new()).await? {
        if let Err((n, e)) = r {
            if e != RDKafkaErrorCode::TopicAlreadyExists {
                bail!("create {n}: {e}");
            }
        }
    }
    Ok(())
}

async fn throughput(a: &Args, size: usize, run: &str) -> anyhow::Result<(f64, f64, [f64; 3])> {
    let topic = format!("bench-{size}-{run}");
    create_topic(&a.bootstrap, &topic, a.partitions, &a.topic_configs).await?;
    let acks = Arc::new(Acks {
        latencies_us: Mutex::new(Vec::with_capacity(a.records)),
        acked: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let p: ThreadedProducer<Ctx> = ClientConfig::new()
        .set("bootstrap.servers", &a.bootstrap)
        .set("acks", "all")
        .set("linger.ms", a.linger_ms.to_string())
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "60000")
        .create_with_context(Ctx(acks.clone()))?;
    let payload = vec![b'x'; size];
    let t0 = Instant::now();
    let mut last = t0;
    for i in 0..a.records {
        let key = (i as u32).to_be_bytes();
        let mut rec = BaseRecord::with_opaque_to(&topic, Box::new(Instant::now()))
            .key(&key[..])
            .payload(&payload[..]);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err((e, _)) => bail!("send: {e}"),
            }
        }
        if last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            eprint!(
                "\r  {size} B: sent {i}, acked {} ({:.0}/s)   ",
                acks.acked.load(Ordering::Relaxed),
                acks.acked.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64()
            );
        }
    }
    p.flush(Duration::from_secs(120))?;
    let secs = t0.elapsed().as_secs_f64();
    eprintln!();
    let failed = acks.failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} records failed");
    }
    let mut l = acks
        .latencies_us
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    l.sort_unstable();
    let n = l.len() as f64;
    Ok((
        n / secs,
        n * size as f64 / secs / 1e6,
        [pct(&l, 0.5), pct(&l, 0.99), pct(&l, 0.999)],
    ))
}

async fn end_to_end(a: &Args, run: &str) -> anyhow::Result<[f64; 3]> {
    let topic = format!("bench-e2e-{run}");
    create_topic(&a.bootstrap, &topic, 1, &a.topic_configs).await?;
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &a.bootstrap)
        .set("group.id", format!("bench-e2e-{run}"))
        .set("fetch.wait.max.ms", "100")
        .set("fetch.min.bytes", "1")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Beginning)?;
    c.assign(&tpl)?;
    let acks = Arc::new(Acks {
        latencies_us: Mutex::new(Vec::new()),
        acked: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let p: ThreadedProducer<Ctx> = ClientConfig::new()
        .set("bootstrap.servers", &a.bootstrap)
        .set("acks", "all")
        .set("linger.ms", "0")
        .create_with_context(Ctx(acks))?;
    let t0 = Instant::now();
    let n = a.e2e;
    let producer = std::thread::spawn(move || -> anyhow::Result<()> {
        for _ in 0..n {
            let ns = (t0.elapsed().as_nanos() as u64).to_be_bytes();
            let _ = p.send(
                BaseRecord::<[u8], [u8], Box<Instant>>::with_opaque_to(
                    &topic,
                    Box::new(Instant::now()),
                )
                .payload(&ns[..]),
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        p.flush(Duration::from_secs(30))?;
        Ok(())
    });
    let mut lat = Vec::with_capacity(n);
    let deadline = Instant::now() + Duration::from_secs(60 + n as u64 / 100);
    while lat.len() < n && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            if let Some(b) = m.payload().and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                let sent = u64::from_be_bytes(b);
                let now = t0.elapsed().as_nanos() as u64;
                lat.push((now.saturating_sub(sent) / 1000).min(u64::from(u32::MAX)) as u32);
            }
        }
    }
    producer
        .join()
        .map_err(|_| anyhow::anyhow!("producer thread panicked"))??;
    lat.sort_unstable();
    Ok([pct(&lat, 0.5), pct(&lat, 0.99), pct(&lat, 0.999)])
}

/// Appends `total` bytes to a file in 1 MiB writes, each followed by fdatasync: MB/s.
fn raw_append(dir: &str, total: usize) -> anyhow::Result<f64> {
    let path = std::path::Path::new(dir).join(format!("raw-append-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)?;
    let chunk = vec![b'x'; 1 << 20];
    let t0 = Instant::now();
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk.len());
        f.write_all(&chunk[..n])?;
        f.sync_data()?;
        left -= n;
    }
    let secs = t0.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok(total as f64 / secs / 1e6)
}

/// Streams `total` bytes through a loopback TCP connection in 64 KiB writes: MB/s.
fn raw_tcp(total: usize) -> anyhow::Result<f64> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let sink = std::thread::spawn(move || -> std::io::Result<usize> {
        let (mut s, _) = l.accept()?;
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(got);
            }
            got += n;
        }
    });
    let mut s = std::net::TcpStream::connect(addr)?;
    let chunk = vec![b'x'; 1 << 16];
    let t0 = Instant::now();
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n])?;
        left -= n;
    }
    drop(s);
    let got = sink
        .join()
        .map_err(|_| anyhow::anyhow!("sink panicked"))??;
    let secs = t0.elapsed().as_secs_f64();
    if got != total {
        bail!("sink got {got} of {total} bytes");
    }
    Ok(total as f64 / secs / 1e6)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let run = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
    );
    println!("bootstrap {} · {} records per size · {} partitions · linger.ms {} · acks=all · topic configs {:?}", a.bootstrap, a.records, a.partitions, a.linger_ms, a.topic_configs);
    println!();
    println!("| record | records/s | MB/s | ack p50 ms | ack p99 ms | ack p99.9 ms |");
    println!("|---|---|---|---|---|---|");
    for &size in &a.sizes {
        let (rps, mbps, l) = throughput(&a, size, &run).await?;
        println!(
            "| {size} B | {rps:.0} | {mbps:.1} | {:.2} | {:.2} | {:.2} |",
            l[0], l[1], l[2]
        );
        if let Some(dir) = &a.raw_append {
            println!(
                "| raw append+fdatasync per MiB, same {:.0} MB | | {:.1} | | | |",
                (a.records * size) as f64 / 1e6,
                raw_append(dir, a.records * size)?
            );
        }
        if a.raw_tcp {
            println!(
                "| raw loopback TCP, same {:.0} MB | | {:.1} | | | |",
                (a.records * size) as f64 / 1e6,
                raw_tcp(a.records * size)?
            );
        }
    }
    if a.e2e > 0 {
        let l = end_to_end(&a, &run).await?;
        println!();
        println!("end-to-end (produce → consume, 1 record/ms, {} records): p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms", a.e2e, l[0], l[1], l[2]);
    }
    Ok(())
}
