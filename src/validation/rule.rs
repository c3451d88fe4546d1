//! Checking one value against one rule, as the Theus validator does.
//!
//! A number gets the first failing of `min`, `max`, `eq`, `neq`; a string, array or
//! object then gets `min_len` and `max_len`; a string then gets `regex`, matched from
//! its start only (Python `re.match`). Each later failing check replaces the message of
//! an earlier one. A check that does not apply to the value's type passes, and JSON
//! booleans are not numbers.

use std::cmp::Ordering;
use std::fmt;

use regex::Regex;
use serde_json::{Number, Value};

use super::recipe::Rule;

/// A numeric limit of a rule, kept exact: integers are never rounded through `f64`, so
/// `eq: 9007199254740993` means that integer and comparisons between integers and
/// floats are exact, as in Python.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Limit {
    Int(i128),
    Float(f64),
}

impl Limit {
    pub(crate) fn from_json(n: &Number) -> Option<Limit> {
        if let Some(i) = n.as_i64() {
            Some(Limit::Int(i.into()))
        } else if let Some(u) = n.as_u64() {
            Some(Limit::Int(u.into()))
        } else {
            n.as_f64().map(Limit::Float)
        }
    }

    /// `None` when either side is NaN (every ordering comparison is then false).
    fn compare(self, other: Limit) -> Option<Ordering> {
        match (self, other) {
            (Limit::Int(a), Limit::Int(b)) => Some(a.cmp(&b)),
            (Limit::Float(a), Limit::Float(b)) => a.partial_cmp(&b),
            (Limit::Int(a), Limit::Float(b)) => compare_int_float(a, b),
            (Limit::Float(a), Limit::Int(b)) => compare_int_float(b, a).map(Ordering::reverse),
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Int(i) => write!(f, "{i}"),
            Limit::Float(x) => write!(f, "{x}"),
        }
    }
}

/// Exact comparison of an integer with a float (no rounding of either).
fn compare_int_float(i: i128, f: f64) -> Option<Ordering> {
    // 2^127: beyond every i128, so beyond every JSON or YAML integer.
    const BOUND: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
    if f.is_nan() {
        return None;
    }
    if f >= BOUND {
        return Some(Ordering::Less);
    }
    if f < -BOUND {
        return Some(Ordering::Greater);
    }
    let whole = f.trunc();
    // Exact: `whole` is an integer strictly inside the i128 range.
    let whole_int = whole as i128;
    Some(i.cmp(&whole_int).then_with(|| {
        let frac = f - whole;
        if frac > 0.0 {
            Ordering::Less
        } else if frac < 0.0 {
            Ordering::Greater
        } else {
            Ordering::Equal
        }
    }))
}

/// A rule's `regex`, compiled to match from the start of the value only.
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    /// As written in the recipe, for messages.
    source: String,
    /// `^(?:source)`: anchored at the start, not at the end, like Python `re.match`.
    anchored: Regex,
}

impl Pattern {
    /// Compiles `source`, first on its own so that a pattern such as `a)|(b` cannot
    /// escape the anchoring group.
    pub(crate) fn new(source: &str) -> Result<Pattern, regex::Error> {
        if let Some(quantifier) = possessive_quantifier(source) {
            // Python 3.11 reads `a*+` as possessive (never gives back); this engine would
            // read it as `(a*)+` and match where Python does not.
            return Err(regex::Error::Syntax(format!(
                "error: possessive quantifier {quantifier:?} (Python 3.11) is not supported"
            )));
        }
        let translated = python_end_anchors(source);
        Regex::new(&translated)?;
        let anchored = Regex::new(&format!("^(?:{translated})"))?;
        Ok(Pattern {
            source: source.to_owned(),
            anchored,
        })
    }

    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    fn matches_start(&self, text: &str) -> bool {
        self.anchored.is_match(text)
    }
}

/// The first possessive quantifier (`*+`, `++`, `?+`, `{m,n}+`) outside a character
/// class, if any.
fn possessive_quantifier(source: &str) -> Option<String> {
    let bytes = source.as_bytes();
    let mut in_class = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'[' if !in_class => {
                in_class = true;
                // A `]` right after `[` or `[^` is a literal member of the class.
                if bytes.get(i + 1) == Some(&b'^') {
                    i += 1;
                }
                if bytes.get(i + 1) == Some(&b']') {
                    i += 1;
                }
            }
            b']' if in_class => in_class = false,
            b'*' | b'+' | b'?' if !in_class && bytes.get(i + 1) == Some(&b'+') => {
                return Some(source[i..i + 2].to_owned());
            }
            b'{' if !in_class => {
                let counted = bytes[i + 1..]
                    .iter()
                    .position(|b| !(b.is_ascii_digit() || *b == b','))
                    .map(|len| i + 1 + len)
                    .filter(|&end| end > i + 1 && bytes[end] == b'}');
                if let Some(end) = counted {
                    if bytes.get(end + 1) == Some(&b'+') {
                        return Some(source[i..end + 2].to_owned());
                    }
                    i = end;
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Gives `$` and `\Z` their Python meaning. Python's `$` (without the multi-line flag)
/// matches at the end of the text or just before a newline that ends it, where the
/// regex crate's `$` matches only at the very end; Python's `\Z` is the regex crate's
/// `\z`. Characters inside a class and escaped characters are left alone; with the
/// multi-line flag, `$` means the same in both engines.
fn python_end_anchors(source: &str) -> String {
    let multi_line = source.contains("(?m") || source.contains("(?sm") || source.contains("(?im");
    let mut out = String::with_capacity(source.len() + 8);
    let mut chars = source.chars();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('Z') if !in_class => out.push_str("\\z"),
                Some(next) => {
                    out.push('\\');
                    out.push(next);
                }
                None => out.push('\\'),
            },
            '[' if !in_class => {
                in_class = true;
                out.push(c);
                // A `]` right after `[` or `[^` is a literal member of the class.
                let rest = chars.as_str();
                let literal = if rest.starts_with("^]") {
                    2
                } else if rest.starts_with(']') {
                    1
                } else {
                    0
                };
                for _ in 0..literal {
                    if let Some(l) = chars.next() {
                        out.push(l);
                    }
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(c);
            }
            '$' if !in_class && !multi_line => out.push_str("(?:\\n?\\z)"),
            _ => out.push(c),
        }
    }
    out
}

/// Why the regex engine rejected a pattern, on one line.
pub(crate) fn regex_problem(error: &regex::Error) -> String {
    match error {
        regex::Error::Syntax(text) => text
            .lines()
            .find_map(|line| line.strip_prefix("error: "))
            .map(str::to_owned)
            .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" ")),
        regex::Error::CompiledTooBig(limit) => {
            format!("the compiled pattern exceeds the size limit of {limit} bytes")
        }
        other => other.to_string(),
    }
}

impl Rule {
    /// The failure message if `value` breaks this rule, `None` if it passes.
    pub(crate) fn violation(&self, value: &Value) -> Option<String> {
        let field = self.field();
        let mut failed: Option<String> = None;

        if let Value::Number(n) = value {
            if let Some(v) = Limit::from_json(n) {
                failed = self.number_violation(field, v);
            }
        }

        let len = match value {
            Value::String(s) => Some(s.chars().count()),
            Value::Array(a) => Some(a.len()),
            Value::Object(o) => Some(o.len()),
            _ => None,
        };
        if let Some(len) = len {
            let len = len as u64;
            if let Some(min_len) = self.min_len.filter(|&m| len < m) {
                failed = Some(format!("{field} length must be >= {min_len}"));
            }
            if let Some(max_len) = self.max_len.filter(|&m| len > m) {
                failed = Some(format!("{field} length must be <= {max_len}"));
            }
        }

        if let (Value::String(s), Some(pattern)) = (value, &self.regex) {
            if !pattern.matches_start(s) {
                failed = Some(format!("{field} must match {}", pattern.source()));
            }
        }

        failed.map(|default| self.message.clone().unwrap_or(default))
    }

    /// The first of `min`, `max`, `eq`, `neq` that `v` fails.
    fn number_violation(&self, field: &str, v: Limit) -> Option<String> {
        if let Some(min) = self.min {
            if v.compare(min) == Some(Ordering::Less) {
                return Some(format!("{field} must be >= {min}"));
            }
        }
        if let Some(max) = self.max {
            if v.compare(max) == Some(Ordering::Greater) {
                return Some(format!("{field} must be <= {max}"));
            }
        }
        if let Some(eq) = self.eq {
            if v.compare(eq) != Some(Ordering::Equal) {
                return Some(format!("{field} must be == {eq}"));
            }
        }
        if let Some(neq) = self.neq {
            if v.compare(neq) == Some(Ordering::Equal) {
                return Some(format!("{field} must be != {neq}"));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::validation::Recipes;

    /// The single input rule of process `p` in `rule_yaml` (a flow mapping).
    fn rule(rule_yaml: &str) -> Rule {
        let yaml = format!("process_recipes:\n  p:\n    inputs:\n      - {rule_yaml}\n");
        let recipes = Recipes::parse(&yaml).unwrap();
        recipes.process("p").unwrap().inputs().unwrap()[0].clone()
    }

    #[test]
    fn a_number_below_min_fails_with_a_default_message() {
        let r = rule("{ field: amount, min: 100 }");
        assert_eq!(
            r.violation(&json!(99)),
            Some("amount must be >= 100".into())
        );
        assert_eq!(r.violation(&json!(100)), None);
        assert_eq!(r.violation(&json!(100.5)), None);
    }

    #[test]
    fn the_rule_message_replaces_the_default_one() {
        let r = rule(r#"{ field: amount, min: 100, message: "Amount must be >= 100" }"#);
        assert_eq!(r.violation(&json!(5)), Some("Amount must be >= 100".into()));
    }

    #[test]
    fn max_fails_only_above_the_limit() {
        let r = rule("{ field: n, max: 5 }");
        assert_eq!(r.violation(&json!(5)), None);
        assert_eq!(r.violation(&json!(5.01)), Some("n must be <= 5".into()));
    }

    #[test]
    fn only_the_first_failing_number_check_is_reported() {
        let r = rule("{ field: n, min: 10, eq: 20 }");
        assert_eq!(r.violation(&json!(5)), Some("n must be >= 10".into()));
        assert_eq!(r.violation(&json!(15)), Some("n must be == 20".into()));
    }

    #[test]
    fn eq_fails_on_any_other_value_and_neq_on_that_value() {
        let eq = rule("{ field: n, eq: 3 }");
        assert_eq!(eq.violation(&json!(3)), None);
        assert_eq!(eq.violation(&json!(3.0)), None);
        assert_eq!(eq.violation(&json!(4)), Some("n must be == 3".into()));
        let neq = rule("{ field: n, neq: 0 }");
        assert_eq!(neq.violation(&json!(1)), None);
        assert_eq!(neq.violation(&json!(0)), Some("n must be != 0".into()));
        assert_eq!(neq.violation(&json!(-0.0)), Some("n must be != 0".into()));
    }

    #[test]
    fn integers_and_floats_compare_exactly() {
        // 2^53 + 1 is not representable as f64; a rounding comparison would call it equal.
        let r = rule("{ field: n, max: 9007199254740992.0 }");
        assert_eq!(r.violation(&json!(9_007_199_254_740_992_i64)), None);
        assert!(r.violation(&json!(9_007_199_254_740_993_i64)).is_some());
        let big = rule("{ field: n, min: 18446744073709551615 }");
        assert!(big
            .violation(&json!(18_446_744_073_709_551_614_u64))
            .is_some());
        assert_eq!(big.violation(&json!(u64::MAX)), None);
    }

    #[test]
    fn booleans_are_not_numbers() {
        let r = rule("{ field: flag, min: 5, eq: 7 }");
        assert_eq!(r.violation(&json!(true)), None);
        assert_eq!(r.violation(&json!(false)), None);
    }

    #[test]
    fn string_length_counts_characters_not_bytes() {
        let r = rule("{ field: name, max_len: 5 }");
        // Five characters, fifteen bytes in UTF-8.
        assert_eq!(r.violation(&json!("日本語です")), None);
        assert_eq!(
            r.violation(&json!("日本語ですね")),
            Some("name length must be <= 5".into())
        );
        let min = rule("{ field: name, min_len: 2 }");
        assert_eq!(
            min.violation(&json!("é")),
            Some("name length must be >= 2".into())
        );
    }

    #[test]
    fn length_checks_count_array_elements_and_object_entries() {
        let r = rule("{ field: items, min_len: 2, max_len: 3 }");
        assert_eq!(
            r.violation(&json!([1])),
            Some("items length must be >= 2".into())
        );
        assert_eq!(r.violation(&json!([1, 2, 3])), None);
        assert_eq!(
            r.violation(&json!({"a": 1, "b": 2, "c": 3, "d": 4})),
            Some("items length must be <= 3".into())
        );
        assert_eq!(r.violation(&json!({"a": 1, "b": 2})), None);
    }

    #[test]
    fn length_checks_do_not_apply_to_numbers() {
        let r = rule("{ field: n, max_len: 1 }");
        assert_eq!(r.violation(&json!(12345)), None);
    }

    #[test]
    fn regex_is_anchored_at_the_start_but_not_at_the_end() {
        let r = rule(r#"{ field: dest, regex: "User" }"#);
        assert_eq!(r.violation(&json!("User42 and more")), None);
        assert_eq!(
            r.violation(&json!("theUser")),
            Some("dest must match User".into())
        );
    }

    #[test]
    fn an_alternation_cannot_escape_the_start_anchor() {
        let r = rule(r#"{ field: dest, regex: "a|b" }"#);
        assert_eq!(r.violation(&json!("b...")), None);
        assert!(r.violation(&json!("xb")).is_some());
    }

    #[test]
    fn dollar_matches_before_a_final_newline_as_in_python() {
        let r = rule(r#"{ field: t, regex: "^svc-[a-z]+$" }"#);
        assert!(r.violation(&json!("svc-db")).is_none());
        assert!(
            r.violation(&json!("svc-db\n")).is_none(),
            "re.match('^svc-[a-z]+$', 'svc-db\\n') matches"
        );
        assert!(r.violation(&json!("svc-db\nx")).is_some());
        assert!(r.violation(&json!("svc-db\n\n")).is_some());
    }

    #[test]
    fn backslash_capital_z_is_the_very_end_and_classes_keep_their_dollar() {
        let r = rule(r#"{ field: t, regex: "a\\Z" }"#);
        assert!(r.violation(&json!("a")).is_none());
        assert!(r.violation(&json!("a\n")).is_some());
        let r = rule(r#"{ field: t, regex: "^[$]+\\$x$" }"#);
        assert!(r.violation(&json!("$$$x")).is_none());
        assert_eq!(python_end_anchors("[]$]$"), "[]$](?:\\n?\\z)");
        assert_eq!(python_end_anchors("(?m)^a$"), "(?m)^a$");
    }

    #[test]
    fn regex_does_not_apply_to_non_strings() {
        let r = rule(r#"{ field: dest, regex: "^User.*" }"#);
        assert_eq!(r.violation(&json!(42)), None);
        assert_eq!(r.violation(&json!(["nope"])), None);
    }

    #[test]
    fn a_later_failing_check_replaces_an_earlier_message() {
        let r = rule(r#"{ field: code, max_len: 3, regex: "^[0-9]+$" }"#);
        assert_eq!(
            r.violation(&json!("12345")),
            Some("code length must be <= 3".into())
        );
        assert_eq!(
            r.violation(&json!("abcdef")),
            Some("code must match ^[0-9]+$".into())
        );
        let lens = rule("{ field: s, min_len: 5, max_len: 2 }");
        assert_eq!(
            lens.violation(&json!("abc")),
            Some("s length must be <= 2".into())
        );
    }

    #[test]
    fn a_float_limit_is_shown_as_written() {
        let r = rule("{ field: ratio, max: 0.5 }");
        assert_eq!(
            r.violation(&json!(0.75)),
            Some("ratio must be <= 0.5".into())
        );
    }

    #[test]
    fn possessive_quantifiers_are_found_and_look_alikes_are_not() {
        for (source, found) in [
            ("a*+", Some("*+")),
            ("(ab)++c", Some("++")),
            ("a?+", Some("?+")),
            ("a{3}+", Some("{3}+")),
            ("a{2,}+b", Some("{2,}+")),
            (r"x\++", None),
            (r"\*+", None),
            ("[*+]", None),
            ("[]*+]", None),
            ("a+?", None),
            ("a{2}b+", None),
            ("a{,x}+", None),
        ] {
            assert_eq!(possessive_quantifier(source).as_deref(), found, "{source}");
        }
        assert!(Pattern::new(r"^\d+\++$").is_ok());
    }

    #[test]
    fn lookaround_is_reported_on_one_line() {
        let err = Pattern::new("(?=x)").unwrap_err();
        let problem = regex_problem(&err);
        assert!(!problem.contains('\n'), "{problem}");
        assert!(problem.contains("look-around"), "{problem}");
    }
}
