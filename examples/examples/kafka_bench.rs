//! Kafka producer benchmark over librdkafka, for any Kafka-compatible broker (Squall, Kafka,
//! Redpanda, tansu, …), plus the raw baselines its results are compared with in the same run.
//! `examples/kafka-bench/run.sh` runs the whole comparison of issue 4 and prints the table.
//!
//! ```text
//! kafka_bench produce --bootstrap 127.0.0.1:9092 [--size 1024] [--records 200000]
//!     [--partitions 3] [--linger-ms 5] [--rate RECORDS_PER_S] [--topic-config K=V]…
//!     [--producer-config K=V]… [--producers 1] [--label L]
//! kafka_bench e2e --bootstrap 127.0.0.1:9092 [--records 2000] [--topic-config K=V]… [--label L]
//! kafka_bench raw-append --dir DIR --total-bytes N [--chunk-bytes 1048576] [--overlap] [--label L]
//! kafka_bench raw-tcp --total-bytes N [--chunk-bytes 65536] [--retain-bytes N] [--repeat 1]
//!     [--label L]
//! kafka_bench null-sink --listen 127.0.0.1:9093
//! kafka_bench wire --bootstrap 127.0.0.1:9092 [--size 1024] [--records 200000] [--partitions 3]
//!     [--batch-records 1000] [--connections 1] [--inflight 5] [--topic-config K=V]… [--label L]
//! kafka_bench --bootstrap 127.0.0.1:9092 [--sizes 100,1024] [--records 200000] …
//!     (a suite: `produce` for each size, then `e2e`)
//! ```
//!
//! * `produce`: `--producers` librdkafka producers (default 1; threads of this process, each
//!   with its own client, sharing the records) at acks=all send `--records` records of `--size` bytes
//!   (4-byte keys) to a new topic, as fast as it accepts them or paced to `--rate`; reports
//!   records/s and MB/s (payload, 1e6 bytes) from the first send to the last ack, and the ack
//!   latency p50/p99/p99.9 (send call → delivery report, so librdkafka's linger and queueing are
//!   in it, as a user sees it). A progress line goes to stderr every second.
//! * `wire`: NOT librdkafka: a lean wire-level producer that resends one prebuilt, valid
//!   record batch (CRC-32C, no idempotence) in Produce v9 requests, several in flight per
//!   connection, so the broker's own ceiling shows apart from the client's (see [`wire`]).
//! * `e2e`: a producer (linger 0, acks=all) sends one record per ms carrying its send time; a
//!   consumer on the same partition reports send → receive latency.
//! * `raw-append`: the disk baseline: `--total-bytes` appended to a fresh file in `--chunk-bytes`
//!   writes, each followed by fdatasync (use the broker's bytes per group-commit fsync). With
//!   `--overlap` one thread appends the chunks back to back while another calls fdatasync
//!   whenever something new was written (a group commit whose fsyncs run alongside the next
//!   appends); latency is then per sync.
//! * `raw-tcp`: the network baseline: the same bytes through one loopback TCP connection.
//!   `--retain-bytes N`: the receiver reads into fresh N-byte buffers and keeps them all, the
//!   memory an in-memory (volatile) broker must touch for what it keeps.
//! * `null-sink`: the client baseline: a minimal Kafka "broker" that answers ApiVersions,
//!   Metadata, CreateTopics and Produce and throws the records away (no CRC check, no storing),
//!   so `produce` against it shows what the same librdkafka producer doing the same work can
//!   reach on this machine — the ceiling for any broker measured with this client. Runs until
//!   killed.
//!
//! Every mode prints one tab-separated line for scripts:
//! `result <label> <records/s> <MB/s> <p50 ms> <p99 ms> <p99.9 ms>` (empty fields as `-`).

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
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
/// Most runs of `raw-tcp --repeat`.
const REPEAT_MAX: usize = 100;
/// Most producers (`--producers`) or wire connections (`--connections`) in one run.
const PRODUCERS_MAX: usize = 64;

/// The time origin of delivery opaques: a record's opaque is its send time in ns since this
/// instant, so timing a record allocates nothing (a `Box<Instant>` per record did).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`] (a usize holds 584 years of them on 64-bit targets).
fn now_ns() -> usize {
    epoch().elapsed().as_nanos() as usize
}

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
    listen: Option<String>,
    overlap: bool,
    producers: usize,
    connections: usize,
    inflight: usize,
    batch_records: usize,
    retain_bytes: Option<usize>,
    repeat: usize,
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
        listen: None,
        overlap: false,
        producers: 1,
        connections: 1,
        inflight: 5,
        batch_records: 1000,
        retain_bytes: None,
        repeat: 1,
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
            "--listen" => a.listen = Some(val()?),
            "--overlap" => a.overlap = true,
            "--producers" => a.producers = val()?.parse()?,
            "--connections" => a.connections = val()?.parse()?,
            "--inflight" => a.inflight = val()?.parse()?,
            "--batch-records" => a.batch_records = val()?.parse()?,
            "--retain-bytes" => a.retain_bytes = Some(val()?.parse()?),
            "--repeat" => a.repeat = val()?.parse()?,
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
    if !(1..=PRODUCERS_MAX).contains(&a.producers) || !(1..=PRODUCERS_MAX).contains(&a.connections)
    {
        bail!("--producers and --connections must be in 1..={PRODUCERS_MAX}");
    }
    if !(1..=wire::INFLIGHT_MAX).contains(&a.inflight) {
        bail!("--inflight must be in 1..={}", wire::INFLIGHT_MAX);
    }
    if !(1..=REPEAT_MAX).contains(&a.repeat) {
        bail!("--repeat must be in 1..={REPEAT_MAX}");
    }
    if a.retain_bytes
        .is_some_and(|b| b == 0 || b > wire::RETAIN_BYTES_MAX)
    {
        bail!("--retain-bytes must be in 1..={}", wire::RETAIN_BYTES_MAX);
    }
    if !(1..=wire::BATCH_RECORDS_MAX).contains(&a.batch_records) {
        bail!("--batch-records must be in 1..={}", wire::BATCH_RECORDS_MAX);
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
    type DeliveryOpaque = usize;
    fn delivery(&self, r: &DeliveryResult<'_>, sent_ns: usize) {
        match r {
            Ok(_) => {
                let us = (now_ns().saturating_sub(sent_ns) / 1000).min(u32::MAX as usize) as u32;
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

/// One producer run with `--producers` librdkafka producers (threads of this process, each
/// with its own client and connection, each sending its share of `records` and pacing at its
/// share of `--rate`): (records/s, MB/s, [p50, p99, p99.9] ack latency in ms), from the common
/// start to the last ack, latencies of every producer merged.
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
    let n = a.producers;
    // Two rendezvous: every producer warmed up (then the counters are reset), and the start.
    let warmed = Arc::new(Barrier::new(n + 1));
    let start = Arc::new(Barrier::new(n + 1));
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let payload: Arc<[u8]> = vec![b'x'; size].into();
    let mut workers = Vec::with_capacity(n);
    for w in 0..n {
        let p: ThreadedProducer<Ctx> = cfg.create_with_context(Ctx(acks.clone()))?;
        let share = records / n + usize::from(w < records % n);
        let rate = a.rate.map(|r| r / n as f64);
        let (topic, payload, sent, stop) =
            (topic.clone(), payload.clone(), sent.clone(), stop.clone());
        let (warmed, start) = (warmed.clone(), start.clone());
        workers.push(std::thread::spawn(move || -> anyhow::Result<()> {
            // Warm up the connection and the topic's metadata so the timed run starts on a
            // ready client.
            let warm = p
                .send(
                    BaseRecord::with_opaque_to(&topic, now_ns())
                        .key(&b"warm"[..])
                        .payload(&b"up"[..]),
                )
                .map_err(|(e, _)| anyhow::Error::from(e))
                .and_then(|()| Ok(p.flush(Duration::from_secs(30))?));
            warmed.wait();
            start.wait();
            warm?;
            let t0 = Instant::now();
            for i in 0..share {
                if let Some(rate) = rate {
                    let due = t0 + Duration::from_secs_f64(i as f64 / rate);
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                }
                if stop.load(Ordering::Relaxed) {
                    bail!("stopped: another producer failed");
                }
                let key = ((i * n + w) as u32).to_be_bytes();
                let mut rec = BaseRecord::with_opaque_to(&topic, now_ns())
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
            p.flush(Duration::from_secs(300))?;
            Ok(())
        }));
    }
    warmed.wait();
    acks.acked.store(0, Ordering::Relaxed);
    if let Ok(mut l) = acks.latencies_us.lock() {
        l.clear();
    }
    let label = a.label.clone().unwrap_or_else(|| format!("{size} B"));
    start.wait();
    let t0 = Instant::now();
    let shower = progress(label, t0, sent.clone(), acks.clone(), stop.clone());
    let mut first_err = None;
    for w in workers {
        let r = w
            .join()
            .map_err(|_| anyhow::anyhow!("producer thread panicked"))
            .and_then(|r| r);
        if let Err(e) = r {
            stop.store(true, Ordering::Relaxed);
            first_err.get_or_insert(e);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = shower.join();
    if let Some(e) = first_err {
        return Err(e);
    }
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
    if l.len() != records {
        bail!("{} acks for {records} records", l.len());
    }
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
                BaseRecord::<[u8], [u8], usize>::with_opaque_to(&topic, now_ns()).payload(&ns[..]),
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

/// `raw-append --overlap`: appends run while the previous fdatasync is in flight (one writer
/// thread, one syncing thread). MB/s until the last byte is synced, and fdatasync latency.
fn raw_append_overlapped(dir: &str, total: usize, chunk: usize) -> anyhow::Result<(f64, [f64; 3])> {
    if chunk == 0 {
        bail!("--chunk-bytes must be positive");
    }
    let path = std::path::Path::new(dir).join(format!("raw-append-ov-{}", std::process::id()));
    let f = Arc::new(
        std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .with_context(|| format!("create {}", path.display()))?,
    );
    let written = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let syncer = {
        let (f, written) = (f.clone(), written.clone());
        std::thread::spawn(move || -> std::io::Result<Vec<u32>> {
            let mut synced = 0u64;
            let mut lat_us = Vec::new();
            while synced < total as u64 {
                let w = written.load(Ordering::Acquire);
                if w == synced {
                    std::thread::yield_now();
                    continue;
                }
                let t = Instant::now();
                f.sync_data()?;
                lat_us.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                synced = w;
            }
            Ok(lat_us)
        })
    };
    let buf = vec![b'x'; chunk];
    let mut left = total;
    let mut w: &std::fs::File = &f;
    while left > 0 {
        let n = left.min(chunk);
        w.write_all(&buf[..n])?;
        left -= n;
        written.fetch_add(n as u64, Ordering::Release);
    }
    let mut lat_us = syncer
        .join()
        .map_err(|_| anyhow::anyhow!("syncer panicked"))??;
    let secs = t0.elapsed().as_secs_f64();
    drop(f);
    let _ = std::fs::remove_file(&path);
    lat_us.sort_unstable();
    eprintln!("raw-append --overlap: {} fdatasyncs", lat_us.len());
    Ok((
        total as f64 / secs / 1e6,
        [pct(&lat_us, 0.5), pct(&lat_us, 0.99), pct(&lat_us, 0.999)],
    ))
}

/// Streams `total` bytes through a loopback TCP connection in `chunk`-byte writes: MB/s.
/// With `retain_bytes` the receiver reads into fresh buffers of that size and keeps them all
/// until the end, as an in-memory broker keeps what it is sent (every byte lands on a page
/// touched for the first time); without, it reuses one 64 KiB buffer.
fn raw_tcp(total: usize, chunk: usize, retain_bytes: Option<usize>) -> anyhow::Result<f64> {
    if chunk == 0 {
        bail!("--chunk-bytes must be positive");
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let sink = std::thread::spawn(move || -> std::io::Result<usize> {
        let (mut s, _) = l.accept()?;
        let mut got = 0;
        if let Some(size) = retain_bytes {
            let mut kept: Vec<Vec<u8>> = Vec::new();
            loop {
                let mut buf = Vec::with_capacity(size);
                let n = (&mut s).take(size as u64).read_to_end(&mut buf)?;
                if n == 0 {
                    drop(kept);
                    return Ok(got);
                }
                got += n;
                kept.push(buf);
            }
        }
        let mut buf = vec![0u8; 1 << 16];
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
            let (mbps, l) = if a.overlap {
                raw_append_overlapped(dir, a.total_bytes, chunk)?
            } else {
                raw_append(dir, a.total_bytes, chunk)?
            };
            let label = a
                .label
                .clone()
                .unwrap_or_else(|| format!("raw-append-{chunk}"));
            result_line(&label, None, Some(mbps), Some(l));
        }
        "raw-tcp" => {
            // A stream of a few hundred MB takes well under a second, so one load spike on a
            // shared box swings it; `--repeat N` reports the median of N streams.
            let mut runs = (0..a.repeat)
                .map(|_| {
                    raw_tcp(
                        a.total_bytes,
                        a.chunk_bytes.unwrap_or(1 << 16),
                        a.retain_bytes,
                    )
                })
                .collect::<anyhow::Result<Vec<f64>>>()?;
            runs.sort_by(f64::total_cmp);
            eprintln!("raw-tcp MB/s per stream (sorted): {runs:.1?}");
            let mbps = runs[runs.len() / 2];
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
        "wire" => {
            let size = a.sizes[0];
            let records = a.records.unwrap_or(200_000);
            let topic = format!("bench-wire-{size}-{run}");
            create_topic(&a.bootstrap, &topic, a.partitions, &a.topic_configs).await?;
            let o = wire::Opts {
                bootstrap: a.bootstrap.clone(),
                topic,
                partitions: a.partitions,
                size,
                records,
                batch_records: a.batch_records,
                connections: a.connections,
                inflight: a.inflight,
            };
            let (rps, mbps, l) = tokio::task::spawn_blocking(move || wire::run(&o)).await??;
            let label = a.label.clone().unwrap_or_else(|| format!("wire-{size}"));
            result_line(&label, Some(rps), Some(mbps), Some(l));
        }
        "null-sink" => {
            let listen = a.listen.as_deref().unwrap_or("127.0.0.1:9093");
            null_sink::run(listen)?;
        }
        other => bail!("unknown mode {other} (produce, wire, e2e, raw-append, raw-tcp, null-sink)"),
    }
    Ok(())
}

/// The `null-sink` mode: a minimal Kafka broker that acknowledges produce requests without
/// looking at the records (see the module docs). One thread per connection, requests answered
/// in order.
mod null_sink {
    use std::collections::HashMap;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};

    use anyhow::{bail, Context};
    use bytes::{Buf, BufMut, Bytes, BytesMut};
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

    /// Largest request frame accepted (librdkafka's message.max.bytes is far below it).
    const FRAME_BYTES_MAX: usize = 64 << 20;
    /// Partitions of a topic named in Metadata without CreateTopics.
    const DEFAULT_PARTITIONS: i32 = 3;
    /// (api key, min version, max version) advertised. Fetch is advertised although never
    /// served: librdkafka writes magic-2 record batches (what it sends to a real broker) only
    /// when the broker lists Produce ≥ 3 *and* Fetch ≥ 4; without Fetch it falls back to the
    /// old magic-1 message sets with a zlib CRC-32 per message (until b95e859 the null sink
    /// did not list Fetch, so its baseline measured that costlier client path).
    const SERVED: [(ApiKey, i16, i16); 5] = [
        (ApiKey::Produce, 3, 9),
        (ApiKey::Fetch, 4, 12),
        (ApiKey::Metadata, 0, 12),
        (ApiKey::ApiVersions, 0, 3),
        (ApiKey::CreateTopics, 0, 7),
    ];

    /// Topic → (partition count, next offset per partition).
    type Topics = Arc<Mutex<HashMap<String, Vec<i64>>>>;

    pub fn run(listen: &str) -> anyhow::Result<()> {
        let l = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
        let addr = l.local_addr()?;
        eprintln!("null-sink listening on {addr}");
        let topics: Topics = Arc::default();
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let topics = topics.clone();
            std::thread::spawn(move || {
                if let Err(e) = serve(s, addr, topics) {
                    eprintln!("null-sink connection: {e:#}");
                }
            });
        }
        Ok(())
    }

    fn serve(mut s: TcpStream, addr: std::net::SocketAddr, topics: Topics) -> anyhow::Result<()> {
        s.set_nodelay(true)?;
        loop {
            let mut len = [0u8; 4];
            if s.read_exact(&mut len).is_err() {
                return Ok(()); // closed
            }
            let n = i32::from_be_bytes(len);
            if n < 8 || n as usize > FRAME_BYTES_MAX {
                bail!("frame length {n}");
            }
            let mut body = BytesMut::zeroed(n as usize);
            s.read_exact(&mut body)?;
            let mut body = body.freeze();
            let key = ApiKey::try_from(i16::from_be_bytes([body[0], body[1]]))
                .map_err(|_| anyhow::anyhow!("unknown api key"))?;
            let version = i16::from_be_bytes([body[2], body[3]]);
            let header = RequestHeader::decode(&mut body, key.request_header_version(version))?;
            let out = match key {
                ApiKey::ApiVersions => {
                    let resp = ApiVersionsResponse::default().with_api_keys(
                        SERVED
                            .iter()
                            .map(|(k, lo, hi)| {
                                ApiVersion::default()
                                    .with_api_key(*k as i16)
                                    .with_min_version(*lo)
                                    .with_max_version(*hi)
                            })
                            .collect(),
                    );
                    // Answer an unknown ApiVersions version in v0, as brokers do.
                    let v = if version > 3 { 0 } else { version };
                    frame(key, v, header.correlation_id, &resp)?
                }
                ApiKey::Metadata => {
                    let req = MetadataRequest::decode(&mut body, version)?;
                    let mut t = topics.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                    let names: Vec<String> = match req.topics {
                        Some(list) if !list.is_empty() => list
                            .into_iter()
                            .filter_map(|x| x.name.map(|n| n.0.to_string()))
                            .collect(),
                        _ => t.keys().cloned().collect(),
                    };
                    let broker = BrokerId(0);
                    let resp = MetadataResponse::default()
                        .with_brokers(vec![MetadataResponseBroker::default()
                            .with_node_id(broker)
                            .with_host(StrBytes::from_string(addr.ip().to_string()))
                            .with_port(i32::from(addr.port()))])
                        .with_cluster_id(Some(StrBytes::from_static_str("null-sink")))
                        .with_controller_id(broker)
                        .with_topics(
                            names
                                .into_iter()
                                .map(|name| {
                                    let parts =
                                        t.entry(name.clone())
                                            .or_insert_with(|| vec![0; DEFAULT_PARTITIONS as usize])
                                            .len() as i32;
                                    MetadataResponseTopic::default()
                                        .with_topic_id(squall_protocols::kafka::topics::topic_id(
                                            &name,
                                        ))
                                        .with_name(Some(TopicName(StrBytes::from_string(name))))
                                        .with_partitions(
                                            (0..parts)
                                                .map(|p| {
                                                    MetadataResponsePartition::default()
                                                        .with_partition_index(p)
                                                        .with_leader_id(broker)
                                                        .with_replica_nodes(vec![broker])
                                                        .with_isr_nodes(vec![broker])
                                                })
                                                .collect(),
                                        )
                                })
                                .collect(),
                        );
                    drop(t);
                    frame(key, version, header.correlation_id, &resp)?
                }
                ApiKey::CreateTopics => {
                    let req = CreateTopicsRequest::decode(&mut body, version)?;
                    let mut t = topics.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                    let results = req
                        .topics
                        .into_iter()
                        .map(|c| {
                            let parts = if c.num_partitions > 0 {
                                c.num_partitions.min(10_000)
                            } else {
                                DEFAULT_PARTITIONS
                            };
                            t.insert(c.name.0.to_string(), vec![0; parts as usize]);
                            CreatableTopicResult::default()
                                .with_name(c.name)
                                .with_num_partitions(parts)
                                .with_replication_factor(1)
                        })
                        .collect();
                    drop(t);
                    let resp = CreateTopicsResponse::default().with_topics(results);
                    frame(key, version, header.correlation_id, &resp)?
                }
                ApiKey::Produce => {
                    let req = ProduceRequest::decode(&mut body, version)?;
                    let mut t = topics.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                    let mut responses = Vec::with_capacity(req.topic_data.len());
                    for td in req.topic_data {
                        let offsets = t.entry(td.name.0.to_string()).or_default();
                        let mut parts = Vec::with_capacity(td.partition_data.len());
                        for pd in td.partition_data {
                            let idx = pd.index;
                            let resp = PartitionProduceResponse::default().with_index(idx);
                            let Some(next) =
                                usize::try_from(idx).ok().and_then(|i| offsets.get_mut(i))
                            else {
                                parts.push(resp.with_error_code(3)); // UNKNOWN_TOPIC_OR_PARTITION
                                continue;
                            };
                            let base = *next;
                            *next += records_in(pd.records.unwrap_or_default());
                            parts.push(resp.with_base_offset(base));
                        }
                        responses.push(
                            TopicProduceResponse::default()
                                .with_name(td.name)
                                .with_partition_responses(parts),
                        );
                    }
                    drop(t);
                    if req.acks == 0 {
                        continue;
                    }
                    let resp = ProduceResponse::default().with_responses(responses);
                    frame(key, version, header.correlation_id, &resp)?
                }
                other => bail!("null-sink does not serve {other:?}"),
            };
            s.write_all(&out)?;
        }
    }

    /// Records in a magic-2 record set: the sum of the batches' record counts (header only).
    fn records_in(mut b: Bytes) -> i64 {
        let mut n = 0;
        // base offset 8, batch length 4, then 45 bytes up to the i32 record count at 57.
        while b.remaining() >= 61 {
            let len = i32::from_be_bytes([b[8], b[9], b[10], b[11]]);
            let count = i32::from_be_bytes([b[57], b[58], b[59], b[60]]);
            n += i64::from(count.max(0));
            let total = 12 + len.max(0) as usize;
            if total > b.remaining() {
                break;
            }
            b.advance(total);
        }
        n
    }

    fn frame<T: Encodable>(
        key: ApiKey,
        version: i16,
        correlation_id: i32,
        body: &T,
    ) -> anyhow::Result<BytesMut> {
        let mut out = BytesMut::with_capacity(128);
        out.put_i32(0);
        ResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(&mut out, key.response_header_version(version))?;
        body.encode(&mut out, version)?;
        let n = (out.len() - 4) as i32;
        out[..4].copy_from_slice(&n.to_be_bytes());
        Ok(out)
    }
}

/// The `wire` mode: a lean producer that is not librdkafka, to show the broker's own ceiling
/// apart from the client's. It writes prebuilt Produce v9 requests (acks=all, one magic-2
/// record batch of `--batch-records` records of `--size` bytes, uncompressed, valid CRC-32C,
/// no idempotence: producer id −1) over `--connections` TCP connections, keeping up to
/// `--inflight` requests outstanding on each, and checks every response's error codes. The
/// same batch bytes are sent again and again (the broker assigns the offsets), so the client
/// spends almost no CPU per record. Latency is per request (write → its response).
mod wire {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::sync::mpsc::sync_channel;
    use std::time::Instant;

    use anyhow::{bail, Context};
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    /// Most requests outstanding per connection.
    pub const INFLIGHT_MAX: usize = 64;
    /// Largest buffer of `raw-tcp --retain-bytes`.
    pub const RETAIN_BYTES_MAX: usize = 1 << 30;
    /// Most records in one prebuilt batch.
    pub const BATCH_RECORDS_MAX: usize = 1 << 20;
    /// Produce version sent (flexible, topic by name; every broker of interest serves it).
    const VERSION: i16 = 9;
    /// Largest response frame accepted.
    const RESPONSE_BYTES_MAX: usize = 1 << 20;
    /// Offsets in a magic-2 batch: the CRC-32C, and the base sequence.
    const CRC_AT: usize = 17;
    const BASE_SEQUENCE_AT: usize = 53;
    /// Where the correlation id sits in a request frame: size (4), api key (2), version (2).
    const CORRELATION_AT: usize = 8;

    pub struct Opts {
        pub bootstrap: String,
        pub topic: String,
        pub partitions: i32,
        pub size: usize,
        pub records: usize,
        pub batch_records: usize,
        pub connections: usize,
        pub inflight: usize,
    }

    /// One length-prefixed Produce request frame for `partition` carrying `batch`.
    fn request(topic: &str, partition: i32, batch: &Bytes) -> anyhow::Result<Vec<u8>> {
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(batch.clone()))])]);
        let mut out = BytesMut::new();
        out.extend_from_slice(&[0; 4]);
        RequestHeader::default()
            .with_request_api_key(ApiKey::Produce as i16)
            .with_request_api_version(VERSION)
            .with_client_id(Some(StrBytes::from_static_str("kafka-bench-wire")))
            .encode(&mut out, ApiKey::Produce.request_header_version(VERSION))?;
        req.encode(&mut out, VERSION)?;
        let n = i32::try_from(out.len() - 4)?;
        out[..4].copy_from_slice(&n.to_be_bytes());
        Ok(out.to_vec())
    }

    /// One batch of `n` records of `size` bytes (4-byte keys), as librdkafka would send it
    /// without idempotence and compression.
    fn batch(n: usize, size: usize) -> anyhow::Result<Bytes> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64;
        let value = Bytes::from(vec![b'x'; size]);
        let records: Vec<Record> = (0..n)
            .map(|i| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder starts a new batch wherever offset − sequence changes, so the
                // sequence must count along; the base sequence is set back to −1 below.
                sequence: i as i32,
                timestamp: now_ms,
                key: Some(Bytes::copy_from_slice(&(i as u32).to_be_bytes())),
                value: Some(value.clone()),
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )?;
        // Exactly one batch, as a producer without idempotence sends it: base sequence −1,
        // and the CRC-32C (over attributes onwards) recomputed after that change.
        let whole = buf.len() >= BASE_SEQUENCE_AT + 8
            && i32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize + 12 == buf.len();
        if !whole {
            bail!("the encoder did not write exactly one batch");
        }
        buf[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&(-1i32).to_be_bytes());
        let crc = crc32c::crc32c(&buf[CRC_AT + 4..]);
        buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        Ok(buf.freeze())
    }

    /// Sends the requests of one connection (`requests` of them, partitions in turn starting
    /// at `first`) and reads their responses; returns the request latencies in µs.
    fn connection(
        o: &Opts,
        frames: &[Vec<u8>],
        first: usize,
        requests: usize,
    ) -> anyhow::Result<Vec<u32>> {
        let s =
            TcpStream::connect(&o.bootstrap).with_context(|| format!("connect {}", o.bootstrap))?;
        s.set_nodelay(true)?;
        let mut w = s.try_clone()?;
        let mut frames: Vec<Vec<u8>> = frames.to_vec();
        // The writer blocks once `inflight` requests are unanswered.
        let (tx, rx) = sync_channel::<(i32, Instant)>(o.inflight);
        let writer = std::thread::spawn(move || -> anyhow::Result<()> {
            for j in 0..requests {
                let k = (first + j) % frames.len();
                let corr = j as i32;
                frames[k][CORRELATION_AT..CORRELATION_AT + 4].copy_from_slice(&corr.to_be_bytes());
                if tx.send((corr, Instant::now())).is_err() {
                    return Ok(()); // the reader stopped; it reports why
                }
                w.write_all(&frames[k])?;
            }
            Ok(())
        });
        let mut r = std::io::BufReader::with_capacity(64 * 1024, s);
        let mut lat_us = Vec::with_capacity(requests);
        let mut body = Vec::new();
        let res = (|| -> anyhow::Result<()> {
            for _ in 0..requests {
                let mut len = [0u8; 4];
                r.read_exact(&mut len)?;
                let n = usize::try_from(i32::from_be_bytes(len)).context("negative frame")?;
                if n > RESPONSE_BYTES_MAX {
                    bail!("response of {n} bytes");
                }
                body.resize(n, 0);
                r.read_exact(&mut body)?;
                let (corr, sent) = rx.recv().context("writer ended early")?;
                lat_us.push(sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                let mut b = Bytes::copy_from_slice(&body);
                let h = ResponseHeader::decode(
                    &mut b,
                    ApiKey::Produce.response_header_version(VERSION),
                )?;
                if h.correlation_id != corr {
                    bail!("response for {} where {corr} was due", h.correlation_id);
                }
                let resp = ProduceResponse::decode(&mut b, VERSION)?;
                for t in &resp.responses {
                    for p in &t.partition_responses {
                        if p.error_code != 0 {
                            bail!(
                                "partition {} answered error {} ({:?})",
                                p.index,
                                p.error_code,
                                p.error_message
                            );
                        }
                    }
                }
            }
            Ok(())
        })();
        drop(rx);
        let wrote = writer
            .join()
            .map_err(|_| anyhow::anyhow!("writer panicked"))?;
        res?;
        wrote?;
        Ok(lat_us)
    }

    /// Runs the whole load: (records/s, MB/s of payload, [p50, p99, p99.9] request latency ms).
    pub fn run(o: &Opts) -> anyhow::Result<(f64, f64, [f64; 3])> {
        if o.partitions < 1 {
            bail!("--partitions must be positive");
        }
        let b = batch(o.batch_records, o.size)?;
        let frames = (0..o.partitions)
            .map(|p| request(&o.topic, p, &b))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let requests = o.records.div_ceil(o.batch_records);
        eprintln!(
            "wire: {requests} requests of {} B ({} records, batch {} B) over {} connections, {} in flight each",
            frames[0].len(),
            o.batch_records,
            b.len(),
            o.connections,
            o.inflight
        );
        let t0 = Instant::now();
        let lat = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..o.connections)
                .map(|c| {
                    let share =
                        requests / o.connections + usize::from(c < requests % o.connections);
                    let frames = &frames;
                    sc.spawn(move || connection(o, frames, c, share))
                })
                .collect();
            let mut all = Vec::with_capacity(requests);
            for h in handles {
                all.extend(
                    h.join()
                        .map_err(|_| anyhow::anyhow!("connection panicked"))??,
                );
            }
            anyhow::Ok(all)
        })?;
        let secs = t0.elapsed().as_secs_f64();
        let mut lat = lat;
        lat.sort_unstable();
        let records = (requests * o.batch_records) as f64;
        Ok((
            records / secs,
            records * o.size as f64 / secs / 1e6,
            [
                super::pct(&lat, 0.5),
                super::pct(&lat, 0.99),
                super::pct(&lat, 0.999),
            ],
        ))
    }
}
