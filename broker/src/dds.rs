//! Starts the DDS face from `squall serve` when `[[dds.topic]]` is configured, and exports its
//! counters on `/metrics` (see docs/DDS.md).

use std::sync::Arc;

use anyhow::Context;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, Registry};
use squall_protocols::dds::{DdsConfig, DdsFace, DdsStats};

use crate::node::LocalNode;

/// Joins the DDS domain and serves the configured topics; `None` when none is configured.
pub async fn start(
    cfg: &DdsConfig,
    node: Arc<LocalNode>,
    registry: &Registry,
) -> anyhow::Result<Option<DdsFace>> {
    if cfg.topic.is_empty() {
        return Ok(None);
    }
    let face = DdsFace::start(cfg.clone(), node)
        .await
        .context("starting the DDS face")?;
    registry
        .register(Box::new(StatsCollector::new(Arc::clone(face.stats()))?))
        .context("registering the DDS metrics")?;
    let names: Vec<&str> = cfg.topic.iter().map(|t| t.name.as_str()).collect();
    println!(
        "squall: dds joined domain {} on {:?}, topics {}",
        cfg.domain_id,
        cfg.interfaces,
        names.join(", ")
    );
    Ok(Some(face))
}

/// Exposes [`DdsStats`] as Prometheus counters, read at scrape time.
struct StatsCollector {
    stats: Arc<DdsStats>,
    counters: Vec<IntCounter>,
}

impl StatsCollector {
    fn new(stats: Arc<DdsStats>) -> prometheus::Result<Self> {
        let counters = stats
            .snapshot()
            .iter()
            .map(|(name, _)| IntCounter::new(format!("{name}_total"), format!("DDS face: {name}")))
            .collect::<prometheus::Result<Vec<_>>>()?;
        Ok(StatsCollector { stats, counters })
    }
}

impl Collector for StatsCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.counters.iter().flat_map(|c| c.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let values = self.stats.snapshot();
        self.counters
            .iter()
            .zip(values)
            .flat_map(|(c, (_, v))| {
                c.reset();
                c.inc_by(v);
                c.collect()
            })
            .collect()
    }
}
