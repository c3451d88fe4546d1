//! A flood of malformed records on a real Kafka-protocol broker (Tansu): the service
//! dead-letters every one of them with its class, stays healthy and ready, keeps its
//! memory flat, commits to the end of the input, and says loudly that the dead-letter
//! share is above its limit (metric, alert condition, log line).

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use audit_stream::config::KafkaConfig;
use audit_stream::record::Record;
use support::{audit_stream, free_port, read_topics, unique, Tansu};

const RECORDS: usize = 100_000;
/// Memory is first sampled once this many records are consumed: allocator pools, the
/// client's buffers and the in-flight set have reached their working size by then.
const WARM: u64 = 20_000;
/// Bound of RSS growth between the two samples. What the service keeps per record after
/// it is done is nothing; what it holds at once is bounded by `max_in_flight_records`
/// (set to 1,000 here: about 1,000 × 3 KiB of payload and dead letter, 3 MiB). A leak of
/// 200 bytes per record would grow RSS by 80,000 × 200 B = 16 MB between the samples.
const MAX_GROWTH_KIB: u64 = 16 * 1024;
const MAX_PAYLOAD_BYTES: usize = 1024;

const VALID: &str = r#"{"schema_version":1,"event_id":"8f14e45f-ceea-4d6e-a2b1-3c4d5e6f7a8b","tenant_id":"acme","occurred_at":"2026-11-01T10:00:00Z","process":"p_transfer","phase":"input","values":{"amount":50}}"#;

/// Records near the producer's default `message.max.bytes` (1,000,000): their dead
/// letters, base64 and all, would not fit in one Kafka message if kept whole.
const HUGE: usize = 3;

/// Record `i` of the flood and the dead-letter class it must get.
fn malformed(i: usize) -> (Vec<u8>, &'static str) {
    if i < HUGE {
        let bytes = (0..900_000u32).map(|n| (n.wrapping_mul(2_654_435_761) >> 24) as u8);
        return (bytes.collect(), "oversize");
    }
    match i % 7 {
        0 => (format!("not json {{ {i}").into_bytes(), "not_json"),
        1 => (
            [br#"{"tenant_id":""#.as_slice(), b"\xff\xfe", br#""}"#].concat(),
            "not_json",
        ),
        2 => (
            ("[".repeat(100) + &"]".repeat(100)).into_bytes(),
            "oversize",
        ),
        3 => (
            VALID
                .replace(
                    r#""tenant_id":"acme""#,
                    r#""tenant_id":"acme","tenant_id":"evil""#,
                )
                .into_bytes(),
            "not_json",
        ),
        4 => (
            VALID.replace(r#""phase":"input","#, "").into_bytes(),
            "schema",
        ),
        5 => (
            VALID
                .replace(
                    r#"{"amount":50}"#,
                    &format!(r#"{{"pad":"{}"}}"#, "x".repeat(1000)),
                )
                .into_bytes(),
            "oversize",
        ),
        _ => (
            VALID
                .replace(r#""amount":50"#, r#""amount":1e400"#)
                .into_bytes(),
            "not_json",
        ),
    }
}

/// Status line and body of a GET on the service's HTTP port.
fn get(port: u16, path: &str) -> Option<(String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.lines().next()?.to_string();
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// The value of the first series of `exposition` whose line starts with `series`.
fn value(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn sum(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_flood_of_malformed_records_is_dead_lettered_while_the_service_stays_healthy() {
    let broker = Tansu::start();
    let [validation, execution, coordination, decisions, verdicts, dlq] = [
        "validation",
        "execution",
        "coordination",
        "decisions",
        "verdicts",
        "dlq",
    ]
    .map(unique);
    broker.create_topic(&validation, 2);
    for topic in [&execution, &coordination, &decisions, &verdicts, &dlq] {
        broker.create_topic(topic, 1);
    }

    // Publish the flood first: the service then reads as fast as it can.
    let mut expected: BTreeMap<&str, usize> = BTreeMap::new();
    let records: Vec<Record> = (0..RECORDS)
        .map(|i| {
            let (payload, class) = malformed(i);
            *expected.entry(class).or_default() += 1;
            Record {
                topic: validation.clone(),
                partition: 0,
                offset: i as i64,
                key: Some(format!("acme:p{}", i % 64).into_bytes()),
                payload,
                timestamp: None,
            }
        })
        .collect();
    let kafka = KafkaConfig {
        bootstrap_servers: broker.bootstrap(),
        ..KafkaConfig::default()
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let published = Instant::now();
    runtime
        .block_on(audit_stream::produce::publish(&kafka, "flood", &records))
        .expect("flood published");
    eprintln!("published {RECORDS} records in {:?}", published.elapsed());
    drop(records);

    let dir = tempfile::tempdir().expect("temp dir");
    let group = unique("flood");
    let port = free_port();
    let log = dir.path().join("service.log");
    let started = Instant::now();
    let mut service = Service(
        audit_stream()
            .arg("run")
            .env("AUDIT_STREAM__KAFKA__BOOTSTRAP_SERVERS", broker.bootstrap())
            .env("AUDIT_STREAM__KAFKA__GROUP_ID", &group)
            .env("AUDIT_STREAM__TOPICS__VALIDATION", &validation)
            .env("AUDIT_STREAM__TOPICS__EXECUTION", &execution)
            .env("AUDIT_STREAM__TOPICS__COORDINATION", &coordination)
            .env("AUDIT_STREAM__TOPICS__DECISIONS", &decisions)
            .env("AUDIT_STREAM__TOPICS__VERDICTS", &verdicts)
            .env("AUDIT_STREAM__TOPICS__DLQ", &dlq)
            .env(
                "AUDIT_STREAM__INGEST__MAX_PAYLOAD_BYTES",
                MAX_PAYLOAD_BYTES.to_string(),
            )
            .env("AUDIT_STREAM__INGEST__MAX_IN_FLIGHT_RECORDS", "1000")
            .env("AUDIT_STREAM__INGEST__DEAD_LETTER_WINDOW_SECS", "10")
            .env(
                "AUDIT_STREAM__STORE__EMBEDDED_PATH",
                dir.path().join("store.db"),
            )
            .env("AUDIT_STREAM__HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info")
            .env_remove("AUDIT_STREAM_LOG_FORMAT")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("service starts"),
    );
    let pid = service.0.id();

    // Poll until every record is consumed and acknowledged; /healthz and /readyz must
    // answer 200 on every poll once the service is ready.
    let deadline = started + Duration::from_secs(150);
    let mut ready = false;
    let mut warm_rss = None;
    let mut polls = 0;
    let exposition = loop {
        assert!(
            Instant::now() < deadline,
            "the flood was not consumed in time"
        );
        assert!(
            service.0.try_wait().expect("wait").is_none(),
            "the service exited: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
        let Some((_, metrics)) = get(port, "/metrics") else {
            continue;
        };
        let health = get(port, "/healthz").expect("healthz answers");
        assert!(health.0.contains(" 200 "), "healthz: {health:?}");
        let readiness = get(port, "/readyz").expect("readyz answers");
        if ready {
            assert!(readiness.0.contains(" 200 "), "readyz: {readiness:?}");
        } else {
            ready = readiness.0.contains(" 200 ");
        }
        polls += 1;
        let consumed = sum(&metrics, "audit_stream_records_consumed_total{");
        let acknowledged = value(
            &metrics,
            "audit_stream_outputs_acknowledged_total{topic=\"dlq\"}",
        )
        .unwrap_or_default();
        if warm_rss.is_none() && consumed >= WARM as f64 {
            warm_rss = Some((consumed as u64, rss_kib(pid)));
        }
        if acknowledged >= RECORDS as f64 {
            break metrics;
        }
    };
    let end_rss = rss_kib(pid);
    let elapsed = started.elapsed();
    let (warm_at, warm_rss) = warm_rss.expect("sampled after the warm-up");
    eprintln!(
        "consumed {RECORDS} in {elapsed:?} ({polls} polls); RSS {warm_rss} KiB at {warm_at} records, {end_rss} KiB at the end"
    );
    assert!(ready, "the service became ready");
    assert!(
        end_rss <= warm_rss + MAX_GROWTH_KIB,
        "RSS grew from {warm_rss} KiB to {end_rss} KiB"
    );

    // Every record is dead-lettered once, with its class, and nothing else happened.
    assert_eq!(
        sum(&exposition, "audit_stream_dead_letters_total{"),
        RECORDS as f64
    );
    assert_eq!(sum(&exposition, "audit_stream_records_decoded_total{"), 0.0);
    assert_eq!(value(&exposition, "audit_stream_dropped_total"), Some(0.0));
    let ratio = value(
        &exposition,
        "audit_stream_dead_letter_ratio{kind=\"validation\"}",
    )
    .expect("ratio exported");
    let limit = value(&exposition, "audit_stream_dead_letter_ratio_limit").expect("limit");
    assert_eq!(limit, 0.05);
    assert!(
        ratio > limit,
        "the alert condition holds: {ratio} > {limit}"
    );

    let dead = read_topics(
        &broker.bootstrap(),
        &[(dlq.as_str(), 1)],
        RECORDS + 1,
        Duration::from_secs(10),
    );
    assert_eq!(dead.len(), RECORDS, "one dead letter per record");
    let mut classes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut positions = std::collections::HashSet::new();
    for letter in &dead {
        let class = letter.value["error_class"].as_str().expect("class");
        let class = *expected.keys().find(|c| **c == class).unwrap_or_else(|| {
            panic!("unexpected class {class}: {}", letter.value);
        });
        *classes.entry(class).or_default() += 1;
        assert!(
            !letter.value["error"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "{}",
            letter.value
        );
        positions.insert((
            letter.value["source"]["partition"].as_i64(),
            letter.value["source"]["offset"].as_i64(),
        ));
    }
    assert_eq!(classes, expected, "dead letters by class");
    let cut = dead
        .iter()
        .filter(|d| {
            d.value["error"]
                .as_str()
                .is_some_and(|e| e.contains("keeps the first 524288 of 900000 payload bytes"))
        })
        .count();
    assert_eq!(cut, HUGE, "the huge payloads are kept cut, with a note");
    assert_eq!(positions.len(), RECORDS, "each record dead-lettered once");

    // The committed offsets reach the end of both input partitions.
    let ends = partition_ends(&dead);
    assert_eq!(
        ends.iter().flatten().sum::<i64>(),
        RECORDS as i64,
        "offsets 0.. of both partitions: {ends:?}"
    );
    let commit_deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let offsets = committed_both(&broker.bootstrap(), &group, &validation);
        if offsets == ends {
            break;
        }
        assert!(
            Instant::now() < commit_deadline,
            "committed {offsets:?}, ends {ends:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // The service said so, once per window at most rather than once per record.
    let stopped = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(stopped.success());
    let status = service.0.wait().expect("service exits");
    assert!(status.success(), "service exited with {status}");
    let logs = std::fs::read_to_string(&log).expect("log");
    // Nothing is logged per record at the default level: the flood does not become a
    // flood of log lines (a dozen were seen here).
    assert!(
        logs.lines().count() < 1_000,
        "{} log lines for {RECORDS} records",
        logs.lines().count()
    );
    let warnings = logs
        .lines()
        .filter(|l| l.contains("Dead-letter share above the configured limit"))
        .count();
    let windows = elapsed.as_secs() / 10 + 1;
    assert!(
        (1..=windows as usize + 1).contains(&warnings),
        "{warnings} warnings in {windows} windows:\n{logs}"
    );
}

/// The next offset of each of the two input partitions, from the dead letters' sources.
fn partition_ends(dead: &[support::ReadRecord]) -> Vec<Option<i64>> {
    (0..2)
        .map(|p| {
            dead.iter()
                .filter(|d| d.value["source"]["partition"].as_i64() == Some(p))
                .filter_map(|d| d.value["source"]["offset"].as_i64())
                .max()
                .map(|o| o + 1)
        })
        .collect()
}

fn committed_both(bootstrap: &str, group: &str, topic: &str) -> Vec<Option<i64>> {
    support::committed_partitions(bootstrap, group, &[(topic, 0), (topic, 1)])
}
