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
//! On revoke the latest snapshot whose records are all done is saved (waiting at most
//! [`REVOKE_SAVE_TIMEOUT`], so a slow store cannot hold the group's rebalance up) and
//! its offset is committed before the partition moves.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::mpsc;

use super::checkpoints::{Schedule, Snapshot};
use super::offsets::TopicPartition;
use super::worker::Shared;
use super::PartitionState;
use crate::kafka::consumer::RebalanceHook;
use crate::metrics;
use crate::store::{AuditStore, Checkpoint, RetryPolicy, StoreError};

/// A partition's state as loaded from its checkpoint.
pub struct Restored {
    pub next_offset: i64,
    pub state: PartitionState,
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
        let checkpoint = self.checkpoint(&tp, &snapshot);
        let store = self.store.clone();
        let outcomes = self.outcomes.clone();
        self.handle.spawn(async move {
            let result = save(store.as_ref(), &checkpoint, &snapshot).await;
            let _ = outcomes.send(SaveOutcome {
                tp,
                snapshot,
                saved_at: checkpoint.saved_at,
                result,
            });
        });
    }

    /// Saves `snapshot` and waits for the store (shutdown: after the drain, before the
    /// final commit).
    pub async fn save(&self, tp: &TopicPartition, snapshot: &Snapshot) -> Result<(), StoreError> {
        let checkpoint = self.checkpoint(tp, snapshot);
        save(self.store.as_ref(), &checkpoint, snapshot).await?;
        metrics::checkpoint_saved(&tp.0, tp.1, snapshot.next_offset);
        Ok(())
    }
}

/// Saves a checkpoint, then the chain heads it covers: a stored head never reaches past
/// a checkpoint a restore could resume from.
async fn save(
    store: &dyn AuditStore,
    checkpoint: &Checkpoint,
    snapshot: &Snapshot,
) -> Result<(), StoreError> {
    store.save_checkpoint(checkpoint).await?;
    store.save_chain_heads(&snapshot.heads).await
}

/// The pipeline's [`RebalanceHook`]: restores checkpoints on assign, saves on revoke.
pub struct Restorer {
    saver: Saver,
    shared: Arc<Shared>,
    schedule: Arc<Mutex<Schedule>>,
    retry: RetryPolicy,
    /// Loaded in the rebalance callback, taken by the consumer loop when it applies the
    /// assignment (before it processes any record of the partition).
    restored: Mutex<HashMap<TopicPartition, Restored>>,
    /// A permanent store error met while restoring: the consumer loop stops the service
    /// with it before processing another record.
    fatal: Mutex<Option<StoreError>>,
}

impl Restorer {
    pub fn new(
        saver: Saver,
        shared: Arc<Shared>,
        schedule: Arc<Mutex<Schedule>>,
        retry: RetryPolicy,
    ) -> Restorer {
        Restorer {
            saver,
            shared,
            schedule,
            retry,
            restored: Mutex::new(HashMap::new()),
            fatal: Mutex::new(None),
        }
    }

    /// The permanent store error met while restoring, if any (taken: the loop stops on it).
    pub fn fatal(&self) -> Option<StoreError> {
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
        let mut attempt = 0u32;
        loop {
            match self
                .saver
                .store
                .load_checkpoint(&self.saver.group, &tp.0, tp.1)
                .await
            {
                Ok(checkpoint) => return checkpoint,
                Err(error) if !error.is_retryable() => {
                    metrics::store_failed_permanently(&error);
                    *lock(&self.fatal) = Some(error);
                    return None;
                }
                Err(error) => {
                    let delay = self.retry.delay(attempt);
                    metrics::checkpoint_load_failed(&tp.0, tp.1, &error, delay);
                    tokio::time::sleep(delay).await;
                    attempt = attempt.saturating_add(1);
                }
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

    fn revoking(&self, partitions: &[TopicPartition]) -> Vec<(TopicPartition, i64)> {
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
        let deadline = tokio::time::Instant::now() + REVOKE_SAVE_TIMEOUT;
        for (tp, durable, snapshot) in revoked {
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
            if let Some(offset) = offset {
                commits.push((tp, offset));
            }
        }
        commits
    }
}

/// How long a revoke waits for the store to save the revoked partitions' last
/// checkpoints, all together.
pub const REVOKE_SAVE_TIMEOUT: Duration = Duration::from_secs(5);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
