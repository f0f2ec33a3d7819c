//! Shared harness of the DDS tests: a private network namespace per test (loopback up,
//! multicast on, nothing leaves the machine), Cyclone DDS peers (the `cyclonedds` Python
//! binding running `cyclone_peer.py`), the FlightPlan topic config, and polling helpers.
//!
//! Each test calls [`in_netns`] first. Outside a namespace it creates one, re-runs the same test
//! binary inside it (`ip netns exec NS <exe> --exact <test>`), checks its exit status and deletes
//! the namespace. Inside (env `SQUALL_DDS_NETNS` set) it returns `true` and the test body runs,
//! with every thread and child process in the namespace.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use squall_protocols::dds::cdr::{FieldDesc, FieldType};
use squall_protocols::dds::config::{DdsConfig, DdsTopicConfig};

const NETNS_ENV: &str = "SQUALL_DDS_NETNS";

/// Runs the calling test inside a fresh network namespace. Returns `true` when the caller is
/// the copy inside the namespace (run the body), `false` when the outer copy has already run it
/// (and asserted its success) or the machine cannot make namespaces (skipped, loudly).
pub fn in_netns(test_name: &str) -> bool {
    in_netns_with(test_name, &[])
}

/// [`in_netns`], passing extra environment variables to the copy inside.
pub fn in_netns_with(test_name: &str, env: &[(&str, &str)]) -> bool {
    if std::env::var_os(NETNS_ENV).is_some() {
        return true;
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false);
    let tag = test_name
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    let ns = format!("sqdds-{}-{:08x}", std::process::id(), tag);
    let made = is_root
        && Command::new("ip")
            .args(["netns", "add", &ns])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    if !made {
        eprintln!("\n!!!!! SKIPPED {test_name}: needs root and `ip netns` (iproute2) to run DDS in a private network namespace !!!!!\n");
        return false;
    }
    let ok = Command::new("ip")
        .args(["-n", &ns, "link", "set", "lo", "up"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
        && Command::new("ip")
            .args(["-n", &ns, "link", "set", "lo", "multicast", "on"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    let result = if ok {
        let exe = std::env::current_exe().expect("test executable path");
        Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(exe)
            .args(["--exact", test_name, "--nocapture", "--test-threads", "1"])
            .env(NETNS_ENV, &ns)
            .envs(env.iter().copied())
            .status()
    } else {
        Err(std::io::Error::other(
            "could not bring lo up in the namespace",
        ))
    };
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    let status = result.expect("running the test inside the namespace");
    assert!(
        status.success(),
        "{test_name} failed inside network namespace {ns}"
    );
    false
}

/// The Python interpreter that has `cyclonedds` (installed by .ci/install.sh).
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SQUALL_DDS_PYTHON") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    let p = home.join(".squall-dds-venv/bin/python");
    assert!(
        p.exists(),
        "Cyclone DDS Python binding not installed at {} (run .ci/install.sh)",
        p.display()
    );
    p
}

fn peer_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/dds_support/cyclone_peer.py")
}

/// Cyclone configuration: loopback only, a short participant lease so a killed peer is noticed
/// within ~2 s.
pub const CYCLONE_URI: &str = "<General><Interfaces><NetworkInterface name=\"lo\"/></Interfaces></General><Discovery><LeaseDuration>2s</LeaseDuration></Discovery>";

/// [`CYCLONE_URI`] with a participant lease of `secs` seconds. Cyclone announces itself every
/// 4/5 of its lease and rustdds declares a participant lost as soon as the lease has passed
/// without an announcement, so a 2 s lease leaves only 0.4 s of slack: a peer starved of CPU
/// that long (a loaded 2-core box) is declared lost. Tests that must not see that use more.
pub fn cyclone_uri_with_lease(secs: u32) -> String {
    CYCLONE_URI.replace("<LeaseDuration>2s<", &format!("<LeaseDuration>{secs}s<"))
}

/// A running Cyclone peer; its stdout lines are collected in the background.
pub struct Peer {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
    pub name: String,
}

impl Peer {
    /// Starts `cyclone_peer.py <args>`.
    pub fn start(name: &str, args: &[&str]) -> Peer {
        Peer::start_with_uri(name, args, CYCLONE_URI)
    }

    /// Starts `cyclone_peer.py <args>` with its own Cyclone configuration (`CYCLONEDDS_URI`).
    pub fn start_with_uri(name: &str, args: &[&str], uri: &str) -> Peer {
        let mut child = Command::new(python())
            .arg(peer_script())
            .args(args)
            .env("CYCLONEDDS_URI", uri)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the Cyclone peer");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("peer stdout");
        let l = Arc::clone(&lines);
        let n = name.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                eprintln!("[{n}] {line}");
                l.lock().unwrap().push(line);
            }
        });
        Peer {
            child,
            lines,
            name: name.to_owned(),
        }
    }

    /// The lines printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until a line satisfies `f` (panics after `timeout`).
    pub fn wait_line(&self, timeout: Duration, f: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + timeout;
        loop {
            if let Some(l) = self.lines().into_iter().find(|l| f(l)) {
                return l;
            }
            assert!(
                Instant::now() < end,
                "{}: no matching line within {timeout:?}; got {:?}",
                self.name,
                self.lines()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        panic!("{} did not exit within {timeout:?}", self.name);
    }

    /// Sends a signal by name (`STOP`, `CONT`) with `kill(1)`.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{sig} {}", self.name);
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The JSON sample lines of a `sub` peer.
    pub fn samples(&self) -> Vec<serde_json::Value> {
        self.lines()
            .iter()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// FlightPlan { string flight_id (key); uint64 version; string route; }.
pub fn flight_plan_fields() -> Vec<FieldDesc> {
    vec![
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
    ]
}

/// The FlightPlan topic on pool `pool` (TRANSIENT_LOCAL, KEEP_LAST 1, reliable, shared).
pub fn flight_topic(name: &str, pool: &str) -> DdsTopicConfig {
    DdsTopicConfig {
        name: name.into(),
        type_name: "FlightPlan".into(),
        pool: pool.into(),
        fields: flight_plan_fields(),
        ..DdsTopicConfig::default()
    }
}

/// The common start of the in-memory DDS tests: the face's log (see [`init_log`]), an in-memory
/// node, and a face serving `topic` on it; returns the node, the topic's type and the face.
pub async fn mem_face(
    topic: DdsTopicConfig,
) -> (
    Arc<squall_protocols::testing::MemNode>,
    squall_protocols::dds::cdr::TypeDesc,
    squall_protocols::dds::DdsFace,
) {
    init_log();
    let node = Arc::new(squall_protocols::testing::MemNode::new());
    let ty = topic.type_desc();
    let face = squall_protocols::dds::DdsFace::start(config(vec![topic]), Arc::clone(&node))
        .await
        .expect("starting the DDS face");
    (node, ty, face)
}

/// A config with these topics on domain 0, loopback only.
pub fn config(topics: Vec<DdsTopicConfig>) -> DdsConfig {
    DdsConfig {
        topic: topics,
        ..DdsConfig::default()
    }
}

/// Polls `f` every 20 ms until it returns `Some` (panics with `what` after `timeout`).
pub async fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Prints the face's log (target `squall_protocols`, info and up; rustdds's own chatter stays
/// quiet unless `SQUALL_TEST_LOG=rustdds`) to stderr with a monotonic time stamp, when
/// `SQUALL_TEST_LOG` is set: a failed run then shows what the face saw (discovery, lost
/// writers, refused samples) and when.
pub fn init_log() {
    struct Stderr(Instant, bool);
    impl log::Log for Stderr {
        fn enabled(&self, m: &log::Metadata<'_>) -> bool {
            (m.target().starts_with("squall") || (self.1 && m.target().starts_with("rustdds")))
                && m.level() <= log::Level::Info
        }
        fn log(&self, r: &log::Record<'_>) {
            if self.enabled(r.metadata()) {
                let t = self.0.elapsed().as_secs_f64();
                eprintln!("[{t:9.3}] {} {}", r.level(), r.args());
            }
        }
        fn flush(&self) {}
    }
    if let Some(v) = std::env::var_os("SQUALL_TEST_LOG") {
        let logger = Box::leak(Box::new(Stderr(Instant::now(), v == "rustdds")));
        if log::set_logger(logger).is_ok() {
            log::set_max_level(log::LevelFilter::Info);
        }
    }
}
