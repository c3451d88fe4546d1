//! Wire types of every event audit-stream reads or writes (SPEC §2, §4b).
//!
//! Types only: no I/O, no clock. Each type has a JSON Schema in `schemas/` and the
//! `contracts` test proves both accept and reject the same examples.

pub mod evidence;
mod ids;
mod input;
mod output;
pub mod rfc3339;
mod strict;

pub use evidence::Evidence;
pub use ids::{output_id, OutputKind};
pub use input::{
    CoordinationDecision, CoordinationEvent, EnvelopeClass, ExecutionEvent, InputEvent, JobStatus,
    Phase, Signal, StepOutput, StepResult, ValidationEvent,
};
pub use output::{
    AuditDecision, AuditVerdict, CheckOutcome, CheckResult, CoordinationRecord, DeadLetter,
    DeadLetterSource, DecisionKind, ErrorClass, Level, SourceRef, VerdictResult,
};
pub(crate) use strict::{with_value_depth, ObjectOnly};

/// The `schema_version` every event of this release carries.
pub const SCHEMA_VERSION: u32 = 1;

/// A message key, `tenant:name` (SPEC §2): an input event's, and the decision or verdict
/// derived from it, which keep the same key. Written without `core::fmt`: one per record.
pub fn message_key(tenant: &str, name: &str) -> String {
    let mut key = String::with_capacity(tenant.len() + 1 + name.len());
    key.push_str(tenant);
    key.push(':');
    key.push_str(name);
    key
}
