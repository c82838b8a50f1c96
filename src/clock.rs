//! The time, read once per poll of a connection's task.
//!
//! A request reads the time in many places: its start and end for the
//! metrics, its deadline, the rate limit's refill, the retry budget, the
//! circuit breaker, outlier detection, the balancer, the pools, every socket
//! operation's idle stamp — 23 reads a request with every layer on. On a
//! virtual machine a read costs about 30 ns (`CLOCK_MONOTONIC` through the
//! vDSO: the TSC read is what is slow), so together they were some 5 % of a
//! request's CPU; now there are 7, four of them hyper's (`docs/benchmarks.md`). Event-loop proxies read the clock once per turn of the
//! loop (HAProxy's `now_ms`, Envoy's approximate monotonic time); here it is
//! once per poll of a task wrapped in [`OneReadPerPoll`] (the client and
//! upstream connections' tasks and hyper's HTTP/2 stream tasks): the first
//! [`now`] in a poll reads the clock, the others in the same poll get that
//! reading. A poll does no waiting, so the reading is behind by at most the
//! CPU time of the poll so far: microseconds. Outside such a poll, [`now`]
//! reads the clock (and follows tokio's paused clock in tests).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::rt::Executor;
use pin_project_lite::pin_project;
use tokio::time::Instant;

#[derive(Clone, Copy)]
enum Reading {
    /// Not in a poll of a [`OneReadPerPoll`] task: every call reads.
    Live,
    /// In such a poll, not read yet.
    Unread,
    /// In such a poll, read at this instant.
    Read(Instant),
}

thread_local! {
    static READING: Cell<Reading> = const { Cell::new(Reading::Live) };
}

/// The time: the clock, read at most once per poll of a [`OneReadPerPoll`] task.
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

pin_project! {
    /// A task's future whose polls each read the clock at most once.
    pub struct OneReadPerPoll<F> {
        #[pin]
        inner: F,
    }
}

impl<F> OneReadPerPoll<F> {
    pub fn new(inner: F) -> Self {
        Self { inner }
    }
}

impl<F: Future> Future for OneReadPerPoll<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _poll = PollScope::enter();
        self.project().inner.poll(cx)
    }
}

/// Restores the reading state of the enclosing code when a poll ends
/// (also by a panic), so nothing read in one poll is seen by the next.
struct PollScope {
    outer: Reading,
}

impl PollScope {
    fn enter() -> Self {
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

/// Spawns hyper's tasks (HTTP/2 streams and connections) as
/// [`OneReadPerPoll`] tasks on the current tokio runtime.
#[derive(Clone, Copy, Debug, Default)]
pub struct OneReadPerPollExecutor;

impl<F> Executor<F> for OneReadPerPollExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(OneReadPerPoll::new(future));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    /// Polls `reads` once: the readings it took.
    fn poll_once(reads: impl FnOnce() -> Vec<Instant>) -> Vec<Instant> {
        let mut reads = Some(reads);
        let mut readings = Vec::new();
        let mut task = std::pin::pin!(OneReadPerPoll::new(std::future::poll_fn(|_| {
            readings = (reads.take().unwrap())();
            Poll::Ready(())
        })));
        let waker = std::task::Waker::noop();
        assert!(
            task.as_mut()
                .poll(&mut Context::from_waker(waker))
                .is_ready()
        );
        readings
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
