//! How long to wait before retrying a store call that failed with
//! [`StoreError::Unavailable`](super::StoreError::Unavailable).
//!
//! Capped exponential backoff without randomness: the delays are a pure function of the
//! attempt number, so tests see the same schedule on every run.

use std::future::Future;
use std::time::Duration;

use super::StoreError;

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

    /// Calls `call` until it returns anything but a retryable error, waiting
    /// [`RetryPolicy::delay`] between attempts. `on_retry` sees each retryable error, its
    /// attempt number and the delay before the next attempt.
    pub async fn retry<T, Fut>(
        &self,
        mut call: impl FnMut() -> Fut,
        mut on_retry: impl FnMut(&StoreError, u32, Duration),
    ) -> Result<T, StoreError>
    where
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut attempt = 0u32;
        loop {
            match call().await {
                Err(error) if error.is_retryable() => {
                    let delay = self.delay(attempt);
                    on_retry(&error, attempt, delay);
                    tokio::time::sleep(delay).await;
                    attempt = attempt.saturating_add(1);
                }
                result => return result,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retry_waits_out_retryable_errors_and_returns_anything_else() {
        let policy = RetryPolicy::default();
        let mut calls = 0;
        let mut retried = Vec::new();
        let result = policy
            .retry(
                || {
                    calls += 1;
                    let n = calls;
                    async move {
                        if n < 3 {
                            Err(StoreError::Unavailable("down".into()))
                        } else {
                            Ok(n)
                        }
                    }
                },
                |_, attempt, delay| retried.push((attempt, delay)),
            )
            .await;
        assert_eq!(result.unwrap(), 3);
        assert_eq!(
            retried,
            [(0, policy.delay(0)), (1, policy.delay(1))],
            "each retryable error reported with its attempt and delay"
        );

        let mut retried = 0;
        let result: Result<(), _> = policy
            .retry(
                || async { Err(StoreError::Permanent("bad".into())) },
                |_, _, _| retried += 1,
            )
            .await;
        assert!(matches!(result, Err(StoreError::Permanent(_))));
        assert_eq!(retried, 0, "a permanent error is returned at once");
    }

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
