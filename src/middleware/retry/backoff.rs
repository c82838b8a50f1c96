//! The pause before a retry: exponential backoff with "full jitter".
//!
//! Before retry `n` (0 for the first retry) remora sleeps a uniformly random
//! time in `[0, min(max, base × 2ⁿ)]`. The exponential ceiling spreads retries
//! out as failures persist; the jitter de-synchronises clients that failed at
//! the same moment, so their retries do not arrive as one wave. Of the
//! variants compared in AWS's "Exponential Backoff And Jitter" (Marc Brooker,
//! 2015, <https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/>)
//! full jitter does the least total work; Envoy's retry back-off
//! (`base_interval`, `max_interval`) uses the same scheme.
//!
//! Rejects nothing: the config validation guarantees `0 < base ≤ max`.

use std::time::Duration;

use crate::config::RetryBackoff;

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(config: &RetryBackoff) -> Self {
        Self {
            base: config.base,
            max: config.max.max(config.base),
        }
    }

    /// The longest pause before retry `retry` (0 = the first retry):
    /// `min(max, base × 2^retry)`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        2u32.checked_pow(retry)
            .and_then(|factor| self.base.checked_mul(factor))
            .map_or(self.max, |ceiling| ceiling.min(self.max))
    }

    /// A random pause in `[0, ceiling(retry)]`.
    pub fn delay(&self, retry: u32) -> Duration {
        let ceiling = self.ceiling(retry);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(base_ms: u64, max_ms: u64) -> Backoff {
        Backoff::new(&RetryBackoff {
            base: Duration::from_millis(base_ms),
            max: Duration::from_millis(max_ms),
        })
    }

    #[test]
    fn ceiling_doubles_up_to_max() {
        let backoff = backoff(25, 250);
        let ceilings: Vec<u64> = (0..6)
            .map(|retry| backoff.ceiling(retry).as_millis() as u64)
            .collect();
        assert_eq!(ceilings, [25, 50, 100, 200, 250, 250]);
        // No overflow for absurd retry counts.
        assert_eq!(backoff.ceiling(40), Duration::from_millis(250));
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_millis(250));
    }

    #[test]
    fn delays_stay_within_zero_and_the_ceiling_and_are_jittered() {
        let backoff = backoff(10, 1000);
        for retry in 0..5 {
            let ceiling = backoff.ceiling(retry);
            let delays: Vec<Duration> = (0..2000).map(|_| backoff.delay(retry)).collect();
            assert!(delays.iter().all(|d| *d <= ceiling), "retry {retry}");
            // Full jitter: the whole range is used, not just near the ceiling.
            let low = delays.iter().filter(|d| **d < ceiling / 4).count();
            let high = delays.iter().filter(|d| **d > ceiling * 3 / 4).count();
            assert!(
                low > 200 && high > 200,
                "retry {retry}: {low} low, {high} high"
            );
        }
    }
}
