//! HTTP on one port: `/metrics`, `/healthz`, `/readyz`, `/v1/rollout/{tenant}/{contract}`
//! and `/v1/keys/{key}`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};

use crate::gate::{self, GatePolicy};
use crate::pipeline::worker::Shared;
use crate::store::AuditStore;
use crate::validation::RingEntry;

/// What the handlers read.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn AuditStore>,
    pub shared: Arc<Shared>,
    pub metrics: Option<PrometheusHandle>,
    pub gate: GatePolicy,
}

/// The router of the one HTTP port.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/v1/rollout/{tenant}/{contract}", get(rollout))
        .route("/v1/keys/{key}", get(key))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "HTTP listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(handle) => handle.render().into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not installed").into_response(),
    }
}

#[derive(Serialize)]
struct Readiness {
    ready: bool,
    partitions_assigned: bool,
    /// Partitions whose checkpoint is still being loaded: not processing yet.
    partitions_restoring: usize,
    store: String,
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Readiness>) {
    let assigned = state.shared.ready.load(Ordering::Acquire);
    let store = state.store.ping().await;
    let restoring = state.shared.restoring.load(Ordering::Acquire);
    let ready = assigned && restoring == 0 && store.is_ok();
    let body = Readiness {
        ready,
        partitions_assigned: assigned,
        partitions_restoring: restoring,
        store: store.map_or_else(|e| e.to_string(), |()| "ok".into()),
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

#[derive(Deserialize)]
struct RolloutQuery {
    revision: Option<i64>,
}

async fn rollout(
    State(state): State<AppState>,
    Path((tenant, contract)): Path<(String, String)>,
    Query(query): Query<RolloutQuery>,
) -> Response {
    match state.store.rollout_status(&tenant, &contract).await {
        Ok(status) => Json(gate::decide(
            &tenant,
            &contract,
            status.as_ref(),
            query.revision,
            &state.gate,
            Utc::now(),
        ))
        .into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"error": error.to_string(), "action": "wait", "authorized": false})),
        )
            .into_response(),
    }
}

#[derive(Serialize)]
struct KeyView {
    key: String,
    count: u32,
    entries: Vec<RingEntry>,
}

async fn key(State(state): State<AppState>, Path(key): Path<String>) -> Response {
    let partitions = state
        .shared
        .partitions
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .values()
        .cloned()
        .collect::<Vec<_>>();
    for partition in partitions {
        let state = partition
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = state.validation.counter.count(&key);
        let entries: Vec<RingEntry> = state
            .validation
            .ring
            .entries_for_key(&key)
            .cloned()
            .collect();
        if count > 0 || !entries.is_empty() {
            return Json(KeyView {
                key,
                count,
                entries,
            })
            .into_response();
        }
    }
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({
            "error": "key has no count or ring entry on this instance (its partition may be owned by another instance)"
        })),
    )
        .into_response()
}
