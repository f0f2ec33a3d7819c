//! Unit tests of the HTTP face over the in-memory test node: each endpoint's status codes,
//! headers and JSON errors, limits checked before a body is read, and an SSE watch that replays
//! history and then continues live. The real binary is tested end to end in integration-tests.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::wire::{PutReply, SnapshotReply};
use super::{HttpConfig, HttpFace};
use crate::testing::MemNode;

fn face() -> (Router, tokio::sync::watch::Sender<bool>) {
    let (r, tx, _) = face_with_node();
    (r, tx)
}

fn face_with_node() -> (Router, tokio::sync::watch::Sender<bool>, Arc<MemNode>) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let node = Arc::new(MemNode::new());
    let f = HttpFace::new(
        node.clone(),
        HttpConfig::default(),
        prometheus::Registry::new(),
        None,
        rx,
    )
    .expect("face");
    (f.router(), tx, node)
}

async fn call(
    r: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = r
        .clone()
        .oneshot(b.body(Body::from(body.to_vec())).expect("request"))
        .await
        .expect("infallible");
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes().to_vec();
    (parts.status, parts.headers, bytes)
}

fn json(b: &[u8]) -> serde_json::Value {
    serde_json::from_slice(b)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(b)))
}

async fn make_pool(r: &Router, body: &str) {
    let (s, _, b) = call(
        r,
        "POST",
        "/v1/pools",
        &[("content-type", "application/json")],
        body.as_bytes(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&b));
}

#[tokio::test]
async fn pools_crud_and_errors() {
    let (r, _sd) = face();
    make_pool(&r, r#"{"name":"cars","mode":"versioned","durable":false}"#).await;
    // Idempotent with the same config, 409 with another.
    make_pool(&r, r#"{"name":"cars","mode":"versioned","durable":false}"#).await;
    let (s, _, b) = call(
        &r,
        "POST",
        "/v1/pools",
        &[],
        br#"{"name":"cars","mode":"latest"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(json(&b)["error"], "pool_exists");
    let (s, _, b) = call(&r, "POST", "/v1/pools", &[], br#"{"name":"bad name!"}"#).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(json(&b)["error"], "bad_pool_name");
    let (s, _, b) = call(
        &r,
        "POST",
        "/v1/pools",
        &[],
        br#"{"name":"x","mode":"sometimes"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(json(&b)["error"], "bad_json");
    let (s, _, b) = call(&r, "GET", "/v1/pools", &[], b"").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json(&b)["pools"][0]["name"], "cars");
    let (s, _, _) = call(&r, "DELETE", "/v1/pools/cars", &[], b"").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, b) = call(&r, "DELETE", "/v1/pools/cars", &[], b"").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(json(&b)["error"], "no_such_pool");
    let (s, _, b) = call(&r, "GET", "/v1/nothing", &[], b"").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(json(&b)["error"], "no_such_route");
}

#[tokio::test]
async fn put_get_cput_and_headers() {
    let (r, _sd) = face();
    make_pool(&r, r#"{"name":"p","durable":false}"#).await;
    let (s, _, b) = call(
        &r,
        "PUT",
        "/v1/pools/p/keys/k",
        &[("squall-sensor-time", "1700000000000000")],
        b"v0",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let v0: PutReply = serde_json::from_slice(&b).expect("reply");
    assert_eq!(v0.version, 0);
    assert_eq!(v0.sensor_time_us, Some(1_700_000_000_000_000));
    let (s, h, b) = call(&r, "GET", "/v1/pools/p/keys/k", &[], b"").await;
    assert_eq!((s, b.as_slice()), (StatusCode::OK, &b"v0"[..]));
    assert_eq!(h["squall-version"], "0");
    assert_eq!(h["squall-time"], v0.time_us.to_string().as_str());
    assert_eq!(h["squall-sensor-time"], "1700000000000000");
    // cput at the right version succeeds, at a stale one gets 412 with the current version.
    let (s, _, b) = call(
        &r,
        "PUT",
        "/v1/pools/p/keys/k",
        &[("if-match", "\"0\"")],
        b"v1",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let (s, _, b) = call(
        &r,
        "PUT",
        "/v1/pools/p/keys/k",
        &[("if-match", "0")],
        b"stale",
    )
    .await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED);
    assert_eq!(json(&b)["current_version"], 1);
    let (s, _, b) = call(
        &r,
        "PUT",
        "/v1/pools/p/keys/k",
        &[("if-none-match", "*")],
        b"x",
    )
    .await;
    assert_eq!(
        s,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        String::from_utf8_lossy(&b)
    );
    // Reads by version.
    let (s, _, b) = call(&r, "GET", "/v1/pools/p/keys/k?version=0", &[], b"").await;
    assert_eq!((s, b.as_slice()), (StatusCode::OK, &b"v0"[..]));
    let (s, _, b) = call(&r, "GET", "/v1/pools/p/keys/k?version=9", &[], b"").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(json(&b)["error"], "not_found");
    // Delete is a tombstone version: latest read says 404, the old version is still there.
    let (s, _, _) = call(&r, "DELETE", "/v1/pools/p/keys/k", &[], b"").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = call(&r, "GET", "/v1/pools/p/keys/k", &[], b"").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, h, b) = call(&r, "GET", "/v1/pools/p/keys/k?version=2", &[], b"").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(json(&b)["error"], "deleted");
    assert_eq!(h["squall-version"], "2");
    // Truncate.
    let (s, _, b) = call(&r, "POST", "/v1/pools/p/keys/k/truncate?before=1", &[], b"").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json(&b)["start"], 1);
    let (s, _, _) = call(&r, "GET", "/v1/pools/p/keys/k?version=0", &[], b"").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_input_gets_json_errors() {
    let (r, _sd) = face();
    make_pool(
        &r,
        r#"{"name":"small","value_bytes_max":4,"durable":false}"#,
    )
    .await;
    make_pool(&r, r#"{"name":"last","mode":"latest","durable":false}"#).await;
    type Case<'a> = (
        &'a str,
        &'a str,
        Vec<(&'a str, &'a str)>,
        Vec<u8>,
        StatusCode,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "PUT",
            "/v1/pools/small/keys/k",
            vec![],
            b"12345".to_vec(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "value_too_large",
        ),
        (
            "PUT",
            "/v1/pools/small/keys/k",
            vec![("if-match", "abc")],
            b"1".to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_header",
        ),
        (
            "PUT",
            "/v1/pools/small/keys/k",
            vec![("squall-sensor-time", "-5")],
            b"1".to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_header",
        ),
        (
            "PUT",
            "/v1/pools/nope/keys/k",
            vec![],
            b"1".to_vec(),
            StatusCode::NOT_FOUND,
            "no_such_pool",
        ),
        (
            "GET",
            "/v1/pools/last/keys/k?version=0",
            vec![],
            vec![],
            StatusCode::BAD_REQUEST,
            "wrong_mode",
        ),
        (
            "GET",
            "/v1/pools/small/keys/k?versoin=0",
            vec![],
            vec![],
            StatusCode::BAD_REQUEST,
            "bad_query",
        ),
        (
            "GET",
            "/v1/pools/small/keys/k?version=x",
            vec![],
            vec![],
            StatusCode::BAD_REQUEST,
            "bad_query",
        ),
        (
            "GET",
            "/v1/pools/small/keys/k?version=1&at=5",
            vec![],
            vec![],
            StatusCode::BAD_REQUEST,
            "bad_query",
        ),
        (
            "GET",
            "/v1/pools/small/keys/k?at=99999999999999999&wait_ms=0",
            vec![],
            vec![],
            StatusCode::BAD_REQUEST,
            "time_in_future",
        ),
        (
            "GET",
            "/v1/pools/small/keys/k?at=1&wait_ms=99999999",
            vec![],
            vec![],
            StatusCode::BAD_REQUEST,
            "bad_wait",
        ),
        (
            "GET",
            "/v1/pools/small/keys/k?at=1&clock=moon",
            vec![],
            vec![],
            StatusCode::BAD_REQUEST,
            "bad_query",
        ),
        (
            "POST",
            "/v1/pools/small/keys/k/truncate",
            vec![],
            vec![],
            StatusCode::BAD_REQUEST,
            "bad_query",
        ),
        (
            "GET",
            "/v1/pools/small/watch",
            vec![],
            vec![],
            StatusCode::BAD_REQUEST,
            "bad_query",
        ),
        (
            "GET",
            "/v1/pools/small/watch?key=a&prefix=b",
            vec![],
            vec![],
            StatusCode::BAD_REQUEST,
            "bad_query",
        ),
        (
            "POST",
            "/v1/snapshot",
            vec![],
            b"{".to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_json",
        ),
        (
            "GET",
            "/v1/pools/small/replay?key=k&from_time=5&to_time=1",
            vec![],
            vec![],
            StatusCode::BAD_REQUEST,
            "bad_query",
        ),
    ];
    for (m, uri, h, body, status, code) in cases {
        let (s, _, b) = call(&r, m, uri, &h, &body).await;
        assert_eq!(s, status, "{m} {uri}: {}", String::from_utf8_lossy(&b));
        assert_eq!(json(&b)["error"], code, "{m} {uri}");
    }
    let long_key = "k".repeat(squall_storage::KEY_BYTES_MAX + 1);
    let (s, _, b) = call(
        &r,
        "PUT",
        &format!("/v1/pools/small/keys/{long_key}"),
        &[],
        b"1",
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(json(&b)["error"], "bad_key");
    // A Content-Length above the limit is refused before the body is read.
    let (s, _, b) = call(
        &r,
        "PUT",
        "/v1/pools/small/keys/k",
        &[("content-length", "999999999")],
        b"",
    )
    .await;
    assert_eq!(
        s,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        String::from_utf8_lossy(&b)
    );
    // Nothing above was stored.
    let (s, _, _) = call(&r, "GET", "/v1/pools/small/keys/k", &[], b"").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn time_reads_and_snapshot() {
    let (r, _sd) = face();
    make_pool(&r, r#"{"name":"p","durable":false}"#).await;
    let (_, _, b) = call(&r, "PUT", "/v1/pools/p/keys/a", &[], b"a0").await;
    let a0: PutReply = serde_json::from_slice(&b).expect("reply");
    tokio::time::sleep(Duration::from_millis(3)).await;
    let (_, _, b) = call(&r, "PUT", "/v1/pools/p/keys/a", &[], b"a1").await;
    let a1: PutReply = serde_json::from_slice(&b).expect("reply");
    let (s, h, b) = call(
        &r,
        "GET",
        &format!("/v1/pools/p/keys/a?at={}&wait_ms=1000", a1.time_us - 1),
        &[],
        b"",
    )
    .await;
    assert_eq!((s, b.as_slice()), (StatusCode::OK, &b"a0"[..]));
    assert_eq!(h["squall-version"], "0");
    let (s, _, _) = call(
        &r,
        "GET",
        &format!("/v1/pools/p/keys/a?at={}", a0.time_us - 1),
        &[],
        b"",
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let body = format!(
        r#"{{"at":{},"keys":[{{"pool":"p","key":"a"}},{{"pool":"p","key":"zz"}}]}}"#,
        a1.time_us
    );
    let (s, _, b) = call(&r, "POST", "/v1/snapshot", &[], body.as_bytes()).await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    let snap: SnapshotReply = serde_json::from_slice(&b).expect("snapshot");
    assert_eq!(snap.entries.len(), 2);
    assert_eq!(
        snap.entries[0].as_ref().and_then(|e| e.value_bytes()),
        Some(b"a1".to_vec())
    );
    assert!(snap.entries[1].is_none());
}

#[tokio::test]
async fn watch_replays_then_goes_live_and_metrics_count() {
    let (r, sd) = face();
    make_pool(&r, r#"{"name":"p","durable":false}"#).await;
    for v in ["x0", "x1"] {
        call(&r, "PUT", "/v1/pools/p/keys/x", &[], v.as_bytes()).await;
    }
    let req = Request::get("/v1/pools/p/watch?key=x&from_version=1")
        .body(Body::empty())
        .expect("req");
    let resp = r.clone().oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut seen = String::new();
    let mut next_frame = async |seen: &mut String| {
        let f = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("frame in time");
        let f = f.expect("stream open").expect("frame ok");
        if let Some(d) = f.data_ref() {
            seen.push_str(&String::from_utf8_lossy(d));
        }
    };
    next_frame(&mut seen).await;
    assert!(seen.contains("id: 1"), "{seen}");
    assert!(!seen.contains("id: 0"), "{seen}");
    call(&r, "PUT", "/v1/pools/p/keys/x", &[], b"x2").await;
    while !seen.contains("id: 2") {
        next_frame(&mut seen).await;
    }
    // "x2" in base64.
    assert!(seen.contains("eDI="), "{seen}");
    let (_, _, m) = call(&r, "GET", "/metrics", &[], b"").await;
    let m = String::from_utf8_lossy(&m);
    assert!(m.contains("squall_http_watchers 1"), "{m}");
    assert!(m.contains("squall_http_requests_total{method=\"PUT\",route=\"/v1/pools/{pool}/keys/{key}\",status=\"200\"} 3"), "{m}");
    // Shutdown ends the stream.
    sd.send(true).expect("send");
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(f) = body.frame().await {
            f.expect("frame");
        }
    })
    .await;
    assert!(end.is_ok(), "stream did not end at shutdown");
}

#[tokio::test]
async fn replay_window_in_order() {
    let (r, _sd) = face();
    make_pool(&r, r#"{"name":"p","durable":false}"#).await;
    let mut times = vec![];
    for (k, v) in [("a", "1"), ("b", "2"), ("a", "3"), ("b", "4")] {
        let (_, _, b) = call(
            &r,
            "PUT",
            &format!("/v1/pools/p/keys/{k}"),
            &[],
            v.as_bytes(),
        )
        .await;
        times.push(
            serde_json::from_slice::<PutReply>(&b)
                .expect("reply")
                .time_us,
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let uri = format!(
        "/v1/pools/p/replay?prefix=&from_time={}&to_time={}",
        times[1], times[2]
    );
    let (s, h, b) = call(&r, "GET", &uri, &[], b"").await;
    assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    assert_eq!(h["content-type"], "application/x-ndjson");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&b)
        .lines()
        .map(|l| json(l.as_bytes()))
        .collect();
    let got: Vec<(String, u64)> = lines
        .iter()
        .map(|l| {
            (
                l["key"].as_str().unwrap_or("").to_string(),
                l["version"].as_u64().unwrap_or(99),
            )
        })
        .collect();
    assert_eq!(got, vec![("b".to_string(), 0), ("a".to_string(), 1)]);
}

#[tokio::test]
async fn a_time_not_yet_stable_gets_503_with_retry_after() {
    let (r, _sd, node) = face_with_node();
    make_pool(&r, r#"{"name":"p","durable":false}"#).await;
    node.frontier_lag_us
        .store(10_000_000, std::sync::atomic::Ordering::Relaxed);
    let at = super::now_us() - 1_000_000;
    let (s, h, b) = call(
        &r,
        "GET",
        &format!("/v1/pools/p/keys/k?at={at}&wait_ms=20"),
        &[],
        b"",
    )
    .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h["retry-after"], "1");
    let v = json(&b);
    assert_eq!(v["error"], "not_yet_stable");
    assert_eq!(v["at_us"], at);
    assert!(v["frontier_us"].as_u64().is_some_and(|f| f < at), "{v}");
}

#[tokio::test]
async fn a_full_disk_gets_507_and_stores_nothing() {
    let (r, _sd, node) = face_with_node();
    make_pool(&r, r#"{"name":"p","durable":true}"#).await;
    call(&r, "PUT", "/v1/pools/p/keys/k", &[], b"kept").await;
    node.disk_full
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let (s, _, b) = call(&r, "PUT", "/v1/pools/p/keys/k", &[], b"lost").await;
    assert_eq!(s, StatusCode::INSUFFICIENT_STORAGE);
    let v = json(&b);
    assert_eq!(v["error"], "storage_failure");
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("No space left")),
        "{v}"
    );
    let (s, _, b) = call(&r, "GET", "/v1/pools/p/keys/k", &[], b"").await;
    assert_eq!((s, b.as_slice()), (StatusCode::OK, &b"kept"[..]));
}

// ---------------------------------------------------------------- the accept loop's limits

/// Starts the face on a real loopback listener with `limits`; returns its address and the
/// shutdown switch (the face's own and the accept loop's).
async fn serve_face(
    limits: super::ConnLimits,
) -> (
    std::net::SocketAddr,
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let (router, tx) = face();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut stop = tx.subscribe();
    let task = tokio::spawn(super::serve_with_limits(
        listener,
        router,
        limits,
        async move {
            let _ = stop.wait_for(|v| *v).await;
        },
    ));
    (addr, tx, task)
}

/// Reads until EOF or `within`; true when the server closed the connection in time.
async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let end = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(end, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // a 408/400 reply before the close is fine
        }
    }
}

async fn healthz_over(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("reply in time")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_slow_request_head_and_an_idle_connection_are_closed_after_the_header_timeout() {
    use tokio::io::AsyncWriteExt;
    let limits = super::ConnLimits {
        connections_max: 16,
        header_read_timeout: Duration::from_millis(300),
    };
    let (addr, tx, task) = serve_face(limits).await;
    // Slowloris: half a head, then nothing.
    let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHo")
        .await
        .expect("write");
    // Connected and silent.
    let mut idle = tokio::net::TcpStream::connect(addr).await.expect("connect");
    assert!(
        closed_within(&mut slow, Duration::from_secs(3)).await,
        "a half-sent request head kept its connection open past the header timeout"
    );
    assert!(
        closed_within(&mut idle, Duration::from_secs(3)).await,
        "a silent connection stayed open past the header timeout"
    );
    // Others are unaffected.
    assert!(healthz_over(addr).await.starts_with("HTTP/1.1 200"));
    tx.send(true).expect("stop");
    task.await.expect("join").expect("serve");
}

#[tokio::test]
async fn connections_past_the_limit_are_closed_at_accept_and_a_freed_slot_is_reused() {
    let limits = super::ConnLimits {
        connections_max: 2,
        header_read_timeout: Duration::from_secs(30),
    };
    let (addr, tx, task) = serve_face(limits).await;
    let first = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _second = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // Give the loop time to accept both before the third arrives.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = tokio::net::TcpStream::connect(addr).await.expect("connect");
    assert!(
        closed_within(&mut third, Duration::from_secs(3)).await,
        "a connection past connections_max was kept"
    );
    // Freeing a slot lets the next client in.
    drop(first);
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let reply = healthz_over(addr).await;
        if reply.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "no slot came free after a client left: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tx.send(true).expect("stop");
    task.await.expect("join").expect("serve");
}
