//! The per-record operator: decode, audit, and the outputs a record yields.
//!
//! Everything here is a function of the record, the recipes in force and the
//! partition's state, except `audited_at` (passed in) and `duration_ms` (measured):
//! replaying the same records from the same state yields the same outputs and ids.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::chain::PartitionChains;
use crate::config::{Config, TopicsConfig};
use crate::decode::{dead_letter, Decoder, InputKind};
use crate::event::{message_key, DeadLetter, InputEvent, SourceRef};
use crate::record::Record;
use crate::schema::SchemaError;
use crate::store::{AuditRecord, StoredRecord};
use crate::validation::{self, CounterLimits, Recipes, ValidationState};
use crate::{canonical, contract, coordination, metrics};

/// Operator state of one input partition; checkpointed with the offset it covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Failure counters and ring log of the validation audit.
    pub validation: ValidationState,
    /// The hash chains of the audit records derived so far, per tenant.
    #[serde(default)]
    pub chains: PartitionChains,
}

impl PartitionState {
    pub fn new(recipes: &Recipes) -> PartitionState {
        PartitionState {
            validation: ValidationState::new(recipes.defaults().ring_capacity),
            chains: PartitionChains::default(),
        }
    }

    /// Serializes `outputs` (one record's, in emission order) into their publications
    /// and links their audit records into their chains: what to publish, with each
    /// output's role, and what to store. Each record is written to JSON once: a
    /// decision's or verdict's publication is also the text stored.
    pub fn link(
        &mut self,
        outputs: Vec<Output>,
        topics: &TopicsConfig,
    ) -> (Vec<(Publication, &'static str)>, Vec<StoredRecord>) {
        let mut publications = Vec::with_capacity(outputs.len());
        let mut stored = Vec::with_capacity(outputs.len());
        for output in outputs {
            let role = output.role();
            let published = output
                .destination(topics)
                .map(|(topic, key)| (topic, key, output.text()));
            if let Output::Audit(record) = output {
                let record = StoredRecord::append(&mut self.chains, record);
                stored.push(match &published {
                    Some((_, _, text)) => record.with_json(text.clone()),
                    None => record,
                });
            }
            if let Some((topic, key, text)) = published {
                publications.push((Publication::new(topic, key, text), role));
            }
        }
        (publications, stored)
    }
}

/// One thing a record yields.
// Outputs live for one record and are moved, not copied around: boxing the larger
// variant would cost an allocation per output for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// An audit record: stored, and published unless it is a coordination record.
    Audit(AuditRecord),
    /// A record that could not be audited: published to the DLQ.
    DeadLetter(DeadLetter),
}

/// An output as a Kafka record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    pub topic: String,
    pub key: Option<String>,
    /// The JSON bytes, serialized once and used by both `process` and the producer.
    pub payload: Vec<u8>,
}

impl Publication {
    fn new(topic: &str, key: String, text: String) -> Publication {
        Publication {
            topic: topic.to_owned(),
            key: Some(key),
            payload: text.into_bytes(),
        }
    }
}

impl Output {
    /// The Kafka record this output is published as; coordination records are only
    /// stored.
    pub fn publication(&self, topics: &TopicsConfig) -> Option<Publication> {
        let (topic, key) = self.destination(topics)?;
        Some(Publication::new(topic, key, self.text()))
    }

    /// The topic and key the output is published under; `None` for a coordination
    /// record, which is only stored.
    fn destination<'t>(&self, topics: &'t TopicsConfig) -> Option<(&'t str, String)> {
        match self {
            Output::Audit(AuditRecord::Decision(d)) => {
                Some((&topics.decisions, message_key(&d.tenant_id, &d.process)))
            }
            Output::Audit(AuditRecord::Verdict { verdict, .. }) => Some((
                &topics.verdicts,
                message_key(&verdict.tenant_id, &verdict.contract_id),
            )),
            Output::Audit(AuditRecord::Coordination(_)) => None,
            Output::DeadLetter(dl) => Some((
                &topics.dlq,
                format!(
                    "{}/{}/{}",
                    dl.source.topic, dl.source.partition, dl.source.offset
                ),
            )),
        }
    }

    /// The output's JSON: an audit record's is the text it is stored as.
    fn text(&self) -> String {
        let text = match self {
            Output::Audit(record) => record.to_json().map_err(|e| e.to_string()),
            Output::DeadLetter(dl) => canonical::to_json(dl).map_err(|e| e.to_string()),
        };
        // Serializing these plain structs cannot fail: no maps with non-string keys.
        text.expect("output events serialize to JSON")
    }

    /// What the output is, as the producer's metrics name it.
    pub fn role(&self) -> &'static str {
        match self {
            Output::Audit(AuditRecord::Decision(_)) => "decisions",
            Output::Audit(AuditRecord::Verdict { .. }) => "verdicts",
            Output::Audit(AuditRecord::Coordination(_)) => "coordination",
            Output::DeadLetter(_) => "dlq",
        }
    }

    /// The audit record to persist, if any.
    pub fn audit_record(&self) -> Option<&AuditRecord> {
        match self {
            Output::Audit(record) => Some(record),
            Output::DeadLetter(_) => None,
        }
    }
}

/// Decodes and audits records. Built once; shared by every partition.
pub struct Operator {
    decoder: Decoder,
    topics: TopicsConfig,
    /// Bounds of each partition's failure counters.
    limits: CounterLimits,
}

impl Operator {
    pub fn new(config: &Config) -> Result<Operator, SchemaError> {
        Ok(Operator {
            decoder: Decoder::new(&config.topics, &config.ingest)?,
            topics: config.topics.clone(),
            limits: config.validation.limits(),
        })
    }

    pub fn topics(&self) -> &TopicsConfig {
        &self.topics
    }

    /// Metric label of a topic's input kind.
    pub fn kind_label(&self, topic: &str) -> &'static str {
        match self.decoder.kind_of(topic) {
            Some(InputKind::Validation) => "validation",
            Some(InputKind::Execution) => "execution",
            Some(InputKind::Coordination) => "coordination",
            None => "unknown",
        }
    }

    /// Everything `record` yields, in emission order.
    pub fn process(
        &self,
        record: &Record,
        recipes: &Recipes,
        state: &mut PartitionState,
        now: DateTime<Utc>,
    ) -> Vec<Output> {
        let event = match self.decoder.decode(record) {
            Ok(event) => event,
            Err(error) => return vec![Output::DeadLetter(dead_letter(record, &error))],
        };
        let source = SourceRef {
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
            event_id: event.event_id(),
        };
        match event {
            InputEvent::Validation(event) => {
                let before = state.validation.counter.evictions();
                let decisions = validation::evaluate(
                    recipes,
                    &event,
                    &source,
                    &mut state.validation,
                    &self.limits,
                );
                let after = state.validation.counter.evictions();
                if after != before {
                    metrics::counter_keys_evicted("idle", after.idle - before.idle);
                    metrics::counter_keys_evicted("key_limit", after.key_limit - before.key_limit);
                }
                decisions
                    .into_iter()
                    .map(|d| Output::Audit(AuditRecord::Decision(d)))
                    .collect()
            }
            InputEvent::Execution(event) => {
                let started = Instant::now();
                let mut verdict = contract::audit(&event, &source, now);
                verdict.duration_ms =
                    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                vec![Output::Audit(AuditRecord::Verdict {
                    verdict,
                    occurred_at: event.occurred_at,
                })]
            }
            InputEvent::Coordination(event) => vec![Output::Audit(AuditRecord::Coordination(
                coordination::record(&event, &source),
            ))],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const RECIPES: &str = "process_recipes:\n  p_transfer:\n    inputs:\n      - { field: amount, min: 100, level: S }\n";

    fn operator() -> Operator {
        Operator::new(&Config::default()).expect("schemas compile")
    }

    fn record(topic: &str, key: &str, offset: i64, value: serde_json::Value) -> Record {
        Record {
            topic: topic.into(),
            partition: 0,
            offset,
            key: Some(key.as_bytes().to_vec()),
            payload: serde_json::to_vec(&value).expect("json"),
            timestamp: None,
        }
    }

    fn transfer(amount: i64) -> serde_json::Value {
        serde_json::json!({
            "schema_version": 1, "event_id": "0b8f1a2e-6c1d-4c7e-9f4b-1d2e3f4a5b6c",
            "tenant_id": "acme", "occurred_at": "2026-11-01T10:00:00Z",
            "process": "p_transfer", "phase": "input", "values": {"amount": amount}
        })
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap()
    }

    #[test]
    fn link_publishes_every_output_and_stores_each_audit_record_once_with_its_text() {
        use crate::bench::dataset::{Generator, Mix, RECIPES};

        let config = Config::default();
        let op = operator();
        let recipes = Recipes::parse(RECIPES).expect("recipes");
        let mut state = PartitionState::new(&recipes);
        let mut oracle = PartitionChains::default();
        let start = DateTime::from_timestamp(1_790_000_000, 0).expect("time");
        let mut roles = std::collections::BTreeMap::<&str, usize>::new();
        for record in Generator::new(5, &config.topics, start, Mix::All).take(1_000) {
            let outputs = op.process(&record, &recipes, &mut state, now());
            let (publications, stored) = state.link(outputs.clone(), op.topics());

            let expected: Vec<(Publication, &str)> = outputs
                .iter()
                .filter_map(|o| o.publication(op.topics()).map(|p| (p, o.role())))
                .collect();
            assert_eq!(publications, expected);
            let expected: Vec<StoredRecord> = outputs
                .iter()
                .filter_map(Output::audit_record)
                .map(|r| StoredRecord::append(&mut oracle, r.clone()))
                .collect();
            assert_eq!(stored, expected);
            for record in &stored {
                let json = record.json().expect("json");
                assert_eq!(json, record.record.to_json().expect("json"));
            }
            for (_, role) in &publications {
                *roles.entry(role).or_default() += 1;
            }
        }
        assert_eq!(state.chains, oracle, "the same chains");
        assert_eq!(
            roles.len(),
            3,
            "decisions, verdicts and dead letters: {roles:?}"
        );
    }

    #[test]
    fn a_failing_rule_yields_a_decision_published_under_the_process_key() {
        let recipes = Recipes::parse(RECIPES).expect("recipes");
        let mut state = PartitionState::new(&recipes);
        let op = operator();
        let outputs = op.process(
            &record("audit.validation.v1", "acme:p_transfer", 7, transfer(5)),
            &recipes,
            &mut state,
            now(),
        );
        assert_eq!(outputs.len(), 1);
        let publication = outputs[0].publication(op.topics()).expect("published");
        assert_eq!(publication.topic, "audit.decisions.v1");
        assert_eq!(publication.key.as_deref(), Some("acme:p_transfer"));
        let decision: crate::event::AuditDecision =
            serde_json::from_slice(&publication.payload).expect("decision JSON");
        assert_eq!(decision.source.offset, 7);
        assert!(outputs[0].audit_record().is_some(), "decisions are stored");
    }

    #[test]
    fn replaying_a_record_from_the_same_state_yields_the_same_outputs() {
        let recipes = Recipes::parse(RECIPES).expect("recipes");
        let op = operator();
        let r = record("audit.validation.v1", "acme:p_transfer", 1, transfer(5));
        let mut a = PartitionState::new(&recipes);
        let mut b = a.clone();
        assert_eq!(
            op.process(&r, &recipes, &mut a, now()),
            op.process(&r, &recipes, &mut b, now())
        );
        assert_eq!(a, b);
    }

    #[test]
    fn coordination_records_are_stored_but_not_published() {
        let recipes = Recipes::default();
        let mut state = PartitionState::new(&recipes);
        let op = operator();
        let value = serde_json::json!({
            "schema_version": 1, "event_id": "3f1e2d3c-4b5a-4968-8776-655443322110",
            "tenant_id": "acme", "occurred_at": "2026-11-01T10:00:00Z", "envelope_id": "env-1",
            "envelope_class": "SAFETY", "decision": "APPLIED", "reason": "r",
            "decision_timestamp": "2026-11-01T09:59:00Z", "active_envelopes_count": 2
        });
        let outputs = op.process(
            &record("audit.coordination.v1", "acme:env-1", 3, value),
            &recipes,
            &mut state,
            now(),
        );
        assert_eq!(outputs.len(), 1);
        assert!(outputs[0].publication(op.topics()).is_none());
        assert!(matches!(
            outputs[0].audit_record(),
            Some(AuditRecord::Coordination(c)) if c.envelope_id == "env-1"
        ));
    }

    #[test]
    fn a_dead_letter_is_published_to_the_dlq_under_its_position() {
        let op = operator();
        let recipes = Recipes::default();
        let mut state = PartitionState::new(&recipes);
        let mut r = record("audit.execution.v1", "acme:c", 9, serde_json::json!({}));
        r.payload = b"{not json".to_vec();
        let outputs = op.process(&r, &recipes, &mut state, now());
        let publication = outputs[0].publication(op.topics()).expect("published");
        assert_eq!(publication.topic, "audit.dlq.v1");
        assert_eq!(publication.key.as_deref(), Some("audit.execution.v1/0/9"));
        assert!(outputs[0].audit_record().is_none());
    }
}
