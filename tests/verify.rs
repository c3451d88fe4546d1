//! `audit-stream verify` against an embedded store filled by the pipeline's own operator
//! and chain code, then tampered with directly in SQLite: each kind of tampering is found
//! and named by record id, and a store nobody touched verifies clean.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use audit_stream::chain::link_hash;
use audit_stream::config::Config;
use audit_stream::pipeline::operator::PartitionState;
use audit_stream::pipeline::{recipe_source, Operator};
use audit_stream::record::RecordLine;
use audit_stream::store::{AuditRecord, AuditStore, EmbeddedStore, StoredRecord};
use chrono::{TimeZone, Utc};
use rusqlite::{params, Connection};
use tempfile::TempDir;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A store holding the audit records of `examples/demo.jsonl`, as the live pipeline
/// would store them, with every chain's head saved.
fn filled_store(dir: &TempDir) -> PathBuf {
    let path = dir.path().join("audit.db");
    let config = Config::default();
    let operator = Operator::new(&config).expect("schemas compile");
    let recipes = recipe_source::load(&root().join("config/recipes.yaml")).expect("recipes");
    let text = std::fs::read_to_string(root().join("examples/demo.jsonl")).expect("demo input");
    let now = Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap();

    let mut states: HashMap<(String, i32), PartitionState> = HashMap::new();
    let mut offsets: HashMap<(String, i32), i64> = HashMap::new();
    let mut stored: Vec<StoredRecord> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = RecordLine::parse(line, n + 1).expect("record line");
        // Two partitions per topic, so a tenant has several chains.
        let tp = (line.topic.clone(), (n % 2) as i32);
        let offset = offsets.entry(tp.clone()).or_insert(0);
        let record = line.into_record(tp.1, *offset);
        *offset += 1;
        let state = states
            .entry(tp)
            .or_insert_with(|| PartitionState::new(&recipes));
        let outputs = operator.process(&record, &recipes, state, now);
        stored.extend(state.link(outputs, operator.topics()).1);
    }
    assert!(stored.len() > 50, "the demo yields audit records");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = EmbeddedStore::open(&path).expect("store");
        for batch in stored.chunks(16) {
            store.write(batch.into()).await.expect("write");
        }
        let heads: Vec<_> = states
            .values()
            .flat_map(|s| s.chains.heads().cloned())
            .collect();
        store.save_chain_heads(&heads).await.expect("heads");
    });
    path
}

fn verify(path: &Path, args: &[&str]) -> (i32, String) {
    let Output { status, stdout, .. } = Command::new(env!("CARGO_BIN_EXE_audit-stream"))
        .arg("verify")
        .args(args)
        .env("AUDIT_STREAM__STORE__KIND", "embedded")
        .env("AUDIT_STREAM__STORE__EMBEDDED_PATH", path)
        .output()
        .expect("audit-stream runs");
    (
        status.code().expect("exit code"),
        String::from_utf8(stdout).expect("UTF-8"),
    )
}

/// Runs `tamper` on a fresh filled store, then `verify`; returns its exit code and output.
fn tampered(tamper: impl FnOnce(&Connection)) -> (i32, String) {
    let dir = TempDir::new().expect("temp dir");
    let path = filled_store(&dir);
    {
        let conn = Connection::open(&path).expect("open for tampering");
        tamper(&conn);
    }
    verify(&path, &[])
}

/// One value of the first row of `sql`.
fn one(conn: &Connection, sql: &str) -> String {
    conn.query_row(sql, [], |row| row.get(0)).expect(sql)
}

/// The record JSON a chain entry chains: its own, or (a record written with it) its
/// record's row's.
fn entry_json(conn: &Connection, record_id: &str) -> String {
    conn.query_row(
        "SELECT COALESCE(c.record, d.record, v.record, r.record) FROM audit_chain c
         LEFT JOIN audit_decisions d ON d.event_id = c.record_id
         LEFT JOIN audit_verdicts v ON v.audit_id = c.record_id
         LEFT JOIN coordination_audit_records r ON r.audit_id = c.record_id
         WHERE c.record_id = ?1",
        [record_id],
        |row| row.get(0),
    )
    .expect("an entry with content")
}

/// (record_id, chain_seq) of the chain entries of the longest chain, in order.
fn longest_chain(conn: &Connection) -> Vec<(String, i64)> {
    let (tenant, topic, partition): (String, String, i64) = conn
        .query_row(
            "SELECT tenant_id, source_topic, source_partition FROM audit_chain
             GROUP BY 1, 2, 3 ORDER BY count(*) DESC, 1, 2, 3 LIMIT 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .expect("a chain");
    let mut stmt = conn
        .prepare(
            "SELECT record_id, chain_seq FROM audit_chain
             WHERE tenant_id = ?1 AND source_topic = ?2 AND source_partition = ?3
             ORDER BY chain_seq",
        )
        .expect("prepare");
    let entries = stmt
        .query_map(params![tenant, topic, partition], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .expect("query")
        .collect::<rusqlite::Result<Vec<_>>>()
        .expect("rows");
    assert!(entries.len() >= 5, "a chain long enough to tamper with");
    entries
}

fn assert_found(result: &(i32, String), needle: &str) {
    let (code, out) = result;
    assert_eq!(*code, 3, "tampering found means exit 3:\n{out}");
    assert!(out.contains("TAMPERING FOUND"), "{out}");
    assert!(out.contains(needle), "expected {needle:?} in:\n{out}");
}

#[test]
fn an_untouched_store_verifies_clean() {
    let dir = TempDir::new().expect("temp dir");
    let path = filled_store(&dir);
    let (code, out) = verify(&path, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no tampering found"), "{out}");
    let conn = Connection::open(&path).expect("open");
    let entries: i64 = conn
        .query_row("SELECT count(*) FROM audit_chain", [], |r| r.get(0))
        .expect("count");
    assert!(
        out.contains(&format!("{entries} chain entries")),
        "every entry read: {out}"
    );
    assert!(
        !out.contains("not yet anchored"),
        "every chain anchored: {out}"
    );

    let (code, out) = verify(&path, &["--tenant", "globex"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verified 1 tenant(s)"), "{out}");
}

#[test]
fn a_modified_record_is_named() {
    let mut id = String::new();
    let result = tampered(|conn| {
        id = one(
            conn,
            "SELECT event_id FROM audit_decisions ORDER BY event_id LIMIT 1",
        );
        conn.execute(
            "UPDATE audit_decisions SET record = json_set(record, '$.count', 9999)
             WHERE event_id = ?1",
            [&id],
        )
        .expect("update");
    });
    assert_found(&result, &format!("modified decision {id}"));
}

#[test]
fn a_modified_chain_entry_is_named_even_with_its_hash_rewritten() {
    let mut id = String::new();
    let result = tampered(|conn| {
        let chain = longest_chain(conn);
        id = chain[2].0.clone();
        let (kind, prev, occurred_at): (String, String, Option<String>) = conn
            .query_row(
                "SELECT kind, prev_hash, occurred_at FROM audit_chain WHERE record_id = ?1",
                [&id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .expect("entry");
        let json: String = conn
            .query_row(
                "SELECT json_set(?1, '$.source.offset', 424242)",
                [entry_json(conn, &id)],
                |r| r.get(0),
            )
            .expect("json");
        // The content changed and its own hash recomputed to match: only its successor's
        // link still names the original.
        let occurred_at = occurred_at.map(|t| {
            chrono::DateTime::parse_from_rfc3339(&t)
                .expect("time")
                .with_timezone(&Utc)
        });
        let record = AuditRecord::from_chain_fields(&kind, &json, occurred_at).expect("record");
        let hash = link_hash(&prev, &record.canonical());
        conn.execute(
            "UPDATE audit_chain SET record = ?2, hash = ?3 WHERE record_id = ?1",
            params![id, json, hash],
        )
        .expect("update");
    });
    assert_found(&result, "modified");
    assert!(
        result
            .1
            .lines()
            .any(|l| l.contains("modified") && l.contains(&id)),
        "names {id}:\n{}",
        result.1
    );
}

#[test]
fn a_deleted_record_is_named() {
    let mut id = String::new();
    let result = tampered(|conn| {
        id = one(
            conn,
            "SELECT audit_id FROM audit_verdicts ORDER BY audit_id LIMIT 1",
        );
        conn.execute("DELETE FROM audit_verdicts WHERE audit_id = ?1", [&id])
            .expect("delete");
    });
    assert_found(&result, &format!("deleted verdict {id}"));
}

#[test]
fn a_deleted_chain_entry_leaves_a_gap_before_its_successor() {
    let mut next = String::new();
    let result = tampered(|conn| {
        let chain = longest_chain(conn);
        next = chain[3].0.clone();
        conn.execute(
            "DELETE FROM audit_chain WHERE record_id = ?1",
            [&chain[2].0],
        )
        .expect("delete");
    });
    assert_found(
        &result,
        &format!("deleted 1 record(s) at chain position 2 before {next}"),
    );
}

#[test]
fn entries_deleted_from_the_end_of_a_chain_are_found_by_its_head() {
    let result = tampered(|conn| {
        let chain = longest_chain(conn);
        let (last, _) = chain.last().expect("entries");
        conn.execute("DELETE FROM audit_chain WHERE record_id = ?1", [last])
            .expect("delete");
    });
    assert_found(&result, "deleted 1 record(s) at the end of the chain");
}

#[test]
fn an_inserted_record_is_named() {
    let forged = "00000000-0000-4000-8000-00000000f00d";
    let result = tampered(|conn| {
        conn.execute(
            "INSERT INTO audit_decisions
             SELECT ?1, tenant_id, source_topic, source_partition, source_offset,
                    source_event_id, counter_key, process, level, decision, occurred_at,
                    content_digest, json_set(record, '$.event_id', ?1)
             FROM audit_decisions ORDER BY event_id LIMIT 1",
            [forged],
        )
        .expect("insert");
    });
    assert_found(&result, &format!("inserted decision {forged}"));
}

#[test]
fn an_inserted_chain_entry_is_named() {
    let forged = "00000000-0000-4000-8000-00000000beef";
    let result = tampered(|conn| {
        let chain = longest_chain(conn);
        // A forged entry claiming the successor's place, linked to a real entry.
        conn.execute(
            "INSERT INTO audit_chain
             SELECT tenant_id, source_topic, source_partition, 1000000, kind, ?2,
                    source_offset, prev_hash, ?3, occurred_at, json_set(?4, '$.event_id', ?2)
             FROM audit_chain WHERE record_id = ?1",
            params![
                chain[3].0,
                forged,
                "f".repeat(64),
                entry_json(conn, &chain[3].0)
            ],
        )
        .expect("insert");
    });
    assert_found(&result, &format!("inserted decision {forged}"));
}

#[test]
fn reordered_chain_entries_are_named() {
    let (mut a, mut b) = (String::new(), String::new());
    let result = tampered(|conn| {
        let chain = longest_chain(conn);
        (a, b) = (chain[1].0.clone(), chain[3].0.clone());
        let (sa, sb) = (chain[1].1, chain[3].1);
        for (id, seq) in [(&a, 1_000_000_000), (&b, sa), (&a, sb)] {
            conn.execute(
                "UPDATE audit_chain SET chain_seq = ?2 WHERE record_id = ?1",
                params![id, seq],
            )
            .expect("swap");
        }
    });
    assert_found(&result, "reordered");
    for id in [&a, &b] {
        assert!(
            result.1.contains(&format!("reordered decision {id}"))
                || result.1.contains(&format!("reordered verdict {id}"))
                || result.1.contains(&format!("reordered coordination {id}")),
            "names {id}:\n{}",
            result.1
        );
    }
}
