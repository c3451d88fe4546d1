//! `demo`: the whole live pipeline on an in-process Kafka cluster and the embedded
//! store, with the sample traffic of `examples/demo.jsonl` and the recipes of
//! `config/recipes.yaml`, ending in a summary that accounts for every record.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::watch;

use crate::config::Config;
use crate::gate::{self, GateAnswer};
use crate::kafka::mock::EmbeddedKafka;
use crate::pipeline::worker::{RunStats, Shared};
use crate::produce;
use crate::record::{Record, RecordLine};
use crate::service::{self, Runtime};
use crate::store::{AuditStore, EmbeddedStore};

/// Sample traffic: validation, execution and coordination events, and a few bad records.
pub const SAMPLE_RECORDS: &str = include_str!("../examples/demo.jsonl");
/// Sample Theus recipes.
pub const SAMPLE_RECIPES: &str = include_str!("../config/recipes.yaml");

/// How long the demo waits for the pipeline to finish the sample.
const DEADLINE: Duration = Duration::from_secs(120);

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("sample records: {0}")]
    Sample(#[from] crate::record::RecordFileError),
    #[error("kafka: {0}")]
    Kafka(#[from] crate::kafka::KafkaError),
    #[error("{0}")]
    Produce(#[from] produce::ProduceError),
    #[error("{0}")]
    Service(#[from] service::ServiceError),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("demo workspace: {0}")]
    Io(#[from] std::io::Error),
}

/// What the demo saw.
#[derive(Debug, Clone)]
pub struct DemoReport {
    pub produced: u64,
    pub stats: RunStats,
    pub gate: Vec<GateAnswer>,
    pub elapsed: Duration,
    pub timed_out: bool,
}

impl DemoReport {
    /// Every record read, audited or dead-lettered, and done; every output acknowledged.
    pub fn accounted(&self) -> bool {
        let s = &self.stats;
        let decoded: u64 = s.decoded_by_kind.values().sum();
        let dead: u64 = s.dead_letters_by_class.values().sum();
        !self.timed_out
            && s.records_in == self.produced
            && s.records_done == s.records_in
            && decoded + dead == s.records_in
            && s.outputs_acknowledged == s.outputs_published
    }
}

/// Parses the sample records.
pub fn sample_records() -> Result<Vec<Record>, crate::record::RecordFileError> {
    SAMPLE_RECORDS
        .lines()
        .enumerate()
        .map(|(i, line)| RecordLine::parse(line, i + 1).map(|l| l.into_record(0, i as i64)))
        .collect()
}

/// Runs the demo.
pub async fn run() -> Result<DemoReport, DemoError> {
    let started = Instant::now();
    let records = sample_records()?;
    let kafka = EmbeddedKafka::start()?;
    let workspace = std::env::temp_dir().join(format!("audit-stream-demo-{}", std::process::id()));
    std::fs::create_dir_all(&workspace)?;
    let recipes_path = workspace.join("recipes.yaml");
    std::fs::write(&recipes_path, SAMPLE_RECIPES)?;

    let mut config = Config::default();
    config.kafka.bootstrap_servers = kafka.bootstrap_servers();
    config.kafka.group_id = "audit-stream-demo".into();
    config.kafka.commit_interval_ms = 200;
    config.kafka.statistics_interval_ms = 500;
    config.recipes.path = Some(recipes_path);
    for topic in config.topics.inputs() {
        kafka.create_topic(topic, 3)?;
    }
    for topic in config.topics.outputs() {
        kafka.create_topic(topic, 1)?;
    }

    let published = produce::publish(&config.kafka, "examples/demo.jsonl", &records).await?;
    let store: Arc<dyn AuditStore> = Arc::new(EmbeddedStore::in_memory()?);
    let shared = Arc::new(Shared {
        decisions_by_key: true,
        ..Shared::default()
    });
    let (stop, shutdown) = watch::channel(false);
    let runtime = Runtime {
        store: store.clone(),
        metrics: None,
        shared: shared.clone(),
        serve_http: false,
    };
    let service = tokio::spawn(service::run(config.clone(), runtime, shutdown));

    let produced = published.records;
    let deadline = Instant::now() + DEADLINE;
    let mut timed_out = false;
    loop {
        let s = shared.snapshot();
        if s.records_done >= produced && s.outputs_acknowledged >= s.outputs_published {
            break;
        }
        if Instant::now() > deadline || service.is_finished() {
            timed_out = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(true);
    let stats = match service.await {
        Ok(result) => result?,
        Err(join) => return Err(std::io::Error::other(join.to_string()).into()),
    };
    std::fs::remove_dir_all(&workspace)?;

    let contracts: BTreeSet<(String, String)> = records
        .iter()
        .filter_map(
            |r| match serde_json::from_slice::<serde_json::Value>(&r.payload) {
                Ok(v) if r.topic == config.topics.execution => Some((
                    v.get("tenant_id")?.as_str()?.to_string(),
                    v.get("contract_id")?.as_str()?.to_string(),
                )),
                _ => None,
            },
        )
        .collect();
    let policy = gate::GatePolicy {
        // The sample's evidence is old; the demo asks with an unlimited window.
        freshness: chrono::Duration::days(365 * 100),
    };
    let mut answers = Vec::new();
    for (tenant, contract) in contracts {
        let status = store.rollout_status(&tenant, &contract).await?;
        answers.push(gate::decide(
            &tenant,
            &contract,
            status.as_ref(),
            None,
            &policy,
            Utc::now(),
        ));
    }
    Ok(DemoReport {
        produced,
        stats,
        gate: answers,
        elapsed: started.elapsed(),
        timed_out,
    })
}

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        writeln!(
            f,
            "audit-stream demo: in-process Kafka, embedded store, sample traffic"
        )?;
        writeln!(f)?;
        writeln!(f, "records produced        {:>6}", self.produced)?;
        writeln!(f, "records consumed        {:>6}", s.records_in)?;
        writeln!(
            f,
            "records done            {:>6}  (outputs acknowledged, audit records durable)",
            s.records_done
        )?;
        for (kind, n) in &s.decoded_by_kind {
            writeln!(f, "  decoded {kind:<15} {n:>6}")?;
        }
        writeln!(f)?;
        writeln!(f, "decisions by level/decision")?;
        for (level, n) in &s.decisions_by_level {
            writeln!(f, "  {level:<21} {n:>6}")?;
        }
        writeln!(f, "decisions by key")?;
        for (key, n) in &s.decisions_by_key {
            writeln!(f, "  {key:<44} {n:>4}")?;
        }
        writeln!(f, "verdicts by result")?;
        for (result, n) in &s.verdicts_by_result {
            writeln!(f, "  {result:<21} {n:>6}")?;
        }
        writeln!(f, "coordination records    {:>6}", s.coordination_records)?;
        writeln!(f, "dead letters by class")?;
        for (class, n) in &s.dead_letters_by_class {
            writeln!(f, "  {class:<21} {n:>6}")?;
        }
        writeln!(f)?;
        writeln!(f, "outputs published       {:>6}", s.outputs_published)?;
        writeln!(f, "outputs acknowledged    {:>6}", s.outputs_acknowledged)?;
        writeln!(f, "audit records durable   {:>6}", s.audit_records_durable)?;
        writeln!(f)?;
        writeln!(f, "rollout gate")?;
        for a in &self.gate {
            writeln!(
                f,
                "  {:<8} {:<20} {:<9} {}",
                a.tenant_id,
                a.contract_id,
                a.action.to_string(),
                a.reason
            )?;
        }
        writeln!(f)?;
        if self.accounted() {
            writeln!(
                f,
                "every record accounted for ({:.1}s)",
                self.elapsed.as_secs_f64()
            )
        } else if self.timed_out {
            writeln!(
                f,
                "NOT ACCOUNTED: the pipeline did not finish the sample in time"
            )
        } else {
            writeln!(f, "NOT ACCOUNTED: counts above do not add up")
        }
    }
}
