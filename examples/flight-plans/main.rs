//! Flight plans with one owner per flight, shared with DDS consoles, audited after the fact.
//!
//! Plays, as real DDS participants (rustdds) next to a running `squall serve` configured with
//! `examples/flight-plans/squall.toml`:
//! * the **owner** (EXCLUSIVE writer, strength 10) filing and amending plans;
//! * a **backup owner** (strength 5) whose edit is refused while the owner lives, and who takes
//!   over when the owner leaves;
//! * **console A** (live from the start) and **console B** (joins late) reading the arbitrated
//!   view topic;
//!
//! then prints what each console saw and the **audit replay** of the session from Squall's HTTP
//! API, every version rendered as JSON from its stored CDR.
//!
//! Run it with `examples/flight-plans/run.sh` (creates a private network namespace, starts
//! squall, runs this, cleans up).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine;
use rustdds::with_key::{DataReader, DataWriter, Sample};
use rustdds::{
    policy, CDRDeserializerAdapter, CDRSerializerAdapter, DomainParticipant,
    DomainParticipantBuilder, Keyed, QosPolicies, QosPolicyBuilder, TopicKind,
};
use serde::{Deserialize, Serialize};
use squall_protocols::dds::cdr::{FieldDesc, FieldType, TypeDesc};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FlightPlan {
    flight_id: String,
    version: u64,
    route: String,
}

impl Keyed for FlightPlan {
    type K = String;
    fn key(&self) -> String {
        self.flight_id.clone()
    }
}

type Writer = DataWriter<FlightPlan, CDRSerializerAdapter<FlightPlan>>;
type Reader = DataReader<FlightPlan, CDRDeserializerAdapter<FlightPlan>>;

fn qos(ownership: policy::Ownership) -> QosPolicies {
    QosPolicyBuilder::new()
        .reliability(policy::Reliability::Reliable {
            max_blocking_time: rustdds::Duration::from_millis(500),
        })
        .durability(policy::Durability::TransientLocal)
        .history(policy::History::KeepLast { depth: 16 })
        .ownership(ownership)
        .build()
}

fn participant() -> anyhow::Result<DomainParticipant> {
    DomainParticipantBuilder::new(0)
        .with_only_networks([std::net::Ipv4Addr::LOCALHOST])
        .build()
        .map_err(|e| anyhow::anyhow!("participant: {e:?}"))
}

fn writer(dp: &DomainParticipant, strength: i32) -> anyhow::Result<Writer> {
    let q = qos(policy::Ownership::Exclusive { strength });
    let topic = dp
        .create_topic(
            "FlightPlan".into(),
            "FlightPlan".into(),
            &q,
            TopicKind::WithKey,
        )
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let publisher = dp
        .create_publisher(&q)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    publisher
        .create_datawriter_cdr::<FlightPlan>(&topic, Some(q))
        .map_err(|e| anyhow::anyhow!("{e:?}"))
}

/// A console: reads the arbitrated view in a thread, printing and keeping what it sees.
fn console(name: &'static str) -> anyhow::Result<(DomainParticipant, Arc<Mutex<Vec<String>>>)> {
    let dp = participant()?;
    let q = qos(policy::Ownership::Shared);
    let topic = dp
        .create_topic(
            "FlightPlanView".into(),
            "FlightPlan".into(),
            &q,
            TopicKind::WithKey,
        )
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let subscriber = dp
        .create_subscriber(&q)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut reader: Reader = subscriber
        .create_datareader_cdr::<FlightPlan>(&topic, Some(q))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = Arc::clone(&seen);
    std::thread::spawn(move || loop {
        while let Ok(Some(s)) = reader.take_next_sample() {
            let line = match s.into_value() {
                Sample::Value(p) => format!("{} v{} {}", p.flight_id, p.version, p.route),
                Sample::Dispose(k) => format!("{k} cancelled"),
            };
            println!("  [console {name}] {line}");
            if let Ok(mut v) = out.lock() {
                v.push(line);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    });
    Ok((dp, seen))
}

fn file(w: &Writer, who: &str, id: &str, version: u64, route: &str) -> anyhow::Result<()> {
    println!("{who} files {id} v{version} {route}");
    let p = FlightPlan {
        flight_id: id.into(),
        version,
        route: route.into(),
    };
    w.write(p, Some(rustdds::Timestamp::now()))
        .map_err(|e| anyhow::anyhow!("write: {e:?}"))
}

fn pause(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let http = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let start_us = now_us();

    let (_a, seen_a) = console("A")?;
    let owner_dp = participant()?;
    let owner = writer(&owner_dp, 10)?;
    let backup_dp = participant()?;
    let backup = writer(&backup_dp, 5)?;
    pause(2000); // discovery

    file(&owner, "owner (10)", "AF447", 1, "CDG DCT GIG")?;
    file(&owner, "owner (10)", "BA117", 1, "LHR NAT-A JFK")?;
    pause(500);
    file(
        &backup,
        "backup (5)",
        "AF447",
        2,
        "CDG UN873 GIG (refused: owner is stronger)",
    )?;
    pause(500);
    file(&owner, "owner (10)", "AF447", 2, "CDG UN873 REC GIG")?;
    pause(500);

    println!("console B joins late");
    let (_b, seen_b) = console("B")?;
    pause(2500);

    println!("owner (10) cancels BA117");
    owner
        .dispose(&"BA117".to_string(), Some(rustdds::Timestamp::now()))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    pause(500);
    println!("owner (10) leaves");
    drop(owner);
    drop(owner_dp);
    pause(1500);
    file(
        &backup,
        "backup (5)",
        "AF447",
        3,
        "CDG UN873 NAT GIG (backup now owns AF447)",
    )?;
    pause(1500);

    println!(
        "\nconsole A saw: {:#?}",
        seen_a.lock().map(|v| v.clone()).unwrap_or_default()
    );
    println!(
        "console B saw: {:#?}",
        seen_b.lock().map(|v| v.clone()).unwrap_or_default()
    );

    // The audit: every version of the session, in time order, from the store.
    let ty = TypeDesc {
        fields: vec![
            FieldDesc {
                name: "flight_id".into(),
                ty: FieldType::String,
                key: true,
            },
            FieldDesc {
                name: "version".into(),
                ty: FieldType::Uint64,
                key: false,
            },
            FieldDesc {
                name: "route".into(),
                ty: FieldType::String,
                key: false,
            },
        ],
    };
    // One replay per flight, merged by time: a prefix replay goes through the key listing,
    // which leaves out keys whose newest version is a tombstone (BA117 here).
    let to_us = now_us();
    let mut lines = Vec::new();
    for flight in ["AF447", "BA117"] {
        let url = format!(
            "{http}/v1/pools/flightplans/replay?key={flight}&from_time={start_us}&to_time={to_us}&wait_ms=3000"
        );
        let mut resp = ureq::get(&url).call().context("replay request")?;
        let body = resp.body_mut().read_to_string().context("replay body")?;
        for line in body.lines() {
            let v: serde_json::Value = serde_json::from_str(line)?;
            lines.push((v["time_us"].as_u64().unwrap_or(0), v));
        }
    }
    lines.sort_by_key(|(t, _)| *t);
    println!("\naudit replay of the session (every stored version, in time order):");
    for (_, v) in lines {
        let rendered = if v["tombstone"] == true {
            serde_json::Value::from("(disposed)")
        } else {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v["value"].as_str().unwrap_or(""))
                .context("value")?;
            ty.to_json(&bytes)
                .unwrap_or_else(|e| serde_json::Value::from(e.to_string()))
        };
        println!(
            "  t={} key={} v{} sensor_t={} {}",
            v["time_us"], v["key"], v["version"], v["sensor_time_us"], rendered
        );
    }
    Ok(())
}
