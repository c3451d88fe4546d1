//! The command line: errors name the file and line, the gate's exit status is its
//! action, and `process` reads recipes from the flag.

mod support;

use support::audit_stream;

#[test]
fn process_names_the_file_and_line_of_a_bad_record_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("records.jsonl");
    std::fs::write(
        &input,
        "{\"topic\":\"audit.validation.v1\",\"key\":\"a:b\",\"value\":\"x\"}\n{\"key\": 1}\n",
    )
    .expect("write");
    let out = audit_stream()
        .args(["process", "--input"])
        .arg(&input)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}: line 2:", input.display())),
        "{stderr}"
    );
}

#[test]
fn produce_checks_the_whole_file_before_publishing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("records.jsonl");
    std::fs::write(&input, "{\"topic\":\"t\",\"value\":{}}\nnot a record\n").expect("write");
    // No broker listens here: the bad line must be reported before any connection.
    let out = audit_stream()
        .args(["produce", "--input"])
        .arg(&input)
        .env("AUDIT_STREAM__KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}: line 2:", input.display())),
        "{stderr}"
    );
}

#[test]
fn process_with_a_recipe_flag_uses_those_recipes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let recipes = dir.path().join("recipes.yaml");
    std::fs::write(
        &recipes,
        "process_recipes:\n  p:\n    inputs:\n      - { field: a, min: 10, level: S }\n",
    )
    .expect("write");
    let input = dir.path().join("records.jsonl");
    std::fs::write(
        &input,
        r#"{"topic":"audit.validation.v1","key":"t:p","value":{"schema_version":1,"event_id":"5a0c8e2b-7d3f-4b6a-9e1c-2f4d6b8a0c13","tenant_id":"t","occurred_at":"2026-11-01T10:00:00Z","process":"p","phase":"input","values":{"a":1}}}"#,
    )
    .expect("write");
    let out = audit_stream()
        .args(["process", "--input"])
        .arg(&input)
        .arg("--recipes")
        .arg(&recipes)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one output line");
    assert_eq!(line["topic"], "audit.decisions.v1");
    assert_eq!(line["value"]["decision"], "STOP");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "process_recipes:\n  p:\n    inputs:\n      - { field: a, level: X }\n",
    )
    .expect("write");
    let out = audit_stream()
        .args(["process", "--input"])
        .arg(&input)
        .arg("--recipes")
        .arg(&bad)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.yaml") && stderr.contains("field a"),
        "{stderr}"
    );
}

#[test]
fn gate_without_a_verdict_answers_wait_with_its_exit_status() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = audit_stream()
        .args(["gate", "--tenant", "acme", "--contract", "c-1"])
        .env(
            "AUDIT_STREAM__STORE__EMBEDDED_PATH",
            dir.path().join("store.db"),
        )
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(10),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(answer["action"], "wait");
    assert_eq!(answer["authorized"], false);
}

#[test]
fn an_unknown_config_key_stops_the_command_with_its_name() {
    let out = audit_stream()
        .args(["process", "--input", "/dev/null"])
        .env("AUDIT_STREAM__INGEST__MAX_PAYLOAD", "5")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("max_payload"), "{stderr}");
}
