//! The time, read once per poll of a connection's task.
//!
//! A request reads the time in many places: its start and end for the
//! metrics, its deadline, the rate limit's refill, the retry budget, the
//! circuit breaker, outlier detection, the balancer, the pools, every socket
//! operation's idle stamp — 23 reads a request with every layer on. On a
//! virtual machine a read costs about 30 ns (`CLOCK_MONOTONIC` through the
//! vDSO: the TSC read is what is slow), so together they were some 5 % of a
//! request's CPU; now there are 6, three of them hyper's (`docs/benchmarks.md`;
//! its header-read timer reads this clock through `timer::HyperTimer`).
//! Event-loop proxies read the clock once per turn of the
//! loop (HAProxy's `now_ms`, Envoy's approximate monotonic time); here it is
//! once per poll of a [`crate::task::Task`] (the client and upstream
//! connections' tasks and hyper's HTTP/2 stream tasks): the first
//! [`now`] in a poll reads the clock, the others in the same poll get that
//! reading. A poll does no waiting, so the reading is behind by at most the
//! CPU time of the poll so far: microseconds. Outside such a poll, [`now`]
//! reads the clock (and follows tokio's paused clock in tests).

use std::cell::Cell;

use tokio::time::Instant;

#[derive(Clone, Copy)]
enum Reading {
    /// Not in a poll of a task: every call reads.
    Live,
    /// In such a poll, not read yet.
    Unread,
    /// In such a poll, read at this instant.
    Read(Instant),
}

thread_local! {
    static READING: Cell<Reading> = const { Cell::new(Reading::Live) };
}

/// The time: the clock, read at most once per poll of a task.
pub fn now() -> Instant {
    READING.with(|reading| match reading.get() {
        Reading::Live => Instant::now(),
        Reading::Read(now) => now,
        Reading::Unread => {
            let now = Instant::now();
            reading.set(Reading::Read(now));
            now
        }
    })
}

/// The reading state of one poll of a task ([`crate::task::Task`]): the
/// first [`now`] in it reads the clock. Dropping it, when the poll ends (also
/// by a panic), restores the enclosing code's state, so nothing read in one
/// poll is seen by the next.
pub struct PollScope {
    outer: Reading,
}

impl PollScope {
    pub fn enter() -> Self {
        Self {
            outer: READING.with(|reading| reading.replace(Reading::Unread)),
        }
    }
}

impl Drop for PollScope {
    fn drop(&mut self) {
        READING.with(|reading| reading.set(self.outer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    /// Calls `reads` in one poll scope: the readings it took.
    fn poll_once(reads: impl FnOnce() -> Vec<Instant>) -> Vec<Instant> {
        let _poll = PollScope::enter();
        reads()
    }

    #[test]
    fn one_reading_per_poll_and_live_outside() {
        let pause = || std::thread::sleep(Duration::from_millis(2));
        let first = poll_once(|| {
            let a = now();
            pause();
            vec![a, now()]
        });
        assert_eq!(first[0], first[1], "one poll, one reading");
        pause();
        let second = poll_once(|| vec![now()]);
        assert!(
            second[0] >= first[0] + Duration::from_millis(2),
            "a new poll reads again"
        );
        let before = now();
        pause();
        assert!(
            now() >= before + Duration::from_millis(2),
            "outside a poll, every call reads"
        );
    }

    #[test]
    fn a_poll_scope_ends_with_its_poll_even_by_a_panic() {
        let panicked = std::panic::catch_unwind(|| {
            poll_once(|| {
                now();
                panic!("in the poll");
            })
        });
        assert!(panicked.is_err());
        READING.with(|reading| assert!(matches!(reading.get(), Reading::Live)));
    }
}
