//! The node's configuration: plain structs with `Default` and `validate()`, read from a TOML
//! file and overridden by flags. Only the broker reads files and flags.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use squall_protocols::http::HttpConfig;

/// The whole node configuration (`squall.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the durable log and the node's metadata live.
    pub data_dir: PathBuf,
    /// The HTTP face (and `/metrics`).
    pub http: HttpConfig,
    /// The store.
    pub storage: StorageSection,
    /// The Kafka face (issue 4).
    pub kafka: crate::kafka::KafkaSection,
    /// The DDS face (`[dds]`, `[[dds.topic]]`; see docs/DDS.md). Joins the domain only when
    /// at least one topic is configured.
    pub dds: squall_protocols::dds::DdsConfig,
}

/// When the log fsyncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Group commit: one fsync covers every write waiting for it (durable writes are
    /// acknowledged after it).
    #[default]
    Group,
    /// An fsync every `sync_interval_ms`; durable writes wait for the next one.
    Interval,
    /// Never fsync (crash safety lost; for benchmarks of the rest).
    Never,
}

/// Store and log settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSection {
    /// Number of shards keys are spread over.
    pub shards: u32,
    /// When the log fsyncs.
    pub sync: SyncMode,
    /// Period of `sync = "interval"`, in ms.
    pub sync_interval_ms: u64,
    /// A log segment is closed once it reaches this size, in bytes.
    pub segment_bytes_max: u64,
    /// How often `squall serve` runs log retention (deletes whole segments nothing kept
    /// needs any more), in ms. Without it a served node's log grows without bound.
    pub compact_interval_ms: u64,
}

/// Bounds of `storage.compact_interval_ms` (10 ms .. 1 day).
pub const COMPACT_INTERVAL_MS_RANGE: std::ops::RangeInclusive<u64> = 10..=86_400_000;

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            shards: 8,
            sync: SyncMode::Group,
            sync_interval_ms: 5,
            segment_bytes_max: 64 * 1024 * 1024,
            compact_interval_ms: 60_000,
        }
    }
}

impl StorageSection {
    /// The log's sync policy.
    pub fn sync_policy(&self) -> squall_storage::SyncPolicy {
        match self.sync {
            SyncMode::Group => squall_storage::SyncPolicy::GroupCommit,
            SyncMode::Interval => squall_storage::SyncPolicy::IntervalMs(self.sync_interval_ms),
            SyncMode::Never => squall_storage::SyncPolicy::Never,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./squall-data"),
            http: HttpConfig::default(),
            storage: StorageSection::default(),
            dds: squall_protocols::dds::DdsConfig::default(),
            kafka: crate::kafka::KafkaSection::default(),
        }
    }
}

/// A configuration problem, naming the file or field at fault and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source} (check the path given to --config)")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this config.
    #[error("config file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said (line, column, field).
        message: String,
    },
    /// A value is out of range.
    #[error("{origin}: {message}")]
    Invalid {
        /// Where the value came from (file or "defaults and flags").
        origin: String,
        /// Which field and what is allowed.
        message: String,
    },
}

impl Config {
    /// Reads a TOML file (fields not given keep their defaults).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Checks every value; the error names the field and the allowed range.
    pub fn validate(&self) -> Result<(), String> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(
                "data_dir is empty: give a directory (e.g. --data-dir ./squall-data)".into(),
            );
        }
        self.http.validate()?;
        self.dds.validate().map_err(|e| e.to_string())?;
        self.kafka.validate()?;
        if self.storage.shards == 0 || self.storage.shards > 4096 {
            return Err(format!(
                "storage.shards = {} is out of range: use 1..=4096",
                self.storage.shards
            ));
        }
        if self.storage.sync == SyncMode::Interval
            && !(1..=60_000).contains(&self.storage.sync_interval_ms)
        {
            return Err(format!(
                "storage.sync_interval_ms = {} is out of range: use 1..=60000",
                self.storage.sync_interval_ms
            ));
        }
        if self.storage.segment_bytes_max < 4096 {
            return Err(format!(
                "storage.segment_bytes_max = {} is below 4096",
                self.storage.segment_bytes_max
            ));
        }
        if !COMPACT_INTERVAL_MS_RANGE.contains(&self.storage.compact_interval_ms) {
            return Err(format!(
                "storage.compact_interval_ms = {} is out of range: use {}..={}",
                self.storage.compact_interval_ms,
                COMPACT_INTERVAL_MS_RANGE.start(),
                COMPACT_INTERVAL_MS_RANGE.end()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The config file format: defaults, overrides, unknown fields and bad values are refused
    //! with a message naming the field.
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_readme() {
        let c = Config::default();
        c.validate().expect("defaults valid");
        assert_eq!(c.data_dir, PathBuf::from("./squall-data"));
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn toml_overrides_and_errors() {
        let c = Config::from_toml("data_dir = \"/tmp/x\"\n[http]\nlisten = \"0.0.0.0:9000\"\n")
            .expect("parse");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.http.listen.port(), 9000);
        assert_eq!(
            c.http.value_bytes_max,
            Config::default().http.value_bytes_max
        );
        let e = Config::from_toml("[http]\nlisen = \"x\"\n").expect_err("typo refused");
        assert!(e.contains("lisen"), "{e}");
        let e = Config::from_toml("[http]\nlisten = \"nowhere\"\n").expect_err("bad addr");
        assert!(e.contains("listen") || e.contains("address"), "{e}");
        let mut c = Config::default();
        c.http.value_bytes_max = 0;
        assert!(c.validate().expect_err("0").contains("value_bytes_max"));
        c = Config::default();
        c.storage.shards = 0;
        assert!(c.validate().expect_err("0").contains("storage.shards"));
    }

    #[test]
    fn log_compaction_interval_default_toml_and_range() {
        assert_eq!(Config::default().storage.compact_interval_ms, 60_000);
        let c = Config::from_toml("[storage]\ncompact_interval_ms = 500\n").expect("parse");
        assert_eq!(c.storage.compact_interval_ms, 500);
        c.validate().expect("500 ms is valid");
        for bad in [0, 9, 86_400_001] {
            let mut c = Config::default();
            c.storage.compact_interval_ms = bad;
            let e = c.validate().expect_err("out of range");
            assert!(e.contains("storage.compact_interval_ms"), "{bad}: {e}");
        }
    }
}
