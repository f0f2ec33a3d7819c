//! Admin requests: CreateTopics, DeleteTopics, CreatePartitions, DeleteRecords (= truncate),
//! DescribeConfigs (every config with its default and source), IncrementalAlterConfigs.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::*;

use super::broker::{code, node_code, sb, KafkaBroker};
use super::topics::{
    config_def, partition_key, topic_id, valid_topic_name, validate_config, TopicMeta,
    PARTITIONS_MAX, TOPICS_POOL, TOPIC_CONFIGS,
};
use crate::node::{Node, NodeError, PutRequest};

/// DescribeConfigs resource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Config sources.
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;
/// Configs that choose the pool's mode or durability: fixed at creation (the store has no
/// "change a pool's mode" operation).
const FIXED_AT_CREATION: &[&str] = &["squall.mode", "squall.durable"];

type Failure = (i16, String);

impl<N: Node> KafkaBroker<N> {
    /// Creates a topic: validates, creates the pool, then writes the topic record.
    pub(crate) async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicMeta, Failure> {
        if !valid_topic_name(name) {
            return Err((
                code::INVALID_TOPIC_EXCEPTION,
                format!("invalid topic name {name:?}"),
            ));
        }
        if self.topic(name).is_some() {
            return Err((
                code::TOPIC_ALREADY_EXISTS,
                format!("topic {name} already exists"),
            ));
        }
        let partitions = if partitions == -1 {
            self.config.default_partitions as i32
        } else {
            partitions
        };
        if partitions < 1 || partitions as u32 > PARTITIONS_MAX {
            return Err((
                code::INVALID_PARTITIONS,
                format!("partitions must be in 1..={PARTITIONS_MAX}"),
            ));
        }
        for (k, v) in &configs {
            validate_config(k, v).map_err(|m| (code::INVALID_CONFIG, m))?;
        }
        let mut configs = configs;
        if !self.config.durable_default && !configs.contains_key("squall.durable") {
            configs.insert("squall.durable".into(), "false".into());
        }
        let meta = TopicMeta {
            partitions: partitions as u32,
            configs,
        };
        if validate_only {
            return Ok(meta);
        }
        match self.node.create_pool(meta.pool_config(name)).await {
            Ok(()) => {}
            Err(NodeError::PoolExists(_)) => {
                return Err((
                    code::TOPIC_ALREADY_EXISTS,
                    format!("a pool named {name} already exists"),
                ));
            }
            Err(e) => return Err((node_code(&e), e.to_string())),
        }
        self.store_topic(name, &meta)
            .await
            .map_err(|e| (node_code(&e), e.to_string()))?;
        Ok(meta)
    }

    fn config_entries(meta: &TopicMeta) -> Vec<(&'static str, String, i8)> {
        TOPIC_CONFIGS
            .iter()
            .map(|d| match meta.configs.get(d.name) {
                Some(v) => (d.name, v.clone(), SOURCE_DYNAMIC_TOPIC),
                None => (d.name, d.default.to_string(), SOURCE_DEFAULT),
            })
            .collect()
    }

    pub(crate) async fn create_topics(
        &self,
        req: CreateTopicsRequest,
        version: i16,
    ) -> CreateTopicsResponse {
        let mut results = Vec::with_capacity(req.topics.len());
        for t in req.topics {
            let name = t.name.0.as_str().to_string();
            let mut configs = BTreeMap::new();
            for c in &t.configs {
                if let Some(v) = &c.value {
                    configs.insert(c.name.as_str().to_string(), v.as_str().to_string());
                }
            }
            let r = CreatableTopicResult::default().with_name(t.name.clone());
            let outcome = if t.replication_factor > 1 {
                Err((
                    code::INVALID_REPLICATION_FACTOR,
                    "replication factor above the number of brokers (1)".to_string(),
                ))
            } else if t.replication_factor == 0 {
                Err((
                    code::INVALID_REPLICATION_FACTOR,
                    "replication factor must be -1 or at least 1".to_string(),
                ))
            } else {
                let partitions = if t.assignments.is_empty() {
                    t.num_partitions
                } else {
                    t.assignments.len() as i32
                };
                self.create_topic(&name, partitions, configs, req.validate_only)
                    .await
            };
            results.push(match outcome {
                Ok(meta) => {
                    let r = r
                        .with_topic_id(topic_id(&name))
                        .with_num_partitions(meta.partitions as i32)
                        .with_replication_factor(1);
                    if version >= 5 {
                        r.with_configs(Some(
                            Self::config_entries(&meta)
                                .into_iter()
                                .map(|(n, v, s)| {
                                    CreatableTopicConfigs::default()
                                        .with_name(sb(n))
                                        .with_value(Some(sb(&v)))
                                        .with_config_source(s)
                                })
                                .collect(),
                        ))
                    } else {
                        r
                    }
                }
                Err((c, m)) => r
                    .with_error_code(c)
                    .with_error_message(Some(sb(&m)))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1),
            });
        }
        CreateTopicsResponse::default().with_topics(results)
    }

    pub(crate) async fn delete_topics(
        &self,
        req: DeleteTopicsRequest,
        version: i16,
    ) -> DeleteTopicsResponse {
        let targets: Vec<(Option<String>, uuid::Uuid)> = if version >= 6 {
            req.topics
                .iter()
                .map(|t| {
                    (
                        t.name.as_ref().map(|n| n.0.as_str().to_string()),
                        t.topic_id,
                    )
                })
                .collect()
        } else {
            req.topic_names
                .iter()
                .map(|n| (Some(n.0.as_str().to_string()), uuid::Uuid::nil()))
                .collect()
        };
        let mut out = Vec::with_capacity(targets.len());
        for (name, id) in targets {
            let name = name.or_else(|| self.topic_names().into_iter().find(|n| topic_id(n) == id));
            let r = DeletableTopicResult::default().with_topic_id(id);
            let Some(name) = name else {
                out.push(r.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION));
                continue;
            };
            let r = r.with_name(Some(TopicName(sb(&name))));
            if self.topic(&name).is_none() {
                out.push(r.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION));
                continue;
            }
            let mut tomb = PutRequest::new(TOPICS_POOL, name.clone(), Bytes::new());
            tomb.tombstone = true;
            let res = match self.node.put(tomb).await {
                Ok(_) => self.node.delete_pool(&name).await,
                Err(e) => Err(e),
            };
            self.forget_topic(&name);
            if let Ok(mut p) = self.producers.lock() {
                let prefix = format!("{name}/");
                p.retain(|k, _| !k.starts_with(&prefix));
            }
            out.push(match res {
                Ok(()) | Err(NodeError::NoSuchPool(_)) => r,
                Err(e) => r
                    .with_error_code(node_code(&e))
                    .with_error_message(Some(sb(&e.to_string()))),
            });
        }
        DeleteTopicsResponse::default().with_responses(out)
    }

    pub(crate) async fn create_partitions(
        &self,
        req: CreatePartitionsRequest,
    ) -> CreatePartitionsResponse {
        let mut out = Vec::with_capacity(req.topics.len());
        for t in req.topics {
            let name = t.name.0.as_str().to_string();
            let r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            let res: Result<(), Failure> = match self.topic(&name) {
                None => Err((code::UNKNOWN_TOPIC_OR_PARTITION, "unknown topic".into())),
                Some(m) if t.count <= m.partitions as i32 => Err((
                    code::INVALID_PARTITIONS,
                    format!(
                        "topic has {} partitions; the new count must be larger",
                        m.partitions
                    ),
                )),
                Some(_) if t.count as u32 > PARTITIONS_MAX => Err((
                    code::INVALID_PARTITIONS,
                    format!("at most {PARTITIONS_MAX} partitions"),
                )),
                Some(_) if req.validate_only => Ok(()),
                Some(mut m) => {
                    m.partitions = t.count as u32;
                    self.store_topic(&name, &m)
                        .await
                        .map_err(|e| (node_code(&e), e.to_string()))
                }
            };
            out.push(match res {
                Ok(()) => r,
                Err((c, m)) => r.with_error_code(c).with_error_message(Some(sb(&m))),
            });
        }
        CreatePartitionsResponse::default().with_results(out)
    }

    pub(crate) async fn delete_records(&self, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
        let mut topics = Vec::with_capacity(req.topics.len());
        for t in req.topics {
            let name = t.name.0.as_str().to_string();
            let meta = self.topic(&name);
            let mut parts = Vec::with_capacity(t.partitions.len());
            for p in t.partitions {
                let r =
                    DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
                let Some(m) = &meta else {
                    parts.push(
                        r.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION)
                            .with_low_watermark(-1),
                    );
                    continue;
                };
                if p.partition_index < 0 || p.partition_index as u32 >= m.partitions {
                    parts.push(
                        r.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION)
                            .with_low_watermark(-1),
                    );
                    continue;
                }
                let key = partition_key(&name, p.partition_index);
                let bounds = self.node.bounds(&name, &key).unwrap_or_default();
                let before = if p.offset == -1 {
                    bounds.next as i64
                } else {
                    p.offset
                };
                if before < 0 || before as u64 > bounds.next {
                    parts.push(
                        r.with_error_code(code::OFFSET_OUT_OF_RANGE)
                            .with_low_watermark(-1),
                    );
                    continue;
                }
                if (before as u64) <= bounds.start {
                    parts.push(r.with_low_watermark(bounds.start as i64));
                    continue;
                }
                parts.push(match self.node.truncate(&name, &key, before as u64).await {
                    Ok(b) => r.with_low_watermark(b.start.max(before as u64) as i64),
                    Err(e) => r.with_error_code(node_code(&e)).with_low_watermark(-1),
                });
            }
            topics.push(
                DeleteRecordsTopicResult::default()
                    .with_name(t.name)
                    .with_partitions(parts),
            );
        }
        DeleteRecordsResponse::default().with_topics(topics)
    }

    pub(crate) fn describe_configs(
        &self,
        req: DescribeConfigsRequest,
        version: i16,
    ) -> DescribeConfigsResponse {
        let results = req
            .resources
            .into_iter()
            .map(|res| {
                let base = DescribeConfigsResult::default()
                    .with_resource_type(res.resource_type)
                    .with_resource_name(res.resource_name.clone());
                let wanted = |n: &str| {
                    res.configuration_keys
                        .as_ref()
                        .is_none_or(|keys| keys.is_empty() || keys.iter().any(|k| k.as_str() == n))
                };
                let entry = |name: &str, value: String, source: i8, kind: i8, read_only: bool| {
                    let mut e = DescribeConfigsResourceResult::default()
                        .with_name(sb(name))
                        .with_value(Some(sb(&value)))
                        .with_read_only(read_only)
                        .with_config_source(source);
                    if version >= 3 {
                        e = e.with_config_type(kind);
                    }
                    if req.include_synonyms {
                        e = e.with_synonyms(vec![DescribeConfigsSynonym::default()
                            .with_name(sb(name))
                            .with_value(Some(sb(&value)))
                            .with_source(source)]);
                    }
                    e
                };
                match res.resource_type {
                    RESOURCE_TOPIC => match self.topic(res.resource_name.as_str()) {
                        None => base
                            .with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION)
                            .with_error_message(Some(sb("unknown topic"))),
                        Some(meta) => base.with_configs(
                            Self::config_entries(&meta)
                                .into_iter()
                                .filter(|(n, _, _)| wanted(n))
                                .map(|(n, v, s)| {
                                    let kind = config_def(n).map(|d| d.kind as i8).unwrap_or(2);
                                    entry(n, v, s, kind, false)
                                })
                                .collect(),
                        ),
                    },
                    RESOURCE_BROKER => {
                        let c = &self.config;
                        let configs = [
                            (
                                "auto.create.topics.enable",
                                c.auto_create_topics.to_string(),
                                1i8,
                            ),
                            ("broker.id", c.node_id.to_string(), 3),
                            (
                                "group.max.session.timeout.ms",
                                c.session_timeout_ms_max.to_string(),
                                3,
                            ),
                            (
                                "group.min.session.timeout.ms",
                                c.session_timeout_ms_min.to_string(),
                                3,
                            ),
                            ("num.partitions", c.default_partitions.to_string(), 3),
                            (
                                "offset.metadata.max.bytes",
                                c.offset_metadata_bytes_max.to_string(),
                                3,
                            ),
                            (
                                "socket.request.max.bytes",
                                c.request_bytes_max.to_string(),
                                3,
                            ),
                        ];
                        base.with_configs(
                            configs
                                .into_iter()
                                .filter(|(n, _, _)| wanted(n))
                                .map(|(n, v, k)| entry(n, v, SOURCE_STATIC_BROKER, k, true))
                                .collect(),
                        )
                    }
                    _ => base
                        .with_error_code(code::INVALID_REQUEST)
                        .with_error_message(Some(sb(
                            "only topic and broker resources are described",
                        ))),
                }
            })
            .collect();
        DescribeConfigsResponse::default().with_results(results)
    }

    pub(crate) async fn incremental_alter_configs(
        &self,
        req: IncrementalAlterConfigsRequest,
    ) -> IncrementalAlterConfigsResponse {
        let mut out = Vec::with_capacity(req.resources.len());
        for res in req.resources {
            let base = AlterConfigsResourceResponse::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            if res.resource_type != RESOURCE_TOPIC {
                out.push(
                    base.with_error_code(code::INVALID_REQUEST)
                        .with_error_message(Some(sb("only topic configs can be altered"))),
                );
                continue;
            }
            let name = res.resource_name.as_str().to_string();
            let Some(mut meta) = self.topic(&name) else {
                out.push(
                    base.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION)
                        .with_error_message(Some(sb("unknown topic"))),
                );
                continue;
            };
            let before = meta.clone();
            let mut failure: Option<Failure> = None;
            for c in &res.configs {
                let key = c.name.as_str().to_string();
                let value = c.value.as_ref().map(|v| v.as_str().to_string());
                let current = meta.config(&key).map(str::to_string).unwrap_or_default();
                let next: Option<String> = match (c.config_operation, value) {
                    (0, Some(v)) => Some(v),
                    (1, _) => None,
                    (2, Some(v)) if key == "cleanup.policy" => {
                        let mut items: Vec<String> =
                            current.split(',').map(|s| s.trim().to_string()).collect();
                        if !items.contains(&v) {
                            items.push(v);
                        }
                        Some(items.join(","))
                    }
                    (3, Some(v)) if key == "cleanup.policy" => Some(
                        current
                            .split(',')
                            .map(str::trim)
                            .filter(|s| *s != v)
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                    _ => {
                        failure = Some((
                            code::INVALID_CONFIG,
                            format!("operation {} not valid for {key}", c.config_operation),
                        ));
                        break;
                    }
                };
                if let Some(v) = &next {
                    if let Err(m) = validate_config(&key, v) {
                        failure = Some((code::INVALID_CONFIG, m));
                        break;
                    }
                } else if config_def(&key).is_none() {
                    failure = Some((code::INVALID_CONFIG, format!("unknown topic config {key}")));
                    break;
                }
                match next {
                    Some(v) => meta.configs.insert(key.clone(), v),
                    None => meta.configs.remove(&key),
                };
            }
            if failure.is_none() {
                for k in FIXED_AT_CREATION {
                    if before.config(k) != meta.config(k) {
                        failure = Some((
                            code::INVALID_CONFIG,
                            format!("{k} is fixed when the topic is created in Squall"),
                        ));
                    }
                }
            }
            let result = match failure {
                Some(f) => Err(f),
                None if req.validate_only => Ok(()),
                None => self.apply_topic_configs(&name, &meta).await,
            };
            out.push(match result {
                Ok(()) => base,
                Err((c, m)) => base.with_error_code(c).with_error_message(Some(sb(&m))),
            });
        }
        IncrementalAlterConfigsResponse::default().with_responses(out)
    }
}

impl<N: Node> KafkaBroker<N> {
    /// Makes altered topic configs take effect: the pool first (retention, max.message.bytes,
    /// cleanup.policy — compaction then applies to later writes), then the topic record
    /// DescribeConfigs reads, so a refused pool change leaves the described configs as they
    /// were.
    async fn apply_topic_configs(&self, name: &str, meta: &TopicMeta) -> Result<(), Failure> {
        let want = meta.pool_config(name);
        if self.node.pool(name).as_ref() != Some(&want) {
            self.node.alter_pool(want).await.map_err(|e| match e {
                NodeError::Invalid(m) => (code::INVALID_CONFIG, m),
                e => (node_code(&e), e.to_string()),
            })?;
        }
        self.store_topic(name, meta)
            .await
            .map_err(|e| (node_code(&e), e.to_string()))
    }

    /// AlterConfigs (the non-incremental form librdkafka's admin API sends): the given set
    /// replaces every explicitly set config of the topic. Served by translating it into the
    /// incremental form (SET for each given config, DELETE for the others).
    pub(crate) async fn alter_configs(&self, req: AlterConfigsRequest) -> AlterConfigsResponse {
        use incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
        let resources = req
            .resources
            .iter()
            .map(|r| {
                let given: BTreeMap<String, Option<StrBytesAlias>> = r
                    .configs
                    .iter()
                    .map(|c| (c.name.as_str().to_string(), c.value.clone()))
                    .collect();
                let mut ops: Vec<AlterableConfig> = Vec::new();
                if r.resource_type == RESOURCE_TOPIC {
                    if let Some(meta) = self.topic(r.resource_name.as_str()) {
                        for k in meta.configs.keys().filter(|k| !given.contains_key(*k)) {
                            ops.push(
                                AlterableConfig::default()
                                    .with_name(sb(k))
                                    .with_config_operation(1),
                            );
                        }
                    }
                }
                for (k, v) in given {
                    let op = if v.is_some() { 0 } else { 1 };
                    ops.push(
                        AlterableConfig::default()
                            .with_name(sb(&k))
                            .with_config_operation(op)
                            .with_value(v),
                    );
                }
                AlterConfigsResource::default()
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name.clone())
                    .with_configs(ops)
            })
            .collect();
        let inc = self
            .incremental_alter_configs(
                IncrementalAlterConfigsRequest::default()
                    .with_resources(resources)
                    .with_validate_only(req.validate_only),
            )
            .await;
        AlterConfigsResponse::default().with_responses(
            inc.responses
                .into_iter()
                .map(|r| {
                    alter_configs_response::AlterConfigsResourceResponse::default()
                        .with_error_code(r.error_code)
                        .with_error_message(r.error_message)
                        .with_resource_type(r.resource_type)
                        .with_resource_name(r.resource_name)
                })
                .collect(),
        )
    }
}

type StrBytesAlias = kafka_protocol::protocol::StrBytes;
