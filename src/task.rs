//! remora's tasks: each poll reads the clock at most once ([`crate::clock`])
//! and all the task's deadlines share one tokio timer ([`crate::timer`]).
//! Connections (client and upstream), hyper's HTTP/2 stream tasks, the
//! HTTP/2 upload tasks and the drains of unread request bodies are spawned
//! this way.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::rt::Executor;
use pin_project_lite::pin_project;

use crate::clock::PollScope;
use crate::timer::TaskTimer;

pin_project! {
    /// A task's future, polled in its clock and timer scopes.
    pub struct Task<F> {
        #[pin]
        inner: F,
        #[pin]
        timer: TaskTimer,
    }
}

impl<F> Task<F> {
    pub fn new(inner: F) -> Self {
        Self {
            inner,
            timer: TaskTimer::default(),
        }
    }
}

impl<F: Future> Future for Task<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _clock = PollScope::enter();
        let this = self.project();
        this.timer.poll(this.inner, cx)
    }
}

/// Spawns `future` as a [`Task`] on the current tokio runtime.
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(Task::new(future))
}

/// Spawns hyper's tasks (HTTP/2 streams and connections) as [`Task`]s.
#[derive(Clone, Copy, Debug, Default)]
pub struct TaskExecutor;

impl<F> Executor<F> for TaskExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        spawn(future);
    }
}
