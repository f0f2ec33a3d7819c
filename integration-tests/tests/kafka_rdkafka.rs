//! librdkafka (through the `rdkafka` crate, built from source) against the real `squall serve`
//! binary: an idempotent acks=all producer (also with many produce requests in flight per
//! connection), a consumer group that commits and resumes, a group of
//! three through rebalances, seeking by timestamp, compacted and stateless topics, DeleteRecords,
//! and the admin calls. This is the "real client, not a mock" check of the Kafka face (issue 4).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use squall_integration_tests::Squall;

const WAIT: Duration = Duration::from_secs(30);

fn start() -> anyhow::Result<(Squall, String, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let s = Squall::start(dir.path(), &[])?;
    let addr = s.kafka_bootstrap()?;
    Ok((s, addr, dir))
}

fn admin(bootstrap: &str) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?)
}

async fn create_topic(
    a: &AdminClient<DefaultClientContext>,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> anyhow::Result<()> {
    let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        t = t.set(k, v);
    }
    let r = a.create_topics([&t], &AdminOptions::new()).await?;
    for x in r {
        x.map_err(|(n, e)| anyhow::anyhow!("create {n}: {e}"))?;
    }
    Ok(())
}

fn producer(bootstrap: &str) -> anyhow::Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "20000")
        .create()?)
}

fn consumer(bootstrap: &str, group: &str, extra: &[(&str, &str)]) -> anyhow::Result<BaseConsumer> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    Ok(c.create()?)
}

/// Sends `n` keyed records, returns (partition, offset) → value from the delivery reports.
async fn produce_n(
    p: &FutureProducer,
    topic: &str,
    from: usize,
    n: usize,
) -> anyhow::Result<BTreeMap<(i32, i64), String>> {
    let mut futs = Vec::new();
    for i in from..from + n {
        let key = format!("k{i}");
        let value = format!("v{i}");
        let f = p
            .send_result(FutureRecord::to(topic).key(&key).payload(&value))
            .map_err(|(e, _)| e)?;
        futs.push((value, f));
    }
    let mut out = BTreeMap::new();
    for (v, f) in futs {
        let d = f
            .await
            .context("delivery future dropped")?
            .map_err(|(e, _)| e)?;
        out.insert((d.partition, d.offset), v);
    }
    Ok(out)
}

/// Polls until `want` messages arrived or the deadline: (partition, offset) → value.
fn consume(c: &BaseConsumer, want: usize) -> BTreeMap<(i32, i64), String> {
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

fn assert_dense(delivered: &BTreeMap<(i32, i64), String>) {
    let mut per: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (p, o) in delivered.keys() {
        per.entry(*p).or_default().push(*o);
    }
    for (p, offs) in per {
        let expect: Vec<i64> = (0..offs.len() as i64).collect();
        assert_eq!(offs, expect, "partition {p}: offsets dense from 0");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_acks_all_then_group_consume_commit_and_resume() -> anyhow::Result<()> {
    let (_s, bootstrap, _d) = start()?;
    create_topic(&admin(&bootstrap)?, "orders", 3, &[]).await?;
    let p = producer(&bootstrap)?;
    let delivered = produce_n(&p, "orders", 0, 300).await?;
    assert_eq!(
        delivered.len(),
        300,
        "300 distinct (partition, offset) pairs"
    );
    assert_dense(&delivered);

    let c1 = consumer(&bootstrap, "g1", &[])?;
    c1.subscribe(&["orders"])?;
    let got = consume(&c1, 300);
    assert_eq!(
        got, delivered,
        "every record read back at the offset its ack gave"
    );
    c1.commit_consumer_state(CommitMode::Sync)?;
    drop(c1);

    let more = produce_n(&p, "orders", 300, 50).await?;
    let c2 = consumer(&bootstrap, "g1", &[])?;
    c2.subscribe(&["orders"])?;
    let got2 = consume(&c2, 50);
    assert_eq!(
        got2, more,
        "a new member of the group resumes after the committed offsets"
    );
    // Nothing else arrives.
    assert!(consume(&c2, 1).is_empty() || consume(&c2, 1).keys().all(|k| more.contains_key(k)));
    Ok(())
}

/// Produce requests of one connection overlap (the next is applied while the previous one
/// waits for its fsync): an idempotent producer with five requests in flight per connection and
/// tiny batches (many requests) still gets dense offsets, no duplicate, and per-partition order
/// equal to send order, and every record reads back at the offset its ack gave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_producer_with_many_requests_in_flight_keeps_offsets_dense_and_ordered(
) -> anyhow::Result<()> {
    let (_s, bootstrap, _d) = start()?;
    create_topic(&admin(&bootstrap)?, "inflight", 3, &[]).await?;
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "5")
        .set("linger.ms", "0")
        .set("batch.num.messages", "7")
        .set("message.timeout.ms", "60000")
        .create()?;
    const N: usize = 6000;
    let mut futs = Vec::with_capacity(N);
    for i in 0..N {
        let key = format!("k{}", i % 97);
        let value = format!("{i:06}");
        let f = p
            .send_result(FutureRecord::to("inflight").key(&key).payload(&value))
            .map_err(|(e, _)| e)?;
        futs.push((i, f));
    }
    let mut delivered = BTreeMap::new();
    for (i, f) in futs {
        let d = f
            .await
            .context("delivery future dropped")?
            .map_err(|(e, _)| e)?;
        let prev = delivered.insert((d.partition, d.offset), format!("{i:06}"));
        assert!(
            prev.is_none(),
            "offset {}/{} acked twice",
            d.partition,
            d.offset
        );
    }
    assert_eq!(delivered.len(), N);
    assert_dense(&delivered);
    let mut last: BTreeMap<i32, String> = BTreeMap::new();
    for ((part, off), v) in &delivered {
        if let Some(prev) = last.insert(*part, v.clone()) {
            assert!(
                prev < *v,
                "partition {part} offset {off}: record {v} after {prev} (send order broken)"
            );
        }
    }
    let c = consumer(&bootstrap, "inflight-check", &[])?;
    c.subscribe(&["inflight"])?;
    let got = consume(&c, N);
    assert_eq!(
        got, delivered,
        "the log holds exactly the acked records at their acked offsets (no duplicate)"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_three_rebalances_and_covers_every_partition() -> anyhow::Result<()> {
    let (_s, bootstrap, _d) = start()?;
    create_topic(&admin(&bootstrap)?, "rb", 6, &[]).await?;
    let p = producer(&bootstrap)?;
    let first = produce_n(&p, "rb", 0, 600).await?;

    let seen: Arc<Mutex<BTreeMap<(i32, i64), String>>> = Arc::default();
    let assignments: Arc<Mutex<BTreeMap<usize, BTreeSet<i32>>>> = Arc::default();
    let stops: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::new(AtomicBool::new(false))).collect();
    let mut threads = Vec::new();
    for (i, stop) in stops.iter().enumerate() {
        let (bootstrap, seen, assignments, stop) = (
            bootstrap.clone(),
            seen.clone(),
            assignments.clone(),
            stop.clone(),
        );
        threads.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let c = consumer(&bootstrap, "g3", &[])?;
            c.subscribe(&["rb"])?;
            while !stop.load(Ordering::SeqCst) {
                if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                    let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
                    seen.lock()
                        .map_err(|_| anyhow::anyhow!("poisoned"))?
                        .insert((m.partition(), m.offset()), v);
                    c.commit_message(&m, CommitMode::Async)?;
                }
                let a: BTreeSet<i32> = c
                    .assignment()?
                    .elements()
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                assignments
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .insert(i, a);
            }
            c.commit_consumer_state(CommitMode::Sync).ok();
            c.unsubscribe();
            Ok(())
        }));
    }
    let wait_until = |cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cond() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        cond()
    };
    let all_three = || {
        let a = assignments.lock().map(|a| a.clone()).unwrap_or_default();
        let seen_all = seen.lock().map(|s| s.len() >= 600).unwrap_or(false);
        a.len() == 3
            && a.values().all(|s| !s.is_empty())
            && a.values().map(|s| s.len()).sum::<usize>() == 6
            && seen_all
    };
    if !wait_until(&all_three) {
        bail!(
            "three members never shared the 6 partitions: {:?}",
            assignments.lock().map(|a| a.clone())
        );
    }
    let a = assignments.lock().map(|a| a.clone()).unwrap_or_default();
    let union: BTreeSet<i32> = a.values().flatten().copied().collect();
    assert_eq!(union, (0..6).collect(), "disjoint and complete: {a:?}");
    for (k, v) in &first {
        assert_eq!(
            seen.lock()
                .map(|s| s.get(k).cloned())
                .unwrap_or_default()
                .as_ref(),
            Some(v)
        );
    }

    // Member 2 leaves: the other two take over its partitions and read what comes next.
    stops[2].store(true, Ordering::SeqCst);
    let t2 = threads.pop().context("thread")?;
    t2.join()
        .map_err(|_| anyhow::anyhow!("consumer thread panicked"))??;
    let second = produce_n(&p, "rb", 600, 300).await?;
    let two_cover = || {
        let a = assignments.lock().map(|a| a.clone()).unwrap_or_default();
        let u: BTreeSet<i32> = a
            .iter()
            .filter(|(i, _)| **i < 2)
            .flat_map(|(_, s)| s.iter().copied())
            .collect();
        let got = seen
            .lock()
            .map(|s| second.keys().all(|k| s.contains_key(k)))
            .unwrap_or(false);
        u.len() == 6 && got
    };
    let ok = wait_until(&two_cover);
    for s in &stops {
        s.store(true, Ordering::SeqCst);
    }
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("consumer thread panicked"))??;
    }
    assert!(
        ok,
        "after the leave, two members cover all partitions and read the new records"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_by_timestamp_finds_the_first_record_at_or_after() -> anyhow::Result<()> {
    let (_s, bootstrap, _d) = start()?;
    create_topic(&admin(&bootstrap)?, "ts", 1, &[]).await?;
    let p = producer(&bootstrap)?;
    let base: i64 = 1_700_000_000_000;
    for i in 0..10i64 {
        let v = format!("v{i}");
        p.send(
            FutureRecord::to("ts")
                .key("k")
                .payload(&v)
                .timestamp(base + i * 1000),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    }
    let c = consumer(&bootstrap, "ts-group", &[])?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("ts", 0, Offset::Offset(base + 3500))?;
    let r = c.offsets_for_times(tpl, WAIT)?;
    assert_eq!(r.elements()[0].offset(), Offset::Offset(4));
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("ts", 0, Offset::Offset(base + 999_999))?;
    let r = c.offsets_for_times(tpl, WAIT)?;
    assert_eq!(
        r.elements()[0].offset(),
        Offset::End,
        "past the last record: the end"
    );
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("ts", 0, Offset::Offset(4))?;
    c.assign(&tpl)?;
    let got = consume(&c, 1);
    assert_eq!(got.into_iter().next(), Some(((0, 4), "v4".to_string())));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_and_stateless_topics() -> anyhow::Result<()> {
    let (_s, bootstrap, _d) = start()?;
    let a = admin(&bootstrap)?;
    create_topic(&a, "cmp", 1, &[("cleanup.policy", "compact")]).await?;
    create_topic(&a, "live", 1, &[("squall.mode", "stateless")]).await?;
    let p = producer(&bootstrap)?;
    for (k, v) in [("k1", "a"), ("k2", "b"), ("k1", "c")] {
        p.send(
            FutureRecord::to("cmp").key(k).payload(v),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    }
    let c = consumer(&bootstrap, "cmp-g", &[])?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("cmp", 0, Offset::Beginning)?;
    c.assign(&tpl)?;
    let got = consume(&c, 2);
    assert_eq!(
        got,
        BTreeMap::from([((0, 1), "b".to_string()), ((0, 2), "c".to_string())]),
        "the newest record per key survives, at its own offset"
    );

    let c = consumer(&bootstrap, "live-g", &[])?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("live", 0, Offset::End)?;
    c.assign(&tpl)?;
    let _ = consume(&c, 1); // start fetching (long poll at the end)
    let p2 = p.clone();
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        p2.send(
            FutureRecord::to("live").key("k").payload("now"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
    });
    let got = tokio::task::block_in_place(|| consume(&c, 1));
    sender.await??;
    assert_eq!(
        got.values().cloned().collect::<Vec<_>>(),
        vec!["now".to_string()],
        "a waiting consumer sees a live record of a stateless topic"
    );
    Ok(())
}

/// Kafka's compaction never moves the log start offset: a consumer that fetches from offset 0
/// of a compacted partition whose first records were compacted away gets the surviving
/// records (not OFFSET_OUT_OF_RANGE, which with auto.offset.reset=latest would skip them all),
/// and the earliest offset stays 0 — also after the broker is killed and restarted from its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_topic_reads_from_zero_and_keeps_its_start_across_restart() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let mut s = Squall::start(dir.path(), &[])?;
    let bootstrap = s.kafka_bootstrap()?;
    create_topic(
        &admin(&bootstrap)?,
        "cz",
        1,
        &[("cleanup.policy", "compact")],
    )
    .await?;
    let p = producer(&bootstrap)?;
    for (k, v) in [("k1", "a"), ("k2", "b"), ("k1", "c"), ("k2", "d")] {
        p.send(
            FutureRecord::to("cz").key(k).payload(v),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    }
    drop(p);
    let want = BTreeMap::from([((0, 2), "c".to_string()), ((0, 3), "d".to_string())]);
    let check = |bootstrap: &str, group: &str| -> anyhow::Result<()> {
        let c = consumer(bootstrap, group, &[("auto.offset.reset", "latest")])?;
        assert_eq!(
            c.fetch_watermarks("cz", 0, WAIT)?,
            (0, 4),
            "log start stays 0"
        );
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("cz", 0, Offset::Offset(0))?;
        c.assign(&tpl)?;
        assert_eq!(consume(&c, 2), want, "fetch from 0 returns the survivors");
        let c = consumer(bootstrap, group, &[])?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("cz", 0, Offset::Beginning)?;
        c.assign(&tpl)?;
        assert_eq!(consume(&c, 2), want, "from the beginning");
        Ok(())
    };
    tokio::task::block_in_place(|| check(&bootstrap, "cz-1"))?;
    s.kill()?;
    let s2 = Squall::start(dir.path(), &[])?;
    let bootstrap = s2.kafka_bootstrap()?;
    tokio::task::block_in_place(|| check(&bootstrap, "cz-2"))?;
    Ok(())
}

/// Retention altered after creation takes effect on the pool, and age retention runs without
/// new writes (`squall serve` sweeps every second): the log start offset moves up to the newest
/// batch (the store always keeps a partition's newest version, so its counters survive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altered_retention_applies_without_new_writes() -> anyhow::Result<()> {
    let (_s, bootstrap, _d) = start()?;
    let a = admin(&bootstrap)?;
    create_topic(&a, "ret", 1, &[]).await?;
    create_topic(&a, "retb", 1, &[]).await?;
    let p = producer(&bootstrap)?;
    for topic in ["ret", "retb"] {
        for i in 0..5 {
            let v = format!("{i}{}", "x".repeat(200));
            p.send(
                FutureRecord::to(topic).key("k").payload(&v),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
        }
    }
    let c = consumer(&bootstrap, "ret-g", &[])?;
    let marks = |t: &str| c.fetch_watermarks(t, 0, WAIT);
    assert_eq!(marks("ret")?, (0, 5));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Nothing happens by itself under the default (7 days).
    assert_eq!(marks("ret")?, (0, 5));
    for (topic, key, value) in [
        ("ret", "retention.ms", "1000"),
        ("retb", "retention.bytes", "600"),
    ] {
        let alter = AlterConfig::new(ResourceSpecifier::Topic(topic)).set(key, value);
        let r = a.alter_configs([&alter], &AdminOptions::new()).await?;
        assert!(r[0].is_ok(), "alter {topic}: {:?}", r[0]);
    }
    // No more writes: the periodic sweep applies the new retention.
    let deadline = Instant::now() + WAIT;
    loop {
        let (ret, retb) = (marks("ret")?, marks("retb")?);
        if ret == (4, 5) && retb.0 > 0 {
            assert_eq!(retb.1, 5);
            assert!(retb.0 < 5, "the newest batch stays: {retb:?}");
            break;
        }
        if Instant::now() > deadline {
            bail!("retention did not apply: ret {ret:?}, retb {retb:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_and_delete_records() -> anyhow::Result<()> {
    let (_s, bootstrap, _d) = start()?;
    let a = admin(&bootstrap)?;
    create_topic(&a, "adm", 2, &[("retention.ms", "3600000")]).await?;
    let dup = a
        .create_topics(
            [&NewTopic::new("adm", 1, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await?;
    assert!(dup[0].is_err(), "creating it twice fails");

    let r = a
        .describe_configs([&ResourceSpecifier::Topic("adm")], &AdminOptions::new())
        .await?;
    let res = r[0]
        .as_ref()
        .map_err(|e| anyhow::anyhow!("describe: {e}"))?;
    let m = res.entry_map();
    assert_eq!(
        m.get("retention.ms")
            .and_then(|e| e.value.clone())
            .as_deref(),
        Some("3600000")
    );
    assert!(!m["retention.ms"].is_default);
    assert_eq!(
        m.get("max.message.bytes")
            .and_then(|e| e.value.clone())
            .as_deref(),
        Some("1048588")
    );
    assert!(m["max.message.bytes"].is_default);

    let alter = AlterConfig::new(ResourceSpecifier::Topic("adm"))
        .set("retention.ms", "3600000")
        .set("max.message.bytes", "2048");
    let r = a.alter_configs([&alter], &AdminOptions::new()).await?;
    assert!(r[0].is_ok(), "alter: {:?}", r[0]);
    let p = producer(&bootstrap)?;
    let big = "x".repeat(3000);
    let too_big = p
        .send(
            FutureRecord::to("adm").key("k").payload(&big).partition(0),
            Duration::from_secs(10),
        )
        .await;
    assert!(too_big.is_err(), "max.message.bytes is enforced");

    for i in 0..10 {
        let v = format!("v{i}");
        p.send(
            FutureRecord::to("adm").key("k").payload(&v).partition(0),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("adm", 0, Offset::Offset(5))?;
    let r = a.delete_records(&tpl, &AdminOptions::new()).await?;
    assert_eq!(r.elements()[0].offset(), Offset::Offset(5));
    let c = consumer(&bootstrap, "adm-g", &[])?;
    let (lo, hi) = c.fetch_watermarks("adm", 0, WAIT)?;
    assert_eq!((lo, hi), (5, 10));

    let r = a
        .create_partitions([&NewPartitions::new("adm", 4)], &AdminOptions::new())
        .await?;
    assert!(r[0].is_ok(), "{:?}", r[0]);
    let md = c.fetch_metadata(Some("adm"), WAIT)?;
    assert_eq!(md.topics()[0].partitions().len(), 4);

    let r = a.delete_topics(&["adm"], &AdminOptions::new()).await?;
    assert!(r[0].is_ok());
    let md = c.fetch_metadata(None, WAIT)?;
    assert!(md.topics().iter().all(|t| t.name() != "adm"));
    Ok(())
}
