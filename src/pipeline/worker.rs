//! The live consumer loop: in-order processing per partition, outputs to Kafka, audit
//! records to the sink, offsets stored only at durable checkpoints.
//!
//! Concurrency: one task reads and processes records in partition order (processing is
//! microseconds of CPU per record, cheaper than any hand-off). What is slow (broker
//! acknowledgements, store writes) is awaited in a bounded set of per-record tasks,
//! which complete on their own: a revoke can wait for a partition's records to be done
//! while the consumer loop is inside the rebalance callback.
//!
//! Backpressure: at `ingest.max_in_flight_records` the loop stops pulling records and
//! only waits for completions. The client keeps heartbeating, its prefetch stays
//! bounded (`kafka.prefetch_max_kbytes`), and the member stays in its group for up to
//! `kafka.max_poll_interval_ms`. Client-side pause and resume is not used: a resumed
//! partition has been seen never to deliver again on some Kafka-protocol brokers
//! (Tansu 0.6), while not pulling behaves the same on every broker.
//!
//! State: every `checkpoint.interval_ms` the loop snapshots each partition that moved,
//! between two records, and saves a snapshot in the background once the watermark covers
//! it ([`super::checkpoints`]); partitions are restored on assignment and saved on revoke
//! ([`super::restore`]) and, at shutdown, after the drain and before the final commit.
//!
//! Offsets: a partition's offset is stored for commit only when a checkpoint of it is
//! durable, at the checkpoint's `next_offset`. The committed offset is thus never ahead
//! of the latest checkpoint (a new owner resumes there without seeking backwards) and,
//! as a checkpoint covers only done records (see [`super::offsets`]), never passes a
//! record whose audit records are not durable.
//!
//! With `kafka.exactly_once`, outputs go into a transaction, committed every
//! `checkpoint.interval_ms` with every partition's position as its input offsets, and
//! snapshots are taken only right after such a commit, at the committed positions. A
//! checkpoint then never covers an output that is not committed, while the committed
//! offset may be ahead of the checkpoint (the store saves later): a restore replays from
//! the checkpoint and publishes nothing below the committed offset again.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use super::checkpoints::{Schedule, Snapshot};
use super::dead_letter_rate::DeadLetterRate;
use super::offsets::{Progress, TopicPartition};
use super::restore::{Restorer, SaveOutcome, Saver};
use super::sink::{Sink, SinkClosed};
use super::{Operator, Output, PartitionState};
use crate::chain::HeadLimits;
use crate::config::Config;
use crate::kafka::consumer::{self, Assignment, InputConsumer, DRAIN_TIMEOUT};
use crate::kafka::producer::OutputProducer;
use crate::kafka::KafkaError;
use crate::metrics;
use crate::record::Record;
use crate::store::StoreError;
use crate::store::{AuditRecord, AuditStore, RetryPolicy};
use crate::validation::Recipes;

/// Why the live pipeline stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("{0}")]
    Sink(#[from] SinkClosed),
    #[error("store: {0}")]
    Store(StoreError),
    #[error("record task: {0}")]
    Task(String),
}

/// Counts of one run, for the demo summary and tests. Every map but
/// `decisions_by_key` has a few fixed keys; that one is kept only when
/// [`Shared::decisions_by_key`] asks for it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunStats {
    pub records_in: u64,
    pub records_done: u64,
    pub decoded_by_kind: BTreeMap<String, u64>,
    pub dead_letters_by_class: BTreeMap<String, u64>,
    pub decisions_by_level: BTreeMap<String, u64>,
    pub decisions_by_key: BTreeMap<String, u64>,
    pub verdicts_by_result: BTreeMap<String, u64>,
    pub coordination_records: u64,
    pub outputs_published: u64,
    pub outputs_acknowledged: u64,
    pub audit_records_durable: u64,
}

impl RunStats {
    /// Counts a record of `kind` and its outputs; each decision under its counter key
    /// only when `per_key`. Returns whether the record was dead-lettered.
    fn count(&mut self, kind: &str, outputs: &[Output], per_key: bool) -> bool {
        self.records_in += 1;
        let mut dead = false;
        for output in outputs {
            match output {
                Output::DeadLetter(dl) => {
                    dead = true;
                    *self
                        .dead_letters_by_class
                        .entry(dl.error_class.as_str().to_string())
                        .or_default() += 1;
                }
                Output::Audit(AuditRecord::Decision(d)) => {
                    *self
                        .decisions_by_level
                        .entry(format!("{}/{}", d.level.as_str(), d.decision.as_str()))
                        .or_default() += 1;
                    if per_key {
                        *self.decisions_by_key.entry(d.key.clone()).or_default() += 1;
                    }
                }
                Output::Audit(AuditRecord::Verdict { verdict, .. }) => {
                    *self
                        .verdicts_by_result
                        .entry(verdict.verdict.as_str().to_string())
                        .or_default() += 1;
                }
                Output::Audit(AuditRecord::Coordination(_)) => self.coordination_records += 1,
            }
            if !matches!(output, Output::Audit(AuditRecord::Coordination(_))) {
                self.outputs_published += 1;
            }
        }
        if !dead {
            *self.decoded_by_kind.entry(kind.to_string()).or_default() += 1;
        }
        dead
    }
}

/// State the HTTP API reads while the pipeline runs.
#[derive(Default)]
pub struct Shared {
    /// Operator state of every assigned partition.
    pub partitions: RwLock<HashMap<TopicPartition, Arc<Mutex<PartitionState>>>>,
    /// True once the consumer has its first assignment and restored its state.
    pub ready: AtomicBool,
    /// Partitions whose checkpoint is being loaded; not ready while any is.
    pub restoring: AtomicUsize,
    pub stats: Mutex<RunStats>,
    /// Whether [`RunStats::decisions_by_key`] is kept: for the demo's summary. A service
    /// never keeps it: one entry per counter key ever decided on would grow without the
    /// bound and eviction the counters have.
    pub decisions_by_key: bool,
}

impl Shared {
    fn stats(&self) -> std::sync::MutexGuard<'_, RunStats> {
        self.stats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A copy of the counts so far.
    pub fn snapshot(&self) -> RunStats {
        self.stats().clone()
    }

    /// Failure-counter keys tracked and hash-chain heads held, each summed over every
    /// assigned partition.
    pub fn tracked_keys_and_chain_heads(&self) -> (usize, usize) {
        let partitions: Vec<Arc<Mutex<PartitionState>>> = self
            .partitions
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .cloned()
            .collect();
        partitions.iter().fold((0, 0), |(keys, heads), state| {
            let state = lock(state);
            (
                keys + state.validation.counter.tracked_keys(),
                heads + state.chains.len(),
            )
        })
    }
}

/// A record whose every output is acknowledged and every audit record durable.
struct Done {
    tp: TopicPartition,
    offset: i64,
    timestamp: Option<DateTime<Utc>>,
    acknowledged: u64,
    durable: u64,
}

type InFlight = FuturesUnordered<BoxFuture<'static, Result<Done, PipelineError>>>;

/// What happens when a record is done, wherever that is (its task, or the loop for a
/// record without outputs): the watermark moves, and a snapshot it covers is saved.
#[derive(Clone)]
struct Completion {
    progress: Arc<Progress>,
    schedule: Arc<Mutex<Schedule>>,
    saver: Saver,
}

impl Completion {
    fn complete(&self, tp: &TopicPartition, offset: i64) {
        self.progress.complete(tp, offset, |watermark| {
            // The offset itself is stored once a checkpoint covering it is durable.
            let mut schedule = lock(&self.schedule);
            schedule.advance(tp, watermark);
            if let Some(snapshot) = schedule.take_save(tp) {
                self.saver.spawn(tp.clone(), snapshot);
            }
        });
    }
}

/// The live pipeline of one service instance.
pub struct Worker {
    config: Config,
    operator: Arc<Operator>,
    producer: OutputProducer,
    sink: Sink,
    recipes: watch::Receiver<Arc<Recipes>>,
    shared: Arc<Shared>,
    /// Read, done and published positions. The client may hand out a record again
    /// (after a pause and resume, or a fetch that starts before the requested offset),
    /// and a restored partition may start at a committed offset below its checkpoint;
    /// processing such a record twice would count its failures twice, so it is skipped.
    progress: Arc<Progress>,
    /// Whether the in-flight bound holds records up; for the log only.
    held: bool,
    store: Arc<dyn AuditStore>,
    /// Shared with the rebalance callbacks, which run while the loop waits for a record.
    schedule: Arc<Mutex<Schedule>>,
    /// Dead-letter share per input kind against `ingest.dead_letter_alert_ratio`.
    dead_letter_rate: DeadLetterRate,
    /// Chain heads held per partition (`chain.*`).
    head_limits: HeadLimits,
    /// Backoff of store reads on the record path (chain heads read back).
    retry: RetryPolicy,
}

impl Worker {
    pub fn new(
        config: Config,
        operator: Arc<Operator>,
        sink: Sink,
        recipes: watch::Receiver<Arc<Recipes>>,
        shared: Arc<Shared>,
        store: Arc<dyn AuditStore>,
    ) -> Result<Worker, KafkaError> {
        let producer = if config.kafka.exactly_once {
            let id = config.kafka.transactional_id();
            tokio::task::block_in_place(|| OutputProducer::transactional(&config.kafka, &id))?
        } else {
            OutputProducer::new(&config.kafka)?
        };
        Ok(Worker {
            producer,
            head_limits: config.chain.limits(),
            retry: config.store.retry_policy(),
            dead_letter_rate: DeadLetterRate::new(
                config.ingest.dead_letter_alert_ratio,
                Duration::from_secs(config.ingest.dead_letter_window_secs),
            ),
            config,
            operator,
            sink,
            recipes,
            shared,
            progress: Arc::new(Progress::default()),
            held: false,
            store,
            schedule: Arc::new(Mutex::new(Schedule::new())),
        })
    }

    /// Consumes until `shutdown` turns true, then drains in-flight records, commits and
    /// returns the run's counts.
    pub async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<RunStats, PipelineError> {
        let topics = &self.config.topics;
        let inputs = [
            (topics.validation.as_str(), "validation"),
            (topics.execution.as_str(), "execution"),
            (topics.coordination.as_str(), "coordination"),
        ];
        let (saver, mut outcomes) =
            Saver::new(self.store.clone(), self.config.kafka.group_id.clone());
        let transactional = self.producer.is_transactional();
        let restorer = Arc::new(Restorer::new(
            saver.clone(),
            self.shared.clone(),
            self.schedule.clone(),
            self.progress.clone(),
            transactional.then(|| self.producer.clone()),
            self.retry.clone(),
        ));
        let (consumer, mut assignments) =
            consumer::subscribe(&self.config.kafka, &inputs, restorer.clone())?;
        let completion = Completion {
            progress: self.progress.clone(),
            schedule: self.schedule.clone(),
            saver: saver.clone(),
        };
        let mut in_flight = InFlight::new();
        let mut tick =
            tokio::time::interval(Duration::from_millis(self.config.checkpoint.interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            if *shutdown.borrow() {
                break Ok(());
            }
            tokio::select! {
                biased;
                _ = shutdown.changed() => {}
                Some(done) = in_flight.next() => match done {
                    Ok(done) => self.finish(done),
                    Err(error) => break Err(error),
                },
                Some(outcome) = outcomes.recv() => self.saved(&consumer, outcome),
                // At once, not at the next record or tick: readiness follows the
                // assignment even while the partitions are idle.
                Some(change) = assignments.recv() => self.apply_assignment(change, &restorer, &consumer),
                _ = tick.tick() => {
                    self.apply_assignments(&mut assignments, &restorer, &consumer);
                    if transactional {
                        // Snapshots follow the commit, at the positions it committed.
                        if let Err(error) = self.commit_transaction(&consumer) {
                            break Err(error);
                        }
                    }
                    self.checkpoint(&saver);
                    self.dead_letter_rate.refresh(std::time::Instant::now());
                    let (keys, heads) = self.shared.tracked_keys_and_chain_heads();
                    metrics::tracked_keys(keys);
                    metrics::chain_heads(heads);
                }
                message = consumer.recv(), if self.progress.in_flight() < self.config.ingest.max_in_flight_records => {
                    self.apply_assignments(&mut assignments, &restorer, &consumer);
                    if let Some(error) = restorer.fatal() {
                        break Err(error);
                    }
                    match message {
                        Ok(record) => {
                            if let Err(error) = self.handle(&completion, record, &mut in_flight).await {
                                break Err(error);
                            }
                        }
                        Err(error) => tracing::warn!(%error, "Consumer error; polling on"),
                    }
                }
            }
        };
        // Drain: wait for what is in flight, so its offsets can be committed.
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while let Some(done) = in_flight.next().await {
                match done {
                    Ok(done) => self.finish(done),
                    Err(error) => return Err(error),
                }
            }
            Ok(())
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                in_flight = self.progress.in_flight(),
                "Shutdown drain timed out; those records are replayed by the next owner"
            );
        }
        self.apply_assignments(&mut assignments, &restorer, &consumer);
        // With transactions, what is in the open transaction is committed only after a
        // clean run and drain; otherwise it is aborted and the restart replays it.
        let committed = if !transactional {
            true
        } else if result.is_ok() && matches!(drained, Ok(Ok(()))) {
            match self.commit_transaction(&consumer) {
                Ok(()) => true,
                Err(error) => {
                    tracing::error!(%error, "Final transaction commit failed; the restart replays from the last commit");
                    false
                }
            }
        } else {
            self.producer.abort_transaction();
            false
        };
        if transactional {
            restorer.close_transactions();
        }
        // Saves that finished meanwhile have their offsets stored before the final commit.
        while let Ok(outcome) = outcomes.try_recv() {
            self.saved(&consumer, outcome);
        }
        self.save_final_checkpoints(&consumer, &saver, committed)
            .await;
        if !transactional {
            if let Err(error) = consumer.commit_stored() {
                // Safe to leave: the checkpoints are saved, and the next owner resumes at
                // the last commit, skipping what they cover.
                tracing::warn!(%error, "Final offset commit failed; the next owner skips what the saved checkpoints cover");
            }
            self.producer.flush(Duration::from_secs(5))?;
        }
        consumer.unsubscribe();
        result?;
        if let Ok(Err(error)) = drained {
            return Err(error);
        }
        Ok(self.shared.snapshot())
    }

    fn apply_assignments(
        &mut self,
        assignments: &mut mpsc::UnboundedReceiver<Assignment>,
        restorer: &Restorer,
        consumer: &InputConsumer,
    ) {
        while let Ok(change) = assignments.try_recv() {
            self.apply_assignment(change, restorer, consumer);
        }
    }

    /// Applies one assignment change: restored or fresh state for assigned partitions,
    /// none for revoked ones.
    ///
    /// A restored partition's checkpoint offset is stored for the next commit at once.
    /// The committed offset may be below it (a commit that failed after the save, on a
    /// crash or when the group lost the partition), and the records in between are
    /// skipped, not processed: without new records after them, no later checkpoint
    /// would ever move the committed offset, and the group's lag would stay above zero.
    fn apply_assignment(&self, change: Assignment, restorer: &Restorer, consumer: &InputConsumer) {
        let mut restored_at = Vec::new();
        let mut partitions = self
            .shared
            .partitions
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match change {
            Assignment::Assigned(tps) => {
                let recipes = self.recipes.borrow().clone();
                for tp in tps {
                    // Restored state replaces whatever the partition had: the
                    // checkpoint and its offset are the one truth on assignment.
                    match restorer.take(&tp) {
                        Some(restored) => {
                            self.progress.assigned(
                                &tp,
                                Some(restored.next_offset),
                                restored.published_through,
                            );
                            restored_at.push((tp.clone(), restored.next_offset));
                            partitions.insert(tp, Arc::new(Mutex::new(restored.state)));
                        }
                        None => {
                            self.progress.assigned(&tp, None, None);
                            partitions.entry(tp).or_insert_with(|| {
                                Arc::new(Mutex::new(PartitionState::new(&recipes)))
                            });
                        }
                    }
                }
                self.shared.ready.store(true, Ordering::Release);
            }
            Assignment::Revoked(tps) => {
                // Their progress was forgotten in the revoke callback.
                for tp in tps {
                    partitions.remove(&tp);
                }
            }
        }
        drop(partitions);
        for (tp, next_offset) in restored_at {
            self.store_checkpointed(consumer, &tp, next_offset);
        }
    }

    /// Snapshots every partition that moved since its last snapshot, and saves those
    /// whose records are all done. Runs between two records, so each partition's state
    /// covers exactly the records below its position.
    fn checkpoint(&mut self, saver: &Saver) {
        // Positions before the schedule: a completing record takes the progress lock,
        // then the schedule's.
        let positioned = self.positioned();
        let mut schedule = lock(&self.schedule);
        for (tp, state, position) in positioned {
            if schedule.wants_snapshot(&tp, position) {
                schedule.hold(&tp, Snapshot::of(&state, position));
            }
        }
        // One store call for all partitions due: one commit, not one per partition,
        // on the connection the sink writes audit records on.
        let due: Vec<(TopicPartition, Snapshot)> = schedule
            .due()
            .into_iter()
            .filter_map(|tp| schedule.take_save(&tp).map(|snapshot| (tp, snapshot)))
            .collect();
        saver.spawn_all(due);
        if let Some(oldest) = schedule.oldest_durable() {
            metrics::checkpoint_age((Utc::now() - oldest).to_std().unwrap_or_default());
        }
    }

    /// Every assigned partition that has a position, with its state and position.
    fn positioned(&self) -> Vec<(TopicPartition, Arc<Mutex<PartitionState>>, i64)> {
        self.shared
            .partitions
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .filter_map(|(tp, state)| {
                let position = self.progress.position(tp)?;
                Some((tp.clone(), state.clone(), position))
            })
            .collect()
    }

    /// Commits the open transaction with every partition's position (`exactly_once`).
    fn commit_transaction(&self, consumer: &InputConsumer) -> Result<(), PipelineError> {
        let group = consumer.group_metadata();
        let offsets = self.progress.transaction_offsets();
        tokio::task::block_in_place(|| self.producer.commit_transaction(&offsets, group.as_ref()))?;
        Ok(())
    }

    /// A checkpoint of `tp` at `next_offset` is durable: the next commit moves the
    /// group's position there. Not with transactions, whose commits carry the offsets:
    /// a checkpoint's offset committed outside them would move the position back.
    fn store_checkpointed(&self, consumer: &InputConsumer, tp: &TopicPartition, next_offset: i64) {
        if self.producer.is_transactional() {
            return;
        }
        // librdkafka commits the stored offset + 1: the next record to read.
        match consumer.store_checkpointed(&tp.0, tp.1, next_offset - 1) {
            Ok(()) => metrics::offsets_stored(1),
            Err(error) => {
                tracing::debug!(%error, topic = %tp.0, partition = tp.1, "Offset not stored; partition no longer assigned")
            }
        }
    }

    fn saved(&mut self, consumer: &InputConsumer, outcome: SaveOutcome) {
        let mut schedule = lock(&self.schedule);
        let (topic, partition) = (&outcome.tp.0, outcome.tp.1);
        match outcome.result {
            Ok(()) => {
                metrics::checkpoint_saved(topic, partition, outcome.snapshot.next_offset);
                schedule.saved(&outcome.tp, outcome.snapshot.next_offset, outcome.saved_at);
                self.store_checkpointed(consumer, &outcome.tp, outcome.snapshot.next_offset);
                if self.evict_chain_heads(&outcome.tp, &outcome.snapshot) {
                    schedule.changed(&outcome.tp);
                }
            }
            Err(error) => {
                metrics::checkpoint_save_failed(topic, partition, &error);
                schedule.failed(&outcome.tp, outcome.snapshot);
            }
        }
    }

    /// A checkpoint of `tp` holding `snapshot`'s chain heads is durable: the heads not
    /// linked to since may go, within the partition's bounds (`chain.*`). Whether any
    /// went.
    fn evict_chain_heads(&self, tp: &TopicPartition, snapshot: &Snapshot) -> bool {
        let Some(state) = self
            .shared
            .partitions
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(tp)
            .cloned()
        else {
            return false;
        };
        let mut state = lock(&state);
        state.chains.saved(&snapshot.heads);
        let evicted = state.chains.evict(&self.head_limits);
        metrics::chain_heads_evicted(&tp.0, tp.1, evicted);
        evicted.total() > 0
    }

    /// At shutdown, after the drain: the state at each partition's position (when
    /// `current`: with transactions, only when the final commit covered it), saved if
    /// every record below it is done (else the latest snapshot that is covered), and its
    /// offset stored for the final commit.
    async fn save_final_checkpoints(
        &mut self,
        consumer: &InputConsumer,
        saver: &Saver,
        current: bool,
    ) {
        let mut finals = Vec::new();
        {
            let positioned = self.positioned();
            let mut schedule = lock(&self.schedule);
            for (tp, state, position) in positioned {
                if current && schedule.wants_snapshot(&tp, position) {
                    schedule.hold(&tp, Snapshot::of(&state, position));
                }
                if let Some(snapshot) = schedule.revoke(&tp) {
                    finals.push((tp, snapshot));
                }
            }
        }
        for (tp, snapshot) in finals {
            let saved =
                tokio::time::timeout(Duration::from_secs(10), saver.save(&tp, &snapshot)).await;
            match saved {
                Ok(Ok(())) => self.store_checkpointed(consumer, &tp, snapshot.next_offset),
                Ok(Err(error)) => metrics::checkpoint_save_failed(&tp.0, tp.1, &error),
                Err(_) => {
                    tracing::warn!(topic = %tp.0, partition = tp.1, "Final checkpoint save timed out; the next owner replays from the last one")
                }
            }
        }
    }

    async fn handle(
        &mut self,
        completion: &Completion,
        record: Record,
        in_flight: &mut InFlight,
    ) -> Result<(), PipelineError> {
        let tp: TopicPartition = (record.topic.clone(), record.partition);
        let Some(publish) = self.progress.start(&tp, record.offset) else {
            metrics::record_redelivered(&tp.0, tp.1, record.offset);
            return Ok(());
        };
        metrics::record_taken(age(record.timestamp));
        let recipes = self.recipes.borrow_and_update().clone();
        let state = {
            let mut partitions = self
                .shared
                .partitions
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            partitions
                .entry(tp.clone())
                .or_insert_with(|| Arc::new(Mutex::new(PartitionState::new(&recipes))))
                .clone()
        };
        let outputs = self
            .operator
            .process(&record, &recipes, &mut lock(&state), Utc::now());
        self.count(&record, &outputs);
        self.reload_chain_heads(&tp, &state, &outputs).await?;
        let (publications, audit_records) = lock(&state).link(outputs, self.operator.topics());

        let durable = audit_records.len() as u64;
        let stored = if audit_records.is_empty() {
            None
        } else {
            Some(self.sink.submit(audit_records).await?)
        };
        let mut sends = Vec::new();
        let mut already_published = 0;
        for (publication, role) in publications {
            if !publish {
                already_published += 1;
                continue;
            }
            let delivery = self.producer.enqueue_publication(&publication).await?;
            sends.push((publication, role, delivery));
        }
        if already_published > 0 {
            metrics::outputs_already_published(already_published);
        }
        let done = Done {
            tp,
            offset: record.offset,
            timestamp: record.timestamp,
            acknowledged: sends.len() as u64,
            durable,
        };
        if stored.is_none() && sends.is_empty() {
            completion.complete(&done.tp, done.offset);
            self.finish(done);
        } else {
            let producer = self.producer.clone();
            let completion = completion.clone();
            let task = tokio::spawn(async move {
                if let Some(stored) = stored {
                    stored.await.map_err(|_| SinkClosed)?;
                }
                for (publication, role, delivery) in sends {
                    producer.deliver(&publication, role, delivery).await?;
                }
                completion.complete(&done.tp, done.offset);
                Ok(done)
            });
            in_flight.push(
                task.map(|joined| {
                    joined.unwrap_or_else(|error| Err(PipelineError::Task(error.to_string())))
                })
                .boxed(),
            );
        }
        self.note_backpressure();
        Ok(())
    }

    /// Reads back from the store the chain heads `outputs` link to that the partition's
    /// state evicted (a tenant returning after its head was let go), so that its chain
    /// goes on from its last record instead of starting again. Only once the partition
    /// has evicted a head; a tenant the store has no head of starts its chain. Retryable
    /// store errors are waited out with the store's backoff, as the sink's are.
    async fn reload_chain_heads(
        &self,
        tp: &TopicPartition,
        state: &Mutex<PartitionState>,
        outputs: &[Output],
    ) -> Result<(), PipelineError> {
        let mut missing: Vec<String> = {
            let state = lock(state);
            if !state.chains.may_hold_elsewhere() {
                return Ok(());
            }
            outputs
                .iter()
                .filter_map(|output| match output {
                    Output::Audit(record) if !state.chains.holds(record.tenant_id()) => {
                        Some(record.tenant_id().to_owned())
                    }
                    _ => None,
                })
                .collect()
        };
        missing.dedup();
        for tenant in missing {
            let heads = self
                .retry
                .retry(
                    || self.store.chain_heads(&tenant),
                    |error, _, delay| {
                        tracing::warn!(%error, tenant, ?delay, "Chain head not read back from the store; trying again")
                    },
                )
                .await
                .map_err(|error| {
                    metrics::store_failed_permanently(&error);
                    PipelineError::Store(error)
                })?;
            let head = heads
                .into_iter()
                .find(|head| head.key.topic == tp.0 && head.key.partition == tp.1);
            if let Some(head) = head {
                metrics::chain_head_reloaded(&head);
                lock(state).chains.reload(head);
            }
        }
        Ok(())
    }

    fn finish(&mut self, done: Done) {
        metrics::record_done(age(done.timestamp));
        {
            let mut stats = self.shared.stats();
            stats.records_done += 1;
            stats.outputs_acknowledged += done.acknowledged;
            stats.audit_records_durable += done.durable;
        }
        self.note_backpressure();
    }

    /// Logs when the in-flight bound starts and stops holding consumption up.
    fn note_backpressure(&mut self) {
        let in_flight = self.progress.in_flight();
        let held = in_flight >= self.config.ingest.max_in_flight_records;
        if held != self.held {
            self.held = held;
            metrics::backpressure(held, in_flight);
        }
    }

    fn count(&mut self, record: &Record, outputs: &[Output]) {
        let kind = self.operator.kind_label(&record.topic);
        metrics::record_consumed(kind);
        for output in outputs {
            match output {
                Output::DeadLetter(dl) => metrics::dead_lettered(dl),
                Output::Audit(AuditRecord::Decision(d)) => metrics::decision_emitted(d),
                Output::Audit(AuditRecord::Verdict { verdict, .. }) => {
                    metrics::verdict_emitted(verdict)
                }
                Output::Audit(AuditRecord::Coordination(_)) => {}
            }
        }
        let per_key = self.shared.decisions_by_key;
        let dead = self.shared.stats().count(kind, outputs, per_key);
        self.dead_letter_rate
            .record(kind, dead, std::time::Instant::now());
        if !dead {
            metrics::record_decoded(kind);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How long ago `timestamp` was; none for a record without one or from the future.
fn age(timestamp: Option<DateTime<Utc>>) -> Option<Duration> {
    timestamp.and_then(|ts| (Utc::now() - ts).to_std().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::dataset::{Generator, Mix, RECIPES};
    use crate::validation::Recipes;

    /// A service's counts keep no entry per counter key, whatever keys come; the demo's
    /// keep one per key, and both agree on everything else.
    #[test]
    fn run_stats_keep_decisions_by_key_only_when_asked() {
        let config = Config::default();
        let operator = Operator::new(&config).expect("schemas compile");
        let recipes = Recipes::parse(RECIPES).expect("recipes");
        let mut state = PartitionState::new(&recipes);
        let start = DateTime::from_timestamp(1_790_000_000, 0).expect("time");
        let (mut service, mut demo) = (RunStats::default(), RunStats::default());
        let mut dead_letters = 0;
        for record in Generator::new(5, &config.topics, start, Mix::All).take(2_000) {
            let outputs = operator.process(&record, &recipes, &mut state, start);
            let kind = operator.kind_label(&record.topic);
            let dead = service.count(kind, &outputs, false);
            assert_eq!(demo.count(kind, &outputs, true), dead);
            dead_letters += u64::from(dead);
        }
        let decisions: u64 = demo.decisions_by_level.values().sum();
        assert!(demo.decisions_by_key.len() > 10, "{demo:?}");
        assert_eq!(demo.decisions_by_key.values().sum::<u64>(), decisions);
        assert!(service.decisions_by_key.is_empty());
        assert_eq!(
            RunStats {
                decisions_by_key: BTreeMap::new(),
                ..demo
            },
            service
        );
        assert_eq!(service.records_in, 2_000);
        let decoded: u64 = service.decoded_by_kind.values().sum();
        assert!(dead_letters > 0);
        assert_eq!(decoded + dead_letters, 2_000);
    }

    /// The tracked-keys and chain-heads gauges are sums over the partitions held, not
    /// the counts of the partition that processed the latest record.
    #[test]
    fn tracked_keys_and_chain_heads_are_summed_over_every_partition() {
        let config = Config::default();
        let operator = Operator::new(&config).expect("schemas compile");
        let recipes = Recipes::parse(RECIPES).expect("recipes");
        let start = DateTime::from_timestamp(1_790_000_000, 0).expect("time");
        let shared = Shared::default();
        let mut expected = (0, 0);
        for (partition, records) in [(0, 300), (1, 1_500)] {
            let mut state = PartitionState::new(&recipes);
            let mut generated = Generator::new(partition as u64, &config.topics, start, Mix::All);
            for record in generated.take(records) {
                let outputs = operator.process(&record, &recipes, &mut state, start);
                state.link(outputs, operator.topics());
            }
            let keys = state.validation.counter.tracked_keys();
            let heads = state.chains.len();
            assert!(
                keys > 0 && heads > 0,
                "partition {partition}: {keys}, {heads}"
            );
            expected = (expected.0 + keys, expected.1 + heads);
            let tp = (config.topics.validation.clone(), partition);
            let state = Arc::new(Mutex::new(state));
            shared.partitions.write().expect("lock").insert(tp, state);
        }
        assert_eq!(shared.tracked_keys_and_chain_heads(), expected);
    }
}
