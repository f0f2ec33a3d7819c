//! A second, independent Kafka client implementation (kafka-python, pure Python, installed by
//! `.ci/install.sh`) against the real `squall serve`: admin CreateTopics, an idempotent acks=all
//! producer, a consumer group that reads everything and commits, and a second consumer of the
//! same group that finds nothing left (the commit was kept). Skips loudly if kafka-python is
//! missing on this machine; CI installs it.

use std::process::Command;

use anyhow::Context;
use squall_integration_tests::Squall;

const SCRIPT: &str = r#"
import json, sys
from kafka import KafkaProducer, KafkaConsumer, KafkaAdminClient, TopicPartition
from kafka.admin import NewTopic
bs = sys.argv[1]
admin = KafkaAdminClient(bootstrap_servers=bs)
admin.create_topics([NewTopic("py", num_partitions=2, replication_factor=1)])
p = KafkaProducer(bootstrap_servers=bs, acks="all", enable_idempotence=True)
sent = {}
for i in range(100):
    md = p.send("py", key=b"k%d" % i, value=b"v%d" % i).get(timeout=20)
    sent["%d/%d" % (md.partition, md.offset)] = "v%d" % i
p.flush(); p.close()
c = KafkaConsumer("py", bootstrap_servers=bs, group_id="pyg", auto_offset_reset="earliest",
                  enable_auto_commit=False, consumer_timeout_ms=8000)
got = {}
for m in c:
    got["%d/%d" % (m.partition, m.offset)] = m.value.decode()
    if len(got) >= 100:
        break
c.commit(); c.close()
c2 = KafkaConsumer("py", bootstrap_servers=bs, group_id="pyg", auto_offset_reset="earliest",
                   enable_auto_commit=False, consumer_timeout_ms=3000)
again = [m.offset for m in c2]
committed = {tp: c2.committed(TopicPartition("py", tp)) for tp in (0, 1)}
c2.close()
print(json.dumps({"sent": sent, "got": got, "again": again, "committed": committed}))
"#;

#[test]
fn kafka_python_produces_consumes_and_commits() -> anyhow::Result<()> {
    let probe = Command::new("python3")
        .args(["-c", "import kafka"])
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("\n!!! SKIPPING kafka_python test: python3 with kafka-python is not installed here (.ci/install.sh installs it) !!!\n");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let s = Squall::start(dir.path(), &[])?;
    let addr = s.kafka_bootstrap()?;
    let out = Command::new("timeout")
        .args(["120", "python3", "-c", SCRIPT, &addr])
        .output()
        .context("running python3")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kafka-python failed: {}\n{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).context("script output")?;
    assert_eq!(v["sent"].as_object().map(|o| o.len()), Some(100));
    assert_eq!(
        v["sent"], v["got"],
        "every record read back at its acked offset"
    );
    assert_eq!(
        v["again"].as_array().map(|a| a.len()),
        Some(0),
        "the group's commit was kept"
    );
    let committed: i64 = ["0", "1"]
        .iter()
        .filter_map(|p| v["committed"][p].as_i64())
        .sum();
    assert_eq!(
        committed, 100,
        "committed offsets add up to the records read"
    );
    Ok(())
}
