//! Handler-level tests of the durable-restart and incarnation paths of the core: each
//! feeds inputs and asserts the exact actions emitted. Checked here: a durable promise is
//! written before it is published; a node restarted from its records re-enters its last
//! view wedged, restarting, with its log end and its promise; the restart proposal picks
//! the most advanced durable log as the shard's source; a join from a newer incarnation of
//! a member makes the others suspect the old incarnation at once.

use std::sync::Arc;

use squall_mcast::{
    Action, Ballot, Config, ControlRecord, Hlc, Message, Node, NodeId, Proposal, Recovered, Row,
    Version, ViewInfo,
};

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const N3: NodeId = NodeId(3);

fn drain(n: &mut Node) -> Vec<Action> {
    std::iter::from_fn(|| n.poll_action()).collect()
}

fn durable() -> Config {
    Config {
        durable: true,
        ..Config::default()
    }
}

/// Rows sent, in order, as (destination, row).
fn rows(actions: &[Action]) -> Vec<(NodeId, Arc<Row>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                to,
                msg: Message::Row(r),
            } => Some((*to, r.clone())),
            _ => None,
        })
        .collect()
}

/// A row of `from` in epoch 1 of the view {1,2,3}.
fn row(from: NodeId, seq: u64) -> Row {
    Row {
        epoch: 1,
        from,
        row_seq: seq,
        received: vec![0, 0, 0],
        delivered: 0,
        persisted: Version::default(),
        frontier: Hlc::default(),
        state_ready: true,
        leaving: false,
        wedged: false,
        restarting: false,
        suspected: Vec::new(),
        joiners: Vec::new(),
        promised: Ballot::default(),
        accepted: None,
        proposing: None,
        decided: None,
        installed_by: None,
    }
}

#[test]
fn durable_promise_is_written_before_it_is_published() {
    let all = [N1, N2, N3];
    let mut n2 = Node::new_initial(N2, &all, durable(), 0).unwrap();
    drain(&mut n2);
    let b = Ballot { round: 1, node: 1 };
    let mut r1 = row(N1, 1);
    r1.wedged = true;
    r1.suspected = vec![N3];
    r1.promised = b;
    r1.proposing = Some((b, None));
    n2.handle_message(1_000, N1, Message::Row(Arc::new(r1)));
    let acts = drain(&mut n2);
    // First the record, then the row (wedged, suspicion spread) still without the promise.
    assert_eq!(
        acts[0],
        Action::PersistControl {
            token: 1,
            record: ControlRecord::Promised {
                epoch: 1,
                ballot: b
            },
        }
    );
    let sent = rows(&acts);
    assert_eq!(acts.len(), 1 + sent.len());
    assert_eq!(
        sent.iter().map(|(to, _)| *to).collect::<Vec<_>>(),
        vec![N1, N3]
    );
    assert!(sent
        .iter()
        .all(|(_, r)| r.wedged && r.promised == Ballot::default()));
    // Durable: now the promise is published (and nothing else is emitted).
    n2.control_persisted(2_000, 1);
    let acts = drain(&mut n2);
    let sent = rows(&acts);
    assert_eq!(acts.len(), sent.len());
    assert_eq!(
        sent.iter().map(|(to, _)| *to).collect::<Vec<_>>(),
        vec![N1, N3]
    );
    assert!(sent.iter().all(|(_, r)| r.promised == b));
}

#[test]
fn restart_reenters_the_last_view_wedged_with_log_end_and_promise() {
    let all = [N1, N2, N3];
    let b = Ballot { round: 2, node: 3 };
    let rec = Recovered {
        records: vec![ControlRecord::Promised {
            epoch: 1,
            ballot: b,
        }],
        log: Some((
            0,
            Version { epoch: 1, seq: 4 },
            Hlc {
                phys_us: 500,
                logical: 0,
            },
        )),
        boot: 1,
    };
    let mut n2 = Node::restart(N2, &all, durable(), &rec, 10_000).unwrap();
    let acts = drain(&mut n2);
    assert_eq!(
        acts[0],
        Action::InstallView(ViewInfo {
            epoch: 1,
            members: all.to_vec(),
            shards: vec![all.to_vec()],
            my_shard: Some(0),
            needs_state: true,
            applied_trim: Vec::new(),
            last_version: Version { epoch: 1, seq: 4 },
        })
    );
    // Having heard from no lower-ranked member, it starts the view change that will name
    // its shard's source: a ballot above its durable promise, written first.
    let mine = Ballot { round: 3, node: 2 };
    assert_eq!(
        acts[1],
        Action::PersistControl {
            token: 1,
            record: ControlRecord::Promised {
                epoch: 1,
                ballot: mine,
            },
        }
    );
    let sent = rows(&acts);
    assert_eq!(acts.len(), 2 + sent.len());
    assert_eq!(
        sent.iter().map(|(to, _)| *to).collect::<Vec<_>>(),
        vec![N1, N3]
    );
    let r = &sent[0].1;
    // state_ready of a restarting row: its durable log is a valid state of its shard.
    assert!(r.restarting && r.wedged && r.state_ready);
    assert_eq!(r.persisted, Version { epoch: 1, seq: 4 });
    assert_eq!(r.promised, b);
    assert_eq!(r.proposing, Some((mine, None)));
    assert!(n2.is_wedged() && !n2.is_state_ready());
    // A node whose records put it in no view must rejoin as its next incarnation.
    let gone = Recovered::default();
    assert!(Node::restart(NodeId(9), &all, durable(), &gone, 0).is_err());
}

#[test]
fn restart_view_takes_the_most_advanced_log_as_the_source() {
    let all = [N1, N2, N3];
    let v = |seq| Version { epoch: 1, seq };
    let rec = |seq| Recovered {
        records: Vec::new(),
        log: Some((
            0,
            v(seq),
            Hlc {
                phys_us: 100 + seq,
                logical: 0,
            },
        )),
        boot: 1,
    };
    // N1 (lowest rank) restarts and proposes at once: first its own promise goes to disk.
    let mut n1 = Node::restart(N1, &all, durable(), &rec(3), 1_000).unwrap();
    let acts = drain(&mut n1);
    let b = Ballot { round: 1, node: 1 };
    assert_eq!(
        acts.iter()
            .filter(|a| matches!(a, Action::PersistControl { .. }))
            .cloned()
            .collect::<Vec<_>>(),
        vec![Action::PersistControl {
            token: 1,
            record: ControlRecord::Promised {
                epoch: 1,
                ballot: b
            },
        }]
    );
    n1.control_persisted(1_200, 1);
    drain(&mut n1);
    // The other two restarted too (wedged, restarting, promising N1's ballot), N2 with the
    // longest log (each log a valid state: state_ready).
    for (from, seq) in [(N2, 7), (N3, 5)] {
        let mut r = row(from, 2);
        r.restarting = true;
        r.wedged = true;
        r.persisted = v(seq);
        r.promised = b;
        n1.handle_message(1_300, from, Message::Row(Arc::new(r)));
    }
    let acts = drain(&mut n1);
    let want = Proposal {
        epoch: 1,
        members: all.to_vec(),
        shards: vec![all.to_vec()],
        joiners: Vec::new(),
        trims: vec![vec![0, 0, 0]],
        sources: vec![Some(N2)],
        restart: true,
    };
    let accepted: Vec<&Action> = acts
        .iter()
        .filter(|a| matches!(a, Action::PersistControl { .. }))
        .collect();
    assert_eq!(
        accepted,
        vec![&Action::PersistControl {
            token: 2,
            record: ControlRecord::Accepted {
                ballot: b,
                proposal: Arc::new(want),
            },
        }]
    );
}

#[test]
fn join_from_a_newer_incarnation_suspects_the_old_one() {
    let all = [N1, N2, N3];
    let mut n1 = Node::new_initial(N1, &all, Config::default(), 0).unwrap();
    drain(&mut n1);
    let n3_again = N3.next_incarnation();
    assert_eq!((n3_again.base(), n3_again.incarnation()), (3, 1));
    assert!(N3.superseded_by(n3_again));
    n1.handle_message(1_000, n3_again, Message::Join { from: n3_again });
    let acts = drain(&mut n1);
    let sent = rows(&acts);
    assert_eq!(acts.len(), sent.len(), "only rows: {acts:?}");
    assert_eq!(
        sent.iter().map(|(to, _)| *to).collect::<Vec<_>>(),
        vec![N2, N3]
    );
    let r = &sent[0].1;
    assert_eq!(r.suspected, vec![N3]);
    assert_eq!(r.joiners, vec![n3_again]);
    assert!(r.wedged);
    assert_eq!(r.proposing, Some((Ballot { round: 1, node: 1 }, None)));
}

#[test]
fn restarted_member_without_a_durable_state_is_repaired_never_the_source() {
    let all = [N1, N2, N3];
    // N1 comes back with no shard state on disk (it never held one durably).
    let rec = Recovered {
        records: Vec::new(),
        log: None,
        boot: 1,
    };
    let mut n1 = Node::restart(N1, &all, durable(), &rec, 1_000).unwrap();
    let acts = drain(&mut n1);
    assert!(rows(&acts)
        .iter()
        .all(|(_, r)| r.restarting && !r.state_ready));
    n1.control_persisted(1_100, 1);
    drain(&mut n1);
    let b = Ballot { round: 1, node: 1 };
    // N2 restarted without a state either, N3 with a log: only N3 can be the source.
    for (from, claim, seq) in [(N2, false, 0), (N3, true, 5)] {
        let mut r = row(from, 2);
        r.restarting = true;
        r.wedged = true;
        r.state_ready = claim;
        r.persisted = Version { epoch: 1, seq };
        r.promised = b;
        n1.handle_message(1_200, from, Message::Row(Arc::new(r)));
    }
    let acts = drain(&mut n1);
    let proposal = acts.iter().find_map(|a| match a {
        Action::PersistControl {
            record: ControlRecord::Accepted { proposal, .. },
            ..
        } => Some(proposal.clone()),
        _ => None,
    });
    let p = proposal.expect("a restart value once a member with a durable state promised");
    assert_eq!(p.sources, vec![Some(N3)]);
    assert_eq!(p.members, all.to_vec());
    assert!(p.restart);
}

#[test]
fn durable_joiner_acts_only_once_its_admission_is_on_disk() {
    let n4 = NodeId(4);
    let mut j = Node::new_joiner(n4, &[N1], durable(), 0).unwrap();
    drain(&mut j);
    let admitted = Arc::new(Proposal {
        epoch: 1,
        members: vec![N1, N2, N3, n4],
        shards: vec![vec![N1, N2, N3]],
        joiners: vec![n4],
        trims: vec![vec![0, 0, 0]],
        sources: vec![None],
        restart: false,
    });
    let mut r = row(N1, 7);
    r.epoch = 2;
    r.installed_by = Some(admitted.clone());
    j.handle_message(1_000, N1, Message::Row(Arc::new(r)));
    let acts = drain(&mut j);
    // The record first, then the view; no row, nothing sent, until the record is durable.
    assert_eq!(
        acts,
        vec![
            Action::PersistControl {
                token: 1,
                record: ControlRecord::Decided {
                    proposal: admitted.clone(),
                },
            },
            Action::InstallView(ViewInfo {
                epoch: 2,
                members: vec![N1, N2, N3, n4],
                shards: vec![vec![N1, N2, N3]],
                my_shard: None,
                needs_state: false,
                applied_trim: Vec::new(),
                last_version: Version::default(),
            }),
        ]
    );
    j.tick(200_000);
    assert_eq!(
        drain(&mut j),
        Vec::new(),
        "inert until the admission is durable"
    );
    j.control_persisted(200_100, 1);
    let acts = drain(&mut j);
    let sent = rows(&acts);
    assert_eq!(acts.len(), sent.len());
    assert_eq!(
        sent.iter().map(|(to, _)| *to).collect::<Vec<_>>(),
        vec![N1, N2, N3]
    );
    assert_eq!(sent[0].1.epoch, 2);
}
