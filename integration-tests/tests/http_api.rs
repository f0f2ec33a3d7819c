//! End-to-end tests of the HTTP API through the real `squall` binary on a free port: every
//! endpoint (pools, put/cput, reads latest/by version/at a time, snapshot, truncate, delete,
//! SSE watch replay→live, replay, metrics, healthz) and the bad-input errors, so what
//! docs/HTTP.md promises is what a user gets from `squall serve`.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use squall_integration_tests::{http_agent, Squall};
use squall_protocols::http::wire::{PutReply, SnapshotReply};

struct Api {
    base: String,
    agent: ureq::Agent,
}

impl Api {
    fn new(node: &Squall) -> Self {
        Api {
            base: node.http_url(),
            agent: http_agent(),
        }
    }
    fn req(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let url = format!("{}{path}", self.base);
        let mut b = ureq::http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let mut resp = self
            .agent
            .run(b.body(body.to_vec()).expect("request"))
            .expect("http");
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
            .expect("body");
        (resp.status().as_u16(), headers, body)
    }
    fn json(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let (s, _, b) = self.req(
            method,
            path,
            &[("content-type", "application/json")],
            body.as_bytes(),
        );
        (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }
    fn put(&self, pool: &str, key: &str, v: &[u8], headers: &[(&str, &str)]) -> (u16, Value) {
        let (s, _, b) = self.req("PUT", &format!("/v1/pools/{pool}/keys/{key}"), headers, v);
        (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn every_endpoint_and_its_errors() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = Squall::start(dir.path(), &[])?;
    let api = Api::new(&node);

    // Health and pools.
    let (s, v) = api.json("GET", "/healthz", "");
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")));
    let (s, v) = api.json(
        "POST",
        "/v1/pools",
        r#"{"name":"cars","mode":"versioned","durable":true,"lateness_us":200000}"#,
    );
    assert_eq!(s, 201, "{v}");
    let (s, _) = api.json(
        "POST",
        "/v1/pools",
        r#"{"name":"last","mode":"latest","durable":false}"#,
    );
    assert_eq!(s, 201);
    let (s, _) = api.json(
        "POST",
        "/v1/pools",
        r#"{"name":"tiny","value_bytes_max":8}"#,
    );
    assert_eq!(s, 201);
    let (s, v) = api.json("POST", "/v1/pools", r#"{"name":"cars","mode":"latest"}"#);
    assert_eq!((s, v["error"].as_str()), (409, Some("pool_exists")));
    let (s, v) = api.json("GET", "/v1/pools", "");
    assert_eq!(s, 200);
    let names: Vec<&str> = v["pools"]
        .as_array()
        .context("pools")?
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, vec!["cars", "last", "tiny"]);

    // Put, cput, sensor time, reads.
    let sensor_t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_micros() as u64;
    let (s, v) = api.put(
        "cars",
        "car%2F1",
        b"pos-0",
        &[("squall-sensor-time", &sensor_t.to_string())],
    );
    assert_eq!(s, 200, "{v}");
    let p0: PutReply = serde_json::from_value(v)?;
    assert_eq!(
        (p0.version, p0.sensor_time_us, p0.late),
        (0, Some(sensor_t), false)
    );
    let (s, v) = api.put("cars", "car%2F1", b"pos-1", &[("if-match", "0")]);
    assert_eq!(s, 200, "{v}");
    let p1: PutReply = serde_json::from_value(v)?;
    assert_eq!(p1.version, 1);
    assert!(p1.time_us >= p0.time_us && p1.shard_seq > p0.shard_seq);
    let (s, v) = api.put("cars", "car%2F1", b"stale", &[("if-match", "0")]);
    assert_eq!(
        (s, v["error"].as_str(), v["current_version"].as_u64()),
        (412, Some("conflict"), Some(1))
    );
    let (s, h, b) = api.req("GET", "/v1/pools/cars/keys/car%2F1", &[], b"");
    assert_eq!((s, b.as_slice()), (200, &b"pos-1"[..]));
    assert_eq!(header(&h, "squall-version"), Some("1"));
    assert_eq!(
        header(&h, "squall-time"),
        Some(p1.time_us.to_string().as_str())
    );
    let (s, h, b) = api.req("GET", "/v1/pools/cars/keys/car%2F1?version=0", &[], b"");
    assert_eq!((s, b.as_slice()), (200, &b"pos-0"[..]));
    assert_eq!(
        header(&h, "squall-sensor-time"),
        Some(sensor_t.to_string().as_str())
    );
    // Time reads: before the first put nothing, between the puts version 0.
    let (s, _, _) = api.req(
        "GET",
        &format!(
            "/v1/pools/cars/keys/car%2F1?at={}&wait_ms=2000",
            p0.time_us - 1
        ),
        &[],
        b"",
    );
    assert_eq!(s, 404);
    let (s, h, b) = api.req(
        "GET",
        &format!(
            "/v1/pools/cars/keys/car%2F1?at={}&clock=platform&wait_ms=2000",
            p1.time_us - 1
        ),
        &[],
        b"",
    );
    assert_eq!((s, b.as_slice()), (200, &b"pos-0"[..]));
    assert_eq!(header(&h, "squall-version"), Some("0"));
    let (s, _, b) = api.req(
        "GET",
        &format!("/v1/pools/cars/keys/car%2F1?at={sensor_t}&clock=sensor&wait_ms=2000"),
        &[],
        b"",
    );
    assert_eq!((s, b.as_slice()), (200, &b"pos-0"[..]));
    // A sensor time already final on arrival is stored but flagged late, and does not change
    // the sensor-time answer at that time.
    let (s, v) = api.put("cars", "late", b"l", &[("squall-sensor-time", "1000")]);
    assert_eq!((s, v["late"].as_bool()), (200, Some(true)), "{v}");
    let (s, _, _) = api.req(
        "GET",
        "/v1/pools/cars/keys/late?at=1000&clock=sensor&wait_ms=2000",
        &[],
        b"",
    );
    assert_eq!(s, 404);
    let far = p1.time_us + 3_600_000_000;
    let (s, _, b) = api.req(
        "GET",
        &format!("/v1/pools/cars/keys/car%2F1?at={far}&wait_ms=10"),
        &[],
        b"",
    );
    assert_eq!(s, 400);
    assert_eq!(
        serde_json::from_slice::<Value>(&b)?["error"],
        "time_in_future"
    );

    // Snapshot: one cut over two keys.
    api.put("cars", "car2", b"c2", &[]);
    let (_, v) = api.put("cars", "car%2F1", b"pos-2", &[]);
    let p2: PutReply = serde_json::from_value(v)?;
    let body = json!({"at": p2.time_us - 1, "clock": "platform", "wait_ms": 2000,
        "keys": [{"pool":"cars","key":"car/1"},{"pool":"cars","key":"car2"},{"pool":"cars","key":"none"}]});
    let (s, _, b) = api.req(
        "POST",
        "/v1/snapshot",
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let snap: SnapshotReply = serde_json::from_slice(&b)?;
    let vals: Vec<Option<Vec<u8>>> = snap
        .entries
        .iter()
        .map(|e| e.as_ref().and_then(|e| e.value_bytes()))
        .collect();
    assert_eq!(
        vals,
        vec![Some(b"pos-1".to_vec()), Some(b"c2".to_vec()), None]
    );

    // Replay: the window covering the three versions of car/1, in order.
    let (s, _, b) = api.req(
        "GET",
        &format!(
            "/v1/pools/cars/replay?key=car%2F1&from_time={}&to_time={}&wait_ms=2000",
            p0.time_us, p2.time_us
        ),
        &[],
        b"",
    );
    assert_eq!(s, 200);
    let versions: Vec<u64> = String::from_utf8_lossy(&b)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok()?["version"].as_u64())
        .collect();
    assert_eq!(versions, vec![0, 1, 2]);

    // Truncate and delete.
    let (s, v) = api.json("POST", "/v1/pools/cars/keys/car%2F1/truncate?before=1", "");
    assert_eq!(
        (s, v["start"].as_u64(), v["next"].as_u64()),
        (200, Some(1), Some(3))
    );
    let (s, _, _) = api.req("GET", "/v1/pools/cars/keys/car%2F1?version=0", &[], b"");
    assert_eq!(s, 404);
    let (s, _, _) = api.req("DELETE", "/v1/pools/cars/keys/car2", &[], b"");
    assert_eq!(s, 200);
    let (s, _, _) = api.req("GET", "/v1/pools/cars/keys/car2", &[], b"");
    assert_eq!(s, 404);
    // An audit replay by prefix still shows a deleted key's history (the key listing behind a
    // prefix replay must not drop keys whose newest version is a delete).
    let (s, _, b) = api.req(
        "GET",
        &format!(
            "/v1/pools/cars/replay?prefix=car2&from_time=0&to_time={}&wait_ms=2000",
            now_us()
        ),
        &[],
        b"",
    );
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let car2_versions = String::from_utf8_lossy(&b)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["key"].as_str() == Some("car2"))
        .count();
    assert!(
        car2_versions >= 1,
        "a prefix replay lost the deleted key car2: {}",
        String::from_utf8_lossy(&b)
    );

    // Bad input: each a JSON error with the right status, nothing stored.
    let big = vec![b'x'; 9];
    for (method, path, headers, body, status, code) in [
        (
            "PUT",
            "/v1/pools/nope/keys/k",
            vec![],
            b"v".to_vec(),
            404,
            "no_such_pool",
        ),
        (
            "GET",
            "/v1/pools/last/keys/k?version=0",
            vec![],
            vec![],
            400,
            "wrong_mode",
        ),
        (
            "PUT",
            "/v1/pools/cars/keys/k",
            vec![("if-match", "three")],
            b"v".to_vec(),
            400,
            "bad_header",
        ),
        (
            "PUT",
            "/v1/pools/cars/keys/k",
            vec![("squall-sensor-time", "soon")],
            b"v".to_vec(),
            400,
            "bad_header",
        ),
        (
            "PUT",
            "/v1/pools/tiny/keys/k",
            vec![],
            big,
            413,
            "value_too_large",
        ),
        (
            "GET",
            "/v1/pools/cars/keys/k?version=zero",
            vec![],
            vec![],
            400,
            "bad_query",
        ),
        (
            "POST",
            "/v1/pools",
            vec![],
            b"{\"name\":\"a b\"}".to_vec(),
            400,
            "bad_pool_name",
        ),
        (
            "POST",
            "/v1/snapshot",
            vec![],
            b"[]".to_vec(),
            400,
            "bad_json",
        ),
        (
            "GET",
            "/v1/pools/cars/watch",
            vec![],
            vec![],
            400,
            "bad_query",
        ),
        ("GET", "/v2/anything", vec![], vec![], 404, "no_such_route"),
    ] {
        let (s, _, b) = api.req(method, path, &headers, &body);
        let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
        assert_eq!(
            (s, v["error"].as_str()),
            (status, Some(code)),
            "{method} {path}: {v}"
        );
    }
    let long = "k".repeat(1025);
    let (s, _, _) = api.req("PUT", &format!("/v1/pools/cars/keys/{long}"), &[], b"v");
    assert_eq!(s, 400);
    let (s, _, _) = api.req("GET", "/v1/pools/cars/keys/k", &[], b"");
    assert_eq!(s, 404, "a refused put stored nothing");
    // A body announced above the node-wide limit (16 MiB) is refused from its headers alone,
    // before a byte of it is sent (so before anything is allocated for it).
    let addr = node.addrs.get("http").context("http addr")?;
    let mut conn = std::net::TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    std::io::Write::write_all(
        &mut conn,
        b"PUT /v1/pools/cars/keys/k HTTP/1.1\r\nhost: x\r\ncontent-length: 16777217\r\n\r\n",
    )?;
    let mut head = [0u8; 12];
    std::io::Read::read_exact(&mut conn, &mut head)?;
    assert_eq!(&head, b"HTTP/1.1 413");

    // Metrics.
    let (s, _, b) = api.req("GET", "/metrics", &[], b"");
    assert_eq!(s, 200);
    let m = String::from_utf8_lossy(&b);
    for name in [
        "squall_http_requests_total",
        "squall_http_request_duration_seconds_bucket",
        "squall_http_bytes_in_total",
        "squall_http_bytes_out_total",
        "squall_durable_ack_wait_seconds_count",
        "squall_log_bytes",
        "squall_watchers",
        "squall_frontier_lag_microseconds",
    ] {
        assert!(m.contains(name), "metrics lack {name}:\n{m}");
    }

    // Delete a pool.
    let (s, _, _) = api.req("DELETE", "/v1/pools/tiny", &[], b"");
    assert_eq!(s, 204);
    let (s, _, _) = api.req("DELETE", "/v1/pools/tiny", &[], b"");
    assert_eq!(s, 404);
    Ok(())
}

/// Reads SSE events (`(event, id, data)`) from a blocking reader on a thread.
fn sse_reader(base: String, path: String) -> std::sync::mpsc::Receiver<(String, String, Value)> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build(),
        );
        let Ok(resp) = agent.get(format!("{base}{path}")).call() else {
            return;
        };
        let reader = BufReader::new(resp.into_body().into_reader());
        let (mut ev, mut id, mut data) = (String::new(), String::new(), String::new());
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if line.is_empty() {
                if !data.is_empty() {
                    let v = serde_json::from_str(&data).unwrap_or(Value::Null);
                    if tx.send((ev.clone(), id.clone(), v)).is_err() {
                        return;
                    }
                }
                ev.clear();
                id.clear();
                data.clear();
            } else if let Some(v) = line.strip_prefix("event:") {
                ev = v.trim().into();
            } else if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().into();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
    });
    rx
}

#[test]
fn sse_watch_replays_then_goes_live() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = Squall::start(dir.path(), &[])?;
    let api = Api::new(&node);
    api.json("POST", "/v1/pools", r#"{"name":"s","durable":true}"#);
    for v in ["a0", "a1", "a2"] {
        assert_eq!(api.put("s", "a", v.as_bytes(), &[]).0, 200);
    }
    api.put("s", "b", b"b0", &[]);
    let rx = sse_reader(
        node.http_url(),
        "/v1/pools/s/watch?key=a&from_version=1".into(),
    );
    let t = Duration::from_secs(10);
    let (ev, id, data) = rx.recv_timeout(t)?;
    assert_eq!(
        (ev.as_str(), id.as_str(), data["value"].as_str()),
        ("put", "1", Some("YTE="))
    );
    let (_, id, _) = rx.recv_timeout(t)?;
    assert_eq!(id, "2");
    // Live: a new put arrives after the replay, with no gap and no duplicate.
    api.put("s", "b", b"b1", &[]);
    api.put("s", "a", b"a3", &[]);
    let (_, id, data) = rx.recv_timeout(t)?;
    assert_eq!((id.as_str(), data["key"].as_str()), ("3", Some("a")));
    api.req("DELETE", "/v1/pools/s/keys/a", &[], b"");
    let (ev, id, data) = rx.recv_timeout(t)?;
    assert_eq!(
        (ev.as_str(), id.as_str(), data["tombstone"].as_bool()),
        ("delete", "4", Some(true))
    );

    // A prefix watch from time 0 replays every key, then continues.
    let rx = sse_reader(
        node.http_url(),
        "/v1/pools/s/watch?prefix=&from_time=0".into(),
    );
    let mut seen = vec![];
    while seen.len() < 7 {
        let (_, _, d) = rx.recv_timeout(t)?;
        seen.push(format!(
            "{}{}",
            d["key"].as_str().unwrap_or("?"),
            d["version"]
        ));
    }
    // Keys may live in different shards: order is per shard, so compare each key's sequence.
    let of = |k: char| {
        seen.iter()
            .filter(|s| s.starts_with(k))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(of('a'), vec!["a0", "a1", "a2", "a3", "a4"]);
    assert_eq!(of('b'), vec!["b0", "b1"]);
    api.put("s", "c", b"c0", &[]);
    let (_, _, d) = rx.recv_timeout(t)?;
    assert_eq!(d["key"], "c");
    let (_, _, b) = api.req("GET", "/metrics", &[], b"");
    assert!(String::from_utf8_lossy(&b).contains("squall_http_watchers 2"));
    Ok(())
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
