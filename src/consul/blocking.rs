//! The client side of Consul blocking queries, as Consul documents them
//! (api-docs/features/blocking): how the next `index` follows from the last
//! answer, and how long a query may take. Their pacing (a minimum time
//! between queries, backoff after errors) is `backoff::Pacer`. Pure, so it is
//! tested without a server. Rejects nothing.

use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;
    use crate::backoff::{MIN_INTERVAL, Pacer};

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
}
