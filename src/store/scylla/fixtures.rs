//! Records and tables for the unit tests of the ScyllaDB store: what the pipeline would
//! hand it, and the column types and rows the cluster would have.

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use scylla::frame::response::result::{
    CollectionType, ColumnSpec, ColumnType, NativeType, TableSpec,
};
use scylla::serialize::row::{RowSerializationContext, SerializeRow};
use scylla::serialize::writers::RowWriter;
use scylla::value::{CqlValue, MaybeUnset};
use serde_json::json;
use uuid::Uuid;

use super::rows::Columns;
use super::schema::{without_comments, CQL_FILES};
use super::statements::Values;
use crate::event::{
    output_id, AuditDecision, AuditVerdict, CheckOutcome, CheckResult, CoordinationDecision,
    CoordinationRecord, DecisionKind, EnvelopeClass, Level, OutputKind, Phase, SourceRef,
    SCHEMA_VERSION,
};
use crate::store::{AuditRecord, Checkpoint};

/// 2025-03-01T12:00:00.123456789Z plus `seconds`: sub-millisecond on purpose.
pub(crate) fn at(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).unwrap()
        + chrono::Duration::nanoseconds(123_456_789)
        + chrono::Duration::seconds(seconds)
}

pub(crate) fn source(tenant: &str, topic: &str, offset: i64) -> SourceRef {
    SourceRef {
        topic: topic.into(),
        partition: 2,
        offset,
        event_id: Uuid::new_v5(
            &Uuid::NAMESPACE_OID,
            format!("{tenant}/{topic}/{offset}").as_bytes(),
        ),
    }
}

pub(crate) fn decision(tenant: &str, offset: i64) -> AuditDecision {
    let source = source(tenant, "audit.validation.v1", offset);
    AuditDecision {
        schema_version: SCHEMA_VERSION,
        event_id: output_id(&source.event_id.to_string(), OutputKind::Decision, 0),
        tenant_id: tenant.into(),
        key: format!("{tenant}:p_transfer:input:amount"),
        process: "p_transfer".into(),
        phase: Phase::Input,
        field: "amount".into(),
        level: Level::B,
        decision: DecisionKind::Block,
        count: 4,
        threshold: 3,
        message: "Amount must be >= 100".into(),
        occurred_at: at(offset),
        source,
    }
}

pub(crate) fn verdict(tenant: &str, contract: &str, offset: i64) -> AuditVerdict {
    let source = source(tenant, "audit.execution.v1", offset);
    let src = source.event_id.to_string();
    let check = |id: &str, result: CheckResult| CheckOutcome {
        check_id: id.into(),
        name: "scope compliance".into(),
        result,
        reason: "executed targets outside scope: billing-db".into(),
        evidence: json!({"executed_targets": ["api-gateway", "billing-db"]}).into(),
    };
    AuditVerdict {
        schema_version: SCHEMA_VERSION,
        event_id: output_id(&src, OutputKind::Verdict, 0),
        audit_id: output_id(&src, OutputKind::VerdictAudit, 0),
        tenant_id: tenant.into(),
        job_id: format!("job-{offset}"),
        contract_id: contract.into(),
        contract_revision: 3,
        verdict: CheckResult::Fail,
        verdict_reason: "Failed checks: A-001".into(),
        checks: vec![
            check("A-001", CheckResult::Fail),
            check("A-002", CheckResult::Pass),
        ],
        checks_passed: 1,
        checks_failed: 1,
        checks_inconclusive: 0,
        evidence_digest: format!("{offset:064x}"),
        auditor_version: "0.1.0".into(),
        rules_version: "2025-03-01".into(),
        audited_at: at(offset + 2),
        duration_ms: 3,
        source,
    }
}

pub(crate) fn coordination(tenant: &str, offset: i64) -> CoordinationRecord {
    let source = source(tenant, "audit.coordination.v1", offset);
    CoordinationRecord {
        audit_id: output_id(
            &source.event_id.to_string(),
            OutputKind::CoordinationAudit,
            0,
        ),
        tenant_id: tenant.into(),
        envelope_id: format!("env-cost-{offset}"),
        envelope_class: EnvelopeClass::Cost,
        decision: CoordinationDecision::Preempted,
        reason: "preempted by a SAFETY envelope".into(),
        decision_timestamp: at(offset),
        created_at: at(offset + 1),
        conflicting_envelope_id: None,
        preempting_envelope_id: Some(format!("env-safety-{offset}")),
        active_envelopes_count: 2,
        source,
    }
}

pub(crate) fn verdict_record(tenant: &str, contract: &str, offset: i64) -> AuditRecord {
    AuditRecord::Verdict {
        verdict: verdict(tenant, contract, offset),
        occurred_at: at(offset - 30),
    }
}

pub(crate) fn checkpoint(next_offset: i64) -> Checkpoint {
    Checkpoint {
        group: "audit-stream".into(),
        topic: "audit.validation.v1".into(),
        partition: 3,
        next_offset,
        state: vec![0, 159, 146, 150, 255],
        saved_at: at(next_offset),
    }
}

/// Bound values as plain options (unset as `None`), to compare them.
pub(crate) fn plain(values: &Values) -> Vec<Option<CqlValue>> {
    values
        .iter()
        .map(|v| match v {
            MaybeUnset::Set(v) => Some(v.clone()),
            MaybeUnset::Unset => None,
        })
        .collect()
}

/// Column name → CQL type of `table`, from its file in `schemas/cql/`.
pub(crate) fn table_columns(table: &str) -> HashMap<String, String> {
    let file = CQL_FILES
        .iter()
        .find(|f| f.text.contains(&format!("{{{{keyspace}}}}.{table} (")))
        .unwrap_or_else(|| panic!("no schema file creates {table}"));
    let code = without_comments(file.text);
    let body = &code[code.find('(').unwrap() + 1..code.find("PRIMARY KEY").unwrap()];
    body.lines()
        .filter_map(|line| {
            let line = line.trim().trim_end_matches(',');
            let (name, kind) = line.split_once(char::is_whitespace)?;
            Some((name.to_owned(), kind.trim().to_owned()))
        })
        .collect()
}

/// The primary key of `table` as written: the partition key columns, then the clustering
/// columns.
pub(crate) fn primary_key(table: &str) -> (Vec<String>, Vec<String>) {
    let file = CQL_FILES
        .iter()
        .find(|f| f.text.contains(&format!("{{{{keyspace}}}}.{table} (")))
        .unwrap();
    let code = without_comments(file.text);
    let key = &code[code.find("PRIMARY KEY ((").unwrap() + 14..];
    let (partition, rest) = key.split_once(')').unwrap();
    let clustering = &rest[..rest.find(')').unwrap()];
    let list = |s: &str| {
        s.split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    (list(partition), list(clustering))
}

/// Whether `value` can be bound to a column of CQL type `kind`.
pub(crate) fn fits(value: &CqlValue, kind: &str) -> bool {
    match (kind, value) {
        ("text", CqlValue::Text(_))
        | ("int", CqlValue::Int(_))
        | ("bigint", CqlValue::BigInt(_))
        | ("uuid", CqlValue::Uuid(_))
        | ("timestamp", CqlValue::Timestamp(_))
        | ("blob", CqlValue::Blob(_)) => true,
        ("frozen<list<text>>", CqlValue::List(items)) => {
            items.iter().all(|i| matches!(i, CqlValue::Text(_)))
        }
        _ => false,
    }
}

/// The driver's type of a CQL type of the schema files.
fn column_type(kind: &str) -> ColumnType<'static> {
    let native = |kind: &str| match kind {
        "text" => NativeType::Text,
        "int" => NativeType::Int,
        "bigint" => NativeType::BigInt,
        "uuid" => NativeType::Uuid,
        "timestamp" => NativeType::Timestamp,
        "blob" => NativeType::Blob,
        other => panic!("no test mapping for CQL type {other}"),
    };
    match kind
        .strip_prefix("frozen<list<")
        .and_then(|k| k.strip_suffix(">>"))
    {
        Some(element) => ColumnType::Collection {
            frozen: true,
            typ: CollectionType::List(Box::new(ColumnType::Native(native(element)))),
        },
        None => ColumnType::Native(native(kind)),
    }
}

/// Serializes `values` for `insert` the way the driver does for the prepared statement,
/// whose bind markers are the columns' types (from the DDL) and the bigint timestamp:
/// fails if a value is not of its column's type or the count is wrong.
pub(crate) fn serialize_for(insert: &str, values: &Values) -> Result<Vec<u8>, String> {
    let (table, columns) = insert_columns(insert);
    let types = table_columns(&table);
    let spec = |name: &str, typ| {
        ColumnSpec::owned(
            name.to_owned(),
            typ,
            TableSpec::owned("ks".into(), table.clone()),
        )
    };
    let mut specs: Vec<ColumnSpec<'static>> = columns
        .iter()
        .map(|c| spec(c, column_type(&types[c])))
        .collect();
    specs.push(spec("[timestamp]", ColumnType::Native(NativeType::BigInt)));
    let mut buf = Vec::new();
    values
        .serialize(
            &RowSerializationContext::from_specs(&specs),
            &mut RowWriter::new(&mut buf),
        )
        .map_err(|e| e.to_string())?;
    Ok(buf)
}

/// (table, column list) of an `INSERT INTO {{keyspace}}.table (a, b, ...) VALUES ...`.
pub(crate) fn insert_columns(insert: &str) -> (String, Vec<String>) {
    let rest = insert
        .strip_prefix("INSERT INTO {{keyspace}}.")
        .expect("an insert into the keyspace");
    let (table, rest) = rest.split_once(" (").unwrap();
    let columns = rest[..rest.find(')').unwrap()]
        .split(',')
        .map(|c| c.trim().to_owned())
        .collect();
    (table.to_owned(), columns)
}

/// (table, column list) of a `SELECT a, b FROM table WHERE ...`.
pub(crate) fn select_columns(select: &str) -> (String, Vec<String>) {
    let rest = select.strip_prefix("SELECT ").expect("a select");
    let (columns, rest) = rest.split_once(" FROM ").unwrap();
    let table = rest.split_whitespace().next().unwrap();
    let table = table.rsplit('.').next().unwrap().to_owned();
    let columns = columns
        .trim_start_matches("DISTINCT ")
        .split(',')
        .map(|c| c.trim().to_owned())
        .collect();
    (table, columns)
}

/// The row `select` returns after `insert` ran with `values`: the inserted values of the
/// selected columns, an unset one read as null.
pub(crate) fn row_after(insert: &str, values: &Values, select: &str) -> Columns {
    let (table, columns) = insert_columns(insert);
    let (selected_table, selected) = select_columns(select);
    assert_eq!(table, selected_table);
    let written: HashMap<&String, &MaybeUnset<CqlValue>> = columns.iter().zip(values).collect();
    selected
        .iter()
        .map(|c| match written.get(c) {
            Some(MaybeUnset::Set(v)) => Some(v.clone()),
            Some(MaybeUnset::Unset) => None,
            None => panic!("{select} reads {c}, which {insert} does not write"),
        })
        .collect()
}
