//! `squall`: the node binary. `squall serve` runs a node; every other subcommand is a client
//! of a running node over HTTP (admin, audit, load generation).
//!
//! Modules: [`config`] (TOML + flags), [`node`] (the `Node` implementation over the store),
//! [`serve`] (listeners, signals, shutdown), [`cli`] (the HTTP client commands), [`bench`]
//! (the HTTP load generator).

mod bench;
mod cli;
mod config;
mod dds;
mod kafka;
mod node;
mod serve;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::cli::{parse_time, Client};
use crate::config::Config;

#[derive(Parser, Debug)]
#[command(
    name = "squall",
    version,
    about = "Squall: a pub/sub bus where topics are versioned, time-indexed keys"
)]
struct Cli {
    /// The node client commands talk to.
    #[arg(
        long,
        global = true,
        env = "SQUALL_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    server: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a node (defaults: data in ./squall-data, HTTP on 127.0.0.1:8080).
    Serve {
        /// TOML config file (fields not given keep their defaults).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Data directory (overrides the config file).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// HTTP listen address (overrides the config file), e.g. 127.0.0.1:8080.
        #[arg(long)]
        http_listen: Option<SocketAddr>,
        /// Kafka listen address (overrides the config file), e.g. 127.0.0.1:9092.
        #[arg(long)]
        kafka_listen: Option<SocketAddr>,
        /// Kafka listener advertised to clients, HOST:PORT (default: the bound address).
        #[arg(long)]
        kafka_advertised: Option<String>,
    },
    /// Create, list or delete pools (topics).
    #[command(subcommand)]
    Pool(PoolCmd),
    /// Put a value (inline, --file, or stdin).
    Put {
        pool: String,
        key: String,
        /// The value; read from stdin when neither this nor --file is given.
        value: Option<String>,
        #[arg(long)]
        file: Option<PathBuf>,
        /// Conditional put: only if the key is at this version.
        #[arg(long)]
        if_match: Option<u64>,
        /// The producer's sensor time (µs since the Unix epoch, `now`, `now-5s`).
        #[arg(long)]
        sensor_time: Option<String>,
    },
    /// Print a value (raw bytes on stdout, version and times on stderr).
    Get {
        pool: String,
        key: String,
        /// Read this version.
        #[arg(long, conflicts_with = "at")]
        version: Option<u64>,
        /// Read the newest version at this time (µs since the Unix epoch, `now-10s`, …).
        #[arg(long)]
        at: Option<String>,
        /// Clock of --at.
        #[arg(long, value_enum, default_value_t = ClockArg::Platform)]
        clock: ClockArg,
        /// How long to wait for --at to become stable, in ms.
        #[arg(long)]
        wait_ms: Option<u64>,
    },
    /// Follow a key or a prefix; prints one JSON line per event.
    Watch {
        pool: String,
        #[command(flatten)]
        sel: Sel,
        /// Replay from this version first.
        #[arg(long, conflicts_with = "from_time")]
        from_version: Option<u64>,
        /// Replay from this time first.
        #[arg(long)]
        from_time: Option<String>,
        #[arg(long, value_enum, default_value_t = ClockArg::Platform)]
        clock: ClockArg,
    },
    /// Print every version in a time window, in order, as JSON lines (the audit view).
    Replay {
        pool: String,
        #[command(flatten)]
        sel: Sel,
        /// Window start (µs since the Unix epoch, `now-1h`, …), inclusive.
        #[arg(long)]
        from: String,
        /// Window end, inclusive; waits until it is final.
        #[arg(long)]
        to: String,
        #[arg(long, value_enum, default_value_t = ClockArg::Platform)]
        clock: ClockArg,
        /// How long to wait for --to to become final, in ms.
        #[arg(long)]
        wait_ms: Option<u64>,
        /// Also render each value as JSON (a `json` field), by the pool's described type (a
        /// DDS topic's `fields`).
        #[arg(long)]
        json: bool,
    },
    /// Load generators.
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
struct Sel {
    /// One key.
    #[arg(long)]
    key: Option<String>,
    /// Every key with this prefix (`--prefix ''` for the whole pool).
    #[arg(long)]
    prefix: Option<String>,
}

impl Sel {
    fn query(&self) -> (&'static str, String) {
        match (&self.key, &self.prefix) {
            (Some(k), _) => ("key", k.clone()),
            (None, Some(p)) => ("prefix", p.clone()),
            (None, None) => ("prefix", String::new()),
        }
    }
}

#[derive(Subcommand, Debug)]
enum PoolCmd {
    /// Create a pool.
    Create {
        name: String,
        #[arg(long, value_enum, default_value_t = ModeArg::Versioned)]
        mode: ModeArg,
        /// Keep it in memory only (no durable log).
        #[arg(long)]
        volatile: bool,
        #[arg(long)]
        retention_ms: Option<u64>,
        #[arg(long)]
        retention_bytes: Option<u64>,
        /// Lateness tolerated for sensor-time reads, µs.
        #[arg(long)]
        lateness_us: Option<u64>,
        /// Largest value, bytes.
        #[arg(long)]
        value_bytes_max: Option<u32>,
    },
    /// List pools.
    List,
    /// Delete a pool and everything in it.
    Delete { name: String },
}

#[derive(Subcommand, Debug)]
enum BenchCmd {
    /// Load run against the HTTP API (see docs/BENCHMARKS.md).
    Http(bench::HttpBench),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ClockArg {
    Platform,
    Sensor,
}

impl ClockArg {
    fn as_str(self) -> &'static str {
        match self {
            ClockArg::Platform => "platform",
            ClockArg::Sensor => "sensor",
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum ModeArg {
    Stateless,
    Latest,
    Versioned,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("squall: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let client = Client::new(&cli.server);
    let mut out = std::io::stdout().lock();
    match cli.cmd {
        Cmd::Serve {
            config,
            data_dir,
            http_listen,
            kafka_listen,
            kafka_advertised,
        } => {
            let mut cfg = match &config {
                Some(path) => Config::from_file(path)?,
                None => Config::default(),
            };
            if let Some(d) = data_dir {
                cfg.data_dir = d;
            }
            if let Some(a) = http_listen {
                cfg.http.listen = a;
            }
            if let Some(a) = kafka_listen {
                cfg.kafka.listen = a;
            }
            if kafka_advertised.is_some() {
                cfg.kafka.advertised = kafka_advertised;
            }
            let origin = match &config {
                Some(p) => format!("config file {} (with flags)", p.display()),
                None => "the defaults and flags".to_string(),
            };
            cfg.validate()
                .map_err(|m| config::ConfigError::Invalid { origin, message: m })?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?;
            rt.block_on(serve::run(cfg))
        }
        Cmd::Pool(PoolCmd::Create {
            name,
            mode,
            volatile,
            retention_ms,
            retention_bytes,
            lateness_us,
            value_bytes_max,
        }) => {
            let mut body = serde_json::json!({
                "name": name,
                "mode": format!("{mode:?}").to_lowercase(),
                "durable": !volatile,
                "retention_ms": retention_ms,
                "retention_bytes": retention_bytes,
            });
            if let Some(l) = lateness_us {
                body["lateness_us"] = l.into();
            }
            if let Some(v) = value_bytes_max {
                body["value_bytes_max"] = v.into();
            }
            let v = client.pool_create(&body)?;
            writeln!(out, "{v}")?;
            Ok(())
        }
        Cmd::Pool(PoolCmd::List) => {
            let v = client.pool_list()?;
            for p in v["pools"].as_array().into_iter().flatten() {
                writeln!(out, "{p}")?;
            }
            Ok(())
        }
        Cmd::Pool(PoolCmd::Delete { name }) => client.pool_delete(&name),
        Cmd::Put {
            pool,
            key,
            value,
            file,
            if_match,
            sensor_time,
        } => {
            let value = cli::value_of(value, file)?;
            let sensor = sensor_time.as_deref().map(parse_time).transpose()?;
            let r = client.put(&pool, &key, &value, if_match, sensor)?;
            writeln!(out, "{}", serde_json::to_string(&r)?)?;
            Ok(())
        }
        Cmd::Get {
            pool,
            key,
            version,
            at,
            clock,
            wait_ms,
        } => {
            let mut q = vec![];
            if let Some(v) = version {
                q.push(("version", v.to_string()));
            }
            if let Some(t) = at {
                q.push(("at", parse_time(&t)?.to_string()));
                q.push(("clock", clock.as_str().to_string()));
                if let Some(w) = wait_ms {
                    q.push(("wait_ms", w.to_string()));
                }
            }
            let (value, headers) = client.get(&pool, &key, &q)?;
            out.write_all(&value)?;
            out.flush()?;
            let meta: Vec<String> = headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            eprintln!("{}", meta.join(", "));
            Ok(())
        }
        Cmd::Watch {
            pool,
            sel,
            from_version,
            from_time,
            clock,
        } => {
            let mut q = vec![sel.query()];
            if let Some(v) = from_version {
                q.push(("from_version", v.to_string()));
            }
            if let Some(t) = from_time {
                q.push(("from_time", parse_time(&t)?.to_string()));
                q.push(("clock", clock.as_str().to_string()));
            }
            cli::watch(&client, &pool, &q, &mut out)
        }
        Cmd::Replay {
            pool,
            sel,
            from,
            to,
            clock,
            wait_ms,
            json,
        } => {
            let (from, to) = (parse_time(&from)?, parse_time(&to)?);
            let mut q = vec![
                sel.query(),
                ("from_time", from.to_string()),
                ("to_time", to.to_string()),
                ("clock", clock.as_str().to_string()),
            ];
            if let Some(w) = wait_ms {
                q.push(("wait_ms", w.to_string()));
            }
            if json {
                q.push(("format", "json".to_string()));
            }
            cli::replay(
                &client,
                &pool,
                &q,
                from,
                to,
                &mut out,
                &mut std::io::stderr(),
            )
            .map(|_| ())
        }
        Cmd::Bench(BenchCmd::Http(b)) => bench::run_http(&cli.server, &b, &mut out),
    }
}
