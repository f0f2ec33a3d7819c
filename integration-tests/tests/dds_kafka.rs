//! Kafka ↔ DDS through `squall serve` (real binary, a `[[dds.topic]]` with `kafka_topic`), with
//! librdkafka (the `rdkafka` crate) and Cyclone DDS peers, in a private network namespace.
//!
//! * Cyclone writer → Squall → Kafka consumer: each DDS sample is one record of the bridged
//!   Kafka topic, keyed by the instance key, value = the sample as stored (CDR with header),
//!   timestamp = the source timestamp, marked `squall-origin: dds`, in the partition Kafka's
//!   default (murmur2) partitioner picks for the key; and HTTP `get_at` by sensor time reads
//!   the same versions.
//! * Kafka producer → Squall → Cyclone reader: a JSON record and a CDR record keyed by the
//!   instance reach a live Cyclone reader once each, in order; a `null` record disposes the
//!   instance; a record whose key differs from the sample's instance is not bridged (counted).
//!   Nothing loops: the Kafka topic holds exactly the records written to it plus the ones the
//!   bridge produced from DDS, each once.
//!
//! * The Kafka → DDS bridge keeps its position (per partition, in an internal pool): records
//!   produced while no DDS face ran (the node restarted without the `[[dds.topic]]`) are
//!   bridged when the face is back, and records bridged before the restart are not bridged
//!   again (each instance ends with exactly one version per record).
//!
//! * A Kafka producer claims an instance with record headers (`squall-owner`,
//!   `squall-strength`, `squall-lease-ms`): the claim passes, a record without a claim or with
//!   a weaker one is refused at produce time with POLICY_VIOLATION and a message naming the
//!   owner and what to send, a malformed claim with INVALID_RECORD, a stronger claim takes the
//!   instance over, and the store holds the owner for every face (an HTTP editor below it gets
//!   409).
//!
//! Why: the DDS face and the Kafka face key data differently (`pool/instance` vs `topic/p`);
//! this checks the documented mapping end to end with two independent real clients.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod dds_support;

use std::time::{Duration, Instant};

use dds_support::{flight_topic, in_netns_with, Peer};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedHeaders;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{
    BaseRecord, DefaultProducerContext, FutureProducer, FutureRecord, Producer, ThreadedProducer,
};
use rdkafka::{Offset, TopicPartitionList};
use squall_integration_tests::{http_agent, squall_bin, Squall};
use squall_protocols::dds::kafka_bridge::partition_for;

const CONFIG: &str = r#"
[dds]
domain_id = 0
interfaces = ["127.0.0.1"]

[[dds.topic]]
name = "FlightPlan"
type_name = "FlightPlan"
pool = "flightplans"
durability = "transient_local"
history = "keep_all"
reliability = "reliable"
kafka_topic = "flightplans-kafka"
kafka_partitions = 3
fields = [
  { name = "flight_id", type = "string", key = true },
  { name = "version", type = "uint64" },
  { name = "route", type = "string" },
]
"#;
const KTOPIC: &str = "flightplans-kafka";

/// One consumed record: partition, key, value (None = tombstone), timestamp ms, origin header.
type Rec = (i32, String, Option<Vec<u8>>, i64, Option<String>);

fn consume_all(bootstrap: &str, want: usize, timeout: Duration) -> Vec<Rec> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("dds-kafka-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset(KTOPIC, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let end = Instant::now() + timeout;
    let mut out = Vec::new();
    while Instant::now() < end && out.len() < want {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let origin = m.headers().and_then(|h| {
                h.iter()
                    .find(|x| x.key == "squall-origin")
                    .and_then(|x| x.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            });
            out.push((
                m.partition(),
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                m.payload().map(<[u8]>::to_vec),
                m.timestamp().to_millis().unwrap_or(-1),
                origin,
            ));
        }
    }
    out
}

fn get(agent: &ureq::Agent, url: &str) -> (u16, Option<u64>, Vec<u8>) {
    let mut r = agent.get(url).call().unwrap();
    let v = r
        .headers()
        .get("squall-version")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let b = r.body_mut().read_to_vec().unwrap();
    (r.status().as_u16(), v, b)
}

fn metric(agent: &ureq::Agent, base: &str, name: &str) -> u64 {
    let (_, _, m) = get(agent, &format!("{base}/metrics"));
    String::from_utf8_lossy(&m)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} "))?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn kafka_and_dds_bridge_both_ways() {
    let bin = squall_bin().unwrap().to_string_lossy().into_owned();
    if !in_netns_with("kafka_and_dds_bridge_both_ways", &[("SQUALL_BIN", &bin)]) {
        return;
    }
    let ty = flight_topic("FlightPlan", "flightplans").type_desc();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("squall.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let node = Squall::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    )
    .unwrap();
    let bootstrap = node.kafka_bootstrap().unwrap();
    let base = node.http_url();
    let agent = http_agent();

    // --- Cyclone writer → Squall → Kafka consumer (and HTTP get_at) ---
    let mut w = Peer::start(
        "writer",
        &[
            "pub",
            "--key",
            "FP1",
            "--count",
            "3",
            "--interval-ms",
            "300",
            "--transient-local",
            "--linger-s",
            "0.3",
        ],
    );
    w.wait_exit(Duration::from_secs(20));
    let recs = consume_all(&bootstrap, 3, Duration::from_secs(20));
    assert_eq!(recs.len(), 3, "{recs:?}");
    let part = partition_for(b"FP1", 3);
    for (i, (p, k, v, ts, origin)) in recs.iter().enumerate() {
        assert_eq!(
            (*p, k.as_str()),
            (part, "FP1"),
            "keyed by instance, murmur2 partition"
        );
        assert_eq!(origin.as_deref(), Some("dds"));
        let v = v.as_ref().expect("a value");
        assert_eq!(
            &v[..2],
            &[0x00, 0x01],
            "the sample as stored: CDR with its header"
        );
        assert_eq!(ty.to_json(v).unwrap()["route"], format!("R-{}", i + 1));
        // The record timestamp is the source timestamp: HTTP reads the version by it.
        let at_us = (*ts as u64) * 1000 + 999;
        let (s, ver, b) = get(
            &agent,
            &format!("{base}/v1/pools/flightplans/keys/FP1?at={at_us}&clock=sensor&wait_ms=3000"),
        );
        assert_eq!(s, 200);
        assert_eq!(ver, Some(i as u64), "get_at(sensor time of record {i})");
        assert_eq!(&b[..], &v[..]);
    }

    // --- Kafka producer → Squall → Cyclone reader ---
    let r = Peer::start("reader", &["sub", "--transient-local", "--seconds", "25"]);
    r.wait_line(Duration::from_secs(10), |l| l == "ready");
    std::thread::sleep(Duration::from_millis(1500));
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "0")
        .create()
        .unwrap();
    let json = serde_json::json!({"flight_id": "AF447", "version": 1, "route": "K-1"}).to_string();
    let cdr = ty
        .from_json(&serde_json::json!({"flight_id": "AF447", "version": 2, "route": "K-2"}))
        .unwrap();
    p.send(BaseRecord::to(KTOPIC).key("AF447").payload(json.as_bytes()))
        .map_err(|(e, _)| e)
        .unwrap();
    p.flush(Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    p.send(BaseRecord::to(KTOPIC).key("AF447").payload(&cdr))
        .map_err(|(e, _)| e)
        .unwrap();
    // A sample of AF447 under another key: not bridged.
    p.send(BaseRecord::to(KTOPIC).key("AF448").payload(&cdr))
        .map_err(|(e, _)| e)
        .unwrap();
    p.flush(Duration::from_secs(10)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    p.send(BaseRecord::<str, [u8]>::to(KTOPIC).key("AF447"))
        .map_err(|(e, _)| e)
        .unwrap();
    p.flush(Duration::from_secs(10)).unwrap();

    let end = Instant::now() + Duration::from_secs(15);
    while !r
        .samples()
        .iter()
        .any(|s| s["key"] == "AF447" && s["state"] == "disposed")
    {
        assert!(
            Instant::now() < end,
            "AF447 disposed at the reader: {:?}",
            r.lines()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let routes: Vec<String> = r
        .samples()
        .iter()
        .filter(|s| s["valid"] == true && s["key"] == "AF447")
        .map(|s| s["route"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(routes, vec!["K-1", "K-2"], "each record once, in order");
    assert_eq!(
        metric(&agent, &base, "squall_dds_kafka_records_in_total"),
        3
    );
    assert_eq!(
        metric(&agent, &base, "squall_dds_kafka_records_bad_total"),
        1
    );
    assert_eq!(
        metric(&agent, &base, "squall_dds_kafka_records_out_total"),
        3
    );
    // No loop: the topic holds the 3 records from DDS and the 4 produced, each once.
    std::thread::sleep(Duration::from_millis(500));
    let all = consume_all(&bootstrap, 8, Duration::from_secs(5));
    assert_eq!(all.len(), 7, "{all:?}");
    assert_eq!(
        all.iter().filter(|r| r.4.as_deref() == Some("dds")).count(),
        3
    );
    // The HTTP view of the instance: K-1, K-2 then the dispose.
    let (s, _, _) = get(&agent, &format!("{base}/v1/pools/flightplans/keys/AF447"));
    assert_eq!(s, 404, "disposed");
    let (s, _, b) = get(
        &agent,
        &format!("{base}/v1/pools/flightplans/keys/AF447?version=1"),
    );
    assert_eq!(s, 200);
    assert_eq!(ty.to_json(&b).unwrap()["route"], "K-2");
}

fn produce_json(bootstrap: &str, records: &[(&str, &str)]) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "0")
        .create()
        .unwrap();
    for (i, (key, route)) in records.iter().enumerate() {
        let json = serde_json::json!({"flight_id": key, "version": i, "route": route}).to_string();
        p.send(BaseRecord::to(KTOPIC).key(*key).payload(json.as_bytes()))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();
}

/// The routes stored for `key` in the DDS topic's pool, version by version.
fn stored_routes(agent: &ureq::Agent, base: &str, key: &str) -> Vec<String> {
    let ty = flight_topic("FlightPlan", "flightplans").type_desc();
    let mut out = Vec::new();
    for v in 0.. {
        let mut r = agent
            .get(format!(
                "{base}/v1/pools/flightplans/keys/{key}?version={v}"
            ))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .unwrap();
        if r.status().as_u16() != 200 {
            break;
        }
        let b = r.body_mut().read_to_vec().unwrap();
        out.push(
            ty.to_json(&b).unwrap()["route"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    out
}

#[test]
fn kafka_bridge_resumes_from_its_saved_position_after_a_restart() {
    let bin = squall_bin().unwrap().to_string_lossy().into_owned();
    if !in_netns_with(
        "kafka_bridge_resumes_from_its_saved_position_after_a_restart",
        &[("SQUALL_BIN", &bin)],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("squall.toml");
    // PERSISTENT: the topic's pool and the Kafka topic are durable, so they outlive restarts.
    let persistent = CONFIG.replace(
        r#"durability = "transient_local""#,
        r#"durability = "persistent""#,
    );
    assert_ne!(persistent, CONFIG);
    std::fs::write(&cfg, persistent).unwrap();
    let data = dir.path().join("data");
    let with_dds = ["--config", cfg.to_str().unwrap()];
    let agent = http_agent();
    let keys = ["AF1", "AF2", "AF3", "AF4"];

    // 1. With the face: records are bridged as they come.
    let mut node = Squall::start(&data, &with_dds).unwrap();
    let first: Vec<(&str, &str)> = keys.iter().map(|k| (*k, "first")).collect();
    produce_json(&node.kafka_bootstrap().unwrap(), &first);
    let base = node.http_url();
    let end = Instant::now() + Duration::from_secs(20);
    while keys
        .iter()
        .any(|k| stored_routes(&agent, &base, k).is_empty())
    {
        assert!(Instant::now() < end, "first records not bridged");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300)); // the positions are saved after each batch
    assert!(node.terminate(Duration::from_secs(20)).unwrap().success());

    // 2. Without the face: records only reach the Kafka topic.
    let mut node = Squall::start(&data, &[]).unwrap();
    let second: Vec<(&str, &str)> = keys.iter().map(|k| (*k, "second")).collect();
    produce_json(&node.kafka_bootstrap().unwrap(), &second);
    let base = node.http_url();
    for k in keys {
        assert_eq!(
            stored_routes(&agent, &base, k),
            ["first"],
            "{k} while no face runs"
        );
    }
    assert!(node.terminate(Duration::from_secs(20)).unwrap().success());

    // 3. The face again: it bridges the second records, and only those.
    let node = Squall::start(&data, &with_dds).unwrap();
    let base = node.http_url();
    let end = Instant::now() + Duration::from_secs(20);
    while keys
        .iter()
        .any(|k| stored_routes(&agent, &base, k).len() < 2)
    {
        assert!(
            Instant::now() < end,
            "records produced while the face was down were not bridged: {:?}",
            keys.map(|k| stored_routes(&agent, &base, k))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A live record after the restart is bridged too, once.
    produce_json(&node.kafka_bootstrap().unwrap(), &[("AF1", "third")]);
    let end = Instant::now() + Duration::from_secs(20);
    while stored_routes(&agent, &base, "AF1").len() < 3 {
        assert!(
            Instant::now() < end,
            "live record after the restart not bridged"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1000));
    for k in keys {
        let want: &[&str] = if k == "AF1" {
            &["first", "second", "third"]
        } else {
            &["first", "second"]
        };
        assert_eq!(
            stored_routes(&agent, &base, k),
            want,
            "{k}: each record bridged exactly once"
        );
    }
    assert_eq!(
        metric(&agent, &base, "squall_dds_kafka_records_in_total"),
        5,
        "after the restart the face bridged the four missed records and the live one"
    );
}

#[test]
fn kafka_producers_claim_instances_with_record_headers() {
    let bin = squall_bin().unwrap().to_string_lossy().into_owned();
    if !in_netns_with(
        "kafka_producers_claim_instances_with_record_headers",
        &[("SQUALL_BIN", &bin)],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("squall.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let node = Squall::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    )
    .unwrap();
    let bootstrap = node.kafka_bootstrap().unwrap();
    let base = node.http_url();
    let agent = http_agent();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("partitioner", "murmur2_random")
        .set("message.send.max.retries", "0")
        .create()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Sends one JSON record for AF9 with these headers; Ok or the error code and message.
    let send = |route: &str, headers: &[(&str, &str)]| {
        let json =
            serde_json::json!({"flight_id": "AF9", "version": 1, "route": route}).to_string();
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(rdkafka::message::Header {
                key: k,
                value: Some(*v),
            });
        }
        let rec = FutureRecord::to(KTOPIC)
            .key("AF9")
            .payload(&json)
            .headers(h);
        rt.block_on(producer.send(rec, Duration::from_secs(10)))
            .map(|_| ())
            .map_err(|(e, _)| e)
    };
    let code = |r: Result<(), rdkafka::error::KafkaError>| match r {
        Err(e) => (e.rdkafka_error_code(), e.to_string()),
        Ok(()) => panic!("the record was accepted"),
    };

    send(
        "ops1-a",
        &[("squall-owner", "ops-1"), ("squall-strength", "30")],
    )
    .unwrap();
    let (c, msg) = code(send("plain", &[]));
    assert_eq!(
        c,
        Some(rdkafka::types::RDKafkaErrorCode::PolicyViolation),
        "{msg}"
    );
    let (c, msg) = code(send(
        "weak",
        &[("squall-owner", "ops-2"), ("squall-strength", "10")],
    ));
    assert_eq!(
        c,
        Some(rdkafka::types::RDKafkaErrorCode::PolicyViolation),
        "{msg}"
    );
    let (c, msg) = code(send(
        "bad",
        &[("squall-owner", "ops-2"), ("squall-strength", "lots")],
    ));
    assert_eq!(
        c,
        Some(rdkafka::types::RDKafkaErrorCode::InvalidRecord),
        "{msg}"
    );
    send(
        "ops1-b",
        &[("squall-owner", "ops-1"), ("squall-strength", "30")],
    )
    .unwrap();
    send(
        "ops2-a",
        &[("squall-owner", "ops-2"), ("squall-strength", "40")],
    )
    .unwrap();
    let (c, msg) = code(send(
        "ops1-c",
        &[("squall-owner", "ops-1"), ("squall-strength", "30")],
    ));
    assert_eq!(
        c,
        Some(rdkafka::types::RDKafkaErrorCode::PolicyViolation),
        "{msg}"
    );

    // The accepted records (and only those) reach the DDS topic's pool, in order.
    let ty = flight_topic("FlightPlan", "flightplans").type_desc();
    let end = Instant::now() + Duration::from_secs(20);
    let routes = loop {
        let mut routes = Vec::new();
        for v in 0..10 {
            let (s, _, b) = get(
                &agent,
                &format!("{base}/v1/pools/flightplans/keys/AF9?version={v}"),
            );
            if s != 200 {
                break;
            }
            routes.push(
                ty.to_json(&b).unwrap()["route"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        if routes.len() >= 3 || Instant::now() > end {
            break routes;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(routes, ["ops1-a", "ops1-b", "ops2-a"]);
    // The store holds the owner for every face: an HTTP editor weaker than ops-2 gets 409.
    let mut r = agent
        .put(format!("{base}/v1/pools/flightplans/keys/AF9"))
        .config()
        .http_status_as_error(false)
        .build()
        .header("Squall-Owner", "console-1")
        .header("Squall-Strength", "35")
        .send(b"x".as_slice())
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        409,
        "{}",
        r.body_mut().read_to_string().unwrap()
    );
}
