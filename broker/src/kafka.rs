//! The Kafka face in `squall serve`: its `[kafka]` config section and its start-up.
//!
//! `squall serve` listens for Kafka clients on `--kafka-listen` (default 127.0.0.1:9092) and
//! tells clients to connect to `--kafka-advertised HOST:PORT` (default: the bound address, so a
//! listener on port 0 advertises the port it got).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use squall_protocols::kafka::{self, KafkaBroker, KafkaConfig};
use squall_protocols::Node;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The `[kafka]` section of `squall.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSection {
    /// Whether the Kafka face runs.
    pub enabled: bool,
    /// Where it listens.
    pub listen: SocketAddr,
    /// `HOST:PORT` clients are told to use (default: the bound address).
    pub advertised: Option<String>,
    /// Broker id reported to clients.
    pub node_id: i32,
    /// `auto.create.topics.enable`.
    pub auto_create_topics: bool,
    /// `num.partitions` for auto-created topics.
    pub default_partitions: u32,
    /// `socket.request.max.bytes`.
    pub request_bytes_max: usize,
}

impl Default for KafkaSection {
    fn default() -> Self {
        let d = KafkaConfig::default();
        KafkaSection {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertised: None,
            node_id: d.node_id,
            auto_create_topics: d.auto_create_topics,
            default_partitions: d.default_partitions,
            request_bytes_max: d.request_bytes_max,
        }
    }
}

impl KafkaSection {
    /// Checks the section; the face's own config is checked again at start.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(a) = &self.advertised {
            parse_advertised(a)?;
        }
        self.config(self.listen).validate()
    }

    fn config(&self, bound: SocketAddr) -> KafkaConfig {
        let (host, port) = match self.advertised.as_deref().map(parse_advertised) {
            Some(Ok((h, p))) => (h, p),
            _ => {
                let ip = if bound.ip().is_unspecified() {
                    "127.0.0.1".to_string()
                } else {
                    bound.ip().to_string()
                };
                (ip, bound.port())
            }
        };
        KafkaConfig {
            node_id: self.node_id,
            advertised_host: host,
            advertised_port: port,
            auto_create_topics: self.auto_create_topics,
            default_partitions: self.default_partitions,
            request_bytes_max: self.request_bytes_max,
            ..KafkaConfig::default()
        }
    }
}

fn parse_advertised(a: &str) -> Result<(String, u16), String> {
    let (h, p) = a
        .rsplit_once(':')
        .ok_or_else(|| format!("kafka advertised listener {a:?} is not HOST:PORT"))?;
    let port = p
        .parse::<u16>()
        .map_err(|_| format!("kafka advertised port {p:?} is not a port"))?;
    if h.is_empty() {
        return Err(format!("kafka advertised listener {a:?} has no host"));
    }
    Ok((h.trim_matches(['[', ']']).to_string(), port))
}

/// Binds the listener and starts the face; the task ends when `shutdown` turns true.
pub async fn start<N: Node>(
    node: Arc<N>,
    section: &KafkaSection,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, JoinHandle<anyhow::Result<()>>)> {
    let listener = TcpListener::bind(section.listen).await.with_context(|| {
        format!(
            "cannot listen for Kafka on {} (is another broker running? change it with --kafka-listen or [kafka] listen)",
            section.listen
        )
    })?;
    let addr = listener.local_addr()?;
    let broker = KafkaBroker::new(node, section.config(addr))
        .await
        .map_err(|e| anyhow::anyhow!("starting the kafka face: {e}"))?;
    let server = kafka::serve(Arc::new(broker), listener)?;
    let task = tokio::spawn(async move {
        let _ = shutdown.wait_for(|v| *v).await;
        server.shutdown().await;
        Ok(())
    });
    Ok((addr, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_listener_defaults_to_the_bound_address() {
        let s = KafkaSection::default();
        let c = s.config(SocketAddr::from(([127, 0, 0, 1], 4567)));
        assert_eq!(
            (c.advertised_host.as_str(), c.advertised_port),
            ("127.0.0.1", 4567)
        );
        let s = KafkaSection {
            advertised: Some("kafka.example:19092".into()),
            ..KafkaSection::default()
        };
        let c = s.config(SocketAddr::from(([0, 0, 0, 0], 1)));
        assert_eq!(
            (c.advertised_host.as_str(), c.advertised_port),
            ("kafka.example", 19092)
        );
        assert!(KafkaSection {
            advertised: Some("nohost".into()),
            ..KafkaSection::default()
        }
        .validate()
        .is_err());
    }
}
