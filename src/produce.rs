//! `produce`: publishes a record file (SPEC §4b) to its topics, with its keys.
//!
//! The whole file is read and checked first, so a bad line stops the command before
//! anything is published; then every record is sent (idempotent producer, `acks=all`)
//! and the command ends once the broker acknowledged each one.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::KafkaConfig;
use crate::kafka::producer::RecordPublisher;
use crate::kafka::KafkaError;
use crate::record::{Record, RecordFileError, RecordLine};

/// What `produce` published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProduceSummary {
    pub records: u64,
    pub by_topic: BTreeMap<String, u64>,
    pub elapsed: Duration,
}

impl std::fmt::Display for ProduceSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        writeln!(
            f,
            "published {} records in {:.2}s ({:.0} records/s), all acknowledged",
            self.records,
            secs,
            self.records as f64 / secs
        )?;
        for (topic, n) in &self.by_topic {
            writeln!(f, "  {topic:<32} {n:>10}")?;
        }
        Ok(())
    }
}

/// Why `produce` failed.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("{file}: {source}")]
    Line {
        file: String,
        source: RecordFileError,
    },
    #[error("{file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("{file}: line {line}: not acknowledged by the broker: {error}")]
    Delivery {
        file: String,
        line: usize,
        error: String,
    },
}

/// Reads a record file into records (line i is offset i of partition 0).
pub fn read_records(path: &Path) -> Result<Vec<Record>, ProduceError> {
    let file = path.display().to_string();
    let reader = std::fs::File::open(path)
        .map(std::io::BufReader::new)
        .map_err(|source| ProduceError::Read {
            file: file.clone(),
            source,
        })?;
    let mut records = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let line = line.map_err(|source| ProduceError::Read {
            file: file.clone(),
            source,
        })?;
        let record = RecordLine::parse(&line, index + 1)
            .map_err(|source| ProduceError::Line {
                file: file.clone(),
                source,
            })?
            .into_record(0, index as i64);
        records.push(record);
    }
    Ok(records)
}

/// Publishes `records` (from `file`, for messages) and waits for every
/// acknowledgement. Shows a progress bar when stderr is a terminal.
pub async fn publish(
    kafka: &KafkaConfig,
    file: &str,
    records: &[Record],
) -> Result<ProduceSummary, ProduceError> {
    let started = Instant::now();
    let publisher = RecordPublisher::new(kafka)?;
    let progress = ProgressBar::new(records.len() as u64);
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} {bar:40} {pos}/{len} records ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut pending = FuturesUnordered::new();
    let mut summary = ProduceSummary::default();
    for (index, record) in records.iter().enumerate() {
        let delivery = publisher
            .publish(
                &record.topic,
                record.key.as_deref(),
                &record.payload,
                record.timestamp.map(|t| t.timestamp_millis()),
            )
            .await?;
        pending.push(async move { (index + 1, delivery.await) });
        *summary.by_topic.entry(record.topic.clone()).or_default() += 1;
        // Keep the set of awaited acknowledgements bounded.
        while pending.len() >= 10_000 {
            acknowledge(&mut pending, file, &progress).await?;
        }
    }
    while !pending.is_empty() {
        acknowledge(&mut pending, file, &progress).await?;
    }
    publisher.flush(Duration::from_secs(30))?;
    progress.finish_and_clear();
    summary.records = records.len() as u64;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

async fn acknowledge<F>(
    pending: &mut FuturesUnordered<F>,
    file: &str,
    progress: &ProgressBar,
) -> Result<(), ProduceError>
where
    F: std::future::Future<Output = (usize, Result<(i32, i64), KafkaError>)>,
{
    if let Some((line, result)) = pending.next().await {
        result.map_err(|error| ProduceError::Delivery {
            file: file.to_string(),
            line,
            error: error.to_string(),
        })?;
        progress.inc(1);
    }
    Ok(())
}
