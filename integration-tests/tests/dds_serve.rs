//! The DDS face as `squall serve` runs it (real binary, real store, `[[dds.topic]]` from a TOML
//! config), with Cyclone DDS peers, in a private network namespace:
//! * Cyclone writer → Squall → HTTP: every version stored as CDR, readable by version and by
//!   time (`?at=`, platform and sensor clock), and a late-joining Cyclone reader served by the
//!   broker after the writer exited; the DDS counters are on `/metrics`;
//! * HTTP put (the CDR bytes of a JSON-described sample) → Squall → a live Cyclone reader, once,
//!   and HTTP delete → a dispose; a value that does not decode for the topic's type is stored
//!   by HTTP (which knows no types) but not published, and counted, with no effect on others;
//! * EXCLUSIVE ownership decided in the store, seen from HTTP: while a Cyclone writer of
//!   strength 20 owns a flight, an HTTP edit without a claim or with a weaker claim
//!   (`Squall-Owner`, `Squall-Strength: 10`) gets 409 `not_owner`; a stronger claim (30) with
//!   `If-Match` on the current version takes the flight over (the Cyclone writer's samples are
//!   then refused by the store, counted), and a stale `If-Match` gets 412;
//! * JSON for the configured type: a JSON PUT (`Content-Type: application/json`) is stored as
//!   the type's CDR, which a Cyclone reader receives; GET `?format=json` / `Accept:
//!   application/json`, watch `?format=json` and `squall replay --json` render values as JSON;
//!   a value that does not decode gets 422 (GET) or `json_error` (replay), a JSON body that
//!   does not fit the type 400, a pool without a type 400.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod dds_support;

use std::time::{Duration, Instant};

use dds_support::{flight_topic, in_netns_with, Peer};
use squall_integration_tests::{http_agent, squall_bin, Squall};

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
fields = [
  { name = "flight_id", type = "string", key = true },
  { name = "version", type = "uint64" },
  { name = "route", type = "string" },
]
"#;

/// An EXCLUSIVE flight-plan topic (editor strength 10 by default, 4 s editor lease).
const CONFIG_EXCLUSIVE: &str = r#"
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
ownership = "exclusive"
editor_strength = 10
editor_lease_ms = 4000
fields = [
  { name = "flight_id", type = "string", key = true },
  { name = "version", type = "uint64" },
  { name = "route", type = "string" },
]
"#;

struct Http {
    base: String,
    agent: ureq::Agent,
}

impl Http {
    fn req(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
        self.req_h(method, path, &[], body)
    }

    fn req_h(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut b = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let mut resp = self.agent.run(b.body(body.to_vec()).unwrap()).unwrap();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 26)
            .read_to_vec()
            .unwrap();
        (resp.status().as_u16(), headers, body)
    }
}

fn header(h: &[(String, String)], name: &str) -> Option<u64> {
    h.iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.parse().ok())
}

fn start_squall(dir: &tempfile::TempDir) -> (Squall, Http) {
    start_squall_with(dir, CONFIG)
}

fn start_squall_with(dir: &tempfile::TempDir, config: &str) -> (Squall, Http) {
    let cfg = dir.path().join("squall.toml");
    std::fs::write(&cfg, config).unwrap();
    let node = Squall::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    )
    .unwrap();
    assert!(
        node.output_text().contains("squall: dds joined domain 0"),
        "{}",
        node.output_text()
    );
    let http = Http {
        base: node.http_url(),
        agent: http_agent(),
    };
    (node, http)
}

fn poll<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn bin_env() -> String {
    squall_bin().unwrap().to_string_lossy().into_owned()
}

#[test]
fn serve_cyclone_writer_to_http_reads_and_late_joiner() {
    let bin = bin_env();
    if !in_netns_with(
        "serve_cyclone_writer_to_http_reads_and_late_joiner",
        &[("SQUALL_BIN", &bin)],
    ) {
        return;
    }
    let ty = flight_topic("FlightPlan", "flightplans").type_desc();
    let dir = tempfile::tempdir().unwrap();
    let (_node, http) = start_squall(&dir);

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
    poll(Duration::from_secs(10), "FP1 R-3 over HTTP", || {
        let (s, _, b) = http.req("GET", "/v1/pools/flightplans/keys/FP1", b"");
        (s == 200 && ty.to_json(&b).ok()?["route"] == "R-3").then_some(())
    });
    for v in 0..3u64 {
        let (s, h, b) = http.req(
            "GET",
            &format!("/v1/pools/flightplans/keys/FP1?version={v}"),
            b"",
        );
        assert_eq!(s, 200);
        assert_eq!(
            &b[0..2],
            &[0x00, 0x01],
            "stored as the wire CDR with its header"
        );
        assert_eq!(ty.to_json(&b).unwrap()["route"], format!("R-{}", v + 1));
        let t = header(&h, "squall-time").unwrap();
        let st = header(&h, "squall-sensor-time").expect("source timestamp as sensor time");
        // 100 ms after version v (the next one is 300 ms later), by either clock, reads v.
        for (clock, at) in [("platform", t + 100_000), ("sensor", st + 100_000)] {
            let (s, h2, _) = http.req(
                "GET",
                &format!("/v1/pools/flightplans/keys/FP1?at={at}&clock={clock}&wait_ms=3000"),
                b"",
            );
            assert_eq!(s, 200, "{clock} at {at}");
            assert_eq!(header(&h2, "squall-version"), Some(v), "{clock} at {at}");
        }
    }
    // The writer is gone; a late joiner is served the current value by the broker.
    let r = Peer::start(
        "late-reader",
        &[
            "sub",
            "--transient-local",
            "--seconds",
            "8",
            "--expect",
            "1",
        ],
    );
    r.wait_line(Duration::from_secs(15), |l| l.starts_with("done"));
    let got: Vec<_> = r
        .samples()
        .into_iter()
        .filter(|s| s["valid"] == true)
        .collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["route"], "R-3");
    let (_, _, m) = http.req("GET", "/metrics", b"");
    let m = String::from_utf8_lossy(&m);
    assert!(
        m.contains("squall_dds_samples_stored_total 3"),
        "metrics:\n{m}"
    );
}

#[test]
fn serve_http_put_to_cyclone_reader_and_bad_values_counted() {
    let bin = bin_env();
    if !in_netns_with(
        "serve_http_put_to_cyclone_reader_and_bad_values_counted",
        &[("SQUALL_BIN", &bin)],
    ) {
        return;
    }
    let ty = flight_topic("FlightPlan", "flightplans").type_desc();
    let dir = tempfile::tempdir().unwrap();
    let (_node, http) = start_squall(&dir);

    let r = Peer::start("reader", &["sub", "--transient-local", "--seconds", "20"]);
    r.wait_line(Duration::from_secs(10), |l| l == "ready");
    std::thread::sleep(Duration::from_millis(1500));
    for v in 1..=2u64 {
        let j =
            serde_json::json!({"flight_id": "AF447", "version": v, "route": format!("HTTP-{v}")});
        let (s, _, _) = http.req(
            "PUT",
            "/v1/pools/flightplans/keys/AF447",
            &ty.from_json(&j).unwrap(),
        );
        assert_eq!(s, 200);
    }
    // Bad values: not CDR at all, and CDR of the wrong instance key.
    let (s, _, _) = http.req(
        "PUT",
        "/v1/pools/flightplans/keys/JUNK",
        b"not a flight plan",
    );
    assert_eq!(s, 200, "HTTP stores bytes as they are");
    let other = serde_json::json!({"flight_id": "ZZ1", "version": 1, "route": "X"});
    let (s, _, _) = http.req(
        "PUT",
        "/v1/pools/flightplans/keys/AF448",
        &ty.from_json(&other).unwrap(),
    );
    assert_eq!(s, 200);
    let (s, _, _) = http.req("DELETE", "/v1/pools/flightplans/keys/AF447", b"");
    assert_eq!(s, 200);
    poll(
        Duration::from_secs(10),
        "AF447 disposed at the reader",
        || {
            r.samples()
                .iter()
                .any(|s| s["key"] == "AF447" && s["state"] == "disposed")
                .then_some(())
        },
    );
    std::thread::sleep(Duration::from_millis(300));
    let valid: Vec<_> = r
        .samples()
        .into_iter()
        .filter(|s| s["valid"] == true)
        .collect();
    let routes: Vec<_> = valid
        .iter()
        .map(|s| s["route"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        routes,
        vec!["HTTP-1", "HTTP-2"],
        "each put once, in order; bad values not published"
    );
    let (_, _, m) = http.req("GET", "/metrics", b"");
    let m = String::from_utf8_lossy(&m);
    assert!(
        m.contains("squall_dds_write_errors_total 2"),
        "metrics:\n{m}"
    );
    assert!(m.contains("squall_dds_published_total 3"), "metrics:\n{m}");
}

fn error_of(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(body)))
}

#[test]
fn serve_exclusive_ownership_refuses_weaker_http_editors_in_the_store() {
    let bin = bin_env();
    if !in_netns_with(
        "serve_exclusive_ownership_refuses_weaker_http_editors_in_the_store",
        &[("SQUALL_BIN", &bin)],
    ) {
        return;
    }
    let ty = flight_topic("FlightPlan", "flightplans").type_desc();
    let dir = tempfile::tempdir().unwrap();
    let (_node, http) = start_squall_with(&dir, CONFIG_EXCLUSIVE);
    let path = "/v1/pools/flightplans/keys/FP1";
    let route_of = |b: &[u8]| ty.to_json(b).unwrap()["route"].as_str().unwrap().to_owned();

    let _owner = Peer::start(
        "owner",
        &[
            "pub",
            "--key",
            "FP1",
            "--count",
            "600",
            "--interval-ms",
            "50",
            "--hang",
            "--transient-local",
            "--strength",
            "20",
            "--route",
            "A",
        ],
    );
    poll(
        Duration::from_secs(15),
        "the owner's samples stored",
        || {
            let (s, _, b) = http.req("GET", path, b"");
            (s == 200 && route_of(&b).starts_with("A-")).then_some(())
        },
    );
    let edit = ty
        .from_json(&serde_json::json!({"flight_id": "FP1", "version": 9000, "route": "EDIT"}))
        .unwrap();

    // No claim: refused (409, not_owner), whatever the version.
    let (s, _, b) = http.req("PUT", path, &edit);
    assert_eq!(s, 409, "{}", String::from_utf8_lossy(&b));
    let e = error_of(&b);
    assert_eq!(e["error"], "not_owner", "{e}");
    assert_eq!(e["owner_strength"], 20, "{e}");
    // A claim with the configured editor strength (10 < 20): refused.
    let (s, _, b) = http.req_h("PUT", path, &[("Squall-Owner", "console-7")], &edit);
    assert_eq!(s, 409, "{}", String::from_utf8_lossy(&b));
    assert!(
        error_of(&b)["message"]
            .as_str()
            .is_some_and(|m| m.contains("strength 20") && m.contains("(yours was 10)")),
        "{}",
        String::from_utf8_lossy(&b)
    );
    // The owner's updates kept flowing and nothing of the editor's was stored.
    let (_, _, b) = http.req("GET", path, b"");
    assert!(route_of(&b).starts_with("A-"));

    // A stronger claim (30) with If-Match on the current version takes the flight over.
    let strong = [("Squall-Owner", "console-7"), ("Squall-Strength", "30")];
    let mut took = None;
    for _ in 0..50 {
        let (_, h, _) = http.req("GET", path, b"");
        let cur = header(&h, "squall-version").unwrap().to_string();
        let (s, _, b) = http.req_h(
            "PUT",
            path,
            &[strong[0], strong[1], ("If-Match", &cur)],
            &edit,
        );
        match s {
            200 => {
                took = Some(cur);
                break;
            }
            412 => continue, // the owner wrote in between: read again
            _ => panic!("{s}: {}", String::from_utf8_lossy(&b)),
        }
    }
    let took: u64 = took.expect("the strong edit went through").parse().unwrap();
    // From the edit on, the Cyclone writer (20) is refused by the store for the lease (4 s).
    std::thread::sleep(Duration::from_millis(1500));
    let (_, h, b) = http.req("GET", path, b"");
    assert_eq!(route_of(&b), "EDIT", "the editor holds the flight");
    assert_eq!(header(&h, "squall-version"), Some(took + 1));
    // A stale If-Match (the version before the edit) fails clearly, even for the owner.
    let (s, _, b) = http.req_h(
        "PUT",
        path,
        &[strong[0], strong[1], ("If-Match", &took.to_string())],
        &edit,
    );
    assert_eq!(s, 412, "{}", String::from_utf8_lossy(&b));
    assert_eq!(error_of(&b)["current_version"], took + 1);
    let (_, _, m) = http.req("GET", "/metrics", b"");
    let m = String::from_utf8_lossy(&m);
    let rejected: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("squall_dds_ownership_rejected_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        rejected >= 10,
        "the owner's samples were refused: {rejected}"
    );
    // After the editor's lease the Cyclone writer takes the flight back.
    poll(
        Duration::from_secs(10),
        "the owner back after the lease",
        || {
            let (_, _, b) = http.req("GET", path, b"");
            route_of(&b).starts_with("A-").then_some(())
        },
    );
}

#[test]
fn serve_json_rendering_and_json_puts_for_the_configured_type() {
    let bin = bin_env();
    if !in_netns_with(
        "serve_json_rendering_and_json_puts_for_the_configured_type",
        &[("SQUALL_BIN", &bin)],
    ) {
        return;
    }
    let ty = flight_topic("FlightPlan", "flightplans").type_desc();
    let dir = tempfile::tempdir().unwrap();
    let (node, http) = start_squall(&dir);
    let r = Peer::start("reader", &["sub", "--transient-local", "--seconds", "20"]);
    r.wait_line(Duration::from_secs(10), |l| l == "ready");
    std::thread::sleep(Duration::from_millis(1500));
    let ctype = [("Content-Type", "application/json")];
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;

    // JSON in: stored as the type's CDR (XCDR1 LE with its header) and published to DDS.
    let plan = serde_json::json!({"flight_id": "AF447", "version": 1, "route": "GIG-CDG"});
    let (s, _, b) = http.req_h(
        "PUT",
        "/v1/pools/flightplans/keys/AF447",
        &ctype,
        plan.to_string().as_bytes(),
    );
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let (s, _, raw) = http.req("GET", "/v1/pools/flightplans/keys/AF447", b"");
    assert_eq!(s, 200);
    assert_eq!(&raw[..4], &[0x00, 0x01, 0x00, 0x00], "XCDR1 LE header");
    assert_eq!(ty.to_json(&raw).unwrap(), plan);
    poll(
        Duration::from_secs(10),
        "the JSON put at the Cyclone reader",
        || {
            r.samples()
                .iter()
                .any(|s| s["key"] == "AF447" && s["route"] == "GIG-CDG")
                .then_some(())
        },
    );

    // JSON out: by query parameter and by Accept header, with the version headers.
    for (path, headers) in [
        ("/v1/pools/flightplans/keys/AF447?format=json", vec![]),
        (
            "/v1/pools/flightplans/keys/AF447",
            vec![("Accept", "application/json")],
        ),
        (
            "/v1/pools/flightplans/keys/AF447?version=0&format=json",
            vec![],
        ),
    ] {
        let (s, h, b) = http.req_h("GET", path, &headers, b"");
        assert_eq!(s, 200, "{path}");
        assert_eq!(header(&h, "squall-version"), Some(0));
        assert!(h
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("application/json")));
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&b).unwrap(),
            plan
        );
    }
    // A JSON body that does not fit the type, an unknown format, a value that does not decode.
    let bad = serde_json::json!({"flight_id": "AF447", "route": "no version"});
    let (s, _, b) = http.req_h(
        "PUT",
        "/v1/pools/flightplans/keys/AF447",
        &ctype,
        bad.to_string().as_bytes(),
    );
    assert_eq!(s, 400, "{}", String::from_utf8_lossy(&b));
    assert_eq!(error_of(&b)["error"], "bad_value");
    let (s, _, b) = http.req("GET", "/v1/pools/flightplans/keys/AF447?format=xml", b"");
    assert_eq!(
        (s, error_of(&b)["error"].clone()),
        (400, "bad_query".into())
    );
    let (s, _, _) = http.req("PUT", "/v1/pools/flightplans/keys/JUNK", b"not cdr");
    assert_eq!(s, 200, "HTTP stores raw bytes as they are");
    let (s, _, b) = http.req("GET", "/v1/pools/flightplans/keys/JUNK?format=json", b"");
    assert_eq!(s, 422, "{}", String::from_utf8_lossy(&b));
    assert_eq!(error_of(&b)["error"], "undecodable");
    // A pool without a described type cannot render JSON.
    let (s, _, _) = http.req_h(
        "POST",
        "/v1/pools",
        &ctype,
        br#"{"name":"plain","mode":"latest"}"#,
    );
    assert!(s == 200 || s == 201, "{s}");
    let (s, _, _) = http.req("PUT", "/v1/pools/plain/keys/k", b"x");
    assert_eq!(s, 200);
    let (s, _, b) = http.req("GET", "/v1/pools/plain/keys/k?format=json", b"");
    assert_eq!((s, error_of(&b)["error"].clone()), (400, "no_type".into()));

    // Watch with format=json: each event carries the rendering next to the base64 value.
    {
        use std::io::BufRead;
        let resp = http
            .agent
            .get(format!(
                "{}/v1/pools/flightplans/watch?key=AF447&from_version=0&format=json",
                http.base
            ))
            .call()
            .unwrap();
        let mut lines = std::io::BufReader::new(resp.into_body().into_reader()).lines();
        let data = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("data:").map(|d| d.trim().to_owned()))
            .unwrap();
        let ev: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!(ev["json"], plan, "{ev}");
        assert!(ev["value"].is_string(), "the raw value is still there");
    }

    // squall replay --json: the audit view with rendered values (and why one did not render).
    let out = node
        .cli(&[
            "replay",
            "flightplans",
            "--prefix",
            "",
            "--from",
            &t0.to_string(),
            "--to",
            "now",
            "--json",
            "--wait-ms",
            "5000",
        ])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let af = lines.iter().find(|l| l["key"] == "AF447").unwrap();
    assert_eq!(af["json"], plan);
    let junk = lines.iter().find(|l| l["key"] == "JUNK").unwrap();
    assert!(
        junk["json"].is_null() && junk["json_error"].is_string(),
        "{junk}"
    );
}
