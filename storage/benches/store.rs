//! Benchmark (b) and (c): reads of one key holding 1,000,000 versions — `get_version` (the
//! entry covering a dense counter) and `get_at` by platform and by sensor time — with p50/p99
//! per call measured one by one (criterion's means follow), and the memory each stored
//! version costs (RSS growth per version, and the in-memory layout).
//!
//! `cargo bench -p squall-storage --bench store`

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use criterion::Criterion;
use squall_storage::*;

const VERSIONS: u64 = 1_000_000;
const VALUE_BYTES: usize = 16;
const SAMPLES: usize = 200_000;

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// A small deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn fill(store: &Store, key: &str, sensor: bool) -> u64 {
    let t0 = 1_000_000_000u64;
    for i in 0..VERSIONS {
        let op = Op::Put {
            pool: "p".into(),
            key: key.into(),
            value: Bytes::from(vec![(i % 251) as u8; VALUE_BYTES]),
            // Sensor times a little out of order, as real sensors are.
            sensor_time_us: sensor.then(|| t0 + i * 10 - (i % 7)),
            span: 1,
            compaction_key: None,
            expect: Expect::Any,
            tombstone: false,
        };
        LocalSequencer.submit(store, op, t0 + i * 10).expect("put");
    }
    t0
}

fn percentiles(name: &str, mut f: impl FnMut(u64) -> bool, rng: &mut Rng) {
    let mut ns = Vec::with_capacity(SAMPLES);
    let mut hits = 0usize;
    for _ in 0..SAMPLES {
        let x = rng.next();
        let s = Instant::now();
        let ok = f(x);
        ns.push(s.elapsed().as_nanos() as u64);
        hits += usize::from(ok);
    }
    assert_eq!(hits, SAMPLES, "{name}: every read must find its version");
    ns.sort_unstable();
    let p = |q: f64| ns[((ns.len() - 1) as f64 * q) as usize];
    println!(
        "  {name:<28} p50 {:>6} ns   p99 {:>6} ns   p99.9 {:>6} ns",
        p(0.5),
        p(0.99),
        p(0.999)
    );
}

fn main() {
    let store = Store::new(StoreConfig::default()).expect("store");
    let pool = PoolConfig {
        name: "p".into(),
        mode: Mode::Versioned,
        durable: false,
        ..PoolConfig::default()
    };
    LocalSequencer
        .submit(&store, Op::CreatePool(pool), 1)
        .expect("pool");
    let rss0 = rss_bytes();
    let t0 = fill(&store, "plain", false);
    let rss1 = rss_bytes();
    fill(&store, "sensed", true);
    let rss2 = rss_bytes();
    let end = t0 + VERSIONS * 10;
    store.advance_frontier(end + 2_000_000);
    store.check_invariants().expect("invariants");

    println!("reads on one key with {VERSIONS} versions ({VALUE_BYTES} B values), {SAMPLES} random reads each:");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    percentiles(
        "get_version",
        |x| store.get_version("p", "plain", x % VERSIONS).is_ok(),
        &mut rng,
    );
    percentiles(
        "get_at platform",
        |x| {
            let t = t0 + x % (VERSIONS * 10);
            matches!(store.get_at("p", "plain", t, Clock::Platform), Ok(Some(_)))
        },
        &mut rng,
    );
    percentiles(
        "get_at sensor",
        |x| {
            let t = t0 + 10 + x % (VERSIONS * 10 - 10);
            matches!(store.get_at("p", "sensed", t, Clock::Sensor), Ok(Some(_)))
        },
        &mut rng,
    );
    let per_plain = (rss1.saturating_sub(rss0)) as f64 / VERSIONS as f64;
    let per_sensed = (rss2.saturating_sub(rss1)) as f64 / VERSIONS as f64;
    println!("memory per stored version (RSS growth / versions; includes the {VALUE_BYTES} B value and its allocation):");
    println!("  platform-only key: {per_plain:.0} B/version");
    println!("  key with sensor times (adds the sensor index): {per_sensed:.0} B/version");

    let mut c = Criterion::default().configure_from_args().sample_size(30);
    let mut i = 0u64;
    c.bench_function("get_version (1M versions)", |b| {
        b.iter(|| {
            i = (i + 7919) % VERSIONS;
            black_box(store.get_version("p", "plain", i).is_ok())
        })
    });
    c.bench_function("get_at platform (1M versions)", |b| {
        b.iter(|| {
            i = (i + 7919) % VERSIONS;
            black_box(
                store
                    .get_at("p", "plain", t0 + i * 10, Clock::Platform)
                    .is_ok(),
            )
        })
    });
    c.final_summary();
}
