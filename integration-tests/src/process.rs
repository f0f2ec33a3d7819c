//! Start the real `squall` binary on free ports
//! with a temporary data directory, find the addresses it printed, run CLI commands, and kill
//! it (SIGKILL) or stop it (SIGTERM).
//!
//! The binary is built once per test process (`cargo build -p squall-broker --bin squall` into
//! the same target directory as the tests), or taken from `$SQUALL_BIN` when that is set.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long a node may take to print that it is ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The `squall` binary, built on first use.
pub fn squall_bin() -> anyhow::Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| build_squall().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

fn build_squall() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("SQUALL_BIN") {
        return Ok(PathBuf::from(p));
    }
    // Test binaries live in <target>/<profile>/deps/.
    let exe = std::env::current_exe().context("locating the test binary")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary is not in <target>/<profile>/deps")?
        .to_path_buf();
    let target_dir = profile_dir.parent().context("no target dir")?.to_path_buf();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "squall-broker", "--bin", "squall"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if release {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .context("running cargo build for the squall binary")?;
    if !status.success() {
        bail!("cargo build -p squall-broker failed: {status}");
    }
    let bin = profile_dir.join("squall");
    if !bin.exists() {
        bail!("built squall but {} does not exist", bin.display());
    }
    Ok(bin)
}

/// A running `squall serve` process. Dropping it kills the process.
pub struct Squall {
    child: Option<Child>,
    /// Where each face listens, from the `squall: <face> listening on <addr>` lines.
    pub addrs: BTreeMap<String, SocketAddr>,
    /// The data directory it was started with.
    pub data_dir: PathBuf,
    /// Everything it printed on stdout and stderr so far (for failure messages).
    pub output: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for Squall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Squall")
            .field("addrs", &self.addrs)
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

impl Squall {
    /// Starts `squall serve --data-dir DIR --http-listen 127.0.0.1:0 --kafka-listen 127.0.0.1:0`
    /// plus `extra` arguments and waits until it says it is ready.
    pub fn start(data_dir: &Path, extra: &[&str]) -> anyhow::Result<Squall> {
        let bin = squall_bin()?;
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--http-listen", "127.0.0.1:0"])
            // Free ports for every face, so tests can run side by side.
            .args(["--kafka-listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning squall serve")?;
        let output = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        for pipe in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let (tx, output) = (tx.clone(), output.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut o) = output.lock() {
                        o.push(line.clone());
                    }
                    let _ = tx.send(line);
                }
            });
        }
        let mut me = Squall {
            child: Some(child),
            addrs: BTreeMap::new(),
            data_dir: data_dir.to_path_buf(),
            output,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => bail!(
                    "squall did not become ready in time; output:\n{}",
                    me.output_text()
                ),
            };
            if let Some(rest) = line.strip_prefix("squall: ") {
                if let Some((face, tail)) = rest.split_once(" listening on ") {
                    let addr = tail.split_whitespace().next().unwrap_or("");
                    if let Ok(a) = addr.parse() {
                        me.addrs.insert(face.to_string(), a);
                    }
                }
                if rest.starts_with("ready") {
                    return Ok(me);
                }
            }
            if line.contains("error") {
                // Give it a moment to exit, then report.
                std::thread::sleep(Duration::from_millis(100));
                bail!("squall failed to start:\n{}", me.output_text());
            }
        }
    }

    /// All output so far, one line each.
    pub fn output_text(&self) -> String {
        self.output.lock().map(|o| o.join("\n")).unwrap_or_default()
    }

    /// The HTTP base URL, e.g. `http://127.0.0.1:41234`.
    pub fn http_url(&self) -> String {
        match self.addrs.get("http") {
            Some(a) => format!("http://{a}"),
            None => "http://127.0.0.1:0".into(),
        }
    }

    /// The Kafka bootstrap address, e.g. `127.0.0.1:41235` (an error if the Kafka face did not
    /// print where it listens).
    pub fn kafka_bootstrap(&self) -> anyhow::Result<String> {
        let a = self.addrs.get("kafka").context("no kafka address")?;
        Ok(a.to_string())
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill().context("SIGKILL")?;
            c.wait().context("waiting for the killed process")?;
        }
        Ok(())
    }

    /// SIGTERM, then waits up to `timeout` for a clean exit.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let Some(mut c) = self.child.take() else {
            bail!("not running")
        };
        let pid = i32::try_from(c.id()).context("pid out of range")?;
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped) and a valid signal.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        if rc != 0 {
            bail!("kill(SIGTERM) failed: {}", std::io::Error::last_os_error());
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = c.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                bail!(
                    "squall did not exit within {timeout:?} of SIGTERM; output:\n{}",
                    self.output_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `squall --server <this node> ARGS…` as a client and returns its output.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<Output> {
        Command::new(squall_bin()?)
            .arg("--server")
            .arg(self.http_url())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running the squall CLI")
    }
}

impl Drop for Squall {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A blocking HTTP agent for tests that does not turn 4xx/5xx into errors.
pub fn http_agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build(),
    )
}
