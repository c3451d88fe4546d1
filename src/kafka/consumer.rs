//! The input consumer and its rebalance lifecycle.
//!
//! Offsets are never auto-stored: the pipeline stores a partition's offset only when a
//! checkpoint of its operator state is durable, at that checkpoint's `next_offset`
//! (`pipeline::worker`), and librdkafka commits stored offsets every
//! `commit_interval_ms`. A committed offset is therefore never ahead of the partition's
//! latest checkpoint, and every record below it is done (its checkpoint covers only done
//! records). When partitions are revoked, the pipeline saves their latest covered
//! checkpoint and the offsets are committed synchronously inside the rebalance callback,
//! before the partitions move. Rebalance events are forwarded to the consumer loop,
//! which drops the state of revoked partitions before reading on. With
//! `kafka.exactly_once`, auto-commit is off: offsets are committed only inside the
//! producer's transactions, and the revoke hook commits the open one.
//!
//! An assigned partition with a checkpoint starts at its committed offset, which is the
//! checkpoint's offset or, after a crash or a lost assignment between a checkpoint save
//! and the next commit, below it (the consumer loop skips the records the checkpoint
//! already covers, and the checkpoint's offset is stored for the next commit at once):
//! a restore needs no backward seek. Only when the committed offset is missing or ahead of
//! the checkpoint (offsets committed by another release, or a lost checkpoint) is the
//! start offset set in the assignment itself, before the client fetches anything. (A
//! broker must serve a fetch from any offset; Tansu 0.6 does not serve one from inside
//! a record batch, see ARCHITECTURE.md.)

use std::time::Duration;

use chrono::{TimeZone, Utc};
use std::sync::Arc;

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance,
    RebalanceProtocol, StreamConsumer,
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
    /// Partitions are about to be assigned: for each, in order, the `next_offset` of the
    /// checkpoint it was restored from, or `None`. Returns only when the partitions can
    /// be processed.
    fn assigning(&self, partitions: &[TopicPartition]) -> Vec<Option<i64>>;
    /// A restored partition's committed offset is ahead of its checkpoint: it starts at
    /// the checkpoint, and records below `committed` replay.
    fn committed_ahead(&self, partition: &TopicPartition, committed: i64) {
        let _ = (partition, committed);
    }
    /// Partitions are about to be revoked: the offsets to commit before they move (the
    /// `next_offset` of each one's latest durable checkpoint). `group` is the consumer
    /// group's metadata, for committing offsets in a transaction.
    fn revoking(
        &self,
        partitions: &[TopicPartition],
        group: Option<&ConsumerGroupMetadata>,
    ) -> Vec<(TopicPartition, i64)>;
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
                let restored: Vec<(&TopicPartition, i64)> = assigned
                    .iter()
                    .zip(starts)
                    .filter_map(|(tp, start)| Some((tp, start?)))
                    .collect();
                let committed = committed_offsets(consumer, &restored);
                for ((topic, partition), checkpoint) in restored {
                    let committed = committed
                        .as_ref()
                        .and_then(|c| c.find_partition(topic, *partition))
                        .and_then(|e| match e.offset() {
                            Offset::Offset(c) => Some(c),
                            _ => None,
                        });
                    let Some(start) = restored_start(checkpoint, committed) else {
                        continue;
                    };
                    if let Some(c) = committed {
                        tracing::info!(topic, partition, committed = c, checkpoint, "Committed offset ahead of the checkpoint; assigning the partition at the checkpoint");
                        self.hook.committed_ahead(&(topic.clone(), *partition), c);
                    }
                    if let Err(error) =
                        tpl.set_partition_offset(topic, *partition, Offset::Offset(start))
                    {
                        tracing::warn!(%error, topic, partition, "Start offset not set; starting at the committed offset");
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
            // Commit what the latest checkpoints cover before the partitions move on.
            let group = consumer.group_metadata();
            for ((topic, partition), next_offset) in
                self.hook.revoking(&partitions(tpl), group.as_ref())
            {
                // librdkafka commits the stored offset + 1.
                if let Err(error) = consumer.store_offset(&topic, partition, next_offset - 1) {
                    tracing::warn!(%error, topic, partition, "Offset not stored on revoke");
                }
            }
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

/// Where a partition restored from a checkpoint at `checkpoint` starts, given its
/// committed offset: `None` for the committed offset itself, which commits after
/// checkpoints keep at or below the checkpoint (the consumer loop skips what the
/// checkpoint covers); the checkpoint when nothing is committed, or when the committed
/// offset is ahead of it (committed by another release, or the checkpoint was lost):
/// starting there is the only way to rebuild the state exactly.
fn restored_start(checkpoint: i64, committed: Option<i64>) -> Option<i64> {
    match committed {
        Some(c) if c <= checkpoint => None,
        _ => Some(checkpoint),
    }
}

/// The committed offsets of the restored partitions, read from the group coordinator
/// (`None` when the coordinator does not answer: the checkpoint offsets are then used).
fn committed_offsets(
    consumer: &BaseConsumer<AuditConsumerContext>,
    restored: &[(&TopicPartition, i64)],
) -> Option<TopicPartitionList> {
    if restored.is_empty() {
        return None;
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), _) in restored {
        tpl.add_partition(topic, *partition);
    }
    match consumer.committed_offsets(tpl, COMMITTED_TIMEOUT) {
        Ok(committed) => Some(committed),
        Err(error) => {
            tracing::warn!(%error, "Committed offsets not read; assigning restored partitions at their checkpoints");
            None
        }
    }
}

/// How long a partition's next fetch waits while its prefetched records are over the
/// bound (`kafka.prefetch_max_kbytes`).
pub const FETCH_QUEUE_BACKOFF_MS: &str = "10";

/// The `fetch.queue.backoff.ms` to set: ours, unless `kafka.properties` sets one.
fn fetch_queue_backoff(kafka: &KafkaConfig) -> Option<&'static str> {
    let set = kafka
        .client_properties()
        .any(|(name, _)| name == "fetch.queue.backoff.ms");
    (!set).then_some(FETCH_QUEUE_BACKOFF_MS)
}

/// How long an assignment waits for the committed offsets of restored partitions.
const COMMITTED_TIMEOUT: Duration = Duration::from_secs(10);

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
        // With transactions, offsets are committed only inside them.
        .set("enable.auto.commit", (!kafka.exactly_once).to_string())
        // Inputs written in transactions count once they are committed.
        .set("isolation.level", "read_committed")
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
    // Once a partition's prefetched records pass the bound above, librdkafka postpones
    // its next fetch by this long (1 s by default) instead of fetching as soon as the
    // pipeline has taken them: a backlog then came in bursts a second apart, and the
    // pipeline idled between them (BENCHMARKS.md). Kept if set in `kafka.properties`.
    if let Some(backoff) = fetch_queue_backoff(kafka) {
        config.set("fetch.queue.backoff.ms", backoff);
    }
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

    /// Marks every record of the partition up to and including `offset` as covered by a
    /// durable checkpoint; the next commit moves the group's position to `offset + 1`.
    pub fn store_checkpointed(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<(), KafkaError> {
        self.inner.store_offset(topic, partition, offset)
    }

    /// Commits the stored offsets and waits for the broker's answer.
    pub fn commit_stored(&self) -> Result<(), KafkaError> {
        match self.inner.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// The group's metadata, for committing offsets in a transaction.
    pub fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        self.inner.group_metadata()
    }

    /// Leaves the group.
    pub fn unsubscribe(&self) {
        self.inner.unsubscribe();
    }
}

/// How long `run` waits for outstanding acknowledgements at shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::{fetch_queue_backoff, restored_start, FETCH_QUEUE_BACKOFF_MS};
    use crate::config::KafkaConfig;

    #[test]
    fn the_fetch_queue_backoff_is_ours_unless_the_properties_set_one() {
        let mut kafka = KafkaConfig::default();
        assert_eq!(fetch_queue_backoff(&kafka), Some(FETCH_QUEUE_BACKOFF_MS));
        // As from AUDIT_STREAM__KAFKA__PROPERTIES__FETCH_QUEUE_BACKOFF_MS.
        kafka
            .properties
            .insert("fetch_queue_backoff_ms".into(), "1000".into());
        assert_eq!(fetch_queue_backoff(&kafka), None);
    }

    #[test]
    fn a_restored_partition_seeks_only_when_the_committed_offset_cannot_be_used() {
        assert_eq!(restored_start(100, Some(100)), None, "the usual case");
        assert_eq!(
            restored_start(100, Some(90)),
            None,
            "died between a save and its commit: records 90..100 are skipped"
        );
        assert_eq!(
            restored_start(100, None),
            Some(100),
            "nothing committed yet"
        );
        assert_eq!(
            restored_start(100, Some(120)),
            Some(100),
            "committed ahead: replay from the checkpoint"
        );
    }
}
