//! The contract audit (SPEC §4, seed 000): did a job do what its contract allowed?
//!
//! Seven checks, A-001..A-007, each judge one aspect of an [`ExecutionEvent`] and answer
//! PASS, FAIL or INCONCLUSIVE with a reason and the evidence it looked at. Missing
//! evidence makes the checks that need it INCONCLUSIVE: nothing is invented, and in
//! particular the current time never stands in for a missing timestamp (SPEC §9).
//!
//! Guarantee: the same evidence always gives the same verdict, the same ids and the same
//! evidence digest. Only `audited_at` (passed in) and `duration_ms` (measured and set by
//! the caller) differ between two audits of it. Pure: no I/O, no clock.

mod checks;
#[cfg(test)]
pub(crate) mod fixture;
mod verdict;

use chrono::{DateTime, Utc};

use crate::canonical::{self, sha256_hex, KeyOrder};
use crate::event::{
    output_id, AuditVerdict, CheckResult, ExecutionEvent, OutputKind, SourceRef, SCHEMA_VERSION,
};

pub use checks::run_checks;
pub use verdict::derive_verdict;

/// The auditor that produced a verdict: this crate and its version.
pub const AUDITOR_VERSION: &str = concat!("audit-stream/", env!("CARGO_PKG_VERSION"));

/// Version of the check rules. Bump it whenever a rule changes, so a verdict says which
/// rules judged it and a changed verdict on replayed evidence can be explained.
pub const RULES_VERSION: &str = "contract-checks/1";

/// Fields of an execution event that identify the publication, not the evidence: a
/// re-published event with the same evidence gets the same digest.
const NON_EVIDENCE_FIELDS: [&str; 3] = ["schema_version", "event_id", "occurred_at"];

/// Audits one job run: all seven checks in A-001..A-007 order, the verdict, the counts
/// and the evidence digest. `duration_ms` is 0: the caller measures and sets it.
pub fn audit(
    event: &ExecutionEvent,
    source: &SourceRef,
    audited_at: DateTime<Utc>,
) -> AuditVerdict {
    let checks = run_checks(event);
    let (verdict, verdict_reason) = derive_verdict(&checks);
    let count = |result: CheckResult| -> u32 {
        // At most seven checks: the count always fits.
        u32::try_from(checks.iter().filter(|c| c.result == result).count()).unwrap_or(u32::MAX)
    };
    let source_id = event.event_id.to_string();
    AuditVerdict {
        schema_version: SCHEMA_VERSION,
        event_id: output_id(&source_id, OutputKind::Verdict, 0),
        audit_id: output_id(&source_id, OutputKind::VerdictAudit, 0),
        tenant_id: event.tenant_id.clone(),
        job_id: event.job_id.clone(),
        contract_id: event.contract_id.clone(),
        contract_revision: event.contract_revision,
        verdict,
        verdict_reason,
        checks_passed: count(CheckResult::Pass),
        checks_failed: count(CheckResult::Fail),
        checks_inconclusive: count(CheckResult::Inconclusive),
        checks,
        evidence_digest: evidence_digest(event),
        auditor_version: AUDITOR_VERSION.to_owned(),
        rules_version: RULES_VERSION.to_owned(),
        audited_at,
        duration_ms: 0,
        source: source.clone(),
    }
}

/// Hex SHA-256 of the canonical JSON of the evidence: the whole event minus
/// `schema_version`, `event_id` and `occurred_at`.
pub fn evidence_digest(event: &ExecutionEvent) -> String {
    let mut evidence = String::with_capacity(2048);
    // Every field has string keys and finite values: writing cannot fail, and a digest of
    // anything else would be a digest of the wrong evidence.
    if let Err(error) =
        canonical::write(&mut evidence, event, KeyOrder::Utf16, &NON_EVIDENCE_FIELDS)
    {
        panic!("an execution event always serializes to JSON: {error}");
    }
    sha256_hex(evidence.as_bytes())
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use super::fixture::{at, passing_event, source};
    use super::*;

    #[test]
    fn a_clean_run_gets_a_pass_verdict_with_all_seven_checks_in_order() {
        let event = passing_event();
        let verdict = audit(&event, &source(&event), at(12, 0));
        assert_eq!(verdict.verdict, CheckResult::Pass);
        assert_eq!(verdict.verdict_reason, "All 7 checks passed");
        let ids: Vec<&str> = verdict.checks.iter().map(|c| c.check_id.as_str()).collect();
        assert_eq!(
            ids,
            ["A-001", "A-002", "A-003", "A-004", "A-005", "A-006", "A-007"]
        );
        assert_eq!(
            (
                verdict.checks_passed,
                verdict.checks_failed,
                verdict.checks_inconclusive
            ),
            (7, 0, 0)
        );
    }

    #[test]
    fn verdict_carries_the_event_identity_versions_and_source() {
        let event = passing_event();
        let src = source(&event);
        let verdict = audit(&event, &src, at(12, 0));
        assert_eq!(verdict.schema_version, SCHEMA_VERSION);
        assert_eq!(verdict.tenant_id, event.tenant_id);
        assert_eq!(verdict.job_id, event.job_id);
        assert_eq!(verdict.contract_id, event.contract_id);
        assert_eq!(verdict.contract_revision, event.contract_revision);
        assert_eq!(
            verdict.auditor_version,
            format!("audit-stream/{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(verdict.rules_version, RULES_VERSION);
        assert_eq!(verdict.source, src);
        assert_eq!(verdict.audited_at, at(12, 0));
        assert_eq!(verdict.duration_ms, 0);
        assert_eq!(verdict.evidence_digest, evidence_digest(&event));
    }

    #[test]
    fn verdict_ids_are_derived_from_the_source_event_id() {
        let event = passing_event();
        let verdict = audit(&event, &source(&event), at(12, 0));
        let id = event.event_id.to_string();
        assert_eq!(verdict.event_id, output_id(&id, OutputKind::Verdict, 0));
        assert_eq!(
            verdict.audit_id,
            output_id(&id, OutputKind::VerdictAudit, 0)
        );
        assert_ne!(verdict.event_id, verdict.audit_id);
    }

    #[test]
    fn auditing_the_same_evidence_twice_differs_only_in_audited_at() {
        let event = passing_event();
        let first = audit(&event, &source(&event), at(12, 0));
        let mut second = audit(&event, &source(&event), at(13, 30));
        assert_ne!(first, second);
        second.audited_at = first.audited_at;
        assert_eq!(first, second);
    }

    #[test]
    fn counts_add_up_to_seven_and_match_the_check_results() {
        let mut event = passing_event();
        event.contract_scope = vec!["db".into()]; // fail on "cache"
        event.signals = None; // A-006 inconclusive
        let verdict = audit(&event, &source(&event), at(12, 0));
        assert_eq!(verdict.verdict, CheckResult::Fail);
        assert_eq!(verdict.verdict_reason, "Failed checks: A-001, A-007");
        assert_eq!(
            (
                verdict.checks_passed,
                verdict.checks_failed,
                verdict.checks_inconclusive
            ),
            (4, 2, 1)
        );
    }

    #[test]
    fn missing_timing_evidence_makes_the_verdict_inconclusive_not_a_pass() {
        let mut event = passing_event();
        event.job_completed_at = None;
        let verdict = audit(&event, &source(&event), at(12, 0));
        assert_eq!(verdict.verdict, CheckResult::Inconclusive);
        assert_eq!(verdict.verdict_reason, "Inconclusive checks: A-004");
    }

    #[test]
    fn execution_event_fields_are_declared_in_the_digests_key_order() {
        // As serialized (declaration order) and as canonical (sorted) are the same text
        // only if every struct of the event declares its fields sorted.
        let event = passing_event();
        assert!(event.signals.is_some() && event.proposed_changes.is_some());
        let mut sorted = String::new();
        canonical::write(&mut sorted, &event, KeyOrder::Utf16, &[]).expect("writes");
        assert_eq!(canonical::to_json(&event).expect("writes"), sorted);
    }

    #[test]
    fn digest_ignores_event_id_occurred_at_and_schema_version() {
        let event = passing_event();
        let mut republished = event.clone();
        republished.event_id = Uuid::from_u128(42);
        republished.occurred_at = at(23, 59);
        republished.schema_version = 7;
        assert_eq!(evidence_digest(&event), evidence_digest(&republished));
    }

    #[test]
    fn digest_does_not_depend_on_the_key_order_of_the_published_json() {
        let a: ExecutionEvent = serde_json::from_value(json!({
            "schema_version": 1,
            "event_id": "0b8f1a2e-6c1d-4c7e-9f4b-1d2e3f4a5b6c",
            "tenant_id": "acme",
            "occurred_at": "2025-03-01T12:00:00Z",
            "job_id": "job-1",
            "contract_id": "c-1",
            "contract_revision": 3,
            "job_status": "COMPLETED",
            "contract_scope": ["db"],
            "step_results": [{"step_id": "s1", "step_type": "restart", "status": "COMPLETED",
                              "output": {"target": "db", "rollback_action": {"a": 1, "b": 2}}}],
            "proposed_changes": {"capability_name": "db", "params": {"x": 1, "y": 2}}
        }))
        .unwrap();
        let b: ExecutionEvent = serde_json::from_value(json!({
            "proposed_changes": {"params": {"y": 2, "x": 1}, "capability_name": "db"},
            "step_results": [{"output": {"rollback_action": {"b": 2, "a": 1}, "target": "db"},
                              "status": "COMPLETED", "step_type": "restart", "step_id": "s1"}],
            "contract_scope": ["db"],
            "job_status": "COMPLETED",
            "contract_revision": 3,
            "contract_id": "c-1",
            "job_id": "job-1",
            "occurred_at": "2025-03-01T12:00:00Z",
            "tenant_id": "acme",
            "event_id": "0b8f1a2e-6c1d-4c7e-9f4b-1d2e3f4a5b6c",
            "schema_version": 1
        }))
        .unwrap();
        assert_eq!(evidence_digest(&a), evidence_digest(&b));
    }

    #[test]
    fn digest_changes_when_any_evidence_changes() {
        let base = passing_event();
        let digest = evidence_digest(&base);
        let mut variants = Vec::new();
        let mut e = base.clone();
        e.tenant_id = "other".into();
        variants.push(e);
        let mut e = base.clone();
        e.contract_revision += 1;
        variants.push(e);
        let mut e = base.clone();
        e.job_started_at = Some(at(10, 6));
        variants.push(e);
        let mut e = base.clone();
        e.signals.as_mut().unwrap()[0].observed = json!(101);
        variants.push(e);
        let mut e = base.clone();
        e.contract_scope.push("queue".into());
        variants.push(e);
        for variant in variants {
            assert_ne!(evidence_digest(&variant), digest);
        }
    }

    #[test]
    fn digest_is_of_the_canonical_json_of_the_evidence_tree() {
        use crate::bench::dataset::{Generator, Mix};

        // The digest as it was made: the event serialized to a tree, the publication
        // fields removed, the tree written as canonical JSON.
        fn from_tree(event: &ExecutionEvent) -> String {
            let mut evidence = serde_json::to_value(event).unwrap();
            if let serde_json::Value::Object(map) = &mut evidence {
                for field in NON_EVIDENCE_FIELDS {
                    map.remove(field);
                }
            }
            sha256_hex(crate::canonical::canonical_json(&evidence).as_bytes())
        }
        let config = crate::config::Config::default();
        let mut compared = 0;
        for record in Generator::new(5, &config.topics, at(12, 0), Mix::Execution).take(1_000) {
            // The generator's bad records are not events.
            if let Ok(event) = serde_json::from_slice::<ExecutionEvent>(&record.payload) {
                assert_eq!(evidence_digest(&event), from_tree(&event));
                compared += 1;
            }
        }
        assert!(compared > 900, "{compared}");
        let event = passing_event();
        assert_eq!(evidence_digest(&event), from_tree(&event));
    }

    #[test]
    fn digest_is_sixty_four_lower_case_hex_digits() {
        let digest = evidence_digest(&passing_event());
        assert_eq!(digest.len(), 64);
        assert!(digest
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    }
}
