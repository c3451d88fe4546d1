//! The production store: ScyllaDB through its own driver, behind [`AuditStore`].
//!
//! Tables, keys and the queries they serve are explained in `schemas/cql/`; the CQL this
//! module runs is in `scylla/statements.rs`. Guarantees and what they rest on, with no
//! lightweight transaction anywhere:
//!
//! - **Replays are no-ops.** Every write is a plain `INSERT ... USING TIMESTAMP ?` with
//!   the timestamp taken from the data (the record's source event time, never later than
//!   the wall clock: `statements::write_timestamp`), so the same row written again
//!   changes nothing, and every statement is marked idempotent: the driver may retry it
//!   after a timeout.
//! - **The first write of an id wins.** A `write` first reads the id row of each of its
//!   ids (`audit_record_ids`: the stored content digest and where the record is; one
//!   single-partition read per id, run concurrently). Ids already stored, or earlier in
//!   the call, with the same digest are duplicates and are not written again, so a
//!   re-audit keeps the first audit's timings, as in the embedded store. With another
//!   digest the record is a [`Conflict`] and is not written either; the stored copy's
//!   source event is read from its row (one more single-row read, for conflicts only)
//!   before anything of the call is written, so that a failed read fails the call with
//!   nothing written.
//! - **The id row is written last**, after the record's rows (record table, rollout
//!   status) are acknowledged: its presence means the record is stored. A call that
//!   fails half-way leaves records without id rows, which the retry writes again with
//!   the same values and timestamps.
//! - **What is accepted instead of a transaction.** A failed call (unavailable, timed
//!   out) may have stored part of its records; the pipeline retries the whole call until
//!   it succeeds (finding the part stored, as duplicates), and readers may see the part
//!   meanwhile. Two writers that both find an id absent and write different content at
//!   the same moment both succeed, neither sees a conflict, and each cell keeps one of
//!   the two values: that takes two consumers deriving different records for one source
//!   event at once (a rebalance overlap with diverged state).
//! - **Rollout status without read-before-write**: every verdict inserts its own row
//!   into its contract's partition, clustered by (evidence time, audit_id) descending;
//!   the gate reads the first row. The newest evidence wins in any write order, ties
//!   going to the greater audit_id, exactly as in the embedded store.
//! - **Checkpoints only move forward**: written `USING TIMESTAMP next_offset`, so the
//!   greater offset wins by last-write-wins (`schemas/cql/006-stream-checkpoints.cql`).
//! - **Batches stay in one partition**: rows of one table and one partition key go in an
//!   unlogged batch (applied atomically by the replica set that owns the partition), a
//!   few tens of kilobytes at most; everything else is a separate request.
//! - **Bounded load**: every request holds one permit of a semaphore of
//!   `max_in_flight_requests`, shared by every caller of the store.
//! - **Durable on return** at the configured consistency (`LOCAL_QUORUM`: acknowledged
//!   by a quorum of the local datacenter's replicas).
//! - **Errors carry their handling**: timeouts, unavailable or overloaded replicas and
//!   broken connections are [`StoreError::Unavailable`]; bad requests, missing tables,
//!   refused credentials are [`StoreError::Permanent`] (`classify`).
//!
//! ```no_run
//! use audit_stream::config::ScyllaConfig;
//! use audit_stream::store::{scylla, AuditStore, ScyllaStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), audit_stream::store::StoreError> {
//! let config = ScyllaConfig {
//!     nodes: vec!["127.0.0.1:9042".into()],
//!     ..ScyllaConfig::default()
//! };
//! for line in scylla::migrate(&config).await? {
//!     println!("{line}");
//! }
//! let store = ScyllaStore::connect(&config).await?;
//! store.ping().await?;
//! assert!(store.rollout_status("acme", "deploy-api").await?.is_none());
//! # Ok(())
//! # }
//! ```

#[cfg(test)]
pub(crate) mod fixtures;
pub(crate) mod rows;
pub(crate) mod schema;
pub(crate) mod statements;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::try_join_all;
use futures::StreamExt;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{
    ConnectionError, ConnectionPoolError, ConnectionSetupRequestErrorKind, DbError, ExecutionError,
    MetadataError, NewSessionError, NextPageError, NextRowError, PagerExecutionError, PrepareError,
    RequestAttemptError, RequestError,
};
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, Statement};
use scylla::value::{CqlValue, Row};
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, SemaphorePermit};
use uuid::Uuid;

use self::rows::Columns;
use self::rows::StoredId;
use self::statements::{in_keyspace, Listing, Values};
use super::cursor::Cursor;
use super::{
    AuditRecord, AuditStore, ChainEntry, Checkpoint, Conflict, Page, StoreError, StoredRecord,
    WriteOutcome, MAX_PAGE,
};
use crate::chain::ChainHead;
use crate::config::{ScyllaConfig, ScyllaConsistency};
use crate::event::{AuditDecision, AuditVerdict, CoordinationRecord, SourceRef};
use crate::gate::RolloutStatus;

/// Rows of one unlogged batch at most.
const MAX_BATCH_ROWS: usize = 32;

/// Bytes of bound values in one unlogged batch at most: well under ScyllaDB's batch size
/// warning (128 KiB) and failure (1 MiB) thresholds. A single larger row goes alone.
const MAX_BATCH_BYTES: usize = 48 * 1024;

/// Schema changes wait for every node to agree; they get at least this long.
const DDL_TIMEOUT: Duration = Duration::from_secs(60);

/// The driver's consistency level for a configured one.
pub(crate) fn consistency(level: ScyllaConsistency) -> Consistency {
    match level {
        ScyllaConsistency::One => Consistency::One,
        ScyllaConsistency::Two => Consistency::Two,
        ScyllaConsistency::Three => Consistency::Three,
        ScyllaConsistency::Quorum => Consistency::Quorum,
        ScyllaConsistency::All => Consistency::All,
        ScyllaConsistency::LocalQuorum => Consistency::LocalQuorum,
        ScyllaConsistency::LocalOne => Consistency::LocalOne,
    }
}

/// Settings that cannot work, found before connecting.
fn check(config: &ScyllaConfig) -> Result<(), StoreError> {
    let invalid = |m: &str| Err(StoreError::Permanent(format!("store.scylla: {m}")));
    if config.nodes.iter().all(|n| n.trim().is_empty()) {
        return invalid("nodes must name at least one host:port");
    }
    statements::check_keyspace(&config.keyspace)?;
    if config.request_timeout_ms == 0 {
        return invalid("request_timeout_ms must be positive");
    }
    if config.max_in_flight_requests == 0 {
        return invalid("max_in_flight_requests must be positive");
    }
    let has_password = config.password.is_some() || config.password_file.is_some();
    match (&config.username, has_password) {
        (Some(_), false) => invalid("username is set but neither password_file nor a password"),
        (None, true) => invalid("a password is set but no username"),
        _ => Ok(()),
    }
}

/// The password: from the environment if given there, else read from `password_file`.
fn password(config: &ScyllaConfig) -> Result<Option<String>, StoreError> {
    if let Some(password) = &config.password {
        return Ok(Some(password.expose().to_owned()));
    }
    let Some(path) = &config.password_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        StoreError::Permanent(format!(
            "cannot read store.scylla.password_file {}: {e}",
            path.display()
        ))
    })?;
    Ok(Some(text.trim_end_matches(['\r', '\n']).to_owned()))
}

/// A TLS context that trusts the configured CA only and verifies every node's
/// certificate (against the node's IP address: the driver connects by address).
fn tls_context(ca_file: &std::path::Path) -> Result<openssl::ssl::SslConnectorBuilder, StoreError> {
    let failed = |e: openssl::error::ErrorStack| {
        StoreError::Permanent(format!(
            "cannot use store.scylla.tls_ca_file {}: {e}",
            ca_file.display()
        ))
    };
    let mut builder = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client())
        .map_err(failed)?;
    builder.set_ca_file(ca_file).map_err(failed)?;
    builder.set_verify(openssl::ssl::SslVerifyMode::PEER);
    Ok(builder)
}

/// A session to the configured cluster, with no keyspace selected (statements name it).
async fn open_session(config: &ScyllaConfig) -> Result<Session, StoreError> {
    check(config)?;
    let profile = ExecutionProfile::builder()
        .consistency(consistency(config.consistency))
        .request_timeout(Some(Duration::from_millis(config.request_timeout_ms)))
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(
            config
                .nodes
                .iter()
                .map(|n| n.trim())
                .filter(|n| !n.is_empty()),
        )
        .default_execution_profile_handle(profile.into_handle());
    if let (Some(user), Some(password)) = (&config.username, password(config)?) {
        builder = builder.user(user, password);
    }
    if let Some(ca_file) = &config.tls_ca_file {
        builder = builder.tls_context(Some(tls_context(ca_file)?));
    }
    builder.build().await.map_err(|e| {
        store_error(
            classify_new_session(&e),
            format!("cannot connect to {}: {e}", config.nodes.join(",")),
        )
    })
}

/// Creates the keyspace and every table of `schemas/cql/` that does not exist yet, in
/// file order, and returns one line per statement applied, for the operator.
///
/// Idempotent: every statement is `IF NOT EXISTS`, and an existing keyspace keeps its
/// replication. Each statement waits for schema agreement before the next one.
pub async fn migrate(config: &ScyllaConfig) -> Result<Vec<String>, StoreError> {
    let statements = schema::ddl(&config.keyspace, &config.replication)?;
    let session = open_session(config).await?;
    let timeout = Duration::from_millis(config.request_timeout_ms).max(DDL_TIMEOUT);
    let mut applied = Vec::with_capacity(statements.len());
    for ddl in statements {
        let mut statement = Statement::new(ddl.cql.clone());
        statement.set_request_timeout(Some(timeout));
        statement.set_is_idempotent(true);
        session
            .query_unpaged(statement, ())
            .await
            .map_err(|e| store_error(classify(&e), format!("{}: {e}", ddl.file)))?;
        applied.push(ddl.summary());
    }
    Ok(applied)
}

/// Every statement the store runs, prepared once at connect.
struct Prepared {
    insert_decision: PreparedStatement,
    insert_verdict: PreparedStatement,
    insert_coordination: PreparedStatement,
    insert_rollout_status: PreparedStatement,
    insert_record_id: PreparedStatement,
    insert_checkpoint: PreparedStatement,
    select_record_id: PreparedStatement,
    select_decision_source: PreparedStatement,
    select_verdict_source: PreparedStatement,
    select_coordination_source: PreparedStatement,
    select_rollout_status: PreparedStatement,
    select_checkpoint: PreparedStatement,
    insert_chain_entry: PreparedStatement,
    insert_chain_head: PreparedStatement,
    select_chain_heads: PreparedStatement,
    select_tenants: [PreparedStatement; 4],
    chain: PreparedListing,
    decisions: PreparedListing,
    verdicts: PreparedListing,
    coordination: PreparedListing,
    ping: PreparedStatement,
}

struct PreparedListing {
    name: &'static str,
    first_page: PreparedStatement,
    next_page: PreparedStatement,
}

/// Prepares `text` in `keyspace`, idempotent. A missing table means the schema was never
/// migrated: said so, since retrying cannot help.
async fn prepare(
    session: &Session,
    keyspace: &str,
    text: &str,
) -> Result<PreparedStatement, StoreError> {
    let cql = in_keyspace(text, keyspace);
    let mut prepared = session.prepare(cql.as_str()).await.map_err(|e| {
        let handling = classify_prepare(&e);
        let hint = if handling == Handling::Stop {
            " (run `audit-stream migrate` first if the keyspace or a table is missing)"
        } else {
            ""
        };
        store_error(handling, format!("cannot prepare {cql}: {e}{hint}"))
    })?;
    prepared.set_is_idempotent(true);
    Ok(prepared)
}

async fn prepare_listing(
    session: &Session,
    keyspace: &str,
    listing: &Listing,
) -> Result<PreparedListing, StoreError> {
    Ok(PreparedListing {
        name: listing.name,
        first_page: prepare(session, keyspace, listing.first_page).await?,
        next_page: prepare(session, keyspace, listing.next_page).await?,
    })
}

impl Prepared {
    async fn new(session: &Session, keyspace: &str) -> Result<Prepared, StoreError> {
        use statements::*;
        let ks = keyspace;
        Ok(Prepared {
            insert_decision: prepare(session, ks, INSERT_DECISION).await?,
            insert_verdict: prepare(session, ks, INSERT_VERDICT).await?,
            insert_coordination: prepare(session, ks, INSERT_COORDINATION).await?,
            insert_rollout_status: prepare(session, ks, INSERT_ROLLOUT_STATUS).await?,
            insert_record_id: prepare(session, ks, INSERT_RECORD_ID).await?,
            insert_checkpoint: prepare(session, ks, INSERT_CHECKPOINT).await?,
            select_record_id: prepare(session, ks, SELECT_RECORD_ID).await?,
            select_decision_source: prepare(session, ks, SELECT_DECISION_SOURCE).await?,
            select_verdict_source: prepare(session, ks, SELECT_VERDICT_SOURCE).await?,
            select_coordination_source: prepare(session, ks, SELECT_COORDINATION_SOURCE).await?,
            select_rollout_status: prepare(session, ks, SELECT_ROLLOUT_STATUS).await?,
            select_checkpoint: prepare(session, ks, SELECT_CHECKPOINT).await?,
            insert_chain_entry: prepare(session, ks, INSERT_CHAIN_ENTRY).await?,
            insert_chain_head: prepare(session, ks, INSERT_CHAIN_HEAD).await?,
            select_chain_heads: prepare(session, ks, SELECT_CHAIN_HEADS).await?,
            select_tenants: [
                prepare(session, ks, SELECT_TENANTS[0]).await?,
                prepare(session, ks, SELECT_TENANTS[1]).await?,
                prepare(session, ks, SELECT_TENANTS[2]).await?,
                prepare(session, ks, SELECT_TENANTS[3]).await?,
            ],
            chain: prepare_listing(session, ks, &CHAIN).await?,
            decisions: prepare_listing(session, ks, &DECISIONS).await?,
            verdicts: prepare_listing(session, ks, &VERDICTS).await?,
            coordination: prepare_listing(session, ks, &COORDINATION).await?,
            ping: prepare(session, ks, PING).await?,
        })
    }

    fn statement(&self, target: Target) -> &PreparedStatement {
        match target {
            Target::Decisions => &self.insert_decision,
            Target::Verdicts => &self.insert_verdict,
            Target::Coordination => &self.insert_coordination,
            Target::RolloutStatus => &self.insert_rollout_status,
            Target::RecordIds => &self.insert_record_id,
            Target::Chain => &self.insert_chain_entry,
        }
    }
}

/// ScyllaDB behind the [`AuditStore`] trait. One per process: the session pools
/// connections to every node and shard, and is shared by every caller.
pub struct ScyllaStore {
    session: Session,
    prepared: Prepared,
    /// One permit per request in flight: bounds the load this process puts on the
    /// cluster however many partitions write at once.
    permits: Semaphore,
    /// Where the store reads and writes, for messages.
    keyspace: String,
}

impl std::fmt::Debug for ScyllaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaStore")
            .field("keyspace", &self.keyspace)
            .finish_non_exhaustive()
    }
}

impl ScyllaStore {
    /// Connects to the configured cluster and prepares every statement. Fails as
    /// [`StoreError::Permanent`] on settings that cannot work and on a keyspace or table
    /// that does not exist (run [`migrate`] first).
    pub async fn connect(config: &ScyllaConfig) -> Result<ScyllaStore, StoreError> {
        let session = open_session(config).await?;
        let prepared = Prepared::new(&session, &config.keyspace).await?;
        Ok(ScyllaStore {
            session,
            prepared,
            permits: Semaphore::new(config.max_in_flight_requests),
            keyspace: config.keyspace.clone(),
        })
    }

    async fn permit(&self) -> Result<SemaphorePermit<'_>, StoreError> {
        self.permits
            .acquire()
            .await
            .map_err(|_| StoreError::Permanent("scylla store is closed".into()))
    }

    /// Runs one statement that returns at most one page of rows.
    async fn execute(
        &self,
        statement: &PreparedStatement,
        values: Values,
        what: &str,
    ) -> Result<Vec<Columns>, StoreError> {
        let _permit = self.permit().await?;
        let result = self
            .session
            .execute_unpaged(statement, values)
            .await
            .map_err(|e| store_error(classify(&e), format!("{what}: {e}")))?;
        if !result.is_rows() {
            return Ok(Vec::new());
        }
        let rows = result
            .into_rows_result()
            .map_err(|e| StoreError::Permanent(format!("{what}: {e}")))?;
        rows.rows::<Row>()
            .map_err(|e| StoreError::Permanent(format!("{what}: {e}")))?
            .map(|row| {
                row.map(|r| r.columns)
                    .map_err(|e| StoreError::Permanent(format!("{what}: {e}")))
            })
            .collect()
    }

    /// Runs a paged query, holding one permit for the whole of it, and returns at most
    /// `limit` rows.
    async fn query_pages(
        &self,
        statement: &PreparedStatement,
        values: Values,
        limit: usize,
        what: &str,
    ) -> Result<Vec<Columns>, StoreError> {
        let _permit = self.permit().await?;
        let pager = self
            .session
            .execute_iter(statement.clone(), values)
            .await
            .map_err(|e| store_error(classify_pager(&e), format!("{what}: {e}")))?;
        let mut stream = pager
            .rows_stream::<Row>()
            .map_err(|e| StoreError::Permanent(format!("{what}: {e}")))?;
        let mut rows = Vec::new();
        while rows.len() < limit {
            match stream.next().await {
                Some(Ok(row)) => rows.push(row.columns),
                Some(Err(e)) => {
                    return Err(store_error(classify_next_row(&e), format!("{what}: {e}")))
                }
                None => break,
            }
        }
        Ok(rows)
    }

    /// Runs one write: a single statement, or an unlogged batch of rows of one partition.
    async fn run_write(&self, write: Write) -> Result<(), StoreError> {
        let statement = self.prepared.statement(write.target);
        let what = format!("write to {}", write.target.table());
        let _permit = self.permit().await?;
        let result = if write.rows.len() == 1 {
            let values = write.rows.into_iter().next().unwrap_or_default();
            self.session.execute_unpaged(statement, values).await
        } else {
            let mut batch = Batch::new(BatchType::Unlogged);
            for _ in &write.rows {
                batch.append_statement(statement.clone());
            }
            batch.set_is_idempotent(true);
            self.session.batch(&batch, write.rows).await
        };
        result
            .map(|_| ())
            .map_err(|e| store_error(classify(&e), format!("{what}: {e}")))
    }

    async fn stored_id(&self, kind: &str, id: Uuid) -> Result<Option<StoredId>, StoreError> {
        let rows = self
            .execute(
                &self.prepared.select_record_id,
                statements::record_id_key(kind, id),
                "read of stored record ids",
            )
            .await?;
        rows.first().map(|row| rows::record_id(row)).transpose()
    }

    /// The conflict `pending` is, with the stored record's source: the earlier record's
    /// of the call, or read from the stored record's row.
    async fn conflict(&self, pending: &Pending<'_>) -> Result<Conflict, StoreError> {
        let record = pending.record;
        let stored_source = match pending.stored {
            Stored::InCall(source) => source.clone(),
            Stored::InStore(stored) => {
                let select = match record {
                    AuditRecord::Decision(_) => &self.prepared.select_decision_source,
                    AuditRecord::Verdict { .. } => &self.prepared.select_verdict_source,
                    AuditRecord::Coordination(_) => &self.prepared.select_coordination_source,
                };
                let rows = self
                    .execute(
                        select,
                        statements::stored_source_key(stored, record.id()),
                        "read of a stored record's source",
                    )
                    .await?;
                // The id row is written only after the record's row is acknowledged, so
                // the row is there; a replica that has not seen it yet (a consistency
                // below quorum) may answer without it, and a retry asks again.
                let row = rows.first().ok_or_else(|| {
                    StoreError::Unavailable(format!(
                        "scylla: stored {} {} has an id row but its record row at {}/{}/{} \
                         was not found",
                        record.kind(),
                        record.id(),
                        stored.topic,
                        stored.partition,
                        stored.offset
                    ))
                })?;
                SourceRef {
                    topic: stored.topic.clone(),
                    partition: stored.partition,
                    offset: stored.offset,
                    event_id: rows::source_event_id(row)?,
                }
            }
        };
        Ok(Conflict {
            id: record.id(),
            kind: record.kind(),
            stored_source,
            new_source: record.source().clone(),
        })
    }

    /// One page of a listing: `values` binds the listing's statement, `read` maps a row
    /// to its item and the cursor that resumes after it.
    async fn page<T>(
        &self,
        listing: &PreparedListing,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
        values: fn(&str, Option<&Cursor>, i32) -> Values,
        read: impl Fn(&[Option<CqlValue>]) -> Result<(T, Cursor), StoreError>,
    ) -> Result<Page<T>, StoreError> {
        let after = cursor
            .map(|c| Cursor::decode(c, listing.name))
            .transpose()?;
        let limit = limit.clamp(1, MAX_PAGE);
        // One row more than the page holds tells whether another page follows.
        let fetch = limit + 1;
        let fetch_bound = i32::try_from(fetch).unwrap_or(i32::MAX);
        let statement = match after {
            None => &listing.first_page,
            Some(_) => &listing.next_page,
        };
        let values = values(tenant_id, after.as_ref(), fetch_bound);
        let what = format!("read of {}s", listing.name);
        let rows = self.query_pages(statement, values, fetch, &what).await?;
        page_of(&rows, limit, read)
    }

    /// A page of one of the record listings.
    async fn record_page<T: DeserializeOwned>(
        &self,
        listing: &PreparedListing,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<T>, StoreError> {
        let name = listing.name;
        self.page(
            listing,
            tenant_id,
            cursor,
            limit,
            statements::listing_values,
            |row| rows::listing_item(name, row),
        )
        .await
    }
}

/// The page of `limit` items out of up to `limit + 1` listing rows.
fn page_of<T>(
    rows: &[Columns],
    limit: usize,
    read: impl Fn(&[Option<CqlValue>]) -> Result<(T, Cursor), StoreError>,
) -> Result<Page<T>, StoreError> {
    Page::from_rows(rows.iter().collect(), limit, |row| read(row))
}

/// The table a write goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Target {
    Decisions,
    Verdicts,
    Coordination,
    RolloutStatus,
    RecordIds,
    Chain,
}

impl Target {
    fn table(self) -> &'static str {
        match self {
            Target::Decisions => "audit_decisions",
            Target::Verdicts => "audit_verdicts",
            Target::Coordination => "coordination_audit_records",
            Target::RolloutStatus => "rollout_status",
            Target::RecordIds => "audit_record_ids",
            Target::Chain => "audit_chain",
        }
    }
}

/// One request of a `write`: a row, or an unlogged batch of rows of one partition.
#[derive(Debug)]
struct Write {
    target: Target,
    rows: Vec<Values>,
}

/// A record to write, with what its rows are built from.
struct Fresh<'a> {
    record: &'a AuditRecord,
    digest: &'a str,
}

/// Where the copy a conflicting record meets is.
enum Stored<'a> {
    /// Earlier in the same call, written by it: its source is known.
    InCall(&'a SourceRef),
    /// In the store, as its id row says: its source event is read from its row.
    InStore(&'a StoredId),
}

/// A record that conflicts with a stored copy, before the copy's source is known.
struct Pending<'a> {
    record: &'a AuditRecord,
    stored: Stored<'a>,
}

/// What becomes of each record of a call.
struct Plan<'a> {
    fresh: Vec<Fresh<'a>>,
    duplicates: usize,
    conflicts: Vec<Pending<'a>>,
}

/// Sorts the records of a call, given the id rows already stored for their ids (keyed by
/// kind and id). Walks the call in order, as the embedded store's transaction does: a
/// record whose id is neither stored nor earlier in the call is fresh; one that meets a
/// copy with the same digest is a duplicate, with another digest a conflict.
fn plan<'a>(
    records: &[&'a AuditRecord],
    digests: &'a [String],
    stored: &'a HashMap<(&'static str, Uuid), StoredId>,
) -> Plan<'a> {
    let mut seen: HashMap<(&'static str, Uuid), (&str, &SourceRef)> = HashMap::new();
    let mut plan = Plan {
        fresh: Vec::new(),
        duplicates: 0,
        conflicts: Vec::new(),
    };
    for (&record, digest) in records.iter().zip(digests) {
        let key = (record.kind(), record.id());
        let earlier = match (stored.get(&key), seen.get(&key)) {
            (Some(id), _) => Some((id.digest.as_str(), Stored::InStore(id))),
            (None, Some(&(digest, source))) => Some((digest, Stored::InCall(source))),
            (None, None) => None,
        };
        match earlier {
            Some((existing, _)) if existing == digest => plan.duplicates += 1,
            Some((_, copy)) => plan.conflicts.push(Pending {
                record,
                stored: copy,
            }),
            None => {
                seen.insert(key, (digest, record.source()));
                plan.fresh.push(Fresh { record, digest });
            }
        }
    }
    plan
}

/// Groups rows by table and partition, in first-seen order, into requests of at most
/// [`MAX_BATCH_ROWS`] rows and about [`MAX_BATCH_BYTES`].
fn batch_by_partition(rows: Vec<(Target, String, Values)>) -> Vec<Write> {
    let mut groups: Vec<(Target, String, Vec<Values>)> = Vec::new();
    let mut index: HashMap<(Target, String), usize> = HashMap::new();
    for (target, partition, values) in rows {
        match index.get(&(target, partition.clone())) {
            Some(&i) => groups[i].2.push(values),
            None => {
                index.insert((target, partition.clone()), groups.len());
                groups.push((target, partition, vec![values]));
            }
        }
    }
    let mut writes = Vec::new();
    for (target, _, rows) in groups {
        let mut current: Vec<Values> = Vec::new();
        let mut bytes = 0;
        for values in rows {
            let size = statements::values_size(&values);
            if !current.is_empty()
                && (current.len() == MAX_BATCH_ROWS || bytes + size > MAX_BATCH_BYTES)
            {
                writes.push(Write {
                    target,
                    rows: std::mem::take(&mut current),
                });
                bytes = 0;
            }
            bytes += size;
            current.push(values);
        }
        if !current.is_empty() {
            writes.push(Write {
                target,
                rows: current,
            });
        }
    }
    writes
}

/// The requests that store the records' rows (record tables and rollout status), to be
/// acknowledged before their id rows are written.
fn record_writes(fresh: &[Fresh<'_>], now: DateTime<Utc>) -> Result<Vec<Write>, StoreError> {
    let mut rows = Vec::new();
    for Fresh { record, digest } in fresh {
        let json = record.to_json()?;
        let ts = statements::write_timestamp(record.occurred_at(), now);
        let tenant = record.tenant_id().to_owned();
        match record {
            AuditRecord::Decision(d) => rows.push((
                Target::Decisions,
                tenant,
                statements::decision_values(d, digest, &json, ts)?,
            )),
            AuditRecord::Verdict {
                verdict,
                occurred_at,
            } => {
                rows.push((
                    Target::Verdicts,
                    tenant.clone(),
                    statements::verdict_values(verdict, *occurred_at, digest, &json, ts)?,
                ));
                let status = RolloutStatus::from_verdict(verdict, *occurred_at);
                // The partition key (tenant_id, contract_id), as one grouping key.
                let partition = format!("{tenant}\u{0}{}", status.contract_id);
                rows.push((
                    Target::RolloutStatus,
                    partition,
                    statements::rollout_status_values(&status, ts)?,
                ));
            }
            AuditRecord::Coordination(c) => rows.push((
                Target::Coordination,
                tenant,
                statements::coordination_values(c, digest, &json, ts)?,
            )),
        }
    }
    Ok(batch_by_partition(rows))
}

/// The chain entries of the records, batched per tenant.
fn chain_writes(records: &[StoredRecord], now: DateTime<Utc>) -> Result<Vec<Write>, StoreError> {
    let mut rows = Vec::with_capacity(records.len());
    for stored in records {
        let StoredRecord { record, link, .. } = stored;
        let json = stored.json()?;
        let ts = statements::write_timestamp(record.occurred_at(), now);
        rows.push((
            Target::Chain,
            record.tenant_id().to_owned(),
            statements::chain_entry_values(record, link, &json, ts),
        ));
    }
    Ok(batch_by_partition(rows))
}

/// The id rows of the records: one request each (every id is its own partition).
fn id_writes(fresh: &[Fresh<'_>], now: DateTime<Utc>) -> Vec<Write> {
    fresh
        .iter()
        .map(|Fresh { record, digest }| {
            let ts = statements::write_timestamp(record.occurred_at(), now);
            Write {
                target: Target::RecordIds,
                rows: vec![statements::record_id_values(record, digest, ts)],
            }
        })
        .collect()
}

#[async_trait::async_trait]
impl AuditStore for ScyllaStore {
    async fn write(&self, stored_records: Arc<[StoredRecord]>) -> Result<WriteOutcome, StoreError> {
        let stored_records = &stored_records[..];
        if stored_records.is_empty() {
            return Ok(WriteOutcome::default());
        }
        let now = Utc::now();
        let records: Vec<&AuditRecord> = stored_records.iter().map(|s| &s.record).collect();
        let digests: Vec<String> = stored_records
            .iter()
            .map(|s| s.content_digest.clone())
            .collect();

        let mut keys: Vec<(&'static str, Uuid)> =
            records.iter().map(|r| (r.kind(), r.id())).collect();
        keys.sort_unstable();
        keys.dedup();
        let found = try_join_all(keys.iter().map(|&(kind, id)| self.stored_id(kind, id))).await?;
        let stored: HashMap<(&'static str, Uuid), StoredId> = keys
            .into_iter()
            .zip(found)
            .filter_map(|(key, id)| id.map(|id| (key, id)))
            .collect();

        let plan = plan(&records, &digests, &stored);
        let conflicts = try_join_all(plan.conflicts.iter().map(|p| self.conflict(p))).await?;
        let outcome = WriteOutcome {
            written: plan.fresh.len(),
            duplicates: plan.duplicates,
            conflicts,
        };
        // Every record's chain entry, whatever became of the record, with its rows.
        let mut writes = chain_writes(stored_records, now)?;
        writes.extend(record_writes(&plan.fresh, now)?);
        try_join_all(writes.into_iter().map(|w| self.run_write(w))).await?;
        if plan.fresh.is_empty() {
            return Ok(outcome);
        }
        try_join_all(
            id_writes(&plan.fresh, now)
                .into_iter()
                .map(|w| self.run_write(w)),
        )
        .await?;
        Ok(outcome)
    }

    async fn rollout_status(
        &self,
        tenant_id: &str,
        contract_id: &str,
    ) -> Result<Option<RolloutStatus>, StoreError> {
        let rows = self
            .execute(
                &self.prepared.select_rollout_status,
                statements::rollout_status_key(tenant_id, contract_id),
                "read of rollout status",
            )
            .await?;
        rows.first()
            .map(|row| rows::rollout_status(row))
            .transpose()
    }

    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        self.execute(
            &self.prepared.insert_checkpoint,
            statements::checkpoint_values(checkpoint),
            "write of checkpoint",
        )
        .await
        .map(|_| ())
    }

    async fn load_checkpoint(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let rows = self
            .execute(
                &self.prepared.select_checkpoint,
                statements::checkpoint_key(group, topic, partition),
                "read of checkpoint",
            )
            .await?;
        rows.first()
            .map(|row| rows::checkpoint(group, topic, partition, row))
            .transpose()
    }

    async fn decisions(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<AuditDecision>, StoreError> {
        self.record_page(&self.prepared.decisions, tenant_id, cursor, limit)
            .await
    }

    async fn verdicts(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<AuditVerdict>, StoreError> {
        self.record_page(&self.prepared.verdicts, tenant_id, cursor, limit)
            .await
    }

    async fn coordination_records(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<CoordinationRecord>, StoreError> {
        self.record_page(&self.prepared.coordination, tenant_id, cursor, limit)
            .await
    }

    async fn chain_entries(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ChainEntry>, StoreError> {
        // Chain entries here hold their record's JSON: every entry is readable.
        self.page(
            &self.prepared.chain,
            tenant_id,
            cursor,
            limit,
            statements::chain_listing_values,
            |row| rows::chain_entry(tenant_id, row).map(|(e, c)| (ChainEntry::Stored(e), c)),
        )
        .await
    }

    async fn save_chain_heads(&self, heads: &[ChainHead]) -> Result<(), StoreError> {
        try_join_all(heads.iter().map(|head| {
            self.execute(
                &self.prepared.insert_chain_head,
                statements::chain_head_values(head),
                "write of chain head",
            )
        }))
        .await
        .map(|_| ())
    }

    async fn chain_heads(&self, tenant_id: &str) -> Result<Vec<ChainHead>, StoreError> {
        let rows = self
            .query_pages(
                &self.prepared.select_chain_heads,
                statements::tenant_key(tenant_id),
                usize::MAX,
                "read of chain heads",
            )
            .await?;
        rows.iter()
            .map(|row| rows::chain_head(tenant_id, row))
            .collect()
    }

    /// A scan of the record tables' partition keys: one row per tenant and table, so
    /// its cost grows with the number of tenants, not of records.
    async fn tenants(&self) -> Result<Vec<String>, StoreError> {
        let mut tenants = BTreeSet::new();
        for statement in &self.prepared.select_tenants {
            let rows = self
                .query_pages(statement, Vec::new(), usize::MAX, "read of tenants")
                .await?;
            for row in rows {
                tenants.insert(rows::tenant(&row)?);
            }
        }
        Ok(tenants.into_iter().collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.execute(&self.prepared.ping, Vec::new(), "ping")
            .await
            .map(|_| ())
    }
}

// ---------------------------------------------------------------------------------------
// Errors: what the caller does about a driver error.
// ---------------------------------------------------------------------------------------

/// Whether a failed call may succeed later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handling {
    /// The cluster is slow, overloaded, partly down or unreachable: back off and retry.
    Retry,
    /// The request, the schema or the credentials are wrong: retrying cannot help.
    Stop,
}

fn store_error(handling: Handling, message: String) -> StoreError {
    let message = format!("scylla: {message}");
    match handling {
        Handling::Retry => StoreError::Unavailable(message),
        Handling::Stop => StoreError::Permanent(message),
    }
}

/// An error the database returned.
pub(crate) fn classify_db(error: &DbError) -> Handling {
    match error {
        DbError::Unavailable { .. }
        | DbError::Overloaded
        | DbError::IsBootstrapping
        | DbError::ReadTimeout { .. }
        | DbError::WriteTimeout { .. }
        | DbError::ReadFailure { .. }
        | DbError::WriteFailure { .. }
        | DbError::RateLimitReached { .. }
        | DbError::TruncateError
        | DbError::Unprepared { .. }
        // A server-side failure is the server's condition, not the request's: the
        // pipeline waits (and says so) rather than stopping with records in flight.
        | DbError::ServerError => Handling::Retry,
        // Syntax, invalid request (missing keyspace or table included), credentials,
        // permissions, configuration, protocol, and anything unknown.
        _ => Handling::Stop,
    }
}

fn classify_attempt(error: &RequestAttemptError) -> Handling {
    match error {
        RequestAttemptError::DbError(db, _) => classify_db(db),
        RequestAttemptError::BrokenConnectionError(_)
        | RequestAttemptError::UnableToAllocStreamId => Handling::Retry,
        _ => Handling::Stop,
    }
}

fn classify_connection(error: &ConnectionError) -> Handling {
    match error {
        ConnectionError::ConnectionSetupRequestError(setup) => match &setup.error {
            ConnectionSetupRequestErrorKind::DbError(db, _) => classify_db(db),
            ConnectionSetupRequestErrorKind::BrokenConnection(_)
            | ConnectionSetupRequestErrorKind::UnableToAllocStreamId => Handling::Retry,
            _ => Handling::Stop,
        },
        _ => Handling::Retry,
    }
}

fn classify_pool(error: &ConnectionPoolError) -> Handling {
    match error {
        ConnectionPoolError::Broken {
            last_connection_error,
        } => classify_connection(last_connection_error),
        _ => Handling::Retry,
    }
}

fn classify_metadata(error: &MetadataError) -> Handling {
    match error {
        MetadataError::ConnectionPoolError(e) => classify_pool(e),
        _ => Handling::Retry,
    }
}

fn classify_prepare(error: &PrepareError) -> Handling {
    match error {
        PrepareError::ConnectionPoolError(e) => classify_pool(e),
        PrepareError::AllAttemptsFailed { first_attempt } => classify_attempt(first_attempt),
        _ => Handling::Stop,
    }
}

fn classify_request(error: &RequestError) -> Handling {
    match error {
        RequestError::LastAttemptError(e) => classify_attempt(e),
        RequestError::ConnectionPoolError(e) => classify_pool(e),
        _ => Handling::Retry,
    }
}

fn classify_pager(error: &PagerExecutionError) -> Handling {
    match error {
        PagerExecutionError::PrepareError(e) => classify_prepare(e),
        PagerExecutionError::NextPageError(NextPageError::RequestFailure(e)) => classify_request(e),
        PagerExecutionError::SchemaAgreementError(_) => Handling::Retry,
        _ => Handling::Stop,
    }
}

fn classify_next_row(error: &NextRowError) -> Handling {
    match error {
        NextRowError::NextPageError(NextPageError::RequestFailure(e)) => classify_request(e),
        _ => Handling::Stop,
    }
}

fn classify_new_session(error: &NewSessionError) -> Handling {
    match error {
        // Names that do not resolve yet (a cluster still starting in compose) may later.
        NewSessionError::FailedToResolveAnyHostname(_) => Handling::Retry,
        NewSessionError::MetadataError(e) => classify_metadata(e),
        _ => Handling::Stop,
    }
}

/// What to do about a failed request: retry on timeouts, unavailable or overloaded
/// replicas and connection trouble; stop on anything the request itself got wrong.
pub(crate) fn classify(error: &ExecutionError) -> Handling {
    match error {
        ExecutionError::RequestTimeout(_)
        | ExecutionError::EmptyPlan
        | ExecutionError::SchemaAgreementError(_)
        | ExecutionError::MetadataError(_) => Handling::Retry,
        ExecutionError::ConnectionPoolError(e) => classify_pool(e),
        ExecutionError::LastAttemptError(e) => classify_attempt(e),
        ExecutionError::PrepareError(e) => classify_prepare(e),
        _ => Handling::Stop,
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use crate::config::{Config, Password};
    use figment::providers::Format;
    use scylla::errors::BadQuery;
    use scylla::value::{CqlValue, MaybeUnset};

    #[test]
    fn configured_consistency_levels_parse_and_map_to_the_driver() {
        let cases = [
            ("ONE", Consistency::One),
            ("TWO", Consistency::Two),
            ("THREE", Consistency::Three),
            ("QUORUM", Consistency::Quorum),
            ("ALL", Consistency::All),
            ("LOCAL_QUORUM", Consistency::LocalQuorum),
            ("LOCAL_ONE", Consistency::LocalOne),
        ];
        for (name, driver) in cases {
            let level: ScyllaConsistency = serde_json::from_value(name.into()).unwrap();
            assert_eq!(level.as_str(), name);
            assert_eq!(consistency(level), driver);
        }
        for refused in [
            "ANY",
            "EACH_QUORUM",
            "SERIAL",
            "LOCAL_SERIAL",
            "local_quorum",
            "",
        ] {
            let parsed = serde_json::from_value::<ScyllaConsistency>(refused.into());
            assert!(parsed.is_err(), "{refused} is not a usable consistency");
        }
        assert_eq!(
            ScyllaConfig::default().consistency,
            ScyllaConsistency::LocalQuorum
        );
    }

    /// The configuration as `Config::load` builds it: defaults, a TOML file, then
    /// variables with `prefix`.
    #[allow(clippy::result_large_err)] // figment's error type
    fn load(toml: &str, prefix: &str) -> Result<Config, figment::Error> {
        figment::Figment::from(figment::providers::Serialized::defaults(Config::default()))
            .merge(figment::providers::Toml::string(toml))
            .merge(figment::providers::Env::prefixed(prefix).split("__"))
            .extract()
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's test jail returns its own error type
    fn the_scylla_section_loads_and_the_password_comes_from_the_environment_only() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("AUDIT_STREAM_S1__STORE__SCYLLA__PASSWORD", "s3cret");
            jail.set_env(
                "AUDIT_STREAM_S1__STORE__SCYLLA__NODES",
                r#"["scylla-1:9042","scylla-2:9042"]"#,
            );
            let config = load(
                "[store.scylla]\nconsistency = \"QUORUM\"\nusername = \"audit\"\n",
                "AUDIT_STREAM_S1__",
            )
            .expect("valid");
            let scylla = &config.store.scylla;
            assert_eq!(scylla.nodes, ["scylla-1:9042", "scylla-2:9042"]);
            assert_eq!(scylla.consistency, ScyllaConsistency::Quorum);
            assert_eq!(scylla.password, Some(Password::new("s3cret")));
            assert!(
                !format!("{config:?}").contains("s3cret"),
                "Debug is redacted"
            );
            let json = serde_json::to_string(&config).unwrap();
            assert!(
                !json.contains("s3cret") && !json.contains("\"password\""),
                "{json}"
            );

            // figment reads 0123 as a number: refused, not turned into "123".
            jail.set_env("AUDIT_STREAM_S2__STORE__SCYLLA__PASSWORD", "0123");
            assert!(load("", "AUDIT_STREAM_S2__").is_err());
            jail.set_env("AUDIT_STREAM_S3__STORE__SCYLLA__PASSWORD", "\"0123\"");
            let quoted = load("", "AUDIT_STREAM_S3__").expect("a quoted password");
            assert_eq!(quoted.store.scylla.password, Some(Password::new("0123")));
            Ok(())
        });
        let refused = load(
            "[store.scylla]\nconsistency = \"ANY\"\n",
            "AUDIT_STREAM_S4__",
        );
        assert!(
            refused.is_err(),
            "a write-only consistency is refused at load"
        );
    }

    #[test]
    fn settings_that_cannot_work_are_refused_before_connecting() {
        check(&ScyllaConfig::default()).unwrap();
        let broken = [
            ScyllaConfig {
                nodes: vec![" ".into()],
                ..ScyllaConfig::default()
            },
            ScyllaConfig {
                keyspace: "audit-stream".into(),
                ..ScyllaConfig::default()
            },
            ScyllaConfig {
                request_timeout_ms: 0,
                ..ScyllaConfig::default()
            },
            ScyllaConfig {
                max_in_flight_requests: 0,
                ..ScyllaConfig::default()
            },
            ScyllaConfig {
                username: Some("audit".into()),
                ..ScyllaConfig::default()
            },
            ScyllaConfig {
                password: Some(Password::new("p")),
                ..ScyllaConfig::default()
            },
        ];
        for config in broken {
            let err = check(&config).unwrap_err();
            assert!(!err.is_retryable(), "{err}");
        }
    }

    #[test]
    fn the_password_comes_from_the_environment_first_then_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "from file\n").unwrap();
        let mut config = ScyllaConfig {
            username: Some("audit".into()),
            password_file: Some(file),
            ..ScyllaConfig::default()
        };
        assert_eq!(password(&config).unwrap().as_deref(), Some("from file"));
        config.password = Some(Password::new("from env"));
        assert_eq!(password(&config).unwrap().as_deref(), Some("from env"));
        config.password = None;
        config.password_file = Some(dir.path().join("missing"));
        assert!(!password(&config).unwrap_err().is_retryable());
        assert_eq!(password(&ScyllaConfig::default()).unwrap(), None);
    }

    #[test]
    fn a_missing_ca_file_is_a_permanent_error() {
        let Err(err) = tls_context(std::path::Path::new("/nonexistent/ca.pem")) else {
            panic!("a missing CA file is refused");
        };
        assert!(!err.is_retryable(), "{err}");
        assert!(err.to_string().contains("tls_ca_file"), "{err}");
    }

    fn db(error: DbError) -> ExecutionError {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(error, "message".into()))
    }

    #[test]
    fn timeouts_unavailable_overload_and_lost_connections_are_retried() {
        use scylla::errors::WriteType;
        let c = Consistency::LocalQuorum;
        for error in [
            ExecutionError::RequestTimeout(Duration::from_secs(10)),
            db(DbError::Unavailable {
                consistency: c,
                required: 2,
                alive: 1,
            }),
            db(DbError::Overloaded),
            db(DbError::IsBootstrapping),
            db(DbError::ReadTimeout {
                consistency: c,
                received: 1,
                required: 2,
                data_present: false,
            }),
            db(DbError::WriteTimeout {
                consistency: c,
                received: 1,
                required: 2,
                write_type: WriteType::UnloggedBatch,
            }),
            ExecutionError::LastAttemptError(RequestAttemptError::UnableToAllocStreamId),
            ExecutionError::ConnectionPoolError(ConnectionPoolError::Initializing),
            ExecutionError::ConnectionPoolError(ConnectionPoolError::Broken {
                last_connection_error: ConnectionError::ConnectTimeout,
            }),
            ExecutionError::EmptyPlan,
        ] {
            assert_eq!(classify(&error), Handling::Retry, "{error}");
            assert!(store_error(classify(&error), error.to_string()).is_retryable());
        }
    }

    #[test]
    fn bad_requests_missing_tables_and_refused_credentials_stop() {
        for error in [
            db(DbError::SyntaxError),
            db(DbError::Invalid),
            db(DbError::Unauthorized),
            db(DbError::AuthenticationError),
            db(DbError::ConfigError),
            db(DbError::ProtocolError),
            ExecutionError::BadQuery(BadQuery::TooManyQueriesInBatchStatement(70_000)),
            ExecutionError::PrepareError(PrepareError::AllAttemptsFailed {
                first_attempt: RequestAttemptError::DbError(
                    DbError::Invalid,
                    "unconfigured table audit_decisions".into(),
                ),
            }),
        ] {
            assert_eq!(classify(&error), Handling::Stop, "{error}");
            assert!(matches!(
                store_error(classify(&error), error.to_string()),
                StoreError::Permanent(_)
            ));
        }
        assert_eq!(
            classify_new_session(&NewSessionError::EmptyKnownNodesList),
            Handling::Stop
        );
        assert_eq!(
            classify_new_session(&NewSessionError::FailedToResolveAnyHostname(vec![
                "scylla:9042".into()
            ])),
            Handling::Retry
        );
    }

    fn digests(records: &[AuditRecord]) -> Vec<String> {
        records.iter().map(|r| r.content_digest()).collect()
    }

    fn ids(fresh: &[Fresh<'_>]) -> Vec<Uuid> {
        fresh.iter().map(|f| f.record.id()).collect()
    }

    /// The id row of `record` as stored, with `digest`.
    fn stored_id(record: &AuditRecord, digest: &str) -> ((&'static str, Uuid), StoredId) {
        let source = record.source();
        (
            (record.kind(), record.id()),
            StoredId {
                digest: digest.to_owned(),
                tenant_id: record.tenant_id().to_owned(),
                topic: source.topic.clone(),
                partition: source.partition,
                offset: source.offset,
            },
        )
    }

    #[test]
    fn new_records_are_written_and_duplicates_counted() {
        let a = AuditRecord::Decision(decision("acme", 1));
        let b = verdict_record("acme", "deploy-api", 2);
        let records = vec![a.clone(), b.clone(), a.clone()];
        let d = digests(&records);
        let none = HashMap::new();
        let planned = plan(&records.iter().collect::<Vec<_>>(), &d, &none);
        assert_eq!(ids(&planned.fresh), [a.id(), b.id()]);
        assert_eq!(
            planned.duplicates, 1,
            "a repeat within the call is a duplicate"
        );
        assert!(planned.conflicts.is_empty());

        let stored = HashMap::from([stored_id(&a, &d[0])]);
        let planned = plan(&records.iter().collect::<Vec<_>>(), &d, &stored);
        assert_eq!(ids(&planned.fresh), [b.id()]);
        assert_eq!(planned.duplicates, 2, "a stored id with the same digest");
        assert!(planned.conflicts.is_empty());
    }

    #[test]
    fn conflicts_are_kept_in_call_order_and_the_rest_is_written() {
        let a = decision("acme", 1);
        let mut a2 = a.clone();
        a2.message = "other".into();
        let b = AuditRecord::Coordination(coordination("acme", 2));
        let mut b2 = coordination("acme", 2);
        b2.reason = "other".into();
        // A re-published event: the same id, derived again at another offset.
        b2.source.offset = 40;
        let c = AuditRecord::Decision(decision("acme", 3));
        let records = vec![
            AuditRecord::Decision(a.clone()),
            AuditRecord::Coordination(b2.clone()),
            c.clone(),
            AuditRecord::Decision(a2),
        ];
        let d = digests(&records);
        let stored = HashMap::from([stored_id(&b, &b.content_digest())]);
        let planned = plan(&records.iter().collect::<Vec<_>>(), &d, &stored);
        assert_eq!(ids(&planned.fresh), [a.event_id, c.id()]);
        assert_eq!(planned.duplicates, 0);
        let conflicts: Vec<(Uuid, &str)> = planned
            .conflicts
            .iter()
            .map(|p| (p.record.id(), p.record.kind()))
            .collect();
        assert_eq!(
            conflicts,
            [(b.id(), "coordination"), (a.event_id, "decision")]
        );
        match &planned.conflicts[0].stored {
            Stored::InStore(id) => {
                assert_eq!(*id, &stored[&("coordination", b.id())]);
                assert_eq!(id.offset, 2);
            }
            Stored::InCall(_) => panic!("the stored copy is in the store"),
        }
        match planned.conflicts[1].stored {
            Stored::InCall(source) => assert_eq!(source, &a.source),
            Stored::InStore(_) => panic!("the copy is the call's first version"),
        }
    }

    #[test]
    fn ids_are_unique_per_kind_as_in_the_record_tables() {
        let a = AuditRecord::Decision(decision("acme", 1));
        let ((_, id), row) = stored_id(&a, "another digest");
        let stored = HashMap::from([(("verdict", id), row)]);
        let records = vec![a.clone()];
        let d = digests(&records);
        let planned = plan(&records.iter().collect::<Vec<_>>(), &d, &stored);
        assert_eq!(ids(&planned.fresh), [a.id()]);
        assert!(planned.conflicts.is_empty());
    }

    #[test]
    fn rows_are_batched_per_table_and_partition_only() {
        let records = vec![
            AuditRecord::Decision(decision("acme", 1)),
            AuditRecord::Decision(decision("globex", 2)),
            AuditRecord::Decision(decision("acme", 3)),
            verdict_record("acme", "deploy-api", 4),
            verdict_record("acme", "deploy-db", 5),
            verdict_record("acme", "deploy-api", 6),
            AuditRecord::Coordination(coordination("acme", 7)),
        ];
        let d = digests(&records);
        let none = HashMap::new();
        let fresh = plan(&records.iter().collect::<Vec<_>>(), &d, &none).fresh;
        let writes = record_writes(&fresh, at(1_000)).unwrap();
        let shape: Vec<(Target, usize)> = writes.iter().map(|w| (w.target, w.rows.len())).collect();
        assert_eq!(
            shape,
            [
                (Target::Decisions, 2),     // acme
                (Target::Decisions, 1),     // globex
                (Target::Verdicts, 3),      // acme
                (Target::RolloutStatus, 2), // acme, deploy-api
                (Target::RolloutStatus, 1), // acme, deploy-db
                (Target::Coordination, 1),
            ]
        );
        let ids = id_writes(&fresh, at(1_000));
        assert_eq!(ids.len(), records.len());
        assert!(ids
            .iter()
            .all(|w| w.target == Target::RecordIds && w.rows.len() == 1));
    }

    #[test]
    fn large_partitions_are_split_into_small_batches() {
        let rows = (0..100)
            .map(|i| {
                (
                    Target::Decisions,
                    "acme".to_string(),
                    vec![MaybeUnset::Set(CqlValue::Text(format!("{i}")))],
                )
            })
            .collect();
        let writes = batch_by_partition(rows);
        assert_eq!(
            writes.iter().map(|w| w.rows.len()).collect::<Vec<_>>(),
            [32, 32, 32, 4]
        );

        let big = "x".repeat(MAX_BATCH_BYTES / 2);
        let rows = (0..5)
            .map(|_| {
                (
                    Target::Verdicts,
                    "acme".to_string(),
                    vec![MaybeUnset::Set(CqlValue::Text(big.clone()))],
                )
            })
            .collect();
        let writes = batch_by_partition(rows);
        assert!(writes.iter().all(|w| w.rows.len() <= 2), "{writes:?}");
        assert_eq!(writes.iter().map(|w| w.rows.len()).sum::<usize>(), 5);
        let huge = vec![(
            Target::Verdicts,
            "acme".to_string(),
            vec![MaybeUnset::Set(CqlValue::Text(
                "x".repeat(MAX_BATCH_BYTES * 3),
            ))],
        )];
        assert_eq!(batch_by_partition(huge).len(), 1, "a large row goes alone");
    }

    #[test]
    fn record_rows_carry_the_data_time_as_write_timestamp() {
        let record = AuditRecord::Decision(decision("acme", 1));
        let records = [record.clone()];
        let d = digests(&records);
        let none = HashMap::new();
        let fresh = plan(&records.iter().collect::<Vec<_>>(), &d, &none).fresh;
        let now = at(1_000);
        let ts = statements::write_timestamp(at(1), now);
        for write in record_writes(&fresh, now)
            .unwrap()
            .into_iter()
            .chain(id_writes(&fresh, now))
        {
            assert!(matches!(
                write.rows[0].last(),
                Some(MaybeUnset::Set(CqlValue::BigInt(t))) if *t == ts
            ));
        }
    }

    fn decision_row(
        row: &[Option<CqlValue>],
    ) -> Result<(AuditDecision, crate::store::cursor::Cursor), StoreError> {
        rows::listing_item("decision", row)
    }

    fn listing_row(offset: i64) -> Columns {
        let d = decision("acme", offset);
        vec![
            Some(CqlValue::Text(d.source.topic.clone())),
            Some(CqlValue::Int(d.source.partition)),
            Some(CqlValue::BigInt(offset)),
            Some(CqlValue::Uuid(d.event_id)),
            Some(CqlValue::Text(serde_json::to_string(&d).unwrap())),
        ]
    }

    #[test]
    fn a_page_has_a_cursor_only_when_another_row_follows() {
        let rows: Vec<Columns> = (1..=3).map(listing_row).collect();
        let page: Page<AuditDecision> = page_of(&rows, 2, decision_row).unwrap();
        assert_eq!(
            page.items
                .iter()
                .map(|d| d.source.offset)
                .collect::<Vec<_>>(),
            [1, 2]
        );
        let cursor = Cursor::decode(page.next.as_deref().unwrap(), "decision").unwrap();
        assert_eq!(cursor.offset, 2);
        assert_eq!(cursor.id, decision("acme", 2).event_id);

        let last: Page<AuditDecision> = page_of(&rows, 3, decision_row).unwrap();
        assert_eq!(last.items.len(), 3);
        assert_eq!(last.next, None);
        let empty: Page<AuditDecision> = page_of(&[], 3, decision_row).unwrap();
        assert_eq!(
            empty,
            Page {
                items: vec![],
                next: None
            }
        );
    }
}
