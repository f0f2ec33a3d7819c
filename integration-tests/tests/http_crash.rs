//! Process-level durability: start the real binary, write through HTTP into a durable pool
//! from several concurrent clients, SIGKILL the process while writes are still in flight (no
//! flush, no shutdown), restart it on the same data directory and read back every write that
//! was acknowledged, value for value and version for version; versions stay dense (an
//! unacknowledged write may or may not be there, but nothing is half there). Also checks that
//! SIGTERM shuts down cleanly and loses nothing.
//!
//! A SIGKILL keeps the kernel's page cache, so this shows the acknowledgement path and
//! recovery; losing unsynced pages (power loss) is simulated at the file layer in storage's
//! tests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use squall_integration_tests::{http_agent, Squall};
use squall_protocols::http::wire::PutReply;

const WRITERS: usize = 8;
const KEYS: usize = 5;

type Acked = BTreeMap<(String, u64), String>;

fn create_pool(base: &str, body: &str) {
    let mut r = http_agent()
        .post(format!("{base}/v1/pools"))
        .header("content-type", "application/json")
        .send(body.to_string())
        .expect("create pool");
    assert_eq!(
        r.status().as_u16(),
        201,
        "{}",
        r.body_mut().read_to_string().unwrap_or_default()
    );
}

/// Starts writers that put until `stop` (or until the node dies); every acknowledged
/// (key, version) → value goes into `acked`.
fn start_writers(
    base: &str,
    acked: &Arc<Mutex<Acked>>,
    stop: &Arc<AtomicBool>,
    puts_max: usize,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..WRITERS)
        .map(|w| {
            let (base, acked, stop) = (base.to_string(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let agent = http_agent();
                for i in 0..puts_max {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("sensor-{}", (w + i) % KEYS);
                    let value = format!("w{w}-i{i}");
                    let Ok(mut r) = agent
                        .put(format!("{base}/v1/pools/d/keys/{key}"))
                        .send(value.as_bytes())
                    else {
                        break; // the node is gone
                    };
                    if r.status().as_u16() != 200 {
                        continue;
                    }
                    let Ok(text) = r.body_mut().read_to_string() else {
                        break;
                    };
                    let rep: PutReply = serde_json::from_str(&text).expect("put reply");
                    acked
                        .lock()
                        .expect("lock")
                        .insert((key, rep.version), value);
                }
            })
        })
        .collect()
}

fn get(base: &str, path: &str) -> (u16, String) {
    let mut r = http_agent()
        .get(format!("{base}{path}"))
        .call()
        .expect("get");
    let body = r.body_mut().read_to_string().unwrap_or_default();
    (r.status().as_u16(), body)
}

fn read_back(base: &str, acked: &Acked) {
    for ((key, version), value) in acked {
        let (s, body) = get(base, &format!("/v1/pools/d/keys/{key}?version={version}"));
        assert_eq!(
            (s, body.as_str()),
            (200, value.as_str()),
            "{key} v{version}"
        );
    }
    // Versions are dense from 0 to the newest kept, with every acknowledged one among them.
    for k in 0..KEYS {
        let key = format!("sensor-{k}");
        let (s, _) = get(base, &format!("/v1/pools/d/keys/{key}"));
        if s == 404 {
            assert!(!acked.keys().any(|(kk, _)| *kk == key), "{key} lost");
            continue;
        }
        let newest = acked
            .keys()
            .filter(|(kk, _)| *kk == key)
            .map(|(_, v)| *v)
            .max();
        if let Some(n) = newest {
            for v in 0..=n {
                let (s, _) = get(base, &format!("/v1/pools/d/keys/{key}?version={v}"));
                assert_eq!(s, 200, "{key}: version {v} missing below acknowledged {n}");
            }
        }
    }
}

#[test]
fn sigkill_mid_load_loses_no_acknowledged_write() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut node = Squall::start(dir.path(), &[])?;
    let base = node.http_url();
    create_pool(&base, r#"{"name":"d","mode":"versioned","durable":true}"#);
    let acked = Arc::new(Mutex::new(Acked::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(&base, &acked, &stop, 100_000);
    // Kill once a few hundred writes are acknowledged, with the writers still going.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().expect("lock").len() < 300 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    node.kill()?;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() >= 300,
        "only {} writes acknowledged",
        acked.len()
    );

    let node = Squall::start(dir.path(), &[])?;
    read_back(&node.http_url(), &acked);
    Ok(())
}

#[test]
fn sigterm_shuts_down_cleanly() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut node = Squall::start(dir.path(), &[])?;
    let base = node.http_url();
    create_pool(&base, r#"{"name":"d","durable":true}"#);
    let acked = Arc::new(Mutex::new(Acked::new()));
    let stop = Arc::new(AtomicBool::new(false));
    for w in start_writers(&base, &acked, &stop, 20) {
        w.join().expect("writer");
    }
    let acked = acked.lock().expect("lock").clone();
    assert_eq!(acked.len(), WRITERS * 20);
    let status = node.terminate(Duration::from_secs(20))?;
    assert!(
        status.success(),
        "exit status {status}; output:\n{}",
        node.output_text()
    );
    assert!(
        node.output_text().contains("stopped cleanly"),
        "{}",
        node.output_text()
    );
    let node = Squall::start(dir.path(), &[])?;
    read_back(&node.http_url(), &acked);
    Ok(())
}
