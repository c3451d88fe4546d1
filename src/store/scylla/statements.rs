//! The CQL the ScyllaDB store runs and the values it binds, as data: statement text with
//! a `{{keyspace}}` placeholder, and functions from records to bound values in column
//! order. Nothing here talks to a cluster, so tests check the text, the bind order and
//! the types against the DDL in `schemas/cql/`.
//!
//! Every write is a plain `INSERT ... USING TIMESTAMP ?`: with the timestamp taken from
//! the data, writing the same row again changes nothing, so every statement is
//! idempotent and the driver may retry it.

use chrono::{DateTime, Utc};
use scylla::value::{CqlTimestamp, CqlValue, MaybeUnset};
use uuid::Uuid;

use super::super::cursor::Cursor;
use super::super::{AuditRecord, Checkpoint, StoreError};
use super::rows::StoredId;
use crate::chain::{ChainHead, ChainLink};
use crate::event::{AuditDecision, AuditVerdict, CoordinationRecord};
use crate::gate::RolloutStatus;

/// The placeholder every statement names its keyspace with.
pub(crate) const KEYSPACE: &str = "{{keyspace}}";

/// Bound values of one statement, in the order of its markers. `Unset` leaves a column
/// as it is (no tombstone), which is how an absent optional value is written.
pub(crate) type Values = Vec<MaybeUnset<CqlValue>>;

/// `text` with its keyspace placeholder replaced. The keyspace is validated before
/// (`check_keyspace`): it is written into CQL text.
pub(crate) fn in_keyspace(text: &str, keyspace: &str) -> String {
    text.replace(KEYSPACE, keyspace)
}

/// A keyspace name that can be written into CQL unquoted and means what it says:
/// a lower-case letter, then lower-case letters, digits and `_`, 48 characters at most.
pub(crate) fn check_keyspace(keyspace: &str) -> Result<(), StoreError> {
    let mut chars = keyspace.chars();
    let valid = keyspace.len() <= 48
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(StoreError::Permanent(format!(
            "store.scylla.keyspace {keyspace:?} is not a valid keyspace name (a lower-case \
             letter, then lower-case letters, digits and _, at most 48 characters)"
        )))
    }
}

// ---------------------------------------------------------------------------------------
// Writes.
// ---------------------------------------------------------------------------------------

pub(crate) const INSERT_DECISION: &str = concat!(
    "INSERT INTO {{keyspace}}.audit_decisions (tenant_id, source_topic, source_partition, ",
    "source_offset, event_id, source_event_id, counter_key, process, phase, field, level, ",
    "decision, failure_count, threshold, message, occurred_at, content_digest, record) ",
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
);

pub(crate) const INSERT_VERDICT: &str = concat!(
    "INSERT INTO {{keyspace}}.audit_verdicts (tenant_id, source_topic, source_partition, ",
    "source_offset, audit_id, event_id, source_event_id, job_id, contract_id, ",
    "contract_revision, verdict, verdict_reason, checks, checks_passed, checks_failed, ",
    "checks_inconclusive, evidence_digest, auditor_version, rules_version, occurred_at, ",
    "audited_at, duration_ms, content_digest, record) ",
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ",
    "USING TIMESTAMP ?"
);

pub(crate) const INSERT_COORDINATION: &str = concat!(
    "INSERT INTO {{keyspace}}.coordination_audit_records (tenant_id, source_topic, ",
    "source_partition, source_offset, audit_id, envelope_id, envelope_class, decision, ",
    "reason, decision_timestamp, created_at, conflicting_envelope_id, ",
    "preempting_envelope_id, active_envelopes_count, source_event_id, content_digest, ",
    "record) ",
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
);

pub(crate) const INSERT_ROLLOUT_STATUS: &str = concat!(
    "INSERT INTO {{keyspace}}.rollout_status (tenant_id, contract_id, occurred_at_ns, ",
    "audit_id, contract_revision, job_id, verdict, failed_checks, occurred_at, audited_at, ",
    "status) ",
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
);

pub(crate) const INSERT_RECORD_ID: &str = concat!(
    "INSERT INTO {{keyspace}}.audit_record_ids (id, kind, tenant_id, source_topic, ",
    "source_partition, source_offset, content_digest) ",
    "VALUES (?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
);

pub(crate) const INSERT_CHECKPOINT: &str = concat!(
    "INSERT INTO {{keyspace}}.stream_checkpoints (consumer_group, topic, kafka_partition, ",
    "next_offset, state, saved_at, saved_at_ns) ",
    "VALUES (?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
);

pub(crate) const INSERT_CHAIN_ENTRY: &str = concat!(
    "INSERT INTO {{keyspace}}.audit_chain (tenant_id, source_topic, source_partition, ",
    "chain_seq, kind, record_id, source_offset, prev_hash, hash, occurred_at_ns, record) ",
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
);

pub(crate) const INSERT_CHAIN_HEAD: &str = concat!(
    "INSERT INTO {{keyspace}}.chain_heads (tenant_id, source_topic, source_partition, ",
    "records, last_hash, first_offset, last_offset) ",
    "VALUES (?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
);

// ---------------------------------------------------------------------------------------
// Reads.
// ---------------------------------------------------------------------------------------

pub(crate) const SELECT_CHAIN_HEADS: &str = concat!(
    "SELECT source_topic, source_partition, records, last_hash, first_offset, last_offset ",
    "FROM {{keyspace}}.chain_heads WHERE tenant_id = ?"
);

/// What the write path compares a new record with, and where the stored record is.
pub(crate) const SELECT_RECORD_ID: &str = concat!(
    "SELECT content_digest, tenant_id, source_topic, source_partition, source_offset ",
    "FROM {{keyspace}}.audit_record_ids WHERE id = ? AND kind = ?"
);

/// The source event of a stored decision, by its full primary key: read only for a new
/// record that conflicts with it, to report both sources.
pub(crate) const SELECT_DECISION_SOURCE: &str = concat!(
    "SELECT source_event_id FROM {{keyspace}}.audit_decisions ",
    "WHERE tenant_id = ? AND source_topic = ? AND source_partition = ? ",
    "AND source_offset = ? AND event_id = ?"
);

/// As [`SELECT_DECISION_SOURCE`], for a stored verdict.
pub(crate) const SELECT_VERDICT_SOURCE: &str = concat!(
    "SELECT source_event_id FROM {{keyspace}}.audit_verdicts ",
    "WHERE tenant_id = ? AND source_topic = ? AND source_partition = ? ",
    "AND source_offset = ? AND audit_id = ?"
);

/// As [`SELECT_DECISION_SOURCE`], for a stored coordination record.
pub(crate) const SELECT_COORDINATION_SOURCE: &str = concat!(
    "SELECT source_event_id FROM {{keyspace}}.coordination_audit_records ",
    "WHERE tenant_id = ? AND source_topic = ? AND source_partition = ? ",
    "AND source_offset = ? AND audit_id = ?"
);

/// The head of the contract's partition: the verdict on the newest evidence.
pub(crate) const SELECT_ROLLOUT_STATUS: &str = concat!(
    "SELECT status FROM {{keyspace}}.rollout_status ",
    "WHERE tenant_id = ? AND contract_id = ? LIMIT 1"
);

pub(crate) const SELECT_CHECKPOINT: &str = concat!(
    "SELECT next_offset, state, saved_at_ns FROM {{keyspace}}.stream_checkpoints ",
    "WHERE consumer_group = ? AND topic = ? AND kafka_partition = ?"
);

/// Partition keys of the record tables: every tenant with a record, each once per table.
pub(crate) const SELECT_TENANTS: [&str; 4] = [
    "SELECT DISTINCT tenant_id FROM {{keyspace}}.audit_decisions",
    "SELECT DISTINCT tenant_id FROM {{keyspace}}.audit_verdicts",
    "SELECT DISTINCT tenant_id FROM {{keyspace}}.coordination_audit_records",
    "SELECT DISTINCT tenant_id FROM {{keyspace}}.audit_chain",
];

/// Cheap and always there: reachability without touching audit data.
pub(crate) const PING: &str = "SELECT release_version FROM system.local WHERE key = 'local'";

/// One record listing: a tenant's partition in clustering order (source topic,
/// partition, offset, id), resumed after the cursor's position.
#[derive(Debug)]
pub(crate) struct Listing {
    /// The cursor's listing name (`decision`, `verdict`, `coordination`).
    pub(crate) name: &'static str,
    /// Binds: tenant_id, limit.
    pub(crate) first_page: &'static str,
    /// Binds: tenant_id, the cursor's topic, partition, offset and id, limit.
    pub(crate) next_page: &'static str,
}

pub(crate) const DECISIONS: Listing = Listing {
    name: "decision",
    first_page: concat!(
        "SELECT source_topic, source_partition, source_offset, event_id, record ",
        "FROM {{keyspace}}.audit_decisions WHERE tenant_id = ? LIMIT ?"
    ),
    next_page: concat!(
        "SELECT source_topic, source_partition, source_offset, event_id, record ",
        "FROM {{keyspace}}.audit_decisions WHERE tenant_id = ? ",
        "AND (source_topic, source_partition, source_offset, event_id) > (?, ?, ?, ?) LIMIT ?"
    ),
};

pub(crate) const VERDICTS: Listing = Listing {
    name: "verdict",
    first_page: concat!(
        "SELECT source_topic, source_partition, source_offset, audit_id, record ",
        "FROM {{keyspace}}.audit_verdicts WHERE tenant_id = ? LIMIT ?"
    ),
    next_page: concat!(
        "SELECT source_topic, source_partition, source_offset, audit_id, record ",
        "FROM {{keyspace}}.audit_verdicts WHERE tenant_id = ? ",
        "AND (source_topic, source_partition, source_offset, audit_id) > (?, ?, ?, ?) LIMIT ?"
    ),
};

pub(crate) const COORDINATION: Listing = Listing {
    name: "coordination",
    first_page: concat!(
        "SELECT source_topic, source_partition, source_offset, audit_id, record ",
        "FROM {{keyspace}}.coordination_audit_records WHERE tenant_id = ? LIMIT ?"
    ),
    next_page: concat!(
        "SELECT source_topic, source_partition, source_offset, audit_id, record ",
        "FROM {{keyspace}}.coordination_audit_records WHERE tenant_id = ? ",
        "AND (source_topic, source_partition, source_offset, audit_id) > (?, ?, ?, ?) LIMIT ?"
    ),
};

/// The chain entries of a tenant in chain order: binds tenant_id, limit on the first
/// page; tenant_id, the cursor's topic, partition and position, limit on the next.
pub(crate) const CHAIN: Listing = Listing {
    name: "chain",
    first_page: concat!(
        "SELECT source_topic, source_partition, chain_seq, kind, record_id, prev_hash, hash, ",
        "occurred_at_ns, record FROM {{keyspace}}.audit_chain WHERE tenant_id = ? LIMIT ?"
    ),
    next_page: concat!(
        "SELECT source_topic, source_partition, chain_seq, kind, record_id, prev_hash, hash, ",
        "occurred_at_ns, record FROM {{keyspace}}.audit_chain WHERE tenant_id = ? ",
        "AND (source_topic, source_partition, chain_seq) > (?, ?, ?) LIMIT ?"
    ),
};

// ---------------------------------------------------------------------------------------
// Write timestamps.
// ---------------------------------------------------------------------------------------

/// Write timestamp (microseconds since the epoch) of rows dated `at`.
///
/// Taken from the data, so a replayed write carries the same timestamp as the first and
/// changes nothing. Never later than `now`: ScyllaDB refuses timestamps more than three
/// days ahead (`restrict_future_timestamp`), and a producer's clock can be that far off.
/// A row dated in the future is written at the wall-clock time instead; a replay of it
/// then writes the same values at a later time, which reads cannot tell apart.
pub(crate) fn write_timestamp(at: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    at.min(now).timestamp_micros()
}

/// Write timestamp of a checkpoint: its `next_offset`, so that of two checkpoints of a
/// partition the one covering more of it wins by last-write-wins, in any arrival order
/// and without reading first. See `schemas/cql/006-stream-checkpoints.cql`.
pub(crate) fn checkpoint_timestamp(checkpoint: &Checkpoint) -> i64 {
    checkpoint.next_offset
}

/// Nanoseconds since the epoch, saturated outside the years 1677..2262 (order is kept
/// between any two times inside that range, and against any time outside it).
pub(crate) fn nanos(at: DateTime<Utc>) -> i64 {
    at.timestamp_nanos_opt()
        .unwrap_or(if at < DateTime::UNIX_EPOCH {
            i64::MIN
        } else {
            i64::MAX
        })
}

// ---------------------------------------------------------------------------------------
// Bound values.
// ---------------------------------------------------------------------------------------

fn text(value: &str) -> MaybeUnset<CqlValue> {
    MaybeUnset::Set(CqlValue::Text(value.to_owned()))
}

fn optional_text(value: Option<&str>) -> MaybeUnset<CqlValue> {
    value.map_or(MaybeUnset::Unset, text)
}

fn int(value: i32) -> MaybeUnset<CqlValue> {
    MaybeUnset::Set(CqlValue::Int(value))
}

/// A count into a CQL `int` column; one that does not fit is refused, not truncated.
fn count(value: u32, column: &str) -> Result<MaybeUnset<CqlValue>, StoreError> {
    i32::try_from(value)
        .map(int)
        .map_err(|_| StoreError::Permanent(format!("{column} {value} does not fit a CQL int")))
}

fn bigint(value: i64) -> MaybeUnset<CqlValue> {
    MaybeUnset::Set(CqlValue::BigInt(value))
}

fn uuid(value: Uuid) -> MaybeUnset<CqlValue> {
    MaybeUnset::Set(CqlValue::Uuid(value))
}

/// A CQL `timestamp` (milliseconds); the exact time is in the row's JSON.
fn timestamp(at: DateTime<Utc>) -> MaybeUnset<CqlValue> {
    MaybeUnset::Set(CqlValue::Timestamp(CqlTimestamp(at.timestamp_millis())))
}

fn blob(value: &[u8]) -> MaybeUnset<CqlValue> {
    MaybeUnset::Set(CqlValue::Blob(value.to_vec()))
}

fn text_list(values: &[String]) -> MaybeUnset<CqlValue> {
    MaybeUnset::Set(CqlValue::List(
        values.iter().map(|v| CqlValue::Text(v.clone())).collect(),
    ))
}

/// [`INSERT_DECISION`]'s values.
pub(crate) fn decision_values(
    d: &AuditDecision,
    digest: &str,
    json: &str,
    write_timestamp: i64,
) -> Result<Values, StoreError> {
    Ok(vec![
        text(&d.tenant_id),
        text(&d.source.topic),
        int(d.source.partition),
        bigint(d.source.offset),
        uuid(d.event_id),
        uuid(d.source.event_id),
        text(&d.key),
        text(&d.process),
        text(d.phase.as_str()),
        text(&d.field),
        text(d.level.as_str()),
        text(d.decision.as_str()),
        count(d.count, "failure_count")?,
        count(d.threshold, "threshold")?,
        text(&d.message),
        timestamp(d.occurred_at),
        text(digest),
        text(json),
        bigint(write_timestamp),
    ])
}

/// [`INSERT_VERDICT`]'s values; `occurred_at` is the evidence time.
pub(crate) fn verdict_values(
    v: &AuditVerdict,
    occurred_at: DateTime<Utc>,
    digest: &str,
    json: &str,
    write_timestamp: i64,
) -> Result<Values, StoreError> {
    let checks = serde_json::to_string(&v.checks)
        .map_err(|e| StoreError::Permanent(format!("cannot serialize verdict checks: {e}")))?;
    let duration_ms = i64::try_from(v.duration_ms).map_err(|_| {
        StoreError::Permanent(format!(
            "duration_ms {} does not fit a CQL bigint",
            v.duration_ms
        ))
    })?;
    Ok(vec![
        text(&v.tenant_id),
        text(&v.source.topic),
        int(v.source.partition),
        bigint(v.source.offset),
        uuid(v.audit_id),
        uuid(v.event_id),
        uuid(v.source.event_id),
        text(&v.job_id),
        text(&v.contract_id),
        bigint(v.contract_revision),
        text(v.verdict.as_str()),
        text(&v.verdict_reason),
        text(&checks),
        count(v.checks_passed, "checks_passed")?,
        count(v.checks_failed, "checks_failed")?,
        count(v.checks_inconclusive, "checks_inconclusive")?,
        text(&v.evidence_digest),
        text(&v.auditor_version),
        text(&v.rules_version),
        timestamp(occurred_at),
        timestamp(v.audited_at),
        bigint(duration_ms),
        text(digest),
        text(json),
        bigint(write_timestamp),
    ])
}

/// [`INSERT_COORDINATION`]'s values; absent optional ids stay unset.
pub(crate) fn coordination_values(
    c: &CoordinationRecord,
    digest: &str,
    json: &str,
    write_timestamp: i64,
) -> Result<Values, StoreError> {
    Ok(vec![
        text(&c.tenant_id),
        text(&c.source.topic),
        int(c.source.partition),
        bigint(c.source.offset),
        uuid(c.audit_id),
        text(&c.envelope_id),
        text(c.envelope_class.as_str()),
        text(c.decision.as_str()),
        text(&c.reason),
        timestamp(c.decision_timestamp),
        timestamp(c.created_at),
        optional_text(c.conflicting_envelope_id.as_deref()),
        optional_text(c.preempting_envelope_id.as_deref()),
        count(c.active_envelopes_count, "active_envelopes_count")?,
        uuid(c.source.event_id),
        text(digest),
        text(json),
        bigint(write_timestamp),
    ])
}

/// [`INSERT_ROLLOUT_STATUS`]'s values.
pub(crate) fn rollout_status_values(
    status: &RolloutStatus,
    write_timestamp: i64,
) -> Result<Values, StoreError> {
    let json = serde_json::to_string(status)
        .map_err(|e| StoreError::Permanent(format!("cannot serialize rollout status: {e}")))?;
    Ok(vec![
        text(&status.tenant_id),
        text(&status.contract_id),
        bigint(nanos(status.occurred_at)),
        uuid(status.audit_id),
        bigint(status.contract_revision),
        text(&status.job_id),
        text(status.verdict.as_str()),
        text_list(&status.failed_checks),
        timestamp(status.occurred_at),
        timestamp(status.audited_at),
        text(&json),
        bigint(write_timestamp),
    ])
}

/// [`INSERT_RECORD_ID`]'s values.
pub(crate) fn record_id_values(record: &AuditRecord, digest: &str, write_timestamp: i64) -> Values {
    let source = record.source();
    vec![
        uuid(record.id()),
        text(record.kind()),
        text(record.tenant_id()),
        text(&source.topic),
        int(source.partition),
        bigint(source.offset),
        text(digest),
        bigint(write_timestamp),
    ]
}

/// [`SELECT_RECORD_ID`]'s values.
pub(crate) fn record_id_key(kind: &str, id: Uuid) -> Values {
    vec![uuid(id), text(kind)]
}

/// The values of [`SELECT_DECISION_SOURCE`] and its siblings: the stored record's
/// position, as its id row gives it, and its id.
pub(crate) fn stored_source_key(stored: &StoredId, id: Uuid) -> Values {
    vec![
        text(&stored.tenant_id),
        text(&stored.topic),
        int(stored.partition),
        bigint(stored.offset),
        uuid(id),
    ]
}

/// [`SELECT_ROLLOUT_STATUS`]'s values.
pub(crate) fn rollout_status_key(tenant_id: &str, contract_id: &str) -> Values {
    vec![text(tenant_id), text(contract_id)]
}

/// [`INSERT_CHECKPOINT`]'s values.
pub(crate) fn checkpoint_values(checkpoint: &Checkpoint) -> Values {
    vec![
        text(&checkpoint.group),
        text(&checkpoint.topic),
        int(checkpoint.partition),
        bigint(checkpoint.next_offset),
        blob(&checkpoint.state),
        timestamp(checkpoint.saved_at),
        bigint(nanos(checkpoint.saved_at)),
        bigint(checkpoint_timestamp(checkpoint)),
    ]
}

/// [`INSERT_CHAIN_ENTRY`]'s values: the entry of `record` at `link`, dated as the
/// record's rows.
pub(crate) fn chain_entry_values(
    record: &AuditRecord,
    link: &ChainLink,
    json: &str,
    write_timestamp: i64,
) -> Values {
    let source = record.source();
    let occurred_at = match record {
        AuditRecord::Verdict { occurred_at, .. } => bigint(nanos(*occurred_at)),
        _ => MaybeUnset::Unset,
    };
    vec![
        text(record.tenant_id()),
        text(&source.topic),
        int(source.partition),
        bigint(i64::try_from(link.seq).unwrap_or(i64::MAX)),
        text(record.kind()),
        uuid(record.id()),
        bigint(source.offset),
        text(&link.prev_hash),
        text(&link.hash),
        occurred_at,
        text(json),
        bigint(write_timestamp),
    ]
}

/// [`INSERT_CHAIN_HEAD`]'s values, written at the head's record count so a longer head
/// always wins.
pub(crate) fn chain_head_values(head: &ChainHead) -> Values {
    let records = i64::try_from(head.records).unwrap_or(i64::MAX);
    vec![
        text(&head.key.tenant_id),
        text(&head.key.topic),
        int(head.key.partition),
        bigint(records),
        text(&head.last_hash),
        bigint(head.first_offset),
        bigint(head.last_offset),
        bigint(records),
    ]
}

/// The chain listing's values: [`CHAIN`]'s first page without a cursor, its next page
/// with one (whose `offset` is the chain position).
pub(crate) fn chain_listing_values(tenant_id: &str, after: Option<&Cursor>, fetch: i32) -> Values {
    let mut values = vec![text(tenant_id)];
    if let Some(c) = after {
        values.extend([text(&c.topic), int(c.partition), bigint(c.offset)]);
    }
    values.push(int(fetch));
    values
}

/// [`SELECT_CHAIN_HEADS`]'s values.
pub(crate) fn tenant_key(tenant_id: &str) -> Values {
    vec![text(tenant_id)]
}

/// [`SELECT_CHECKPOINT`]'s values.
pub(crate) fn checkpoint_key(group: &str, topic: &str, partition: i32) -> Values {
    vec![text(group), text(topic), int(partition)]
}

/// A listing's values: [`Listing::first_page`]'s without a cursor,
/// [`Listing::next_page`]'s with one. `fetch` rows at most.
pub(crate) fn listing_values(tenant_id: &str, after: Option<&Cursor>, fetch: i32) -> Values {
    let mut values = vec![text(tenant_id)];
    if let Some(c) = after {
        values.extend([
            text(&c.topic),
            int(c.partition),
            bigint(c.offset),
            uuid(c.id),
        ]);
    }
    values.push(int(fetch));
    values
}

/// Rough size of the values on the wire, to keep batches small.
pub(crate) fn values_size(values: &Values) -> usize {
    fn size(value: &CqlValue) -> usize {
        match value {
            CqlValue::Text(s) => s.len(),
            CqlValue::Blob(b) => b.len(),
            CqlValue::List(items) => items.iter().map(size).sum::<usize>() + 4,
            _ => 16,
        }
    }
    values
        .iter()
        .map(|v| match v {
            MaybeUnset::Set(v) => size(v) + 4,
            MaybeUnset::Unset => 4,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use chrono::TimeZone;

    use super::super::super::StoredRecord;
    use super::super::fixtures::*;
    use super::*;
    use crate::gate::RolloutStatus;

    const INSERTS: [&str; 8] = [
        INSERT_DECISION,
        INSERT_VERDICT,
        INSERT_COORDINATION,
        INSERT_ROLLOUT_STATUS,
        INSERT_RECORD_ID,
        INSERT_CHECKPOINT,
        INSERT_CHAIN_ENTRY,
        INSERT_CHAIN_HEAD,
    ];

    fn selects() -> Vec<&'static str> {
        let mut all = vec![
            SELECT_RECORD_ID,
            SELECT_DECISION_SOURCE,
            SELECT_VERDICT_SOURCE,
            SELECT_COORDINATION_SOURCE,
            SELECT_ROLLOUT_STATUS,
            SELECT_CHECKPOINT,
            SELECT_CHAIN_HEADS,
        ];
        all.extend(SELECT_TENANTS);
        for listing in [&DECISIONS, &VERDICTS, &COORDINATION, &CHAIN] {
            all.extend([listing.first_page, listing.next_page]);
        }
        all
    }

    /// Checks `values` against `insert`: one value per marker, the write timestamp last,
    /// and each column's value of the column's type in the DDL. Returns column → value.
    fn bound<'a>(insert: &str, values: &'a Values) -> HashMap<String, &'a MaybeUnset<CqlValue>> {
        let (table, columns) = insert_columns(insert);
        let types = table_columns(&table);
        let markers = insert.matches('?').count();
        assert_eq!(markers, columns.len() + 1, "{insert}");
        assert_eq!(values.len(), markers, "one value per marker of {insert}");
        assert!(
            matches!(values.last(), Some(MaybeUnset::Set(CqlValue::BigInt(_)))),
            "the write timestamp is bound last"
        );
        for (column, value) in columns.iter().zip(values) {
            let kind = types
                .get(column)
                .unwrap_or_else(|| panic!("{table}.{column} is not in the schema"));
            if let MaybeUnset::Set(value) = value {
                assert!(
                    fits(value, kind),
                    "{table}.{column} {kind} bound to {value:?}"
                );
            }
        }
        columns.into_iter().zip(values).collect()
    }

    #[test]
    fn the_driver_serializes_every_insert_against_the_schema_types() {
        let d = decision("acme", 7);
        let v = verdict("acme", "deploy-api", 7);
        let c = coordination("acme", 7);
        let record = AuditRecord::Decision(d.clone());
        let status = RolloutStatus::from_verdict(&v, at(-5));
        let mut chains = crate::chain::PartitionChains::default();
        let chained = StoredRecord::append(&mut chains, record.clone());
        let verdict_record = AuditRecord::Verdict {
            verdict: v.clone(),
            occurred_at: at(-5),
        };
        let chained_verdict = StoredRecord::append(&mut chains, verdict_record);
        let head = chains.heads().next().expect("a head").clone();
        let cases = [
            (INSERT_DECISION, decision_values(&d, "x", "{}", 1).unwrap()),
            (
                INSERT_VERDICT,
                verdict_values(&v, at(-5), "x", "{}", 1).unwrap(),
            ),
            (
                INSERT_COORDINATION,
                coordination_values(&c, "x", "{}", 1).unwrap(),
            ),
            (
                INSERT_ROLLOUT_STATUS,
                rollout_status_values(&status, 1).unwrap(),
            ),
            (INSERT_RECORD_ID, record_id_values(&record, "x", 1)),
            (INSERT_CHECKPOINT, checkpoint_values(&checkpoint(25))),
            (
                INSERT_CHAIN_ENTRY,
                chain_entry_values(&chained.record, &chained.link, "{}", 1),
            ),
            (
                INSERT_CHAIN_ENTRY,
                chain_entry_values(&chained_verdict.record, &chained_verdict.link, "{}", 1),
            ),
            (INSERT_CHAIN_HEAD, chain_head_values(&head)),
        ];
        for (insert, values) in cases {
            serialize_for(insert, &values).unwrap_or_else(|e| panic!("{insert}: {e}"));
            // The same values one position off are refused: the order is what is checked.
            let mut shifted = values.clone();
            shifted.rotate_left(1);
            assert!(serialize_for(insert, &shifted).is_err(), "{insert}");
            let mut short = values;
            short.pop();
            assert!(serialize_for(insert, &short).is_err(), "{insert}");
        }
    }

    fn set(value: &MaybeUnset<CqlValue>) -> &CqlValue {
        match value {
            MaybeUnset::Set(v) => v,
            MaybeUnset::Unset => panic!("unset"),
        }
    }

    #[test]
    fn every_statement_names_the_keyspace_placeholder_and_nothing_else() {
        for text in INSERTS.into_iter().chain(selects()) {
            let cql = in_keyspace(text, "audit_test");
            assert!(!cql.contains("{{") && !cql.contains("}}"), "{cql}");
            assert!(cql.contains(" audit_test."), "{cql}");
            assert!(!cql.contains(';'), "{cql}");
        }
        assert!(!PING.contains(KEYSPACE), "ping reads system.local only");
    }

    #[test]
    fn every_insert_takes_its_write_timestamp_as_the_last_marker() {
        for insert in INSERTS {
            assert!(insert.ends_with(") USING TIMESTAMP ?"), "{insert}");
            let (table, columns) = insert_columns(insert);
            let types = table_columns(&table);
            let (partition, clustering) = primary_key(&table);
            for column in partition.iter().chain(&clustering) {
                assert!(
                    columns.contains(column),
                    "{insert} misses key column {column}"
                );
            }
            for column in &columns {
                assert!(
                    types.contains_key(column),
                    "{table}.{column} not in the schema"
                );
            }
            let values = insert.split(" VALUES (").nth(1).unwrap();
            let values = &values[..values.find(')').unwrap()];
            assert_eq!(values.split(',').count(), columns.len(), "{insert}");
        }
    }

    #[test]
    fn every_select_reads_columns_of_its_table_by_its_key() {
        for select in selects()
            .into_iter()
            .filter(|s| !s.contains("system.local"))
        {
            let (table, columns) = select_columns(select);
            let types = table_columns(&table);
            for column in &columns {
                assert!(types.contains_key(column), "{table}.{column}: {select}");
            }
            let (partition, _) = primary_key(&table);
            if !select.contains("DISTINCT") {
                for column in &partition {
                    assert!(
                        select.contains(&format!("{column} = ?")),
                        "{select} is not a single-partition read"
                    );
                }
            }
        }
    }

    #[test]
    fn a_source_read_binds_the_full_primary_key_in_key_order() {
        for (select, table) in [
            (SELECT_DECISION_SOURCE, "audit_decisions"),
            (SELECT_VERDICT_SOURCE, "audit_verdicts"),
            (SELECT_COORDINATION_SOURCE, "coordination_audit_records"),
        ] {
            let (partition, clustering) = primary_key(table);
            let key: Vec<String> = partition.into_iter().chain(clustering).collect();
            let filter = select.split(" WHERE ").nth(1).unwrap();
            let bound: Vec<&str> = filter
                .split(" AND ")
                .map(|c| c.trim_end_matches(" = ?"))
                .collect();
            assert_eq!(bound, key, "{select}");
        }
        let stored = StoredId {
            digest: "d".into(),
            tenant_id: "acme".into(),
            topic: "t".into(),
            partition: 2,
            offset: 7,
        };
        let id = Uuid::from_u128(5);
        assert_eq!(
            plain(&stored_source_key(&stored, id)),
            plain(&vec![text("acme"), text("t"), int(2), bigint(7), uuid(id)])
        );
    }

    #[test]
    fn listings_page_in_clustering_order_after_the_cursor() {
        for (listing, table) in [
            (&DECISIONS, "audit_decisions"),
            (&VERDICTS, "audit_verdicts"),
            (&COORDINATION, "coordination_audit_records"),
        ] {
            let (_, clustering) = primary_key(table);
            let tuple = format!("({})", clustering.join(", "));
            assert_eq!(
                select_columns(listing.first_page).1[..4],
                clustering[..],
                "{table}: the cursor is the clustering key"
            );
            assert!(listing
                .next_page
                .contains(&format!("{tuple} > (?, ?, ?, ?)")));
            assert!(listing.first_page.ends_with("WHERE tenant_id = ? LIMIT ?"));
            assert!(listing.next_page.ends_with(" LIMIT ?"));
        }
        let cursor = Cursor {
            listing: "decision".into(),
            topic: "t".into(),
            partition: 1,
            offset: 9,
            id: Uuid::from_u128(5),
        };
        assert_eq!(
            plain(&listing_values("acme", None, 11)),
            plain(&vec![text("acme"), int(11)])
        );
        assert_eq!(
            plain(&listing_values("acme", Some(&cursor), 11)),
            plain(&vec![
                text("acme"),
                text("t"),
                int(1),
                bigint(9),
                uuid(Uuid::from_u128(5)),
                int(11)
            ])
        );
    }

    #[test]
    fn a_decision_binds_its_fields_in_column_order() {
        let d = decision("acme", 7);
        let values = decision_values(&d, "digest", "{json}", 42).unwrap();
        let b = bound(INSERT_DECISION, &values);
        assert_eq!(set(b["tenant_id"]), &CqlValue::Text("acme".into()));
        assert_eq!(set(b["source_partition"]), &CqlValue::Int(2));
        assert_eq!(set(b["source_offset"]), &CqlValue::BigInt(7));
        assert_eq!(set(b["event_id"]), &CqlValue::Uuid(d.event_id));
        assert_eq!(
            set(b["source_event_id"]),
            &CqlValue::Uuid(d.source.event_id)
        );
        assert_eq!(set(b["counter_key"]), &CqlValue::Text(d.key.clone()));
        assert_eq!(set(b["phase"]), &CqlValue::Text("input".into()));
        assert_eq!(set(b["level"]), &CqlValue::Text("B".into()));
        assert_eq!(set(b["decision"]), &CqlValue::Text("BLOCK".into()));
        assert_eq!(set(b["failure_count"]), &CqlValue::Int(4));
        assert_eq!(set(b["threshold"]), &CqlValue::Int(3));
        assert_eq!(
            set(b["occurred_at"]),
            &CqlValue::Timestamp(CqlTimestamp(d.occurred_at.timestamp_millis()))
        );
        assert_eq!(set(b["content_digest"]), &CqlValue::Text("digest".into()));
        assert_eq!(set(b["record"]), &CqlValue::Text("{json}".into()));
        assert!(matches!(
            values.last(),
            Some(MaybeUnset::Set(CqlValue::BigInt(42)))
        ));
    }

    #[test]
    fn a_verdict_binds_its_evidence_time_and_checks() {
        let v = verdict("acme", "deploy-api", 7);
        let values = verdict_values(&v, at(-5), "digest", "{json}", 42).unwrap();
        let b = bound(INSERT_VERDICT, &values);
        assert_eq!(set(b["audit_id"]), &CqlValue::Uuid(v.audit_id));
        assert_eq!(set(b["event_id"]), &CqlValue::Uuid(v.event_id));
        assert_eq!(set(b["contract_revision"]), &CqlValue::BigInt(3));
        assert_eq!(set(b["verdict"]), &CqlValue::Text("FAIL".into()));
        assert_eq!(
            set(b["checks"]),
            &CqlValue::Text(serde_json::to_string(&v.checks).unwrap())
        );
        assert_eq!(set(b["checks_failed"]), &CqlValue::Int(1));
        assert_eq!(
            set(b["occurred_at"]),
            &CqlValue::Timestamp(CqlTimestamp(at(-5).timestamp_millis()))
        );
        assert_eq!(set(b["duration_ms"]), &CqlValue::BigInt(3));
    }

    #[test]
    fn a_coordination_record_leaves_absent_ids_unset_not_null() {
        let c = coordination("acme", 7);
        let values = coordination_values(&c, "digest", "{json}", 42).unwrap();
        let b = bound(INSERT_COORDINATION, &values);
        assert!(matches!(b["conflicting_envelope_id"], MaybeUnset::Unset));
        assert_eq!(
            set(b["preempting_envelope_id"]),
            &CqlValue::Text("env-safety-7".into())
        );
        assert_eq!(set(b["envelope_class"]), &CqlValue::Text("COST".into()));
        assert_eq!(set(b["decision"]), &CqlValue::Text("PREEMPTED".into()));
        assert_eq!(set(b["active_envelopes_count"]), &CqlValue::Int(2));
    }

    #[test]
    fn a_rollout_status_row_is_keyed_by_exact_evidence_time_and_audit_id() {
        let v = verdict("acme", "deploy-api", 7);
        let status = RolloutStatus::from_verdict(&v, at(-5));
        let values = rollout_status_values(&status, 42).unwrap();
        let b = bound(INSERT_ROLLOUT_STATUS, &values);
        assert_eq!(set(b["occurred_at_ns"]), &CqlValue::BigInt(nanos(at(-5))));
        assert_eq!(nanos(at(-5)) % 1_000_000_000, 123_456_789);
        assert_eq!(set(b["audit_id"]), &CqlValue::Uuid(v.audit_id));
        assert_eq!(
            set(b["failed_checks"]),
            &CqlValue::List(vec![CqlValue::Text("A-001".into())])
        );
    }

    #[test]
    fn an_id_row_names_where_its_record_is() {
        let record = AuditRecord::Coordination(coordination("acme", 7));
        let values = record_id_values(&record, "digest", 42);
        let b = bound(INSERT_RECORD_ID, &values);
        assert_eq!(set(b["id"]), &CqlValue::Uuid(record.id()));
        assert_eq!(set(b["kind"]), &CqlValue::Text("coordination".into()));
        assert_eq!(set(b["source_offset"]), &CqlValue::BigInt(7));
        assert_eq!(
            plain(&record_id_key("coordination", record.id())),
            plain(&vec![uuid(record.id()), text("coordination")])
        );
    }

    #[test]
    fn a_checkpoint_is_written_at_its_next_offset() {
        let c = checkpoint(25);
        let values = checkpoint_values(&c);
        let b = bound(INSERT_CHECKPOINT, &values);
        assert_eq!(set(b["next_offset"]), &CqlValue::BigInt(25));
        assert_eq!(set(b["state"]), &CqlValue::Blob(c.state.clone()));
        assert_eq!(set(b["saved_at_ns"]), &CqlValue::BigInt(nanos(c.saved_at)));
        assert!(matches!(
            values.last(),
            Some(MaybeUnset::Set(CqlValue::BigInt(25)))
        ));
        assert!(checkpoint_timestamp(&checkpoint(26)) > checkpoint_timestamp(&c));
    }

    #[test]
    fn counts_that_do_not_fit_a_cql_int_are_refused() {
        let mut d = decision("acme", 1);
        d.count = u32::MAX;
        let err = decision_values(&d, "d", "{}", 0).unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert!(err.to_string().contains("failure_count"), "{err}");
    }

    #[test]
    fn write_timestamps_come_from_the_data_and_never_pass_the_wall_clock() {
        let now = at(1_000);
        assert_eq!(write_timestamp(at(10), now), at(10).timestamp_micros());
        assert_eq!(
            write_timestamp(at(10), now) % 1_000_000,
            123_456,
            "microseconds"
        );
        assert_eq!(write_timestamp(at(5_000), now), now.timestamp_micros());
        let d = decision("acme", 7);
        assert_eq!(
            AuditRecord::Decision(d.clone()).occurred_at(),
            d.occurred_at
        );
        assert_eq!(verdict_record("acme", "c", 40).occurred_at(), at(10));
        let c = coordination("acme", 7);
        assert_eq!(
            AuditRecord::Coordination(c.clone()).occurred_at(),
            c.created_at
        );
    }

    #[test]
    fn evidence_nanoseconds_keep_order_and_saturate_out_of_range() {
        assert!(nanos(at(0)) < nanos(at(0) + chrono::Duration::nanoseconds(1)));
        let far = Utc.with_ymd_and_hms(2300, 1, 1, 0, 0, 0).unwrap();
        let old = Utc.with_ymd_and_hms(1600, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(nanos(far), i64::MAX);
        assert_eq!(nanos(old), i64::MIN);
        assert!(nanos(old) < nanos(at(0)) && nanos(at(0)) < nanos(far));
    }

    #[test]
    fn keyspace_names_are_checked_before_they_reach_cql() {
        for good in ["audit_stream", "a", "audit_stream_test_0f3a"] {
            check_keyspace(good).unwrap();
        }
        for bad in [
            "",
            "Audit",
            "1audit",
            "audit-stream",
            "audit.x",
            "a b",
            "x; DROP KEYSPACE y",
            &"a".repeat(49),
        ] {
            assert!(check_keyspace(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn value_sizes_count_text_and_blobs() {
        let small = values_size(&vec![text("ab"), MaybeUnset::Unset]);
        let large = values_size(&vec![text(&"x".repeat(1_000)), MaybeUnset::Unset]);
        assert!(large >= 1_000 && large > small);
    }
}
