//! The hash chain of audit records: what makes a stored record tamper-evident.
//!
//! Every audit record the pipeline derives is linked into the chain of its
//! (tenant, input topic, input partition), in offset order:
//!
//! ```text
//! hash(n) = SHA-256( hash(n-1) ‖ "\n" ‖ canonical(record n) )
//! hash(-1) = SHA-256( "audit-stream/chain/v1" ‖ NUL ‖ tenant ‖ NUL ‖ topic ‖ NUL ‖ partition )
//! ```
//!
//! `canonical` is [`AuditRecord::canonical`]: the record's content with sorted keys,
//! without a verdict's wall-clock timings, so replaying the same records from the same
//! state rebuilds the same hashes. The genesis hash names the chain, so a record cannot
//! be moved from one chain to another unnoticed.
//!
//! The chain state of a partition ([`PartitionChains`]) is operator state: it is
//! checkpointed with the counters and restored with them, and the latest checkpointed
//! [`ChainHead`] of each chain (last hash, offset range, record count) is also stored on
//! its own, so a verifier knows how far each chain must reach. [`check`] recomputes a
//! chain and says what was modified, deleted, inserted or reordered.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::eviction::least_recent;
use crate::store::AuditRecord;

/// Which chain a record belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChainKey {
    pub tenant_id: String,
    /// The input topic and partition the record was derived from.
    pub topic: String,
    pub partition: i32,
}

impl ChainKey {
    /// The chain of `record`.
    pub fn of(record: &AuditRecord) -> ChainKey {
        let source = record.source();
        ChainKey {
            tenant_id: record.tenant_id().to_owned(),
            topic: source.topic.clone(),
            partition: source.partition,
        }
    }

    /// The hash the first record of the chain links to.
    pub fn genesis(&self) -> String {
        let mut hasher = Sha256::new();
        for part in [
            "audit-stream/chain/v1",
            &self.tenant_id,
            &self.topic,
            &self.partition.to_string(),
        ] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        hex::encode(hasher.finalize())
    }
}

impl std::fmt::Display for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}/{}", self.tenant_id, self.topic, self.partition)
    }
}

/// A record's place in its chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainLink {
    /// Position in the chain, from 0.
    pub seq: u64,
    /// Hex SHA-256 of the previous record (the genesis hash for the first).
    pub prev_hash: String,
    /// Hex SHA-256 of `prev_hash` and this record's canonical content.
    pub hash: String,
}

/// The hash of a record with canonical content `canonical` following `prev_hash`.
pub fn link_hash(prev_hash: &str, canonical: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(canonical.as_bytes());
    hex::encode(hasher.finalize())
}

/// Whether `link` is the hash of `record` after `link.prev_hash`.
pub fn is_intact(record: &AuditRecord, link: &ChainLink) -> bool {
    link_hash(&link.prev_hash, &record.canonical()) == link.hash
}

/// Where a chain stood when its partition was last checkpointed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    #[serde(flatten)]
    pub key: ChainKey,
    /// Records in the chain: the `seq` of the next one.
    pub records: u64,
    /// Hash of the last record.
    pub last_hash: String,
    /// Source offsets of the first and the last record.
    pub first_offset: i64,
    pub last_offset: i64,
}

/// Bounds of the chain heads one partition holds in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Heads held per partition once a durable checkpoint lets the excess go.
    pub max_heads: usize,
    /// A head no record has been linked to for this long, in event time, is let go once
    /// a durable checkpoint holds it.
    pub idle_ttl_ms: i64,
}

impl Default for HeadLimits {
    /// 100,000 heads per partition, 7 days idle: the failure counters' bounds.
    fn default() -> Self {
        HeadLimits {
            max_heads: 100_000,
            idle_ttl_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// Heads evicted so far from one partition's chains, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadEvictions {
    pub idle: u64,
    pub head_limit: u64,
}

impl HeadEvictions {
    pub fn total(&self) -> u64 {
        self.idle + self.head_limit
    }
}

/// A head held in memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Held {
    #[serde(flatten)]
    head: ChainHead,
    /// Event time (ms since the epoch) of the last record linked: idleness is judged by it.
    #[serde(default)]
    linked_at_ms: i64,
    /// `head.records` as the latest durable checkpoint holding this head saved it. While
    /// the head is still that, the store's `chain_heads` row is this head, and the head
    /// can be let go and read back. Not checkpointed: a restored head waits for the next
    /// save.
    #[serde(skip)]
    saved_records: Option<u64>,
}

impl Held {
    fn evictable(&self) -> bool {
        self.saved_records == Some(self.head.records)
    }
}

/// The chains of one input partition, one per tenant: operator state, checkpointed.
///
/// Heads are bounded like the failure counters' keys ([`HeadLimits`]), but a head is
/// never simply dropped: the chain must go on from it. It is let go only while a
/// durable checkpoint's `chain_heads` row holds it unchanged ([`PartitionChains::saved`],
/// [`PartitionChains::evict`]), and read back from the store when its tenant returns
/// ([`PartitionChains::may_hold_elsewhere`], [`PartitionChains::reload`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionChains {
    heads: BTreeMap<String, Held>,
    /// The newest event time linked in the partition: the clock idleness is judged by.
    #[serde(default)]
    clock_ms: i64,
    #[serde(default)]
    evictions: HeadEvictions,
    /// Heads read back from the store so far.
    #[serde(default)]
    reloaded: u64,
}

impl PartitionChains {
    /// Links `record` as the next record of its chain.
    pub fn append(&mut self, record: &AuditRecord) -> ChainLink {
        self.append_canonical(record, &record.canonical())
    }

    /// [`PartitionChains::append`] of a record whose canonical content
    /// ([`AuditRecord::canonical`]) the caller already has.
    pub fn append_canonical(&mut self, record: &AuditRecord, canonical: &str) -> ChainLink {
        let offset = record.source().offset;
        let at_ms = record.occurred_at().timestamp_millis();
        self.clock_ms = self.clock_ms.max(at_ms);
        let held = self
            .heads
            .entry(record.tenant_id().to_owned())
            .or_insert_with(|| {
                let key = ChainKey::of(record);
                Held {
                    head: ChainHead {
                        records: 0,
                        last_hash: key.genesis(),
                        first_offset: offset,
                        last_offset: offset,
                        key,
                    },
                    linked_at_ms: at_ms,
                    saved_records: None,
                }
            });
        held.linked_at_ms = held.linked_at_ms.max(at_ms);
        let head = &mut held.head;
        let hash = link_hash(&head.last_hash, canonical);
        let link = ChainLink {
            seq: head.records,
            prev_hash: std::mem::replace(&mut head.last_hash, hash.clone()),
            hash,
        };
        head.records += 1;
        head.last_offset = offset;
        link
    }

    /// The head of every chain of the partition held in memory.
    pub fn heads(&self) -> impl Iterator<Item = &ChainHead> {
        self.heads.values().map(|held| &held.head)
    }

    /// How many chains (tenants) this partition holds a head for.
    pub fn len(&self) -> usize {
        self.heads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }

    /// Whether the head of `tenant_id`'s chain is held here.
    pub fn holds(&self, tenant_id: &str) -> bool {
        self.heads.contains_key(tenant_id)
    }

    /// Whether a tenant without a head here may have one in the store: once a head has
    /// been evicted, a tenant's next record must look there before starting a chain.
    pub fn may_hold_elsewhere(&self) -> bool {
        self.evictions.total() > 0
    }

    /// Heads evicted so far, by reason.
    pub fn evictions(&self) -> HeadEvictions {
        self.evictions
    }

    /// Heads read back from the store so far.
    pub fn reloaded(&self) -> u64 {
        self.reloaded
    }

    /// A checkpoint holding `heads` is durable, their `chain_heads` rows with it: each
    /// head not linked to since may be evicted.
    pub fn saved(&mut self, heads: &[ChainHead]) {
        for head in heads {
            if let Some(held) = self.heads.get_mut(&head.key.tenant_id) {
                if held.head.records == head.records {
                    held.saved_records = Some(head.records);
                }
            }
        }
    }

    /// Evicts the saved heads idle for longer than `limits.idle_ttl_ms`, then, while more
    /// than `limits.max_heads` are held, the least recently linked saved ones. Returns
    /// what this call evicted. A head linked to since its last durable save stays: the
    /// count can pass the bound by the new tenants of one checkpoint interval.
    pub fn evict(&mut self, limits: &HeadLimits) -> HeadEvictions {
        let mut evicted = HeadEvictions::default();
        let cutoff = self.clock_ms.saturating_sub(limits.idle_ttl_ms);
        self.heads.retain(|_, held| {
            let idle = held.evictable() && held.linked_at_ms < cutoff;
            evicted.idle += u64::from(idle);
            !idle
        });
        if self.heads.len() > limits.max_heads {
            let excess = self.heads.len() - limits.max_heads;
            let evictable = self
                .heads
                .iter()
                .filter(|(_, held)| held.evictable())
                .map(|(tenant, held)| (held.linked_at_ms, tenant.as_str()));
            let victims: Vec<String> = least_recent(evictable, excess)
                .into_iter()
                .map(|(_, tenant)| tenant.to_owned())
                .collect();
            for tenant in victims {
                self.heads.remove(&tenant);
                evicted.head_limit += 1;
            }
        }
        self.evictions.idle += evicted.idle;
        self.evictions.head_limit += evicted.head_limit;
        evicted
    }

    /// Holds `head` again, as read back from the store's `chain_heads`.
    pub fn reload(&mut self, head: ChainHead) {
        self.reloaded += 1;
        let records = head.records;
        self.heads.insert(
            head.key.tenant_id.clone(),
            Held {
                head,
                linked_at_ms: self.clock_ms,
                saved_records: Some(records),
            },
        );
    }
}

/// A stored chain entry as the verifier sees it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: Uuid,
    pub kind: &'static str,
    pub link: ChainLink,
    /// Whether `link.hash` is the hash of the stored content after `link.prev_hash`.
    pub intact: bool,
}

/// Something wrong with a chain, naming the records concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The record's content (or its hash) is not what was chained.
    Modified {
        id: Uuid,
        kind: &'static str,
        seq: u64,
    },
    /// `count` records at positions `from_seq..` are missing, before `before` (`None`:
    /// at the end of the chain, which the stored head says is longer).
    Deleted {
        from_seq: u64,
        count: u64,
        before: Option<Uuid>,
    },
    /// A record that is not part of the chain.
    Inserted {
        id: Uuid,
        kind: &'static str,
        seq: u64,
    },
    /// A chained record stored at another position than the one it was chained at.
    Reordered {
        id: Uuid,
        kind: &'static str,
        stored_seq: u64,
        chained_seq: u64,
    },
}

impl Finding {
    /// `modified`, `deleted`, `inserted` or `reordered`.
    pub fn class(&self) -> &'static str {
        match self {
            Finding::Modified { .. } => "modified",
            Finding::Deleted { .. } => "deleted",
            Finding::Inserted { .. } => "inserted",
            Finding::Reordered { .. } => "reordered",
        }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::Modified { id, kind, seq } => {
                write!(f, "modified {kind} {id} (chain position {seq})")
            }
            Finding::Deleted {
                from_seq,
                count,
                before: Some(id),
            } => write!(
                f,
                "deleted {count} record(s) at chain position {from_seq} before {id}"
            ),
            Finding::Deleted {
                from_seq,
                count,
                before: None,
            } => write!(
                f,
                "deleted {count} record(s) at the end of the chain, from position {from_seq}"
            ),
            Finding::Inserted { id, kind, seq } => {
                write!(f, "inserted {kind} {id} (claims chain position {seq})")
            }
            Finding::Reordered {
                id,
                kind,
                stored_seq,
                chained_seq,
            } => write!(
                f,
                "reordered {kind} {id}: stored at position {stored_seq}, chained at {chained_seq}"
            ),
        }
    }
}

/// What [`check`] found in one chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainReport {
    /// Records on the chain, from genesis.
    pub linked: u64,
    /// Records after the stored head: written since the partition's last checkpoint,
    /// linked but not yet anchored by a head.
    pub unanchored: u64,
    pub findings: Vec<Finding>,
}

/// Recomputes one chain from its stored entries (any order) and its stored head.
///
/// The chain is followed by its links from the genesis hash of `key`, so it is the
/// hashes, not the stored positions, that say what the chain is:
/// - an entry whose hash does not match its content is **modified**; so is one whose
///   successor names another hash for it (its hash was rewritten with its content);
/// - an entry whose predecessor's hash no entry has starts after a gap: the positions in
///   between were **deleted**; a chain shorter than its stored head lost its end;
/// - an entry the links never reach (a fork, or a forged link) is **inserted**;
/// - a linked entry stored at another position than the one it was reached at is
///   **reordered**.
pub fn check(key: &ChainKey, entries: &[Entry], head: Option<&ChainHead>) -> ChainReport {
    let genesis = key.genesis();
    let hashes: HashSet<&str> = entries.iter().map(|e| e.link.hash.as_str()).collect();
    let mut successors: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, entry) in entries.iter().enumerate() {
        successors
            .entry(entry.link.prev_hash.as_str())
            .or_default()
            .push(i);
    }
    let anchor = head.map(|h| h.last_hash.as_str());
    let mut walk = Walk {
        entries,
        successors: &successors,
        anchor,
        visited: vec![false; entries.len()],
        findings: Vec::new(),
        anchored_at: None,
    };

    let (mut position, mut last) = walk.follow(&genesis, 0);
    // Entries whose predecessor is gone: each starts a segment after a gap.
    let mut orphans: Vec<usize> = (0..entries.len())
        .filter(|&i| {
            let prev = entries[i].link.prev_hash.as_str();
            prev != genesis && !hashes.contains(prev)
        })
        .collect();
    orphans.sort_by_key(|&i| entries[i].link.seq);
    for i in orphans {
        let entry = &entries[i];
        let taken = walk.visited_seq(entry.link.seq);
        if walk.visited[i] || !entry.intact || taken || entry.link.seq < position {
            // Not reached by any link, and not a plausible successor of a gap either.
            continue;
        }
        match last {
            // The previous record's successor names another hash for it: its hash was
            // rewritten together with its content.
            Some(prev) if entries[prev].link.seq + 1 == entry.link.seq => {
                walk.findings.push(Finding::Modified {
                    id: entries[prev].id,
                    kind: entries[prev].kind,
                    seq: entries[prev].link.seq,
                });
            }
            _ if entry.link.seq > position => walk.findings.push(Finding::Deleted {
                from_seq: position,
                count: entry.link.seq - position,
                before: Some(entry.id),
            }),
            // It links to nothing of this chain, at a position with no gap before it:
            // not part of the chain.
            _ => continue,
        }
        walk.visit(i, entry.link.seq);
        (position, last) = walk.follow(&entry.link.hash, entry.link.seq + 1);
        last = last.or(Some(i));
    }
    for (i, entry) in entries.iter().enumerate() {
        if !walk.visited[i] {
            walk.findings.push(Finding::Inserted {
                id: entry.id,
                kind: entry.kind,
                seq: entry.link.seq,
            });
        }
    }
    let linked = walk.visited.iter().filter(|v| **v).count() as u64;
    let mut unanchored = 0;
    if let Some(head) = head {
        match walk.anchored_at {
            Some(at) => unanchored = position.saturating_sub(at + 1),
            None if position < head.records => walk.findings.push(Finding::Deleted {
                from_seq: position,
                count: head.records - position,
                before: None,
            }),
            // The head's record is gone but the chain goes on past it: a record there
            // was replaced, which the findings above already name.
            None => {}
        }
    }
    let mut findings = walk.findings;
    findings.sort_by_key(|f| match f {
        Finding::Modified { seq, .. } | Finding::Inserted { seq, .. } => *seq,
        Finding::Deleted { from_seq, .. } => *from_seq,
        Finding::Reordered { chained_seq, .. } => *chained_seq,
    });
    ChainReport {
        linked,
        unanchored,
        findings,
    }
}

/// The state of one run of [`check`].
struct Walk<'a> {
    entries: &'a [Entry],
    successors: &'a HashMap<&'a str, Vec<usize>>,
    anchor: Option<&'a str>,
    visited: Vec<bool>,
    findings: Vec<Finding>,
    /// The chain position at which the stored head's hash was reached.
    anchored_at: Option<u64>,
}

impl Walk<'_> {
    /// Follows the links from `hash`, the entry at `position` being the first expected;
    /// returns the position after the last entry reached, and that entry.
    fn follow(&mut self, hash: &str, mut position: u64) -> (u64, Option<usize>) {
        let mut hash = hash.to_owned();
        let mut last = None;
        while let Some(next) = self.pick(&hash, position) {
            self.visit(next, position);
            last = Some(next);
            position += 1;
            hash.clone_from(&self.entries[next].link.hash);
        }
        (position, last)
    }

    /// The successor of `hash`: of several (a fork), the intact one that the chain goes
    /// on from (or that the head names), stored at `position`.
    fn pick(&self, hash: &str, position: u64) -> Option<usize> {
        let candidates = self.successors.get(hash)?;
        candidates
            .iter()
            .copied()
            .filter(|&i| !self.visited[i])
            .max_by_key(|&i| {
                let entry = &self.entries[i];
                let continued = self.successors.contains_key(entry.link.hash.as_str())
                    || self.anchor == Some(entry.link.hash.as_str());
                (
                    entry.intact,
                    continued,
                    entry.link.seq == position,
                    std::cmp::Reverse(i),
                )
            })
    }

    /// Marks entry `i` reached at chain `position` and records what is wrong with it.
    fn visit(&mut self, i: usize, position: u64) {
        self.visited[i] = true;
        let entry = &self.entries[i];
        if !entry.intact {
            self.findings.push(Finding::Modified {
                id: entry.id,
                kind: entry.kind,
                seq: position,
            });
        } else if entry.link.seq != position {
            self.findings.push(Finding::Reordered {
                id: entry.id,
                kind: entry.kind,
                stored_seq: entry.link.seq,
                chained_seq: position,
            });
        }
        if self.anchor == Some(entry.link.hash.as_str()) {
            self.anchored_at = Some(position);
        }
    }

    /// Whether a reached entry is stored at position `seq`.
    fn visited_seq(&self, seq: u64) -> bool {
        self.entries
            .iter()
            .zip(&self.visited)
            .any(|(e, v)| *v && e.link.seq == seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::scylla::fixtures::{coordination, decision, verdict_record};

    fn records(tenant: &str, n: i64) -> Vec<AuditRecord> {
        (0..n)
            .map(|offset| match offset % 3 {
                0 => AuditRecord::Decision(decision(tenant, offset)),
                1 => verdict_record(tenant, "deploy-api", offset),
                _ => AuditRecord::Coordination(coordination(tenant, offset)),
            })
            .collect()
    }

    /// The chain of `records`, as entries, and its head.
    fn chained(records: &[AuditRecord]) -> (Vec<Entry>, ChainHead) {
        let mut chains = PartitionChains::default();
        let entries = records
            .iter()
            .map(|record| {
                let link = chains.append(record);
                Entry {
                    id: record.id(),
                    kind: record.kind(),
                    intact: is_intact(record, &link),
                    link,
                }
            })
            .collect();
        let head = chains.heads().next().expect("one chain").clone();
        (entries, head)
    }

    #[test]
    fn a_chain_links_each_record_to_the_previous_one_from_its_genesis() {
        let records = records("acme", 4);
        let (entries, head) = chained(&records);
        let key = ChainKey::of(&records[0]);
        assert_eq!(entries[0].link.prev_hash, key.genesis());
        for pair in entries.windows(2) {
            assert_eq!(pair[1].link.prev_hash, pair[0].link.hash);
            assert_eq!(pair[1].link.seq, pair[0].link.seq + 1);
        }
        assert!(entries.iter().all(|e| e.intact));
        assert_eq!(head.records, 4);
        assert_eq!(head.last_hash, entries[3].link.hash);
        assert_eq!((head.first_offset, head.last_offset), (0, 3));
        assert_eq!(
            check(&key, &entries, Some(&head)),
            ChainReport {
                linked: 4,
                unanchored: 0,
                findings: Vec::new(),
            }
        );
    }

    #[test]
    fn replaying_from_a_restored_state_rebuilds_the_same_hashes() {
        let records = records("acme", 6);
        let mut chains = PartitionChains::default();
        let first: Vec<ChainLink> = records[..3].iter().map(|r| chains.append(r)).collect();
        // A checkpoint of the state, serialized and restored as a restore does.
        let saved = serde_json::to_vec(&chains).expect("serialize");
        let rest: Vec<ChainLink> = records[3..].iter().map(|r| chains.append(r)).collect();
        let mut restored: PartitionChains = serde_json::from_slice(&saved).expect("restore");
        let replayed: Vec<ChainLink> = records[3..].iter().map(|r| restored.append(r)).collect();
        assert_eq!(replayed, rest);
        assert_eq!(first[2].hash, rest[0].prev_hash);
    }

    #[test]
    fn a_stored_record_carries_the_link_and_digest_of_one_canonical_form() {
        let records = records("acme", 3);
        let mut by_record = PartitionChains::default();
        let mut by_canonical = PartitionChains::default();
        for record in records {
            let stored = crate::store::StoredRecord::append(&mut by_canonical, record.clone());
            assert_eq!(stored.link, by_record.append(&record));
            assert_eq!(stored.content_digest, record.content_digest());
        }
    }

    #[test]
    fn a_verdicts_timings_are_not_part_of_its_hash() {
        let record = verdict_record("acme", "deploy-api", 1);
        let mut reaudited = record.clone();
        if let AuditRecord::Verdict { verdict, .. } = &mut reaudited {
            verdict.duration_ms += 40;
            verdict.audited_at += chrono::Duration::seconds(5);
        }
        let link = PartitionChains::default().append(&record);
        assert!(is_intact(&reaudited, &link));
    }

    #[test]
    fn each_tenant_of_a_partition_has_its_own_chain() {
        let mut chains = PartitionChains::default();
        let a = chains.append(&AuditRecord::Decision(decision("acme", 0)));
        let b = chains.append(&AuditRecord::Decision(decision("globex", 1)));
        assert_eq!((a.seq, b.seq), (0, 0));
        assert_ne!(a.prev_hash, b.prev_hash, "genesis names the tenant");
        assert_eq!(chains.heads().count(), 2);
    }

    fn decision_at(tenant: &str, offset: i64) -> AuditRecord {
        AuditRecord::Decision(decision(tenant, offset))
    }

    const TEN_SECONDS: HeadLimits = HeadLimits {
        max_heads: 100,
        idle_ttl_ms: 10_000,
    };

    #[test]
    fn a_head_is_evicted_only_while_a_durable_checkpoint_holds_it_unchanged() {
        let mut chains = PartitionChains::default();
        for offset in 0..3 {
            chains.append(&decision_at("acme", offset));
        }
        // Event time moves 100 s on: acme is idle past the 10 s TTL.
        chains.append(&decision_at("globex", 100));
        assert_eq!(chains.evict(&TEN_SECONDS).total(), 0, "nothing saved yet");

        let snapshot: Vec<ChainHead> = chains.heads().cloned().collect();
        // acme is linked to after the snapshot, before its save is durable.
        chains.append(&decision_at("acme", 3));
        chains.saved(&snapshot);
        assert_eq!(
            chains.evict(&TEN_SECONDS).total(),
            0,
            "acme changed since the save; globex is not idle"
        );
        assert!(!chains.may_hold_elsewhere());

        let snapshot: Vec<ChainHead> = chains.heads().cloned().collect();
        chains.saved(&snapshot);
        assert_eq!(
            chains.evict(&TEN_SECONDS),
            HeadEvictions {
                idle: 1,
                head_limit: 0
            }
        );
        assert!(!chains.holds("acme") && chains.holds("globex"));
        assert!(chains.may_hold_elsewhere());
    }

    #[test]
    fn past_the_bound_the_least_recently_linked_saved_heads_go() {
        let mut chains = PartitionChains::default();
        for (offset, tenant) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
            chains.append(&decision_at(tenant, offset as i64));
        }
        // "a" is linked to again, last: "b" and "c" are now the least recent.
        chains.append(&decision_at("a", 5));
        let snapshot: Vec<ChainHead> = chains.heads().cloned().collect();
        chains.saved(&snapshot);
        let limits = HeadLimits {
            max_heads: 3,
            ..HeadLimits::default()
        };
        assert_eq!(
            chains.evict(&limits),
            HeadEvictions {
                idle: 0,
                head_limit: 2
            }
        );
        let held: Vec<&str> = chains.heads().map(|h| h.key.tenant_id.as_str()).collect();
        assert_eq!(held, ["a", "d", "e"]);
        assert_eq!(chains.evictions().head_limit, 2);
    }

    #[test]
    fn a_head_read_back_after_eviction_goes_on_as_if_it_had_never_left() {
        let tenants = ["acme", "globex", "initech", "umbrella", "hooli"];
        let limits = HeadLimits {
            max_heads: 2,
            ..HeadLimits::default()
        };
        let mut never_evicted = PartitionChains::default();
        let mut bounded = PartitionChains::default();
        // The store's `chain_heads`: upserted by each durable checkpoint.
        let mut stored: BTreeMap<String, ChainHead> = BTreeMap::new();
        let mut most_held = 0;
        for offset in 0..200i64 {
            let tenant = tenants[(offset * 7 % 11) as usize % tenants.len()];
            let record = decision_at(tenant, offset);
            if !bounded.holds(tenant) && bounded.may_hold_elsewhere() {
                if let Some(head) = stored.get(tenant) {
                    bounded.reload(head.clone());
                }
            }
            assert_eq!(bounded.append(&record), never_evicted.append(&record));
            if offset % 4 == 3 {
                let snapshot: Vec<ChainHead> = bounded.heads().cloned().collect();
                for head in &snapshot {
                    stored.insert(head.key.tenant_id.clone(), head.clone());
                }
                bounded.saved(&snapshot);
                bounded.evict(&limits);
                assert!(bounded.len() <= limits.max_heads);
            }
            most_held = most_held.max(bounded.len());
        }
        assert!(bounded.evictions().head_limit > 0 && bounded.reloaded() > 0);
        assert!(most_held <= limits.max_heads + 4, "held {most_held}");
    }

    #[test]
    fn a_checkpoint_keeps_the_eviction_counts_and_reads_the_format_before_them() {
        let mut chains = PartitionChains::default();
        chains.append(&decision_at("acme", 0));
        chains.append(&decision_at("globex", 100));
        let snapshot: Vec<ChainHead> = chains.heads().cloned().collect();
        chains.saved(&snapshot);
        chains.evict(&TEN_SECONDS);
        let restored: PartitionChains =
            serde_json::from_slice(&serde_json::to_vec(&chains).expect("serialize"))
                .expect("restore");
        assert_eq!(restored.evictions(), chains.evictions());
        assert!(restored.may_hold_elsewhere());
        assert_eq!(
            restored.heads().collect::<Vec<_>>(),
            chains.heads().collect::<Vec<_>>()
        );

        // A checkpoint written before heads were bounded: the heads alone.
        let head = &snapshot[0];
        let old = serde_json::json!({ "heads": { "acme": head } });
        let restored: PartitionChains = serde_json::from_value(old).expect("old format");
        assert_eq!(restored.heads().collect::<Vec<_>>(), [head]);
        assert!(!restored.may_hold_elsewhere());
    }

    #[test]
    fn entries_after_the_head_are_linked_but_unanchored() {
        let records = records("acme", 5);
        let (entries, _) = chained(&records);
        let (_, head) = chained(&records[..3]);
        let report = check(&ChainKey::of(&records[0]), &entries, Some(&head));
        assert!(report.findings.is_empty(), "{:?}", report.findings);
        assert_eq!((report.linked, report.unanchored), (5, 2));
    }

    #[test]
    fn a_record_moved_to_another_chain_does_not_link_there() {
        let acme = records("acme", 3);
        let (entries, head) = chained(&acme);
        // The same entries checked as another tenant's chain: nothing links to its genesis.
        let mut other = ChainKey::of(&acme[0]);
        other.tenant_id = "globex".into();
        let report = check(&other, &entries, Some(&head));
        assert_eq!(report.linked, 0);
        assert!(report
            .findings
            .iter()
            .all(|f| matches!(f, Finding::Inserted { .. } | Finding::Deleted { .. })));
        assert_eq!(report.findings.len(), 4, "{:?}", report.findings);
    }

    #[test]
    fn the_first_record_deleted_is_a_gap_at_position_zero() {
        let records = records("acme", 4);
        let (entries, head) = chained(&records);
        let report = check(&ChainKey::of(&records[0]), &entries[1..], Some(&head));
        assert_eq!(
            report.findings,
            [Finding::Deleted {
                from_seq: 0,
                count: 1,
                before: Some(records[1].id()),
            }]
        );
    }

    #[derive(Debug, Clone)]
    enum Tamper {
        Modify(usize),
        Delete(usize),
        Swap(usize, usize),
        Fork(usize),
    }

    fn tamper() -> impl proptest::strategy::Strategy<Value = (usize, Tamper)> {
        use proptest::prelude::*;
        (3usize..40).prop_flat_map(|n| {
            let i = 0..n;
            (
                Just(n),
                prop_oneof![
                    i.clone().prop_map(Tamper::Modify),
                    i.clone().prop_map(Tamper::Delete),
                    (i.clone(), i.clone())
                        .prop_filter("two entries", |(a, b)| a != b)
                        .prop_map(|(a, b)| Tamper::Swap(a, b)),
                    i.prop_map(Tamper::Fork),
                ],
            )
        })
    }

    proptest::proptest! {
        /// Whatever single tampering is done to a chain, `check` names exactly it.
        #[test]
        fn one_tampering_is_named_exactly((n, tampering) in tamper()) {
            let records = records("acme", n as i64);
            let key = ChainKey::of(&records[0]);
            let (mut entries, head) = chained(&records);
            let expected = match tampering {
                Tamper::Modify(i) => {
                    entries[i].intact = false;
                    vec![Finding::Modified { id: entries[i].id, kind: entries[i].kind, seq: i as u64 }]
                }
                Tamper::Delete(i) => {
                    entries.remove(i);
                    vec![Finding::Deleted {
                        from_seq: i as u64,
                        count: 1,
                        before: records.get(i + 1).map(AuditRecord::id),
                    }]
                }
                Tamper::Swap(a, b) => {
                    let (sa, sb) = (entries[a].link.seq, entries[b].link.seq);
                    entries[a].link.seq = sb;
                    entries[b].link.seq = sa;
                    let mut found = vec![
                        Finding::Reordered { id: entries[a].id, kind: entries[a].kind, stored_seq: sb, chained_seq: sa },
                        Finding::Reordered { id: entries[b].id, kind: entries[b].kind, stored_seq: sa, chained_seq: sb },
                    ];
                    found.sort_by_key(|f| match f { Finding::Reordered { chained_seq, .. } => *chained_seq, _ => 0 });
                    found
                }
                Tamper::Fork(i) => {
                    // A forged entry linked where entry i is, claiming its position, with
                    // a hash that matches its own (forged) content.
                    let forged = AuditRecord::Decision(decision("acme", 1_000 + i as i64));
                    let prev = entries[i].link.prev_hash.clone();
                    let link = ChainLink {
                        seq: i as u64,
                        hash: link_hash(&prev, &forged.canonical()),
                        prev_hash: prev,
                    };
                    let id = forged.id();
                    entries.push(Entry { id, kind: "decision", intact: true, link });
                    vec![Finding::Inserted { id, kind: "decision", seq: i as u64 }]
                }
            };
            let report = check(&key, &entries, Some(&head));
            proptest::prop_assert_eq!(report.findings, expected);
        }
    }
}
