//! `run`: the service. Wires the store, the sink, the recipes, the HTTP port and the
//! live pipeline, and stops them in order on SIGTERM or SIGINT.

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

use crate::config::{Config, StoreKind};
use crate::gate::GatePolicy;
use crate::http::{self, AppState};
use crate::pipeline::recipe_source::{self, RecipeLoadError};
use crate::pipeline::sink::Sink;
use crate::pipeline::worker::{PipelineError, RunStats, Shared, Worker};
use crate::pipeline::Operator;
use crate::schema::SchemaError;
use crate::store::{AuditStore, EmbeddedStore, ScyllaStore, StoreError};
use crate::validation::Recipes;

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Recipes(#[from] RecipeLoadError),
    #[error("schemas: {0}")]
    Schema(#[from] SchemaError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Pipeline(#[from] PipelineError),
    #[error("kafka: {0}")]
    Kafka(#[from] crate::kafka::KafkaError),
    #[error("http {listen}: {source}")]
    Http {
        listen: String,
        source: std::io::Error,
    },
}

/// Opens the configured store.
pub async fn open_store(config: &Config) -> Result<Arc<dyn AuditStore>, StoreError> {
    match config.store.kind {
        StoreKind::Embedded => Ok(Arc::new(EmbeddedStore::open(&config.store.embedded_path)?)),
        StoreKind::Scylla => Ok(Arc::new(ScyllaStore::connect(&config.store.scylla).await?)),
    }
}

/// The gate policy of a configuration.
pub fn gate_policy(config: &Config) -> GatePolicy {
    GatePolicy {
        freshness: chrono::Duration::seconds(
            i64::try_from(config.gate.freshness_secs).unwrap_or(i64::MAX / 1_000_000),
        ),
    }
}

/// Everything `run` needs besides the configuration.
pub struct Runtime {
    pub store: Arc<dyn AuditStore>,
    pub metrics: Option<PrometheusHandle>,
    pub shared: Arc<Shared>,
    /// Serve HTTP on `config.http.listen`.
    pub serve_http: bool,
}

/// Runs the service until `shutdown` turns true.
pub async fn run(
    config: Config,
    runtime: Runtime,
    shutdown: watch::Receiver<bool>,
) -> Result<RunStats, ServiceError> {
    let (recipes, reloader) = match config.recipes.path.clone() {
        Some(path) => {
            let interval = Duration::from_millis(config.recipes.reload_interval_ms.max(100));
            let (rx, task) = recipe_source::watch(path, interval)?;
            (rx, Some(task))
        }
        None => (watch::channel(Arc::new(Recipes::default())).1, None),
    };
    let operator = Arc::new(Operator::new(&config)?);
    let (sink, sink_task) = Sink::spawn(
        runtime.store.clone(),
        config.store.retry_policy(),
        config.store.batch_max_records,
        config.ingest.max_in_flight_records + 1,
    );
    let http_task = if runtime.serve_http {
        let listener = tokio::net::TcpListener::bind(&config.http.listen)
            .await
            .map_err(|source| ServiceError::Http {
                listen: config.http.listen.clone(),
                source,
            })?;
        let state = AppState {
            store: runtime.store.clone(),
            shared: runtime.shared.clone(),
            metrics: runtime.metrics.clone(),
            gate: gate_policy(&config),
        };
        let mut stop = shutdown.clone();
        Some(tokio::spawn(http::serve(listener, state, async move {
            let _ = stop.wait_for(|s| *s).await;
        })))
    } else {
        None
    };

    let worker = Worker::new(
        config,
        operator,
        sink,
        recipes,
        runtime.shared.clone(),
        runtime.store.clone(),
    )?;
    let result = worker.run(shutdown).await;
    if let Some(task) = reloader {
        task.abort();
    }
    if let Some(task) = http_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    match result {
        Ok(stats) => Ok(stats),
        Err(PipelineError::Sink(_)) => match sink_task.await {
            // The sink ended with a permanent store error: report that, not the symptom.
            Ok(Err(error)) => Err(ServiceError::Store(error)),
            _ => Err(ServiceError::Pipeline(PipelineError::Sink(
                crate::pipeline::sink::SinkClosed,
            ))),
        },
        Err(PipelineError::Store(error)) => Err(ServiceError::Store(error)),
        Err(error) => Err(error.into()),
    }
}

/// Turns SIGTERM and SIGINT into `true` on the returned channel.
pub fn shutdown_on_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate => {}
        }
        tracing::info!("Shutdown requested; draining in-flight records");
        let _ = tx.send(true);
    });
    rx
}
