//! A-003 execution fidelity: a completed job executed what it proposed.
//!
//! Proposed targets are `proposed_changes.capability_name` (a string),
//! `proposed_changes.scope` (a string or a list of strings), and the same two fields of
//! each object in the list `proposed_changes.changes`; values of any other shape name no
//! target. A proposed target missing from the executed targets while `job_status` is
//! COMPLETED → FAIL; a FAILED job is expected to stop short, so it is not a fidelity
//! failure → PASS. No `proposed_changes` at all → INCONCLUSIVE (SPEC §2).

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::{executed_targets, list, missing, outcome, owned};
use crate::event::evidence::Fidelity;
use crate::event::{CheckOutcome, CheckResult, Evidence, ExecutionEvent, JobStatus};

const ID: &str = "A-003";
const NAME: &str = "execution fidelity";

/// The targets one object of proposed changes names.
fn collect_targets<'a>(changes: &'a Map<String, Value>, into: &mut BTreeSet<&'a str>) {
    if let Some(Value::String(name)) = changes.get("capability_name") {
        into.insert(name);
    }
    match changes.get("scope") {
        Some(Value::String(scope)) => {
            into.insert(scope);
        }
        Some(Value::Array(items)) => into.extend(items.iter().filter_map(Value::as_str)),
        _ => {}
    }
}

fn proposed_targets(proposed: &Map<String, Value>) -> BTreeSet<&str> {
    let mut targets = BTreeSet::new();
    collect_targets(proposed, &mut targets);
    if let Some(Value::Array(changes)) = proposed.get("changes") {
        for change in changes.iter().filter_map(Value::as_object) {
            collect_targets(change, &mut targets);
        }
    }
    targets
}

pub(super) fn check(event: &ExecutionEvent) -> CheckOutcome {
    let Some(proposed) = &event.proposed_changes else {
        return outcome(
            ID,
            NAME,
            CheckResult::Inconclusive,
            "no proposed changes were reported, so execution cannot be compared with them"
                .to_owned(),
            missing(vec!["proposed_changes"]),
        );
    };
    let proposed = proposed_targets(proposed);
    let executed = executed_targets(event);
    let not_executed: Vec<&str> = proposed.difference(&executed).copied().collect();
    let evidence = Evidence::Fidelity(Fidelity {
        executed_targets: owned(executed.iter().copied()),
        job_status: event.job_status,
        not_executed: owned(not_executed.iter().copied()),
        proposed_targets: owned(proposed.iter().copied()),
    });
    match (event.job_status, not_executed.is_empty()) {
        (_, true) => {
            let reason = if proposed.is_empty() {
                "proposed changes name no target, so none can be missing".to_owned()
            } else {
                format!("all {} proposed targets were executed", proposed.len())
            };
            outcome(ID, NAME, CheckResult::Pass, reason, evidence)
        }
        (JobStatus::Completed, false) => {
            let reason = format!(
                "job completed without executing proposed targets: {}",
                list(not_executed.iter().copied())
            );
            outcome(ID, NAME, CheckResult::Fail, reason, evidence)
        }
        (JobStatus::Failed, false) => {
            let reason = format!(
                "job failed, so proposed targets left unexecuted are expected: {}",
                list(not_executed.iter().copied())
            );
            outcome(ID, NAME, CheckResult::Pass, reason, evidence)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::contract::fixture::{passing_event, step};

    fn proposed(value: Value) -> Option<Map<String, Value>> {
        value.as_object().cloned()
    }

    /// (case, proposed changes, job status, result, not executed)
    type Row = (
        &'static str,
        Option<Map<String, Value>>,
        JobStatus,
        CheckResult,
        Value,
    );

    #[test]
    fn execution_fidelity_follows_its_rule_table() {
        use CheckResult::{Fail, Inconclusive, Pass};
        use JobStatus::{Completed, Failed};
        // Executed targets are always db and cache.
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            ("proposed changes absent", None, Completed, Inconclusive, Value::Null),
            ("proposed changes absent on a failed job", None, Failed, Inconclusive, Value::Null),
            ("capability_name executed", proposed(json!({"capability_name": "db"})), Completed, Pass, json!([])),
            ("capability_name not executed", proposed(json!({"capability_name": "queue"})), Completed, Fail, json!(["queue"])),
            ("scope as a string, executed", proposed(json!({"scope": "cache"})), Completed, Pass, json!([])),
            ("scope as a string, not executed", proposed(json!({"scope": "queue"})), Completed, Fail, json!(["queue"])),
            ("scope as a list, executed", proposed(json!({"scope": ["db", "cache"]})), Completed, Pass, json!([])),
            ("scope as a list, partly executed", proposed(json!({"scope": ["db", "queue", "auth"]})), Completed, Fail, json!(["auth", "queue"])),
            ("changes entries, executed", proposed(json!({"changes": [{"capability_name": "db"}, {"scope": ["cache"]}]})), Completed, Pass, json!([])),
            ("changes entry capability_name not executed", proposed(json!({"changes": [{"capability_name": "db"}, {"capability_name": "queue"}]})), Completed, Fail, json!(["queue"])),
            ("changes entry scope string not executed", proposed(json!({"changes": [{"scope": "queue"}]})), Completed, Fail, json!(["queue"])),
            ("changes entry scope list not executed", proposed(json!({"changes": [{"scope": ["db", "queue"]}]})), Completed, Fail, json!(["queue"])),
            ("top level and changes together", proposed(json!({"capability_name": "db", "changes": [{"scope": "auth"}]})), Completed, Fail, json!(["auth"])),
            ("failed job skips the fidelity failure", proposed(json!({"capability_name": "queue"})), Failed, Pass, json!(["queue"])),
            ("failed job that executed everything", proposed(json!({"capability_name": "db"})), Failed, Pass, json!([])),
            ("no target named", proposed(json!({"description": "tune"})), Completed, Pass, json!([])),
            ("non-string values name no target", proposed(json!({"capability_name": 7, "scope": [1, null, "db"], "changes": ["queue", 3]})), Completed, Pass, json!([])),
            ("changes that is not a list is ignored", proposed(json!({"changes": {"capability_name": "queue"}})), Completed, Pass, json!([])),
        ];
        for (case, changes, status, result, not_executed) in table {
            let mut event = passing_event();
            event.step_results = vec![
                step("s1", "restart", Some("db")),
                step("s2", "flush", Some("cache")),
                step("s3", "noop", None),
            ];
            event.proposed_changes = changes;
            event.job_status = status;
            let outcome = check(&event);
            assert_eq!(outcome.result, result, "{case}");
            if result != Inconclusive {
                assert_eq!(
                    outcome.evidence.to_value()["not_executed"],
                    not_executed,
                    "{case}"
                );
            }
        }
    }

    #[test]
    fn fidelity_failure_names_what_was_not_executed() {
        let mut event = passing_event();
        event.proposed_changes = proposed(json!({"capability_name": "db", "scope": ["queue"]}));
        let outcome = check(&event);
        assert_eq!(
            outcome.reason,
            "job completed without executing proposed targets: queue"
        );
        assert_eq!(
            outcome.evidence.to_value()["proposed_targets"],
            json!(["db", "queue"])
        );
        assert_eq!(
            outcome.evidence.to_value()["job_status"],
            json!("COMPLETED")
        );
    }

    #[test]
    fn absent_proposed_changes_are_named_in_the_evidence() {
        let mut event = passing_event();
        event.proposed_changes = None;
        assert_eq!(
            check(&event).evidence.to_value(),
            json!({"missing": ["proposed_changes"]})
        );
    }
}
