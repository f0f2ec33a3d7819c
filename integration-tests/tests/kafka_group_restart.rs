//! Consumer group state across a crash of `squall serve` (SIGKILL, then a restart on the same
//! data directory). Group membership, generation, leader and assignment are stored in the
//! internal groups pool, so after the restart:
//! * a raw-protocol member keeps its generation: its commit at the current generation is
//!   accepted, a "zombie" commit at the previous generation gets ILLEGAL_GENERATION, and a new
//!   member gets a fresh member id and the next generation (without the stored state the group
//!   would start again at generation 1 and reuse member ids, so a zombie's old (member id,
//!   generation) could become valid again);
//! * a librdkafka consumer that lived through the crash (through a small TCP proxy, so its
//!   bootstrap and the advertised address stay the same) resumes: it gets the records produced
//!   after the restart, none of the ones it had committed, and its commits succeed.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use squall_integration_tests::Squall;

const WAIT: Duration = Duration::from_secs(40);

/// A raw Kafka connection (one request at a time).
struct Raw(TcpStream);

impl Raw {
    fn connect(addr: &str) -> anyhow::Result<Raw> {
        let s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        Ok(Raw(s))
    }

    fn call<Q: Encodable, R: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &Q,
    ) -> anyhow::Result<R> {
        let mut b = BytesMut::new();
        b.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("raw")))
            .encode(&mut b, key.request_header_version(version))?;
        req.encode(&mut b, version)?;
        let n = (b.len() - 4) as i32;
        b[..4].copy_from_slice(&n.to_be_bytes());
        self.0.write_all(&b)?;
        let mut len = [0u8; 4];
        self.0.read_exact(&mut len).context("no response")?;
        let mut body = vec![0u8; i32::from_be_bytes(len).max(0) as usize];
        self.0.read_exact(&mut body)?;
        let mut f = Bytes::from(body);
        let _ = ResponseHeader::decode(&mut f, key.response_header_version(version))?;
        R::decode(&mut f, version)
    }

    /// JoinGroup v3 (no MEMBER_ID_REQUIRED round): (error, generation, member id).
    fn join(&mut self, group: &str, member: &str) -> anyhow::Result<(i16, i32, String)> {
        let req = JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.into())))
            .with_session_timeout_ms(30_000)
            .with_rebalance_timeout_ms(5_000)
            .with_member_id(StrBytes::from_string(member.into()))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(Bytes::from_static(b"meta"))]);
        let r: JoinGroupResponse = self.call(ApiKey::JoinGroup, 3, &req)?;
        Ok((
            r.error_code,
            r.generation_id,
            r.member_id.as_str().to_string(),
        ))
    }

    /// SyncGroup v3 as the leader, assigning `assignment` to itself: the error code.
    fn sync(&mut self, group: &str, generation: i32, member: &str) -> anyhow::Result<i16> {
        let req = SyncGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.into())))
            .with_generation_id(generation)
            .with_member_id(StrBytes::from_string(member.into()))
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(StrBytes::from_string(member.into()))
                .with_assignment(Bytes::from_static(b"assigned"))]);
        let r: SyncGroupResponse = self.call(ApiKey::SyncGroup, 3, &req)?;
        Ok(r.error_code)
    }

    /// OffsetCommit v7 of one offset: the partition's error code.
    fn commit(
        &mut self,
        group: &str,
        generation: i32,
        member: &str,
        topic: &str,
        offset: i64,
    ) -> anyhow::Result<i16> {
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.into())))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(StrBytes::from_string(member.into()))
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(offset)])]);
        let r: OffsetCommitResponse = self.call(ApiKey::OffsetCommit, 7, &req)?;
        Ok(r.topics[0].partitions[0].error_code)
    }

    /// Heartbeat v3: the error code.
    fn heartbeat(&mut self, group: &str, generation: i32, member: &str) -> anyhow::Result<i16> {
        let req = HeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.into())))
            .with_generation_id(generation)
            .with_member_id(StrBytes::from_string(member.into()));
        let r: HeartbeatResponse = self.call(ApiKey::Heartbeat, 3, &req)?;
        Ok(r.error_code)
    }
}

const ILLEGAL_GENERATION: i16 = 22;

fn admin(bootstrap: &str) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?)
}

async fn create_topic(bootstrap: &str, name: &str, partitions: i32) -> anyhow::Result<()> {
    let t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for x in admin(bootstrap)?
        .create_topics([&t], &AdminOptions::new())
        .await?
    {
        x.map_err(|(n, e)| anyhow::anyhow!("create {n}: {e}"))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_member_keeps_its_generation_and_a_zombie_is_fenced_after_a_crash(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut s = Squall::start(dir.path(), &[])?;
    let addr = s.kafka_bootstrap()?;
    create_topic(&addr, "zt", 1).await?;
    let (g, mid) = tokio::task::block_in_place(|| -> anyhow::Result<(i32, String)> {
        let mut c = Raw::connect(&addr)?;
        let (e, g1, mid) = c.join("zg", "")?;
        assert_eq!(e, 0, "first join");
        assert_eq!(c.sync("zg", g1, &mid)?, 0);
        // Rejoin with the same member id: a rebalance to the next generation.
        let (e, g2, mid2) = c.join("zg", &mid)?;
        assert_eq!((e, mid2.as_str()), (0, mid.as_str()), "rejoin");
        assert!(g2 > g1, "generation moved on: {g1} → {g2}");
        assert_eq!(c.sync("zg", g2, &mid)?, 0);
        assert_eq!(
            c.commit("zg", g2, &mid, "zt", 5)?,
            0,
            "commit before the crash"
        );
        Ok((g2, mid))
    })?;
    s.kill()?;
    let s2 = Squall::start(dir.path(), &[])?;
    let addr = s2.kafka_bootstrap()?;
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        let mut c = Raw::connect(&addr)?;
        assert_eq!(
            c.commit("zg", g - 1, &mid, "zt", 6)?,
            ILLEGAL_GENERATION,
            "a zombie at the previous generation is fenced after the restart"
        );
        assert_eq!(
            c.heartbeat("zg", g, &mid)?,
            0,
            "the member's generation survived"
        );
        assert_eq!(
            c.commit("zg", g, &mid, "zt", 7)?,
            0,
            "the current member commits after the restart"
        );
        // A new member: a member id never handed out before, and a later generation.
        let mut other = Raw::connect(&addr)?;
        let joiner = std::thread::spawn(move || other.join("zg", ""));
        // The old member rejoins so the rebalance completes without waiting for its timeout.
        std::thread::sleep(Duration::from_millis(1000));
        let (e, g3, _) = c.join("zg", &mid)?;
        let (e2, g3b, new_mid) = joiner
            .join()
            .map_err(|_| anyhow::anyhow!("joiner panicked"))??;
        assert_eq!((e, e2), (0, 0), "both joins succeed");
        assert_eq!(g3, g3b);
        assert!(g3 > g, "generation continues after the restart: {g} → {g3}");
        assert_ne!(new_mid, mid, "member ids are not reused after a restart");
        Ok(())
    })?;
    Ok(())
}

/// Forwards every connection accepted on `listener` to the address currently in `target`.
fn proxy(listener: tokio::net::TcpListener, target: Arc<Mutex<String>>) {
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let to = target.lock().map(|t| t.clone()).unwrap_or_default();
            tokio::spawn(async move {
                if let Ok(mut out) = tokio::net::TcpStream::connect(&to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
}

/// Counts the assignments librdkafka received (one per rebalance it took part in).
struct CountAssigns(Arc<AtomicUsize>);

impl ClientContext for CountAssigns {}

impl ConsumerContext for CountAssigns {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Polls until `want` messages arrived or the deadline: (partition, offset) → value.
fn consume<C: ConsumerContext>(c: &BaseConsumer<C>, want: usize) -> BTreeMap<(i32, i64), String> {
    let mut got = BTreeMap::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
            let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
            got.insert((m.partition(), m.offset()), v);
        }
    }
    got
}

async fn produce(bootstrap: &str, topic: &str, from: usize, n: usize) -> anyhow::Result<()> {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("message.timeout.ms", "20000")
        .create()?;
    for i in from..from + n {
        let v = format!("v{i}");
        p.send(
            FutureRecord::to(topic).key(&v).payload(&v),
            Duration::from_secs(20),
        )
        .await
        .map_err(|(e, _)| e)?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rdkafka_group_member_resumes_after_the_broker_is_killed_and_restarted(
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let front: SocketAddr = listener.local_addr()?;
    let front = front.to_string();
    let advertised = ["--kafka-advertised", front.as_str()];
    let dir = tempfile::tempdir()?;
    let mut s = Squall::start(dir.path(), &advertised)?;
    let target = Arc::new(Mutex::new(s.kafka_bootstrap()?));
    proxy(listener, target.clone());

    create_topic(&front, "rs", 2).await?;
    produce(&front, "rs", 0, 40).await?;
    let assigns = Arc::new(AtomicUsize::new(0));
    let c: BaseConsumer<CountAssigns> = ClientConfig::new()
        .set("bootstrap.servers", &front)
        .set("group.id", "rs-g")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "30000")
        .set("heartbeat.interval.ms", "500")
        .create_with_context(CountAssigns(assigns.clone()))?;
    c.subscribe(&["rs"])?;
    let first = tokio::task::block_in_place(|| consume(&c, 40));
    assert_eq!(first.len(), 40, "the first 40 records");
    tokio::task::block_in_place(|| c.commit_consumer_state(CommitMode::Sync))?;

    s.kill()?;
    let s2 = Squall::start(dir.path(), &advertised)?;
    *target.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = s2.kafka_bootstrap()?;
    produce(&front, "rs", 40, 20).await?;
    let second = tokio::task::block_in_place(|| consume(&c, 20));
    let values: Vec<&String> = second.values().collect();
    assert_eq!(
        second.len(),
        20,
        "the 20 records produced after the restart"
    );
    assert!(
        second.keys().all(|k| !first.contains_key(k)),
        "nothing committed before the crash is delivered again: {values:?}"
    );
    // A few more heartbeats against the restarted broker.
    tokio::task::block_in_place(|| {
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                panic!("unexpected record at {}/{}", m.partition(), m.offset());
            }
        }
    });
    tokio::task::block_in_place(|| c.commit_consumer_state(CommitMode::Sync))
        .context("a commit after the restart")?;
    // The member kept its membership and generation: its heartbeats after the restart were
    // accepted, so librdkafka never had to rejoin (without the stored group the restarted
    // broker answers UNKNOWN_MEMBER_ID and the consumer goes through a second assignment).
    assert_eq!(
        assigns.load(Ordering::SeqCst),
        1,
        "one assignment: no rebalance across the broker restart"
    );
    Ok(())
}
