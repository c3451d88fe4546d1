//! Operator-state checkpoints: when a partition's state is snapshotted and when a
//! snapshot may be saved (SPEC §6).
//!
//! Guarantee: a saved checkpoint `{next_offset, state}` holds exactly the state after
//! every record below `next_offset` and no record after it, and every output of those
//! records is durable in the store and acknowledged by the broker. Preconditions, kept
//! by the consumer loop:
//! - a snapshot is taken in the consumer loop between two records: records of a
//!   partition are processed in that one task, in order, so at that moment the state
//!   covers exactly the records below the partition's position;
//! - every move of the offset tracker's watermark is reported here ([`Schedule::advance`]).
//!
//! A snapshot is held until the watermark reaches `next_offset - 1`, then saved. At
//! most one save per partition is in flight; a failed one is tried again on the next
//! interval (the store keeps only checkpoints that move forward, so a late or repeated
//! save never moves a partition back).

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use super::offsets::TopicPartition;
use super::PartitionState;
use crate::chain::ChainHead;

/// A partition's state at a record boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The first offset not covered: every record below it is in `state`.
    pub next_offset: i64,
    /// JSON of the partition's `PartitionState`.
    pub state: Vec<u8>,
    /// The heads of the partition's hash chains in `state`, saved after the checkpoint.
    pub heads: Vec<ChainHead>,
}

impl Snapshot {
    /// The partition's state as it is now, at `position` (taken between two records).
    pub fn of(state: &Mutex<PartitionState>, position: i64) -> Snapshot {
        let state = state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Snapshot {
            next_offset: position,
            // Plain structs with string keys: serializing cannot fail.
            state: serde_json::to_vec(&*state).expect("operator state serializes to JSON"),
            heads: state.chains.heads().cloned().collect(),
        }
    }
}

#[derive(Debug, Default)]
struct PartitionSchedule {
    /// Taken, waiting for the watermark to reach it.
    held: Option<Snapshot>,
    /// Covered by the watermark, not yet saved.
    ready: Option<Snapshot>,
    /// `next_offset` of the save in flight.
    saving: Option<i64>,
    /// The last offset through which every record is done.
    watermark: Option<i64>,
    /// `next_offset` of the latest snapshot taken or restored.
    taken: Option<i64>,
    /// The state changed since that snapshot with no record processed (chain heads
    /// evicted): the next one is taken even at the same position.
    changed: bool,
    /// The last durable checkpoint: its `next_offset` and when it was saved.
    durable: Option<(i64, DateTime<Utc>)>,
}

/// Checkpoint scheduling of every assigned partition. No clock, no I/O: the consumer
/// loop asks on every interval tick and performs the effects.
#[derive(Debug, Default)]
pub struct Schedule {
    partitions: HashMap<TopicPartition, PartitionSchedule>,
}

impl Schedule {
    pub fn new() -> Schedule {
        Schedule::default()
    }

    /// The partition resumes from a checkpoint saved at `saved_at`: records below
    /// `next_offset` are in its state and done.
    pub fn restored(&mut self, tp: &TopicPartition, next_offset: i64, saved_at: DateTime<Utc>) {
        let p = self.partitions.entry(tp.clone()).or_default();
        *p = PartitionSchedule {
            watermark: Some(next_offset - 1),
            taken: Some(next_offset),
            durable: Some((next_offset, saved_at)),
            ..PartitionSchedule::default()
        };
    }

    /// Whether to snapshot the partition now that its position (next offset to process)
    /// is `position`: something was processed since the last snapshot, and no earlier
    /// snapshot still waits for the watermark.
    pub fn wants_snapshot(&self, tp: &TopicPartition, position: i64) -> bool {
        match self.partitions.get(tp) {
            None => true,
            Some(p) => p.held.is_none() && (p.changed || p.taken.is_none_or(|t| position > t)),
        }
    }

    /// The partition's state changed without a record (chain heads were evicted): the
    /// next checkpoint saves it, so that a restore starts from the smaller state.
    pub fn changed(&mut self, tp: &TopicPartition) {
        if let Some(p) = self.partitions.get_mut(tp) {
            p.changed = true;
        }
    }

    /// Keeps a snapshot taken at a record boundary until the watermark covers it.
    pub fn hold(&mut self, tp: &TopicPartition, snapshot: Snapshot) {
        let p = self.partitions.entry(tp.clone()).or_default();
        p.taken = Some(snapshot.next_offset);
        p.changed = false;
        if p.watermark.is_some_and(|w| w >= snapshot.next_offset - 1) {
            p.ready = Some(snapshot);
        } else {
            p.held = Some(snapshot);
        }
    }

    /// The watermark of the partition moved to `watermark`.
    pub fn advance(&mut self, tp: &TopicPartition, watermark: i64) {
        let p = self.partitions.entry(tp.clone()).or_default();
        p.watermark = Some(p.watermark.map_or(watermark, |w| w.max(watermark)));
        if p.held
            .as_ref()
            .is_some_and(|s| watermark >= s.next_offset - 1)
        {
            p.ready = p.held.take();
        }
    }

    /// The snapshot to save now, if one is covered and no save of the partition is in
    /// flight; it counts as in flight until [`Schedule::saved`] or [`Schedule::failed`].
    pub fn take_save(&mut self, tp: &TopicPartition) -> Option<Snapshot> {
        let p = self.partitions.get_mut(tp)?;
        if p.saving.is_some() {
            return None;
        }
        let snapshot = p.ready.take()?;
        p.saving = Some(snapshot.next_offset);
        Some(snapshot)
    }

    /// Partitions with a snapshot to save now.
    pub fn due(&self) -> Vec<TopicPartition> {
        self.partitions
            .iter()
            .filter(|(_, p)| p.saving.is_none() && p.ready.is_some())
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// The save of the snapshot at `next_offset` is durable.
    pub fn saved(&mut self, tp: &TopicPartition, next_offset: i64, saved_at: DateTime<Utc>) {
        let Some(p) = self.partitions.get_mut(tp) else {
            return;
        };
        p.saving = None;
        if p.durable.is_none_or(|(o, _)| next_offset >= o) {
            p.durable = Some((next_offset, saved_at));
        }
    }

    /// The save of `snapshot` failed: it is tried again on the next interval, unless a
    /// newer covered snapshot replaces it meanwhile.
    pub fn failed(&mut self, tp: &TopicPartition, snapshot: Snapshot) {
        let Some(p) = self.partitions.get_mut(tp) else {
            return;
        };
        p.saving = None;
        if p.ready.is_none() {
            p.ready = Some(snapshot);
        }
    }

    /// The partition is gone: forget it, and return its latest covered snapshot not yet
    /// saved, to save as the partition leaves.
    pub fn revoke(&mut self, tp: &TopicPartition) -> Option<Snapshot> {
        self.partitions.remove(tp)?.ready
    }

    /// When the oldest of the partitions' last durable checkpoints was saved.
    pub fn oldest_durable(&self) -> Option<DateTime<Utc>> {
        self.partitions
            .values()
            .filter_map(|p| p.durable.map(|(_, at)| at))
            .min()
    }

    /// `next_offset` of the partition's last durable checkpoint.
    pub fn durable(&self, tp: &TopicPartition) -> Option<i64> {
        self.partitions
            .get(tp)
            .and_then(|p| p.durable.map(|(o, _)| o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::offsets::OffsetTracker;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn tp() -> TopicPartition {
        ("in".to_string(), 0)
    }

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    fn snapshot(next_offset: i64) -> Snapshot {
        Snapshot {
            next_offset,
            state: next_offset.to_string().into_bytes(),
            heads: Vec::new(),
        }
    }

    #[test]
    fn a_snapshot_is_saved_only_after_the_watermark_reaches_its_last_record() {
        let mut s = Schedule::new();
        s.advance(&tp(), 3);
        s.hold(&tp(), snapshot(10));
        assert_eq!(s.take_save(&tp()), None, "records 4..=9 are not done");
        s.advance(&tp(), 8);
        assert_eq!(s.take_save(&tp()), None, "record 9 is not done");
        s.advance(&tp(), 9);
        assert_eq!(s.take_save(&tp()), Some(snapshot(10)));
    }

    #[test]
    fn a_snapshot_whose_records_are_already_done_is_ready_at_once() {
        let mut s = Schedule::new();
        s.advance(&tp(), 9);
        s.hold(&tp(), snapshot(10));
        assert_eq!(s.due(), vec![tp()]);
    }

    #[test]
    fn no_new_snapshot_while_one_waits_or_nothing_was_processed() {
        let mut s = Schedule::new();
        assert!(s.wants_snapshot(&tp(), 5));
        s.hold(&tp(), snapshot(5));
        assert!(!s.wants_snapshot(&tp(), 8), "snapshot at 5 still waits");
        s.advance(&tp(), 4);
        assert!(s.wants_snapshot(&tp(), 8));
        assert!(!s.wants_snapshot(&tp(), 5), "nothing processed since");
    }

    #[test]
    fn a_state_changed_without_records_is_snapshotted_again_at_the_same_position() {
        let mut s = Schedule::new();
        s.advance(&tp(), 4);
        s.hold(&tp(), snapshot(5));
        let saving = s.take_save(&tp()).expect("ready");
        s.saved(&tp(), saving.next_offset, at(1));
        assert!(!s.wants_snapshot(&tp(), 5), "nothing processed since");
        s.changed(&tp());
        assert!(s.wants_snapshot(&tp(), 5), "the state changed");
        s.hold(&tp(), snapshot(5));
        assert_eq!(s.take_save(&tp()), Some(snapshot(5)));
        assert!(!s.wants_snapshot(&tp(), 5), "taken once");
    }

    #[test]
    fn one_save_in_flight_per_partition_and_a_failed_one_is_retried() {
        let mut s = Schedule::new();
        s.advance(&tp(), 4);
        s.hold(&tp(), snapshot(5));
        let first = s.take_save(&tp()).expect("ready");
        s.advance(&tp(), 9);
        s.hold(&tp(), snapshot(10));
        assert_eq!(s.take_save(&tp()), None, "a save is in flight");
        s.failed(&tp(), first);
        assert_eq!(
            s.take_save(&tp()),
            Some(snapshot(10)),
            "the newer snapshot replaces the failed one"
        );
        s.failed(&tp(), snapshot(10));
        assert_eq!(s.take_save(&tp()), Some(snapshot(10)), "retried");
        s.saved(&tp(), 10, at(1));
        assert_eq!(s.durable(&tp()), Some(10));
        assert_eq!(s.take_save(&tp()), None);
    }

    #[test]
    fn a_restored_partition_snapshots_only_after_new_records() {
        let mut s = Schedule::new();
        s.restored(&tp(), 100, at(0));
        assert!(!s.wants_snapshot(&tp(), 100));
        assert_eq!(s.oldest_durable(), Some(at(0)));
        s.hold(&tp(), snapshot(101));
        assert_eq!(s.take_save(&tp()), None, "record 100 not done");
        s.advance(&tp(), 100);
        assert_eq!(s.take_save(&tp()), Some(snapshot(101)));
    }

    #[test]
    fn revoking_hands_back_the_covered_snapshot_only() {
        let mut s = Schedule::new();
        s.hold(&tp(), snapshot(5));
        assert_eq!(s.revoke(&tp()), None, "not covered");
        s.advance(&tp(), 4);
        s.hold(&tp(), snapshot(5));
        assert_eq!(s.revoke(&tp()), Some(snapshot(5)));
    }

    proptest! {
        /// Whatever the completion order and snapshot times, every snapshot handed out for
        /// saving covers only done records, and the records it covers are exactly those
        /// below its offset (it was taken at that position).
        #[test]
        fn never_a_checkpoint_ahead_of_done_records(
            n in 1usize..80,
            order in proptest::collection::vec(any::<prop::sample::Index>(), 1..200),
            snap_at in proptest::collection::vec(any::<bool>(), 200),
        ) {
            let mut tracker = OffsetTracker::new();
            let mut s = Schedule::new();
            let mut done = vec![false; n];
            let mut processed = 0usize;
            let mut saved = 0i64;
            for (step, idx) in order.iter().enumerate() {
                // Process the next record, sometimes snapshot after it.
                if processed < n {
                    tracker.track(&tp(), processed as i64);
                    processed += 1;
                    if snap_at[step] && s.wants_snapshot(&tp(), processed as i64) {
                        s.hold(&tp(), snapshot(processed as i64));
                    }
                }
                // Complete one processed record.
                let i = idx.index(processed);
                if !done[i] {
                    done[i] = true;
                    if let Some(w) = tracker.complete(&tp(), i as i64) {
                        s.advance(&tp(), w);
                    }
                }
                if let Some(snap) = s.take_save(&tp()) {
                    let covered = snap.next_offset as usize;
                    prop_assert!(done[..covered].iter().all(|d| *d), "saved {covered} ahead of done records {done:?}");
                    prop_assert_eq!(snap.state.clone(), snap.next_offset.to_string().into_bytes());
                    prop_assert!(snap.next_offset > saved);
                    saved = snap.next_offset;
                    s.saved(&tp(), snap.next_offset, at(step as i64));
                }
            }
        }
    }
}
