//! A Kafka record as the pipeline sees it, and JSON Lines record files (SPEC §4b).
//!
//! `Record` carries no rdkafka type: the live consumer and the offline `process` command
//! both build `Record`s and share every step after that.

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use thiserror::Error;

/// One input record: where it sits in the log, and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// The record's timestamp (producer create time or broker append time).
    pub timestamp: Option<DateTime<Utc>>,
}

impl Record {
    /// The key as text, if it is UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
    }

    /// When the record entered its topic; the Unix epoch when the record carries no
    /// timestamp, so that derived values stay deterministic.
    pub fn first_seen_at(&self) -> DateTime<Utc> {
        self.timestamp.unwrap_or(DateTime::UNIX_EPOCH)
    }
}

/// One line of a record file: `{"topic": …, "key": …, "value": …}`.
///
/// A `value` that is a JSON string stands for a raw payload (its UTF-8 bytes); any other
/// value is published as the exact JSON text written in the line. `timestamp`
/// (milliseconds since the epoch) is optional; without it the value's `occurred_at` is
/// used when there is one, so `produce` and `process` agree on it.
#[derive(Debug, Deserialize)]
pub struct RecordLine {
    pub topic: String,
    #[serde(default)]
    pub key: Option<String>,
    pub value: Box<RawValue>,
    #[serde(default)]
    pub timestamp: Option<i64>,
}

/// An output record line, as `process` prints it and the service publishes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputLine {
    pub topic: String,
    pub key: Option<String>,
    pub value: serde_json::Value,
}

/// A record-file line that could not be read.
#[derive(Debug, Error)]
#[error("line {line}: {reason}")]
pub struct RecordFileError {
    /// 1-based line number.
    pub line: usize,
    pub reason: String,
}

impl RecordLine {
    /// Parses one line of a record file; `line` is 1-based, for the error.
    pub fn parse(text: &str, line: usize) -> Result<RecordLine, RecordFileError> {
        serde_json::from_str(text).map_err(|e| RecordFileError {
            line,
            reason: format!("not a record line ({{\"topic\", \"key\", \"value\"}}): {e}"),
        })
    }

    /// The payload bytes this line stands for.
    pub fn payload(&self) -> Vec<u8> {
        let raw = self.value.get();
        if raw.starts_with('"') {
            // A JSON string: a raw, non-object payload.
            match serde_json::from_str::<String>(raw) {
                Ok(s) => s.into_bytes(),
                Err(_) => raw.as_bytes().to_vec(),
            }
        } else {
            raw.as_bytes().to_vec()
        }
    }

    /// The record timestamp: the line's `timestamp`, else the value's `occurred_at`.
    pub fn timestamp(&self) -> Option<DateTime<Utc>> {
        if let Some(ms) = self.timestamp {
            return Utc.timestamp_millis_opt(ms).single();
        }
        #[derive(Deserialize)]
        struct OccurredAt {
            occurred_at: DateTime<Utc>,
        }
        serde_json::from_str::<OccurredAt>(self.value.get())
            .ok()
            .map(|o| o.occurred_at)
    }

    /// The record this line becomes at `partition`/`offset`.
    pub fn into_record(self, partition: i32, offset: i64) -> Record {
        Record {
            payload: self.payload(),
            timestamp: self.timestamp(),
            key: self.key.map(String::into_bytes),
            topic: self.topic,
            partition,
            offset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_value_is_published_as_its_exact_text() {
        let line = RecordLine::parse(r#"{"topic":"t","key":"k","value":{"b":1, "a":2}}"#, 1)
            .expect("valid line");
        assert_eq!(line.payload(), br#"{"b":1, "a":2}"#.to_vec());
    }

    #[test]
    fn string_value_is_a_raw_payload() {
        let line = RecordLine::parse(r#"{"topic":"t","key":null,"value":"not json {"}"#, 3)
            .expect("valid line");
        assert_eq!(line.payload(), b"not json {".to_vec());
        let record = line.into_record(0, 2);
        assert_eq!(record.key, None);
        assert_eq!(record.offset, 2);
        assert_eq!(record.timestamp, None);
        assert_eq!(record.first_seen_at(), DateTime::UNIX_EPOCH);
    }

    #[test]
    fn timestamp_comes_from_the_line_then_from_occurred_at() {
        let explicit = RecordLine::parse(
            r#"{"topic":"t","value":{"occurred_at":"2026-01-01T00:00:00Z"},"timestamp":1000}"#,
            1,
        )
        .expect("valid line");
        assert_eq!(
            explicit.timestamp().map(|t| t.timestamp_millis()),
            Some(1000)
        );
        let derived = RecordLine::parse(
            r#"{"topic":"t","value":{"occurred_at":"2026-01-01T00:00:00Z"}}"#,
            1,
        )
        .expect("valid line");
        assert_eq!(
            derived.timestamp().map(|t| t.to_rfc3339()),
            Some("2026-01-01T00:00:00+00:00".to_string())
        );
    }

    #[test]
    fn a_line_that_is_not_a_record_names_its_line_number() {
        let err = RecordLine::parse("{\"value\": 1}", 7).expect_err("no topic");
        assert!(err.to_string().starts_with("line 7: "), "{err}");
    }
}
