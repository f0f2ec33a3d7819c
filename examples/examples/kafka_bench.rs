//! Kafka producer benchmark over librdkafka, for any Kafka-compatible broker (Squall, Kafka,
//! Redpanda, tansu, …), plus the raw baselines its results are compared with in the same run.
//! `examples/kafka-bench/run.sh` runs the whole comparison of issue 4 and prints the table.
//!
//! ```text
//! kafka_bench produce --bootstrap 127.0.0.1:9092 [--size 1024] [--records 200000]
//!     [--partitions 3] [--linger-ms 5] [--rate RECORDS_PER_S] [--topic-config K=V]…
//!     [--producer-config K=V]… [--label L]
//! kafka_bench e2e --bootstrap 127.0.0.1:9092 [--records 2000] [--topic-config K=V]… [--label L]
//! kafka_bench raw-append --dir DIR --total-bytes N [--chunk-bytes 1048576] [--label L]
//! kafka_bench raw-tcp --total-bytes N [--chunk-bytes 65536] [--label L]
//! kafka_bench --bootstrap 127.0.0.1:9092 [--sizes 100,1024] [--records 200000] …
//!     (a suite: `produce` for each size, then `e2e`)
//! ```
//!
//! * `produce`: one librdkafka producer at acks=all sends `--records` records of `--size` bytes
//!   (4-byte keys) to a new topic, as fast as it accepts them or paced to `--rate`; reports
//!   records/s and MB/s (payload, 1e6 bytes) from the first send to the last ack, and the ack
//!   latency p50/p99/p99.9 (send call → delivery report, so librdkafka's linger and queueing are
//!   in it, as a user sees it). A progress line goes to stderr every second.
//! * `e2e`: a producer (linger 0, acks=all) sends one record per ms carrying its send time; a
//!   consumer on the same partition reports send → receive latency.
//! * `raw-append`: the disk baseline: `--total-bytes` appended to a fresh file in `--chunk-bytes`
//!   writes, each followed by fdatasync (use the broker's bytes per group-commit fsync).
//! * `raw-tcp`: the network baseline: the same bytes through one loopback TCP connection.
//!
//! Every mode prints one tab-separated line for scripts:
//! `result <label> <records/s> <MB/s> <p50 ms> <p99 ms> <p99.9 ms>` (empty fields as `-`).

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// Most records one run may hold latencies for (4 bytes each).
const RECORDS_MAX: usize = 50_000_000;

#[derive(Clone)]
struct Args {
    mode: String,
    bootstrap: String,
    records: Option<usize>,
    sizes: Vec<usize>,
    partitions: i32,
    linger_ms: u32,
    rate: Option<f64>,
    e2e: usize,
    topic_configs: Vec<(String, String)>,
    producer_configs: Vec<(String, String)>,
    label: Option<String>,
    dir: Option<String>,
    total_bytes: usize,
    chunk_bytes: Option<usize>,
}

fn args() -> anyhow::Result<Args> {
    let mut it = std::env::args().skip(1).peekable();
    let mode = match it.peek() {
        Some(m) if !m.starts_with("--") => it.next().unwrap_or_default(),
        _ => "suite".to_string(),
    };
    let mut a = Args {
        mode,
        bootstrap: "127.0.0.1:9092".into(),
        records: None,
        sizes: vec![100, 1024],
        partitions: 3,
        linger_ms: 5,
        rate: None,
        e2e: 2000,
        topic_configs: Vec::new(),
        producer_configs: Vec::new(),
        label: None,
        dir: None,
        total_bytes: 0,
        chunk_bytes: None,
    };
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bootstrap" => a.bootstrap = val()?,
            "--records" => a.records = Some(val()?.parse()?),
            "--size" | "--sizes" => {
                a.sizes = val()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--partitions" => a.partitions = val()?.parse()?,
            "--linger-ms" => a.linger_ms = val()?.parse()?,
            "--rate" => a.rate = Some(val()?.parse()?),
            "--e2e" => a.e2e = val()?.parse()?,
            "--topic-config" => {
                let v = val()?;
                let (k, x) = v.split_once('=').context("--topic-config KEY=VALUE")?;
                a.topic_configs.push((k.into(), x.into()));
            }
            "--producer-config" => {
                let v = val()?;
                let (k, x) = v.split_once('=').context("--producer-config KEY=VALUE")?;
                a.producer_configs.push((k.into(), x.into()));
            }
            "--label" => a.label = Some(val()?),
            "--dir" => a.dir = Some(val()?),
            "--total-bytes" => a.total_bytes = val()?.parse()?,
            "--chunk-bytes" => a.chunk_bytes = Some(val()?.parse()?),
            other => bail!("unknown flag {other}"),
        }
    }
    if a.records.is_some_and(|r| r == 0 || r > RECORDS_MAX) {
        bail!("--records must be in 1..={RECORDS_MAX}");
    }
    if a.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        bail!("--rate must be positive");
    }
    if a.sizes.is_empty() || a.sizes.contains(&0) {
        bail!("--size must be positive");
    }
    Ok(a)
}

/// A `result` line: label, records/s, MB/s, then latency p50/p99/p99.9 in ms.
fn result_line(label: &str, rps: Option<f64>, mbps: Option<f64>, lat: Option<[f64; 3]>) {
    let f = |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |x| format!("{x:.prec$}"));
    let l = lat.map(|l| l.map(Some)).unwrap_or([None; 3]);
    println!(
        "result\t{label}\t{}\t{}\t{}\t{}\t{}",
        f(rps, 0),
        f(mbps, 1),
        f(l[0], 2),
        f(l[1], 2),
        f(l[2], 2)
    );
}

/// Collects ack latencies (µs) from librdkafka's delivery callbacks.
#[derive(Default)]
struct Acks {
    latencies_us: Mutex<Vec<u32>>,
    acked: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
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
            Err((e, _)) => {
                if let Ok(mut f) = self.0.first_error.lock() {
                    f.get_or_insert_with(|| e.to_string());
                }
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

/// Prints sent/acked counts and rates to stderr once a second until `stop`.
fn progress(
    label: String,
    t0: Instant,
    sent: Arc<AtomicU64>,
    acks: Arc<Acks>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut last_acked = 0;
        let mut last = t0;
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            if last.elapsed() < Duration::from_secs(1) {
                continue;
            }
            let acked = acks.acked.load(Ordering::Relaxed);
            let now = Instant::now();
            eprint!(
                "\r  {label}: {:.0}s sent {} acked {} ({:.0}/s now, {:.0}/s avg)   ",
                t0.elapsed().as_secs_f64(),
                sent.load(Ordering::Relaxed),
                acked,
                (acked - last_acked) as f64 / (now - last).as_secs_f64(),
                acked as f64 / t0.elapsed().as_secs_f64()
            );
            last_acked = acked;
            last = now;
        }
        eprintln!();
    })
}

/// One producer run: (records/s, MB/s, [p50, p99, p99.9] ack latency in ms).
async fn produce(
    a: &Args,
    size: usize,
    records: usize,
    run: &str,
) -> anyhow::Result<(f64, f64, [f64; 3])> {
    let topic = format!("bench-{size}-{run}");
    create_topic(&a.bootstrap, &topic, a.partitions, &a.topic_configs).await?;
    let acks = Arc::new(Acks {
        latencies_us: Mutex::new(Vec::with_capacity(records)),
        ..Acks::default()
    });
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &a.bootstrap)
        .set("acks", "all")
        .set("linger.ms", a.linger_ms.to_string())
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "120000");
    for (k, v) in &a.producer_configs {
        cfg.set(k, v);
    }
    let p: ThreadedProducer<Ctx> = cfg.create_with_context(Ctx(acks.clone()))?;
    // Warm up the connection and the topic's metadata so the timed run starts on a ready client.
    p.send(
        BaseRecord::with_opaque_to(&topic, Box::new(Instant::now()))
            .key(&b"warm"[..])
            .payload(&b"up"[..]),
    )
    .map_err(|(e, _)| e)?;
    p.flush(Duration::from_secs(30))?;
    acks.acked.store(0, Ordering::Relaxed);
    if let Ok(mut l) = acks.latencies_us.lock() {
        l.clear();
    }

    let payload = vec![b'x'; size];
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let label = a.label.clone().unwrap_or_else(|| format!("{size} B"));
    let t0 = Instant::now();
    let shower = progress(label, t0, sent.clone(), acks.clone(), stop.clone());
    for i in 0..records {
        if let Some(rate) = a.rate {
            let due = t0 + Duration::from_secs_f64(i as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
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
                Err((e, _)) => {
                    stop.store(true, Ordering::Relaxed);
                    bail!("send: {e}")
                }
            }
        }
        sent.fetch_add(1, Ordering::Relaxed);
    }
    let flushed = p.flush(Duration::from_secs(300));
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = shower.join();
    flushed?;
    let failed = acks.failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = acks.first_error.lock().ok().and_then(|f| f.clone());
        bail!("{failed} records failed (first: {first:?})");
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

async fn end_to_end(a: &Args, n: usize, run: &str) -> anyhow::Result<[f64; 3]> {
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
    let acks = Arc::new(Acks::default());
    let p: ThreadedProducer<Ctx> = ClientConfig::new()
        .set("bootstrap.servers", &a.bootstrap)
        .set("acks", "all")
        .set("linger.ms", "0")
        .create_with_context(Ctx(acks))?;
    let t0 = Instant::now();
    let producer = std::thread::spawn(move || -> anyhow::Result<()> {
        for i in 0..n {
            let ns = (t0.elapsed().as_nanos() as u64).to_be_bytes();
            let _ = p.send(
                BaseRecord::<[u8], [u8], Box<Instant>>::with_opaque_to(
                    &topic,
                    Box::new(Instant::now()),
                )
                .payload(&ns[..]),
            );
            if i % 1000 == 999 {
                eprint!("\r  e2e: sent {}   ", i + 1);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        eprintln!();
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
    if lat.len() < n {
        bail!(
            "e2e: received {} of {n} records before the deadline",
            lat.len()
        );
    }
    lat.sort_unstable();
    Ok([pct(&lat, 0.5), pct(&lat, 0.99), pct(&lat, 0.999)])
}

/// Appends `total` bytes to a fresh file in `chunk`-byte writes, each followed by fdatasync
/// (a true append: the file grows, so each sync also commits the size). Returns (MB/s,
/// [p50, p99, p99.9] of write+fdatasync in ms).
fn raw_append(dir: &str, total: usize, chunk: usize) -> anyhow::Result<(f64, [f64; 3])> {
    if chunk == 0 {
        bail!("--chunk-bytes must be positive");
    }
    let path = std::path::Path::new(dir).join(format!("raw-append-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .with_context(|| format!("create {}", path.display()))?;
    let buf = vec![b'x'; chunk];
    let mut lat_us = Vec::with_capacity(total / chunk + 1);
    let t0 = Instant::now();
    let mut left = total;
    let res = (|| -> std::io::Result<()> {
        while left > 0 {
            let n = left.min(chunk);
            let t = Instant::now();
            f.write_all(&buf[..n])?;
            f.sync_data()?;
            lat_us.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
            left -= n;
        }
        Ok(())
    })();
    let secs = t0.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(&path);
    res?;
    lat_us.sort_unstable();
    Ok((
        total as f64 / secs / 1e6,
        [pct(&lat_us, 0.5), pct(&lat_us, 0.99), pct(&lat_us, 0.999)],
    ))
}

/// Streams `total` bytes through a loopback TCP connection in `chunk`-byte writes: MB/s.
fn raw_tcp(total: usize, chunk: usize) -> anyhow::Result<f64> {
    if chunk == 0 {
        bail!("--chunk-bytes must be positive");
    }
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
    let buf = vec![b'x'; chunk];
    let t0 = Instant::now();
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk);
        s.write_all(&buf[..n])?;
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
            .as_millis()
    );
    match a.mode.as_str() {
        "produce" => {
            let size = a.sizes[0];
            let (rps, mbps, l) = produce(&a, size, a.records.unwrap_or(200_000), &run).await?;
            let label = a.label.clone().unwrap_or_else(|| format!("produce-{size}"));
            result_line(&label, Some(rps), Some(mbps), Some(l));
        }
        "e2e" => {
            let l = end_to_end(&a, a.records.unwrap_or(a.e2e), &run).await?;
            result_line(a.label.as_deref().unwrap_or("e2e"), None, None, Some(l));
        }
        "raw-append" => {
            let dir = a.dir.as_deref().context("raw-append needs --dir")?;
            let chunk = a.chunk_bytes.unwrap_or(1 << 20);
            let (mbps, l) = raw_append(dir, a.total_bytes, chunk)?;
            let label = a
                .label
                .clone()
                .unwrap_or_else(|| format!("raw-append-{chunk}"));
            result_line(&label, None, Some(mbps), Some(l));
        }
        "raw-tcp" => {
            let mbps = raw_tcp(a.total_bytes, a.chunk_bytes.unwrap_or(1 << 16))?;
            result_line(
                a.label.as_deref().unwrap_or("raw-tcp"),
                None,
                Some(mbps),
                None,
            );
        }
        "suite" => {
            let records = a.records.unwrap_or(200_000);
            println!(
                "bootstrap {} · {records} records per size · {} partitions · linger.ms {} · acks=all · topic configs {:?}",
                a.bootstrap, a.partitions, a.linger_ms, a.topic_configs
            );
            for &size in &a.sizes {
                let (rps, mbps, l) = produce(&a, size, records, &run).await?;
                result_line(&format!("produce-{size}"), Some(rps), Some(mbps), Some(l));
            }
            if a.e2e > 0 {
                let l = end_to_end(&a, a.e2e, &run).await?;
                result_line("e2e", None, None, Some(l));
            }
        }
        other => bail!("unknown mode {other} (produce, e2e, raw-append, raw-tcp)"),
    }
    Ok(())
}
