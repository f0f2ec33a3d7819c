//! `squall-mcast-bench`: the ordered-multicast benchmark (issue 3). Not a timed test.
//!
//! For each message size it starts three `squall-mcast-member` processes on 127.0.0.1, all
//! sending, four times:
//! 1. `raw`: unordered TCP fan-out (each process writes its messages straight to the two
//!    others over the same transport and framing; a message counts as delivered on arrival);
//! 2. `ordered`: the Derecho-style ordered multicast at full speed (flow control only);
//! 3. `ordered` at half of the rate reached in 2 (per sender);
//! 4. `raw` at that same rate (the latency floor of the box at that load).
//!
//! Each process measures the same window (after a warm-up) and prints a `RESULT` line:
//! delivered messages/s and MB/s at that member (messages of all three senders, its own
//! included) and the latency from send to delivery of the *other* members' messages
//! (p50/p99; the payload carries the wall-clock send time, one host, one clock). The table
//! shows the mean rate over the three members and the worst p50/p99 among them. Ordered
//! runs also check that the three members end with the same delivered count and digest.
//!
//! ```text
//! cargo build --release -p squall-integration-tests --bin squall-mcast-member --bin squall-mcast-bench
//! target/release/squall-mcast-bench [--sizes 100,1024,65536] [--warmup-ms 1000]
//!     [--measure-ms 3000] [--window-bytes 8388608] [--window-max 8192]
//!     [--baseline-member PATH] [--ordered-only [--rounds N]]
//! ```
//!
//! Every member also reports its CPU time over the measured window (`/proc/self/stat`): the
//! tables show CPU ns per delivered message and CPU share (% of one core), averaged over the
//! members. On a shared box CPU per message moves much less with the load than msgs/s does.
//! `--ordered-only` runs just the ordered phase at full speed (this build, then the
//! baseline's, `--rounds` times alternating) for a quick A/B.
//!
//! `--baseline-member PATH` (another build of `squall-mcast-member`, e.g. of an older commit)
//! adds, per size, the ordered phases at full speed and at the same half rate run with that
//! binary, right after the current one's, and prints them in a second table: a before/after
//! comparison measured in the same run.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Smallest window (messages per sender) the bench gives a member.
const WINDOW_MIN: usize = 32;
/// Largest window by default (`--window-max`).
const WINDOW_MAX_DEFAULT: usize = 8192;

/// Kills the member processes of a phase on drop (also when the bench fails).
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Res {
    msgs_per_s: f64,
    mb_per_s: f64,
    p50_us: u64,
    p99_us: u64,
    count: u64,
    digest: String,
    cpu_pct: f64,
    cpu_ns_per_msg: f64,
}

#[derive(Clone, Debug, Default)]
struct Phase {
    msgs_per_s: f64,
    mb_per_s: f64,
    p50_us: u64,
    p99_us: u64,
    agree: bool,
    /// Mean over the members: CPU time per delivered message (ns) and CPU share (% of one core).
    cpu_ns_per_msg: f64,
    cpu_pct: f64,
}

fn field<'a>(line: &'a str, k: &str) -> &'a str {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .find(|(kk, _)| *kk == k)
        .map(|(_, v)| v)
        .unwrap_or("")
}

fn free_addrs(n: usize) -> Result<Vec<SocketAddr>> {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()?;
    ls.iter().map(|l| Ok(l.local_addr()?)).collect()
}

struct Args {
    sizes: Vec<usize>,
    warmup_ms: u64,
    measure_ms: u64,
    window_bytes: usize,
    window_max: usize,
    baseline_member: Option<PathBuf>,
    /// Only the ordered phase at full speed (and the baseline's), `rounds` times alternating:
    /// a quick A/B of CPU per message and throughput.
    ordered_only: bool,
    rounds: usize,
}

fn parse() -> Result<Args> {
    let mut a = Args {
        sizes: vec![100, 1024, 65536],
        warmup_ms: 1000,
        measure_ms: 3000,
        window_bytes: 8 << 20,
        window_max: WINDOW_MAX_DEFAULT,
        baseline_member: None,
        ordered_only: false,
        rounds: 1,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--ordered-only" {
            a.ordered_only = true;
            i += 1;
            continue;
        }
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--rounds" => a.rounds = v.parse()?,
            "--sizes" => a.sizes = v.split(',').map(|s| s.parse()).collect::<Result<_, _>>()?,
            "--warmup-ms" => a.warmup_ms = v.parse()?,
            "--measure-ms" => a.measure_ms = v.parse()?,
            "--window-bytes" => a.window_bytes = v.parse()?,
            "--window-max" => a.window_max = v.parse()?,
            "--baseline-member" => a.baseline_member = Some(PathBuf::from(v)),
            x => bail!("unknown argument {x}"),
        }
        i += 2;
    }
    Ok(a)
}

fn member_bin() -> Result<PathBuf> {
    let me = std::env::current_exe()?;
    let p = me
        .parent()
        .context("no parent dir")?
        .join("squall-mcast-member");
    if !p.exists() {
        bail!(
            "{} not found: build it with --bin squall-mcast-member",
            p.display()
        );
    }
    Ok(p)
}

fn window_for(a: &Args, size: usize) -> usize {
    (a.window_bytes / size).clamp(WINDOW_MIN, a.window_max.max(WINDOW_MIN))
}

fn run_phase(a: &Args, raw: bool, size: usize, rate: u64) -> Result<Phase> {
    run_phase_with(&member_bin()?, a, raw, size, rate)
}

fn run_phase_with(
    bin: &std::path::Path,
    a: &Args,
    raw: bool,
    size: usize,
    rate: u64,
) -> Result<Phase> {
    let addrs = free_addrs(3)?;
    let mut procs = Procs(Vec::new());
    for i in 0..3 {
        let mut cmd = Command::new(bin);
        cmd.args([
            "--id",
            &(i + 1).to_string(),
            "--listen",
            &addrs[i].to_string(),
        ]);
        for (j, addr) in addrs.iter().enumerate() {
            if j != i {
                cmd.args(["--peer", &format!("{}={addr}", j + 1)]);
            }
        }
        cmd.args([
            "--mode",
            if raw { "raw" } else { "ordered" },
            "--size",
            &size.to_string(),
            "--rate",
            &rate.to_string(),
            "--window",
            &window_for(a, size).to_string(),
            "--warmup-ms",
            &a.warmup_ms.to_string(),
            "--measure-ms",
            &a.measure_ms.to_string(),
            "--drain-ms",
            "1500",
            "--linger-ms",
            "1000",
            "--suspect-ms",
            "5000",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        procs
            .0
            .push(cmd.spawn().context("spawning squall-mcast-member")?);
    }
    let deadline = Instant::now() + Duration::from_millis(a.warmup_ms + a.measure_ms + 40_000);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    for c in &mut procs.0 {
        let out = c.stdout.take().context("stdout")?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if l.starts_with("RESULT ") || l.starts_with("REMOVED") || l.starts_with("ERROR") {
                    let _ = tx.send(l);
                }
            }
        });
    }
    drop(tx);
    let mut res = Vec::new();
    while res.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let l = rx
            .recv_timeout(left)
            .context("a member did not report in time")?;
        if !l.starts_with("RESULT ") {
            bail!("member reported: {l}");
        }
        res.push(Res {
            msgs_per_s: field(&l, "msgs_per_s").parse()?,
            mb_per_s: field(&l, "mb_per_s").parse()?,
            p50_us: field(&l, "p50_us").parse()?,
            p99_us: field(&l, "p99_us").parse()?,
            count: field(&l, "count").parse()?,
            digest: field(&l, "digest").to_string(),
            // Older member builds do not report CPU time.
            cpu_pct: field(&l, "cpu_pct").parse().unwrap_or(0.0),
            cpu_ns_per_msg: field(&l, "cpu_ns_per_msg").parse().unwrap_or(0.0),
        });
        eprintln!("  {l}");
    }
    let n = res.len() as f64;
    Ok(Phase {
        msgs_per_s: res.iter().map(|r| r.msgs_per_s).sum::<f64>() / n,
        mb_per_s: res.iter().map(|r| r.mb_per_s).sum::<f64>() / n,
        p50_us: res.iter().map(|r| r.p50_us).max().unwrap_or(0),
        p99_us: res.iter().map(|r| r.p99_us).max().unwrap_or(0),
        agree: res
            .iter()
            .all(|r| r.count == res[0].count && r.digest == res[0].digest),
        cpu_ns_per_msg: res.iter().map(|r| r.cpu_ns_per_msg).sum::<f64>() / n,
        cpu_pct: res.iter().map(|r| r.cpu_pct).sum::<f64>() / n,
    })
}

/// `--ordered-only`: the ordered phase at full speed, this build then the baseline (if
/// given), `--rounds` times; one line per phase.
fn ordered_ab(a: &Args) -> Result<()> {
    println!("| size | round | build | ordered msgs/s | p50 / p99 ms | CPU ns/msg | CPU % | digests agree |");
    println!("|---|---|---|---|---|---|---|---|");
    for &size in &a.sizes {
        for round in 1..=a.rounds {
            let mut builds = vec![("this", member_bin()?)];
            if let Some(b) = &a.baseline_member {
                builds.push(("baseline", b.clone()));
            }
            for (name, bin) in builds {
                let p = run_phase_with(&bin, a, false, size, 0)?;
                println!(
                    "| {size} B | {round} | {name} | {:.0} | {} / {} | {:.0} | {:.0} | {} |",
                    p.msgs_per_s,
                    ms(p.p50_us),
                    ms(p.p99_us),
                    p.cpu_ns_per_msg,
                    p.cpu_pct,
                    if p.agree { "yes" } else { "NO" }
                );
            }
        }
    }
    Ok(())
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn main() -> Result<()> {
    let a = parse()?;
    if a.ordered_only {
        return ordered_ab(&a);
    }
    let mut rows = Vec::new();
    let mut baseline = Vec::new();
    for &size in &a.sizes {
        eprintln!("size {size} B, window {}", window_for(&a, size));
        let raw = run_phase(&a, true, size, 0)?;
        let ord = run_phase(&a, false, size, 0)?;
        let half = ((ord.msgs_per_s / 3.0) / 2.0).max(1.0) as u64;
        let ord_half = run_phase(&a, false, size, half)?;
        let raw_half = run_phase(&a, true, size, half)?;
        if let Some(b) = &a.baseline_member {
            eprintln!("  baseline member {}", b.display());
            let base = run_phase_with(b, &a, false, size, 0)?;
            let base_half = run_phase_with(b, &a, false, size, half)?;
            baseline.push((
                size,
                raw.clone(),
                ord.clone(),
                base,
                half,
                ord_half.clone(),
                base_half,
            ));
        }
        rows.push((size, raw, ord, half, ord_half, raw_half));
    }
    println!(
        "| size | raw msgs/s | raw MB/s | raw p50 / p99 ms | ordered msgs/s | ordered MB/s | ordered p50 / p99 ms | ordered / raw | half load (msgs/s per sender) | ordered p50 / p99 ms at half | raw p50 / p99 ms at half | digests agree | CPU ns/msg raw / ordered | CPU % raw / ordered |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (size, raw, ord, half, oh, rh) in rows {
        println!(
            "| {size} B | {:.0} | {:.1} | {} / {} | {:.0} | {:.1} | {} / {} | {:.0} % | {half} | {} / {} | {} / {} | {} | {:.0} / {:.0} | {:.0} / {:.0} |",
            raw.msgs_per_s,
            raw.mb_per_s,
            ms(raw.p50_us),
            ms(raw.p99_us),
            ord.msgs_per_s,
            ord.mb_per_s,
            ms(ord.p50_us),
            ms(ord.p99_us),
            100.0 * ord.msgs_per_s / raw.msgs_per_s.max(1.0),
            ms(oh.p50_us),
            ms(oh.p99_us),
            ms(rh.p50_us),
            ms(rh.p99_us),
            if ord.agree && oh.agree { "yes" } else { "NO" },
            raw.cpu_ns_per_msg,
            ord.cpu_ns_per_msg,
            raw.cpu_pct,
            ord.cpu_pct,
        );
    }
    if !baseline.is_empty() {
        println!();
        println!(
            "| size | raw msgs/s | ordered msgs/s (this build) | ordered / raw | ordered msgs/s (baseline) | baseline / raw | half load (msgs/s per sender) | p50 / p99 ms at half (this build) | p50 / p99 ms at half (baseline) | digests agree (baseline) | CPU ns/msg this / baseline |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        for (size, raw, ord, base, half, oh, bh) in baseline {
            let r = raw.msgs_per_s.max(1.0);
            println!(
                "| {size} B | {:.0} | {:.0} | {:.0} % | {:.0} | {:.0} % | {half} | {} / {} | {} / {} | {} | {:.0} / {:.0} |",
                raw.msgs_per_s,
                ord.msgs_per_s,
                100.0 * ord.msgs_per_s / r,
                base.msgs_per_s,
                100.0 * base.msgs_per_s / r,
                ms(oh.p50_us),
                ms(oh.p99_us),
                ms(bh.p50_us),
                ms(bh.p99_us),
                if base.agree && bh.agree { "yes" } else { "NO" },
                ord.cpu_ns_per_msg,
                base.cpu_ns_per_msg,
            );
        }
    }
    Ok(())
}
