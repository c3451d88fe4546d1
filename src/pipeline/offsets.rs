//! Which input offsets may be committed (SPEC §6).
//!
//! Guarantee: the offset stored for a partition never passes a record that is not yet
//! done, where done means every output derived from it is acknowledged by the broker
//! and every audit record derived from it is durable in the store. Records complete out
//! of order (a later record with no outputs is done at once); the watermark only moves
//! over a contiguous run of done records, so a crash at any point replays from the
//! first record that is not done, and deterministic ids make the replay harmless.

use std::collections::{HashMap, VecDeque};

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
