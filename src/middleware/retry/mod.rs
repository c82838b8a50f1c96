//! Retries: a failed try of a replayable request is sent again — to another
//! endpoint when the upstream has one — after a jittered backoff, as long as
//! the upstream's retry budget allows.
//!
//! # When a request is retried
//!
//! A try is retried when its outcome ([`Outcome::of_response`] /
//! [`Outcome::of_error`], the classification shared with breakers and outlier
//! detection) matches one of the policy's `on` conditions, or when it was cut
//! off by `per_try_timeout` — a per-try timeout is always retryable, whether or
//! not `on` lists `timeout` (the try was slow, not necessarily broken; Envoy
//! retries per-try timeouts the same way) — and all of these hold:
//!
//! - tries remain: `attempts` counts every try, the first included;
//! - the request is replayable (below);
//! - the budget ([`budget`]) has a retry to give; when it has not, the failed
//!   try's response or error is returned and counted in
//!   `remora_retry_budget_exhausted_total`.
//!
//! A response that is retried is dropped with its body, which releases its
//! connection; the last try's response or error is returned as is. A retry
//! carries [`AvoidEndpoints`] with the endpoint of the failed try (from
//! [`ResponseBody::served_by`], the error's endpoint, or — for a per-try timeout — the
//! endpoint `forward` had picked, via [`PickedEndpoint`]), so it goes to
//! another endpoint when there is one. Between tries remora sleeps for a
//! random time up to an exponentially growing ceiling ([`backoff`]).
//!
//! The request timeout sits outside this layer: it bounds all tries and
//! backoffs together, and when it fires the try in flight is dropped.
//!
//! # Replay safety
//!
//! Only when the policy could retry (`attempts > 1`) or hedge (an idempotent
//! request under `hedge`, whose hedges send copies of the whole body: see
//! [`hedge`]) is the request body made replayable, with `RequestBody::replayable(replay_body_limit)` (see
//! `crate::body::replay`). The first try is sent at once and its body streams
//! upstream frame by frame as the client sends it — a bidirectional gRPC
//! stream flows as without retries — while a copy of the data and trailers is
//! kept as long as it holds at most `replay_body_limit` bytes. A retry's body
//! replays the copy, then reads on from the client where the failed try
//! stopped.
//!
//! A request is *replayable* as long as the copy holds everything read so far:
//! a failed try is retried only when its body is not *capped* (more than the
//! limit read — any of it, for a body whose size hint is over the limit — or
//! the client's body failed) at the moment of the decision. A body of any size
//! whose try failed before any of it was read (a connect failure) is retried
//! and streamed from the start. A
//! retry supersedes the failed try's body: should its connection still be
//! sending it, that body fails from then on, so the abandoned upstream request
//! is reset rather than ended as if whole. HTTP/1.1 upgrades (WebSocket) are
//! never retried or copied.
//!
//! # Idempotency
//!
//! A failed try reached the upstream unless it provably did not (a connect
//! failure, `REFUSED_STREAM`, a GOAWAY above its stream:
//! [`crate::resend::never_processed`], the classification transparent
//! resends use). A request that is not idempotent ([`idempotency`]: `POST`,
//! `PATCH`, a method left out of `idempotent_methods`, a gRPC method not in
//! `idempotent_grpc_methods`, all without an `Idempotency-Key` header) is
//! retried only in those cases — a 503, a reset after it was sent or a
//! per-try timeout is answered as it is — unless the policy opts in with
//! `retry_non_idempotent: true`.
//!
//! Each try is a fresh request with the method, URI, version, headers and
//! extensions (client address, [`Deadline`], …) of the original. With a
//! `per_try_timeout` each try's `Deadline` becomes the earlier of the
//! request's deadline and the try's own, so a gRPC upstream's `grpc-timeout`
//! tells it how long this try may take.
//!
//! # Metrics
//!
//! `remora_retries_total{upstream, outcome}`: one per retry, `success` when the
//! retried try's outcome was not one to retry, `failure` when it was (or it
//! timed out). `remora_retry_budget_exhausted_total{upstream}`,
//! `remora_timeouts_total{direction, upstream, kind="per_try"}`.
//!
//! Sources: Finagle "Retries" (budgets); linkerd2-proxy (budgeted retries of
//! replayable requests, `ReplayBody`); Envoy "x-envoy-retry-on" / retry
//! back-off and per-try timeouts; AWS Architecture Blog, "Exponential Backoff
//! And Jitter" (full jitter).
//!
//! Over 500 lines: its tests (the retry logic itself is about 330).

pub mod backoff;
pub mod budget;
pub mod hedge;
pub mod idempotency;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::{BoxFuture, Either};
use http::{Request, Response, Version};
use tower::{Layer, Service, ServiceExt};

use crate::body::{RequestBody, ResponseBody};
use crate::clock;
use crate::config::{Condition, HedgePolicy, RetryPolicy};
use crate::context::Deadline;
use crate::context::Direction;
use crate::context::RetryCount;
use crate::context::{AvoidEndpoints, PickedEndpoint};
use crate::error::ProxyError;
use crate::headers::is_upgrade_request;
use crate::outcome::Outcome;
use crate::resend::never_processed;
use crate::telemetry::metrics::RetryMetrics;
use crate::timer;

use self::backoff::Backoff;
use self::budget::Budget;
use self::hedge::Hedge;
use self::idempotency::Idempotency;

/// What every request to one upstream shares: the policy, the budget and
/// the counters.
struct Shared {
    attempts: u32,
    on: Vec<Condition>,
    per_try_timeout: Option<Duration>,
    replay_body_limit: usize,
    backoff: Backoff,
    budget: Budget,
    idempotency: Idempotency,
    hedge: Option<Hedge>,
    metrics: RetryMetrics,
}

/// Retries (and hedges) of one (outbound) upstream or route; build once per
/// upstream so all its requests share one budget.
#[derive(Clone)]
pub struct RetryLayer {
    shared: Arc<Shared>,
}

impl RetryLayer {
    /// `retries` and `hedge` of an upstream or route (at least one of them);
    /// hedging alone retries nothing (`attempts: 1`) but has the default budget.
    pub fn new(retries: Option<&RetryPolicy>, hedge: Option<&HedgePolicy>, upstream: &str) -> Self {
        let hedge_only = RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        };
        let policy = retries.unwrap_or(&hedge_only);
        Self {
            shared: Arc::new(Shared {
                attempts: policy.attempts.max(1),
                on: policy.on.clone(),
                per_try_timeout: policy.per_try_timeout,
                replay_body_limit: policy.replay_body_limit,
                backoff: Backoff::new(&policy.backoff),
                budget: Budget::new(&policy.budget),
                idempotency: Idempotency::new(policy),
                hedge: hedge.map(Hedge::new),
                // Retries are configured on upstreams, which are outbound.
                metrics: RetryMetrics::new(Direction::Outbound, upstream),
            }),
        }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;
    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

#[derive(Clone)]
pub struct Retry<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<Request<RequestBody>> for Retry<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = ProxyError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<ResponseBody>;
    type Error = ProxyError;
    type Future = BoxFuture<'static, Result<Response<ResponseBody>, ProxyError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        // The service made ready by `poll_ready` takes the first try; the
        // clone left behind serves the next request.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        crate::svc::boxed(|| retry(Arc::clone(&self.shared), inner, request))
    }
}

async fn retry<S>(
    shared: Arc<Shared>,
    mut inner: S,
    request: Request<RequestBody>,
) -> Result<Response<ResponseBody>, ProxyError>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = ProxyError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    shared.budget.deposit();
    let upgrade = request.version() <= Version::HTTP_11 && is_upgrade_request(request.headers());
    let hedge = (shared.hedge.as_ref())
        .filter(|_| !upgrade)
        .filter(|_| shared.idempotency.is_idempotent(&request))
        .and_then(|hedge| Some((hedge, hedge.delay()?)));
    if (shared.attempts <= 1 && hedge.is_none()) || upgrade {
        return shared.first_try(&mut inner, request).await.result;
    }

    let (parts, body) = request.into_parts();
    let (first, replay) = body.replayable(shared.replay_body_limit);
    let template = Request::from_parts(parts, ());
    let count = template.extensions().get::<RetryCount>().cloned();
    let mut body = first;
    let mut retries = 0u32;
    let mut avoid = None;
    loop {
        let tried = match hedge {
            Some((hedge, delay)) if retries == 0 => {
                hedge::race(
                    &shared,
                    hedge,
                    inner.clone(),
                    &template,
                    delay,
                    body,
                    &replay,
                )
                .await
            }
            _ => {
                let mut request = copy(&template, body);
                if let Some(addr) = avoid {
                    request.extensions_mut().insert(AvoidEndpoints(vec![addr]));
                }
                if retries > 0 {
                    inner.ready().await?;
                    shared.try_once(&mut inner, request).await
                } else {
                    shared.first_try(&mut inner, request).await
                }
            }
        };
        let again = shared.should_retry(&tried.result, &template);
        if retries > 0 {
            let counter = if again {
                &shared.metrics.failed
            } else {
                &shared.metrics.succeeded
            };
            counter.increment(1);
        }
        if !again || retries + 1 >= shared.attempts || replay.is_capped() {
            return tried.result;
        }
        if !shared.budget.try_withdraw() {
            shared.metrics.budget_exhausted.increment(1);
            return tried.result;
        }
        // Capped since the check above only if the failed try's connection
        // read on meanwhile: then it cannot be retried after all.
        let Some(next) = replay.next_body() else {
            return tried.result;
        };
        body = next;
        avoid = tried.endpoint();
        // Dropping a retried response drops its body: the connection is released.
        drop(tried);
        tokio::time::sleep(shared.backoff.delay(retries)).await;
        retries += 1;
        if let Some(count) = &count {
            count.set(retries);
        }
    }
}

/// A try's result, and the endpoint it went to when known.
struct Tried {
    result: Result<Response<ResponseBody>, ProxyError>,
    picked: Option<PickedEndpoint>,
}

impl Tried {
    fn endpoint(&self) -> Option<SocketAddr> {
        match &self.result {
            Ok(response) => response.body().served_by(),
            Err(error) => error.endpoint(),
        }
        .or_else(|| self.picked.as_ref().and_then(PickedEndpoint::get))
    }
}

impl Shared {
    /// A request's first try; with hedging, the latency of a good answer is
    /// recorded for a percentile `delay` — first tries only: theirs is the
    /// latency hedging is to cut (a hedge's or a retry's would drag it down).
    /// Without hedging it is the try itself: no clock read, and no future
    /// wrapped around the try's to move with every request.
    fn first_try<'a, S>(
        &'a self,
        inner: &'a mut S,
        request: Request<RequestBody>,
    ) -> impl Future<Output = Tried> + 'a
    where
        S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = ProxyError>,
    {
        let Some(hedge) = &self.hedge else {
            return Either::Left(self.try_once(inner, request));
        };
        Either::Right(async move {
            let started = clock::now();
            let tried = self.try_once(inner, request).await;
            if tried.result.is_ok() && !retryable(&self.on, &tried.result) {
                hedge.record(clock::now().saturating_duration_since(started));
            }
            tried
        })
    }

    /// One try, bounded by `per_try_timeout` when there is one.
    async fn try_once<S>(&self, inner: &mut S, mut request: Request<RequestBody>) -> Tried
    where
        S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = ProxyError>,
    {
        let Some(timeout) = self.per_try_timeout else {
            let result = inner.call(request).await;
            return Tried {
                result,
                picked: None,
            };
        };
        let Some(try_deadline) = clock::now().checked_add(timeout) else {
            // A per-try timeout too large to be an instant bounds nothing.
            let result = inner.call(request).await;
            return Tried {
                result,
                picked: None,
            };
        };
        let deadline = match request.extensions().get::<Deadline>() {
            Some(Deadline(request_deadline)) => try_deadline.min(*request_deadline),
            None => try_deadline,
        };
        request.extensions_mut().insert(Deadline(deadline));
        let picked = (request.extensions().get::<PickedEndpoint>().cloned()).unwrap_or_default();
        request.extensions_mut().insert(picked.clone());
        let result = match timer::timeout_at(try_deadline, inner.call(request)).await {
            Some(result) => result,
            None => {
                self.metrics.per_try_timeouts.increment(1);
                Err(ProxyError::PerTryTimeout {
                    timeout,
                    addr: picked.get(),
                })
            }
        };
        Tried {
            result,
            picked: Some(picked),
        }
    }

    /// True when the try of the request whose head is `template` should be
    /// tried again; a request that may not be repeated only when the try
    /// never reached the upstream. (Whether it may be repeated is asked only
    /// of a try that failed.)
    fn should_retry(
        &self,
        result: &Result<Response<ResponseBody>, ProxyError>,
        template: &Request<()>,
    ) -> bool {
        retryable(&self.on, result)
            && (result.as_ref().is_err_and(never_processed)
                || self.idempotency.may_repeat(template))
    }
}

/// True when a try with this result should be tried again (tries and budget
/// permitting): its outcome matches `on`, or it hit the per-try timeout.
pub fn retryable<B>(on: &[Condition], result: &Result<Response<B>, ProxyError>) -> bool {
    match result {
        Ok(response) => Outcome::of_response_for(response, on).matches_any(on),
        Err(ProxyError::PerTryTimeout { .. }) => true,
        Err(error) => Outcome::of_error(error).matches_any(on),
    }
}

/// The request of one try: the head of `template` with `body`. Extensions
/// are copied whole (client address, deadline, anything later layers add);
/// the upgrade handle among them is inert, as upgrades are never retried.
fn copy(template: &Request<()>, body: RequestBody) -> Request<RequestBody> {
    let mut copy = Request::new(body);
    *copy.method_mut() = template.method().clone();
    *copy.uri_mut() = template.uri().clone();
    *copy.version_mut() = template.version();
    *copy.headers_mut() = template.headers().clone();
    *copy.extensions_mut() = template.extensions().clone();
    copy
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    use bytes::Bytes;
    use tokio::time::Instant;

    use crate::config::{RetryBackoff, RetryBudget};

    fn response(status: u16) -> Result<Response<()>, ProxyError> {
        Ok(Response::builder().status(status).body(()).unwrap())
    }

    #[test]
    fn retries_what_on_names_and_per_try_timeouts() {
        let on = [Condition::Status(503), Condition::ConnectFailure];
        assert!(retryable(&on, &response(503)));
        assert!(!retryable(&on, &response(500)));
        assert!(!retryable(&on, &response(200)));
        let per_try: Result<Response<()>, _> = Err(ProxyError::PerTryTimeout {
            timeout: Duration::from_millis(10),
            addr: None,
        });
        assert!(retryable(&on, &per_try));
        // The request timeout is never retried from inside: it is outside.
        let timeout: Result<Response<()>, _> = Err(ProxyError::Timeout(Duration::from_secs(1)));
        assert!(!retryable(&on, &timeout));
        let refused: Result<Response<()>, _> = Err(ProxyError::NoEndpoints {
            upstream: "x".into(),
        });
        assert!(!retryable(&on, &refused));
    }

    /// What the stand-in upstream saw of one try: when it came, which endpoint it was to avoid.
    type Seen = (Instant, Option<SocketAddr>);

    fn endpoint(try_number: usize) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, try_number as u8], 80))
    }

    fn policy(attempts: u32, budget: RetryBudget) -> RetryPolicy {
        RetryPolicy {
            attempts,
            on: vec![Condition::Status(503)],
            per_try_timeout: None,
            backoff: RetryBackoff {
                base: Duration::from_millis(100),
                max: Duration::from_millis(300),
            },
            budget,
            replay_body_limit: 1024,
            idempotent_methods: vec!["GET".into()],
            idempotent_grpc_methods: Vec::new(),
            retry_non_idempotent: false,
        }
    }

    /// A stand-in upstream: the try numbered `n` (0, 1, … over all requests) is answered
    /// `statuses[n]` (the last one repeats) by `endpoint(n)`; every try is recorded in `seen`.
    #[derive(Clone)]
    struct Scripted {
        statuses: &'static [u16],
        seen: Arc<Mutex<Vec<Seen>>>,
    }

    impl Service<Request<RequestBody>> for Scripted {
        type Response = Response<ResponseBody>;
        type Error = ProxyError;
        type Future = std::future::Ready<Result<Response<ResponseBody>, ProxyError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
            let mut seen = self.seen.lock().unwrap();
            let n = seen.len();
            let avoid = request.extensions().get::<AvoidEndpoints>().map(|a| a.0[0]);
            seen.push((Instant::now(), avoid));
            let status = self.statuses[n.min(self.statuses.len() - 1)];
            let mut response = Response::new(ResponseBody::empty());
            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
            response.body_mut().set_served_by(endpoint(n));
            std::future::ready(Ok(response))
        }
    }

    /// Retries with `policy` over a `Scripted` upstream; returns the tries' record too.
    fn retrying(
        policy: RetryPolicy,
        statuses: &'static [u16],
    ) -> (Retry<Scripted>, Arc<Mutex<Vec<Seen>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let upstream = Scripted {
            statuses,
            seen: Arc::clone(&seen),
        };
        (
            RetryLayer::new(Some(&policy), None, "test").layer(upstream),
            seen,
        )
    }

    /// Sends one request; returns its status and the retries it took.
    async fn status_and_retries<S>(service: &mut S) -> (u16, u32)
    where
        S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = ProxyError>,
    {
        let count = RetryCount::default();
        let mut request = Request::new(RequestBody::buffered(Bytes::from_static(b"body"), None));
        request.extensions_mut().insert(count.clone());
        let response = service.ready().await.unwrap().call(request).await.unwrap();
        (response.status().as_u16(), count.get())
    }

    fn generous() -> RetryBudget {
        RetryBudget {
            ratio: 1.0,
            min_per_second: 1000,
            window: Duration::from_secs(10),
        }
    }

    /// Under paused time the pauses are exact (to the timer's millisecond): before retry `n`
    /// remora waits at most `min(max, base × 2ⁿ)`, spread over the whole range, and each
    /// retry avoids the endpoint of the try before it.
    #[tokio::test(start_paused = true)]
    async fn tries_pause_within_the_jittered_ceiling_and_avoid_the_last_endpoint() {
        let (mut service, seen) = retrying(policy(4, generous()), &[503]);
        let ceilings = [100, 200, 300].map(Duration::from_millis);
        let mut first_pauses = Vec::new();
        for request in 0..40 {
            assert_eq!(status_and_retries(&mut service).await, (503, 3));
            let seen = seen.lock().unwrap();
            let tries = &seen[request * 4..request * 4 + 4];
            assert_eq!(tries[0].1, None, "a first try avoids nothing");
            for retry in 0..3 {
                let (before, after) = (tries[retry], tries[retry + 1]);
                assert_eq!(after.1, Some(endpoint(request * 4 + retry)));
                let pause = after.0 - before.0;
                let bound = ceilings[retry] + Duration::from_millis(1);
                assert!(pause <= bound, "retry {retry}: paused {pause:?}");
                if retry == 0 {
                    first_pauses.push(pause);
                }
            }
        }
        let short = first_pauses
            .iter()
            .filter(|p| **p < Duration::from_millis(50))
            .count();
        assert!(
            (5..=35).contains(&short),
            "full jitter: {short} of 40 first pauses under half the ceiling"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_not_to_retry_ends_the_tries() {
        let (mut service, seen) = retrying(policy(4, generous()), &[503, 200]);
        assert_eq!(status_and_retries(&mut service).await, (200, 1));
        assert_eq!(seen.lock().unwrap().len(), 2);

        let (mut service, seen) = retrying(policy(4, generous()), &[500]);
        assert_eq!(status_and_retries(&mut service).await, (500, 0));
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    /// `ratio: 0`, `min_per_second: 1` over a 1 s window: one retry per window in all; a
    /// failed try the budget cannot retry is answered as it is.
    #[tokio::test(start_paused = true)]
    async fn an_exhausted_budget_returns_the_failed_try() {
        let budget = RetryBudget {
            ratio: 0.0,
            min_per_second: 1,
            window: Duration::from_secs(1),
        };
        let (mut service, seen) = retrying(policy(3, budget), &[503]);
        assert_eq!(status_and_retries(&mut service).await, (503, 1));
        assert_eq!(status_and_retries(&mut service).await, (503, 0));
        assert_eq!(seen.lock().unwrap().len(), 3);
        tokio::time::advance(Duration::from_millis(1100)).await;
        assert_eq!(status_and_retries(&mut service).await, (503, 1));
        assert_eq!(seen.lock().unwrap().len(), 5);
    }

    /// An upstream whose first tries (no endpoint to avoid) are slow every
    /// other time, 200..400 ms, else 10 ms; hedges answer in 10 ms. It reads
    /// the body, so that hedges (sent with a copy of the whole body) can go.
    #[derive(Clone)]
    struct HalfSlow {
        first_tries: Arc<Mutex<u64>>,
    }

    impl Service<Request<RequestBody>> for HalfSlow {
        type Response = Response<ResponseBody>;
        type Error = ProxyError;
        type Future = BoxFuture<'static, Result<Response<ResponseBody>, ProxyError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
            if let Some(picked) = request.extensions().get::<PickedEndpoint>() {
                picked.set(endpoint(usize::from(
                    request.extensions().get::<AvoidEndpoints>().is_some(),
                )));
            }
            let millis = if request.extensions().get::<AvoidEndpoints>().is_some() {
                10
            } else {
                let mut first_tries = self.first_tries.lock().unwrap();
                *first_tries += 1;
                match *first_tries {
                    n if n % 2 == 0 => 10,
                    n => 200 + n * 7 % 200,
                }
            };
            Box::pin(async move {
                let _ = http_body_util::BodyExt::collect(request.into_body()).await;
                tokio::time::sleep(Duration::from_millis(millis)).await;
                Ok(Response::new(ResponseBody::empty()))
            })
        }
    }

    /// The learned delay is a percentile of the first tries' latencies: hedges
    /// winning, and cancelling the slow first tries, do not pull it down.
    #[tokio::test(start_paused = true)]
    async fn a_learned_hedge_delay_does_not_drift_down_once_hedging() {
        let hedge = HedgePolicy {
            delay: crate::config::HedgeDelay::Percentile(95.0),
            max_extra: 1,
        };
        let upstream = HalfSlow {
            first_tries: Arc::default(),
        };
        let service =
            RetryLayer::new(Some(&policy(1, generous())), Some(&hedge), "test").layer(upstream);
        let learned = || service.shared.hedge.as_ref().unwrap().delay();
        for _ in 0..hedge::MIN_SAMPLES {
            assert_eq!(learned(), None);
            let mut service = service.clone();
            status_and_retries(&mut service).await;
        }
        let before = learned().unwrap();
        assert!(before >= Duration::from_millis(300), "{before:?}");
        for _ in 0..500 {
            let mut service = service.clone();
            status_and_retries(&mut service).await;
        }
        let after = learned().unwrap();
        assert!(
            after >= before && after <= Duration::from_millis(420),
            "p95 {before:?} before hedging, {after:?} after"
        );
    }
}
