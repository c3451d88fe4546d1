//! The bench's records: realistic, deterministic, and the same for every contender.
//!
//! A seeded generator (no `rand` dependency: SplitMix64 is enough and never changes
//! under us) yields records of the three input kinds, 300 to 1,500 bytes each, with keys
//! skewed towards a few hot tenants, some rules failing, and a few percent of bad
//! records (not JSON, or failing the schema) that become dead letters.

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

use crate::config::TopicsConfig;
use crate::record::Record;

/// The recipes the generated validation events are checked against (Theus format).
pub const RECIPES: &str = r#"audit:
  level: B
  threshold_max: 3
  threshold_min: 2
  reset_on_success: true
  ring_capacity: 1000
process_recipes:
  p_transfer:
    inputs:
      - { field: amount, min: 100, message: "Amount must be >= 100", level: B, max_threshold: 1 }
      - { field: dest, regex: "^User.*", level: C }
      - { field: currency, min_len: 3, max_len: 3, message: "Currency must be a 3-letter code" }
    outputs:
      - { field: domain.balance, max: 5000 }
  p_deploy:
    inputs:
      - { field: replicas, min: 1, max: 50, level: A, message: "Replica count out of range" }
      - { field: approved, eq: 1, level: S, message: "Deploy without approval" }
    outputs:
      - { field: result.replicas, max: 100, threshold_max: 2 }
  p_refund:
    inputs:
      - { field: amount, max: 10000 }
      - { field: reason, min_len: 4, max_len: 200 }
    outputs:
      - { field: ledger.refunded, min: 0 }
"#;

/// Which kinds of record, and how many of each, a dataset holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// 60 % validation, 25 % execution, 15 % coordination.
    All,
    Validation,
    Execution,
}

/// SplitMix64: tiny, fast, and fixed forever, so a seed always means the same records.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Skewed towards 0: `n * u³`, so the first tenth of the range gets about half of
    /// the draws.
    pub fn skewed(&mut self, n: u64) -> u64 {
        let u = self.unit();
        ((n as f64) * u * u * u) as u64
    }
}

/// Generates records for `topics`: `count` of them from `seed`, with `occurred_at` from
/// `start` on, 1 ms apart. The same arguments always give the same records.
pub struct Generator {
    rng: Rng,
    topics: TopicsConfig,
    start: DateTime<Utc>,
    mix: Mix,
    /// Fraction of bad records.
    bad: f64,
    produced: u64,
}

const TENANTS: u64 = 200;
const FILLER: &str = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore magna aliqua ut enim ad minim veniam quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat duis aute irure dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur excepteur sint occaecat cupidatat non proident sunt in culpa qui officia deserunt mollit anim id est laborum ";

impl Generator {
    pub fn new(seed: u64, topics: &TopicsConfig, start: DateTime<Utc>, mix: Mix) -> Generator {
        Generator {
            rng: Rng::new(seed),
            topics: topics.clone(),
            start,
            mix,
            bad: 0.03,
            produced: 0,
        }
    }

    /// `n` records.
    pub fn take(&mut self, n: usize) -> Vec<Record> {
        (0..n).map(|_| self.next_record()).collect()
    }

    /// The next record; its offset is its index in the sequence, partition 0.
    pub fn next_record(&mut self) -> Record {
        let index = self.produced;
        self.produced += 1;
        let at = self.start + Duration::milliseconds(index as i64);
        let kind = match self.mix {
            Mix::Validation => 0,
            Mix::Execution => 1,
            Mix::All => match self.rng.below(100) {
                0..=59 => 0,
                60..=84 => 1,
                _ => 2,
            },
        };
        let tenant = format!("tenant-{:03}", self.rng.skewed(TENANTS));
        let event_id = uuid::Uuid::from_u64_pair(self.rng.next_u64(), self.rng.next_u64());
        // Version 4 bits, so the id reads as a random UUID.
        let event_id = uuid::Builder::from_random_bytes(*event_id.as_bytes()).into_uuid();
        let occurred_at = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let (topic, key, mut value) = match kind {
            0 => self.validation(&tenant, event_id, &occurred_at),
            1 => self.execution(&tenant, event_id, &occurred_at, at),
            _ => self.coordination(&tenant, event_id, &occurred_at, at),
        };
        let payload = if self.rng.chance(self.bad) {
            if self.rng.chance(0.5) {
                // Cut short: not JSON.
                let mut bytes = serde_json::to_vec(&value).unwrap_or_default();
                bytes.truncate(bytes.len() / 2);
                bytes
            } else {
                // Valid JSON, invalid event: a required field missing.
                if let Value::Object(map) = &mut value {
                    map.remove("tenant_id");
                }
                serde_json::to_vec(&value).unwrap_or_default()
            }
        } else {
            serde_json::to_vec(&value).unwrap_or_default()
        };
        Record {
            topic,
            partition: 0,
            offset: index as i64,
            key: Some(key.into_bytes()),
            payload,
            timestamp: Some(at),
        }
    }

    /// Filler text of `min` to `min + spread` bytes, so payloads spread over 300 to
    /// 1,500 bytes.
    fn filler(&mut self, min: usize, spread: u64) -> String {
        let len = min + self.rng.below(spread) as usize;
        let start = self.rng.below(FILLER.len() as u64 / 2) as usize;
        let mut text = String::with_capacity(len);
        while text.len() < len {
            text.push_str(&FILLER[start..]);
        }
        text.truncate(len);
        text
    }

    fn validation(
        &mut self,
        tenant: &str,
        event_id: uuid::Uuid,
        occurred_at: &str,
    ) -> (String, String, Value) {
        let process =
            ["p_transfer", "p_deploy", "p_refund", "p_unaudited"][self.rng.skewed(4) as usize];
        let input = self.rng.chance(0.6);
        let fail = self.rng.chance(0.15);
        let memo = self.filler(200, 950);
        let values = match (process, input) {
            ("p_transfer", true) => json!({
                "amount": if fail { 50 } else { 100 + self.rng.below(10_000) as i64 },
                "dest": if self.rng.chance(0.1) { "Acct-9".to_string() } else { format!("User{}", self.rng.below(1_000)) },
                "currency": if fail && self.rng.chance(0.3) { "EURO" } else { "EUR" },
                "memo": memo,
            }),
            ("p_transfer", false) => json!({
                "domain": {"balance": if fail { 9_000 } else { self.rng.below(5_000) as i64 }, "account": format!("acct-{}", self.rng.below(10_000))},
                "memo": memo,
            }),
            ("p_deploy", true) => json!({
                "replicas": if fail { 0 } else { 1 + self.rng.below(40) as i64 },
                "approved": if fail && self.rng.chance(0.2) { 0 } else { 1 },
                "image": format!("registry.example.com/svc-{}:{}", self.rng.below(50), self.rng.below(500)),
                "notes": memo,
            }),
            ("p_deploy", false) => json!({
                "result": {"replicas": if fail { 150 } else { self.rng.below(100) as i64 }},
                "notes": memo,
            }),
            (_, true) => json!({
                "amount": if fail { 20_000 } else { self.rng.below(10_000) as i64 },
                "reason": if fail { "n/a" } else { "customer request" },
                "notes": memo,
            }),
            (_, false) => json!({
                "ledger": {"refunded": if fail { -1 } else { self.rng.below(1_000) as i64 }},
                "notes": memo,
            }),
        };
        let value = json!({
            "schema_version": 1,
            "event_id": event_id,
            "tenant_id": tenant,
            "occurred_at": occurred_at,
            "process": process,
            "phase": if input { "input" } else { "output" },
            "values": values,
        });
        (
            self.topics.validation.clone(),
            format!("{tenant}:{process}"),
            value,
        )
    }

    fn execution(
        &mut self,
        tenant: &str,
        event_id: uuid::Uuid,
        occurred_at: &str,
        at: DateTime<Utc>,
    ) -> (String, String, Value) {
        let contract = format!("c_{}", self.rng.skewed(40));
        let capabilities = [
            "payments-api",
            "payments-worker",
            "ledger",
            "search",
            "auth",
        ];
        let scope: Vec<&str> = capabilities[..2 + self.rng.below(3) as usize].to_vec();
        let steps: Vec<Value> = (0..1 + self.rng.below(2))
            .map(|i| {
                let target = capabilities[self.rng.skewed(capabilities.len() as u64) as usize];
                json!({
                    "step_id": format!("s{i}"),
                    "step_type": (["scale", "configuration_change", "restart", "noop"][self.rng.below(4) as usize]),
                    "status": "COMPLETED",
                    "output": if self.rng.chance(0.7) {
                        json!({"target": target, "rollback_action": {"type": "scale", "replicas": 3}})
                    } else {
                        json!({"target": target})
                    },
                })
            })
            .collect();
        let health = |rng: &mut Rng| {
            json!({
                "payments-api": (["HEALTHY", "HEALTHY", "HEALTHY", "DEGRADED"][rng.below(4) as usize]),
                "payments-worker": "HEALTHY",
                "ledger": (["HEALTHY", "DEGRADED", "UNHEALTHY"][rng.skewed(3) as usize]),
            })
        };
        let ts =
            |d: i64| (at + Duration::seconds(d)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut value = json!({
            "schema_version": 1,
            "event_id": event_id,
            "tenant_id": tenant,
            "occurred_at": occurred_at,
            "job_id": format!("job-{}", self.rng.below(1_000_000)),
            "contract_id": contract,
            "contract_revision": 1 + self.rng.below(5) as i64,
            "job_status": if self.rng.chance(0.9) { "COMPLETED" } else { "FAILED" },
            "contract_scope": scope,
            "step_results": steps,
            "proposed_changes": {"capability_name": "payments-api", "scope": ["payments-api"], "description": self.filler(10, 100)},
            "health_before": health(&mut self.rng),
            "health_after": health(&mut self.rng),
            "signals": [
                {"name": "error_rate", "expected": "< 1%", "observed": if self.rng.chance(0.9) { "< 1%" } else { "3%" }},
                {"name": "p99_ms", "expected": 250, "observed": 250},
            ],
            "activation_window_start": ts(-600),
            "activation_window_end": ts(600),
            "job_started_at": ts(-120),
            "job_completed_at": ts(if self.rng.chance(0.95) { -10 } else { 900 }),
        });
        if self.rng.chance(0.1) {
            if let Value::Object(map) = &mut value {
                map.remove("health_after");
            }
        }
        (
            self.topics.execution.clone(),
            format!("{tenant}:{contract}"),
            value,
        )
    }

    fn coordination(
        &mut self,
        tenant: &str,
        event_id: uuid::Uuid,
        occurred_at: &str,
        at: DateTime<Utc>,
    ) -> (String, String, Value) {
        let envelope = format!("env-{}", self.rng.skewed(500));
        let value = json!({
            "schema_version": 1,
            "event_id": event_id,
            "tenant_id": tenant,
            "occurred_at": occurred_at,
            "envelope_id": envelope,
            "envelope_class": (["SAFETY", "RELIABILITY", "COST", "PERFORMANCE"][self.rng.below(4) as usize]),
            "decision": (["APPLIED", "REJECTED", "PREEMPTED"][self.rng.skewed(3) as usize]),
            "reason": self.filler(60, 400),
            "decision_timestamp": (at - Duration::seconds(1)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "active_envelopes_count": self.rng.below(12) as i64,
        });
        (
            self.topics.coordination.clone(),
            format!("{tenant}:{envelope}"),
            value,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::pipeline::{Operator, Output, PartitionState};
    use crate::validation::Recipes;

    fn start() -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000, 0).unwrap()
    }

    #[test]
    fn the_same_seed_gives_the_same_records() {
        let topics = TopicsConfig::default();
        let a = Generator::new(7, &topics, start(), Mix::All).take(200);
        let b = Generator::new(7, &topics, start(), Mix::All).take(200);
        assert_eq!(a, b);
        let c = Generator::new(8, &topics, start(), Mix::All).take(200);
        assert_ne!(a, c);
    }

    #[test]
    fn records_are_300_to_1500_bytes_of_every_kind_with_a_few_percent_bad() {
        let config = Config::default();
        let recipes = Recipes::parse(RECIPES).expect("bench recipes parse");
        let operator = Operator::new(&config).expect("schemas compile");
        let mut state = PartitionState::new(&recipes);
        let records = Generator::new(1, &config.topics, start(), Mix::All).take(5_000);
        let mut by_topic = std::collections::BTreeMap::<&str, usize>::new();
        let (mut dead, mut decisions) = (0, 0);
        for r in &records {
            *by_topic.entry(r.topic.as_str()).or_default() += 1;
            for output in operator.process(r, &recipes, &mut state, start()) {
                match output {
                    Output::DeadLetter(_) => dead += 1,
                    Output::Audit(crate::store::AuditRecord::Decision(_)) => decisions += 1,
                    Output::Audit(_) => {}
                }
            }
        }
        for topic in config.topics.inputs() {
            let good: Vec<usize> = records
                .iter()
                .filter(|r| r.topic == topic)
                .filter(|r| serde_json::from_slice::<Value>(&r.payload).is_ok())
                .map(|r| r.payload.len())
                .collect();
            let (min, max) = (good.iter().min().unwrap(), good.iter().max().unwrap());
            assert!(*min >= 300 && *max <= 1_500, "{topic}: sizes {min}..{max}");
        }
        assert_eq!(by_topic.len(), 3, "{by_topic:?}");
        assert!((75..=250).contains(&dead), "{dead} dead letters of 5000");
        assert!(decisions > 100, "{decisions} decisions");
    }
}
