//! Benchmark (a): durable puts with group commit — 1 KiB values, 64 writer threads, each put
//! acknowledged only after its fsync — against a raw baseline measured in the same run: one
//! thread appending the same bytes to a file with write() and fdatasync() after as many records
//! as the store's group commits averaged (the same fsync cadence in bytes per fsync).
//!
//! `cargo bench -p squall-storage --bench durable` (env: SQUALL_BENCH_SECS, default 5;
//! SQUALL_BENCH_DIR, default the system temp dir).

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use squall_storage::*;

const WRITERS: usize = 64;
const VALUE_BYTES: usize = 1024;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

struct StoreRound {
    puts: u64,
    secs: f64,
    fsyncs: u64,
    /// (put acknowledged, put applied+written) in ns.
    lat_ns: Vec<(u64, u64)>,
}

fn store_round(store: &Arc<Store>, run: Duration) -> StoreRound {
    let ops = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let fsyncs0 = store.log().map_or(0, |l| l.fsyncs());
    let value = Bytes::from(vec![0xab_u8; VALUE_BYTES]);
    let t0 = Instant::now();
    let mut lat_ns: Vec<(u64, u64)> = Vec::new();
    std::thread::scope(|sc| {
        let mut hs = Vec::new();
        for t in 0..WRITERS {
            let (store, ops, stop, value) =
                (store.clone(), ops.clone(), stop.clone(), value.clone());
            hs.push(sc.spawn(move || {
                let key = format!("k{t}");
                let mut lat = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let s = Instant::now();
                    let op = Op::Put {
                        pool: "bench".into(),
                        key: key.clone(),
                        value: value.clone(),
                        sensor_time_us: None,
                        span: 1,
                        compaction_key: None,
                        expect: Expect::Any,
                        tombstone: false,
                    };
                    let a = LocalSequencer.submit(&store, op, now_us()).expect("put");
                    let applied_ns = s.elapsed().as_nanos() as u64;
                    store.wait_durable(a.lsn.expect("logged")).expect("durable");
                    lat.push((s.elapsed().as_nanos() as u64, applied_ns));
                    ops.fetch_add(1, Ordering::Relaxed);
                }
                lat
            }));
        }
        std::thread::sleep(run);
        stop.store(true, Ordering::Relaxed);
        for h in hs {
            lat_ns.extend(h.join().expect("writer"));
        }
    });
    StoreRound {
        puts: ops.load(Ordering::Relaxed),
        secs: t0.elapsed().as_secs_f64(),
        fsyncs: store.log().map_or(0, |l| l.fsyncs()) - fsyncs0,
        lat_ns,
    }
}

/// write() `per_sync` records of VALUE_BYTES then fdatasync(), for `run`; returns
/// (records, fsyncs, seconds).
fn baseline_round(
    path: &std::path::Path,
    per_sync: u64,
    run: Duration,
) -> anyhow::Result<(u64, u64, f64)> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let rec = vec![0xab_u8; VALUE_BYTES];
    let t1 = Instant::now();
    let (mut n, mut syncs) = (0u64, 0u64);
    while t1.elapsed() < run {
        for _ in 0..per_sync {
            f.write_all(&rec)?;
            n += 1;
        }
        f.sync_data()?;
        syncs += 1;
    }
    Ok((n, syncs, t1.elapsed().as_secs_f64()))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    // criterion-style arguments (`--bench`) are ignored.
    let secs: u64 = std::env::var("SQUALL_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let rounds: usize = std::env::var("SQUALL_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let base = std::env::var("SQUALL_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let dir = tempfile::tempdir_in(&base)?;
    let run = Duration::from_secs(secs);
    let lc = LogConfig {
        sync: SyncPolicy::GroupCommit,
        ..LogConfig::new(dir.path().join("log"))
    };
    let store = Arc::new(Store::open(StoreConfig::default(), lc)?);
    let pool = PoolConfig {
        name: "bench".into(),
        mode: Mode::Versioned,
        durable: true,
        retention_bytes: Some(1 << 20),
        ..PoolConfig::default()
    };
    let a = LocalSequencer.submit(&store, Op::CreatePool(pool), now_us())?;
    store.wait_durable(a.lsn.unwrap_or(0))?;
    let raw = dir.path().join("raw.bin");
    println!(
        "durable put, group commit, {WRITERS} writers, {VALUE_BYTES} B values; {rounds} rounds of {secs} s store then {secs} s baseline"
    );
    let (mut store_mib, mut base_mib, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut all_lat = Vec::new();
    for r in 0..rounds {
        let sr = store_round(&store, run);
        let s_mib = sr.puts as f64 * VALUE_BYTES as f64 / sr.secs / (1 << 20) as f64;
        let batch = (sr.puts as f64 / sr.fsyncs.max(1) as f64).max(1.0);
        let per_sync = batch.round() as u64;
        let (bn, bsyncs, bsecs) = baseline_round(&raw, per_sync, run)?;
        let b_mib = bn as f64 * VALUE_BYTES as f64 / bsecs / (1 << 20) as f64;
        println!(
            "  round {r}: store {:.0} puts/s = {s_mib:.2} MiB/s, {:.0} fsyncs/s, {batch:.1} puts/fsync | baseline {per_sync} x {VALUE_BYTES} B per fdatasync: {b_mib:.2} MiB/s, {:.0} fsyncs/s | {:.0}%",
            sr.puts as f64 / sr.secs,
            sr.fsyncs as f64 / sr.secs,
            bsyncs as f64 / bsecs,
            100.0 * s_mib / b_mib
        );
        store_mib.push(s_mib);
        base_mib.push(b_mib);
        ratios.push(100.0 * s_mib / b_mib);
        all_lat.extend(sr.lat_ns);
    }
    let mut acked: Vec<u64> = all_lat.iter().map(|l| l.0).collect();
    let mut applied: Vec<u64> = all_lat.iter().map(|l| l.1).collect();
    acked.sort_unstable();
    applied.sort_unstable();
    let pct = |v: &[u64], p: f64| v[((v.len() as f64 - 1.0) * p) as usize] as f64 / 1000.0;
    println!(
        "  medians: store {:.2} MiB/s, baseline {:.2} MiB/s, ratio {:.0}%",
        median(&mut store_mib),
        median(&mut base_mib),
        median(&mut ratios),
    );
    println!(
        "  put acknowledged (durable) p50 {:.0} µs, p99 {:.0} µs; of which apply+write p50 {:.0} µs, p99 {:.0} µs",
        pct(&acked, 0.5),
        pct(&acked, 0.99),
        pct(&applied, 0.5),
        pct(&applied, 0.99)
    );
    Ok(())
}
