//! Deadlines that share their task's one tokio timer.
//!
//! A request's life holds several deadlines at once, all in the connection's
//! task: hyper's header-read timeout, the connection's idle limit, the
//! request timeout and the upstream exchange's idle limit. Each was a tokio
//! timer of its own, registered in the timer wheel when first polled and
//! removed when dropped: three registrations and three removals a request,
//! about 5 % of its CPU. HAProxy keeps one expiry per task, the earliest of
//! its streams' timeouts; this module does the same for tasks spawned as
//! [`crate::task::Task`]:
//!
//! - A [`Sleep`] that is polled before its deadline, inside such a task and
//!   with the task's own waker, registers nothing: it notes its deadline in
//!   the task's poll scope (a thread-local, like [`crate::clock`]'s reading)
//!   and returns `Pending`.
//! - When the task's poll ends pending, [`TaskTimer`] arms the task's one
//!   tokio timer for the earliest deadline noted, moving it only when that is
//!   earlier than where it stands or it has fired. A timer left standing
//!   earlier than every deadline fires once for nothing: the task is polled,
//!   each `Sleep` notes its deadline again, and the timer moves on.
//! - The timer wakes the task, the task polls every future in it (the
//!   `Sleep` was polled with the task's waker, so whatever holds it polls it
//!   on that wake), and a `Sleep` whose deadline has passed by the task's
//!   clock reading ends.
//!
//! A `Sleep` polled outside a task, or with another waker (inside a
//! combinator that gives its children wakers of their own), falls back to a
//! tokio timer of its own, so it is right wherever it runs. [`HyperTimer`]
//! hands these to hyper for its header-read timeout.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, RawWakerVTable, Waker};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Instant;

use crate::clock;

/// Which waker a task polls with: the addresses `Waker::will_wake`
/// compares, as numbers (never used as pointers).
#[derive(Clone, Copy, PartialEq)]
struct WakerId {
    data: usize,
    vtable: usize,
}

impl WakerId {
    fn of(waker: &Waker) -> Self {
        Self {
            data: waker.data() as usize,
            vtable: std::ptr::from_ref::<RawWakerVTable>(waker.vtable()) as usize,
        }
    }
}

/// The poll of a task in progress: its waker, and the earliest deadline
/// its futures asked to be woken at.
#[derive(Clone, Copy)]
struct Scope {
    waker: WakerId,
    earliest: Option<Instant>,
}

thread_local! {
    static SCOPE: Cell<Option<Scope>> = const { Cell::new(None) };
}

/// Notes `deadline` in the task being polled, when there is one and `waker`
/// is its own: true when the task's timer will wake it.
fn note_in_task(deadline: Instant, waker: &Waker) -> bool {
    SCOPE.with(|scope| match scope.get() {
        Some(mut current) if current.waker == WakerId::of(waker) => {
            current.earliest = Some(current.earliest.map_or(deadline, |e| e.min(deadline)));
            scope.set(Some(current));
            true
        }
        _ => false,
    })
}

/// A future that ends at its deadline (by the task's clock reading).
///
/// The task's timer learns the deadline only when the `Sleep` is polled,
/// and forgets it once it fires: whoever holds a `Sleep` polls it whenever
/// it returns `Pending`, also right after a [`Sleep::reset`] (a tokio
/// `Sleep` keeps its waker across a reset; this one does not).
#[derive(Debug)]
pub struct Sleep {
    deadline: Instant,
    /// A timer of its own, when it was polled outside a task's scope.
    own: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// `duration` after `from`, or a time too far to come when that is past
/// what an [`Instant`] holds (a limit such as `500000000000y`).
pub fn after(from: Instant, duration: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 86_400);
    (from.checked_add(duration)).unwrap_or_else(|| from + FAR)
}

/// `duration` from the task's clock reading (see [`after`]).
pub fn from_now(duration: Duration) -> Instant {
    after(clock::now(), duration)
}

/// A [`Sleep`] until `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        own: None,
    }
}

impl Sleep {
    /// Moves the deadline (later or earlier).
    pub fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.deadline;
        if clock::now() >= deadline {
            return Poll::Ready(());
        }
        if note_in_task(deadline, cx.waker()) {
            return Poll::Pending;
        }
        let own = (self.own).get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if own.deadline() != deadline {
            own.as_mut().reset(deadline);
        }
        own.as_mut().poll(cx)
    }
}

pin_project! {
    /// [`timeout_at`]'s future.
    pub struct TimeoutAt<F> {
        #[pin]
        future: F,
        sleep: Sleep,
    }
}

/// `future`'s output, or `None` when `deadline` came first.
pub fn timeout_at<F: Future>(deadline: Instant, future: F) -> TimeoutAt<F> {
    TimeoutAt {
        future,
        sleep: sleep_until(deadline),
    }
}

impl<F: Future> Future for TimeoutAt<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<F::Output>> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Some(output));
        }
        Pin::new(this.sleep).poll(cx).map(|()| None)
    }
}

pin_project! {
    /// A task's one tokio timer, armed for the earliest deadline its
    /// futures asked for. [`crate::task::Task`] polls its future through
    /// [`Self::poll`].
    #[derive(Default)]
    pub struct TaskTimer {
        #[pin]
        timer: Option<tokio::time::Sleep>,
        // The waker the timer was last polled with.
        registered: Option<WakerId>,
    }
}

impl TaskTimer {
    /// Polls `future` in this task's scope, then arms the timer for the
    /// earliest deadline noted, when the future is pending.
    pub fn poll<F: Future>(
        self: Pin<&mut Self>,
        future: Pin<&mut F>,
        cx: &mut Context<'_>,
    ) -> Poll<F::Output> {
        let scope = Enter::new(cx.waker());
        let polled = future.poll(cx);
        let earliest = scope.exit();
        if let (Poll::Pending, Some(earliest)) = (&polled, earliest) {
            self.arm(earliest, cx);
        }
        polled
    }

    fn arm(self: Pin<&mut Self>, earliest: Instant, cx: &mut Context<'_>) {
        let mut this = self.project();
        if this.timer.is_none() {
            this.timer.set(Some(tokio::time::sleep_until(earliest)));
            *this.registered = None;
        }
        let mut timer = this.timer.as_pin_mut().expect("the timer was made above");
        if timer.deadline() > earliest || timer.is_elapsed() {
            timer.as_mut().reset(earliest);
            *this.registered = None;
        }
        let waker = WakerId::of(cx.waker());
        if *this.registered == Some(waker) {
            return;
        }
        // Out of tokio's budget, the timer takes no waker (tokio wakes the
        // task to poll again instead): it is polled again then.
        let takes_waker = tokio::task::coop::has_budget_remaining();
        if timer.poll(cx).is_ready() {
            // Due already by the timer's clock, not yet by the reading the
            // futures saw: poll again with a newer one.
            *this.registered = None;
            cx.waker().wake_by_ref();
        } else {
            *this.registered = takes_waker.then_some(waker);
        }
    }
}

/// A task's scope on this thread for the length of one poll; the
/// enclosing one is restored when it ends, also by a panic.
struct Enter {
    outer: Option<Scope>,
}

impl Enter {
    fn new(waker: &Waker) -> Self {
        let scope = Scope {
            waker: WakerId::of(waker),
            earliest: None,
        };
        Self {
            outer: SCOPE.with(|current| current.replace(Some(scope))),
        }
    }

    /// Ends the scope (dropping it restores the enclosing one): the
    /// earliest deadline noted in it.
    fn exit(self) -> Option<Instant> {
        SCOPE.with(Cell::get).and_then(|scope| scope.earliest)
    }
}

impl Drop for Enter {
    fn drop(&mut self) {
        SCOPE.with(|current| current.set(self.outer));
    }
}

/// hyper's timer (its header-read timeout, and its HTTP/2 keepalive when
/// one is set): [`Sleep`]s, and the task's clock reading for `now`. hyper
/// polls its timers after each reset and whenever it waits, as a `Sleep`
/// needs.
#[derive(Clone, Copy, Debug, Default)]
pub struct HyperTimer;

impl hyper::rt::Sleep for Sleep {}

impl hyper::rt::Timer for HyperTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(sleep_until(from_now(duration)))
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(sleep_until(deadline.into()))
    }

    fn now(&self) -> std::time::Instant {
        clock::now().into_std()
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: std::time::Instant) {
        match sleep.as_mut().downcast_mut_pin::<Sleep>() {
            Some(mut ours) => ours.reset(new_deadline.into()),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use futures_util::StreamExt;
    use futures_util::stream::FuturesUnordered;

    use crate::task::Task;

    const TICK: Duration = Duration::from_millis(40);

    /// Sleeps for `delay` from now: the time it took.
    async fn timed(delay: Duration) -> Duration {
        let start = Instant::now();
        sleep_until(start + delay).await;
        start.elapsed()
    }

    /// Runs `future` as a task: its output (within 5 s).
    async fn in_task<F: Future + Send + 'static>(future: F) -> F::Output
    where
        F::Output: Send,
    {
        let task = tokio::spawn(Task::new(future));
        (tokio::time::timeout(Duration::from_secs(5), task).await)
            .expect("the task ended within 5 s")
            .unwrap()
    }

    fn assert_around(took: Duration, expected: Duration) {
        assert!(took >= expected, "ended early: {took:?} < {expected:?}");
        assert!(
            took < expected + Duration::from_millis(400),
            "ended late: {took:?} for {expected:?}"
        );
    }

    #[tokio::test]
    async fn deadlines_in_one_task_each_end_at_their_time() {
        let took =
            in_task(async { tokio::join!(timed(3 * TICK), timed(TICK), timed(2 * TICK)) }).await;
        assert_around(took.0, 3 * TICK);
        assert_around(took.1, TICK);
        assert_around(took.2, 2 * TICK);
    }

    #[tokio::test]
    async fn an_earlier_deadline_asked_later_moves_the_task_timer() {
        let took = in_task(async {
            let long = timed(Duration::from_secs(3));
            let short = async {
                tokio::task::yield_now().await;
                timed(TICK).await
            };
            tokio::select! {
                _ = long => panic!("the long deadline came first"),
                took = short => took,
            }
        })
        .await;
        assert_around(took, TICK);
    }

    #[tokio::test]
    async fn a_deadline_moved_later_is_not_ended_by_its_first_one() {
        let took = in_task(async {
            let start = Instant::now();
            let mut sleep = sleep_until(start + TICK);
            // Polled once (the task timer stands at TICK), then moved on.
            assert!(futures_util::poll!(&mut sleep).is_pending());
            sleep.reset(start + 3 * TICK);
            sleep.await;
            start.elapsed()
        })
        .await;
        assert_around(took, 3 * TICK);
    }

    #[tokio::test]
    async fn a_deadline_moved_earlier_and_polled_ends_at_the_new_one() {
        let took = in_task(async {
            let start = Instant::now();
            let mut sleep = sleep_until(start + Duration::from_secs(3));
            assert!(futures_util::poll!(&mut sleep).is_pending());
            sleep.reset(start + TICK);
            sleep.await;
            start.elapsed()
        })
        .await;
        assert_around(took, TICK);
    }

    #[test]
    fn a_deadline_past_what_an_instant_holds_is_far_away() {
        let now = Instant::now();
        assert_eq!(
            after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert!(after(now, Duration::MAX) > now + Duration::from_secs(50 * 365 * 86_400));
    }

    #[tokio::test]
    async fn a_deadline_under_a_waker_of_its_own_ends_by_its_own_timer() {
        let took = in_task(async {
            let mut set: FuturesUnordered<_> = [timed(2 * TICK), timed(TICK)].into_iter().collect();
            let first = set.next().await.unwrap();
            let second = set.next().await.unwrap();
            (first, second)
        })
        .await;
        assert_around(took.0, TICK);
        assert_around(took.1, 2 * TICK);
    }

    #[tokio::test]
    async fn a_deadline_outside_a_task_ends_by_its_own_timer() {
        assert_around(timed(TICK).await, TICK);
    }

    #[tokio::test]
    async fn timeout_at_gives_the_output_or_none_at_the_deadline() {
        let (first, late) = in_task(async {
            let soon = Instant::now() + 2 * TICK;
            let first = timeout_at(soon, async { 7 }).await;
            let start = Instant::now();
            let late = timeout_at(start + TICK, timed(Duration::from_secs(10))).await;
            (first, (late, start.elapsed()))
        })
        .await;
        assert_eq!(first, Some(7));
        assert_eq!(late.0, None);
        assert_around(late.1, TICK);
    }

    #[test]
    fn a_poll_scope_ends_with_its_poll_even_by_a_panic() {
        let panicked = std::panic::catch_unwind(|| {
            let _scope = Enter::new(Waker::noop());
            panic!("in the poll");
        });
        assert!(panicked.is_err());
        assert!(SCOPE.with(Cell::get).is_none());
    }
}
