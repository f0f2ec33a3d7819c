//! Bad input at the DDS face, from real peers in a private network namespace: samples that do
//! not decode for the configured type (a Cyclone writer using the same type name with another
//! layout), two instances whose key values map to one store key, a writer on a topic nobody
//! configured, and a storm of malformed RTPS datagrams at the participant's ports. Each is
//! refused and counted, nothing panics, and a well-behaved writer is still recorded afterwards.
//!
//! The node is the in-memory test node (squall_protocols::testing::MemNode), not the broker.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod dds_support;

use std::net::UdpSocket;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use dds_support::{config, eventually, flight_topic, in_netns, Peer};
use squall_protocols::dds::cdr::{FieldDesc, FieldType};
use squall_protocols::dds::config::DdsTopicConfig;
use squall_protocols::dds::DdsFace;
use squall_protocols::testing::MemNode;
use squall_protocols::Node;

fn pair_topic() -> DdsTopicConfig {
    DdsTopicConfig {
        name: "Pair".into(),
        type_name: "Pair".into(),
        pool: "pairs".into(),
        fields: vec![
            FieldDesc {
                name: "a".into(),
                ty: FieldType::String,
                key: true,
            },
            FieldDesc {
                name: "b".into(),
                ty: FieldType::String,
                key: true,
            },
            FieldDesc {
                name: "v".into(),
                ty: FieldType::String,
                key: false,
            },
        ],
        ..DdsTopicConfig::default()
    }
}

/// Malformed RTPS: garbage, a valid header with nonsense submessages, lengths past the end.
fn rtps_storm() -> usize {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut header = b"RTPS\x02\x03\x01\x0f".to_vec();
    header.extend_from_slice(&[7u8; 12]); // guid prefix
    let mut frames: Vec<Vec<u8>> = vec![vec![], b"RTPS".to_vec(), vec![0xff; 1400], header.clone()];
    for (id, len) in [
        (0x15u8, 0xffffu16),
        (0x15, 3),
        (0x09, 0),
        (0x16, 0x7fff),
        (0x07, 28),
        (0x0e, 12),
        (0x42, 8),
    ] {
        let mut f = header.clone();
        f.extend_from_slice(&[id, 0x01]);
        f.extend_from_slice(&len.to_le_bytes());
        f.extend(std::iter::repeat_n(0xa5u8, usize::from(len.min(64))));
        frames.push(f);
    }
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..200 {
        let mut f = header.clone();
        for _ in 0..(seed % 300) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            f.push(seed as u8);
        }
        frames.push(f);
    }
    let mut sent = 0;
    // Domain 0: SPDP 7400 (multicast port, also unicast here), user traffic 7401, and the
    // unicast ports of participants 0..9 (7410 + 2i, 7411 + 2i).
    let ports: Vec<u16> = [7400u16, 7401].into_iter().chain(7410..7430).collect();
    for f in &frames {
        for p in &ports {
            if sock.send_to(f, ("127.0.0.1", *p)).is_ok() {
                sent += 1;
            }
        }
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_samples_collisions_unknown_topics_and_malformed_rtps_are_counted() {
    if !in_netns("bad_samples_collisions_unknown_topics_and_malformed_rtps_are_counted") {
        return;
    }
    let node = Arc::new(MemNode::new());
    let face = DdsFace::start(
        config(vec![
            flight_topic("FlightPlan", "flightplans"),
            pair_topic(),
        ]),
        Arc::clone(&node),
    )
    .await
    .unwrap();
    let stats = Arc::clone(face.stats());

    // Undecodable: same type name, another layout.
    let mut bad = Peer::start(
        "bad",
        &[
            "badpub",
            "--key",
            "FP1",
            "--count",
            "3",
            "--transient-local",
            "--linger-s",
            "0.3",
        ],
    );
    bad.wait_exit(Duration::from_secs(20));
    eventually(
        Duration::from_secs(10),
        "3 undecodable samples counted",
        || (stats.undecodable.load(Ordering::Relaxed) >= 3).then_some(()),
    )
    .await;
    assert!(
        node.get("flightplans", "FP1").is_err(),
        "nothing stored from undecodable samples"
    );

    // Key collision: ("x/y","z") and ("x","y/z") both map to store key "x/y/z".
    let mut pair = Peer::start(
        "pair",
        &[
            "pairpub",
            "--topic",
            "Pair",
            "--count",
            "2",
            "--transient-local",
            "--linger-s",
            "0.3",
        ],
    );
    pair.wait_exit(Duration::from_secs(20));
    eventually(Duration::from_secs(10), "collisions counted", || {
        (stats.key_collisions.load(Ordering::Relaxed) >= 2).then_some(())
    })
    .await;
    let v = node.get("pairs", "x/y/z").unwrap();
    let j = pair_topic().type_desc().to_json(&v.value).unwrap();
    assert_eq!(j["a"], "x/y", "the first instance keeps the key: {j}");

    // A writer on a topic nobody configured.
    let mut unknown = Peer::start(
        "unknown",
        &[
            "pub",
            "--topic",
            "NoSuchTopic",
            "--count",
            "1",
            "--match-timeout-s",
            "1",
            "--linger-s",
            "1",
        ],
    );
    unknown.wait_exit(Duration::from_secs(20));
    eventually(
        Duration::from_secs(10),
        "unknown topic writer counted",
        || (stats.unknown_topic_writers.load(Ordering::Relaxed) >= 1).then_some(()),
    )
    .await;
    assert!(node.pool("NoSuchTopic").is_none());

    // Malformed RTPS at every port the participants listen on.
    let sent = rtps_storm();
    assert!(sent > 1000, "sent {sent} datagrams");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Still alive and recording.
    let mut good = Peer::start(
        "good",
        &[
            "pub",
            "--key",
            "FP2",
            "--count",
            "2",
            "--transient-local",
            "--linger-s",
            "0.3",
        ],
    );
    good.wait_exit(Duration::from_secs(20));
    let ty = flight_topic("FlightPlan", "flightplans").type_desc();
    eventually(
        Duration::from_secs(10),
        "good writer recorded after the bad input",
        || {
            let e = node.get("flightplans", "FP2").ok()?;
            (ty.to_json(&e.value).ok()?["route"] == "R-2").then_some(())
        },
    )
    .await;
    eprintln!("dds stats after bad input: {:?}", stats.snapshot());
    face.shutdown();
}
