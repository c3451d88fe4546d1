//! A-005 rollback availability: every completed step that changed something can be
//! undone.
//!
//! A step with `status` COMPLETED, no `output.rollback_action` (absent or JSON null) and
//! a `step_type` other than `noop` or `configuration_change` → INCONCLUSIVE: the change
//! may be fine, but nobody can say how to undo it. Else PASS. Status and step type match
//! exactly, as reported.

use serde_json::Value;

use super::{list, outcome, owned};
use crate::event::evidence::Rollback;
use crate::event::{CheckOutcome, CheckResult, Evidence, ExecutionEvent, StepResult};

const ID: &str = "A-005";
const NAME: &str = "rollback availability";

/// Step types that need no rollback action of their own.
const EXEMPT_STEP_TYPES: [&str; 2] = ["noop", "configuration_change"];

fn lacks_rollback(step: &StepResult) -> bool {
    step.status == "COMPLETED"
        && matches!(step.output.rollback_action, None | Some(Value::Null))
        && !EXEMPT_STEP_TYPES.contains(&step.step_type.as_str())
}

pub(super) fn check(event: &ExecutionEvent) -> CheckOutcome {
    let without: Vec<&str> = event
        .step_results
        .iter()
        .filter(|step| lacks_rollback(step))
        .map(|step| step.step_id.as_str())
        .collect();
    let completed = event
        .step_results
        .iter()
        .filter(|step| step.status == "COMPLETED")
        .count();
    let evidence = Evidence::Rollback(Rollback {
        completed_steps: completed,
        exempt_step_types: EXEMPT_STEP_TYPES,
        steps_without_rollback: owned(without.iter().copied()),
    });
    if without.is_empty() {
        let reason = if completed == 0 {
            "no step completed, so nothing needs a rollback action".to_owned()
        } else {
            format!("all {completed} completed steps have a rollback action or need none")
        };
        outcome(ID, NAME, CheckResult::Pass, reason, evidence)
    } else {
        let reason = format!(
            "completed steps without a rollback action: {}",
            list(without.iter().copied())
        );
        outcome(ID, NAME, CheckResult::Inconclusive, reason, evidence)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::contract::fixture::{passing_event, step};
    use crate::event::StepOutput;

    fn step_with(step_type: &str, status: &str, rollback: Option<Value>) -> StepResult {
        StepResult {
            status: status.into(),
            output: StepOutput {
                target: Some("db".into()),
                rollback_action: rollback,
            },
            ..step("s1", step_type, None)
        }
    }

    #[test]
    fn rollback_availability_follows_its_rule_table() {
        use CheckResult::{Inconclusive, Pass};
        #[rustfmt::skip]
        let table: Vec<(&str, StepResult, CheckResult)> = vec![
            ("completed with a rollback action", step_with("restart", "COMPLETED", Some(json!({"cmd": "undo"}))), Pass),
            ("completed with a string rollback action", step_with("restart", "COMPLETED", Some(json!("undo"))), Pass),
            ("completed without a rollback action", step_with("restart", "COMPLETED", None), Inconclusive),
            ("completed with a null rollback action", step_with("restart", "COMPLETED", Some(Value::Null)), Inconclusive),
            ("noop needs none", step_with("noop", "COMPLETED", None), Pass),
            ("configuration change needs none", step_with("configuration_change", "COMPLETED", None), Pass),
            ("failed step needs none", step_with("restart", "FAILED", None), Pass),
            ("skipped step needs none", step_with("restart", "SKIPPED", None), Pass),
            ("status matches exactly", step_with("restart", "completed", None), Pass),
            ("step type matches exactly", step_with("NOOP", "COMPLETED", None), Inconclusive),
        ];
        for (case, step, result) in table {
            let mut event = passing_event();
            event.step_results = vec![step];
            assert_eq!(check(&event).result, result, "{case}");
        }
    }

    #[test]
    fn a_job_without_steps_passes_rollback_availability() {
        let mut event = passing_event();
        event.step_results.clear();
        assert_eq!(check(&event).result, CheckResult::Pass);
    }

    #[test]
    fn rollback_gap_names_the_steps_in_report_order() {
        let mut event = passing_event();
        event.step_results = vec![
            StepResult {
                step_id: "s9".into(),
                ..step_with("restart", "COMPLETED", None)
            },
            StepResult {
                step_id: "s2".into(),
                ..step_with("noop", "COMPLETED", None)
            },
            StepResult {
                step_id: "s1".into(),
                ..step_with("scale", "COMPLETED", None)
            },
        ];
        let outcome = check(&event);
        assert_eq!(outcome.result, CheckResult::Inconclusive);
        assert_eq!(
            outcome.reason,
            "completed steps without a rollback action: s9, s1"
        );
        assert_eq!(
            outcome.evidence.to_value()["steps_without_rollback"],
            json!(["s9", "s1"])
        );
    }
}
