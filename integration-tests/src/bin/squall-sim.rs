//! `squall-sim`: runs the seeded multicast simulator over a range of seeds.
//!
//! ```text
//! squall-sim --seeds A..B [--nodes N] [--steps S] [--fault-rate P] [--drop-rate P]
//!            [--no-crash] [--no-partition] [--no-pause] [--no-join] [--no-leave]
//!            [--no-shutdown] [--no-rejoin-same-id]
//!            [--durable|--volatile] [--shards K] [--plant BUG] [--verbose]
//! ```
//! The last line is `runs=N violations=V ...`; the exit code is 1 when V > 0. Each failing
//! seed prints its violations and the exact command that replays it.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use squall_integration_tests::sim::{run, SimOptions};

fn parse() -> Result<(u64, u64, SimOptions, bool, Vec<String>)> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts = SimOptions::default();
    let (mut a, mut b) = (0u64, 100u64);
    let mut verbose = false;
    let mut replay = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        let mut val = || -> Result<String> {
            i += 1;
            args.get(i)
                .cloned()
                .with_context(|| format!("{arg} needs a value"))
        };
        match arg {
            "--seeds" => {
                let v = val()?;
                let (x, y) = v.split_once("..").context("--seeds wants A..B")?;
                a = x.parse()?;
                b = y.parse()?;
                i += 1;
                continue;
            }
            "--nodes" => opts.nodes = val()?.parse()?,
            "--steps" => opts.steps = val()?.parse()?,
            "--fault-rate" => opts.fault_rate = val()?.parse()?,
            "--drop-rate" => opts.drop_rate = val()?.parse()?,
            "--shards" => opts.shards = Some(val()?.parse()?),
            "--no-crash" => opts.faults.crash = false,
            "--no-partition" => opts.faults.partition = false,
            "--no-pause" => opts.faults.pause = false,
            "--no-join" => opts.faults.join = false,
            "--no-leave" => opts.faults.leave = false,
            "--no-shutdown" => opts.faults.total_shutdown = false,
            "--no-rejoin-same-id" => opts.faults.rejoin_same_id = false,
            "--durable" => opts.durable = Some(true),
            "--volatile" => opts.durable = Some(false),
            "--verbose" => verbose = true,
            "--plant" => {
                let name = val()?;
                let b = &mut opts.bugs_all;
                match name.as_str() {
                    "deliver_unstable" => b.deliver_unstable = true,
                    "deliver_out_of_order" => b.deliver_out_of_order = true,
                    "no_resend" => b.no_resend = true,
                    "resend_twice" => b.resend_twice = true,
                    "trim_minus_one" => b.trim_minus_one = true,
                    "local_trim" => b.local_trim = true,
                    "apply_before_persist" => b.apply_before_persist = true,
                    "ts_no_bump" => b.ts_no_bump = true,
                    "frontier_uses_max" => b.frontier_uses_max = true,
                    "frontier_ignores_pending" => b.frontier_ignores_pending = true,
                    "quorum_half" => b.quorum_half = true,
                    "window_double" => b.window_double = true,
                    "snapshot_before_trim" => b.snapshot_before_trim = true,
                    "restart_least_advanced" => b.restart_least_advanced = true,
                    "frontier_before_delivered" => b.frontier_before_delivered = true,
                    "send_while_restarting" => b.send_while_restarting = true,
                    "cput_unconditional" => opts.app_bug_cput = true,
                    other => bail!("unknown planted bug {other}"),
                }
            }
            other => bail!("unknown argument {other}"),
        }
        if arg != "--verbose" {
            replay.push(arg.to_string());
            if !arg.starts_with("--no-") && arg != "--durable" && arg != "--volatile" {
                replay.push(args[i].clone());
            }
        }
        i += 1;
    }
    if b <= a {
        bail!("empty seed range {a}..{b}");
    }
    Ok((a, b, opts, verbose, replay))
}

fn main() -> ExitCode {
    let (a, b, opts, verbose, replay) = match parse() {
        Ok(x) => x,
        Err(e) => {
            eprintln!("squall-sim: {e:#}");
            return ExitCode::from(2);
        }
    };
    let started = std::time::Instant::now();
    let (mut runs, mut failed, mut deliveries, mut installs, mut max_epoch, mut lost) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut shutdowns, mut restarts, mut sources, mut rejoins, mut cuts) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut heal_restarts, mut orphans, mut recontacted) = (0u64, 0u64, 0u64);
    for seed in a..b {
        let r = run(seed, &opts);
        runs += 1;
        deliveries += r.deliveries;
        installs += r.installs;
        max_epoch = max_epoch.max(r.max_epoch);
        lost += u64::from(r.quorum_lost);
        shutdowns += r.shutdowns;
        restarts += r.disk_restarts;
        sources += r.restart_sources;
        rejoins += r.rejoins;
        cuts += r.cuts;
        heal_restarts += r.heal_restarts;
        orphans += r.orphans_rejoined;
        recontacted += r.joiners_recontacted;
        if verbose {
            println!(
                "seed={seed} events={} deliveries={} installs={} max_epoch={} trace={:016x}",
                r.events, r.deliveries, r.installs, r.max_epoch, r.trace_hash
            );
        }
        if !r.violations.is_empty() {
            failed += 1;
            println!("FAIL seed={seed}");
            for v in &r.violations {
                println!("  {v}");
            }
            println!(
                "  replay: cargo run --release -p squall-integration-tests --bin squall-sim -- --seeds {seed}..{} {}",
                seed + 1,
                replay.join(" ")
            );
        }
    }
    println!(
        "runs={runs} violations={failed} quorum_lost={lost} deliveries={deliveries} installs={installs} max_epoch={max_epoch} shutdowns={shutdowns} disk_restarts={restarts} restart_sources={sources} rejoins={rejoins} cuts={cuts} heal_restarts={heal_restarts} orphans_rejoined={orphans} joiners_recontacted={recontacted} secs={:.1}",
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
