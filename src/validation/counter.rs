//! Failure counters and the Theus `log_fail` / `log_success` logic.
//!
//! A key's count is the number of failures since its last reset. Only keys with a
//! non-zero count (or, without `reset_on_success`, keys that ever failed) are held, so a
//! partition's state grows with the keys that are failing, not with every key it has seen.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::recipe::AuditDefaults;
use super::ring_log::{RingLog, Stamp};
use crate::event::{DecisionKind, Level};

/// What one failure led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailOutcome {
    /// The key's count after this failure.
    pub count: u32,
    /// The effective level: the rule's, else the global one.
    pub level: Level,
    /// The effective threshold: the rule's, else the global one (reported for every
    /// level, though only Block uses it).
    pub threshold: u32,
    /// STOP, ABORT, BLOCK, WARN, or nothing.
    pub decision: Option<DecisionKind>,
}

/// Failure counts by key. `BTreeMap` so a checkpoint serializes in one order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailureCounter {
    counts: BTreeMap<String, u32>,
}

impl FailureCounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// The key's failures since its last reset; 0 for a key never seen.
    pub fn count(&self, key: &str) -> u32 {
        self.counts.get(key).copied().unwrap_or(0)
    }

    /// How many keys the counter holds.
    pub fn tracked_keys(&self) -> usize {
        self.counts.len()
    }

    /// Every held key with its count, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u32)> {
        self.counts.iter().map(|(k, &n)| (k.as_str(), n))
    }

    /// Records a failure of `key` (Theus `log_fail`): counts it, appends `Fail #n` to
    /// the ring and decides with the effective level and threshold.
    ///
    /// `level` and `threshold` are the rule's overrides; `defaults` fills in what the
    /// rule leaves out. Stop and Abort decide on every failure; Block blocks once the
    /// count exceeds the threshold, and warns (with a `WARN: …` ring entry) from
    /// `threshold_min` on until then; Count only counts. Nothing resets the count here.
    pub fn log_fail(
        &mut self,
        ring: &mut RingLog,
        defaults: &AuditDefaults,
        key: &str,
        level: Option<Level>,
        threshold: Option<u32>,
        stamp: Stamp,
    ) -> FailOutcome {
        let count = match self.counts.get_mut(key) {
            Some(n) => {
                *n = n.saturating_add(1);
                *n
            }
            None => {
                self.counts.insert(key.to_owned(), 1);
                1
            }
        };
        ring.record(stamp, key, format!("Fail #{count}"));

        let level = level.unwrap_or(defaults.level);
        let threshold = threshold.unwrap_or(defaults.threshold_max);
        let decision = match level {
            Level::S => Some(DecisionKind::Stop),
            Level::A => Some(DecisionKind::Abort),
            Level::B if count > threshold => Some(DecisionKind::Block),
            Level::B if defaults.threshold_min > 0 && count >= defaults.threshold_min => {
                ring.record(
                    stamp,
                    key,
                    format!("WARN: Approaching threshold ({count}/{threshold})"),
                );
                Some(DecisionKind::Warn)
            }
            Level::B | Level::C => None,
        };
        FailOutcome {
            count,
            level,
            threshold,
            decision,
        }
    }

    /// Records a pass of `key` (Theus `log_success`): appends `Success` to the ring and,
    /// with `reset_on_success`, drops the key's count to 0.
    pub fn log_success(
        &mut self,
        ring: &mut RingLog,
        defaults: &AuditDefaults,
        key: &str,
        stamp: Stamp,
    ) {
        ring.record(stamp, key, "Success");
        if defaults.reset_on_success {
            self.counts.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::DateTime;
    use proptest::prelude::*;

    use super::*;

    fn stamp(offset: i64) -> Stamp {
        Stamp {
            at: DateTime::from_timestamp(1_700_000_000 + offset, 0).unwrap(),
            offset,
        }
    }

    fn messages(ring: &RingLog) -> Vec<&str> {
        ring.entries().map(|e| e.message.as_str()).collect()
    }

    #[test]
    fn an_unseen_key_counts_zero_and_is_not_tracked() {
        let counter = FailureCounter::new();
        assert_eq!(counter.count("t:p:input:x"), 0);
        assert_eq!(counter.tracked_keys(), 0);
    }

    #[test]
    fn each_failure_appends_fail_with_the_new_count() {
        let mut counter = FailureCounter::new();
        let mut ring = RingLog::new(10);
        let defaults = AuditDefaults {
            level: Level::C,
            ..AuditDefaults::default()
        };
        for n in 0..3 {
            counter.log_fail(&mut ring, &defaults, "k", None, None, stamp(n));
        }
        assert_eq!(messages(&ring), vec!["Fail #1", "Fail #2", "Fail #3"]);
        assert_eq!(counter.count("k"), 3);
    }

    #[test]
    fn success_with_reset_removes_the_key() {
        let mut counter = FailureCounter::new();
        let mut ring = RingLog::new(10);
        let defaults = AuditDefaults::default();
        counter.log_fail(&mut ring, &defaults, "k", None, None, stamp(0));
        counter.log_success(&mut ring, &defaults, "k", stamp(1));
        assert_eq!(counter.count("k"), 0);
        assert_eq!(counter.tracked_keys(), 0);
        assert_eq!(messages(&ring), vec!["Fail #1", "Success"]);
    }

    #[test]
    fn counter_survives_a_json_round_trip() {
        let mut counter = FailureCounter::new();
        let mut ring = RingLog::new(10);
        let defaults = AuditDefaults::default();
        counter.log_fail(&mut ring, &defaults, "b", None, None, stamp(0));
        counter.log_fail(&mut ring, &defaults, "a", None, None, stamp(1));
        counter.log_fail(&mut ring, &defaults, "a", None, None, stamp(2));
        let json = serde_json::to_string(&counter).unwrap();
        assert_eq!(json, r#"{"counts":{"a":2,"b":1}}"#);
        assert_eq!(
            serde_json::from_str::<FailureCounter>(&json).unwrap(),
            counter
        );
    }

    // ---- model-based property test -------------------------------------------------

    const KEYS: [&str; 3] = ["t:p:input:a", "t:p:input:b", "t:p:output:c.d"];

    #[derive(Debug, Clone)]
    enum Op {
        Fail {
            key: usize,
            level: Option<Level>,
            threshold: Option<u32>,
        },
        Success {
            key: usize,
        },
    }

    fn level() -> impl Strategy<Value = Level> {
        prop_oneof![
            Just(Level::S),
            Just(Level::A),
            Just(Level::B),
            Just(Level::C)
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..KEYS.len(), proptest::option::of(level()), proptest::option::of(0u32..5))
                .prop_map(|(key, level, threshold)| Op::Fail { key, level, threshold }),
            1 => (0..KEYS.len()).prop_map(|key| Op::Success { key }),
        ]
    }

    fn defaults() -> impl Strategy<Value = AuditDefaults> {
        (level(), 0u32..5, 0u32..5, any::<bool>(), 1usize..6).prop_map(
            |(level, threshold_max, threshold_min, reset_on_success, ring_capacity)| {
                AuditDefaults {
                    level,
                    threshold_max,
                    threshold_min,
                    reset_on_success,
                    ring_capacity,
                }
            },
        )
    }

    /// The Theus rules written as plainly as possible: a map of counts and a `Vec`
    /// trimmed from the front.
    struct Model {
        counts: BTreeMap<String, u32>,
        ring: Vec<(String, String, i64)>,
        capacity: usize,
    }

    impl Model {
        fn append(&mut self, key: &str, message: String, offset: i64) {
            self.ring.push((key.to_owned(), message, offset));
            if self.ring.len() > self.capacity {
                self.ring.remove(0);
            }
        }

        fn fail(
            &mut self,
            d: &AuditDefaults,
            key: &str,
            level: Option<Level>,
            threshold: Option<u32>,
            offset: i64,
        ) -> FailOutcome {
            let count = self.counts.get(key).copied().unwrap_or(0) + 1;
            self.counts.insert(key.to_owned(), count);
            self.append(key, format!("Fail #{count}"), offset);
            let level = level.unwrap_or(d.level);
            let threshold = threshold.unwrap_or(d.threshold_max);
            let mut decision = None;
            if level == Level::S {
                decision = Some(DecisionKind::Stop);
            }
            if level == Level::A {
                decision = Some(DecisionKind::Abort);
            }
            if level == Level::B {
                if count > threshold {
                    decision = Some(DecisionKind::Block);
                } else if d.threshold_min > 0 && count >= d.threshold_min {
                    decision = Some(DecisionKind::Warn);
                    let warn = format!("WARN: Approaching threshold ({count}/{threshold})");
                    self.append(key, warn, offset);
                }
            }
            FailOutcome {
                count,
                level,
                threshold,
                decision,
            }
        }

        fn success(&mut self, d: &AuditDefaults, key: &str, offset: i64) {
            self.append(key, "Success".to_owned(), offset);
            if d.reset_on_success {
                self.counts.remove(key);
            }
        }
    }

    proptest! {
        #[test]
        fn counter_and_ring_agree_with_a_plain_model_after_every_step(
            d in defaults(),
            ops in proptest::collection::vec(op(), 0..60),
        ) {
            let mut counter = FailureCounter::new();
            let mut ring = RingLog::new(d.ring_capacity);
            let mut model = Model { counts: BTreeMap::new(), ring: Vec::new(), capacity: d.ring_capacity };

            for (i, op) in ops.into_iter().enumerate() {
                let offset = i as i64;
                match op {
                    Op::Fail { key, level, threshold } => {
                        let got = counter.log_fail(&mut ring, &d, KEYS[key], level, threshold, stamp(offset));
                        let want = model.fail(&d, KEYS[key], level, threshold, offset);
                        prop_assert_eq!(got, want);
                    }
                    Op::Success { key } => {
                        counter.log_success(&mut ring, &d, KEYS[key], stamp(offset));
                        model.success(&d, KEYS[key], offset);
                    }
                }
                for key in KEYS {
                    prop_assert_eq!(counter.count(key), model.counts.get(key).copied().unwrap_or(0));
                }
                prop_assert_eq!(counter.tracked_keys(), model.counts.len());
                let got: Vec<(String, String, i64)> = ring
                    .entries()
                    .map(|e| (e.key.clone(), e.message.clone(), e.offset))
                    .collect();
                prop_assert_eq!(&got, &model.ring);
                prop_assert!(ring.entries().all(|e| e.at == stamp(e.offset).at));

                // A checkpoint restores exactly this state.
                let json = serde_json::to_string(&(&counter, &ring)).unwrap();
                let (c2, r2): (FailureCounter, RingLog) = serde_json::from_str(&json).unwrap();
                prop_assert_eq!(&c2, &counter);
                prop_assert_eq!(&r2, &ring);
            }
        }
    }
}
