//! How long to wait before retrying a store call that failed with
//! [`StoreError::Unavailable`](super::StoreError::Unavailable).
//!
//! Capped exponential backoff without randomness: the delays are a pure function of the
//! attempt number, so tests see the same schedule on every run.

use std::time::Duration;

/// Capped exponential backoff: `initial × multiplier^attempt`, never above `max`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Longest delay between two attempts, however many failed: bounds how late a
    /// recovered store is noticed.
    pub max: Duration,
    /// Growth per attempt; values below 1 (or not finite) are taken as 1.
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    /// 100 ms, doubling, at most 10 s.
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            multiplier: 2.0,
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `attempt` (0 for the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let initial = self.initial.min(self.max);
        let multiplier = if self.multiplier.is_finite() && self.multiplier >= 1.0 {
            self.multiplier
        } else {
            1.0
        };
        // Nanoseconds in f64, rounded once: exact for the usual millisecond settings.
        let exponent = i32::try_from(attempt).unwrap_or(i32::MAX);
        let nanos = initial.as_nanos() as f64 * multiplier.powi(exponent);
        if !nanos.is_finite() || nanos >= self.max.as_nanos() as f64 {
            self.max
        } else {
            Duration::from_nanos(nanos.round() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_doubles_from_100_ms_and_caps_at_10_s() {
        let policy = RetryPolicy::default();
        let delays: Vec<u64> = (0..10)
            .map(|a| policy.delay(a).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
        );
    }

    #[test]
    fn huge_attempt_numbers_stay_at_the_cap() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay(1_000), Duration::from_secs(10));
        assert_eq!(policy.delay(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn delays_never_decrease() {
        let policy = RetryPolicy {
            initial: Duration::from_millis(30),
            max: Duration::from_millis(5_000),
            multiplier: 1.5,
        };
        let delays: Vec<Duration> = (0..40).map(|a| policy.delay(a)).collect();
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(delays[0], Duration::from_millis(30));
        assert_eq!(delays[1], Duration::from_millis(45));
        assert_eq!(*delays.last().unwrap(), Duration::from_millis(5_000));
    }

    #[test]
    fn a_multiplier_below_one_gives_a_constant_delay() {
        let policy = RetryPolicy {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(1),
            multiplier: 0.5,
        };
        assert_eq!(policy.delay(0), Duration::from_millis(250));
        assert_eq!(policy.delay(7), Duration::from_millis(250));
        let nan = RetryPolicy {
            multiplier: f64::NAN,
            ..policy
        };
        assert_eq!(nan.delay(3), Duration::from_millis(250));
    }

    #[test]
    fn an_initial_delay_above_the_cap_is_capped() {
        let policy = RetryPolicy {
            initial: Duration::from_secs(30),
            max: Duration::from_secs(10),
            multiplier: 2.0,
        };
        assert_eq!(policy.delay(0), Duration::from_secs(10));
    }
}
