//! `POST /v1/snapshot`: one consistent cut over many keys at one time.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use squall_storage::Clock;

use super::wire::{EntryJson, SnapshotReply, SnapshotRequest};
use super::{
    check_key, check_not_future, check_pool_name, wait_of, ApiError, St, SNAPSHOT_KEYS_MAX,
};
use crate::node::{Node, NodeError};

pub(crate) async fn snapshot<N: Node>(
    State(st): State<St<N>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SnapshotReply>, ApiError> {
    let body = body.map_err(|r| ApiError::new(r.status(), "bad_body", r.body_text()))?;
    let req: SnapshotRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "bad_json",
            format!("snapshot request: {e} (expected {{\"at\":µs,\"clock\":\"platform|sensor\",\"keys\":[{{\"pool\":…,\"key\":…}}]}})"),
        )
    })?;
    if req.keys.len() > SNAPSHOT_KEYS_MAX {
        return Err(ApiError::bad_request(
            "too_many_keys",
            format!(
                "{} keys asked; at most {SNAPSHOT_KEYS_MAX} per snapshot",
                req.keys.len()
            ),
        ));
    }
    let mut lateness = 0;
    for k in &req.keys {
        check_pool_name(&k.pool)?;
        check_key(&k.key)?;
        let cfg = st
            .node
            .pool(&k.pool)
            .ok_or_else(|| NodeError::NoSuchPool(k.pool.clone()))?;
        lateness = lateness.max(cfg.lateness_us);
    }
    let wait = wait_of(&st.cfg, req.wait_ms)?;
    check_not_future(
        req.at,
        if req.clock == Clock::Sensor {
            lateness
        } else {
            0
        },
        wait,
    )?;
    let keys: Vec<(String, String)> = req
        .keys
        .iter()
        .map(|k| (k.pool.clone(), k.key.clone()))
        .collect();
    let got = st.node.snapshot(keys, req.at, req.clock, wait).await?;
    let entries = req
        .keys
        .iter()
        .zip(got.iter())
        .map(|(k, e)| e.as_ref().map(|e| EntryJson::from_entry(Some(&k.pool), e)))
        .collect();
    Ok(Json(SnapshotReply {
        at: req.at,
        clock: req.clock,
        entries,
    }))
}
