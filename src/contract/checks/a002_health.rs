//! A-002 health preservation: no capability that was reported before the job is worse
//! after it.
//!
//! Statuses are ranked HEALTHY (2) > DEGRADED (1) > UNHEALTHY (0); any other string is
//! an unknown status that cannot be ranked. For each capability of `health_before`:
//! missing from `health_after` or ranked lower after → FAIL; an unknown status on either
//! side → INCONCLUSIVE. FAIL wins over INCONCLUSIVE across capabilities. Capabilities
//! only in `health_after` are ignored: the job cannot have degraded them. A missing
//! snapshot → INCONCLUSIVE.

use super::{list, missing, outcome, owned, snapshots};
use crate::event::evidence::{Health, StatusChange};
use crate::event::{CheckOutcome, CheckResult, Evidence, ExecutionEvent};

const ID: &str = "A-002";
const NAME: &str = "health preservation";

/// Rank of a known health status, higher is healthier; `None` for an unknown status.
/// Exact, upper-case matching: the wire values are upper case (SPEC §2).
fn rank(status: &str) -> Option<u8> {
    match status {
        "HEALTHY" => Some(2),
        "DEGRADED" => Some(1),
        "UNHEALTHY" => Some(0),
        _ => None,
    }
}

pub(super) fn check(event: &ExecutionEvent) -> CheckOutcome {
    let (before, after) = match snapshots(event) {
        Ok(both) => both,
        Err(missing_names) => {
            let reason = format!(
                "health snapshot missing: {}",
                list(missing_names.iter().copied())
            );
            return outcome(
                ID,
                NAME,
                CheckResult::Inconclusive,
                reason,
                missing(missing_names),
            );
        }
    };

    let mut missing_after = Vec::new();
    let mut degraded = Vec::new();
    let mut unknown = Vec::new();
    for (capability, was) in before {
        let Some(now) = after.get(capability) else {
            missing_after.push(capability.as_str());
            continue;
        };
        let change = || StatusChange {
            after: Some(now.clone()),
            before: Some(was.clone()),
            capability: capability.clone(),
        };
        match (rank(was), rank(now)) {
            (Some(r_was), Some(r_now)) if r_now < r_was => degraded.push(change()),
            (Some(_), Some(_)) => {}
            _ => unknown.push(change()),
        }
    }

    let (result, reason) = if !missing_after.is_empty() || !degraded.is_empty() {
        let mut parts = Vec::new();
        if !degraded.is_empty() {
            let names = degraded.iter().map(|d| d.capability.as_str());
            parts.push(format!("health degraded for {}", list(names)));
        }
        if !missing_after.is_empty() {
            parts.push(format!(
                "no health reported after the job for {}",
                list(missing_after.iter().copied())
            ));
        }
        (CheckResult::Fail, parts.join("; "))
    } else if !unknown.is_empty() {
        let names = list(unknown.iter().map(|d| d.capability.as_str()));
        let reason = format!(
            "health status outside HEALTHY, DEGRADED, UNHEALTHY cannot be ranked for {names}"
        );
        (CheckResult::Inconclusive, reason)
    } else if before.is_empty() {
        let reason = "no capability was reported before the job, so none can have degraded";
        (CheckResult::Pass, reason.to_owned())
    } else {
        let reason = format!(
            "all {} capabilities reported before the job are as healthy or healthier after it",
            before.len()
        );
        (CheckResult::Pass, reason)
    };
    let evidence = Evidence::Health(Health {
        degraded,
        health_after: after.clone(),
        health_before: before.clone(),
        missing_after: owned(missing_after.iter().copied()),
        unknown_status: unknown,
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
    fn health_preservation_follows_its_rule_table() {
        use CheckResult::{Fail, Inconclusive, Pass};
        const H: &str = "HEALTHY";
        const D: &str = "DEGRADED";
        const U: &str = "UNHEALTHY";
        #[rustfmt::skip]
        let table: &[(&str, Snapshot, Snapshot, CheckResult)] = &[
            ("before missing", None, Some(&[("db", H)]), Inconclusive),
            ("after missing", Some(&[("db", H)]), None, Inconclusive),
            ("both missing", None, None, Inconclusive),
            ("unchanged", Some(&[("db", H), ("cache", D)]), Some(&[("db", H), ("cache", D)]), Pass),
            ("improved", Some(&[("db", U), ("cache", D)]), Some(&[("db", D), ("cache", H)]), Pass),
            ("empty before", Some(&[]), Some(&[("db", U)]), Pass),
            ("capability only in after is ignored", Some(&[("db", H)]), Some(&[("db", H), ("new", U)]), Pass),
            ("unknown status only in after-only capability is ignored", Some(&[("db", H)]), Some(&[("db", H), ("new", "BOOTING")]), Pass),
            ("healthy to degraded", Some(&[("db", H)]), Some(&[("db", D)]), Fail),
            ("degraded to unhealthy", Some(&[("db", D)]), Some(&[("db", U)]), Fail),
            ("healthy to unhealthy", Some(&[("db", H)]), Some(&[("db", U)]), Fail),
            ("capability missing after", Some(&[("db", H), ("cache", H)]), Some(&[("db", H)]), Fail),
            ("unknown status before", Some(&[("db", "MAINTENANCE")]), Some(&[("db", H)]), Inconclusive),
            ("unknown status after", Some(&[("db", H)]), Some(&[("db", "MAINTENANCE")]), Inconclusive),
            ("same unknown status on both sides", Some(&[("db", "MAINTENANCE")]), Some(&[("db", "MAINTENANCE")]), Inconclusive),
            ("lower case is an unknown status", Some(&[("db", "healthy")]), Some(&[("db", H)]), Inconclusive),
            ("fail wins over unknown", Some(&[("db", H), ("cache", "?")]), Some(&[("db", D), ("cache", "?")]), Fail),
            ("missing after wins over unknown", Some(&[("db", "?"), ("cache", H)]), Some(&[("db", "?")]), Fail),
        ];
        for (case, before, after, result) in table {
            let mut event = passing_event();
            event.health_before = before.map(health);
            event.health_after = after.map(health);
            assert_eq!(check(&event).result, *result, "{case}");
        }
    }

    #[test]
    fn health_failure_reports_degraded_and_missing_capabilities() {
        let mut event = passing_event();
        event.health_before = Some(health(&[("db", "HEALTHY"), ("cache", "HEALTHY")]));
        event.health_after = Some(health(&[("db", "DEGRADED")]));
        let outcome = check(&event);
        assert_eq!(outcome.result, CheckResult::Fail);
        assert_eq!(
            outcome.reason,
            "health degraded for db; no health reported after the job for cache"
        );
        assert_eq!(
            outcome.evidence.to_value()["missing_after"],
            json!(["cache"])
        );
        assert_eq!(
            outcome.evidence.to_value()["degraded"],
            json!([{"capability": "db", "before": "HEALTHY", "after": "DEGRADED"}])
        );
    }

    #[test]
    fn missing_snapshot_is_named_in_the_evidence() {
        let mut event = passing_event();
        event.health_after = None;
        let outcome = check(&event);
        assert_eq!(
            outcome.evidence.to_value(),
            json!({"missing": ["health_after"]})
        );
        assert_eq!(outcome.reason, "health snapshot missing: health_after");
    }
}
