//! EXCLUSIVE ownership decided in the store, with real Cyclone DDS writers (in a private
//! network namespace): two Cyclone writers of different strength update the same flight plan;
//! only the stronger one's updates are stored and published on the arbitrated topic that the
//! consoles read; when the owner is killed (SIGKILL, so only its lease tells), the weaker writer
//! takes over and from then on only its updates are stored. The owner is kept in the store's
//! key state and checked where the put is ordered (`Expect::Owned`): an edit from another face
//! that claims less strength than the owner, or makes no claim, is refused by the store with
//! `NotOwner`; a stronger editor takes the instance for its lease (the weaker DDS writer is
//! refused meanwhile) and a stale compare-and-put fails with `Conflict`.
//!
//! Why the first test was flaky under load (load 11, 2 s lease): Cyclone announces itself every
//! 4/5 of its lease (1.6 s) and rustdds 0.15.1 declares a participant lost the moment its
//! lease has passed without an announcement (no tolerance), so a Cyclone peer starved of CPU for
//! 0.4 s is lost. The face then releases what it owned (right: DDS hands over when the owner
//! loses liveliness) and the weaker writer takes over. But rustdds never rediscovers that
//! participant: its later announcements carry the same SPDP sample, which rustdds's SPDP reader
//! has already seen, so it only logs "Participant alive update for unknown ..." every 1.6 s
//! while every sample of the still running owner is dropped. The weaker writer keeps the
//! instance for good. The second test reproduces this with SIGSTOP and is ignored until
//! rustdds handles it (docs/DDS.md, "Known limits"); the first test gives its peers a 5 s lease
//! (1 s of slack) and checks the EXCLUSIVE rule itself against the recorded writer_lost events,
//! and says so plainly if the owner's lease lapsed anyway.
//!
//! The node is the in-memory test node (squall_protocols::testing::MemNode), not the broker.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod dds_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use dds_support::{cyclone_uri_with_lease, eventually, flight_topic, in_netns, mem_face, Peer};
use squall_protocols::dds::config::{DdsTopicConfig, History, OwnershipKind};
use squall_protocols::testing::MemNode;
use squall_protocols::{Node, NodeError, PutRequest};
use squall_storage::owner::{writer_id, Claim};
use squall_storage::Expect;

fn exclusive_topic() -> DdsTopicConfig {
    let mut t = flight_topic("FlightPlan", "flightplans");
    t.ownership = OwnershipKind::Exclusive;
    t.history = History::KeepAll; // keep every stored version, to check who wrote each
    t.publish_topic = Some("FlightPlanView".into());
    t.editor_strength = 15;
    t.editor_lease_ms = 3_000;
    t
}

fn routes(node: &MemNode, ty: &squall_protocols::dds::cdr::TypeDesc) -> Vec<String> {
    timed_routes(node, ty).into_iter().map(|(_, r)| r).collect()
}

/// The stored routes of FP1 with their platform times.
fn timed_routes(node: &MemNode, ty: &squall_protocols::dds::cdr::TypeDesc) -> Vec<(u64, String)> {
    node.read_from("flightplans", "FP1", 0, usize::MAX, 100_000)
        .unwrap_or_default()
        .iter()
        .filter(|e| !e.tombstone)
        .map(|e| {
            let route = ty.to_json(&e.value).unwrap()["route"]
                .as_str()
                .unwrap()
                .to_owned();
            (e.version.time.physical_us, route)
        })
        .collect()
}

/// Platform times of the writer_lost events recorded for FP1 (any writer).
fn lost_times(node: &MemNode) -> Vec<u64> {
    node.read_from("flightplans.events", "FP1", 0, usize::MAX, 100_000)
        .unwrap_or_default()
        .iter()
        .filter(|e| {
            serde_json::from_slice::<serde_json::Value>(&e.value)
                .is_ok_and(|j| j["event"] == "writer_lost")
        })
        .map(|e| e.version.time.physical_us)
        .collect()
}

/// The EXCLUSIVE rule over the stored history of FP1, where A (routes `A-…`) is stronger than
/// B (`B-…`): a sample of B is stored only while A is lost, i.e. after a writer_lost event of
/// the owner A and before A's next stored sample. Returns how many times B took over.
fn check_owner_rule(stored: &[(u64, String)], lost: &[u64]) -> usize {
    let mut events: Vec<(u64, u8, &str)> = stored.iter().map(|(t, r)| (*t, 1, &r[..])).collect();
    events.extend(lost.iter().map(|t| (*t, 0, "")));
    events.sort();
    let (mut owner_lost, mut owner, mut takeovers) = (false, "A", 0);
    for (t, kind, route) in events {
        if kind == 0 {
            // Only the owner's loss frees the instance (B's losses are recorded too).
            owner_lost |= owner == "A";
            continue;
        }
        if route.starts_with("A-") {
            (owner_lost, owner) = (false, "A");
        } else if route.starts_with("B-") {
            assert!(
                owner == "B" || owner_lost,
                "B's sample {route} (t {t}) stored while A owned FP1 and was not lost: {stored:?} lost at {lost:?}"
            );
            if owner != "B" {
                takeovers += 1;
            }
            owner = "B";
        }
    }
    takeovers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strongest_writer_owns_and_hands_over_when_killed() {
    if !in_netns("strongest_writer_owns_and_hands_over_when_killed") {
        return;
    }
    let topic = exclusive_topic();
    let (node, ty, face) = mem_face(topic).await;

    let console = Peer::start(
        "console",
        &[
            "sub",
            "--topic",
            "FlightPlanView",
            "--transient-local",
            "--seconds",
            "40",
        ],
    );
    console.wait_line(Duration::from_secs(30), |l| l == "ready");

    let common = [
        "pub",
        "--key",
        "FP1",
        "--count",
        "400",
        "--interval-ms",
        "50",
        "--hang",
        "--transient-local",
    ];
    // A 5 s lease (announced every 4 s): a starved peer has 1 s of slack, not 0.4 s.
    let uri = cyclone_uri_with_lease(5);
    let mut strong = Peer::start_with_uri(
        "strong",
        &[&common[..], &["--strength", "20", "--route", "A"]].concat(),
        &uri,
    );
    strong.wait_line(Duration::from_secs(30), |l| l.starts_with("wrote"));
    eventually(Duration::from_secs(30), "A's first update stored", || {
        (!routes(&node, &ty).is_empty()).then_some(())
    })
    .await;
    let weak = Peer::start_with_uri(
        "weak",
        &[
            &common[..],
            &[
                "--strength",
                "10",
                "--route",
                "B",
                "--first-version",
                "1000",
            ],
        ]
        .concat(),
        &uri,
    );
    weak.wait_line(Duration::from_secs(30), |l| l.starts_with("wrote FP1 1005"));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let before = timed_routes(&node, &ty);
    assert!(before.len() > 10, "A kept writing: {before:?}");
    // Only the owner's updates are stored while it is alive (under heavy load A's lease may
    // still lapse: then B may take over until A is heard from again, and the rule says so).
    let lost_before = lost_times(&node);
    if check_owner_rule(&before, &lost_before) == 0 {
        assert!(
            face.stats().ownership_rejected.load(Ordering::Relaxed) > 0,
            "B's updates were refused"
        );
    }
    let owner = node.owner("flightplans", "FP1").unwrap().unwrap();
    assert!(
        owner.strength == 20,
        "A's lease lapsed before the kill (a starved peer on a loaded box: writer_lost at {lost_before:?}) and rustdds 0.15.1 does not rediscover a lapsed participant (see the file's doc): {before:?}"
    );

    // Kill the owner: no goodbye, only its participant lease (5 s) expires.
    let killed_at = timed_routes(&node, &ty).len();
    strong.kill();
    let handed = eventually(
        Duration::from_secs(30),
        "B's updates stored after A's lease expired",
        || {
            let r = routes(&node, &ty);
            r[killed_at.min(r.len())..]
                .iter()
                .filter(|x| x.starts_with("B-"))
                .nth(5)
                .is_some()
                .then_some(r)
        },
    )
    .await;
    let first_b = killed_at
        + handed[killed_at..]
            .iter()
            .position(|r| r.starts_with("B-"))
            .unwrap();
    assert!(
        handed[first_b..].iter().all(|r| r.starts_with("B-")),
        "one owner at a time after the kill: {handed:?}"
    );
    check_owner_rule(&timed_routes(&node, &ty), &lost_times(&node));
    let owner_b = node.owner("flightplans", "FP1").unwrap().unwrap();
    assert_eq!(owner_b.strength, 10);

    let j = serde_json::json!({"flight_id": "FP1", "version": 5000, "route": "EDIT-1"});
    let value = Bytes::from(ty.from_json(&j).unwrap());
    let claim = |strength, version| Expect::Owned {
        claim: Claim {
            writer: writer_id("http:console-7"),
            strength,
            lease_us: 3_000_000,
        },
        version,
    };
    // An edit without a claim, or with a weaker one (5 < 10), is refused by the store.
    let plain = PutRequest::new("flightplans", "FP1", value.clone());
    match node.put(plain).await {
        Err(NodeError::NotOwner(n)) => {
            assert_eq!((n.owner, n.strength, n.claimed), (owner_b.writer, 10, None))
        }
        r => panic!("a plain edit of an owned instance must be refused: {r:?}"),
    }
    let mut weak_edit = PutRequest::new("flightplans", "FP1", value.clone());
    weak_edit.expect = claim(5, None);
    match node.put(weak_edit).await {
        Err(NodeError::NotOwner(n)) => assert_eq!(n.claimed, Some(5)),
        r => panic!("a weaker claim must be refused: {r:?}"),
    }
    // A stale compare-and-put by a strong enough editor fails clearly.
    let stale = node.get("flightplans", "FP1").unwrap().version.key_version;
    eventually(Duration::from_secs(5), "B writes again", || {
        (node.bounds("flightplans", "FP1").ok()?.next > stale + 1).then_some(())
    })
    .await;
    let mut stale_edit = PutRequest::new("flightplans", "FP1", value.clone());
    stale_edit.expect = claim(15, Some(stale));
    match node.put(stale_edit).await {
        Err(NodeError::Conflict { current: Some(c) }) => assert!(c > stale),
        r => panic!("a stale edit must fail with Conflict: {r:?}"),
    }
    // An editor with strength 15 > 10 takes the instance for its lease (3 s), editing with a
    // compare-and-put on the version it read (B writes every 50 ms, so it may have to re-read).
    let mut edited = None;
    for _ in 0..50 {
        let cur = node.get("flightplans", "FP1").unwrap().version.key_version;
        let mut edit = PutRequest::new("flightplans", "FP1", value.clone());
        edit.expect = claim(15, Some(cur));
        match node.put(edit).await {
            Ok(v) => {
                edited = Some(v);
                break;
            }
            Err(NodeError::Conflict { .. }) => continue,
            Err(e) => panic!("{e}"),
        }
    }
    let edited = edited.expect("an edit at the current version eventually goes through");
    let owner = node.owner("flightplans", "FP1").unwrap().unwrap();
    assert_eq!(
        (owner.writer, owner.strength),
        (writer_id("http:console-7"), 15)
    );
    // The store decided at the edit's place in the order: nothing of B's lands after it.
    let mark = edited.next_key_version();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let during: Vec<u64> = node
        .read_from("flightplans", "FP1", mark, usize::MAX, 100_000)
        .unwrap()
        .iter()
        .map(|e| e.version.key_version)
        .collect();
    assert!(
        during.is_empty(),
        "B (10) is refused while the editor (15) holds FP1: {during:?}"
    );
    // After the editor's lease (3 s) B takes the instance back.
    eventually(
        Duration::from_secs(10),
        "B back after the editor's lease",
        || {
            let r = routes(&node, &ty);
            r.last().is_some_and(|x| x.starts_with("B-")).then_some(())
        },
    )
    .await;

    // The console read the arbitrated stream: A's then B's (and the edit), never mixed back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen: Vec<String> = console
        .samples()
        .iter()
        .filter(|s| s["valid"] == true)
        .map(|s| s["route"].as_str().unwrap().to_owned())
        .collect();
    let stored = routes(&node, &ty);
    assert!(
        seen.len() >= stored.len() - 5,
        "console saw the stored stream: {} of {}",
        seen.len(),
        stored.len()
    );
    assert_eq!(
        seen[..],
        stored[..seen.len()],
        "console saw exactly the stored versions, in order, once"
    );
    drop(weak);
    face.shutdown();
}

/// What DDS asks for when an owner misses its lease and comes back: the owner stopped
/// (SIGSTOP) for longer than its 2 s participant lease is lost and the weaker writer takes FP1
/// over (this part passes); once the owner runs again its next sample should take FP1 back (the
/// strongest alive writer owns it), and a SIGKILL afterwards should hand FP1 over again. It
/// fails at "A back as the owner" with rustdds 0.15.1, which never rediscovers the lapsed
/// participant (run it with SQUALL_TEST_LOG=rustdds to see "Participant alive update for
/// unknown" every 1.6 s): a reproducer of the flake, ignored until that is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "rustdds 0.15.1 does not rediscover a participant whose lease lapsed (docs/DDS.md)"]
async fn an_owner_that_misses_its_lease_loses_the_instance_and_takes_it_back() {
    if !in_netns("an_owner_that_misses_its_lease_loses_the_instance_and_takes_it_back") {
        return;
    }
    let topic = exclusive_topic();
    let (node, ty, face) = mem_face(topic).await;
    let common = [
        "pub",
        "--key",
        "FP1",
        "--count",
        "1200",
        "--interval-ms",
        "50",
        "--hang",
        "--transient-local",
    ];
    let mut strong = Peer::start(
        "strong",
        &[&common[..], &["--strength", "20", "--route", "A"]].concat(),
    );
    strong.wait_line(Duration::from_secs(30), |l| l.starts_with("wrote"));
    eventually(Duration::from_secs(30), "A's first update stored", || {
        (!routes(&node, &ty).is_empty()).then_some(())
    })
    .await;
    let weak = Peer::start(
        "weak",
        &[
            &common[..],
            &[
                "--strength",
                "10",
                "--route",
                "B",
                "--first-version",
                "5000",
            ],
        ]
        .concat(),
    );
    weak.wait_line(Duration::from_secs(30), |l| l.starts_with("wrote FP1 5005"));
    eventually(Duration::from_secs(20), "B refused while A owns", || {
        (face.stats().ownership_rejected.load(Ordering::Relaxed) > 0).then_some(())
    })
    .await;

    // Stop A for 4 s (twice its lease): the face loses it, B takes over.
    let lost0 = lost_times(&node).len();
    strong.signal("STOP");
    let n0 = routes(&node, &ty).len();
    eventually(
        Duration::from_secs(20),
        "B stored while A is stopped",
        || {
            let r = routes(&node, &ty);
            r[n0.min(r.len())..]
                .iter()
                .any(|x| x.starts_with("B-"))
                .then_some(())
        },
    )
    .await;
    assert!(lost_times(&node).len() > lost0, "A's loss was recorded");
    tokio::time::sleep(Duration::from_secs(2)).await;
    strong.signal("CONT");
    // A runs again: it is rediscovered and its next samples take FP1 back from B.
    let n1 = routes(&node, &ty).len();
    eventually(Duration::from_secs(30), "A back as the owner", || {
        let r = routes(&node, &ty);
        let tail = &r[n1.min(r.len())..];
        (tail.iter().filter(|x| x.starts_with("A-")).count() > 5
            && node.owner("flightplans", "FP1").ok()??.strength == 20)
            .then_some(())
    })
    .await;
    // And a real loss afterwards still hands over.
    strong.kill();
    let n2 = routes(&node, &ty).len();
    eventually(Duration::from_secs(30), "B owns after A is killed", || {
        let r = routes(&node, &ty);
        (r[n2.min(r.len())..]
            .iter()
            .filter(|x| x.starts_with("B-"))
            .count()
            > 5)
        .then_some(())
    })
    .await;
    let takeovers = check_owner_rule(&timed_routes(&node, &ty), &lost_times(&node));
    assert!(takeovers >= 2, "B took over twice: {takeovers}");
    drop(weak);
    face.shutdown();
}
