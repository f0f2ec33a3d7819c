//! Owners survive a crash of `squall serve`: an HTTP editor claims two flight plans in a durable
//! pool (`Squall-Owner`, `Squall-Strength: 30`; one with a long lease, one with a 3 s lease),
//! the process is killed with SIGKILL and restarted on the same data directory. Before the fix
//! every key came back without an owner, so a weaker editor could take a flight over after a
//! restart. Now the store replays the owners from the log: a weaker editor and a plain PUT are
//! still refused with 409 `not_owner` while the lease runs, the owner itself can still edit, and
//! once the short lease (an absolute time, kept across the restart) has run out the weaker
//! editor gets the flight. No DDS traffic is needed: the owners are the store's, the same ones
//! the DDS face claims for its writers.

use std::time::{Duration, Instant};

use squall_integration_tests::{http_agent, Squall};

/// A PUT with headers; returns the status and the body.
fn put(base: &str, key: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut req = http_agent().put(format!("{base}/v1/pools/fp/keys/{key}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut r = req.send(body.as_bytes()).expect("PUT");
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_string().unwrap_or_default())
}

const OWNER: [(&str, &str); 3] = [
    ("Squall-Owner", "console-1"),
    ("Squall-Strength", "30"),
    ("Squall-Lease-Ms", "600000"),
];
const WEAK: [(&str, &str); 2] = [("Squall-Owner", "console-2"), ("Squall-Strength", "10")];

fn refused(r: (u16, String), what: &str) {
    assert_eq!(r.0, 409, "{what}: {}", r.1);
    assert!(r.1.contains("not_owner"), "{what}: {}", r.1);
}

#[test]
fn http_owners_survive_sigkill_and_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut node = Squall::start(dir.path(), &[])?;
    let base = node.http_url();
    let mut r = http_agent()
        .post(format!("{base}/v1/pools"))
        .header("content-type", "application/json")
        .send(r#"{"name":"fp","mode":"versioned","durable":true}"#)?;
    assert_eq!(
        r.status().as_u16(),
        201,
        "{}",
        r.body_mut().read_to_string()?
    );

    // FP1: a long lease; FP2: a 3 s lease.
    let (s, b) = put(&base, "FP1", &OWNER, "route-1");
    assert!(s == 200 || s == 201, "claim FP1: {s} {b}");
    let short = [
        ("Squall-Owner", "console-1"),
        ("Squall-Strength", "30"),
        ("Squall-Lease-Ms", "3000"),
    ];
    let (s, b) = put(&base, "FP2", &short, "route-2");
    assert!(s == 200 || s == 201, "claim FP2: {s} {b}");
    let claimed_fp2 = Instant::now();
    refused(
        put(&base, "FP1", &WEAK, "weak"),
        "weaker editor before the crash",
    );
    refused(
        put(&base, "FP1", &[], "plain"),
        "plain PUT before the crash",
    );

    node.kill()?;
    let node = Squall::start(dir.path(), &[])?;
    let base = node.http_url();

    // The owners came back with the log.
    refused(
        put(&base, "FP1", &WEAK, "weak"),
        "weaker editor after the restart",
    );
    refused(
        put(&base, "FP1", &[], "plain"),
        "plain PUT after the restart",
    );
    if claimed_fp2.elapsed() < Duration::from_millis(2500) {
        refused(
            put(&base, "FP2", &WEAK, "weak"),
            "weaker editor within FP2's lease",
        );
    }
    let (s, b) = put(&base, "FP1", &OWNER, "route-1b");
    assert!(
        s == 200 || s == 201,
        "the owner edits after the restart: {s} {b}"
    );
    // FP2's lease ran out at claim + 3 s (platform time), restart or not.
    let wait = Duration::from_millis(3300).saturating_sub(claimed_fp2.elapsed());
    std::thread::sleep(wait);
    let (s, b) = put(&base, "FP2", &WEAK, "weak-after-lease");
    assert!(s == 200 || s == 201, "FP2 free after its lease: {s} {b}");
    refused(
        put(
            &base,
            "FP2",
            &[("Squall-Owner", "console-1"), ("Squall-Strength", "5")],
            "x",
        ),
        "the new owner (10) holds FP2 against a weaker claim",
    );
    Ok(())
}
