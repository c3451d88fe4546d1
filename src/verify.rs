//! `audit-stream verify`: recomputes the hash chains from the store and checks the
//! record tables against them.
//!
//! Two checks per tenant:
//! 1. **The chains** ([`chain::check`]): each chain of entries is followed by its hashes
//!    from its genesis to its stored head; entries whose hash does not match their
//!    content, gaps, entries the links never reach, and entries stored out of place are
//!    named.
//! 2. **The records**: every stored decision, verdict and coordination record must have
//!    a chain entry with the same id and the same content (a verdict's timings aside,
//!    see [`AuditRecord::canonical`]): a record with no entry was inserted, one whose
//!    content matches none of its id's entries was modified, and an id that is chained
//!    but has no stored record was deleted.
//!
//! The embedded store keeps one copy of a written record's content, in its row, and its
//! chain entry reads it from there: a modified row is found by the first check (the
//! entry's hash no longer matches its content), a deleted row by the second.
//!
//! The rollout status table is derived from the verdicts and is not checked here.
//! Memory: the ids and digests of one tenant's chain entries (about 150 bytes each) and
//! one chain's entries at a time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use uuid::Uuid;

use crate::canonical::{canonical_json, sha256_hex};
use crate::chain::{self, ChainHead, ChainKey, Entry};
use crate::store::{AuditRecord, AuditStore, ChainEntry, StoreError, StoredRecord};

/// Records read per store call.
const PAGE: usize = 1_000;

/// A problem `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Something wrong in one chain.
    Chain {
        chain: ChainKey,
        finding: chain::Finding,
    },
    /// A stored record whose content matches none of its id's chain entries.
    ModifiedRecord {
        tenant_id: String,
        kind: &'static str,
        id: Uuid,
    },
    /// A stored record that no chain entry has.
    InsertedRecord {
        tenant_id: String,
        kind: &'static str,
        id: Uuid,
    },
    /// A chained record that is not stored.
    DeletedRecord {
        tenant_id: String,
        kind: &'static str,
        id: Uuid,
    },
}

impl Problem {
    /// `modified`, `deleted`, `inserted` or `reordered`.
    pub fn class(&self) -> &'static str {
        match self {
            Problem::Chain { finding, .. } => finding.class(),
            Problem::ModifiedRecord { .. } => "modified",
            Problem::InsertedRecord { .. } => "inserted",
            Problem::DeletedRecord { .. } => "deleted",
        }
    }

    /// The record the problem names, if it names one.
    pub fn id(&self) -> Option<Uuid> {
        match self {
            Problem::Chain { finding, .. } => match finding {
                chain::Finding::Modified { id, .. }
                | chain::Finding::Inserted { id, .. }
                | chain::Finding::Reordered { id, .. } => Some(*id),
                chain::Finding::Deleted { before, .. } => *before,
            },
            Problem::ModifiedRecord { id, .. }
            | Problem::InsertedRecord { id, .. }
            | Problem::DeletedRecord { id, .. } => Some(*id),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Chain { chain, finding } => write!(f, "chain {chain}: {finding}"),
            Problem::ModifiedRecord {
                tenant_id,
                kind,
                id,
            } => write!(
                f,
                "tenant {tenant_id}: modified {kind} {id}: its stored content is not what was \
                 chained"
            ),
            Problem::InsertedRecord {
                tenant_id,
                kind,
                id,
            } => write!(
                f,
                "tenant {tenant_id}: inserted {kind} {id}: stored, but in no chain"
            ),
            Problem::DeletedRecord {
                tenant_id,
                kind,
                id,
            } => write!(
                f,
                "tenant {tenant_id}: deleted {kind} {id}: chained, but not stored"
            ),
        }
    }
}

/// What `verify` checked and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub tenants: usize,
    pub chains: usize,
    /// Chain entries read.
    pub entries: u64,
    /// Decisions, verdicts and coordination records read.
    pub records: u64,
    /// Entries after their chain's stored head: written since the last checkpoint of
    /// their partition, linked but not yet anchored (none once the service stopped).
    pub unanchored: u64,
    pub problems: Vec<Problem>,
}

impl Report {
    /// Whether nothing was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// Problems per class, for the summary.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for problem in &self.problems {
            *counts.entry(problem.class()).or_default() += 1;
        }
        counts
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for problem in &self.problems {
            writeln!(f, "{problem}")?;
        }
        writeln!(
            f,
            "verified {} tenant(s), {} chain(s), {} chain entries, {} stored records",
            self.tenants, self.chains, self.entries, self.records
        )?;
        if self.unanchored > 0 {
            writeln!(
                f,
                "{} entries are after their chain's last checkpointed head (not yet anchored)",
                self.unanchored
            )?;
        }
        if self.is_clean() {
            writeln!(f, "no tampering found")
        } else {
            let counts: Vec<String> = self
                .counts()
                .into_iter()
                .map(|(class, n)| format!("{n} {class}"))
                .collect();
            writeln!(
                f,
                "TAMPERING FOUND: {} problem(s): {}",
                self.problems.len(),
                counts.join(", ")
            )
        }
    }
}

/// Verifies the tenants of `tenant` (all when `None`), showing progress on `progress`.
pub async fn verify(
    store: &dyn AuditStore,
    tenant: Option<&str>,
    progress: &ProgressBar,
) -> Result<Report, StoreError> {
    let tenants = match tenant {
        Some(t) => vec![t.to_owned()],
        None => store.tenants().await?,
    };
    let mut report = Report {
        tenants: tenants.len(),
        ..Report::default()
    };
    for tenant in &tenants {
        progress.set_message(format!("tenant {tenant}"));
        verify_tenant(store, tenant, progress, &mut report).await?;
    }
    Ok(report)
}

/// A progress spinner on stderr, drawn only when stderr is a terminal.
pub fn progress_bar() -> ProgressBar {
    let progress = ProgressBar::new_spinner();
    progress.set_style(
        ProgressStyle::with_template("{spinner} {pos} records checked ({per_sec}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    progress
}

/// What a chain entry says a record's content is (`None`: the store could not read it),
/// and which chain it is in.
struct Chained {
    digest: Option<String>,
    chain: ChainKey,
}

async fn verify_tenant(
    store: &dyn AuditStore,
    tenant: &str,
    progress: &ProgressBar,
    report: &mut Report,
) -> Result<(), StoreError> {
    let mut heads: HashMap<ChainKey, ChainHead> = store
        .chain_heads(tenant)
        .await?
        .into_iter()
        .map(|h| (h.key.clone(), h))
        .collect();
    let mut chained: HashMap<(&'static str, Uuid), Vec<Chained>> = HashMap::new();
    let mut current: Option<(ChainKey, Vec<Entry>)> = None;
    let mut cursor: Option<String> = None;
    loop {
        let page = store.chain_entries(tenant, cursor.as_deref(), PAGE).await?;
        for item in page.items {
            let (key, kind, id, _) = item.parts();
            if current.as_ref().is_none_or(|(k, _)| *k != key) {
                if let Some((k, entries)) = current.take() {
                    check_chain(&k, &entries, heads.remove(&k), report);
                }
                current = Some((key.clone(), Vec::new()));
            }
            let (digest, intact, link) = match item {
                ChainEntry::Stored(StoredRecord { record, link, .. }) => (
                    Some(record_digest(&record)),
                    chain::is_intact(&record, &link),
                    link,
                ),
                // The embedded store keeps a written record's content in its row only, and
                // the row is gone: the records check below names it deleted (chained, not
                // stored). There is nothing to hash; the links around it are still checked.
                ChainEntry::RecordMissing { link, .. } => (None, true, link),
            };
            chained
                .entry((kind, id))
                .or_default()
                .push(Chained { digest, chain: key });
            let entry = Entry {
                id,
                kind,
                intact,
                link,
            };
            if let Some((_, entries)) = current.as_mut() {
                entries.push(entry);
            }
            report.entries += 1;
            progress.inc(1);
        }
        cursor = page.next;
        if cursor.is_none() {
            break;
        }
    }
    if let Some((k, entries)) = current.take() {
        check_chain(&k, &entries, heads.remove(&k), report);
    }
    // Heads whose chain has no entry left at all.
    let mut orphaned: Vec<ChainHead> = heads.into_values().collect();
    orphaned.sort_by(|a, b| a.key.cmp(&b.key));
    for head in orphaned {
        let key = head.key.clone();
        check_chain(&key, &[], Some(head), report);
    }

    let mut seen: HashSet<(&'static str, Uuid)> = HashSet::new();
    for kind in ["decision", "verdict", "coordination"] {
        let mut cursor: Option<String> = None;
        loop {
            let (values, next) = stored_page(store, kind, tenant, cursor.as_deref()).await?;
            for (id, value) in values {
                report.records += 1;
                progress.inc(1);
                seen.insert((kind, id));
                let digest = value_digest(kind, value);
                let problem = match chained.get(&(kind, id)) {
                    None => Some(Problem::InsertedRecord {
                        tenant_id: tenant.to_owned(),
                        kind,
                        id,
                    }),
                    Some(entries)
                        if !entries.iter().any(|e| e.digest.as_ref() == Some(&digest)) =>
                    {
                        Some(Problem::ModifiedRecord {
                            tenant_id: tenant.to_owned(),
                            kind,
                            id,
                        })
                    }
                    Some(_) => None,
                };
                report.problems.extend(problem);
            }
            cursor = next;
            if cursor.is_none() {
                break;
            }
        }
    }
    let mut missing: Vec<(&ChainKey, &'static str, Uuid)> = chained
        .iter()
        .filter(|(key, _)| !seen.contains(key))
        .map(|((kind, id), entries)| (&entries[0].chain, *kind, *id))
        .collect();
    missing.sort();
    report.problems.extend(
        missing
            .into_iter()
            .map(|(_, kind, id)| Problem::DeletedRecord {
                tenant_id: tenant.to_owned(),
                kind,
                id,
            }),
    );
    Ok(())
}

fn check_chain(key: &ChainKey, entries: &[Entry], head: Option<ChainHead>, report: &mut Report) {
    let result = chain::check(key, entries, head.as_ref());
    report.chains += 1;
    report.unanchored += result.unanchored;
    report
        .problems
        .extend(result.findings.into_iter().map(|finding| Problem::Chain {
            chain: key.clone(),
            finding,
        }));
}

/// One page of a tenant's stored records of `kind`, as (id, JSON).
async fn stored_page(
    store: &dyn AuditStore,
    kind: &str,
    tenant: &str,
    cursor: Option<&str>,
) -> Result<(Vec<(Uuid, Value)>, Option<String>), StoreError> {
    fn values<T: serde::Serialize>(
        items: Vec<T>,
        id: impl Fn(&T) -> Uuid,
    ) -> Result<Vec<(Uuid, Value)>, StoreError> {
        items
            .into_iter()
            .map(|item| {
                serde_json::to_value(&item)
                    .map(|v| (id(&item), v))
                    .map_err(|e| StoreError::Permanent(format!("cannot serialize a record: {e}")))
            })
            .collect()
    }
    Ok(match kind {
        "decision" => {
            let page = store.decisions(tenant, cursor, PAGE).await?;
            (values(page.items, |d| d.event_id)?, page.next)
        }
        "verdict" => {
            let page = store.verdicts(tenant, cursor, PAGE).await?;
            (values(page.items, |v| v.audit_id)?, page.next)
        }
        _ => {
            let page = store.coordination_records(tenant, cursor, PAGE).await?;
            (values(page.items, |c| c.audit_id)?, page.next)
        }
    })
}

/// The digest a stored record row is compared with its chain entries by: its JSON
/// without a verdict's timings (a replay re-measures them; the row keeps the first).
fn value_digest(kind: &str, mut value: Value) -> String {
    if kind == "verdict" {
        if let Value::Object(fields) = &mut value {
            fields.remove("audited_at");
            fields.remove("duration_ms");
        }
    }
    sha256_hex(canonical_json(&value).as_bytes())
}

fn record_digest(record: &AuditRecord) -> String {
    let value = match record {
        AuditRecord::Decision(d) => serde_json::to_value(d),
        AuditRecord::Verdict { verdict, .. } => serde_json::to_value(verdict),
        AuditRecord::Coordination(c) => serde_json::to_value(c),
    };
    // Plain structs with string keys: serializing cannot fail.
    value_digest(record.kind(), value.expect("audit records serialize"))
}
