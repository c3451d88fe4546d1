//! One-pass JSON parsing for untrusted payloads.
//!
//! `serde_json::from_str::<Value>` accepts two things an audit trail must not: an object
//! with the same key twice (it silently keeps the last one, while another reader may
//! keep the first, so two consumers of one record would audit different events), and
//! nesting as deep as its own recursion guard (128 levels). This parser builds the same
//! `Value` in the same single pass, through a [`DeserializeSeed`] that counts the depth
//! and refuses a duplicate key the moment it is read, so a hostile payload costs no more
//! than the bytes read up to the offending spot.
//!
//! Numbers: a literal beyond the range of a 64-bit float (`1e400`) is refused by the
//! parser itself; an integer beyond `u64`/`i64` is read as the nearest float, and a
//! field whose schema wants an integer then rejects it by range (`event::strict`).

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

/// Characters of a key quoted in a message at most: a hostile key can be megabytes.
const MAX_QUOTED_KEY_CHARS: usize = 64;

/// Why a payload is not a usable JSON document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// Objects and arrays nest deeper than the limit.
    TooDeep { limit: usize, at: String },
    /// An object names the same key twice.
    DuplicateKey { key: String, at: String },
    /// A number literal outside the range of a 64-bit float.
    NumberOutOfRange { at: String },
    /// Not JSON text at all (syntax, truncation, trailing bytes).
    Syntax(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::TooDeep { limit, at } => {
                write!(f, "nesting depth exceeds the limit of {limit} {at}")
            }
            ParseError::DuplicateKey { key, at } => write!(
                f,
                "duplicate object key {} {at}; readers would disagree on its value",
                quoted(key)
            ),
            ParseError::NumberOutOfRange { at } => {
                write!(f, "number out of the range of a 64-bit float {at}")
            }
            ParseError::Syntax(error) => write!(f, "payload is not JSON: {error}"),
        }
    }
}

/// `key` as a Rust string literal (control characters escaped), cut to a bounded length.
fn quoted(key: &str) -> String {
    let mut chars = key.chars();
    let head: String = chars.by_ref().take(MAX_QUOTED_KEY_CHARS).collect();
    if chars.next().is_some() {
        format!("{head:?}… ({} bytes)", key.len())
    } else {
        format!("{head:?}")
    }
}

/// What the seed refused; serde's error type cannot carry it, so it is noted here.
enum Violation {
    TooDeep,
    DuplicateKey(String),
}

/// Parses `text` into a [`Value`], refusing nesting deeper than `max_depth` containers
/// and duplicate object keys at any depth. `max_depth` must stay below serde_json's own
/// recursion limit (128), which config validation ensures.
pub(crate) fn parse(text: &str, max_depth: usize) -> Result<Value, ParseError> {
    let violation = Cell::new(None);
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let seed = ValueSeed {
        depth: 0,
        max_depth,
        violation: &violation,
    };
    let parsed = seed
        .deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value));
    parsed.map_err(|error| {
        let at = format!("at line {} column {}", error.line(), error.column());
        match violation.take() {
            Some(Violation::TooDeep) => ParseError::TooDeep {
                limit: max_depth,
                at,
            },
            Some(Violation::DuplicateKey(key)) => ParseError::DuplicateKey { key, at },
            // serde_json has no public error code; its messages are stable.
            None if error.to_string().starts_with("number out of range") => {
                ParseError::NumberOutOfRange { at }
            }
            // Its own guard refuses level 128, one past the highest configurable limit.
            None if error.to_string().starts_with("recursion limit exceeded") => {
                ParseError::TooDeep {
                    limit: max_depth,
                    at,
                }
            }
            None => ParseError::Syntax(error.to_string()),
        }
    })
}

/// One JSON value whose objects and arrays nest at most `max_depth` deep, refusing an
/// object with the same key twice at any depth: for the `Value` fields of the typed
/// events, which may be read straight from the text.
pub(crate) fn unique_keys_value<'de, D: de::Deserializer<'de>>(
    deserializer: D,
    max_depth: usize,
) -> Result<Value, D::Error> {
    let violation = Cell::new(None);
    ValueSeed {
        depth: 0,
        max_depth,
        violation: &violation,
    }
    .deserialize(deserializer)
}

/// Builds one value at `depth` containers deep.
#[derive(Clone, Copy)]
struct ValueSeed<'a> {
    depth: usize,
    max_depth: usize,
    violation: &'a Cell<Option<Violation>>,
}

impl ValueSeed<'_> {
    /// The seed of a container's members, or an error if the container is too deep.
    fn enter<E: de::Error>(self) -> Result<Self, E> {
        if self.depth >= self.max_depth {
            self.violation.set(Some(Violation::TooDeep));
            return Err(E::custom("nesting too deep"));
        }
        Ok(ValueSeed {
            depth: self.depth + 1,
            ..self
        })
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // The parser never yields NaN or an infinity; refuse rather than turn one into null.
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let member = self.enter()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(member)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let member = self.enter()?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match object.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(map.next_value_seed(member)?);
                }
                Entry::Occupied(taken) => {
                    self.violation
                        .set(Some(Violation::DuplicateKey(taken.key().clone())));
                    return Err(de::Error::custom("duplicate key"));
                }
            }
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn nested(depth: usize) -> String {
        "[".repeat(depth) + &"]".repeat(depth)
    }

    #[test]
    fn parses_what_serde_json_parses() {
        let text =
            r#"{"a":[1,-2,3.5,1e300,true,null,"x\n\u001b"],"b":{"c":{}},"d":18446744073709551615}"#;
        assert_eq!(
            parse(text, 64).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
        assert_eq!(parse("  7 ", 64).unwrap(), json!(7));
    }

    #[test]
    fn nesting_up_to_the_limit_is_accepted_and_one_more_level_is_not() {
        assert!(parse(&nested(64), 64).is_ok());
        let error = parse(&nested(65), 64).unwrap_err();
        assert_eq!(
            error,
            ParseError::TooDeep {
                limit: 64,
                at: "at line 1 column 66".into()
            }
        );
        assert_eq!(
            error.to_string(),
            "nesting depth exceeds the limit of 64 at line 1 column 66"
        );
        let objects = r#"{"a":"#.repeat(5) + "1" + &"}".repeat(5);
        assert!(parse(&objects, 5).is_ok());
        assert!(matches!(
            parse(&objects, 4),
            Err(ParseError::TooDeep { limit: 4, .. })
        ));
    }

    #[test]
    fn the_highest_configurable_limit_is_still_reported_as_too_deep() {
        // serde_json's own guard refuses the 128th level before this parser sees it.
        assert!(parse(&nested(127), 127).is_ok());
        assert!(matches!(
            parse(&nested(128), 127),
            Err(ParseError::TooDeep { limit: 127, .. })
        ));
    }

    #[test]
    fn a_deep_payload_is_refused_without_reading_past_the_limit() {
        // A megabyte of brackets: refused at the limit, not at serde_json's 128.
        let error = parse(&nested(500_000), 64).unwrap_err();
        assert!(
            matches!(&error, ParseError::TooDeep { at, .. } if at == "at line 1 column 65"),
            "{error}"
        );
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        for text in [
            r#"{"a":1,"a":2}"#,
            r#"{"a":1,"b":{"c":1,"d":2,"c":3}}"#,
            r#"{"a":[{"x":1},{"y":1,"y":1}]}"#,
            // Escapes are decoded before keys are compared.
            r#"{"a":1,"\u0061":2}"#,
        ] {
            let error = parse(text, 64).unwrap_err();
            assert!(
                matches!(error, ParseError::DuplicateKey { .. }),
                "{text}: {error}"
            );
        }
        let error = parse(r#"{"tenant_id":"a","tenant_id":"b"}"#, 64).unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"duplicate object key "tenant_id" at line 1 column 28; readers would disagree on its value"#
        );
        // The same key in two different objects is fine.
        assert!(parse(r#"{"a":{"k":1},"b":{"k":1}}"#, 64).is_ok());
    }

    #[test]
    fn a_duplicate_key_is_quoted_escaped_and_bounded() {
        let long = "\u{1b}[31m\n".repeat(100);
        let key = serde_json::to_string(&long).unwrap();
        let text = format!("{{{key}:1,{key}:2}}");
        let message = parse(&text, 64).unwrap_err().to_string();
        assert!(
            !message.contains('\n') && !message.contains('\u{1b}'),
            "{message}"
        );
        assert!(message.contains("… (600 bytes)"), "{message}");
        assert!(message.len() < 400, "{}", message.len());
    }

    #[test]
    fn numbers_beyond_a_float_are_refused_and_big_integers_become_floats() {
        for text in ["1e400", "[-1e400]", r#"{"a":123e999}"#] {
            assert!(
                matches!(parse(text, 64), Err(ParseError::NumberOutOfRange { .. })),
                "{text}"
            );
        }
        assert_eq!(
            parse("1e400", 64).unwrap_err().to_string(),
            "number out of the range of a 64-bit float at line 1 column 5"
        );
        let big = parse("18446744073709551616", 64).unwrap();
        assert_eq!(big.as_f64(), Some(18_446_744_073_709_551_616.0));
        assert_eq!(big.as_u64(), None);
    }

    #[test]
    fn text_that_is_not_json_is_a_syntax_error() {
        for text in ["", "{", "{\"a\":1}x", "[1,]", "'a'", "{\"a\" 1}", "nul"] {
            assert!(
                matches!(parse(text, 64), Err(ParseError::Syntax(_))),
                "{text:?}"
            );
        }
    }
}
