//! The client side of Consul blocking queries, as Consul documents them
//! (api-docs/features/blocking): how the next `index` follows from the last
//! answer, a minimum time between queries, and exponential backoff with
//! jitter after errors. Pure and timer-only, so it is tested under a paused
//! clock. Rejects nothing; it only paces.

use std::time::Duration;

use tokio::time::Instant;

/// Least time between the starts of two queries of one watch, so a Consul
/// that answers at once (index reset, spurious wake-ups) is not hammered.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// First backoff after an error.
pub const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Longest backoff between failing queries.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The index to send next, given the one sent and the one Consul answered
/// (`X-Consul-Index`): an answered index below 1 is taken as 1 (an index of
/// 0 would make every query return at once), and an index that went
/// backwards resets to 0, so one non-blocking query re-reads the state.
pub fn next_index(sent: u64, answered: u64) -> u64 {
    let answered = answered.max(1);
    if answered < sent { 0 } else { answered }
}

/// The HTTP timeout of a query waiting `wait`: Consul adds up to wait/16 of
/// jitter to the wait, and the answer needs time to travel.
pub fn request_timeout(wait: Duration) -> Duration {
    wait + wait / 16 + Duration::from_secs(1)
}

/// Paces one watch's queries.
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

    #[test]
    fn index_follows_the_answer() {
        assert_eq!(next_index(0, 42), 42);
        assert_eq!(next_index(42, 42), 42);
        assert_eq!(next_index(42, 50), 50);
    }

    #[test]
    fn index_resets_to_zero_when_it_goes_backwards() {
        assert_eq!(next_index(50, 7), 0);
        // The non-blocking query after the reset then takes whatever comes.
        assert_eq!(next_index(0, 7), 7);
    }

    #[test]
    fn index_is_never_below_one_after_an_answer() {
        assert_eq!(next_index(0, 0), 1);
        assert_eq!(next_index(1, 1), 1);
        // A Consul that keeps answering 0 still gets blocking queries.
        assert_eq!(next_index(1, 0), 1);
        assert_eq!(
            next_index(5, 0),
            0,
            "went backwards: one non-blocking query"
        );
        assert_eq!(next_index(0, 0), 1, "...then blocking again");
    }

    /// The index sent by each query of a watch, answered in turn by `answers`.
    fn indexes_sent(answers: &[u64]) -> Vec<u64> {
        let mut sent = vec![0];
        for answered in answers {
            let next = next_index(*sent.last().unwrap(), *answered);
            sent.push(next);
        }
        sent
    }

    #[test]
    fn a_watch_through_a_snapshot_restore() {
        // Steady at 10, a change to 12, a restore back to 4, then changes again.
        assert_eq!(
            indexes_sent(&[10, 10, 12, 4, 4, 5]),
            [0, 10, 10, 12, 0, 4, 5]
        );
    }

    #[test]
    fn timeout_exceeds_wait_plus_jitter() {
        let wait = Duration::from_secs(300);
        assert!(request_timeout(wait) > wait + wait / 16);
        let wait = Duration::from_secs(1);
        assert!(request_timeout(wait) > wait + wait / 16);
    }

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
    async fn a_consul_that_answers_at_once_is_queried_at_most_ten_times_a_second() {
        // An index that keeps going backwards makes every other query non-blocking.
        let mut pacer = Pacer::new();
        let mut index = 0;
        let mut sent = Vec::new();
        let start = Instant::now();
        for answered in [10, 3, 3, 2, 2, 1, 1, 7, 7, 7] {
            pacer.turn().await;
            sent.push(index);
            index = next_index(index, answered);
        }
        assert_eq!(sent, [0, 10, 0, 3, 0, 2, 0, 1, 7, 7]);
        assert_eq!(start.elapsed(), MIN_INTERVAL * 9);
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
