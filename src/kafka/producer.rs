//! The output producer: decisions, verdicts and dead letters.
//!
//! Idempotent (`enable.idempotence`), `acks=all`: a retried send never duplicates or
//! reorders within a partition. Outputs are enqueued in record order from the consumer
//! loop; their acknowledgements are awaited elsewhere.
//!
//! With `kafka.exactly_once` the producer is transactional: outputs are written inside a
//! transaction that is committed together with the input offsets they cover
//! ([`OutputProducer::commit_transaction`]), and a new one is begun at once.

use std::time::Duration;

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::Timeout;

use crate::config::KafkaConfig;
use crate::metrics;
use crate::pipeline::offsets::TopicPartition;
use crate::pipeline::Publication;

/// How long a transaction call (init, send offsets, commit, abort) may take.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// Producer of output events.
#[derive(Clone)]
pub struct OutputProducer {
    inner: FutureProducer,
    transactional: bool,
}

impl OutputProducer {
    pub fn new(kafka: &KafkaConfig) -> Result<OutputProducer, KafkaError> {
        let mut config = output_config(kafka);
        config.set("enable.idempotence", "true");
        Ok(OutputProducer {
            inner: config.create()?,
            transactional: false,
        })
    }

    /// A transactional producer with `transactional_id`: fences any earlier producer
    /// with that id (aborting its open transaction) and begins the first transaction.
    /// Blocks for the broker's answers.
    pub fn transactional(
        kafka: &KafkaConfig,
        transactional_id: &str,
    ) -> Result<OutputProducer, KafkaError> {
        // Transactional implies idempotent.
        let mut config = output_config(kafka);
        config.set("transactional.id", transactional_id);
        let inner: FutureProducer = config.create()?;
        inner.init_transactions(TRANSACTION_TIMEOUT)?;
        inner.begin_transaction()?;
        tracing::info!(transactional_id, "Transactional producer ready");
        Ok(OutputProducer {
            inner,
            transactional: true,
        })
    }

    pub fn is_transactional(&self) -> bool {
        self.transactional
    }

    /// Commits the open transaction with the consumer group's input `offsets` (each the
    /// next offset to read), then begins the next one. Waits until every output of the
    /// transaction is acknowledged, so it blocks the calling thread. An error (also: no
    /// group metadata, the consumer is not in its group) leaves the transaction
    /// uncommitted: the caller stops, and the next start of this transactional id
    /// aborts it.
    pub fn commit_transaction(
        &self,
        offsets: &[(TopicPartition, i64)],
        group: Option<&ConsumerGroupMetadata>,
    ) -> Result<(), KafkaError> {
        let group = group.ok_or_else(|| {
            KafkaError::Subscription(
                "no consumer group metadata to commit the transaction with".into(),
            )
        })?;
        if !offsets.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for ((topic, partition), next) in offsets {
                tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
            }
            self.inner
                .send_offsets_to_transaction(&tpl, group, TRANSACTION_TIMEOUT)?;
        }
        self.inner.commit_transaction(TRANSACTION_TIMEOUT)?;
        metrics::transaction_committed(offsets.len());
        self.inner.begin_transaction()
    }

    /// Aborts the open transaction (on the way out after an error); its outputs are
    /// never seen by `read_committed` consumers.
    pub fn abort_transaction(&self) {
        match self.inner.abort_transaction(TRANSACTION_TIMEOUT) {
            Ok(()) => tracing::info!("Open transaction aborted"),
            Err(error) => {
                tracing::warn!(%error, "Abort failed; the next start of this transactional id aborts the transaction")
            }
        }
    }

    /// Enqueues one record; waits while librdkafka's local queue is full. The returned
    /// future resolves on the broker's acknowledgement or a delivery error.
    pub async fn enqueue(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        timestamp_ms: Option<i64>,
    ) -> Result<DeliveryFuture, KafkaError> {
        loop {
            let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(payload);
            if let Some(key) = key {
                record = record.key(key);
            }
            if let Some(ts) = timestamp_ms {
                record = record.timestamp(ts);
            }
            match self.inner.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((error, _)) => return Err(error),
            }
        }
    }

    /// Enqueues an output; see [`OutputProducer::enqueue`].
    pub async fn enqueue_publication(
        &self,
        publication: &Publication,
    ) -> Result<DeliveryFuture, KafkaError> {
        self.enqueue(
            &publication.topic,
            publication.key.as_deref().map(str::as_bytes),
            &publication.payload,
            None,
        )
        .await
    }

    /// Sends `publication` and waits until the broker acknowledges it, sending again
    /// after a delivery error (the idempotent producer makes a resend harmless).
    /// Returns an error only when the producer hit a fatal error.
    pub async fn deliver(
        &self,
        publication: &Publication,
        role: &'static str,
        first: DeliveryFuture,
    ) -> Result<(), KafkaError> {
        let mut pending = first;
        loop {
            let error = match pending.await {
                Ok(Ok(_)) => {
                    metrics::output_acknowledged(role);
                    return Ok(());
                }
                Ok(Err((error, _message))) => error,
                Err(_canceled) => KafkaError::Canceled,
            };
            if self.transactional {
                // A failed delivery makes the transaction abortable: a resend cannot go
                // into it. The service stops; its restart replays from the last commit.
                metrics::output_delivery_failed(role, &error);
                return Err(error);
            }
            if let Some((code, reason)) = self.inner.client().fatal_error() {
                return Err(KafkaError::MessageProduction(code)).inspect_err(|_| {
                    tracing::error!(%reason, "Producer hit a fatal error");
                });
            }
            metrics::output_delivery_failed(role, &error);
            tokio::time::sleep(Duration::from_millis(100)).await;
            pending = self.enqueue_publication(publication).await?;
        }
    }

    /// Waits until every enqueued record is acknowledged or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.inner.flush(Timeout::After(timeout))
    }
}

/// What every output producer sets: acknowledged by every in-sync replica, batched
/// briefly and compressed.
fn output_config(kafka: &KafkaConfig) -> rdkafka::ClientConfig {
    let mut config = super::base_config(kafka);
    config
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4");
    config
}

/// Publishes input records (the `produce` command): keys and timestamps as given,
/// idempotent, `acks=all`.
pub struct RecordPublisher {
    inner: OutputProducer,
}

impl RecordPublisher {
    pub fn new(kafka: &KafkaConfig) -> Result<RecordPublisher, KafkaError> {
        Ok(RecordPublisher {
            inner: OutputProducer::new(kafka)?,
        })
    }

    /// Enqueues one record; the future resolves to its partition and offset once the
    /// broker acknowledges it.
    pub async fn publish(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        timestamp_ms: Option<i64>,
    ) -> Result<impl std::future::Future<Output = Result<(i32, i64), KafkaError>>, KafkaError> {
        let delivery = self
            .inner
            .enqueue(topic, key, payload, timestamp_ms)
            .await?;
        Ok(async move {
            match delivery.await {
                Ok(Ok(delivery)) => Ok((delivery.partition, delivery.offset)),
                Ok(Err((error, _))) => Err(error),
                Err(_) => Err(KafkaError::Canceled),
            }
        })
    }

    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.inner.flush(timeout)
    }
}
