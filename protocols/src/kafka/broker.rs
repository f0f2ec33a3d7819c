//! [`KafkaBroker`]: the Kafka face's shared state and its request dispatcher.
//!
//! One `KafkaBroker` serves every connection of a node. [`KafkaBroker::handle`] takes one whole
//! request frame body and returns the response frame (length prefix included), `None` when the
//! request wants no answer (Produce with acks=0), or an error after which the connection is
//! closed (malformed request, API or version not served).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use squall_storage::{Mode, PoolConfig};

use super::groups::{Coordinator, GroupRecord};
use super::produce::PartitionProducers;
use super::topics::{self, TopicMeta, GROUPS_POOL, OFFSETS_POOL, PRODUCER_IDS_POOL, TOPICS_POOL};
use super::versions::{self, SERVED};
use super::KafkaError;
use crate::node::{Node, NodeError, PutRequest};

/// Kafka error codes used by this face (names as in the Kafka protocol guide).
pub mod code {
    /// An unexpected server error.
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    /// No error.
    pub const NONE: i16 = 0;
    /// The offset is outside the partition's range.
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    /// A record failed its CRC or could not be parsed.
    pub const CORRUPT_MESSAGE: i16 = 2;
    /// No such topic or partition.
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    /// Not the leader (retriable; clients refresh metadata).
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    /// The request timed out.
    pub const REQUEST_TIMED_OUT: i16 = 7;
    /// A batch larger than `max.message.bytes`.
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    /// Commit metadata larger than the limit.
    pub const OFFSET_METADATA_TOO_LARGE: i16 = 12;
    /// The coordinator is not available.
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    /// This broker is not the group's coordinator (Kafka also answers it when the
    /// coordinator's own log failed: the client finds the coordinator again and retries).
    pub const NOT_COORDINATOR: i16 = 16;
    /// An invalid topic name.
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    /// acks other than -1, 0, 1.
    pub const INVALID_REQUIRED_ACKS: i16 = 21;
    /// The generation is not the group's current one.
    pub const ILLEGAL_GENERATION: i16 = 22;
    /// No protocol common to the group's members.
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    /// An empty or too long group id.
    pub const INVALID_GROUP_ID: i16 = 24;
    /// The member is not in the group.
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    /// Session timeout outside the broker's range.
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    /// The group is rebalancing.
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    /// A committed offset's record is too large to store.
    pub const INVALID_COMMIT_OFFSET_SIZE: i16 = 28;
    /// Unsupported API version.
    pub const UNSUPPORTED_VERSION: i16 = 35;
    /// The topic exists.
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    /// Invalid partition count.
    pub const INVALID_PARTITIONS: i16 = 37;
    /// Replication factor above the number of brokers.
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    /// Invalid config name or value.
    pub const INVALID_CONFIG: i16 = 40;
    /// Malformed or inconsistent request.
    pub const INVALID_REQUEST: i16 = 42;
    /// POLICY_VIOLATION (a write refused by EXCLUSIVE ownership).
    pub const POLICY_VIOLATION: i16 = 44;
    /// A message format the broker does not accept (magic 0/1).
    pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
    /// A sequence gap for an idempotent producer.
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    /// A sequence already written (older than the cached batches).
    pub const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
    /// A producer epoch older than the current one.
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    /// Transactions are refused with this code.
    pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
    /// The store failed.
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    /// The group still has members.
    pub const NON_EMPTY_GROUP: i16 = 68;
    /// No such group.
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    /// JoinGroup v4+: rejoin with the member id handed out.
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    /// A static member was replaced by a newer instance.
    pub const FENCED_INSTANCE_ID: i16 = 82;
    /// A record breaks the topic's rules (e.g. no key on a compacted topic).
    pub const INVALID_RECORD: i16 = 87;
}

/// The Kafka face's configuration (plain struct; the broker binary fills it from flags).
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// This node's broker id in Metadata.
    pub node_id: i32,
    /// Host clients are told to connect to.
    pub advertised_host: String,
    /// Port clients are told to connect to.
    pub advertised_port: u16,
    /// Cluster id reported in Metadata and DescribeCluster.
    pub cluster_id: String,
    /// `socket.request.max.bytes`: largest request frame body accepted.
    pub request_bytes_max: usize,
    /// `auto.create.topics.enable`: Metadata creates missing topics.
    pub auto_create_topics: bool,
    /// `num.partitions`: partitions of auto-created topics.
    pub default_partitions: u32,
    /// Upper bound on a Fetch's `max_wait_ms`.
    pub fetch_wait_ms_max: u32,
    /// Upper bound on a Fetch response's record bytes.
    pub fetch_response_bytes_max: usize,
    /// Most open client connections; more are closed on accept.
    pub connections_max: usize,
    /// Most consumer groups held by the coordinator.
    pub groups_max: usize,
    /// Most members per group.
    pub group_members_max: usize,
    /// `group.min.session.timeout.ms`.
    pub session_timeout_ms_min: i32,
    /// `group.max.session.timeout.ms`.
    pub session_timeout_ms_max: i32,
    /// `offset.metadata.max.bytes`.
    pub offset_metadata_bytes_max: usize,
    /// Whether topics' pools go to the durable log unless `squall.durable=false`.
    pub durable_default: bool,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            node_id: 0,
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            cluster_id: "squall".into(),
            request_bytes_max: super::frame::REQUEST_BYTES_MAX_DEFAULT,
            auto_create_topics: true,
            default_partitions: 1,
            fetch_wait_ms_max: 30_000,
            fetch_response_bytes_max: 64 * 1024 * 1024,
            connections_max: 4096,
            groups_max: 10_000,
            group_members_max: 1000,
            session_timeout_ms_min: 1000,
            session_timeout_ms_max: 1_800_000,
            offset_metadata_bytes_max: 4096,
            durable_default: true,
        }
    }
}

impl KafkaConfig {
    /// Checks the values make sense together.
    pub fn validate(&self) -> Result<(), String> {
        if self.advertised_host.is_empty() {
            return Err("advertised host is empty".into());
        }
        if self.request_bytes_max < super::frame::REQUEST_BYTES_MIN
            || self.request_bytes_max > i32::MAX as usize
        {
            return Err("request_bytes_max out of range".into());
        }
        if self.default_partitions == 0 || self.default_partitions > topics::PARTITIONS_MAX {
            return Err("default_partitions out of range".into());
        }
        if self.session_timeout_ms_min > self.session_timeout_ms_max
            || self.session_timeout_ms_min <= 0
        {
            return Err("session timeout bounds are inconsistent".into());
        }
        Ok(())
    }
}

/// Milliseconds since the Unix epoch (wall clock; only for timestamps handed to clients).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `StrBytes` from a `&str`.
pub(crate) fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Maps a node error to a Kafka error code for data-path requests.
pub(crate) fn node_code(e: &NodeError) -> i16 {
    match e {
        NodeError::NoSuchPool(_) | NodeError::NotFound => code::UNKNOWN_TOPIC_OR_PARTITION,
        NodeError::Invalid(_) => code::INVALID_RECORD,
        NodeError::Overloaded(_) => code::REQUEST_TIMED_OUT,
        NodeError::Storage(_) => code::KAFKA_STORAGE_ERROR,
        NodeError::ShuttingDown => code::NOT_LEADER_OR_FOLLOWER,
        NodeError::NotYetStable { .. } => code::REQUEST_TIMED_OUT,
        NodeError::PoolExists(_) => code::TOPIC_ALREADY_EXISTS,
        NodeError::Conflict { .. } | NodeError::WrongMode(_) => code::UNKNOWN_SERVER_ERROR,
        NodeError::NotOwner(_) => code::POLICY_VIOLATION,
    }
}

/// The code a group coordinator answers when writing its own state (group metadata,
/// committed offsets) failed with `e`: Kafka's mapping of an append error to a coordinator
/// error (`appendGroupMetadataErrorToResponseError`; offset commits use the same one, except
/// that a too-large record is INVALID_COMMIT_OFFSET_SIZE, `commit` = true). A failed log
/// (KAFKA_STORAGE_ERROR) and a node shutting down (NOT_LEADER_OR_FOLLOWER) become
/// NOT_COORDINATOR; a missing internal pool or a timeout COORDINATOR_NOT_AVAILABLE. Both
/// make the client find the coordinator again and retry.
pub(crate) fn coordinator_code(e: &NodeError, commit: bool) -> i16 {
    match e {
        NodeError::Storage(_) | NodeError::ShuttingDown => code::NOT_COORDINATOR,
        NodeError::NoSuchPool(_)
        | NodeError::NotFound
        | NodeError::Overloaded(_)
        | NodeError::NotYetStable { .. } => code::COORDINATOR_NOT_AVAILABLE,
        NodeError::Invalid(_) if commit => code::INVALID_COMMIT_OFFSET_SIZE,
        _ => code::UNKNOWN_SERVER_ERROR,
    }
}

/// What [`KafkaBroker::handle_staged`] did with a request.
pub enum Handled {
    /// Answered: the response frame, or `None` when none is sent.
    Done(Option<BytesMut>),
    /// Applied (a Produce: its place in every partition is fixed and later requests may
    /// start); the future waits for durability and yields the response frame.
    Applied(Pin<Box<dyn Future<Output = Result<Option<BytesMut>, KafkaError>> + Send>>),
}

impl std::fmt::Debug for Handled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Handled::Done(r) => f.debug_tuple("Done").field(r).finish(),
            Handled::Applied(_) => f.write_str("Applied(..)"),
        }
    }
}

/// The Kafka face of one node.
pub struct KafkaBroker<N: Node> {
    pub(crate) node: Arc<N>,
    pub(crate) config: KafkaConfig,
    /// Topic records read so far (the store is the truth; this avoids a JSON parse per request).
    pub(crate) topics: RwLock<BTreeMap<String, TopicMeta>>,
    /// Idempotent-producer state per partition key.
    pub(crate) producers: Mutex<HashMap<String, Arc<tokio::sync::Mutex<PartitionProducers>>>>,
    /// The consumer group coordinator.
    pub(crate) groups: Coordinator,
    /// Set once the internal pools exist (and stored groups are restored).
    internal_ready: tokio::sync::OnceCell<()>,
    /// Held while group records are taken and written, so they land in the order taken.
    group_writes: tokio::sync::Mutex<()>,
}

impl<N: Node> std::fmt::Debug for KafkaBroker<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaBroker")
            .field("config", &self.config)
            .finish()
    }
}

impl<N: Node> KafkaBroker<N> {
    /// Creates the face. Its internal pools are created on the first Kafka request (so a node
    /// that never sees a Kafka client has none).
    pub async fn new(node: Arc<N>, config: KafkaConfig) -> Result<Self, NodeError> {
        config.validate().map_err(NodeError::Invalid)?;
        let groups = Coordinator::new(
            config.groups_max,
            config.group_members_max,
            config.session_timeout_ms_min,
            config.session_timeout_ms_max,
        );
        Ok(KafkaBroker {
            node,
            config,
            topics: RwLock::new(BTreeMap::new()),
            producers: Mutex::new(HashMap::new()),
            groups,
            internal_ready: tokio::sync::OnceCell::new(),
            group_writes: tokio::sync::Mutex::new(()),
        })
    }

    /// Creates the internal pools once (idempotent on the store side too).
    async fn ensure_internal_pools(&self) -> Result<(), NodeError> {
        self.internal_ready
            .get_or_try_init(|| async {
                for name in [TOPICS_POOL, OFFSETS_POOL, PRODUCER_IDS_POOL, GROUPS_POOL] {
                    let pool = PoolConfig {
                        name: name.to_string(),
                        mode: Mode::Latest,
                        durable: true,
                        retention_ms: None,
                        ..PoolConfig::default()
                    };
                    match self.node.create_pool(pool).await {
                        Ok(()) | Err(NodeError::PoolExists(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                self.restore_groups();
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Loads the consumer groups stored in [`GROUPS_POOL`] into the coordinator (after a
    /// restart). A record that does not parse is left out (its group starts over, as before
    /// groups were stored).
    fn restore_groups(&self) {
        let mut records = Vec::new();
        for key in self.node.keys(GROUPS_POOL, "").unwrap_or_default() {
            let Ok(e) = self.node.get(GROUPS_POOL, &key) else {
                continue;
            };
            if let Ok(r) = serde_json::from_slice::<GroupRecord>(&e.value) {
                records.push((super::offsets::unescape_group(&key), r));
            }
        }
        self.groups.restore(records, std::time::Instant::now());
    }

    /// Writes every group whose persistent state changed (membership, generation, leader,
    /// assignment) to [`GROUPS_POOL`]; returns once they are durable. Handlers call it before
    /// answering a request that may have changed a group, so what a client is told survives
    /// a restart. Err if a write failed (that group is written again by the next call).
    pub(crate) async fn persist_groups(&self) -> Result<(), NodeError> {
        let _order = self.group_writes.lock().await;
        let mut result = Ok(());
        for (group, record) in self.groups.take_changed() {
            let key = super::offsets::escape_group(&group);
            let put = match &record {
                Some(r) => PutRequest::new(
                    GROUPS_POOL,
                    key,
                    Bytes::from(serde_json::to_vec(r).unwrap_or_default()),
                ),
                None => {
                    let mut put = PutRequest::new(GROUPS_POOL, key, Bytes::new());
                    put.tombstone = true;
                    put
                }
            };
            if let Err(e) = self.node.put(put).await {
                if !matches!(e, NodeError::NotFound) || record.is_some() {
                    self.groups.store_failed(&group, std::time::Instant::now());
                    result = Err(e);
                }
            }
        }
        result
    }

    /// The face's configuration.
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// The topic record of `name`, if the topic exists (pool and record).
    pub(crate) fn topic(&self, name: &str) -> Option<TopicMeta> {
        if let Ok(cache) = self.topics.read() {
            if let Some(m) = cache.get(name) {
                return Some(m.clone());
            }
        }
        self.node.pool(name)?;
        let entry = self.node.get(TOPICS_POOL, name).ok()?;
        let meta = TopicMeta::from_bytes(&entry.value)?;
        if let Ok(mut cache) = self.topics.write() {
            cache.insert(name.to_string(), meta.clone());
        }
        Some(meta)
    }

    /// Every topic, sorted by name.
    pub(crate) fn topic_names(&self) -> Vec<String> {
        self.node
            .keys(TOPICS_POOL, "")
            .unwrap_or_default()
            .into_iter()
            .filter(|n| self.topic(n).is_some())
            .collect()
    }

    /// Forgets the cached record of `name` (after create, alter, delete).
    pub(crate) fn forget_topic(&self, name: &str) {
        if let Ok(mut cache) = self.topics.write() {
            cache.remove(name);
        }
    }

    /// Writes a topic record (create, alter).
    pub(crate) async fn store_topic(&self, name: &str, meta: &TopicMeta) -> Result<(), NodeError> {
        self.node
            .put(PutRequest::new(TOPICS_POOL, name, meta.to_bytes()))
            .await?;
        self.forget_topic(name);
        Ok(())
    }

    /// Periodic work: group session and rebalance timeouts. The server calls it every
    /// few hundred milliseconds.
    pub fn tick(&self, now: std::time::Instant) {
        self.groups.tick(now);
    }

    /// Serves one request frame body (without the length prefix). `client_host` is the peer
    /// address (reported by DescribeGroups).
    pub async fn handle(
        &self,
        body: Bytes,
        client_host: &str,
    ) -> Result<Option<BytesMut>, KafkaError> {
        match self.handle_staged(body, client_host).await? {
            Handled::Done(r) => Ok(r),
            Handled::Applied(rest) => rest.await,
        }
    }

    /// [`KafkaBroker::handle`] in two steps: a Produce returns [`Handled::Applied`] as soon as
    /// its batches are applied, with the wait for their fsync and the response still to come;
    /// every other request is answered in full ([`Handled::Done`]).
    pub async fn handle_staged(
        &self,
        body: Bytes,
        client_host: &str,
    ) -> Result<Handled, KafkaError> {
        let done = |r: Result<Option<BytesMut>, KafkaError>| r.map(Handled::Done);
        if body.len() < super::frame::REQUEST_BYTES_MIN {
            return Err(KafkaError::Malformed {
                api_key: -1,
                api_version: -1,
                reason: "request shorter than its fixed header".into(),
            });
        }
        let api_key = i16::from_be_bytes([body[0], body[1]]);
        let api_version = i16::from_be_bytes([body[2], body[3]]);
        let correlation_id = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
        let key = ApiKey::try_from(api_key).map_err(|_| KafkaError::UnsupportedApi(api_key))?;
        if versions::served(key).is_none() {
            return Err(KafkaError::UnsupportedApi(api_key));
        }
        if key == ApiKey::ApiVersions && !versions::decodes(key, api_version) {
            return Ok(Handled::Done(Some(api_versions_fallback(correlation_id))));
        }
        if key == ApiKey::Produce && (0..versions::PRODUCE_DECODED_MIN).contains(&api_version) {
            return done(super::produce::legacy_produce_unsupported(
                body,
                api_version,
                correlation_id,
            ));
        }
        if !versions::decodes(key, api_version) {
            return Err(KafkaError::UnsupportedVersion {
                api_key,
                api_version,
            });
        }
        if key != ApiKey::ApiVersions {
            self.ensure_internal_pools()
                .await
                .map_err(KafkaError::Node)?;
        }
        let malformed = |reason: String| KafkaError::Malformed {
            api_key,
            api_version,
            reason,
        };
        let mut buf = body;
        let header = RequestHeader::decode(&mut buf, key.request_header_version(api_version))
            .map_err(|e| malformed(format!("header: {e}")))?;
        let client_id = header
            .client_id
            .as_ref()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default();
        let v = api_version;

        macro_rules! req {
            ($t:ty) => {
                <$t>::decode(&mut buf, v).map_err(|e| malformed(format!("body: {e}")))?
            };
        }
        macro_rules! respond {
            ($resp:expr) => {
                Ok(Handled::Done(Some(encode_response(
                    key,
                    v,
                    correlation_id,
                    &$resp,
                )?)))
            };
        }

        match key {
            ApiKey::ApiVersions => {
                let _r = req!(ApiVersionsRequest);
                respond!(api_versions_response())
            }
            ApiKey::Metadata => {
                let r = req!(MetadataRequest);
                respond!(self.metadata(r, v).await)
            }
            ApiKey::DescribeCluster => {
                let r = req!(DescribeClusterRequest);
                respond!(self.describe_cluster(r))
            }
            ApiKey::FindCoordinator => {
                let r = req!(FindCoordinatorRequest);
                respond!(self.find_coordinator(r, v))
            }
            ApiKey::Produce => {
                let r = req!(ProduceRequest);
                let pending = self.produce(r, v).await;
                Ok(Handled::Applied(Box::pin(async move {
                    match pending.await {
                        Some(resp) => encode_response(key, v, correlation_id, &resp).map(Some),
                        None => Ok(None),
                    }
                })))
            }
            ApiKey::Fetch => {
                let r = req!(FetchRequest);
                respond!(self.fetch(r, v).await)
            }
            ApiKey::ListOffsets => {
                let r = req!(ListOffsetsRequest);
                respond!(self.list_offsets(r, v).await)
            }
            ApiKey::InitProducerId => {
                let r = req!(InitProducerIdRequest);
                respond!(self.init_producer_id(r).await)
            }
            ApiKey::JoinGroup => {
                let r = req!(JoinGroupRequest);
                respond!(self.join_group(r, v, &client_id, client_host).await)
            }
            ApiKey::SyncGroup => {
                let r = req!(SyncGroupRequest);
                respond!(self.sync_group(r).await)
            }
            ApiKey::Heartbeat => {
                let r = req!(HeartbeatRequest);
                respond!(self.heartbeat(r))
            }
            ApiKey::LeaveGroup => {
                let r = req!(LeaveGroupRequest);
                respond!(self.leave_group(r, v).await)
            }
            ApiKey::ListGroups => {
                let r = req!(ListGroupsRequest);
                respond!(self.list_groups(r))
            }
            ApiKey::DescribeGroups => {
                let r = req!(DescribeGroupsRequest);
                respond!(self.describe_groups(r))
            }
            ApiKey::DeleteGroups => {
                let r = req!(DeleteGroupsRequest);
                respond!(self.delete_groups(r).await)
            }
            ApiKey::OffsetCommit => {
                let r = req!(OffsetCommitRequest);
                respond!(self.offset_commit(r).await)
            }
            ApiKey::OffsetFetch => {
                let r = req!(OffsetFetchRequest);
                respond!(self.offset_fetch(r, v))
            }
            ApiKey::CreateTopics => {
                let r = req!(CreateTopicsRequest);
                respond!(self.create_topics(r, v).await)
            }
            ApiKey::DeleteTopics => {
                let r = req!(DeleteTopicsRequest);
                respond!(self.delete_topics(r, v).await)
            }
            ApiKey::CreatePartitions => {
                let r = req!(CreatePartitionsRequest);
                respond!(self.create_partitions(r).await)
            }
            ApiKey::DeleteRecords => {
                let r = req!(DeleteRecordsRequest);
                respond!(self.delete_records(r).await)
            }
            ApiKey::DescribeConfigs => {
                let r = req!(DescribeConfigsRequest);
                respond!(self.describe_configs(r, v))
            }
            ApiKey::AlterConfigs => {
                let r = req!(AlterConfigsRequest);
                respond!(self.alter_configs(r).await)
            }
            ApiKey::IncrementalAlterConfigs => {
                let r = req!(IncrementalAlterConfigsRequest);
                respond!(self.incremental_alter_configs(r).await)
            }
            _ => Err(KafkaError::UnsupportedApi(api_key)),
        }
    }
}

/// Encodes a response frame: length prefix, response header, body.
pub(crate) fn encode_response<T: Encodable>(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &T,
) -> Result<BytesMut, KafkaError> {
    let mut out = BytesMut::with_capacity(64);
    out.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header
        .encode(&mut out, key.response_header_version(version))
        .map_err(|e| KafkaError::Encode(e.to_string()))?;
    body.encode(&mut out, version)
        .map_err(|e| KafkaError::Encode(e.to_string()))?;
    let len = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// The ApiVersions response listing every served range.
pub(crate) fn api_versions_response() -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(
        SERVED
            .iter()
            .map(|s| {
                ApiVersion::default()
                    .with_api_key(s.key as i16)
                    .with_min_version(s.min)
                    .with_max_version(s.max)
            })
            .collect(),
    )
}

/// The answer to an ApiVersions request at a version this broker does not know: a v0-format
/// response with UNSUPPORTED_VERSION and the served ranges, so the client retries lower.
pub(crate) fn api_versions_fallback(correlation_id: i32) -> BytesMut {
    let resp = api_versions_response().with_error_code(code::UNSUPPORTED_VERSION);
    // v0 encoding of this struct cannot fail (plain ints and a short array).
    encode_response(ApiKey::ApiVersions, 0, correlation_id, &resp)
        .unwrap_or_else(|_| BytesMut::new())
}

/// Used by handlers: a duration from a client-supplied millisecond count, clamped.
pub(crate) fn clamp_ms(ms: i32, max_ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms.max(0) as u32).min(u64::from(max_ms)))
}
