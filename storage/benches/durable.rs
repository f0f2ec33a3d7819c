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

fn main() -> anyhow::Result<()> {
    // criterion passes `--bench`; ignore arguments.
    let secs: u64 = std::env::var("SQUALL_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let base = std::env::var("SQUALL_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let dir = tempfile::tempdir_in(&base)?;
    let run = Duration::from_secs(secs);

    // --- the store
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
    let ops = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let fsyncs0 = store.log().map_or(0, |l| l.fsyncs());
    let value = Bytes::from(vec![0xab_u8; VALUE_BYTES]);
    let t0 = Instant::now();
    let mut lat_ns: Vec<u64> = Vec::new();
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
                    store.wait_durable(a.lsn.expect("logged")).expect("durable");
                    lat.push(s.elapsed().as_nanos() as u64);
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
    let el = t0.elapsed().as_secs_f64();
    let n = ops.load(Ordering::Relaxed);
    let fsyncs = store.log().map_or(0, |l| l.fsyncs()) - fsyncs0;
    let store_mib_s = (n as f64 * VALUE_BYTES as f64) / el / (1 << 20) as f64;
    let batch = (n as f64 / fsyncs.max(1) as f64).max(1.0);
    lat_ns.sort_unstable();
    let pct = |p: f64| lat_ns[((lat_ns.len() as f64 - 1.0) * p) as usize] as f64 / 1000.0;
    let log_bytes = store.log().map_or(0, |l| l.bytes());
    drop(store);

    // --- the baseline: same bytes per fsync, one thread, write()+fdatasync()
    let path = dir.path().join("raw.bin");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let rec = vec![0xab_u8; VALUE_BYTES];
    let per_sync = batch.round() as u64;
    let t1 = Instant::now();
    let (mut bn, mut bsyncs) = (0u64, 0u64);
    while t1.elapsed() < run {
        for _ in 0..per_sync {
            f.write_all(&rec)?;
            bn += 1;
        }
        f.sync_data()?;
        bsyncs += 1;
    }
    let bel = t1.elapsed().as_secs_f64();
    let base_mib_s = (bn as f64 * VALUE_BYTES as f64) / bel / (1 << 20) as f64;

    println!("durable put, group commit, {WRITERS} writers, {VALUE_BYTES} B values, {secs} s");
    println!(
        "  store:    {n} puts, {:.0} puts/s, {store_mib_s:.2} MiB/s of values, {fsyncs} fsyncs ({:.1}/s), {batch:.1} puts per fsync, log {:.1} MiB",
        n as f64 / el,
        fsyncs as f64 / el,
        log_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "            put latency p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    println!(
        "  baseline: write()+fdatasync every {per_sync} x {VALUE_BYTES} B: {bn} records, {base_mib_s:.2} MiB/s, {bsyncs} fsyncs ({:.1}/s)",
        bsyncs as f64 / bel
    );
    println!(
        "  ratio store/baseline: {:.0}%",
        100.0 * store_mib_s / base_mib_s
    );
    Ok(())
}
