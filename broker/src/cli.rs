//! The client half of `squall`: admin and audit commands that talk to a node over HTTP
//! (`--server`, default http://127.0.0.1:8080) with a small blocking client.

use std::io::{BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use squall_protocols::http::wire::{EntryJson, PutReply};
use ureq::http::Response;
use ureq::Body;

/// Most bytes of a value `squall get` reads (the server's hard ceiling is 256 MiB).
const GET_BYTES_MAX: u64 = 256 * 1024 * 1024;
/// Longest JSON reply read (pool lists, key lists, errors).
const JSON_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// `squall-*` reply headers, name and value.
pub type Headers = Vec<(String, String)>;

/// A connection to one node.
pub struct Client {
    base: String,
    agent: ureq::Agent,
}

/// Percent-encodes a path segment (everything but unreserved characters).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parses a time argument: µs since the Unix epoch, `now`, or `now-<n><unit>` (`us`, `ms`,
/// `s`, `m`, `h`), e.g. `now-10m`.
pub fn parse_time(s: &str) -> anyhow::Result<u64> {
    if let Ok(n) = s.parse::<u64>() {
        return Ok(n);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    if s == "now" {
        return Ok(now);
    }
    let Some(rel) = s.strip_prefix("now-") else {
        bail!("time {s:?}: use microseconds since the Unix epoch, `now`, or `now-10s` (units us, ms, s, m, h)");
    };
    let split = rel.find(|c: char| !c.is_ascii_digit()).unwrap_or(rel.len());
    let (n, unit) = rel.split_at(split);
    let n: u64 = n
        .parse()
        .with_context(|| format!("time {s:?}: no number after `now-`"))?;
    let mult = match unit {
        "us" => 1,
        "ms" => 1_000,
        "s" | "" => 1_000_000,
        "m" => 60_000_000,
        "h" => 3_600_000_000,
        _ => bail!("time {s:?}: unknown unit {unit:?} (use us, ms, s, m, h)"),
    };
    Ok(now.saturating_sub(n.saturating_mul(mult)))
}

impl Client {
    /// A client of the node at `server` (e.g. `http://127.0.0.1:8080`).
    pub fn new(server: &str) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .build();
        Client {
            base: server.trim_end_matches('/').to_string(),
            agent: ureq::Agent::new_with_config(config),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn check(&self, what: &str, mut resp: Response<Body>) -> anyhow::Result<Response<Body>> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp
            .body_mut()
            .with_config()
            .limit(JSON_BYTES_MAX)
            .read_to_string()
            .unwrap_or_default();
        let msg = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| {
                Some(format!(
                    "{} ({})",
                    v.get("message")?.as_str()?,
                    v.get("error")?.as_str()?
                ))
            })
            .unwrap_or(text);
        bail!("{what}: HTTP {status}: {msg}")
    }

    fn connect_err(&self, e: ureq::Error) -> anyhow::Error {
        anyhow::anyhow!(
            "cannot reach the node at {}: {e} (is `squall serve` running? pass --server URL)",
            self.base
        )
    }

    fn json(
        &self,
        what: &str,
        resp: Result<Response<Body>, ureq::Error>,
    ) -> anyhow::Result<serde_json::Value> {
        let mut resp = self.check(what, resp.map_err(|e| self.connect_err(e))?)?;
        let text = resp
            .body_mut()
            .with_config()
            .limit(JSON_BYTES_MAX)
            .read_to_string()?;
        if text.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("{what}: reply is not JSON: {text}"))
    }

    /// `POST /v1/pools`.
    pub fn pool_create(&self, config: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let r = self
            .agent
            .post(&self.url("/v1/pools"))
            .header("content-type", "application/json")
            .send(config.to_string());
        self.json("create pool", r)
    }

    /// `GET /v1/pools`.
    pub fn pool_list(&self) -> anyhow::Result<serde_json::Value> {
        let r = self.agent.get(&self.url("/v1/pools")).call();
        self.json("list pools", r)
    }

    /// `DELETE /v1/pools/{pool}`.
    pub fn pool_delete(&self, pool: &str) -> anyhow::Result<()> {
        let r = self
            .agent
            .delete(&self.url(&format!("/v1/pools/{}", seg(pool))))
            .call();
        self.json("delete pool", r).map(|_| ())
    }

    /// `PUT /v1/pools/{pool}/keys/{key}`.
    pub fn put(
        &self,
        pool: &str,
        key: &str,
        value: &[u8],
        if_match: Option<u64>,
        sensor_time_us: Option<u64>,
    ) -> anyhow::Result<PutReply> {
        let mut req =
            self.agent
                .put(&self.url(&format!("/v1/pools/{}/keys/{}", seg(pool), seg(key))));
        if let Some(v) = if_match {
            req = req.header("if-match", v.to_string());
        }
        if let Some(t) = sensor_time_us {
            req = req.header("squall-sensor-time", t.to_string());
        }
        let v = self.json("put", req.send(value))?;
        serde_json::from_value(v).context("put: unexpected reply")
    }

    /// `GET /v1/pools/{pool}/keys/{key}`: the value and the reply's headers.
    pub fn get(
        &self,
        pool: &str,
        key: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<(Vec<u8>, Headers)> {
        let mut req =
            self.agent
                .get(&self.url(&format!("/v1/pools/{}/keys/{}", seg(pool), seg(key))));
        for (k, v) in query {
            req = req.query(*k, v);
        }
        let mut resp = self.check("get", req.call().map_err(|e| self.connect_err(e))?)?;
        let headers = resp
            .headers()
            .iter()
            .filter(|(k, _)| k.as_str().starts_with("squall-"))
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let value = resp
            .body_mut()
            .with_config()
            .limit(GET_BYTES_MAX)
            .read_to_vec()?;
        Ok((value, headers))
    }

    /// Opens a streaming GET (watch or replay) and returns a line reader over its body.
    pub fn stream(
        &self,
        what: &str,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<impl BufRead> {
        let mut req = self.agent.get(&self.url(path));
        for (k, v) in query {
            req = req.query(*k, v);
        }
        let resp = self.check(what, req.call().map_err(|e| self.connect_err(e))?)?;
        Ok(BufReader::new(resp.into_body().into_reader()))
    }
}

/// `squall watch`: prints each event as one JSON line (`{"event":…,"id":…,"data":{…}}`).
pub fn watch(
    client: &Client,
    pool: &str,
    query: &[(&str, String)],
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let reader = client.stream("watch", &format!("/v1/pools/{}/watch", seg(pool)), query)?;
    let (mut event, mut id, mut data) = (String::new(), String::new(), String::new());
    for line in reader.lines() {
        let line = line.context("watch stream broke")?;
        if line.is_empty() {
            if !data.is_empty() {
                let d: serde_json::Value =
                    serde_json::from_str(&data).unwrap_or(serde_json::Value::String(data.clone()));
                let v = serde_json::json!({"event": event, "id": id, "data": d});
                writeln!(out, "{v}")?;
                out.flush()?;
            }
            event.clear();
            id.clear();
            data.clear();
        } else if let Some(v) = line.strip_prefix("event:") {
            event = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("id:") {
            id = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim_start());
        }
    }
    Ok(())
}

/// `squall replay`: prints every version in the window as JSON lines (version, times, value)
/// and reports progress on stderr every second for long replays.
pub fn replay(
    client: &Client,
    pool: &str,
    query: &[(&str, String)],
    from: u64,
    to: u64,
    out: &mut impl Write,
    progress: &mut impl Write,
) -> anyhow::Result<u64> {
    let reader = client.stream("replay", &format!("/v1/pools/{}/replay", seg(pool)), query)?;
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut n = 0u64;
    for line in reader.lines() {
        let line = line.context("replay stream broke")?;
        if line.is_empty() {
            continue;
        }
        let e: EntryJson = match serde_json::from_str(&line) {
            Ok(e) => e,
            Err(_) => {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                bail!(
                    "replay stopped after {n} versions: {} ({})",
                    v.get("message").and_then(|m| m.as_str()).unwrap_or(&line),
                    v.get("error").and_then(|m| m.as_str()).unwrap_or("error")
                );
            }
        };
        writeln!(out, "{line}")?;
        n += 1;
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            let t = if e.sensor_time_us.is_some()
                && query.iter().any(|(k, v)| *k == "clock" && v == "sensor")
            {
                e.sensor_time_us.unwrap_or(from)
            } else {
                e.time_us
            };
            let pct = if to > from {
                (t.saturating_sub(from)) as f64 * 100.0 / (to - from) as f64
            } else {
                100.0
            };
            writeln!(
                progress,
                "replay: {n} versions, {pct:.1}% of the window, {:.1}s",
                started.elapsed().as_secs_f64()
            )?;
        }
    }
    out.flush()?;
    if started.elapsed() >= Duration::from_secs(1) {
        writeln!(
            progress,
            "replay: done, {n} versions in {:.1}s",
            started.elapsed().as_secs_f64()
        )?;
    }
    Ok(n)
}

/// Reads a value from a file argument, the command line, or stdin.
pub fn value_of(
    inline: Option<String>,
    file: Option<std::path::PathBuf>,
) -> anyhow::Result<Vec<u8>> {
    match (inline, file) {
        (Some(_), Some(_)) => bail!("give the value inline or with --file, not both"),
        (Some(v), None) => Ok(v.into_bytes()),
        (None, Some(f)) => {
            std::fs::read(&f).with_context(|| format!("cannot read --file {}", f.display()))
        }
        (None, None) => {
            let mut buf = Vec::new();
            std::io::stdin()
                .take(GET_BYTES_MAX)
                .read_to_end(&mut buf)
                .context("reading the value from stdin")?;
            Ok(buf)
        }
    }
}

#[cfg(test)]
mod tests {
    //! Argument parsing helpers of the CLI.
    use super::*;

    #[test]
    fn times_and_segments() {
        assert_eq!(parse_time("12345").expect("int"), 12345);
        let now = parse_time("now").expect("now");
        let ago = parse_time("now-10s").expect("rel");
        assert!(
            now.abs_diff(ago).abs_diff(10_000_000) < 1_000_000,
            "{now} {ago}"
        );
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("now-5y").is_err());
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
    }
}
