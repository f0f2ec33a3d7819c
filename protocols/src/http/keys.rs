//! `/v1/pools/{pool}/keys…`: list, put (and conditional put), get (latest, by version, at a
//! time), delete (a tombstone version), truncate.

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::json;
use squall_storage::owner::{writer_id, Claim};
use squall_storage::{Clock, Entry, Expect, Mode, PoolConfig};

use super::wire::{BoundsReply, PutReply};
use super::{
    check_key, check_not_future, check_pool_name, check_prefix, json_codec, rejection, wait_of,
    ApiError, St, ValueCodec, LIST_KEYS_MAX,
};
use crate::node::{Node, NodeError, PutRequest};

/// Longest `Squall-Owner` name.
pub const OWNER_NAME_BYTES_MAX: usize = 256;

/// Header carrying the producer's sensor time (µs since the Unix epoch).
pub const SENSOR_TIME: &str = "squall-sensor-time";

fn path2(p: Result<Path<(String, String)>, PathRejection>) -> Result<(String, String), ApiError> {
    let Path((pool, key)) = p.map_err(|r| rejection("bad_path", r))?;
    check_pool_name(&pool)?;
    check_key(&key)?;
    Ok((pool, key))
}

fn pool_of<N: Node>(st: &St<N>, pool: &str) -> Result<PoolConfig, ApiError> {
    st.node
        .pool(pool)
        .ok_or_else(|| NodeError::NoSuchPool(pool.to_string()).into())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    #[serde(default)]
    prefix: String,
}

pub(crate) async fn list<N: Node>(
    State(st): State<St<N>>,
    pool: Result<Path<String>, PathRejection>,
    q: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path(pool) = pool.map_err(|r| rejection("bad_path", r))?;
    check_pool_name(&pool)?;
    let Query(q) = q.map_err(|r| rejection("bad_query", r))?;
    check_prefix(&q.prefix)?;
    let mut keys = st.node.keys(&pool, &q.prefix)?;
    let truncated = keys.len() > LIST_KEYS_MAX;
    keys.truncate(LIST_KEYS_MAX);
    Ok(Json(json!({ "keys": keys, "truncated": truncated })))
}

/// Parses `If-Match` / `If-None-Match` into a conditional-put expectation.
fn expect_of(headers: &HeaderMap) -> Result<Expect, ApiError> {
    if let Some(v) = headers.get(header::IF_MATCH) {
        let s = v
            .to_str()
            .map_err(|_| {
                ApiError::bad_request("bad_header", "If-Match must be ASCII: a version number")
            })?
            .trim();
        let s = s.strip_prefix("W/").unwrap_or(s).trim_matches('"');
        let n = s.parse::<u64>().map_err(|_| {
            ApiError::bad_request(
                "bad_header",
                format!("If-Match must be the key's current version number (e.g. If-Match: 3), got {s:?}"),
            )
        })?;
        if headers.contains_key(header::IF_NONE_MATCH) {
            return Err(ApiError::bad_request(
                "bad_header",
                "give If-Match or If-None-Match, not both",
            ));
        }
        return Ok(Expect::Version(n));
    }
    if let Some(v) = headers.get(header::IF_NONE_MATCH) {
        if v.as_bytes() != b"*" {
            return Err(ApiError::bad_request(
                "bad_header",
                "If-None-Match only supports * (put only if the key has no value)",
            ));
        }
        return Ok(Expect::Absent);
    }
    Ok(Expect::Any)
}

/// Header naming the writer that claims the key's ownership (EXCLUSIVE pools).
pub const OWNER: &str = "squall-owner";
/// Header giving the claim's strength (default: the pool's configured editor strength).
pub const STRENGTH: &str = "squall-strength";
/// Header giving the claim's lease in ms (default: the pool's configured editor lease).
pub const LEASE_MS: &str = "squall-lease-ms";

fn header_num<T: std::str::FromStr>(
    headers: &HeaderMap,
    name: &str,
    what: &str,
) -> Result<Option<T>, ApiError> {
    let Some(v) = headers.get(name) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|s| s.trim().parse::<T>().ok())
        .map(Some)
        .ok_or_else(|| ApiError::bad_request("bad_header", format!("{name} must be {what}")))
}

/// Turns `Squall-Owner` (+ `Squall-Strength`, `Squall-Lease-Ms`) into an ownership claim
/// around the conditional-put expectation.
fn claim_of<N: Node>(
    st: &St<N>,
    pool: &str,
    headers: &HeaderMap,
    expect: Expect,
) -> Result<Expect, ApiError> {
    let Some(owner) = headers.get(OWNER) else {
        if headers.contains_key(STRENGTH) || headers.contains_key(LEASE_MS) {
            return Err(ApiError::bad_request(
                "bad_header",
                "Squall-Strength and Squall-Lease-Ms go with Squall-Owner",
            ));
        }
        return Ok(expect);
    };
    let owner = owner
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|o| !o.is_empty() && o.len() <= OWNER_NAME_BYTES_MAX)
        .ok_or_else(|| {
            ApiError::bad_request(
                "bad_header",
                format!(
                    "Squall-Owner must be a writer name of 1..={OWNER_NAME_BYTES_MAX} ASCII bytes"
                ),
            )
        })?;
    let profile = st.profiles.get(pool).cloned().unwrap_or_default();
    let strength = header_num::<i32>(headers, STRENGTH, "an integer (i32)")?
        .unwrap_or(profile.editor_strength);
    let lease_ms = header_num::<u64>(headers, LEASE_MS, "an integer number of milliseconds")?
        .unwrap_or(profile.editor_lease_ms);
    let version = match expect {
        Expect::Any => None,
        Expect::Version(v) => Some(v),
        _ => {
            return Err(ApiError::bad_request(
                "bad_header",
                "with Squall-Owner, use If-Match (or nothing), not If-None-Match",
            ));
        }
    };
    Ok(Expect::Owned {
        claim: Claim {
            writer: writer_id(&format!("http:{owner}")),
            strength,
            lease_us: lease_ms.saturating_mul(1000),
        },
        version,
    })
}

fn sensor_time_of(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(SENSOR_TIME) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(
                "bad_header",
                "Squall-Sensor-Time must be an integer: microseconds since the Unix epoch",
            )
        })
}

/// Reads a request body of at most `limit` bytes, refusing by Content-Length before reading.
async fn read_body(headers: &HeaderMap, body: Body, limit: u32) -> Result<bytes::Bytes, ApiError> {
    let too_large = |n: String| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "value_too_large",
            format!("value of {n} bytes is above this pool's value_bytes_max = {limit}"),
        )
    };
    if let Some(len) = headers.get(header::CONTENT_LENGTH) {
        let len = len
            .to_str()
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| ApiError::bad_request("bad_header", "Content-Length is not a number"))?;
        if len > u64::from(limit) {
            return Err(too_large(len.to_string()));
        }
    }
    match http_body_util::Limited::new(body, limit as usize)
        .collect()
        .await
    {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(too_large("more than that".into()))
        }
        Err(e) => Err(ApiError::bad_request(
            "bad_body",
            format!("reading the body failed: {e}"),
        )),
    }
}

async fn write<N: Node>(
    st: St<N>,
    pool: String,
    key: String,
    headers: HeaderMap,
    body: Option<Body>,
) -> Result<Json<PutReply>, ApiError> {
    let cfg = pool_of(&st, &pool)?;
    let expect = claim_of(&st, &pool, &headers, expect_of(&headers)?)?;
    let sensor_time_us = sensor_time_of(&headers)?;
    let limit = cfg.value_bytes_max.min(st.cfg.value_bytes_max);
    let (mut value, tombstone) = match body {
        Some(b) => (read_body(&headers, b, limit).await?, false),
        None => (bytes::Bytes::new(), true),
    };
    // A JSON body on a pool with a described type is encoded to the type's CDR.
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if json_body && !tombstone {
        if let Some(codec) = st.profiles.get(&pool).and_then(|p| p.codec.clone()) {
            let j: serde_json::Value = serde_json::from_slice(&value).map_err(|e| {
                ApiError::bad_request("bad_json", format!("the body is not JSON: {e}"))
            })?;
            value = codec.parse_json(&j).map(bytes::Bytes::from).map_err(|m| {
                ApiError::bad_request(
                    "bad_value",
                    format!("the JSON body does not fit pool {pool:?}'s type: {m}"),
                )
            })?;
        }
    }
    let mut req = PutRequest::new(pool, key, value);
    req.expect = expect;
    req.sensor_time_us = sensor_time_us;
    req.tombstone = tombstone;
    let v = st.node.put(req).await?;
    Ok(Json(PutReply::from(&v)))
}

pub(crate) async fn put<N: Node>(
    State(st): State<St<N>>,
    p: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<PutReply>, ApiError> {
    let (pool, key) = path2(p)?;
    write(st, pool, key, headers, Some(body)).await
}

pub(crate) async fn delete<N: Node>(
    State(st): State<St<N>>,
    p: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<PutReply>, ApiError> {
    let (pool, key) = path2(p)?;
    write(st, pool, key, headers, None).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GetParams {
    version: Option<u64>,
    at: Option<u64>,
    clock: Option<Clock>,
    wait_ms: Option<u64>,
    format: Option<String>,
}

/// The value as the body (raw, or rendered as JSON by `codec`), its version and times as
/// headers.
fn entry_response(e: &Entry, codec: Option<&dyn ValueCodec>) -> Response {
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            headers.insert(HeaderName::from_static(name), v);
        }
    };
    set("squall-version", e.version.key_version.to_string());
    set("squall-span", e.version.span.to_string());
    set("squall-shard-seq", e.version.shard_seq.to_string());
    set("squall-time", e.version.time.physical_us.to_string());
    set("squall-time-logical", e.version.time.logical.to_string());
    if let Some(s) = e.version.sensor_time_us {
        set("squall-sensor-time", s.to_string());
    }
    if e.version.late {
        set("squall-late", "true".to_string());
    }
    if e.tombstone {
        let mut r = ApiError::new(
            StatusCode::NOT_FOUND,
            "deleted",
            format!("the key was deleted at version {}", e.version.key_version),
        )
        .with("version", json!(e.version.key_version))
        .into_response();
        r.headers_mut().extend(headers);
        return r;
    }
    if let Some(c) = codec {
        return match c.render_json(&e.value) {
            Ok(j) => {
                let mut r = Json(j).into_response();
                r.headers_mut().extend(headers);
                r
            }
            Err(m) => {
                let mut r = ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "undecodable",
                    format!("version {} does not decode as the pool's type: {m}; read it with format=raw", e.version.key_version),
                )
                .into_response();
                r.headers_mut().extend(headers);
                r
            }
        };
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    (StatusCode::OK, headers, e.value.clone()).into_response()
}

pub(crate) async fn get<N: Node>(
    State(st): State<St<N>>,
    p: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<GetParams>, QueryRejection>,
    req_headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (pool, key) = path2(p)?;
    let Query(q) = q.map_err(|r| rejection("bad_query", r))?;
    let cfg = pool_of(&st, &pool)?;
    let accept_json = req_headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    let codec = json_codec(&st, &pool, q.format.as_deref(), accept_json)?;
    let codec = codec.as_deref();
    match (q.version, q.at) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "bad_query",
            "give either version= or at=, not both",
        )),
        (Some(v), None) => {
            if q.clock.is_some() || q.wait_ms.is_some() {
                return Err(ApiError::bad_request(
                    "bad_query",
                    "clock= and wait_ms= only go with at=",
                ));
            }
            if cfg.mode != Mode::Versioned {
                return Err(ApiError::bad_request(
                    "wrong_mode",
                    format!("pool {pool:?} is {:?}: only versioned pools keep old versions; read the latest instead", cfg.mode),
                ));
            }
            Ok(entry_response(&st.node.get_version(&pool, &key, v)?, codec))
        }
        (None, Some(at)) => {
            let clock = q.clock.unwrap_or_default();
            let wait = wait_of(&st.cfg, q.wait_ms)?;
            let lateness = if clock == Clock::Sensor {
                cfg.lateness_us
            } else {
                0
            };
            check_not_future(at, lateness, wait)?;
            match st.node.get_at(&pool, &key, at, clock, wait).await? {
                Some(e) => Ok(entry_response(&e, codec)),
                None => Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("key {key:?} has no version with {clock:?} time <= {at}"),
                )),
            }
        }
        (None, None) => {
            if q.clock.is_some() || q.wait_ms.is_some() {
                return Err(ApiError::bad_request(
                    "bad_query",
                    "clock= and wait_ms= only go with at=",
                ));
            }
            Ok(entry_response(&st.node.get(&pool, &key)?, codec))
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TruncateParams {
    before: u64,
}

pub(crate) async fn truncate<N: Node>(
    State(st): State<St<N>>,
    p: Result<Path<(String, String)>, PathRejection>,
    q: Result<Query<TruncateParams>, QueryRejection>,
) -> Result<Json<BoundsReply>, ApiError> {
    let (pool, key) = path2(p)?;
    let Query(q) =
        q.map_err(|r| rejection("bad_query", format!("{r} (expected ?before=<version>)")))?;
    pool_of(&st, &pool)?;
    let b = st.node.truncate(&pool, &key, q.before).await?;
    Ok(Json(BoundsReply {
        start: b.start,
        next: b.next,
    }))
}
