//! `Node::handle_messages` (several messages, one protocol step) against `handle_message`
//! (one step per message): three members all sending over an in-memory network, each
//! round delivering every member's whole inbox either one message at a time or as one
//! batch. Both ways must give the same guarantees (every message delivered exactly once at
//! every member, the same sequence and versions everywhere, the core's invariants after
//! every input), and batching must cost fewer protocol steps, which shows as fewer rows
//! sent. This is the path the TCP driver takes for every frame it reads (`Driver::pump`).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use squall_mcast::{Action, Config, Message, MsgId, Node, NodeId, Version};

const MEMBERS: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];

struct Run {
    /// Per member: the delivered (id, version) sequence.
    delivered: BTreeMap<NodeId, Vec<(MsgId, Version)>>,
    sent: BTreeSet<MsgId>,
    rows: u64,
}

fn run(batched: bool, rounds: u64, per_round: u64) -> Run {
    let cfg = Config {
        window: 64,
        batch_messages_max: 16,
        ..Config::default()
    };
    let mut nodes: BTreeMap<NodeId, Node> = MEMBERS
        .iter()
        .map(|&m| {
            (
                m,
                Node::new_initial(m, &MEMBERS, cfg.clone(), 1).expect("initial node"),
            )
        })
        .collect();
    let mut inbox: BTreeMap<NodeId, Vec<(NodeId, Message)>> = BTreeMap::new();
    let mut out = Run {
        delivered: BTreeMap::new(),
        sent: BTreeSet::new(),
        rows: 0,
    };
    let mut now = 10;
    // Sending rounds, then quiet rounds until everything is delivered.
    for round in 0..rounds + 40 {
        now += 100;
        for (&id, node) in nodes.iter_mut() {
            if round < rounds {
                for i in 0..per_round {
                    let payload = Bytes::from(format!("{id:?}/{round}/{i}"));
                    if let Ok(mid) = node.send(now, payload) {
                        out.sent.insert(mid);
                    }
                }
            }
            node.check_invariants().expect("invariants after sends");
        }
        // Carry out every member's actions.
        for (&id, node) in nodes.iter_mut() {
            while let Some(a) = node.poll_action() {
                match a {
                    Action::Send { to, msg } => {
                        if matches!(msg, Message::Row(_)) {
                            out.rows += 1;
                        }
                        inbox.entry(to).or_default().push((id, msg));
                    }
                    Action::Deliver(d) => {
                        out.delivered.entry(id).or_default().push((d.id, d.version))
                    }
                    _ => {}
                }
            }
        }
        // Deliver every inbox, one way or the other.
        for (&id, node) in nodes.iter_mut() {
            let msgs = inbox.remove(&id).unwrap_or_default();
            if batched {
                node.handle_messages(now, msgs);
                node.check_invariants().expect("invariants after a batch");
            } else {
                for (from, m) in msgs {
                    node.handle_message(now, from, m);
                    node.check_invariants().expect("invariants after a message");
                }
            }
        }
    }
    out
}

fn check(r: &Run, what: &str) {
    let first = r.delivered.get(&MEMBERS[0]).expect("deliveries");
    for m in MEMBERS {
        let seq = r.delivered.get(&m).expect("deliveries");
        assert_eq!(seq, first, "{what}: {m:?} delivered another sequence");
        let ids: BTreeSet<MsgId> = seq.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids.len(), seq.len(), "{what}: a message delivered twice");
        assert_eq!(ids, r.sent, "{what}: not every sent message was delivered");
        assert!(
            seq.windows(2).all(|w| w[0].1 < w[1].1),
            "{what}: versions not increasing"
        );
    }
}

#[test]
fn batched_input_keeps_the_guarantees_with_fewer_steps() {
    let one = run(false, 30, 20);
    let batch = run(true, 30, 20);
    eprintln!(
        "sent {} / {}; rows one by one {}, batched {}",
        one.sent.len(),
        batch.sent.len(),
        one.rows,
        batch.rows
    );
    check(&one, "one by one");
    check(&batch, "batched");
    assert!(
        one.sent.len() > 1000 && batch.sent.len() > 1000,
        "the window let little through"
    );
    assert!(
        batch.rows < one.rows,
        "batched input sent {} rows, one by one {}",
        batch.rows,
        one.rows
    );
}
