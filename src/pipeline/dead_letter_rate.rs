//! The dead-letter share per input kind over a sliding window, and the guard that makes
//! a flood of bad records loud instead of silently dead-lettering everything.
//!
//! Every consumed record counts into its kind's window (`ingest.dead_letter_window_secs`,
//! kept as ten buckets, so memory is fixed whatever the traffic). The share is exported
//! as a gauge per kind, next to the configured limit (`ingest.dead_letter_alert_ratio`);
//! the `AuditStreamDeadLetterShareHigh` alert compares the two. Crossing the limit logs
//! a warning, repeated at most once per window while the share stays above it, and
//! falling back to [`RECOVERY`] of the limit logs once: a share that hovers at the limit
//! does not log a crossing and a recovery for every dead letter. The log waits until the
//! window holds enough records that a single dead letter cannot cross the limit on its
//! own (20 at a 5 % limit): the first bad record after a quiet spell is not a flood. Time
//! is passed in, so the window is testable.

use std::time::{Duration, Instant};

use crate::metrics::{self, KINDS};

/// Buckets per window: the window slides in steps of a tenth of its length.
const BUCKETS: usize = 10;

/// A kind above the limit is back under it once its share is at most this fraction of
/// the limit (hysteresis, as alerting rules use).
const RECOVERY: f64 = 0.8;

/// Dead-letter share per input kind, with its limit.
#[derive(Debug)]
pub struct DeadLetterRate {
    limit: f64,
    window: Duration,
    kinds: [Window; KINDS.len()],
}

/// Counts of one kind over the last window.
#[derive(Debug, Clone, Default)]
struct Window {
    /// `(records, dead letters)` per bucket; `current` is being filled.
    buckets: [(u64, u64); BUCKETS],
    current: usize,
    /// When the current bucket began; `None` before the first record.
    began: Option<Instant>,
    /// Whether the share went above the limit and has not fallen back to [`RECOVERY`]
    /// of it since.
    above: bool,
    /// When the last "above the limit" warning was logged.
    warned: Option<Instant>,
}

/// The share of one kind at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Share {
    pub records: u64,
    pub dead_letters: u64,
}

impl Share {
    /// Dead letters per record in the window; 0 with no records.
    pub fn ratio(self) -> f64 {
        if self.records == 0 {
            0.0
        } else {
            self.dead_letters as f64 / self.records as f64
        }
    }
}

impl Window {
    /// Moves the window to `now`, clearing the buckets that slid out of it.
    fn advance(&mut self, now: Instant, width: Duration) {
        let Some(began) = self.began else {
            self.began = Some(now);
            return;
        };
        let elapsed = now.saturating_duration_since(began);
        let steps = (elapsed.as_nanos() / width.as_nanos().max(1)) as usize;
        for _ in 0..steps.min(BUCKETS) {
            self.current = (self.current + 1) % BUCKETS;
            self.buckets[self.current] = (0, 0);
        }
        if steps > 0 {
            self.began = Some(began + width * steps.min(u32::MAX as usize) as u32);
        }
    }

    fn share(&self) -> Share {
        let (records, dead_letters) = self
            .buckets
            .iter()
            .fold((0, 0), |(r, d), (br, bd)| (r + br, d + bd));
        Share {
            records,
            dead_letters,
        }
    }
}

impl DeadLetterRate {
    /// A guard with `limit` (a share from 0 to 1) over `window`; exports the limit.
    pub fn new(limit: f64, window: Duration) -> DeadLetterRate {
        metrics::dead_letter_ratio_limit(limit);
        DeadLetterRate {
            limit,
            window,
            kinds: Default::default(),
        }
    }

    fn width(&self) -> Duration {
        self.window / BUCKETS as u32
    }

    /// Counts one consumed record of `kind` (a label of [`KINDS`]), dead-lettered or not.
    pub fn record(&mut self, kind: &str, dead: bool, now: Instant) -> Share {
        let index = metrics::kind_index(kind);
        let width = self.width();
        let window = &mut self.kinds[index];
        window.advance(now, width);
        let bucket = &mut window.buckets[window.current];
        bucket.0 += 1;
        bucket.1 += u64::from(dead);
        self.report(index, now)
    }

    /// Slides every window to `now` and exports the shares, so that a share falls back
    /// to 0 once a kind stops receiving records.
    pub fn refresh(&mut self, now: Instant) {
        let width = self.width();
        for index in 0..KINDS.len() {
            if self.kinds[index].began.is_some() {
                self.kinds[index].advance(now, width);
                self.report(index, now);
            }
        }
    }

    /// Exports the share of one kind and logs a crossing of the limit.
    fn report(&mut self, index: usize, now: Instant) -> Share {
        let (limit, window_length) = (self.limit, self.window);
        let window = &mut self.kinds[index];
        let share = window.share();
        let ratio = share.ratio();
        metrics::dead_letter_ratio(KINDS[index], ratio);
        // `records * limit >= 1`: one dead letter alone cannot make the share cross. A
        // limit of 0 asks for every dead letter to count.
        let meaningful = limit <= 0.0 || share.records as f64 * limit >= 1.0;
        let above = ratio > limit && meaningful;
        if above {
            let due = window
                .warned
                .is_none_or(|at| now.saturating_duration_since(at) >= window_length);
            if !window.above || due {
                window.warned = Some(now);
                metrics::dead_letter_ratio_exceeded(
                    KINDS[index],
                    share.records,
                    share.dead_letters,
                    limit,
                    window_length,
                );
            }
            window.above = true;
        } else if window.above && ratio <= limit * RECOVERY {
            metrics::dead_letter_ratio_recovered(KINDS[index], ratio, limit);
            window.above = false;
        }
        share
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn the_share_counts_the_records_of_the_window_per_kind() {
        let mut rate = DeadLetterRate::new(0.05, MINUTE);
        let t0 = Instant::now();
        for i in 0..100 {
            rate.record("validation", i % 10 == 0, t0);
        }
        let share = rate.record("validation", false, t0);
        assert_eq!(
            share,
            Share {
                records: 101,
                dead_letters: 10
            }
        );
        let other = rate.record("execution", true, t0);
        assert_eq!(other.ratio(), 1.0, "kinds are counted apart");
    }

    #[test]
    fn records_older_than_the_window_slide_out() {
        let mut rate = DeadLetterRate::new(0.05, MINUTE);
        let t0 = Instant::now();
        for _ in 0..50 {
            rate.record("validation", true, t0);
        }
        let half = rate.record("validation", false, t0 + MINUTE / 2);
        assert_eq!(half.records, 51, "still inside the window");
        let later = rate.record("validation", false, t0 + MINUTE + Duration::from_secs(1));
        assert_eq!(
            later,
            Share {
                records: 2,
                dead_letters: 0
            },
            "the first bucket slid out, the one of t0 + 30 s did not"
        );
        let much_later = rate.record("validation", true, t0 + MINUTE * 100);
        assert_eq!(
            much_later,
            Share {
                records: 1,
                dead_letters: 1
            }
        );
    }

    #[test]
    fn a_quiet_kind_falls_back_to_zero_on_refresh() {
        let mut rate = DeadLetterRate::new(0.05, MINUTE);
        let t0 = Instant::now();
        rate.record("coordination", true, t0);
        rate.refresh(t0 + MINUTE * 2);
        assert_eq!(rate.kinds[2].share().records, 0);
        assert!(!rate.kinds[2].above, "back under the limit");
    }

    #[test]
    fn crossing_the_limit_warns_once_per_window() {
        let mut rate = DeadLetterRate::new(0.5, MINUTE);
        let t0 = Instant::now();
        rate.record("validation", false, t0);
        assert_eq!(rate.kinds[0].warned, None);
        rate.record("validation", true, t0);
        assert_eq!(rate.kinds[0].warned, None, "0.5 is not above 0.5");
        rate.record("validation", true, t0);
        assert_eq!(rate.kinds[0].warned, Some(t0), "2 of 3 is above");
        let soon = t0 + Duration::from_secs(1);
        rate.record("validation", true, soon);
        assert_eq!(
            rate.kinds[0].warned,
            Some(t0),
            "not again within the window"
        );
        let next = t0 + MINUTE * 2;
        for _ in 0..2 {
            rate.record("validation", true, next);
        }
        assert_eq!(rate.kinds[0].warned, Some(next), "again a window later");
        assert!(rate.kinds[0].above);
    }

    #[test]
    fn a_share_hovering_at_the_limit_neither_warns_nor_recovers_again() {
        let mut rate = DeadLetterRate::new(0.05, MINUTE);
        let t0 = Instant::now();
        for _ in 0..95 {
            rate.record("coordination", false, t0);
        }
        for _ in 0..6 {
            rate.record("coordination", true, t0);
        }
        assert!(rate.kinds[2].above, "6 of 101 is above 5 %");
        assert_eq!(rate.kinds[2].warned, Some(t0));
        // Every 20th record bad: the share moves about 5 %, under it and over it.
        let soon = t0 + Duration::from_secs(1);
        for i in 1..=200 {
            let share = rate.record("coordination", i % 20 == 0, soon);
            assert!(share.ratio() > 0.05 * RECOVERY, "{share:?}");
            assert!(rate.kinds[2].above, "still above after record {i}");
        }
        assert_eq!(rate.kinds[2].warned, Some(t0), "no second warning");
        // Clean records bring the share under 80 % of the limit: recovered.
        let mut i = 0;
        while rate.kinds[2].above {
            let share = rate.record("coordination", false, soon);
            i += 1;
            assert!(i < 100, "recovers");
            if !rate.kinds[2].above {
                assert!(share.ratio() <= 0.05 * RECOVERY, "{share:?}");
            }
        }
    }

    #[test]
    fn one_dead_letter_alone_does_not_warn() {
        let mut rate = DeadLetterRate::new(0.05, MINUTE);
        let t0 = Instant::now();
        let share = rate.record("execution", true, t0);
        assert_eq!(share.ratio(), 1.0, "the exported share is the true one");
        assert_eq!(rate.kinds[1].warned, None, "1 of 1 is not a flood");
        for _ in 0..18 {
            rate.record("execution", false, t0);
        }
        assert_eq!(rate.kinds[1].warned, None, "1 of 19: one record's worth");
        rate.record("execution", true, t0);
        assert_eq!(rate.kinds[1].warned, Some(t0), "2 of 20 is 10 %, above 5 %");

        let mut strict = DeadLetterRate::new(0.0, MINUTE);
        strict.record("execution", true, t0);
        assert_eq!(
            strict.kinds[1].warned,
            Some(t0),
            "a limit of 0: any dead letter"
        );
    }
}
