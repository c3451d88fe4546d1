//! A job run that passes all seven checks; each test changes the one thing it is about.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::event::{ExecutionEvent, JobStatus, Signal, SourceRef, StepOutput, StepResult};

/// 2025-03-01 at `hour:minute` UTC.
pub(crate) fn at(hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, hour, minute, 0).unwrap()
}

pub(crate) fn step(id: &str, step_type: &str, target: Option<&str>) -> StepResult {
    StepResult {
        step_id: id.into(),
        step_type: step_type.into(),
        status: "COMPLETED".into(),
        output: StepOutput {
            target: target.map(Into::into),
            rollback_action: Some(json!({"action": "revert", "step": id})),
        },
    }
}

pub(crate) fn health(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub(crate) fn passing_event() -> ExecutionEvent {
    ExecutionEvent {
        schema_version: 1,
        event_id: Uuid::from_u128(0x0b8f_1a2e_6c1d_4c7e_9f4b_1d2e_3f4a_5b6c),
        tenant_id: "acme".into(),
        occurred_at: at(11, 0),
        job_id: "job-1".into(),
        contract_id: "contract-1".into(),
        contract_revision: 3,
        job_status: JobStatus::Completed,
        contract_scope: vec!["db".into(), "cache".into()],
        step_results: vec![
            step("s1", "restart", Some("db")),
            step("s2", "flush", Some("cache")),
            step("s3", "noop", None),
        ],
        proposed_changes: Some(
            json!({"capability_name": "db", "scope": ["db", "cache"]})
                .as_object()
                .cloned()
                .unwrap(),
        ),
        steps_executed: Some(vec![json!("s1"), json!("s2"), json!("s3")]),
        health_before: Some(health(&[("db", "HEALTHY"), ("cache", "DEGRADED")])),
        health_after: Some(health(&[("db", "HEALTHY"), ("cache", "HEALTHY")])),
        signals: Some(vec![Signal {
            name: "error_rate".into(),
            expected: json!(0),
            observed: json!(0),
        }]),
        activation_window_start: Some(at(10, 0)),
        activation_window_end: Some(at(11, 0)),
        job_started_at: Some(at(10, 5)),
        job_completed_at: Some(at(10, 30)),
    }
}

pub(crate) fn source(event: &ExecutionEvent) -> SourceRef {
    SourceRef {
        topic: "audit.execution.v1".into(),
        partition: 0,
        offset: 17,
        event_id: event.event_id,
    }
}
