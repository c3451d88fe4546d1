//! A-001 scope compliance: the job acted only on capabilities its contract covers.
//!
//! Executed targets are the `output.target` of each step; steps without one are not
//! scope-checked. PASS when every executed target is in `contract_scope`, else FAIL.

use super::{executed_targets, list, outcome, owned};
use crate::event::evidence::Scope;
use crate::event::{CheckOutcome, CheckResult, Evidence, ExecutionEvent};

const ID: &str = "A-001";
const NAME: &str = "scope compliance";

pub(super) fn check(event: &ExecutionEvent) -> CheckOutcome {
    let executed = executed_targets(event);
    let out_of_scope: Vec<&str> = executed
        .iter()
        .copied()
        .filter(|target| !event.contract_scope.iter().any(|s| s == target))
        .collect();
    let evidence = Evidence::Scope(Scope {
        contract_scope: event.contract_scope.clone(),
        executed_targets: owned(executed.iter().copied()),
        out_of_scope: owned(out_of_scope.iter().copied()),
    });
    if out_of_scope.is_empty() {
        let reason = if executed.is_empty() {
            "no step reported a target, so nothing was executed outside the contract scope"
                .to_owned()
        } else {
            format!(
                "all {} executed targets are within the contract scope",
                executed.len()
            )
        };
        outcome(ID, NAME, CheckResult::Pass, reason, evidence)
    } else {
        let reason = format!(
            "executed targets outside the contract scope: {}",
            list(out_of_scope.iter().copied())
        );
        outcome(ID, NAME, CheckResult::Fail, reason, evidence)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::contract::fixture::{passing_event, step};

    /// (case, contract scope, step targets, result, out of scope)
    type Row = (
        &'static str,
        &'static [&'static str],
        &'static [Option<&'static str>],
        CheckResult,
        &'static [&'static str],
    );

    #[test]
    fn scope_compliance_follows_its_rule_table() {
        #[rustfmt::skip]
        let table: &[Row] = &[
            ("all targets in scope", &["db", "cache"], &[Some("db"), Some("cache")], CheckResult::Pass, &[]),
            ("scope larger than targets", &["db", "cache", "queue"], &[Some("db")], CheckResult::Pass, &[]),
            ("repeated target in scope", &["db"], &[Some("db"), Some("db")], CheckResult::Pass, &[]),
            ("target-less steps ignored", &["db"], &[Some("db"), None, None], CheckResult::Pass, &[]),
            ("no targets at all", &[], &[None], CheckResult::Pass, &[]),
            ("no steps at all", &["db"], &[], CheckResult::Pass, &[]),
            ("one target out of scope", &["db"], &[Some("db"), Some("queue")], CheckResult::Fail, &["queue"]),
            ("empty scope with a target", &[], &[Some("db")], CheckResult::Fail, &["db"]),
            ("several out of scope, sorted", &["db"], &[Some("zeta"), Some("alpha"), Some("db")], CheckResult::Fail, &["alpha", "zeta"]),
            ("scope match is exact", &["DB"], &[Some("db")], CheckResult::Fail, &["db"]),
        ];
        for (case, scope, targets, result, out) in table {
            let mut event = passing_event();
            event.contract_scope = scope.iter().map(|s| (*s).to_owned()).collect();
            event.step_results = targets
                .iter()
                .enumerate()
                .map(|(i, t)| step(&format!("s{i}"), "restart", *t))
                .collect();
            let outcome = check(&event);
            assert_eq!(outcome.result, *result, "{case}");
            assert_eq!(
                outcome.evidence.to_value()["out_of_scope"],
                json!(out),
                "{case}"
            );
            assert_eq!(outcome.check_id, "A-001");
        }
    }

    #[test]
    fn scope_failure_names_the_out_of_scope_targets() {
        let mut event = passing_event();
        event.contract_scope = vec!["db".into()];
        let outcome = check(&event);
        assert_eq!(
            outcome.reason,
            "executed targets outside the contract scope: cache"
        );
        assert_eq!(
            outcome.evidence.to_value()["executed_targets"],
            json!(["cache", "db"])
        );
        assert_eq!(outcome.evidence.to_value()["contract_scope"], json!(["db"]));
    }
}
