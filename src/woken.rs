//! A future polled only once it was woken: for the side branches of a
//! connection's `select!` (the drain signal, the idle timer). The
//! connection's task wakes for every read and write, and `select!` polls
//! every branch each time; a drain signal's poll takes a lock and a timer's
//! reads the clock, about 200 instructions a wake-up for nothing.
//!
//! The gated future gets a waker of its own, which marks it woken and then
//! wakes the task. Polled while not marked, the gate only refreshes the
//! task's waker and answers `Pending`. The first poll always goes through,
//! so that the future registers its waker.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;
use pin_project_lite::pin_project;

pin_project! {
    /// `future`, polled only after its own waker fired (see the module).
    pub struct WhenWoken<F> {
        #[pin]
        future: F,
        mark: Arc<Mark>,
        waker: Waker,
    }
}

/// The gated future's waker: sets `woken`, then wakes the task.
struct Mark {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Mark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Gates `future` (see the module).
pub fn when_woken<F: Future>(future: F) -> WhenWoken<F> {
    let mark = Arc::new(Mark {
        woken: AtomicBool::new(true),
        task: AtomicWaker::new(),
    });
    let waker = Waker::from(Arc::clone(&mark));
    WhenWoken {
        future,
        mark,
        waker,
    }
}

impl<F: Future> Future for WhenWoken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // Registered before the mark is read: a wake-up in between is seen
        // now or wakes the task again.
        this.mark.task.register(cx.waker());
        if !this.mark.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.future.poll(&mut Context::from_waker(this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use tokio::sync::Notify;

    /// Counts its polls; ready once `notify` fired.
    async fn counted(notify: &Notify, polls: &AtomicUsize) {
        let mut notified = std::pin::pin!(notify.notified());
        std::future::poll_fn(|cx| {
            polls.fetch_add(1, Ordering::Relaxed);
            notified.as_mut().poll(cx)
        })
        .await;
    }

    #[tokio::test]
    async fn polls_the_future_only_after_its_own_wake_up() {
        let notify = Notify::new();
        let polls = AtomicUsize::new(0);
        let mut gated = std::pin::pin!(when_woken(counted(&notify, &polls)));
        // Ten polls of the task (as other branches' wake-ups would cause)
        // poll the gated future once: the first time.
        for _ in 0..10 {
            let polled = std::future::poll_fn(|cx| Poll::Ready(gated.as_mut().poll(cx))).await;
            assert!(polled.is_pending());
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        // Its own wake-up wakes the task, and the next poll reaches it.
        notify.notify_waiters();
        tokio::time::timeout(Duration::from_secs(5), gated)
            .await
            .expect("the notified future completes through the gate");
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }
}
