//! The `squall` CLI against a real node: pool create/list/delete, put, get (latest, by version,
//! at a time), watch, and `replay` printing every version in a time window in order as JSON
//! lines (the audit view), with clear errors when the server is unreachable or input is wrong.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use squall_integration_tests::{squall_bin, Squall};

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn cli_put_get_replay_watch() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node = Squall::start(dir.path(), &[])?;
    ok(node.cli(&["pool", "create", "audit"])?);
    ok(node.cli(&["pool", "create", "fast", "--mode", "latest", "--volatile"])?);
    let list = ok(node.cli(&["pool", "list"])?);
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(
        list.contains("\"name\":\"fast\"") && list.contains("\"mode\":\"latest\""),
        "{list}"
    );

    let mut replies = vec![];
    for (key, v) in [
        ("plane/1", "FL100"),
        ("plane/2", "FL200"),
        ("plane/1", "FL120"),
        ("plane/1", "FL140"),
    ] {
        let out = ok(node.cli(&["put", "audit", key, v])?);
        let r: Value = serde_json::from_str(out.trim())?;
        replies.push(r);
        std::thread::sleep(Duration::from_millis(2));
    }
    let t = |i: usize| replies[i]["time_us"].as_u64().unwrap_or(0);
    assert_eq!(ok(node.cli(&["get", "audit", "plane/1"])?), "FL140");
    assert_eq!(
        ok(node.cli(&["get", "audit", "plane/1", "--version", "1"])?),
        "FL120"
    );
    assert_eq!(
        ok(node.cli(&["get", "audit", "plane/1", "--at", &(t(3) - 1).to_string()])?),
        "FL120"
    );

    // Replay the window [t1, t3] over the prefix: plane/2 v0, plane/1 v1, plane/1 v2, in order.
    let out = ok(node.cli(&[
        "replay",
        "audit",
        "--prefix",
        "plane/",
        "--from",
        &t(1).to_string(),
        "--to",
        &t(3).to_string(),
    ])?);
    let lines: Vec<Value> = out
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let got: Vec<(String, u64, String)> = lines
        .iter()
        .map(|l| {
            let value = base64_decode(l["value"].as_str().unwrap_or(""));
            (
                l["key"].as_str().unwrap_or("").to_string(),
                l["version"].as_u64().unwrap_or(99),
                value,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("plane/2".into(), 0, "FL200".into()),
            ("plane/1".into(), 1, "FL120".into()),
            ("plane/1".into(), 2, "FL140".into()),
        ]
    );
    for l in &lines {
        assert!(
            l["time_us"].as_u64().is_some() && l["shard_seq"].as_u64().is_some(),
            "{l}"
        );
    }
    let times: Vec<u64> = lines.iter().filter_map(|l| l["time_us"].as_u64()).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "in time order: {times:?}"
    );
    // One key only.
    let out = ok(node.cli(&[
        "replay",
        "audit",
        "--key",
        "plane/1",
        "--from",
        "0",
        "--to",
        &t(3).to_string(),
    ])?);
    assert_eq!(out.lines().count(), 3);

    // Watch from version 1: prints the replayed events as JSON lines.
    let mut child = Command::new(squall_bin()?)
        .args([
            "--server",
            &node.http_url(),
            "watch",
            "audit",
            "--key",
            "plane/1",
            "--from-version",
            "1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let first: Value =
        serde_json::from_str(&lines.next().ok_or_else(|| anyhow::anyhow!("no event"))??)?;
    assert_eq!(
        (first["event"].as_str(), first["id"].as_str()),
        (Some("put"), Some("1"))
    );
    child.kill()?;
    child.wait()?;

    // Errors: a clear message and a non-zero exit.
    let out = node.cli(&["get", "audit", "nope"])?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(squall_bin()?)
        .args(["--server", "http://127.0.0.1:1", "pool", "list"])
        .output()?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(node.cli(&["pool", "delete", "fast"])?);
    Ok(())
}

#[test]
fn serve_refuses_bad_config_naming_the_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("squall.toml");
    std::fs::write(&cfg, "[http]\nlisen = \"127.0.0.1:1\"\n")?;
    let out = Command::new(squall_bin()?)
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("squall.toml") && err.contains("lisen"),
        "{err}"
    );
    Ok(())
}

fn base64_decode(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = vec![];
    for c in s.bytes().filter(|&c| c != b'=') {
        let Some(v) = T.iter().position(|&t| t == c) else {
            continue;
        };
        bits = (bits << 6) | v as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
