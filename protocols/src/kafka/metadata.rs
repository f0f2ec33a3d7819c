//! Metadata, DescribeCluster and FindCoordinator: who serves what (on one node, this node).

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::*;

use super::broker::{code, sb, KafkaBroker};
use super::topics::{topic_id, valid_topic_name, TopicMeta};
use crate::node::Node;

impl<N: Node> KafkaBroker<N> {
    pub(crate) async fn metadata(&self, req: MetadataRequest, version: i16) -> MetadataResponse {
        let node_id = BrokerId(self.config.node_id);
        let broker = MetadataResponseBroker::default()
            .with_node_id(node_id)
            .with_host(sb(&self.config.advertised_host))
            .with_port(i32::from(self.config.advertised_port));
        let allow_create =
            self.config.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
        let wanted: Option<Vec<String>> = match req.topics {
            None => None,
            Some(ref t) if t.is_empty() && version == 0 => None,
            Some(t) => Some(
                t.into_iter()
                    .filter_map(|t| t.name.map(|n| n.0.as_str().to_string()))
                    .collect(),
            ),
        };
        let mut topics = Vec::new();
        match wanted {
            None => {
                for name in self.topic_names() {
                    if let Some(meta) = self.topic(&name) {
                        topics.push(self.topic_metadata(&name, &meta, code::NONE));
                    }
                }
            }
            Some(names) => {
                for name in names {
                    if !valid_topic_name(&name) {
                        topics.push(self.topic_metadata(
                            &name,
                            &TopicMeta::default(),
                            code::INVALID_TOPIC_EXCEPTION,
                        ));
                        continue;
                    }
                    let meta = match self.topic(&name) {
                        Some(m) => Some(m),
                        None if allow_create => {
                            let partitions = self.config.default_partitions;
                            match self
                                .create_topic(&name, partitions as i32, BTreeMap::new(), false)
                                .await
                            {
                                Ok(m) => Some(m),
                                Err(_) => self.topic(&name),
                            }
                        }
                        None => None,
                    };
                    match meta {
                        Some(m) => topics.push(self.topic_metadata(&name, &m, code::NONE)),
                        None => topics.push(self.topic_metadata(
                            &name,
                            &TopicMeta::default(),
                            code::UNKNOWN_TOPIC_OR_PARTITION,
                        )),
                    }
                }
            }
        }
        MetadataResponse::default()
            .with_brokers(vec![broker])
            .with_cluster_id(Some(sb(&self.config.cluster_id)))
            .with_controller_id(node_id)
            .with_topics(topics)
    }

    fn topic_metadata(&self, name: &str, meta: &TopicMeta, error: i16) -> MetadataResponseTopic {
        let node_id = BrokerId(self.config.node_id);
        let partitions = (0..meta.partitions as i32)
            .map(|p| {
                MetadataResponsePartition::default()
                    .with_partition_index(p)
                    .with_leader_id(node_id)
                    .with_leader_epoch(0)
                    .with_replica_nodes(vec![node_id])
                    .with_isr_nodes(vec![node_id])
            })
            .collect();
        MetadataResponseTopic::default()
            .with_error_code(error)
            .with_name(Some(TopicName(sb(name))))
            .with_topic_id(if error == code::NONE {
                topic_id(name)
            } else {
                Default::default()
            })
            .with_partitions(partitions)
    }

    pub(crate) fn describe_cluster(&self, _req: DescribeClusterRequest) -> DescribeClusterResponse {
        DescribeClusterResponse::default()
            .with_cluster_id(sb(&self.config.cluster_id))
            .with_controller_id(BrokerId(self.config.node_id))
            .with_brokers(vec![DescribeClusterBroker::default()
                .with_broker_id(BrokerId(self.config.node_id))
                .with_host(sb(&self.config.advertised_host))
                .with_port(i32::from(self.config.advertised_port))])
    }

    pub(crate) fn find_coordinator(
        &self,
        req: FindCoordinatorRequest,
        version: i16,
    ) -> FindCoordinatorResponse {
        // key_type 0 = consumer group, 1 = transaction (not served yet: a clear, fatal error).
        let answer = |key: &str| -> (i16, Option<&'static str>) {
            if req.key_type == 1 {
                (
                    code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                    Some("transactions are not supported by Squall yet"),
                )
            } else if key.is_empty() {
                (code::INVALID_GROUP_ID, Some("empty group id"))
            } else {
                (code::NONE, None)
            }
        };
        let host = sb(&self.config.advertised_host);
        let port = i32::from(self.config.advertised_port);
        let node_id = BrokerId(self.config.node_id);
        if version >= 4 {
            let coordinators = req
                .coordinator_keys
                .iter()
                .map(|k| {
                    let (err, msg) = answer(k.as_str());
                    Coordinator::default()
                        .with_key(k.clone())
                        .with_node_id(if err == 0 { node_id } else { BrokerId(-1) })
                        .with_host(if err == 0 { host.clone() } else { sb("") })
                        .with_port(if err == 0 { port } else { -1 })
                        .with_error_code(err)
                        .with_error_message(msg.map(sb))
                })
                .collect();
            return FindCoordinatorResponse::default().with_coordinators(coordinators);
        }
        let (err, msg) = answer(req.key.as_str());
        FindCoordinatorResponse::default()
            .with_error_code(err)
            .with_error_message(msg.map(sb))
            .with_node_id(if err == 0 { node_id } else { BrokerId(-1) })
            .with_host(if err == 0 { host } else { sb("") })
            .with_port(if err == 0 { port } else { -1 })
    }
}
