//! The running DDS face: a rustdds participant (a second one for the writers of separate
//! publish topics), and per configured topic a reader (DDS → store), a writer (store → DDS), plus one task following discovery (writer strength, writer
//! loss, hand-over).
//!
//! Loop and duplicate guards: the reader ignores samples from this participant's own writers;
//! every version the reader stored is remembered until the store's watch hands it back, and such
//! versions are not re-published on the topic they came from (their readers already have them
//! from the original writer); every published version is remembered per key, so nothing is
//! published twice. The reader holds the topic state lock across each store call, so the watch
//! cannot see a DDS-made version before it has been remembered.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration as StdDuration;

use bytes::Bytes;
use futures_util::StreamExt;
use log::{info, warn};
use rustdds::dds::statusevents::DomainParticipantStatusEvent as Status;
use rustdds::with_key::{DataWriter, Sample, WriteOptionsBuilder};
use rustdds::{
    policy, DataWriterStatus, DomainParticipant, DomainParticipantBuilder, QosPolicies,
    QosPolicyBuilder, ReadCondition, StatusEvented, Timestamp, TopicKind, GUID,
};
use squall_storage::owner::{writer_id, Claim as OwnerClaim};
use squall_storage::{Entry, Expect, Selector, WatchFrom, KEY_BYTES_MAX};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::cdr::{self, TypeDesc, Value};
use super::config::{DdsConfig, DdsTopicConfig, Durability, History, OwnershipKind};
use super::error::DdsError;
use super::sample::{InstanceKey, RawAdapter, RawSample, TypeScope};
use super::stats::{bump, DdsStats};
use crate::node::{Node, NodeError, PutRequest, WatchEvent, WatchStream};

/// Most instances the face tracks per topic (key collisions, last writer).
pub const INSTANCES_MAX: usize = 1_000_000;
/// Writer history depth used for KEEP_ALL topics (rustdds would otherwise keep everything).
pub const KEEP_ALL_WRITER_DEPTH: i32 = 1_000;
/// Longest a reliable write may block when readers lag.
pub const WRITE_BLOCKING_MS: i64 = 1_000;
/// Most samples taken from a rustdds reader at once.
const TAKE_BATCH_MAX: usize = 256;
/// A reader thread keeps taking (with naps) this long after its last sample before it waits
/// on the poll again.
const READER_BUSY_US: u64 = 2_000;
/// The nap between takes while samples flow (bounds the latency it adds).
const READER_NAP_US: u64 = 50;
/// Batches queued between a reader thread and its ingress task (backpressure beyond).
const INGRESS_BATCHES_MAX: usize = 64;
/// How long a sample from a not-yet-discovered writer waits for its discovery data.
const DISCOVERY_WAIT_MS: u64 = 500;
/// The internal `latest` pool that keeps each Kafka→DDS bridge's position (per DDS topic and
/// Kafka partition: the next offset to bridge).
pub const BRIDGE_POSITIONS_POOL: &str = "__dds_bridge_positions";

type Writer = DataWriter<RawSample, RawAdapter>;
type Reader = rustdds::with_key::DataReader<RawSample, RawAdapter>;

/// A remote DDS writer as discovery described it.
#[derive(Debug, Clone)]
struct WriterInfo {
    topic: String,
    strength: i32,
    alive: bool,
}

/// What the face knows about one instance.
#[derive(Debug, Clone)]
struct Instance {
    key: InstanceKey,
    /// The DDS writer of the newest stored value, while it is alive.
    last_writer: Option<GUID>,
}

#[derive(Debug, Default)]
struct TopicState {
    instances: BTreeMap<String, Instance>,
    /// Versions stored from DDS that the watch has not handed back yet.
    own: BTreeMap<String, BTreeSet<u64>>,
    /// Newest key_version published per key.
    published: BTreeMap<String, u64>,
    /// Instances whose DDS writer is gone and whose value only the store still holds: served
    /// to each newly matched reader alone (see [`serve_late_joiner`]).
    orphans: BTreeSet<String>,
    /// Versions stored from the Kafka topic that the watch has not handed back yet (they are
    /// not produced back to Kafka).
    kafka_own: BTreeMap<String, BTreeSet<u64>>,
}

/// The Kafka topic a DDS topic is bridged to.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "kafka"), allow(dead_code))]
struct KafkaSide {
    topic: String,
    partitions: u32,
}

struct TopicRt {
    cfg: DdsTopicConfig,
    ty: Arc<TypeDesc>,
    writer: Writer,
    state: Mutex<TopicState>,
    kafka: Option<KafkaSide>,
}

struct Shared<N> {
    node: Arc<N>,
    stats: Arc<DdsStats>,
    own: GUID,
    /// The participant of the separate publish topics' writers, if any.
    own_out: Option<GUID>,
    writers: StdMutex<BTreeMap<GUID, WriterInfo>>,
    topics: BTreeMap<String, Arc<TopicRt>>,
}

/// The DDS face of a node. Dropping it (or [`DdsFace::shutdown`]) stops its tasks and leaves
/// the domain.
pub struct DdsFace {
    stats: Arc<DdsStats>,
    tasks: Vec<JoinHandle<()>>,
    participant: DomainParticipant,
    /// Kept alive for the writers of separate publish topics.
    _out_participant: Option<DomainParticipant>,
}

impl std::fmt::Debug for DdsFace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DdsFace")
            .field("tasks", &self.tasks.len())
            .finish()
    }
}

/// RTPS time (seconds, 2^-32 fractions) → µs since the Unix epoch.
pub fn timestamp_to_us(t: Timestamp) -> u64 {
    let ticks = t.to_ticks();
    let secs = ticks >> 32;
    let frac = ticks & 0xffff_ffff;
    // Round to the nearest µs, so µs → RTPS → µs is exact.
    secs * 1_000_000 + ((frac * 1_000_000 + (1 << 31)) >> 32)
}

/// µs since the Unix epoch → RTPS time.
pub fn us_to_timestamp(us: u64) -> Timestamp {
    let secs = (us / 1_000_000).min(u64::from(u32::MAX - 1));
    let frac = ((us % 1_000_000) << 32) / 1_000_000;
    Timestamp::from_ticks((secs << 32) | frac)
}

fn writer_name(g: GUID) -> String {
    let hex: String = g.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("dds:{hex}")
}

fn durability(d: Durability) -> policy::Durability {
    match d {
        Durability::Volatile => policy::Durability::Volatile,
        // rustdds only implements up to TRANSIENT_LOCAL; the store provides the rest.
        _ => policy::Durability::TransientLocal,
    }
}

fn reliability(cfg: &DdsTopicConfig) -> policy::Reliability {
    match cfg.reliability {
        super::config::Reliability::Reliable => policy::Reliability::Reliable {
            max_blocking_time: rustdds::Duration::from_millis(WRITE_BLOCKING_MS),
        },
        super::config::Reliability::BestEffort => policy::Reliability::BestEffort,
    }
}

fn reader_qos(cfg: &DdsTopicConfig) -> QosPolicies {
    let ownership = match cfg.ownership {
        OwnershipKind::Shared => policy::Ownership::Shared,
        OwnershipKind::Exclusive => policy::Ownership::Exclusive { strength: 0 },
    };
    QosPolicyBuilder::new()
        .reliability(reliability(cfg))
        .durability(durability(cfg.durability))
        .history(policy::History::KeepAll)
        .ownership(ownership)
        .build()
}

fn writer_qos(cfg: &DdsTopicConfig) -> QosPolicies {
    let depth = match cfg.history {
        History::KeepLast => i32::try_from(cfg.depth).unwrap_or(i32::MAX),
        History::KeepAll => KEEP_ALL_WRITER_DEPTH,
    };
    // On its own topic an EXCLUSIVE topic's writer must offer EXCLUSIVE to match its readers;
    // a separate publish topic carries the already-arbitrated stream, so it is SHARED.
    let ownership = if cfg.ownership == OwnershipKind::Exclusive && cfg.bridges_same_topic() {
        policy::Ownership::Exclusive {
            strength: cfg.editor_strength,
        }
    } else {
        policy::Ownership::Shared
    };
    QosPolicyBuilder::new()
        .reliability(reliability(cfg))
        .durability(durability(cfg.durability))
        .history(policy::History::KeepLast { depth })
        .ownership(ownership)
        .build()
}

/// Rebuilds an instance key from its store key text (for tombstones of instances the face has
/// not seen as samples).
fn key_from_text(ty: &TypeDesc, text: &str) -> Result<InstanceKey, DdsError> {
    let fields: Vec<_> = ty.fields.iter().filter(|f| f.key).collect();
    let parts: Vec<&str> = if fields.len() == 1 {
        vec![text]
    } else {
        text.split('/').collect()
    };
    if parts.len() != fields.len() {
        return Err(DdsError::Invalid(format!(
            "key {text:?} does not split into the key fields"
        )));
    }
    let mut values = Vec::with_capacity(parts.len());
    for (f, p) in fields.iter().zip(parts) {
        use cdr::FieldType as T;
        let bad = || DdsError::Invalid(format!("key part {p:?} is not a {:?}", f.ty));
        values.push(match f.ty {
            T::String => Value::Str(p.to_owned()),
            T::Bool => Value::Bool(p.parse().map_err(|_| bad())?),
            T::Octet | T::Uint16 | T::Uint32 | T::Uint64 => Value::U(p.parse().map_err(|_| bad())?),
            T::Int16 | T::Int32 | T::Int64 => Value::I(p.parse().map_err(|_| bad())?),
            T::Float32 | T::Float64 => Value::F(p.parse().map_err(|_| bad())?),
            T::Bytes => return Err(bad()),
        });
    }
    InstanceKey::from_values(ty, &values)
}

impl DdsFace {
    /// Joins the domain and starts serving the configured topics on a tokio runtime. Creates the
    /// pools when they do not exist.
    pub async fn start<N: Node>(config: DdsConfig, node: Arc<N>) -> Result<DdsFace, DdsError> {
        config.validate()?;
        for t in &config.topic {
            match node.create_pool(t.pool_config()).await {
                Ok(()) => {}
                Err(NodeError::PoolExists(p)) => {
                    warn!("dds: pool {p} exists with another configuration; using it as it is")
                }
                Err(e) => return Err(e.into()),
            }
            let events = squall_storage::PoolConfig {
                name: t.events_pool(),
                mode: squall_storage::Mode::Versioned,
                durable: t.pool_config().durable,
                ..squall_storage::PoolConfig::default()
            };
            match node.create_pool(events).await {
                Ok(()) | Err(NodeError::PoolExists(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let participant = DomainParticipantBuilder::new(config.domain_id)
            .with_only_networks(config.interfaces.clone())
            .build()
            .map_err(|e| DdsError::Dds(format!("participant: {e:?}")))?;
        let default_qos = QosPolicyBuilder::new().build();
        let publisher = participant
            .create_publisher(&default_qos)
            .map_err(|e| DdsError::Dds(format!("publisher: {e:?}")))?;
        let subscriber = participant
            .create_subscriber(&default_qos)
            .map_err(|e| DdsError::Dds(format!("subscriber: {e:?}")))?;
        // Writers of separate publish topics get their own participant: rustdds runs one
        // event-loop thread per participant, and with one participant that thread both
        // received and sent every sample of the record-and-republish path (the bottleneck of
        // the benchmark once the reader batched). Writers on the topic they record stay in the
        // first participant (a second one would also send their samples to the face's reader).
        let out = if config.topic.iter().any(|t| !t.bridges_same_topic()) {
            let p = DomainParticipantBuilder::new(config.domain_id)
                .with_only_networks(config.interfaces.clone())
                .build()
                .map_err(|e| DdsError::Dds(format!("participant: {e:?}")))?;
            let publisher = p
                .create_publisher(&default_qos)
                .map_err(|e| DdsError::Dds(format!("publisher: {e:?}")))?;
            Some((p, publisher))
        } else {
            None
        };

        let stats = Arc::new(DdsStats::default());
        let mut topics = BTreeMap::new();
        let mut readers = Vec::new();
        for cfg in &config.topic {
            let rq = reader_qos(cfg);
            let topic = participant
                .create_topic(
                    cfg.name.clone(),
                    cfg.type_name.clone(),
                    &rq,
                    TopicKind::WithKey,
                )
                .map_err(|e| DdsError::Dds(format!("topic {}: {e:?}", cfg.name)))?;
            let reader = subscriber
                .create_datareader::<RawSample, RawAdapter>(&topic, Some(rq))
                .map_err(|e| DdsError::Dds(format!("reader {}: {e:?}", cfg.name)))?;
            let wq = writer_qos(cfg);
            let (out_topic, out_publisher) = match (&out, cfg.bridges_same_topic()) {
                (Some((op, opub)), false) => (
                    op.create_topic(
                        cfg.publish_topic().to_owned(),
                        cfg.type_name.clone(),
                        &wq,
                        TopicKind::WithKey,
                    )
                    .map_err(|e| DdsError::Dds(format!("topic {}: {e:?}", cfg.publish_topic())))?,
                    opub,
                ),
                _ => (topic, &publisher),
            };
            let writer = out_publisher
                .create_datawriter::<RawSample, RawAdapter>(&out_topic, Some(wq))
                .map_err(|e| DdsError::Dds(format!("writer {}: {e:?}", cfg.name)))?;
            let kafka = match &cfg.kafka_topic {
                Some(t) => Some(ensure_kafka_topic(&*node, cfg, t).await?),
                None => None,
            };
            let rt = Arc::new(TopicRt {
                cfg: cfg.clone(),
                ty: Arc::new(cfg.type_desc()),
                writer,
                state: Mutex::new(TopicState::default()),
                kafka,
            });
            readers.push((Arc::clone(&rt), reader));
            topics.insert(cfg.name.clone(), rt);
        }
        let shared = Arc::new(Shared {
            node,
            stats: Arc::clone(&stats),
            own: rustdds::RTPSEntity::guid(&participant),
            own_out: out.as_ref().map(|(p, _)| rustdds::RTPSEntity::guid(p)),
            writers: StdMutex::new(BTreeMap::new()),
            topics,
        });

        let mut tasks = Vec::new();
        // Discovery first, so writer strengths are known as early as possible.
        let status_listener = participant.status_listener();
        let s = Arc::clone(&shared);
        tasks.push(tokio::spawn(async move {
            discovery_task(s, status_listener).await
        }));
        for (rt, reader) in readers {
            let (tx, rx) = tokio::sync::mpsc::channel(INGRESS_BATCHES_MAX);
            let ty = Arc::clone(&rt.ty);
            std::thread::Builder::new()
                .name(format!("dds-rx-{}", rt.cfg.name))
                .spawn(move || reader_thread(reader, ty, tx))
                .map_err(|e| DdsError::Dds(format!("reader thread: {e}")))?;
            let (s, r) = (Arc::clone(&shared), Arc::clone(&rt));
            tasks.push(tokio::spawn(async move { ingress_task(s, r, rx).await }));
            let watch = shared.node.watch(
                &rt.cfg.pool,
                Selector::Prefix(String::new()),
                WatchFrom::Now,
            )?;
            if let Some(k) = &rt.kafka {
                let kwatch = shared.node.watch(
                    &k.topic,
                    Selector::Prefix(format!("{}/", k.topic)),
                    WatchFrom::Now,
                )?;
                let (s, r) = (Arc::clone(&shared), Arc::clone(&rt));
                tasks.push(tokio::spawn(async move {
                    kafka_ingress_task(s, r, kwatch).await
                }));
            }
            let (s, r) = (Arc::clone(&shared), rt);
            tasks.push(tokio::spawn(async move { egress_task(s, r, watch).await }));
        }
        info!(
            "dds: joined domain {} serving {} topic(s)",
            config.domain_id,
            config.topic.len()
        );
        Ok(DdsFace {
            stats,
            tasks,
            participant,
            _out_participant: out.map(|(p, _)| p),
        })
    }

    /// The face's counters.
    pub fn stats(&self) -> &Arc<DdsStats> {
        &self.stats
    }

    /// The participant's GUID prefix as hex (for logs and tests).
    pub fn participant_guid(&self) -> String {
        writer_name(rustdds::RTPSEntity::guid(&self.participant))
    }

    /// Stops the face's tasks and leaves the domain.
    pub fn shutdown(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for DdsFace {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn discovery_task<N: Node>(
    shared: Arc<Shared<N>>,
    listener: rustdds::DomainParticipantStatusListener,
) {
    let mut events = listener.as_async_status_stream();
    while let Some(ev) = events.next().await {
        match ev {
            Status::WriterDetected { writer } => {
                if shared.is_own(writer.guid) {
                    continue;
                }
                if !shared.topics.contains_key(&writer.topic_name) {
                    bump(&shared.stats.unknown_topic_writers);
                    info!(
                        "dds: writer {} on unconfigured topic {:?} (type {:?}) ignored",
                        writer_name(writer.guid),
                        writer.topic_name,
                        writer.type_name
                    );
                    continue;
                }
                let strength = match writer.qos.ownership() {
                    Some(policy::Ownership::Exclusive { strength }) => strength,
                    _ => 0,
                };
                info!(
                    "dds: writer {} on {:?} detected (strength {strength})",
                    writer_name(writer.guid),
                    writer.topic_name
                );
                let mut w = shared.writers.lock().unwrap_or_else(|p| p.into_inner());
                w.insert(
                    writer.guid,
                    WriterInfo {
                        topic: writer.topic_name,
                        strength,
                        alive: true,
                    },
                );
            }
            Status::WriterLost { guid, reason } => {
                info!("dds: writer {} lost ({reason:?})", writer_name(guid));
                let why = format!("writer lost: {reason:?}");
                writers_lost(&shared, |g| *g == guid, &why).await;
            }
            Status::ParticipantLost { id, reason } => {
                info!("dds: participant {id:?} lost ({reason:?})");
                let why = format!("participant lost: {reason:?}");
                writers_lost(&shared, |g| g.prefix == id, &why).await;
            }
            _ => {}
        }
    }
}

/// Marks matching writers dead, releases what they owned and, on topics the face shares with
/// DDS writers, takes over their instances so late joiners are still served.
async fn writers_lost<N: Node>(
    shared: &Arc<Shared<N>>,
    which: impl Fn(&GUID) -> bool,
    reason: &str,
) {
    let lost: Vec<(GUID, String)> = {
        let mut w = shared.writers.lock().unwrap_or_else(|p| p.into_inner());
        w.iter_mut()
            .filter(|(g, i)| i.alive && which(g))
            .map(|(g, i)| {
                i.alive = false;
                (*g, i.topic.clone())
            })
            .collect()
    };
    for (guid, topic) in lost {
        bump(&shared.stats.writers_lost);
        let Some(rt) = shared.topics.get(&topic) else {
            continue;
        };
        let mut st = rt.state.lock().await;
        let keys: Vec<String> = st
            .instances
            .iter()
            .filter(|(_, i)| i.last_writer == Some(guid))
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            if let Some(i) = st.instances.get_mut(&key) {
                i.last_writer = None;
            }
            record_event(shared, rt, &key, "writer_lost", guid, reason).await;
            if rt.cfg.ownership == OwnershipKind::Exclusive {
                release(shared, rt, &key, guid).await;
            }
            if rt.cfg.bridges_same_topic() && rt.cfg.durability != Durability::Volatile {
                st.orphans.insert(key);
            }
        }
    }
}

/// Records an instance event (not a sample: the instance keeps its value) in the topic's
/// events pool, as JSON `{"event", "writer", "reason"}`, at the platform time it was noticed.
async fn record_event<N: Node>(
    shared: &Shared<N>,
    rt: &TopicRt,
    key: &str,
    event: &str,
    writer: GUID,
    reason: &str,
) {
    let body = serde_json::json!({
        "event": event,
        "writer": writer_name(writer),
        "reason": reason,
    });
    let req = PutRequest::new(rt.cfg.events_pool(), key, Bytes::from(body.to_string()));
    match shared.node.put(req).await {
        Ok(_) => bump(&shared.stats.events_recorded),
        Err(e) => {
            bump(&shared.stats.node_errors);
            warn!("dds: event {event} of {}/{key}: {e}", rt.cfg.pool);
        }
    }
}

/// Serves a newly matched reader the instances whose DDS writer is gone (the broker acts as
/// the durability service). Each is written to that reader alone, so readers that were live
/// when the writer left, and already hold the value from it, do not get it twice.
async fn serve_late_joiner<N: Node>(shared: &Shared<N>, rt: &TopicRt, reader: GUID) {
    let st = rt.state.lock().await;
    for key in &st.orphans {
        let e = match shared.node.get(&rt.cfg.pool, key) {
            Ok(e) => e,
            Err(NodeError::NotFound) => continue,
            Err(err) => {
                bump(&shared.stats.node_errors);
                warn!("dds: late joiner: {key}: {err}");
                continue;
            }
        };
        let ts = us_to_timestamp(
            e.version
                .sensor_time_us
                .unwrap_or(e.version.time.physical_us),
        );
        let opts = WriteOptionsBuilder::new()
            .source_timestamp(ts)
            .to_single_reader(reader)
            .build();
        let result = match sample_of(rt, &e) {
            Ok(s) => rt
                .writer
                .async_write_with_options(s, opts)
                .await
                .map(|_| ())
                .map_err(|err| format!("{err:?}")),
            Err(err) => Err(err),
        };
        match result {
            Ok(()) => bump(&shared.stats.published),
            Err(err) => {
                bump(&shared.stats.write_errors);
                warn!("dds: late joiner: {key} not served: {err}");
            }
        }
    }
}

/// The sample of a stored value, as the face's writer sends it (XCDR1 LE).
fn sample_of(rt: &TopicRt, e: &Entry) -> Result<RawSample, String> {
    let (body, values) = rt
        .ty
        .to_xcdr1_le_body(&e.value)
        .map_err(|err| err.to_string())?;
    let k = InstanceKey::from_values(&rt.ty, &rt.ty.key_values(&values))
        .map_err(|err| err.to_string())?;
    if k.text != e.key {
        return Err(format!(
            "value's key {:?} differs from the store key",
            k.text
        ));
    }
    Ok(RawSample {
        enc: cdr::CDR_LE,
        body: Bytes::from(body),
        key: k,
    })
}

/// Releases, in the store, `writer`'s ownership of an instance (a no-op if it does not own it).
async fn release<N: Node>(shared: &Shared<N>, rt: &TopicRt, key: &str, writer: GUID) {
    match shared
        .node
        .release(&rt.cfg.pool, key, writer_id(&writer_name(writer)))
        .await
    {
        Ok(true) => {
            bump(&shared.stats.ownership_changes);
            info!(
                "dds: {} released {}/{key}",
                writer_name(writer),
                rt.cfg.pool
            );
        }
        Ok(false) => {}
        Err(err) => {
            bump(&shared.stats.node_errors);
            warn!("dds: release of {key}: {err}");
        }
    }
}

impl<N: Node> Shared<N> {
    /// Whether `g` belongs to one of the face's own participants.
    fn is_own(&self, g: GUID) -> bool {
        g.prefix == self.own.prefix || self.own_out.is_some_and(|o| o.prefix == g.prefix)
    }

    /// The discovered strength of a writer, waiting briefly for discovery to catch up.
    async fn writer_strength(&self, g: GUID) -> i32 {
        let deadline = tokio::time::Instant::now() + StdDuration::from_millis(DISCOVERY_WAIT_MS);
        loop {
            if let Some(i) = self
                .writers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&g)
            {
                return i.strength;
            }
            if tokio::time::Instant::now() >= deadline {
                warn!(
                    "dds: writer {} not discovered yet; strength 0",
                    writer_name(g)
                );
                return 0;
            }
            tokio::time::sleep(StdDuration::from_millis(10)).await;
        }
    }

    /// The store-side ownership claim of a DDS writer on an EXCLUSIVE topic: its discovered
    /// strength, no lease (the face releases it when the writer disposes, unregisters or is
    /// lost). The store arbitrates it where the put is ordered.
    async fn claim_of(&self, writer: GUID) -> Expect {
        Expect::Owned {
            claim: OwnerClaim {
                writer: writer_id(&writer_name(writer)),
                strength: self.writer_strength(writer).await,
                lease_us: 0,
            },
            version: None,
        }
    }
}

/// One sample (or dispose, or read error) handed from a reader thread to its ingress task.
enum Incoming {
    Value {
        writer: GUID,
        sensor_time_us: Option<u64>,
        raw: RawSample,
    },
    Dispose {
        writer: GUID,
        sensor_time_us: Option<u64>,
        key: InstanceKey,
    },
    Error(String),
}

/// Owns a topic's rustdds reader: waits on it with a mio poll (rustdds readers are mio 0.6
/// `Evented`), takes samples in batches, decodes them with the topic's type in scope, and hands
/// them to the ingress task. Batches amortize rustdds's per-`take` cost, which grows with the
/// reader's backlog. Ends when the ingress task is gone.
fn reader_thread(
    mut reader: Reader,
    ty: Arc<TypeDesc>,
    tx: tokio::sync::mpsc::Sender<Vec<Incoming>>,
) {
    use rustdds::mio::{Events, Poll, PollOpt, Ready, Token};
    let _scope = TypeScope::enter(&ty);
    let poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            warn!("dds: reader poll: {e}");
            return;
        }
    };
    if let Err(e) = poll.register(&reader, Token(0), Ready::readable(), PollOpt::level()) {
        warn!("dds: reader poll register: {e}");
        return;
    }
    let mut events = Events::with_capacity(4);
    // While samples pile up (a take returned more than one), naps between takes let a batch
    // gather (one take and one hand-over per batch instead of a wake-up, an epoll and a take
    // per sample); once the reader has been empty for READER_BUSY_US, or samples come one at a
    // time (a low rate, where a nap would only add latency), it waits on the poll again, so an
    // idle face costs nothing.
    let mut idle_since: Option<std::time::Instant> = None;
    let mut busy = false;
    loop {
        let mut got = false;
        loop {
            let batch: Vec<Incoming> = match reader.take(TAKE_BATCH_MAX, ReadCondition::not_read())
            {
                Ok(v) if v.is_empty() => break,
                Ok(v) => v
                    .into_iter()
                    .map(|ds| {
                        let info = ds.sample_info();
                        let writer = info.writer_guid();
                        let sensor_time_us = info.source_timestamp().map(timestamp_to_us);
                        match ds.into_value() {
                            Sample::Value(raw) => Incoming::Value {
                                writer,
                                sensor_time_us,
                                raw,
                            },
                            Sample::Dispose(key) => Incoming::Dispose {
                                writer,
                                sensor_time_us,
                                key,
                            },
                        }
                    })
                    .collect(),
                // A sample that does not decode is skipped by rustdds after this error.
                Err(e) => vec![Incoming::Error(e.to_string())],
            };
            got = true;
            busy = batch.len() > 1;
            if tx.blocking_send(batch).is_err() {
                return; // the face is gone
            }
        }
        if tx.is_closed() {
            return;
        }
        if got {
            idle_since = None;
        }
        let idle = idle_since.get_or_insert_with(std::time::Instant::now);
        if busy && idle.elapsed() < StdDuration::from_micros(READER_BUSY_US) {
            std::thread::sleep(StdDuration::from_micros(READER_NAP_US));
            continue;
        }
        // The timeout only bounds how long a closed face keeps this thread.
        if let Err(e) = poll.poll(&mut events, Some(StdDuration::from_millis(100))) {
            warn!("dds: reader poll: {e}");
            return;
        }
    }
}

async fn ingress_task<N: Node>(
    shared: Arc<Shared<N>>,
    rt: Arc<TopicRt>,
    mut rx: tokio::sync::mpsc::Receiver<Vec<Incoming>>,
) {
    while let Some(batch) = rx.recv().await {
        let mut writes = Vec::with_capacity(batch.len());
        for item in batch {
            match item {
                Incoming::Error(e) => {
                    bump(&shared.stats.samples_received);
                    bump(&shared.stats.undecodable);
                    warn!("dds: topic {}: sample dropped: {e}", rt.cfg.name);
                }
                Incoming::Value { writer, .. } | Incoming::Dispose { writer, .. }
                    if shared.is_own(writer) => {} // our own writer: never loop back
                Incoming::Value {
                    writer,
                    sensor_time_us,
                    raw,
                } => {
                    bump(&shared.stats.samples_received);
                    if rt.cfg.ownership == OwnershipKind::Exclusive {
                        on_sample(&shared, &rt, writer, raw, sensor_time_us).await;
                    } else {
                        writes.push((writer, sensor_time_us, Ok(raw)));
                    }
                }
                Incoming::Dispose {
                    writer,
                    sensor_time_us,
                    key,
                } => {
                    bump(&shared.stats.samples_received);
                    if rt.cfg.ownership == OwnershipKind::Exclusive {
                        on_dispose(&shared, &rt, writer, key, sensor_time_us).await;
                    } else {
                        writes.push((writer, sensor_time_us, Err(key)));
                    }
                }
            }
        }
        if !writes.is_empty() {
            store_batch(&shared, &rt, writes).await;
        }
    }
}

/// A sample (`Ok`) or a dispose (`Err` with the instance) from a writer, with its sensor time.
type Write = (GUID, Option<u64>, Result<RawSample, InstanceKey>);

/// Stores a batch of a SHARED topic: the samples of one instance one after the other, in
/// arrival order; different instances concurrently (the store orders each key on its own).
async fn store_batch<N: Node>(shared: &Shared<N>, rt: &TopicRt, writes: Vec<Write>) {
    let mut st = rt.state.lock().await;
    let mut groups: BTreeMap<String, Vec<Write>> = BTreeMap::new();
    for w in writes {
        let key = match &w.2 {
            Ok(raw) => &raw.key,
            Err(k) => k,
        };
        if !check_key(&shared.stats, rt, &st, key) {
            continue;
        }
        if !st.instances.contains_key(&key.text) {
            // Claim the store key now, so a colliding instance later in the batch is refused.
            st.instances.insert(
                key.text.clone(),
                Instance {
                    key: key.clone(),
                    last_writer: None,
                },
            );
        }
        groups.entry(key.text.clone()).or_default().push(w);
    }
    let chains = groups.into_iter().map(|(key, ws)| async move {
        let mut done = Vec::with_capacity(ws.len());
        for (writer, sensor_time_us, w) in ws {
            let mut req = match &w {
                Ok(raw) => PutRequest::new(rt.cfg.pool.clone(), key.clone(), raw.to_stored()),
                Err(_) => {
                    let mut r = PutRequest::new(rt.cfg.pool.clone(), key.clone(), Bytes::new());
                    r.tombstone = true;
                    r
                }
            };
            req.sensor_time_us = sensor_time_us;
            let result = shared.node.put(req).await;
            done.push((writer, w, result));
        }
        (key, done)
    });
    for (key, done) in futures_util::future::join_all(chains).await {
        let mut newest = None;
        for (writer, w, result) in done {
            match result {
                Ok(v) => {
                    st.own.entry(key.clone()).or_default().insert(v.key_version);
                    st.orphans.remove(&key);
                    let (instance, last_writer) = match w {
                        Ok(raw) => {
                            bump(&shared.stats.samples_stored);
                            (raw.key, Some(writer))
                        }
                        Err(k) => {
                            bump(&shared.stats.disposes_stored);
                            (k, None)
                        }
                    };
                    st.instances.insert(
                        key.clone(),
                        Instance {
                            key: instance,
                            last_writer,
                        },
                    );
                    newest = Some(v);
                }
                Err(e) => {
                    bump(&shared.stats.node_errors);
                    warn!("dds: store {}/{key}: {e}", rt.cfg.pool);
                }
            }
        }
        if let (Some(n), Some(v)) = (rt.cfg.keep_versions(), newest) {
            let before = v.next_key_version().saturating_sub(u64::from(n));
            if before > 0 {
                if let Err(e) = shared.node.truncate(&rt.cfg.pool, &key, before).await {
                    bump(&shared.stats.node_errors);
                    warn!("dds: truncate {key}: {e}");
                }
            }
        }
    }
}

/// Checks the store key of an instance: valid, and not already used by another instance.
fn check_key(stats: &DdsStats, rt: &TopicRt, st: &TopicState, key: &InstanceKey) -> bool {
    let ok_text = !key.text.is_empty() && key.text.len() <= KEY_BYTES_MAX;
    let collides = st
        .instances
        .get(&key.text)
        .is_some_and(|i| i.key.hash != key.hash);
    if !ok_text
        || collides
        || (st.instances.len() >= INSTANCES_MAX && !st.instances.contains_key(&key.text))
    {
        bump(&stats.key_collisions);
        warn!(
            "dds: topic {}: instance {:?} rejected ({})",
            rt.cfg.name,
            key.text,
            if collides {
                "store key used by another instance"
            } else {
                "invalid store key or instance limit"
            }
        );
        return false;
    }
    true
}

async fn on_sample<N: Node>(
    shared: &Shared<N>,
    rt: &TopicRt,
    writer: GUID,
    raw: RawSample,
    sensor_time_us: Option<u64>,
) {
    let mut st = rt.state.lock().await;
    if !check_key(&shared.stats, rt, &st, &raw.key) {
        return;
    }
    let key = raw.key.text.clone();
    let mut req = PutRequest::new(rt.cfg.pool.clone(), key.clone(), raw.to_stored());
    req.sensor_time_us = sensor_time_us;
    if rt.cfg.ownership == OwnershipKind::Exclusive {
        req.expect = shared.claim_of(writer).await;
    }
    match shared.node.put(req).await {
        Ok(v) => {
            bump(&shared.stats.samples_stored);
            if st.instances.get(&key).and_then(|i| i.last_writer) != Some(writer) {
                bump(&shared.stats.ownership_changes);
            }
            st.own.entry(key.clone()).or_default().insert(v.key_version);
            st.orphans.remove(&key);
            st.instances.insert(
                key.clone(),
                Instance {
                    key: raw.key,
                    last_writer: Some(writer),
                },
            );
            if let Some(n) = rt.cfg.keep_versions() {
                let before = v.next_key_version().saturating_sub(u64::from(n));
                if before > 0 {
                    if let Err(e) = shared.node.truncate(&rt.cfg.pool, &key, before).await {
                        bump(&shared.stats.node_errors);
                        warn!("dds: truncate {key}: {e}");
                    }
                }
            }
        }
        Err(NodeError::NotOwner(n)) => {
            bump(&shared.stats.ownership_rejected);
            info!(
                "dds: sample of {}/{key} from {} refused: {n}",
                rt.cfg.pool,
                writer_name(writer)
            );
        }
        Err(e) => {
            bump(&shared.stats.node_errors);
            warn!("dds: store {}/{key}: {e}", rt.cfg.pool);
        }
    }
}

async fn on_dispose<N: Node>(
    shared: &Shared<N>,
    rt: &TopicRt,
    writer: GUID,
    key: InstanceKey,
    sensor_time_us: Option<u64>,
) {
    let mut st = rt.state.lock().await;
    if !check_key(&shared.stats, rt, &st, &key) {
        return;
    }
    let text = key.text.clone();
    let mut req = PutRequest::new(rt.cfg.pool.clone(), text.clone(), Bytes::new());
    req.tombstone = true;
    req.sensor_time_us = sensor_time_us;
    // The owner's dispose is a guarded tombstone: the store releases the instance with it.
    req.expect = shared.claim_of(writer).await;
    match shared.node.put(req).await {
        Ok(v) => {
            bump(&shared.stats.disposes_stored);
            st.own
                .entry(text.clone())
                .or_default()
                .insert(v.key_version);
            st.orphans.remove(&text);
            st.instances.insert(
                text.clone(),
                Instance {
                    key,
                    last_writer: None,
                },
            );
        }
        Err(NodeError::NotOwner(n)) => {
            bump(&shared.stats.ownership_rejected);
            info!(
                "dds: dispose of {}/{text} from {} refused: {n}",
                rt.cfg.pool,
                writer_name(writer)
            );
        }
        Err(e) => {
            bump(&shared.stats.node_errors);
            warn!("dds: dispose {}/{text}: {e}", rt.cfg.pool);
        }
    }
}

async fn egress_task<N: Node, W: WatchStream>(
    shared: Arc<Shared<N>>,
    rt: Arc<TopicRt>,
    mut watch: W,
) {
    if rt.cfg.durability != Durability::Volatile {
        prime(&shared, &rt).await;
    }
    let mut status = rt.writer.as_async_status_stream();
    loop {
        let ev = tokio::select! {
            ev = watch.next() => match ev {
                Some(ev) => ev,
                None => break,
            },
            st = status.next() => {
                if let Some(DataWriterStatus::PublicationMatched { reader, current, .. }) = st {
                    if current.count_change() > 0 {
                        serve_late_joiner(&shared, &rt, reader).await;
                    }
                }
                continue;
            }
        };
        let entry = match ev {
            WatchEvent::Update(e) => e,
            WatchEvent::Lagged(n) => {
                warn!(
                    "dds: topic {}: watch lagged, {n} update(s) not published",
                    rt.cfg.name
                );
                continue;
            }
        };
        let mut st = rt.state.lock().await;
        let from_dds = st
            .own
            .get_mut(&entry.key)
            .is_some_and(|s| s.remove(&entry.version.key_version));
        if st.own.get(&entry.key).is_some_and(BTreeSet::is_empty) {
            st.own.remove(&entry.key);
        }
        let from_kafka = st
            .kafka_own
            .get_mut(&entry.key)
            .is_some_and(|s| s.remove(&entry.version.key_version));
        if st.kafka_own.get(&entry.key).is_some_and(BTreeSet::is_empty) {
            st.kafka_own.remove(&entry.key);
        }
        if let Some(k) = &rt.kafka {
            if !from_kafka {
                to_kafka(&shared, k, &entry).await;
            }
        }
        if from_dds && rt.cfg.bridges_same_topic() {
            bump(&shared.stats.loops_suppressed);
            continue;
        }
        // Edits from other faces on EXCLUSIVE topics were arbitrated by the store when they
        // were ordered (a non-owner's edit was refused there), so whatever arrives is published.
        publish(&shared, &rt, &mut st, &entry, from_dds).await;
    }
}

/// Creates the Kafka topic a DDS topic is bridged to when it does not exist (as the Kafka
/// face's CreateTopics would: its pool plus its record in the internal topics pool) and
/// returns its partition count.
#[cfg(feature = "kafka")]
async fn ensure_kafka_topic<N: Node>(
    node: &N,
    cfg: &DdsTopicConfig,
    topic: &str,
) -> Result<KafkaSide, DdsError> {
    use crate::kafka::topics::{TopicMeta, TOPICS_POOL};
    for name in [TOPICS_POOL, BRIDGE_POSITIONS_POOL] {
        let internal = squall_storage::PoolConfig {
            name: name.to_string(),
            mode: squall_storage::Mode::Latest,
            durable: true,
            retention_ms: None,
            ..squall_storage::PoolConfig::default()
        };
        match node.create_pool(internal).await {
            Ok(()) | Err(NodeError::PoolExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    use super::kafka_bridge::{DDS_LEASE_CONFIG, DDS_POOL_CONFIG, DDS_STRENGTH_CONFIG};
    // What the Kafka face needs to check ownership claims of produced records.
    let dds_configs = [
        (DDS_POOL_CONFIG, cfg.pool.clone()),
        (DDS_STRENGTH_CONFIG, cfg.editor_strength.to_string()),
        (DDS_LEASE_CONFIG, cfg.editor_lease_ms.to_string()),
    ];
    if let Ok(e) = node.get(TOPICS_POOL, topic) {
        if let Some(mut meta) = TopicMeta::from_bytes(&e.value) {
            if node.pool(topic).is_some() {
                let stale = dds_configs
                    .iter()
                    .any(|(k, v)| meta.configs.get(*k) != Some(v));
                if stale {
                    for (k, v) in &dds_configs {
                        meta.configs.insert((*k).to_owned(), v.clone());
                    }
                    node.put(PutRequest::new(TOPICS_POOL, topic, meta.to_bytes()))
                        .await?;
                }
                return Ok(KafkaSide {
                    topic: topic.to_string(),
                    partitions: meta.partitions.max(1),
                });
            }
        }
    }
    let mut meta = TopicMeta {
        partitions: cfg.kafka_partitions,
        ..TopicMeta::default()
    };
    for (k, v) in &dds_configs {
        meta.configs.insert((*k).to_owned(), v.clone());
    }
    meta.configs.insert(
        "squall.durable".into(),
        cfg.pool_config().durable.to_string(),
    );
    match node.create_pool(meta.pool_config(topic)).await {
        Ok(()) | Err(NodeError::PoolExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    node.put(PutRequest::new(TOPICS_POOL, topic, meta.to_bytes()))
        .await?;
    info!(
        "dds: created Kafka topic {topic} ({} partitions) for {}",
        meta.partitions, cfg.name
    );
    Ok(KafkaSide {
        topic: topic.to_string(),
        partitions: meta.partitions,
    })
}

#[cfg(not(feature = "kafka"))]
async fn ensure_kafka_topic<N: Node>(
    _node: &N,
    cfg: &DdsTopicConfig,
    _topic: &str,
) -> Result<KafkaSide, DdsError> {
    Err(DdsError::Config(format!(
        "topic {:?}: kafka_topic needs the kafka feature",
        cfg.name
    )))
}

/// Produces one version of the DDS pool as a record of the bridged Kafka topic.
#[cfg(feature = "kafka")]
async fn to_kafka<N: Node>(shared: &Shared<N>, k: &KafkaSide, e: &Entry) {
    use super::kafka_bridge::{encode_record, partition_for};
    let t_us = e
        .version
        .sensor_time_us
        .unwrap_or(e.version.time.physical_us);
    let value = (!e.tombstone).then(|| e.value.clone());
    let batch = match encode_record(&e.key, value, (t_us / 1000) as i64) {
        Ok(b) => b,
        Err(err) => {
            bump(&shared.stats.node_errors);
            warn!("dds: kafka record for {}: {err}", e.key);
            return;
        }
    };
    let p = partition_for(e.key.as_bytes(), k.partitions);
    let mut req = PutRequest::new(
        k.topic.clone(),
        crate::kafka::topics::partition_key(&k.topic, p),
        batch,
    );
    req.sensor_time_us = e.version.sensor_time_us;
    match shared.node.put(req).await {
        Ok(_) => bump(&shared.stats.kafka_records_out),
        Err(err) => {
            bump(&shared.stats.node_errors);
            warn!("dds: produce {} to Kafka topic {}: {err}", e.key, k.topic);
        }
    }
}

#[cfg(not(feature = "kafka"))]
async fn to_kafka<N: Node>(_shared: &Shared<N>, _k: &KafkaSide, _e: &Entry) {}

/// Follows the bridged Kafka topic and stores each record not produced by the bridge as a
/// sample (or, for a tombstone, a dispose) of the instance its key names.
///
/// Its position (per partition, the next offset to bridge) is saved after each stored batch
/// as a `latest` key in [`BRIDGE_POSITIONS_POOL`] (replicated and logged like any key), so a
/// restarted face first bridges what was appended since (nothing lost) and skips what it had
/// bridged (nothing published twice). A face with no saved position starts at the topic's
/// end, as before. The one window left: a crash after a batch's puts and before its position
/// is saved bridges that batch again after the restart.
#[cfg(feature = "kafka")]
async fn kafka_ingress_task<N: Node, W: WatchStream>(
    shared: Arc<Shared<N>>,
    rt: Arc<TopicRt>,
    mut watch: W,
) {
    let Some(k) = rt.kafka.clone() else { return };
    // The watch started (from now) before this runs; catch up from the saved positions, then
    // follow it, skipping what the catch-up already bridged.
    let mut next: BTreeMap<String, u64> = BTreeMap::new();
    for p in 0..k.partitions {
        let key = format!("{}/{p}", k.topic);
        let end = shared.node.bounds(&k.topic, &key).map_or(0, |b| b.next);
        let saved = shared
            .node
            .get(BRIDGE_POSITIONS_POOL, &position_key(&rt.cfg.name, &key))
            .ok()
            .and_then(|e| {
                std::str::from_utf8(&e.value)
                    .ok()?
                    .trim()
                    .parse::<u64>()
                    .ok()
            });
        let from = match saved {
            Some(pos) => pos.min(end),
            None => {
                save_position(&shared, &rt, &key, end).await;
                end
            }
        };
        if from < end {
            info!(
                "dds: kafka bridge of {} resumes {key} at offset {from} (end {end})",
                rt.cfg.name
            );
        }
        let pos = catch_up(&shared, &rt, &k.topic, &key, from).await;
        next.insert(key, pos);
    }
    while let Some(ev) = watch.next().await {
        let entry = match ev {
            WatchEvent::Update(e) => e,
            WatchEvent::Lagged(n) => {
                // The positions say where each partition stands: read what was missed.
                warn!(
                    "dds: kafka bridge of {} lagged ({n} batch(es)); catching up from the store",
                    rt.cfg.name
                );
                for (key, pos) in next.iter_mut() {
                    *pos = catch_up(&shared, &rt, &k.topic, key, *pos).await;
                }
                continue;
            }
        };
        let pos = next.entry(entry.key.clone()).or_insert(0);
        if entry.version.key_version < *pos {
            continue; // bridged while catching up
        }
        *pos = entry.version.next_key_version();
        let pos = *pos;
        bridge_kafka_batch(&shared, &rt, &entry).await;
        save_position(&shared, &rt, &entry.key, pos).await;
    }
}

/// Bridges a partition's batches from offset `from` to its current end, saving the position
/// after each; returns the position reached.
#[cfg(feature = "kafka")]
async fn catch_up<N: Node>(
    shared: &Shared<N>,
    rt: &TopicRt,
    topic: &str,
    key: &str,
    from: u64,
) -> u64 {
    let end = shared.node.bounds(topic, key).map_or(0, |b| b.next);
    let mut pos = from;
    while pos < end {
        let entries = match shared.node.read_from(topic, key, pos, 1 << 20, 256) {
            Ok(e) if !e.is_empty() => e,
            Ok(_) => break,
            Err(err) => {
                bump(&shared.stats.node_errors);
                warn!(
                    "dds: kafka bridge of {} catching up {key}: {err}",
                    rt.cfg.name
                );
                break;
            }
        };
        for e in entries {
            pos = pos.max(e.version.next_key_version());
            bridge_kafka_batch(shared, rt, &e).await;
            save_position(shared, rt, key, pos).await;
        }
    }
    pos
}

/// The key of a bridge position: the DDS topic, then the Kafka partition key.
#[cfg(feature = "kafka")]
fn position_key(dds_topic: &str, partition_key: &str) -> String {
    format!("{dds_topic}/{partition_key}")
}

#[cfg(feature = "kafka")]
async fn save_position<N: Node>(shared: &Shared<N>, rt: &TopicRt, key: &str, next: u64) {
    let req = PutRequest::new(
        BRIDGE_POSITIONS_POOL,
        position_key(&rt.cfg.name, key),
        Bytes::from(next.to_string()),
    );
    if let Err(err) = shared.node.put(req).await {
        bump(&shared.stats.node_errors);
        warn!(
            "dds: kafka bridge of {}: saving the position of {key}: {err}",
            rt.cfg.name
        );
    }
}

/// Stores the records of one Kafka batch (a version of a partition key) in the topic's pool.
#[cfg(feature = "kafka")]
async fn bridge_kafka_batch<N: Node>(shared: &Shared<N>, rt: &TopicRt, entry: &Entry) {
    use super::kafka_bridge::decode_records;
    if entry.tombstone {
        return;
    }
    let records = match decode_records(&entry.value) {
        Ok(r) => r,
        Err(err) => {
            bump(&shared.stats.kafka_records_bad);
            warn!("dds: kafka bridge of {}: {err}", rt.cfg.name);
            return;
        }
    };
    for r in records {
        if r.from_dds {
            continue;
        }
        match kafka_record_to_put(rt, r) {
            Ok(req) => {
                let key = req.key.clone();
                let mut st = rt.state.lock().await;
                match shared.node.put(req).await {
                    Ok(v) => {
                        bump(&shared.stats.kafka_records_in);
                        st.kafka_own.entry(key).or_default().insert(v.key_version);
                    }
                    Err(NodeError::NotOwner(n)) => {
                        bump(&shared.stats.ownership_rejected);
                        info!("dds: Kafka record for {}/{key} refused: {n}", rt.cfg.pool);
                    }
                    Err(err) => {
                        bump(&shared.stats.node_errors);
                        warn!("dds: Kafka record for {}/{key}: {err}", rt.cfg.pool);
                    }
                }
            }
            Err(err) => {
                bump(&shared.stats.kafka_records_bad);
                warn!("dds: Kafka record on {} not bridged: {err}", rt.cfg.name);
            }
        }
    }
}

#[cfg(not(feature = "kafka"))]
async fn kafka_ingress_task<N: Node, W: WatchStream>(
    _shared: Arc<Shared<N>>,
    _rt: Arc<TopicRt>,
    _watch: W,
) {
}

/// The put for one Kafka record: its key names the instance; its value is the CDR sample (with
/// its header) or a JSON object of the type, and must be of that instance; `null` disposes.
#[cfg(feature = "kafka")]
fn kafka_record_to_put(
    rt: &TopicRt,
    r: super::kafka_bridge::BridgeRecord,
) -> Result<PutRequest, String> {
    let claim = r.claim;
    let key = r
        .key
        .as_deref()
        .and_then(|k| std::str::from_utf8(k).ok())
        .filter(|k| !k.is_empty() && k.len() <= KEY_BYTES_MAX)
        .ok_or("the record needs a UTF-8 key: the instance key")?
        .to_owned();
    let sensor_time_us = u64::try_from(r.timestamp_ms)
        .ok()
        .filter(|ms| *ms > 0)
        .map(|ms| ms.saturating_mul(1000));
    let mut req = match r.value {
        None => {
            let mut req = PutRequest::new(rt.cfg.pool.clone(), key, Bytes::new());
            req.tombstone = true;
            req
        }
        Some(v) => {
            let sample = if v.first() == Some(&b'{') {
                let j: serde_json::Value = serde_json::from_slice(&v)
                    .map_err(|e| format!("value is not JSON nor CDR: {e}"))?;
                Bytes::from(rt.ty.from_json(&j).map_err(|e| e.to_string())?)
            } else {
                v
            };
            let (_, values) = rt
                .ty
                .to_xcdr1_le_body(&sample)
                .map_err(|e| format!("value is not a sample of the type: {e}"))?;
            let k = InstanceKey::from_values(&rt.ty, &rt.ty.key_values(&values))
                .map_err(|e| e.to_string())?;
            if k.text != key {
                return Err(format!(
                    "record key {key:?} differs from the sample's instance key {:?}",
                    k.text
                ));
            }
            PutRequest::new(rt.cfg.pool.clone(), key, sample)
        }
    };
    req.sensor_time_us = sensor_time_us;
    // `squall-owner` (+ `squall-strength`, `squall-lease-ms`): the put claims the instance, as
    // an HTTP editor's does; the store arbitrates it where the put is ordered.
    if let Some(c) = claim? {
        req.expect = Expect::Owned {
            claim: c.to_claim(rt.cfg.editor_strength, rt.cfg.editor_lease_ms),
            version: None,
        };
    }
    Ok(req)
}

/// Publishes what the store holds when the face starts, so late joiners are served even
/// after a broker restart.
async fn prime<N: Node>(shared: &Shared<N>, rt: &TopicRt) {
    let keys = match shared.node.keys(&rt.cfg.pool, "") {
        Ok(k) => k,
        Err(e) => {
            bump(&shared.stats.node_errors);
            warn!("dds: listing {}: {e}", rt.cfg.pool);
            return;
        }
    };
    let mut st = rt.state.lock().await;
    for key in keys {
        let entries = match rt.cfg.keep_versions() {
            Some(n) => shared.node.bounds(&rt.cfg.pool, &key).and_then(|b| {
                let from = b.next.saturating_sub(u64::from(n)).max(b.start);
                shared
                    .node
                    .read_from(&rt.cfg.pool, &key, from, usize::MAX, n as usize)
            }),
            None => shared.node.get(&rt.cfg.pool, &key).map(|e| vec![e]),
        };
        match entries {
            Ok(es) => {
                for e in es.iter().filter(|e| !e.tombstone) {
                    publish(shared, rt, &mut st, e, false).await;
                }
            }
            Err(NodeError::NotFound) => {}
            Err(e) => {
                bump(&shared.stats.node_errors);
                warn!("dds: priming {key}: {e}");
            }
        }
    }
}

/// Publishes one stored version (a value or a tombstone), at most once per version.
async fn publish<N: Node>(
    shared: &Shared<N>,
    rt: &TopicRt,
    st: &mut TopicState,
    e: &Entry,
    from_dds: bool,
) {
    if st
        .published
        .get(&e.key)
        .is_some_and(|v| *v >= e.version.key_version)
    {
        return;
    }
    let ts = us_to_timestamp(
        e.version
            .sensor_time_us
            .unwrap_or(e.version.time.physical_us),
    );
    let result = if e.tombstone {
        let key = match st.instances.get(&e.key) {
            Some(i) => Ok(i.key.clone()),
            None => key_from_text(&rt.ty, &e.key),
        };
        match key {
            Ok(k) => rt
                .writer
                .dispose(&k, Some(ts))
                .map_err(|err| format!("{err:?}")),
            Err(err) => Err(err.to_string()),
        }
    } else {
        // A version the face stored from a DDS writer in XCDR1 LE (what the face's writer
        // sends) is re-published as it is: its instance is known from the ingress, so the
        // sample is not decoded and encoded again (the record-and-republish path).
        let passthrough =
            (from_dds && e.value.len() >= cdr::HEADER_BYTES && e.value[..2] == cdr::CDR_LE)
                .then(|| st.instances.get(&e.key))
                .flatten()
                .map(|i| RawSample {
                    enc: cdr::CDR_LE,
                    body: e.value.slice(cdr::HEADER_BYTES..),
                    key: i.key.clone(),
                });
        match passthrough.map_or_else(|| sample_of(rt, e), Ok) {
            Ok(s) => {
                if !st.instances.contains_key(&e.key) && st.instances.len() < INSTANCES_MAX {
                    st.instances.insert(
                        e.key.clone(),
                        Instance {
                            key: s.key.clone(),
                            last_writer: None,
                        },
                    );
                }
                rt.writer
                    .async_write(s, Some(ts))
                    .await
                    .map_err(|err| format!("{err:?}"))
            }
            Err(err) => Err(err),
        }
    };
    match result {
        Ok(()) => {
            bump(&shared.stats.published);
            st.orphans.remove(&e.key);
            st.published.insert(e.key.clone(), e.version.key_version);
        }
        Err(err) => {
            bump(&shared.stats.write_errors);
            warn!(
                "dds: topic {}: version {} of {} not published: {err}",
                rt.cfg.publish_topic(),
                e.version.key_version,
                e.key
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtps_time_round_trips_to_the_microsecond() {
        for us in [0u64, 1, 999_999, 1_000_000, 1_795_304_284_699_642] {
            assert_eq!(timestamp_to_us(us_to_timestamp(us)), us, "{us}");
        }
    }
}
