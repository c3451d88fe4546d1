//! The rollout gate: may this rollout proceed? (SPEC §4)
//!
//! Pure: the caller reads the rollout status from the store and passes the current time.
//! Never authorized by default: anything short of a fresh PASS for the asked revision is
//! not an authorization.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::event::{AuditVerdict, CheckResult, VerdictResult};

/// The latest verdict of one (tenant, contract), as kept in `rollout_status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutStatus {
    pub tenant_id: String,
    pub contract_id: String,
    pub contract_revision: i64,
    pub job_id: String,
    pub verdict: VerdictResult,
    pub audit_id: Uuid,
    /// Ids of the checks that failed, in check order.
    pub failed_checks: Vec<String>,
    /// When the audited job's evidence was produced (the execution event's
    /// `occurred_at`): "latest" and "fresh" are judged on it, so re-auditing old
    /// evidence never makes it fresh.
    pub occurred_at: DateTime<Utc>,
    pub audited_at: DateTime<Utc>,
}

/// Where evidence stands in the order in which a rollout status moves: by the execution
/// event's `occurred_at`, then by audit id, so that two verdicts of one instant settle
/// the same way in any write order. A status only ever moves to a greater one.
pub type EvidenceOrder = (DateTime<Utc>, Uuid);

/// The [`EvidenceOrder`] of a verdict's evidence.
pub fn evidence_order(occurred_at: DateTime<Utc>, audit_id: Uuid) -> EvidenceOrder {
    (occurred_at, audit_id)
}

impl RolloutStatus {
    /// This status's place in [`evidence_order`].
    pub fn evidence_order(&self) -> EvidenceOrder {
        evidence_order(self.occurred_at, self.audit_id)
    }

    /// The rollout status a verdict sets; `occurred_at` is the execution event's.
    pub fn from_verdict(verdict: &AuditVerdict, occurred_at: DateTime<Utc>) -> RolloutStatus {
        RolloutStatus {
            tenant_id: verdict.tenant_id.clone(),
            contract_id: verdict.contract_id.clone(),
            contract_revision: verdict.contract_revision,
            job_id: verdict.job_id.clone(),
            verdict: verdict.verdict,
            audit_id: verdict.audit_id,
            failed_checks: verdict
                .checks
                .iter()
                .filter(|c| c.result == CheckResult::Fail)
                .map(|c| c.check_id.clone())
                .collect(),
            occurred_at,
            audited_at: verdict.audited_at,
        }
    }
}

/// What the deploy pipeline should do with the rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A fresh PASS for the asked revision: go ahead.
    Proceed,
    /// A fresh FAIL: undo the rollout.
    Rollback,
    /// A fresh INCONCLUSIVE: a human must look at the evidence.
    Escalate,
    /// No usable verdict yet (none, stale, or for another revision): ask again later.
    Wait,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Proceed => "proceed",
            Action::Rollback => "rollback",
            Action::Escalate => "escalate",
            Action::Wait => "wait",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the gate judges a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatePolicy {
    /// How old a verdict's evidence (its execution event's `occurred_at`) may be and
    /// still decide a rollout; older verdicts are stale and the answer is `wait`.
    pub freshness: chrono::Duration,
}

/// The gate's answer for one (tenant, contract). The verdict fields describe the latest
/// verdict found, also when it could not be used (stale, other revision), so an
/// operator sees why the answer is `wait`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateAnswer {
    pub tenant_id: String,
    pub contract_id: String,
    /// True only for a fresh PASS for the asked revision.
    pub authorized: bool,
    pub action: Action,
    pub verdict: Option<VerdictResult>,
    pub audit_id: Option<Uuid>,
    /// The revision the verdict is for (not necessarily the asked one).
    pub contract_revision: Option<i64>,
    pub failed_checks: Vec<String>,
    pub audited_at: Option<DateTime<Utc>>,
    pub reason: String,
}

/// Decides whether the rollout of `contract_id` may proceed, given the latest rollout
/// status of that contract (if any), the asked `revision` (if the caller pins one) and
/// the current time. Only a fresh PASS for the asked revision is authorized.
pub fn decide(
    tenant_id: &str,
    contract_id: &str,
    status: Option<&RolloutStatus>,
    revision: Option<i64>,
    policy: &GatePolicy,
    now: DateTime<Utc>,
) -> GateAnswer {
    let answer = |action: Action, reason: String, status: Option<&RolloutStatus>| GateAnswer {
        tenant_id: tenant_id.to_owned(),
        contract_id: contract_id.to_owned(),
        authorized: action == Action::Proceed,
        action,
        verdict: status.map(|s| s.verdict),
        audit_id: status.map(|s| s.audit_id),
        contract_revision: status.map(|s| s.contract_revision),
        failed_checks: status.map(|s| s.failed_checks.clone()).unwrap_or_default(),
        audited_at: status.map(|s| s.audited_at),
        reason,
    };

    // A status of another tenant or contract is not this contract's verdict; showing it
    // would leak it across tenants.
    let Some(status) = status.filter(|s| s.tenant_id == tenant_id && s.contract_id == contract_id)
    else {
        return answer(
            Action::Wait,
            "no verdict for this contract yet".to_owned(),
            None,
        );
    };

    if let Some(asked) = revision {
        if status.contract_revision != asked {
            let reason = format!(
                "latest verdict ({}) is for contract revision {}, not the asked revision {asked}",
                status.verdict.as_str(),
                status.contract_revision
            );
            return answer(Action::Wait, reason, Some(status));
        }
    }

    let age = now.signed_duration_since(status.occurred_at);
    if age > policy.freshness {
        let reason = format!(
            "latest verdict ({}) is stale: its evidence is {} s old, the freshness limit is {} s",
            status.verdict.as_str(),
            age.num_seconds(),
            policy.freshness.num_seconds()
        );
        return answer(Action::Wait, reason, Some(status));
    }

    let revision = status.contract_revision;
    match status.verdict {
        CheckResult::Pass => answer(
            Action::Proceed,
            format!("verdict PASS for contract revision {revision}: rollout authorized"),
            Some(status),
        ),
        CheckResult::Fail => answer(
            Action::Rollback,
            format!(
                "verdict FAIL for contract revision {revision}: failed checks {}",
                status.failed_checks.join(", ")
            ),
            Some(status),
        ),
        CheckResult::Inconclusive => answer(
            Action::Escalate,
            format!(
                "verdict INCONCLUSIVE for contract revision {revision}: an operator must review the evidence"
            ),
            Some(status),
        ),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
    }

    fn policy() -> GatePolicy {
        GatePolicy {
            freshness: Duration::hours(1),
        }
    }

    fn status(verdict: VerdictResult, revision: i64, age: Duration) -> RolloutStatus {
        RolloutStatus {
            tenant_id: "acme".into(),
            contract_id: "contract-1".into(),
            contract_revision: revision,
            job_id: "job-1".into(),
            verdict,
            audit_id: Uuid::from_u128(7),
            failed_checks: if verdict == CheckResult::Fail {
                vec!["A-001".into(), "A-006".into()]
            } else {
                vec![]
            },
            occurred_at: now() - age,
            audited_at: now() - age + Duration::seconds(2),
        }
    }

    #[test]
    fn gate_follows_its_decision_table() {
        use CheckResult::{Fail, Inconclusive, Pass};
        let fresh = Duration::minutes(5);
        let limit = Duration::hours(1);
        let ms = Duration::milliseconds(1);
        #[rustfmt::skip]
        let table: Vec<(&str, Option<RolloutStatus>, Option<i64>, Action)> = vec![
            ("no verdict", None, None, Action::Wait),
            ("no verdict for a pinned revision", None, Some(3), Action::Wait),
            ("fresh pass", Some(status(Pass, 3, fresh)), None, Action::Proceed),
            ("fresh pass for the asked revision", Some(status(Pass, 3, fresh)), Some(3), Action::Proceed),
            ("fresh fail", Some(status(Fail, 3, fresh)), Some(3), Action::Rollback),
            ("fresh inconclusive", Some(status(Inconclusive, 3, fresh)), Some(3), Action::Escalate),
            ("pass for an older revision", Some(status(Pass, 2, fresh)), Some(3), Action::Wait),
            ("pass for a newer revision", Some(status(Pass, 4, fresh)), Some(3), Action::Wait),
            ("fail for another revision", Some(status(Fail, 2, fresh)), Some(3), Action::Wait),
            ("pass exactly at the freshness limit", Some(status(Pass, 3, limit)), Some(3), Action::Proceed),
            ("pass just inside freshness", Some(status(Pass, 3, limit - ms)), Some(3), Action::Proceed),
            ("pass just past freshness", Some(status(Pass, 3, limit + ms)), Some(3), Action::Wait),
            ("stale fail", Some(status(Fail, 3, Duration::days(2))), Some(3), Action::Wait),
            ("stale inconclusive", Some(status(Inconclusive, 3, Duration::days(2))), None, Action::Wait),
            ("evidence stamped slightly in the future", Some(status(Pass, 3, -Duration::seconds(5))), None, Action::Proceed),
        ];
        for (case, status, revision, action) in table {
            let answer = decide(
                "acme",
                "contract-1",
                status.as_ref(),
                revision,
                &policy(),
                now(),
            );
            assert_eq!(answer.action, action, "{case}");
            assert_eq!(answer.authorized, action == Action::Proceed, "{case}");
            assert_eq!(answer.tenant_id, "acme");
            assert_eq!(answer.contract_id, "contract-1");
        }
    }

    #[test]
    fn never_authorized_unless_a_fresh_pass_for_the_asked_revision() {
        let ages = [
            Duration::zero(),
            Duration::minutes(59),
            Duration::hours(1),
            Duration::hours(1) + Duration::seconds(1),
            Duration::days(30),
        ];
        for verdict in [
            CheckResult::Pass,
            CheckResult::Fail,
            CheckResult::Inconclusive,
        ] {
            for age in ages {
                for stored_revision in [2, 3] {
                    for asked in [None, Some(3)] {
                        let s = status(verdict, stored_revision, age);
                        let answer =
                            decide("acme", "contract-1", Some(&s), asked, &policy(), now());
                        let fresh = age <= policy().freshness;
                        let right_revision = asked.is_none_or(|r| r == stored_revision);
                        let expected = verdict == CheckResult::Pass && fresh && right_revision;
                        assert_eq!(
                            answer.authorized, expected,
                            "{verdict:?} age {age} stored {stored_revision} asked {asked:?}"
                        );
                    }
                }
            }
        }
        let none = decide("acme", "contract-1", None, None, &policy(), now());
        assert!(!none.authorized);
    }

    #[test]
    fn missing_verdict_answers_wait_with_no_verdict_info() {
        let answer = decide("acme", "contract-1", None, Some(3), &policy(), now());
        assert_eq!(
            answer,
            GateAnswer {
                tenant_id: "acme".into(),
                contract_id: "contract-1".into(),
                authorized: false,
                action: Action::Wait,
                verdict: None,
                audit_id: None,
                contract_revision: None,
                failed_checks: vec![],
                audited_at: None,
                reason: "no verdict for this contract yet".into(),
            }
        );
    }

    #[test]
    fn fail_answers_rollback_and_lists_the_failed_checks() {
        let s = status(CheckResult::Fail, 3, Duration::minutes(1));
        let answer = decide("acme", "contract-1", Some(&s), Some(3), &policy(), now());
        assert_eq!(answer.action, Action::Rollback);
        assert_eq!(answer.failed_checks, ["A-001", "A-006"]);
        assert_eq!(answer.verdict, Some(CheckResult::Fail));
        assert_eq!(answer.audit_id, Some(s.audit_id));
        assert_eq!(answer.contract_revision, Some(3));
        assert_eq!(answer.audited_at, Some(s.audited_at));
        assert_eq!(
            answer.reason,
            "verdict FAIL for contract revision 3: failed checks A-001, A-006"
        );
    }

    #[test]
    fn stale_verdict_answers_wait_but_shows_the_verdict_found() {
        let s = status(CheckResult::Fail, 3, Duration::hours(2));
        let answer = decide("acme", "contract-1", Some(&s), Some(3), &policy(), now());
        assert_eq!(answer.action, Action::Wait);
        assert_eq!(answer.verdict, Some(CheckResult::Fail));
        assert_eq!(answer.audit_id, Some(s.audit_id));
        assert_eq!(answer.failed_checks, ["A-001", "A-006"]);
        assert_eq!(
            answer.reason,
            "latest verdict (FAIL) is stale: its evidence is 7200 s old, the freshness limit is 3600 s"
        );
    }

    #[test]
    fn revision_mismatch_answers_wait_but_shows_the_revision_found() {
        let s = status(CheckResult::Pass, 2, Duration::minutes(1));
        let answer = decide("acme", "contract-1", Some(&s), Some(3), &policy(), now());
        assert_eq!(answer.action, Action::Wait);
        assert!(!answer.authorized);
        assert_eq!(answer.verdict, Some(CheckResult::Pass));
        assert_eq!(answer.contract_revision, Some(2));
        assert_eq!(
            answer.reason,
            "latest verdict (PASS) is for contract revision 2, not the asked revision 3"
        );
    }

    #[test]
    fn a_status_of_another_tenant_or_contract_is_never_used_or_shown() {
        let mut other_tenant = status(CheckResult::Pass, 3, Duration::minutes(1));
        other_tenant.tenant_id = "globex".into();
        let mut other_contract = status(CheckResult::Pass, 3, Duration::minutes(1));
        other_contract.contract_id = "contract-2".into();
        for s in [other_tenant, other_contract] {
            let answer = decide("acme", "contract-1", Some(&s), None, &policy(), now());
            assert_eq!(answer.action, Action::Wait);
            assert_eq!(answer.verdict, None);
            assert_eq!(answer.audit_id, None);
        }
    }

    #[test]
    fn actions_display_and_serialize_in_lower_case() {
        for (action, text) in [
            (Action::Proceed, "proceed"),
            (Action::Rollback, "rollback"),
            (Action::Escalate, "escalate"),
            (Action::Wait, "wait"),
        ] {
            assert_eq!(action.to_string(), text);
            assert_eq!(
                serde_json::to_value(action).unwrap(),
                serde_json::json!(text)
            );
        }
    }

    #[test]
    fn gate_answer_round_trips_through_json() {
        let s = status(CheckResult::Fail, 3, Duration::minutes(1));
        let answer = decide("acme", "contract-1", Some(&s), None, &policy(), now());
        let text = serde_json::to_string(&answer).unwrap();
        assert!(text.contains(r#""action":"rollback""#));
        let back: GateAnswer = serde_json::from_str(&text).unwrap();
        assert_eq!(back, answer);
    }
}
