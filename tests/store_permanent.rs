//! A permanent store error (bad credentials, a missing table) stops the service with
//! that error instead of retrying forever, and commits nothing past it.

use std::sync::Arc;
use std::time::Duration;

use audit_stream::config::Config;
use audit_stream::kafka::mock::EmbeddedKafka;
use audit_stream::pipeline::worker::Shared;
use audit_stream::service::{self, Runtime, ServiceError};
use audit_stream::store::{AuditStore, EmbeddedStore, FaultyStore, StoreError};
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_store_error_stops_the_service_with_that_error() {
    let kafka = EmbeddedKafka::start().expect("mock cluster");
    let mut config = Config::default();
    config.kafka.bootstrap_servers = kafka.bootstrap_servers();
    config.kafka.group_id = "permanent".into();
    for topic in config.topics.inputs() {
        kafka.create_topic(topic, 1).expect("topic");
    }
    for topic in config.topics.outputs() {
        kafka.create_topic(topic, 1).expect("topic");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let recipes = dir.path().join("recipes.yaml");
    std::fs::write(&recipes, audit_stream::demo::SAMPLE_RECIPES).expect("recipes");
    config.recipes.path = Some(recipes);
    let records = audit_stream::demo::sample_records().expect("sample");
    audit_stream::produce::publish(&config.kafka, "sample", &records)
        .await
        .expect("produce");

    let store = Arc::new(FaultyStore::new(EmbeddedStore::in_memory().expect("store")));
    store.faults().set_permanent(true);
    let (_stop, shutdown) = watch::channel(false);
    let runtime = Runtime {
        store: store.clone() as Arc<dyn AuditStore>,
        metrics: None,
        shared: Arc::new(Shared::default()),
        serve_http: false,
    };
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        service::run(config, runtime, shutdown),
    )
    .await
    .expect("the service stops by itself instead of spinning");
    match result {
        Err(ServiceError::Store(StoreError::Permanent(message))) => {
            assert!(!message.is_empty());
        }
        other => panic!("expected the permanent store error, got {other:?}"),
    }
    assert_eq!(store.faults().records_written(), 0);
}
