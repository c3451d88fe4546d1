//! A real Prometheus scrapes a running audit-stream (on Tansu, with the demo traffic)
//! and every Grafana panel query returns data; no alert rule is in error.
//! The Prometheus side is `scripts/check-dashboard-live.sh`.

mod support;

use std::io::Read;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{audit_stream, free_port, unique, Tansu};

fn metrics(port: u16) -> Option<String> {
    use std::io::Write;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body)
}

fn sum_of(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn every_dashboard_query_returns_data_from_a_running_service() {
    let root = env!("CARGO_MANIFEST_DIR");
    let broker = Tansu::start();
    let group = unique("dashboard");
    let topics: Vec<(String, String)> = [
        "validation",
        "execution",
        "coordination",
        "decisions",
        "verdicts",
        "dlq",
    ]
    .iter()
    .map(|k| (k.to_string(), unique(k)))
    .collect();
    for (_, t) in &topics {
        broker.create_topic(t, 1);
    }
    let mut env: Vec<(String, String)> = topics
        .iter()
        .map(|(k, t)| {
            (
                format!("AUDIT_STREAM__TOPICS__{}", k.to_uppercase()),
                t.clone(),
            )
        })
        .collect();
    env.push((
        "AUDIT_STREAM__KAFKA__BOOTSTRAP_SERVERS".into(),
        broker.bootstrap(),
    ));

    // The demo sample, renamed to this test's topics.
    let dir = tempfile::tempdir().expect("temp dir");
    let sample = std::fs::read_to_string(format!("{root}/examples/demo.jsonl")).expect("sample");
    let renamed: String = sample
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).expect("json");
            let kind = v["topic"]
                .as_str()
                .expect("topic")
                .split('.')
                .nth(1)
                .expect("kind")
                .to_string();
            let topic = &topics.iter().find(|(k, _)| *k == kind).expect("kind").1;
            v["topic"] = serde_json::Value::String(topic.clone());
            v.to_string() + "\n"
        })
        .collect();
    let file = dir.path().join("demo.jsonl");
    std::fs::write(&file, renamed).expect("write");
    let produced = audit_stream()
        .args(["produce", "--input"])
        .arg(&file)
        .envs(env.iter().cloned())
        .status()
        .expect("produce");
    assert!(produced.success());

    let port = free_port();
    let mut service = audit_stream()
        .arg("run")
        .envs(env.iter().cloned())
        .env("AUDIT_STREAM__KAFKA__GROUP_ID", &group)
        .env("AUDIT_STREAM__HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "AUDIT_STREAM__STORE__EMBEDDED_PATH",
            dir.path().join("store.db"),
        )
        .env(
            "AUDIT_STREAM__RECIPES__PATH",
            format!("{root}/config/recipes.yaml"),
        )
        .spawn()
        .expect("service starts");

    let records = sample.lines().count() as f64;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let consumed =
            metrics(port).map_or(0.0, |m| sum_of(&m, "audit_stream_records_consumed_total"));
        if consumed >= records {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "service consumed {consumed} of {records}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let check = Command::new("bash")
        .arg(format!("{root}/scripts/check-dashboard-live.sh"))
        .arg(port.to_string())
        .status()
        .expect("check-dashboard-live.sh runs");
    let _ = Command::new("kill")
        .args(["-TERM", &service.id().to_string()])
        .status();
    let stopped = service.wait().expect("service exits");
    assert!(
        check.success(),
        "a dashboard query returned no data or a rule is in error"
    );
    assert!(stopped.success(), "service exited with {stopped}");
}
