//! Pacing of a watch that talks to a registry (Consul, etcd): a minimum time
//! between the starts of two attempts, and exponential backoff with jitter
//! after errors, so that a failing or flapping registry is neither hammered
//! nor retried by many sidecars in lockstep. Timer-only, so it is tested
//! under a paused clock.

use std::time::Duration;

use tokio::time::Instant;

/// Least time between the starts of two attempts of one watch, so a
/// registry that answers at once (a Consul index reset, spurious wake-ups,
/// an etcd that accepts and drops the watch) is not hammered.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// First backoff after an error.
pub const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Longest backoff between failing queries.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Paces one watch's attempts (queries, or connections of a streaming watch).
#[derive(Debug, Default)]
pub struct Pacer {
    last_start: Option<Instant>,
    failures: u32,
}

impl Pacer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Waits until a query may start (at least [`MIN_INTERVAL`] after the
    /// previous one started) and records its start.
    pub async fn turn(&mut self) {
        if let Some(last) = self.last_start {
            tokio::time::sleep_until(last + MIN_INTERVAL).await;
        }
        self.last_start = Some(Instant::now());
    }

    /// A query succeeded: the backoff starts over.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// A query failed: how long to wait before the next one. Doubles from
    /// [`BACKOFF_BASE`] up to [`BACKOFF_MAX`]; the wait is drawn from the
    /// upper half of that step so many sidecars do not retry in lockstep.
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let step = backoff_step(self.failures);
        step / 2 + step.mul_f64(fastrand::f64() / 2.0)
    }
}

/// The backoff ceiling after `failures` consecutive errors (≥ 1).
fn backoff_step(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << doublings).min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn queries_are_at_least_min_interval_apart() {
        let mut pacer = Pacer::new();
        let start = Instant::now();
        pacer.turn().await;
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "the first query starts at once"
        );
        for _ in 0..10 {
            pacer.turn().await;
        }
        assert_eq!(start.elapsed(), MIN_INTERVAL * 10);
        // A long poll that took longer than the interval is not delayed further.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let before = Instant::now();
        pacer.turn().await;
        assert_eq!(before.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut pacer = Pacer::new();
        let mut ceilings = Vec::new();
        for failures in 1..=8 {
            let backoff = pacer.failed();
            let step = backoff_step(failures);
            assert!(
                backoff >= step / 2 && backoff <= step,
                "{backoff:?} within {step:?}"
            );
            ceilings.push(step.as_millis());
        }
        assert_eq!(ceilings, [250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
        pacer.succeeded();
        assert!(pacer.failed() <= BACKOFF_BASE);
    }
}
