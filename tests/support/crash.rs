//! Crash and churn runs: mixed inputs on every input topic, service processes started
//! and killed, and a final comparison of the store with the offline oracle.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use audit_stream::chain::{ChainKey, ChainLink};
use audit_stream::config::Config;
use audit_stream::pipeline::{Operator, PartitionState};
use audit_stream::record::{Record, RecordLine};
use audit_stream::store::{AuditRecord, AuditStore, EmbeddedStore, StoredRecord};
use audit_stream::validation::Recipes;
use chrono::Utc;
use indicatif::ProgressBar;
use serde_json::Value;
use uuid::Uuid;

use super::{
    audit_stream, committed_partitions, one_record_per_batch, publish_more_and_place, unique,
};

const SAMPLE: &str = include_str!("../../examples/demo.jsonl");
const RECIPES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/recipes.yaml");
const TENANTS: [&str; 6] = ["acme", "globex", "initech", "umbrella", "hooli", "stark"];

/// Input topics with their partition counts.
pub const PARTITIONS: [(&str, i32); 3] = [("validation", 3), ("execution", 2), ("coordination", 1)];

/// One crash or churn run: its topics, group, store file and inputs as placed.
pub struct Run {
    pub config: Config,
    pub dir: tempfile::TempDir,
    pub inputs: Vec<Record>,
    /// Records generated but not yet published: (topic, key, payload).
    held: Vec<(String, String, Vec<u8>)>,
}

/// A cheap deterministic generator (xorshift), seeded from `AUDIT_STREAM_TEST_SEED` or
/// the clock; the seed is printed so that a failing run can be repeated.
pub struct Rng(u64);

impl Rng {
    pub fn from_env() -> Rng {
        let seed = std::env::var("AUDIT_STREAM_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("AUDIT_STREAM_TEST_SEED={seed}");
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `[low, high)`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low)
    }
}

/// `n` records cycling through the demo sample (validation events that pass and fail,
/// execution events with every verdict, coordination decisions, malformed payloads),
/// each with its own event id and one of six tenants.
fn mixed(n: usize, topics: &Config) -> Vec<(String, String, Vec<u8>)> {
    let sample: Vec<Record> = SAMPLE
        .lines()
        .enumerate()
        .map(|(i, line)| {
            RecordLine::parse(line, i + 1)
                .expect("sample line")
                .into_record(0, 0)
        })
        .collect();
    (0..n)
        .map(|i| {
            let record = &sample[i % sample.len()];
            let topic = match record.topic.as_str() {
                "audit.validation.v1" => topics.topics.validation.clone(),
                "audit.execution.v1" => topics.topics.execution.clone(),
                "audit.coordination.v1" => topics.topics.coordination.clone(),
                other => panic!("sample topic {other}"),
            };
            let key = String::from_utf8(record.key.clone().unwrap_or_default()).expect("key");
            let tenant = TENANTS[(i / sample.len()) % TENANTS.len()];
            match serde_json::from_slice::<Value>(&record.payload) {
                Ok(Value::Object(mut event)) => {
                    event.insert(
                        "event_id".into(),
                        Value::String(
                            Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("crash-{i}").as_bytes())
                                .to_string(),
                        ),
                    );
                    if event.contains_key("tenant_id") {
                        event.insert("tenant_id".into(), Value::String(tenant.into()));
                    }
                    let rest = key.split_once(':').map_or(key.as_str(), |(_, r)| r);
                    let key = format!("{tenant}:{rest}");
                    (topic, key, serde_json::to_vec(&event).expect("json"))
                }
                // Malformed on purpose: a dead letter keyed by its position.
                _ => (topic, key, record.payload.clone()),
            }
        })
        .collect()
}

impl Run {
    /// Creates the topics and publishes `n` mixed records, one record per batch (see
    /// [`one_record_per_batch`]).
    pub async fn prepare(bootstrap: &str, create_topic: impl Fn(&str, u32), n: usize) -> Run {
        Run::prepare_holding_back(bootstrap, create_topic, n, 0).await
    }

    /// [`Run::prepare`], publishing only the first `n - held` records: the last `held`
    /// wait for [`Run::publish_held`].
    pub async fn prepare_holding_back(
        bootstrap: &str,
        create_topic: impl Fn(&str, u32),
        n: usize,
        held: usize,
    ) -> Run {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::default();
        config.kafka.bootstrap_servers = bootstrap.to_string();
        config.kafka.group_id = unique("crash");
        config.topics.validation = unique("validation");
        config.topics.execution = unique("execution");
        config.topics.coordination = unique("coordination");
        config.topics.decisions = unique("decisions");
        config.topics.verdicts = unique("verdicts");
        config.topics.dlq = unique("dlq");
        config.recipes.path = Some(PathBuf::from(RECIPES));
        config.store.embedded_path = dir.path().join("store.db");
        for (topic, partitions) in Run::input_partitions(&config) {
            create_topic(&topic, partitions as u32);
        }
        for t in config.topics.outputs() {
            create_topic(t, 1);
        }
        let mut events = mixed(n, &config);
        let held = events.split_off(n - held.min(n));
        let mut run = Run {
            config,
            dir,
            inputs: Vec::new(),
            held,
        };
        let started = Instant::now();
        let published = events.len();
        run.publish(events).await;
        eprintln!("published {published} records in {:?}", started.elapsed());
        run
    }

    /// Publishes the records [`Run::prepare_holding_back`] held back.
    pub async fn publish_held(&mut self) {
        let held = std::mem::take(&mut self.held);
        let count = held.len();
        self.publish(held).await;
        eprintln!("published the {count} records held back");
    }

    /// Publishes `events` after the records already published, and places them.
    async fn publish(&mut self, events: Vec<(String, String, Vec<u8>)>) {
        for (topic, partitions) in Run::input_partitions(&self.config) {
            let of_topic: Vec<(String, Vec<u8>)> = events
                .iter()
                .filter(|(t, _, _)| *t == topic)
                .map(|(_, k, p)| (k.clone(), p.clone()))
                .collect();
            let (mut placed, others): (Vec<Record>, Vec<Record>) = std::mem::take(&mut self.inputs)
                .into_iter()
                .partition(|r| r.topic == topic);
            let kafka = one_record_per_batch(&self.config.kafka);
            if !of_topic.is_empty() {
                placed = publish_more_and_place(&kafka, &topic, partitions, placed.len(), of_topic)
                    .await;
            }
            self.inputs = others;
            self.inputs.extend(placed);
        }
    }

    fn input_partitions(config: &Config) -> Vec<(String, i32)> {
        let t = &config.topics;
        PARTITIONS
            .iter()
            .map(|(kind, n)| {
                let name = match *kind {
                    "validation" => &t.validation,
                    "execution" => &t.execution,
                    _ => &t.coordination,
                };
                (name.clone(), *n)
            })
            .collect()
    }

    /// Every input partition with the offset past its last record.
    pub fn ends(&self) -> Vec<((String, i32), i64)> {
        Run::input_partitions(&self.config)
            .into_iter()
            .flat_map(|(topic, n)| (0..n).map(move |p| (topic.clone(), p)))
            .map(|(topic, p)| {
                let end = self
                    .inputs
                    .iter()
                    .filter(|r| r.topic == topic && r.partition == p)
                    .map(|r| r.offset + 1)
                    .max()
                    .unwrap_or(0);
                ((topic, p), end)
            })
            .collect()
    }

    /// The group's committed offsets, in the order of [`Run::ends`] (0 for none).
    pub fn committed(&self) -> Vec<i64> {
        let ends = self.ends();
        let partitions: Vec<(&str, i32)> =
            ends.iter().map(|((t, p), _)| (t.as_str(), *p)).collect();
        committed_partitions(
            &self.config.kafka.bootstrap_servers,
            &self.config.kafka.group_id,
            &partitions,
        )
        .into_iter()
        .map(|o| o.unwrap_or(0))
        .collect()
    }

    /// Records covered by the group's commits, over all partitions.
    pub fn committed_total(&self) -> i64 {
        self.committed().iter().sum()
    }

    /// Starts one `audit-stream run` of the group, its log in the run's directory.
    pub fn start(&self, name: &str, extra_env: &[(&str, String)]) -> Service {
        let c = &self.config;
        let log_path = self.dir.path().join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).expect("log");
        let env: Vec<(String, String)> = [
            (
                "KAFKA__BOOTSTRAP_SERVERS",
                c.kafka.bootstrap_servers.clone(),
            ),
            ("KAFKA__GROUP_ID", c.kafka.group_id.clone()),
            ("KAFKA__COMMIT_INTERVAL_MS", "200".into()),
            ("KAFKA__SESSION_TIMEOUT_MS", "6000".into()),
            ("TOPICS__VALIDATION", c.topics.validation.clone()),
            ("TOPICS__EXECUTION", c.topics.execution.clone()),
            ("TOPICS__COORDINATION", c.topics.coordination.clone()),
            ("TOPICS__DECISIONS", c.topics.decisions.clone()),
            ("TOPICS__VERDICTS", c.topics.verdicts.clone()),
            ("TOPICS__DLQ", c.topics.dlq.clone()),
            ("RECIPES__PATH", RECIPES.to_string()),
            ("STORE__KIND", "embedded".into()),
            ("STORE__EMBEDDED_PATH", path_string(&c.store.embedded_path)),
            ("CHECKPOINT__INTERVAL_MS", "500".into()),
            ("HTTP__LISTEN", format!("127.0.0.1:{}", super::free_port())),
        ]
        .into_iter()
        .map(|(k, v)| (format!("AUDIT_STREAM__{k}"), v))
        .chain(
            extra_env
                .iter()
                .map(|(k, v)| (format!("AUDIT_STREAM__{k}"), v.clone())),
        )
        .collect();
        let child = audit_stream()
            .arg("run")
            .envs(env)
            .env("RUST_LOG", "audit_stream=info,warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("service starts");
        Service {
            child,
            name: name.to_string(),
            log: log_path,
        }
    }

    /// Waits until the group has committed every input partition to its end.
    pub fn wait_committed_to_end(&self, timeout: Duration) {
        let ends: Vec<i64> = self.ends().into_iter().map(|(_, e)| e).collect();
        let deadline = Instant::now() + timeout;
        loop {
            let committed = self.committed();
            if committed == ends {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not committed to the end: {committed:?} of {ends:?}\n{}\n{}",
                self.rebalance_history(),
                self.logs_tail()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Every service's assignments, revocations and restores, from its log.
    pub fn rebalance_history(&self) -> String {
        let mut out = String::new();
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        names.sort();
        for path in names
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
        {
            out.push_str(&format!("== {}\n", path.display()));
            let text = std::fs::read_to_string(path).unwrap_or_default();
            for line in text.lines().filter(|l| {
                l.contains("Partitions assigned")
                    || l.contains("Partitions revoked")
                    || l.contains("restored from its checkpoint")
                    || l.contains("WARN")
            }) {
                let names = [
                    &self.config.topics.validation,
                    &self.config.topics.execution,
                    &self.config.topics.coordination,
                ];
                let mut line = line.to_string();
                for (name, short) in names.into_iter().zip(["v", "e", "c"]) {
                    line = line.replace(name.as_str(), short);
                }
                out.push_str(&line);
                out.push('\n');
            }
        }
        out
    }

    /// The last lines of every service log, for a failure message.
    pub fn logs_tail(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "log") {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    out.push_str(&format!("== {}\n", path.display()));
                    for line in &lines[lines.len().saturating_sub(15)..] {
                        out.push_str(line);
                        out.push('\n');
                    }
                }
            }
        }
        out
    }

    /// Compares the store with the offline oracle run on the same records: no audit
    /// record missing or extra, every one (every BLOCK decision among them) with the
    /// oracle's content, and each partition's final checkpoint equal to the oracle's
    /// final state (the exact failure counts and ring logs).
    pub async fn verify(&self) -> Outcome {
        let recipes = Recipes::parse(&std::fs::read_to_string(RECIPES).expect("recipes"))
            .expect("recipes parse");
        let operator = Operator::new(&self.config).expect("operator");
        let mut states: HashMap<(String, i32), PartitionState> = HashMap::new();
        let mut expected: BTreeMap<Uuid, Value> = BTreeMap::new();
        // Every chain entry the oracle derives: (tenant, topic, partition, position) →
        // (record id, previous hash, hash).
        let mut expected_chain: BTreeMap<ChainPosition, ChainLinkOf> = BTreeMap::new();
        for record in &self.inputs {
            let state = states
                .entry((record.topic.clone(), record.partition))
                .or_insert_with(|| PartitionState::new(&recipes));
            let outputs = operator.process(record, &recipes, state, Utc::now());
            for StoredRecord {
                record: audit,
                link,
                ..
            } in state.link(outputs, operator.topics()).1
            {
                let previous = expected.insert(audit.id(), comparable(audit_json(&audit)));
                assert!(
                    previous.is_none(),
                    "the oracle derives {} twice",
                    audit.id()
                );
                expected_chain.insert(
                    chain_position(ChainKey::of(&audit), &link),
                    (audit.id(), link),
                );
            }
        }

        let store = EmbeddedStore::open(&self.config.store.embedded_path).expect("store opens");
        let stored = stored_records(&store).await;
        let stored_chain = stored_chain(&store).await;
        let chain_differing = expected_chain
            .iter()
            .filter(|(position, want)| stored_chain.get(*position) != Some(*want))
            .count()
            + stored_chain
                .keys()
                .filter(|position| !expected_chain.contains_key(*position))
                .count();
        let verified = audit_stream::verify::verify(&store, None, &ProgressBar::hidden())
            .await
            .expect("verify runs");
        let missing: Vec<&Uuid> = expected
            .keys()
            .filter(|k| !stored.contains_key(k))
            .collect();
        let extra: Vec<&Uuid> = stored
            .keys()
            .filter(|k| !expected.contains_key(k))
            .collect();
        let differing: Vec<&Uuid> = expected
            .iter()
            .filter(|(id, want)| stored.get(id).is_some_and(|got| got != *want))
            .map(|(id, _)| id)
            .collect();
        let blocks = expected
            .values()
            .filter(|v| v["decision"] == "BLOCK")
            .count();
        let blocks_stored = stored.values().filter(|v| v["decision"] == "BLOCK").count();
        if let Some(id) = differing.first() {
            eprintln!(
                "first differing record {id}:\n want {}\n got  {}",
                expected[id], stored[id]
            );
        }

        let mut states_differing = Vec::new();
        for ((topic, partition), state) in &states {
            let want = serde_json::to_value(state).expect("state json");
            let got = store
                .load_checkpoint(&self.config.kafka.group_id, topic, *partition)
                .await
                .expect("load checkpoint")
                .map(|c| serde_json::from_slice::<Value>(&c.state).expect("checkpoint json"));
            if got.as_ref() != Some(&want) {
                states_differing.push((topic.clone(), *partition));
            }
        }
        Outcome {
            chain_entries: expected_chain.len(),
            chain_differing,
            verify_problems: verified.problems.iter().map(ToString::to_string).collect(),
            expected: expected.len(),
            missing: missing.len(),
            extra: extra.len(),
            differing: differing.len(),
            blocks,
            blocks_stored,
            states_differing,
        }
    }
}

/// What [`Run::verify`] found.
#[derive(Debug)]
pub struct Outcome {
    pub expected: usize,
    pub missing: usize,
    pub extra: usize,
    pub differing: usize,
    pub blocks: usize,
    pub blocks_stored: usize,
    pub states_differing: Vec<(String, i32)>,
    /// Chain entries the oracle derives, and how many positions the store has with
    /// other links (another record, other hashes) or that the oracle does not have.
    pub chain_entries: usize,
    pub chain_differing: usize,
    /// What `audit-stream verify` finds in the store.
    pub verify_problems: Vec<String>,
}

impl Outcome {
    /// Asserts the acceptance criteria: 0 missing, 0 extra, every record (and so every
    /// BLOCK decision) and every partition's final state equal to the oracle's.
    pub fn assert_exact(&self) {
        assert!(self.blocks > 100, "the run has BLOCK decisions: {self:?}");
        assert!(
            self.missing == 0
                && self.extra == 0
                && self.differing == 0
                && self.blocks == self.blocks_stored
                && self.states_differing.is_empty(),
            "store differs from the oracle: {self:?}"
        );
        assert!(
            self.chain_entries == self.expected && self.chain_differing == 0,
            "the stored hash chains are not the oracle's: {self:?}"
        );
        assert!(
            self.verify_problems.is_empty(),
            "verify finds problems: {:?}",
            self.verify_problems
        );
    }
}

/// Where a chain entry is: (tenant, topic, partition, position).
type ChainPosition = (String, String, i32, u64);
/// What is there: (record id, link).
type ChainLinkOf = (Uuid, ChainLink);

fn chain_position(key: ChainKey, link: &ChainLink) -> ChainPosition {
    (key.tenant_id, key.topic, key.partition, link.seq)
}

/// Every chain entry in the store, by position.
async fn stored_chain(store: &EmbeddedStore) -> BTreeMap<ChainPosition, ChainLinkOf> {
    let mut chain = BTreeMap::new();
    for tenant in store.tenants().await.expect("tenants") {
        let mut cursor: Option<String> = None;
        loop {
            let page = store
                .chain_entries(&tenant, cursor.as_deref(), 5_000)
                .await
                .expect("chain entries");
            for entry in page.items {
                let (key, _, id, link) = entry.parts();
                chain.insert(chain_position(key, link), (id, link.clone()));
            }
            cursor = page.next;
            if cursor.is_none() {
                break;
            }
        }
    }
    chain
}

fn path_string(path: &Path) -> String {
    path.to_str().expect("utf-8 path").to_string()
}

fn audit_json(audit: &AuditRecord) -> Value {
    match audit {
        AuditRecord::Decision(d) => serde_json::to_value(d),
        AuditRecord::Verdict { verdict, .. } => serde_json::to_value(verdict),
        AuditRecord::Coordination(c) => serde_json::to_value(c),
    }
    .expect("audit record json")
}

/// The record without its wall-clock fields, the only ones a replay may change.
fn comparable(mut value: Value) -> Value {
    if let Value::Object(map) = &mut value {
        map.remove("audited_at");
        map.remove("duration_ms");
    }
    value
}

/// Every audit record in the store, by id; a record stored twice fails the test.
async fn stored_records(store: &EmbeddedStore) -> BTreeMap<Uuid, Value> {
    let mut out = BTreeMap::new();
    let mut put = |id: Uuid, value: Value| {
        assert!(
            out.insert(id, comparable(value)).is_none(),
            "stored twice: {id}"
        );
    };
    for tenant in store.tenants().await.expect("tenants") {
        let mut cursor = None;
        loop {
            let page = store
                .decisions(&tenant, cursor.as_deref(), 5_000)
                .await
                .expect("decisions");
            for d in page.items {
                put(d.event_id, serde_json::to_value(&d).expect("json"));
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let mut cursor = None;
        loop {
            let page = store
                .verdicts(&tenant, cursor.as_deref(), 5_000)
                .await
                .expect("verdicts");
            for v in page.items {
                put(v.audit_id, serde_json::to_value(&v).expect("json"));
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let mut cursor = None;
        loop {
            let page = store
                .coordination_records(&tenant, cursor.as_deref(), 5_000)
                .await
                .expect("coordination records");
            for c in page.items {
                put(c.audit_id, serde_json::to_value(&c).expect("json"));
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    out
}

/// One `audit-stream run` process.
pub struct Service {
    child: Child,
    pub name: String,
    /// Its stderr.
    pub log: std::path::PathBuf,
}

impl Service {
    /// SIGKILL: nothing of the graceful path runs.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(mut self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let exit = self.child.wait().expect("service exits");
        if !exit.success() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "{} exited with {exit}; its log ends:\n{}",
                self.name,
                tail.join("\n")
            );
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
