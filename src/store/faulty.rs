//! A store that fails on demand: wraps any [`AuditStore`] so tests and the `demo` can
//! show retry, backpressure and shutdown on store failures without a broken database.
//!
//! The faults live in a shared [`Faults`] value: keep an `Arc<Faults>` and flip them while
//! the pipeline runs. Which calls each fault hits:
//! - `fail_next_writes(n)`: the next `n` [`AuditStore::write`] calls fail as
//!   unavailable, then writes go through again (a blip).
//! - `set_down(true)`: every call, reads and `ping` included, fails as unavailable until
//!   `set_down(false)` (an outage).
//! - `set_permanent(true)`: every call fails permanently (bad credentials or schema).
//! - `stall_writes(d)`: every `write` first waits `d` on the tokio clock (a slow store),
//!   until `stop_stalling()`.
//! - `stall_checkpoint_loads(d)`: every `load_checkpoint` first waits `d` on the tokio
//!   clock (a slow restore), until `stop_stalling()`.
//!
//! A failed call never reaches the wrapped store, so it wrote nothing, as the trait
//! requires. A call that reaches it returns the wrapped store's [`WriteOutcome`] as it is,
//! and its counts add up in [`Faults`].

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::{AuditStore, ChainEntry, Checkpoint, Page, StoreError, StoredRecord, WriteOutcome};
use crate::chain::ChainHead;
use crate::event::{AuditDecision, AuditVerdict, CoordinationRecord};
use crate::gate::RolloutStatus;

/// Fault switches and call counters, shared between a [`FaultyStore`] and its controller.
#[derive(Debug, Default)]
pub struct Faults {
    fail_next: AtomicU32,
    down: AtomicBool,
    permanent: AtomicBool,
    /// Held only to copy the value out, never across an await.
    stall: Mutex<Option<Duration>>,
    /// Held only to copy the value out, never across an await.
    stall_loads: Mutex<Option<Duration>>,
    write_calls: AtomicU64,
    failed_writes: AtomicU64,
    records_written: AtomicU64,
    duplicates: AtomicU64,
    conflicts: AtomicU64,
    checkpoint_saves: AtomicU64,
}

impl Faults {
    /// Fails the next `n` writes as unavailable (replacing any count still pending).
    pub fn fail_next_writes(&self, n: u32) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// Takes the store down (every call unavailable) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Makes every call fail permanently, or stops doing so.
    pub fn set_permanent(&self, permanent: bool) {
        self.permanent.store(permanent, Ordering::SeqCst);
    }

    /// Delays every write by `delay` before it runs.
    pub fn stall_writes(&self, delay: Duration) {
        *self.stall.lock().unwrap_or_else(PoisonError::into_inner) = Some(delay);
    }

    /// Delays every checkpoint load by `delay` before it runs.
    pub fn stall_checkpoint_loads(&self, delay: Duration) {
        *self
            .stall_loads
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(delay);
    }

    /// Stops delaying writes and checkpoint loads.
    pub fn stop_stalling(&self) {
        *self.stall.lock().unwrap_or_else(PoisonError::into_inner) = None;
        *self
            .stall_loads
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Turns every fault off; the counters keep counting.
    pub fn clear(&self) {
        self.fail_next_writes(0);
        self.set_down(false);
        self.set_permanent(false);
        self.stop_stalling();
    }

    /// `write` calls so far, failed ones included.
    pub fn write_calls(&self) -> u64 {
        self.write_calls.load(Ordering::SeqCst)
    }

    /// `write` calls that returned an error, injected or from the wrapped store.
    pub fn failed_writes(&self) -> u64 {
        self.failed_writes.load(Ordering::SeqCst)
    }

    /// Records the wrapped store reported written ([`WriteOutcome::written`]).
    pub fn records_written(&self) -> u64 {
        self.records_written.load(Ordering::SeqCst)
    }

    /// Records the wrapped store reported as duplicates ([`WriteOutcome::duplicates`]).
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::SeqCst)
    }

    /// Records the wrapped store reported as conflicts ([`WriteOutcome::conflicts`]).
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::SeqCst)
    }

    /// `save_checkpoint` calls so far, failed ones included.
    pub fn checkpoint_saves(&self) -> u64 {
        self.checkpoint_saves.load(Ordering::SeqCst)
    }

    /// The fault every call is subject to, if any.
    fn outage(&self) -> Result<(), StoreError> {
        if self.permanent.load(Ordering::SeqCst) {
            return Err(StoreError::Permanent("injected permanent failure".into()));
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(
                "injected outage: store is down".into(),
            ));
        }
        Ok(())
    }

    /// Consumes one of the pending write failures, if any.
    fn take_write_failure(&self) -> bool {
        self.fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    fn stall(&self) -> Option<Duration> {
        *self.stall.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Any store, with the faults of a shared [`Faults`] injected in front of it.
#[derive(Debug)]
pub struct FaultyStore<S> {
    inner: S,
    faults: Arc<Faults>,
}

impl<S: AuditStore> FaultyStore<S> {
    /// Wraps `inner` with every fault off.
    pub fn new(inner: S) -> FaultyStore<S> {
        FaultyStore::with_faults(inner, Arc::new(Faults::default()))
    }

    /// Wraps `inner` with faults controlled from elsewhere.
    pub fn with_faults(inner: S, faults: Arc<Faults>) -> FaultyStore<S> {
        FaultyStore { inner, faults }
    }

    /// The switches and counters, to keep while the store is moved into the pipeline.
    pub fn faults(&self) -> Arc<Faults> {
        Arc::clone(&self.faults)
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    async fn try_write(&self, records: Arc<[StoredRecord]>) -> Result<WriteOutcome, StoreError> {
        if let Some(delay) = self.faults.stall() {
            tokio::time::sleep(delay).await;
        }
        self.faults.outage()?;
        if self.faults.take_write_failure() {
            return Err(StoreError::Unavailable("injected write failure".into()));
        }
        self.inner.write(records).await
    }
}

#[async_trait::async_trait]
impl<S: AuditStore> AuditStore for FaultyStore<S> {
    async fn write(&self, records: Arc<[StoredRecord]>) -> Result<WriteOutcome, StoreError> {
        self.faults.write_calls.fetch_add(1, Ordering::SeqCst);
        let result = self.try_write(records).await;
        let faults = &self.faults;
        match &result {
            Ok(outcome) => {
                let add = |counter: &AtomicU64, n: usize| {
                    counter.fetch_add(n as u64, Ordering::SeqCst);
                };
                add(&faults.records_written, outcome.written);
                add(&faults.duplicates, outcome.duplicates);
                add(&faults.conflicts, outcome.conflicts.len());
            }
            Err(_) => {
                faults.failed_writes.fetch_add(1, Ordering::SeqCst);
            }
        }
        result
    }

    async fn rollout_status(
        &self,
        tenant_id: &str,
        contract_id: &str,
    ) -> Result<Option<RolloutStatus>, StoreError> {
        self.faults.outage()?;
        self.inner.rollout_status(tenant_id, contract_id).await
    }

    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        self.faults.checkpoint_saves.fetch_add(1, Ordering::SeqCst);
        self.faults.outage()?;
        self.inner.save_checkpoint(checkpoint).await
    }

    async fn load_checkpoint(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let stall = *self
            .faults
            .stall_loads
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(delay) = stall {
            tokio::time::sleep(delay).await;
        }
        self.faults.outage()?;
        self.inner.load_checkpoint(group, topic, partition).await
    }

    async fn decisions(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<AuditDecision>, StoreError> {
        self.faults.outage()?;
        self.inner.decisions(tenant_id, cursor, limit).await
    }

    async fn verdicts(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<AuditVerdict>, StoreError> {
        self.faults.outage()?;
        self.inner.verdicts(tenant_id, cursor, limit).await
    }

    async fn coordination_records(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<CoordinationRecord>, StoreError> {
        self.faults.outage()?;
        self.inner
            .coordination_records(tenant_id, cursor, limit)
            .await
    }

    async fn chain_entries(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ChainEntry>, StoreError> {
        self.faults.outage()?;
        self.inner.chain_entries(tenant_id, cursor, limit).await
    }

    async fn save_chain_heads(&self, heads: &[ChainHead]) -> Result<(), StoreError> {
        self.faults.outage()?;
        self.inner.save_chain_heads(heads).await
    }

    async fn chain_heads(&self, tenant_id: &str) -> Result<Vec<ChainHead>, StoreError> {
        self.faults.outage()?;
        self.inner.chain_heads(tenant_id).await
    }

    async fn tenants(&self) -> Result<Vec<String>, StoreError> {
        self.faults.outage()?;
        self.inner.tenants().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.faults.outage()?;
        self.inner.ping().await
    }
}
