//! The sink: the one path by which audit records reach the store (SPEC §5).
//!
//! Requests from the consumer loop are batched (one store call for many records),
//! written with capped exponential backoff while the store fails with a retryable
//! error, and acknowledged only once durable. A failed write is never dropped: the
//! request stays queued, in-flight records pile up to the configured bound, and the
//! consumer loop stops pulling records until writes succeed again. A permanent error
//! ends the sink, and with it the service, with that error.
//!
//! A record whose id is already stored is not an error: with the same content it is a
//! duplicate (a replay, counted), with other content a conflict (usually a re-published
//! source event at a new offset), which the store leaves out, keeping the first copy, and
//! the sink logs with both sources and counts. Either way the record is accounted for,
//! so its request is acknowledged and the partition goes on.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::metrics;
use crate::store::{AuditStore, RetryPolicy, StoreError, StoredRecord, WriteOutcome};

struct Request {
    records: Vec<StoredRecord>,
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
        records: Vec<StoredRecord>,
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
    let mut batch: Vec<StoredRecord> = Vec::new();
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
        // Moved, not copied: the store and every retry share the batch.
        let records: Arc<[StoredRecord]> = std::mem::take(&mut batch).into();
        write_until_durable(store.as_ref(), &retry, records).await?;
        for done in waiting.drain(..) {
            // The receiver is gone only when its partition was revoked: nothing to tell.
            let _ = done.send(());
        }
    }
    Ok(())
}

/// Writes `batch`, retrying retryable errors forever with backoff, and reports what the
/// store did with its records: counts the written records and the duplicates, and logs
/// and counts every conflict.
async fn write_until_durable(
    store: &dyn AuditStore,
    retry: &RetryPolicy,
    batch: Arc<[StoredRecord]>,
) -> Result<WriteOutcome, StoreError> {
    let (outcome, took) = retry
        .retry(
            || {
                let batch = batch.clone();
                async move {
                    let started = std::time::Instant::now();
                    let outcome = store.write(batch).await?;
                    Ok((outcome, started.elapsed()))
                }
            },
            metrics::store_write_failed,
        )
        .await
        .inspect_err(metrics::store_failed_permanently)?;
    metrics::store_written(outcome.written, took);
    metrics::store_duplicates(outcome.duplicates);
    for conflict in &outcome.conflicts {
        metrics::store_conflict(conflict);
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AuditDecision, DecisionKind, Level, Phase, SourceRef, SCHEMA_VERSION};
    use crate::store::{AuditRecord, EmbeddedStore, FaultyStore};
    use chrono::{TimeZone, Utc};
    use std::time::Duration;
    use uuid::Uuid;

    fn decision(offset: i64) -> AuditRecord {
        let event_id = Uuid::from_u128(0xabc0 + offset as u128);
        AuditRecord::Decision(AuditDecision {
            schema_version: SCHEMA_VERSION,
            event_id: crate::event::output_id(
                &event_id.to_string(),
                crate::event::OutputKind::Decision,
                0,
            ),
            tenant_id: "acme".into(),
            key: "acme:p:input:amount".into(),
            process: "p".into(),
            phase: Phase::Input,
            field: "amount".into(),
            level: Level::B,
            decision: DecisionKind::Block,
            count: 4,
            threshold: 3,
            message: "amount must be >= 100".into(),
            occurred_at: Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
            source: SourceRef {
                topic: "in".into(),
                partition: 0,
                offset,
                event_id,
            },
        })
    }

    fn retry() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            multiplier: 2.0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failed_writes_are_retried_until_durable() {
        let store = Arc::new(FaultyStore::new(EmbeddedStore::in_memory().expect("store")));
        let faults = store.faults();
        faults.fail_next_writes(5);
        let (sink, task) = Sink::spawn(store.clone(), retry(), 64, 16);
        let durable = sink
            .submit(StoredRecord::chain([decision(1), decision(2)]))
            .await
            .expect("queued");
        durable.await.expect("durable after the failures");
        assert_eq!(faults.failed_writes(), 5);
        assert_eq!(faults.records_written(), 2);
        let page = store.decisions("acme", None, 10).await.expect("read");
        assert_eq!(page.items.len(), 2);
        drop(sink);
        task.await.expect("task").expect("sink ends cleanly");
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_acknowledged_while_the_store_is_down() {
        let store = Arc::new(FaultyStore::new(EmbeddedStore::in_memory().expect("store")));
        let faults = store.faults();
        faults.set_down(true);
        let (sink, _task) = Sink::spawn(store.clone(), retry(), 64, 16);
        let mut durable = sink
            .submit(StoredRecord::chain([decision(1)]))
            .await
            .expect("queued");
        // Ten minutes of outage: still retrying, never acknowledged.
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(
            durable.try_recv().is_err(),
            "acknowledged while the store was down"
        );
        assert!(
            faults.failed_writes() > 100,
            "kept retrying: {}",
            faults.failed_writes()
        );
        faults.set_down(false);
        durable.await.expect("durable once the store is back");
        assert_eq!(faults.records_written(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_error_stops_the_sink_with_that_error() {
        let store = Arc::new(FaultyStore::new(EmbeddedStore::in_memory().expect("store")));
        store.faults().set_permanent(true);
        let (sink, task) = Sink::spawn(store, retry(), 64, 16);
        let durable = sink
            .submit(StoredRecord::chain([decision(1)]))
            .await
            .expect("queued");
        assert!(durable.await.is_err(), "never acknowledged");
        let error = task.await.expect("task").expect_err("permanent error");
        assert!(!error.is_retryable(), "{error}");
    }

    /// `decision(offset)` as its source event, published again at `new_offset`: the same
    /// id, another source offset and (counted once more) another count.
    fn republished(offset: i64, new_offset: i64) -> AuditRecord {
        let AuditRecord::Decision(mut d) = decision(offset) else {
            unreachable!()
        };
        d.source.offset = new_offset;
        d.count += 1;
        AuditRecord::Decision(d)
    }

    #[tokio::test(start_paused = true)]
    async fn a_conflicting_record_does_not_stop_the_sink_and_is_counted() {
        let store = Arc::new(FaultyStore::new(EmbeddedStore::in_memory().expect("store")));
        let faults = store.faults();
        let (sink, task) = Sink::spawn(store.clone(), retry(), 64, 16);
        let first = sink
            .submit(StoredRecord::chain([decision(1)]))
            .await
            .expect("queued");
        first.await.expect("durable");

        let mixed = sink
            .submit(StoredRecord::chain([
                republished(1, 40),
                decision(1),
                decision(2),
            ]))
            .await
            .expect("queued");
        mixed.await.expect("acknowledged despite the conflict");
        assert_eq!(faults.records_written(), 2);
        assert_eq!(faults.duplicates(), 1);
        assert_eq!(faults.conflicts(), 1);
        assert_eq!(faults.failed_writes(), 0, "a conflict is not a failure");

        let later = sink
            .submit(StoredRecord::chain([decision(3)]))
            .await
            .expect("still running");
        later.await.expect("durable");
        let stored = store.decisions("acme", None, 10).await.expect("read");
        let stored: Vec<AuditRecord> = stored
            .items
            .into_iter()
            .map(AuditRecord::Decision)
            .collect();
        assert_eq!(
            stored,
            [decision(1), decision(2), decision(3)],
            "the first copy stays"
        );
        drop(sink);
        task.await.expect("task").expect("sink ends cleanly");
    }

    #[tokio::test]
    async fn a_durable_write_reports_each_conflict_with_both_sources() {
        let store = EmbeddedStore::in_memory().expect("store");
        let written =
            write_until_durable(&store, &retry(), StoredRecord::chain([decision(1)]).into())
                .await
                .expect("durable");
        assert_eq!(written.written, 1);

        let again = write_until_durable(
            &store,
            &retry(),
            StoredRecord::chain([republished(1, 40), decision(2)]).into(),
        )
        .await
        .expect("a conflict is not an error");
        let original = decision(1);
        assert_eq!(
            again,
            WriteOutcome {
                written: 1,
                duplicates: 0,
                conflicts: vec![crate::store::Conflict {
                    id: original.id(),
                    kind: "decision",
                    stored_source: original.source().clone(),
                    new_source: republished(1, 40).source().clone(),
                }],
            }
        );
    }

    #[tokio::test]
    async fn queued_requests_are_written_in_one_batch() {
        let store = Arc::new(FaultyStore::new(EmbeddedStore::in_memory().expect("store")));
        let faults = store.faults();
        // Stall the first write so that the next requests queue up behind it.
        faults.stall_writes(Duration::from_millis(200));
        let (sink, _task) = Sink::spawn(store.clone(), retry(), 64, 16);
        let mut receivers = Vec::new();
        for offset in 0..10 {
            receivers.push(
                sink.submit(StoredRecord::chain([decision(offset)]))
                    .await
                    .expect("queued"),
            );
        }
        for r in receivers {
            r.await.expect("durable");
        }
        assert_eq!(faults.records_written(), 10);
        assert!(
            faults.write_calls() <= 2,
            "batched: {} calls",
            faults.write_calls()
        );
    }
}
