//! `Node::send_batch` (the driver's batching hook): it admits messages only while the window
//! has room, leaves the rest in the caller's iterator, and emits exactly one data batch per
//! peer and one row push for the whole batch (instead of one of each per message), with the
//! same stream contents `send` would have produced.

use bytes::Bytes;
use squall_mcast::{Action, Config, DataMsg, Error, Message, Node, NodeId};

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);

fn drain(n: &mut Node) -> Vec<Action> {
    std::iter::from_fn(|| n.poll_action()).collect()
}

#[test]
fn batch_is_admitted_up_to_the_window_and_sent_once() {
    let cfg = Config {
        window: 3,
        ..Config::default()
    };
    let mut a = Node::new_initial(N1, &[N1, N2], cfg.clone(), 0).expect("node");
    drain(&mut a);
    let mut payloads = (0u8..5).map(|i| Bytes::from(vec![i])).peekable();
    let ids = a.send_batch(10, &mut payloads).expect("room for three");
    assert_eq!(ids.iter().map(|i| i.seq).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(
        payloads.next(),
        Some(Bytes::from(vec![3u8])),
        "the rest stays"
    );
    let acts = drain(&mut a);
    let data: Vec<_> = acts
        .iter()
        .filter_map(|x| match x {
            Action::Send {
                to,
                msg: Message::Data(b),
            } if *to == N2 => Some(b.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(data.len(), 1, "one batch for three messages: {acts:?}");
    assert_eq!(data[0].first_index, 0);
    let got: Vec<Bytes> = data[0]
        .msgs
        .iter()
        .map(|m| match m {
            DataMsg::App { payload, .. } => payload.clone(),
            DataMsg::Null => Bytes::new(),
        })
        .collect();
    assert_eq!(
        got,
        (0u8..3).map(|i| Bytes::from(vec![i])).collect::<Vec<_>>()
    );
    let rows = acts
        .iter()
        .filter(|x| {
            matches!(
                x,
                Action::Send {
                    msg: Message::Row(_),
                    ..
                }
            )
        })
        .count();
    assert_eq!(rows, 1, "one row push for the batch");
    assert_eq!(a.outstanding(), 3);
    // Window full: nothing is pulled, nothing is emitted.
    let mut more = std::iter::once(Bytes::from_static(b"x")).peekable();
    assert_eq!(a.send_batch(11, &mut more), Err(Error::WouldBlock));
    assert!(more.peek().is_some());
    assert_eq!(drain(&mut a), vec![]);
}

#[test]
fn oversized_payload_is_refused_and_left_in_the_iterator() {
    let cfg = Config {
        payload_bytes_max: 4,
        ..Config::default()
    };
    let mut a = Node::new_initial(N1, &[N1, N2], cfg, 0).expect("node");
    drain(&mut a);
    let mut first_big = vec![Bytes::from_static(b"toolong")].into_iter().peekable();
    assert!(matches!(
        a.send_batch(1, &mut first_big),
        Err(Error::PayloadTooLarge { .. })
    ));
    assert!(first_big.peek().is_some());
    let mut mixed = vec![
        Bytes::from_static(b"ok"),
        Bytes::from_static(b"toolong"),
        Bytes::from_static(b"ok2"),
    ]
    .into_iter()
    .peekable();
    let ids = a.send_batch(2, &mut mixed).expect("first fits");
    assert_eq!(ids.len(), 1);
    assert_eq!(mixed.next(), Some(Bytes::from_static(b"toolong")));
}
