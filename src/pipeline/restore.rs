//! Restore on assignment, save and commit on revoke: the checkpoint side of the
//! rebalance lifecycle (SPEC §6).
//!
//! On assignment each partition's checkpoint is loaded before the partition is
//! assigned, and the partition resumes at the checkpoint's `next_offset` with its
//! state. Offsets are committed only at checkpoint offsets, so the committed offset is
//! the checkpoint's, or below it after a crash between a save and the next commit (the
//! consumer loop then skips the records the checkpoint covers). Without a checkpoint
//! the partition starts at the committed offset with empty state. The load runs inside
//! the client's rebalance callback, which is what guarantees that no record of the
//! partition is processed before its state is there; on the multi-thread runtime it
//! blocks only its own worker thread (`block_in_place`), so `/readyz` and the sink go
//! on meanwhile.
//!
//! On revoke the partition's in-flight records are drained, its state is snapshotted at
//! its position and saved, and that offset is committed before the partition moves; all
//! of it within [`REVOKE_SAVE_TIMEOUT`], so a slow store cannot hold the group's
//! rebalance up (past it, the latest snapshot whose records are all done is what is
//! saved, and the next owner replays the rest). With transactions the open transaction
//! is committed first, with every assigned partition's position: it holds the outputs
//! of all of them.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::mpsc;

use super::checkpoints::{Schedule, Snapshot};
use super::offsets::{Progress, TopicPartition};
use super::worker::{PipelineError, Shared};
use super::PartitionState;
use crate::chain::ChainHead;
use crate::kafka::consumer::RebalanceHook;
use crate::kafka::producer::OutputProducer;
use crate::kafka::ConsumerGroupMetadata;
use crate::metrics;
use crate::store::{AuditStore, Checkpoint, RetryPolicy, StoreError};

/// A partition's state as loaded from its checkpoint.
pub struct Restored {
    pub next_offset: i64,
    pub state: PartitionState,
    /// With transactions: the offset a committed transaction holds the partition's
    /// outputs up to, when it is ahead of the checkpoint. The records between replay
    /// to rebuild the state without publishing their outputs again.
    pub published_through: Option<i64>,
}

/// The outcome of one checkpoint save, reported back to the consumer loop.
pub struct SaveOutcome {
    pub tp: TopicPartition,
    pub snapshot: Snapshot,
    pub saved_at: DateTime<Utc>,
    pub result: Result<(), StoreError>,
}

/// Writes checkpoints in spawned tasks, so that the consumer loop never waits on one.
#[derive(Clone)]
pub struct Saver {
    store: Arc<dyn AuditStore>,
    group: String,
    handle: Handle,
    outcomes: mpsc::UnboundedSender<SaveOutcome>,
}

impl Saver {
    pub fn new(
        store: Arc<dyn AuditStore>,
        group: String,
    ) -> (Saver, mpsc::UnboundedReceiver<SaveOutcome>) {
        let (outcomes, rx) = mpsc::unbounded_channel();
        let saver = Saver {
            store,
            group,
            handle: Handle::current(),
            outcomes,
        };
        (saver, rx)
    }

    fn checkpoint(&self, tp: &TopicPartition, snapshot: &Snapshot) -> Checkpoint {
        Checkpoint {
            group: self.group.clone(),
            topic: tp.0.clone(),
            partition: tp.1,
            next_offset: snapshot.next_offset,
            state: snapshot.state.clone(),
            saved_at: Utc::now(),
        }
    }

    /// Saves `snapshot` in the background; the outcome arrives on the outcome channel.
    pub fn spawn(&self, tp: TopicPartition, snapshot: Snapshot) {
        self.spawn_all(vec![(tp, snapshot)]);
    }

    /// Saves the snapshots of several partitions in the background with one store call
    /// (one commit, where the store can); an outcome per partition arrives on the
    /// outcome channel.
    pub fn spawn_all(&self, saves: Vec<(TopicPartition, Snapshot)>) {
        if saves.is_empty() {
            return;
        }
        let checkpoints: Vec<(Checkpoint, Vec<ChainHead>)> = saves
            .iter()
            .map(|(tp, snapshot)| (self.checkpoint(tp, snapshot), snapshot.heads.clone()))
            .collect();
        let store = self.store.clone();
        let outcomes = self.outcomes.clone();
        self.handle.spawn(async move {
            let result = store.save_checkpoints(&checkpoints).await;
            for ((tp, snapshot), (checkpoint, _)) in saves.into_iter().zip(&checkpoints) {
                let _ = outcomes.send(SaveOutcome {
                    tp,
                    snapshot,
                    saved_at: checkpoint.saved_at,
                    result: result.clone(),
                });
            }
        });
    }

    /// Saves `snapshot` and waits for the store (shutdown: after the drain, before the
    /// final commit).
    pub async fn save(&self, tp: &TopicPartition, snapshot: &Snapshot) -> Result<(), StoreError> {
        let checkpoint = self.checkpoint(tp, snapshot);
        self.store
            .save_checkpoints(&[(checkpoint, snapshot.heads.clone())])
            .await?;
        metrics::checkpoint_saved(&tp.0, tp.1, snapshot.next_offset);
        Ok(())
    }
}

/// The pipeline's [`RebalanceHook`]: restores checkpoints on assign, saves on revoke.
pub struct Restorer {
    saver: Saver,
    shared: Arc<Shared>,
    schedule: Arc<Mutex<Schedule>>,
    progress: Arc<Progress>,
    /// The transactional output producer (`kafka.exactly_once`).
    transactions: Option<OutputProducer>,
    /// Set at shutdown once the last transaction is committed or aborted: the revoke of
    /// leaving the group then commits nothing more.
    transactions_closed: AtomicBool,
    retry: RetryPolicy,
    /// Loaded in the rebalance callback, taken by the consumer loop when it applies the
    /// assignment (before it processes any record of the partition).
    restored: Mutex<HashMap<TopicPartition, Restored>>,
    /// A permanent store error met while restoring, or a transaction that failed to
    /// commit on revoke: the consumer loop stops the service with it before processing
    /// another record.
    fatal: Mutex<Option<PipelineError>>,
}

impl Restorer {
    pub fn new(
        saver: Saver,
        shared: Arc<Shared>,
        schedule: Arc<Mutex<Schedule>>,
        progress: Arc<Progress>,
        transactions: Option<OutputProducer>,
        retry: RetryPolicy,
    ) -> Restorer {
        Restorer {
            saver,
            shared,
            schedule,
            progress,
            transactions,
            transactions_closed: AtomicBool::new(false),
            retry,
            restored: Mutex::new(HashMap::new()),
            fatal: Mutex::new(None),
        }
    }

    /// The service is stopping and has committed or aborted its last transaction.
    pub fn close_transactions(&self) {
        self.transactions_closed.store(true, Ordering::Release);
    }

    /// The error the service must stop with, if any (taken: the loop stops on it).
    pub fn fatal(&self) -> Option<PipelineError> {
        lock(&self.fatal).take()
    }

    /// The state restored for `tp` by the last assignment, if it had a checkpoint.
    pub fn take(&self, tp: &TopicPartition) -> Option<Restored> {
        lock(&self.restored).remove(tp)
    }

    /// Loads a checkpoint, retrying while the store fails: starting without it would
    /// make the partition's counts wrong, so the partition waits (and `/readyz` says so).
    /// A permanent error is kept for the consumer loop, which stops the service with it.
    async fn load(&self, tp: &TopicPartition) -> Option<Checkpoint> {
        let loaded = self
            .retry
            .retry(
                || {
                    self.saver
                        .store
                        .load_checkpoint(&self.saver.group, &tp.0, tp.1)
                },
                |error, _, delay| metrics::checkpoint_load_failed(&tp.0, tp.1, error, delay),
            )
            .await;
        match loaded {
            Ok(checkpoint) => checkpoint,
            Err(error) => {
                metrics::store_failed_permanently(&error);
                *lock(&self.fatal) = Some(PipelineError::Store(error));
                None
            }
        }
    }

    fn restore(&self, tp: &TopicPartition) -> Option<i64> {
        let checkpoint = block_on(&self.saver.handle, self.load(tp))?;
        let state: PartitionState = match serde_json::from_slice(&checkpoint.state) {
            Ok(state) => state,
            Err(error) => {
                metrics::checkpoint_unreadable(&tp.0, tp.1, &error);
                return None;
            }
        };
        lock(&self.schedule).restored(tp, checkpoint.next_offset, checkpoint.saved_at);
        lock(&self.restored).insert(
            tp.clone(),
            Restored {
                next_offset: checkpoint.next_offset,
                state,
                published_through: None,
            },
        );
        metrics::partition_restored(&tp.0, tp.1, checkpoint.next_offset);
        Some(checkpoint.next_offset)
    }
}

impl RebalanceHook for Restorer {
    fn assigning(&self, partitions: &[TopicPartition]) -> Vec<Option<i64>> {
        let restoring = &self.shared.restoring;
        metrics::partitions_restoring(
            restoring.fetch_add(partitions.len(), Ordering::AcqRel) + partitions.len(),
        );
        partitions
            .iter()
            .map(|tp| {
                let start = self.restore(tp);
                metrics::partitions_restoring(restoring.fetch_sub(1, Ordering::AcqRel) - 1);
                start
            })
            .collect()
    }

    fn committed_ahead(&self, tp: &TopicPartition, committed: i64) {
        if self.transactions.is_none() {
            // Commits follow checkpoints in this mode: the offsets were committed by
            // another release or mode, or the checkpoint was lost. Everything from the
            // checkpoint on replays, outputs included.
            tracing::warn!(topic = %tp.0, partition = tp.1, committed, "Committed offset ahead of the checkpoint; replaying from the checkpoint");
            return;
        }
        if let Some(restored) = lock(&self.restored).get_mut(tp) {
            tracing::info!(topic = %tp.0, partition = tp.1, from = restored.next_offset, to = committed, "Replaying records whose outputs a committed transaction holds; they are not published again");
            restored.published_through = Some(committed);
        }
    }

    fn revoking(
        &self,
        partitions: &[TopicPartition],
        group: Option<&ConsumerGroupMetadata>,
    ) -> Vec<(TopicPartition, i64)> {
        let deadline = tokio::time::Instant::now() + REVOKE_SAVE_TIMEOUT;
        // The open transaction holds outputs of every assigned partition: it is committed
        // with all their positions before any revoked partition's state is checkpointed,
        // so that a checkpoint never covers an output that is not committed.
        let committed = match &self.transactions {
            None => true,
            // Stopping: the final checkpoints are saved, at the last commit.
            Some(_) if self.transactions_closed.load(Ordering::Acquire) => false,
            Some(producer) => {
                let offsets = self.progress.transaction_offsets();
                match blocking(&self.saver.handle, || {
                    producer.commit_transaction(&offsets, group)
                }) {
                    Ok(()) => true,
                    Err(error) => {
                        tracing::error!(%error, "Transaction commit on revoke failed; stopping, the restart replays from the last commit");
                        *lock(&self.fatal) = Some(PipelineError::Kafka(error));
                        false
                    }
                }
            }
        };
        // Drain: wait for the revoked partitions' records in flight, so that the state at
        // each one's position can be checkpointed.
        let drained = block_on(
            &self.saver.handle,
            tokio::time::timeout_at(deadline, self.progress.drained(partitions)),
        );
        if drained.is_err() {
            tracing::warn!(partitions = ?partitions, "Revoked partitions' records not done in time; the next owner replays those after the last checkpoint");
        }
        if committed {
            // Positions first: a completing record takes the progress lock, then the
            // schedule's.
            let positions: Vec<(&TopicPartition, i64)> = partitions
                .iter()
                .filter_map(|tp| Some((tp, self.progress.position(tp)?)))
                .collect();
            let states = self
                .shared
                .partitions
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let mut schedule = lock(&self.schedule);
            for (tp, position) in positions {
                if let Some(state) = states.get(tp) {
                    if schedule.wants_snapshot(tp, position) {
                        schedule.hold(tp, Snapshot::of(state, position));
                    }
                }
            }
        }
        // Only a snapshot whose records are all done is saved; what is still in flight is
        // processed again by the next owner.
        let revoked: Vec<(TopicPartition, Option<i64>, Option<Snapshot>)> = {
            let mut schedule = lock(&self.schedule);
            partitions
                .iter()
                .map(|tp| (tp.clone(), schedule.durable(tp), schedule.revoke(tp)))
                .collect()
        };
        let mut commits = Vec::new();
        for (tp, durable, snapshot) in revoked {
            self.progress.revoke(&tp);
            let mut offset = durable;
            if let Some(snapshot) = snapshot {
                let save = tokio::time::timeout_at(deadline, self.saver.save(&tp, &snapshot));
                match block_on(&self.saver.handle, save) {
                    Ok(Ok(())) => offset = Some(snapshot.next_offset),
                    Ok(Err(error)) => metrics::checkpoint_save_failed(&tp.0, tp.1, &error),
                    // The save may still land: the next owner then skips what it covers.
                    Err(_) => {
                        tracing::warn!(topic = %tp.0, partition = tp.1, "Checkpoint save on revoke timed out; the next owner replays from the last one")
                    }
                }
            }
            // With transactions the offsets went into the transaction: committing a
            // checkpoint's offset outside it would move the group's position back.
            if let (Some(offset), None) = (offset, &self.transactions) {
                commits.push((tp, offset));
            }
        }
        commits
    }
}

/// How long a revoke waits for the revoked partitions' records in flight and for the
/// store to save their last checkpoints, all together.
pub const REVOKE_SAVE_TIMEOUT: Duration = Duration::from_secs(5);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs blocking `work` from synchronous code running on the runtime (the client's
/// callbacks), letting the runtime's other tasks move to other threads meanwhile.
fn blocking<T>(handle: &Handle, work: impl FnOnce() -> T) -> T {
    match handle.runtime_flavor() {
        RuntimeFlavor::CurrentThread => work(),
        _ => tokio::task::block_in_place(work),
    }
}

/// Runs `future` to completion from synchronous code running on the runtime (the
/// client's callbacks). On a current-thread runtime (tests, tools) it runs on a helper
/// thread, where a future that needs that runtime's timers or I/O would never finish:
/// the service runs on the multi-thread runtime.
fn block_on<F>(handle: &Handle, future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    match handle.runtime_flavor() {
        RuntimeFlavor::CurrentThread => std::thread::scope(|scope| {
            scope
                .spawn(|| handle.block_on(future))
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        }),
        _ => tokio::task::block_in_place(|| handle.block_on(future)),
    }
}
