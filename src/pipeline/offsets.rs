//! Which input offsets may be committed (SPEC §6).
//!
//! Guarantee: the offset stored for a partition never passes a record that is not yet
//! done, where done means every output derived from it is acknowledged by the broker
//! and every audit record derived from it is durable in the store. Records complete out
//! of order (a later record with no outputs is done at once); the watermark only moves
//! over a contiguous run of done records, so a crash at any point replays from the
//! first record that is not done, and deterministic ids make the replay harmless.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

/// One input partition.
pub type TopicPartition = (String, i32);

#[derive(Debug, Default)]
struct PartitionOffsets {
    /// Offsets read and not yet passed by the watermark, ascending, with a done flag.
    pending: VecDeque<(i64, bool)>,
}

/// Tracks read and done offsets of every assigned partition.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<TopicPartition, PartitionOffsets>,
    in_flight: usize,
}

impl OffsetTracker {
    pub fn new() -> OffsetTracker {
        OffsetTracker::default()
    }

    /// A record was read. Offsets of one partition must be tracked in ascending order.
    pub fn track(&mut self, tp: &TopicPartition, offset: i64) {
        let p = self.partitions.entry(tp.clone()).or_default();
        debug_assert!(p.pending.back().is_none_or(|(o, _)| *o < offset));
        p.pending.push_back((offset, false));
        self.in_flight += 1;
    }

    /// A record is done. Returns the new watermark (the last offset through which
    /// every record is done) when it moved.
    pub fn complete(&mut self, tp: &TopicPartition, offset: i64) -> Option<i64> {
        let p = self.partitions.get_mut(tp)?;
        let index = p.pending.binary_search_by_key(&offset, |(o, _)| *o).ok()?;
        if p.pending[index].1 {
            return None;
        }
        p.pending[index].1 = true;
        self.in_flight -= 1;
        let mut watermark = None;
        while let Some(&(o, true)) = p.pending.front() {
            watermark = Some(o);
            p.pending.pop_front();
        }
        watermark
    }

    /// Records read and not yet done, over all partitions.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Records of one partition read and not yet done.
    pub fn in_flight_of(&self, tp: &TopicPartition) -> usize {
        self.partitions
            .get(tp)
            .map_or(0, |p| p.pending.iter().filter(|(_, done)| !done).count())
    }

    /// The partition was revoked: forget it. Completions that arrive later are ignored.
    pub fn revoke(&mut self, tp: &TopicPartition) {
        if let Some(p) = self.partitions.remove(tp) {
            self.in_flight -= p.pending.iter().filter(|(_, done)| !done).count();
        }
    }
}

/// Where each assigned partition stands, shared by the consumer loop (which reads and
/// processes records), the per-record tasks (which complete them) and the rebalance
/// callbacks (which wait for a revoked partition's records before checkpointing it).
#[derive(Default)]
pub struct Progress {
    inner: Mutex<ProgressInner>,
    /// Signalled whenever a record completes.
    completed: Notify,
}

#[derive(Default)]
struct ProgressInner {
    tracker: OffsetTracker,
    /// The next offset to process per partition.
    positions: HashMap<TopicPartition, i64>,
    /// With transactions: the partition's outputs below this offset are already in a
    /// committed transaction (a restore replays them to rebuild state, unpublished).
    published_through: HashMap<TopicPartition, i64>,
}

impl ProgressInner {
    /// Whether `offset` is at or past what a committed transaction holds of `tp`.
    fn publishes(&self, tp: &TopicPartition, offset: i64) -> bool {
        self.published_through
            .get(tp)
            .is_none_or(|&through| offset >= through)
    }
}

impl Progress {
    fn lock(&self) -> MutexGuard<'_, ProgressInner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A partition was assigned, restored at `position` when it had a checkpoint.
    pub fn assigned(
        &self,
        tp: &TopicPartition,
        position: Option<i64>,
        published_through: Option<i64>,
    ) {
        let mut inner = self.lock();
        match position {
            Some(position) => inner.positions.insert(tp.clone(), position),
            None => inner.positions.remove(tp),
        };
        match published_through {
            Some(offset) => inner.published_through.insert(tp.clone(), offset),
            None => inner.published_through.remove(tp),
        };
    }

    /// A record was read. Returns `None`, and tracks nothing, for a record below the
    /// partition's position: the client handed it out again, or a restored checkpoint
    /// already covers it; processing it twice would count its failures twice. Otherwise
    /// whether its outputs are to be published (false for records a committed
    /// transaction already published).
    pub fn start(&self, tp: &TopicPartition, offset: i64) -> Option<bool> {
        let mut inner = self.lock();
        if inner.positions.get(tp).is_some_and(|&next| offset < next) {
            return None;
        }
        inner.positions.insert(tp.clone(), offset + 1);
        inner.tracker.track(tp, offset);
        Some(inner.publishes(tp, offset))
    }

    /// A record is done. When the partition's watermark moves (see
    /// [`OffsetTracker::complete`]), `moved` runs with it, still under this lock, so
    /// that watermarks are reported in order and never for a revoked partition.
    pub fn complete(&self, tp: &TopicPartition, offset: i64, moved: impl FnOnce(i64)) {
        {
            let mut inner = self.lock();
            if let Some(watermark) = inner.tracker.complete(tp, offset) {
                moved(watermark);
            }
        }
        self.completed.notify_waiters();
    }

    /// Records read and not yet done, over all partitions.
    pub fn in_flight(&self) -> usize {
        self.lock().tracker.in_flight()
    }

    /// The next offset to process of `tp`, once it has a position.
    pub fn position(&self, tp: &TopicPartition) -> Option<i64> {
        self.lock().positions.get(tp).copied()
    }

    /// The input offsets a transaction commits: each partition's position, except where
    /// it is still below what an earlier transaction committed (a commit never moves an
    /// offset back).
    pub fn transaction_offsets(&self) -> Vec<(TopicPartition, i64)> {
        let inner = self.lock();
        let mut offsets: Vec<(TopicPartition, i64)> = inner
            .positions
            .iter()
            .filter(|(tp, &position)| inner.publishes(tp, position))
            .map(|(tp, &position)| (tp.clone(), position))
            .collect();
        offsets.sort();
        offsets
    }

    /// Waits until no record of `partitions` is in flight.
    pub async fn drained(&self, partitions: &[TopicPartition]) {
        loop {
            let completed = self.completed.notified();
            tokio::pin!(completed);
            completed.as_mut().enable();
            {
                let inner = self.lock();
                if partitions
                    .iter()
                    .all(|tp| inner.tracker.in_flight_of(tp) == 0)
                {
                    return;
                }
            }
            completed.await;
        }
    }

    /// The partition is gone: forget it.
    pub fn revoke(&self, tp: &TopicPartition) {
        let mut inner = self.lock();
        inner.tracker.revoke(tp);
        inner.positions.remove(tp);
        inner.published_through.remove(tp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tp() -> TopicPartition {
        ("in".to_string(), 0)
    }

    #[test]
    fn watermark_waits_for_the_oldest_record() {
        let mut t = OffsetTracker::new();
        for o in [10, 11, 12] {
            t.track(&tp(), o);
        }
        assert_eq!(t.complete(&tp(), 12), None, "11 and 10 are not done");
        assert_eq!(t.complete(&tp(), 11), None, "10 is not done");
        assert_eq!(t.complete(&tp(), 10), Some(12));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn a_revoked_partition_ignores_late_completions() {
        let mut t = OffsetTracker::new();
        t.track(&tp(), 1);
        t.track(&tp(), 2);
        t.revoke(&tp());
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.complete(&tp(), 1), None);
    }

    #[test]
    fn completing_twice_counts_once() {
        let mut t = OffsetTracker::new();
        t.track(&tp(), 5);
        t.track(&tp(), 6);
        assert_eq!(t.complete(&tp(), 6), None);
        assert_eq!(t.complete(&tp(), 6), None);
        assert_eq!(t.in_flight(), 1);
    }

    #[tokio::test]
    async fn progress_skips_covered_records_and_waits_for_a_partition_to_drain() {
        let progress = std::sync::Arc::new(Progress::default());
        progress.assigned(&tp(), Some(10), None);
        assert_eq!(
            progress.start(&tp(), 9),
            None,
            "covered by the restored checkpoint"
        );
        assert_eq!(progress.start(&tp(), 10), Some(true));
        assert_eq!(progress.start(&tp(), 11), Some(true));
        assert_eq!(progress.start(&tp(), 11), None, "handed out again");
        assert_eq!(progress.position(&tp()), Some(12));
        let other = ("in".to_string(), 1);
        assert_eq!(progress.start(&other, 0), Some(true));

        let waiter = tokio::spawn({
            let progress = progress.clone();
            async move { progress.drained(&[tp()]).await }
        });
        tokio::task::yield_now().await;
        let mut moved = Vec::new();
        progress.complete(&tp(), 11, |w| moved.push(w));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "record 10 is still in flight");
        progress.complete(&tp(), 10, |w| moved.push(w));
        assert_eq!(
            moved,
            vec![11],
            "the watermark moves over 10 and 11 at once"
        );
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("drained once the partition's records are done")
            .unwrap();
        assert_eq!(
            progress.in_flight(),
            1,
            "the other partition is not waited for"
        );
    }

    #[test]
    fn transactions_never_commit_an_offset_below_a_committed_one() {
        let progress = Progress::default();
        let other = ("in".to_string(), 1);
        progress.assigned(&tp(), Some(100), Some(140));
        progress.assigned(&other, Some(5), None);
        assert_eq!(
            progress.start(&tp(), 100),
            Some(false),
            "a committed transaction holds its outputs"
        );
        assert_eq!(
            progress.transaction_offsets(),
            vec![(other.clone(), 5)],
            "partition 0 replays below what a transaction committed"
        );
        for offset in 101..140 {
            assert_eq!(progress.start(&tp(), offset), Some(false));
        }
        assert_eq!(progress.start(&tp(), 140), Some(true));
        assert_eq!(
            progress.transaction_offsets(),
            vec![(tp(), 141), (other, 5)]
        );
    }

    proptest! {
        /// The watermark is always the largest offset o with every tracked offset <= o done.
        #[test]
        fn watermark_never_passes_a_record_that_is_not_done(
            gaps in proptest::collection::vec(1i64..4, 1..60),
            order in proptest::collection::vec(any::<prop::sample::Index>(), 1..60),
        ) {
            let mut t = OffsetTracker::new();
            let mut offsets = Vec::new();
            let mut o = 0;
            for g in gaps { o += g; offsets.push(o); t.track(&tp(), o); }
            let mut done = vec![false; offsets.len()];
            let mut last_watermark = None;
            for idx in order {
                let i = idx.index(offsets.len());
                let moved = t.complete(&tp(), offsets[i]);
                done[i] = true;
                let expected = offsets.iter().zip(&done).take_while(|(_, d)| **d).last().map(|(o, _)| *o);
                if let Some(w) = moved { last_watermark = Some(w); }
                prop_assert_eq!(last_watermark, expected);
                prop_assert_eq!(t.in_flight(), done.iter().filter(|d| !**d).count());
            }
        }
    }
}
