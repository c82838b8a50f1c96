//! Circuit breaking per upstream: while the breaker is open, requests fail in
//! well under a millisecond with 503 `circuit_open` and nothing reaches the
//! upstream. The state machine is in `state`; this module admits requests,
//! classifies their outcomes (the conditions in `circuit_breaker.failures`,
//! by default 5xx, connect failure, reset, timeout and gRPC UNAVAILABLE /
//! DEADLINE_EXCEEDED / INTERNAL), and reports transitions in metrics and logs.
//!
//! It sits inside the retry layer, so every try counts. A gRPC response whose
//! status only arrives in trailers is judged when its body ends; a try cut
//! off by the request or per-try timeout (dropped at its `Deadline`) counts
//! as a `timeout`. Opaque TCP
//! upstreams use the same breaker per connection (`tcp`).

mod state;

use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::{Request, Response};
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::body::{BodyEnd, ResponseBody};
use crate::clock;
use crate::config::{CircuitBreakerConfig, Condition};
use crate::context::Deadline;
use crate::error::ProxyError;
use crate::outcome::Outcome;
use crate::telemetry::metrics;

pub use state::Phase;
use state::{State, Ticket};

/// The breaker of one upstream, shared by its HTTP stack or TCP listener.
pub struct CircuitBreaker {
    upstream: String,
    failures: Vec<Condition>,
    state: Mutex<State>,
}

impl CircuitBreaker {
    pub fn new(config: &CircuitBreakerConfig, upstream: &str) -> Self {
        metrics::circuit_breaker_state(upstream, Phase::Closed.gauge());
        Self {
            upstream: upstream.to_owned(),
            failures: config.failures.clone(),
            state: Mutex::new(State::new(config, Instant::now())),
        }
    }

    pub fn phase(&self) -> Phase {
        self.lock().phase()
    }

    /// Lets a request (or TCP connection) through, or fails it at once.
    /// `deadline` is when a timeout will cut the request off, if one will.
    pub fn admit(self: &Arc<Self>, deadline: Option<Instant>) -> Result<Admission, ProxyError> {
        let ticket = self.update(|state| state.admit(clock::now()));
        match ticket {
            Some(ticket) => Ok(Admission {
                breaker: Arc::clone(self),
                ticket: Some(ticket),
                deadline,
            }),
            None => Err(ProxyError::CircuitOpen {
                upstream: self.upstream.clone(),
            }),
        }
    }

    /// Runs `change` on the state and reports a phase change.
    fn update<T>(&self, change: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.lock();
        let before = state.phase();
        let result = change(&mut state);
        let after = state.phase();
        drop(state);
        if before != after {
            metrics::circuit_breaker_state(&self.upstream, after.gauge());
            metrics::circuit_breaker_transition(&self.upstream, after.as_str());
            match after {
                Phase::Open => tracing::warn!(upstream = %self.upstream, "circuit breaker opened"),
                Phase::HalfOpen => {
                    tracing::info!(upstream = %self.upstream, "circuit breaker half-open: probing")
                }
                Phase::Closed => {
                    tracing::info!(upstream = %self.upstream, "circuit breaker closed")
                }
            }
        }
        result
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a plain value updated in one step; a panic elsewhere
        // while the lock was held cannot leave it half-written.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A request let through the breaker. Its result must be recorded. Dropped
/// without one at or past its deadline, it was cut off by a timeout and
/// counts as a `timeout`; dropped earlier (the client went away), it only
/// frees its probe slot.
pub struct Admission {
    breaker: Arc<CircuitBreaker>,
    ticket: Option<Ticket>,
    deadline: Option<Instant>,
}

impl Admission {
    /// Counts the outcome as a success or a failure. An outcome that says
    /// nothing about the upstream (remora refused the try itself) counts as
    /// neither.
    pub fn record(mut self, outcome: Outcome) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        if outcome == Outcome::Refused {
            self.breaker.update(|state| state.release(ticket));
            return;
        }
        let failed = outcome.matches_any(&self.breaker.failures);
        self.breaker
            .update(|state| state.record(ticket, failed, clock::now()));
    }

    /// Records a response: at once from its head, or when its body ends for
    /// a gRPC response whose status comes in trailers.
    fn record_response(self, response: &mut Response<ResponseBody>) {
        if !Outcome::awaits_trailers(response.headers()) {
            let outcome = Outcome::of_response_for(response, &self.breaker.failures);
            self.record(outcome);
            return;
        }
        let status = response.status().as_u16();
        response.body_mut().on_end(Box::new(move |end: BodyEnd| {
            if end.complete {
                self.record(Outcome::of_trailers(status, end.grpc_status));
            }
        }));
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let now = clock::now();
        if self.deadline.is_some_and(|deadline| now >= deadline) {
            let failed = Outcome::Timeout.matches_any(&self.breaker.failures);
            self.breaker
                .update(|state| state.record(ticket, failed, now));
        } else {
            self.breaker.update(|state| state.release(ticket));
        }
    }
}

#[derive(Clone)]
pub struct CircuitBreakerLayer {
    breaker: Arc<CircuitBreaker>,
}

impl CircuitBreakerLayer {
    pub fn new(breaker: Arc<CircuitBreaker>) -> Self {
        Self { breaker }
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreakerService<S>;
    fn layer(&self, inner: S) -> CircuitBreakerService<S> {
        CircuitBreakerService {
            inner,
            breaker: Arc::clone(&self.breaker),
        }
    }
}

#[derive(Clone)]
pub struct CircuitBreakerService<S> {
    inner: S,
    breaker: Arc<CircuitBreaker>,
}

impl<S, B> Service<Request<B>> for CircuitBreakerService<S>
where
    S: Service<Request<B>, Response = Response<ResponseBody>, Error = ProxyError>,
    S::Future: Send + 'static,
{
    type Response = Response<ResponseBody>;
    type Error = ProxyError;
    type Future = BoxFuture<'static, Result<Response<ResponseBody>, ProxyError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let deadline = request.extensions().get::<Deadline>().map(|d| d.0);
        let admission = match self.breaker.admit(deadline) {
            Ok(admission) => admission,
            Err(open) => return Box::pin(std::future::ready(Err(open))),
        };
        let response = self.inner.call(request);
        crate::svc::boxed(|| async move {
            match response.await {
                Ok(mut response) => {
                    admission.record_response(&mut response);
                    Ok(response)
                }
                Err(error) => {
                    admission.record(Outcome::of_error(&error));
                    Err(error)
                }
            }
        })
    }
}
