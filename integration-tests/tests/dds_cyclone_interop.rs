//! The DDS face against a real, independent DDS implementation (Eclipse Cyclone DDS through its
//! Python binding), each test in its own network namespace (loopback only, multicast on):
//! * a Cyclone writer's samples become versions of `pool/instance` (CDR bytes with header, source
//!   timestamp as sensor time) and a late-joining Cyclone reader gets the current value of every
//!   instance from Squall after that writer has exited (TRANSIENT_LOCAL served by the broker);
//!   the writer's loss is recorded as a `writer_lost` event in `<pool>.events`, not a tombstone;
//! * a put from another face reaches a live Cyclone reader exactly once, a tombstone reaches it
//!   as a dispose, and nothing the face stored from DDS is sent back to DDS;
//! * versions written by a Cyclone writer can be read back by time (`get_at`).
//!
//! The node is the in-memory test node (squall_protocols::testing::MemNode), not the broker.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod dds_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use dds_support::{eventually, flight_topic, in_netns, mem_face, Peer};
use squall_protocols::dds::cdr::TypeDesc;
use squall_protocols::{Node, PutRequest};
use squall_storage::Clock;

fn route_of(ty: &TypeDesc, value: &[u8]) -> String {
    ty.to_json(value).unwrap()["route"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cyclone_writer_to_late_joining_reader_after_writer_exit() {
    if !in_netns("cyclone_writer_to_late_joining_reader_after_writer_exit") {
        return;
    }
    let topic = flight_topic("FlightPlan", "flightplans");
    let (node, ty, face) = mem_face(topic).await;

    // A live reader, present before, during and after the writer's life.
    let live = Peer::start(
        "live-reader",
        &["sub", "--transient-local", "--seconds", "25"],
    );
    live.wait_line(Duration::from_secs(10), |l| l == "ready");
    // A Cyclone TRANSIENT_LOCAL writer: 3 versions of FP1 and FP2, then it exits.
    let mut w = Peer::start(
        "writer",
        &[
            "pub",
            "--key",
            "FP1,FP2",
            "--count",
            "3",
            "--transient-local",
            "--linger-s",
            "0.5",
        ],
    );
    w.wait_exit(Duration::from_secs(20));
    let stored = eventually(Duration::from_secs(10), "FP1/FP2 version 3 stored", || {
        let a = node.get("flightplans", "FP1").ok()?;
        let b = node.get("flightplans", "FP2").ok()?;
        (route_of(&ty, &a.value) == "R-3" && route_of(&ty, &b.value) == "R-3").then_some((a, b))
    })
    .await;
    // Stored as the wire bytes: XCDR1 little endian header, sensor time = source timestamp.
    assert_eq!(&stored.0.value[0..2], &[0x00, 0x01]);
    let sensor = stored
        .0
        .version
        .sensor_time_us
        .expect("source timestamp kept as sensor time");
    let platform = stored.0.version.time.physical_us;
    assert!(
        sensor <= platform && platform - sensor < 5_000_000,
        "sensor {sensor} platform {platform}"
    );
    assert_eq!(face.stats().samples_stored.load(Ordering::Relaxed), 6);

    // The writer is gone (the face saw it leave); only the store still has its instances.
    eventually(Duration::from_secs(15), "writer loss noticed", || {
        (face.stats().writers_lost.load(Ordering::Relaxed) >= 1).then_some(())
    })
    .await;
    assert_eq!(
        face.stats().published.load(Ordering::Relaxed),
        0,
        "nothing re-published to live readers"
    );
    // The loss is recorded as an event of each instance, not as a tombstone: the value stays.
    for k in ["FP1", "FP2"] {
        let ev = eventually(Duration::from_secs(5), "writer_lost event", || {
            node.read_from("flightplans.events", k, 0, usize::MAX, 100)
                .ok()
                .filter(|v| !v.is_empty())
        })
        .await;
        let j: serde_json::Value = serde_json::from_slice(&ev[0].value).unwrap();
        assert_eq!(j["event"], "writer_lost", "{j}");
        assert!(j["writer"].as_str().unwrap().starts_with("dds:"), "{j}");
        let e = node.get("flightplans", k).unwrap();
        assert!(!e.tombstone);
        assert_eq!(
            route_of(&ty, &e.value),
            "R-3",
            "the value is kept after the writer left"
        );
    }

    let r = Peer::start(
        "late-reader",
        &[
            "sub",
            "--transient-local",
            "--seconds",
            "6",
            "--expect",
            "2",
        ],
    );
    r.wait_line(Duration::from_secs(15), |l| l.starts_with("done"));
    let got = r.samples();
    let valid: Vec<_> = got.iter().filter(|s| s["valid"] == true).collect();
    assert_eq!(
        valid.len(),
        2,
        "exactly one sample per instance, got {got:?}"
    );
    for k in ["FP1", "FP2"] {
        let s = valid
            .iter()
            .find(|s| s["key"] == k)
            .unwrap_or_else(|| panic!("{k} missing in {got:?}"));
        assert_eq!(s["route"], "R-3");
        assert_eq!(s["version"], 3);
    }
    // Served to that reader alone, with the writer's source timestamp; the live reader got
    // every version exactly once (from the writer), nothing more from Squall.
    assert_eq!(face.stats().published.load(Ordering::Relaxed), 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut seen: Vec<(String, u64)> = live
        .samples()
        .iter()
        .filter(|s| s["valid"] == true)
        .map(|s| {
            (
                s["key"].as_str().unwrap().to_owned(),
                s["version"].as_u64().unwrap(),
            )
        })
        .collect();
    seen.sort();
    let want: Vec<(String, u64)> = ["FP1", "FP2"]
        .iter()
        .flat_map(|k| (1..=3).map(move |v| (k.to_string(), v)))
        .collect();
    assert_eq!(seen, want, "live reader: each version once");
    assert_eq!(face.stats().undecodable.load(Ordering::Relaxed), 0);
    face.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_face_put_reaches_cyclone_reader_once_and_dds_samples_do_not_loop() {
    if !in_netns("other_face_put_reaches_cyclone_reader_once_and_dds_samples_do_not_loop") {
        return;
    }
    let topic = flight_topic("FlightPlan", "flightplans");
    let (node, ty, face) = mem_face(topic).await;

    let r = Peer::start("reader", &["sub", "--transient-local", "--seconds", "12"]);
    r.wait_line(Duration::from_secs(10), |l| l == "ready");
    tokio::time::sleep(Duration::from_millis(1500)).await; // discovery

    // An HTTP/Kafka-style put: the JSON rendering of the type, stored as CDR.
    for v in 1..=3u64 {
        let j = serde_json::json!({"flight_id": "FP9", "version": v, "route": format!("HTTP-{v}")});
        let value = Bytes::from(ty.from_json(&j).unwrap());
        node.put(PutRequest::new("flightplans", "FP9", value))
            .await
            .unwrap();
    }
    // A Cyclone writer on the same topic: its samples reach the reader directly, and must not
    // come a second time through Squall.
    let mut w = Peer::start(
        "writer",
        &[
            "pub",
            "--key",
            "FP5",
            "--count",
            "2",
            "--transient-local",
            "--linger-s",
            "3",
        ],
    );
    eventually(
        Duration::from_secs(10),
        "reader got 3 HTTP versions and 2 DDS ones",
        || {
            let n = r.samples().iter().filter(|s| s["valid"] == true).count();
            (n >= 5).then_some(())
        },
    )
    .await;
    // A delete from another face: a dispose for DDS readers.
    let mut del = PutRequest::new("flightplans", "FP9", Bytes::new());
    del.tombstone = true;
    node.put(del).await.unwrap();
    eventually(Duration::from_secs(10), "reader saw FP9 disposed", || {
        r.samples()
            .iter()
            .any(|s| s["key"] == "FP9" && s["state"] == "disposed")
            .then_some(())
    })
    .await;
    w.wait_exit(Duration::from_secs(20));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let valid: Vec<_> = r
        .samples()
        .into_iter()
        .filter(|s| s["valid"] == true)
        .collect();
    let fp9: Vec<_> = valid
        .iter()
        .filter(|s| s["key"] == "FP9")
        .map(|s| s["route"].clone())
        .collect();
    assert_eq!(
        fp9,
        vec!["HTTP-1", "HTTP-2", "HTTP-3"],
        "each HTTP version once, in order"
    );
    let fp5: Vec<_> = valid
        .iter()
        .filter(|s| s["key"] == "FP5")
        .map(|s| s["route"].clone())
        .collect();
    assert_eq!(
        fp5,
        vec!["R-1", "R-2"],
        "DDS samples once (from their writer), never echoed by Squall"
    );
    assert_eq!(face.stats().loops_suppressed.load(Ordering::Relaxed), 2);
    face.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cyclone_writer_versions_readable_by_time() {
    if !in_netns("cyclone_writer_versions_readable_by_time") {
        return;
    }
    let mut topic = flight_topic("FlightPlan", "flightlog");
    topic.history = squall_protocols::dds::config::History::KeepAll; // versioned pool
    let (node, ty, face) = mem_face(topic).await;
    let mut w = Peer::start(
        "writer",
        &[
            "pub",
            "--key",
            "FP1",
            "--count",
            "4",
            "--interval-ms",
            "300",
            "--transient-local",
            "--linger-s",
            "0.2",
        ],
    );
    w.wait_exit(Duration::from_secs(20));
    let versions = eventually(Duration::from_secs(10), "4 versions stored", || {
        let v = node
            .read_from("flightlog", "FP1", 0, usize::MAX, 100)
            .ok()?;
        (v.len() == 4).then_some(v)
    })
    .await;
    for (i, e) in versions.iter().enumerate() {
        assert_eq!(route_of(&ty, &e.value), format!("R-{}", i + 1));
        // Between version i and i+1 (300 ms apart), a read at time T sees version i.
        for clock in [Clock::Platform, Clock::Sensor] {
            let t = match clock {
                Clock::Platform => e.version.time.physical_us,
                Clock::Sensor => e.version.sensor_time_us.unwrap(),
            } + 100_000;
            let got = node
                .get_at("flightlog", "FP1", t, clock, Duration::from_secs(2))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                got.version.key_version, e.version.key_version,
                "{clock:?} at {t}"
            );
        }
    }
    face.shutdown();
}
