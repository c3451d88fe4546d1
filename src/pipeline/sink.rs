//! The sink: the one path by which audit records reach the store (SPEC §5).
//!
//! Requests from the consumer loop are batched (one store call for many records),
//! written with capped exponential backoff while the store fails with a retryable
//! error, and acknowledged only once durable. A failed write is never dropped: the
//! request stays queued, in-flight records pile up to the configured bound, and the
//! consumer loop pauses consumption. A permanent error ends the sink, and with it the
//! service, with that error.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::metrics;
use crate::store::{AuditRecord, AuditStore, RetryPolicy, StoreError};

struct Request {
    records: Vec<AuditRecord>,
    done: oneshot::Sender<()>,
}

/// Handle to submit audit records to the sink task.
#[derive(Clone)]
pub struct Sink {
    tx: mpsc::Sender<Request>,
}

/// The sink stopped: the store failed permanently, or the service is shutting down.
#[derive(Debug, thiserror::Error)]
#[error("the audit store sink is stopped")]
pub struct SinkClosed;

impl Sink {
    /// Starts the sink task. `capacity` bounds queued requests; the consumer loop's
    /// in-flight bound keeps it from ever being reached.
    pub fn spawn(
        store: Arc<dyn AuditStore>,
        retry: RetryPolicy,
        batch_max_records: usize,
        capacity: usize,
    ) -> (Sink, JoinHandle<Result<(), StoreError>>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let task = tokio::spawn(run(store, retry, batch_max_records, rx));
        (Sink { tx }, task)
    }

    /// Queues `records`; the receiver fires once they are durable.
    pub async fn submit(
        &self,
        records: Vec<AuditRecord>,
    ) -> Result<oneshot::Receiver<()>, SinkClosed> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Request { records, done })
            .await
            .map_err(|_| SinkClosed)?;
        Ok(rx)
    }
}

async fn run(
    store: Arc<dyn AuditStore>,
    retry: RetryPolicy,
    batch_max_records: usize,
    mut rx: mpsc::Receiver<Request>,
) -> Result<(), StoreError> {
    let mut batch: Vec<AuditRecord> = Vec::new();
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.extend(first.records);
        waiting.push(first.done);
        while batch.len() < batch_max_records {
            match rx.try_recv() {
                Ok(next) => {
                    batch.extend(next.records);
                    waiting.push(next.done);
                }
                Err(_) => break,
            }
        }
        write_until_durable(store.as_ref(), &retry, &batch).await?;
        batch.clear();
        for done in waiting.drain(..) {
            // The receiver is gone only when its partition was revoked: nothing to tell.
            let _ = done.send(());
        }
    }
    Ok(())
}

/// Writes `batch`, retrying retryable errors forever with backoff.
async fn write_until_durable(
    store: &dyn AuditStore,
    retry: &RetryPolicy,
    batch: &[AuditRecord],
) -> Result<(), StoreError> {
    let mut attempt = 0u32;
    loop {
        let started = std::time::Instant::now();
        match store.write(batch).await {
            Ok(()) => {
                metrics::store_written(batch.len(), started.elapsed());
                return Ok(());
            }
            Err(error) if error.is_retryable() => {
                let delay = retry.delay(attempt);
                metrics::store_write_failed(&error, attempt, delay);
                tokio::time::sleep(delay).await;
                attempt = attempt.saturating_add(1);
            }
            Err(error) => {
                metrics::store_failed_permanently(&error);
                return Err(error);
            }
        }
    }
}
