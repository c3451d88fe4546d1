//! Output events: what audit-stream publishes and stores (SPEC §4b). Field names are part
//! of the contract; the schemas in `schemas/` forbid any other field.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::evidence::Evidence;
use super::input::{CoordinationDecision, EnvelopeClass, Phase};
use super::{rfc3339, strict};

/// Where an output came from: the input record and its event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceRef {
    pub topic: String,
    #[serde(deserialize_with = "strict::integer")]
    pub partition: i32,
    #[serde(deserialize_with = "strict::integer")]
    pub offset: i64,
    #[serde(deserialize_with = "strict::uuid")]
    pub event_id: Uuid,
}

/// Audit level of a rule (Theus): Stop, Abort, Block, Count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Level {
    S,
    A,
    B,
    C,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::S => "S",
            Level::A => "A",
            Level::B => "B",
            Level::C => "C",
        }
    }
}

/// What a failing rule decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DecisionKind {
    Stop,
    Abort,
    Block,
    Warn,
}

impl DecisionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Stop => "STOP",
            DecisionKind::Abort => "ABORT",
            DecisionKind::Block => "BLOCK",
            DecisionKind::Warn => "WARN",
        }
    }
}

/// A STOP, ABORT, BLOCK or WARN of the validation audit (SPEC §3, §4b).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditDecision {
    #[serde(deserialize_with = "strict::integer")]
    pub schema_version: u32,
    #[serde(deserialize_with = "strict::uuid")]
    pub event_id: Uuid,
    pub tenant_id: String,
    /// The rule's counter key: `{tenant}:{process}:{phase}:{field}`.
    pub key: String,
    pub process: String,
    #[serde(deserialize_with = "strict::name")]
    pub phase: Phase,
    pub field: String,
    #[serde(deserialize_with = "strict::name")]
    pub level: Level,
    #[serde(deserialize_with = "strict::name")]
    pub decision: DecisionKind,
    /// The key's failure count after this failure.
    #[serde(deserialize_with = "strict::integer")]
    pub count: u32,
    /// The effective threshold, given for every level.
    #[serde(deserialize_with = "strict::integer")]
    pub threshold: u32,
    pub message: String,
    #[serde(
        deserialize_with = "strict::timestamp",
        serialize_with = "rfc3339::serialize"
    )]
    pub occurred_at: DateTime<Utc>,
    #[serde(deserialize_with = "strict::object")]
    pub source: SourceRef,
}

/// Result of one contract check, and of a whole verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum CheckResult {
    Pass,
    Fail,
    Inconclusive,
}

impl CheckResult {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckResult::Pass => "PASS",
            CheckResult::Fail => "FAIL",
            CheckResult::Inconclusive => "INCONCLUSIVE",
        }
    }
}

/// A verdict is a check result applied to the whole job.
pub type VerdictResult = CheckResult;

/// One of the seven contract checks, with why and on what evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckOutcome {
    pub check_id: String,
    pub name: String,
    #[serde(deserialize_with = "strict::name")]
    pub result: CheckResult,
    pub reason: String,
    pub evidence: Evidence,
}

/// The contract audit's verdict on one job run (SPEC §4, §4b).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditVerdict {
    #[serde(deserialize_with = "strict::integer")]
    pub schema_version: u32,
    #[serde(deserialize_with = "strict::uuid")]
    pub event_id: Uuid,
    #[serde(deserialize_with = "strict::uuid")]
    pub audit_id: Uuid,
    pub tenant_id: String,
    pub job_id: String,
    pub contract_id: String,
    #[serde(deserialize_with = "strict::integer")]
    pub contract_revision: i64,
    #[serde(deserialize_with = "strict::name")]
    pub verdict: VerdictResult,
    pub verdict_reason: String,
    /// A-001..A-007, in that order.
    #[serde(deserialize_with = "strict::objects")]
    pub checks: Vec<CheckOutcome>,
    #[serde(deserialize_with = "strict::integer")]
    pub checks_passed: u32,
    #[serde(deserialize_with = "strict::integer")]
    pub checks_failed: u32,
    #[serde(deserialize_with = "strict::integer")]
    pub checks_inconclusive: u32,
    /// SHA-256 (hex) of the canonical evidence.
    pub evidence_digest: String,
    pub auditor_version: String,
    pub rules_version: String,
    /// Wall-clock time of the audit: with `duration_ms`, the only fields that differ
    /// between two audits of the same evidence.
    #[serde(
        deserialize_with = "strict::timestamp",
        serialize_with = "rfc3339::serialize"
    )]
    pub audited_at: DateTime<Utc>,
    #[serde(deserialize_with = "strict::integer")]
    pub duration_ms: u64,
    #[serde(deserialize_with = "strict::object")]
    pub source: SourceRef,
}

/// Why a record went to the dead-letter queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    NotJson,
    Schema,
    Oversize,
    UnknownTopic,
    Semantic,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 5] = [
        ErrorClass::NotJson,
        ErrorClass::Schema,
        ErrorClass::Oversize,
        ErrorClass::UnknownTopic,
        ErrorClass::Semantic,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::NotJson => "not_json",
            ErrorClass::Schema => "schema",
            ErrorClass::Oversize => "oversize",
            ErrorClass::UnknownTopic => "unknown_topic",
            ErrorClass::Semantic => "semantic",
        }
    }
}

/// Position of a dead-lettered record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterSource {
    pub topic: String,
    #[serde(deserialize_with = "strict::integer")]
    pub partition: i32,
    #[serde(deserialize_with = "strict::integer")]
    pub offset: i64,
}

/// A record that could not be audited, with the whole payload kept (SPEC §4b).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetter {
    #[serde(deserialize_with = "strict::integer")]
    pub schema_version: u32,
    #[serde(deserialize_with = "strict::uuid")]
    pub event_id: Uuid,
    #[serde(deserialize_with = "strict::name")]
    pub error_class: ErrorClass,
    pub error: String,
    #[serde(deserialize_with = "strict::object")]
    pub source: DeadLetterSource,
    pub payload_base64: String,
    /// The record's timestamp: when it entered the input topic.
    #[serde(
        deserialize_with = "strict::timestamp",
        serialize_with = "rfc3339::serialize"
    )]
    pub first_seen_at: DateTime<Utc>,
}

/// A coordination decision as kept in `coordination_audit_records` (seed 002 columns).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinationRecord {
    #[serde(deserialize_with = "strict::uuid")]
    pub audit_id: Uuid,
    pub tenant_id: String,
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
    /// The source event's `occurred_at`: taken from the data so a replay writes the same row.
    #[serde(
        deserialize_with = "strict::timestamp",
        serialize_with = "rfc3339::serialize"
    )]
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflicting_envelope_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preempting_envelope_id: Option<String>,
    #[serde(deserialize_with = "strict::integer")]
    pub active_envelopes_count: u32,
    #[serde(deserialize_with = "strict::object")]
    pub source: SourceRef,
}
