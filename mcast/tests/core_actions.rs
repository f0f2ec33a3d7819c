//! Handler-level tests of the sans-IO core: each feeds one input and asserts the exact
//! actions the node emits (deliveries with their versions and timestamps, data batches,
//! nulls, backpressure, and a complete view change driven by hand), so a change in the
//! protocol's observable behaviour shows up here first, before the simulator.

use std::sync::Arc;

use bytes::Bytes;
use squall_mcast::{
    Action, Ballot, Config, ControlRecord, DataBatch, DataMsg, Delivery, Error, Hlc, Message,
    MsgId, Node, NodeId, Proposal, Row, Version, ViewInfo,
};

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const N3: NodeId = NodeId(3);

fn drain(n: &mut Node) -> Vec<Action> {
    std::iter::from_fn(|| n.poll_action()).collect()
}

fn last_row_to(actions: &[Action], to: NodeId) -> Arc<Row> {
    actions
        .iter()
        .rev()
        .find_map(|a| match a {
            Action::Send {
                to: t,
                msg: Message::Row(r),
            } if *t == to => Some(r.clone()),
            _ => None,
        })
        .expect("a row for this peer")
}

fn data_to(actions: &[Action], to: NodeId) -> Vec<Arc<DataBatch>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                to: t,
                msg: Message::Data(b),
            } if *t == to => Some(b.clone()),
            _ => None,
        })
        .collect()
}

fn hlc(phys_us: u64, logical: u32) -> Hlc {
    Hlc { phys_us, logical }
}

#[test]
fn single_member_delivers_at_once_with_version_and_timestamp() {
    let mut n = Node::new_initial(N1, &[N1], Config::default(), 0).unwrap();
    let boot = drain(&mut n);
    assert_eq!(
        boot,
        vec![
            Action::InstallView(ViewInfo {
                epoch: 1,
                members: vec![N1],
                shards: vec![vec![N1]],
                my_shard: Some(0),
                needs_state: false,
                applied_trim: vec![],
                last_version: Version::default(),
            }),
            // Nothing pending: the frontier is just above the (zero) clock.
            Action::StabilityFrontier {
                shard: 0,
                ts: hlc(0, 1)
            },
        ]
    );
    let id = n.send(1_000, Bytes::from_static(b"a")).unwrap();
    assert_eq!(id, MsgId { sender: N1, seq: 0 });
    assert_eq!(
        drain(&mut n),
        vec![
            Action::Deliver(Delivery {
                shard: 0,
                version: Version { epoch: 1, seq: 0 },
                ts: hlc(1_000, 0),
                id,
                payload: Bytes::from_static(b"a"),
            }),
            Action::StabilityFrontier {
                shard: 0,
                ts: hlc(1_000, 1)
            },
        ]
    );
    // Same microsecond: the timestamp still rises.
    n.send(1_000, Bytes::from_static(b"b")).unwrap();
    let acts = drain(&mut n);
    let Action::Deliver(d) = &acts[0] else {
        panic!("expected a delivery, got {acts:?}")
    };
    assert_eq!(
        (d.version, d.ts),
        (Version { epoch: 1, seq: 1 }, hlc(1_000, 1))
    );
}

#[test]
fn data_then_rows_then_delivery_between_two_members() {
    let cfg = Config::default();
    let mut a = Node::new_initial(N1, &[N1, N2], cfg.clone(), 0).unwrap();
    let mut b = Node::new_initial(N2, &[N1, N2], cfg, 0).unwrap();
    drain(&mut a);
    drain(&mut b);
    a.send(500, Bytes::from_static(b"x")).unwrap();
    let acts = drain(&mut a);
    // One batch to the peer with the message, and the row showing it received (own copy).
    let batches = data_to(&acts, N2);
    assert_eq!(
        batches,
        vec![Arc::new(DataBatch {
            epoch: 1,
            shard: 0,
            sender_rank: 0,
            first_index: 0,
            msgs: vec![DataMsg::App {
                id: MsgId { sender: N1, seq: 0 },
                ts: hlc(500, 0),
                payload: Bytes::from_static(b"x"),
            }],
        })]
    );
    let row_a = last_row_to(&acts, N2);
    assert_eq!((row_a.received.clone(), row_a.delivered), (vec![1, 0], 0));
    assert!(
        !acts.iter().any(|x| matches!(x, Action::Deliver(_))),
        "not stable yet: {acts:?}"
    );

    // The peer receives the data: it now holds it but does not deliver (a's row is unknown).
    b.handle_message(600, N1, Message::Data(batches[0].clone()));
    let acts_b = drain(&mut b);
    assert!(!acts_b.iter().any(|x| matches!(x, Action::Deliver(_))));
    assert!(
        data_to(&acts_b, N1).is_empty(),
        "rank 1 owes no null for index 0 of rank 0"
    );
    let row_b = last_row_to(&acts_b, N1);
    assert_eq!(row_b.received, vec![1, 0]);

    // a's row arrives: every member has it, so b delivers position 0 of epoch 1.
    b.handle_message(700, N1, Message::Row(row_a));
    let acts_b = drain(&mut b);
    let delivered: Vec<&Delivery> = acts_b
        .iter()
        .filter_map(|x| {
            if let Action::Deliver(d) = x {
                Some(d)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].version, Version { epoch: 1, seq: 0 });
    assert_eq!(delivered[0].ts, hlc(500, 0));

    // And a delivers once it sees b's row.
    a.handle_message(800, N2, Message::Row(row_b));
    assert!(drain(&mut a)
        .iter()
        .any(|x| matches!(x, Action::Deliver(d) if d.version.seq == 0)));
}

#[test]
fn nulls_are_sent_in_reaction_to_traffic_only() {
    let cfg = Config::default();
    let mut a = Node::new_initial(N1, &[N1, N2], cfg.clone(), 0).unwrap();
    let mut b = Node::new_initial(N2, &[N1, N2], cfg, 0).unwrap();
    drain(&mut a);
    drain(&mut b);
    // Idle: a tick sends rows (heartbeat) but no data at all.
    a.tick(20_000);
    assert!(data_to(&drain(&mut a), N2).is_empty());
    // b (rank 1) sends two messages; a (rank 0) has nothing: it fills slots 0 and 1 with
    // nulls so b's messages at positions 1 and 3 are not held up, in one batch.
    b.send(21_000, Bytes::from_static(b"p")).unwrap();
    b.send(21_000, Bytes::from_static(b"q")).unwrap();
    for batch in data_to(&drain(&mut b), N1) {
        a.handle_message(21_500, N2, Message::Data(batch));
    }
    let from_a = data_to(&drain(&mut a), N2);
    let nulls: Vec<(u64, usize)> = from_a
        .iter()
        .map(|b| (b.first_index, b.msgs.len()))
        .collect();
    assert_eq!(
        nulls,
        vec![(0, 1), (1, 1)],
        "one null per newly received message"
    );
    assert!(from_a
        .iter()
        .all(|b| b.msgs.iter().all(|m| *m == DataMsg::Null)));
}

#[test]
fn send_beyond_the_window_is_refused_and_emits_nothing() {
    let cfg = Config {
        window: 2,
        ..Config::default()
    };
    let mut a = Node::new_initial(N1, &[N1, N2], cfg, 0).unwrap();
    drain(&mut a);
    a.send(1, Bytes::from_static(b"1")).unwrap();
    a.send(2, Bytes::from_static(b"2")).unwrap();
    drain(&mut a);
    assert_eq!(a.outstanding(), 2);
    assert_eq!(a.send(3, Bytes::from_static(b"3")), Err(Error::WouldBlock));
    assert_eq!(drain(&mut a), vec![], "a refused send changes nothing");
    let big = Bytes::from(vec![0u8; Config::default().payload_bytes_max + 1]);
    assert!(matches!(a.send(4, big), Err(Error::PayloadTooLarge { .. })));
}

/// Runs a whole view change by hand: n3 falls silent, n1 suspects it and proposes, n2
/// promises and accepts, both persist, and both install epoch 2 without n3.
#[test]
fn silent_member_is_removed_by_a_majority_view_change() {
    let cfg = Config::default();
    let all = [N1, N2, N3];
    let mut a = Node::new_initial(N1, &all, cfg.clone(), 0).unwrap();
    let mut b = Node::new_initial(N2, &all, cfg.clone(), 0).unwrap();
    drain(&mut a);
    drain(&mut b);
    // n1 and n2 keep exchanging heartbeats; n3 says nothing.
    let mut t = 0;
    let mut acts_a = Vec::new();
    while t + cfg.heartbeat_us <= cfg.suspect_timeout_us {
        t += cfg.heartbeat_us;
        a.tick(t);
        b.tick(t);
        acts_a = drain(&mut a);
        let acts_b = drain(&mut b);
        a.handle_message(t, N2, Message::Row(last_row_to(&acts_b, N1)));
        b.handle_message(t, N1, Message::Row(last_row_to(&acts_a, N2)));
        acts_a.extend(drain(&mut a));
        drain(&mut b);
    }
    t += cfg.heartbeat_us;
    a.tick(t);
    acts_a.extend(drain(&mut a));
    assert!(a.is_wedged());
    let row = last_row_to(&acts_a, N2);
    let ballot = Ballot { round: 1, node: 1 };
    assert!(row.suspected.contains(&N3) && row.wedged);
    assert_eq!(
        (row.promised, row.proposing.clone()),
        (ballot, Some((ballot, None)))
    );

    // n2 promises (it wedges and freezes its counters).
    b.handle_message(t, N1, Message::Row(row));
    let row_b = last_row_to(&drain(&mut b), N1);
    assert_eq!((row_b.promised, row_b.wedged), (ballot, true));

    // Two of three promised and n3 is suspected: n1 proposes and persists its own accept.
    a.handle_message(t, N2, Message::Row(row_b));
    let acts = drain(&mut a);
    let expected = Arc::new(Proposal {
        epoch: 1,
        members: vec![N1, N2],
        shards: vec![vec![N1, N2]],
        joiners: vec![],
        trims: vec![vec![0, 0, 0]],
        sources: vec![None],
        restart: false,
    });
    let token_a = acts
        .iter()
        .find_map(|x| match x {
            Action::PersistControl {
                token,
                record:
                    ControlRecord::Accepted {
                        ballot: bb,
                        proposal,
                    },
            } => {
                assert_eq!((*bb, proposal), (ballot, &expected));
                Some(*token)
            }
            _ => None,
        })
        .expect("accept record persisted before the accept is published");
    let row_a = last_row_to(&acts, N2);
    assert_eq!(row_a.accepted, None, "not accepted until durable");
    assert_eq!(row_a.proposing, Some((ballot, Some(expected.clone()))));
    a.control_persisted(t, token_a);
    let row_a = last_row_to(&drain(&mut a), N2);
    assert_eq!(row_a.accepted, Some((ballot, expected.clone())));

    // n2 accepts (after its own write) …
    b.handle_message(t, N1, Message::Row(row_a));
    let acts = drain(&mut b);
    let token_b = acts
        .iter()
        .find_map(|x| match x {
            Action::PersistControl {
                token,
                record: ControlRecord::Accepted { .. },
            } => Some(*token),
            _ => None,
        })
        .unwrap();
    b.control_persisted(t, token_b);
    let row_b = last_row_to(&drain(&mut b), N1);
    assert_eq!(row_b.accepted, Some((ballot, expected.clone())));

    // … so n1 has a majority of accepts from every trusted survivor: decided. It writes the
    // decision, then delivers by the (empty) trim and installs epoch 2.
    a.handle_message(t, N2, Message::Row(row_b));
    let acts = drain(&mut a);
    let token = acts
        .iter()
        .find_map(|x| match x {
            Action::PersistControl {
                token,
                record: ControlRecord::Decided { proposal },
            } => {
                assert_eq!(proposal, &expected);
                Some(*token)
            }
            _ => None,
        })
        .expect("decision persisted before it is applied");
    assert!(!acts.iter().any(|x| matches!(x, Action::InstallView(_))));
    a.control_persisted(t, token);
    let acts = drain(&mut a);
    let install = acts.iter().find_map(|x| {
        if let Action::InstallView(v) = x {
            Some(v.clone())
        } else {
            None
        }
    });
    assert_eq!(
        install,
        Some(ViewInfo {
            epoch: 2,
            members: vec![N1, N2],
            shards: vec![vec![N1, N2]],
            my_shard: Some(0),
            needs_state: false,
            applied_trim: vec![0, 0, 0],
            last_version: Version::default(),
        })
    );
    assert_eq!(a.epoch(), 2);
    // The new epoch's row carries the decision, so n2 can learn it from there as well.
    let row = last_row_to(&acts, N2);
    assert_eq!((row.epoch, row.installed_by.clone()), (2, Some(expected)));
}
