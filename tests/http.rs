//! The HTTP API: probes, the rollout endpoint on stored verdicts, the key endpoint on
//! live operator state.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use audit_stream::config::Config;
use audit_stream::gate::GatePolicy;
use audit_stream::http::{router, AppState};
use audit_stream::pipeline::worker::Shared;
use audit_stream::pipeline::{Operator, PartitionState};
use audit_stream::record::Record;
use audit_stream::store::{AuditStore, EmbeddedStore, FaultyStore, StoredRecord};
use audit_stream::validation::Recipes;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{TimeZone, Utc};
use serde_json::Value;
use tower::ServiceExt;

async fn get(state: &AppState, uri: &str) -> (StatusCode, Value) {
    let response = router(state.clone())
        .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    let body = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, body)
}

fn state(store: Arc<dyn AuditStore>) -> AppState {
    AppState {
        store,
        shared: Arc::new(Shared::default()),
        metrics: None,
        gate: GatePolicy {
            freshness: chrono::Duration::days(36500),
        },
    }
}

fn record(topic: &str, key: &str, offset: i64, value: Value) -> Record {
    Record {
        topic: topic.into(),
        partition: 0,
        offset,
        key: Some(key.as_bytes().to_vec()),
        payload: serde_json::to_vec(&value).expect("json"),
        timestamp: None,
    }
}

#[tokio::test]
async fn readyz_is_ready_only_with_partitions_and_a_reachable_store() {
    let store = Arc::new(FaultyStore::new(EmbeddedStore::in_memory().expect("store")));
    let state = state(store.clone());
    assert_eq!(get(&state, "/healthz").await.0, StatusCode::OK);
    let (code, body) = get(&state, "/readyz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    state.shared.ready.store(true, Ordering::Release);
    assert_eq!(get(&state, "/readyz").await.0, StatusCode::OK);
    store.faults().set_down(true);
    let (code, body) = get(&state, "/readyz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["partitions_assigned"], true);
}

#[tokio::test]
async fn rollout_answers_from_the_latest_stored_verdict() {
    let store: Arc<dyn AuditStore> = Arc::new(EmbeddedStore::in_memory().expect("store"));
    let state = state(store.clone());
    let (code, body) = get(&state, "/v1/rollout/acme/c-1").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["action"], "wait", "no verdict yet: {body}");
    assert_eq!(body["authorized"], false);

    // Audit a passing job through the operator and store its verdict.
    let operator = Operator::new(&Config::default()).expect("operator");
    let recipes = Recipes::default();
    let mut partition = PartitionState::new(&recipes);
    let event = serde_json::json!({
        "schema_version": 1, "event_id": "5a0c8e2b-7d3f-4b6a-9e1c-2f4d6b8a0c13",
        "tenant_id": "acme", "occurred_at": "2026-11-01T10:00:00Z", "job_id": "job-1",
        "contract_id": "c-1", "contract_revision": 4, "job_status": "COMPLETED",
        "contract_scope": ["api"],
        "step_results": [{"step_id": "s1", "step_type": "noop", "status": "COMPLETED", "output": {"target": "api"}}],
        "proposed_changes": {"capability_name": "api"},
        "health_before": {"api": "HEALTHY"}, "health_after": {"api": "HEALTHY"},
        "signals": [{"name": "errors", "expected": 0, "observed": 0}],
        "activation_window_start": "2026-11-01T09:00:00Z", "activation_window_end": "2026-11-01T11:00:00Z",
        "job_started_at": "2026-11-01T09:10:00Z", "job_completed_at": "2026-11-01T09:20:00Z"
    });
    let outputs = operator.process(
        &record("audit.execution.v1", "acme:c-1", 0, event),
        &recipes,
        &mut partition,
        Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap(),
    );
    let records: Vec<_> = outputs
        .iter()
        .filter_map(|o| o.audit_record().cloned())
        .collect();
    store
        .write(StoredRecord::chain(records).into())
        .await
        .expect("stored");

    let (_, body) = get(&state, "/v1/rollout/acme/c-1").await;
    assert_eq!(body["action"], "proceed", "{body}");
    assert_eq!(body["authorized"], true);
    let (_, body) = get(&state, "/v1/rollout/acme/c-1?revision=5").await;
    assert_eq!(body["action"], "wait", "another revision: {body}");
    assert_eq!(body["authorized"], false);
    let (_, body) = get(&state, "/v1/rollout/globex/c-1").await;
    assert_eq!(body["action"], "wait", "another tenant: {body}");
}

#[tokio::test]
async fn keys_show_the_count_and_ring_entries_of_a_live_key() {
    let state = state(Arc::new(EmbeddedStore::in_memory().expect("store")));
    let recipes = Recipes::parse(
        "process_recipes:\n  p_transfer:\n    inputs:\n      - { field: amount, min: 100 }\n",
    )
    .expect("recipes");
    let operator = Operator::new(&Config::default()).expect("operator");
    let mut partition = PartitionState::new(&recipes);
    for (offset, amount) in [(0, 5), (1, 7)] {
        let event = serde_json::json!({
            "schema_version": 1, "event_id": format!("5a0c8e2b-7d3f-4b6a-9e1c-2f4d6b8a0c1{offset}"),
            "tenant_id": "acme", "occurred_at": "2026-11-01T10:00:00Z",
            "process": "p_transfer", "phase": "input", "values": {"amount": amount}
        });
        operator.process(
            &record("audit.validation.v1", "acme:p_transfer", offset, event),
            &recipes,
            &mut partition,
            Utc::now(),
        );
    }
    state.shared.partitions.write().expect("lock").insert(
        ("audit.validation.v1".into(), 0),
        Arc::new(Mutex::new(partition)),
    );

    let (code, body) = get(&state, "/v1/keys/acme:p_transfer:input:amount").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["count"], 2);
    let messages: Vec<&str> = body["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["message"].as_str().expect("message"))
        .collect();
    assert_eq!(
        messages,
        [
            "VIOLATION: amount must be >= 100",
            "Fail #1",
            "VIOLATION: amount must be >= 100",
            "Fail #2"
        ]
    );
    let (code, _) = get(&state, "/v1/keys/acme:unknown").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}
