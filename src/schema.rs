//! The JSON Schemas of every event kind (SPEC §2, §4b), embedded in the binary.
//!
//! `schemas/*.schema.json` are the published contract; the serde types in
//! [`event`](crate::event) accept and reject the same documents (the `contracts`
//! integration test proves it on `schemas/examples/`). Schemas are compiled once, with
//! `format` asserted: draft 2020-12 treats `format` as an annotation by default, which
//! would let any string through as a `uuid` or `date-time`.
//!
//! Pure: no I/O, no clock.

use jsonschema::{Draft, ValidationError, Validator};
use serde_json::Value;
use thiserror::Error;

/// One event kind with a schema: the three inputs, the three published outputs and the
/// stored coordination record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemaKind {
    ValidationEvent,
    ExecutionEvent,
    CoordinationEvent,
    AuditDecision,
    AuditVerdict,
    DeadLetter,
    CoordinationRecord,
}

impl SchemaKind {
    pub const ALL: [SchemaKind; 7] = [
        SchemaKind::ValidationEvent,
        SchemaKind::ExecutionEvent,
        SchemaKind::CoordinationEvent,
        SchemaKind::AuditDecision,
        SchemaKind::AuditVerdict,
        SchemaKind::DeadLetter,
        SchemaKind::CoordinationRecord,
    ];

    /// The schema's file name in `schemas/`.
    pub fn file_name(self) -> &'static str {
        match self {
            SchemaKind::ValidationEvent => "validation-event.v1.schema.json",
            SchemaKind::ExecutionEvent => "execution-event.v1.schema.json",
            SchemaKind::CoordinationEvent => "coordination-event.v1.schema.json",
            SchemaKind::AuditDecision => "audit-decision.v1.schema.json",
            SchemaKind::AuditVerdict => "audit-verdict.v1.schema.json",
            SchemaKind::DeadLetter => "dead-letter.v1.schema.json",
            SchemaKind::CoordinationRecord => "coordination-record.v1.schema.json",
        }
    }

    /// The schema's text, as published.
    pub fn source(self) -> &'static str {
        match self {
            SchemaKind::ValidationEvent => {
                include_str!("../schemas/validation-event.v1.schema.json")
            }
            SchemaKind::ExecutionEvent => include_str!("../schemas/execution-event.v1.schema.json"),
            SchemaKind::CoordinationEvent => {
                include_str!("../schemas/coordination-event.v1.schema.json")
            }
            SchemaKind::AuditDecision => include_str!("../schemas/audit-decision.v1.schema.json"),
            SchemaKind::AuditVerdict => include_str!("../schemas/audit-verdict.v1.schema.json"),
            SchemaKind::DeadLetter => include_str!("../schemas/dead-letter.v1.schema.json"),
            SchemaKind::CoordinationRecord => {
                include_str!("../schemas/coordination-record.v1.schema.json")
            }
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// An embedded schema that cannot be used: a bug in the release, never bad input.
#[derive(Debug, Error)]
pub enum SchemaError {
    #[error("schema {file} is not JSON: {error}")]
    NotJson {
        file: &'static str,
        error: serde_json::Error,
    },
    #[error("schema {file} does not compile: {error}")]
    Compile { file: &'static str, error: String },
}

/// All schemas compiled once; cheap to share (Send + Sync).
#[derive(Debug)]
pub struct Schemas {
    /// Indexed by `SchemaKind as usize`, in `SchemaKind::ALL` order.
    validators: Vec<Validator>,
}

/// Longest violation message [`Schemas::validate`] returns: a type error quotes the whole
/// offending value, which may be most of the event.
const MAX_MESSAGE_CHARS: usize = 200;

impl Schemas {
    /// Parses and compiles every embedded schema.
    pub fn compile() -> Result<Schemas, SchemaError> {
        let validators = SchemaKind::ALL
            .into_iter()
            .map(compile_one)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Schemas { validators })
    }

    /// Ok, or the first violation as a readable message: `at /values/amount: "abc" is
    /// not of type "number"` (instance path + message; keep it short; never Debug output).
    pub fn validate(&self, kind: SchemaKind, instance: &Value) -> Result<(), String> {
        self.validators[kind.index()]
            .validate(instance)
            .map_err(|error| describe(&error))
    }
}

fn compile_one(kind: SchemaKind) -> Result<Validator, SchemaError> {
    compile_source(kind.file_name(), kind.source())
}

fn compile_source(file: &'static str, source: &str) -> Result<Validator, SchemaError> {
    let schema: Value =
        serde_json::from_str(source).map_err(|error| SchemaError::NotJson { file, error })?;
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .should_validate_formats(true)
        .should_ignore_unknown_formats(false)
        .build(&schema)
        .map_err(|error| SchemaError::Compile {
            file,
            error: error.to_string(),
        })
}

fn describe(error: &ValidationError<'_>) -> String {
    let path = error.instance_path().to_string();
    let at = if path.is_empty() { "(root)" } else { &path };
    let message = error.to_string();
    if message.chars().count() <= MAX_MESSAGE_CHARS {
        format!("at {at}: {message}")
    } else {
        let head: String = message.chars().take(MAX_MESSAGE_CHARS - 1).collect();
        format!("at {at}: {head}…")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schemas() -> Schemas {
        Schemas::compile().expect("embedded schemas compile")
    }

    fn parsed(kind: SchemaKind) -> Value {
        serde_json::from_str(kind.source()).unwrap()
    }

    fn execution_event() -> Value {
        json!({
            "schema_version": 1,
            "event_id": "0b8f1a2e-6c1d-4c7e-9f4b-1d2e3f4a5b6c",
            "tenant_id": "acme",
            "occurred_at": "2024-05-01T10:00:00Z",
            "job_id": "job-42",
            "contract_id": "c_payments",
            "contract_revision": 3,
            "job_status": "COMPLETED",
            "contract_scope": ["payments-api"],
            "step_results": []
        })
    }

    #[test]
    fn every_embedded_schema_compiles() {
        let schemas = schemas();
        assert_eq!(schemas.validators.len(), SchemaKind::ALL.len());
    }

    #[test]
    fn every_schema_is_valid_against_the_draft_2020_12_metaschema() {
        for kind in SchemaKind::ALL {
            let schema = parsed(kind);
            if let Err(error) = jsonschema::draft202012::meta::validate(&schema) {
                panic!("{}: {}", kind.file_name(), describe(&error));
            }
        }
    }

    #[test]
    fn kinds_are_listed_in_index_order_with_their_own_file() {
        for (position, kind) in SchemaKind::ALL.into_iter().enumerate() {
            assert_eq!(kind.index(), position);
            let schema = parsed(kind);
            let id = format!(
                "https://audit-stream.dev/schemas/{}",
                kind.file_name().replace(".schema.json", ".json")
            );
            assert_eq!(schema["$id"], json!(id), "{}", kind.file_name());
            assert_eq!(
                schema["$schema"],
                json!("https://json-schema.org/draft/2020-12/schema")
            );
            assert!(schema["title"].is_string() && schema["description"].is_string());
        }
    }

    /// Every property of every object, nested ones and `$defs` included, says what it is.
    #[test]
    fn every_property_has_a_description() {
        fn walk(node: &Value, at: &str, missing: &mut Vec<String>) {
            match node {
                Value::Object(map) => {
                    if let Some(Value::Object(properties)) = map.get("properties") {
                        for (name, property) in properties {
                            if !property["description"].is_string() {
                                missing.push(format!("{at}/properties/{name}"));
                            }
                        }
                    }
                    for (key, child) in map {
                        walk(child, &format!("{at}/{key}"), missing);
                    }
                }
                Value::Array(items) => {
                    for (i, child) in items.iter().enumerate() {
                        walk(child, &format!("{at}/{i}"), missing);
                    }
                }
                _ => {}
            }
        }
        let mut missing = Vec::new();
        for kind in SchemaKind::ALL {
            walk(&parsed(kind), kind.file_name(), &mut missing);
        }
        assert!(missing.is_empty(), "no description: {missing:?}");
    }

    #[test]
    fn inputs_allow_unknown_fields_and_outputs_forbid_them() {
        for kind in SchemaKind::ALL {
            let input = matches!(
                kind,
                SchemaKind::ValidationEvent
                    | SchemaKind::ExecutionEvent
                    | SchemaKind::CoordinationEvent
            );
            assert_eq!(
                parsed(kind)["additionalProperties"],
                json!(input),
                "{}",
                kind.file_name()
            );
        }
    }

    /// The source reference is written out in three schemas; they must not drift apart.
    #[test]
    fn the_source_reference_is_the_same_in_every_output_schema() {
        let reference = parsed(SchemaKind::AuditDecision)["$defs"]["source_ref"].clone();
        assert!(reference.is_object());
        for kind in [SchemaKind::AuditVerdict, SchemaKind::CoordinationRecord] {
            assert_eq!(parsed(kind)["$defs"]["source_ref"], reference);
        }
    }

    #[test]
    fn a_valid_event_passes() {
        assert_eq!(
            schemas().validate(SchemaKind::ExecutionEvent, &execution_event()),
            Ok(())
        );
    }

    #[test]
    fn a_violation_names_the_instance_path_and_the_rule() {
        let mut event = execution_event();
        event["contract_revision"] = json!("3");
        assert_eq!(
            schemas().validate(SchemaKind::ExecutionEvent, &event),
            Err(r#"at /contract_revision: "3" is not of type "integer""#.to_owned())
        );

        let mut event = execution_event();
        event["step_results"] =
            json!([{"step_id": "s1", "step_type": "deploy", "status": "COMPLETED"}]);
        assert_eq!(
            schemas().validate(SchemaKind::ExecutionEvent, &event),
            Err(r#"at /step_results/0: "output" is a required property"#.to_owned())
        );
    }

    #[test]
    fn a_missing_top_level_field_is_reported_at_the_root() {
        let mut event = execution_event();
        event.as_object_mut().unwrap().remove("tenant_id");
        assert_eq!(
            schemas().validate(SchemaKind::ExecutionEvent, &event),
            Err(r#"at (root): "tenant_id" is a required property"#.to_owned())
        );
    }

    #[test]
    fn formats_are_asserted_not_just_annotated() {
        let schemas = schemas();
        let mut event = execution_event();
        event["event_id"] = json!("0b8f1a2e6c1d4c7e9f4b1d2e3f4a5b6c");
        let error = schemas
            .validate(SchemaKind::ExecutionEvent, &event)
            .unwrap_err();
        assert!(error.starts_with("at /event_id: "), "{error}");
        assert!(error.contains(r#"is not a "uuid""#), "{error}");

        let mut event = execution_event();
        event["occurred_at"] = json!("2024-05-01 10:00:00Z");
        let error = schemas
            .validate(SchemaKind::ExecutionEvent, &event)
            .unwrap_err();
        assert!(error.contains(r#"is not a "date-time""#), "{error}");
    }

    #[test]
    fn a_long_offending_value_is_cut_short() {
        let mut event = execution_event();
        event["contract_scope"] = json!("x".repeat(10_000));
        let error = schemas()
            .validate(SchemaKind::ExecutionEvent, &event)
            .unwrap_err();
        assert!(error.starts_with("at /contract_scope: \"xxx"), "{error}");
        assert!(error.ends_with('…'));
        assert!(error.chars().count() < MAX_MESSAGE_CHARS + 30);
    }

    #[test]
    fn compiled_schemas_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Schemas>();
    }

    #[test]
    fn a_broken_schema_is_reported_with_its_file_name() {
        let error = compile_source("broken.schema.json", "{").unwrap_err();
        assert!(matches!(error, SchemaError::NotJson { .. }));
        assert!(error
            .to_string()
            .starts_with("schema broken.schema.json is not JSON: "));

        let error = compile_source("broken.schema.json", r#"{"type": 5}"#).unwrap_err();
        assert!(matches!(error, SchemaError::Compile { .. }));
        assert!(error
            .to_string()
            .starts_with("schema broken.schema.json does not compile: "));

        let unknown_format = r#"{"type": "string", "format": "uid"}"#;
        assert!(compile_source("typo.schema.json", unknown_format).is_err());
    }
}
