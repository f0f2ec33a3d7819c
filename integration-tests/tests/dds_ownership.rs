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
//! The node is the in-memory test node (squall_protocols::testing::MemNode), not the broker.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod dds_support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dds_support::{config, eventually, flight_topic, in_netns, Peer};
use squall_protocols::dds::config::{DdsTopicConfig, History, OwnershipKind};
use squall_protocols::dds::DdsFace;
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
    node.read_from("flightplans", "FP1", 0, usize::MAX, 100_000)
        .unwrap_or_default()
        .iter()
        .filter(|e| !e.tombstone)
        .map(|e| {
            ty.to_json(&e.value).unwrap()["route"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strongest_writer_owns_and_hands_over_when_killed() {
    if !in_netns("strongest_writer_owns_and_hands_over_when_killed") {
        return;
    }
    let node = Arc::new(MemNode::new());
    let topic = exclusive_topic();
    let ty = topic.type_desc();
    let face = DdsFace::start(config(vec![topic]), Arc::clone(&node))
        .await
        .unwrap();

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
    console.wait_line(Duration::from_secs(10), |l| l == "ready");

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
    let mut strong = Peer::start(
        "strong",
        &[&common[..], &["--strength", "20", "--route", "A"]].concat(),
    );
    strong.wait_line(Duration::from_secs(10), |l| l.starts_with("wrote"));
    eventually(Duration::from_secs(10), "A's first update stored", || {
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
                "1000",
            ],
        ]
        .concat(),
    );
    weak.wait_line(Duration::from_secs(10), |l| l.starts_with("wrote FP1 1005"));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let before = routes(&node, &ty);
    assert!(before.len() > 10, "A kept writing: {before:?}");
    assert!(
        before.iter().all(|r| r.starts_with("A-")),
        "only the owner's updates are stored: {before:?}"
    );
    assert!(
        face.stats().ownership_rejected.load(Ordering::Relaxed) > 0,
        "B's updates were refused"
    );
    let owner = node.owner("flightplans", "FP1").unwrap().unwrap();
    assert_eq!(owner.strength, 20);

    // Kill the owner: no goodbye, only its participant lease (2 s) expires.
    strong.kill();
    let handed = eventually(
        Duration::from_secs(15),
        "B's updates stored after A's lease expired",
        || {
            let r = routes(&node, &ty);
            r.iter()
                .filter(|x| x.starts_with("B-"))
                .nth(5)
                .is_some()
                .then_some(r)
        },
    )
    .await;
    let first_b = handed.iter().position(|r| r.starts_with("B-")).unwrap();
    assert!(
        handed[first_b..].iter().all(|r| r.starts_with("B-")),
        "one owner at a time: {handed:?}"
    );
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
