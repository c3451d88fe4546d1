//! Record → typed input event, or a dead letter with its error class (SPEC §6).
//!
//! Order of checks: topic, size, UTF-8 and JSON, schema, typed decode, supported
//! `schema_version`, message key. The first failure decides the error class; the payload is
//! kept in the dead letter so nothing is lost (up to
//! [`DEAD_LETTER_MAX_PAYLOAD_BYTES`], so that the dead letter itself can be published).
//!
//! Hostile input maps onto the dead-letter classes of the wire contract (SPEC §4b):
//!
//! | input | class |
//! |---|---|
//! | more than `ingest.max_payload_bytes` | `oversize` (not parsed at all) |
//! | objects and arrays nested deeper than `ingest.max_nesting_depth` | `oversize` |
//! | not UTF-8; not JSON text | `not_json` |
//! | a key twice in one object, at any depth | `not_json` |
//! | a number literal beyond a 64-bit float (`1e400`) | `not_json` |
//! | not an object; schema violation; an integer field out of its range | `schema` |
//! | message key that does not match the event | `semantic` |
//!
//! Duplicate keys and unrepresentable numbers are `not_json` because they break the
//! interoperable subset of JSON (I-JSON, RFC 7493 §2.2–2.3): different readers parse them
//! differently, so no reading is the event. Depth is `oversize` because it is a size
//! limit of the same kind as the byte limit, raised the same way. Large arrays need no
//! limit of their own: every element costs at least two bytes of payload, so the byte
//! limit bounds them (and the parsed value) too. Messages are cut to
//! [`MAX_MESSAGE_CHARS`] characters, so a dead letter stays small whatever the payload.
//!
//! A record is first read straight into its serde type, in one pass over the text
//! (`Decoder::decode_direct`). Only where that reading fails, or cannot vouch for the
//! result (fields the types do not name, nesting near the limit), is the record parsed
//! as a document, checked against the schema and converted (`Decoder::decode_checked`),
//! which also words every dead letter. Tests prove that whenever the direct reading gives
//! an event, the checked one gives the same event.

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::{IngestConfig, TopicsConfig};
use crate::event::{
    output_id, with_value_depth, DeadLetter, DeadLetterSource, ErrorClass, InputEvent, ObjectOnly,
    OutputKind, SCHEMA_VERSION,
};
use crate::record::Record;
use crate::schema::{SchemaError, SchemaKind, Schemas};

mod ignored;
pub(crate) mod json;

/// Characters of a dead-letter message at most. Messages quote parts of the payload
/// (keys, values); the payload itself is in the dead letter already.
pub const MAX_MESSAGE_CHARS: usize = 1024;

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
        let mut message = message.into();
        if let Some((cut, _)) = message.char_indices().nth(MAX_MESSAGE_CHARS) {
            message.truncate(cut);
            message.push('…');
        }
        DecodeError { class, message }
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
    max_nesting_depth: usize,
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
            max_nesting_depth: ingest.max_nesting_depth,
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
        let event = match self.decode_direct(kind, text) {
            Some(event) => event,
            None => self.decode_checked(kind, text)?,
        };
        match record.key_str() {
            Some(key) if event.has_key(key) => Ok(event),
            Some(_) => Err(DecodeError::new(
                ErrorClass::Semantic,
                format!(
                    "message key does not match the event; expected {:?}",
                    event.expected_key()
                ),
            )),
            None => Err(DecodeError::new(
                ErrorClass::Semantic,
                format!(
                    "message key is missing or not UTF-8; expected {:?}",
                    event.expected_key()
                ),
            )),
        }
    }

    /// The event read straight from the text into its type, or `None` when the text
    /// needs [`Decoder::decode_checked`]: the typed reading is only taken when the
    /// checked one would give the same event.
    ///
    /// The serde types accept exactly what the schemas accept (`event::strict`, proved
    /// by the `contracts` test and the differential tests below). What serde cannot see
    /// is left to the checked path: fields the types do not name, whose values serde
    /// skips without looking for duplicate keys, and nesting that may reach the limit
    /// (the `Value` fields get the limit less [`TYPED_DEPTH`]). Any error (syntax, a
    /// duplicate field, a number out of range, a schema violation, an unsupported
    /// `schema_version`) also goes to the checked path, which classifies it and words
    /// the dead letter.
    fn decode_direct(&self, kind: InputKind, text: &str) -> Option<InputEvent> {
        let value_depth = self.max_nesting_depth.checked_sub(TYPED_DEPTH)?;
        let event = with_value_depth(value_depth, || {
            Some(match kind {
                InputKind::Validation => InputEvent::Validation(direct(text)?),
                InputKind::Execution => InputEvent::Execution(Box::new(direct(text)?)),
                InputKind::Coordination => InputEvent::Coordination(direct(text)?),
            })
        })?;
        (event.schema_version() == SCHEMA_VERSION).then_some(event)
    }

    /// The event through the parsed document: duplicate keys, depth and numbers checked
    /// while parsing, then the schema, then the typed conversion.
    fn decode_checked(&self, kind: InputKind, text: &str) -> Result<InputEvent, DecodeError> {
        let value = json::parse(text, self.max_nesting_depth).map_err(|e| {
            let class = match e {
                json::ParseError::TooDeep { .. } => ErrorClass::Oversize,
                json::ParseError::DuplicateKey { .. }
                | json::ParseError::NumberOutOfRange { .. }
                | json::ParseError::Syntax(_) => ErrorClass::NotJson,
            };
            DecodeError::new(class, e.to_string())
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
        let event = match kind {
            InputKind::Validation => InputEvent::Validation(typed(value)?),
            InputKind::Execution => InputEvent::Execution(Box::new(typed(value)?)),
            InputKind::Coordination => InputEvent::Coordination(typed(value)?),
        };
        // After the typed reading, which takes `1.0` for 1 as the schema does.
        match event.schema_version() {
            SCHEMA_VERSION => Ok(event),
            other => Err(DecodeError::new(
                ErrorClass::Schema,
                format!("unsupported schema_version {other}; this release reads {SCHEMA_VERSION}"),
            )),
        }
    }
}

/// How deep the event types nest objects and arrays of their own, at most: an execution
/// event's `step_results[].output` is the fourth level. Their `Value` fields sit at most
/// this deep, so a document whose `Value` fields nest at most `limit - TYPED_DEPTH`
/// levels of their own nests at most `limit` levels in all.
const TYPED_DEPTH: usize = 4;

/// `T` from JSON text, or `None` on any error or on a field `T` does not name.
fn direct<T: DeserializeOwned>(text: &str) -> Option<T> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let unnamed = std::cell::Cell::new(false);
    let value = T::deserialize(ignored::Noting::new(
        ObjectOnly(&mut deserializer),
        &unnamed,
    ));
    let value = value.ok()?;
    deserializer.end().ok()?;
    (!unnamed.get()).then_some(value)
}

fn typed<T: DeserializeOwned>(value: Value) -> Result<T, DecodeError> {
    serde_json::from_value(value).map_err(|e| DecodeError::new(ErrorClass::Schema, e.to_string()))
}

/// Payload bytes a dead letter keeps at most. Base64 makes them a third larger, and the
/// dead letter must still fit in one Kafka message (the producer's and Kafka's default
/// limit is about 1 MB): a record near that limit, kept whole, would make its dead letter
/// unpublishable and stop the service on every restart. 512 KiB is 683 KiB in base64,
/// which leaves room for the message and the rest of the dead letter.
pub const DEAD_LETTER_MAX_PAYLOAD_BYTES: usize = 512 * 1024;

/// The dead letter of a record that failed to decode. Its id is derived from the
/// record's position, so a replay dead-letters it under the same id. A payload larger
/// than [`DEAD_LETTER_MAX_PAYLOAD_BYTES`] is kept cut to that size, and the message says
/// so; the whole record stays at its source position.
pub fn dead_letter(record: &Record, error: &DecodeError) -> DeadLetter {
    let position = format!("{}/{}/{}", record.topic, record.partition, record.offset);
    let kept = &record.payload[..record.payload.len().min(DEAD_LETTER_MAX_PAYLOAD_BYTES)];
    let mut message = error.message.clone();
    if kept.len() < record.payload.len() {
        message.push_str(&format!(
            "; this dead letter keeps the first {} of {} payload bytes, the whole record \
             stays at its source position",
            kept.len(),
            record.payload.len()
        ));
    }
    DeadLetter {
        schema_version: SCHEMA_VERSION,
        event_id: output_id(&position, OutputKind::DeadLetter, 0),
        error_class: error.class,
        error: message,
        source: DeadLetterSource {
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
        },
        payload_base64: base64::engine::general_purpose::STANDARD.encode(kept),
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

    /// `VALID` with its `values` replaced.
    fn with_values(values: &str) -> Vec<u8> {
        VALID.replace(r#"{"amount":50}"#, values).into_bytes()
    }

    fn failure(d: &Decoder, payload: &[u8]) -> DecodeError {
        d.decode(&record(
            "audit.validation.v1",
            Some("acme:p_transfer"),
            payload,
        ))
        .expect_err("must fail")
    }

    fn nested_objects(levels: usize) -> String {
        r#"{"a":"#.repeat(levels) + "1" + &"}".repeat(levels)
    }

    #[test]
    fn each_hostile_input_gets_its_class_and_a_precise_message() {
        let d = decoder(4096);
        let valid = VALID.as_bytes();
        let cases: Vec<(&str, Vec<u8>, ErrorClass, &str)> = vec![
            (
                "oversize",
                vec![b' '; 4097],
                ErrorClass::Oversize,
                "payload of 4097 bytes exceeds the limit of 4096 bytes",
            ),
            (
                "too deep: `values` is level 2, so 63 more levels make 65",
                with_values(&nested_objects(64)),
                ErrorClass::Oversize,
                "nesting depth exceeds the limit of 64 at line 1 column",
            ),
            (
                "invalid UTF-8",
                [&valid[..20], b"\xc3\x28", &valid[20..]].concat(),
                ErrorClass::NotJson,
                "payload is not UTF-8: invalid utf-8 sequence of 1 bytes from index 20",
            ),
            (
                "a lone surrogate escape",
                with_values(r#"{"s":"\ud800"}"#),
                ErrorClass::NotJson,
                "payload is not JSON: unexpected end of hex escape",
            ),
            (
                "truncated",
                valid[..valid.len() - 1].to_vec(),
                ErrorClass::NotJson,
                "payload is not JSON: EOF while parsing an object",
            ),
            (
                "duplicate top-level key",
                VALID
                    .replace(
                        r#""tenant_id":"acme""#,
                        r#""tenant_id":"acme","tenant_id":"evil""#,
                    )
                    .into_bytes(),
                ErrorClass::NotJson,
                r#"duplicate object key "tenant_id" at line 1 column"#,
            ),
            (
                "duplicate nested key",
                with_values(r#"{"amount":50,"x":[{"k":1,"k":2}]}"#),
                ErrorClass::NotJson,
                r#"duplicate object key "k" at line 1 column"#,
            ),
            (
                "number beyond a float",
                with_values(r#"{"amount":1e400}"#),
                ErrorClass::NotJson,
                "number out of the range of a 64-bit float at line 1 column",
            ),
            (
                "integer field beyond u64",
                VALID
                    .replace(
                        r#""schema_version":1"#,
                        r#""schema_version":18446744073709551616"#,
                    )
                    .into_bytes(),
                ErrorClass::Schema,
                "at /schema_version: ",
            ),
            (
                "integer field beyond i64, negative",
                VALID
                    .replace(
                        r#""schema_version":1"#,
                        r#""schema_version":-9223372036854775809"#,
                    )
                    .into_bytes(),
                ErrorClass::Schema,
                "at /schema_version: ",
            ),
            (
                "not an object",
                b"[1,2]".to_vec(),
                ErrorClass::Schema,
                "payload is not a JSON object",
            ),
        ];
        for (name, payload, class, message) in cases {
            let err = failure(&d, &payload);
            assert_eq!(err.class, class, "{name}: {err}");
            assert!(err.message.starts_with(message), "{name}: {err}");
        }
    }

    #[test]
    fn nesting_at_the_limit_decodes() {
        let payload = with_values(&nested_objects(63));
        let event = decoder(4096).decode(&record(
            "audit.validation.v1",
            Some("acme:p_transfer"),
            &payload,
        ));
        assert!(event.is_ok(), "{event:?}");
    }

    #[test]
    fn the_nesting_limit_is_configurable() {
        let d = Decoder::new(
            &TopicsConfig::default(),
            &IngestConfig {
                max_nesting_depth: 2,
                ..IngestConfig::default()
            },
        )
        .expect("schemas compile");
        let key = Some("acme:p_transfer");
        assert!(d
            .decode(&record("audit.validation.v1", key, VALID.as_bytes()))
            .is_ok());
        let err = failure(&d, &with_values(r#"{"a":[]}"#));
        assert_eq!(err.class, ErrorClass::Oversize, "{err}");
        assert!(
            err.message
                .starts_with("nesting depth exceeds the limit of 2"),
            "{err}"
        );
    }

    #[test]
    fn a_huge_array_is_bounded_by_the_payload_limit() {
        // The largest array that fits is decoded (the rules see all of it); one element
        // more is oversize without being parsed.
        let limit = 1 << 20;
        let overhead = with_values(r#"{"a":[0]}"#).len();
        let elements = (limit - overhead) / 2 + 1;
        let array = vec!["0"; elements].join(",");
        let payload = with_values(&format!(r#"{{"a":[{array}]}}"#));
        assert!(payload.len() <= limit && payload.len() + 2 > limit);
        let d = decoder(limit);
        match d.decode(&record(
            "audit.validation.v1",
            Some("acme:p_transfer"),
            &payload,
        )) {
            Ok(InputEvent::Validation(e)) => {
                assert_eq!(e.values["a"].as_array().map(Vec::len), Some(elements));
            }
            other => panic!("{other:?}"),
        }
        let payload = with_values(&format!(r#"{{"a":[{array},0]}}"#));
        assert_eq!(failure(&d, &payload).class, ErrorClass::Oversize);
    }

    #[test]
    fn a_message_is_cut_to_a_bounded_length() {
        let error = DecodeError::new(ErrorClass::Schema, "é".repeat(5000));
        assert_eq!(error.message.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(error.message.ends_with('…'));
        let short = DecodeError::new(ErrorClass::Schema, "short");
        assert_eq!(short.message, "short");
    }

    #[test]
    fn a_dead_letter_of_a_huge_payload_keeps_its_head_and_fits_in_a_kafka_message() {
        let payload: Vec<u8> = (0..2_000_000u32).map(|n| (n % 251) as u8).collect();
        let r = record("audit.validation.v1", None, &payload);
        let err = decoder(1 << 20).decode(&r).expect_err("oversize");
        let dl = dead_letter(&r, &err);
        let kept = base64::engine::general_purpose::STANDARD
            .decode(&dl.payload_base64)
            .expect("base64");
        assert_eq!(kept, payload[..DEAD_LETTER_MAX_PAYLOAD_BYTES]);
        assert!(
            dl.error.ends_with(
                "; this dead letter keeps the first 524288 of 2000000 payload bytes, the whole \
                 record stays at its source position"
            ),
            "{}",
            dl.error
        );
        let wire = serde_json::to_vec(&dl).expect("serializes");
        assert!(wire.len() < 1_000_000, "{} bytes", wire.len());
        // At the limit, nothing is cut.
        let r = record(
            "audit.validation.v1",
            None,
            &payload[..DEAD_LETTER_MAX_PAYLOAD_BYTES],
        );
        let dl = dead_letter(&r, &decoder(1 << 20).decode(&r).expect_err("not json"));
        assert!(!dl.error.contains("keeps the first"), "{}", dl.error);
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

    /// Hostile input never panics the decoder: every input is an event or a dead letter
    /// with a class and a message, and that dead letter is valid on the wire.
    mod never_panics {
        use proptest::prelude::*;

        use super::*;
        use crate::schema::SchemaKind;

        const SEEDS: [(&str, &str); 6] = [
            (
                "audit.validation.v1",
                include_str!("../schemas/examples/valid/validation-event/input-transfer.json"),
            ),
            (
                "audit.validation.v1",
                include_str!(
                    "../schemas/examples/valid/validation-event/output-nested-values.json"
                ),
            ),
            (
                "audit.execution.v1",
                include_str!("../schemas/examples/valid/execution-event/full.json"),
            ),
            (
                "audit.execution.v1",
                include_str!("../schemas/examples/valid/execution-event/minimal.json"),
            ),
            (
                "audit.coordination.v1",
                include_str!(
                    "../schemas/examples/valid/coordination-event/preempted-with-every-optional-field.json"
                ),
            ),
            (
                "audit.coordination.v1",
                include_str!("../schemas/examples/valid/coordination-event/applied-minimal.json"),
            ),
        ];

        /// One edit of a valid payload: the kinds of damage hostile producers do.
        #[derive(Debug, Clone)]
        enum Mutation {
            Flip {
                at: usize,
                byte: u8,
            },
            Insert {
                at: usize,
                bytes: Vec<u8>,
            },
            Delete {
                at: usize,
                len: usize,
            },
            Truncate {
                at: usize,
            },
            /// Repeats a slice in place: duplicate keys, repeated members, broken nesting.
            Repeat {
                at: usize,
                len: usize,
                times: usize,
            },
            /// Wraps a slice in brackets many levels deep.
            Nest {
                at: usize,
                levels: usize,
            },
        }

        fn mutation() -> impl Strategy<Value = Mutation> {
            let at = any::<usize>();
            prop_oneof![
                (at, any::<u8>()).prop_map(|(at, byte)| Mutation::Flip { at, byte }),
                (at, prop::collection::vec(any::<u8>(), 1..16))
                    .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
                (at, 1..64usize).prop_map(|(at, len)| Mutation::Delete { at, len }),
                at.prop_map(|at| Mutation::Truncate { at }),
                (at, 1..64usize, 2..5usize).prop_map(|(at, len, times)| Mutation::Repeat {
                    at,
                    len,
                    times
                }),
                (at, 1..200usize).prop_map(|(at, levels)| Mutation::Nest { at, levels }),
            ]
        }

        fn apply(payload: &mut Vec<u8>, mutation: &Mutation) {
            let clamp = |at: usize, payload: &Vec<u8>| at % (payload.len() + 1);
            match mutation {
                Mutation::Flip { at, byte } if !payload.is_empty() => {
                    let at = at % payload.len();
                    payload[at] = *byte;
                }
                Mutation::Flip { .. } => {}
                Mutation::Insert { at, bytes } => {
                    let at = clamp(*at, payload);
                    payload.splice(at..at, bytes.iter().copied());
                }
                Mutation::Delete { at, len } => {
                    let at = clamp(*at, payload);
                    let end = (at + len).min(payload.len());
                    payload.drain(at..end);
                }
                Mutation::Truncate { at } => payload.truncate(clamp(*at, payload)),
                Mutation::Repeat { at, len, times } => {
                    let at = clamp(*at, payload);
                    let end = (at + len).min(payload.len());
                    let slice = payload[at..end].to_vec();
                    for _ in 1..*times {
                        payload.splice(end..end, slice.iter().copied());
                    }
                }
                Mutation::Nest { at, levels } => {
                    let at = clamp(*at, payload);
                    let end = payload[at..]
                        .iter()
                        .position(|b| *b == b',' || *b == b'}')
                        .map_or(payload.len(), |i| at + i);
                    payload.splice(end..end, std::iter::repeat_n(b']', *levels));
                    payload.splice(at..at, std::iter::repeat_n(b'[', *levels));
                }
            }
        }

        /// The property itself: no panic (the test harness catches one), and a failure
        /// is a dead letter whose class, message and wire form are all usable.
        fn check(d: &Decoder, schemas: &Schemas, record: &Record) -> Result<(), TestCaseError> {
            if let (Some(kind), Ok(text)) = (
                d.kind_of(&record.topic),
                std::str::from_utf8(&record.payload),
            ) {
                if let Some(direct) = d.decode_direct(kind, text) {
                    prop_assert_eq!(d.decode_checked(kind, text), Ok(direct));
                }
            }
            if let Err(error) = d.decode(record) {
                prop_assert!(!error.message.trim().is_empty(), "{error:?}");
                prop_assert!(ErrorClass::ALL.contains(&error.class));
                let dl = dead_letter(record, &error);
                let wire = serde_json::to_value(&dl).expect("dead letters serialize");
                prop_assert_eq!(schemas.validate(SchemaKind::DeadLetter, &wire), Ok(()));
            }
            Ok(())
        }

        type Fixture = (Decoder, Schemas, Vec<(String, String, Vec<u8>)>);

        /// Built once: compiling the schemas costs more than thousands of cases.
        fn fixture() -> &'static Fixture {
            static FIXTURE: std::sync::LazyLock<Fixture> = std::sync::LazyLock::new(build);
            &FIXTURE
        }

        fn build() -> Fixture {
            let d = decoder(8192);
            let seeds = SEEDS
                .iter()
                .map(|(topic, text)| {
                    let payload = text.trim().as_bytes().to_vec();
                    let event = d
                        .decode(&record(topic, None, &payload))
                        .err()
                        .map(|e| e.class);
                    // The seeds are valid events; only the (missing) key fails.
                    assert_eq!(event, Some(ErrorClass::Semantic), "{topic} seed");
                    let typed: Value = serde_json::from_slice(&payload).expect("seed");
                    let tenant = typed["tenant_id"].as_str().unwrap_or_default();
                    let id = ["process", "contract_id", "envelope_id"]
                        .iter()
                        .find_map(|f| typed[f].as_str())
                        .unwrap_or_default();
                    (topic.to_string(), format!("{tenant}:{id}"), payload)
                })
                .collect();
            (d, Schemas::compile().expect("schemas"), seeds)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn arbitrary_bytes_are_an_event_or_a_dead_letter(
                topic in 0..4usize,
                key in prop::option::of(prop::collection::vec(any::<u8>(), 0..32)),
                payload in prop::collection::vec(any::<u8>(), 0..600),
            ) {
                let (d, schemas, _) = fixture();
                let topics = ["audit.validation.v1", "audit.execution.v1", "audit.coordination.v1", "other"];
                let mut r = record(topics[topic], None, &payload);
                r.key = key;
                check(d, schemas, &r)?;
            }

            #[test]
            fn mutated_valid_events_are_an_event_or_a_dead_letter(
                seed in 0..SEEDS.len(),
                mutations in prop::collection::vec(mutation(), 1..6),
            ) {
                let (d, schemas, seeds) = fixture();
                let (topic, key, payload) = &seeds[seed];
                let mut payload = payload.clone();
                for m in &mutations {
                    apply(&mut payload, m);
                }
                check(d, schemas, &record(topic, Some(key), &payload))?;
            }
        }

        #[test]
        fn the_seeds_decode_under_their_keys() {
            let (d, _, seeds) = fixture();
            for (topic, key, payload) in seeds {
                let decoded = d.decode(&record(topic, Some(key), payload));
                assert!(decoded.is_ok(), "{topic}: {decoded:?}");
            }
        }
    }

    /// The direct reading (`decode_direct`) against the checked one (`decode_checked`):
    /// whenever the direct reading gives an event, the checked one gives the same event.
    /// Documents are the schema examples, valid and invalid, edited as JSON: values
    /// replaced, keys removed or added (an existing key added again is a duplicate key in
    /// the text), values nested deeper.
    mod direct_reading {
        use proptest::prelude::*;
        use serde_json::json;

        use super::*;

        const KINDS: [(&str, InputKind); 3] = [
            ("validation-event", InputKind::Validation),
            ("execution-event", InputKind::Execution),
            ("coordination-event", InputKind::Coordination),
        ];

        /// Every example of the three input kinds, valid and invalid, that is JSON.
        fn seeds() -> &'static [(InputKind, String, Value)] {
            static SEEDS: std::sync::LazyLock<Vec<(InputKind, String, Value)>> =
                std::sync::LazyLock::new(|| {
                    let root =
                        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/examples");
                    let mut seeds = Vec::new();
                    for validity in ["valid", "invalid"] {
                        for (dir, kind) in KINDS {
                            let mut files: Vec<_> =
                                std::fs::read_dir(root.join(validity).join(dir))
                                    .expect("examples")
                                    .map(|entry| entry.expect("example").path())
                                    .collect();
                            files.sort();
                            for file in files {
                                let text = std::fs::read_to_string(&file).expect("example");
                                if let Ok(value) = serde_json::from_str(&text) {
                                    seeds.push((kind, file.display().to_string(), value));
                                }
                            }
                        }
                    }
                    seeds
                });
            &SEEDS
        }

        fn decoders() -> &'static [Decoder; 2] {
            static DECODERS: std::sync::LazyLock<[Decoder; 2]> = std::sync::LazyLock::new(|| {
                let with_depth = |max_nesting_depth| {
                    Decoder::new(
                        &TopicsConfig::default(),
                        &IngestConfig {
                            max_nesting_depth,
                            ..IngestConfig::default()
                        },
                    )
                    .expect("schemas compile")
                };
                [with_depth(64), with_depth(7)]
            });
            &DECODERS
        }

        /// Where a node sits: keys and indexes from the root.
        #[derive(Debug, Clone)]
        enum Step {
            Key(String),
            Index(usize),
        }

        fn paths(value: &Value, at: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
            out.push(at.clone());
            match value {
                Value::Object(map) => {
                    for (key, member) in map {
                        at.push(Step::Key(key.clone()));
                        paths(member, at, out);
                        at.pop();
                    }
                }
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        at.push(Step::Index(i));
                        paths(item, at, out);
                        at.pop();
                    }
                }
                _ => {}
            }
        }

        fn node<'v>(value: &'v mut Value, path: &[Step]) -> &'v mut Value {
            path.iter().fold(value, |node, step| match step {
                Step::Key(key) => &mut node[key.as_str()],
                Step::Index(i) => &mut node[*i],
            })
        }

        /// One edit of a document.
        #[derive(Debug, Clone)]
        enum Edit {
            Replace {
                at: usize,
                with: Value,
            },
            Remove {
                at: usize,
            },
            /// Adds `key` to an object; an existing key is written a second time.
            Add {
                at: usize,
                key: String,
                with: Value,
            },
            Nest {
                at: usize,
                levels: usize,
            },
        }

        fn leaf() -> impl Strategy<Value = Value> {
            prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                any::<f64>().prop_map(
                    |f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
                ),
                prop_oneof![
                    Just("HEALTHY"),
                    Just("COMPLETED"),
                    Just("completed"),
                    Just("input"),
                    Just("APPLIED"),
                    Just("SAFETY"),
                    Just("2026-11-01T10:00:00Z"),
                    Just("2026-11-01 10:00:00Z"),
                    Just("8f14e45f-ceea-4d6e-a2b1-3c4d5e6f7a8b"),
                    Just("8f14e45fceea4d6ea2b13c4d5e6f7a8b"),
                    Just(""),
                    Just("x\"\\\u{1}"),
                ]
                .prop_map(Value::from),
            ]
        }

        fn json_value() -> impl Strategy<Value = Value> {
            leaf().prop_recursive(3, 16, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::btree_map(key(), inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("schema_version"),
                Just("event_id"),
                Just("tenant_id"),
                Just("occurred_at"),
                Just("values"),
                Just("phase"),
                Just("process"),
                Just("job_status"),
                Just("step_results"),
                Just("output"),
                Just("target"),
                Just("rollback_action"),
                Just("signals"),
                Just("expected"),
                Just("observed"),
                Just("name"),
                Just("health_before"),
                Just("proposed_changes"),
                Just("steps_executed"),
                Just("decision"),
                Just("audit_id"),
                Just("extra"),
            ]
            .prop_map(str::to_owned)
        }

        fn edit() -> impl Strategy<Value = Edit> {
            let at = any::<usize>();
            prop_oneof![
                (at, json_value()).prop_map(|(at, with)| Edit::Replace { at, with }),
                at.prop_map(|at| Edit::Remove { at }),
                (at, key(), json_value()).prop_map(|(at, key, with)| Edit::Add { at, key, with }),
                (at, 1..70usize).prop_map(|(at, levels)| Edit::Nest { at, levels }),
            ]
        }

        /// The edited document as text, with at most one duplicate key.
        fn edited(seed: &Value, edits: &[Edit]) -> String {
            let mut doc = seed.clone();
            let mut duplicate: Option<(Vec<Step>, String, Value)> = None;
            for edit in edits {
                let mut all = Vec::new();
                paths(&doc, &mut Vec::new(), &mut all);
                let pick = |at: usize| all[at % all.len()].clone();
                match edit {
                    Edit::Replace { at, with } => *node(&mut doc, &pick(*at)) = with.clone(),
                    Edit::Remove { at } => {
                        let mut path = pick(*at);
                        match path.pop() {
                            Some(Step::Key(key)) => {
                                if let Value::Object(map) = node(&mut doc, &path) {
                                    map.remove(&key);
                                }
                            }
                            Some(Step::Index(i)) => {
                                if let Value::Array(items) = node(&mut doc, &path) {
                                    items.remove(i);
                                }
                            }
                            None => {}
                        }
                    }
                    Edit::Add { at, key, with } => {
                        let path = pick(*at);
                        if let Value::Object(map) = node(&mut doc, &path) {
                            if map.contains_key(key) {
                                duplicate = Some((path, key.clone(), with.clone()));
                            } else {
                                map.insert(key.clone(), with.clone());
                            }
                        }
                    }
                    Edit::Nest { at, levels } => {
                        let target = node(&mut doc, &pick(*at));
                        for _ in 0..*levels {
                            *target = json!([target.take()]);
                        }
                    }
                }
            }
            let mut text = String::new();
            write(&doc, &mut Vec::new(), duplicate.as_ref(), &mut text);
            text
        }

        /// JSON text of `value`, writing the duplicate's key a second time in its object
        /// (when that object is still there).
        fn write(
            value: &Value,
            at: &mut Vec<String>,
            duplicate: Option<&(Vec<Step>, String, Value)>,
            out: &mut String,
        ) {
            match value {
                Value::Object(map) => {
                    out.push('{');
                    for (i, (key, member)) in map.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        out.push_str(&serde_json::to_string(key).expect("key"));
                        out.push(':');
                        at.push(key.clone());
                        write(member, at, duplicate, out);
                        at.pop();
                    }
                    if let Some((path, key, with)) = duplicate {
                        let here = path.len() == at.len()
                            && path.iter().zip(at.iter()).all(|(step, name)| match step {
                                Step::Key(k) => k == name,
                                Step::Index(i) => i.to_string() == *name,
                            });
                        if here && map.contains_key(key) {
                            out.push(',');
                            out.push_str(&serde_json::to_string(key).expect("key"));
                            out.push(':');
                            out.push_str(&with.to_string());
                        }
                    }
                    out.push('}');
                }
                Value::Array(items) => {
                    out.push('[');
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        at.push(i.to_string());
                        write(item, at, duplicate, out);
                        at.pop();
                    }
                    out.push(']');
                }
                scalar => out.push_str(&scalar.to_string()),
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2048))]

            #[test]
            fn a_direct_reading_is_always_the_checked_reading(
                seed in 0..1000usize,
                edits in prop::collection::vec(edit(), 0..4),
            ) {
                let seeds = seeds();
                let (kind, _, doc) = &seeds[seed % seeds.len()];
                let text = edited(doc, &edits);
                for d in decoders() {
                    if let Some(direct) = d.decode_direct(*kind, &text) {
                        prop_assert_eq!(d.decode_checked(*kind, &text), Ok(direct), "{}", text);
                    }
                }
            }
        }

        #[test]
        fn valid_examples_without_extra_fields_are_read_directly() {
            let [d, _] = decoders();
            let mut direct = 0;
            for (kind, file, doc) in seeds() {
                let text = doc.to_string();
                let checked = d.decode_checked(*kind, &text);
                let read = d.decode_direct(*kind, &text);
                if file.contains("/invalid/") {
                    assert!(read.is_none(), "{file}");
                } else if file.contains("extra-fields") {
                    assert!(read.is_none() && checked.is_ok(), "{file}");
                } else {
                    assert_eq!(
                        read.as_ref().ok_or(()),
                        checked.as_ref().map_err(|_| ()),
                        "{file}"
                    );
                    direct += 1;
                }
            }
            assert!(direct >= 10, "{direct} examples read directly");
        }

        #[test]
        fn what_the_direct_reading_cannot_see_goes_to_the_checked_one() {
            let d = decoder(8192);
            let base = json!({
                "schema_version": 1, "event_id": "8f14e45f-ceea-4d6e-a2b1-3c4d5e6f7a8b",
                "tenant_id": "acme", "occurred_at": "2026-11-01T10:00:00Z",
                "process": "p", "phase": "input", "values": {"a": 1}
            })
            .to_string();
            assert!(d.decode_direct(InputKind::Validation, &base).is_some());
            // A duplicate key inside a field the types do not name: serde skips it unread.
            let extra = base.replacen('{', r#"{"extra":{"k":1,"k":2},"#, 1);
            assert_eq!(d.decode_direct(InputKind::Validation, &extra), None);
            let error = d.decode_checked(InputKind::Validation, &extra).unwrap_err();
            assert_eq!(error.class, ErrorClass::NotJson);
            // A duplicate key inside a `Value` field is refused by the field itself.
            let inner = base.replace(r#"{"a":1}"#, r#"{"a":1,"a":2}"#);
            assert_eq!(d.decode_direct(InputKind::Validation, &inner), None);
            // Nesting: `values` at the limit is read directly, one level more is not.
            let shallow = &decoders()[1];
            let nested = |levels: usize| {
                base.replace(
                    r#"{"a":1}"#,
                    &format!("{}1{}", r#"{"a":"#.repeat(levels), "}".repeat(levels)),
                )
            };
            // The top object plus `values` at 3 levels: 4, within 7 less TYPED_DEPTH = 3.
            assert!(shallow
                .decode_direct(InputKind::Validation, &nested(3))
                .is_some());
            assert_eq!(
                shallow.decode_direct(InputKind::Validation, &nested(4)),
                None
            );
            assert!(shallow
                .decode_checked(InputKind::Validation, &nested(6))
                .is_ok());
            assert_eq!(
                shallow
                    .decode_checked(InputKind::Validation, &nested(7))
                    .unwrap_err()
                    .class,
                ErrorClass::Oversize
            );
        }
    }
}
