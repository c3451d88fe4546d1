//! A-004 timing compliance: the job ran inside its activation window.
//!
//! PASS when `job_started_at` and `job_completed_at` both lie in
//! `[activation_window_start, activation_window_end]`, bounds included; else FAIL. Any of
//! the four timestamps missing → INCONCLUSIVE: the current time never stands in for
//! missing evidence (SPEC §9).

use chrono::{DateTime, Utc};

use super::{list, missing, outcome};
use crate::event::evidence::Timing;
use crate::event::{CheckOutcome, CheckResult, Evidence, ExecutionEvent};

const ID: &str = "A-004";
const NAME: &str = "timing compliance";

pub(super) fn check(event: &ExecutionEvent) -> CheckOutcome {
    let fields: [(&'static str, Option<DateTime<Utc>>); 4] = [
        ("activation_window_start", event.activation_window_start),
        ("activation_window_end", event.activation_window_end),
        ("job_started_at", event.job_started_at),
        ("job_completed_at", event.job_completed_at),
    ];
    let [(_, Some(window_start)), (_, Some(window_end)), (_, Some(started)), (_, Some(completed))] =
        fields
    else {
        let names: Vec<&'static str> = fields
            .iter()
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| *name)
            .collect();
        let reason = format!("timing evidence missing: {}", list(names.iter().copied()));
        return outcome(ID, NAME, CheckResult::Inconclusive, reason, missing(names));
    };

    let inside = |t: DateTime<Utc>| window_start <= t && t <= window_end;
    let started_in_window = inside(started);
    let completed_in_window = inside(completed);
    let evidence = Evidence::Timing(Timing {
        activation_window_end: window_end,
        activation_window_start: window_start,
        completed_in_window,
        job_completed_at: completed,
        job_started_at: started,
        started_in_window,
    });
    match (started_in_window, completed_in_window) {
        (true, true) => outcome(
            ID,
            NAME,
            CheckResult::Pass,
            "job started and completed inside the activation window".to_owned(),
            evidence,
        ),
        (false, false) => outcome(
            ID,
            NAME,
            CheckResult::Fail,
            "job started and completed outside the activation window".to_owned(),
            evidence,
        ),
        (false, true) => outcome(
            ID,
            NAME,
            CheckResult::Fail,
            "job started outside the activation window".to_owned(),
            evidence,
        ),
        (true, false) => outcome(
            ID,
            NAME,
            CheckResult::Fail,
            "job completed outside the activation window".to_owned(),
            evidence,
        ),
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
    use serde_json::json;

    use super::*;
    use crate::contract::fixture::{at, passing_event};

    type Times = [Option<DateTime<Utc>>; 4];

    #[test]
    fn timing_compliance_follows_its_rule_table() {
        use CheckResult::{Fail, Inconclusive, Pass};
        let (ws, we) = (at(10, 0), at(11, 0));
        let second = Duration::seconds(1);
        #[rustfmt::skip]
        let table: Vec<(&str, Times, CheckResult)> = vec![
            ("inside the window", [Some(ws), Some(we), Some(at(10, 5)), Some(at(10, 30))], Pass),
            ("exactly on both bounds", [Some(ws), Some(we), Some(ws), Some(we)], Pass),
            ("start and completion at the same instant", [Some(ws), Some(we), Some(at(10, 5)), Some(at(10, 5))], Pass),
            ("started a second before the window", [Some(ws), Some(we), Some(ws - second), Some(at(10, 30))], Fail),
            ("completed a second after the window", [Some(ws), Some(we), Some(at(10, 5)), Some(we + second)], Fail),
            ("entirely after the window", [Some(ws), Some(we), Some(at(12, 0)), Some(at(12, 5))], Fail),
            ("entirely before the window", [Some(ws), Some(we), Some(at(9, 0)), Some(at(9, 5))], Fail),
            ("inverted window contains nothing", [Some(we), Some(ws), Some(at(10, 5)), Some(at(10, 30))], Fail),
            ("window start missing", [None, Some(we), Some(at(10, 5)), Some(at(10, 30))], Inconclusive),
            ("window end missing", [Some(ws), None, Some(at(10, 5)), Some(at(10, 30))], Inconclusive),
            ("job start missing", [Some(ws), Some(we), None, Some(at(10, 30))], Inconclusive),
            ("job completion missing", [Some(ws), Some(we), Some(at(10, 5)), None], Inconclusive),
            ("everything missing", [None, None, None, None], Inconclusive),
        ];
        for (case, [window_start, window_end, started, completed], result) in table {
            let mut event = passing_event();
            event.activation_window_start = window_start;
            event.activation_window_end = window_end;
            event.job_started_at = started;
            event.job_completed_at = completed;
            assert_eq!(check(&event).result, result, "{case}");
        }
    }

    #[test]
    fn missing_timing_evidence_is_inconclusive_and_names_what_is_missing() {
        let mut event = passing_event();
        event.activation_window_end = None;
        event.job_completed_at = None;
        let outcome = check(&event);
        assert_eq!(outcome.result, CheckResult::Inconclusive);
        assert_eq!(
            outcome.reason,
            "timing evidence missing: activation_window_end, job_completed_at"
        );
        assert_eq!(
            outcome.evidence.to_value(),
            json!({"missing": ["activation_window_end", "job_completed_at"]})
        );
    }

    #[test]
    fn timing_evidence_reports_the_timestamps_and_which_one_was_outside() {
        let mut event = passing_event();
        event.job_completed_at = Some(at(11, 1));
        let outcome = check(&event);
        assert_eq!(
            outcome.reason,
            "job completed outside the activation window"
        );
        assert_eq!(
            outcome.evidence.to_value()["job_completed_at"],
            json!("2025-03-01T11:01:00Z")
        );
        assert_eq!(
            outcome.evidence.to_value()["started_in_window"],
            json!(true)
        );
        assert_eq!(
            outcome.evidence.to_value()["completed_in_window"],
            json!(false)
        );
    }
}
