//! Unit tests of the store's semantics (each step followed by `check_invariants`), and the
//! planted-bug tests that show every invariant checker catching the bug it is there for.

use bytes::Bytes;

use crate::log::{LogConfig, SimFs, SyncPolicy};
use crate::*;

pub(crate) fn pool(name: &str, mode: Mode) -> PoolConfig {
    PoolConfig {
        name: name.into(),
        mode,
        durable: false,
        ..PoolConfig::default()
    }
}

pub(crate) fn put_op(pool: &str, key: &str, value: &[u8]) -> Op {
    Op::Put {
        pool: pool.into(),
        key: key.into(),
        value: Bytes::copy_from_slice(value),
        sensor_time_us: None,
        span: 1,
        compaction_key: None,
        expect: Expect::Any,
        tombstone: false,
    }
}

/// Submits through the local sequencer and checks invariants afterwards.
pub(crate) fn submit(s: &Store, op: Op, now: u64) -> Result<Applied, StorageError> {
    let r = LocalSequencer.submit(s, op, now);
    s.check_invariants().expect("invariants");
    r
}

fn put(s: &Store, p: &str, k: &str, v: &[u8], now: u64) -> Version {
    match submit(s, put_op(p, k, v), now).expect("put").outcome {
        Outcome::Put(v) => v,
        o => panic!("unexpected outcome {o:?}"),
    }
}

fn store() -> Store {
    Store::new(StoreConfig::default()).expect("store")
}

#[test]
fn put_get_versions_and_spans() {
    let s = store();
    submit(&s, Op::CreatePool(pool("t", Mode::Versioned)), 1).unwrap();
    let v0 = put(&s, "t", "k", b"a", 10);
    assert_eq!(v0.key_version, 0);
    let mut batch = put_op("t", "k", b"batch");
    if let Op::Put { span, .. } = &mut batch {
        *span = 5;
    }
    let Outcome::Put(v1) = submit(&s, batch, 11).unwrap().outcome else {
        panic!()
    };
    assert_eq!((v1.key_version, v1.span), (1, 5));
    let v2 = put(&s, "t", "k", b"c", 12);
    assert_eq!(v2.key_version, 6);
    assert!(v0.time < v1.time && v1.time < v2.time);
    assert_eq!(s.get("t", "k").unwrap().value, Bytes::from_static(b"c"));
    for v in 1..6 {
        assert_eq!(
            s.get_version("t", "k", v).unwrap().value,
            Bytes::from_static(b"batch")
        );
    }
    assert_eq!(s.get_version("t", "k", 7), Err(StorageError::NotFound));
    assert_eq!(s.bounds("t", "k").unwrap(), KeyBounds { start: 0, next: 7 });
    let r = s.read_from("t", "k", 3, 1, 10).unwrap();
    assert_eq!(r.len(), 1, "bytes_max 1 still returns one entry");
    assert_eq!(r[0].version.key_version, 1);
    let r = s.read_from("t", "k", 0, usize::MAX, 10).unwrap();
    assert_eq!(
        r.iter().map(|e| e.version.key_version).collect::<Vec<_>>(),
        vec![0, 1, 6]
    );
    assert_eq!(s.bounds("t", "nokey").unwrap(), KeyBounds::default());
    assert_eq!(
        s.get("nope", "k"),
        Err(StorageError::NoSuchPool("nope".into()))
    );
}

#[test]
fn cput_and_delete() {
    let s = store();
    submit(&s, Op::CreatePool(pool("t", Mode::Versioned)), 1).unwrap();
    let cput = |expect, v: &[u8]| {
        let mut op = put_op("t", "k", v);
        if let Op::Put { expect: e, .. } = &mut op {
            *e = expect;
        }
        op
    };
    submit(&s, cput(Expect::Absent, b"a"), 2).unwrap();
    assert_eq!(
        submit(&s, cput(Expect::Absent, b"b"), 3),
        Err(StorageError::Conflict { current: Some(0) })
    );
    assert_eq!(
        submit(&s, cput(Expect::Version(5), b"b"), 4),
        Err(StorageError::Conflict { current: Some(0) })
    );
    assert_eq!(s.get("t", "k").unwrap().value, Bytes::from_static(b"a"));
    submit(&s, cput(Expect::Version(0), b"b"), 5).unwrap();
    let mut del = put_op("t", "k", b"");
    if let Op::Put { tombstone, .. } = &mut del {
        *tombstone = true;
    }
    submit(&s, del, 6).unwrap();
    assert_eq!(s.get("t", "k"), Err(StorageError::NotFound));
    assert!(s.get_version("t", "k", 2).unwrap().tombstone);
    assert!(s.keys("t", "").unwrap().is_empty());
    // Absent holds again after a delete.
    submit(&s, cput(Expect::Absent, b"c"), 7).unwrap();
    assert_eq!(s.keys("t", "").unwrap(), vec!["k".to_string()]);
    // Failed ops still took their place in the order (dense shard_seq, checked above).
    let sh = s.shard_of("t", "k");
    assert_eq!(s.last_stamp(sh).shard_seq, 6);
}

#[test]
fn truncate_modes_and_limits() {
    let s = store();
    submit(&s, Op::CreatePool(pool("v", Mode::Versioned)), 1).unwrap();
    submit(&s, Op::CreatePool(pool("l", Mode::Latest)), 1).unwrap();
    submit(&s, Op::CreatePool(pool("s", Mode::Stateless)), 1).unwrap();
    for i in 0..5u64 {
        put(&s, "v", "k", &[i as u8], 10 + i);
        put(&s, "l", "k", &[i as u8], 10 + i);
        put(&s, "s", "k", &[i as u8], 10 + i);
    }
    let tr = |before| Op::Truncate {
        pool: "v".into(),
        key: "k".into(),
        before,
    };
    let a = submit(&s, tr(3), 20).unwrap();
    assert_eq!(
        a.outcome,
        Outcome::Truncated(KeyBounds { start: 3, next: 5 })
    );
    assert_eq!(s.get_version("v", "k", 2), Err(StorageError::NotFound));
    assert_eq!(
        s.get_version("v", "k", 3).unwrap().value,
        Bytes::from_static(&[3])
    );
    let a = submit(&s, tr(99), 21).unwrap();
    assert_eq!(
        a.outcome,
        Outcome::Truncated(KeyBounds { start: 5, next: 5 })
    );
    assert_eq!(s.get("v", "k"), Err(StorageError::NotFound));
    assert_eq!(
        put(&s, "v", "k", b"x", 22).key_version,
        5,
        "counters survive truncation"
    );
    // latest: newest only; version reads are the wrong mode.
    assert_eq!(s.get("l", "k").unwrap().value, Bytes::from_static(&[4]));
    assert!(matches!(
        s.get_version("l", "k", 4),
        Err(StorageError::WrongMode(_))
    ));
    assert_eq!(s.bounds("l", "k").unwrap(), KeyBounds { start: 4, next: 5 });
    // stateless: nothing kept.
    assert!(matches!(s.get("s", "k"), Err(StorageError::WrongMode(_))));
    assert_eq!(s.bounds("s", "k").unwrap(), KeyBounds { start: 5, next: 5 });
    // limits
    let big = vec![0u8; VALUE_BYTES_MAX_DEFAULT as usize + 1];
    assert!(matches!(
        s.validate_op(&put_op("v", "k", &big)),
        Err(StorageError::Invalid(_))
    ));
    let long_key = "x".repeat(KEY_BYTES_MAX + 1);
    assert!(matches!(
        s.validate_op(&put_op("v", &long_key, b"")),
        Err(StorageError::Invalid(_))
    ));
    assert!(matches!(
        s.validate_op(&Op::CreatePool(pool("bad/name", Mode::Latest))),
        Err(StorageError::Invalid(_))
    ));
    assert!(matches!(
        submit(&s, Op::CreatePool(pool("v", Mode::Latest)), 30),
        Err(StorageError::PoolExists(_))
    ));
    submit(&s, Op::CreatePool(pool("v", Mode::Versioned)), 31)
        .expect("identical create is a no-op");
}

#[test]
fn time_reads_wait_for_the_frontier_and_are_final() {
    let s = store();
    submit(&s, Op::CreatePool(pool("t", Mode::Versioned)), 1).unwrap();
    put(&s, "t", "k", b"a", 100);
    put(&s, "t", "k", b"b", 200);
    assert!(matches!(
        s.get_at("t", "k", 150, Clock::Platform),
        Err(StorageError::NotYetStable { .. })
    ));
    s.advance_frontier(160);
    assert!(matches!(
        s.get_at("t", "k", 160, Clock::Platform),
        Err(StorageError::NotYetStable { .. })
    ));
    let at150 = s.get_at("t", "k", 150, Clock::Platform).unwrap().unwrap();
    assert_eq!(at150.value, Bytes::from_static(b"a"));
    assert_eq!(s.get_at("t", "k", 99, Clock::Platform).unwrap(), None);
    // A put with an older clock reading is stamped after the frontier: the answer stays.
    let v = put(&s, "t", "k", b"late-clock", 120);
    assert!(v.time.physical_us > 159);
    assert_eq!(
        s.get_at("t", "k", 150, Clock::Platform).unwrap().unwrap(),
        at150
    );
    s.advance_frontier(1000);
    assert_eq!(
        s.get_at("t", "k", 999, Clock::Platform)
            .unwrap()
            .unwrap()
            .value,
        Bytes::from_static(b"late-clock")
    );
}

#[test]
fn sensor_time_lateness() {
    let s = store();
    let mut c = pool("t", Mode::Versioned);
    c.lateness_us = 50;
    submit(&s, Op::CreatePool(c), 1).unwrap();
    let sput = |v: &[u8], st: u64| {
        let mut op = put_op("t", "k", v);
        if let Op::Put { sensor_time_us, .. } = &mut op {
            *sensor_time_us = Some(st);
        }
        op
    };
    submit(&s, sput(b"s100", 100), 120).unwrap();
    submit(&s, sput(b"s90", 90), 130).unwrap(); // out of sensor order but within lateness
    s.advance_frontier(200);
    // sensor read at 95 needs frontier ≥ 145: ok at 199.
    let r = s.get_at("t", "k", 95, Clock::Sensor).unwrap().unwrap();
    assert_eq!(r.value, Bytes::from_static(b"s90"));
    assert!(matches!(
        s.get_at("t", "k", 160, Clock::Sensor),
        Err(StorageError::NotYetStable { .. })
    ));
    // A straggler with sensor time 92 arriving at 300 is late: kept, flagged, not read at 95.
    let Outcome::Put(v) = submit(&s, sput(b"late", 92), 300).unwrap().outcome else {
        panic!()
    };
    assert!(v.late);
    assert_eq!(s.late_updates(), 1);
    s.advance_frontier(400);
    assert_eq!(s.get_at("t", "k", 95, Clock::Sensor).unwrap().unwrap(), r);
    assert!(s.get_version("t", "k", v.key_version).unwrap().version.late);
    assert_eq!(
        s.version_at_or_after("t", "k", 95, Clock::Sensor).unwrap(),
        Some(0)
    );
    assert_eq!(
        s.version_at_or_after("t", "k", 125, Clock::Platform)
            .unwrap(),
        Some(1)
    );
}

#[test]
fn snapshot_is_a_cut_across_shards() {
    let s = store();
    submit(&s, Op::CreatePool(pool("t", Mode::Versioned)), 1).unwrap();
    let keys: Vec<(String, String)> = (0..20).map(|i| ("t".into(), format!("k{i}"))).collect();
    let shards: std::collections::BTreeSet<_> =
        keys.iter().map(|(p, k)| s.shard_of(p, k)).collect();
    assert!(shards.len() > 1);
    for (i, (_, k)) in keys.iter().enumerate() {
        put(&s, "t", k, b"old", 100 + i as u64);
    }
    for (i, (_, k)) in keys.iter().enumerate() {
        put(&s, "t", k, b"new", 200 + i as u64);
    }
    s.advance_frontier(1000);
    let cut = s.snapshot(&keys, 210, Clock::Platform).unwrap();
    for (i, e) in cut.iter().enumerate() {
        let want: &[u8] = if 200 + i as u64 <= 210 {
            b"new"
        } else {
            b"old"
        };
        assert_eq!(
            e.as_ref().unwrap().value,
            Bytes::copy_from_slice(want),
            "key {i}"
        );
    }
    assert!(matches!(
        s.snapshot(&keys, 5000, Clock::Platform),
        Err(StorageError::NotYetStable { .. })
    ));
}

fn drain(w: &mut Watch, s: &Store) -> Vec<WatchEvent> {
    let mut out = Vec::new();
    loop {
        match w.poll(s) {
            WatchPoll::Events(e) => out.extend(e),
            WatchPoll::Idle => return out,
            WatchPoll::Ended => return out,
        }
    }
}

fn versions(ev: &[WatchEvent]) -> Vec<u64> {
    ev.iter()
        .map(|e| match e {
            WatchEvent::Update(e) => e.version.key_version,
            WatchEvent::Lagged(_) => u64::MAX,
        })
        .collect()
}

#[test]
fn watch_replays_then_follows_without_gap_or_duplicate() {
    let cfg = StoreConfig {
        watch_poll_events_max: 3,
        watch_ring_events_max: 4,
        ..StoreConfig::default()
    };
    let s = Store::new(cfg).unwrap();
    submit(&s, Op::CreatePool(pool("t", Mode::Versioned)), 1).unwrap();
    for i in 0..10 {
        put(&s, "t", "k", &[i], 10 + u64::from(i));
    }
    let mut w = s
        .watch("t", Selector::Key("k".into()), WatchFrom::Version(4))
        .unwrap();
    let mut now = s
        .watch("t", Selector::Key("k".into()), WatchFrom::Now)
        .unwrap();
    let first = match w.poll(&s) {
        WatchPoll::Events(e) => e,
        p => panic!("{p:?}"),
    };
    assert_eq!(versions(&first), vec![4, 5, 6]);
    for i in 10..20 {
        put(&s, "t", "k", &[i], 10 + u64::from(i)); // the ring (4 events) overflows meanwhile
    }
    let rest = drain(&mut w, &s);
    assert_eq!(
        versions(&rest),
        (7..20).collect::<Vec<_>>(),
        "catches up from the store"
    );
    assert_eq!(versions(&drain(&mut now, &s)), (10..20).collect::<Vec<_>>());
    put(&s, "t", "k", b"live", 100);
    assert_eq!(versions(&drain(&mut w, &s)), vec![20]);
    // by time, and a prefix over all shards
    let mut wt = s
        .watch(
            "t",
            Selector::Prefix("".into()),
            WatchFrom::Time(25, Clock::Platform),
        )
        .unwrap();
    assert_eq!(versions(&drain(&mut wt, &s)), (15..21).collect::<Vec<_>>());
    submit(&s, Op::DeletePool { pool: "t".into() }, 200).unwrap();
    assert_eq!(w.poll(&s), WatchPoll::Ended);
}

#[test]
fn stateless_watchers_lag_and_latest_watchers_see_the_newest_first() {
    let cfg = StoreConfig {
        watch_ring_events_max: 4,
        ..StoreConfig::default()
    };
    let s = Store::new(cfg).unwrap();
    submit(&s, Op::CreatePool(pool("s", Mode::Stateless)), 1).unwrap();
    submit(&s, Op::CreatePool(pool("l", Mode::Latest)), 1).unwrap();
    let mut w = s
        .watch("s", Selector::Key("k".into()), WatchFrom::Version(0))
        .unwrap();
    put(&s, "s", "k", b"1", 10);
    put(&s, "s", "k", b"2", 11);
    assert_eq!(versions(&drain(&mut w, &s)), vec![0, 1]);
    for i in 0..10u8 {
        put(&s, "s", "k", &[i], 20 + u64::from(i));
    }
    let ev = drain(&mut w, &s);
    assert!(matches!(ev[0], WatchEvent::Lagged(n) if n > 0), "{ev:?}");
    assert_eq!(versions(&ev[1..]), vec![8, 9, 10, 11]);
    put(&s, "l", "k", b"a", 40);
    put(&s, "l", "k", b"b", 41);
    let mut wl = s
        .watch("l", Selector::Key("k".into()), WatchFrom::Now)
        .unwrap();
    let ev = drain(&mut wl, &s);
    assert_eq!(versions(&ev), vec![1]);
}

#[test]
fn compaction_keeps_the_newest_per_compaction_key() {
    let s = store();
    let mut c = pool("c", Mode::Versioned);
    c.compact = true;
    submit(&s, Op::CreatePool(c), 1).unwrap();
    for (i, ck) in ["a", "b", "a", "c", "b", "a"].iter().enumerate() {
        let mut op = put_op("c", "p0", &[i as u8]);
        if let Op::Put { compaction_key, .. } = &mut op {
            *compaction_key = Some(Bytes::copy_from_slice(ck.as_bytes()));
        }
        submit(&s, op, 10 + i as u64).unwrap();
    }
    let kept: Vec<u64> = s
        .read_from("c", "p0", 0, usize::MAX, 100)
        .unwrap()
        .iter()
        .map(|e| e.version.key_version)
        .collect();
    assert_eq!(kept, vec![3, 4, 5]);
    assert_eq!(s.get_version("c", "p0", 1), Err(StorageError::NotFound));
    // Compaction leaves gaps but never moves the start (Kafka's log start offset): a read
    // from 0 returns the first surviving version.
    assert_eq!(
        s.bounds("c", "p0").unwrap(),
        KeyBounds { start: 0, next: 6 }
    );
    // Truncation still moves it, also into a gap.
    submit(
        &s,
        Op::Truncate {
            pool: "c".into(),
            key: "p0".into(),
            before: 1,
        },
        20,
    )
    .unwrap();
    assert_eq!(
        s.bounds("c", "p0").unwrap(),
        KeyBounds { start: 1, next: 6 }
    );
    let first = s.read_from("c", "p0", 1, usize::MAX, 1).unwrap();
    assert_eq!(first[0].version.key_version, 3);
}

/// Retention moves the start past what it removes; compaction gaps after that do not move it
/// further.
#[test]
fn retention_moves_start_compaction_does_not() {
    let s = store();
    let mut c = pool("c", Mode::Versioned);
    c.compact = true;
    c.retention_bytes = Some(2);
    submit(&s, Op::CreatePool(c), 1).unwrap();
    // 0:a 1:b 2:c — three bytes, so retention drops 0 (start 1); 3:b kills 1, a compaction
    // gap at the front that leaves the start at 1.
    for (i, ck) in ["a", "b", "c", "b"].iter().enumerate() {
        let mut op = put_op("c", "p0", &[i as u8]);
        if let Op::Put { compaction_key, .. } = &mut op {
            *compaction_key = Some(Bytes::copy_from_slice(ck.as_bytes()));
        }
        submit(&s, op, 10 + i as u64).unwrap();
    }
    let kept = |s: &Store| -> Vec<u64> {
        s.read_from("c", "p0", 0, usize::MAX, 100)
            .unwrap()
            .iter()
            .map(|e| e.version.key_version)
            .collect()
    };
    assert_eq!(kept(&s), vec![2, 3]);
    assert_eq!(
        s.bounds("c", "p0").unwrap(),
        KeyBounds { start: 1, next: 4 }
    );
    let mut op = put_op("c", "p0", b"d");
    if let Op::Put { compaction_key, .. } = &mut op {
        *compaction_key = Some(Bytes::from_static(b"d"));
    }
    submit(&s, op, 20).unwrap();
    // Retention dropped 2: the start moves past it.
    assert_eq!(kept(&s), vec![3, 4]);
    assert_eq!(
        s.bounds("c", "p0").unwrap(),
        KeyBounds { start: 3, next: 5 }
    );
}

#[test]
fn retention_by_bytes_and_age_keeps_the_newest() {
    let s = store();
    let mut c = pool("r", Mode::Versioned);
    c.retention_bytes = Some(10);
    c.retention_ms = Some(1);
    submit(&s, Op::CreatePool(c), 1).unwrap();
    for i in 0..10u64 {
        put(&s, "r", "k", &[0u8; 4], 10 + i);
    }
    // bytes: at most 10 → 2 entries of 4 bytes
    assert_eq!(
        s.bounds("r", "k").unwrap(),
        KeyBounds { start: 8, next: 10 }
    );
    put(&s, "r", "k", &[0u8; 4], 10_000);
    assert_eq!(
        s.bounds("r", "k").unwrap(),
        KeyBounds {
            start: 10,
            next: 11
        }
    );
}

#[test]
fn replicas_applying_the_same_stamps_agree() {
    let a = store();
    let b = store();
    let ops = vec![
        Op::CreatePool(pool("t", Mode::Versioned)),
        put_op("t", "x", b"1"),
        put_op("t", "y", b"2"),
        Op::Truncate {
            pool: "t".into(),
            key: "x".into(),
            before: 1,
        },
        put_op("t", "x", b"3"),
    ];
    for (i, op) in ops.into_iter().enumerate() {
        let sh = a.shard_for(&op);
        let st = a.last_stamp(sh);
        let stamp = Stamp {
            shard_seq: st.shard_seq + 1,
            time: Hlc {
                physical_us: 100 + i as u64,
                logical: 0,
            },
        };
        let ra = a.apply(sh, stamp, op.clone());
        let rb = b.apply(sh, stamp, op);
        assert_eq!(ra, rb);
        a.check_invariants().unwrap();
    }
    for sh in 0..a.shard_count() {
        assert_eq!(a.digest(sh).unwrap(), b.digest(sh).unwrap());
    }
    let old = Stamp {
        shard_seq: 1,
        time: Hlc {
            physical_us: 1,
            logical: 0,
        },
    };
    assert!(matches!(
        a.apply(0, old, put_op("t", "x", b"")),
        Err(StorageError::StampOutOfOrder { .. })
    ));
    // An external orderer's frontier: stamps at or below it are refused.
    let sh = a.shard_of("t", "x");
    a.set_frontier(sh, 10_000).unwrap();
    assert_eq!(a.frontier_us(sh), 10_000);
    let last = a.last_stamp(sh);
    let at = |physical_us, logical| Stamp {
        shard_seq: last.shard_seq + 1,
        time: Hlc {
            physical_us,
            logical,
        },
    };
    assert!(matches!(
        a.apply(sh, at(10_000, 9), put_op("t", "x", b"")),
        Err(StorageError::StampBelowFrontier { .. })
    ));
    a.apply(sh, at(10_001, 0), put_op("t", "x", b"ok")).unwrap();
    a.check_invariants().unwrap();
}

#[test]
fn durable_pool_survives_reopen() {
    let fs = SimFs::new();
    let lc = || LogConfig {
        fs: std::sync::Arc::new(fs.clone()),
        ..LogConfig::new("/log")
    };
    let digests;
    {
        let s = Store::open(StoreConfig::default(), lc()).unwrap();
        let mut c = pool("d", Mode::Versioned);
        c.durable = true;
        submit(&s, Op::CreatePool(c), 1).unwrap();
        submit(&s, Op::CreatePool(pool("vol", Mode::Versioned)), 1).unwrap();
        let mut last = 0;
        for i in 0..50u64 {
            let a = submit(
                &s,
                put_op("d", &format!("k{}", i % 7), &i.to_le_bytes()),
                10 + i,
            )
            .unwrap();
            last = a.lsn.unwrap();
            put(&s, "vol", "k", b"v", 10 + i);
        }
        s.wait_durable(last).unwrap();
        submit(
            &s,
            Op::Truncate {
                pool: "d".into(),
                key: "k1".into(),
                before: 3,
            },
            100,
        )
        .unwrap();
        let a = submit(&s, Op::DeletePool { pool: "vol".into() }, 101).unwrap();
        s.wait_durable(a.lsn.unwrap()).unwrap();
        digests = (0..s.shard_count())
            .map(|i| s.digest(i).unwrap())
            .collect::<Vec<_>>();
    }
    fs.crash(0);
    let s = Store::open(StoreConfig::default(), lc()).unwrap();
    s.check_invariants().unwrap();
    let after: Vec<u64> = (0..s.shard_count()).map(|i| s.digest(i).unwrap()).collect();
    assert_eq!(after, digests);
    assert_eq!(s.pools().len(), 1);
    assert_eq!(s.bounds("d", "k1").unwrap().start, 3);
}

#[test]
fn log_sync_policies() {
    for policy in [
        SyncPolicy::GroupCommit,
        SyncPolicy::IntervalMs(2),
        SyncPolicy::Never,
    ] {
        let fs = SimFs::new();
        let lc = LogConfig {
            fs: std::sync::Arc::new(fs.clone()),
            sync: policy,
            ..LogConfig::new("/log")
        };
        let s = Store::open(StoreConfig::default(), lc).unwrap();
        let mut c = pool("d", Mode::Versioned);
        c.durable = true;
        submit(&s, Op::CreatePool(c), 1).unwrap();
        let a = submit(&s, put_op("d", "k", b"x"), 2).unwrap();
        s.wait_durable(a.lsn.unwrap()).unwrap();
        if policy != SyncPolicy::Never {
            assert!(fs.syncs() >= 1, "{policy:?}");
        }
    }
}

#[test]
fn shard_images_transfer_state_and_the_tail_keeps_replicas_equal() {
    let a = store();
    let b = store();
    let mut stamp_of = std::collections::BTreeMap::<ShardId, Stamp>::new();
    let mut apply_both = |op: Op, t: u64, b_too: bool| {
        let sh = a.shard_for(&op);
        let last = stamp_of.entry(sh).or_default();
        let st = Stamp {
            shard_seq: last.shard_seq + 1,
            time: Hlc {
                physical_us: t,
                logical: 0,
            },
        };
        *last = st;
        let ra = a.apply(sh, st, op.clone());
        if b_too {
            assert_eq!(ra, b.apply(sh, st, op));
        }
    };
    let mut compact = pool("c", Mode::Versioned);
    compact.compact = true;
    for (i, c) in [
        pool("v", Mode::Versioned),
        pool("l", Mode::Latest),
        pool("s", Mode::Stateless),
        compact,
    ]
    .into_iter()
    .enumerate()
    {
        apply_both(Op::CreatePool(c), 10 + i as u64, true);
    }
    let mut t = 100;
    for round in 0..3 {
        for k in 0..12u8 {
            for p in ["v", "l", "s", "c"] {
                t += 1;
                let mut op = put_op(p, &format!("key{k}"), &[k, round]);
                if let Op::Put {
                    compaction_key,
                    span,
                    ..
                } = &mut op
                {
                    *compaction_key = Some(Bytes::copy_from_slice(&[k % 3]));
                    *span = 1 + u32::from(k % 2);
                }
                apply_both(op, t, false);
            }
        }
        t += 1;
        apply_both(
            Op::Truncate {
                pool: "v".into(),
                key: "key3".into(),
                before: 2,
            },
            t,
            false,
        );
    }
    a.check_invariants().unwrap();
    for sh in 0..a.shard_count() {
        let img = a.export_shard(sh).unwrap();
        // A damaged image is refused and changes nothing.
        let mut bad = img.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 1;
        let before = b.digest(sh).unwrap();
        assert!(b.import_shard(sh, &bad).is_err());
        assert_eq!(b.digest(sh).unwrap(), before);
        b.import_shard(sh, &img).unwrap();
        assert_eq!(b.digest(sh).unwrap(), a.digest(sh).unwrap(), "shard {sh}");
        assert_eq!(b.last_stamp(sh), a.last_stamp(sh));
    }
    b.check_invariants().unwrap();
    // The tail: the same stamped ops on both keep them equal.
    for k in 0..12u8 {
        t += 1;
        apply_both(put_op("v", &format!("key{k}"), b"tail"), t, true);
        t += 1;
        apply_both(put_op("l", &format!("key{k}"), b"tail"), t, true);
    }
    for sh in 0..a.shard_count() {
        assert_eq!(
            b.digest(sh).unwrap(),
            a.digest(sh).unwrap(),
            "shard {sh} after the tail"
        );
    }
    b.check_invariants().unwrap();
    assert_eq!(
        b.bounds("v", "key3").unwrap(),
        a.bounds("v", "key3").unwrap()
    );
}

// ---------------------------------------------------------------- planted bugs
//
// Each test runs the same steps twice: without the bug the checker passes, with the bug
// switched on it fails and names the rule. This shows every checker can fail.

use std::sync::atomic::{AtomicBool, Ordering};

fn steps(s: &Store) {
    let _ = LocalSequencer.submit(s, Op::CreatePool(pool("t", Mode::Versioned)), 1);
    for i in 0..6u64 {
        let mut op = put_op("t", "k", &[i as u8; 8]);
        if let Op::Put { sensor_time_us, .. } = &mut op {
            *sensor_time_us = Some(1000 + i);
        }
        // Same clock reading every time: the logical counter must tick.
        LocalSequencer.submit(s, op, 1000).expect("put");
    }
}

fn caught(bug: impl Fn(&Store) -> &AtomicBool, cfg: StoreConfig, what: &str) {
    let ok = Store::new(cfg.clone()).unwrap();
    steps(&ok);
    ok.check_invariants().expect("no bug: checker passes");
    let bad = Store::new(cfg).unwrap();
    bug(&bad).store(true, Ordering::Relaxed);
    steps(&bad);
    let err = bad
        .check_invariants()
        .expect_err("planted bug must be caught");
    assert!(err.contains(what), "{err}");
}

#[test]
fn checker_catches_hlc_not_increasing() {
    caught(
        |s| &s.bugs.hlc_reuse,
        StoreConfig::default(),
        "HLC not strictly increasing",
    );
}

#[test]
fn checker_catches_seq_gap_in_local_order() {
    caught(|s| &s.bugs.seq_skip, StoreConfig::default(), "not dense");
}

#[test]
fn checker_catches_counter_gap() {
    caught(
        |s| &s.bugs.counter_skip,
        StoreConfig::default(),
        "gap before",
    );
}

#[test]
fn checker_catches_stale_sensor_index() {
    caught(
        |s| &s.bugs.sensor_index_skip,
        StoreConfig::default(),
        "sensor index",
    );
}

#[test]
fn checker_catches_ring_over_limit() {
    let cfg = StoreConfig {
        watch_ring_events_max: 2,
        ..StoreConfig::default()
    };
    caught(|s| &s.bugs.ring_no_evict, cfg, "ring over its limits");
}

#[test]
fn checker_catches_frontier_past_unsynced_write() {
    let run = |bug: bool| {
        let fs = SimFs::new();
        let lc = LogConfig {
            fs: std::sync::Arc::new(fs),
            sync: SyncPolicy::IntervalMs(3_600_000),
            ..LogConfig::new("/log")
        };
        let s = Store::open(StoreConfig::default(), lc).unwrap();
        s.bugs
            .frontier_ignores_unsynced
            .store(bug, Ordering::Relaxed);
        let mut c = pool("d", Mode::Versioned);
        c.durable = true;
        LocalSequencer.submit(&s, Op::CreatePool(c), 1).unwrap();
        LocalSequencer
            .submit(&s, put_op("d", "k", b"x"), 10)
            .unwrap();
        s.advance_frontier(1_000);
        s.check_invariants()
    };
    run(false).expect("no bug: checker passes");
    let err = run(true).expect_err("planted bug must be caught");
    assert!(err.contains("passed unsynced op"), "{err}");
}

#[test]
fn checker_catches_bad_log_index() {
    let run = |bug: bool| {
        let fs = SimFs::new();
        let lc = LogConfig {
            fs: std::sync::Arc::new(fs),
            ..LogConfig::new("/log")
        };
        let s = Store::open(StoreConfig::default(), lc).unwrap();
        s.log().unwrap().plant_index_bug(bug);
        let mut c = pool("d", Mode::Versioned);
        c.durable = true;
        LocalSequencer.submit(&s, Op::CreatePool(c), 1).unwrap();
        for i in 0..5 {
            LocalSequencer
                .submit(&s, put_op("d", "k", &[0u8; 5000]), 10 + i)
                .unwrap();
        }
        s.check_invariants()
    };
    run(false).expect("no bug: checker passes");
    let err = run(true).expect_err("planted bug must be caught");
    assert!(err.contains("index of"), "{err}");
}

/// AlterPool changes retention, the value limit and compaction of a live pool (mode and
/// durability stay fixed), and Retain applies age retention without any write arriving.
#[test]
fn alter_pool_and_retain_without_writes() {
    let s = store();
    submit(&s, Op::CreatePool(pool("r", Mode::Versioned)), 1).unwrap();
    for i in 0..5u64 {
        put(&s, "r", "k", &[0u8; 4], 10 + i);
    }
    let shard = s.shard_of("r", "k");
    assert!(!s.retention_due(shard, 1_000_000).unwrap());
    let mut c = s.pool("r").unwrap();
    c.retention_ms = Some(1); // 1000 µs
    c.value_bytes_max = 8;
    let a = submit(&s, Op::AlterPool(c.clone()), 20).unwrap();
    assert_eq!(a.outcome, Outcome::PoolAltered);
    assert_eq!(s.pool("r").unwrap(), c);
    // The new value limit holds at once.
    assert!(matches!(
        submit(&s, put_op("r", "k", &[0u8; 9]), 21),
        Err(StorageError::Invalid(_))
    ));
    // Nothing written, yet retention runs: everything but the newest is older than 1 ms.
    assert!(s.retention_due(shard, 5_000).unwrap());
    let a = submit(&s, Op::Retain { shard }, 5_000).unwrap();
    assert_eq!(a.outcome, Outcome::Retained(4));
    assert_eq!(s.bounds("r", "k").unwrap(), KeyBounds { start: 4, next: 5 });
    assert!(!s.retention_due(shard, 5_000).unwrap());
    // Mode and durability are fixed.
    let mut bad = s.pool("r").unwrap();
    bad.mode = Mode::Latest;
    assert!(matches!(
        submit(&s, Op::AlterPool(bad), 5_001),
        Err(StorageError::Invalid(_))
    ));
    // Turning compaction on applies to later writes.
    let mut c = s.pool("r").unwrap();
    c.compact = true;
    submit(&s, Op::AlterPool(c), 5_002).unwrap();
    for (i, ck) in ["a", "a"].iter().enumerate() {
        let mut op = put_op("r", "k", &[i as u8]);
        if let Op::Put { compaction_key, .. } = &mut op {
            *compaction_key = Some(Bytes::copy_from_slice(ck.as_bytes()));
        }
        submit(&s, op, 5_010 + i as u64).unwrap();
    }
    let kept: Vec<u64> = s
        .read_from("r", "k", 0, usize::MAX, 100)
        .unwrap()
        .iter()
        .map(|e| e.version.key_version)
        .collect();
    // 4 went by age retention at the write (start 5), 5 by compaction (a gap; start stays).
    assert_eq!(kept, vec![6]);
    assert_eq!(s.bounds("r", "k").unwrap(), KeyBounds { start: 5, next: 7 });
}
