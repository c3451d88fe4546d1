//! Validation audit (SPEC §3): Theus recipes, rule checks, failure counters and the ring
//! log.
//!
//! [`evaluate`] runs the rules of an event's process and phase, in file order, and
//! returns the STOP / ABORT / BLOCK / WARN decisions they lead to. A failing rule counts
//! against its key (`{tenant}:{process}:{phase}:{field}`) and decides by its level; a
//! passing rule may reset its key. Every step is written to the partition's ring log.
//!
//! # Guarantee
//!
//! `evaluate` is a function of the recipes, the [`ValidationState`], the event and its
//! source position: it reads no clock, does no I/O and derives every decision id from the
//! event's id (`output_id`). So, provided a partition's events are evaluated in offset
//! order and its state is checkpointed together with the offset it covers, restoring the
//! checkpoint and replaying from that offset ends with exactly the counts, ring log and
//! decisions (ids included) of an uninterrupted run.

mod counter;
mod recipe;
mod ring_log;
mod rule;

pub use counter::{CounterLimits, Evictions, FailOutcome, FailureCounter};
pub use recipe::{AuditDefaults, ProcessRecipe, RecipeError, Recipes, Rule};
pub use ring_log::{RingEntry, RingLog, Stamp};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::event::{
    output_id, AuditDecision, OutputKind, Phase, SourceRef, ValidationEvent, SCHEMA_VERSION,
};

/// Operator state of one partition: failure counters and the ring log. Checkpointed as
/// JSON together with the offset it covers, and restored when the partition is assigned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationState {
    pub counter: FailureCounter,
    pub ring: RingLog,
}

impl ValidationState {
    /// Fresh state: no counts, an empty ring log of `ring_capacity` entries.
    pub fn new(ring_capacity: usize) -> Self {
        ValidationState {
            counter: FailureCounter::new(),
            ring: RingLog::new(ring_capacity),
        }
    }
}

/// Runs every rule of the event's process and phase in file order; returns the decisions
/// (STOP/ABORT/BLOCK/WARN) in rule order.
///
/// The ring log first takes the recipes' `ring_capacity` (keeping its newest entries), so
/// a reloaded capacity applies to restored state too. The event's `occurred_at` then
/// advances the partition's clock, which evicts idle keys, and a new failing key at the
/// bound of `limits` evicts the least recently seen ones (see [`FailureCounter`]). Rules whose value is absent or null
/// are skipped without a trace; a process without a recipe, or without rules for the
/// event's phase, changes nothing.
pub fn evaluate(
    recipes: &Recipes,
    event: &ValidationEvent,
    source: &SourceRef,
    state: &mut ValidationState,
    limits: &CounterLimits,
) -> Vec<AuditDecision> {
    let defaults = recipes.defaults();
    if state.ring.capacity() != defaults.ring_capacity {
        state.ring.set_capacity(defaults.ring_capacity);
    }
    let stamp = Stamp {
        at: event.occurred_at,
        offset: source.offset,
    };
    state.counter.advance(&mut state.ring, limits, stamp);
    let Some(rules) = recipes
        .process(&event.process)
        .and_then(|recipe| recipe.rules(event.phase))
    else {
        return Vec::new();
    };

    // The source id as text, for the decisions' ids: written once, when a rule first
    // decides.
    let mut event_id = None;
    let mut decisions = Vec::new();
    // `tenant:process:phase:field`, rewritten for each rule in one buffer: most rules
    // only count, and a counted key that is already tracked is never copied.
    let mut key = String::new();

    for rule in rules {
        let value = match event.phase {
            Phase::Input => event.values.get(rule.field()),
            Phase::Output => resolve(&event.values, rule.field()),
        };
        let Some(value) = value.filter(|v| !v.is_null()) else {
            continue;
        };
        key.clear();
        for (i, part) in [
            event.tenant_id.as_str(),
            event.process.as_str(),
            event.phase.as_str(),
            rule.field(),
        ]
        .into_iter()
        .enumerate()
        {
            if i > 0 {
                key.push(':');
            }
            key.push_str(part);
        }
        let ValidationState { counter, ring } = state;

        let Some(message) = rule.violation(value) else {
            counter.log_success(ring, defaults, &key, stamp);
            continue;
        };
        counter.make_room(ring, limits, &key, stamp);
        ring.record(stamp, &key, format!("VIOLATION: {message}"));
        let outcome = counter.log_fail(
            ring,
            defaults,
            &key,
            rule.level(),
            rule.max_threshold(),
            stamp,
        );
        let Some(decision) = outcome.decision else {
            continue;
        };
        let ordinal = u32::try_from(decisions.len()).unwrap_or(u32::MAX);
        decisions.push(AuditDecision {
            schema_version: SCHEMA_VERSION,
            event_id: output_id(
                event_id.get_or_insert_with(|| event.event_id.to_string()),
                OutputKind::Decision,
                ordinal,
            ),
            tenant_id: event.tenant_id.clone(),
            key: key.clone(),
            process: event.process.clone(),
            phase: event.phase,
            field: rule.field().to_owned(),
            level: outcome.level,
            decision,
            count: outcome.count,
            threshold: outcome.threshold,
            message,
            occurred_at: event.occurred_at,
            source: source.clone(),
        });
    }
    decisions
}

/// The value at a dot path through nested objects; `None` when a segment is missing or
/// something on the way is not an object.
fn resolve<'a>(values: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut segments = path.split('.');
    let mut value = values.get(segments.next()?)?;
    for segment in segments {
        value = value.as_object()?.get(segment)?;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::event::{DecisionKind, Level};

    const TRANSFER: &str = r#"
process_recipes:
  p_transfer:
    inputs:
      - { field: amount, min: 100, message: "Amount must be >= 100", level: B, max_threshold: 1 }
      - { field: dest, regex: "^User.*", level: C }
    outputs:
      - { field: domain.balance, max: 5000 }
"#;

    /// Drives `evaluate` with successive offsets, like one partition would.
    struct Partition {
        recipes: Recipes,
        state: ValidationState,
        offset: i64,
    }

    impl Partition {
        fn new(yaml: &str) -> Self {
            let recipes = Recipes::parse(yaml).unwrap();
            let state = ValidationState::new(recipes.defaults().ring_capacity);
            Partition {
                recipes,
                state,
                offset: 0,
            }
        }

        fn send(
            &mut self,
            process: &str,
            phase: Phase,
            values: serde_json::Value,
        ) -> Vec<AuditDecision> {
            let event = event(process, phase, values, self.offset);
            let source = source_of(&event, self.offset);
            self.offset += 1;
            evaluate(
                &self.recipes,
                &event,
                &source,
                &mut self.state,
                &CounterLimits::default(),
            )
        }

        fn input(&mut self, values: serde_json::Value) -> Vec<AuditDecision> {
            self.send("p", Phase::Input, values)
        }

        fn ring(&self) -> Vec<(String, String)> {
            self.state
                .ring
                .entries()
                .map(|e| (e.key.clone(), e.message.clone()))
                .collect()
        }

        fn ring_messages(&self) -> Vec<String> {
            self.state
                .ring
                .entries()
                .map(|e| e.message.clone())
                .collect()
        }
    }

    fn at(offset: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + offset * 60, 0).unwrap()
    }

    fn event(
        process: &str,
        phase: Phase,
        values: serde_json::Value,
        offset: i64,
    ) -> ValidationEvent {
        let serde_json::Value::Object(values) = values else {
            panic!("values must be an object");
        };
        ValidationEvent {
            schema_version: SCHEMA_VERSION,
            event_id: Uuid::from_u128(0x1000 + offset as u128),
            tenant_id: "acme".into(),
            occurred_at: at(offset),
            process: process.into(),
            phase,
            values,
        }
    }

    fn source_of(event: &ValidationEvent, offset: i64) -> SourceRef {
        SourceRef {
            topic: "audit.validation.v1".into(),
            partition: 3,
            offset,
            event_id: event.event_id,
        }
    }

    fn kinds(decisions: &[AuditDecision]) -> Vec<DecisionKind> {
        decisions.iter().map(|d| d.decision).collect()
    }

    fn one_rule(audit: &str, rule: &str) -> String {
        format!("audit: {{ {audit} }}\nprocess_recipes:\n  p:\n    inputs:\n      - {rule}\n")
    }

    // ---- Fallback priority (seed 003) ---------------------------------------------

    #[test]
    fn level_comes_first_from_the_rule() {
        let mut p = Partition::new(&one_rule("level: B", "{ field: a, min: 1, level: A }"));
        let d = p.input(json!({"a": 0}));
        assert_eq!(kinds(&d), vec![DecisionKind::Abort]);
        assert_eq!(d[0].level, Level::A);
    }

    #[test]
    fn level_falls_back_to_the_global_audit_level() {
        let mut p = Partition::new(&one_rule("level: S", "{ field: a, min: 1 }"));
        let d = p.input(json!({"a": 0}));
        assert_eq!(kinds(&d), vec![DecisionKind::Stop]);
        assert_eq!(d[0].level, Level::S);
    }

    #[test]
    fn level_defaults_to_block_without_rule_or_global_level() {
        let mut p = Partition::new(&one_rule("", "{ field: a, min: 1 }"));
        for _ in 0..3 {
            assert!(p.input(json!({"a": 0})).is_empty());
        }
        let d = p.input(json!({"a": 0}));
        assert_eq!(kinds(&d), vec![DecisionKind::Block]);
        assert_eq!(d[0].level, Level::B);
    }

    #[test]
    fn threshold_comes_first_from_the_rule_max_threshold() {
        let mut p = Partition::new(&one_rule(
            "threshold_max: 5",
            "{ field: a, min: 1, max_threshold: 1 }",
        ));
        assert!(p.input(json!({"a": 0})).is_empty());
        let d = p.input(json!({"a": 0}));
        assert_eq!(kinds(&d), vec![DecisionKind::Block]);
        assert_eq!((d[0].count, d[0].threshold), (2, 1));
    }

    #[test]
    fn threshold_falls_back_to_the_global_threshold_max() {
        let mut p = Partition::new(&one_rule("threshold_max: 2", "{ field: a, min: 1 }"));
        assert!(p.input(json!({"a": 0})).is_empty());
        assert!(p.input(json!({"a": 0})).is_empty());
        let d = p.input(json!({"a": 0}));
        assert_eq!(kinds(&d), vec![DecisionKind::Block]);
        assert_eq!((d[0].count, d[0].threshold), (3, 2));
    }

    #[test]
    fn threshold_defaults_to_three_without_rule_or_global_threshold() {
        let mut p = Partition::new(&one_rule("", "{ field: a, min: 1 }"));
        let mut all = Vec::new();
        for _ in 0..4 {
            all.extend(p.input(json!({"a": 0})));
        }
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].count, all[0].threshold), (4, 3));
    }

    // ---- Skip conditions (seed 003) -------------------------------------------------

    #[test]
    fn a_process_without_a_recipe_is_not_validated_at_all() {
        let mut p = Partition::new(TRANSFER);
        let d = p.send("p_unknown", Phase::Input, json!({"amount": 1}));
        assert!(d.is_empty());
        assert_eq!(p.state.ring.len(), 0);
        assert_eq!(p.state.counter.tracked_keys(), 0);
    }

    #[test]
    fn a_recipe_without_inputs_skips_input_validation() {
        let mut p = Partition::new(
            "process_recipes:\n  p:\n    outputs:\n      - { field: a, min: 1, level: S }\n",
        );
        assert!(p.send("p", Phase::Input, json!({"a": 0})).is_empty());
        assert_eq!(p.state.ring.len(), 0);
        assert_eq!(
            kinds(&p.send("p", Phase::Output, json!({"a": 0}))),
            vec![DecisionKind::Stop]
        );
    }

    #[test]
    fn a_recipe_without_outputs_skips_output_validation() {
        let mut p = Partition::new(&one_rule("", "{ field: a, min: 1, level: S }"));
        assert!(p.send("p", Phase::Output, json!({"a": 0})).is_empty());
        assert_eq!(p.state.ring.len(), 0);
        assert_eq!(kinds(&p.input(json!({"a": 0}))), vec![DecisionKind::Stop]);
    }

    #[test]
    fn a_field_absent_from_the_values_skips_that_rule() {
        let mut p = Partition::new(TRANSFER);
        let d = p.send("p_transfer", Phase::Input, json!({"dest": "User1"}));
        assert!(d.is_empty());
        assert_eq!(
            p.ring(),
            vec![("acme:p_transfer:input:dest".into(), "Success".into())]
        );
    }

    #[test]
    fn a_null_value_after_path_resolution_skips_that_rule() {
        let mut p = Partition::new(TRANSFER);
        assert!(p
            .send(
                "p_transfer",
                Phase::Output,
                json!({"domain": {"balance": null}})
            )
            .is_empty());
        assert!(p
            .send("p_transfer", Phase::Input, json!({"amount": null}))
            .is_empty());
        assert_eq!(p.state.ring.len(), 0);
    }

    #[test]
    fn a_missing_segment_or_non_object_on_the_path_skips_that_rule() {
        let mut p = Partition::new(TRANSFER);
        for values in [
            json!({"domain": {}}),
            json!({"domain": 5}),
            json!({"domain": [{"balance": 9999}]}),
            json!({"domain.balance": 9999}),
        ] {
            assert!(p.send("p_transfer", Phase::Output, values).is_empty());
        }
        assert_eq!(p.state.ring.len(), 0);
    }

    #[test]
    fn a_nested_output_path_is_resolved_through_objects() {
        let mut p = Partition::new(
            "process_recipes:\n  p:\n    outputs:\n      - { field: domain.account.balance, max: 5000, level: A }\n",
        );
        let d = p.send(
            "p",
            Phase::Output,
            json!({"domain": {"account": {"balance": 5001}}}),
        );
        assert_eq!(kinds(&d), vec![DecisionKind::Abort]);
        assert_eq!(d[0].key, "acme:p:output:domain.account.balance");
        assert_eq!(d[0].field, "domain.account.balance");
        assert_eq!(d[0].phase, Phase::Output);
        assert_eq!(d[0].message, "domain.account.balance must be <= 5000");
    }

    #[test]
    fn an_input_field_is_looked_up_by_its_plain_name() {
        let mut p = Partition::new(&one_rule("", "{ field: a.b, min: 1, level: S }"));
        assert!(p.input(json!({"a": {"b": 0}})).is_empty());
        assert_eq!(kinds(&p.input(json!({"a.b": 0}))), vec![DecisionKind::Stop]);
    }

    // ---- Levels -----------------------------------------------------------------------

    #[test]
    fn stop_decides_on_every_failure_ignoring_the_threshold() {
        let mut p = Partition::new(&one_rule(
            "",
            "{ field: a, min: 1, level: S, max_threshold: 10 }",
        ));
        for n in 1..=3 {
            let d = p.input(json!({"a": 0}));
            assert_eq!(kinds(&d), vec![DecisionKind::Stop]);
            assert_eq!((d[0].count, d[0].threshold), (n, 10));
        }
    }

    #[test]
    fn abort_decides_on_every_failure_ignoring_the_threshold() {
        let mut p = Partition::new(&one_rule("", "{ field: a, min: 1, level: A }"));
        for n in 1..=3 {
            let d = p.input(json!({"a": 0}));
            assert_eq!(kinds(&d), vec![DecisionKind::Abort]);
            assert_eq!((d[0].count, d[0].threshold), (n, 3));
        }
    }

    #[test]
    fn count_level_only_counts() {
        let mut p = Partition::new(&one_rule(
            "threshold_min: 1",
            "{ field: a, min: 1, level: C }",
        ));
        for _ in 0..10 {
            assert!(p.input(json!({"a": 0})).is_empty());
        }
        assert_eq!(p.state.counter.count("acme:p:input:a"), 10);
        assert!(!p.ring_messages().iter().any(|m| m.starts_with("WARN")));
    }

    #[test]
    fn block_fires_on_fourth_failure_with_default_threshold() {
        let mut p = Partition::new(&one_rule("", "{ field: a, min: 1 }"));
        let counts: Vec<usize> = (0..4).map(|_| p.input(json!({"a": 0})).len()).collect();
        assert_eq!(counts, vec![0, 0, 0, 1]);
    }

    #[test]
    fn block_fires_on_every_later_failure_without_resetting_the_counter() {
        let mut p = Partition::new(&one_rule("", "{ field: a, min: 1 }"));
        for _ in 0..3 {
            p.input(json!({"a": 0}));
        }
        for n in 4..=8 {
            let d = p.input(json!({"a": 0}));
            assert_eq!(kinds(&d), vec![DecisionKind::Block]);
            assert_eq!(d[0].count, n);
        }
        assert_eq!(p.state.counter.count("acme:p:input:a"), 8);
    }

    #[test]
    fn threshold_min_warns_with_a_ring_entry_until_block() {
        let mut p = Partition::new(&one_rule("threshold_min: 2", "{ field: a, min: 1 }"));
        let got: Vec<Vec<DecisionKind>> =
            (0..5).map(|_| kinds(&p.input(json!({"a": 0})))).collect();
        assert_eq!(
            got,
            vec![
                vec![],
                vec![DecisionKind::Warn],
                vec![DecisionKind::Warn],
                vec![DecisionKind::Block],
                vec![DecisionKind::Block],
            ]
        );
        let warns: Vec<String> = p
            .ring_messages()
            .into_iter()
            .filter(|m| m.starts_with("WARN"))
            .collect();
        assert_eq!(
            warns,
            vec![
                "WARN: Approaching threshold (2/3)",
                "WARN: Approaching threshold (3/3)"
            ]
        );
    }

    #[test]
    fn threshold_min_zero_never_warns() {
        let mut p = Partition::new(&one_rule("threshold_min: 0", "{ field: a, min: 1 }"));
        for _ in 0..3 {
            assert!(p.input(json!({"a": 0})).is_empty());
        }
    }

    #[test]
    fn ring_entries_of_a_failure_read_violation_then_fail_then_warn() {
        let mut p = Partition::new(&one_rule("threshold_min: 1", "{ field: a, min: 1 }"));
        p.input(json!({"a": 0}));
        let key = "acme:p:input:a".to_owned();
        assert_eq!(
            p.ring(),
            vec![
                (key.clone(), "VIOLATION: a must be >= 1".into()),
                (key.clone(), "Fail #1".into()),
                (key, "WARN: Approaching threshold (1/3)".into()),
            ]
        );
        let entry = p.state.ring.entries().next().unwrap();
        assert_eq!((entry.at, entry.offset), (at(0), 0));
    }

    // ---- Reset on success --------------------------------------------------------------

    #[test]
    fn a_pass_resets_the_count_with_reset_on_success() {
        let mut p = Partition::new(&one_rule("reset_on_success: true", "{ field: a, min: 1 }"));
        for _ in 0..3 {
            p.input(json!({"a": 0}));
        }
        assert!(p.input(json!({"a": 1})).is_empty());
        assert_eq!(p.state.counter.count("acme:p:input:a"), 0);
        assert_eq!(p.state.counter.tracked_keys(), 0);
        for _ in 0..3 {
            assert!(p.input(json!({"a": 0})).is_empty());
        }
        assert_eq!(p.ring_messages()[6], "Success");
    }

    #[test]
    fn a_pass_keeps_the_count_without_reset_on_success() {
        let mut p = Partition::new(&one_rule("reset_on_success: false", "{ field: a, min: 1 }"));
        for _ in 0..3 {
            p.input(json!({"a": 0}));
        }
        assert!(p.input(json!({"a": 1})).is_empty());
        assert_eq!(p.state.counter.count("acme:p:input:a"), 3);
        assert_eq!(kinds(&p.input(json!({"a": 0}))), vec![DecisionKind::Block]);
    }

    #[test]
    fn threshold_max_alias_on_a_rule_sets_its_threshold() {
        let mut p = Partition::new(&one_rule("", "{ field: a, min: 1, threshold_max: 0 }"));
        let d = p.input(json!({"a": 0}));
        assert_eq!(kinds(&d), vec![DecisionKind::Block]);
        assert_eq!(d[0].threshold, 0);
    }

    // ---- Decisions ----------------------------------------------------------------------

    #[test]
    fn a_decision_carries_every_wire_field() {
        let mut p = Partition::new(TRANSFER);
        p.send("p_transfer", Phase::Input, json!({"amount": 5}));
        let d = p.send(
            "p_transfer",
            Phase::Input,
            json!({"amount": 5, "dest": "x"}),
        );
        assert_eq!(d.len(), 1);
        let ev = event("p_transfer", Phase::Input, json!({}), 1);
        assert_eq!(
            d[0],
            AuditDecision {
                schema_version: SCHEMA_VERSION,
                event_id: output_id(&ev.event_id.to_string(), OutputKind::Decision, 0),
                tenant_id: "acme".into(),
                key: "acme:p_transfer:input:amount".into(),
                process: "p_transfer".into(),
                phase: Phase::Input,
                field: "amount".into(),
                level: Level::B,
                decision: DecisionKind::Block,
                count: 2,
                threshold: 1,
                message: "Amount must be >= 100".into(),
                occurred_at: at(1),
                source: source_of(&ev, 1),
            }
        );
        assert_eq!(p.state.counter.count("acme:p_transfer:input:dest"), 1);
    }

    #[test]
    fn decisions_come_in_rule_order_with_ordinal_ids() {
        let mut p = Partition::new(
            "process_recipes:\n  p:\n    inputs:\n      - { field: a, min: 1, level: A }\n      - { field: b, min: 1, level: C }\n      - { field: c, min: 1, level: S }\n",
        );
        let d = p.input(json!({"c": 0, "b": 0, "a": 0}));
        assert_eq!(kinds(&d), vec![DecisionKind::Abort, DecisionKind::Stop]);
        let source = Uuid::from_u128(0x1000).to_string();
        assert_eq!(d[0].event_id, output_id(&source, OutputKind::Decision, 0));
        assert_eq!(d[1].event_id, output_id(&source, OutputKind::Decision, 1));
        assert_eq!(d[1].field, "c");
    }

    #[test]
    fn the_same_events_from_the_same_state_give_the_same_decisions_and_state() {
        let run = || {
            let mut p = Partition::new(&one_rule("threshold_min: 2", "{ field: a, min: 1 }"));
            let d: Vec<AuditDecision> = (0..6).flat_map(|_| p.input(json!({"a": 0}))).collect();
            (d, p.state)
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn a_restored_checkpoint_continues_exactly_where_it_left_off() {
        let yaml = one_rule("threshold_min: 2", "{ field: a, min: 1 }");
        let mut straight = Partition::new(&yaml);
        let mut resumed = Partition::new(&yaml);
        for _ in 0..2 {
            straight.input(json!({"a": 0}));
            resumed.input(json!({"a": 0}));
        }
        let json = serde_json::to_string(&resumed.state).unwrap();
        resumed.state = serde_json::from_str(&json).unwrap();
        for _ in 0..3 {
            assert_eq!(
                straight.input(json!({"a": 0})),
                resumed.input(json!({"a": 0}))
            );
        }
        assert_eq!(straight.state, resumed.state);
    }

    #[test]
    fn a_passing_event_emits_nothing_and_logs_success() {
        let mut p = Partition::new(TRANSFER);
        let d = p.send(
            "p_transfer",
            Phase::Input,
            json!({"amount": 100, "dest": "UserB"}),
        );
        assert!(d.is_empty());
        assert_eq!(p.ring_messages(), vec!["Success", "Success"]);
    }

    #[test]
    fn the_ring_takes_the_capacity_of_the_recipes() {
        let mut p = Partition::new(&one_rule(
            "ring_capacity: 4",
            "{ field: a, min: 1, level: C }",
        ));
        p.state = ValidationState::new(100);
        for _ in 0..3 {
            p.input(json!({"a": 0}));
        }
        assert_eq!(p.state.ring.capacity(), 4);
        assert_eq!(
            p.ring_messages(),
            vec![
                "VIOLATION: a must be >= 1",
                "Fail #2",
                "VIOLATION: a must be >= 1",
                "Fail #3"
            ]
        );
    }
}
