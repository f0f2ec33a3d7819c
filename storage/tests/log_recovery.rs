//! Log recovery under faults: torn tails are cut, a flipped bit mid-segment is an error naming
//! file and offset, a crash between write and fsync (simulated by SimFs, which loses unsynced
//! bytes) loses nothing acknowledged and invents nothing, a full disk or failed fsync gives a
//! clean error without losing what was stored. These are the durability promises the broker
//! acknowledges puts on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use squall_storage::log::{LogConfig, SimFs, SyncPolicy};
use squall_storage::*;

fn durable_pool(name: &str) -> PoolConfig {
    PoolConfig {
        name: name.into(),
        mode: Mode::Versioned,
        durable: true,
        ..PoolConfig::default()
    }
}

fn put_op(key: &str, value: Vec<u8>) -> Op {
    Op::Put {
        pool: "d".into(),
        key: key.into(),
        value: Bytes::from(value),
        sensor_time_us: None,
        span: 1,
        compaction_key: None,
        expect: Expect::Any,
        tombstone: false,
    }
}

type Acked = Arc<Mutex<Vec<(String, u64, Vec<u8>)>>>;
type Attempted = Arc<Mutex<std::collections::BTreeSet<(String, Vec<u8>)>>>;

fn sim_config(fs: &SimFs, segment_bytes_max: u64) -> LogConfig {
    LogConfig {
        fs: Arc::new(fs.clone()),
        segment_bytes_max,
        ..LogConfig::new("/data/log")
    }
}

fn open(cfg: LogConfig) -> Result<Store, StorageError> {
    let s = Store::open(
        StoreConfig {
            shards: 4,
            ..StoreConfig::default()
        },
        cfg,
    )?;
    s.check_invariants().map_err(StorageError::Invalid)?;
    Ok(s)
}

/// Puts `n` values acknowledged durable; returns key → [(version, value)].
fn write_acked(s: &Store, n: u64, t0: u64) -> BTreeMap<String, Vec<(u64, Vec<u8>)>> {
    let mut acked: BTreeMap<String, Vec<(u64, Vec<u8>)>> = BTreeMap::new();
    for i in 0..n {
        let key = format!("k{}", i % 5);
        let value = format!("value-{i}").into_bytes();
        let a = LocalSequencer
            .submit(s, put_op(&key, value.clone()), t0 + i)
            .expect("put");
        s.wait_durable(a.lsn.expect("durable pool logs"))
            .expect("durable");
        let Outcome::Put(v) = a.outcome else {
            panic!("not a put")
        };
        acked.entry(key).or_default().push((v.key_version, value));
    }
    acked
}

fn assert_has(s: &Store, acked: &BTreeMap<String, Vec<(u64, Vec<u8>)>>) {
    for (k, vs) in acked {
        for (v, val) in vs {
            let e = s
                .get_version("d", k, *v)
                .unwrap_or_else(|e| panic!("{k}@{v}: {e}"));
            assert_eq!(e.value, Bytes::from(val.clone()), "{k}@{v}");
        }
    }
}

#[test]
fn torn_tail_is_cut_and_acknowledged_data_survives() {
    let mut cuts = 0;
    for keep in [1usize, 5, 11, 12, 20, 40] {
        let fs = SimFs::new();
        let s = open(sim_config(&fs, 1 << 20)).unwrap();
        let a = LocalSequencer
            .submit(&s, Op::CreatePool(durable_pool("d")), 1)
            .unwrap();
        s.wait_durable(a.lsn.unwrap()).unwrap();
        let acked = write_acked(&s, 20, 10);
        // Unacknowledged writes after the last sync (the committer may sync them too; the
        // image is taken right away so usually it has not).
        for i in 0..3 {
            LocalSequencer
                .submit(&s, put_op("tail", vec![i; 30]), 100 + u64::from(i))
                .unwrap();
        }
        let img = fs.crash_image(keep);
        drop(s);
        let seg = img.paths().into_iter().next().unwrap();
        let len_before = img.file_len(&seg).unwrap();
        let r = open(sim_config(&img, 1 << 20)).unwrap_or_else(|e| panic!("keep {keep}: {e}"));
        if img.file_len(&seg).unwrap() < len_before {
            cuts += 1;
        }
        assert_has(&r, &acked);
        // Whatever of "tail" survived is whole and in order.
        for e in r.read_from("d", "tail", 0, usize::MAX, 100).unwrap() {
            assert_eq!(e.value.len(), 30);
        }
        // And the log accepts writes again after the cut.
        let a = LocalSequencer
            .submit(&r, put_op("after", vec![1]), 1000)
            .unwrap();
        r.wait_durable(a.lsn.unwrap()).unwrap();
        r.check_invariants().unwrap();
    }
    assert!(cuts > 0, "no image had a torn tail to cut");
}

/// Byte offsets of the records in a segment file (walks the 12-byte headers).
fn record_offsets(bytes: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + 12 <= bytes.len() {
        out.push(pos as u64);
        let len = u32::from_le_bytes([bytes[pos], bytes[pos + 1], bytes[pos + 2], bytes[pos + 3]]);
        pos += 12 + len as usize;
    }
    out
}

#[test]
fn flipped_bit_mid_segment_is_reported_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || LogConfig::new(dir.path().join("log"));
    {
        let s = open(cfg()).unwrap();
        LocalSequencer
            .submit(&s, Op::CreatePool(durable_pool("d")), 1)
            .unwrap();
        write_acked(&s, 10, 10);
    }
    let seg: PathBuf = std::fs::read_dir(dir.path().join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let offs = record_offsets(&bytes);
    assert!(offs.len() >= 11);
    for (what, at) in [("body", offs[4] + 30), ("header length", offs[6] + 1)] {
        let mut b = bytes.clone();
        b[at as usize] ^= 0x10;
        std::fs::write(&seg, &b).unwrap();
        match open(cfg()) {
            Err(StorageError::Corrupt {
                file,
                offset,
                reason,
            }) => {
                assert_eq!(file, seg.display().to_string(), "{what}");
                let rec = if what == "body" { offs[4] } else { offs[6] };
                assert_eq!(offset, rec, "{what}: {reason}");
            }
            other => panic!("{what}: expected Corrupt, got {other:?}"),
        }
    }
    // Restored, it opens and everything is there; the file was not modified by the failures.
    bytes.truncate(bytes.len());
    std::fs::write(&seg, &bytes).unwrap();
    let s = open(cfg()).unwrap();
    assert_eq!(s.bounds("d", "k0").unwrap().next, 2);
}

#[test]
fn crash_between_write_and_fsync_with_concurrent_writers() {
    let fs = SimFs::new();
    let s = Arc::new(open(sim_config(&fs, 64 * 1024)).unwrap());
    let a = LocalSequencer
        .submit(&s, Op::CreatePool(durable_pool("d")), 1)
        .unwrap();
    s.wait_durable(a.lsn.unwrap()).unwrap();
    let acked: Acked = Arc::default();
    let attempted: Attempted = Arc::default();
    let mut images = Vec::new();
    std::thread::scope(|sc| {
        for t in 0..8u64 {
            let s = s.clone();
            let acked = acked.clone();
            let attempted = attempted.clone();
            sc.spawn(move || {
                for i in 0..150u64 {
                    let key = format!("k{}", (t + i) % 6);
                    let value = format!("t{t}-i{i}").into_bytes();
                    attempted
                        .lock()
                        .unwrap()
                        .insert((key.clone(), value.clone()));
                    let a = LocalSequencer
                        .submit(&s, put_op(&key, value.clone()), 10 + i)
                        .unwrap();
                    s.wait_durable(a.lsn.unwrap()).unwrap();
                    let Outcome::Put(v) = a.outcome else { panic!() };
                    acked.lock().unwrap().push((key, v.key_version, value));
                }
            });
        }
        // Take crash images while the writers run: first what was acknowledged, then the disk.
        for k in 0..12 {
            std::thread::sleep(std::time::Duration::from_millis(3));
            let acked_now = acked.lock().unwrap().clone();
            images.push((acked_now, fs.crash_image(k * 7)));
        }
    });
    let attempted = attempted.lock().unwrap().clone();
    for (acked_then, img) in images {
        let r = open(sim_config(&img, 64 * 1024)).unwrap();
        for (k, v, val) in &acked_then {
            let e = r
                .get_version("d", k, *v)
                .unwrap_or_else(|e| panic!("acked {k}@{v} lost: {e}"));
            assert_eq!(&e.value[..], &val[..]);
        }
        for k in r.keys("d", "").unwrap() {
            for e in r.read_from("d", &k, 0, usize::MAX, 10_000).unwrap() {
                assert!(
                    attempted.contains(&(k.clone(), e.value.to_vec())),
                    "invented {k}"
                );
            }
        }
    }
}

#[test]
fn full_disk_is_a_clean_error_and_nothing_stored_is_lost() {
    let fs = SimFs::new();
    let s = open(sim_config(&fs, 1 << 20)).unwrap();
    let a = LocalSequencer
        .submit(&s, Op::CreatePool(durable_pool("d")), 1)
        .unwrap();
    s.wait_durable(a.lsn.unwrap()).unwrap();
    let acked = write_acked(&s, 10, 10);
    let sh = s.shard_of("d", "k0");
    let before = (s.digest(sh).unwrap(), s.last_stamp(sh));
    fs.set_space_left(Some(20));
    let r = LocalSequencer.submit(&s, put_op("k0", vec![7; 100]), 100);
    assert!(matches!(r, Err(StorageError::Io { .. })), "{r:?}");
    assert_eq!(
        (s.digest(sh).unwrap(), s.last_stamp(sh)),
        before,
        "nothing applied"
    );
    s.check_invariants().unwrap();
    fs.set_space_left(None);
    let more = write_acked(&s, 3, 200);
    drop(s);
    let r = open(sim_config(&fs.crash_image(0), 1 << 20)).unwrap();
    assert_has(&r, &acked);
    assert_has(&r, &more);
}

#[test]
fn failed_fsync_fails_waiters_and_turns_the_log_read_only() {
    let fs = SimFs::new();
    let s = open(LogConfig {
        sync: SyncPolicy::GroupCommit,
        ..sim_config(&fs, 1 << 20)
    })
    .unwrap();
    let a = LocalSequencer
        .submit(&s, Op::CreatePool(durable_pool("d")), 1)
        .unwrap();
    s.wait_durable(a.lsn.unwrap()).unwrap();
    let acked = write_acked(&s, 5, 10);
    fs.fail_syncs(1);
    let a = LocalSequencer
        .submit(&s, put_op("k0", b"x".to_vec()), 100)
        .unwrap();
    assert!(matches!(
        s.wait_durable(a.lsn.unwrap()),
        Err(StorageError::LogFailed(_))
    ));
    assert!(matches!(
        LocalSequencer.submit(&s, put_op("k0", b"y".to_vec()), 101),
        Err(StorageError::LogFailed(_))
    ));
    // Reads still work; after a restart everything acknowledged is there.
    assert!(s.get("d", "k0").is_ok());
    drop(s);
    let r = open(sim_config(&fs.crash_image(0), 1 << 20)).unwrap();
    assert_has(&r, &acked);
}

#[test]
fn segments_roll_and_indexes_are_rebuilt() {
    let fs = SimFs::new();
    let cfg = || LogConfig {
        index_interval_bytes: 64,
        ..sim_config(&fs, 4096)
    };
    let acked;
    {
        let s = open(cfg()).unwrap();
        let a = LocalSequencer
            .submit(&s, Op::CreatePool(durable_pool("d")), 1)
            .unwrap();
        s.wait_durable(a.lsn.unwrap()).unwrap();
        acked = write_acked(&s, 300, 10);
        assert!(s.log().unwrap().segments().len() > 3);
    }
    let s = open(cfg()).unwrap();
    assert_has(&s, &acked);
    let log = s.log().unwrap();
    let segs = log.segments();
    assert!(segs.len() > 3);
    // Every record can be found through the rebuilt offset index.
    for lsn in 1..segs.last().unwrap().1 {
        assert_eq!(log.read(lsn).unwrap().lsn, lsn);
    }
    // The time index points at or before the first record at a time.
    let l = log.lsn_for_time(150);
    let rec = log.read(l).unwrap();
    assert!(rec.stamp.time.physical_us <= 150);
}

#[test]
fn retention_deletes_whole_segments_and_recovery_keeps_the_state() {
    let fs = SimFs::new();
    let cfg = || sim_config(&fs, 4096);
    let digests;
    let (segs_before, segs_after);
    {
        let s = open(cfg()).unwrap();
        let mut c = durable_pool("d");
        c.retention_bytes = Some(1500);
        LocalSequencer.submit(&s, Op::CreatePool(c), 1).unwrap();
        // A pool deleted and recreated: the old incarnation must not come back.
        LocalSequencer
            .submit(&s, Op::CreatePool(durable_pool("x")), 2)
            .unwrap();
        let mut old = put_op("old", vec![1; 50]);
        if let Op::Put { pool, .. } = &mut old {
            *pool = "x".into();
        }
        LocalSequencer.submit(&s, old, 3).unwrap();
        LocalSequencer
            .submit(&s, Op::DeletePool { pool: "x".into() }, 4)
            .unwrap();
        LocalSequencer
            .submit(&s, Op::CreatePool(durable_pool("x")), 5)
            .unwrap();
        let mut last = 0;
        for i in 0..400u64 {
            let a = LocalSequencer
                .submit(
                    &s,
                    put_op(&format!("k{}", i % 3), vec![i as u8; 100]),
                    10 + i,
                )
                .unwrap();
            last = a.lsn.unwrap();
        }
        // A key truncated to nothing keeps its counters.
        LocalSequencer
            .submit(&s, put_op("gone", vec![9; 10]), 500)
            .unwrap();
        let a = LocalSequencer
            .submit(
                &s,
                Op::Truncate {
                    pool: "d".into(),
                    key: "gone".into(),
                    before: 99,
                },
                501,
            )
            .unwrap();
        s.wait_durable(a.lsn.unwrap().max(last)).unwrap();
        segs_before = s.log().unwrap().segments().len();
        let deleted = s.compact_log().unwrap();
        assert!(deleted > 0, "retention freed no segment");
        segs_after = s.log().unwrap().segments().len();
        assert_eq!(segs_before - deleted, segs_after);
        s.check_invariants().unwrap();
        digests = (0..4).map(|i| s.digest(i).unwrap()).collect::<Vec<_>>();
    }
    assert!(
        segs_after < segs_before / 2,
        "{segs_before} -> {segs_after}"
    );
    for round in 0..2 {
        let r = open(cfg()).unwrap();
        let after: Vec<u64> = (0..4).map(|i| r.digest(i).unwrap()).collect();
        assert_eq!(after, digests, "round {round}");
        assert_eq!(
            r.bounds("d", "gone").unwrap(),
            KeyBounds { start: 1, next: 1 }
        );
        assert_eq!(r.get("x", "old"), Err(StorageError::NotFound));
        assert_eq!(r.bounds("d", "k0").unwrap().next, 134);
        // Nothing more to free on the second pass; the log keeps working.
        r.compact_log().unwrap();
    }
}

/// A state transfer into a durable store survives restarts and log retention: the imported
/// shard comes back exactly, its older local history does not, and ops applied after the
/// import are replayed on top.
#[test]
fn imported_shard_is_durable_and_replaces_the_old_history() {
    let (fa, fb) = (SimFs::new(), SimFs::new());
    let a = open(sim_config(&fa, 4096)).unwrap();
    let b = open(sim_config(&fb, 4096)).unwrap();
    let mut last: BTreeMap<ShardId, Stamp> = BTreeMap::new();
    let mut t = 10u64;
    // Applies the same stamped op to the stores given; returns the lsn on the last one.
    let mut both = |stores: &[&Store], op: Op| -> Option<u64> {
        t += 1;
        let sh = stores[0].shard_for(&op);
        let l = last.entry(sh).or_default();
        *l = Stamp {
            shard_seq: l.shard_seq + 1,
            time: Hlc {
                physical_us: t,
                logical: 0,
            },
        };
        let mut lsn = None;
        for s in stores {
            lsn = s.apply(sh, *l, op.clone()).ok().and_then(|a| a.lsn);
        }
        lsn
    };
    let mut vol = durable_pool("vol");
    vol.durable = false;
    both(&[&a, &b], Op::CreatePool(durable_pool("d")));
    both(&[&a, &b], Op::CreatePool(vol));
    // A has a rich history; B has a different, older one for the same keys.
    for i in 0..120u64 {
        let key = format!("k{}", i % 9);
        both(&[&b], put_op(&key, format!("b-old-{i}").into_bytes()));
    }
    for i in 0..200u64 {
        let key = format!("k{}", i % 9);
        both(&[&a], put_op(&key, format!("a-{i}").into_bytes()));
        if i % 50 == 0 {
            both(
                &[&a],
                Op::Truncate {
                    pool: "d".into(),
                    key: key.clone(),
                    before: 5,
                },
            );
        }
    }
    // B's own stamps must not be ahead of A's images: A wrote more in every shard.
    for sh in 0..4 {
        let img = a.export_shard(sh).unwrap();
        b.import_shard(sh, &img).unwrap();
        assert_eq!(
            b.digest(sh).unwrap(),
            a.digest(sh).unwrap(),
            "shard {sh} after import"
        );
    }
    // The tail: the same stamped ops on both.
    let mut tail_lsn = 0;
    for i in 0..60u64 {
        let l = both(
            &[&a, &b],
            put_op(&format!("k{}", i % 9), format!("tail-{i}").into_bytes()),
        );
        tail_lsn = tail_lsn.max(l.unwrap_or(0));
    }
    b.wait_durable(tail_lsn).unwrap();
    let want: Vec<u64> = (0..4).map(|i| a.digest(i).unwrap()).collect();
    drop(b);
    let img = fb.crash_image(0);
    let r = open(sim_config(&img, 4096)).unwrap();
    assert_eq!(
        (0..4).map(|i| r.digest(i).unwrap()).collect::<Vec<_>>(),
        want,
        "after restart"
    );
    // Retention, then another restart.
    r.compact_log().unwrap();
    drop(r);
    let r = open(sim_config(&img.crash_image(0), 4096)).unwrap();
    assert_eq!(
        (0..4).map(|i| r.digest(i).unwrap()).collect::<Vec<_>>(),
        want,
        "after retention"
    );
    for k in 0..9 {
        for e in r
            .read_from("d", &format!("k{k}"), 0, usize::MAX, 1000)
            .unwrap()
        {
            assert!(!e.value.starts_with(b"b-old"), "old history came back");
        }
    }
}

/// Compaction never moves a key's start (Kafka's log start offset stays put), and a restart —
/// from the whole log, and from a checkpoint after log retention deleted the segments holding
/// the compacted-away records — gives the same start, so a consumer reading from 0 still finds
/// the surviving records after a restart.
#[test]
fn compacted_key_keeps_its_start_across_restarts_and_log_retention() {
    let fs = SimFs::new();
    let cfg = || sim_config(&fs, 4096);
    let kept = |s: &Store| -> Vec<u64> {
        s.read_from("c", "p0", 0, usize::MAX, 10_000)
            .unwrap()
            .iter()
            .map(|e| e.version.key_version)
            .collect()
    };
    let want_kept;
    let want_digests: Vec<u64>;
    {
        let s = open(cfg()).unwrap();
        let mut c = durable_pool("c");
        c.compact = true;
        LocalSequencer.submit(&s, Op::CreatePool(c), 1).unwrap();
        let mut last = 0;
        // 200 records over 3 compaction keys: everything but the last three dies.
        for i in 0..200u64 {
            let mut op = put_op("p0", vec![i as u8; 60]);
            if let Op::Put {
                pool,
                compaction_key,
                ..
            } = &mut op
            {
                *pool = "c".into();
                *compaction_key = Some(Bytes::from(vec![(i % 3) as u8]));
            }
            last = LocalSequencer.submit(&s, op, 10 + i).unwrap().lsn.unwrap();
        }
        s.wait_durable(last).unwrap();
        want_kept = kept(&s);
        assert_eq!(want_kept, vec![197, 198, 199]);
        assert_eq!(
            s.bounds("c", "p0").unwrap(),
            KeyBounds {
                start: 0,
                next: 200
            }
        );
        want_digests = (0..4).map(|i| s.digest(i).unwrap()).collect();
    }
    // From the whole log.
    {
        let r = open(cfg()).unwrap();
        assert_eq!(r.bounds("c", "p0").unwrap().start, 0);
        assert_eq!(kept(&r), want_kept);
        let d: Vec<u64> = (0..4).map(|i| r.digest(i).unwrap()).collect();
        assert_eq!(d, want_digests);
        // Log retention: the segments of the dead records go, a checkpoint keeps the counters.
        assert!(r.compact_log().unwrap() > 0, "nothing freed");
    }
    // From the checkpoint plus the remaining segments, twice.
    for round in 0..2 {
        let r = open(cfg()).unwrap();
        assert_eq!(r.bounds("c", "p0").unwrap().start, 0, "round {round}");
        assert_eq!(kept(&r), want_kept, "round {round}");
        let d: Vec<u64> = (0..4).map(|i| r.digest(i).unwrap()).collect();
        assert_eq!(d, want_digests, "round {round}");
        r.compact_log().unwrap();
    }
}

/// A crash after the log rolled into a new segment but before the group commit's fsync: the
/// kernel may have written the new segment's records back while the old segment's tail never
/// reached the disk. Recovery must still open (nothing there was acknowledged), which holds only
/// if the old segment is synced before the first write to the next one.
#[test]
fn crash_after_roll_before_fsync_still_opens() {
    let fs = SimFs::new();
    let s = open(sim_config(&fs, 4096)).unwrap();
    let a = LocalSequencer
        .submit(&s, Op::CreatePool(durable_pool("d")), 1)
        .unwrap();
    s.wait_durable(a.lsn.unwrap()).unwrap();
    let acked = write_acked(&s, 10, 10);
    // Nobody waits from here on, so group commit never syncs: only the rolls may.
    for i in 0..400u64 {
        LocalSequencer
            .submit(&s, put_op(&format!("k{}", i % 5), vec![b'x'; 100]), 100 + i)
            .unwrap();
    }
    assert!(
        fs.paths().len() > 3,
        "the writes must span several segments"
    );
    for keep in [0usize, 1, 7, 50, 99, 150, 300, 1000] {
        let r = open(sim_config(&fs.crash_image(keep), 4096))
            .unwrap_or_else(|e| panic!("keeping {keep} unsynced bytes: {e}"));
        assert_has(&r, &acked);
    }
}

/// The active segment is preallocated (grown with zeros to the segment size, so the group
/// commit's fdatasyncs do not write a new size each time). Recovery must find the true end of
/// the log in the zeros, keep appending there, and closed segments must carry no zero tail.
#[test]
fn preallocated_segment_zero_tail_recovers_to_the_true_end() {
    let dir = tempfile::tempdir().unwrap();
    let seg_max = 64 * 1024;
    let cfg = || LogConfig {
        segment_bytes_max: seg_max,
        ..LogConfig::new(dir.path().join("log"))
    };
    let seg_files = || {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir.path().join("log"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        v.sort();
        v
    };
    let acked = {
        let s = open(cfg()).unwrap();
        let a = LocalSequencer
            .submit(&s, Op::CreatePool(durable_pool("d")), 1)
            .unwrap();
        s.wait_durable(a.lsn.unwrap()).unwrap();
        let acked = write_acked(&s, 30, 10);
        let f = seg_files();
        assert_eq!(f.len(), 1);
        let logical = s.log().unwrap().segments()[0].2;
        assert!(logical < seg_max);
        assert_eq!(
            std::fs::metadata(&f[0]).unwrap().len(),
            seg_max,
            "preallocated"
        );
        acked
    };
    let mut more = BTreeMap::new();
    {
        let s = open(cfg()).unwrap();
        assert_has(&s, &acked);
        // Writes continue at the true end, and enough of them to roll segments.
        for i in 0..40u64 {
            let a = LocalSequencer
                .submit(&s, put_op("big", vec![7; 4000]), 1000 + i)
                .unwrap();
            s.wait_durable(a.lsn.unwrap()).unwrap();
            let Outcome::Put(v) = a.outcome else {
                panic!("not a put")
            };
            more.insert(v.key_version, ());
        }
        let segs = s.log().unwrap().segments();
        assert!(segs.len() > 1);
        let files = seg_files();
        for (i, (base, _, len)) in segs.iter().enumerate() {
            let on_disk = std::fs::metadata(&files[i]).unwrap().len();
            if i + 1 < segs.len() {
                assert_eq!(on_disk, *len, "closed segment {base} keeps no zero tail");
            } else {
                assert_eq!(on_disk, seg_max, "active segment preallocated");
            }
        }
        s.check_invariants().unwrap();
    }
    let s = open(cfg()).unwrap();
    assert_has(&s, &acked);
    for v in more.keys() {
        assert_eq!(s.get_version("d", "big", *v).unwrap().value.len(), 4000);
    }
}

/// A torn write into the preallocated region: the pages of an unsynced write reach the disk in
/// any order, so the last record can have a zero page in its middle. Recovery cuts it there
/// (it was never acknowledged); the same record with a flipped bit instead of a zero page is
/// still reported as corruption (the torn rule does not swallow bit rot).
#[test]
fn torn_record_with_a_zero_page_in_the_preallocated_region() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = || LogConfig::new(dir.path().join("log"));
    let acked = {
        let s = open(cfg()).unwrap();
        let a = LocalSequencer
            .submit(&s, Op::CreatePool(durable_pool("d")), 1)
            .unwrap();
        s.wait_durable(a.lsn.unwrap()).unwrap();
        let acked = write_acked(&s, 10, 10);
        // The last record: a 20 KB value spanning several pages (acknowledged here, but the
        // test then damages it as a crash before its fsync would have).
        let a = LocalSequencer
            .submit(&s, put_op("last", vec![0x5a; 20_000]), 500)
            .unwrap();
        s.wait_durable(a.lsn.unwrap()).unwrap();
        // One small record after it, so the big one is not followed by zeros.
        let a = LocalSequencer
            .submit(&s, put_op("z", vec![1; 10]), 600)
            .unwrap();
        s.wait_durable(a.lsn.unwrap()).unwrap();
        acked
    };
    let seg: PathBuf = std::fs::read_dir(dir.path().join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .unwrap();
    let full = std::fs::read(&seg).unwrap();
    // Offsets of the real records (stop at the zero tail).
    let mut offs = Vec::new();
    let mut pos = 0usize;
    while pos + 12 <= full.len() && full[pos..pos + 12].iter().any(|&b| b != 0) {
        offs.push(pos);
        let len = u32::from_le_bytes([full[pos], full[pos + 1], full[pos + 2], full[pos + 3]]);
        pos += 12 + len as usize;
    }
    let small = offs.pop().unwrap();
    let last = *offs.last().unwrap();
    assert!(small - last > 3 * 4096);
    let page = (last / 4096 + 2) * 4096;
    // Bit rot in the big record (followed by a record, no zero page): an error naming it.
    let mut b = full.clone();
    b[page + 100] ^= 0x01;
    std::fs::write(&seg, &b).unwrap();
    match open(cfg()) {
        Err(StorageError::Corrupt { offset, .. }) => assert_eq!(offset, last as u64),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // The crash case: the small record never reached the disk (zeros), and the big one lost
    // a page in its middle: a torn tail, cut at the big record's start.
    let mut bytes = full.clone();
    bytes[small..pos].fill(0);
    let mut b = bytes.clone();
    b[page..page + 4096].fill(0);
    std::fs::write(&seg, &b).unwrap();
    let s = open(cfg()).unwrap_or_else(|e| panic!("torn record: {e}"));
    assert_has(&s, &acked);
    assert!(s
        .read_from("d", "last", 0, usize::MAX, 100)
        .unwrap()
        .is_empty());
    assert_eq!(s.log().unwrap().segments()[0].2, last as u64);
    // A lost first page of the record (its header zero, later pages present): also torn.
    drop(s);
    let mut b = bytes.clone();
    let hpage = last / 4096 * 4096;
    b[last..hpage + 4096].fill(0);
    std::fs::write(&seg, &b).unwrap();
    let s = open(cfg()).unwrap_or_else(|e| panic!("torn header: {e}"));
    assert_has(&s, &acked);
    assert!(s
        .read_from("d", "last", 0, usize::MAX, 100)
        .unwrap()
        .is_empty());
}

/// Crashes with preallocation on (SimFs set to preallocate like the real file system): torn
/// unsynced writes land inside the zero region, across segment rolls; nothing acknowledged is
/// lost and recovery opens every image.
#[test]
fn crash_with_preallocated_segments_loses_nothing_acknowledged() {
    for keep in [0usize, 7, 12, 50, 300, 5000] {
        let fs = SimFs::new();
        fs.set_preallocate(true);
        let s = open(sim_config(&fs, 16 * 1024)).unwrap();
        let a = LocalSequencer
            .submit(&s, Op::CreatePool(durable_pool("d")), 1)
            .unwrap();
        s.wait_durable(a.lsn.unwrap()).unwrap();
        let acked = write_acked(&s, 300, 10);
        assert!(s.log().unwrap().segments().len() > 1);
        for i in 0..5 {
            LocalSequencer
                .submit(&s, put_op("tail", vec![i; 300]), 1000 + u64::from(i))
                .unwrap();
        }
        let img = fs.crash_image(keep);
        drop(s);
        let r = open(sim_config(&img, 16 * 1024)).unwrap_or_else(|e| panic!("keep {keep}: {e}"));
        assert_has(&r, &acked);
        for e in r.read_from("d", "tail", 0, usize::MAX, 100).unwrap() {
            assert_eq!(e.value.len(), 300);
        }
        let a = LocalSequencer
            .submit(&r, put_op("after", vec![1]), 5000)
            .unwrap();
        r.wait_durable(a.lsn.unwrap()).unwrap();
        r.check_invariants().unwrap();
    }
}

/// Values of 64 KiB and more are written from their own buffer (head, value and trailer as
/// separate writes, no copy into the log's encode buffer): acknowledged ones survive a crash
/// and read back intact after recovery, and a crash that keeps any prefix of an unsynced one
/// (inside its head, its value or its trailer) cuts it off whole.
#[test]
fn large_values_written_apart_recover_whole() {
    let big =
        |i: u64, len: usize| -> Vec<u8> { (0..len).map(|j| (j as u64 * 7 + i) as u8).collect() };
    let sizes = [64 * 1024, 70 * 1024 + 3, 200 * 1024];
    let mut cut_inside = 0;
    for keep in [0usize, 5, 40, 70_000, 150_000, 200 * 1024 + 60, 300_000] {
        let fs = SimFs::new();
        fs.set_preallocate(true);
        let s = open(sim_config(&fs, 4 << 20)).unwrap();
        let a = LocalSequencer
            .submit(&s, Op::CreatePool(durable_pool("d")), 1)
            .unwrap();
        s.wait_durable(a.lsn.unwrap()).unwrap();
        let mut acked: BTreeMap<String, Vec<(u64, Vec<u8>)>> = BTreeMap::new();
        for (i, len) in sizes.iter().enumerate() {
            let value = big(i as u64, *len);
            let a = LocalSequencer
                .submit(&s, put_op("big", value.clone()), 10 + i as u64)
                .unwrap();
            s.wait_durable(a.lsn.unwrap()).unwrap();
            let Outcome::Put(v) = a.outcome else {
                panic!("not a put")
            };
            acked
                .entry("big".into())
                .or_default()
                .push((v.key_version, value));
        }
        // One unsynced large value after the last acknowledged one.
        LocalSequencer
            .submit(&s, put_op("tail", big(9, 200 * 1024)), 100)
            .unwrap();
        let img = fs.crash_image(keep);
        drop(s);
        let r = open(sim_config(&img, 4 << 20)).unwrap_or_else(|e| panic!("keep {keep}: {e}"));
        assert_has(&r, &acked);
        let tail = r.read_from("d", "tail", 0, usize::MAX, 10).unwrap();
        for e in &tail {
            assert!(e.value == big(9, 200 * 1024), "keep {keep}: tail changed");
        }
        if tail.is_empty() && keep > 0 {
            cut_inside += 1;
        }
        let a = LocalSequencer
            .submit(&r, put_op("after", big(3, 100 * 1024)), 1000)
            .unwrap();
        r.wait_durable(a.lsn.unwrap()).unwrap();
        r.check_invariants().unwrap();
    }
    assert!(
        cut_inside > 0,
        "no image kept part of the unsynced large value"
    );
}
