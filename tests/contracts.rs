//! The JSON Schemas and the serde types accept and reject the same documents (SPEC §2).
//!
//! Every file in `schemas/examples/valid/<kind>/` must pass both the schema and serde,
//! every file in `schemas/examples/invalid/<kind>/` must fail both, and every valid
//! example must survive a serde round trip and still match its schema. Property tests
//! then probe the edges the examples can only sample: timestamps, UUIDs and integers.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use audit_stream::event::{
    AuditDecision, AuditVerdict, CoordinationEvent, CoordinationRecord, DeadLetter, ExecutionEvent,
    ValidationEvent,
};
use audit_stream::schema::{SchemaKind, Schemas};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Number, Value};

fn schemas() -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| Schemas::compile().expect("embedded schemas compile"))
}

/// `schemas/examples/{valid,invalid}/<dir>` holds the examples of a kind.
fn example_dir(kind: SchemaKind) -> &'static str {
    kind.file_name()
        .strip_suffix(".v1.schema.json")
        .expect("schema files are named <kind>.v1.schema.json")
}

/// serde's answer for `value` read as `kind`: the value written back, or why it was
/// rejected.
fn serde_round_trip(kind: SchemaKind, value: &Value) -> Result<Value, String> {
    fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(
        value: &Value,
    ) -> Result<Value, String> {
        let typed: T = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
        let written = serde_json::to_value(&typed).expect("a wire type always serializes");
        let again: T = serde_json::from_value(written.clone())
            .map_err(|e| format!("serde rejects its own output {written}: {e}"))?;
        assert_eq!(again, typed, "a second round trip changed the value");
        Ok(written)
    }
    match kind {
        SchemaKind::ValidationEvent => round_trip::<ValidationEvent>(value),
        SchemaKind::ExecutionEvent => round_trip::<ExecutionEvent>(value),
        SchemaKind::CoordinationEvent => round_trip::<CoordinationEvent>(value),
        SchemaKind::AuditDecision => round_trip::<AuditDecision>(value),
        SchemaKind::AuditVerdict => round_trip::<AuditVerdict>(value),
        SchemaKind::DeadLetter => round_trip::<DeadLetter>(value),
        SchemaKind::CoordinationRecord => round_trip::<CoordinationRecord>(value),
    }
}

struct Example {
    kind: SchemaKind,
    path: PathBuf,
    value: Value,
}

impl Example {
    fn name(&self) -> String {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        self.path
            .strip_prefix(root)
            .unwrap_or(&self.path)
            .display()
            .to_string()
    }
}

/// Every example under `schemas/examples/<validity>/`, sorted; a directory that names no
/// kind, or a file that is not JSON, fails the test rather than going unchecked.
fn examples(validity: &str) -> Vec<Example> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas/examples")
        .join(validity);
    let mut found = Vec::new();
    for dir in sorted_entries(&root) {
        let dir_name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let kind = SchemaKind::ALL
            .into_iter()
            .find(|kind| example_dir(*kind) == dir_name)
            .unwrap_or_else(|| panic!("{} names no schema kind", dir.display()));
        for path in sorted_entries(&dir) {
            assert_eq!(
                path.extension().and_then(|e| e.to_str()),
                Some("json"),
                "{} is not a .json example",
                path.display()
            );
            let text = fs::read_to_string(&path).unwrap();
            let value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            found.push(Example { kind, path, value });
        }
    }
    found
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    entries.sort();
    entries
}

fn assert_no_failures(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} example(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_kind_has_at_least_two_valid_and_three_invalid_examples() {
    let (valid, invalid) = (examples("valid"), examples("invalid"));
    for kind in SchemaKind::ALL {
        let count = |examples: &[Example]| examples.iter().filter(|e| e.kind == kind).count();
        assert!(
            count(&valid) >= 2,
            "{}: fewer than 2 valid examples",
            example_dir(kind)
        );
        assert!(
            count(&invalid) >= 3,
            "{}: fewer than 3 invalid examples",
            example_dir(kind)
        );
    }
}

#[test]
fn valid_examples_are_accepted_by_the_schema_and_by_serde() {
    let mut failures = Vec::new();
    for example in examples("valid") {
        if let Err(error) = schemas().validate(example.kind, &example.value) {
            failures.push(format!("{}: schema rejects it: {error}", example.name()));
        }
        if let Err(error) = serde_round_trip(example.kind, &example.value) {
            failures.push(format!("{}: serde rejects it: {error}", example.name()));
        }
    }
    assert_no_failures(failures);
}

#[test]
fn invalid_examples_are_rejected_by_the_schema_and_by_serde() {
    let mut failures = Vec::new();
    for example in examples("invalid") {
        if schemas().validate(example.kind, &example.value).is_ok() {
            failures.push(format!("{}: schema accepts it", example.name()));
        }
        if serde_round_trip(example.kind, &example.value).is_ok() {
            failures.push(format!("{}: serde accepts it", example.name()));
        }
    }
    assert_no_failures(failures);
}

#[test]
fn valid_examples_written_back_by_serde_still_match_the_schema() {
    let mut failures = Vec::new();
    for example in examples("valid") {
        let Ok(written) = serde_round_trip(example.kind, &example.value) else {
            continue; // reported by the acceptance test
        };
        if let Err(error) = schemas().validate(example.kind, &written) {
            failures.push(format!(
                "{}: written back as {written}: {error}",
                example.name()
            ));
        }
    }
    assert_no_failures(failures);
}

/// Outputs forbid unknown fields on both sides; inputs allow them on both sides.
#[test]
fn an_unknown_field_is_ignored_on_inputs_and_rejected_on_outputs() {
    for example in examples("valid") {
        let mut value = example.value.clone();
        value["added_by_a_newer_producer"] = json!({"any": "thing"});
        let schema_ok = schemas().validate(example.kind, &value).is_ok();
        let serde_ok = serde_round_trip(example.kind, &value).is_ok();
        let is_input = matches!(
            example.kind,
            SchemaKind::ValidationEvent
                | SchemaKind::ExecutionEvent
                | SchemaKind::CoordinationEvent
        );
        assert_eq!(
            (schema_ok, serde_ok),
            (is_input, is_input),
            "{}",
            example.name()
        );
    }
}

/// A derived struct impl also reads a positional array, and no field attribute can turn
/// that off for a top-level event (nested structs are read from objects only). The schema
/// rejects it, so the decoder must validate against the schema before serde reads an event.
#[test]
fn serde_alone_reads_a_top_level_positional_array_which_the_schema_rejects() {
    let positional = json!([
        1,
        "0b8f1a2e-6c1d-4c7e-9f4b-1d2e3f4a5b6c",
        "acme",
        "2024-05-01T10:00:00Z",
        "p_transfer",
        "input",
        {"amount": 50}
    ]);
    assert_eq!(
        schemas().validate(SchemaKind::ValidationEvent, &positional),
        Err(r#"at (root): [1,"0b8f1a2e-6c1d-4c7e-9f4b-1d2e3f4a5b6c","acme","2024-05-01T10:00:00Z","p_transfer","input",{"amount":50}] is not of type "object""#.to_owned())
    );
    assert!(serde_round_trip(SchemaKind::ValidationEvent, &positional).is_ok());
}

/// RFC 3339 years run from 0000 to 9999, and JSON Schema cannot do offset arithmetic: an
/// offset that moves an instant out of that range (possible only on 0000-01-01 and
/// 9999-12-31) is accepted by both sides, but chrono writes the UTC instant in its
/// extended form (`-0001-…`, `+10000-…`), which neither side reads back.
#[test]
fn an_offset_that_moves_an_instant_out_of_years_0000_to_9999_is_not_written_back_as_rfc3339() {
    let write_back = |event: &Value| {
        let typed: ValidationEvent = serde_json::from_value(event.clone()).unwrap();
        serde_json::to_value(&typed).unwrap()
    };
    for (at, written_as) in [
        ("0000-01-01T00:30:00+01:00", "-0001-12-31T23:30:00Z"),
        ("9999-12-31T23:30:00-01:00", "+10000-01-01T00:30:00Z"),
    ] {
        let event = variant(SchemaKind::ValidationEvent, &["occurred_at"], json!(at));
        assert_eq!(
            schemas().validate(SchemaKind::ValidationEvent, &event),
            Ok(())
        );
        let written = write_back(&event);
        assert_eq!(written["occurred_at"], json!(written_as));
        assert!(schemas()
            .validate(SchemaKind::ValidationEvent, &written)
            .is_err());
        assert!(serde_round_trip(SchemaKind::ValidationEvent, &written).is_err());
    }
    // The far ends themselves, in UTC, are written back unchanged.
    let event = variant(
        SchemaKind::ValidationEvent,
        &["occurred_at"],
        json!("9999-12-31T23:59:59Z"),
    );
    assert_eq!(
        write_back(&event)["occurred_at"],
        json!("9999-12-31T23:59:59Z")
    );
}

/// A valid example of `kind` with `field` replaced by `value`.
fn variant(kind: SchemaKind, field: &[&str], value: Value) -> Value {
    static FIRST_VALID: OnceLock<Vec<Example>> = OnceLock::new();
    let example = FIRST_VALID
        .get_or_init(|| examples("valid"))
        .iter()
        .find(|e| e.kind == kind)
        .expect("every kind has a valid example");
    let mut document = example.value.clone();
    let mut node = &mut document;
    for key in &field[..field.len() - 1] {
        node = &mut node[*key];
    }
    node[field[field.len() - 1]] = value;
    document
}

/// Both sides give the same answer for `document`; when both accept it, what serde
/// writes back matches the schema too.
fn agreement(kind: SchemaKind, document: &Value) -> Result<(), TestCaseError> {
    let schema = schemas().validate(kind, document);
    let serde = serde_round_trip(kind, document);
    prop_assert_eq!(
        schema.is_ok(),
        serde.is_ok(),
        "schema: {:?}, serde: {:?}",
        schema,
        serde.as_ref().err()
    );
    if let Ok(written) = serde {
        let revalidated = schemas().validate(kind, &written);
        prop_assert!(
            revalidated.is_ok(),
            "written back as {}: {:?}",
            written,
            revalidated
        );
    }
    Ok(())
}

/// Strings shaped like RFC 3339 date-times, with every part sometimes wrong.
fn date_time_like() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::string::string_regex(
            "[0-9]{4}-[01][0-9]-[0-3][0-9][Tt _][0-2][0-9]:[0-6][0-9]:[0-6][0-9]\
             (\\.[0-9]{0,12})?([Zz]|[+\u{2212}-][0-2][0-9]:?[0-6][0-9]| UTC)?"
        )
        .unwrap(),
        // Leap seconds, near the end of a UTC day in some offset.
        proptest::string::string_regex(
            "[0-9]{4}-12-31T(23|1[0-9]|0[0-9]):(59|[0-5][0-9]):60(\\.[0-9]{1,3})?\
             ([Zz]|[+-](0[0-9]|1[0-9]|2[0-3]):(00|01|30|59))"
        )
        .unwrap(),
        "\\PC{0,30}",
    ]
}

/// Strings shaped like UUIDs in every form `uuid` parses, and some it does not.
fn uuid_like() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::string::string_regex(
            "\\{?(urn:uuid:)?[0-9a-fA-F]{8}-?[0-9a-fA-Fg]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?\
             [0-9a-fA-F]{12}\\}?"
        )
        .unwrap(),
        "[0-9a-f-]{30,40}",
    ]
}

/// JSON numbers around the edges of the wire's integer types, as integers and as floats.
fn number() -> impl Strategy<Value = Number> {
    let edges = prop_oneof![
        Just(0i128),
        Just(-1),
        Just(i128::from(i32::MIN) - 1),
        Just(i128::from(i32::MIN)),
        Just(i128::from(i32::MAX)),
        Just(i128::from(i32::MAX) + 1),
        Just(i128::from(u32::MAX)),
        Just(i128::from(u32::MAX) + 1),
        Just(i128::from(i64::MIN)),
        Just(i128::from(i64::MAX)),
        Just(i128::from(i64::MAX) + 1),
        Just(i128::from(u64::MAX)),
    ];
    prop_oneof![
        (edges, -2i128..=2).prop_filter_map("outside u64 and i64", |(edge, step)| {
            let n = edge + step;
            u64::try_from(n)
                .map(Number::from)
                .or_else(|_| i64::try_from(n).map(Number::from))
                .ok()
        }),
        any::<i64>().prop_map(Number::from),
        any::<u64>().prop_map(Number::from),
        (-5_000_000_000i64..5_000_000_000).prop_map(|n| Number::from_f64(n as f64).unwrap()),
        any::<f64>().prop_filter_map("not finite", Number::from_f64),
        prop_oneof![
            Just(-0.0),
            Just(1.5),
            Just(4294967295.0),
            Just(9.223372036854776e18)
        ]
        .prop_map(|f: f64| Number::from_f64(f).unwrap()),
    ]
}

proptest! {
    #[test]
    fn schema_and_serde_agree_on_timestamps(text in date_time_like()) {
        agreement(SchemaKind::ValidationEvent, &variant(SchemaKind::ValidationEvent, &["occurred_at"], json!(text)))?;
        agreement(SchemaKind::ExecutionEvent, &variant(SchemaKind::ExecutionEvent, &["job_completed_at"], json!(text)))?;
        agreement(SchemaKind::DeadLetter, &variant(SchemaKind::DeadLetter, &["first_seen_at"], json!(text)))?;
    }

    #[test]
    fn schema_and_serde_agree_on_uuids(text in uuid_like()) {
        agreement(SchemaKind::ValidationEvent, &variant(SchemaKind::ValidationEvent, &["event_id"], json!(text)))?;
        agreement(SchemaKind::CoordinationEvent, &variant(SchemaKind::CoordinationEvent, &["audit_id"], json!(text)))?;
        agreement(SchemaKind::AuditDecision, &variant(SchemaKind::AuditDecision, &["source", "event_id"], json!(text)))?;
    }

    #[test]
    fn schema_and_serde_agree_on_integers(n in number()) {
        let n = Value::Number(n);
        agreement(SchemaKind::CoordinationEvent, &variant(SchemaKind::CoordinationEvent, &["active_envelopes_count"], n.clone()))?;
        agreement(SchemaKind::ExecutionEvent, &variant(SchemaKind::ExecutionEvent, &["contract_revision"], n.clone()))?;
        agreement(SchemaKind::DeadLetter, &variant(SchemaKind::DeadLetter, &["source", "partition"], n.clone()))?;
        agreement(SchemaKind::AuditVerdict, &variant(SchemaKind::AuditVerdict, &["duration_ms"], n))?;
    }
}
