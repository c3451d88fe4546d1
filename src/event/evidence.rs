//! What a contract check looked at and found: the `evidence` object of a
//! [`CheckOutcome`](super::CheckOutcome) (SPEC §4b).
//!
//! The checks write their evidence as the typed values below, so that a verdict is
//! written straight from them without building a `serde_json::Value` tree per check.
//! Evidence read back from JSON (a stored or published verdict) is kept as the object
//! it was: [`Evidence::Json`].
//!
//! The wire form is a JSON object with its keys in byte order, as a `Value` object writes
//! them: the fields of every type here are declared in that order, and a test fails if
//! one is not. Two evidences are equal when their JSON is.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::input::{JobStatus, Signal};
use super::rfc3339;

/// The evidence of one check outcome.
#[derive(Debug, Clone)]
pub enum Evidence {
    /// A check could not run: the evidence it needs is missing.
    Missing(Missing),
    Scope(Scope),
    Health(Health),
    Fidelity(Fidelity),
    Timing(Timing),
    Rollback(Rollback),
    Signals(Signals),
    Mutations(Mutations),
    /// Evidence read back from JSON.
    Json(Value),
}

impl Evidence {
    /// The evidence as a JSON value.
    pub fn to_value(&self) -> Value {
        match self {
            Evidence::Json(value) => value.clone(),
            // Plain structs with string keys and finite numbers: this cannot fail.
            typed => serde_json::to_value(typed).unwrap_or(Value::Null),
        }
    }
}

impl PartialEq for Evidence {
    fn eq(&self, other: &Evidence) -> bool {
        match (self, other) {
            (Evidence::Json(a), Evidence::Json(b)) => a == b,
            (a, b) => a.to_value() == b.to_value(),
        }
    }
}

impl From<Value> for Evidence {
    fn from(value: Value) -> Evidence {
        Evidence::Json(value)
    }
}

impl Serialize for Evidence {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Evidence::Missing(e) => e.serialize(serializer),
            Evidence::Scope(e) => e.serialize(serializer),
            Evidence::Health(e) => e.serialize(serializer),
            Evidence::Fidelity(e) => e.serialize(serializer),
            Evidence::Timing(e) => e.serialize(serializer),
            Evidence::Rollback(e) => e.serialize(serializer),
            Evidence::Signals(e) => e.serialize(serializer),
            Evidence::Mutations(e) => e.serialize(serializer),
            Evidence::Json(e) => e.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Evidence {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Evidence, D::Error> {
        Value::deserialize(deserializer).map(Evidence::Json)
    }
}

/// The names of the missing evidence.
#[derive(Debug, Clone, Serialize)]
pub struct Missing {
    pub missing: Vec<&'static str>,
}

/// A-001 scope compliance.
#[derive(Debug, Clone, Serialize)]
pub struct Scope {
    pub contract_scope: Vec<String>,
    pub executed_targets: Vec<String>,
    pub out_of_scope: Vec<String>,
}

/// A capability's health status before and after the job (`null` where a snapshot does
/// not name it).
#[derive(Debug, Clone, Serialize)]
pub struct StatusChange {
    pub after: Option<String>,
    pub before: Option<String>,
    pub capability: String,
}

/// A-002 health preservation.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub degraded: Vec<StatusChange>,
    pub health_after: BTreeMap<String, String>,
    pub health_before: BTreeMap<String, String>,
    pub missing_after: Vec<String>,
    pub unknown_status: Vec<StatusChange>,
}

/// A-003 execution fidelity.
#[derive(Debug, Clone, Serialize)]
pub struct Fidelity {
    pub executed_targets: Vec<String>,
    pub job_status: JobStatus,
    pub not_executed: Vec<String>,
    pub proposed_targets: Vec<String>,
}

/// A-004 timing compliance.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    #[serde(serialize_with = "rfc3339::serialize")]
    pub activation_window_end: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub activation_window_start: DateTime<Utc>,
    pub completed_in_window: bool,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub job_completed_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339::serialize")]
    pub job_started_at: DateTime<Utc>,
    pub started_in_window: bool,
}

/// A-005 rollback availability.
#[derive(Debug, Clone, Serialize)]
pub struct Rollback {
    pub completed_steps: usize,
    pub exempt_step_types: [&'static str; 2],
    pub steps_without_rollback: Vec<String>,
}

/// A-006 signal consistency.
#[derive(Debug, Clone, Serialize)]
pub struct Signals {
    pub mismatches: Vec<Signal>,
    pub signals_compared: usize,
}

/// A-007 no unauthorized mutations.
#[derive(Debug, Clone, Serialize)]
pub struct Mutations {
    pub changed_capabilities: Vec<String>,
    pub contract_scope: Vec<String>,
    pub unauthorized: Vec<StatusChange>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().expect("timestamp")
    }

    fn change() -> StatusChange {
        StatusChange {
            after: None,
            before: Some("HEALTHY".into()),
            capability: "db".into(),
        }
    }

    /// One evidence of every typed kind, with every field filled.
    fn every_kind() -> Vec<Evidence> {
        let health: BTreeMap<String, String> = [("db".to_owned(), "HEALTHY".to_owned())].into();
        let names = vec!["a".to_owned(), "b".to_owned()];
        vec![
            Evidence::Missing(Missing {
                missing: vec!["health_before", "health_after"],
            }),
            Evidence::Scope(Scope {
                contract_scope: names.clone(),
                executed_targets: names.clone(),
                out_of_scope: names.clone(),
            }),
            Evidence::Health(Health {
                degraded: vec![change()],
                health_after: health.clone(),
                health_before: health.clone(),
                missing_after: names.clone(),
                unknown_status: vec![change()],
            }),
            Evidence::Fidelity(Fidelity {
                executed_targets: names.clone(),
                job_status: JobStatus::Completed,
                not_executed: names.clone(),
                proposed_targets: names.clone(),
            }),
            Evidence::Timing(Timing {
                activation_window_end: at("2025-03-01T12:00:00Z"),
                activation_window_start: at("2025-03-01T10:00:00Z"),
                completed_in_window: false,
                job_completed_at: at("2025-03-01T12:00:00.5Z"),
                job_started_at: at("2025-03-01T11:00:00Z"),
                started_in_window: true,
            }),
            Evidence::Rollback(Rollback {
                completed_steps: 3,
                exempt_step_types: ["noop", "configuration_change"],
                steps_without_rollback: names.clone(),
            }),
            Evidence::Signals(Signals {
                mismatches: vec![Signal {
                    expected: json!({"b": 1, "a": [1.5]}),
                    name: "latency".into(),
                    observed: json!(2),
                }],
                signals_compared: 4,
            }),
            Evidence::Mutations(Mutations {
                changed_capabilities: names.clone(),
                contract_scope: names,
                unauthorized: vec![change()],
            }),
        ]
    }

    #[test]
    fn typed_evidence_is_written_as_its_json_object_would_be() {
        for evidence in every_kind() {
            let value = evidence.to_value();
            assert!(value.is_object(), "{evidence:?}");
            // serde_json writes a `Value` object's keys in byte order: the typed text
            // must be the same, in both writers.
            let expected = serde_json::to_string(&value).expect("json");
            assert_eq!(
                serde_json::to_string(&evidence).expect("json"),
                expected,
                "fields out of order"
            );
            assert_eq!(
                crate::canonical::to_json(&evidence).expect("canonical json"),
                expected
            );
        }
    }

    #[test]
    fn evidence_read_back_equals_the_evidence_written() {
        for evidence in every_kind() {
            let text = serde_json::to_string(&evidence).expect("json");
            let read: Evidence = serde_json::from_str(&text).expect("reads back");
            assert!(matches!(read, Evidence::Json(_)));
            assert_eq!(read, evidence);
            assert_eq!(evidence, read);
        }
        let mut other = every_kind();
        assert_ne!(other.remove(1), Evidence::Json(json!({})));
    }
}
