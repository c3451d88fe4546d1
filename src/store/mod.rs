//! The one write path of audit records (SPEC §5), and the operator checkpoints (SPEC §6).
//!
//! Every backend implements [`AuditStore`] and passes the same contract suite
//! (`tests/store_contract.rs`). The guarantees the pipeline builds on:
//!
//! - **First write wins, nothing is updated.** Record ids are deterministic (UUIDv5 of
//!   the source event), so a replay or a retry writes the same ids. A record whose id is
//!   not stored yet is written; one stored with the same content (see
//!   [`AuditRecord::content_digest`]) is a duplicate; one stored with other content is a
//!   [`Conflict`]: not written, the stored record stays as it is, and the call reports it
//!   with both sources. A re-published source event (same `event_id`, a new offset)
//!   derives the same ids with another `source`, so its records come back as conflicts:
//!   the service logs and counts them and goes on. Records are never updated or deleted;
//!   the rollout status of a contract only ever moves to a verdict written on newer
//!   evidence.
//! - **Errors are infrastructure only.** A call fails only when the store cannot do it
//!   ([`StoreError::Unavailable`], [`StoreError::Permanent`]), never because of a
//!   record's content. A failed call is retried whole by the caller; the embedded store
//!   stores none of a failed call's records, the ScyllaDB store may have stored some (see
//!   [`scylla`]), which the retry finds stored and counts as duplicates.
//! - **Durable on return.** When `write` returns `Ok`, the records survive a crash: only
//!   then may the pipeline commit the Kafka offsets they were derived from.
//! - **Errors carry their handling.** [`StoreError::is_retryable`] tells the pipeline to
//!   back off and pause consumption ([`RetryPolicy`]) or to stop.
//!
//! Backends: [`ScyllaStore`] (production; tables in `schemas/cql/`, created by
//! [`scylla::migrate`]) and [`EmbeddedStore`] (SQLite; `demo` and single-machine use).
//! [`FaultyStore`] wraps any backend to inject failures.
//!
//! ```
//! use audit_stream::store::{AuditStore, EmbeddedStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), audit_stream::store::StoreError> {
//! let store = EmbeddedStore::in_memory()?;
//! store.ping().await?;
//! assert!(store.rollout_status("acme", "deploy-api").await?.is_none());
//! assert!(store.tenants().await?.is_empty());
//! # Ok(())
//! # }
//! ```

mod cursor;
mod embedded;
mod faulty;
mod retry;
pub mod scylla;

use std::borrow::Cow;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use thiserror::Error;
use uuid::Uuid;

use crate::canonical::{self, KeyOrder};
use crate::chain::{ChainHead, ChainKey, ChainLink, PartitionChains};
use crate::event::{AuditDecision, AuditVerdict, CoordinationRecord, SourceRef};
use crate::gate::RolloutStatus;

pub use embedded::EmbeddedStore;
pub use faulty::{Faults, FaultyStore};
pub use retry::RetryPolicy;
pub use scylla::ScyllaStore;

/// Largest page a listing returns, whatever `limit` asks: bounds the memory of one call.
const MAX_PAGE: usize = 10_000;

/// One audit record, as the sink hands it to the store.
#[derive(Debug, Clone, PartialEq)]
pub enum AuditRecord {
    Decision(AuditDecision),
    Verdict {
        verdict: AuditVerdict,
        /// The execution event's `occurred_at`: `rollout_status` keeps the verdict on the
        /// newest evidence, not the newest audit.
        occurred_at: DateTime<Utc>,
    },
    Coordination(CoordinationRecord),
}

impl AuditRecord {
    /// The record's primary key: a decision's `event_id`, a verdict's or a coordination
    /// record's `audit_id`.
    pub fn id(&self) -> Uuid {
        match self {
            AuditRecord::Decision(d) => d.event_id,
            AuditRecord::Verdict { verdict, .. } => verdict.audit_id,
            AuditRecord::Coordination(c) => c.audit_id,
        }
    }

    pub fn tenant_id(&self) -> &str {
        match self {
            AuditRecord::Decision(d) => &d.tenant_id,
            AuditRecord::Verdict { verdict, .. } => &verdict.tenant_id,
            AuditRecord::Coordination(c) => &c.tenant_id,
        }
    }

    /// The event time of what the record audits, the input event's `occurred_at`: a
    /// decision's `occurred_at` (the validation event's), a verdict's evidence time (the
    /// execution event's), a coordination record's `created_at` (the coordination
    /// event's).
    pub fn occurred_at(&self) -> DateTime<Utc> {
        match self {
            AuditRecord::Decision(d) => d.occurred_at,
            AuditRecord::Verdict { occurred_at, .. } => *occurred_at,
            AuditRecord::Coordination(c) => c.created_at,
        }
    }

    /// `decision`, `verdict` or `coordination`: a fixed set, usable as a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            AuditRecord::Decision(_) => "decision",
            AuditRecord::Verdict { .. } => "verdict",
            AuditRecord::Coordination(_) => "coordination",
        }
    }

    /// The input record the audit record was derived from.
    pub fn source(&self) -> &SourceRef {
        match self {
            AuditRecord::Decision(d) => &d.source,
            AuditRecord::Verdict { verdict, .. } => &verdict.source,
            AuditRecord::Coordination(c) => &c.source,
        }
    }

    /// The record's canonical content: what must match when the same id is written
    /// again, and what the hash chain covers (see [`crate::chain`]).
    ///
    /// A verdict's `audited_at` and `duration_ms` are left out: they are wall-clock
    /// measurements of the audit (SPEC §4b), so re-auditing the same evidence after a
    /// crash yields the same verdict with other timings, which is a replay, not a
    /// conflict, and must rebuild the same chain. The stored copy keeps the timings of
    /// the first audit.
    pub fn canonical(&self) -> String {
        // `{"kind":…,"occurred_at":…,"record":…}`, keys in byte order, written from the
        // typed record without a `Value` tree: this runs for every record stored.
        let mut out = String::with_capacity(2048);
        out.push_str("{\"kind\":");
        write_canonical(&mut out, self.kind(), &[]);
        match self {
            AuditRecord::Decision(d) => {
                out.push_str(",\"record\":");
                write_canonical(&mut out, d, &[]);
            }
            AuditRecord::Verdict {
                verdict,
                occurred_at,
            } => {
                out.push_str(",\"occurred_at\":");
                write_canonical(&mut out, occurred_at, &[]);
                out.push_str(",\"record\":");
                write_canonical(&mut out, verdict, &["audited_at", "duration_ms"]);
            }
            AuditRecord::Coordination(c) => {
                out.push_str(",\"record\":");
                write_canonical(&mut out, c, &[]);
            }
        }
        out.push('}');
        out
    }

    /// SHA-256 (hex) of [`AuditRecord::canonical`].
    pub fn content_digest(&self) -> String {
        hex::encode(Sha256::digest(self.canonical().as_bytes()))
    }

    /// Rebuilds a record from a chain entry's kind, JSON and evidence time.
    pub fn from_chain_fields(
        kind: &str,
        json: &str,
        occurred_at: Option<DateTime<Utc>>,
    ) -> Result<AuditRecord, String> {
        let bad = |e: serde_json::Error| format!("stored {kind} is not readable: {e}");
        match (kind, occurred_at) {
            ("decision", _) => Ok(AuditRecord::Decision(
                serde_json::from_str(json).map_err(bad)?,
            )),
            ("verdict", Some(occurred_at)) => Ok(AuditRecord::Verdict {
                verdict: serde_json::from_str(json).map_err(bad)?,
                occurred_at,
            }),
            ("verdict", None) => Err("stored verdict has no evidence time".into()),
            ("coordination", _) => Ok(AuditRecord::Coordination(
                serde_json::from_str(json).map_err(bad)?,
            )),
            (other, _) => Err(format!("unknown audit record kind {other:?}")),
        }
    }

    /// The full record as JSON, exactly as published.
    pub fn to_json(&self) -> Result<String, StoreError> {
        let json = match self {
            AuditRecord::Decision(d) => canonical::to_json(d),
            AuditRecord::Verdict { verdict, .. } => canonical::to_json(verdict),
            AuditRecord::Coordination(c) => canonical::to_json(c),
        };
        json.map_err(|e| StoreError::Permanent(format!("cannot serialize audit record: {e}")))
    }
}

/// Appends the canonical JSON, keys in byte order, of a part of an audit record.
fn write_canonical<T: serde::Serialize + ?Sized>(out: &mut String, value: &T, skip: &[&str]) {
    // Audit records are plain structs with string keys and finite numbers: writing them
    // cannot fail, and a digest of anything else would be the digest of another record.
    if let Err(error) = canonical::write(out, value, KeyOrder::Bytes, skip) {
        panic!("audit records serialize to canonical JSON: {error}");
    }
}

/// A chain entry as read back ([`AuditStore::chain_entries`]).
// Nearly every entry read is `Stored`: boxing it would cost an allocation per entry for
// the rare one whose record is gone.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum ChainEntry {
    /// The entry and the record it chains.
    Stored(StoredRecord),
    /// An entry whose record's content cannot be read: the embedded store keeps one copy
    /// of a written record's content, in the record's own row, and that row is gone.
    RecordMissing {
        key: ChainKey,
        kind: &'static str,
        id: Uuid,
        link: ChainLink,
    },
}

impl ChainEntry {
    /// The entry's chain, kind, record id and link.
    pub fn parts(&self) -> (ChainKey, &'static str, Uuid, &ChainLink) {
        match self {
            ChainEntry::Stored(s) => (
                ChainKey::of(&s.record),
                s.record.kind(),
                s.record.id(),
                &s.link,
            ),
            ChainEntry::RecordMissing {
                key,
                kind,
                id,
                link,
            } => (key.clone(), kind, *id, link),
        }
    }
}

/// An audit record with its place in the hash chain: what the sink writes.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub record: AuditRecord,
    pub link: ChainLink,
    /// [`AuditRecord::content_digest`] of `record`, computed once from the same
    /// canonical content as the link's hash.
    pub content_digest: String,
    /// [`AuditRecord::to_json`] of `record` when it was already written: a decision's or
    /// a verdict's published payload is that text.
    json: Option<String>,
}

/// Records are equal when their record, link and digest are: the JSON, written now or
/// when it is stored, is the same text either way.
impl PartialEq for StoredRecord {
    fn eq(&self, other: &StoredRecord) -> bool {
        self.record == other.record
            && self.link == other.link
            && self.content_digest == other.content_digest
    }
}

impl StoredRecord {
    /// `record` at `link` (a chain entry read back, or a link made elsewhere).
    pub fn new(record: AuditRecord, link: ChainLink) -> StoredRecord {
        StoredRecord {
            content_digest: record.content_digest(),
            record,
            link,
            json: None,
        }
    }

    /// Links `record` as the next record of its chain in `chains`: its canonical content
    /// is built once, for both the link's hash and the content digest.
    pub fn append(chains: &mut PartitionChains, record: AuditRecord) -> StoredRecord {
        let canonical = record.canonical();
        StoredRecord {
            link: chains.append_canonical(&record, &canonical),
            content_digest: hex::encode(Sha256::digest(canonical.as_bytes())),
            record,
            json: None,
        }
    }

    /// This record with its [`AuditRecord::to_json`] text, written already (for its
    /// publication), so that the store does not write it again.
    pub fn with_json(mut self, json: String) -> StoredRecord {
        debug_assert_eq!(self.record.to_json().ok().as_ref(), Some(&json));
        self.json = Some(json);
        self
    }

    /// The record's JSON as stored: [`AuditRecord::to_json`], written once.
    pub fn json(&self) -> Result<Cow<'_, str>, StoreError> {
        match &self.json {
            Some(json) => Ok(Cow::Borrowed(json)),
            None => self.record.to_json().map(Cow::Owned),
        }
    }

    /// Links `records` into fresh chains, in order: for tests and tools that write
    /// records outside the pipeline.
    pub fn chain(records: impl IntoIterator<Item = AuditRecord>) -> Vec<StoredRecord> {
        let mut chains = PartitionChains::default();
        records
            .into_iter()
            .map(|record| StoredRecord::append(&mut chains, record))
            .collect()
    }
}

/// Operator state of one input partition with the offset it covers (SPEC §6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Consumer group: two groups reading the same topic keep separate state.
    pub group: String,
    pub topic: String,
    pub partition: i32,
    /// The first offset not covered by `state`: consumption resumes here on restore.
    pub next_offset: i64,
    /// Opaque serialized operator state (counters, ring log); the store never reads it.
    pub state: Vec<u8>,
    pub saved_at: DateTime<Utc>,
}

/// One page of a listing, and where the next one starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Opaque cursor of the next page; `None` when this page is the last.
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// The page of at most `limit` items out of the up to `limit + 1` rows a listing
    /// fetched (one more than the page holds tells whether another page follows); `read`
    /// maps a row to its item and the cursor that resumes after it.
    pub(crate) fn from_rows<R>(
        rows: Vec<R>,
        limit: usize,
        mut read: impl FnMut(R) -> Result<(T, cursor::Cursor), StoreError>,
    ) -> Result<Page<T>, StoreError> {
        let more = rows.len() > limit;
        let mut items = Vec::with_capacity(limit.min(rows.len()));
        let mut last = None;
        for row in rows.into_iter().take(limit) {
            let (item, cursor) = read(row)?;
            items.push(item);
            last = Some(cursor);
        }
        let next = last.filter(|_| more).map(|cursor| cursor.encode());
        Ok(Page { items, next })
    }
}

/// What one [`AuditStore::write`] did with each of its records.
///
/// `written + duplicates + conflicts.len()` is the number of records of the call: every
/// record is accounted for, none is left out silently.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteOutcome {
    /// Records whose id was not stored yet, now stored.
    pub written: usize,
    /// Records whose id was already stored (or earlier in the call) with the same
    /// content: a replay or a retry, not written again.
    pub duplicates: usize,
    /// Records whose id was already stored (or earlier in the call) with other content,
    /// in call order: not written, the stored record kept.
    pub conflicts: Vec<Conflict>,
}

/// A record that was not written because its id is stored with other content.
///
/// Usually a re-published source event: the same `event_id` at a new offset derives the
/// same ids, with another `source` (and, for a decision, possibly another `count`).
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The id both records share.
    pub id: Uuid,
    /// [`AuditRecord::kind`]: `decision`, `verdict` or `coordination`.
    pub kind: &'static str,
    /// Where the stored record, the one that stays, came from.
    pub stored_source: SourceRef,
    /// Where the record that was not written came from.
    pub new_source: SourceRef,
}

/// Why a store call failed, and therefore what the caller does about it.
#[derive(Debug, Clone, Error)]
pub enum StoreError {
    /// The store cannot be reached or is overloaded: retry with backoff, and pause
    /// consumption meanwhile.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Retrying cannot help (bad schema, credentials or request): stop the service.
    #[error("store failed permanently: {0}")]
    Permanent(String),
}

impl StoreError {
    /// Whether the same call may succeed later (only [`StoreError::Unavailable`]).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Where audit records and checkpoints are kept. Every method is safe to call
/// concurrently; a backend serializes internally what must be serialized.
#[async_trait::async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Stores the records of `records` whose id is not stored yet, and the chain entry of
    /// every record (see [`crate::chain`]), durably on return, and says what became of
    /// each record.
    ///
    /// The first write of an id wins forever: a record whose id is already stored (or
    /// earlier in the call) with the same content (see [`AuditRecord::content_digest`])
    /// is counted as a duplicate; with other content it is reported as a [`Conflict`].
    /// Neither is written, and the stored record stays untouched. A verdict that is
    /// written also replaces the `rollout_status` of its (tenant, contract) when its
    /// `occurred_at` is newer than the stored one's (ties broken by the greater
    /// `audit_id`), so the result does not depend on write order.
    ///
    /// Chain entries are keyed by their chain and position: each is kept whatever became
    /// of its record (a conflict's too, so the chain has no hole), the first write of a
    /// position wins, and a replay, which rebuilds the same links, writes nothing new.
    ///
    /// Fails only when the store cannot do the call ([`StoreError`]); the caller then
    /// retries it whole, with the same shared batch: a store that writes on another
    /// thread takes it along without copying the records.
    async fn write(&self, records: Arc<[StoredRecord]>) -> Result<WriteOutcome, StoreError>;

    /// The latest verdict of one contract, if any.
    async fn rollout_status(
        &self,
        tenant_id: &str,
        contract_id: &str,
    ) -> Result<Option<RolloutStatus>, StoreError>;

    /// Keeps `checkpoint` unless one with a greater `next_offset` is already stored for
    /// the same (group, topic, partition): a consumer that lost the partition in a
    /// rebalance cannot move its successor's checkpoint back. Two saves of the same
    /// `next_offset` cover the same records, so either may stay: the embedded store keeps
    /// the last, the ScyllaDB store the greater value of each column.
    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError>;

    async fn load_checkpoint(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Result<Option<Checkpoint>, StoreError>;

    /// Stored decisions of one tenant in (source topic, partition, offset, id) order,
    /// at most `limit` (at least 1) at a time, starting after `cursor`.
    async fn decisions(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<AuditDecision>, StoreError>;

    /// Stored verdicts of one tenant; order and paging as [`AuditStore::decisions`].
    async fn verdicts(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<AuditVerdict>, StoreError>;

    /// Stored coordination records of one tenant; order and paging as
    /// [`AuditStore::decisions`].
    async fn coordination_records(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<CoordinationRecord>, StoreError>;

    /// Chain entries of one tenant in (topic, partition, position) order, at most
    /// `limit` (at least 1) at a time, starting after `cursor`.
    async fn chain_entries(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ChainEntry>, StoreError>;

    /// Keeps each of `heads` unless a head of the same chain with more records is
    /// stored. Called once the checkpoint the heads belong to is saved, so a stored head
    /// never reaches past what a restore resumes from.
    async fn save_chain_heads(&self, heads: &[ChainHead]) -> Result<(), StoreError>;

    /// Saves several partitions' checkpoints, each followed by its chain heads (so a
    /// stored head never reaches past a checkpoint a restore could resume from), as
    /// [`AuditStore::save_checkpoint`] and [`AuditStore::save_chain_heads`] would. This
    /// default makes those calls one by one; a store that can make them one durable
    /// commit does (the embedded store: one transaction, one `fsync`, instead of two per
    /// partition).
    async fn save_checkpoints(
        &self,
        saves: &[(Checkpoint, Vec<ChainHead>)],
    ) -> Result<(), StoreError> {
        for (checkpoint, heads) in saves {
            self.save_checkpoint(checkpoint).await?;
            self.save_chain_heads(heads).await?;
        }
        Ok(())
    }

    /// The stored chain heads of one tenant.
    async fn chain_heads(&self, tenant_id: &str) -> Result<Vec<ChainHead>, StoreError>;

    /// Tenants that have any stored record, sorted (for `verify` and summaries).
    async fn tenants(&self) -> Result<Vec<String>, StoreError>;

    /// Cheap reachability check for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// A shared store is a store: the service hands one `Arc<dyn AuditStore>` to every
/// partition worker and the HTTP server.
#[async_trait::async_trait]
impl<S: AuditStore + ?Sized> AuditStore for Arc<S> {
    async fn write(&self, records: Arc<[StoredRecord]>) -> Result<WriteOutcome, StoreError> {
        (**self).write(records).await
    }

    async fn rollout_status(
        &self,
        tenant_id: &str,
        contract_id: &str,
    ) -> Result<Option<RolloutStatus>, StoreError> {
        (**self).rollout_status(tenant_id, contract_id).await
    }

    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        (**self).save_checkpoint(checkpoint).await
    }

    async fn load_checkpoint(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Result<Option<Checkpoint>, StoreError> {
        (**self).load_checkpoint(group, topic, partition).await
    }

    async fn decisions(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<AuditDecision>, StoreError> {
        (**self).decisions(tenant_id, cursor, limit).await
    }

    async fn verdicts(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<AuditVerdict>, StoreError> {
        (**self).verdicts(tenant_id, cursor, limit).await
    }

    async fn coordination_records(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<CoordinationRecord>, StoreError> {
        (**self)
            .coordination_records(tenant_id, cursor, limit)
            .await
    }

    async fn chain_entries(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ChainEntry>, StoreError> {
        (**self).chain_entries(tenant_id, cursor, limit).await
    }

    async fn save_chain_heads(&self, heads: &[ChainHead]) -> Result<(), StoreError> {
        (**self).save_chain_heads(heads).await
    }

    async fn save_checkpoints(
        &self,
        saves: &[(Checkpoint, Vec<ChainHead>)],
    ) -> Result<(), StoreError> {
        (**self).save_checkpoints(saves).await
    }

    async fn chain_heads(&self, tenant_id: &str) -> Result<Vec<ChainHead>, StoreError> {
        (**self).chain_heads(tenant_id).await
    }

    async fn tenants(&self) -> Result<Vec<String>, StoreError> {
        (**self).tenants().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        (**self).ping().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map, Value};

    /// JSON text with object keys sorted (by bytes) at every level: how content digests
    /// were made from a `Value` tree, the oracle of [`AuditRecord::canonical`].
    fn canonical_json(value: &Value) -> String {
        canonical::canonical_json_by(value, KeyOrder::Bytes)
    }

    /// [`AuditRecord::canonical`] as it was made from `serde_json::to_value` trees.
    fn canonical_from_tree(record: &AuditRecord) -> String {
        let mut content = Map::new();
        content.insert("kind".into(), Value::from(record.kind()));
        match record {
            AuditRecord::Decision(d) => {
                content.insert("record".into(), serde_json::to_value(d).unwrap());
            }
            AuditRecord::Verdict {
                verdict,
                occurred_at,
            } => {
                let mut value = serde_json::to_value(verdict).unwrap();
                if let Value::Object(fields) = &mut value {
                    fields.remove("audited_at");
                    fields.remove("duration_ms");
                }
                content.insert("record".into(), value);
                content.insert(
                    "occurred_at".into(),
                    serde_json::to_value(occurred_at).unwrap(),
                );
            }
            AuditRecord::Coordination(c) => {
                content.insert("record".into(), serde_json::to_value(c).unwrap());
            }
        }
        canonical_json(&Value::Object(content))
    }

    #[test]
    fn canonical_content_is_the_text_digests_were_made_from_before() {
        use crate::bench::dataset::{Generator, Mix, RECIPES};
        use crate::pipeline::{operator::Output, Operator, PartitionState};
        use crate::validation::Recipes;

        let config = crate::config::Config::default();
        let operator = Operator::new(&config).expect("operator");
        let recipes = Recipes::parse(RECIPES).expect("recipes");
        let mut state = PartitionState::new(&recipes);
        let start = DateTime::from_timestamp(1_790_000_000, 0).expect("time");
        let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
        let mut dead_letters = 0;
        for record in Generator::new(11, &config.topics, start, Mix::All).take(3_000) {
            for output in operator.process(&record, &recipes, &mut state, Utc::now()) {
                // The published and stored JSON is serde_json's text, written faster.
                let serde_text = match &output {
                    Output::Audit(AuditRecord::Decision(d)) => serde_json::to_string(d),
                    Output::Audit(AuditRecord::Verdict { verdict, .. }) => {
                        serde_json::to_string(verdict)
                    }
                    Output::Audit(AuditRecord::Coordination(c)) => serde_json::to_string(c),
                    Output::DeadLetter(dl) => serde_json::to_string(dl),
                }
                .expect("serializes");
                if let Some(publication) = output.publication(&config.topics) {
                    assert_eq!(publication.payload, serde_text.as_bytes());
                }
                match output {
                    Output::Audit(audit) => {
                        assert_eq!(audit.canonical(), canonical_from_tree(&audit));
                        assert_eq!(audit.to_json().expect("json"), serde_text);
                        *kinds.entry(audit.kind()).or_default() += 1;
                    }
                    Output::DeadLetter(_) => dead_letters += 1,
                }
            }
        }
        assert_eq!(kinds.len(), 3, "every kind of record compared: {kinds:?}");
        assert!(dead_letters > 0, "dead letters compared too");
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let value = json!({"b": 1, "a": {"d": [{"z": 1, "y": 2}], "c": null}});
        assert_eq!(
            canonical_json(&value),
            r#"{"a":{"c":null,"d":[{"y":2,"z":1}]},"b":1}"#
        );
    }

    #[test]
    fn canonical_json_is_the_text_of_the_key_sorted_tree_as_digests_were_made_before() {
        // The digests already stored were made by sorting a copy of the tree and
        // printing it; the one-pass writer must give the very same text.
        fn sorted_copy(value: &Value) -> Value {
            match value {
                Value::Object(fields) => {
                    let mut keys: Vec<&String> = fields.keys().collect();
                    keys.sort();
                    Value::Object(
                        keys.into_iter()
                            .map(|k| (k.clone(), sorted_copy(&fields[k])))
                            .collect(),
                    )
                }
                Value::Array(items) => Value::Array(items.iter().map(sorted_copy).collect()),
                other => other.clone(),
            }
        }
        let value = json!({
            "z\"q": ["line\nbreak", "\u{1}", "tab\t", "back\\slash", "é", "\u{1F600}"],
            "\u{FF21}": 1, "\u{1F600}": 2, "a": {"n": [1, -2, 1.5, 1.0, 1e20, u64::MAX, i64::MIN]},
            "b": [true, false, null, {}, []], "": "",
        });
        assert_eq!(canonical_json(&value), sorted_copy(&value).to_string());
    }

    /// The ScyllaDB schema, in migration order: (file name, text).
    fn cql() -> Vec<(&'static str, &'static str)> {
        scylla::schema::CQL_FILES
            .iter()
            .map(|f| (f.name, f.text))
            .collect()
    }

    /// The file's text without `--` comments.
    fn cql_code(text: &str) -> String {
        scylla::schema::without_comments(text)
    }

    /// The partition key columns of the file's table.
    fn partition_key(code: &str) -> Vec<String> {
        let start = code.find("PRIMARY KEY ((").expect("a compound primary key") + 14;
        let end = start + code[start..].find(')').unwrap();
        code[start..end]
            .split(',')
            .map(|c| c.trim().to_owned())
            .collect()
    }

    #[test]
    fn every_cql_statement_can_run_again() {
        let cql = cql();
        for &(file, text) in &cql {
            let code = cql_code(text);
            let statements: Vec<&str> = code
                .split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect();
            assert_eq!(statements.len(), 1, "{file}: one statement per file");
            assert!(
                statements[0].starts_with("CREATE KEYSPACE IF NOT EXISTS {{keyspace}}")
                    || statements[0].starts_with("CREATE TABLE IF NOT EXISTS {{keyspace}}."),
                "{file}: {}",
                statements[0]
            );
        }
        assert!(cql_code(cql[0].1).contains("WITH replication = {{replication}}"));
    }

    #[test]
    fn every_audit_table_is_partitioned_by_tenant() {
        let cql = cql();
        for (file, text) in &cql[1..5] {
            let key = partition_key(&cql_code(text));
            assert!(key.contains(&"tenant_id".to_owned()), "{file}: {key:?}");
        }
        assert_eq!(
            partition_key(&cql_code(cql[5].1)),
            ["consumer_group", "topic", "kafka_partition"]
        );
        assert_eq!(partition_key(&cql_code(cql[6].1)), ["id"]);
    }

    #[test]
    fn the_coordination_table_has_the_seed_columns() {
        let code = cql_code(cql()[1].1);
        for column in [
            "audit_id uuid",
            "envelope_id text",
            "envelope_class text",
            "decision text",
            "reason text",
            "decision_timestamp timestamp",
            "created_at timestamp",
            "conflicting_envelope_id text",
            "preempting_envelope_id text",
            "active_envelopes_count int",
            "tenant_id text",
            "source_topic text",
            "source_partition int",
            "source_offset bigint",
        ] {
            let (name, kind) = column.split_once(' ').unwrap();
            let found = code.lines().any(|line| {
                let mut words = line.split_whitespace();
                words.next() == Some(name)
                    && words.next().map(|w| w.trim_end_matches(',')) == Some(kind)
            });
            assert!(found, "missing column {column}");
        }
    }

    #[test]
    fn only_unavailable_is_retryable() {
        assert!(StoreError::Unavailable("busy".into()).is_retryable());
        assert!(!StoreError::Permanent("bad schema".into()).is_retryable());
    }
}
