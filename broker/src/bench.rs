//! `squall bench http`: a closed-loop load generator against a running node's HTTP API.
//! N writer threads, each with its own keep-alive connection, issue requests back to back for a
//! fixed time; the run reports throughput and latency percentiles per phase. Phases, in one run
//! so they share the machine's state: `healthz` (the HTTP round-trip floor, the baseline),
//! `put-volatile` (ordering + apply), `put-durable` (plus group-commit fsync), `get-latest`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

use crate::cli::seg;

/// Options of `squall bench http`.
#[derive(Args, Debug, Clone)]
pub struct HttpBench {
    /// Concurrent connections (each a closed loop: one request in flight).
    #[arg(long, default_value_t = 64)]
    pub writers: usize,
    /// Seconds per phase per run.
    #[arg(long, default_value_t = 5)]
    pub duration_s: u64,
    /// Value size of puts, bytes.
    #[arg(long, default_value_t = 1024)]
    pub value_bytes: usize,
    /// Runs per phase (the report gives the median run).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Phases to run (comma-separated): healthz, put-volatile, put-durable, get-latest.
    #[arg(long, default_value = "healthz,put-volatile,put-durable,get-latest")]
    pub phases: String,
}

/// Most writer threads.
const WRITERS_MAX: usize = 1024;

struct RunResult {
    ops: u64,
    errors: u64,
    secs: f64,
    p50_us: u64,
    p99_us: u64,
}

fn pct(sorted: &[u32], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    u64::from(sorted[i.min(sorted.len() - 1)])
}

fn one_run(server: &str, phase: &str, b: &HttpBench, run: usize) -> anyhow::Result<RunResult> {
    let stop = Arc::new(AtomicBool::new(false));
    let value = Arc::new(vec![b'x'; b.value_bytes]);
    let mut handles = Vec::with_capacity(b.writers);
    for w in 0..b.writers {
        let (stop, value, server, phase) = (
            stop.clone(),
            value.clone(),
            server.to_string(),
            phase.to_string(),
        );
        handles.push(std::thread::spawn(move || {
            let agent = ureq::Agent::new_with_config(
                ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build(),
            );
            let pool = if phase == "put-volatile" {
                "bench-volatile"
            } else {
                "bench-durable"
            };
            let url = match phase.as_str() {
                "healthz" => format!("{server}/healthz"),
                _ => format!(
                    "{server}/v1/pools/{pool}/keys/{}",
                    seg(&format!("w{w}-r{run}"))
                ),
            };
            let get_url = format!(
                "{server}/v1/pools/bench-durable/keys/{}",
                seg(&format!("w{w}-r0"))
            );
            let mut lat = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = match phase.as_str() {
                    "healthz" => agent.get(&url).call(),
                    "get-latest" => agent.get(&get_url).call(),
                    _ => agent.put(&url).send(&value[..]),
                };
                let ok = match r {
                    Ok(mut resp) => {
                        let good = resp.status().is_success();
                        let _ = resp.body_mut().with_config().limit(1 << 24).read_to_vec();
                        good
                    }
                    Err(_) => false,
                };
                if ok {
                    lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(b.duration_s));
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (lat, e) = h
            .join()
            .map_err(|_| anyhow::anyhow!("a bench thread panicked"))?;
        all.extend(lat);
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_unstable();
    Ok(RunResult {
        ops: all.len() as u64,
        errors,
        secs,
        p50_us: pct(&all, 0.50),
        p99_us: pct(&all, 0.99),
    })
}

/// Runs the phases and prints a Markdown table (medians over runs) to `out`.
pub fn run_http(server: &str, b: &HttpBench, out: &mut impl Write) -> anyhow::Result<()> {
    if b.writers == 0 || b.writers > WRITERS_MAX {
        bail!("--writers must be 1..={WRITERS_MAX}");
    }
    if b.runs == 0 || b.duration_s == 0 {
        bail!("--runs and --duration-s must be at least 1");
    }
    let server = server.trim_end_matches('/');
    let client = crate::cli::Client::new(server);
    for (name, durable) in [("bench-volatile", false), ("bench-durable", true)] {
        let _ = client.pool_delete(name);
        client
            .pool_create(
                &serde_json::json!({"name": name, "mode": "versioned", "durable": durable}),
            )
            .with_context(|| format!("creating pool {name}"))?;
    }
    writeln!(
        out,
        "| phase | writers | value B | ops/s (median run) | MiB/s | p50 µs | p99 µs | errors |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|")?;
    for phase in b.phases.split(',').map(str::trim) {
        if !matches!(
            phase,
            "healthz" | "put-volatile" | "put-durable" | "get-latest"
        ) {
            bail!("unknown phase {phase:?}");
        }
        if phase == "get-latest" {
            // Make sure every key read exists.
            for w in 0..b.writers {
                client.put(
                    "bench-durable",
                    &format!("w{w}-r0"),
                    &vec![b'x'; b.value_bytes],
                    None,
                    None,
                )?;
            }
        }
        let mut runs = Vec::with_capacity(b.runs);
        for run in 0..b.runs {
            let r = one_run(server, phase, b, run)?;
            eprintln!(
                "bench: {phase} run {run}: {:.0} ops/s, p50 {} µs, p99 {} µs, {} errors",
                r.ops as f64 / r.secs,
                r.p50_us,
                r.p99_us,
                r.errors
            );
            runs.push(r);
        }
        runs.sort_by(|a, b| (a.ops as f64 / a.secs).total_cmp(&(b.ops as f64 / b.secs)));
        let m = &runs[runs.len() / 2];
        let ops_s = m.ops as f64 / m.secs;
        let mib_s = if phase.starts_with("put") || phase == "get-latest" {
            ops_s * b.value_bytes as f64 / (1024.0 * 1024.0)
        } else {
            0.0
        };
        writeln!(
            out,
            "| {phase} | {} | {} | {ops_s:.0} | {mib_s:.2} | {} | {} | {} |",
            b.writers, b.value_bytes, m.p50_us, m.p99_us, m.errors
        )?;
        out.flush()?;
    }
    Ok(())
}
