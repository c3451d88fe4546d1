//! Record → typed input event, or a dead letter with its error class (SPEC §6).
//!
//! Order of checks: topic, size, UTF-8 and JSON, schema, supported `schema_version`,
//! typed decode, message key. The first failure decides the error class; the payload is
//! kept whole in the dead letter so nothing is lost.

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::{IngestConfig, TopicsConfig};
use crate::event::{
    output_id, DeadLetter, DeadLetterSource, ErrorClass, InputEvent, OutputKind, SCHEMA_VERSION,
};
use crate::record::Record;
use crate::schema::{SchemaError, SchemaKind, Schemas};

/// Which input kind a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputKind {
    Validation,
    Execution,
    Coordination,
}

impl InputKind {
    fn schema(self) -> SchemaKind {
        match self {
            InputKind::Validation => SchemaKind::ValidationEvent,
            InputKind::Execution => SchemaKind::ExecutionEvent,
            InputKind::Coordination => SchemaKind::CoordinationEvent,
        }
    }
}

/// Why a record cannot be audited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub class: ErrorClass,
    pub message: String,
}

impl DecodeError {
    fn new(class: ErrorClass, message: impl Into<String>) -> DecodeError {
        DecodeError {
            class,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.class.as_str(), self.message)
    }
}

impl std::error::Error for DecodeError {}

/// Decodes records of the configured input topics. Schemas are compiled once.
pub struct Decoder {
    schemas: Schemas,
    topics: Vec<(String, InputKind)>,
    max_payload_bytes: usize,
}

impl Decoder {
    pub fn new(topics: &TopicsConfig, ingest: &IngestConfig) -> Result<Decoder, SchemaError> {
        Ok(Decoder {
            schemas: Schemas::compile()?,
            topics: vec![
                (topics.validation.clone(), InputKind::Validation),
                (topics.execution.clone(), InputKind::Execution),
                (topics.coordination.clone(), InputKind::Coordination),
            ],
            max_payload_bytes: ingest.max_payload_bytes,
        })
    }

    /// The input kind of a topic, if it is an input topic.
    pub fn kind_of(&self, topic: &str) -> Option<InputKind> {
        self.topics
            .iter()
            .find(|(t, _)| t == topic)
            .map(|(_, k)| *k)
    }

    /// Decodes one record.
    pub fn decode(&self, record: &Record) -> Result<InputEvent, DecodeError> {
        let kind = self.kind_of(&record.topic).ok_or_else(|| {
            DecodeError::new(
                ErrorClass::UnknownTopic,
                "topic is not a configured input topic",
            )
        })?;
        if record.payload.len() > self.max_payload_bytes {
            return Err(DecodeError::new(
                ErrorClass::Oversize,
                format!(
                    "payload of {} bytes exceeds the limit of {} bytes",
                    record.payload.len(),
                    self.max_payload_bytes
                ),
            ));
        }
        let text = std::str::from_utf8(&record.payload).map_err(|e| {
            DecodeError::new(ErrorClass::NotJson, format!("payload is not UTF-8: {e}"))
        })?;
        let value: Value = serde_json::from_str(text).map_err(|e| {
            DecodeError::new(ErrorClass::NotJson, format!("payload is not JSON: {e}"))
        })?;
        if !value.is_object() {
            return Err(DecodeError::new(
                ErrorClass::Schema,
                "payload is not a JSON object",
            ));
        }
        self.schemas
            .validate(kind.schema(), &value)
            .map_err(|e| DecodeError::new(ErrorClass::Schema, e))?;
        match value.get("schema_version").and_then(Value::as_u64) {
            Some(v) if v == u64::from(SCHEMA_VERSION) => {}
            other => {
                return Err(DecodeError::new(
                    ErrorClass::Schema,
                    format!(
                        "unsupported schema_version {}; this release reads {SCHEMA_VERSION}",
                        other.map_or_else(|| "(missing)".to_string(), |v| v.to_string())
                    ),
                ))
            }
        }
        let event = match kind {
            InputKind::Validation => InputEvent::Validation(typed(value)?),
            InputKind::Execution => InputEvent::Execution(Box::new(typed(value)?)),
            InputKind::Coordination => InputEvent::Coordination(typed(value)?),
        };
        let expected = event.expected_key();
        match record.key_str() {
            Some(key) if key == expected => Ok(event),
            Some(_) => Err(DecodeError::new(
                ErrorClass::Semantic,
                format!("message key does not match the event; expected {expected:?}"),
            )),
            None => Err(DecodeError::new(
                ErrorClass::Semantic,
                format!("message key is missing or not UTF-8; expected {expected:?}"),
            )),
        }
    }
}

fn typed<T: DeserializeOwned>(value: Value) -> Result<T, DecodeError> {
    serde_json::from_value(value).map_err(|e| DecodeError::new(ErrorClass::Schema, e.to_string()))
}

/// The dead letter of a record that failed to decode. Its id is derived from the
/// record's position, so a replay dead-letters it under the same id.
pub fn dead_letter(record: &Record, error: &DecodeError) -> DeadLetter {
    let position = format!("{}/{}/{}", record.topic, record.partition, record.offset);
    DeadLetter {
        schema_version: SCHEMA_VERSION,
        event_id: output_id(&position, OutputKind::DeadLetter, 0),
        error_class: error.class,
        error: error.message.clone(),
        source: DeadLetterSource {
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
        },
        payload_base64: base64::engine::general_purpose::STANDARD.encode(&record.payload),
        first_seen_at: record.first_seen_at(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder(max: usize) -> Decoder {
        Decoder::new(
            &TopicsConfig::default(),
            &IngestConfig {
                max_payload_bytes: max,
                ..IngestConfig::default()
            },
        )
        .expect("schemas compile")
    }

    fn record(topic: &str, key: Option<&str>, payload: &[u8]) -> Record {
        Record {
            topic: topic.into(),
            partition: 2,
            offset: 41,
            key: key.map(|k| k.as_bytes().to_vec()),
            payload: payload.to_vec(),
            timestamp: None,
        }
    }

    const VALID: &str = r#"{"schema_version":1,"event_id":"8f14e45f-ceea-4d6e-a2b1-3c4d5e6f7a8b","tenant_id":"acme","occurred_at":"2026-11-01T10:00:00Z","process":"p_transfer","phase":"input","values":{"amount":50}}"#;

    #[test]
    fn a_valid_validation_event_decodes() {
        let event = decoder(1 << 20)
            .decode(&record(
                "audit.validation.v1",
                Some("acme:p_transfer"),
                VALID.as_bytes(),
            ))
            .expect("valid");
        assert!(matches!(event, InputEvent::Validation(e) if e.process == "p_transfer"));
    }

    #[test]
    fn each_failure_gets_its_error_class() {
        let d = decoder(400);
        let key = Some("acme:p_transfer");
        let cases: Vec<(Record, ErrorClass)> = vec![
            (
                record("other.topic", key, VALID.as_bytes()),
                ErrorClass::UnknownTopic,
            ),
            (
                record("audit.validation.v1", key, &[b' '; 401]),
                ErrorClass::Oversize,
            ),
            (
                record("audit.validation.v1", key, b"not json {"),
                ErrorClass::NotJson,
            ),
            (
                record("audit.validation.v1", key, &[0xff, 0xfe]),
                ErrorClass::NotJson,
            ),
            (
                record("audit.validation.v1", key, b"[1,2]"),
                ErrorClass::Schema,
            ),
            (
                record(
                    "audit.validation.v1",
                    key,
                    VALID
                        .replace("\"schema_version\":1", "\"schema_version\":2")
                        .as_bytes(),
                ),
                ErrorClass::Schema,
            ),
            (
                record("audit.validation.v1", Some("acme:other"), VALID.as_bytes()),
                ErrorClass::Semantic,
            ),
            (
                record("audit.validation.v1", None, VALID.as_bytes()),
                ErrorClass::Semantic,
            ),
        ];
        for (record, class) in cases {
            let err = d.decode(&record).expect_err("must fail");
            assert_eq!(err.class, class, "{err}");
        }
    }

    #[test]
    fn a_dead_letter_keeps_the_whole_payload_and_its_position() {
        let r = record("audit.validation.v1", None, b"\x00binary\xff");
        let err = decoder(1 << 20).decode(&r).expect_err("not json");
        let dl = dead_letter(&r, &err);
        assert_eq!(dl.error_class, ErrorClass::NotJson);
        assert_eq!(dl.source.offset, 41);
        assert_eq!(dl.source.partition, 2);
        let payload = base64::engine::general_purpose::STANDARD
            .decode(&dl.payload_base64)
            .expect("base64");
        assert_eq!(payload, r.payload);
        assert_eq!(dl, dead_letter(&r, &err), "same record, same dead letter");
    }
}
