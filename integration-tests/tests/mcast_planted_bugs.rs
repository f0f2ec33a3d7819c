//! Each invariant checker of the multicast simulator is shown to fire: a deliberate bug is
//! switched on in the core (or the test application), seeds are run until a violation of
//! that invariant appears, and the test fails if none does. Without these, a checker that
//! can never fail would look exactly like a protocol that never breaks.

use squall_integration_tests::sim::{run, SimOptions};
use squall_mcast::PlantedBugs;

/// Runs up to `max_seeds` seeds; returns the first violation containing `tag`.
fn caught(opts: &SimOptions, tag: &str, max_seeds: u64) -> Option<String> {
    caught_any(opts, &[tag], max_seeds)
}

/// Like `caught`, for a bug that shows up under any of several checkers.
fn caught_any(opts: &SimOptions, tags: &[&str], max_seeds: u64) -> Option<String> {
    for seed in 0..max_seeds {
        let r = run(seed, opts);
        if let Some(v) = r
            .violations
            .iter()
            .find(|v| tags.iter().any(|t| v.contains(t)))
        {
            return Some(format!("seed {seed}: {v}"));
        }
    }
    None
}

fn on_node0(bugs: PlantedBugs) -> SimOptions {
    SimOptions {
        bugs,
        ..SimOptions::default()
    }
}

fn on_all(bugs: PlantedBugs) -> SimOptions {
    SimOptions {
        bugs_all: bugs,
        ..SimOptions::default()
    }
}

#[test]
fn inv1_same_sequence_catches_out_of_order_delivery() {
    let o = on_node0(PlantedBugs {
        deliver_out_of_order: true,
        ..Default::default()
    });
    assert!(caught(&o, "inv1/5 same sequence", 50).is_some());
}

#[test]
fn inv2_stability_catches_delivery_before_everyone_received() {
    let o = on_node0(PlantedBugs {
        deliver_unstable: true,
        ..Default::default()
    });
    assert!(caught(&o, "inv2 stability", 50).is_some());
}

#[test]
fn inv3_exactly_once_catches_double_resend() {
    let o = on_all(PlantedBugs {
        resend_twice: true,
        ..Default::default()
    });
    assert!(caught(&o, "inv3 exactly once", 200).is_some());
}

#[test]
fn inv3_resend_catches_dropped_trimmed_messages() {
    // A lost message shows up as "sent but never delivered" (liveness) or, earlier, as a
    // sender whose undelivered count exceeds its window (inv10), since the lost ones never
    // leave the count.
    let o = on_all(PlantedBugs {
        no_resend: true,
        ..Default::default()
    });
    assert!(caught_any(&o, &["never delivered", "inv10 window"], 200).is_some());
}

#[test]
fn inv4_trim_agreement_catches_a_local_trim() {
    let o = on_node0(PlantedBugs {
        local_trim: true,
        ..Default::default()
    });
    assert!(caught(&o, "inv4 trim agreement", 300).is_some());
}

#[test]
fn inv3_trim_coverage_catches_a_too_short_trim() {
    let o = on_all(PlantedBugs {
        trim_minus_one: true,
        ..Default::default()
    });
    assert!(caught(&o, "trim covers deliveries", 300).is_some());
}

#[test]
fn inv4_trim_durable_catches_apply_before_persist() {
    // On every node: a member that learns the decision from others' rows (the case the
    // bug breaks) is rarely node 0 alone.
    let o = on_all(PlantedBugs {
        apply_before_persist: true,
        ..Default::default()
    });
    assert!(caught(&o, "inv4 trim durable", 300).is_some());
}

#[test]
fn inv5_timestamps_catch_missing_hlc_bump() {
    let o = on_all(PlantedBugs {
        ts_no_bump: true,
        ..Default::default()
    });
    assert!(caught(&o, "inv5/7 timestamps", 50).is_some());
}

#[test]
fn inv6_durability_catches_frontier_from_max() {
    let mut o = on_node0(PlantedBugs {
        frontier_uses_max: true,
        ..Default::default()
    });
    o.durable = Some(true);
    assert!(caught(&o, "inv6 durability", 50).is_some());
}

#[test]
fn inv7_stability_frontier_catches_ignoring_pending() {
    let o = on_all(PlantedBugs {
        frontier_ignores_pending: true,
        ..Default::default()
    });
    assert!(caught(&o, "inv7 frontier", 100).is_some());
}

#[test]
fn inv9_split_brain_catches_half_quorum() {
    let mut o = on_all(PlantedBugs {
        quorum_half: true,
        ..Default::default()
    });
    o.nodes = 4;
    o.faults.crash = false;
    o.fault_rate = 0.5;
    assert!(caught(&o, "inv9", 400).is_some());
}

#[test]
fn inv10_window_catches_double_admission() {
    let o = on_node0(PlantedBugs {
        window_double: true,
        ..Default::default()
    });
    assert!(caught(&o, "inv10 window", 50).is_some());
}

#[test]
fn inv11_state_transfer_catches_early_snapshot() {
    let o = on_all(PlantedBugs {
        snapshot_before_trim: true,
        ..Default::default()
    });
    assert!(caught(&o, "inv11 state transfer", 300).is_some());
}

#[test]
fn inv12_cput_catches_unconditional_cput() {
    let o = SimOptions {
        app_bug_cput: true,
        ..SimOptions::default()
    };
    assert!(caught(&o, "inv12 cput", 50).is_some());
}

#[test]
fn inv6_restart_catches_restarting_from_the_least_advanced_log() {
    // Total shutdowns happen only in durable mode; the bug is in whoever proposes the
    // restart view, so it is planted everywhere.
    let o = SimOptions {
        bugs_all: PlantedBugs {
            restart_least_advanced: true,
            ..Default::default()
        },
        durable: Some(true),
        ..SimOptions::default()
    };
    assert!(caught(&o, "inv6 restart source", 100).is_some());
}

#[test]
fn inv8_cut_catches_a_frontier_published_before_delivery() {
    let o = on_node0(PlantedBugs {
        frontier_before_delivered: true,
        ..Default::default()
    });
    assert!(caught(&o, "inv8 cut", 100).is_some());
}

#[test]
fn liveness_catches_sends_admitted_while_restarting() {
    // Seed 6323 (default options) restarts a member from disk that takes a snapshot under an
    // older, non-restart decision and then offers messages; the restart view that follows
    // installs it without state and clears its queue. With the bug the core admits those
    // messages (and they are never delivered); without it `send` answers WouldBlock.
    let o = on_all(PlantedBugs {
        send_while_restarting: true,
        ..Default::default()
    });
    let r = run(6323, &o);
    assert!(
        r.violations.iter().any(|v| v.contains("never delivered")),
        "violations: {:?}",
        r.violations
    );
}
