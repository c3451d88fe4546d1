//! Shared test support: a real Kafka-protocol broker (Tansu) on loopback, unique names,
//! the binary under test, and an output-topic reader.
#![allow(dead_code, unreachable_pub)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The tansu binary: `TANSU_BIN`, as `scripts/install-tools.sh` prints it.
fn tansu_bin() -> PathBuf {
    match std::env::var_os("TANSU_BIN") {
        Some(bin) if Path::new(&bin).is_file() => PathBuf::from(bin),
        _ => panic!(
            "the live tests need the Tansu broker: run `eval \"$(scripts/install-tools.sh)\"` \
             (or scripts/test.sh), which installs it and sets TANSU_BIN"
        ),
    }
}

/// A Tansu broker on a loopback port, killed on drop.
pub struct Tansu {
    child: Child,
    pub port: u16,
    storage: String,
    _dir: tempfile::TempDir,
}

impl Tansu {
    /// Starts a broker with in-memory storage and waits until it accepts connections.
    pub fn start() -> Tansu {
        Tansu::start_with("memory://tansu/")
    }

    /// Starts a broker whose topics and group offsets live in a SQLite file in its
    /// directory, so that they survive [`Tansu::restart`].
    pub fn start_file_backed() -> Tansu {
        Tansu::start_with("sqlite://tansu.db")
    }

    fn start_with(storage: &str) -> Tansu {
        let port = free_port();
        let dir = tempfile::tempdir().expect("temp dir");
        let child = Tansu::spawn(dir.path(), port, storage);
        let broker = Tansu {
            child,
            port,
            storage: storage.to_string(),
            _dir: dir,
        };
        broker.wait_listening();
        broker
    }

    fn spawn(dir: &Path, port: u16, storage: &str) -> Child {
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("tansu.log"))
            .expect("log file");
        Command::new(tansu_bin())
            .current_dir(dir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", storage])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("tansu starts")
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {} within 30 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the broker and starts it again on the same port and storage after `down`.
    pub fn restart(&mut self, down: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down);
        self.child = Tansu::spawn(self._dir.path(), self.port, &self.storage);
        self.wait_listening();
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Creates a topic (with an explicit retention, which some clients read).
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let status = Command::new(tansu_bin())
            .args([
                "topic",
                "create",
                name,
                "--partitions",
                &partitions.to_string(),
            ])
            .args(["--config", "retention.ms=604800000"])
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .stdout(Stdio::null())
            .status()
            .expect("tansu topic create runs");
        assert!(
            status.success(),
            "tansu topic create {name} failed: {status}"
        );
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub mod crash;

/// The audit-stream binary under test.
pub fn audit_stream() -> Command {
    Command::new(env!("CARGO_BIN_EXE_audit-stream"))
}

/// One record read back from a topic.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: serde_json::Value,
}

/// Reads partition 0.. of `topics` from the beginning, without a group, until `expected`
/// records have been read in all or `timeout` passes.
pub fn read_topics(
    bootstrap: &str,
    topics: &[(&str, i32)],
    expected: usize,
    timeout: Duration,
) -> Vec<ReadRecord> {
    read_raw(bootstrap, topics, expected, timeout)
        .into_iter()
        .map(|r| ReadRecord {
            value: serde_json::from_slice(&r.payload).expect("output records are JSON"),
            topic: r.topic,
            partition: r.partition,
            offset: r.offset,
            key: r.key.map(|k| String::from_utf8_lossy(&k).into_owned()),
        })
        .collect()
}

/// As [`read_topics`], with the payloads as they are.
pub fn read_raw(
    bootstrap: &str,
    topics: &[(&str, i32)],
    expected: usize,
    timeout: Duration,
) -> Vec<audit_stream::record::Record> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader consumer");
    let mut tpl = TopicPartitionList::new();
    for (topic, partitions) in topics {
        for p in 0..*partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("partition offset");
        }
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < expected && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            out.push(audit_stream::record::Record {
                topic: m.topic().to_string(),
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().unwrap_or_default().to_vec(),
                // As the service's consumer sees it.
                timestamp: m
                    .timestamp()
                    .to_millis()
                    .and_then(chrono::DateTime::from_timestamp_millis),
            });
        }
    }
    out
}

/// The offsets `group` has committed for partition 0 of each topic (None: nothing).
pub fn committed(bootstrap: &str, group: &str, topics: &[&str]) -> Vec<Option<i64>> {
    let partitions: Vec<(&str, i32)> = topics.iter().map(|t| (*t, 0)).collect();
    committed_partitions(bootstrap, group, &partitions)
}

/// The offsets `group` has committed for each (topic, partition) (None: nothing).
pub fn committed_partitions(
    bootstrap: &str,
    group: &str,
    partitions: &[(&str, i32)],
) -> Vec<Option<i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("offset reader");
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in partitions {
        tpl.add_partition(topic, *partition);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    partitions
        .iter()
        .map(
            |(t, p)| match committed.find_partition(t, *p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            },
        )
        .collect()
}

/// Tansu or librdkafka's mock cluster: `AUDIT_STREAM_TEST_BROKER` (`tansu` | `mock`)
/// overrides each test's default.
pub enum Broker {
    Tansu(Tansu),
    Mock(audit_stream::kafka::mock::EmbeddedKafka),
}

impl Broker {
    pub fn start(default_mock: bool) -> Broker {
        let mock = match std::env::var("AUDIT_STREAM_TEST_BROKER").as_deref() {
            Ok("mock") => true,
            Ok("tansu") => false,
            _ => default_mock,
        };
        if mock {
            Broker::Mock(audit_stream::kafka::mock::EmbeddedKafka::start().expect("mock"))
        } else {
            Broker::Tansu(Tansu::start())
        }
    }

    pub fn bootstrap(&self) -> String {
        match self {
            Broker::Tansu(t) => t.bootstrap(),
            Broker::Mock(m) => m.bootstrap_servers(),
        }
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        match self {
            Broker::Tansu(t) => t.create_topic(name, partitions),
            Broker::Mock(m) => m.create_topic(name, partitions as i32).expect("topic"),
        }
    }
}

/// `kafka` with a producer that puts every record in its own record batch. Tansu 0.6
/// answers a fetch from an offset inside a record batch with the batches after it: a
/// consumer resuming mid-batch (after a restart, a rebalance or a crash) would silently
/// miss the rest of that batch. Tests that resume a partition publish their inputs with
/// this, so every offset starts a batch; real Kafka serves any offset.
pub fn one_record_per_batch(
    kafka: &audit_stream::config::KafkaConfig,
) -> audit_stream::config::KafkaConfig {
    let mut kafka = kafka.clone();
    kafka
        .properties
        .insert("batch.num.messages".into(), "1".into());
    kafka
}

/// Publishes `(key, payload)` pairs to `topic` and returns them as the broker placed
/// them (partition and offset), sorted by partition and offset: an offline oracle run
/// on these sees the same positions the service does.
pub async fn publish_and_place(
    kafka: &audit_stream::config::KafkaConfig,
    topic: &str,
    partitions: i32,
    events: Vec<(String, Vec<u8>)>,
) -> Vec<audit_stream::record::Record> {
    publish_more_and_place(kafka, topic, partitions, 0, events).await
}

/// [`publish_and_place`] on a topic that already holds `already` records: returns every
/// record of the topic, those before and the new ones.
pub async fn publish_more_and_place(
    kafka: &audit_stream::config::KafkaConfig,
    topic: &str,
    partitions: i32,
    already: usize,
    events: Vec<(String, Vec<u8>)>,
) -> Vec<audit_stream::record::Record> {
    use audit_stream::record::Record;
    let count = already + events.len();
    let records: Vec<Record> = events
        .into_iter()
        .enumerate()
        .map(|(i, (key, payload))| Record {
            topic: topic.to_string(),
            partition: 0,
            offset: i as i64,
            key: Some(key.into_bytes()),
            payload,
            timestamp: None,
        })
        .collect();
    audit_stream::produce::publish(kafka, topic, &records)
        .await
        .expect("produce");
    let mut inputs = read_raw(
        &kafka.bootstrap_servers,
        &[(topic, partitions)],
        count,
        Duration::from_secs(60),
    );
    assert_eq!(inputs.len(), count);
    inputs.sort_by_key(|r| (r.partition, r.offset));
    inputs
}
