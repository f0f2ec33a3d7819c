//! DDS throughput and latency, direct and through Squall (issue 5 benchmark).
//!
//! `dds-bench --in TOPIC --out TOPIC --size BYTES --secs S`: a rustdds writer publishes
//! `Bench { uint32 id @key; uint64 t_ns; sequence<octet> payload }` samples (16 instances,
//! round robin, RELIABLE, KEEP_ALL, VOLATILE) on `--in`, and a rustdds reader in another participant of
//! the same process reads `--out`. With `--in == --out` that is the direct path; with
//! `--in BenchIn --out BenchOut` and `squall serve` running `examples/dds-bench/squall.toml`
//! every sample is recorded into the store and re-published by Squall's DDS face.
//!
//! Two phases: **throughput** (the writer writes as fast as the reliable protocol lets it for
//! `--secs`, the reader counts) and **latency** (`--rate` samples/s for `--secs`, one-way
//! latency = reader's clock − writer's timestamp, same host, same clock; p50/p90/p99).
//! Prints one JSON line per phase. `examples/dds-bench/run.sh` runs it all.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustdds::with_key::{DataReader, DataWriter, Sample};
use rustdds::{
    policy, CDRDeserializerAdapter, CDRSerializerAdapter, DomainParticipant,
    DomainParticipantBuilder, Keyed, QosPolicies, QosPolicyBuilder, ReadCondition, TopicKind,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Bench {
    id: u32,
    t_ns: u64,
    payload: Vec<u8>,
}

impl Keyed for Bench {
    type K = u32;
    fn key(&self) -> u32 {
        self.id
    }
}

const INSTANCES: u32 = 16;
/// Fixed part of a sample on the wire: 4 (id) + 4 (pad) + 8 (t_ns) + 4 (length) ≈ 20 bytes.
const FIXED_BYTES: usize = 20;

fn qos() -> QosPolicies {
    QosPolicyBuilder::new()
        .reliability(policy::Reliability::Reliable {
            max_blocking_time: rustdds::Duration::from_millis(1000),
        })
        .durability(policy::Durability::Volatile)
        .history(policy::History::KeepAll)
        .build()
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn participant() -> anyhow::Result<DomainParticipant> {
    DomainParticipantBuilder::new(0)
        .with_only_networks([std::net::Ipv4Addr::LOCALHOST])
        .build()
        .map_err(|e| anyhow::anyhow!("participant: {e:?}"))
}

struct Args {
    topic_in: String,
    topic_out: String,
    size: usize,
    secs: u64,
    rate: u64,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        topic_in: "Bench".into(),
        topic_out: "Bench".into(),
        size: 64,
        secs: 5,
        rate: 1000,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < v.len() {
        match v[i].as_str() {
            "--in" => a.topic_in = v[i + 1].clone(),
            "--out" => a.topic_out = v[i + 1].clone(),
            "--size" => a.size = v[i + 1].parse()?,
            "--secs" => a.secs = v[i + 1].parse()?,
            "--rate" => a.rate = v[i + 1].parse()?,
            o => anyhow::bail!("unknown option {o}"),
        }
        i += 2;
    }
    Ok(a)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    let payload_bytes = a.size.saturating_sub(FIXED_BYTES);

    let sub_dp = participant()?;
    let q = qos();
    let out_topic = sub_dp
        .create_topic(a.topic_out.clone(), "Bench".into(), &q, TopicKind::WithKey)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let subscriber = sub_dp
        .create_subscriber(&q)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut reader: DataReader<Bench, CDRDeserializerAdapter<Bench>> = subscriber
        .create_datareader_cdr::<Bench>(&out_topic, Some(q.clone()))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;

    let pub_dp = participant()?;
    let in_topic = pub_dp
        .create_topic(a.topic_in.clone(), "Bench".into(), &q, TopicKind::WithKey)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let publisher = pub_dp
        .create_publisher(&q)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let writer: DataWriter<Bench, CDRSerializerAdapter<Bench>> = publisher
        .create_datawriter_cdr::<Bench>(&in_topic, Some(q))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;

    let received = Arc::new(AtomicU64::new(0));
    let latencies: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (r2, l2, rec2, stop2) = (
        received.clone(),
        latencies.clone(),
        record.clone(),
        stop.clone(),
    );
    let reader_thread = std::thread::spawn(move || {
        while !stop2.load(Ordering::Relaxed) {
            let mut got = false;
            while let Ok(batch) = reader.take(1024, ReadCondition::not_read()) {
                if batch.is_empty() {
                    break;
                }
                got = true;
                for s in batch {
                    let Sample::Value(b) = s.into_value() else {
                        continue;
                    };
                    r2.fetch_add(1, Ordering::Relaxed);
                    if rec2.load(Ordering::Relaxed) {
                        if let Ok(mut l) = l2.lock() {
                            l.push(now_ns().saturating_sub(b.t_ns));
                        }
                    }
                }
            }
            if !got {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    });

    // Wait until a probe comes through (discovery, and Squall's path when bridged).
    let t0 = Instant::now();
    let mut seq = 0u64;
    while received.load(Ordering::Relaxed) == 0 {
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(30),
            "no sample came through in 30 s"
        );
        let _ = writer.write(
            Bench {
                id: 0,
                t_ns: now_ns(),
                payload: vec![0; payload_bytes],
            },
            None,
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));

    // Throughput.
    let base = received.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut sent = 0u64;
    let payload = vec![0xabu8; payload_bytes];
    while start.elapsed() < Duration::from_secs(a.secs) {
        seq += 1;
        let s = Bench {
            id: (seq % u64::from(INSTANCES)) as u32,
            t_ns: now_ns(),
            payload: payload.clone(),
        };
        if writer.write(s, None).is_ok() {
            sent += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let got = received.load(Ordering::Relaxed) - base;
    // Let the backlog drain before the latency phase (counted separately).
    let mut last = received.load(Ordering::Relaxed);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = received.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let drained = received.load(Ordering::Relaxed) - base;
    println!(
        "{{\"phase\":\"throughput\",\"in\":\"{}\",\"out\":\"{}\",\"size\":{},\"sent\":{sent},\"received\":{got},\"received_after_drain\":{drained},\"secs\":{elapsed:.2},\"sent_per_s\":{:.0},\"received_per_s\":{:.0}}}",
        a.topic_in, a.topic_out, a.size, sent as f64 / elapsed, got as f64 / elapsed
    );

    // Latency at a fixed rate.
    std::thread::sleep(Duration::from_millis(500));
    record.store(true, Ordering::Relaxed);
    let period = Duration::from_nanos(1_000_000_000 / a.rate.max(1));
    let start = Instant::now();
    let mut next = start;
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(a.secs) {
        seq += 1;
        let s = Bench {
            id: (seq % u64::from(INSTANCES)) as u32,
            t_ns: now_ns(),
            payload: payload.clone(),
        };
        let _ = writer.write(s, None);
        n += 1;
        next += period;
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    std::thread::sleep(Duration::from_millis(1000));
    record.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let _ = reader_thread.join();
    let mut l = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort_unstable();
    println!(
        "{{\"phase\":\"latency\",\"in\":\"{}\",\"out\":\"{}\",\"size\":{},\"rate\":{},\"sent\":{n},\"received\":{},\"p50_us\":{:.1},\"p90_us\":{:.1},\"p99_us\":{:.1},\"max_us\":{:.1}}}",
        a.topic_in,
        a.topic_out,
        a.size,
        a.rate,
        l.len(),
        percentile(&l, 0.50),
        percentile(&l, 0.90),
        percentile(&l, 0.99),
        percentile(&l, 1.0)
    );
    Ok(())
}
