//! kcat smoke test against the real `squall serve`: metadata (-L), produce (-P) and consume (-C)
//! with Debian's kcat, which is built on an old librdkafka (2.0.2 on Debian 12) — the client
//! that breaks on tagged fields in ApiVersions and needs Produce v0 advertised for compression.
//! Skips loudly if kcat is missing here; `.ci/install.sh` installs it.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::Context;
use squall_integration_tests::Squall;

fn kcat_bin() -> Option<&'static str> {
    ["kcat", "kafkacat"].into_iter().find(|b| {
        Command::new(b)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[test]
fn kcat_metadata_produce_consume() -> anyhow::Result<()> {
    let Some(kcat) = kcat_bin() else {
        eprintln!("\n!!! SKIPPING kcat smoke test: kcat is not installed here (.ci/install.sh installs it) !!!\n");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let s = Squall::start(dir.path(), &[])?;
    let addr = s.kafka_bootstrap()?;

    // Debian's kcat is built without libzstd, so zstd is covered by the rdkafka tests instead.
    for codec in ["none", "gzip", "snappy", "lz4"] {
        let topic = format!("smoke-{codec}");
        let mut p = Command::new("timeout")
            .args([
                "60", kcat, "-b", &addr, "-P", "-t", &topic, "-K:", "-z", codec, "-X", "acks=all",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        {
            let mut stdin = p.stdin.take().context("stdin")?;
            for i in 0..50 {
                writeln!(stdin, "k{i}:v{i}")?;
            }
        }
        let out = p.wait_with_output()?;
        assert!(
            out.status.success(),
            "kcat -P ({codec}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new("timeout")
            .args([
                "60",
                kcat,
                "-b",
                &addr,
                "-C",
                "-t",
                &topic,
                "-o",
                "beginning",
                "-e",
                "-f",
                "%o %k=%s\n",
            ])
            .output()?;
        assert!(
            out.status.success(),
            "kcat -C ({codec}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        let expect: Vec<String> = (0..50).map(|i| format!("{i} k{i}=v{i}")).collect();
        assert_eq!(lines, expect, "codec {codec}");
    }
    let out = Command::new("timeout")
        .args(["30", kcat, "-b", &addr, "-L"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kcat -L: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("1 brokers:"), "{text}");
    assert!(
        text.contains("topic \"smoke-lz4\" with 1 partitions"),
        "{text}"
    );
    Ok(())
}
