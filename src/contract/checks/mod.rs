//! The seven contract checks, one file each, and what they share.
//!
//! A check reads one aspect of the evidence and returns a [`CheckOutcome`] whose
//! `evidence` is what it looked at and what it found ([`Evidence`], a JSON object). Sets
//! of names are reported sorted, so the outcome of the same evidence is always the same
//! value.

mod a001_scope;
mod a002_health;
mod a003_fidelity;
mod a004_timing;
mod a005_rollback;
mod a006_signals;
mod a007_mutations;

use std::collections::{BTreeMap, BTreeSet};

use crate::event::evidence::Missing;
use crate::event::{CheckOutcome, CheckResult, Evidence, ExecutionEvent};

/// Runs all seven checks, in A-001..A-007 order.
pub fn run_checks(event: &ExecutionEvent) -> Vec<CheckOutcome> {
    vec![
        a001_scope::check(event),
        a002_health::check(event),
        a003_fidelity::check(event),
        a004_timing::check(event),
        a005_rollback::check(event),
        a006_signals::check(event),
        a007_mutations::check(event),
    ]
}

fn outcome(
    check_id: &str,
    name: &str,
    result: CheckResult,
    reason: String,
    evidence: Evidence,
) -> CheckOutcome {
    CheckOutcome {
        check_id: check_id.to_owned(),
        name: name.to_owned(),
        result,
        reason,
        evidence,
    }
}

/// The evidence of a check that could not run: the names of what is missing.
fn missing(names: Vec<&'static str>) -> Evidence {
    Evidence::Missing(Missing { missing: names })
}

/// Names as owned strings, for evidence.
fn owned<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    names.into_iter().map(str::to_owned).collect()
}

/// Capabilities the job acted on: the `output.target` of every step that has one.
fn executed_targets(event: &ExecutionEvent) -> BTreeSet<&str> {
    event
        .step_results
        .iter()
        .filter_map(|step| step.output.target.as_deref())
        .collect()
}

/// Health snapshots taken before and after the job, when both were reported.
type Snapshots<'a> = (&'a BTreeMap<String, String>, &'a BTreeMap<String, String>);

/// Both health snapshots, or the names of the missing ones.
fn snapshots(event: &ExecutionEvent) -> Result<Snapshots<'_>, Vec<&'static str>> {
    match (&event.health_before, &event.health_after) {
        (Some(before), Some(after)) => Ok((before, after)),
        (before, after) => {
            let mut missing = Vec::new();
            if before.is_none() {
                missing.push("health_before");
            }
            if after.is_none() {
                missing.push("health_after");
            }
            Err(missing)
        }
    }
}

/// "a, b, c" for a reason text.
fn list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names.into_iter().collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::fixture::passing_event;

    #[test]
    fn checks_run_in_id_order_with_their_names() {
        let names: Vec<(String, String)> = run_checks(&passing_event())
            .into_iter()
            .map(|c| (c.check_id, c.name))
            .collect();
        let expected = [
            ("A-001", "scope compliance"),
            ("A-002", "health preservation"),
            ("A-003", "execution fidelity"),
            ("A-004", "timing compliance"),
            ("A-005", "rollback availability"),
            ("A-006", "signal consistency"),
            ("A-007", "no unauthorized mutations"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(id, name)| ((*id).to_owned(), (*name).to_owned()))
            .collect();
        assert_eq!(names, expected);
    }

    #[test]
    fn every_check_reports_its_evidence_as_a_json_object() {
        let mut missing = passing_event();
        missing.health_before = None;
        missing.proposed_changes = None;
        missing.signals = None;
        missing.job_started_at = None;
        for event in [passing_event(), missing] {
            for check in run_checks(&event) {
                assert!(check.evidence.to_value().is_object(), "{}", check.check_id);
                assert!(!check.reason.is_empty(), "{}", check.check_id);
            }
        }
    }
}
