//! Telemetry in one place: one function per domain event, which logs and counts with
//! the same fields. Metric macros are disallowed elsewhere (`clippy.toml`).
//!
//! Names follow `audit_stream_<noun>_<unit>[_total]`; labels come only from small fixed
//! sets (input kind, error class, level, decision, result, check id, output topic
//! role), never from tenants, keys or other user-controlled strings.
#![allow(clippy::disallowed_macros)]

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{
    counter, gauge, histogram, Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString,
    Unit,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::event::{AuditDecision, AuditVerdict, CheckResult, DeadLetter, ErrorClass};
use crate::store::{Conflict, StoreError};

/// Every metric the service exports, for documentation and the emission test.
pub const REQUIRED: &[&str] = &[
    "audit_stream_records_consumed_total",
    "audit_stream_records_decoded_total",
    "audit_stream_records_redelivered_total",
    "audit_stream_dead_letters_total",
    "audit_stream_decisions_total",
    "audit_stream_verdicts_total",
    "audit_stream_checks_total",
    "audit_stream_outputs_acknowledged_total",
    "audit_stream_output_delivery_errors_total",
    "audit_stream_store_records_written_total",
    "audit_stream_store_duplicates_total",
    "audit_stream_store_conflicts_total",
    "audit_stream_store_write_seconds",
    "audit_stream_store_write_errors_total",
    "audit_stream_end_to_end_latency_seconds",
    "audit_stream_input_wait_seconds",
    "audit_stream_tracked_keys",
    "audit_stream_chain_heads",
    "audit_stream_chain_heads_evicted_total",
    "audit_stream_chain_heads_reloaded_total",
    "audit_stream_counter_keys_evicted_total",
    "audit_stream_backpressure_active",
    "audit_stream_consumer_lag_records",
    "audit_stream_consumer_lag_seconds",
    "audit_stream_offsets_committed_total",
    "audit_stream_recipes_reloads_total",
    "audit_stream_dropped_total",
    "audit_stream_partitions_restoring",
    "audit_stream_checkpoint_age_seconds",
    "audit_stream_checkpoints_saved_total",
    "audit_stream_checkpoint_errors_total",
    "audit_stream_dead_letter_ratio",
    "audit_stream_dead_letter_ratio_limit",
    "audit_stream_transactions_committed_total",
    "audit_stream_outputs_already_published_total",
];

/// Installs the Prometheus recorder for this process and returns the handle that
/// renders `/metrics`. Call once, from `main`.
pub fn install() -> Result<PrometheusHandle, String> {
    let recorder = builder()?.build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
    register_at_zero();
    register_per_record();
    Ok(handle)
}

/// Samples (seconds) of one histogram, in the order they were recorded.
pub type Samples = std::sync::Arc<std::sync::Mutex<Vec<f64>>>;

/// Every latency sample recorded since [`install_with_latency_tap`].
#[derive(Debug, Clone, Default)]
pub struct LatencySamples {
    /// `audit_stream_end_to_end_latency_seconds`, as records are done.
    pub end_to_end: Samples,
    /// `audit_stream_input_wait_seconds`, as records are taken.
    pub input_wait: Samples,
}

/// [`install`], and every sample of the latency histograms also kept in the returned
/// lists, for exact percentiles (`bench`).
pub fn install_with_latency_tap() -> Result<(PrometheusHandle, LatencySamples), String> {
    let inner = builder()?.build_recorder();
    let handle = inner.handle();
    let samples = LatencySamples::default();
    metrics::set_global_recorder(LatencyTap {
        inner,
        samples: samples.clone(),
    })
    .map_err(|e| e.to_string())?;
    register_at_zero();
    register_per_record();
    Ok((handle, samples))
}

/// A recorder that passes everything on and copies the latency histograms' samples.
struct LatencyTap {
    inner: metrics_exporter_prometheus::PrometheusRecorder,
    samples: LatencySamples,
}

struct TappedHistogram {
    inner: metrics::Histogram,
    samples: Samples,
}

impl metrics::HistogramFn for TappedHistogram {
    fn record(&self, value: f64) {
        self.inner.record(value);
        self.samples
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(value);
    }
}

impl metrics::Recorder for LatencyTap {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description)
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description)
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_histogram(key, unit, description)
    }
    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> metrics::Counter {
        self.inner.register_counter(key, metadata)
    }
    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> metrics::Gauge {
        self.inner.register_gauge(key, metadata)
    }
    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> metrics::Histogram {
        let inner = self.inner.register_histogram(key, metadata);
        let samples = match key.name() {
            "audit_stream_end_to_end_latency_seconds" => &self.samples.end_to_end,
            "audit_stream_input_wait_seconds" => &self.samples.input_wait,
            _ => return inner,
        };
        metrics::Histogram::from_arc(std::sync::Arc::new(TappedHistogram {
            inner,
            samples: samples.clone(),
        }))
    }
}

fn builder() -> Result<PrometheusBuilder, String> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ],
        )
        .map_err(|e| e.to_string())
}

/// Metric labels of the input kinds, as `Operator::kind_label` names them: the `kind`
/// label of the per-kind series.
pub const KINDS: [&str; 4] = ["validation", "execution", "coordination", "unknown"];
/// The contract checks, as the `check` label; `other` for an id outside them.
const CHECKS: [&str; 8] = [
    "A-001", "A-002", "A-003", "A-004", "A-005", "A-006", "A-007", "other",
];
const RESULTS: [CheckResult; 3] = [
    CheckResult::Pass,
    CheckResult::Fail,
    CheckResult::Inconclusive,
];
const ROLES: [&str; 3] = ["decisions", "verdicts", "dlq"];

/// Handles of the series recorded for every record, registered once when the recorder
/// is installed. A macro call finds its series by name and labels in the recorder's
/// registry each time: for an execution record's dozen series that was about 5 % of the
/// pipeline's CPU.
struct PerRecord {
    consumed: [Counter; 4],
    decoded: [Counter; 4],
    verdicts: [Counter; 3],
    /// By check (in [`CHECKS`] order), then result (in [`RESULTS`] order).
    checks: [[Counter; 3]; 8],
    acknowledged: [Counter; 3],
    offsets_committed: Counter,
    end_to_end_latency: Histogram,
    input_wait: Histogram,
    lag_seconds: Gauge,
    dead_letter_ratio: [Gauge; 4],
}

/// Set only by [`install`] and [`install_with_latency_tap`], right after the recorder:
/// while it is unset, no recorder is installed and the macros would record nowhere.
static PER_RECORD: OnceLock<PerRecord> = OnceLock::new();

fn register_per_record() {
    let kinds = |name: &'static str| KINDS.map(|kind| counter!(name, "kind" => kind));
    let _ = PER_RECORD.set(PerRecord {
        consumed: kinds("audit_stream_records_consumed_total"),
        decoded: kinds("audit_stream_records_decoded_total"),
        verdicts: RESULTS
            .map(|result| counter!("audit_stream_verdicts_total", "result" => result.as_str())),
        checks: CHECKS.map(|check| {
            RESULTS.map(|result| {
                counter!("audit_stream_checks_total", "check" => check, "result" => result.as_str())
            })
        }),
        acknowledged: ROLES
            .map(|role| counter!("audit_stream_outputs_acknowledged_total", "topic" => role)),
        offsets_committed: counter!("audit_stream_offsets_committed_total"),
        end_to_end_latency: histogram!("audit_stream_end_to_end_latency_seconds"),
        input_wait: histogram!("audit_stream_input_wait_seconds"),
        lag_seconds: gauge!("audit_stream_consumer_lag_seconds"),
        dead_letter_ratio: KINDS
            .map(|kind| gauge!("audit_stream_dead_letter_ratio", "kind" => kind)),
    });
}

/// The position of `label` in `labels`; the last one if it is not there: `unknown` of
/// [`KINDS`], `other` of [`CHECKS`] (the callers pass only [`ROLES`]' three roles).
fn index_of(labels: &[&str], label: &str) -> usize {
    labels
        .iter()
        .position(|l| *l == label)
        .unwrap_or(labels.len() - 1)
}

/// The position of an input kind's label in [`KINDS`]; `unknown`'s for any other.
pub fn kind_index(kind: &str) -> usize {
    index_of(&KINDS, kind)
}

fn result_index(result: CheckResult) -> usize {
    match result {
        CheckResult::Pass => 0,
        CheckResult::Fail => 1,
        CheckResult::Inconclusive => 2,
    }
}

/// Registers every counter series with a fixed label set at zero, so that dashboards
/// and alerts see 0 rather than "no data" before the first event.
fn register_at_zero() {
    for kind in KINDS {
        counter!("audit_stream_records_consumed_total", "kind" => kind).absolute(0);
        counter!("audit_stream_records_decoded_total", "kind" => kind).absolute(0);
    }
    for class in ErrorClass::ALL {
        counter!("audit_stream_dead_letters_total", "class" => class.as_str()).absolute(0);
    }
    for (level, decision) in [("S", "STOP"), ("A", "ABORT"), ("B", "BLOCK"), ("B", "WARN")] {
        counter!("audit_stream_decisions_total", "level" => level, "decision" => decision)
            .absolute(0);
    }
    for result in RESULTS {
        counter!("audit_stream_verdicts_total", "result" => result.as_str()).absolute(0);
        for &check in &CHECKS[..7] {
            counter!("audit_stream_checks_total", "check" => check, "result" => result.as_str())
                .absolute(0);
        }
    }
    for role in ROLES {
        counter!("audit_stream_outputs_acknowledged_total", "topic" => role).absolute(0);
        counter!("audit_stream_output_delivery_errors_total", "topic" => role).absolute(0);
    }
    counter!("audit_stream_store_records_written_total").absolute(0);
    counter!("audit_stream_transactions_committed_total").absolute(0);
    counter!("audit_stream_outputs_already_published_total").absolute(0);
    counter!("audit_stream_store_duplicates_total").absolute(0);
    for kind in ["decision", "verdict", "coordination"] {
        counter!("audit_stream_store_conflicts_total", "kind" => kind).absolute(0);
    }
    for kind in ["retryable", "permanent"] {
        counter!("audit_stream_store_write_errors_total", "kind" => kind).absolute(0);
    }
    counter!("audit_stream_offsets_committed_total").absolute(0);
    counter!("audit_stream_records_redelivered_total").absolute(0);
    for outcome in ["accepted", "rejected"] {
        counter!("audit_stream_recipes_reloads_total", "outcome" => outcome).absolute(0);
    }
    gauge!("audit_stream_tracked_keys").set(0.0);
    gauge!("audit_stream_chain_heads").set(0.0);
    for reason in ["idle", "head_limit"] {
        counter!("audit_stream_chain_heads_evicted_total", "reason" => reason).absolute(0);
    }
    counter!("audit_stream_chain_heads_reloaded_total").absolute(0);
    for reason in ["idle", "key_limit"] {
        counter!("audit_stream_counter_keys_evicted_total", "reason" => reason).absolute(0);
    }
    gauge!("audit_stream_backpressure_active").set(0.0);
    gauge!("audit_stream_consumer_lag_seconds").set(0.0);
    counter!("audit_stream_dropped_total").absolute(0);
    gauge!("audit_stream_partitions_restoring").set(0.0);
    gauge!("audit_stream_checkpoint_age_seconds").set(0.0);
    counter!("audit_stream_checkpoints_saved_total").absolute(0);
    for operation in ["save", "load"] {
        counter!("audit_stream_checkpoint_errors_total", "operation" => operation).absolute(0);
    }
    for kind in KINDS {
        gauge!("audit_stream_dead_letter_ratio", "kind" => kind).set(0.0);
    }
}

/// Failure-counter keys were evicted from a partition's state (`reason`: `idle` or
/// `key_limit`); each one is also in that partition's ring log. Their next failure counts
/// from 1 again.
pub fn counter_keys_evicted(reason: &'static str, keys: u64) {
    tracing::debug!(reason, keys, "Counter keys evicted");
    counter!("audit_stream_counter_keys_evicted_total", "reason" => reason).increment(keys);
}

/// A record was read from an input topic. `kind` is the input kind or `unknown`.
pub fn record_consumed(kind: &'static str) {
    if let Some(series) = PER_RECORD.get() {
        series.consumed[kind_index(kind)].increment(1);
    }
}

/// The client handed out a record already processed; it is skipped, not processed twice.
pub fn record_redelivered(topic: &str, partition: i32, offset: i64) {
    tracing::debug!(
        topic,
        partition,
        offset,
        "Record handed out again; already processed, skipped"
    );
    counter!("audit_stream_records_redelivered_total").increment(1);
}

/// A record decoded into an input event.
pub fn record_decoded(kind: &'static str) {
    if let Some(series) = PER_RECORD.get() {
        series.decoded[kind_index(kind)].increment(1);
    }
}

/// A record was dead-lettered.
pub fn dead_lettered(dl: &DeadLetter) {
    tracing::debug!(
        topic = %dl.source.topic,
        partition = dl.source.partition,
        offset = dl.source.offset,
        error_class = dl.error_class.as_str(),
        error = %dl.error.escape_debug(),
        "Record dead-lettered"
    );
    counter!("audit_stream_dead_letters_total", "class" => dl.error_class.as_str()).increment(1);
}

/// A validation rule decided STOP, ABORT, BLOCK or WARN.
pub fn decision_emitted(d: &AuditDecision) {
    tracing::debug!(
        key = %d.key.escape_debug(),
        level = d.level.as_str(),
        decision = d.decision.as_str(),
        count = d.count,
        threshold = d.threshold,
        "Audit decision"
    );
    counter!(
        "audit_stream_decisions_total",
        "level" => d.level.as_str(),
        "decision" => d.decision.as_str()
    )
    .increment(1);
}

/// A contract audit produced a verdict.
pub fn verdict_emitted(v: &AuditVerdict) {
    tracing::debug!(
        audit_id = %v.audit_id,
        verdict = v.verdict.as_str(),
        failed = v.checks_failed,
        inconclusive = v.checks_inconclusive,
        "Audit verdict"
    );
    let Some(series) = PER_RECORD.get() else {
        return;
    };
    series.verdicts[result_index(v.verdict)].increment(1);
    for check in &v.checks {
        series.checks[index_of(&CHECKS, &check.check_id)][result_index(check.result)].increment(1);
    }
}

/// The broker acknowledged an output. `role` is `decisions`, `verdicts` or `dlq`.
pub fn output_acknowledged(role: &'static str) {
    if let Some(series) = PER_RECORD.get() {
        series.acknowledged[index_of(&ROLES, role)].increment(1);
    }
}

/// The broker did not take an output; it is sent again.
pub fn output_delivery_failed(role: &'static str, error: &dyn std::fmt::Display) {
    tracing::warn!(topic = role, error = %error, "Output delivery failed; sending again");
    counter!("audit_stream_output_delivery_errors_total", "topic" => role).increment(1);
}

/// A transaction with its outputs and the input offsets of `partitions` partitions
/// was committed (`kafka.exactly_once`).
pub fn transaction_committed(partitions: usize) {
    tracing::debug!(partitions, "Transaction committed");
    counter!("audit_stream_transactions_committed_total").increment(1);
}

/// A replayed record's outputs were not published again: a committed transaction
/// already holds them (`kafka.exactly_once`, after a restore).
pub fn outputs_already_published(outputs: u64) {
    counter!("audit_stream_outputs_already_published_total").increment(outputs);
}

/// The worker takes a record, `wait` after its timestamp: the producing client's,
/// the broker's and the consumer's share of the end-to-end latency, and any backlog.
pub fn record_taken(wait: Option<Duration>) {
    if let (Some(wait), Some(series)) = (wait, PER_RECORD.get()) {
        series.input_wait.record(wait.as_secs_f64());
    }
}

/// Every output of a record is acknowledged and every audit record durable.
pub fn record_done(latency: Option<Duration>) {
    if let (Some(latency), Some(series)) = (latency, PER_RECORD.get()) {
        series.end_to_end_latency.record(latency.as_secs_f64());
        // How far behind its input the pipeline is: the age of the record just done.
        series.lag_seconds.set(latency.as_secs_f64());
    }
}

/// A store write succeeded: `records` new audit records are durable.
pub fn store_written(records: usize, took: Duration) {
    counter!("audit_stream_store_records_written_total").increment(records as u64);
    histogram!("audit_stream_store_write_seconds").record(took.as_secs_f64());
}

/// Records of a store write were already stored with the same content (a replay or a
/// retry): not written again.
pub fn store_duplicates(records: usize) {
    if records == 0 {
        return;
    }
    tracing::debug!(records, "Audit records already stored; not written again");
    counter!("audit_stream_store_duplicates_total").increment(records as u64);
}

/// A record was not written because its id is stored with other content (usually a
/// re-published source event at a new offset); the stored record stays.
pub fn store_conflict(conflict: &Conflict) {
    let (stored, new) = (&conflict.stored_source, &conflict.new_source);
    tracing::warn!(
        id = %conflict.id,
        kind = conflict.kind,
        stored_topic = %stored.topic,
        stored_partition = stored.partition,
        stored_offset = stored.offset,
        stored_event_id = %stored.event_id,
        new_topic = %new.topic,
        new_partition = new.partition,
        new_offset = new.offset,
        new_event_id = %new.event_id,
        "Audit record id already stored with other content; the stored record stays"
    );
    counter!("audit_stream_store_conflicts_total", "kind" => conflict.kind).increment(1);
}

/// A store write failed with a retryable error and will be retried after `delay`.
pub fn store_write_failed(error: &StoreError, attempt: u32, delay: Duration) {
    tracing::warn!(
        error = %error,
        attempt,
        retry_in_ms = delay.as_millis() as u64,
        "Store write failed; retrying (consumption waits at the in-flight bound)"
    );
    counter!("audit_stream_store_write_errors_total", "kind" => "retryable").increment(1);
}

/// A store write failed permanently: the service stops.
pub fn store_failed_permanently(error: &StoreError) {
    tracing::error!(error = %error, "Store write failed permanently; stopping");
    counter!("audit_stream_store_write_errors_total", "kind" => "permanent").increment(1);
}

/// Records of an input partition not yet done (high watermark minus stored offset).
pub fn consumer_lag(kind: &'static str, partition: i32, records: i64) {
    gauge!(
        "audit_stream_consumer_lag_records",
        "kind" => kind,
        "partition" => partition.to_string()
    )
    .set(records as f64);
}

/// No input partition has records waiting: the pipeline is not behind.
pub fn consumer_caught_up() {
    gauge!("audit_stream_consumer_lag_seconds").set(0.0);
}

/// The in-flight bound started (`held`) or stopped holding consumption up.
pub fn backpressure(held: bool, in_flight: usize) {
    if held {
        tracing::info!(
            in_flight,
            "In-flight bound reached; consumption waits for the store and the broker"
        );
    } else {
        tracing::info!(in_flight, "Consumption continues");
    }
    gauge!("audit_stream_backpressure_active").set(if held { 1.0 } else { 0.0 });
}

/// Keys with a non-zero failure count held in operator state, over every partition this
/// instance holds; set at each checkpoint interval.
pub fn tracked_keys(count: usize) {
    gauge!("audit_stream_tracked_keys").set(count as f64);
}

/// Hash-chain heads held in operator state, over every partition this instance holds:
/// one per tenant and input partition linked to, bounded by `chain.*`; set at each
/// checkpoint interval.
pub fn chain_heads(count: usize) {
    gauge!("audit_stream_chain_heads").set(count as f64);
}

/// Chain heads saved by a durable checkpoint were let go from a partition's state
/// (`reason`: `idle` or `head_limit`); they are read back from the store when their
/// tenant returns.
pub fn chain_heads_evicted(topic: &str, partition: i32, evicted: crate::chain::HeadEvictions) {
    if evicted.total() == 0 {
        return;
    }
    tracing::debug!(
        topic,
        partition,
        idle = evicted.idle,
        head_limit = evicted.head_limit,
        "Chain heads evicted"
    );
    for (reason, heads) in [("idle", evicted.idle), ("head_limit", evicted.head_limit)] {
        counter!("audit_stream_chain_heads_evicted_total", "reason" => reason).increment(heads);
    }
}

/// An evicted chain head was read back from the store: its tenant returned.
pub fn chain_head_reloaded(head: &crate::chain::ChainHead) {
    tracing::debug!(chain = %head.key, records = head.records, "Chain head read back from the store");
    counter!("audit_stream_chain_heads_reloaded_total").increment(1);
}

/// Offsets of done records were stored for commit.
pub fn offsets_stored(records: u64) {
    if let Some(series) = PER_RECORD.get() {
        series.offsets_committed.increment(records);
    }
}

/// The recipe file was reloaded (`accepted`) or rejected (`rejected`).
pub fn recipes_reloaded(outcome: &'static str) {
    counter!("audit_stream_recipes_reloads_total", "outcome" => outcome).increment(1);
}

/// Something was lost. Must never happen: every record is audited or dead-lettered.
pub fn dropped(reason: &'static str, detail: &dyn std::fmt::Display) {
    tracing::error!(reason, detail = %detail, "Record dropped");
    counter!("audit_stream_dropped_total").increment(1);
}

/// Partitions whose checkpoint is being loaded before they are processed.
pub fn partitions_restoring(count: usize) {
    gauge!("audit_stream_partitions_restoring").set(count as f64);
}

/// A partition resumes from its checkpoint.
pub fn partition_restored(topic: &str, partition: i32, next_offset: i64) {
    tracing::info!(
        topic,
        partition,
        next_offset,
        "Partition restored from its checkpoint"
    );
}

/// Loading a checkpoint failed; the partition waits and the load is retried.
pub fn checkpoint_load_failed(topic: &str, partition: i32, error: &StoreError, delay: Duration) {
    tracing::warn!(
        topic,
        partition,
        error = %error,
        retry_in_ms = delay.as_millis() as u64,
        "Checkpoint load failed; the partition waits and the load is retried"
    );
    counter!("audit_stream_checkpoint_errors_total", "operation" => "load").increment(1);
}

/// A stored checkpoint's state cannot be read: the partition starts at its committed
/// offset with empty state, so its counts restart. An operator must look.
pub fn checkpoint_unreadable(topic: &str, partition: i32, error: &dyn std::fmt::Display) {
    tracing::error!(
        topic,
        partition,
        error = %error,
        "Checkpoint state unreadable; starting at the committed offset with empty state"
    );
    counter!("audit_stream_checkpoint_errors_total", "operation" => "load").increment(1);
}

/// A checkpoint is durable.
pub fn checkpoint_saved(topic: &str, partition: i32, next_offset: i64) {
    tracing::debug!(topic, partition, next_offset, "Checkpoint saved");
    counter!("audit_stream_checkpoints_saved_total").increment(1);
}

/// A checkpoint save failed; a later one is tried on the next interval.
pub fn checkpoint_save_failed(topic: &str, partition: i32, error: &StoreError) {
    tracing::warn!(
        topic,
        partition,
        error = %error,
        "Checkpoint save failed; retried on the next interval"
    );
    counter!("audit_stream_checkpoint_errors_total", "operation" => "save").increment(1);
}

/// Age of the oldest of the assigned partitions' last durable checkpoints.
pub fn checkpoint_age(age: Duration) {
    gauge!("audit_stream_checkpoint_age_seconds").set(age.as_secs_f64());
}

/// Share of dead-lettered records of one input kind over the last
/// `ingest.dead_letter_window_secs`.
pub fn dead_letter_ratio(kind: &'static str, ratio: f64) {
    if let Some(series) = PER_RECORD.get() {
        series.dead_letter_ratio[kind_index(kind)].set(ratio);
    }
}

/// The configured `ingest.dead_letter_alert_ratio`, which the alert compares the share to.
pub fn dead_letter_ratio_limit(limit: f64) {
    gauge!("audit_stream_dead_letter_ratio_limit").set(limit);
}

/// The dead-letter share of a kind is above the configured limit (logged when it crosses
/// it, then at most once per window while it stays above).
pub fn dead_letter_ratio_exceeded(
    kind: &'static str,
    records: u64,
    dead_letters: u64,
    limit: f64,
    window: Duration,
) {
    tracing::warn!(
        kind,
        records,
        dead_letters,
        limit,
        window_secs = window.as_secs(),
        "Dead-letter share above the configured limit; producers may be publishing bad records"
    );
}

/// The dead-letter share of a kind is back under the configured limit.
pub fn dead_letter_ratio_recovered(kind: &'static str, ratio: f64, limit: f64) {
    tracing::info!(
        kind,
        ratio,
        limit,
        "Dead-letter share back under the configured limit"
    );
}
