//! The embedded store: SQLite in one file (or in memory), for `demo` and single-machine
//! use, behind the same [`AuditStore`] trait as the production store.
//!
//! Guarantees and what they rest on:
//! - **Durable on return**: WAL journal with `synchronous = FULL`, so every committed
//!   transaction is on disk before the call returns, and survives a process crash or a
//!   power loss.
//! - **All or nothing per call**: a `write` is one `BEGIN IMMEDIATE` transaction; any
//!   error drops it, which rolls it back. Duplicates and conflicts are not errors: the
//!   transaction stores the call's new records and commits.
//! - **Never blocks the runtime**: rusqlite is blocking, so every call runs on tokio's
//!   blocking pool, with the writer's connection behind a std `Mutex` (SQLite
//!   serializes writers anyway). A file store's reads go through a read-only connection
//!   of their own, which sees the last commit without waiting for the one in progress.
//!   A caller that stops waiting (a timeout) does not cancel the call: it still
//!   completes or rolls back, which is harmless because writes are idempotent.
//! - **Commits mostly only append to the log**: a file store's write-ahead log is
//!   copied back into the database by a connection of its own, on a thread of its own,
//!   right after each commit (a passive checkpoint: it never blocks the writer). Small,
//!   frequent copies keep each of the database's syncs short, and with them the
//!   commits that wait behind them on the same disk. The log starts over only once all
//!   of it is copied, which under steady writes the thread never quite reaches; so a
//!   commit that finds the log at [`WRITER_COPIES_LOG_AFTER_PAGES`] copies the little
//!   the thread has not, and the log starts over. The log file grows to about that size
//!   (32 MiB) and stays there.
//!
//! Records are only ever inserted (`ON CONFLICT DO NOTHING`: the first write of an id
//! wins). Each row keeps the record's full JSON (what reads return), a digest of its
//! content (what a repeated write is compared against), and the columns needed for
//! ordering and lookup.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{
    params, Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior,
};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::cursor::Cursor;
use super::{
    AuditRecord, AuditStore, ChainEntry, Checkpoint, Conflict, Page, StoreError, StoredRecord,
    WriteOutcome, MAX_PAGE,
};
use crate::chain::{ChainHead, ChainKey, ChainLink};
use crate::event::{AuditDecision, AuditVerdict, CoordinationRecord, SourceRef};
use crate::gate::{evidence_order, EvidenceOrder, RolloutStatus};

/// How long a call waits for another connection's lock (another process on the same
/// file) before it fails as [`StoreError::Unavailable`] and the caller backs off.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an open that finds the file busy is tried again.
const OPEN_RETRY_FOR: Duration = Duration::from_secs(30);
/// The connection's page cache: 64 MiB (a negative `cache_size` is KiB).
const CACHE_SIZE_KIB: i64 = -64 * 1024;
/// Pages of write-ahead log (4 KiB each) at which the writer's commits copy back what
/// the log-copying thread has not yet copied, so that the log can start over. SQLite's
/// default, at which the writer copied the whole log itself before the thread, is 1,000.
const WRITER_COPIES_LOG_AFTER_PAGES: i64 = 8_000;

/// A numbered schema change. Applied in order, each in its own transaction together with
/// the new `user_version`, so a crash mid-migration leaves the previous version intact.
struct Migration {
    version: i64,
    sql: &'static str,
}

/// The schema, oldest first. Never edit an applied migration: add the next number.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sql: r#"
-- Validation decisions (SPEC §3), listed per tenant in source order.
CREATE TABLE IF NOT EXISTS audit_decisions (
    event_id         TEXT    NOT NULL PRIMARY KEY,
    tenant_id        TEXT    NOT NULL,
    source_topic     TEXT    NOT NULL,
    source_partition INTEGER NOT NULL,
    source_offset    INTEGER NOT NULL,
    source_event_id  TEXT    NOT NULL,
    counter_key      TEXT    NOT NULL,
    process          TEXT    NOT NULL,
    level            TEXT    NOT NULL CHECK (level IN ('S', 'A', 'B', 'C')),
    decision         TEXT    NOT NULL CHECK (decision IN ('STOP', 'ABORT', 'BLOCK', 'WARN')),
    occurred_at      TEXT    NOT NULL,
    content_digest   TEXT    NOT NULL,
    record           TEXT    NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS audit_decisions_by_tenant
    ON audit_decisions (tenant_id, source_topic, source_partition, source_offset, event_id);
CREATE INDEX IF NOT EXISTS audit_decisions_by_key
    ON audit_decisions (tenant_id, counter_key);

-- Contract verdicts (SPEC §4); occurred_at is the execution event's.
CREATE TABLE IF NOT EXISTS audit_verdicts (
    audit_id          TEXT    NOT NULL PRIMARY KEY,
    event_id          TEXT    NOT NULL,
    tenant_id         TEXT    NOT NULL,
    source_topic      TEXT    NOT NULL,
    source_partition  INTEGER NOT NULL,
    source_offset     INTEGER NOT NULL,
    source_event_id   TEXT    NOT NULL,
    job_id            TEXT    NOT NULL,
    contract_id       TEXT    NOT NULL,
    contract_revision INTEGER NOT NULL,
    verdict           TEXT    NOT NULL CHECK (verdict IN ('PASS', 'FAIL', 'INCONCLUSIVE')),
    occurred_at       TEXT    NOT NULL,
    audited_at        TEXT    NOT NULL,
    content_digest    TEXT    NOT NULL,
    record            TEXT    NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS audit_verdicts_by_tenant
    ON audit_verdicts (tenant_id, source_topic, source_partition, source_offset, audit_id);
CREATE INDEX IF NOT EXISTS audit_verdicts_by_contract
    ON audit_verdicts (tenant_id, contract_id);

-- Coordination decisions (seed 002): the seed's columns, upper-case values enforced.
CREATE TABLE IF NOT EXISTS coordination_audit_records (
    audit_id                TEXT    NOT NULL PRIMARY KEY,
    tenant_id               TEXT    NOT NULL,
    envelope_id             TEXT    NOT NULL,
    envelope_class          TEXT    NOT NULL
        CHECK (envelope_class IN ('SAFETY', 'RELIABILITY', 'COST', 'PERFORMANCE')),
    decision                TEXT    NOT NULL CHECK (decision IN ('APPLIED', 'REJECTED', 'PREEMPTED')),
    reason                  TEXT    NOT NULL,
    decision_timestamp      TEXT    NOT NULL,
    created_at              TEXT    NOT NULL,
    conflicting_envelope_id TEXT,
    preempting_envelope_id  TEXT,
    active_envelopes_count  INTEGER NOT NULL CHECK (active_envelopes_count >= 0),
    source_topic            TEXT    NOT NULL,
    source_partition        INTEGER NOT NULL,
    source_offset           INTEGER NOT NULL,
    source_event_id         TEXT    NOT NULL,
    content_digest          TEXT    NOT NULL,
    record                  TEXT    NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS coordination_audit_records_by_tenant
    ON coordination_audit_records (tenant_id, source_topic, source_partition, source_offset, audit_id);
CREATE INDEX IF NOT EXISTS coordination_audit_records_by_envelope
    ON coordination_audit_records (tenant_id, envelope_id);

-- Latest verdict per contract: the only row ever replaced, and only by newer evidence.
CREATE TABLE IF NOT EXISTS rollout_status (
    tenant_id         TEXT    NOT NULL,
    contract_id       TEXT    NOT NULL,
    contract_revision INTEGER NOT NULL,
    job_id            TEXT    NOT NULL,
    verdict           TEXT    NOT NULL CHECK (verdict IN ('PASS', 'FAIL', 'INCONCLUSIVE')),
    audit_id          TEXT    NOT NULL,
    occurred_at       TEXT    NOT NULL,
    audited_at        TEXT    NOT NULL,
    status            TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, contract_id)
) STRICT;

-- Operator state per input partition, with the first offset it does not cover.
CREATE TABLE IF NOT EXISTS stream_checkpoints (
    consumer_group  TEXT    NOT NULL,
    topic           TEXT    NOT NULL,
    kafka_partition INTEGER NOT NULL,
    next_offset     INTEGER NOT NULL,
    state           BLOB    NOT NULL,
    saved_at        TEXT    NOT NULL,
    PRIMARY KEY (consumer_group, topic, kafka_partition)
) STRICT;
"#,
    },
    Migration {
        version: 2,
        sql: r#"
-- The hash chain (crate::chain): one entry per derived audit record, conflicts included,
-- keyed by its chain and position. `record` is the record's JSON as derived, `occurred_at`
-- a verdict's evidence time (NULL for other kinds).
CREATE TABLE IF NOT EXISTS audit_chain (
    tenant_id        TEXT    NOT NULL,
    source_topic     TEXT    NOT NULL,
    source_partition INTEGER NOT NULL,
    chain_seq        INTEGER NOT NULL CHECK (chain_seq >= 0),
    kind             TEXT    NOT NULL CHECK (kind IN ('decision', 'verdict', 'coordination')),
    record_id        TEXT    NOT NULL,
    source_offset    INTEGER NOT NULL,
    prev_hash        TEXT    NOT NULL,
    hash             TEXT    NOT NULL,
    occurred_at      TEXT,
    record           TEXT    NOT NULL,
    PRIMARY KEY (tenant_id, source_topic, source_partition, chain_seq)
) STRICT;

-- The last checkpointed head of each chain: how far a verifier must find it.
CREATE TABLE IF NOT EXISTS chain_heads (
    tenant_id        TEXT    NOT NULL,
    source_topic     TEXT    NOT NULL,
    source_partition INTEGER NOT NULL,
    records          INTEGER NOT NULL CHECK (records >= 0),
    last_hash        TEXT    NOT NULL,
    first_offset     INTEGER NOT NULL,
    last_offset      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, source_topic, source_partition)
) STRICT;
"#,
    },
    Migration {
        version: 3,
        sql: r#"
-- Indexes no query of the service reads (listings go by tenant and source position, the
-- gate by rollout_status's key). Each insert dirtied a page of each, spread over many
-- keys: 8 % of the writer's time per audit record once the database has grown.
DROP INDEX IF EXISTS audit_decisions_by_key;
DROP INDEX IF EXISTS audit_verdicts_by_contract;
DROP INDEX IF EXISTS coordination_audit_records_by_envelope;
"#,
    },
    Migration {
        version: 4,
        sql: r#"
-- A chain entry keeps its record's JSON only when the record's own row does not hold
-- that text (a duplicate or a conflict): NULL means "the row with record_id in the
-- kind's table". A verdict's JSON is most of its bytes, and it took a page in each
-- table. SQLite cannot drop a NOT NULL constraint: the table is rebuilt, its entries
-- kept as they are.
CREATE TABLE audit_chain_v4 (
    tenant_id        TEXT    NOT NULL,
    source_topic     TEXT    NOT NULL,
    source_partition INTEGER NOT NULL,
    chain_seq        INTEGER NOT NULL CHECK (chain_seq >= 0),
    kind             TEXT    NOT NULL CHECK (kind IN ('decision', 'verdict', 'coordination')),
    record_id        TEXT    NOT NULL,
    source_offset    INTEGER NOT NULL,
    prev_hash        TEXT    NOT NULL,
    hash             TEXT    NOT NULL,
    occurred_at      TEXT,
    record           TEXT,
    PRIMARY KEY (tenant_id, source_topic, source_partition, chain_seq)
) STRICT;
INSERT INTO audit_chain_v4 SELECT * FROM audit_chain;
DROP TABLE audit_chain;
ALTER TABLE audit_chain_v4 RENAME TO audit_chain;
"#,
    },
];

/// SQLite behind the [`AuditStore`] trait. Cheap to clone: clones share the connections.
#[derive(Clone)]
pub struct EmbeddedStore {
    /// Every write, one transaction at a time.
    conn: Arc<Mutex<Connection>>,
    /// Reads: listings, the gate's status, checkpoints and chain heads. A connection of
    /// its own on a database file, so that a read sees the last commit without waiting
    /// for the one in progress (the write-ahead log lets both go on at once); the
    /// writer's connection for an in-memory store.
    reader: Arc<Mutex<Connection>>,
    /// Wakes the log-copying thread after a write (a file store's); a wake-up already
    /// pending stands for this one too. The thread ends when the last clone is dropped.
    log_written: Option<SyncSender<()>>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) the database file at `path` and brings its schema up
    /// to date. Blocking: call it at startup, before serving.
    pub fn open(path: &Path) -> Result<EmbeddedStore, StoreError> {
        // Processes opening one file together (instances started at once) can meet
        // SQLITE_BUSY where SQLite does not wait on its busy handler (switching to the
        // write-ahead log, recovering it): such an open is tried again for a while.
        let deadline = std::time::Instant::now() + OPEN_RETRY_FOR;
        let mut delay = Duration::from_millis(20);
        loop {
            match EmbeddedStore::open_once(path) {
                Err(error) if error.is_retryable() && std::time::Instant::now() < deadline => {
                    tracing::info!(%error, path = %path.display(), "Embedded store busy at open; trying again");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_millis(500));
                }
                result => return result,
            }
        }
    }

    fn open_once(path: &Path) -> Result<EmbeddedStore, StoreError> {
        let conn = Connection::open(path).map_err(|e| {
            StoreError::Permanent(format!(
                "cannot open embedded store {}: {e}",
                path.display()
            ))
        })?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(classify)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Permanent(format!(
                "embedded store {} cannot use a write-ahead log (journal mode is {mode})",
                path.display()
            )));
        }
        let conn = Arc::new(Mutex::new(EmbeddedStore::prepare(conn)?));
        let reader = Arc::new(Mutex::new(EmbeddedStore::open_reader(path)?));
        let log_written = Some(EmbeddedStore::copy_log_in_background(&conn, path)?);
        Ok(EmbeddedStore {
            conn,
            reader,
            log_written,
        })
    }

    /// The connection reads go through, on the file the writer has brought up to date.
    fn open_reader(path: &Path) -> Result<Connection, StoreError> {
        let reader = Connection::open(path).map_err(classify)?;
        reader.busy_timeout(BUSY_TIMEOUT).map_err(classify)?;
        reader
            .pragma_update(None, "query_only", true)
            .map_err(classify)?;
        Ok(reader)
    }

    /// Starts the thread that copies the write-ahead log back into the database, on a
    /// connection of its own, each time the returned sender wakes it, and leaves the
    /// writer's commits to copy only what the thread has not when the log reaches its
    /// bound. The thread ends when every sender is dropped. Copying the log was a third
    /// of the writer's time per audit record, all of it on the path of every record
    /// whose commit happened to copy. Copying right after each commit rather than every
    /// 100 ms took the bench's p99 latency from about 60 ms to about 42 ms (BENCHMARKS.md):
    /// a copy's sync of the database holds up the writer's sync of the log, the longer
    /// the more pages it copied.
    fn copy_log_in_background(
        writer: &Mutex<Connection>,
        path: &Path,
    ) -> Result<SyncSender<()>, StoreError> {
        let copier = Connection::open(path).map_err(classify)?;
        // Passive checkpoints never wait on a lock; FULL syncs the database after a copy.
        copier
            .pragma_update(None, "synchronous", "FULL")
            .map_err(classify)?;
        writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pragma_update(None, "wal_autocheckpoint", WRITER_COPIES_LOG_AFTER_PAGES)
            .map_err(classify)?;
        let (log_written, wake) = std::sync::mpsc::sync_channel(1);
        let path = path.display().to_string();
        std::thread::Builder::new()
            .name("store-log-copy".into())
            .spawn(move || {
                let mut failing = false;
                // Once at the start: whatever an earlier process or the migrations left.
                let mut woken = Ok(());
                while woken.is_ok() {
                    match copier.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        Ok(()) if failing => {
                            tracing::info!(path, "Write-ahead log copied back into the embedded store again");
                            failing = false;
                        }
                        Ok(()) => {}
                        Err(error) if !failing => {
                            tracing::warn!(%error, path, "Write-ahead log not copied back into the embedded store; the writer's commits copy it once it reaches its bound");
                            failing = true;
                        }
                        Err(_) => {}
                    }
                    woken = wake.recv();
                }
            })
            .map_err(|e| {
                StoreError::Permanent(format!("cannot start the embedded store's log copying: {e}"))
            })?;
        Ok(log_written)
    }

    /// A store that lives as long as the value: for tests and a one-shot `demo`.
    pub fn in_memory() -> Result<EmbeddedStore, StoreError> {
        let conn = Connection::open_in_memory().map_err(classify)?;
        // One connection: another would open a database of its own.
        let conn = Arc::new(Mutex::new(EmbeddedStore::prepare(conn)?));
        Ok(EmbeddedStore {
            reader: Arc::clone(&conn),
            conn,
            log_written: None,
        })
    }

    /// The writer's connection, its settings made and the schema migrated.
    fn prepare(mut conn: Connection) -> Result<Connection, StoreError> {
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(classify)?;
        // A batch of audit records touches the tables, their indexes and the chain; with
        // SQLite's default 2 MiB cache, pages were read back from disk and spilled to the
        // log in the middle of a transaction.
        conn.pragma_update(None, "cache_size", CACHE_SIZE_KIB)
            .map_err(classify)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(classify)?;
        migrate(&mut conn)?;
        Ok(conn)
    }

    /// Runs `f` with the writer's connection on the blocking pool.
    async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let log_written = self.log_written.clone();
        run_on(Arc::clone(&self.conn), move |conn| {
            let result = f(conn);
            if let Some(log_written) = log_written {
                // Full: a copy is already due, and it will take this write's pages too.
                let _ = log_written.try_send(());
            }
            result
        })
        .await
    }

    /// Runs `f`, which only reads, with the reading connection on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        run_on(Arc::clone(&self.reader), f).await
    }

    async fn page<T>(
        &self,
        listing: &'static Listing,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<T>, StoreError>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let after = cursor
            .map(|c| Cursor::decode(c, listing.name))
            .transpose()?;
        let tenant_id = tenant_id.to_owned();
        self.read(move |conn| read_page(conn, listing, &tenant_id, after, limit))
            .await
    }
}

/// Runs `f` with `conn` on the blocking pool.
async fn run_on<T, F>(conn: Arc<Mutex<Connection>>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        // A call that panicked dropped its transaction, which rolled it back: the
        // connection is consistent, so the poison flag carries no information.
        let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut conn)
    })
    .await
    .map_err(|e| {
        if e.is_panic() {
            StoreError::Permanent(format!("embedded store call panicked: {e}"))
        } else {
            StoreError::Unavailable(format!("embedded store call was cancelled: {e}"))
        }
    })?
}

/// Brings the schema to the latest version. Idempotent, and safe against another
/// process migrating the same file at the same time (each step re-reads the version
/// under the write lock).
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let latest = MIGRATIONS.last().map_or(0, |m| m.version);
    for migration in MIGRATIONS {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(classify)?;
        let current: i64 = tx
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(classify)?;
        if current > latest {
            return Err(StoreError::Permanent(format!(
                "embedded store schema version {current} is newer than this build's {latest}"
            )));
        }
        if current >= migration.version {
            continue;
        }
        tx.execute_batch(migration.sql).map_err(classify)?;
        tx.pragma_update(None, "user_version", migration.version)
            .map_err(classify)?;
        tx.commit().map_err(classify)?;
    }
    Ok(())
}

/// Busy, locked, I/O and full-disk failures pass (or an operator can fix them without
/// restarting): retry. Anything else is a bug, a corrupt file or a bad schema: stop.
fn classify(error: rusqlite::Error) -> StoreError {
    let retryable = matches!(
        error.sqlite_error_code(),
        Some(
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::FileLockingProtocolFailed
                | ErrorCode::OperationInterrupted
        )
    );
    if retryable {
        StoreError::Unavailable(format!("embedded store: {error}"))
    } else {
        StoreError::Permanent(format!("embedded store: {error}"))
    }
}

/// RFC 3339 in UTC with as many fractional digits as needed: reads back exactly.
fn timestamp(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Inserts the records whose id is new in one transaction, in call order, so that a
/// repeat of an id within the call meets its first occurrence as the stored copy.
fn write_records(
    conn: &mut Connection,
    records: &[StoredRecord],
) -> Result<WriteOutcome, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(classify)?;
    let mut outcome = WriteOutcome::default();
    // The newest verdict written per contract. The stored status only ever moves to newer
    // evidence, so of a call's verdicts only the newest of each contract can move it: one
    // read and write of its status per contract, not per verdict.
    let mut newest: BTreeMap<(&str, &str), (EvidenceOrder, &AuditVerdict)> = BTreeMap::new();
    for stored in records {
        let StoredRecord {
            record,
            link,
            content_digest: digest,
            ..
        } = stored;
        let json = stored.json()?;
        let inserted = match record {
            AuditRecord::Decision(d) => insert_decision(&tx, d, digest, &json),
            AuditRecord::Verdict {
                verdict,
                occurred_at,
            } => insert_verdict(&tx, verdict, occurred_at, digest, &json),
            AuditRecord::Coordination(c) => insert_coordination(&tx, c, digest, &json),
        }
        .map_err(classify)?;
        // A record written here has its JSON in its row; the entry of one whose id was
        // stored already (a duplicate, a conflict) keeps its own.
        let entry_json = (inserted == 0).then_some(&*json);
        insert_chain_entry(&tx, record, link, entry_json).map_err(classify)?;
        if inserted == 0 {
            let stored = stored_copy(&tx, record)?;
            if stored.digest == *digest {
                outcome.duplicates += 1;
            } else {
                outcome.conflicts.push(Conflict {
                    id: record.id(),
                    kind: record.kind(),
                    stored_source: stored.source,
                    new_source: record.source().clone(),
                });
            }
            continue;
        }
        outcome.written += 1;
        // Only a verdict written here moves the status: a duplicate moved it when it was
        // written (in the same transaction as its row), a conflict is not stored.
        if let AuditRecord::Verdict {
            verdict,
            occurred_at,
        } = record
        {
            let key = (verdict.tenant_id.as_str(), verdict.contract_id.as_str());
            let order = evidence_order(*occurred_at, verdict.audit_id);
            if newest.get(&key).is_none_or(|(kept, _)| order > *kept) {
                newest.insert(key, (order, verdict));
            }
        }
    }
    for ((occurred_at, _), verdict) in newest.into_values() {
        advance_rollout_status(&tx, &RolloutStatus::from_verdict(verdict, occurred_at))?;
    }
    tx.commit().map_err(classify)?;
    Ok(outcome)
}

/// Keeps `checkpoint` unless a greater `next_offset` is stored for its partition.
fn upsert_checkpoint(conn: &Connection, checkpoint: &Checkpoint) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO stream_checkpoints (consumer_group, topic, kafka_partition,
             next_offset, state, saved_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (consumer_group, topic, kafka_partition) DO UPDATE SET
             next_offset = excluded.next_offset,
             state = excluded.state,
             saved_at = excluded.saved_at
         WHERE excluded.next_offset >= stream_checkpoints.next_offset",
    )?
    .execute(params![
        checkpoint.group,
        checkpoint.topic,
        checkpoint.partition,
        checkpoint.next_offset,
        checkpoint.state,
        timestamp(&checkpoint.saved_at),
    ])?;
    Ok(())
}

/// Keeps each of `heads` unless a head of the same chain with more records is stored.
fn upsert_chain_heads(conn: &Connection, heads: &[ChainHead]) -> rusqlite::Result<()> {
    for head in heads {
        conn.prepare_cached(
            "INSERT INTO chain_heads (tenant_id, source_topic, source_partition,
                 records, last_hash, first_offset, last_offset)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (tenant_id, source_topic, source_partition) DO UPDATE SET
                 records = excluded.records,
                 last_hash = excluded.last_hash,
                 first_offset = excluded.first_offset,
                 last_offset = excluded.last_offset
             WHERE excluded.records > chain_heads.records",
        )?
        .execute(params![
            head.key.tenant_id,
            head.key.topic,
            head.key.partition,
            i64::try_from(head.records).unwrap_or(i64::MAX),
            head.last_hash,
            head.first_offset,
            head.last_offset,
        ])?;
    }
    Ok(())
}

fn insert_decision(
    tx: &Transaction<'_>,
    d: &AuditDecision,
    digest: &str,
    json: &str,
) -> rusqlite::Result<usize> {
    tx.prepare_cached(
        "INSERT INTO audit_decisions (event_id, tenant_id, source_topic, source_partition,
             source_offset, source_event_id, counter_key, process, level, decision,
             occurred_at, content_digest, record)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (event_id) DO NOTHING",
    )?
    .execute(params![
        d.event_id.to_string(),
        d.tenant_id,
        d.source.topic,
        d.source.partition,
        d.source.offset,
        d.source.event_id.to_string(),
        d.key,
        d.process,
        d.level.as_str(),
        d.decision.as_str(),
        timestamp(&d.occurred_at),
        digest,
        json,
    ])
}

fn insert_verdict(
    tx: &Transaction<'_>,
    v: &AuditVerdict,
    occurred_at: &DateTime<Utc>,
    digest: &str,
    json: &str,
) -> rusqlite::Result<usize> {
    tx.prepare_cached(
        "INSERT INTO audit_verdicts (audit_id, event_id, tenant_id, source_topic,
             source_partition, source_offset, source_event_id, job_id, contract_id,
             contract_revision, verdict, occurred_at, audited_at, content_digest, record)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
         ON CONFLICT (audit_id) DO NOTHING",
    )?
    .execute(params![
        v.audit_id.to_string(),
        v.event_id.to_string(),
        v.tenant_id,
        v.source.topic,
        v.source.partition,
        v.source.offset,
        v.source.event_id.to_string(),
        v.job_id,
        v.contract_id,
        v.contract_revision,
        v.verdict.as_str(),
        timestamp(occurred_at),
        timestamp(&v.audited_at),
        digest,
        json,
    ])
}

fn insert_coordination(
    tx: &Transaction<'_>,
    c: &CoordinationRecord,
    digest: &str,
    json: &str,
) -> rusqlite::Result<usize> {
    tx.prepare_cached(
        "INSERT INTO coordination_audit_records (audit_id, tenant_id, envelope_id,
             envelope_class, decision, reason, decision_timestamp, created_at,
             conflicting_envelope_id, preempting_envelope_id, active_envelopes_count,
             source_topic, source_partition, source_offset, source_event_id,
             content_digest, record)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
         ON CONFLICT (audit_id) DO NOTHING",
    )?
    .execute(params![
        c.audit_id.to_string(),
        c.tenant_id,
        c.envelope_id,
        c.envelope_class.as_str(),
        c.decision.as_str(),
        c.reason,
        timestamp(&c.decision_timestamp),
        timestamp(&c.created_at),
        c.conflicting_envelope_id,
        c.preempting_envelope_id,
        c.active_envelopes_count,
        c.source.topic,
        c.source.partition,
        c.source.offset,
        c.source.event_id.to_string(),
        digest,
        json,
    ])
}

fn insert_chain_entry(
    tx: &Transaction<'_>,
    record: &AuditRecord,
    link: &ChainLink,
    json: Option<&str>,
) -> rusqlite::Result<usize> {
    let source = record.source();
    let occurred_at = match record {
        AuditRecord::Verdict { occurred_at, .. } => Some(timestamp(occurred_at)),
        _ => None,
    };
    tx.prepare_cached(
        "INSERT INTO audit_chain (tenant_id, source_topic, source_partition, chain_seq, kind,
             record_id, source_offset, prev_hash, hash, occurred_at, record)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (tenant_id, source_topic, source_partition, chain_seq) DO NOTHING",
    )?
    .execute(params![
        record.tenant_id(),
        source.topic,
        source.partition,
        i64::try_from(link.seq).unwrap_or(i64::MAX),
        record.kind(),
        record.id().to_string(),
        source.offset,
        link.prev_hash,
        link.hash,
        occurred_at,
        json,
    ])
}

/// What a repeated id is compared with, and reported against.
struct StoredCopy {
    digest: String,
    source: SourceRef,
}

/// The stored record with `record`'s id (it exists: the insert of the id did nothing).
fn stored_copy(tx: &Transaction<'_>, record: &AuditRecord) -> Result<StoredCopy, StoreError> {
    let sql = match record {
        AuditRecord::Decision(_) => {
            "SELECT content_digest, source_topic, source_partition, source_offset,
                    source_event_id
             FROM audit_decisions WHERE event_id = ?1"
        }
        AuditRecord::Verdict { .. } => {
            "SELECT content_digest, source_topic, source_partition, source_offset,
                    source_event_id
             FROM audit_verdicts WHERE audit_id = ?1"
        }
        AuditRecord::Coordination(_) => {
            "SELECT content_digest, source_topic, source_partition, source_offset,
                    source_event_id
             FROM coordination_audit_records WHERE audit_id = ?1"
        }
    };
    let (digest, topic, partition, offset, event_id): (String, String, i32, i64, String) = tx
        .prepare_cached(sql)
        .and_then(|mut stmt| {
            stmt.query_row([record.id().to_string()], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            })
        })
        .map_err(classify)?;
    let event_id = Uuid::parse_str(&event_id).map_err(|e| {
        StoreError::Permanent(format!(
            "stored {} {} has a source event id that is not a uuid: {e}",
            record.kind(),
            record.id()
        ))
    })?;
    Ok(StoredCopy {
        digest,
        source: SourceRef {
            topic,
            partition,
            offset,
            event_id,
        },
    })
}

/// Replaces the contract's rollout status when `status` is on newer evidence: greater
/// `occurred_at`, ties broken by the greater `audit_id`. Any write order converges on
/// the same row.
fn advance_rollout_status(tx: &Transaction<'_>, status: &RolloutStatus) -> Result<(), StoreError> {
    // The stored status's place in the evidence order, from its columns: reading them
    // costs less than parsing the status's JSON, once per contract and batch.
    let stored: Option<(String, String)> = tx
        .prepare_cached(
            "SELECT occurred_at, audit_id FROM rollout_status
             WHERE tenant_id = ?1 AND contract_id = ?2",
        )
        .and_then(|mut stmt| {
            stmt.query_row(params![status.tenant_id, status.contract_id], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()
        })
        .map_err(classify)?;
    if let Some((occurred_at, audit_id)) = stored {
        let unreadable = |e: String| {
            StoreError::Permanent(format!("stored rollout status is not readable: {e}"))
        };
        let occurred_at = DateTime::parse_from_rfc3339(&occurred_at)
            .map_err(|e| unreadable(e.to_string()))?
            .with_timezone(&Utc);
        let audit_id = Uuid::parse_str(&audit_id).map_err(|e| unreadable(e.to_string()))?;
        if status.evidence_order() <= evidence_order(occurred_at, audit_id) {
            return Ok(());
        }
    }
    let json = serde_json::to_string(status)
        .map_err(|e| StoreError::Permanent(format!("cannot serialize rollout status: {e}")))?;
    tx.prepare_cached(
        "INSERT INTO rollout_status (tenant_id, contract_id, contract_revision, job_id,
             verdict, audit_id, occurred_at, audited_at, status)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (tenant_id, contract_id) DO UPDATE SET
             contract_revision = excluded.contract_revision,
             job_id = excluded.job_id,
             verdict = excluded.verdict,
             audit_id = excluded.audit_id,
             occurred_at = excluded.occurred_at,
             audited_at = excluded.audited_at,
             status = excluded.status",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            status.tenant_id,
            status.contract_id,
            status.contract_revision,
            status.job_id,
            status.verdict.as_str(),
            status.audit_id.to_string(),
            timestamp(&status.occurred_at),
            timestamp(&status.audited_at),
            json,
        ])
    })
    .map_err(classify)?;
    Ok(())
}

/// A record listing: its cursor name, table and id column (fixed names, never input).
struct Listing {
    name: &'static str,
    table: &'static str,
    id_column: &'static str,
}

const DECISIONS: Listing = Listing {
    name: "decision",
    table: "audit_decisions",
    id_column: "event_id",
};
const VERDICTS: Listing = Listing {
    name: "verdict",
    table: "audit_verdicts",
    id_column: "audit_id",
};
const COORDINATION: Listing = Listing {
    name: "coordination",
    table: "coordination_audit_records",
    id_column: "audit_id",
};

/// One page in (source topic, partition, offset, id) order, after `after`. Reads one
/// row more than the page holds to know whether another page follows.
fn read_page<T: DeserializeOwned>(
    conn: &mut Connection,
    listing: &Listing,
    tenant_id: &str,
    after: Option<Cursor>,
    limit: usize,
) -> Result<Page<T>, StoreError> {
    let limit = limit.clamp(1, MAX_PAGE);
    let Listing {
        name,
        table,
        id_column,
    } = listing;
    let columns = format!("source_topic, source_partition, source_offset, {id_column}");
    let sql = match after {
        None => format!(
            "SELECT {columns}, record FROM {table} WHERE tenant_id = ?1
             ORDER BY {columns} LIMIT ?2"
        ),
        Some(_) => format!(
            "SELECT {columns}, record FROM {table} WHERE tenant_id = ?1
               AND ({columns}) > (?3, ?4, ?5, ?6)
             ORDER BY {columns} LIMIT ?2"
        ),
    };
    let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(&sql).map_err(classify)?;
    let map_row = |row: &rusqlite::Row<'_>| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, i32>(1)?,
            row.get::<_, i64>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, String>(4)?,
        ))
    };
    let rows = match &after {
        None => stmt.query_map(params![tenant_id, fetch], map_row),
        Some(c) => stmt.query_map(
            params![
                tenant_id,
                fetch,
                c.topic,
                c.partition,
                c.offset,
                c.id.to_string()
            ],
            map_row,
        ),
    }
    .map_err(classify)?
    .collect::<rusqlite::Result<Vec<_>>>()
    .map_err(classify)?;

    let more = rows.len() > limit;
    let mut items = Vec::with_capacity(limit.min(rows.len()));
    let mut last = None;
    for (topic, partition, offset, id, json) in rows.into_iter().take(limit) {
        let item: T = serde_json::from_str(&json).map_err(|e| {
            StoreError::Permanent(format!("stored {name} {id} is not readable: {e}"))
        })?;
        items.push(item);
        last = Some((topic, partition, offset, id));
    }
    let next = match last {
        Some((topic, partition, offset, id)) if more => {
            let id = Uuid::parse_str(&id).map_err(|e| {
                StoreError::Permanent(format!("stored {name} id {id} is not a uuid: {e}"))
            })?;
            Some(
                Cursor {
                    listing: (*name).to_owned(),
                    topic,
                    partition,
                    offset,
                    id,
                }
                .encode(),
            )
        }
        _ => None,
    };
    Ok(Page { items, next })
}

/// One page of chain entries in (topic, partition, position) order, after `after` (whose
/// `offset` is the position). An entry without JSON of its own takes its record's from
/// the record's row; where that row is gone, the entry comes back as
/// [`ChainEntry::RecordMissing`].
fn read_chain_page(
    conn: &mut Connection,
    tenant_id: &str,
    after: Option<Cursor>,
    limit: usize,
) -> Result<Page<ChainEntry>, StoreError> {
    let limit = limit.clamp(1, MAX_PAGE);
    let sql = chain_page_sql(after.is_some());
    let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(&sql).map_err(classify)?;
    type Row = (
        String,
        i32,
        i64,
        String,
        String,
        String,
        String,
        Option<String>,
        Option<String>,
    );
    let map_row = |row: &rusqlite::Row<'_>| -> rusqlite::Result<Row> {
        Ok((
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
            row.get(5)?,
            row.get(6)?,
            row.get(7)?,
            row.get(8)?,
        ))
    };
    let rows = match &after {
        None => stmt.query_map(params![tenant_id, fetch], map_row),
        Some(c) => stmt.query_map(
            params![tenant_id, fetch, c.topic, c.partition, c.offset],
            map_row,
        ),
    }
    .map_err(classify)?
    .collect::<rusqlite::Result<Vec<_>>>()
    .map_err(classify)?;

    Page::from_rows(rows, limit, |row| {
        let (topic, partition, seq, kind, id, prev_hash, hash, occurred_at, json) = row;
        let unreadable = |e: String| {
            StoreError::Permanent(format!(
                "chain entry {tenant_id}@{topic}/{partition} #{seq} ({kind} {id}): {e}"
            ))
        };
        let link = ChainLink {
            seq: u64::try_from(seq).unwrap_or(0),
            prev_hash,
            hash,
        };
        let entry = match json {
            Some(json) => {
                let occurred_at = occurred_at
                    .map(|t| DateTime::parse_from_rfc3339(&t).map(|t| t.with_timezone(&Utc)))
                    .transpose()
                    .map_err(|e| unreadable(e.to_string()))?;
                let record = AuditRecord::from_chain_fields(&kind, &json, occurred_at)
                    .map_err(unreadable)?;
                ChainEntry::Stored(StoredRecord::new(record, link))
            }
            None => ChainEntry::RecordMissing {
                key: ChainKey {
                    tenant_id: tenant_id.to_owned(),
                    topic: topic.clone(),
                    partition,
                },
                kind: match kind.as_str() {
                    "decision" => "decision",
                    "verdict" => "verdict",
                    "coordination" => "coordination",
                    other => return Err(unreadable(format!("unknown kind {other:?}"))),
                },
                id: Uuid::parse_str(&id).map_err(|e| unreadable(e.to_string()))?,
                link,
            },
        };
        let cursor = Cursor {
            listing: "chain".to_owned(),
            topic,
            partition,
            offset: seq,
            id: Uuid::nil(),
        };
        Ok((entry, cursor))
    })
}

/// The query of a page of chain entries (`?1` tenant, `?2` rows, `?3..?5` the position
/// after which the page starts): the chain's primary key, then one lookup by id in the
/// record's table for an entry without JSON of its own.
fn chain_page_sql(after: bool) -> String {
    let select = "SELECT c.source_topic, c.source_partition, c.chain_seq, c.kind, c.record_id,
                         c.prev_hash, c.hash, c.occurred_at,
                         COALESCE(c.record, d.record, v.record, r.record)
                  FROM audit_chain c
                  LEFT JOIN audit_decisions d
                      ON c.record IS NULL AND c.kind = 'decision' AND d.event_id = c.record_id
                  LEFT JOIN audit_verdicts v
                      ON c.record IS NULL AND c.kind = 'verdict' AND v.audit_id = c.record_id
                  LEFT JOIN coordination_audit_records r
                      ON c.record IS NULL AND c.kind = 'coordination'
                         AND r.audit_id = c.record_id
                  WHERE c.tenant_id = ?1";
    let order = "ORDER BY c.source_topic, c.source_partition, c.chain_seq LIMIT ?2";
    if after {
        format!(
            "{select} AND (c.source_topic, c.source_partition, c.chain_seq) > (?3, ?4, ?5)
             {order}"
        )
    } else {
        format!("{select} {order}")
    }
}

#[async_trait::async_trait]
impl AuditStore for EmbeddedStore {
    async fn write(&self, records: Arc<[StoredRecord]>) -> Result<WriteOutcome, StoreError> {
        if records.is_empty() {
            return Ok(WriteOutcome::default());
        }
        self.call(move |conn| write_records(conn, &records)).await
    }

    async fn rollout_status(
        &self,
        tenant_id: &str,
        contract_id: &str,
    ) -> Result<Option<RolloutStatus>, StoreError> {
        let (tenant_id, contract_id) = (tenant_id.to_owned(), contract_id.to_owned());
        self.read(move |conn| {
            let json: Option<String> = conn
                .prepare_cached(
                    "SELECT status FROM rollout_status WHERE tenant_id = ?1 AND contract_id = ?2",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(params![tenant_id, contract_id], |row| row.get(0))
                        .optional()
                })
                .map_err(classify)?;
            json.map(|json| {
                serde_json::from_str(&json).map_err(|e| {
                    StoreError::Permanent(format!("stored rollout status is not readable: {e}"))
                })
            })
            .transpose()
        })
        .await
    }

    async fn save_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let checkpoint = checkpoint.clone();
        self.call(move |conn| upsert_checkpoint(conn, &checkpoint).map_err(classify))
            .await
    }

    async fn save_checkpoints(
        &self,
        saves: &[(Checkpoint, Vec<ChainHead>)],
    ) -> Result<(), StoreError> {
        let saves = saves.to_vec();
        self.call(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(classify)?;
            for (checkpoint, heads) in &saves {
                upsert_checkpoint(&tx, checkpoint).map_err(classify)?;
                upsert_chain_heads(&tx, heads).map_err(classify)?;
            }
            tx.commit().map_err(classify)
        })
        .await
    }

    async fn load_checkpoint(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Result<Option<Checkpoint>, StoreError> {
        let (group, topic) = (group.to_owned(), topic.to_owned());
        self.read(move |conn| {
            let row: Option<(i64, Vec<u8>, String)> = conn
                .prepare_cached(
                    "SELECT next_offset, state, saved_at FROM stream_checkpoints
                     WHERE consumer_group = ?1 AND topic = ?2 AND kafka_partition = ?3",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(params![group, topic, partition], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                    })
                    .optional()
                })
                .map_err(classify)?;
            let Some((next_offset, state, saved_at)) = row else {
                return Ok(None);
            };
            let saved_at = DateTime::parse_from_rfc3339(&saved_at)
                .map_err(|e| {
                    StoreError::Permanent(format!("stored checkpoint time is not readable: {e}"))
                })?
                .with_timezone(&Utc);
            Ok(Some(Checkpoint {
                group,
                topic,
                partition,
                next_offset,
                state,
                saved_at,
            }))
        })
        .await
    }

    async fn decisions(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<AuditDecision>, StoreError> {
        self.page(&DECISIONS, tenant_id, cursor, limit).await
    }

    async fn verdicts(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<AuditVerdict>, StoreError> {
        self.page(&VERDICTS, tenant_id, cursor, limit).await
    }

    async fn coordination_records(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<CoordinationRecord>, StoreError> {
        self.page(&COORDINATION, tenant_id, cursor, limit).await
    }

    async fn chain_entries(
        &self,
        tenant_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<ChainEntry>, StoreError> {
        let after = cursor.map(|c| Cursor::decode(c, "chain")).transpose()?;
        let tenant_id = tenant_id.to_owned();
        self.read(move |conn| read_chain_page(conn, &tenant_id, after, limit))
            .await
    }

    async fn save_chain_heads(&self, heads: &[ChainHead]) -> Result<(), StoreError> {
        let heads = heads.to_vec();
        self.call(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(classify)?;
            upsert_chain_heads(&tx, &heads).map_err(classify)?;
            tx.commit().map_err(classify)
        })
        .await
    }

    async fn chain_heads(&self, tenant_id: &str) -> Result<Vec<ChainHead>, StoreError> {
        let tenant_id = tenant_id.to_owned();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT source_topic, source_partition, records, last_hash, first_offset,
                            last_offset
                     FROM chain_heads WHERE tenant_id = ?1
                     ORDER BY source_topic, source_partition",
                )
                .map_err(classify)?;
            let heads = stmt
                .query_map([&tenant_id], |row| {
                    Ok(ChainHead {
                        key: ChainKey {
                            tenant_id: tenant_id.clone(),
                            topic: row.get(0)?,
                            partition: row.get(1)?,
                        },
                        records: u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
                        last_hash: row.get(3)?,
                        first_offset: row.get(4)?,
                        last_offset: row.get(5)?,
                    })
                })
                .map_err(classify)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(classify)?;
            Ok(heads)
        })
        .await
    }

    async fn tenants(&self) -> Result<Vec<String>, StoreError> {
        self.read(|conn| {
            conn.prepare_cached(
                "SELECT tenant_id FROM audit_decisions
                 UNION SELECT tenant_id FROM audit_verdicts
                 UNION SELECT tenant_id FROM coordination_audit_records
                 UNION SELECT tenant_id FROM audit_chain
                 ORDER BY 1",
            )
            .and_then(|mut stmt| {
                stmt.query_map([], |row| row.get(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()
            })
            .map_err(classify)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(classify))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CoordinationDecision, EnvelopeClass};
    use chrono::TimeZone;
    use rusqlite::ffi;

    fn coordination(offset: i64) -> CoordinationRecord {
        let at = Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap();
        CoordinationRecord {
            audit_id: Uuid::from_u128(1000 + offset as u128),
            tenant_id: "acme".into(),
            envelope_id: format!("env-{offset}"),
            envelope_class: EnvelopeClass::Cost,
            decision: CoordinationDecision::Applied,
            reason: "no conflicting envelope".into(),
            decision_timestamp: at,
            created_at: at,
            conflicting_envelope_id: None,
            preempting_envelope_id: None,
            active_envelopes_count: 1,
            source: SourceRef {
                topic: "audit.coordination.v1".into(),
                partition: 0,
                offset,
                event_id: Uuid::from_u128(offset as u128),
            },
        }
    }

    /// `coordination(offset)` alone, linked as the first record of its chain.
    fn chained_coordination(offset: i64) -> Arc<[StoredRecord]> {
        Arc::from(StoredRecord::chain([AuditRecord::Coordination(
            coordination(offset),
        )]))
    }

    /// The writer's commits leave the log to the copying thread: the database file
    /// takes a write's pages well before the log reaches the writer's own bound (or
    /// SQLite's default one), and the bound is the writer's.
    #[tokio::test]
    async fn the_log_is_copied_back_into_the_database_by_a_thread_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.db");
        let store = EmbeddedStore::open(&path).unwrap();
        let bound: i64 = store
            .call(|conn| {
                conn.pragma_query_value(None, "wal_autocheckpoint", |row| row.get(0))
                    .map_err(classify)
            })
            .await
            .unwrap();
        assert_eq!(bound, WRITER_COPIES_LOG_AFTER_PAGES);
        // Let the copy of the schema's pages settle before measuring.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = std::fs::metadata(&path).unwrap().len();
        let records: Vec<AuditRecord> = (0..2_000)
            .map(|offset| AuditRecord::Coordination(coordination(offset)))
            .collect();
        store
            .write(Arc::from(StoredRecord::chain(records)))
            .await
            .unwrap();
        let log = std::fs::metadata(dir.path().join("store.db-wal"))
            .unwrap()
            .len();
        assert!(
            log > 1 << 20 && log < 1_000 * 4096,
            "the write's log ({log} bytes) is below SQLite's default bound of 1,000 pages"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let grown = std::fs::metadata(&path).unwrap().len() - before;
            if grown >= 1 << 20 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the database grew {grown} bytes; the log ({log} bytes) was not copied back"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn schema_version(path: &Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn a_reopened_file_store_keeps_records_and_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let checkpoint = Checkpoint {
            group: "audit-stream".into(),
            topic: "audit.validation.v1".into(),
            partition: 3,
            next_offset: 42,
            state: vec![1, 2, 3],
            saved_at: Utc.timestamp_opt(1_740_830_400, 123_456_789).unwrap(),
        };
        {
            let store = EmbeddedStore::open(&path).unwrap();
            store.write(chained_coordination(7)).await.unwrap();
            store.save_checkpoint(&checkpoint).await.unwrap();
        }
        let store = EmbeddedStore::open(&path).unwrap();
        let page = store.coordination_records("acme", None, 10).await.unwrap();
        assert_eq!(page.items, vec![coordination(7)]);
        let loaded = store
            .load_checkpoint("audit-stream", "audit.validation.v1", 3)
            .await
            .unwrap();
        assert_eq!(loaded, Some(checkpoint));
    }

    /// Reads on a file store go through a connection of their own: they see the last
    /// commit while the writer is in the middle of its next transaction.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_sees_the_last_commit_without_waiting_for_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("audit.db")).unwrap();
        store.write(chained_coordination(7)).await.unwrap();
        let mut chains = crate::chain::PartitionChains::default();
        chains.append(&AuditRecord::Coordination(coordination(7)));
        let head = chains.heads().next().unwrap().clone();
        // The writer holds a transaction open, a chain head in it not committed yet.
        let writer = Arc::clone(&store.conn);
        let uncommitted = vec![head.clone()];
        let (began, begun) = std::sync::mpsc::channel();
        let (finish, finished) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let mut conn = writer.lock().unwrap();
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .unwrap();
            upsert_chain_heads(&tx, &uncommitted).unwrap();
            began.send(()).unwrap();
            finished.recv().unwrap();
            tx.commit().unwrap();
        });
        begun.recv().unwrap();
        let read = tokio::time::timeout(Duration::from_secs(5), async {
            let page = store.coordination_records("acme", None, 10).await.unwrap();
            (page.items, store.chain_heads("acme").await.unwrap())
        })
        .await
        .expect("the reads did not wait for the writer");
        assert_eq!(
            read,
            (vec![coordination(7)], Vec::new()),
            "the last commit only"
        );
        finish.send(()).unwrap();
        holder.join().unwrap();
        assert_eq!(store.chain_heads("acme").await.unwrap(), [head]);
    }

    #[tokio::test]
    async fn checkpoints_of_several_partitions_are_saved_in_one_call_and_never_go_back() {
        let store = EmbeddedStore::in_memory().unwrap();
        let at = Utc.timestamp_opt(1_740_830_400, 0).unwrap();
        let save = |partition: i32, next_offset: i64| {
            let checkpoint = Checkpoint {
                group: "g".into(),
                topic: "audit.validation.v1".into(),
                partition,
                next_offset,
                state: vec![u8::try_from(next_offset).unwrap()],
                saved_at: at,
            };
            let head = ChainHead {
                key: ChainKey {
                    tenant_id: "acme".into(),
                    topic: "audit.validation.v1".into(),
                    partition,
                },
                records: u64::try_from(next_offset).unwrap(),
                last_hash: format!("hash-{partition}-{next_offset}"),
                first_offset: 0,
                last_offset: next_offset - 1,
            };
            (checkpoint, vec![head])
        };
        let first = vec![save(0, 10), save(1, 20), save(2, 30)];
        store.save_checkpoints(&first).await.unwrap();
        // Partition 1 goes back: its stored checkpoint and head stay.
        let second = vec![save(0, 11), save(1, 5), save(2, 31)];
        store.save_checkpoints(&second).await.unwrap();
        let offsets = [11, 20, 31];
        for (partition, next_offset) in (0..).zip(offsets) {
            let loaded = store
                .load_checkpoint("g", "audit.validation.v1", partition)
                .await
                .unwrap()
                .expect("saved");
            assert_eq!(loaded, save(partition, next_offset).0);
        }
        let mut heads = store.chain_heads("acme").await.unwrap();
        heads.sort_by_key(|h| h.key.partition);
        let expected: Vec<ChainHead> = (0..).zip(offsets).flat_map(|(p, o)| save(p, o).1).collect();
        assert_eq!(heads, expected);
    }

    #[test]
    fn opening_twice_migrates_once_to_the_latest_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        drop(EmbeddedStore::open(&path).unwrap());
        drop(EmbeddedStore::open(&path).unwrap());
        assert_eq!(schema_version(&path), MIGRATIONS.last().unwrap().version);
    }

    /// The names of the indexes of `table`, in name order.
    fn indexes(conn: &Connection, table: &str) -> Vec<String> {
        let mut stmt = conn
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?1
                 ORDER BY name",
            )
            .unwrap();
        stmt.query_map([table], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[tokio::test]
    async fn version_3_drops_the_indexes_no_query_reads_and_keeps_the_listings_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        {
            let store = EmbeddedStore::open(&path).unwrap();
            store.write(chained_coordination(7)).await.unwrap();
        }
        // The same file as version 2 left it: its indexes back, its version 2.
        {
            let conn = Connection::open(&path).unwrap();
            let version_2 = MIGRATIONS.iter().find(|m| m.version == 2).unwrap();
            let created = MIGRATIONS[0]
                .sql
                .lines()
                .filter(|line| line.starts_with("CREATE INDEX") || line.starts_with("    ON"))
                .collect::<Vec<_>>()
                .join("\n");
            conn.execute_batch(&created).unwrap();
            conn.pragma_update(None, "user_version", version_2.version)
                .unwrap();
            // Two of its own and the primary key's.
            assert_eq!(indexes(&conn, "audit_decisions").len(), 3, "{created}");
        }
        let store = EmbeddedStore::open(&path).unwrap();
        assert_eq!(schema_version(&path), MIGRATIONS.last().unwrap().version);
        {
            let conn = store.conn.lock().unwrap();
            let named = |table| {
                indexes(&conn, table)
                    .into_iter()
                    .filter(|name| !name.starts_with("sqlite_autoindex"))
                    .collect::<Vec<_>>()
            };
            assert_eq!(named("audit_decisions"), ["audit_decisions_by_tenant"]);
            assert_eq!(named("audit_verdicts"), ["audit_verdicts_by_tenant"]);
            assert_eq!(
                named("coordination_audit_records"),
                ["coordination_audit_records_by_tenant"]
            );
            // Every listing still reads its index, in order, without sorting.
            for listing in [DECISIONS, VERDICTS, COORDINATION] {
                let columns = format!(
                    "source_topic, source_partition, source_offset, {}",
                    listing.id_column
                );
                let plan: Vec<String> = conn
                    .prepare(&format!(
                        "EXPLAIN QUERY PLAN SELECT {columns}, record FROM {} WHERE tenant_id = ?1
                         ORDER BY {columns} LIMIT 10",
                        listing.table
                    ))
                    .unwrap()
                    .query_map(["acme"], |row| row.get::<_, String>(3))
                    .unwrap()
                    .collect::<rusqlite::Result<_>>()
                    .unwrap();
                let plan = plan.join("; ");
                assert!(
                    plan.contains(&format!("{}_by_tenant", listing.table)),
                    "{plan}"
                );
                assert!(!plan.contains("TEMP B-TREE"), "{plan}");
            }
        }
        let page = store.coordination_records("acme", None, 10).await.unwrap();
        assert_eq!(page.items, vec![coordination(7)]);
    }

    /// Every chain entry of acme, read back.
    async fn acme_entries(store: &EmbeddedStore) -> Vec<ChainEntry> {
        store.chain_entries("acme", None, 100).await.unwrap().items
    }

    /// Chain entries that hold JSON of their own.
    fn entries_with_json(store: &EmbeddedStore) -> i64 {
        let conn = store.conn.lock().unwrap();
        conn.query_row(
            "SELECT count(*) FROM audit_chain WHERE record IS NOT NULL",
            [],
            |row| row.get(0),
        )
        .unwrap()
    }

    /// A written record's JSON is stored once, in its row, and its chain entry reads it
    /// from there; a conflicting record's entry keeps its own (no row has it); an entry
    /// whose row is gone comes back as `RecordMissing`.
    #[tokio::test]
    async fn a_written_records_json_is_stored_once_and_a_conflicts_with_its_entry() {
        let store = EmbeddedStore::in_memory().unwrap();
        let mut republished = coordination(1);
        republished.source.offset = 9;
        let chain = StoredRecord::chain(
            [coordination(0), coordination(1), republished.clone()].map(AuditRecord::Coordination),
        );
        let outcome = store.write(chain.clone().into()).await.unwrap();
        assert_eq!((outcome.written, outcome.conflicts.len()), (2, 1));
        assert_eq!(entries_with_json(&store), 1, "the conflict's entry alone");
        let entries = acme_entries(&store).await;
        let expected: Vec<ChainEntry> = chain.iter().cloned().map(ChainEntry::Stored).collect();
        assert_eq!(entries, expected);
        let stored = store.coordination_records("acme", None, 10).await.unwrap();
        assert_eq!(stored.items, vec![coordination(0), coordination(1)]);

        store
            .conn
            .lock()
            .unwrap()
            .execute(
                "DELETE FROM coordination_audit_records WHERE audit_id = ?1",
                [coordination(0).audit_id.to_string()],
            )
            .unwrap();
        let entries = acme_entries(&store).await;
        assert_eq!(
            entries[0],
            ChainEntry::RecordMissing {
                key: ChainKey::of(&chain[0].record),
                kind: "coordination",
                id: coordination(0).audit_id,
                link: chain[0].link.clone(),
            }
        );
        assert_eq!(entries[1..], expected[1..]);
    }

    /// A page of chain entries reads the chain's primary key in order and finds each
    /// entry's record by its id: no scan, no sort, however large the tables.
    #[test]
    fn a_chain_page_searches_the_chain_in_order_and_each_record_by_id() {
        let store = EmbeddedStore::in_memory().unwrap();
        let conn = store.conn.lock().unwrap();
        for after in [false, true] {
            let sql = format!("EXPLAIN QUERY PLAN {}", chain_page_sql(after));
            let mut stmt = conn.prepare(&sql).unwrap();
            let values = params!["acme", 10, "t", 0, 0];
            let count = stmt.parameter_count();
            let plan: Vec<String> = stmt
                .query_map(&values[..count], |row| row.get(3))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            let plan = plan.join("; ");
            assert!(
                plan.contains("SEARCH c USING INDEX sqlite_autoindex_audit_chain_1"),
                "{plan}"
            );
            for (table, id) in [
                ("audit_decisions", "event_id"),
                ("audit_verdicts", "audit_id"),
                ("coordination_audit_records", "audit_id"),
            ] {
                assert!(
                    plan.contains(&format!("USING INDEX sqlite_autoindex_{table}_1 ({id}=?)")),
                    "{table}: {plan}"
                );
            }
            assert!(!plan.contains("SCAN"), "{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        }
    }

    /// Version 4 rebuilds the chain's table with `record` nullable: the entries of a
    /// version 3 file, each with its JSON, are kept and read as they were; entries
    /// written after it hold none.
    #[tokio::test]
    async fn version_4_keeps_the_chain_entries_of_a_version_3_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let first = chained_coordination(3);
        {
            let store = EmbeddedStore::open(&path).unwrap();
            store.write(first.clone()).await.unwrap();
        }
        // The same file as version 3 left it: `record NOT NULL`, each entry's JSON in it.
        {
            let conn = Connection::open(&path).unwrap();
            let version_2 = MIGRATIONS.iter().find(|m| m.version == 2).unwrap();
            conn.execute_batch("ALTER TABLE audit_chain RENAME TO audit_chain_v4")
                .unwrap();
            conn.execute_batch(version_2.sql).unwrap();
            conn.execute_batch(
                "INSERT INTO audit_chain
                 SELECT c.tenant_id, c.source_topic, c.source_partition, c.chain_seq, c.kind,
                        c.record_id, c.source_offset, c.prev_hash, c.hash, c.occurred_at,
                        r.record
                 FROM audit_chain_v4 c
                 JOIN coordination_audit_records r ON r.audit_id = c.record_id;
                 DROP TABLE audit_chain_v4;
                 PRAGMA user_version = 3;",
            )
            .unwrap();
            let not_null: i64 = conn
                .query_row(
                    "SELECT \"notnull\" FROM pragma_table_info('audit_chain')
                     WHERE name = 'record'",
                    [],
                    |row| row.get(0),
                )
                .unwrap();
            assert_eq!(not_null, 1, "version 3's table");
        }
        let store = EmbeddedStore::open(&path).unwrap();
        assert_eq!(schema_version(&path), MIGRATIONS.last().unwrap().version);
        assert_eq!(
            entries_with_json(&store),
            1,
            "the version 3 entry keeps its JSON"
        );
        let mut chains = crate::chain::PartitionChains::default();
        let _ = StoredRecord::append(&mut chains, first[0].record.clone());
        let next = StoredRecord::append(&mut chains, AuditRecord::Coordination(coordination(4)));
        store.write(Arc::from(vec![next.clone()])).await.unwrap();
        assert_eq!(entries_with_json(&store), 1, "the new entry holds none");
        assert_eq!(
            acme_entries(&store).await,
            vec![
                ChainEntry::Stored(first[0].clone()),
                ChainEntry::Stored(next)
            ]
        );
    }

    #[test]
    fn instances_opening_one_new_file_together_all_open_it() {
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("audit.db");
            let start = std::sync::Arc::new(std::sync::Barrier::new(4));
            let opens: Vec<_> = (0..4)
                .map(|_| {
                    let (path, start) = (path.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        EmbeddedStore::open(&path).map(drop)
                    })
                })
                .collect();
            for open in opens {
                let result = open.join().unwrap();
                assert!(result.is_ok(), "round {round}: {:?}", result.err());
            }
            assert_eq!(schema_version(&path), MIGRATIONS.last().unwrap().version);
        }
    }

    #[test]
    fn a_file_store_uses_a_write_ahead_log_and_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("audit.db")).unwrap();
        let conn = store.conn.lock().unwrap();
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |row| row.get(0))
            .unwrap();
        let sync: i64 = conn
            .pragma_query_value(None, "synchronous", |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2, "synchronous = FULL");
    }

    #[test]
    fn a_schema_newer_than_this_build_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = EmbeddedStore::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Permanent(_)), "{err}");
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[test]
    fn a_path_that_cannot_be_opened_is_a_permanent_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = EmbeddedStore::open(&dir.path().join("missing/dir/audit.db")).unwrap_err();
        assert!(!err.is_retryable(), "{err}");
    }

    #[test]
    fn busy_locked_io_and_full_disk_are_retryable_and_the_rest_is_not() {
        let failure = |code| rusqlite::Error::SqliteFailure(ffi::Error::new(code), None);
        for code in [
            ffi::SQLITE_BUSY,
            ffi::SQLITE_LOCKED,
            ffi::SQLITE_IOERR,
            ffi::SQLITE_FULL,
        ] {
            assert!(classify(failure(code)).is_retryable(), "code {code}");
        }
        for code in [
            ffi::SQLITE_CORRUPT,
            ffi::SQLITE_CONSTRAINT,
            ffi::SQLITE_NOTADB,
            ffi::SQLITE_READONLY,
        ] {
            assert!(!classify(failure(code)).is_retryable(), "code {code}");
        }
        assert!(!classify(rusqlite::Error::QueryReturnedNoRows).is_retryable());
    }

    #[tokio::test]
    async fn a_write_blocked_by_another_writer_is_retryable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let store = EmbeddedStore::open(&path).unwrap();
        store
            .conn
            .lock()
            .unwrap()
            .busy_timeout(Duration::from_millis(10))
            .unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let err = store.write(chained_coordination(1)).await.unwrap_err();
        assert!(err.is_retryable(), "{err}");
        other.execute_batch("ROLLBACK").unwrap();
        store.write(chained_coordination(1)).await.unwrap();
    }
}
