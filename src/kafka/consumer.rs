//! The input consumer and its rebalance lifecycle.
//!
//! Offsets are never auto-stored: the pipeline stores an offset only when every record
//! up to it is done (`pipeline::offsets`), and librdkafka commits stored offsets every
//! `commit_interval_ms`. When partitions are revoked, the stored offsets are committed
//! synchronously inside the rebalance callback, before the partitions move, so the next
//! owner starts right after the last done record. Rebalance events are forwarded to the
//! consumer loop, which drops the state of revoked partitions before reading on.
//!
//! Assigned partitions start where the pipeline's [`RebalanceHook`] says (the offset of
//! a restored checkpoint), else at the committed offset. The start offset is set in the
//! assignment itself, before the client fetches anything: no record from another
//! position is ever handed out, and no seek is needed (a seek races the fetcher, and
//! some Kafka-protocol brokers answer it poorly).

use std::time::Duration;

use chrono::{TimeZone, Utc};
use std::sync::Arc;

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol,
    StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;
use tokio::sync::mpsc;

use crate::config::KafkaConfig;
use crate::metrics;
use crate::pipeline::offsets::TopicPartition;
use crate::record::Record;

/// A change of the partitions this member owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    Assigned(Vec<TopicPartition>),
    Revoked(Vec<TopicPartition>),
}

/// What the pipeline does when partitions come and go. Both run inside the client's
/// rebalance callback, on the thread polling the consumer.
pub trait RebalanceHook: Send + Sync + 'static {
    /// Partitions are about to be assigned: the offset each starts at, in order, or
    /// `None` for the committed offset. Returns only when the partitions can be processed.
    fn assigning(&self, partitions: &[TopicPartition]) -> Vec<Option<i64>>;
    /// Partitions are about to be revoked, before their offsets are committed.
    fn revoking(&self, partitions: &[TopicPartition]);
}

/// Consumer context: forwards rebalances, sets start offsets on assign and commits on
/// revoke.
pub struct AuditConsumerContext {
    events: mpsc::UnboundedSender<Assignment>,
    hook: Arc<dyn RebalanceHook>,
    /// Input topic → its kind, the metric label of its lag.
    kinds: Vec<(String, &'static str)>,
}

impl ClientContext for AuditConsumerContext {
    /// Consumer lag per assigned partition, from librdkafka's statistics: the high
    /// watermark minus the offset stored for commit (the records not yet done).
    fn stats(&self, statistics: Statistics) {
        let mut total = 0;
        for (topic, t) in &statistics.topics {
            let Some(kind) = self
                .kinds
                .iter()
                .find(|(name, _)| name == topic)
                .map(|(_, k)| *k)
            else {
                continue;
            };
            for (partition, p) in &t.partitions {
                // -1 is librdkafka's internal "unassigned" partition.
                if *partition < 0 || !p.desired || p.consumer_lag_stored < 0 {
                    continue;
                }
                metrics::consumer_lag(kind, *partition, p.consumer_lag_stored);
                total += p.consumer_lag_stored;
            }
        }
        if total == 0 {
            metrics::consumer_caught_up();
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_string(), e.partition()))
        .collect()
}

impl ConsumerContext for AuditConsumerContext {
    /// librdkafka's default rebalance, with the start offsets of assigned partitions set
    /// from the hook before they are assigned.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let assigned = partitions(tpl);
                let starts = self.hook.assigning(&assigned);
                for ((topic, partition), start) in assigned.iter().zip(starts) {
                    if let Some(offset) = start {
                        if let Err(error) =
                            tpl.set_partition_offset(topic, *partition, Offset::Offset(offset))
                        {
                            tracing::warn!(%error, topic, partition, "Start offset not set; starting at the committed offset");
                        }
                    }
                }
                let result = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(error) = result {
                    tracing::error!(%error, "Assignment failed");
                }
                self.post_rebalance(consumer, &Rebalance::Assign(tpl));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.pre_rebalance(consumer, &Rebalance::Revoke(tpl));
                let result = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(error) = result {
                    tracing::warn!(%error, "Unassignment failed");
                }
            }
            other => {
                let error = KafkaError::Rebalance(other.into());
                self.post_rebalance(consumer, &Rebalance::Error(error));
            }
        }
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.hook.revoking(&partitions(tpl));
            // Commit what is done before the partitions move on.
            match consumer.commit_consumer_state(CommitMode::Sync) {
                Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
                Err(error) => {
                    tracing::warn!(%error, "Commit on revoke failed; the next owner replays from the last commit")
                }
            }
            let revoked = partitions(tpl);
            tracing::info!(partitions = ?revoked, "Partitions revoked");
            let _ = self.events.send(Assignment::Revoked(revoked));
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let assigned = partitions(tpl);
                tracing::info!(partitions = ?assigned, "Partitions assigned");
                let _ = self.events.send(Assignment::Assigned(assigned));
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(error) => tracing::warn!(%error, "Rebalance error"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        match result {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(error) => {
                tracing::warn!(%error, "Offset commit failed; retried on the next interval")
            }
        }
    }
}

/// The group consumer of the input topics.
pub struct InputConsumer {
    inner: StreamConsumer<AuditConsumerContext>,
}

/// Creates the group consumer and subscribes it to `topics`. Returns the channel on
/// which assignment changes arrive.
pub fn subscribe(
    kafka: &KafkaConfig,
    topics: &[(&str, &'static str)],
    hook: Arc<dyn RebalanceHook>,
) -> Result<(InputConsumer, mpsc::UnboundedReceiver<Assignment>), KafkaError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut config = super::base_config(kafka);
    config
        .set("group.id", &kafka.group_id)
        .set("partition.assignment.strategy", &kafka.assignment_strategy)
        .set("session.timeout.ms", kafka.session_timeout_ms.to_string())
        .set("auto.offset.reset", &kafka.auto_offset_reset)
        .set("enable.auto.commit", "true")
        .set(
            "auto.commit.interval.ms",
            kafka.commit_interval_ms.to_string(),
        )
        // Offsets are stored by the pipeline, only for done records.
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        // Backpressure stops pulling records; these bound what the client prefetches
        // meanwhile and how long it may go unpolled before leaving the group.
        .set(
            "max.poll.interval.ms",
            kafka.max_poll_interval_ms.to_string(),
        )
        .set(
            "queued.max.messages.kbytes",
            kafka.prefetch_max_kbytes.to_string(),
        )
        // Consumer lag metrics come from the client's statistics.
        .set(
            "statistics.interval.ms",
            kafka.statistics_interval_ms.to_string(),
        );
    let kinds = topics.iter().map(|(t, k)| (t.to_string(), *k)).collect();
    let inner: StreamConsumer<AuditConsumerContext> =
        config.create_with_context(AuditConsumerContext {
            events: tx,
            hook,
            kinds,
        })?;
    let names: Vec<&str> = topics.iter().map(|(t, _)| *t).collect();
    inner.subscribe(&names)?;
    Ok((InputConsumer { inner }, rx))
}

impl InputConsumer {
    /// The next record of any assigned, unpaused partition. Rebalance callbacks run
    /// inside this call.
    pub async fn recv(&self) -> Result<Record, KafkaError> {
        let message = self.inner.recv().await?;
        Ok(Record {
            topic: message.topic().to_string(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().unwrap_or_default().to_vec(),
            timestamp: message
                .timestamp()
                .to_millis()
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
        })
    }

    /// Marks every record of the partition up to and including `offset` as done; the
    /// next commit moves the group's position to `offset + 1`.
    pub fn store_done(&self, topic: &str, partition: i32, offset: i64) -> Result<(), KafkaError> {
        self.inner.store_offset(topic, partition, offset)
    }

    /// Commits the stored offsets and waits for the broker's answer.
    pub fn commit_stored(&self) -> Result<(), KafkaError> {
        match self.inner.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Leaves the group.
    pub fn unsubscribe(&self) {
        self.inner.unsubscribe();
    }
}

/// How long `run` waits for outstanding acknowledgements at shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
