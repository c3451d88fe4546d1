//! The verdict of a job run, derived from its check outcomes (SPEC §4).
//!
//! Any FAIL → FAIL; else any INCONCLUSIVE → INCONCLUSIVE; else PASS. The reason names
//! the deciding checks in check order, so it is the same for the same outcomes.

use crate::event::{CheckOutcome, CheckResult, VerdictResult};

/// The verdict and its reason: "Failed checks: A-001, A-006",
/// "Inconclusive checks: A-004" or "All 7 checks passed".
pub fn derive_verdict(checks: &[CheckOutcome]) -> (VerdictResult, String) {
    let ids_with = |result: CheckResult| -> Vec<&str> {
        checks
            .iter()
            .filter(|c| c.result == result)
            .map(|c| c.check_id.as_str())
            .collect()
    };
    let failed = ids_with(CheckResult::Fail);
    if !failed.is_empty() {
        return (
            CheckResult::Fail,
            format!("Failed checks: {}", failed.join(", ")),
        );
    }
    let inconclusive = ids_with(CheckResult::Inconclusive);
    if !inconclusive.is_empty() {
        return (
            CheckResult::Inconclusive,
            format!("Inconclusive checks: {}", inconclusive.join(", ")),
        );
    }
    (
        CheckResult::Pass,
        format!("All {} checks passed", checks.len()),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn checks(results: &[CheckResult]) -> Vec<CheckOutcome> {
        results
            .iter()
            .enumerate()
            .map(|(i, result)| CheckOutcome {
                check_id: format!("A-00{}", i + 1),
                name: format!("check {}", i + 1),
                result: *result,
                reason: String::new(),
                evidence: json!({}).into(),
            })
            .collect()
    }

    #[test]
    fn verdict_derivation_follows_its_rule_table() {
        use CheckResult::{Fail as F, Inconclusive as I, Pass as P};
        #[rustfmt::skip]
        let table: &[(&str, [CheckResult; 7], CheckResult, &str)] = &[
            ("all pass", [P, P, P, P, P, P, P], P, "All 7 checks passed"),
            ("one fail", [P, P, P, P, P, F, P], F, "Failed checks: A-006"),
            ("fails listed in check order", [F, P, P, P, P, F, P], F, "Failed checks: A-001, A-006"),
            ("fail beats inconclusive", [P, I, P, F, I, P, P], F, "Failed checks: A-004"),
            ("one inconclusive", [P, P, P, I, P, P, P], I, "Inconclusive checks: A-004"),
            ("inconclusives listed in check order", [I, P, I, P, P, P, I], I, "Inconclusive checks: A-001, A-003, A-007"),
            ("all fail", [F, F, F, F, F, F, F], F, "Failed checks: A-001, A-002, A-003, A-004, A-005, A-006, A-007"),
        ];
        for (case, results, verdict, reason) in table {
            let (v, r) = derive_verdict(&checks(results));
            assert_eq!((v, r.as_str()), (*verdict, *reason), "{case}");
        }
    }
}
