//! Property test: the store against a plain model. Random sequences of put, conditional put,
//! delete, truncate, clock moves, frontier advances, reads by version and at a time (platform
//! and sensor clocks), and watches, on a few keys spread over shards. After every step the
//! store's invariants hold and every read equals the model's answer; a time read, once given,
//! never changes (until a truncate removes history); watches deliver kept history and live
//! updates in order, without gaps or duplicates.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;
use squall_storage::*;

const LATENESS_US: u64 = 100;
const KEYS: [&str; 4] = ["a", "b", "c", "d/e"];

#[derive(Debug, Clone)]
enum Step {
    Put {
        key: usize,
        val: u8,
        sensor_back: Option<u16>,
        span: u32,
        expect: u8,
        exp_v: u8,
    },
    Delete {
        key: usize,
    },
    Truncate {
        key: usize,
        before: u8,
    },
    Tick {
        delta: i16,
    },
    Advance,
    GetVersion {
        key: usize,
        v: u8,
    },
    GetAt {
        key: usize,
        back: u16,
        sensor: bool,
    },
    Watch {
        key: usize,
        from: u8,
    },
    Poll {
        w: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let key = 0..KEYS.len();
    prop_oneof![
        6 => (key.clone(), any::<u8>(), proptest::option::of(0u16..300), 1u32..4, 0u8..4, 0u8..12)
            .prop_map(|(key, val, sensor_back, span, expect, exp_v)| Step::Put { key, val, sensor_back, span, expect, exp_v }),
        1 => key.clone().prop_map(|key| Step::Delete { key }),
        1 => (key.clone(), 0u8..20).prop_map(|(key, before)| Step::Truncate { key, before }),
        3 => (-20i16..80).prop_map(|delta| Step::Tick { delta }),
        2 => Just(Step::Advance),
        2 => (key.clone(), 0u8..20).prop_map(|(key, v)| Step::GetVersion { key, v }),
        3 => (key.clone(), 0u16..500, any::<bool>()).prop_map(|(key, back, sensor)| Step::GetAt { key, back, sensor }),
        1 => (0..KEYS.len() + 1, 0u8..10).prop_map(|(key, from)| Step::Watch { key, from }),
        2 => (0usize..8).prop_map(|w| Step::Poll { w }),
    ]
}

#[derive(Debug, Clone)]
struct MEntry {
    version: Version,
    value: Bytes,
    tombstone: bool,
}

#[derive(Debug, Default, Clone)]
struct MKey {
    start: u64,
    next: u64,
    newest: Option<(u64, bool)>,
    kept: Vec<MEntry>,
    /// Every version ever stored, by key_version (for checking watch events).
    history: BTreeMap<u64, MEntry>,
}

#[derive(Debug, Default, Clone, Copy)]
struct MShard {
    last: Stamp,
    frontier: u64,
}

struct Model {
    keys: BTreeMap<String, MKey>,
    shards: BTreeMap<ShardId, MShard>,
}

impl Model {
    fn stamp(&mut self, shard: ShardId, now: u64) -> Stamp {
        let s = self.shards.entry(shard).or_default();
        let floor = Hlc {
            physical_us: now.max(s.frontier + 1),
            logical: 0,
        };
        let time = if floor > s.last.time {
            floor
        } else {
            Hlc {
                physical_us: s.last.time.physical_us,
                logical: s.last.time.logical + 1,
            }
        };
        s.last = Stamp {
            shard_seq: s.last.shard_seq + 1,
            time,
        };
        s.last
    }
}

fn entry(key: &str, m: &MEntry) -> Entry {
    Entry {
        key: key.to_owned(),
        version: m.version,
        value: m.value.clone(),
        tombstone: m.tombstone,
        compaction_key: None,
    }
}

fn sensor_key(v: &Version) -> u64 {
    v.sensor_time_us.unwrap_or(v.time.physical_us)
}

struct W {
    /// `None`: a prefix watch on "" (every key, all shards).
    key: Option<String>,
    from: u64,
    watch: Watch,
    got: Vec<Entry>,
}

fn poll_all(store: &Store, w: &mut W) {
    loop {
        match w.watch.poll(store) {
            WatchPoll::Events(ev) => {
                for e in ev {
                    match e {
                        WatchEvent::Update(e) => w.got.push(e),
                        WatchEvent::Lagged(n) => panic!("versioned watch lagged {n}"),
                    }
                }
            }
            WatchPoll::Idle | WatchPoll::Ended => return,
        }
    }
}

fn run(steps: Vec<Step>, shards: u32) -> Result<(), TestCaseError> {
    let store = Store::new(StoreConfig {
        shards,
        watch_poll_events_max: 3,
        watch_ring_events_max: 8,
        ..StoreConfig::default()
    })
    .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut m = Model {
        keys: BTreeMap::new(),
        shards: BTreeMap::new(),
    };
    let mut now: u64 = 1000;
    let cfg = PoolConfig {
        name: "p".into(),
        mode: Mode::Versioned,
        durable: false,
        lateness_us: LATENESS_US,
        ..PoolConfig::default()
    };
    LocalSequencer
        .submit(&store, Op::CreatePool(cfg), now)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    m.stamp(META_SHARD, now);
    let mut answers: BTreeMap<(String, u64, bool), Option<Entry>> = BTreeMap::new();
    let mut watches: Vec<W> = Vec::new();
    for st in steps {
        match st {
            Step::Put {
                key,
                val,
                sensor_back,
                span,
                expect,
                exp_v,
            } => {
                let k = KEYS[key].to_string();
                let tomb = false;
                do_put(
                    &store,
                    &mut m,
                    &k,
                    Bytes::from(vec![val; 3]),
                    sensor_back.map(|b| now.saturating_sub(u64::from(b))),
                    span,
                    expect,
                    exp_v,
                    tomb,
                    now,
                )?;
            }
            Step::Delete { key } => {
                let k = KEYS[key].to_string();
                do_put(&store, &mut m, &k, Bytes::new(), None, 1, 0, 0, true, now)?;
            }
            Step::Truncate { key, before } => {
                let k = KEYS[key].to_string();
                let shard = store.shard_of("p", &k);
                let stamp = m.stamp(shard, now);
                let r = LocalSequencer.submit(
                    &store,
                    Op::Truncate {
                        pool: "p".into(),
                        key: k.clone(),
                        before: u64::from(before),
                    },
                    now,
                );
                match m.keys.get_mut(&k) {
                    None => prop_assert_eq!(r, Err(StorageError::NotFound)),
                    Some(mk) => {
                        let b = u64::from(before).min(mk.next);
                        mk.kept.retain(|e| e.version.next_key_version() > b);
                        mk.start = mk.start.max(b);
                        let a = r.map_err(|e| TestCaseError::fail(e.to_string()))?;
                        prop_assert_eq!(a.stamp, stamp);
                        prop_assert_eq!(
                            a.outcome,
                            Outcome::Truncated(KeyBounds {
                                start: mk.start,
                                next: mk.next
                            })
                        );
                        answers.retain(|(ak, _, _), _| ak != &k);
                    }
                }
            }
            Step::Tick { delta } => {
                now = now.saturating_add_signed(i64::from(delta)).max(1);
            }
            Step::Advance => {
                store.advance_frontier(now);
                for sh in 0..shards {
                    let s = m.shards.entry(sh).or_default();
                    s.frontier = s.frontier.max(now - 1);
                }
                for sh in 0..shards {
                    let f = m.shards.get(&sh).map_or(now - 1, |s| s.frontier);
                    prop_assert_eq!(store.frontier_us(sh), f);
                }
            }
            Step::GetVersion { key, v } => {
                let k = KEYS[key];
                let got = store.get_version("p", k, u64::from(v));
                let want = m.keys.get(k).and_then(|mk| {
                    (u64::from(v) >= mk.start).then(|| {
                        mk.kept.iter().find(|e| {
                            e.version.key_version <= u64::from(v)
                                && u64::from(v) < e.version.next_key_version()
                        })
                    })?
                });
                match want {
                    Some(e) => prop_assert_eq!(got, Ok(entry(k, e))),
                    None => prop_assert_eq!(got, Err(StorageError::NotFound)),
                }
                let b = store
                    .bounds("p", k)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let mb = m.keys.get(k).map_or(KeyBounds::default(), |mk| KeyBounds {
                    start: mk.start,
                    next: mk.next,
                });
                prop_assert_eq!(b, mb);
                let latest = store.get("p", k);
                match m.keys.get(k).and_then(|mk| mk.kept.last()) {
                    Some(e) if !e.tombstone => prop_assert_eq!(latest, Ok(entry(k, e))),
                    _ => prop_assert_eq!(latest, Err(StorageError::NotFound)),
                }
            }
            Step::GetAt { key, back, sensor } => {
                let k = KEYS[key];
                let t = now.saturating_sub(u64::from(back));
                let clock = if sensor {
                    Clock::Sensor
                } else {
                    Clock::Platform
                };
                let got = store.get_at("p", k, t, clock);
                let shard = store.shard_of("p", k);
                let frontier = m.shards.get(&shard).map_or(0, |s| s.frontier);
                let need = if sensor { t + LATENESS_US } else { t };
                if need > frontier {
                    prop_assert!(
                        matches!(got, Err(StorageError::NotYetStable { .. })),
                        "{:?}",
                        got
                    );
                    continue;
                }
                let want = m.keys.get(k).and_then(|mk| {
                    if sensor {
                        mk.kept
                            .iter()
                            .filter(|e| !e.version.late && sensor_key(&e.version) <= t)
                            .max_by_key(|e| (sensor_key(&e.version), e.version.key_version))
                    } else {
                        mk.kept
                            .iter()
                            .rev()
                            .find(|e| e.version.time.physical_us <= t)
                    }
                });
                let want = want.filter(|e| !e.tombstone).map(|e| entry(k, e));
                prop_assert_eq!(&got, &Ok(want.clone()));
                if let Some(prev) = answers.get(&(k.to_string(), t, sensor)) {
                    prop_assert_eq!(prev, &want, "a time read changed its answer");
                }
                answers.insert((k.to_string(), t, sensor), want);
            }
            Step::Watch { key, from } => {
                if watches.len() < 8 {
                    let k = KEYS.get(key).map(|k| k.to_string());
                    let sel = match &k {
                        Some(k) => Selector::Key(k.clone()),
                        None => Selector::Prefix(String::new()),
                    };
                    let watch = store
                        .watch("p", sel, WatchFrom::Version(u64::from(from)))
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    watches.push(W {
                        key: k,
                        from: u64::from(from),
                        watch,
                        got: Vec::new(),
                    });
                }
            }
            Step::Poll { w } => {
                if let Some(w) = watches.get_mut(w) {
                    poll_all(&store, w);
                }
            }
        }
        store.check_invariants().map_err(TestCaseError::fail)?;
    }
    // Final drain: each watch got, in order and once each, versions with next > from that are
    // true history; and every version still kept (≥ from) is among them.
    for w in &mut watches {
        poll_all(&store, w);
        let keys: Vec<String> = match &w.key {
            Some(k) => vec![k.clone()],
            None => KEYS.iter().map(|k| k.to_string()).collect(),
        };
        for e in &w.got {
            prop_assert!(
                keys.contains(&e.key),
                "watch delivered a foreign key {}",
                e.key
            );
        }
        for key in keys {
            let mk = m.keys.get(&key).cloned().unwrap_or_default();
            let mut prev: Option<u64> = None;
            let got: Vec<&Entry> = w.got.iter().filter(|e| e.key == key).collect();
            for e in &got {
                let kv = e.version.key_version;
                prop_assert!(
                    prev.is_none_or(|p| kv > p),
                    "out of order or duplicate {} after {:?}",
                    kv,
                    prev
                );
                prev = Some(kv);
                prop_assert!(e.version.next_key_version() > w.from);
                let h = mk
                    .history
                    .get(&kv)
                    .ok_or_else(|| TestCaseError::fail("watch invented a version"))?;
                prop_assert_eq!(*e, &entry(&key, h));
            }
            for e in mk
                .kept
                .iter()
                .filter(|e| e.version.next_key_version() > w.from)
            {
                prop_assert!(
                    got.iter()
                        .any(|g| g.version.key_version == e.version.key_version),
                    "watch missed kept {}/{}",
                    key,
                    e.version.key_version
                );
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn do_put(
    store: &Store,
    m: &mut Model,
    k: &str,
    value: Bytes,
    sensor: Option<u64>,
    span: u32,
    expect: u8,
    exp_v: u8,
    tombstone: bool,
    now: u64,
) -> Result<(), TestCaseError> {
    let expect = match expect {
        0 | 1 => Expect::Any,
        2 => Expect::Absent,
        _ => Expect::Version(u64::from(exp_v)),
    };
    let op = Op::Put {
        pool: "p".into(),
        key: k.into(),
        value: value.clone(),
        sensor_time_us: sensor,
        span,
        compaction_key: None,
        expect,
        tombstone,
    };
    let shard = store.shard_of("p", k);
    let stamp = m.stamp(shard, now);
    let r = LocalSequencer.submit(store, op, now);
    let mk = m.keys.entry(k.to_string()).or_default();
    let ok = match expect {
        Expect::Any => true,
        Expect::Absent => mk.newest.is_none_or(|(_, t)| t),
        Expect::Version(v) => mk.newest.is_some_and(|(kv, _)| kv == v),
        // Not generated here (ownership has its own tests in storage/src/tests.rs).
        Expect::Owned { .. } => unreachable!("the model does not generate claims"),
    };
    if !ok {
        prop_assert_eq!(
            r,
            Err(StorageError::Conflict {
                current: mk.newest.map(|(kv, _)| kv)
            })
        );
        if mk.newest.is_none() && mk.history.is_empty() && mk.next == 0 {
            // The store creates no key for a failed cput either.
            m.keys.remove(k);
        }
        return Ok(());
    }
    let version = Version {
        key_version: mk.next,
        span,
        shard_seq: stamp.shard_seq,
        time: stamp.time,
        sensor_time_us: sensor,
        late: sensor.is_some_and(|s| s + LATENESS_US < stamp.time.physical_us),
    };
    let a = r.map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(a.outcome, Outcome::Put(version));
    let me = MEntry {
        version,
        value: if tombstone { Bytes::new() } else { value },
        tombstone,
    };
    mk.next = version.next_key_version();
    mk.newest = Some((version.key_version, tombstone));
    mk.kept.push(me.clone());
    mk.history.insert(version.key_version, me);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn store_matches_model(steps in proptest::collection::vec(step(), 1..120), shards in 1u32..4) {
        run(steps, shards)?;
    }
}
