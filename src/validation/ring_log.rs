//! The ring log: the last `capacity` audit entries of one partition (Theus RingBuffer).
//!
//! Append-only: an entry is never changed after it is pushed; when the log is full the
//! oldest entry is dropped. Each entry carries the event's `occurred_at` and the record's
//! offset rather than a wall-clock time, so replaying the same records from the same
//! checkpoint rebuilds exactly the same log.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One line of the ring log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingEntry {
    /// The `occurred_at` of the event that caused the entry.
    pub at: DateTime<Utc>,
    /// The rule's counter key.
    pub key: String,
    /// `VIOLATION: …`, `Fail #n`, `WARN: …` or `Success`.
    pub message: String,
    /// Offset of the input record that caused the entry.
    pub offset: i64,
}

/// Where in the stream an entry is written: the event's `occurred_at` and the record's
/// offset. Taken from the data, never from the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub at: DateTime<Utc>,
    pub offset: i64,
}

/// A bounded, append-only log that overwrites its oldest entry when full.
///
/// Serialized as `{"capacity": n, "entries": [oldest, …, newest]}`; deserializing a log
/// that holds more entries than its capacity fails rather than silently dropping any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RingLogRepr", into = "RingLogRepr")]
pub struct RingLog {
    capacity: usize,
    /// Oldest at the front, newest at the back.
    entries: VecDeque<RingEntry>,
}

impl RingLog {
    /// An empty log keeping at most `capacity` entries (0 keeps nothing).
    pub fn new(capacity: usize) -> Self {
        RingLog {
            capacity,
            entries: VecDeque::new(),
        }
    }

    /// Appends `entry`, dropping the oldest entry if the log is full.
    pub fn push(&mut self, entry: RingEntry) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(entry);
    }

    /// Appends `message` for `key` at `stamp`.
    pub fn record(&mut self, stamp: Stamp, key: &str, message: impl Into<String>) {
        self.push(RingEntry {
            at: stamp.at,
            key: key.to_owned(),
            message: message.into(),
            offset: stamp.offset,
        });
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = &RingEntry> {
        self.entries.iter()
    }

    /// The entries of one key, oldest first.
    pub fn entries_for_key<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a RingEntry> {
        self.entries.iter().filter(move |e| e.key == key)
    }

    /// Changes the capacity; when it shrinks below the current length, the newest
    /// entries are kept.
    pub fn set_capacity(&mut self, capacity: usize) {
        if self.entries.len() > capacity {
            let excess = self.entries.len() - capacity;
            self.entries.drain(..excess);
            self.entries.shrink_to_fit();
        }
        self.capacity = capacity;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// The checkpointed form of a [`RingLog`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RingLogRepr {
    capacity: usize,
    entries: Vec<RingEntry>,
}

impl TryFrom<RingLogRepr> for RingLog {
    type Error = String;

    fn try_from(repr: RingLogRepr) -> Result<Self, Self::Error> {
        if repr.entries.len() > repr.capacity {
            return Err(format!(
                "ring log holds {} entries but its capacity is {}",
                repr.entries.len(),
                repr.capacity
            ));
        }
        Ok(RingLog {
            capacity: repr.capacity,
            entries: repr.entries.into(),
        })
    }
}

impl From<RingLog> for RingLogRepr {
    fn from(log: RingLog) -> Self {
        RingLogRepr {
            capacity: log.capacity,
            entries: log.entries.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: i64) -> RingEntry {
        RingEntry {
            at: DateTime::from_timestamp(1_700_000_000 + n, 0).unwrap(),
            key: format!("k{}", n % 2),
            message: format!("m{n}"),
            offset: n,
        }
    }

    fn offsets(log: &RingLog) -> Vec<i64> {
        log.entries().map(|e| e.offset).collect()
    }

    #[test]
    fn entries_read_back_oldest_first() {
        let mut log = RingLog::new(5);
        for n in 0..3 {
            log.push(entry(n));
        }
        assert_eq!(offsets(&log), vec![0, 1, 2]);
        assert_eq!(log.len(), 3);
        assert_eq!(log.capacity(), 5);
    }

    #[test]
    fn a_full_log_overwrites_its_oldest_entry() {
        let mut log = RingLog::new(3);
        for n in 0..7 {
            log.push(entry(n));
        }
        assert_eq!(offsets(&log), vec![4, 5, 6]);
        assert_eq!(log.len(), 3);
    }

    #[test]
    fn entries_for_key_keeps_only_that_key_in_order() {
        let mut log = RingLog::new(10);
        for n in 0..6 {
            log.push(entry(n));
        }
        let odd: Vec<i64> = log.entries_for_key("k1").map(|e| e.offset).collect();
        assert_eq!(odd, vec![1, 3, 5]);
    }

    #[test]
    fn shrinking_capacity_keeps_the_newest_entries() {
        let mut log = RingLog::new(5);
        for n in 0..5 {
            log.push(entry(n));
        }
        log.set_capacity(2);
        assert_eq!(offsets(&log), vec![3, 4]);
        assert_eq!(log.capacity(), 2);
        log.push(entry(5));
        assert_eq!(offsets(&log), vec![4, 5]);
    }

    #[test]
    fn growing_capacity_keeps_every_entry_and_makes_room() {
        let mut log = RingLog::new(2);
        for n in 0..3 {
            log.push(entry(n));
        }
        log.set_capacity(4);
        for n in 3..5 {
            log.push(entry(n));
        }
        assert_eq!(offsets(&log), vec![1, 2, 3, 4]);
    }

    #[test]
    fn a_zero_capacity_log_keeps_nothing() {
        let mut log = RingLog::new(0);
        log.push(entry(0));
        assert!(log.is_empty());
    }

    #[test]
    fn a_log_survives_a_json_round_trip_with_its_order() {
        let mut log = RingLog::new(3);
        for n in 0..5 {
            log.push(entry(n));
        }
        let json = serde_json::to_value(&log).unwrap();
        assert_eq!(json["capacity"], 3);
        assert_eq!(json["entries"][0]["offset"], 2);
        assert_eq!(json["entries"][0]["message"], "m2");
        let back: RingLog = serde_json::from_value(json).unwrap();
        assert_eq!(back, log);
    }

    #[test]
    fn a_checkpoint_with_more_entries_than_capacity_is_rejected() {
        let mut log = RingLog::new(3);
        for n in 0..3 {
            log.push(entry(n));
        }
        let mut json = serde_json::to_value(&log).unwrap();
        json["capacity"] = 2.into();
        let err = serde_json::from_value::<RingLog>(json).unwrap_err();
        assert!(err.to_string().contains("capacity is 2"), "{err}");
    }
}
