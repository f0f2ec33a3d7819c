//! Durable reads: in a durable pool, latest reads, version reads, `bounds` (the Kafka high
//! watermark), time lookups and watches must not show a version before its log record is
//! fsynced. Otherwise a crash in between takes back a value a reader saw and the next write
//! reuses its key_version (Kafka offset) for a different value. The tests hold the fsync back
//! (`SyncPolicy::IntervalMs` of an hour: the committer syncs only when someone waits), show the
//! write invisible, let the log sync, show it visible; and, with the
//! planted bug `reads_ignore_unsynced` on, show the same checks failing (a reader sees the
//! value, the crash loses it, and the offset comes back with another value).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::log::{LogConfig, SimFs, SyncPolicy};
use crate::tests::{pool, put_op};
use crate::*;

/// A store on `fs` whose group commit waits until someone waits for durability.
fn held(fs: &SimFs) -> Store {
    let lc = LogConfig {
        fs: Arc::new(fs.clone()),
        sync: SyncPolicy::IntervalMs(3_600_000),
        ..LogConfig::new("/log")
    };
    Store::open(StoreConfig::default(), lc).expect("open")
}

/// Makes the log sync up to `lsn` and waits for it. `IntervalMs` syncs when its interval
/// ends; a waiter's wake-up only shortens that if the committer is already waiting, so poke
/// it until the sync happened (bounded).
fn release(s: &Store, lsn: u64) {
    let log = s.log().expect("log");
    for _ in 0..2000 {
        if log.synced_lsn() >= lsn {
            return;
        }
        log.on_durable(lsn, Box::new(|_| {}));
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!("the log did not sync {lsn}");
}

fn durable_pool(s: &Store, name: &str, mode: Mode) {
    let mut c = pool(name, mode);
    c.durable = true;
    let a = LocalSequencer
        .submit(s, Op::CreatePool(c), 1)
        .expect("create");
    if let Some(l) = a.lsn {
        release(s, l);
    }
}

fn put(s: &Store, p: &str, k: &str, v: &[u8], now: u64) -> Applied {
    let a = LocalSequencer.submit(s, put_op(p, k, v), now).expect("put");
    s.check_invariants().expect("invariants");
    a
}

fn drain(w: &mut Watch, s: &Store) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    while let WatchPoll::Events(ev) = w.poll(s) {
        for e in ev {
            if let WatchEvent::Update(e) = e {
                out.push((e.version.key_version, e.value.to_vec()));
            }
        }
    }
    out
}

/// What a reader sees of key `k` in pool `d`: (bounds, get, read_from, version 1, time lookup).
type View = (KeyBounds, Option<Vec<u8>>, Vec<u64>, bool, Option<u64>);
fn view(s: &Store) -> View {
    (
        s.bounds("d", "k").unwrap(),
        s.get("d", "k").ok().map(|e| e.value.to_vec()),
        s.read_from("d", "k", 0, usize::MAX, 100)
            .unwrap()
            .iter()
            .map(|e| e.version.key_version)
            .collect(),
        s.get_version("d", "k", 1).is_ok(),
        s.version_at_or_after("d", "k", 0, Clock::Platform).unwrap(),
    )
}

fn reads_wait_for_fsync(bug: bool) -> Result<(), String> {
    let fs = SimFs::new();
    let s = held(&fs);
    s.bugs.reads_ignore_unsynced.store(bug, Ordering::Relaxed);
    durable_pool(&s, "d", Mode::Versioned);
    let a0 = put(&s, "d", "k", b"v0", 10);
    release(&s, a0.lsn.unwrap());
    let mut w_key = s
        .watch("d", Selector::Key("k".into()), WatchFrom::Version(0))
        .unwrap();
    let mut w_live = s
        .watch("d", Selector::Prefix("".into()), WatchFrom::Now)
        .unwrap();
    if drain(&mut w_key, &s) != vec![(0, b"v0".to_vec())] {
        return Err("replay of the synced version".into());
    }
    let durable_view = view(&s);
    if durable_view.0 != (KeyBounds { start: 0, next: 1 }) {
        return Err(format!("bounds after sync: {:?}", durable_view.0));
    }
    // Two writes applied, not synced.
    put(&s, "d", "k", b"v1", 20);
    let a2 = put(&s, "d", "k", b"v2", 30);
    let lsn = a2.lsn.unwrap();
    if s.log().unwrap().synced_lsn() >= lsn {
        return Err("test setup: the log synced on its own".into());
    }
    // A watch created now (replaying history) must not see them either.
    let mut w_new = s
        .watch("d", Selector::Key("k".into()), WatchFrom::Version(0))
        .unwrap();
    let mut checks = Vec::new();
    if view(&s) != durable_view {
        checks.push(format!("reads saw unsynced writes: {:?}", view(&s)));
    }
    let (k, l, n) = (
        drain(&mut w_key, &s),
        drain(&mut w_live, &s),
        drain(&mut w_new, &s),
    );
    if !k.is_empty() || !l.is_empty() || n != vec![(0, b"v0".to_vec())] {
        checks.push(format!("watches saw unsynced writes: {k:?} {l:?} {n:?}"));
    }
    // Cput still orders after the applied newest (version 2), not the durable one.
    let mut op = put_op("d", "k", b"c");
    if let Op::Put { expect, .. } = &mut op {
        *expect = Expect::Version(key_version(&a2));
    }
    let c = LocalSequencer
        .submit(&s, op, 40)
        .map_err(|e| e.to_string())?;
    // Release the sync: now everything shows, in order, once.
    release(&s, c.lsn.unwrap());
    let want = vec![(1, b"v1".to_vec()), (2, b"v2".to_vec()), (3, b"c".to_vec())];
    let after = view(&s);
    if after.0 != (KeyBounds { start: 0, next: 4 })
        || after.1.as_deref() != Some(&b"c"[..])
        || after.2 != vec![0, 1, 2, 3]
        || !after.3
        || after.4 != Some(0)
    {
        return Err(format!("after sync: {after:?}"));
    }
    if !checks.is_empty() {
        return Err(checks.join("; "));
    }
    let (k, l, n) = (
        drain(&mut w_key, &s),
        drain(&mut w_live, &s),
        drain(&mut w_new, &s),
    );
    if k != want || l != want || n != want {
        return Err(format!("watches after sync: {k:?} {l:?} {n:?}"));
    }
    Ok(())
}

fn key_version(a: &Applied) -> u64 {
    match a.outcome {
        Outcome::Put(v) => v.key_version,
        _ => u64::MAX,
    }
}

#[test]
fn reads_and_watches_show_a_write_only_after_its_fsync() {
    reads_wait_for_fsync(false).expect("durable reads");
}

#[test]
fn planted_bug_reads_ignore_unsynced_is_caught() {
    let err = reads_wait_for_fsync(true).expect_err("planted bug must be caught");
    assert!(err.contains("reads saw unsynced writes"), "{err}");
    assert!(err.contains("watches saw unsynced writes"), "{err}");
}

/// The failure the rule prevents, end to end: a reader looks at offset 1 while its fsync is
/// held back, the process crashes, and a new write takes offset 1. With durable reads the
/// reader saw nothing at offset 1 (and a high watermark of 1); with the planted bug it saw
/// "x", and after the crash offset 1 is "y".
fn seen_then_crash(bug: bool) -> (Option<Vec<u8>>, u64, Vec<u8>) {
    let fs = SimFs::new();
    let seen;
    let hwm;
    let img;
    {
        let s = held(&fs);
        s.bugs.reads_ignore_unsynced.store(bug, Ordering::Relaxed);
        durable_pool(&s, "d", Mode::Versioned);
        let a = put(&s, "d", "k", b"w", 10);
        release(&s, a.lsn.unwrap());
        put(&s, "d", "k", b"x", 20);
        seen = s.get_version("d", "k", 1).ok().map(|e| e.value.to_vec());
        hwm = s.bounds("d", "k").unwrap().next;
        // The crash: the disk as it is now, unsynced bytes lost (dropping the store would
        // sync them on shutdown).
        img = fs.crash_image(0);
    }
    let s = held(&img);
    put(&s, "d", "k", b"y", 30);
    let after = s.read_from("d", "k", 1, usize::MAX, 10).unwrap();
    // The reopened store's reads are durable ones; wait for the sync to look.
    let last = s.log().unwrap().written_lsn();
    release(&s, last);
    let after = if after.is_empty() {
        s.get_version("d", "k", 1).unwrap().value.to_vec()
    } else {
        after[0].value.to_vec()
    };
    (seen, hwm, after)
}

#[test]
fn a_crash_cannot_take_back_what_a_reader_saw() {
    let (seen, hwm, after) = seen_then_crash(false);
    assert_eq!(seen, None, "offset 1 must not be readable before its fsync");
    assert_eq!(
        hwm, 1,
        "the high watermark must not count the unsynced write"
    );
    assert_eq!(after, b"y".to_vec());
    let (seen, hwm, after) = seen_then_crash(true);
    assert_eq!(
        (seen.as_deref(), hwm, &after[..]),
        (Some(&b"x"[..]), 2, &b"y"[..]),
        "with the planted bug the reader saw offset 1 = x, and after the crash it is y"
    );
}

/// Volatile pools (and a durable pool on a store without a log) show writes at once.
#[test]
fn volatile_pools_are_unaffected() {
    let fs = SimFs::new();
    let s = held(&fs);
    LocalSequencer
        .submit(&s, Op::CreatePool(pool("v", Mode::Versioned)), 1)
        .unwrap();
    durable_pool(&s, "d", Mode::Versioned);
    put(&s, "d", "k", b"unsynced", 5);
    put(&s, "v", "k", b"x", 10);
    assert_eq!(&s.get("v", "k").unwrap().value[..], b"x");
    assert_eq!(s.bounds("v", "k").unwrap().next, 1);
    let mut w = s
        .watch("v", Selector::Key("k".into()), WatchFrom::Version(0))
        .unwrap();
    assert_eq!(drain(&mut w, &s), vec![(0, b"x".to_vec())]);
    let m = Store::new(StoreConfig::default()).unwrap();
    durable_pool(&m, "d", Mode::Versioned);
    put(&m, "d", "k", b"x", 10);
    assert_eq!(&m.get("d", "k").unwrap().value[..], b"x");
}

/// A prefix watch over many keys and shards under a held fsync: each release delivers exactly
/// the newly durable updates, in each key's order, none twice, none missing.
#[test]
fn watch_across_releases_has_no_gap_and_no_duplicate() {
    let fs = SimFs::new();
    let s = held(&fs);
    durable_pool(&s, "d", Mode::Versioned);
    let mut w = s
        .watch("d", Selector::Prefix("".into()), WatchFrom::Now)
        .unwrap();
    let mut got = Vec::new();
    let mut now = 10;
    for round in 0..5u8 {
        let mut last = 0;
        for i in 0..20u8 {
            now += 1;
            let key = format!("k{}", i % 7);
            last = put(&s, "d", &key, &[round, i], now).lsn.unwrap();
        }
        // Half of the rounds are synced before the poll.
        if round % 2 == 0 {
            assert!(drain(&mut w, &s).is_empty(), "round {round} before sync");
        }
        release(&s, last);
        got.extend(drain(&mut w, &s));
    }
    let mut want: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut per_key = [0u64; 7];
    for round in 0..5u8 {
        for i in 0..20u8 {
            let k = usize::from(i % 7);
            want.push((per_key[k], vec![round, i]));
            per_key[k] += 1;
        }
    }
    got.sort_by_key(|(_, v)| (v[0], v[1]));
    assert_eq!(got, want);
}

/// A `latest` pool keeps one value per key: once an overwrite is applied, the durable value it
/// replaced is gone from memory. A latest read in the sync window must still find a value (the
/// key durably has one), not answer `NotFound`; a key whose only write is unsynced has none.
#[test]
fn a_latest_key_keeps_a_value_while_its_overwrite_waits_for_the_fsync() {
    let fs = SimFs::new();
    let s = held(&fs);
    durable_pool(&s, "l", Mode::Latest);
    let a0 = put(&s, "l", "k", b"v0", 10);
    release(&s, a0.lsn.unwrap());
    assert_eq!(s.get("l", "k").expect("synced value").value.as_ref(), b"v0");
    let a1 = put(&s, "l", "k", b"v1", 20);
    let during = s.get("l", "k");
    assert!(
        during.is_ok(),
        "a key with a durable value read as {during:?} while its overwrite was unsynced"
    );
    // A brand-new key with only an unsynced write has no durable value yet.
    let b0 = put(&s, "l", "fresh", b"x", 30);
    assert!(matches!(s.get("l", "fresh"), Err(StorageError::NotFound)));
    release(&s, a1.lsn.unwrap().max(b0.lsn.unwrap()));
    assert_eq!(s.get("l", "k").expect("after sync").value.as_ref(), b"v1");
    assert_eq!(
        s.get("l", "fresh").expect("after sync").value.as_ref(),
        b"x"
    );
}
