//! An in-process Kafka cluster (librdkafka's mock cluster) for `demo` and tests.

use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

/// A running in-process cluster; stops when dropped.
pub struct EmbeddedKafka {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl EmbeddedKafka {
    /// Starts a one-broker cluster.
    pub fn start() -> Result<EmbeddedKafka, KafkaError> {
        Ok(EmbeddedKafka {
            cluster: MockCluster::new(1)?,
        })
    }

    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), KafkaError> {
        self.cluster.create_topic(name, partitions, 1)
    }

    /// Answers the next `count` transaction commits (`EndTxn`) with "producer fenced":
    /// what a producer sees once another one with its transactional id has started.
    pub fn fence_transaction_commits(&self, count: usize) {
        self.cluster.request_errors(
            RDKafkaApiKey::EndTxn,
            &vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED; count],
        );
    }
}
