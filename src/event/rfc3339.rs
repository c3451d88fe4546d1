//! Timestamps written as chrono's serde writes them (RFC 3339, UTC as `Z`, a fraction of
//! 3, 6 or 9 digits only when there is one), without its formatting machinery: every
//! event and audit record carries several, and chrono's `Display` path cost more than
//! the rest of a verdict's serialization. Years outside 0000..=9999 and leap seconds,
//! which chrono writes in its own extended ways, are left to chrono.

use std::fmt;

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use serde::Serializer;

/// `YYYY-MM-DDTHH:MM:SS.fffffffffZ` is 30 bytes, the longest this writes by hand.
const MAX_LEN: usize = 30;

/// The RFC 3339 text of an instant, on the stack.
pub struct Rfc3339 {
    bytes: [u8; MAX_LEN],
    len: usize,
}

impl Rfc3339 {
    /// The text of `at`, or `None` where chrono's extended forms apply.
    fn by_hand(at: &DateTime<Utc>) -> Option<Rfc3339> {
        // Each accessor of a `DateTime` converts it to local time first; the UTC date
        // and time are read once instead.
        let naive = at.naive_utc();
        let (date, time) = (naive.date(), naive.time());
        let year = u32::try_from(date.year()).ok().filter(|y| *y <= 9999)?;
        let nanos = time.nanosecond();
        if nanos >= 1_000_000_000 {
            return None;
        }
        let seconds = time.num_seconds_from_midnight();
        let mut text = Rfc3339 {
            bytes: [0; MAX_LEN],
            len: 0,
        };
        text.digits(year, 4);
        text.push(b'-');
        text.digits(date.month(), 2);
        text.push(b'-');
        text.digits(date.day(), 2);
        text.push(b'T');
        text.digits(seconds / 3600, 2);
        text.push(b':');
        text.digits(seconds / 60 % 60, 2);
        text.push(b':');
        text.digits(seconds % 60, 2);
        if nanos != 0 {
            text.push(b'.');
            if nanos % 1_000_000 == 0 {
                text.digits(nanos / 1_000_000, 3);
            } else if nanos % 1_000 == 0 {
                text.digits(nanos / 1_000, 6);
            } else {
                text.digits(nanos, 9);
            }
        }
        text.push(b'Z');
        Some(text)
    }

    fn push(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    /// `value` in exactly `width` decimal digits (it always fits: callers pass a width
    /// wide enough for the field).
    fn digits(&mut self, mut value: u32, width: usize) {
        for slot in self.bytes[self.len..self.len + width].iter_mut().rev() {
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
        self.len += width;
    }

    fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

/// `serialize_with` for a `DateTime<Utc>` field.
pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    match Rfc3339::by_hand(at) {
        Some(text) => serializer.serialize_str(text.as_str()),
        None => serializer.collect_str(&Chrono(at)),
    }
}

/// `serialize_with` for an `Option<DateTime<Utc>>` field.
pub fn serialize_option<S: Serializer>(
    at: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serialize(at, serializer),
        None => serializer.serialize_none(),
    }
}

struct Chrono<'a>(&'a DateTime<Utc>);

impl fmt::Display for Chrono<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::AutoSi, true))
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    /// The text written by hand, or chrono's where it writes the instant.
    fn text(at: &DateTime<Utc>) -> String {
        match Rfc3339::by_hand(at) {
            Some(text) => text.as_str().to_owned(),
            None => at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        }
    }

    /// What chrono's own `Serialize` writes.
    fn chrono_text(at: &DateTime<Utc>) -> String {
        serde_json::to_value(at)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    fn ours(at: &DateTime<Utc>) -> String {
        #[derive(serde::Serialize)]
        struct Field<'a>(#[serde(serialize_with = "serialize")] &'a DateTime<Utc>);
        serde_json::to_value(Field(at))
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    #[test]
    fn fractions_are_written_in_three_six_or_nine_digits_only_when_present() {
        let at = |nanos| Utc.timestamp_opt(1_790_000_000, nanos).unwrap();
        assert_eq!(text(&at(0)), "2026-09-21T14:13:20Z");
        assert_eq!(text(&at(120_000_000)), "2026-09-21T14:13:20.120Z");
        assert_eq!(text(&at(120_500_000)), "2026-09-21T14:13:20.120500Z");
        assert_eq!(text(&at(7)), "2026-09-21T14:13:20.000000007Z");
    }

    #[test]
    fn chrono_writes_the_years_and_leap_seconds_it_extends() {
        let far = Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap();
        let leap = Utc.timestamp_opt(1_483_228_799, 1_500_000_000).unwrap();
        for at in [far, leap] {
            assert_eq!(text(&at), chrono_text(&at));
            assert_eq!(ours(&at), chrono_text(&at));
        }
        assert_eq!(text(&far), "+10000-01-01T00:00:00Z");
    }

    proptest! {
        #[test]
        fn the_text_is_chronos_for_every_instant(
            secs in -70_000_000_000i64..300_000_000_000i64,
            nanos in prop_oneof![
                Just(0u32),
                (0u32..1000).prop_map(|ms| ms * 1_000_000),
                (0u32..1_000_000).prop_map(|us| us * 1_000),
                0u32..2_000_000_000,
            ],
        ) {
            if let Some(at) = Utc.timestamp_opt(secs, nanos).single() {
                prop_assert_eq!(text(&at), chrono_text(&at));
                prop_assert_eq!(ours(&at), chrono_text(&at));
            }
        }
    }
}
