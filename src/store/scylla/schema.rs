//! The ScyllaDB schema: `schemas/cql/NNN-*.cql`, compiled into the binary in number
//! order, and turned into the statements `migrate` runs.
//!
//! Every statement is `CREATE ... IF NOT EXISTS`, so running the whole list again is
//! harmless; a change to a released table is a new file with the next number.

use super::statements::{check_keyspace, KEYSPACE};
use crate::store::StoreError;

/// The placeholder of the keyspace's replication map (001 only).
pub(crate) const REPLICATION: &str = "{{replication}}";

/// One schema file: its name and text.
pub(crate) struct CqlFile {
    pub(crate) name: &'static str,
    pub(crate) text: &'static str,
}

/// Every schema file, in the order `migrate` applies them.
pub(crate) const CQL_FILES: [CqlFile; 9] = [
    CqlFile {
        name: "001-keyspace.cql",
        text: include_str!("../../../schemas/cql/001-keyspace.cql"),
    },
    CqlFile {
        name: "002-coordination-audit-records.cql",
        text: include_str!("../../../schemas/cql/002-coordination-audit-records.cql"),
    },
    CqlFile {
        name: "003-audit-verdicts.cql",
        text: include_str!("../../../schemas/cql/003-audit-verdicts.cql"),
    },
    CqlFile {
        name: "004-audit-decisions.cql",
        text: include_str!("../../../schemas/cql/004-audit-decisions.cql"),
    },
    CqlFile {
        name: "005-rollout-status.cql",
        text: include_str!("../../../schemas/cql/005-rollout-status.cql"),
    },
    CqlFile {
        name: "006-stream-checkpoints.cql",
        text: include_str!("../../../schemas/cql/006-stream-checkpoints.cql"),
    },
    CqlFile {
        name: "007-audit-record-ids.cql",
        text: include_str!("../../../schemas/cql/007-audit-record-ids.cql"),
    },
    CqlFile {
        name: "008-audit-chain.cql",
        text: include_str!("../../../schemas/cql/008-audit-chain.cql"),
    },
    CqlFile {
        name: "009-chain-heads.cql",
        text: include_str!("../../../schemas/cql/009-chain-heads.cql"),
    },
];

/// A statement of a schema file, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DdlStatement {
    /// The file it comes from.
    pub(crate) file: &'static str,
    /// The CQL, placeholders replaced, comments and the final `;` removed.
    pub(crate) cql: String,
}

impl DdlStatement {
    /// One line for the operator: the file and the statement's head, up to its column
    /// list or options (`001-keyspace.cql: CREATE KEYSPACE IF NOT EXISTS audit_stream`).
    pub(crate) fn summary(&self) -> String {
        let head = self
            .cql
            .split(['(', '\n'])
            .next()
            .unwrap_or_default()
            .split(" WITH ")
            .next()
            .unwrap_or_default()
            .trim();
        format!("{}: {head}", self.file)
    }
}

/// The file's text without `--` comments (the schema files keep `--` out of strings).
pub(crate) fn without_comments(text: &str) -> String {
    text.lines()
        .map(|line| line.split("--").next().unwrap_or("").trim_end())
        .filter(|line| !line.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The statements of `text` (`;`-separated, `;` inside quoted strings kept).
fn split_statements(text: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                current.push(c);
            }
            ';' if !quoted => statements.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    statements.push(current);
    statements
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The replication map is written into CQL text: it must look like one map and nothing
/// more. The cluster checks the rest when the keyspace is created.
fn check_replication(replication: &str) -> Result<(), StoreError> {
    let trimmed = replication.trim();
    let valid = trimmed.starts_with('{')
        && trimmed.ends_with('}')
        && trimmed.matches('{').count() == 1
        && trimmed.matches('}').count() == 1
        && !trimmed.contains(';')
        && !trimmed.contains("--");
    if valid {
        Ok(())
    } else {
        Err(StoreError::Permanent(format!(
            "store.scylla.replication {replication:?} is not a CQL replication map \
             (for example {{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}})"
        )))
    }
}

/// Every statement of the schema, in order, for `keyspace` with `replication`.
pub(crate) fn ddl(keyspace: &str, replication: &str) -> Result<Vec<DdlStatement>, StoreError> {
    check_keyspace(keyspace)?;
    check_replication(replication)?;
    let mut statements = Vec::new();
    for file in &CQL_FILES {
        let code = without_comments(file.text)
            .replace(KEYSPACE, keyspace)
            .replace(REPLICATION, replication.trim());
        statements.extend(split_statements(&code).into_iter().map(|cql| DdlStatement {
            file: file.name,
            cql,
        }));
    }
    Ok(statements)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIMPLE: &str = "{'class': 'SimpleStrategy', 'replication_factor': 1}";

    #[test]
    fn the_compiled_schema_is_every_numbered_file_in_number_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/cql");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".cql"))
            .collect();
        on_disk.sort();
        let compiled: Vec<&str> = CQL_FILES.iter().map(|f| f.name).collect();
        assert_eq!(on_disk, compiled, "a schema file is missing from CQL_FILES");
        for (i, name) in compiled.iter().enumerate() {
            assert_eq!(
                name[..4],
                format!("{:03}-", i + 1),
                "numbers run 001, 002, …"
            );
        }
    }

    #[test]
    fn placeholders_are_replaced_and_comments_dropped() {
        let statements = ddl("audit_test", SIMPLE).unwrap();
        assert_eq!(statements.len(), CQL_FILES.len(), "one statement per file");
        for s in &statements {
            assert!(!s.cql.contains("{{") && !s.cql.contains("--"), "{}", s.cql);
            assert!(!s.cql.ends_with(';'), "{}", s.cql);
        }
        assert_eq!(
            statements[0].cql,
            "CREATE KEYSPACE IF NOT EXISTS audit_test\n    WITH replication = \
             {'class': 'SimpleStrategy', 'replication_factor': 1}\n    AND durable_writes = true"
        );
        assert!(statements[4]
            .cql
            .starts_with("CREATE TABLE IF NOT EXISTS audit_test.rollout_status ("));
        assert!(statements[4]
            .cql
            .contains("WITH CLUSTERING ORDER BY (occurred_at_ns DESC, audit_id DESC)"));
    }

    #[test]
    fn each_statement_is_summed_up_in_one_line() {
        let summaries: Vec<String> = ddl("audit_test", SIMPLE)
            .unwrap()
            .iter()
            .map(DdlStatement::summary)
            .collect();
        assert_eq!(
            summaries,
            [
                "001-keyspace.cql: CREATE KEYSPACE IF NOT EXISTS audit_test",
                "002-coordination-audit-records.cql: CREATE TABLE IF NOT EXISTS \
                 audit_test.coordination_audit_records",
                "003-audit-verdicts.cql: CREATE TABLE IF NOT EXISTS audit_test.audit_verdicts",
                "004-audit-decisions.cql: CREATE TABLE IF NOT EXISTS audit_test.audit_decisions",
                "005-rollout-status.cql: CREATE TABLE IF NOT EXISTS audit_test.rollout_status",
                "006-stream-checkpoints.cql: CREATE TABLE IF NOT EXISTS \
                 audit_test.stream_checkpoints",
                "007-audit-record-ids.cql: CREATE TABLE IF NOT EXISTS \
                 audit_test.audit_record_ids",
                "008-audit-chain.cql: CREATE TABLE IF NOT EXISTS audit_test.audit_chain",
                "009-chain-heads.cql: CREATE TABLE IF NOT EXISTS audit_test.chain_heads",
            ]
        );
    }

    #[test]
    fn statements_split_on_semicolons_outside_quotes() {
        assert_eq!(
            split_statements("CREATE A WITH comment = 'a;b';\n\nCREATE B;"),
            ["CREATE A WITH comment = 'a;b'", "CREATE B"]
        );
    }

    #[test]
    fn a_bad_keyspace_or_replication_never_reaches_the_cluster() {
        assert!(ddl("Audit-Stream", SIMPLE).is_err());
        for bad in [
            "",
            "SimpleStrategy",
            "{'class': 'SimpleStrategy'}; DROP KEYSPACE x",
            "{'a': 1} AND durable_writes = false -- {",
            "{'a': {'b': 1}}",
        ] {
            let err = ddl("audit_test", bad).unwrap_err();
            assert!(!err.is_retryable(), "{bad}: {err}");
        }
        ddl(
            "audit_test",
            "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 3}",
        )
        .unwrap();
    }
}
