//! Idempotent produce while the disk is full, against the real `squall serve` and librdkafka:
//! the log sits on a small tmpfs that a filler file fills up; writes that do not fit get the
//! retriable KAFKA_STORAGE_ERROR and nothing of them is stored, so the idempotent producer's
//! (producer id, epoch, sequence) state on the broker does not move. librdkafka retries with
//! the same sequences; once the filler is deleted every record must be delivered, and reading
//! the partition back must show each record exactly once, in the order it was sent (no loss
//! while the disk was full, no duplicate from a retry, no OUT_OF_ORDER / DUPLICATE sequence
//! error ending the producer).
//!
//! Needs root (it mounts a tmpfs); where the mount fails the test says so on stderr and
//! passes without checking anything. The mount is removed when the test ends, also on failure.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use squall_integration_tests::Squall;

/// Size of the tmpfs holding the data directory.
const DISK_BYTES: u64 = 16 << 20;
/// Log segment size: the active segment is preallocated, so a full disk shows up when the
/// log rolls to the next segment.
const SEGMENT_BYTES: u64 = 1 << 20;
/// Records produced while the disk is full (more than a segment's worth).
const FULL_RECORDS: usize = 3000;
const VALUE_BYTES: usize = 1000;

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, bytes: u64) -> anyhow::Result<Tmpfs> {
        std::fs::create_dir_all(at)?;
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(at)
            .status()
            .context("running mount")?;
        if !st.success() {
            bail!("mount -t tmpfs failed: {st}");
        }
        Ok(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `path` with a file there: the bytes written.
fn fill(path: &Path) -> anyhow::Result<u64> {
    let mut f = std::fs::File::create(path)?;
    let chunk = vec![0x5au8; 64 << 10];
    let mut n = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(k) => n += k as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => return Err(e.into()),
        }
    }
    // Whatever is still buffered must not land later, when the test frees the space.
    let _ = f.sync_all();
    Ok(n)
}

fn value(i: usize) -> String {
    let head = format!("{i:08}-");
    format!("{head}{}", "v".repeat(VALUE_BYTES - head.len()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_produce_on_a_full_disk_is_retried_and_stored_exactly_once() -> anyhow::Result<()>
{
    let base = tempfile::tempdir()?;
    let disk = match Tmpfs::mount(&base.path().join("disk"), DISK_BYTES) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("kafka_disk_full: skipped, cannot mount a tmpfs (needs root): {e:#}");
            return Ok(());
        }
    };
    let cfg = base.path().join("squall.toml");
    std::fs::write(
        &cfg,
        format!("[storage]\nsegment_bytes_max = {SEGMENT_BYTES}\n"),
    )?;
    let data = disk.0.join("data");
    let cfg_arg = cfg.to_string_lossy().to_string();
    let s = Squall::start(&data, &["--config", &cfg_arg])?;
    let addr = s.kafka_bootstrap()?;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .create()?;
    for r in admin
        .create_topics(
            [
                &NewTopic::new("full", 1, TopicReplication::Fixed(1)),
                &NewTopic::new("probe", 1, TopicReplication::Fixed(1)),
            ],
            &AdminOptions::new(),
        )
        .await?
    {
        r.map_err(|(n, e)| anyhow::anyhow!("create {n}: {e}"))?;
    }
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("retry.backoff.ms", "50")
        .set("message.timeout.ms", "90000")
        .create()?;

    // Some records while there is room.
    const BEFORE: usize = 100;
    for i in 0..BEFORE {
        p.send(
            FutureRecord::<(), _>::to("full").payload(&value(i)),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| anyhow::anyhow!("record {i} before the disk filled: {e}"))?;
    }

    let filler = disk.0.join("filler");
    let filled = fill(&filler)?;
    eprintln!("kafka_disk_full: filler holds {filled} bytes");

    // What the broker answers while the disk is full: a producer that does not retry sees
    // the code itself (its record is not stored, and is not read back below).
    let probe: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("acks", "all")
        .set("retries", "0")
        .set("message.timeout.ms", "20000")
        .create()?;
    let big = "p".repeat(2 * SEGMENT_BYTES as usize / 3);
    let mut answered = None;
    // The active segment may still have room for a record or two: send until one is refused.
    for _ in 0..4 {
        match probe
            .send(
                FutureRecord::<(), _>::to("probe").payload(&big),
                Duration::from_secs(20),
            )
            .await
        {
            Ok(_) => {}
            Err((e, _)) => {
                answered = e.rdkafka_error_code();
                break;
            }
        }
    }
    assert_eq!(
        answered,
        Some(RDKafkaErrorCode::KafkaStorageError),
        "a write that does not fit is refused with KAFKA_STORAGE_ERROR"
    );

    let delivered = Arc::new(AtomicUsize::new(0));
    let mut waits = Vec::with_capacity(FULL_RECORDS);
    for i in BEFORE..BEFORE + FULL_RECORDS {
        let f = p
            .send_result(FutureRecord::<(), _>::to("full").payload(&value(i)))
            .map_err(|(e, _)| anyhow::anyhow!("enqueue {i}: {e}"))?;
        let d = delivered.clone();
        waits.push(tokio::spawn(async move {
            let r = f.await;
            d.fetch_add(1, Ordering::SeqCst);
            r
        }));
    }
    // With the disk full the tail cannot be stored: deliveries stall (the producer retries).
    let stall_from = Instant::now();
    let mut last = usize::MAX;
    while stall_from.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(2000)).await;
        let now = delivered.load(Ordering::SeqCst);
        if now == last {
            break;
        }
        last = now;
    }
    let while_full = delivered.load(Ordering::SeqCst);
    eprintln!("kafka_disk_full: {while_full} of {FULL_RECORDS} delivered while the disk was full");
    assert!(
        while_full < FULL_RECORDS,
        "every record was delivered although the disk was full: the test did not fill it"
    );
    std::fs::remove_file(&filler)?;

    for (n, w) in waits.into_iter().enumerate() {
        match w.await? {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => bail!("record {} failed after the disk had room: {e}", BEFORE + n),
            Err(_) => bail!("record {} cancelled", BEFORE + n),
        }
    }

    // Read everything back: each record once, in order, at dense offsets.
    let total = BEFORE + FULL_RECORDS;
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("group.id", "full-reader")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("full", 0, Offset::Beginning)?;
    c.assign(&tpl)?;
    let mut got: Vec<(i64, String)> = Vec::with_capacity(total);
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < total && Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m?;
            let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
            got.push((m.offset(), v));
        }
    }
    // Anything past the expected count would be a duplicate: give it a moment to show up.
    let extra_deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < extra_deadline {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m?;
            let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
            got.push((m.offset(), v));
        }
    }
    assert_eq!(got.len(), total, "records read back");
    for (i, (offset, v)) in got.iter().enumerate() {
        assert_eq!(*offset, i as i64, "dense offsets");
        assert_eq!(v, &value(i), "record {i} in send order, exactly once");
    }
    drop(s);
    drop(disk);
    Ok(())
}
