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

impl RolloutStatus {
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
