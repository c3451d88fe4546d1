//! An in-process Kafka cluster (librdkafka's mock cluster) for `demo` and tests.

use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

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
}
