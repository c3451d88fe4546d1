//! Deserializers that accept exactly what the JSON Schemas in `schemas/` accept.
//!
//! The derived serde impls are more lenient than the schemas in a few places, and a
//! document the schema rejects must not become an event by another path (or the other
//! way round). Each function here closes one such gap; the `contracts` test proves the
//! two sides agree on every example, and property tests probe timestamps, UUIDs and
//! integers.
//!
//! - [`uuid`]: `Uuid` also reads the simple, braced and `urn:uuid:` forms; `format: uuid`
//!   is the hyphenated 8-4-4-4-12 form only.
//! - [`timestamp`]: chrono also reads a space for `T`, `+0100`, a trailing ` UTC`, a
//!   Unicode minus, and a leap second in any minute; `format: date-time` is RFC 3339.
//!   Left open: an offset that moves an instant out of years 0000..=9999 (only possible
//!   on 0000-01-01 and 9999-12-31) is accepted by both, but chrono writes it back in its
//!   extended form (`+10000-…`), which neither reads.
//! - [`integer`]: serde rejects `3.0` and `3e0` for an integer field; `type: integer`
//!   accepts them (JSON has one number type).
//! - [`name`]: a derived unit enum also reads the externally tagged `{"COMPLETED": null}`;
//!   the schema takes a string only.
//! - [`object`]: a derived struct also reads a positional array; the schema takes an
//!   object only. This one cannot be closed for a top-level event, where no field
//!   attribute applies, so the decoder must validate the schema before serde reads an
//!   event.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use serde::de::{self, IntoDeserializer, Unexpected, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use uuid::Uuid;

/// A UUID in the hyphenated 8-4-4-4-12 form only (either case), as `format: uuid`.
pub(super) fn uuid<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Uuid, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_uuid(&text).map_err(de::Error::custom)
}

/// [`uuid`], or null.
pub(super) fn optional_uuid<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Uuid>, D::Error> {
    Option::<String>::deserialize(deserializer)?
        .map(|text| parse_uuid(&text).map_err(de::Error::custom))
        .transpose()
}

fn parse_uuid(text: &str) -> Result<Uuid, String> {
    // `Uuid::try_parse` picks the form by length: 36 characters is the hyphenated one.
    if text.len() != 36 {
        return Err(format!(
            "invalid UUID {text:?}: expected the hyphenated 8-4-4-4-12 form"
        ));
    }
    Uuid::try_parse(text).map_err(|error| format!("invalid UUID {text:?}: {error}"))
}

/// An RFC 3339 date-time, as `format: date-time`, converted to UTC.
pub(super) fn timestamp<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<DateTime<Utc>, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_timestamp(&text).map_err(de::Error::custom)
}

/// [`timestamp`], or null.
pub(super) fn optional_timestamp<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    Option::<String>::deserialize(deserializer)?
        .map(|text| parse_timestamp(&text).map_err(de::Error::custom))
        .transpose()
}

fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, String> {
    // chrono's own serde impl takes a relaxed form (a space for `T`, `+0100`, a trailing
    // ` UTC`, a Unicode minus sign); its strict parser still allows a leap second in any
    // minute. The grammar check below is what `format: date-time` accepts; chrono then
    // does the arithmetic.
    if !is_rfc3339_date_time(text) {
        return Err(format!(
            "invalid date-time {text:?}: expected RFC 3339, like 2024-05-01T12:00:00Z"
        ));
    }
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|error| format!("invalid date-time {text:?}: {error}"))
}

/// RFC 3339 §5.6 `date-time`: `YYYY-MM-DD` `T` `hh:mm:ss[.frac]` then `Z` or `±hh:mm`.
/// `T` and `Z` may be lower case (RFC 3339 §5.6 note); a leap second (`:60`) only at
/// 23:59 UTC, the only minute one has ever been inserted (§5.7).
fn is_rfc3339_date_time(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() >= 20
        && matches!(bytes[10], b'T' | b't')
        && is_full_date(&bytes[..10])
        && is_full_time(&bytes[11..])
}

fn is_full_date(bytes: &[u8]) -> bool {
    if bytes[4] != b'-' || bytes[7] != b'-' {
        return false;
    }
    let (Some(year), Some(month), Some(day)) = (
        digits(&bytes[0..4]),
        digits(&bytes[5..7]),
        digits(&bytes[8..10]),
    ) else {
        return false;
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days_in_month).contains(&day)
}

fn is_full_time(bytes: &[u8]) -> bool {
    if bytes.len() < 9 || bytes[2] != b':' || bytes[5] != b':' {
        return false;
    }
    let (Some(hour), Some(minute), Some(second)) = (
        digits(&bytes[0..2]),
        digits(&bytes[3..5]),
        digits(&bytes[6..8]),
    ) else {
        return false;
    };
    if hour > 23 || minute > 59 || second > 60 {
        return false;
    }
    let mut rest = &bytes[8..];
    if let Some(fraction) = rest.strip_prefix(b".") {
        let count = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
        if count == 0 {
            return false;
        }
        rest = &fraction[count..];
    }
    let offset_minutes = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), hh @ .., b':', m1, m2] if hh.len() == 2 => {
            let (Some(offset_hour), Some(offset_minute)) = (digits(hh), digits(&[*m1, *m2])) else {
                return false;
            };
            if offset_hour > 23 || offset_minute > 59 {
                return false;
            }
            let minutes = i64::from(offset_hour * 60 + offset_minute);
            if *sign == b'+' {
                minutes
            } else {
                -minutes
            }
        }
        _ => return false,
    };
    if second == 60 {
        let utc_minute_of_day = (i64::from(hour * 60 + minute) - offset_minutes).rem_euclid(1440);
        return utc_minute_of_day == 23 * 60 + 59;
    }
    true
}

/// The value of a run of ASCII digits, or `None` if any byte is not one.
fn digits(bytes: &[u8]) -> Option<u32> {
    bytes.iter().try_fold(0u32, |value, byte| {
        byte.is_ascii_digit()
            .then(|| value * 10 + u32::from(byte - b'0'))
    })
}

/// An integer type of the wire, with the range its schema states.
pub(super) trait WireInteger: TryFrom<u64> + TryFrom<i64> {
    const EXPECTED: &'static str;
}

impl WireInteger for u32 {
    const EXPECTED: &'static str = "an integer from 0 to 4294967295";
}

impl WireInteger for u64 {
    const EXPECTED: &'static str = "an integer from 0 to 18446744073709551615";
}

impl WireInteger for i32 {
    const EXPECTED: &'static str = "an integer from -2147483648 to 2147483647";
}

impl WireInteger for i64 {
    const EXPECTED: &'static str = "an integer from -9223372036854775808 to 9223372036854775807";
}

/// An integer in the range of `T`, also when written with a zero fraction or an exponent
/// (`3.0`, `3e0`): JSON has one number type, and to `type: integer` those are the
/// integer 3.
pub(super) fn integer<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: WireInteger,
{
    deserializer.deserialize_any(IntegerVisitor(PhantomData))
}

struct IntegerVisitor<T>(PhantomData<T>);

impl<T: WireInteger> Visitor<'_> for IntegerVisitor<T> {
    type Value = T;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(T::EXPECTED)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<T, E> {
        T::try_from(value).map_err(|_| E::invalid_value(Unexpected::Unsigned(value), &self))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<T, E> {
        T::try_from(value).map_err(|_| E::invalid_value(Unexpected::Signed(value), &self))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<T, E> {
        // Both bounds are powers of two, exact as f64; an integral value inside them
        // converts without loss.
        const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
        const MINUS_TWO_POW_63: f64 = -9_223_372_036_854_775_808.0;
        if value.fract() != 0.0 {
            Err(E::invalid_type(Unexpected::Float(value), &self))
        } else if (0.0..TWO_POW_64).contains(&value) {
            self.visit_u64(value as u64)
        } else if (MINUS_TWO_POW_63..0.0).contains(&value) {
            self.visit_i64(value as i64)
        } else {
            Err(E::invalid_value(Unexpected::Float(value), &self))
        }
    }
}

/// A unit enum variant, from its name as a JSON string only (serde also takes the
/// externally tagged `{"NAME": null}`).
pub(super) fn name<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let name = String::deserialize(deserializer)?;
    T::deserialize(name.into_deserializer())
}

/// A struct from a JSON object only (derived impls also take a positional array).
pub(super) fn object<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(ObjectOnly(deserializer))
}

/// A list of [`object`]s.
pub(super) fn objects<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let list = Vec::<Object<T>>::deserialize(deserializer)?;
    Ok(list.into_iter().map(|Object(value)| value).collect())
}

/// [`objects`], or null.
pub(super) fn optional_objects<'de, D, T>(deserializer: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let list = Option::<Vec<Object<T>>>::deserialize(deserializer)?;
    Ok(list.map(|list| list.into_iter().map(|Object(value)| value).collect()))
}

struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        object(deserializer).map(Object)
    }
}

thread_local! {
    /// How deep the `Value` fields of an event may nest objects and arrays of their own:
    /// unbounded, except while [`with_value_depth`] reads an event straight from text.
    static VALUE_DEPTH: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Runs `read` with the `Value` fields of events limited to `depth` levels of objects and
/// arrays of their own. A document that was parsed with its depth checked needs no such
/// limit; an event read from text by its serde type does, and serde gives a field's
/// deserializer no other way to know it.
pub(crate) fn with_value_depth<T>(depth: usize, read: impl FnOnce() -> T) -> T {
    struct Unbounded;
    impl Drop for Unbounded {
        fn drop(&mut self) {
            VALUE_DEPTH.set(usize::MAX);
        }
    }
    VALUE_DEPTH.set(depth);
    let _unbounded = Unbounded;
    read()
}

/// Any JSON value, refusing an object with the same key twice at any depth (I-JSON):
/// a reader that kept the first of two values would audit another event.
pub(super) fn json<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
    crate::decode::json::unique_keys_value(deserializer, VALUE_DEPTH.get())
}

/// [`json`], or null (as `None`).
pub(super) fn optional_json<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Value>, D::Error> {
    Ok(Option::<Json>::deserialize(deserializer)?.map(|Json(value)| value))
}

/// A JSON object of any values, without a key twice at any depth.
pub(super) fn json_object<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Map<String, Value>, D::Error> {
    into_object(json(deserializer)?)
}

/// [`json_object`], or null.
pub(super) fn optional_json_object<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Map<String, Value>>, D::Error> {
    Option::<Json>::deserialize(deserializer)?
        .map(|Json(value)| into_object(value))
        .transpose()
}

/// A JSON array of any values, without a key twice at any depth, or null.
pub(super) fn optional_json_array<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<Value>>, D::Error> {
    match Option::<Json>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Json(Value::Array(items))) => Ok(Some(items)),
        Some(Json(other)) => Err(de::Error::invalid_type(unexpected(&other), &"an array")),
    }
}

/// An object of strings without a key twice, or null.
pub(super) fn optional_string_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    struct Strings;

    impl<'de> Visitor<'de> for Strings {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object of strings")
        }

        fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut strings = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                if strings.contains_key(&key) {
                    return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
                }
                let value = map.next_value()?;
                strings.insert(key, value);
            }
            Ok(strings)
        }
    }

    struct StringMap(BTreeMap<String, String>);

    impl<'de> Deserialize<'de> for StringMap {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_map(Strings).map(StringMap)
        }
    }

    Ok(Option::<StringMap>::deserialize(deserializer)?.map(|StringMap(map)| map))
}

/// [`json`] as a type, for `Option`.
struct Json(Value);

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        json(deserializer).map(Json)
    }
}

fn into_object<E: de::Error>(value: Value) -> Result<Map<String, Value>, E> {
    match value {
        Value::Object(map) => Ok(map),
        other => Err(E::invalid_type(unexpected(&other), &"an object")),
    }
}

fn unexpected(value: &Value) -> Unexpected<'_> {
    match value {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(_) => Unexpected::Other("number"),
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

/// A deserializer that reads a struct as a map: a derived struct's visitor then only
/// ever sees an object, and a positional array is the format's "invalid type" error.
pub(crate) struct ObjectOnly<D>(pub D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for ObjectOnly<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn at(text: &str) -> Result<DateTime<Utc>, String> {
        parse_timestamp(text)
    }

    #[test]
    fn rfc3339_timestamps_in_any_offset_become_utc() {
        let expected = "2024-05-01T10:00:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(at("2024-05-01T10:00:00Z"), Ok(expected));
        assert_eq!(at("2024-05-01t10:00:00z"), Ok(expected));
        assert_eq!(at("2024-05-01T12:00:00+02:00"), Ok(expected));
        assert_eq!(at("2024-05-01T09:30:00-00:30"), Ok(expected));
        assert!(at("2024-05-01T10:00:00.123456789123Z").is_ok());
        assert!(at("2024-02-29T10:00:00Z").is_ok());
    }

    #[test]
    fn relaxed_timestamp_forms_are_rejected() {
        for text in [
            "2024-05-01 10:00:00Z",
            "2024-05-01T10:00:00",
            "2024-05-01T10:00:00+0200",
            "2024-05-01T10:00:00 UTC",
            "2024-05-01T10:00:00\u{2212}02:00",
            " 2024-05-01T10:00:00Z",
            "2024-05-01T10:00:00Z ",
            "2024-05-01T10:00:00.Z",
            "2024-05-01T10:00Z",
            "2023-02-29T10:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T10:00:00+24:00",
            "2024-05-01",
        ] {
            assert!(at(text).is_err(), "{text} was accepted");
        }
    }

    #[test]
    fn a_leap_second_is_accepted_only_at_the_end_of_a_utc_day() {
        assert!(at("2016-12-31T23:59:60Z").is_ok());
        assert!(at("2016-12-31T15:59:60-08:00").is_ok());
        assert!(at("2017-01-01T01:29:60+01:30").is_ok());
        assert!(at("2016-12-31T12:30:60Z").is_err());
        assert!(at("2016-12-31T23:59:60+01:00").is_err());
    }

    #[test]
    fn only_the_hyphenated_uuid_form_is_accepted() {
        assert!(parse_uuid("6f1e2c9a-58a4-5b1e-9d3c-0a7b4e2f8c61").is_ok());
        assert!(parse_uuid("6F1E2C9A-58A4-5B1E-9D3C-0A7B4E2F8C61").is_ok());
        for text in [
            "6f1e2c9a58a45b1e9d3c0a7b4e2f8c61",
            "{6f1e2c9a-58a4-5b1e-9d3c-0a7b4e2f8c61}",
            "urn:uuid:6f1e2c9a-58a4-5b1e-9d3c-0a7b4e2f8c61",
            "6f1e2c9a-58a45b1e-9d3c-0a7b-4e2f8c61",
            "6f1e2c9a-58a4-5b1e-9d3c-0a7b4e2f8c6g",
        ] {
            assert!(parse_uuid(text).is_err(), "{text} was accepted");
        }
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Counts {
        #[serde(deserialize_with = "integer")]
        small: u32,
        #[serde(deserialize_with = "integer")]
        signed: i64,
    }

    #[test]
    fn integers_written_as_integral_floats_are_accepted_within_range() {
        let counts: Counts = serde_json::from_str(r#"{"small": 4.0, "signed": -2e3}"#).unwrap();
        assert_eq!(
            counts,
            Counts {
                small: 4,
                signed: -2000
            }
        );
        let counts: Counts =
            serde_json::from_value(json!({"small": 4294967295u32, "signed": i64::MIN})).unwrap();
        assert_eq!(counts.small, u32::MAX);
        for bad in [
            json!({"small": 4.5, "signed": 0}),
            json!({"small": 4294967296u64, "signed": 0}),
            json!({"small": -1, "signed": 0}),
            json!({"small": "4", "signed": 0}),
            json!({"small": 0, "signed": 9223372036854775807.0}),
        ] {
            assert!(
                serde_json::from_value::<Counts>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[derive(Debug, PartialEq, Deserialize)]
    enum Colour {
        #[serde(rename = "RED")]
        Red,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Paint {
        #[serde(deserialize_with = "name")]
        colour: Colour,
    }

    #[test]
    fn unit_variants_are_read_from_strings_only() {
        let paint: Paint = serde_json::from_value(json!({"colour": "RED"})).unwrap();
        assert_eq!(paint.colour, Colour::Red);
        assert!(serde_json::from_value::<Paint>(json!({"colour": {"RED": null}})).is_err());
        assert!(serde_json::from_value::<Paint>(json!({"colour": "red"})).is_err());
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Point {
        x: u32,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Shape {
        #[serde(deserialize_with = "object")]
        origin: Point,
        #[serde(default, deserialize_with = "optional_objects")]
        corners: Option<Vec<Point>>,
    }

    #[test]
    fn structs_are_read_from_objects_only() {
        let shape: Shape =
            serde_json::from_value(json!({"origin": {"x": 1}, "corners": [{"x": 2}]})).unwrap();
        assert_eq!(shape.corners, Some(vec![Point { x: 2 }]));
        let shape: Shape =
            serde_json::from_value(json!({"origin": {"x": 1}, "corners": null})).unwrap();
        assert_eq!(shape.corners, None);
        assert!(serde_json::from_value::<Shape>(json!({"origin": [1]})).is_err());
        assert!(
            serde_json::from_value::<Shape>(json!({"origin": {"x": 1}, "corners": [[2]]})).is_err()
        );
    }
}
