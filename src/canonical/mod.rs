//! Canonical JSON and SHA-256: one text per JSON value, so a digest of evidence depends
//! on the evidence only, never on how a producer ordered its keys.
//!
//! The canonical text has no whitespace, object keys sorted recursively by their UTF-16
//! code units (the order of RFC 8785, JCS), strings escaped and numbers printed exactly
//! as `serde_json` prints them. Keys are sorted here, explicitly: `serde_json`'s `Map`
//! keeps insertion order when any crate in the build enables `preserve_order`, so its
//! iteration order is not something a digest may depend on.

use std::cmp::Ordering;
use std::fmt::Write as _;

use serde_json::Value;
use sha2::{Digest, Sha256};

mod writer;

pub use writer::{to_json, write, Error};

/// How object keys are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrder {
    /// By UTF-16 code units (RFC 8785): evidence digests.
    Utf16,
    /// By bytes: the store's content digests and hash chain.
    Bytes,
}

impl KeyOrder {
    fn cmp(self, a: &str, b: &str) -> Ordering {
        match self {
            KeyOrder::Utf16 => utf16_order(a, b),
            KeyOrder::Bytes => a.cmp(b),
        }
    }
}

/// The canonical JSON text of `value`.
pub fn canonical_json(value: &Value) -> String {
    canonical_json_by(value, KeyOrder::Utf16)
}

/// The canonical JSON text of `value`, object keys in `order`.
pub fn canonical_json_by(value: &Value, order: KeyOrder) -> String {
    let mut out = String::new();
    write_value(&mut out, value, order);
    out
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn write_value(out: &mut String, value: &Value, order: KeyOrder) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        // `Number`'s Display is serde_json's own serialization of it.
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item, order);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|(a, _), (b, _)| order.cmp(a, b));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_value(out, item, order);
            }
            out.push('}');
        }
    }
}

fn write_string(out: &mut String, s: &str) {
    // Most keys and values need no escape: copy them as they are, without the
    // allocation of a serializer's output (this is the hot path of evidence digests).
    if !needs_escape(s) {
        out.reserve(s.len() + 2);
        out.push('"');
        out.push_str(s);
        out.push('"');
        return;
    }
    // Serializing a `str` cannot fail; the fallback keeps this total without a panic.
    match serde_json::to_string(s) {
        Ok(escaped) => out.push_str(&escaped),
        Err(_) => out.push_str("\"\""),
    }
}

/// Whether JSON must escape a byte of `s`: a control character, `"` or `\`.
///
/// Eight bytes at a time, the last word overlapping the one before it (strings of four
/// to seven bytes are read as two overlapping halves): most strings here are keys and
/// short values, where a loop over bytes cost more than the copy.
fn needs_escape(s: &str) -> bool {
    let bytes = s.as_bytes();
    let len = bytes.len();
    if (8..=16).contains(&len) {
        // Most keys and short values: two words, overlapping when shorter than 16.
        return special_bytes(word(&bytes[..8])) | special_bytes(word(&bytes[len - 8..])) != 0;
    }
    if len >= 8 {
        let chunks = bytes.chunks_exact(8);
        let last = if chunks.remainder().is_empty() {
            0
        } else {
            special_bytes(word(&bytes[len - 8..]))
        };
        // No early exit: most strings need no escape, and then every word is read anyway.
        return chunks.fold(last, |found, chunk| found | special_bytes(word(chunk))) != 0;
    }
    if len >= 4 {
        let half = |at: usize| u64::from(u32::from_le_bytes(four(&bytes[at..at + 4])));
        return special_bytes(half(0) | (half(len - 4) << 32)) != 0;
    }
    bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// Eight bytes as a word. A slice of another length cannot come here; it would read as
/// zeros, control characters, so "escape it" is the answer either way.
fn word(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]))
}

/// Four bytes, read as [`word`] reads eight.
fn four(bytes: &[u8]) -> [u8; 4] {
    bytes.try_into().unwrap_or([0; 4])
}

/// The top bit of each byte of `word` that JSON escapes; zero when there is none.
fn special_bytes(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const TOPS: u64 = 0x8080_8080_8080_8080;
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & TOPS;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    below(word, 0x20) | below(quote, 1) | below(backslash, 1)
}

/// Order of two keys by UTF-16 code units. It differs from byte (code point) order only
/// between characters U+E000..U+FFFF and characters above U+FFFF.
fn utf16_order(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        // The common case, where both orders are byte order.
        return a.cmp(b);
    }
    a.encode_utf16().cmp(b.encode_utf16())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn needs_escape_is_true_exactly_when_a_byte_needs_one() {
        // Every ASCII byte at every position of strings that cover each path: bytewise,
        // two halves, whole words, and a last word overlapping the one before it.
        for byte in 0u8..0x80 {
            for len in 1..=25 {
                for at in 0..len {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = byte;
                    let text = String::from_utf8(bytes).expect("ASCII");
                    let expected = byte < 0x20 || byte == b'"' || byte == b'\\';
                    assert_eq!(needs_escape(&text), expected, "{text:?}");
                }
            }
        }
        assert!(!needs_escape("é\u{1F600}\u{2028}\u{7f}"));
    }

    #[test]
    fn object_keys_are_sorted_recursively_without_whitespace() {
        let value = json!({"b": 1, "a": {"z": [3, {"y": true, "x": null}], "c": "s"}});
        assert_eq!(
            canonical_json(&value),
            r#"{"a":{"c":"s","z":[3,{"x":null,"y":true}]},"b":1}"#
        );
    }

    #[test]
    fn key_order_of_the_input_does_not_change_the_text() {
        let a: Value = serde_json::from_str(r#"{"x": 1, "y": {"p": 2, "q": 3}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"y": {"q": 3, "p": 2}, "x": 1}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
    }

    #[test]
    fn array_order_is_kept() {
        assert_eq!(canonical_json(&json!([3, 1, 2])), "[3,1,2]");
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let value = json!({"k\"ey": "line\nbreak \u{1} \\ é"});
        assert_eq!(
            canonical_json(&value),
            "{\"k\\\"ey\":\"line\\nbreak \\u0001 \\\\ é\"}"
        );
    }

    #[test]
    fn numbers_are_printed_as_serde_json_prints_them() {
        let value = json!([1, -2, 1.5, 1.0, 1e20, u64::MAX]);
        assert_eq!(
            canonical_json(&value),
            serde_json::to_string(&value).unwrap()
        );
    }

    #[test]
    fn keys_are_ordered_by_utf16_code_units() {
        // U+FF21 (fullwidth A) is one code unit 0xFF21; U+1F600 is the surrogate pair
        // 0xD83D 0xDE00, so by UTF-16 it sorts first, unlike by bytes.
        let value = json!({"\u{FF21}": 1, "\u{1F600}": 2, "a": 3});
        assert_eq!(
            canonical_json(&value),
            "{\"a\":3,\"\u{1F600}\":2,\"\u{FF21}\":1}"
        );
    }

    #[test]
    fn sha256_hex_matches_the_known_digest_of_abc() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
