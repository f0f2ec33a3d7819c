//! OffsetCommit and OffsetFetch: committed offsets as `latest` keys of the internal pool
//! [`OFFSETS_POOL`], key `group/topic/partition` (the group id escaped so it holds no `/`),
//! value JSON `{offset, leader_epoch, metadata}`. The metadata string round-trips.

use std::time::Instant;

use bytes::Bytes;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use serde::{Deserialize, Serialize};

use super::broker::{code, coordinator_code, sb, KafkaBroker};
use super::groups::GROUP_ID_BYTES_MAX;
use super::topics::OFFSETS_POOL;
use crate::node::{Node, NodeError, PutRequest};

/// A committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// The next offset to consume.
    pub offset: i64,
    /// The leader epoch the client saw (−1 if none).
    pub leader_epoch: i32,
    /// Client metadata string.
    pub metadata: Option<String>,
}

/// Escapes `%` and `/` so a group id is one key segment.
pub fn escape_group(g: &str) -> String {
    g.replace('%', "%25").replace('/', "%2F")
}

/// Inverse of [`escape_group`].
pub(crate) fn unescape_group(g: &str) -> String {
    g.replace("%2F", "/").replace("%25", "%")
}

fn offset_key(group: &str, topic: &str, partition: i32) -> String {
    format!("{}/{}/{}", escape_group(group), topic, partition)
}

impl<N: Node> KafkaBroker<N> {
    fn read_committed(&self, group: &str, topic: &str, partition: i32) -> Option<Committed> {
        let e = self
            .node
            .get(OFFSETS_POOL, &offset_key(group, topic, partition))
            .ok()?;
        serde_json::from_slice(&e.value).ok()
    }

    /// Every (topic, partition) with a committed offset for `group`.
    fn committed_partitions(&self, group: &str) -> Vec<(String, i32)> {
        let prefix = format!("{}/", escape_group(group));
        let mut out = Vec::new();
        for k in self.node.keys(OFFSETS_POOL, &prefix).unwrap_or_default() {
            let rest = &k[prefix.len()..];
            if let Some((t, p)) = rest.rsplit_once('/') {
                if let Ok(p) = p.parse::<i32>() {
                    if self.node.get(OFFSETS_POOL, &k).is_ok() {
                        out.push((t.to_string(), p));
                    }
                }
            }
        }
        out
    }

    /// Groups that have at least one committed offset.
    pub(crate) fn committed_groups(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for k in self.node.keys(OFFSETS_POOL, "").unwrap_or_default() {
            if let Some((g, _)) = k.split_once('/') {
                let g = unescape_group(g);
                if out.last() != Some(&g) && self.node.get(OFFSETS_POOL, &k).is_ok() {
                    out.push(g);
                }
            }
        }
        out.dedup();
        out
    }

    /// Deletes every committed offset of `group`: whether there were any, or the error of
    /// the first delete that could not be stored (the others are still tried).
    pub(crate) async fn delete_committed(&self, group: &str) -> Result<bool, NodeError> {
        let parts = self.committed_partitions(group);
        let mut failed = None;
        for (t, p) in &parts {
            let mut put = PutRequest::new(OFFSETS_POOL, offset_key(group, t, *p), Bytes::new());
            put.tombstone = true;
            if let Err(e) = self.node.put(put).await {
                failed.get_or_insert(e);
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(!parts.is_empty()),
        }
    }

    pub(crate) async fn offset_commit(&self, req: OffsetCommitRequest) -> OffsetCommitResponse {
        let group = req.group_id.0.as_str().to_string();
        let group_error = if group.is_empty() || group.len() > GROUP_ID_BYTES_MAX {
            code::INVALID_GROUP_ID
        } else {
            self.groups.check_commit(
                &group,
                req.generation_id_or_member_epoch,
                req.member_id.as_str(),
                Instant::now(),
            )
        };
        let mut topics = Vec::with_capacity(req.topics.len());
        for t in req.topics {
            let name = t.name.0.as_str().to_string();
            let meta = self.topic(&name);
            let mut parts = Vec::with_capacity(t.partitions.len());
            for p in t.partitions {
                let e = if group_error != code::NONE {
                    group_error
                } else if !meta.as_ref().is_some_and(|m| {
                    p.partition_index >= 0 && (p.partition_index as u32) < m.partitions
                }) {
                    code::UNKNOWN_TOPIC_OR_PARTITION
                } else if p
                    .committed_metadata
                    .as_ref()
                    .is_some_and(|m| m.len() > self.config.offset_metadata_bytes_max)
                {
                    code::OFFSET_METADATA_TOO_LARGE
                } else {
                    let c = Committed {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p
                            .committed_metadata
                            .as_ref()
                            .map(|m| m.as_str().to_string()),
                    };
                    let value = Bytes::from(serde_json::to_vec(&c).unwrap_or_default());
                    match self
                        .node
                        .put(PutRequest::new(
                            OFFSETS_POOL,
                            offset_key(&group, &name, p.partition_index),
                            value,
                        ))
                        .await
                    {
                        Ok(_) => code::NONE,
                        Err(e) => coordinator_code(&e, true),
                    }
                };
                parts.push(
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(e),
                );
            }
            topics.push(
                OffsetCommitResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(parts),
            );
        }
        OffsetCommitResponse::default().with_topics(topics)
    }

    /// The partitions to report: those asked, or (null topics) every committed one.
    fn fetch_targets(
        &self,
        group: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
    ) -> Vec<(String, Vec<i32>)> {
        match topics {
            Some(t) => t,
            None => {
                let mut by_topic: std::collections::BTreeMap<String, Vec<i32>> = Default::default();
                for (t, p) in self.committed_partitions(group) {
                    by_topic.entry(t).or_default().push(p);
                }
                by_topic.into_iter().collect()
            }
        }
    }

    fn committed_or_none(&self, group: &str, topic: &str, p: i32) -> (i64, i32, Option<String>) {
        match self.read_committed(group, topic, p) {
            Some(c) => (
                c.offset,
                c.leader_epoch,
                Some(c.metadata.unwrap_or_default()),
            ),
            None => (-1, -1, Some(String::new())),
        }
    }

    pub(crate) fn offset_fetch(
        &self,
        req: OffsetFetchRequest,
        version: i16,
    ) -> OffsetFetchResponse {
        if version >= 8 {
            let groups = req
                .groups
                .into_iter()
                .map(|g| {
                    let name = g.group_id.0.as_str().to_string();
                    let asked = g.topics.map(|ts| {
                        ts.into_iter()
                            .map(|t| (t.name.0.as_str().to_string(), t.partition_indexes))
                            .collect()
                    });
                    let topics = self
                        .fetch_targets(&name, asked)
                        .into_iter()
                        .map(|(t, ps)| {
                            let parts = ps
                                .into_iter()
                                .map(|p| {
                                    let (o, e, m) = self.committed_or_none(&name, &t, p);
                                    OffsetFetchResponsePartitions::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(o)
                                        .with_committed_leader_epoch(e)
                                        .with_metadata(m.map(|m| sb(&m)))
                                })
                                .collect();
                            OffsetFetchResponseTopics::default()
                                .with_name(TopicName(sb(&t)))
                                .with_partitions(parts)
                        })
                        .collect();
                    OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id)
                        .with_topics(topics)
                })
                .collect();
            return OffsetFetchResponse::default().with_groups(groups);
        }
        let name = req.group_id.0.as_str().to_string();
        let asked = req.topics.map(|ts| {
            ts.into_iter()
                .map(|t| (t.name.0.as_str().to_string(), t.partition_indexes))
                .collect()
        });
        let topics = self
            .fetch_targets(&name, asked)
            .into_iter()
            .map(|(t, ps)| {
                let parts = ps
                    .into_iter()
                    .map(|p| {
                        let (o, e, m) = self.committed_or_none(&name, &t, p);
                        OffsetFetchResponsePartition::default()
                            .with_partition_index(p)
                            .with_committed_offset(o)
                            .with_committed_leader_epoch(e)
                            .with_metadata(m.map(|m| sb(&m)))
                    })
                    .collect();
                OffsetFetchResponseTopic::default()
                    .with_name(TopicName(sb(&t)))
                    .with_partitions(parts)
            })
            .collect();
        OffsetFetchResponse::default().with_topics(topics)
    }
}
