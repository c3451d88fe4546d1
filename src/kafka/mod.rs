//! Kafka: the consumer (with its rebalance lifecycle) and the producer. Nothing else in
//! the crate uses rdkafka.

pub mod consumer;
pub mod mock;
pub mod producer;

pub use rdkafka::consumer::ConsumerGroupMetadata;
pub use rdkafka::error::KafkaError;
use rdkafka::ClientConfig;

use crate::config::KafkaConfig;

/// Settings both clients share: brokers and the pass-through properties (security).
fn base_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.bootstrap_servers);
    for (key, value) in kafka.client_properties() {
        config.set(key, value);
    }
    config
}
