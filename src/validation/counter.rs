//! Failure counters and the Theus `log_fail` / `log_success` logic, with bounded state.
//!
//! A key's count is the number of failures since its last reset. Only keys with a
//! non-zero count (or, without `reset_on_success`, keys that ever failed) are held, so a
//! partition's state grows with the keys that are failing, not with every key it has seen.
//!
//! # Bounded state
//!
//! Idleness is judged by event time, never by the wall clock: the partition's clock is
//! the newest `occurred_at` it has seen, so replaying the same records from the same
//! checkpoint evicts exactly the same keys at exactly the same records.
//!
//! - A key not seen for [`CounterLimits::idle_ttl_ms`] of event time is evicted. The
//!   check runs whenever the clock enters a new eighth of the TTL, so an idle key goes
//!   within 9/8 of the TTL and idle keys cost nothing in between.
//! - At most [`CounterLimits::max_tracked_keys`] keys are held. A new key arriving at
//!   the bound first evicts the least recently seen eighth of the keys (ties broken by
//!   key), so a flood of distinct keys costs one sort per eighth of the bound, and memory
//!   stays bounded.
//!
//! Every eviction is written to the ring log (`EVICTED: …`) and counted in
//! [`FailureCounter::evictions`], which the pipeline exports as a metric. An evicted
//! key's next failure counts as its first again: eviction is a reset.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::recipe::AuditDefaults;
use super::ring_log::{RingLog, Stamp};
use crate::event::{DecisionKind, Level};
use crate::eviction::least_recent;

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

/// Bounds of one partition's counter state (config `[validation]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterLimits {
    /// Keys held at most; at least 1.
    pub max_tracked_keys: usize,
    /// A key not seen for this long, in event time, is evicted; at least 1.
    pub idle_ttl_ms: i64,
}

impl Default for CounterLimits {
    fn default() -> Self {
        CounterLimits {
            max_tracked_keys: 100_000,
            idle_ttl_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// Keys evicted so far from one partition's counter, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evictions {
    /// Not seen for the idle TTL.
    pub idle: u64,
    /// Least recently seen when a new key arrived at the bound.
    pub key_limit: u64,
}

impl Evictions {
    pub fn total(&self) -> u64 {
        self.idle + self.key_limit
    }
}

/// A key's count and when it was last seen (event time, ms since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyCount {
    count: u32,
    last_seen_ms: i64,
}

/// Failure counts by key, with the partition's event-time clock.
///
/// A `HashMap` for constant-time lookups on the hot path; everything whose result
/// depends on order (checkpoints, eviction, [`FailureCounter::iter`]) sorts first, so
/// iteration order never shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "CounterRepr", into = "CounterRepr")]
pub struct FailureCounter {
    keys: HashMap<Box<str>, KeyCount>,
    /// The newest event time seen (ms since the epoch); never goes back.
    clock_ms: i64,
    /// Keys evicted so far in this partition.
    evictions: Evictions,
}

/// The checkpoint form: keys in order, so equal state serializes to equal bytes.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CounterRepr {
    counts: BTreeMap<String, KeyCount>,
    clock_ms: i64,
    evictions: Evictions,
}

impl From<CounterRepr> for FailureCounter {
    fn from(repr: CounterRepr) -> Self {
        FailureCounter {
            keys: repr
                .counts
                .into_iter()
                .map(|(k, v)| (k.into_boxed_str(), v))
                .collect(),
            clock_ms: repr.clock_ms,
            evictions: repr.evictions,
        }
    }
}

impl From<FailureCounter> for CounterRepr {
    fn from(counter: FailureCounter) -> Self {
        CounterRepr {
            counts: counter
                .keys
                .into_iter()
                .map(|(k, v)| (k.into_string(), v))
                .collect(),
            clock_ms: counter.clock_ms,
            evictions: counter.evictions,
        }
    }
}

/// Bytes of one heap allocation of `len` bytes, allocator header and rounding included
/// (glibc malloc: 8-byte header, 16-byte granules, 32 bytes at least).
fn allocation_bytes(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        ((len + 8).div_ceil(16) * 16).max(32)
    }
}

impl FailureCounter {
    pub fn new() -> Self {
        Self::default()
    }

    /// The key's failures since its last reset; 0 for a key never seen (or evicted).
    pub fn count(&self, key: &str) -> u32 {
        self.keys.get(key).map_or(0, |k| k.count)
    }

    /// How many keys the counter holds.
    pub fn tracked_keys(&self) -> usize {
        self.keys.len()
    }

    /// Keys evicted so far in this partition, by reason.
    pub fn evictions(&self) -> Evictions {
        self.evictions
    }

    /// Every held key with its count, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u32)> {
        let mut keys: Vec<(&str, u32)> = self
            .keys
            .iter()
            .map(|(k, v)| (k.as_ref(), v.count))
            .collect();
        keys.sort_unstable();
        keys.into_iter()
    }

    /// Heap bytes held by the counter: the hash table as std lays it out (one slot and
    /// one control byte per bucket, buckets a power of two at most 7/8 full, plus one
    /// group of trailing control bytes) and one allocation per key.
    pub fn heap_bytes(&self) -> usize {
        let capacity = self.keys.capacity();
        let buckets = match capacity {
            0 => 0,
            c if c < 8 => (c + 1).next_power_of_two(),
            c => (c * 8 / 7).next_power_of_two(),
        };
        let table = if buckets == 0 {
            0
        } else {
            allocation_bytes(buckets * (std::mem::size_of::<(Box<str>, KeyCount)>() + 1) + 16)
        };
        table
            + self
                .keys
                .keys()
                .map(|k| allocation_bytes(k.len()))
                .sum::<usize>()
    }

    /// Moves the partition clock to `stamp.at` (never back) and, when the clock enters
    /// a new eighth of the TTL, evicts every key idle for longer than the TTL.
    pub fn advance(&mut self, ring: &mut RingLog, limits: &CounterLimits, stamp: Stamp) {
        let at = stamp.at.timestamp_millis();
        if at <= self.clock_ms {
            return;
        }
        let ttl = limits.idle_ttl_ms.max(1);
        let period = (ttl / 8).max(1);
        let due = at.div_euclid(period) != self.clock_ms.div_euclid(period);
        self.clock_ms = at;
        if !due {
            return;
        }
        let cutoff = at.saturating_sub(ttl);
        let mut idle: Vec<(i64, Box<str>)> = self
            .keys
            .iter()
            .filter(|(_, v)| v.last_seen_ms < cutoff)
            .map(|(k, v)| (v.last_seen_ms, k.clone()))
            .collect();
        idle.sort_unstable();
        for (last_seen_ms, key) in idle {
            self.evictions.idle += 1;
            self.evict(ring, stamp, &key, last_seen_ms, "idle");
        }
        // Give back the memory of keys gone idle, so it stays flat however many were.
        if self.keys.capacity() > 4 * self.keys.len().max(16) {
            self.keys.shrink_to(2 * self.keys.len());
        }
    }

    /// Makes room for `key` if it is new and the counter is at its bound: evicts the
    /// least recently seen eighth of the keys (at least one).
    pub fn make_room(
        &mut self,
        ring: &mut RingLog,
        limits: &CounterLimits,
        key: &str,
        stamp: Stamp,
    ) {
        let bound = limits.max_tracked_keys.max(1);
        if self.keys.len() < bound || self.keys.contains_key(key) {
            return;
        }
        let excess = self.keys.len() + 1 - bound;
        let n = (bound / 8).max(excess);
        let entries = self.keys.iter().map(|(k, v)| (v.last_seen_ms, k.as_ref()));
        let victims: Vec<(i64, Box<str>)> = least_recent(entries, n)
            .into_iter()
            .map(|(t, k)| (t, k.into()))
            .collect();
        for (last_seen_ms, victim) in victims {
            self.evictions.key_limit += 1;
            self.evict(ring, stamp, &victim, last_seen_ms, "key limit reached");
        }
    }

    fn evict(&mut self, ring: &mut RingLog, stamp: Stamp, key: &str, last_seen_ms: i64, why: &str) {
        self.keys.remove(key);
        let since = DateTime::<Utc>::from_timestamp_millis(last_seen_ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_else(|| last_seen_ms.to_string());
        ring.record(stamp, key, format!("EVICTED: {why}, last seen {since}"));
    }

    /// Records a failure of `key` (Theus `log_fail`): counts it, appends `Fail #n` to
    /// the ring and decides with the effective level and threshold.
    ///
    /// `level` and `threshold` are the rule's overrides; `defaults` fills in what the
    /// rule leaves out. Stop and Abort decide on every failure; Block blocks once the
    /// count exceeds the threshold, and warns (with a `WARN: …` ring entry) from
    /// `threshold_min` on until then; Count only counts. Nothing resets the count here.
    /// The bound is not checked here: call [`FailureCounter::make_room`] first.
    pub fn log_fail(
        &mut self,
        ring: &mut RingLog,
        defaults: &AuditDefaults,
        key: &str,
        level: Option<Level>,
        threshold: Option<u32>,
        stamp: Stamp,
    ) -> FailOutcome {
        let seen = stamp.at.timestamp_millis();
        let count = match self.keys.get_mut(key) {
            Some(k) => {
                k.count = k.count.saturating_add(1);
                k.last_seen_ms = k.last_seen_ms.max(seen);
                k.count
            }
            None => {
                self.keys.insert(
                    key.into(),
                    KeyCount {
                        count: 1,
                        last_seen_ms: seen,
                    },
                );
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
    /// with `reset_on_success`, drops the key's count to 0 (and the key); otherwise a
    /// held key counts as seen.
    pub fn log_success(
        &mut self,
        ring: &mut RingLog,
        defaults: &AuditDefaults,
        key: &str,
        stamp: Stamp,
    ) {
        ring.record(stamp, key, "Success");
        if defaults.reset_on_success {
            self.keys.remove(key);
        } else if let Some(k) = self.keys.get_mut(key) {
            k.last_seen_ms = k.last_seen_ms.max(stamp.at.timestamp_millis());
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
        assert_eq!(
            json,
            r#"{"counts":{"a":{"count":2,"last_seen_ms":1700000002000},"b":{"count":1,"last_seen_ms":1700000000000}},"clock_ms":0,"evictions":{"idle":0,"key_limit":0}}"#
        );
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

    // ---- bounded state ---------------------------------------------------------------

    fn at_secs(secs: i64, offset: i64) -> Stamp {
        Stamp {
            at: DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap(),
            offset,
        }
    }

    fn fail(
        counter: &mut FailureCounter,
        ring: &mut RingLog,
        limits: &CounterLimits,
        key: &str,
        stamp: Stamp,
    ) -> u32 {
        counter.advance(ring, limits, stamp);
        counter.make_room(ring, limits, key, stamp);
        let defaults = AuditDefaults {
            level: Level::C,
            ..AuditDefaults::default()
        };
        counter
            .log_fail(ring, &defaults, key, None, None, stamp)
            .count
    }

    #[test]
    fn a_key_idle_for_longer_than_the_ttl_in_event_time_is_evicted_and_recorded() {
        let limits = CounterLimits {
            max_tracked_keys: 100,
            idle_ttl_ms: 80_000,
        };
        let mut counter = FailureCounter::new();
        let mut ring = RingLog::new(100);
        fail(&mut counter, &mut ring, &limits, "idle", at_secs(0, 0));
        fail(&mut counter, &mut ring, &limits, "idle", at_secs(1, 1));
        // Still within the TTL of its last failure: kept.
        fail(&mut counter, &mut ring, &limits, "busy", at_secs(80, 2));
        assert_eq!(counter.count("idle"), 2);
        // 91 s after its last failure, and the clock entered a new eighth: evicted.
        fail(&mut counter, &mut ring, &limits, "busy", at_secs(92, 3));
        assert_eq!(counter.count("idle"), 0);
        assert_eq!(counter.count("busy"), 2);
        assert_eq!(counter.evictions().total(), 1);
        let evicted: Vec<_> = ring
            .entries()
            .filter(|e| e.message.starts_with("EVICTED"))
            .map(|e| (e.key.as_str(), e.message.as_str(), e.offset))
            .collect();
        assert_eq!(
            evicted,
            vec![(
                "idle",
                "EVICTED: idle, last seen 2023-11-14T22:13:21.000Z",
                3
            )]
        );
        // The evicted key's next failure counts as its first.
        assert_eq!(
            fail(&mut counter, &mut ring, &limits, "idle", at_secs(93, 4)),
            1
        );
    }

    #[test]
    fn an_event_from_the_past_neither_moves_the_clock_back_nor_evicts() {
        let limits = CounterLimits {
            max_tracked_keys: 100,
            idle_ttl_ms: 10_000,
        };
        let mut counter = FailureCounter::new();
        let mut ring = RingLog::new(100);
        fail(&mut counter, &mut ring, &limits, "a", at_secs(100, 0));
        fail(&mut counter, &mut ring, &limits, "b", at_secs(0, 1));
        assert_eq!(counter.clock_ms, at_secs(100, 0).at.timestamp_millis());
        assert_eq!(
            (
                counter.count("a"),
                counter.count("b"),
                counter.evictions().total()
            ),
            (1, 1, 0)
        );
        // b was last seen at 0 s: gone once the clock moves on to a new eighth.
        fail(&mut counter, &mut ring, &limits, "a", at_secs(102, 2));
        assert_eq!(
            (
                counter.count("a"),
                counter.count("b"),
                counter.evictions().total()
            ),
            (2, 0, 1)
        );
    }

    #[test]
    fn a_flood_of_distinct_keys_stays_within_the_bound_and_every_eviction_is_counted() {
        let limits = CounterLimits {
            max_tracked_keys: 64,
            idle_ttl_ms: i64::MAX / 4,
        };
        let mut counter = FailureCounter::new();
        let mut ring = RingLog::new(10_000);
        for i in 0..1_000 {
            fail(
                &mut counter,
                &mut ring,
                &limits,
                &format!("t:p:input:f{i}"),
                at_secs(i, i),
            );
            assert!(counter.tracked_keys() <= 64);
        }
        assert_eq!(
            counter.evictions().total(),
            1_000 - counter.tracked_keys() as u64
        );
        let recorded = ring
            .entries()
            .filter(|e| e.message.starts_with("EVICTED: key limit reached"))
            .count();
        assert_eq!(recorded as u64, counter.evictions().total());
        // The least recently seen go first: the newest key is still there.
        assert_eq!(counter.count("t:p:input:f999"), 1);
        assert_eq!(counter.count("t:p:input:f0"), 0);
    }

    #[test]
    fn at_the_bound_a_key_already_held_evicts_nothing() {
        let limits = CounterLimits {
            max_tracked_keys: 2,
            idle_ttl_ms: i64::MAX / 4,
        };
        let mut counter = FailureCounter::new();
        let mut ring = RingLog::new(100);
        fail(&mut counter, &mut ring, &limits, "a", at_secs(0, 0));
        fail(&mut counter, &mut ring, &limits, "b", at_secs(1, 1));
        fail(&mut counter, &mut ring, &limits, "a", at_secs(2, 2));
        assert_eq!(
            (counter.tracked_keys(), counter.evictions().total()),
            (2, 0)
        );
        // A third key evicts the least recently seen one, b.
        fail(&mut counter, &mut ring, &limits, "c", at_secs(3, 3));
        assert_eq!(
            (counter.count("a"), counter.count("b"), counter.count("c")),
            (2, 0, 1)
        );
    }

    #[test]
    fn eviction_replays_identically_across_a_checkpoint() {
        let limits = CounterLimits {
            max_tracked_keys: 16,
            idle_ttl_ms: 50_000,
        };
        let key = |i: i64| format!("t:p:input:f{}", (i * 7919) % 40);
        let mut straight = (FailureCounter::new(), RingLog::new(50));
        for i in 0..200 {
            let (c, r) = &mut straight;
            fail(c, r, &limits, &key(i), at_secs(i * 3, i));
        }
        let mut resumed = (FailureCounter::new(), RingLog::new(50));
        for i in 0..200 {
            if i == 97 {
                let json = serde_json::to_string(&resumed).unwrap();
                resumed = serde_json::from_str(&json).unwrap();
            }
            let (c, r) = &mut resumed;
            fail(c, r, &limits, &key(i), at_secs(i * 3, i));
        }
        assert!(straight.0.evictions().total() > 0);
        assert_eq!(straight, resumed);
        assert_eq!(
            serde_json::to_string(&straight).unwrap(),
            serde_json::to_string(&resumed).unwrap()
        );
    }

    #[test]
    fn counter_state_takes_at_most_256_bytes_per_tracked_key() {
        // Realistic keys: `{tenant}:{process}:{phase}:{field}`, 40 to 60 characters.
        let mut counter = FailureCounter::new();
        let mut ring = RingLog::new(0);
        let defaults = AuditDefaults {
            level: Level::C,
            ..AuditDefaults::default()
        };
        let mut worst: f64 = 0.0;
        for i in 0..20_000 {
            let key = format!(
                "tenant-{:05}:payments_transfer_{}:output:domain.account.balance",
                i,
                i % 13
            );
            counter.log_fail(&mut ring, &defaults, &key, None, None, stamp(i));
            let n = counter.tracked_keys();
            // Right after each growth of the table is the worst case; sample there and
            // along the way.
            if n >= 8
                && (n.is_power_of_two() || n % 997 == 0 || n == 7 * n.next_power_of_two() / 8 + 1)
            {
                let bytes = std::mem::size_of::<FailureCounter>() + counter.heap_bytes();
                worst = worst.max(bytes as f64 / n as f64);
            }
        }
        assert!(worst > 64.0, "implausibly small: {worst:.0} bytes per key");
        assert!(worst <= 256.0, "{worst:.0} bytes per tracked key");
    }

    #[test]
    fn idle_keys_cost_nothing_once_evicted() {
        let limits = CounterLimits {
            max_tracked_keys: 10_000,
            idle_ttl_ms: 1_000,
        };
        let mut counter = FailureCounter::new();
        let mut ring = RingLog::new(0);
        for i in 0..5_000 {
            fail(
                &mut counter,
                &mut ring,
                &limits,
                &format!("k{i}"),
                at_secs(0, i),
            );
        }
        // One event much later: every idle key goes, and so does their memory.
        fail(
            &mut counter,
            &mut ring,
            &limits,
            "k-new",
            at_secs(3_600, 5_000),
        );
        assert_eq!(counter.tracked_keys(), 1);
        assert_eq!(counter.evictions().total(), 5_000);
        assert!(counter.heap_bytes() < 256);
    }
}
