//! The live service on a real Kafka-protocol broker (Tansu) publishes exactly what the
//! offline `process` command computes for the same records, and the rollout gate
//! answers from what the service stored.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{audit_stream, committed, read_topics, unique, ReadRecord, Tansu};

const SAMPLE: &str = include_str!("../examples/demo.jsonl");
const RECIPES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/recipes.yaml");

struct Topics {
    validation: String,
    execution: String,
    coordination: String,
    decisions: String,
    verdicts: String,
    dlq: String,
}

impl Topics {
    fn unique() -> Topics {
        Topics {
            validation: unique("validation"),
            execution: unique("execution"),
            coordination: unique("coordination"),
            decisions: unique("decisions"),
            verdicts: unique("verdicts"),
            dlq: unique("dlq"),
        }
    }

    fn rename(&self, default: &str) -> &str {
        match default {
            "audit.validation.v1" => &self.validation,
            "audit.execution.v1" => &self.execution,
            "audit.coordination.v1" => &self.coordination,
            other => panic!("sample uses an unexpected topic {other}"),
        }
    }

    fn env(&self, bootstrap: &str) -> Vec<(String, String)> {
        [
            ("KAFKA__BOOTSTRAP_SERVERS", bootstrap),
            ("TOPICS__VALIDATION", &self.validation),
            ("TOPICS__EXECUTION", &self.execution),
            ("TOPICS__COORDINATION", &self.coordination),
            ("TOPICS__DECISIONS", &self.decisions),
            ("TOPICS__VERDICTS", &self.verdicts),
            ("TOPICS__DLQ", &self.dlq),
        ]
        .into_iter()
        .map(|(k, v)| (format!("AUDIT_STREAM__{k}"), v.to_string()))
        .collect()
    }
}

/// The sample's lines per input topic, in file order, renamed to `topics`.
fn sample_by_topic(topics: &Topics) -> BTreeMap<String, Vec<String>> {
    let mut by_topic: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in SAMPLE.lines() {
        let mut v: Value = serde_json::from_str(line).expect("sample line is JSON");
        let topic = topics
            .rename(v["topic"].as_str().expect("topic"))
            .to_string();
        v["topic"] = Value::String(topic.clone());
        by_topic.entry(topic).or_default().push(v.to_string());
    }
    by_topic
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").expect("write record file");
}

/// Output lines of `process` over one file.
fn process(file: &Path, env: &[(String, String)]) -> Vec<ReadRecord> {
    let out = audit_stream()
        .args(["process", "--input"])
        .arg(file)
        .args(["--recipes", RECIPES])
        .envs(env.iter().cloned())
        .stderr(Stdio::inherit())
        .output()
        .expect("process runs");
    assert!(out.status.success(), "process failed: {}", out.status);
    String::from_utf8(out.stdout)
        .expect("UTF-8 output")
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("output line is JSON");
            ReadRecord {
                topic: v["topic"].as_str().expect("topic").to_string(),
                partition: 0,
                offset: 0,
                key: v["key"].as_str().map(str::to_string),
                value: v["value"].clone(),
            }
        })
        .collect()
}

/// An output without the two fields that are allowed to differ between runs.
fn comparable(r: &ReadRecord) -> (String, Option<String>, Value) {
    let mut value = r.value.clone();
    if let Some(obj) = value.as_object_mut() {
        obj.remove("audited_at");
        obj.remove("duration_ms");
    }
    (r.topic.clone(), r.key.clone(), value)
}

fn source_topic(r: &ReadRecord) -> String {
    r.value["source"]["topic"]
        .as_str()
        .expect("source.topic")
        .to_string()
}

#[test]
fn live_outputs_equal_process_outputs_record_for_record() {
    let broker = Tansu::start();
    let topics = Topics::unique();
    for t in [&topics.validation, &topics.execution, &topics.coordination] {
        broker.create_topic(t, 1);
    }
    for t in [&topics.decisions, &topics.verdicts, &topics.dlq] {
        broker.create_topic(t, 1);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let env = topics.env(&broker.bootstrap());

    // One file per input topic: line i of a file is offset i of its single partition,
    // exactly as `process` numbers it.
    let by_topic = sample_by_topic(&topics);
    let mut all = Vec::new();
    let mut expected = Vec::new();
    for (topic, lines) in &by_topic {
        let file = dir.path().join(format!("{topic}.jsonl"));
        write_lines(&file, lines);
        expected.extend(process(&file, &env));
        all.extend(lines.iter().cloned());
    }
    assert!(
        expected.len() > 50,
        "the sample yields outputs: {}",
        expected.len()
    );
    let all_file = dir.path().join("all.jsonl");
    write_lines(&all_file, &all);

    let produced = audit_stream()
        .args(["produce", "--input"])
        .arg(&all_file)
        .envs(env.iter().cloned())
        .status()
        .expect("produce runs");
    assert!(produced.success(), "produce failed: {produced}");

    let store = dir.path().join("store.db");
    let group = unique("group");
    let mut service = audit_stream()
        .arg("run")
        .envs(env.iter().cloned())
        .env("AUDIT_STREAM__KAFKA__GROUP_ID", &group)
        .env("AUDIT_STREAM__STORE__EMBEDDED_PATH", &store)
        .env("AUDIT_STREAM__RECIPES__PATH", RECIPES)
        .env(
            "AUDIT_STREAM__HTTP__LISTEN",
            format!("127.0.0.1:{}", support::free_port()),
        )
        .spawn()
        .expect("service starts");

    let outputs = [
        (topics.decisions.as_str(), 1),
        (topics.verdicts.as_str(), 1),
        (topics.dlq.as_str(), 1),
    ];
    let first = read_topics(
        &broker.bootstrap(),
        &outputs,
        expected.len(),
        Duration::from_secs(180),
    );
    let stopped = Command::new("kill")
        .args(["-TERM", &service.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(stopped.success());
    let status = service.wait().expect("service exits");
    assert!(status.success(), "service exited with {status}");
    assert_eq!(first.len(), expected.len(), "live outputs before the stop");

    // SIGTERM drained and committed: the group's position is the end of every input.
    let inputs: Vec<&str> = by_topic.keys().map(String::as_str).collect();
    let ends: Vec<Option<i64>> = by_topic.values().map(|l| Some(l.len() as i64)).collect();
    assert_eq!(
        committed(&broker.bootstrap(), &group, &inputs),
        ends,
        "committed offsets"
    );

    // Read everything again after the stop: nothing extra was published.
    let live = read_topics(
        &broker.bootstrap(),
        &outputs,
        expected.len() + 1,
        Duration::from_secs(5),
    );
    assert_eq!(live.len(), expected.len(), "no output is missing or extra");

    // Per output topic and source topic, the same records in the same order.
    for (out_topic, _) in outputs {
        for in_topic in by_topic.keys() {
            let pick = |records: &[ReadRecord]| -> Vec<_> {
                records
                    .iter()
                    .filter(|r| r.topic == out_topic && source_topic(r) == *in_topic)
                    .map(comparable)
                    .collect()
            };
            assert_eq!(pick(&live), pick(&expected), "{out_topic} from {in_topic}");
        }
    }
    let dead = live.iter().filter(|r| r.topic == topics.dlq).count();
    assert!(
        dead >= 4,
        "the sample's bad records are dead-lettered: {dead}"
    );

    // The gate answers from the verdicts the service stored: the latest one wins.
    let verdicts: Vec<&ReadRecord> = expected
        .iter()
        .filter(|r| r.topic == topics.verdicts)
        .collect();
    let last = verdicts
        .iter()
        .rfind(|r| r.value["tenant_id"] == "acme" && r.value["contract_id"] == "contract-checkout")
        .expect("a verdict for acme/contract-checkout");
    let gate = audit_stream()
        .args(["gate", "contract-checkout", "--tenant", "acme"])
        .envs(env.iter().cloned())
        .env("AUDIT_STREAM__STORE__EMBEDDED_PATH", &store)
        .env("AUDIT_STREAM__GATE__FRESHNESS_SECS", "3153600000")
        .output()
        .expect("gate runs");
    let answer: Value = serde_json::from_slice(&gate.stdout).expect("gate prints JSON");
    assert_eq!(answer["audit_id"], last.value["audit_id"], "{answer}");
    let (action, code) = match last.value["verdict"].as_str() {
        Some("PASS") => ("proceed", 0),
        Some("FAIL") => ("rollback", 11),
        _ => ("escalate", 12),
    };
    assert_eq!(answer["action"], action, "{answer}");
    assert_eq!(gate.status.code(), Some(code));

    // What the live service stored verifies clean, every chain anchored by the heads
    // saved with the final checkpoints of the drain.
    let verify = audit_stream()
        .arg("verify")
        .envs(env.iter().cloned())
        .env("AUDIT_STREAM__STORE__EMBEDDED_PATH", &store)
        .output()
        .expect("verify runs");
    let report = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(verify.status.code(), Some(0), "{report}");
    assert!(report.contains("no tampering found"), "{report}");
    assert!(!report.contains("not yet anchored"), "{report}");
}
