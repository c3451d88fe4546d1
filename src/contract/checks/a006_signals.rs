//! A-006 signal consistency: every signal observed what was expected.
//!
//! No signals (absent or an empty list) → INCONCLUSIVE. Any signal whose `observed`
//! differs from its `expected` → FAIL. Values compare as JSON, except that numbers
//! compare by numeric value (1 equals 1.0), in arrays and objects too. Else PASS.

use serde_json::{Number, Value};

use super::{list, outcome};
use crate::event::evidence::Signals;
use crate::event::{CheckOutcome, CheckResult, Evidence, ExecutionEvent};

const ID: &str = "A-006";
const NAME: &str = "signal consistency";

/// Numbers are equal by value: exactly when both are integers, else as `f64`.
fn numbers_equal(a: &Number, b: &Number) -> bool {
    let integer = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (integer(a), integer(b)) {
        (Some(x), Some(y)) => x == y,
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
    }
}

/// JSON equality with numbers compared by value.
fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => numbers_equal(x, y),
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| values_equal(x, y))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .all(|(k, x)| ys.get(k).is_some_and(|y| values_equal(x, y)))
        }
        _ => a == b,
    }
}

pub(super) fn check(event: &ExecutionEvent) -> CheckOutcome {
    let signals = match &event.signals {
        Some(signals) if !signals.is_empty() => signals,
        _ => {
            return outcome(
                ID,
                NAME,
                CheckResult::Inconclusive,
                "no signals were reported, so consistency cannot be judged".to_owned(),
                Evidence::Signals(Signals {
                    mismatches: Vec::new(),
                    signals_compared: 0,
                }),
            );
        }
    };
    let mismatches: Vec<_> = signals
        .iter()
        .filter(|s| !values_equal(&s.expected, &s.observed))
        .collect();
    let (result, reason) = if mismatches.is_empty() {
        let reason = format!(
            "all {} signals observed their expected values",
            signals.len()
        );
        (CheckResult::Pass, reason)
    } else {
        let reason = format!(
            "signals observed values other than expected: {}",
            list(mismatches.iter().map(|s| s.name.as_str()))
        );
        (CheckResult::Fail, reason)
    };
    let evidence = Evidence::Signals(Signals {
        mismatches: mismatches.into_iter().cloned().collect(),
        signals_compared: signals.len(),
    });
    outcome(ID, NAME, result, reason, evidence)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::contract::fixture::passing_event;
    use crate::event::Signal;

    fn signal(name: &str, expected: Value, observed: Value) -> Signal {
        Signal {
            name: name.into(),
            expected,
            observed,
        }
    }

    #[test]
    fn signal_consistency_follows_its_rule_table() {
        use CheckResult::{Fail, Inconclusive, Pass};
        #[rustfmt::skip]
        let table: Vec<(&str, Option<Vec<Signal>>, CheckResult)> = vec![
            ("signals absent", None, Inconclusive),
            ("signals empty", Some(vec![]), Inconclusive),
            ("equal numbers", Some(vec![signal("a", json!(5), json!(5))]), Pass),
            ("1 equals 1.0", Some(vec![signal("a", json!(1), json!(1.0))]), Pass),
            ("negative integer equals its float", Some(vec![signal("a", json!(-3), json!(-3.0))]), Pass),
            ("0 equals -0.0", Some(vec![signal("a", json!(0), json!(-0.0))]), Pass),
            ("large integers compare exactly", Some(vec![signal("a", json!(u64::MAX), json!(u64::MAX - 1))]), Fail),
            ("different numbers", Some(vec![signal("a", json!(1), json!(1.5))]), Fail),
            ("equal strings", Some(vec![signal("a", json!("ok"), json!("ok"))]), Pass),
            ("different strings", Some(vec![signal("a", json!("ok"), json!("error"))]), Fail),
            ("number is not its string", Some(vec![signal("a", json!(1), json!("1"))]), Fail),
            ("true is not 1", Some(vec![signal("a", json!(true), json!(1))]), Fail),
            ("null equals null", Some(vec![signal("a", Value::Null, Value::Null)]), Pass),
            ("null is not false", Some(vec![signal("a", Value::Null, json!(false))]), Fail),
            ("objects with numbers by value, any key order", Some(vec![signal("a", json!({"p": 1, "q": [2, {"r": 3}]}), json!({"q": [2.0, {"r": 3.0}], "p": 1.0}))]), Pass),
            ("object with an extra key", Some(vec![signal("a", json!({"p": 1}), json!({"p": 1, "q": 2}))]), Fail),
            ("object with a different key", Some(vec![signal("a", json!({"p": 1}), json!({"q": 1}))]), Fail),
            ("arrays in a different order", Some(vec![signal("a", json!([1, 2]), json!([2, 1]))]), Fail),
            ("array of another length", Some(vec![signal("a", json!([1, 2]), json!([1, 2, 3]))]), Fail),
            ("one mismatch among several", Some(vec![signal("a", json!(1), json!(1)), signal("b", json!(2), json!(3))]), Fail),
        ];
        for (case, signals, result) in table {
            let mut event = passing_event();
            event.signals = signals;
            assert_eq!(check(&event).result, result, "{case}");
        }
    }

    #[test]
    fn signal_failure_lists_each_mismatch_with_its_values() {
        let mut event = passing_event();
        event.signals = Some(vec![
            signal("latency_ms", json!(100), json!(250)),
            signal("errors", json!(0), json!(0.0)),
            signal("mode", json!("active"), json!("standby")),
        ]);
        let outcome = check(&event);
        assert_eq!(
            outcome.reason,
            "signals observed values other than expected: latency_ms, mode"
        );
        assert_eq!(outcome.evidence.to_value()["signals_compared"], json!(3));
        assert_eq!(
            outcome.evidence.to_value()["mismatches"],
            json!([
                {"name": "latency_ms", "expected": 100, "observed": 250},
                {"name": "mode", "expected": "active", "observed": "standby"},
            ])
        );
    }
}
