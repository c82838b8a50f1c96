//! Load shedding: at most so many requests of a listener in flight at once —
//! `max_concurrent_requests` (a fixed limit) or `adaptive_concurrency` (a
//! limit that follows the upstream's latency, [`vegas`]). A request over the
//! limit is refused at once with [`ProxyError::Overloaded`] (503
//! `overloaded`, gRPC UNAVAILABLE); nothing waits for a slot, so there is no
//! queue to grow.
//!
//! A request holds its slot until its response body has ended — streamed
//! bodies and long gRPC streams count for as long as they run — or until it
//! fails or is cancelled. The slot is an RAII guard: dropping the request's
//! future (client gone, timeout) or the response body frees it, so slots
//! cannot leak. The count is one atomic integer, incremented only below the
//! limit (compare-and-swap), so the limit is never exceeded, even briefly;
//! an adaptive limit that falls below the count admits nothing until enough
//! requests end.
//!
//! With `adaptive_concurrency`, each admitted request that gets a response
//! head is a sample for the limit: its time from admission to the head and
//! the requests in flight when it was admitted, or a *drop* when the
//! upstream answered 503, 429 or gRPC `RESOURCE_EXHAUSTED`, or timed out.
//! A try cut off by the request or per-try timeout above this layer (its
//! future dropped at or past the request's `Deadline`, before a response
//! head) is a drop too. Failures that say nothing about the upstream's
//! latency (connect errors, resets) and requests cancelled before their
//! deadline (the client went away) are no sample.
//!
//! Gauges `remora_concurrency_limit`, `remora_concurrency_in_flight` and (adaptive)
//! `remora_concurrency_rtt_noload_seconds`; counter `remora_shed_requests_total`.

pub mod vegas;

use std::future::ready;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::future::BoxFuture;
use http::{Request, Response, StatusCode};
use metrics::Counter;
use tower::{Layer, Service};

use crate::body::ResponseBody;
use crate::clock;
use crate::config::AdaptiveConcurrency;
use crate::context::{Deadline, Direction};
use crate::error::{ErrorKind, ProxyError};
use crate::headers::grpc_status;
use crate::telemetry::metrics::{ConcurrencyGauges, shed_counter};

use self::vegas::{Bounds, Sample, Vegas};

/// gRPC `RESOURCE_EXHAUSTED`.
const GRPC_RESOURCE_EXHAUSTED: u16 = 8;

/// The slots of one listener, shared by every clone of its layer.
struct Slots {
    limit: AtomicU32,
    in_flight: AtomicU32,
    upstream: String,
    shed: Counter,
    gauges: ConcurrencyGauges,
    /// The algorithm that moves `limit`, when it is adaptive.
    adaptive: Option<Mutex<Vegas>>,
}

impl Slots {
    /// A slot, when fewer than `limit` are taken; with the requests then in
    /// flight, this one included.
    fn try_acquire(self: &Arc<Self>) -> Option<(Slot, u32)> {
        let limit = self.limit.load(Ordering::Acquire);
        let taken = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                (taken < limit).then_some(taken + 1)
            })
            .ok()?;
        self.gauges.in_flight.increment(1);
        Some((Slot(Arc::clone(self)), taken + 1))
    }

    /// Feeds one sample to the adaptive limit.
    fn sample(&self, sample: Sample) {
        let Some(adaptive) = &self.adaptive else {
            return;
        };
        let mut vegas = adaptive
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let limit = vegas.update(sample, clock::now().into_std());
        if let (Some(rtt), Some(gauge)) = (vegas.rtt_noload(), &self.gauges.rtt_noload) {
            gauge.set(rtt.as_secs_f64());
        }
        drop(vegas);
        self.limit.store(limit, Ordering::Release);
        self.gauges.limit.set(f64::from(limit));
    }
}

/// One admitted request; frees its slot when dropped.
struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.gauges.in_flight.decrement(1);
    }
}

/// Limits the requests of one listener in flight at once.
#[derive(Clone)]
pub struct ConcurrencyLimitLayer {
    slots: Arc<Slots>,
}

impl ConcurrencyLimitLayer {
    /// A fixed limit (`max_concurrent_requests`).
    pub fn new(limit: u32, direction: Direction, upstream: &str) -> Self {
        Self::with(limit, None, direction, upstream)
    }

    /// A limit that follows the upstream's latency (`adaptive_concurrency`).
    pub fn adaptive(config: &AdaptiveConcurrency, direction: Direction, upstream: &str) -> Self {
        let bounds = Bounds {
            initial: config.initial_limit,
            min: config.min_limit,
            max: config.max_limit,
        };
        let vegas = Vegas::new(bounds, Instant::now());
        Self::with(vegas.limit(), Some(Mutex::new(vegas)), direction, upstream)
    }

    fn with(
        limit: u32,
        adaptive: Option<Mutex<Vegas>>,
        direction: Direction,
        upstream: &str,
    ) -> Self {
        let gauges = ConcurrencyGauges::new(direction, upstream, adaptive.is_some());
        gauges.limit.set(f64::from(limit));
        Self {
            slots: Arc::new(Slots {
                limit: AtomicU32::new(limit),
                in_flight: AtomicU32::new(0),
                upstream: upstream.to_owned(),
                shed: shed_counter(direction, upstream),
                gauges,
                adaptive,
            }),
        }
    }

    /// Requests holding a slot now.
    pub fn in_flight(&self) -> u32 {
        self.slots.in_flight.load(Ordering::Acquire)
    }

    /// The limit now.
    pub fn limit(&self) -> u32 {
        self.slots.limit.load(Ordering::Acquire)
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;
    fn layer(&self, inner: S) -> ConcurrencyLimit<S> {
        ConcurrencyLimit {
            inner,
            slots: Arc::clone(&self.slots),
        }
    }
}

#[derive(Clone)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    slots: Arc<Slots>,
}

impl<S, B> Service<Request<B>> for ConcurrencyLimit<S>
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
        let Some((slot, in_flight)) = self.slots.try_acquire() else {
            self.slots.shed.increment(1);
            return Box::pin(ready(Err(ProxyError::Overloaded {
                upstream: self.slots.upstream.clone(),
                limit: self.slots.limit.load(Ordering::Acquire),
            })));
        };
        // Only an adaptive limit learns from the try: a fixed one reads no
        // clock, watches no cut-off and classifies no answer.
        let adaptive = self.slots.adaptive.is_some().then(|| {
            let cut_off = CutOffWatch {
                slots: Arc::clone(&self.slots),
                deadline: request.extensions().get::<Deadline>().map(|d| d.0),
            };
            (clock::now().into_std(), cut_off)
        });
        let response = self.inner.call(request);
        crate::svc::boxed(|| async move {
            // On error (or if this future is dropped) `slot` drops here.
            let result = response.await;
            if let Some((admitted, cut_off)) = adaptive {
                cut_off.disarm();
                if let Some(sample) = sample_of(&result, admitted, in_flight) {
                    slot.0.sample(sample);
                }
            }
            let mut response = result?;
            response.body_mut().on_end(Box::new(move |_end| drop(slot)));
            Ok(response)
        })
    }
}

/// Dropped with its request's future before the response head: at or past
/// the request's deadline, a timeout cut the try off, which is a drop for the
/// adaptive limit; earlier, the client went away, which says nothing.
struct CutOffWatch {
    slots: Arc<Slots>,
    deadline: Option<tokio::time::Instant>,
}

impl CutOffWatch {
    /// The try ended (answered or failed): its result is the sample.
    fn disarm(mut self) {
        self.deadline = None;
    }
}

impl Drop for CutOffWatch {
    fn drop(&mut self) {
        if (self.deadline).is_some_and(|deadline| clock::now() >= deadline) {
            self.slots.sample(Sample::Dropped);
        }
    }
}

/// What a try's result tells an adaptive limit, if anything.
fn sample_of(
    result: &Result<Response<ResponseBody>, ProxyError>,
    admitted: Instant,
    in_flight: u32,
) -> Option<Sample> {
    match result {
        Ok(response) => {
            let status = response.status();
            let shed = status == StatusCode::SERVICE_UNAVAILABLE
                || status == StatusCode::TOO_MANY_REQUESTS
                || grpc_status(response.headers()) == Some(GRPC_RESOURCE_EXHAUSTED);
            Some(if shed {
                Sample::Dropped
            } else {
                Sample::Answered {
                    rtt: clock::now().into_std().saturating_duration_since(admitted),
                    in_flight,
                }
            })
        }
        Err(error) if error.kind() == ErrorKind::Timeout => Some(Sample::Dropped),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    use tokio::sync::oneshot;
    use tower::ServiceExt;
    use tower::util::BoxCloneSyncService;

    type Inner = BoxCloneSyncService<Request<Behaviour>, Response<ResponseBody>, ProxyError>;

    /// What the inner service does with a request (carried as its body).
    enum Behaviour {
        Answer,
        Fail,
        /// Answers when the sender fires or is dropped.
        WaitFor(oneshot::Receiver<()>),
    }

    fn limited(limit: u32) -> (ConcurrencyLimitLayer, ConcurrencyLimit<Inner>) {
        let inner = tower::service_fn(|request: Request<Behaviour>| async move {
            match request.into_body() {
                Behaviour::Answer => Ok(Response::new(ResponseBody::local("streamed body"))),
                Behaviour::Fail => Err(ProxyError::Timeout(Duration::from_secs(1))),
                Behaviour::WaitFor(signal) => {
                    let _ = signal.await;
                    Ok(Response::new(ResponseBody::local("late")))
                }
            }
        });
        let layer = ConcurrencyLimitLayer::new(limit, Direction::Outbound, "unit");
        let service = layer.layer(Inner::new(inner));
        (layer, service)
    }

    fn adaptive() -> (ConcurrencyLimitLayer, ConcurrencyLimit<Inner>) {
        let config = AdaptiveConcurrency {
            min_limit: 2,
            max_limit: 100,
            initial_limit: 20,
        };
        let inner = tower::service_fn(|request: Request<Behaviour>| async move {
            match request.into_body() {
                Behaviour::WaitFor(signal) => {
                    let _ = signal.await;
                    Ok(Response::new(ResponseBody::local("late")))
                }
                _ => Ok(Response::new(ResponseBody::local("fast"))),
            }
        });
        let layer = ConcurrencyLimitLayer::adaptive(&config, Direction::Outbound, "unit");
        let service = layer.layer(Inner::new(inner));
        (layer, service)
    }

    async fn call(
        service: &mut ConcurrencyLimit<Inner>,
        behaviour: Behaviour,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        service
            .ready()
            .await
            .unwrap()
            .call(Request::new(behaviour))
            .await
    }

    #[tokio::test]
    async fn the_slot_is_held_until_the_response_body_ends() {
        let (layer, mut service) = limited(3);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(call(&mut service, Behaviour::Answer).await.unwrap());
        }
        assert_eq!(layer.in_flight(), 3);
        match call(&mut service, Behaviour::Answer).await {
            Err(ProxyError::Overloaded { upstream, limit }) => {
                assert_eq!((upstream.as_str(), limit), ("unit", 3));
            }
            other => panic!("expected Overloaded, got {:?}", other.map(|_| ())),
        }
        // Reading one body to its end frees its slot; the next is admitted.
        let body = held.pop().unwrap().into_body();
        http_body_util::BodyExt::collect(body).await.unwrap();
        assert_eq!(layer.in_flight(), 2);
        held.push(call(&mut service, Behaviour::Answer).await.unwrap());
        assert_eq!(layer.in_flight(), 3);
        // A body dropped unread frees its slot too.
        held.clear();
        assert_eq!(layer.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_failed_request_frees_its_slot_at_once() {
        let (layer, mut service) = limited(1);
        assert!(matches!(
            call(&mut service, Behaviour::Fail).await,
            Err(ProxyError::Timeout(_))
        ));
        assert_eq!(layer.in_flight(), 0);
        assert!(call(&mut service, Behaviour::Answer).await.is_ok());
    }

    #[tokio::test]
    async fn a_cancelled_request_frees_its_slot() {
        let (layer, mut service) = limited(1);
        let (_answer, waiting) = oneshot::channel();
        let pending = service
            .ready()
            .await
            .unwrap()
            .call(Request::new(Behaviour::WaitFor(waiting)));
        assert_eq!(layer.in_flight(), 1);
        assert!(matches!(
            call(&mut service, Behaviour::Answer).await,
            Err(ProxyError::Overloaded { .. })
        ));
        drop(pending);
        assert_eq!(layer.in_flight(), 0);
        assert!(call(&mut service, Behaviour::Answer).await.is_ok());
    }

    #[tokio::test]
    async fn slow_requests_in_flight_count_until_they_answer() {
        let (layer, mut service) = limited(2);
        let mut answers = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..2 {
            let (answer, waiting) = oneshot::channel();
            answers.push(answer);
            let future = service
                .ready()
                .await
                .unwrap()
                .call(Request::new(Behaviour::WaitFor(waiting)));
            tasks.push(tokio::spawn(future));
        }
        assert!(matches!(
            call(&mut service, Behaviour::Answer).await,
            Err(ProxyError::Overloaded { .. })
        ));
        // Release one: its response (body dropped by the task) frees a slot.
        answers.remove(0).send(()).unwrap();
        drop(tasks.remove(0).await.unwrap().unwrap());
        assert_eq!(layer.in_flight(), 1);
        assert!(call(&mut service, Behaviour::Answer).await.is_ok());
        drop(answers);
        for task in tasks {
            drop(task.await.unwrap().unwrap());
        }
        assert_eq!(layer.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_try_cut_off_at_its_deadline_shrinks_the_adaptive_limit() {
        let (layer, mut service) = adaptive();
        // The first probe: answered one at a time, then the limit resumes.
        for _ in 0..vegas::PROBE_SAMPLES {
            drop(call(&mut service, Behaviour::Answer).await.unwrap());
        }
        assert_eq!(layer.limit(), 20);
        tokio::time::sleep(vegas::WINDOW_TIME).await;
        let hanging = |deadline| {
            let (answer, waiting) = oneshot::channel::<()>();
            let mut request = Request::new(Behaviour::WaitFor(waiting));
            request.extensions_mut().insert(Deadline(deadline));
            (answer, request)
        };
        // Cancelled before its deadline (the client went away): no sample.
        let far = tokio::time::Instant::now() + Duration::from_secs(60);
        let (_answer, request) = hanging(far);
        let pending = service.ready().await.unwrap().call(request);
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(pending);
        assert_eq!(layer.limit(), 20);
        // Dropped by a timeout at its deadline: a drop, the limit shrinks.
        let near = tokio::time::Instant::now() + Duration::from_millis(50);
        let (_answer, request) = hanging(near);
        let pending = service.ready().await.unwrap().call(request);
        assert!(tokio::time::timeout_at(near, pending).await.is_err());
        assert_eq!(layer.limit(), 18);
        assert_eq!(layer.in_flight(), 0);
    }
}
