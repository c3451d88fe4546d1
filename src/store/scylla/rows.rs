//! Rows as the cluster returns them (one `Option<CqlValue>` per selected column, in the
//! SELECT's order) mapped back to what the store hands out. Reads return the JSON kept in
//! each row (exact timestamps, every field), so the mapping is the same as the embedded
//! store's; a column of an unexpected type means the schema is not the one this build
//! migrates to, which retrying cannot fix.

use chrono::{DateTime, Utc};
use scylla::value::CqlValue;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::super::cursor::Cursor;
use super::super::{AuditRecord, Checkpoint, StoreError, StoredRecord};
use crate::chain::{ChainHead, ChainKey, ChainLink};
use crate::gate::RolloutStatus;

/// One row's columns, in the order of the SELECT's column list.
pub(crate) type Columns = Vec<Option<CqlValue>>;

fn unexpected(what: &str, index: usize, expected: &str, found: Option<&CqlValue>) -> StoreError {
    StoreError::Permanent(format!(
        "stored {what}: column {index} is {found:?}, expected {expected} (is the schema migrated?)"
    ))
}

fn column(row: &[Option<CqlValue>], index: usize) -> Option<&CqlValue> {
    row.get(index).and_then(Option::as_ref)
}

fn text(row: &[Option<CqlValue>], index: usize, what: &str) -> Result<String, StoreError> {
    match column(row, index) {
        Some(CqlValue::Text(s) | CqlValue::Ascii(s)) => Ok(s.clone()),
        other => Err(unexpected(what, index, "text", other)),
    }
}

fn int(row: &[Option<CqlValue>], index: usize, what: &str) -> Result<i32, StoreError> {
    match column(row, index) {
        Some(CqlValue::Int(n)) => Ok(*n),
        other => Err(unexpected(what, index, "int", other)),
    }
}

fn bigint(row: &[Option<CqlValue>], index: usize, what: &str) -> Result<i64, StoreError> {
    match column(row, index) {
        Some(CqlValue::BigInt(n)) => Ok(*n),
        other => Err(unexpected(what, index, "bigint", other)),
    }
}

fn uuid(row: &[Option<CqlValue>], index: usize, what: &str) -> Result<Uuid, StoreError> {
    match column(row, index) {
        Some(CqlValue::Uuid(id)) => Ok(*id),
        other => Err(unexpected(what, index, "uuid", other)),
    }
}

/// A `blob`; a null blob is empty (CQL cannot tell the two apart once written).
fn blob(row: &[Option<CqlValue>], index: usize, what: &str) -> Result<Vec<u8>, StoreError> {
    match column(row, index) {
        Some(CqlValue::Blob(bytes)) => Ok(bytes.clone()),
        None => Ok(Vec::new()),
        other => Err(unexpected(what, index, "blob", other)),
    }
}

fn json<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Permanent(format!("stored {what} is not readable: {e}")))
}

/// A listing row (source_topic, source_partition, source_offset, id, record): the record,
/// and the cursor that resumes after it.
pub(crate) fn listing_item<T: DeserializeOwned>(
    listing: &str,
    row: &[Option<CqlValue>],
) -> Result<(T, Cursor), StoreError> {
    let cursor = Cursor {
        listing: listing.to_owned(),
        topic: text(row, 0, listing)?,
        partition: int(row, 1, listing)?,
        offset: bigint(row, 2, listing)?,
        id: uuid(row, 3, listing)?,
    };
    let record = json(&text(row, 4, listing)?, &format!("{listing} {}", cursor.id))?;
    Ok((record, cursor))
}

/// A chain listing row (source_topic, source_partition, chain_seq, kind, record_id,
/// prev_hash, hash, occurred_at_ns, record): the entry, and the cursor that resumes
/// after it.
pub(crate) fn chain_entry(
    tenant_id: &str,
    row: &[Option<CqlValue>],
) -> Result<(StoredRecord, Cursor), StoreError> {
    let what = "chain entry";
    let topic = text(row, 0, what)?;
    let partition = int(row, 1, what)?;
    let seq = bigint(row, 2, what)?;
    let kind = text(row, 3, what)?;
    let id = uuid(row, 4, what)?;
    let occurred_at = match column(row, 7) {
        None => None,
        Some(CqlValue::BigInt(ns)) => Some(DateTime::<Utc>::from_timestamp_nanos(*ns)),
        other => return Err(unexpected(what, 7, "bigint", other)),
    };
    let record =
        AuditRecord::from_chain_fields(&kind, &text(row, 8, what)?, occurred_at).map_err(|e| {
            StoreError::Permanent(format!(
                "chain entry {tenant_id}@{topic}/{partition} #{seq} ({kind} {id}): {e}"
            ))
        })?;
    let entry = StoredRecord::new(
        record,
        ChainLink {
            seq: u64::try_from(seq).unwrap_or(0),
            prev_hash: text(row, 5, what)?,
            hash: text(row, 6, what)?,
        },
    );
    let cursor = Cursor {
        listing: "chain".to_owned(),
        topic,
        partition,
        offset: seq,
        id: Uuid::nil(),
    };
    Ok((entry, cursor))
}

/// A chain head row (source_topic, source_partition, records, last_hash, first_offset,
/// last_offset) of `tenant_id`.
pub(crate) fn chain_head(
    tenant_id: &str,
    row: &[Option<CqlValue>],
) -> Result<ChainHead, StoreError> {
    let what = "chain head";
    Ok(ChainHead {
        key: ChainKey {
            tenant_id: tenant_id.to_owned(),
            topic: text(row, 0, what)?,
            partition: int(row, 1, what)?,
        },
        records: u64::try_from(bigint(row, 2, what)?).unwrap_or(0),
        last_hash: text(row, 3, what)?,
        first_offset: bigint(row, 4, what)?,
        last_offset: bigint(row, 5, what)?,
    })
}

/// A rollout status row (status).
pub(crate) fn rollout_status(row: &[Option<CqlValue>]) -> Result<RolloutStatus, StoreError> {
    json(&text(row, 0, "rollout status")?, "rollout status")
}

/// A checkpoint row (next_offset, state, saved_at_ns) of the partition it was read by.
pub(crate) fn checkpoint(
    group: &str,
    topic: &str,
    partition: i32,
    row: &[Option<CqlValue>],
) -> Result<Checkpoint, StoreError> {
    Ok(Checkpoint {
        group: group.to_owned(),
        topic: topic.to_owned(),
        partition,
        next_offset: bigint(row, 0, "checkpoint")?,
        state: blob(row, 1, "checkpoint")?,
        saved_at: DateTime::<Utc>::from_timestamp_nanos(bigint(row, 2, "checkpoint")?),
    })
}

/// What an id row says about the stored record with that id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredId {
    /// [`AuditRecord::content_digest`](crate::store::AuditRecord::content_digest) of the
    /// stored record.
    pub(crate) digest: String,
    /// Where its row is: its partition ...
    pub(crate) tenant_id: String,
    /// ... and its source position, the start of its clustering key.
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
}

/// A record id row (content_digest, tenant_id, source_topic, source_partition,
/// source_offset).
pub(crate) fn record_id(row: &[Option<CqlValue>]) -> Result<StoredId, StoreError> {
    Ok(StoredId {
        digest: text(row, 0, "record id")?,
        tenant_id: text(row, 1, "record id")?,
        topic: text(row, 2, "record id")?,
        partition: int(row, 3, "record id")?,
        offset: bigint(row, 4, "record id")?,
    })
}

/// A stored record's source row (source_event_id).
pub(crate) fn source_event_id(row: &[Option<CqlValue>]) -> Result<Uuid, StoreError> {
    uuid(row, 0, "record source")
}

/// A partition key row (tenant_id).
pub(crate) fn tenant(row: &[Option<CqlValue>]) -> Result<String, StoreError> {
    text(row, 0, "tenant")
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{self, *};
    use super::super::statements::*;
    use super::*;
    use crate::event::{AuditDecision, AuditVerdict, CoordinationRecord};
    use crate::store::AuditRecord;

    /// The insert of `record`'s table, and its values.
    fn insert_of(record: &AuditRecord) -> (&'static str, Values) {
        let digest = record.content_digest();
        let json = record.to_json().unwrap();
        let (insert, values) = match record {
            AuditRecord::Decision(d) => (INSERT_DECISION, decision_values(d, &digest, &json, 1)),
            AuditRecord::Verdict {
                verdict,
                occurred_at,
            } => (
                INSERT_VERDICT,
                verdict_values(verdict, *occurred_at, &digest, &json, 1),
            ),
            AuditRecord::Coordination(c) => (
                INSERT_COORDINATION,
                coordination_values(c, &digest, &json, 1),
            ),
        };
        (insert, values.unwrap())
    }

    /// The row a listing returns for `record` after its insert (both pages read alike).
    fn listing_row(record: &AuditRecord, listing: &Listing) -> Columns {
        let (insert, values) = insert_of(record);
        let row = row_after(insert, &values, listing.first_page);
        assert_eq!(row, row_after(insert, &values, listing.next_page));
        row
    }

    #[test]
    fn a_decision_reads_back_with_the_cursor_of_its_position() {
        let d = decision("acme", 7);
        let row = listing_row(&AuditRecord::Decision(d.clone()), &DECISIONS);
        let (read, cursor): (AuditDecision, Cursor) = listing_item("decision", &row).unwrap();
        assert_eq!(read, d);
        assert_eq!(
            cursor,
            Cursor {
                listing: "decision".into(),
                topic: d.source.topic.clone(),
                partition: d.source.partition,
                offset: 7,
                id: d.event_id,
            }
        );
    }

    #[test]
    fn a_verdict_reads_back_exactly_with_sub_millisecond_timestamps() {
        let record = verdict_record("acme", "deploy-api", 7);
        let row = listing_row(&record, &VERDICTS);
        let (read, cursor): (AuditVerdict, Cursor) = listing_item("verdict", &row).unwrap();
        let AuditRecord::Verdict { verdict, .. } = &record else {
            unreachable!()
        };
        assert_eq!(&read, verdict);
        assert_eq!(read.audited_at.timestamp_subsec_nanos(), 123_456_789);
        assert_eq!(cursor.id, verdict.audit_id);
    }

    #[test]
    fn a_coordination_record_reads_back_with_its_absent_ids_absent() {
        let c = coordination("acme", 7);
        let row = listing_row(&AuditRecord::Coordination(c.clone()), &COORDINATION);
        let (read, cursor): (CoordinationRecord, Cursor) =
            listing_item("coordination", &row).unwrap();
        assert_eq!(read, c);
        assert_eq!(read.conflicting_envelope_id, None);
        assert_eq!(cursor.id, c.audit_id);
    }

    #[test]
    fn the_rollout_status_reads_back_from_its_row() {
        let v = verdict("acme", "deploy-api", 7);
        let status = RolloutStatus::from_verdict(&v, at(-5));
        let values = rollout_status_values(&status, 1).unwrap();
        let row = row_after(INSERT_ROLLOUT_STATUS, &values, SELECT_ROLLOUT_STATUS);
        assert_eq!(rollout_status(&row).unwrap(), status);
    }

    #[test]
    fn a_checkpoint_reads_back_to_the_nanosecond() {
        let c = fixtures::checkpoint(25);
        let row = row_after(INSERT_CHECKPOINT, &checkpoint_values(&c), SELECT_CHECKPOINT);
        let read = super::checkpoint(&c.group, &c.topic, c.partition, &row).unwrap();
        assert_eq!(read, c);
        let mut empty = fixtures::checkpoint(1);
        empty.state.clear();
        let row = row_after(
            INSERT_CHECKPOINT,
            &checkpoint_values(&empty),
            SELECT_CHECKPOINT,
        );
        assert_eq!(
            super::checkpoint(&empty.group, &empty.topic, 3, &row).unwrap(),
            empty
        );
    }

    #[test]
    fn a_record_id_row_gives_the_stored_digest_and_position() {
        let record = AuditRecord::Decision(decision("acme", 7));
        let values = record_id_values(&record, "the-digest", 1);
        let row = row_after(INSERT_RECORD_ID, &values, SELECT_RECORD_ID);
        assert_eq!(
            record_id(&row).unwrap(),
            StoredId {
                digest: "the-digest".into(),
                tenant_id: "acme".into(),
                topic: record.source().topic.clone(),
                partition: record.source().partition,
                offset: 7,
            }
        );
    }

    #[test]
    fn a_source_row_gives_the_stored_record_source_event() {
        for (record, select) in [
            (
                AuditRecord::Decision(decision("acme", 7)),
                SELECT_DECISION_SOURCE,
            ),
            (
                verdict_record("acme", "deploy-api", 7),
                SELECT_VERDICT_SOURCE,
            ),
            (
                AuditRecord::Coordination(coordination("acme", 7)),
                SELECT_COORDINATION_SOURCE,
            ),
        ] {
            let (insert, values) = insert_of(&record);
            let row = row_after(insert, &values, select);
            assert_eq!(source_event_id(&row).unwrap(), record.source().event_id);
        }
    }

    #[test]
    fn a_tenant_row_gives_the_tenant() {
        let row = vec![Some(CqlValue::Text("acme".into()))];
        assert_eq!(tenant(&row).unwrap(), "acme");
    }

    #[test]
    fn a_column_of_another_type_is_a_permanent_error() {
        let row = vec![
            Some(CqlValue::Int(1)),
            Some(CqlValue::Int(2)),
            Some(CqlValue::BigInt(3)),
            Some(CqlValue::Uuid(Uuid::nil())),
            Some(CqlValue::Text("{}".into())),
        ];
        let err = listing_item::<AuditDecision>("decision", &row).unwrap_err();
        assert!(!err.is_retryable(), "{err}");
        assert!(err.to_string().contains("column 0"), "{err}");
        let err = rollout_status(&[None]).unwrap_err();
        assert!(!err.is_retryable(), "{err}");
    }

    #[test]
    fn a_row_whose_json_is_not_a_record_is_a_permanent_error() {
        let row = vec![
            Some(CqlValue::Text("t".into())),
            Some(CqlValue::Int(2)),
            Some(CqlValue::BigInt(3)),
            Some(CqlValue::Uuid(Uuid::nil())),
            Some(CqlValue::Text("{\"not\": \"a decision\"}".into())),
        ];
        let err = listing_item::<AuditDecision>("decision", &row).unwrap_err();
        assert!(matches!(err, StoreError::Permanent(_)), "{err}");
    }

    #[test]
    fn a_chain_entry_reads_back_as_written_for_every_kind() {
        let records = [
            AuditRecord::Decision(decision("acme", 3)),
            verdict_record("acme", "deploy-api", 4),
            AuditRecord::Coordination(coordination("acme", 5)),
        ];
        for written in crate::store::StoredRecord::chain(records) {
            let json = written.record.to_json().unwrap();
            let values = plain(&chain_entry_values(
                &written.record,
                &written.link,
                &json,
                1,
            ));
            // The listing's columns, picked from the insert's by name.
            let row: Vec<Option<CqlValue>> = [1, 2, 3, 4, 5, 7, 8, 9, 10]
                .iter()
                .map(|&i| values[i].clone())
                .collect();
            let (read, cursor) = chain_entry("acme", &row).unwrap();
            assert_eq!(read, written);
            assert_eq!(cursor.offset, written.link.seq as i64);
            assert!(crate::chain::is_intact(&read.record, &read.link));
        }
    }

    #[test]
    fn a_chain_head_reads_back_as_written() {
        let mut chains = crate::chain::PartitionChains::default();
        chains.append(&AuditRecord::Decision(decision("acme", 3)));
        let head = chains.heads().next().unwrap().clone();
        let values = plain(&chain_head_values(&head));
        let row: Vec<Option<CqlValue>> = values[1..7].to_vec();
        assert_eq!(chain_head("acme", &row).unwrap(), head);
    }
}
