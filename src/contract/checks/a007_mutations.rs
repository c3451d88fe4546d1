//! A-007 no unauthorized mutations: every capability whose health changed was in scope.
//!
//! A capability of either snapshot whose status differs between them (present on one
//! side only counts as a difference) and that is not in `contract_scope` → FAIL: the job
//! touched something it was not allowed to, or something else did while it ran. Else
//! PASS. A missing snapshot → INCONCLUSIVE.

use std::collections::BTreeSet;

use super::{list, missing, outcome, owned, snapshots};
use crate::event::evidence::{Mutations, StatusChange};
use crate::event::{CheckOutcome, CheckResult, Evidence, ExecutionEvent};

const ID: &str = "A-007";
const NAME: &str = "no unauthorized mutations";

pub(super) fn check(event: &ExecutionEvent) -> CheckOutcome {
    let (before, after) = match snapshots(event) {
        Ok(both) => both,
        Err(names) => {
            let reason = format!("health snapshot missing: {}", list(names.iter().copied()));
            return outcome(ID, NAME, CheckResult::Inconclusive, reason, missing(names));
        }
    };
    let capabilities: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let changed: Vec<&str> = capabilities
        .into_iter()
        .filter(|c| before.get(*c) != after.get(*c))
        .map(String::as_str)
        .collect();
    let unauthorized: Vec<_> = changed
        .iter()
        .filter(|c| !event.contract_scope.iter().any(|s| s == *c))
        .map(|c| StatusChange {
            after: after.get(*c).cloned(),
            before: before.get(*c).cloned(),
            capability: (*c).to_owned(),
        })
        .collect();
    let (result, reason) = if unauthorized.is_empty() {
        let reason = if changed.is_empty() {
            "no capability changed health status".to_owned()
        } else {
            format!(
                "all {} capabilities that changed health status are in the contract scope",
                changed.len()
            )
        };
        (CheckResult::Pass, reason)
    } else {
        let reason = format!(
            "capabilities outside the contract scope changed health status: {}",
            list(unauthorized.iter().map(|u| u.capability.as_str()))
        );
        (CheckResult::Fail, reason)
    };
    let evidence = Evidence::Mutations(Mutations {
        changed_capabilities: owned(changed.iter().copied()),
        contract_scope: event.contract_scope.clone(),
        unauthorized,
    });
    outcome(ID, NAME, result, reason, evidence)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::contract::fixture::{health, passing_event};

    type Snapshot = Option<&'static [(&'static str, &'static str)]>;

    #[test]
    fn no_unauthorized_mutations_follows_its_rule_table() {
        use CheckResult::{Fail, Inconclusive, Pass};
        // The contract scope is always [db].
        #[rustfmt::skip]
        let table: &[(&str, Snapshot, Snapshot, CheckResult)] = &[
            ("before missing", None, Some(&[("db", "HEALTHY")]), Inconclusive),
            ("after missing", Some(&[("db", "HEALTHY")]), None, Inconclusive),
            ("nothing changed", Some(&[("db", "HEALTHY"), ("cache", "DEGRADED")]), Some(&[("db", "HEALTHY"), ("cache", "DEGRADED")]), Pass),
            ("in-scope capability changed", Some(&[("db", "HEALTHY"), ("cache", "HEALTHY")]), Some(&[("db", "DEGRADED"), ("cache", "HEALTHY")]), Pass),
            ("out-of-scope capability changed", Some(&[("db", "HEALTHY"), ("cache", "HEALTHY")]), Some(&[("db", "HEALTHY"), ("cache", "DEGRADED")]), Fail),
            ("out-of-scope capability improved", Some(&[("cache", "UNHEALTHY")]), Some(&[("cache", "HEALTHY")]), Fail),
            ("out-of-scope capability appeared after", Some(&[("db", "HEALTHY")]), Some(&[("db", "HEALTHY"), ("cache", "HEALTHY")]), Fail),
            ("out-of-scope capability vanished after", Some(&[("db", "HEALTHY"), ("cache", "HEALTHY")]), Some(&[("db", "HEALTHY")]), Fail),
            ("in-scope capability appeared after", Some(&[]), Some(&[("db", "HEALTHY")]), Pass),
            ("unknown statuses compare as strings", Some(&[("cache", "MAINTENANCE")]), Some(&[("cache", "MAINTENANCE")]), Pass),
            ("changed unknown status out of scope", Some(&[("cache", "MAINTENANCE")]), Some(&[("cache", "BOOTING")]), Fail),
            ("both snapshots empty", Some(&[]), Some(&[]), Pass),
        ];
        for (case, before, after, result) in table {
            let mut event = passing_event();
            event.contract_scope = vec!["db".into()];
            event.health_before = before.map(health);
            event.health_after = after.map(health);
            assert_eq!(check(&event).result, *result, "{case}");
        }
    }

    #[test]
    fn mutation_failure_reports_both_sides_of_each_unauthorized_change() {
        let mut event = passing_event();
        event.contract_scope = vec!["db".into()];
        event.health_before = Some(health(&[("db", "HEALTHY"), ("cache", "HEALTHY")]));
        event.health_after = Some(health(&[("db", "DEGRADED"), ("queue", "HEALTHY")]));
        let outcome = check(&event);
        assert_eq!(outcome.result, CheckResult::Fail);
        assert_eq!(
            outcome.reason,
            "capabilities outside the contract scope changed health status: cache, queue"
        );
        assert_eq!(
            outcome.evidence.to_value()["changed_capabilities"],
            json!(["cache", "db", "queue"])
        );
        assert_eq!(
            outcome.evidence.to_value()["unauthorized"],
            json!([
                {"capability": "cache", "before": "HEALTHY", "after": null},
                {"capability": "queue", "before": null, "after": "HEALTHY"},
            ])
        );
    }
}
