//! The one error shape of the HTTP face: a status and a JSON body
//! `{"error": "<code>", "message": "<what went wrong and what to do>"}` (plus optional fields).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::node::NodeError;

/// An error reply: HTTP status, a stable machine-readable code, a human message.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// Stable code (`no_such_pool`, `conflict`, `value_too_large`, …).
    pub code: &'static str,
    /// What went wrong and what to do about it.
    pub message: String,
    /// Extra JSON fields (e.g. `current_version`, `frontier_us`).
    pub extra: Map<String, Value>,
}

impl ApiError {
    /// A new error with no extra fields.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            extra: Map::new(),
        }
    }

    /// 400 with the given code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// Adds an extra JSON field.
    pub fn with(mut self, field: &str, value: Value) -> Self {
        self.extra.insert(field.to_string(), value);
        self
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        let msg = e.to_string();
        match e {
            NodeError::NoSuchPool(p) => ApiError::new(
                StatusCode::NOT_FOUND,
                "no_such_pool",
                format!("no such pool: {p:?} (create it with POST /v1/pools)"),
            ),
            NodeError::PoolExists(_) => ApiError::new(
                StatusCode::CONFLICT,
                "pool_exists",
                format!("{msg} with a different configuration (delete it first or use the same config)"),
            ),
            NodeError::NotFound => ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such key or version (it may have been truncated away)"),
            NodeError::Conflict { current } => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "conflict",
                match current {
                    Some(v) => format!("conditional put failed: the key is at version {v}; read it again and retry with If-Match: {v}"),
                    None => "conditional put failed: the key has no version yet; retry without If-Match or with If-None-Match: *".to_string(),
                },
            )
            .with("current_version", json!(current)),
            NodeError::NotOwner(n) => ApiError::new(
                StatusCode::CONFLICT,
                "not_owner",
                match n.claimed {
                    Some(c) => format!("{msg}: the write is refused; a claim needs a strength above {} (yours was {c}), or wait until the owner releases the key or its lease lapses", n.strength),
                    None => format!("{msg}: the write is refused; claim the key with Squall-Owner (and Squall-Strength above {}) or wait until the owner releases it", n.strength),
                },
            )
            .with("owner", json!(format!("{:#018x}", n.owner)))
            .with("owner_strength", json!(n.strength)),
            NodeError::WrongMode(_) => ApiError::bad_request("wrong_mode", msg),
            NodeError::NotYetStable { at_us, frontier_us } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_yet_stable",
                format!("{msg}: updates with time <= {at_us} may still arrive; retry later or pass a longer wait_ms"),
            )
            .with("at_us", json!(at_us))
            .with("frontier_us", json!(frontier_us)),
            NodeError::Invalid(_) => ApiError::bad_request("invalid", msg),
            NodeError::Overloaded(_) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", format!("{msg}; retry later")),
            NodeError::Storage(_) => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "storage_failure",
                format!("{msg}; nothing was stored (check free disk space and the server log)"),
            ),
            NodeError::ShuttingDown => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the node is shutting down; retry on another node or after restart"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("error".into(), Value::String(self.code.into()));
        body.insert("message".into(), Value::String(self.message));
        body.extend(self.extra);
        let mut resp = (self.status, axum::Json(Value::Object(body))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE
            || self.status == StatusCode::TOO_MANY_REQUESTS
        {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from_static("1"),
            );
        }
        resp
    }
}
