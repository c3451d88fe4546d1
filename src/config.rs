//! Configuration: defaults < TOML file < `AUDIT_STREAM__*` environment variables.
//!
//! Every key is documented here and in `config/audit-stream.toml`. Unknown keys are
//! rejected, so a typo fails at start instead of silently falling back to a default.
//! Environment variables name a key path with `__`, for example
//! `AUDIT_STREAM__KAFKA__BOOTSTRAP_SERVERS=broker:9092`. There is no global config: it is
//! loaded once in `main` and handed to whatever needs it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Prefix of environment overrides; `__` separates key path segments.
pub const ENV_PREFIX: &str = "AUDIT_STREAM__";

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub topics: TopicsConfig,
    pub ingest: IngestConfig,
    pub recipes: RecipesConfig,
    pub store: StoreConfig,
    pub checkpoint: CheckpointConfig,
    pub gate: GateConfig,
    pub http: HttpConfig,
    pub validation: ValidationConfig,
    pub chain: ChainConfig,
}

/// Kafka client settings shared by the consumer and the producer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list of brokers.
    pub bootstrap_servers: String,
    /// Consumer group: every replica of one deployment shares it; Kafka assigns partitions.
    pub group_id: String,
    /// `cooperative-sticky` moves only the partitions that must move on a rebalance.
    pub assignment_strategy: String,
    /// How long the group waits for a silent member before reassigning its partitions.
    pub session_timeout_ms: u32,
    /// How often stored offsets are committed. An offset is stored only once a checkpoint
    /// at it is durable (so only offsets of fully persisted records are committed), which
    /// makes `checkpoint.interval_ms` the other bound on how far commits lag.
    pub commit_interval_ms: u32,
    /// Where a partition without a committed offset starts.
    pub auto_offset_reset: String,
    /// While the store or the broker holds records up (backpressure), the service stops
    /// pulling records; past this long without a pull the member leaves the group and
    /// rejoins when it pulls again (nothing is lost: uncommitted records are replayed).
    pub max_poll_interval_ms: u32,
    /// Upper bound of records the client prefetches per partition while not pulled.
    pub prefetch_max_kbytes: u32,
    /// How often the client reports its statistics, from which consumer lag per
    /// partition is exported.
    pub statistics_interval_ms: u32,
    /// Decisions, verdicts, dead letters and input offsets in one Kafka transaction,
    /// committed every `checkpoint.interval_ms`: a `read_committed` consumer sees each
    /// output once. Off: outputs are at-least-once with an idempotent producer and
    /// deterministic ids, so a duplicate carries the same id. See ARCHITECTURE.md.
    pub exactly_once: bool,
    /// The producer's `transactional.id` with `exactly_once`; empty means
    /// `<group_id>-<HOSTNAME>`. It must be unique per instance and the same across
    /// restarts of one instance (a StatefulSet's pod name): a restart then aborts the
    /// transaction its predecessor left open at once, instead of after the broker's
    /// transaction timeout, during which `read_committed` consumers wait.
    pub transactional_id: String,
    /// Extra librdkafka properties for both clients: security (`security.protocol`,
    /// `sasl.mechanisms`, `sasl.username`, `sasl.password`, `ssl.ca.location`, …) and
    /// tuning. From the environment, `_` in a property name stands for `.`:
    /// `AUDIT_STREAM__KAFKA__PROPERTIES__SASL_USERNAME`.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: "127.0.0.1:9092".into(),
            group_id: "audit-stream".into(),
            assignment_strategy: "cooperative-sticky".into(),
            session_timeout_ms: 10_000,
            commit_interval_ms: 1_000,
            auto_offset_reset: "earliest".into(),
            max_poll_interval_ms: 900_000,
            prefetch_max_kbytes: 16_384,
            statistics_interval_ms: 5_000,
            exactly_once: false,
            transactional_id: String::new(),
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// The `transactional.id` of this instance (see the field).
    pub fn transactional_id(&self) -> String {
        if !self.transactional_id.is_empty() {
            return self.transactional_id.clone();
        }
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "local".into());
        format!("{}-{host}", self.group_id)
    }

    /// The pass-through properties with environment-style names (`sasl_username`)
    /// turned into librdkafka names (`sasl.username`).
    pub fn client_properties(&self) -> impl Iterator<Item = (String, &str)> {
        self.properties
            .iter()
            .map(|(k, v)| (k.replace('_', ".").to_lowercase(), v.as_str()))
    }
}

/// Topic names: inputs by kind, then outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    pub validation: String,
    pub execution: String,
    pub coordination: String,
    pub decisions: String,
    pub verdicts: String,
    pub dlq: String,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            validation: "audit.validation.v1".into(),
            execution: "audit.execution.v1".into(),
            coordination: "audit.coordination.v1".into(),
            decisions: "audit.decisions.v1".into(),
            verdicts: "audit.verdicts.v1".into(),
            dlq: "audit.dlq.v1".into(),
        }
    }
}

impl TopicsConfig {
    /// The topics the service consumes.
    pub fn inputs(&self) -> [&str; 3] {
        [&self.validation, &self.execution, &self.coordination]
    }

    /// The topics the service publishes to.
    pub fn outputs(&self) -> [&str; 3] {
        [&self.decisions, &self.verdicts, &self.dlq]
    }
}

/// Limits at ingest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Payloads larger than this are dead-lettered as `oversize` without being parsed.
    pub max_payload_bytes: usize,
    /// Objects and arrays nested deeper than this are dead-lettered as `oversize`, at the
    /// first level too deep. At most 127 (the JSON parser's own recursion guard).
    pub max_nesting_depth: usize,
    /// Share of dead-lettered records (0 to 1) per input kind above which the service
    /// warns and the `AuditStreamDeadLetterShareHigh` alert fires: a flood of bad records
    /// is made loud instead of silently dead-lettered.
    pub dead_letter_alert_ratio: f64,
    /// The sliding window over which that share is measured.
    pub dead_letter_window_secs: u64,
    /// Records read but not yet fully persisted and acknowledged; consumption pauses at
    /// this bound, which bounds memory while the store or the broker is slow.
    pub max_in_flight_records: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_payload_bytes: 1024 * 1024,
            max_nesting_depth: 64,
            dead_letter_alert_ratio: 0.05,
            dead_letter_window_secs: 60,
            max_in_flight_records: 10_000,
        }
    }
}

/// Where the Theus recipes come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecipesConfig {
    /// Theus-format YAML. Without a file, no process has a recipe and nothing is checked.
    pub path: Option<PathBuf>,
    /// How often the file is checked for changes; a changed, valid file replaces the
    /// recipes in force, an invalid one is rejected and the previous recipes stay.
    pub reload_interval_ms: u64,
}

impl Default for RecipesConfig {
    fn default() -> Self {
        RecipesConfig {
            path: None,
            reload_interval_ms: 5_000,
        }
    }
}

/// Which store keeps audit records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// SQLite file on local disk: demo and single-machine use.
    Embedded,
    /// ScyllaDB cluster: production.
    Scylla,
}

/// Audit record store settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub kind: StoreKind,
    /// File of the embedded store.
    pub embedded_path: PathBuf,
    /// Records written to the store in one call at most.
    pub batch_max_records: usize,
    /// First retry delay after a failed write; doubles up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// The ScyllaDB cluster, used when `kind = "scylla"` and by `migrate`.
    pub scylla: ScyllaConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Embedded,
            embedded_path: PathBuf::from("audit-stream.db"),
            batch_max_records: 512,
            retry_initial_ms: 100,
            retry_max_ms: 10_000,
            scylla: ScyllaConfig::default(),
        }
    }
}

impl StoreConfig {
    /// The backoff of retried store calls: `retry_initial_ms`, doubling, at most
    /// `retry_max_ms`.
    pub fn retry_policy(&self) -> crate::store::RetryPolicy {
        crate::store::RetryPolicy {
            initial: std::time::Duration::from_millis(self.retry_initial_ms),
            max: std::time::Duration::from_millis(self.retry_max_ms),
            multiplier: 2.0,
        }
    }
}

/// How to reach the ScyllaDB cluster and how hard to lean on it.
///
/// Secrets are given by reference: `password_file` names a file (a mounted secret), and
/// the password itself comes only from that file or from the
/// `AUDIT_STREAM__STORE__SCYLLA__PASSWORD` environment variable; it is never serialized,
/// and its `Debug` output is redacted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScyllaConfig {
    /// Contact points, `host:port`. The driver learns the rest of the cluster from the
    /// first one that answers, so two or three spread over racks are enough.
    pub nodes: Vec<String>,
    /// Keyspace of every audit-stream table: a lower-case letter, then lower-case
    /// letters, digits and `_`, at most 48 characters (it is written into CQL text
    /// unquoted, so nothing else is accepted).
    pub keyspace: String,
    /// Replication of the keyspace, as a CQL map. Read only by `migrate`, and only when
    /// it creates the keyspace: an existing keyspace keeps its replication.
    pub replication: String,
    /// Consistency level of every read and write. With three replicas, `LOCAL_QUORUM`
    /// keeps writes durable on two and reads seeing them while one node is down.
    pub consistency: ScyllaConsistency,
    /// User for password authentication; without one, no authentication.
    pub username: Option<String>,
    /// File whose content (a trailing newline ignored) is the user's password.
    pub password_file: Option<PathBuf>,
    /// The password, from the environment only (`AUDIT_STREAM__STORE__SCYLLA__PASSWORD`,
    /// for compose); takes precedence over `password_file`. Never write it in a file.
    #[serde(skip_serializing)]
    pub password: Option<Password>,
    /// PEM file of the CA that signed the nodes' certificates. Set: every connection
    /// uses TLS and verifies the node's certificate against the node's IP address.
    pub tls_ca_file: Option<PathBuf>,
    /// Client-side limit of one request, retries by the driver included. Above the
    /// server's own timeouts (2 s writes, 5 s reads by default), so those come first and
    /// say which replicas did not answer.
    pub request_timeout_ms: u64,
    /// Requests in flight to the cluster at most, over all callers: a large batch or many
    /// partitions at once queue here instead of overloading the coordinators.
    pub max_in_flight_requests: usize,
}

impl Default for ScyllaConfig {
    fn default() -> Self {
        ScyllaConfig {
            nodes: vec!["127.0.0.1:9042".into()],
            keyspace: "audit_stream".into(),
            replication: "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}".into(),
            consistency: ScyllaConsistency::LocalQuorum,
            username: None,
            password_file: None,
            password: None,
            tls_ca_file: None,
            request_timeout_ms: 10_000,
            max_in_flight_requests: 256,
        }
    }
}

/// Consistency levels usable for both reads and writes. `ANY` (a hint is not a durable
/// write) and the write-only `EACH_QUORUM` are left out on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ScyllaConsistency {
    One,
    Two,
    Three,
    Quorum,
    All,
    LocalQuorum,
    LocalOne,
}

impl ScyllaConsistency {
    /// The CQL name, as in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            ScyllaConsistency::One => "ONE",
            ScyllaConsistency::Two => "TWO",
            ScyllaConsistency::Three => "THREE",
            ScyllaConsistency::Quorum => "QUORUM",
            ScyllaConsistency::All => "ALL",
            ScyllaConsistency::LocalQuorum => "LOCAL_QUORUM",
            ScyllaConsistency::LocalOne => "LOCAL_ONE",
        }
    }
}

/// A password: compared and cloned like a string, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(password: impl Into<String>) -> Password {
        Password(password.into())
    }

    /// The password itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for Password {
    /// A string and nothing else. Environment values are parsed by figment, so one that
    /// would read as a number, a boolean, a list or a map must be quoted to arrive as
    /// written (`AUDIT_STREAM__STORE__SCYLLA__PASSWORD='"0123"'`); unquoted, it is
    /// refused at load rather than silently changed (`0123` would become `123`).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Password;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a password string (quote a value that reads as a number, a boolean, \
                     a list or a map)",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Password, E> {
                Ok(Password::new(v))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// Operator-state checkpoints (SPEC §6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// How often the state of each partition is snapshotted, and a snapshot whose records
    /// are all durable is saved; its offset is then committed. It bounds what a restarted
    /// or new owner replays: the records after the last saved checkpoint (their outputs
    /// are duplicates with the same ids, which the store does not write again).
    pub interval_ms: u64,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig { interval_ms: 5_000 }
    }
}

/// Rollout gate policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GateConfig {
    /// A verdict whose evidence is older than this answers `wait`.
    pub freshness_secs: u64,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            freshness_secs: 24 * 3600,
        }
    }
}

/// The one HTTP port: metrics, probes, rollout and key endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "0.0.0.0:8080".into(),
        }
    }
}

/// Bounds of the validation audit's per-partition counter state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationConfig {
    /// Failure-counter keys held per input partition at most. A new failing key at the
    /// bound evicts the least recently seen eighth of the keys; each eviction is written
    /// to the ring log and counted (`audit_stream_counter_keys_evicted_total`).
    pub max_tracked_keys: usize,
    /// A key not seen for this long, in event time (`occurred_at`, never the wall clock),
    /// is evicted. Its next failure counts as its first.
    pub key_idle_ttl_secs: u64,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        let limits = crate::validation::CounterLimits::default();
        ValidationConfig {
            max_tracked_keys: limits.max_tracked_keys,
            key_idle_ttl_secs: u64::try_from(limits.idle_ttl_ms / 1000).unwrap_or(u64::MAX),
        }
    }
}

impl ValidationConfig {
    /// The counter limits these settings stand for.
    pub fn limits(&self) -> crate::validation::CounterLimits {
        crate::validation::CounterLimits {
            max_tracked_keys: self.max_tracked_keys,
            idle_ttl_ms: i64::try_from(self.key_idle_ttl_secs)
                .unwrap_or(i64::MAX)
                .saturating_mul(1000),
        }
    }
}

/// Bounds of the hash chains' heads held per partition (one per tenant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChainConfig {
    /// Chain heads held per input partition once a durable checkpoint has saved the
    /// excess; the least recently linked go first. An evicted head is read back from the
    /// store's `chain_heads` when its tenant returns, and its chain goes on from it. Each
    /// eviction and each read-back is counted (`audit_stream_chain_heads_evicted_total`,
    /// `audit_stream_chain_heads_reloaded_total`).
    pub max_heads_per_partition: usize,
    /// A head no record has been linked to for this long, in event time, is evicted once
    /// a durable checkpoint has saved it.
    pub head_idle_ttl_secs: u64,
}

impl Default for ChainConfig {
    fn default() -> Self {
        let limits = crate::chain::HeadLimits::default();
        ChainConfig {
            max_heads_per_partition: limits.max_heads,
            head_idle_ttl_secs: u64::try_from(limits.idle_ttl_ms / 1000).unwrap_or(u64::MAX),
        }
    }
}

impl ChainConfig {
    /// The head limits these settings stand for.
    pub fn limits(&self) -> crate::chain::HeadLimits {
        crate::chain::HeadLimits {
            max_heads: self.max_heads_per_partition,
            idle_ttl_ms: i64::try_from(self.head_idle_ttl_secs)
                .unwrap_or(i64::MAX)
                .saturating_mul(1000),
        }
    }
}

/// Configuration that cannot be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("config file {path} does not exist")]
    Missing { path: PathBuf },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, then the TOML file if given, then `AUDIT_STREAM__*` variables.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with(path, Env::prefixed(ENV_PREFIX).split("__"))
    }

    fn load_with(path: Option<&Path>, env: Env) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError::Missing {
                    path: path.to_path_buf(),
                });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let config: Config = figment
            .merge(env)
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.check()?;
        Ok(config)
    }

    /// Cross-field checks that serde cannot express.
    pub fn check(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let t = &self.topics;
        let mut names: Vec<&str> = t.inputs().into_iter().chain(t.outputs()).collect();
        if names.iter().any(|n| n.is_empty()) {
            return invalid("topic names must not be empty".into());
        }
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return invalid(format!("topic {} is configured twice", w[0]));
        }
        if self.ingest.max_payload_bytes == 0 {
            return invalid("ingest.max_payload_bytes must be positive".into());
        }
        if !(1..=127).contains(&self.ingest.max_nesting_depth) {
            return invalid("ingest.max_nesting_depth must be from 1 to 127".into());
        }
        if !(0.0..=1.0).contains(&self.ingest.dead_letter_alert_ratio) {
            return invalid("ingest.dead_letter_alert_ratio must be from 0 to 1".into());
        }
        if self.ingest.dead_letter_window_secs == 0 {
            return invalid("ingest.dead_letter_window_secs must be positive".into());
        }
        if self.ingest.max_in_flight_records == 0 {
            return invalid("ingest.max_in_flight_records must be positive".into());
        }
        if self.store.batch_max_records == 0 {
            return invalid("store.batch_max_records must be positive".into());
        }
        if self.store.retry_initial_ms == 0 || self.store.retry_max_ms < self.store.retry_initial_ms
        {
            return invalid(
                "store.retry_initial_ms must be positive and not above store.retry_max_ms".into(),
            );
        }
        if self.validation.max_tracked_keys == 0 || self.validation.key_idle_ttl_secs == 0 {
            return invalid(
                "validation.max_tracked_keys and validation.key_idle_ttl_secs must be positive"
                    .into(),
            );
        }
        if self.chain.max_heads_per_partition == 0 || self.chain.head_idle_ttl_secs == 0 {
            return invalid(
                "chain.max_heads_per_partition and chain.head_idle_ttl_secs must be positive"
                    .into(),
            );
        }
        if self.checkpoint.interval_ms == 0 {
            return invalid("checkpoint.interval_ms must be positive".into());
        }
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return invalid("kafka.bootstrap_servers must not be empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn no_env() -> Env {
        Env::prefixed("AUDIT_STREAM_CONFIG_TEST_UNSET__").split("__")
    }

    #[test]
    fn defaults_need_no_file() {
        let config = Config::load_with(None, no_env()).expect("defaults are valid");
        assert_eq!(config.topics.validation, "audit.validation.v1");
        assert_eq!(config.ingest.max_payload_bytes, 1024 * 1024);
        assert_eq!(config.store.kind, StoreKind::Embedded);
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's test jail returns its own error type
    fn file_overrides_defaults_and_environment_overrides_file() {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(
            file,
            "[kafka]\ngroup_id = \"from-file\"\n[topics]\ndlq = \"dead\""
        )
        .unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("AUDIT_STREAM_T__KAFKA__GROUP_ID", "from-env");
            jail.set_env("AUDIT_STREAM_T__KAFKA__PROPERTIES__SASL_USERNAME", "alice");
            let config = Config::load_with(
                Some(file.path()),
                Env::prefixed("AUDIT_STREAM_T__").split("__"),
            )
            .expect("valid");
            assert_eq!(config.kafka.group_id, "from-env");
            assert_eq!(config.topics.dlq, "dead");
            let props: Vec<_> = config.kafka.client_properties().collect();
            assert_eq!(props, vec![("sasl.username".to_string(), "alice")]);
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(file, "[kafka]\nbootstrap_server = \"typo:9092\"").unwrap();
        let err = Config::load_with(Some(file.path()), no_env()).expect_err("typo");
        assert!(err.to_string().contains("bootstrap_server"), "{err}");
    }

    #[test]
    fn a_topic_used_twice_is_rejected() {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(file, "[topics]\ndlq = \"audit.decisions.v1\"").unwrap();
        let err = Config::load_with(Some(file.path()), no_env()).expect_err("duplicate");
        assert!(err.to_string().contains("configured twice"), "{err}");
    }

    #[test]
    fn ingest_limits_out_of_range_are_rejected() {
        for (line, key) in [
            ("max_nesting_depth = 0", "ingest.max_nesting_depth"),
            ("max_nesting_depth = 128", "ingest.max_nesting_depth"),
            (
                "dead_letter_alert_ratio = 1.5",
                "ingest.dead_letter_alert_ratio",
            ),
            (
                "dead_letter_alert_ratio = -0.1",
                "ingest.dead_letter_alert_ratio",
            ),
            (
                "dead_letter_window_secs = 0",
                "ingest.dead_letter_window_secs",
            ),
        ] {
            let mut file = tempfile::NamedTempFile::new().expect("temp file");
            writeln!(file, "[ingest]\n{line}").unwrap();
            let err = Config::load_with(Some(file.path()), no_env()).expect_err(line);
            assert!(err.to_string().contains(key), "{line}: {err}");
        }
    }

    #[test]
    fn exactly_once_takes_a_transactional_id_per_instance() {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(
            file,
            "[kafka]\nexactly_once = true\ngroup_id = \"g\"\ntransactional_id = \"g-0\""
        )
        .unwrap();
        let config = Config::load_with(Some(file.path()), no_env()).expect("accepted");
        assert!(config.kafka.exactly_once);
        assert_eq!(config.kafka.transactional_id(), "g-0");
        let derived = KafkaConfig {
            group_id: "g".into(),
            ..KafkaConfig::default()
        };
        assert!(
            derived.transactional_id().starts_with("g-"),
            "{}",
            derived.transactional_id()
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = Config::load_with(Some(Path::new("/nonexistent/a.toml")), no_env())
            .expect_err("missing");
        assert_eq!(
            err.to_string(),
            "config file /nonexistent/a.toml does not exist"
        );
    }

    #[test]
    fn the_shipped_config_file_documents_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/audit-stream.toml");
        let config = Config::load_with(Some(&path), no_env()).expect("shipped config loads");
        assert_eq!(config, Config::default());
    }

    #[test]
    fn the_shipped_config_file_names_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/audit-stream.toml");
        let text = std::fs::read_to_string(path).expect("shipped config");
        let defaults = serde_json::to_value(Config::default()).expect("serializes");
        let sections = defaults.as_object().expect("sections");
        let mut keys = 0;
        for (section, fields) in sections {
            assert!(
                text.contains(&format!("[{section}]")),
                "section [{section}] missing"
            );
            for key in fields.as_object().expect("fields").keys() {
                let named = text.lines().any(|l| {
                    let l = l.trim_start_matches(['#', ' ']);
                    l.starts_with(&format!("{key} ="))
                        || l.starts_with(&format!("[{section}.{key}]"))
                });
                assert!(
                    named,
                    "{section}.{key} is not documented in config/audit-stream.toml"
                );
                keys += 1;
            }
        }
        assert!(keys > 20, "walked the config keys: {keys}");
    }
}
