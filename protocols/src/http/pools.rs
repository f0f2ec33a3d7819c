//! `GET/POST /v1/pools`, `GET/DELETE /v1/pools/{pool}`.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use squall_storage::{PoolConfig, VALUE_BYTES_LIMIT};

use super::{check_pool_name, rejection, ApiError, St};
use crate::node::Node;

pub(crate) async fn list<N: Node>(State(st): State<St<N>>) -> Json<Value> {
    Json(json!({ "pools": st.node.pools() }))
}

pub(crate) async fn show<N: Node>(
    State(st): State<St<N>>,
    pool: Result<Path<String>, PathRejection>,
) -> Result<Json<PoolConfig>, ApiError> {
    let Path(pool) = pool.map_err(|r| rejection("bad_path", r))?;
    check_pool_name(&pool)?;
    st.node
        .pool(&pool)
        .map(Json)
        .ok_or_else(|| crate::node::NodeError::NoSuchPool(pool).into())
}

pub(crate) async fn create<N: Node>(
    State(st): State<St<N>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<PoolConfig>), ApiError> {
    let body = body.map_err(|r| ApiError::new(r.status(), "bad_body", r.body_text()))?;
    let cfg: PoolConfig = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "bad_json",
            format!(
                "pool config: {e} (expected {{\"name\":…,\"mode\":\"stateless|latest|versioned\",\"durable\":true,…}})"
            ),
        )
    })?;
    check_pool_name(&cfg.name)?;
    let ceiling = st.cfg.value_bytes_max.min(VALUE_BYTES_LIMIT);
    if cfg.value_bytes_max == 0 || cfg.value_bytes_max > ceiling {
        return Err(ApiError::bad_request(
            "bad_pool_config",
            format!(
                "value_bytes_max = {} is out of range: use 1..={ceiling}",
                cfg.value_bytes_max
            ),
        ));
    }
    st.node.create_pool(cfg.clone()).await?;
    let stored = st.node.pool(&cfg.name).unwrap_or(cfg);
    Ok((StatusCode::CREATED, Json(stored)))
}

pub(crate) async fn delete<N: Node>(
    State(st): State<St<N>>,
    pool: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(pool) = pool.map_err(|r| rejection("bad_path", r))?;
    check_pool_name(&pool)?;
    st.node.delete_pool(&pool).await?;
    Ok(StatusCode::NO_CONTENT)
}
