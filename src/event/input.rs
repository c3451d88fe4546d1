//! Input events: what services publish (SPEC §2).
//!
//! Unknown fields are ignored (schemas allow additional properties) so producers can add
//! fields without breaking the audit; a breaking change bumps `schema_version`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{rfc3339, strict};

/// One decoded input event, by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum InputEvent {
    Validation(ValidationEvent),
    Execution(Box<ExecutionEvent>),
    Coordination(CoordinationEvent),
}

impl InputEvent {
    /// The event's own id, from which every output id is derived.
    pub fn event_id(&self) -> Uuid {
        match self {
            InputEvent::Validation(e) => e.event_id,
            InputEvent::Execution(e) => e.event_id,
            InputEvent::Coordination(e) => e.event_id,
        }
    }

    /// The version of the wire format the event was published in.
    pub fn schema_version(&self) -> u32 {
        match self {
            InputEvent::Validation(e) => e.schema_version,
            InputEvent::Execution(e) => e.schema_version,
            InputEvent::Coordination(e) => e.schema_version,
        }
    }

    /// The message key this event must be published under (SPEC §2), which keeps all
    /// state of a key on one partition.
    pub fn expected_key(&self) -> String {
        let (tenant, name) = self.key_parts();
        super::message_key(tenant, name)
    }

    /// Whether `key` is [`InputEvent::expected_key`], compared without writing it.
    pub fn has_key(&self, key: &str) -> bool {
        let (tenant, name) = self.key_parts();
        key.strip_prefix(tenant)
            .and_then(|rest| rest.strip_prefix(':'))
            .is_some_and(|rest| rest == name)
    }

    /// The tenant and the name the key joins ([`super::message_key`]).
    fn key_parts(&self) -> (&str, &str) {
        match self {
            InputEvent::Validation(e) => (&e.tenant_id, &e.process),
            InputEvent::Execution(e) => (&e.tenant_id, &e.contract_id),
            InputEvent::Coordination(e) => (&e.tenant_id, &e.envelope_id),
        }
    }
}

/// Whether a validation event carries a process's inputs or its outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Input,
    Output,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Input => "input",
            Phase::Output => "output",
        }
    }
}

/// A process's inputs or outputs, checked against its Theus recipe (SPEC §3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationEvent {
    #[serde(deserialize_with = "strict::integer")]
    pub schema_version: u32,
    #[serde(deserialize_with = "strict::uuid")]
    pub event_id: Uuid,
    pub tenant_id: String,
    #[serde(
        deserialize_with = "strict::timestamp",
        serialize_with = "rfc3339::serialize"
    )]
    pub occurred_at: DateTime<Utc>,
    /// The function name: the recipe is looked up by it.
    pub process: String,
    #[serde(deserialize_with = "strict::name")]
    pub phase: Phase,
    /// The inputs (keyword arguments) or outputs; nested objects are reached by dot paths.
    #[serde(deserialize_with = "strict::json_object")]
    pub values: Map<String, Value>,
}

/// Final status of a job run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum JobStatus {
    Completed,
    Failed,
}

/// What one step of a job reported.
///
/// Fields are declared in alphabetical order, the order of the evidence digest's
/// canonical JSON, so that it is written without rearranging them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    #[serde(deserialize_with = "strict::object")]
    pub output: StepOutput,
    pub status: String,
    pub step_id: String,
    pub step_type: String,
}

/// The part of a step's output the audit reads.
///
/// Fields are declared in alphabetical order, the order of the evidence digest's
/// canonical JSON, so that it is written without rearranging them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepOutput {
    /// How to undo the step, in whatever form the executor uses.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "strict::optional_json"
    )]
    pub rollback_action: Option<Value>,
    /// The capability the step acted on; steps without one are not scope-checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// An expected and an observed value of one signal; any JSON values.
///
/// Fields are declared in alphabetical order, the order of the evidence digest's
/// canonical JSON, so that it is written without rearranging them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    #[serde(deserialize_with = "strict::json")]
    pub expected: Value,
    pub name: String,
    #[serde(deserialize_with = "strict::json")]
    pub observed: Value,
}

/// Evidence of one job run against a contract (seed 000). Optional fields are evidence
/// that may be missing: the checks that need it are then INCONCLUSIVE, never invented.
///
/// Fields are declared in alphabetical order, the order of the evidence digest's
/// canonical JSON, so that it is written without rearranging them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionEvent {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "strict::optional_timestamp",
        serialize_with = "rfc3339::serialize_option"
    )]
    pub activation_window_end: Option<DateTime<Utc>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "strict::optional_timestamp",
        serialize_with = "rfc3339::serialize_option"
    )]
    pub activation_window_start: Option<DateTime<Utc>>,
    pub contract_id: String,
    #[serde(deserialize_with = "strict::integer")]
    pub contract_revision: i64,
    pub contract_scope: Vec<String>,
    #[serde(deserialize_with = "strict::uuid")]
    pub event_id: Uuid,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "strict::optional_string_map"
    )]
    pub health_after: Option<BTreeMap<String, String>>,
    /// Capability → status; `BTreeMap` so evidence and digests have one order.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "strict::optional_string_map"
    )]
    pub health_before: Option<BTreeMap<String, String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "strict::optional_timestamp",
        serialize_with = "rfc3339::serialize_option"
    )]
    pub job_completed_at: Option<DateTime<Utc>>,
    pub job_id: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "strict::optional_timestamp",
        serialize_with = "rfc3339::serialize_option"
    )]
    pub job_started_at: Option<DateTime<Utc>>,
    #[serde(deserialize_with = "strict::name")]
    pub job_status: JobStatus,
    #[serde(
        deserialize_with = "strict::timestamp",
        serialize_with = "rfc3339::serialize"
    )]
    pub occurred_at: DateTime<Utc>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "strict::optional_json_object"
    )]
    pub proposed_changes: Option<Map<String, Value>>,
    #[serde(deserialize_with = "strict::integer")]
    pub schema_version: u32,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "strict::optional_objects"
    )]
    pub signals: Option<Vec<Signal>>,
    #[serde(deserialize_with = "strict::objects")]
    pub step_results: Vec<StepResult>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "strict::optional_json_array"
    )]
    pub steps_executed: Option<Vec<Value>>,
    pub tenant_id: String,
}

/// The class of a coordination envelope (seed 002). Upper case on the wire and in storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EnvelopeClass {
    Safety,
    Reliability,
    Cost,
    Performance,
}

impl EnvelopeClass {
    pub fn as_str(self) -> &'static str {
        match self {
            EnvelopeClass::Safety => "SAFETY",
            EnvelopeClass::Reliability => "RELIABILITY",
            EnvelopeClass::Cost => "COST",
            EnvelopeClass::Performance => "PERFORMANCE",
        }
    }
}

/// What the coordinator decided about an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum CoordinationDecision {
    Applied,
    Rejected,
    Preempted,
}

impl CoordinationDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            CoordinationDecision::Applied => "APPLIED",
            CoordinationDecision::Rejected => "REJECTED",
            CoordinationDecision::Preempted => "PREEMPTED",
        }
    }
}

/// A coordination decision (seed 002), kept as a coordination audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoordinationEvent {
    #[serde(deserialize_with = "strict::integer")]
    pub schema_version: u32,
    #[serde(deserialize_with = "strict::uuid")]
    pub event_id: Uuid,
    pub tenant_id: String,
    #[serde(
        deserialize_with = "strict::timestamp",
        serialize_with = "rfc3339::serialize"
    )]
    pub occurred_at: DateTime<Utc>,
    pub envelope_id: String,
    #[serde(deserialize_with = "strict::name")]
    pub envelope_class: EnvelopeClass,
    #[serde(deserialize_with = "strict::name")]
    pub decision: CoordinationDecision,
    pub reason: String,
    #[serde(
        deserialize_with = "strict::timestamp",
        serialize_with = "rfc3339::serialize"
    )]
    pub decision_timestamp: DateTime<Utc>,
    #[serde(deserialize_with = "strict::integer")]
    pub active_envelopes_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflicting_envelope_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preempting_envelope_id: Option<String>,
    /// Kept when the producer supplies one; otherwise derived from `event_id`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "strict::optional_uuid"
    )]
    pub audit_id: Option<Uuid>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::fixture::passing_event;

    #[test]
    fn has_key_is_equality_with_the_expected_key() {
        let parts = ["", "a", "a:b", ":", "acme", "acme:"];
        let keys = [
            "",
            ":",
            "a",
            "a:",
            ":a",
            "a:a",
            "a:b",
            "a:b:a",
            "a:b:a:b",
            "::",
            "acme:acme",
            "acme::",
            "acme:acme:",
            "acme",
        ];
        for tenant in parts {
            for contract in parts {
                let mut event = passing_event();
                event.tenant_id = tenant.to_owned();
                event.contract_id = contract.to_owned();
                let event = InputEvent::Execution(Box::new(event));
                for key in keys {
                    assert_eq!(
                        event.has_key(key),
                        key == event.expected_key(),
                        "{tenant:?} {contract:?} {key:?}"
                    );
                }
                assert!(event.has_key(&event.expected_key()));
            }
        }
    }
}
