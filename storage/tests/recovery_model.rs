//! Property test: recovery reproduces the store. Random durable-pool histories (puts with
//! spans and compaction keys, deletes, truncates, pools deleted and recreated, byte retention,
//! log retention via `compact_log`, segment rolls) are written, synced, and the disk is
//! "crashed" (SimFs keeps only synced bytes) at random points; the reopened store must have
//! the same digest in every shard and pass its invariants.

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;
use squall_storage::log::{LogConfig, SimFs};
use squall_storage::*;

#[derive(Debug, Clone)]
enum Step {
    Put {
        key: u8,
        len: u16,
        span: u32,
        ck: Option<u8>,
        tomb: bool,
    },
    Truncate {
        key: u8,
        before: u8,
    },
    RecreatePool {
        compact: bool,
    },
    CompactLog,
    Reopen,
    /// Alter the pool: byte retention and compaction change (the mode stays).
    Alter {
        retention_bytes: Option<u16>,
        compact: bool,
    },
    /// Run retention over one shard (an ordered, logged op).
    Retain {
        shard: u32,
    },
    /// Export a shard and import it back (a state transfer onto itself: nothing may change,
    /// and the imported state must survive restarts and retention).
    SelfImport {
        shard: u32,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0u8..5, 0u16..600, 1u32..3, proptest::option::of(0u8..3), proptest::bool::weighted(0.1))
            .prop_map(|(key, len, span, ck, tomb)| Step::Put { key, len, span, ck, tomb }),
        1 => (0u8..5, 0u8..30).prop_map(|(key, before)| Step::Truncate { key, before }),
        1 => any::<bool>().prop_map(|compact| Step::RecreatePool { compact }),
        1 => Just(Step::CompactLog),
        1 => Just(Step::Reopen),
        1 => (proptest::option::of(0u16..4000), any::<bool>())
            .prop_map(|(retention_bytes, compact)| Step::Alter { retention_bytes, compact }),
        1 => (0u32..3).prop_map(|shard| Step::Retain { shard }),
        1 => (0u32..3).prop_map(|shard| Step::SelfImport { shard }),
    ]
}

fn pool(name: &str, compact: bool) -> PoolConfig {
    PoolConfig {
        name: name.into(),
        mode: Mode::Versioned,
        durable: true,
        compact,
        retention_bytes: Some(3000),
        ..PoolConfig::default()
    }
}

fn open(fs: &SimFs) -> Store {
    let lc = LogConfig {
        fs: Arc::new(fs.clone()),
        segment_bytes_max: 4096,
        index_interval_bytes: 256,
        ..LogConfig::new("/log")
    };
    let s = Store::open(
        StoreConfig {
            shards: 3,
            ..StoreConfig::default()
        },
        lc,
    )
    .expect("open");
    s.check_invariants().expect("invariants after open");
    s
}

fn digests(s: &Store) -> Vec<u64> {
    (0..s.shard_count())
        .map(|i| s.digest(i).expect("digest"))
        .collect()
}

fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut fs = SimFs::new();
    let mut s = open(&fs);
    let mut now = 1_000u64;
    let mut last_lsn = 0u64;
    let apply = |s: &Store, op: Op, now: u64, last: &mut u64| {
        if let Ok(a) = LocalSequencer.submit(s, op, now) {
            if let Some(l) = a.lsn {
                *last = (*last).max(l);
            }
        }
    };
    apply(&s, Op::CreatePool(pool("a", false)), now, &mut last_lsn);
    for st in steps {
        now += 7;
        match st {
            Step::Put {
                key,
                len,
                span,
                ck,
                tomb,
            } => {
                let op = Op::Put {
                    pool: "a".into(),
                    key: format!("k{key}"),
                    value: Bytes::from(vec![key; usize::from(len)]),
                    sensor_time_us: None,
                    span,
                    compaction_key: ck.map(|c| Bytes::from(vec![c])),
                    expect: Expect::Any,
                    tombstone: tomb,
                };
                apply(&s, op, now, &mut last_lsn);
            }
            Step::Truncate { key, before } => {
                let op = Op::Truncate {
                    pool: "a".into(),
                    key: format!("k{key}"),
                    before: u64::from(before),
                };
                apply(&s, op, now, &mut last_lsn);
            }
            Step::RecreatePool { compact } => {
                apply(&s, Op::DeletePool { pool: "a".into() }, now, &mut last_lsn);
                apply(
                    &s,
                    Op::CreatePool(pool("a", compact)),
                    now + 1,
                    &mut last_lsn,
                );
            }
            Step::Alter {
                retention_bytes,
                compact,
            } => {
                if let Some(mut c) = s.pool("a") {
                    c.retention_bytes = retention_bytes.map(u64::from);
                    c.compact = compact;
                    // 1 ms age retention: each Retain step lets 600 µs pass.
                    c.retention_ms = Some(1);
                    apply(&s, Op::AlterPool(c), now, &mut last_lsn);
                }
            }
            Step::Retain { shard } => {
                // Let time pass so age retention (1 ms once altered) has something to do.
                now += 600;
                apply(&s, Op::Retain { shard }, now, &mut last_lsn);
            }
            Step::CompactLog => {
                if last_lsn > 0 {
                    s.wait_durable(last_lsn)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                }
                s.compact_log()
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            Step::SelfImport { shard } => {
                let before = digests(&s);
                let img = s
                    .export_shard(shard)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                s.import_shard(shard, &img)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(digests(&s), before);
            }
            Step::Reopen => {
                if last_lsn > 0 {
                    s.wait_durable(last_lsn)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                }
                let before = digests(&s);
                let img = fs.crash_image(0);
                drop(s);
                fs = img;
                s = open(&fs);
                prop_assert_eq!(digests(&s), before);
            }
        }
        s.check_invariants().map_err(TestCaseError::fail)?;
    }
    if last_lsn > 0 {
        s.wait_durable(last_lsn)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
    let before = digests(&s);
    let img = fs.crash_image(0);
    drop(s);
    let r = open(&img);
    prop_assert_eq!(digests(&r), before);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn recovery_reproduces_the_store(steps in proptest::collection::vec(step(), 1..150)) {
        run(steps)?;
    }
}
