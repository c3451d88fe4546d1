//! Coordination decisions kept as audit records (SPEC §2, §5; seed 002).
//!
//! Pure and deterministic: the record's `audit_id` is the producer's when it supplied
//! one, else derived from the event's id, and `created_at` is the event's `occurred_at`,
//! so a replayed or retried event yields the same row and its write is a no-op.

use crate::event::{output_id, CoordinationEvent, CoordinationRecord, OutputKind, SourceRef};

/// The coordination audit record of one coordination event.
pub fn record(event: &CoordinationEvent, source: &SourceRef) -> CoordinationRecord {
    CoordinationRecord {
        audit_id: event.audit_id.unwrap_or_else(|| {
            output_id(
                &event.event_id.to_string(),
                OutputKind::CoordinationAudit,
                0,
            )
        }),
        tenant_id: event.tenant_id.clone(),
        envelope_id: event.envelope_id.clone(),
        envelope_class: event.envelope_class,
        decision: event.decision,
        reason: event.reason.clone(),
        decision_timestamp: event.decision_timestamp,
        created_at: event.occurred_at,
        conflicting_envelope_id: event.conflicting_envelope_id.clone(),
        preempting_envelope_id: event.preempting_envelope_id.clone(),
        active_envelopes_count: event.active_envelopes_count,
        source: source.clone(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use uuid::Uuid;

    use super::*;
    use crate::event::{CoordinationDecision, EnvelopeClass};

    fn event() -> CoordinationEvent {
        CoordinationEvent {
            schema_version: 1,
            event_id: Uuid::from_u128(0x11),
            tenant_id: "acme".into(),
            occurred_at: Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 5).unwrap(),
            envelope_id: "env-7".into(),
            envelope_class: EnvelopeClass::Safety,
            decision: CoordinationDecision::Preempted,
            reason: "preempted by a safety envelope".into(),
            decision_timestamp: Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap(),
            active_envelopes_count: 3,
            conflicting_envelope_id: Some("env-5".into()),
            preempting_envelope_id: Some("env-9".into()),
            audit_id: None,
        }
    }

    fn source() -> SourceRef {
        SourceRef {
            topic: "audit.coordination.v1".into(),
            partition: 2,
            offset: 41,
            event_id: Uuid::from_u128(0x11),
        }
    }

    #[test]
    fn record_copies_every_seed_column_and_the_source() {
        let e = event();
        let r = record(&e, &source());
        assert_eq!(r.tenant_id, "acme");
        assert_eq!(r.envelope_id, "env-7");
        assert_eq!(r.envelope_class, EnvelopeClass::Safety);
        assert_eq!(r.decision, CoordinationDecision::Preempted);
        assert_eq!(r.reason, e.reason);
        assert_eq!(r.decision_timestamp, e.decision_timestamp);
        assert_eq!(r.conflicting_envelope_id.as_deref(), Some("env-5"));
        assert_eq!(r.preempting_envelope_id.as_deref(), Some("env-9"));
        assert_eq!(r.active_envelopes_count, 3);
        assert_eq!(r.source, source());
    }

    #[test]
    fn created_at_is_the_event_occurred_at_not_the_clock() {
        let e = event();
        assert_eq!(record(&e, &source()).created_at, e.occurred_at);
    }

    #[test]
    fn audit_id_is_derived_from_the_event_id_when_the_producer_gave_none() {
        let e = event();
        let r = record(&e, &source());
        assert_eq!(
            r.audit_id,
            output_id(&e.event_id.to_string(), OutputKind::CoordinationAudit, 0)
        );
        assert_eq!(
            record(&e, &source()),
            r,
            "the same event gives the same record"
        );
        let mut other = e.clone();
        other.event_id = Uuid::from_u128(0x12);
        assert_ne!(record(&other, &source()).audit_id, r.audit_id);
    }

    #[test]
    fn producer_audit_id_is_kept() {
        let mut e = event();
        let supplied = Uuid::from_u128(0xabc);
        e.audit_id = Some(supplied);
        assert_eq!(record(&e, &source()).audit_id, supplied);
    }

    #[test]
    fn optional_envelope_ids_stay_absent_when_not_given() {
        let mut e = event();
        e.conflicting_envelope_id = None;
        e.preempting_envelope_id = None;
        let r = record(&e, &source());
        assert_eq!(r.conflicting_envelope_id, None);
        assert_eq!(r.preempting_envelope_id, None);
    }
}
