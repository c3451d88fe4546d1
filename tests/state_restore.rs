//! Operator state across a crash, a rebalance and a restore: a new owner of a partition
//! restores its checkpoint, and every decision (BLOCK ones depend on exact counts)
//! equals the offline oracle's. The crash, readiness and rewound-commit tests run on Tansu
//! (`AUDIT_STREAM_TEST_BROKER=mock` moves them to librdkafka's mock cluster); inputs are
//! published one record per batch, see `support::one_record_per_batch`. The hand-over
//! and `exactly_once` tests run on the mock cluster, which has transactions.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use audit_stream::config::Config;
use audit_stream::gate::GatePolicy;
use audit_stream::http::{router, AppState};
use audit_stream::pipeline::worker::Shared;
use audit_stream::pipeline::{Operator, PartitionState};
use audit_stream::record::Record;
use audit_stream::service::{self, Runtime};
use audit_stream::store::{AuditStore, EmbeddedStore, FaultyStore};
use audit_stream::validation::Recipes;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;
use support::{
    committed_partitions, one_record_per_batch, publish_and_place, publish_more_and_place, unique,
    Broker,
};
use tokio::sync::watch;
use tower::ServiceExt;
use uuid::Uuid;

const RECORDS: usize = 6_000;
const PARTITIONS: i32 = 3;
/// Two failures pass, the third blocks, a success resets: every BLOCK depends on the
/// exact count of its key.
const RECIPES: &str = "audit:\n  threshold_max: 2\n  threshold_min: 2\n  reset_on_success: true\nprocess_recipes:\n  p_transfer:\n    inputs:\n      - { field: amount, min: 100 }\n";

fn event(i: usize) -> (String, Vec<u8>) {
    let tenant = format!("t{}", i % 12);
    let value = serde_json::json!({
        "schema_version": 1,
        "event_id": Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("restore-{i}").as_bytes()),
        "tenant_id": tenant,
        "occurred_at": "2026-11-01T10:00:00Z",
        "process": "p_transfer",
        "phase": "input",
        // Runs of failures of varying length between successes.
        "values": {"amount": if (i / 12) % 5 == 4 || (i / 12) % 11 == 7 { 500 } else { 7 }}
    });
    (
        format!("{tenant}:p_transfer"),
        serde_json::to_vec(&value).expect("json"),
    )
}

fn config(broker: &Broker, dir: &std::path::Path) -> Config {
    let recipes_path = dir.join("recipes.yaml");
    std::fs::write(&recipes_path, RECIPES).expect("recipes");
    let mut config = Config::default();
    config.kafka.bootstrap_servers = broker.bootstrap();
    config.kafka.group_id = unique("restore");
    config.kafka.commit_interval_ms = 200;
    config.kafka.session_timeout_ms = 6_000;
    config.topics.validation = unique("validation");
    config.topics.execution = unique("execution");
    config.topics.coordination = unique("coordination");
    config.topics.decisions = unique("decisions");
    config.topics.verdicts = unique("verdicts");
    config.topics.dlq = unique("dlq");
    config.recipes.path = Some(recipes_path);
    config.checkpoint.interval_ms = 200;
    config.store.retry_max_ms = 500;
    broker.create_topic(&config.topics.validation, PARTITIONS as u32);
    for t in [&config.topics.execution, &config.topics.coordination] {
        broker.create_topic(t, 1);
    }
    for t in config.topics.outputs() {
        broker.create_topic(t, 1);
    }
    config
}

/// Produces the records and returns them as the broker placed them.
async fn produce(config: &Config) -> Vec<Record> {
    let events = (0..RECORDS).map(event).collect();
    publish_and_place(
        &one_record_per_batch(&config.kafka),
        &config.topics.validation,
        PARTITIONS,
        events,
    )
    .await
}

/// The decisions the offline operator derives, run per input partition, by event id.
fn oracle(config: &Config, inputs: &[Record]) -> BTreeMap<String, Value> {
    let recipes = Recipes::parse(RECIPES).expect("recipes");
    let operator = Operator::new(config).expect("operator");
    let mut states: HashMap<i32, PartitionState> = HashMap::new();
    let mut out = BTreeMap::new();
    for record in inputs {
        let state = states
            .entry(record.partition)
            .or_insert_with(|| PartitionState::new(&recipes));
        for output in operator.process(record, &recipes, state, Utc::now()) {
            if let Some(p) = output.publication(operator.topics()) {
                if p.topic == config.topics.decisions {
                    let value: Value = serde_json::from_slice(&p.payload).expect("json");
                    out.insert(value["event_id"].as_str().expect("id").to_string(), value);
                }
            }
        }
    }
    out
}

/// Reads the decisions topic until `expected` distinct event ids are seen (or the
/// timeout), asserting that every copy of a decision has the same content.
fn read_decisions(
    bootstrap: &str,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> BTreeMap<String, Value> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("offset");
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + timeout;
    let mut seen: BTreeMap<String, Value> = BTreeMap::new();
    while seen.len() < expected && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let value: Value =
                serde_json::from_slice(m.payload().unwrap_or_default()).expect("json");
            let id = value["event_id"].as_str().expect("id").to_string();
            if let Some(earlier) = seen.get(&id) {
                assert_eq!(
                    earlier, &value,
                    "decision {id} published twice with different content"
                );
            } else {
                seen.insert(id, value);
            }
        }
    }
    seen
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_stay_exact_when_an_instance_crashes_and_another_restores_its_checkpoints() {
    init_logs();
    let broker = Broker::start(false);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config(&broker, dir.path());
    // Small in-flight bound and a slow store: the first instance is mid-run when it dies.
    config.ingest.max_in_flight_records = 100;
    let inputs = produce(&config).await;
    let expected = oracle(&config, &inputs);
    let blocks = expected
        .values()
        .filter(|d| d["decision"] == "BLOCK")
        .count();
    assert!(blocks > 500, "the run has many BLOCK decisions: {blocks}");

    let embedded = EmbeddedStore::open(&dir.path().join("store.db")).expect("store");
    let first_store = Arc::new(FaultyStore::new(embedded.clone()));
    let faults = first_store.faults();
    faults.stall_writes(Duration::from_millis(20));
    let (first, _stop_first, service) =
        start_instance(&config, first_store.clone() as Arc<dyn AuditStore>);
    let deadline = Instant::now() + Duration::from_secs(60);
    let checkpoints = loop {
        assert!(
            Instant::now() < deadline,
            "first instance made no progress: {:?}",
            first.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut saved = Vec::new();
        for p in 0..PARTITIONS {
            if let Some(c) = embedded
                .load_checkpoint(&config.kafka.group_id, &config.topics.validation, p)
                .await
                .expect("load")
            {
                saved.push((p, c.next_offset));
            }
        }
        if first.snapshot().records_done >= (RECORDS / 3) as u64 && !saved.is_empty() {
            break saved;
        }
    };
    // Crash: the store goes away with the process, nothing of the graceful path runs.
    faults.set_down(true);
    service.abort();
    let _ = service.await;
    let done_by_first = first.snapshot().records_done;
    assert!(
        done_by_first < RECORDS as u64,
        "the first instance died mid-run"
    );
    let partitions: Vec<(&str, i32)> = (0..PARTITIONS)
        .map(|p| (config.topics.validation.as_str(), p))
        .collect();
    let committed = committed_partitions(&broker.bootstrap(), &config.kafka.group_id, &partitions);
    eprintln!(
        "at the crash: done {done_by_first}, checkpoints {checkpoints:?}, committed {committed:?}"
    );

    let (second, stop, service) =
        start_instance(&config, Arc::new(embedded.clone()) as Arc<dyn AuditStore>);
    let decisions = read_decisions(
        &broker.bootstrap(),
        &config.topics.decisions,
        expected.len(),
        Duration::from_secs(60),
    );
    // Everything the second instance read is done before it stops.
    let deadline = Instant::now() + Duration::from_secs(20);
    while second.snapshot().records_done < second.snapshot().records_in {
        assert!(Instant::now() < deadline, "second instance did not settle");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(true);
    service
        .await
        .expect("join")
        .expect("second instance stops cleanly");

    let missing: Vec<&String> = expected
        .keys()
        .filter(|k| !decisions.contains_key(*k))
        .collect();
    let mut missing_by_partition: BTreeMap<i64, (i64, i64, usize)> = BTreeMap::new();
    for k in &missing {
        let source = &expected[*k]["source"];
        let (p, o) = (
            source["partition"].as_i64().unwrap(),
            source["offset"].as_i64().unwrap(),
        );
        let e = missing_by_partition.entry(p).or_insert((o, o, 0));
        e.0 = e.0.min(o);
        e.1 = e.1.max(o);
        e.2 += 1;
    }
    eprintln!(
        "second instance: {:?}; missing (partition: first, last, n): {missing_by_partition:?}",
        second.snapshot()
    );
    let extra: Vec<&String> = decisions
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} decisions missing, {} not in the oracle (first: {:?} / {:?})",
        missing.len(),
        extra.len(),
        missing.first().map(|k| &expected[*k]),
        extra.first().map(|k| &decisions[*k])
    );
    for (id, want) in &expected {
        assert_eq!(
            &decisions[id], want,
            "decision {id} differs from the oracle"
        );
    }
    // The second instance resumed from the checkpoints, not from the start.
    assert!(
        second.snapshot().records_in < RECORDS as u64,
        "the second instance restored state instead of reprocessing everything: {:?}",
        second.snapshot()
    );
    // And it saved checkpoints up to the end of every partition.
    for p in 0..PARTITIONS {
        let end = inputs.iter().filter(|r| r.partition == p).count() as i64;
        let saved = embedded
            .load_checkpoint(&config.kafka.group_id, &config.topics.validation, p)
            .await
            .expect("load")
            .map(|c| c.next_offset);
        if end > 0 {
            assert_eq!(saved, Some(end), "final checkpoint of partition {p}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_false_and_nothing_is_processed_while_partitions_restore() {
    init_logs();
    let broker = Broker::start(false);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config(&broker, dir.path());
    produce(&config).await;
    let store = Arc::new(FaultyStore::new(EmbeddedStore::in_memory().expect("store")));
    let faults = store.faults();
    faults.stall_checkpoint_loads(Duration::from_secs(1));
    let (shared, stop, service) = start_instance(&config, store.clone() as Arc<dyn AuditStore>);
    let state = AppState {
        store: store.clone() as Arc<dyn AuditStore>,
        shared: shared.clone(),
        metrics: None,
        gate: GatePolicy {
            freshness: chrono::Duration::days(1),
        },
    };
    let readyz = || async {
        let response = router(state.clone())
            .oneshot(
                Request::get("/readyz")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        (
            status,
            serde_json::from_slice::<Value>(&bytes).expect("json"),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while shared.restoring.load(Ordering::Acquire) == 0 {
        assert!(Instant::now() < deadline, "no partition was assigned");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, body) = readyz().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body["partitions_restoring"].as_u64() > Some(0), "{body}");
    assert_eq!(shared.snapshot().records_in, 0, "processed before restore");

    faults.stop_stalling();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = readyz().await;
        if status == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(shared.restoring.load(Ordering::Acquire), 0);
    let _ = stop.send(true);
    service.await.expect("join").expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_on_idle_partitions_is_ready_once_they_are_assigned() {
    init_logs();
    let broker = Broker::start(false);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config(&broker, dir.path());
    // No record arrives and no checkpoint tick comes during the test: readiness must
    // follow the assignment by itself.
    config.checkpoint.interval_ms = 600_000;
    let store = Arc::new(EmbeddedStore::in_memory().expect("store"));
    let (shared, stop, service) = start_instance(&config, store as Arc<dyn AuditStore>);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !shared.ready.load(Ordering::Acquire) {
        assert!(Instant::now() < deadline, "never ready on idle partitions");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!shared.partitions.read().expect("partitions").is_empty());
    assert_eq!(shared.snapshot().records_in, 0);
    let _ = stop.send(true);
    service.await.expect("join").expect("stops cleanly");
}

/// Starts one service instance of `config` on `store`, with a transactional id of its
/// own; `stop` ends it gracefully.
fn start_instance(
    config: &Config,
    store: Arc<dyn AuditStore>,
) -> (
    Arc<Shared>,
    watch::Sender<bool>,
    tokio::task::JoinHandle<
        Result<audit_stream::pipeline::worker::RunStats, service::ServiceError>,
    >,
) {
    let mut config = config.clone();
    config.kafka.transactional_id = unique("instance");
    let shared = Arc::new(Shared::default());
    let (stop, shutdown) = watch::channel(false);
    let service = tokio::spawn(service::run(
        config,
        Runtime {
            store,
            metrics: None,
            shared: shared.clone(),
            serve_http: false,
        },
        shutdown,
    ));
    (shared, stop, service)
}

/// Every copy of every decision on the topic, by event id, once nothing more arrives.
fn decision_copies(config: &Config, broker: &Broker) -> BTreeMap<String, Vec<Value>> {
    let mut copies: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for record in support::read_topics(
        &broker.bootstrap(),
        &[(config.topics.decisions.as_str(), 1)],
        usize::MAX,
        Duration::from_secs(8),
    ) {
        let id = record.value["event_id"].as_str().expect("id").to_string();
        copies.entry(id).or_default().push(record.value);
    }
    copies
}

/// Each oracle decision is on the topic exactly once, equal to the oracle's.
fn assert_each_decision_once(
    expected: &BTreeMap<String, Value>,
    copies: &BTreeMap<String, Vec<Value>>,
) {
    let doubled: Vec<(&String, usize)> = copies
        .iter()
        .filter(|(_, c)| c.len() > 1)
        .map(|(id, c)| (id, c.len()))
        .collect();
    assert!(
        doubled.is_empty(),
        "{} decisions published more than once, e.g. {:?}",
        doubled.len(),
        doubled.first()
    );
    let missing = expected.keys().filter(|k| !copies.contains_key(*k)).count();
    let extra = copies.keys().filter(|k| !expected.contains_key(*k)).count();
    assert_eq!(
        (missing, extra),
        (0, 0),
        "decisions missing / not in the oracle"
    );
    for (id, want) in expected {
        assert_eq!(
            &copies[id][0], want,
            "decision {id} differs from the oracle"
        );
    }
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A second instance joins mid-run: the first drains its revoked partitions' records in
/// flight, checkpoints them at their positions and commits, so the new owner replays
/// nothing. In both delivery modes: with `exactly_once` the revoke commits the open
/// transaction first. On librdkafka's mock cluster, which has transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_instance_replays_nothing_because_revoked_partitions_are_drained() {
    init_logs();
    for exactly_once in [false, true] {
        let broker = Broker::start(true);
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = config(&broker, dir.path());
        config.kafka.exactly_once = exactly_once;
        // Eager assignment: every partition is revoked and one input partition moves. (The
        // sticky assignor would balance by moving only the empty execution and
        // coordination partitions here.)
        config.kafka.assignment_strategy = "roundrobin".into();
        // A slow store keeps records in flight whenever the rebalance comes.
        config.ingest.max_in_flight_records = 100;
        let inputs = produce(&config).await;
        let expected = oracle(&config, &inputs);

        let embedded = EmbeddedStore::in_memory().expect("store");
        let slow = Arc::new(FaultyStore::new(embedded.clone()));
        // About 300 records a second: the group's rebalance (seconds on the mock
        // cluster) comes mid-run.
        slow.faults().stall_writes(Duration::from_millis(300));
        let (first, stop_first, first_service) =
            start_instance(&config, slow.clone() as Arc<dyn AuditStore>);
        wait_until(
            "the first instance is under way",
            Duration::from_secs(60),
            || first.snapshot().records_done >= (RECORDS / 10) as u64,
        )
        .await;
        let (second, stop_second, second_service) =
            start_instance(&config, slow.clone() as Arc<dyn AuditStore>);
        wait_until(
            "both instances read every record",
            Duration::from_secs(120),
            || {
                let (a, b) = (first.snapshot(), second.snapshot());
                a.records_in + b.records_in >= RECORDS as u64
                    && a.records_done == a.records_in
                    && b.records_done == b.records_in
                    && b.records_in > 0
            },
        )
        .await;
        for (stop, service) in [(stop_first, first_service), (stop_second, second_service)] {
            let _ = stop.send(true);
            service.await.expect("join").expect("stops cleanly");
        }
        let (a, b) = (first.snapshot(), second.snapshot());
        assert_eq!(
            a.records_in + b.records_in,
            RECORDS as u64,
            "exactly_once = {exactly_once}: a record was processed twice (first {}, second {})",
            a.records_in,
            b.records_in
        );
        assert_each_decision_once(&expected, &decision_copies(&config, &broker));
    }
}

/// The group's committed offsets are below the checkpoints (the commit after the last
/// save failed: the process died, or the group had already lost its partitions). The
/// next owner skips the records the checkpoints cover and commits the checkpoints'
/// offsets although no record follows them, so the group's lag goes to zero. (With
/// `exactly_once`, every transaction commits each partition's position; the mock
/// cluster, the only one here with transactions, does not report offsets committed in
/// them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_committed_below_its_checkpoint_commits_the_checkpoint_without_new_records() {
    init_logs();
    let broker = Broker::start(false);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config(&broker, dir.path());
    let inputs = produce(&config).await;
    let expected = oracle(&config, &inputs);
    let partitions: Vec<(&str, i32)> = (0..PARTITIONS)
        .map(|p| (config.topics.validation.as_str(), p))
        .collect();
    let ends: Vec<i64> = (0..PARTITIONS)
        .map(|p| inputs.iter().filter(|r| r.partition == p).count() as i64)
        .collect();
    let committed =
        || committed_partitions(&broker.bootstrap(), &config.kafka.group_id, &partitions);
    let store = EmbeddedStore::in_memory().expect("store");

    let (first, stop, service) =
        start_instance(&config, Arc::new(store.clone()) as Arc<dyn AuditStore>);
    wait_until(
        "the first instance read every record",
        Duration::from_secs(120),
        || first.snapshot().records_done >= RECORDS as u64,
    )
    .await;
    let _ = stop.send(true);
    service.await.expect("join").expect("stops cleanly");
    let at_end: Vec<Option<i64>> = ends.iter().map(|e| Some(*e)).collect();
    assert_eq!(
        committed(),
        at_end,
        "a clean stop commits every partition to its end"
    );

    let behind: Vec<i64> = ends.iter().map(|e| e / 2).collect();
    commit_offsets(
        &broker,
        &config.kafka.group_id,
        &config.topics.validation,
        &behind,
    );
    let rewound: Vec<Option<i64>> = behind.iter().map(|o| Some(*o)).collect();
    assert_eq!(
        committed(),
        rewound,
        "the commits moved back below the checkpoints"
    );

    let (second, stop, service) =
        start_instance(&config, Arc::new(store.clone()) as Arc<dyn AuditStore>);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = committed();
        if now == at_end {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group stays committed at {now:?}, below the checkpoints at {ends:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = stop.send(true);
    service.await.expect("join").expect("stops cleanly");
    assert_eq!(
        second.snapshot().records_in,
        0,
        "the records the checkpoints cover are skipped"
    );
    assert_each_decision_once(&expected, &decision_copies(&config, &broker));
}

/// Commits `offsets[p]` for partition `p` of `topic` in `group`, as an operator's offset
/// reset does. The mock cluster takes commits only from a member: there the committer
/// joins the group first, and leaves after the commit.
fn commit_offsets(broker: &Broker, group: &str, topic: &str, offsets: &[i64]) {
    let committer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        // Should its leaving go unnoticed, the group waits this long for it, not minutes.
        .set("session.timeout.ms", "6000")
        .set("max.poll.interval.ms", "6000")
        .create()
        .expect("committer");
    let mut tpl = TopicPartitionList::new();
    for (p, offset) in offsets.iter().enumerate() {
        tpl.add_partition_offset(topic, p as i32, Offset::Offset(*offset))
            .expect("offset");
    }
    if matches!(broker, Broker::Mock(_)) {
        committer.subscribe(&[topic]).expect("subscribe");
        let deadline = Instant::now() + Duration::from_secs(30);
        while committer.assignment().expect("assignment").count() < offsets.len() {
            assert!(
                Instant::now() < deadline,
                "the committer was never assigned"
            );
            let _ = committer.poll(Duration::from_millis(100));
        }
    }
    committer
        .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        .expect("commit");
    committer.unsubscribe();
}

/// `exactly_once`: a transaction committed outputs and offsets further than the store's
/// checkpoint (the store saves after the commit). The next owner restores the
/// checkpoint, replays up to the committed offset to rebuild the state, and publishes
/// none of those outputs again. The mock cluster keeps no transactional offset commit,
/// so the test commits the offset the transaction would have (see ARCHITECTURE.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_behind_a_committed_transaction_publishes_nothing_twice() {
    init_logs();
    let broker = Broker::start(true);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config(&broker, dir.path());
    config.kafka.exactly_once = true;
    let inputs = produce(&config).await;
    let expected = oracle(&config, &inputs);
    let ends: Vec<i64> = (0..PARTITIONS)
        .map(|p| inputs.iter().filter(|r| r.partition == p).count() as i64)
        .collect();

    // The first instance runs to the end; a mid-run checkpoint of each partition is
    // copied to a second store, as if the later saves had not happened.
    let first_store = EmbeddedStore::in_memory().expect("store");
    let (first, stop, service) = start_instance(
        &config,
        Arc::new(first_store.clone()) as Arc<dyn AuditStore>,
    );
    let behind = EmbeddedStore::in_memory().expect("store");
    let mut copied = vec![None; PARTITIONS as usize];
    let deadline = Instant::now() + Duration::from_secs(60);
    while copied.iter().any(Option::is_none) {
        assert!(
            Instant::now() < deadline,
            "no checkpoint of every partition: {copied:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        for p in 0..PARTITIONS {
            if copied[p as usize].is_some() {
                continue;
            }
            let checkpoint = first_store
                .load_checkpoint(&config.kafka.group_id, &config.topics.validation, p)
                .await
                .expect("load");
            if let Some(checkpoint) = checkpoint.filter(|c| c.next_offset > 0) {
                copied[p as usize] = Some(checkpoint.next_offset);
                behind.save_checkpoint(&checkpoint).await.expect("copy");
            }
        }
    }
    wait_until(
        "the first instance read every record",
        Duration::from_secs(120),
        || {
            let s = first.snapshot();
            s.records_in >= RECORDS as u64 && s.records_done == s.records_in
        },
    )
    .await;
    let _ = stop.send(true);
    service.await.expect("join").expect("stops cleanly");
    assert!(
        copied
            .iter()
            .zip(&ends)
            .any(|(c, end)| c.is_some_and(|c| c < *end)),
        "some copied checkpoint is behind the end: {copied:?} of {ends:?}"
    );

    // What the last transaction committed: every partition's end.
    commit_offsets(
        &broker,
        &config.kafka.group_id,
        &config.topics.validation,
        &ends,
    );

    let (second, stop, service) =
        start_instance(&config, Arc::new(behind.clone()) as Arc<dyn AuditStore>);
    let replayed: u64 = copied
        .iter()
        .zip(&ends)
        .map(|(c, end)| (end - c.expect("copied")) as u64)
        .sum();
    wait_until(
        "the second instance replayed to the committed offsets",
        Duration::from_secs(120),
        || {
            let s = second.snapshot();
            s.records_in >= replayed && s.records_done == s.records_in
        },
    )
    .await;
    let _ = stop.send(true);
    service.await.expect("join").expect("stops cleanly");
    let s = second.snapshot();
    assert_eq!(
        s.records_in, replayed,
        "the replay runs from each checkpoint to the end"
    );
    assert_eq!(s.outputs_acknowledged, 0, "nothing was published again");
    assert_each_decision_once(&expected, &decision_copies(&config, &broker));
    // The replay rebuilt each partition's state exactly: the final checkpoints agree.
    for p in 0..PARTITIONS {
        let load = |store: &EmbeddedStore| {
            let store = store.clone();
            let (group, topic) = (
                config.kafka.group_id.clone(),
                config.topics.validation.clone(),
            );
            async move {
                store
                    .load_checkpoint(&group, &topic, p)
                    .await
                    .expect("load")
            }
        };
        let (a, b) = (load(&first_store).await, load(&behind).await);
        let (a, b) = (a.expect("first's final"), b.expect("second's final"));
        assert_eq!(
            (a.next_offset, b.next_offset),
            (ends[p as usize], ends[p as usize])
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&a.state).expect("json"),
            serde_json::from_slice::<Value>(&b.state).expect("json"),
            "partition {p}: the replayed state differs"
        );
    }
}

/// `exactly_once`: a transaction commit the broker refuses (another producer with this
/// transactional id has started, so this one is fenced) stops the service with that
/// error rather than publishing on outside a transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_transaction_stops_the_service() {
    init_logs();
    let mock = audit_stream::kafka::mock::EmbeddedKafka::start().expect("mock cluster");
    let broker = Broker::Mock(mock);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config(&broker, dir.path());
    config.kafka.exactly_once = true;
    produce(&config).await;
    let store = FaultyStore::new(EmbeddedStore::in_memory().expect("store"));
    store.faults().stall_writes(Duration::from_millis(100));
    let (shared, _stop, service) = start_instance(&config, Arc::new(store));
    wait_until("the instance is under way", Duration::from_secs(60), || {
        shared.snapshot().records_done > 0
    })
    .await;
    let Broker::Mock(mock) = &broker else {
        unreachable!("started as the mock cluster")
    };
    mock.fence_transaction_commits(20);
    let stopped = tokio::time::timeout(Duration::from_secs(120), service)
        .await
        .expect("the service stops")
        .expect("join");
    let error = stopped
        .expect_err("a fenced producer is an error")
        .to_string();
    assert!(error.to_lowercase().contains("fenced"), "{error}");
    assert!(
        shared.snapshot().records_in < RECORDS as u64,
        "it stopped mid-run: {:?}",
        shared.snapshot()
    );
}

/// One failing validation event of tenant `c{tenant}`, the `n`th of `round`.
fn tenant_event(round: usize, n: usize, tenant: usize) -> (String, Vec<u8>) {
    let tenant = format!("c{tenant}");
    let value = serde_json::json!({
        "schema_version": 1,
        "event_id": Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("heads-{round}-{n}-{tenant}").as_bytes()),
        "tenant_id": tenant,
        "occurred_at": format!("2026-11-01T10:{round:02}:{n:02}Z"),
        "process": "p_transfer",
        "phase": "input",
        "values": {"amount": 7}
    });
    (
        format!("{tenant}:p_transfer"),
        serde_json::to_vec(&value).expect("json"),
    )
}

/// Chain heads held, evicted so far and read back so far, over an instance's partitions.
fn chain_counts(shared: &Shared) -> (usize, u64, u64) {
    let partitions = shared.partitions.read().expect("partitions");
    partitions
        .values()
        .fold((0, 0, 0), |(held, evicted, reloaded), state| {
            let chains = &state.lock().expect("state").chains;
            (
                held + chains.len(),
                evicted + chains.evictions().total(),
                reloaded + chains.reloaded(),
            )
        })
}

/// Chain heads are bounded per partition: past `chain.max_heads_per_partition`, heads a
/// durable checkpoint holds are evicted, and a returning tenant's head is read back from
/// the store, in the instance that evicted it and in the next one after a restart, so
/// every tenant keeps one unbroken chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_chain_heads_are_read_back_and_every_chain_stays_whole() {
    init_logs();
    const TENANTS: usize = 40;
    const MAX_HEADS: usize = 4;
    // At most this many heads stay held over the partitions once a save holds them all.
    const BOUND: usize = MAX_HEADS * PARTITIONS as usize;
    let broker = Broker::start(false);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = config(&broker, dir.path());
    config.chain.max_heads_per_partition = MAX_HEADS;
    let store = EmbeddedStore::open(&dir.path().join("store.db")).expect("store");
    // The third failure of a key is its first decision; every later one decides too.
    let round = |r: usize, per_tenant: usize| {
        (0..per_tenant)
            .flat_map(|n| (0..TENANTS).map(move |t| tenant_event(r, n, t)))
            .collect::<Vec<_>>()
    };
    let kafka = one_record_per_batch(&config.kafka);
    let topic = config.topics.validation.clone();
    let mut inputs = publish_and_place(&kafka, &topic, PARTITIONS, round(0, 3)).await;

    let (first, stop, service) =
        start_instance(&config, Arc::new(store.clone()) as Arc<dyn AuditStore>);
    wait_until(
        "the first round's heads are evicted down to the bound",
        Duration::from_secs(60),
        || {
            let (held, evicted, _) = chain_counts(&first);
            held <= BOUND && evicted as usize >= TENANTS - BOUND
        },
    )
    .await;
    // Every tenant returns while its head is evicted.
    inputs = publish_more_and_place(&kafka, &topic, PARTITIONS, inputs.len(), round(1, 1)).await;
    wait_until(
        "the second round's heads are read back, then evicted again",
        Duration::from_secs(60),
        || {
            let (held, evicted, reloaded) = chain_counts(&first);
            first.snapshot().records_done >= 4 * TENANTS as u64
                && reloaded as usize >= TENANTS - BOUND
                && held <= BOUND
                && evicted as usize >= 2 * (TENANTS - BOUND)
        },
    )
    .await;
    let _ = stop.send(true);
    service.await.expect("join").expect("stops cleanly");

    // A restart: the state restored without the evicted heads, they come back from the
    // store again.
    inputs = publish_more_and_place(&kafka, &topic, PARTITIONS, inputs.len(), round(2, 1)).await;
    let (second, stop, service) =
        start_instance(&config, Arc::new(store.clone()) as Arc<dyn AuditStore>);
    wait_until("the third round is done", Duration::from_secs(60), || {
        second.snapshot().records_done >= TENANTS as u64
    })
    .await;
    let (_, _, reloaded_before) = chain_counts(&first);
    let (_, _, reloaded) = chain_counts(&second);
    let _ = stop.send(true);
    service.await.expect("join").expect("stops cleanly");

    // Each tenant's decisions form one chain from its genesis, its stored head at the end.
    let mut decisions_by_tenant: BTreeMap<String, u64> = BTreeMap::new();
    for decision in oracle(&config, &inputs).values() {
        *decisions_by_tenant
            .entry(decision["tenant_id"].as_str().expect("tenant").to_owned())
            .or_default() += 1;
    }
    assert_eq!(decisions_by_tenant.len(), TENANTS);
    for (tenant, decisions) in &decisions_by_tenant {
        let heads = store.chain_heads(tenant).await.expect("heads");
        assert_eq!(heads.len(), 1, "{tenant}: one chain");
        assert_eq!(
            heads[0].records, *decisions,
            "{tenant}: every decision in its chain"
        );
    }
    let report = audit_stream::verify::verify(&store, None, &indicatif::ProgressBar::hidden())
        .await
        .expect("verify");
    assert!(report.is_clean(), "{report}");
    assert!(
        reloaded as usize >= reloaded_before as usize + TENANTS - BOUND,
        "after the restart {reloaded} read back in all"
    );
}
