//! The measured processes of `bench`, each started as `audit-stream bench-child …` so that
//! its CPU time is its own.
//!
//! Each prints one JSON line ([`ChildReport`]) last on stdout: how many records, and the
//! monotonic time and this process's CPU time (user + system, all threads) at its first
//! record and at its end. The quixstreams peer prints the same fields.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use super::dataset::{Generator, Mix, RECIPES};
use super::BenchError;
use crate::config::{Config, KafkaConfig, TopicsConfig};
use crate::kafka::consumer::{self, RebalanceHook};
use crate::kafka::ConsumerGroupMetadata;
use crate::metrics;
use crate::pipeline::offsets::TopicPartition;
use crate::pipeline::worker::Shared;
use crate::pipeline::{Operator, PartitionState};
use crate::record::Record;
use crate::service;
use crate::validation::Recipes;

/// Which measured process to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// (a) Reads the input topics with the pipeline's consumer settings and discards.
    Null,
    /// (b) The whole pipeline with the embedded store, until every record is done.
    Pipeline,
    /// Decode, schema check and audit of generated records in this thread, no I/O.
    Inprocess,
}

/// Arguments of `bench-child`.
#[derive(Debug, Clone, Args)]
pub struct ChildArgs {
    #[arg(value_enum)]
    pub role: Role,
    /// Records to read (or, in process, to generate) before stopping.
    #[arg(long)]
    pub records: u64,
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
    #[arg(long, default_value = "bench")]
    pub group: String,
    /// Topic name prefix: `{prefix}.validation`, `.execution`, `.coordination`,
    /// `.decisions`, `.verdicts`, `.dlq`.
    #[arg(long, default_value = "bench")]
    pub topics: String,
    /// Embedded store file of the pipeline.
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// Recipes file of the pipeline.
    #[arg(long)]
    pub recipes: Option<PathBuf>,
    /// Pipeline: print `ready` once partitions are assigned, and report end-to-end
    /// latency percentiles.
    #[arg(long)]
    pub latency: bool,
    /// Latency: the first this many records done are the warm-up, kept apart from the
    /// percentiles.
    #[arg(long, default_value_t = 0)]
    pub latency_warmup: u64,
    /// In process: which kind of record.
    #[arg(long, value_enum, default_value = "validation")]
    pub kind: InprocessKind,
}

/// The record kind of an in-process measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InprocessKind {
    Validation,
    Execution,
}

/// End-to-end latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Records of the warm-up, and the highest latency among them.
    #[serde(default)]
    pub warmup_samples: u64,
    #[serde(default)]
    pub warmup_max_ms: f64,
    /// The share of the same records' latency before the pipeline's worker took them
    /// (the producing client, the broker, the consumer's fetch): samples and percentiles.
    #[serde(default)]
    pub input_wait_samples: u64,
    #[serde(default)]
    pub input_wait_p50_ms: f64,
    #[serde(default)]
    pub input_wait_p99_ms: f64,
}

impl Latency {
    /// Percentiles of latency samples (seconds, in the order records were done), the
    /// first `warmup` of them kept apart.
    pub fn of(samples: &[f64], warmup: u64) -> Latency {
        let warmup = usize::try_from(warmup)
            .unwrap_or(usize::MAX)
            .min(samples.len());
        let (first, measured) = samples.split_at(warmup);
        let mut ms: Vec<f64> = measured.iter().map(|s| s * 1000.0).collect();
        ms.sort_by(f64::total_cmp);
        Latency {
            samples: ms.len() as u64,
            p50_ms: percentile(&ms, 0.50),
            p99_ms: percentile(&ms, 0.99),
            max_ms: ms.last().copied().unwrap_or(0.0),
            warmup_samples: warmup as u64,
            warmup_max_ms: first.iter().map(|s| s * 1000.0).fold(0.0, f64::max),
            ..Latency::default()
        }
    }

    /// With the percentiles of the input wait's `samples` (seconds, in the order records
    /// were taken), the first `warmup` of them left out as in [`Latency::of`].
    pub fn with_input_wait(self, samples: &[f64], warmup: u64) -> Latency {
        let wait = Latency::of(samples, warmup);
        Latency {
            input_wait_samples: wait.samples,
            input_wait_p50_ms: wait.p50_ms,
            input_wait_p99_ms: wait.p99_ms,
            ..self
        }
    }
}

/// The last line a measured process prints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChildReport {
    pub records: u64,
    pub first_record_secs: f64,
    pub end_secs: f64,
    pub cpu_at_first_record_secs: f64,
    pub cpu_at_end_secs: f64,
    #[serde(default)]
    pub outputs_acknowledged: u64,
    #[serde(default)]
    pub audit_records_durable: u64,
    #[serde(default)]
    pub latency: Option<Latency>,
}

/// The topics of a bench run, from its prefix.
pub fn topics(prefix: &str) -> TopicsConfig {
    TopicsConfig {
        validation: format!("{prefix}.validation"),
        execution: format!("{prefix}.execution"),
        coordination: format!("{prefix}.coordination"),
        decisions: format!("{prefix}.decisions"),
        verdicts: format!("{prefix}.verdicts"),
        dlq: format!("{prefix}.dlq"),
    }
}

/// CPU time of this process so far (user + system, every thread), seconds.
pub fn cpu_secs() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF)
        .map(|u| {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        })
        .unwrap_or(f64::NAN)
}

/// Seconds on a monotonic clock shared by one process.
fn now_secs(origin: Instant) -> f64 {
    origin.elapsed().as_secs_f64()
}

/// Runs the role and prints its report.
pub async fn run(args: ChildArgs) -> Result<(), BenchError> {
    let report = match args.role {
        Role::Null => null_consumer(&args).await?,
        Role::Pipeline => pipeline(&args).await?,
        Role::Inprocess => inprocess(args.kind, args.records)?,
    };
    println!(
        "{}",
        serde_json::to_string(&report).map_err(|e| BenchError::Child(e.to_string()))?
    );
    Ok(())
}

/// Starts every partition at its committed offset: no checkpoints to restore.
struct NoCheckpoints;

impl RebalanceHook for NoCheckpoints {
    fn assigning(&self, partitions: &[TopicPartition]) -> Vec<Option<i64>> {
        vec![None; partitions.len()]
    }
    fn revoking(
        &self,
        _partitions: &[TopicPartition],
        _group: Option<&ConsumerGroupMetadata>,
    ) -> Vec<(TopicPartition, i64)> {
        Vec::new()
    }
}

/// How long a fetch may wait for records on the broker, for every contender. Tansu 0.6
/// answers a fetch only when this has passed, even with records there (librdkafka's
/// default, 500 ms, puts half a second into every record's latency); a Kafka broker
/// answers as soon as it has `fetch.min.bytes`.
pub const FETCH_WAIT_MAX_MS: &str = "10";

fn kafka(args: &ChildArgs) -> KafkaConfig {
    let mut kafka = KafkaConfig {
        bootstrap_servers: args.brokers.clone(),
        group_id: args.group.clone(),
        ..KafkaConfig::default()
    };
    kafka
        .properties
        .insert("fetch.wait.max.ms".into(), FETCH_WAIT_MAX_MS.into());
    kafka
}

/// (a): the pipeline's consumer, its settings and its record copies, and nothing else.
async fn null_consumer(args: &ChildArgs) -> Result<ChildReport, BenchError> {
    let origin = Instant::now();
    let t = topics(&args.topics);
    let inputs = [
        (t.validation.as_str(), "validation"),
        (t.execution.as_str(), "execution"),
        (t.coordination.as_str(), "coordination"),
    ];
    let (consumer, _assignments) =
        consumer::subscribe(&kafka(args), &inputs, Arc::new(NoCheckpoints))?;
    let mut report = ChildReport::default();
    while report.records < args.records {
        match consumer.recv().await {
            Ok(record) => {
                if report.records == 0 {
                    report.first_record_secs = now_secs(origin);
                    report.cpu_at_first_record_secs = cpu_secs();
                }
                report.records += 1;
                std::hint::black_box(record);
            }
            Err(error) => tracing::warn!(%error, "Consumer error; polling on"),
        }
    }
    report.end_secs = now_secs(origin);
    report.cpu_at_end_secs = cpu_secs();
    Ok(report)
}

/// (b): the service itself (`service::run`) with the embedded store and its metrics,
/// until every record is done: outputs acknowledged by the broker, audit records durable.
async fn pipeline(args: &ChildArgs) -> Result<ChildReport, BenchError> {
    let origin = Instant::now();
    let mut config = Config {
        kafka: kafka(args),
        topics: topics(&args.topics),
        ..Config::default()
    };
    config.recipes.path = args.recipes.clone();
    if let Some(store) = &args.store {
        config.store.embedded_path = store.clone();
    }
    let (handle, samples) = if args.latency {
        let (handle, samples) = metrics::install_with_latency_tap().map_err(BenchError::Child)?;
        (handle, Some(samples))
    } else {
        (metrics::install().map_err(BenchError::Child)?, None)
    };
    let store = service::open_store(&config).await?;
    let shared = Arc::new(Shared::default());
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let runtime = service::Runtime {
        store,
        metrics: Some(handle),
        shared: shared.clone(),
        serve_http: false,
    };
    let service = tokio::spawn(service::run(config, runtime, shutdown));

    let mut report = ChildReport::default();
    let mut announced = false;
    let mut poll = tokio::time::interval(Duration::from_millis(2));
    loop {
        poll.tick().await;
        if service.is_finished() {
            break;
        }
        if args.latency && !announced && shared.ready.load(Ordering::Acquire) {
            println!("ready");
            announced = true;
        }
        let (records_in, done) = {
            let stats = shared
                .stats
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            (stats.records_in, stats.records_done)
        };
        if records_in > 0 && report.first_record_secs == 0.0 {
            report.first_record_secs = now_secs(origin);
            report.cpu_at_first_record_secs = cpu_secs();
        }
        if done >= args.records {
            report.end_secs = now_secs(origin);
            report.cpu_at_end_secs = cpu_secs();
            break;
        }
    }
    let _ = stop.send(true);
    let stats = service
        .await
        .map_err(|e| BenchError::Child(e.to_string()))??;
    if stats.records_done < args.records {
        return Err(BenchError::Child(format!(
            "the pipeline stopped after {} of {} records",
            stats.records_done, args.records
        )));
    }
    report.records = args.records;
    report.outputs_acknowledged = stats.outputs_acknowledged;
    report.audit_records_durable = stats.audit_records_durable;
    if let Some(samples) = samples {
        let secs = |samples: &metrics::Samples| {
            samples
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone()
        };
        report.latency = Some(
            Latency::of(&secs(&samples.end_to_end), args.latency_warmup)
                .with_input_wait(&secs(&samples.input_wait), args.latency_warmup),
        );
    }
    Ok(report)
}

/// The `q` quantile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Records of one kind for the in-process measurement, with the recipes and operator.
pub struct Inprocess {
    pub operator: Operator,
    pub recipes: Recipes,
    pub records: Vec<Record>,
}

impl Inprocess {
    pub fn new(kind: InprocessKind, records: usize) -> Result<Inprocess, BenchError> {
        let config = Config::default();
        let mix = match kind {
            InprocessKind::Validation => Mix::Validation,
            InprocessKind::Execution => Mix::Execution,
        };
        let start = chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap_or_default();
        Ok(Inprocess {
            operator: Operator::new(&config)?,
            recipes: Recipes::parse(RECIPES).map_err(|e| BenchError::Child(e.to_string()))?,
            records: Generator::new(42, &config.topics, start, mix).take(records),
        })
    }
}

/// From payload bytes to output bytes: decode, schema check, audit, and each output
/// serialized as it is published. Returns the output bytes. Not inlined, so that
/// callgrind can count exactly this (`--toggle-collect=*measured_loop*`).
#[inline(never)]
pub fn measured_loop(work: &Inprocess, state: &mut PartitionState) -> usize {
    let now = Utc::now();
    let mut bytes = 0;
    for record in &work.records {
        for output in work.operator.process(record, &work.recipes, state, now) {
            if let Some(publication) = output.publication(work.operator.topics()) {
                bytes += publication.payload.len();
            }
        }
    }
    bytes
}

fn inprocess(kind: InprocessKind, records: u64) -> Result<ChildReport, BenchError> {
    let origin = Instant::now();
    let work = Inprocess::new(kind, usize::try_from(records).unwrap_or(usize::MAX))?;
    let mut state = PartitionState::new(&work.recipes);
    let first = now_secs(origin);
    let cpu_first = cpu_secs();
    std::hint::black_box(measured_loop(&work, &mut state));
    Ok(ChildReport {
        records,
        first_record_secs: first,
        end_secs: now_secs(origin),
        cpu_at_first_record_secs: cpu_first,
        cpu_at_end_secs: cpu_secs(),
        ..ChildReport::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_samples_are_kept_apart_from_the_percentiles() {
        // Two slow warm-up records, then 100 records of 1..=100 ms.
        let mut samples = vec![0.9, 1.1];
        samples.extend((1..=100).map(|ms| f64::from(ms) / 1000.0));
        let latency = Latency::of(&samples, 2);
        assert_eq!(latency.samples, 100);
        assert_eq!(latency.warmup_samples, 2);
        assert!((latency.warmup_max_ms - 1100.0).abs() < 1e-9);
        assert!((latency.p50_ms - 50.0).abs() < 1e-9);
        assert!((latency.p99_ms - 99.0).abs() < 1e-9);
        assert!((latency.max_ms - 100.0).abs() < 1e-9);

        // The input wait's samples: the same warm-up left out.
        let wait: Vec<f64> = samples.iter().map(|s| s / 10.0).collect();
        let both = latency.with_input_wait(&wait, 2);
        assert_eq!(both.input_wait_samples, 100);
        assert!((both.input_wait_p50_ms - 5.0).abs() < 1e-9);
        assert!((both.input_wait_p99_ms - 9.9).abs() < 1e-9);
        assert!((both.p99_ms - 99.0).abs() < 1e-9);

        let all = Latency::of(&samples, 0);
        assert_eq!(all.samples, 102);
        assert!((all.max_ms - 1100.0).abs() < 1e-9);
        assert_eq!(Latency::of(&samples, 500).samples, 0);
    }
}
