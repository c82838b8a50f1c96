//! Observes every request's outcome — including the responses remora made
//! itself — and records it when the response body ends (or, for a request
//! dropped before its response head because the client went away, then, as
//! a `499` whose body counts as `abandoned`): request count and
//! duration by status code, proxy-made errors by kind, the upstream's totals
//! (admin `/upstreams` and `/errors`), and the access-log line; on an
//! upstream with `routes:`, the route's metrics and its name in the log line
//! and span (from the response's `RouteLabel`). The
//! listener's in-flight gauge goes up when a request arrives and down when its
//! response ends, fails, or is dropped (an RAII guard).
//! Recording at the body's end is what makes the duration cover streamed
//! bodies and lets the `grpc-status` from trailers be logged. With
//! `tracing.otlp`, a sampled request's span is handed to the exporter there
//! too (SERVER on inbound, CLIENT on outbound), with the retry count the
//! retry layer reported through a [`RetryCount`] extension. While a live tap
//! stream is open (`telemetry::tap`; checked with one atomic load, nothing
//! is captured otherwise), the access-log record — summary and outcome —
//! with the retries and, when a stream asked, the headers, is published to
//! it too.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use http::uri::PathAndQuery;
use http::{HeaderMap, Request, Response, header};
use metrics::Gauge;
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::body::{BodyEnd, ResponseBody};
use crate::clock;
use crate::context::ClientAddr;
use crate::context::Direction;
use crate::context::RetryCount;
use crate::context::TraceContext;
use crate::error::{ErrorDetail, ErrorKind};
use crate::headers::grpc_status;
use crate::telemetry::access_log::{self, RequestOutcome, RequestSummary};
use crate::telemetry::metrics::{RequestMetrics, in_flight_gauge};
use crate::telemetry::sinks::RequestSinks;
use crate::telemetry::spans::{SpanRecord, attribute_text};
use crate::telemetry::tap::{Tap, TapEvent};
use crate::telemetry::totals::{Finished, RequestTotals};

/// Which route answered a request: set by `routing` in the response's
/// extensions, read here. Defined with its reader, below `routing`.
#[derive(Clone)]
pub struct RouteLabel(Arc<LabelInner>);

struct LabelInner {
    name: String,
    metrics: RequestMetrics,
}

impl RouteLabel {
    /// The label of `route` of `upstream`, with its `remora_route_*` metrics.
    pub fn new(upstream: &str, route: &str) -> Self {
        Self(Arc::new(LabelInner {
            name: route.to_owned(),
            metrics: RequestMetrics::route(upstream, route),
        }))
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Counts one finished request of this route.
    pub fn record(&self, status: u16, duration: Duration, trace_id: Option<u128>) {
        self.0.metrics.record(status, duration, None, trace_id);
    }
}

/// Shared by all requests of one listener.
struct ListenerObserver {
    direction: Direction,
    upstream: String,
    metrics: RequestMetrics,
    totals: Arc<RequestTotals>,
    in_flight: Gauge,
    /// Share of requests logged: 0 (off) to 1 (all).
    access_log: f64,
    /// The span exporter (with `tracing.otlp`) and the live tap.
    sinks: RequestSinks,
}

/// One request in flight; takes itself off the gauge when dropped.
struct Active(Arc<ListenerObserver>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.in_flight.decrement(1.0);
    }
}

#[derive(Clone)]
pub struct ObserveLayer {
    observer: Arc<ListenerObserver>,
}

impl ObserveLayer {
    pub fn new(
        direction: Direction,
        upstream: &str,
        totals: Arc<RequestTotals>,
        access_log: f64,
        sinks: RequestSinks,
    ) -> Self {
        Self {
            observer: Arc::new(ListenerObserver {
                direction,
                upstream: upstream.to_owned(),
                metrics: RequestMetrics::new(direction, upstream),
                totals,
                in_flight: in_flight_gauge(direction, upstream),
                access_log,
                sinks,
            }),
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;
    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            observer: Arc::clone(&self.observer),
        }
    }
}

#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    observer: Arc<ListenerObserver>,
}

impl<S, B> Service<Request<B>> for Observe<S>
where
    S: Service<Request<B>, Response = Response<ResponseBody>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<ResponseBody>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let started = clock::now();
        let share = self.observer.access_log;
        let logged = share >= 1.0 || (share > 0.0 && fastrand::f64() < share);
        let tap = self
            .observer
            .sinks
            .tap
            .listening()
            .then(|| TapStart::of(&mut request, &self.observer.sinks.tap));
        let summary = (logged || tap.is_some()).then(|| RequestSummary::of(&request));
        self.observer.in_flight.increment(1.0);
        let active = Active(Arc::clone(&self.observer));
        let span = self
            .observer
            .sinks
            .spans
            .as_ref()
            .and_then(|_| SpanStart::of(&mut request));
        let trace_id = request
            .extensions()
            .get::<TraceContext>()
            .filter(|context| context.sampled)
            .map(|context| context.trace_id);
        let recording = Recording {
            active,
            started,
            logged,
            summary,
            tap,
            span,
            trace_id,
            method: request.method().clone(),
            path_and_query: request.uri().path_and_query().cloned(),
        };
        let response = self.inner.call(request);
        crate::svc::boxed(|| async move {
            let mut unanswered = Unanswered(Some(recording));
            let Ok(mut response) = response.await;
            let Some(mut recording) = unanswered.0.take() else {
                return Ok(response);
            };
            let answer = Answer {
                status: response.status().as_u16(),
                head_grpc_status: grpc_status(response.headers()),
                endpoint: response.body().served_by(),
                error: response.extensions().get::<ErrorKind>().copied(),
                error_detail: response.extensions().get::<ErrorDetail>().copied(),
                route: response.extensions().get::<RouteLabel>().cloned(),
                tap: (recording.tap.take()).map(|start| start.responded(response.headers())),
            };
            (response.body_mut()).on_end(Box::new(move |end| recording.record(answer, end)));
            Ok(response)
        })
    }
}

/// What a request's record needs, taken as it arrives. It is recorded once:
/// when the response body ends, or, should the request be dropped before its
/// response head (the client went away: its connection closed, or it reset
/// the stream), then, as a `499` (nginx's "client closed request") whose
/// body counts as `abandoned`.
struct Recording {
    active: Active,
    started: Instant,
    logged: bool,
    summary: Option<RequestSummary>,
    tap: Option<TapStart>,
    span: Option<SpanStart>,
    trace_id: Option<u128>,
    method: http::Method,
    path_and_query: Option<PathAndQuery>,
}

/// The status a request dropped before its response head is recorded with.
const CLIENT_CLOSED_REQUEST: u16 = 499;

/// What the response head said, for the record.
struct Answer {
    status: u16,
    head_grpc_status: Option<u16>,
    endpoint: Option<SocketAddr>,
    error: Option<ErrorKind>,
    error_detail: Option<ErrorDetail>,
    route: Option<RouteLabel>,
    tap: Option<TapResponded>,
}

/// A request in flight until its response head: records it as unanswered
/// if dropped first.
struct Unanswered(Option<Recording>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        let Some(mut recording) = self.0.take() else {
            return;
        };
        let answer = Answer {
            status: CLIENT_CLOSED_REQUEST,
            head_grpc_status: None,
            endpoint: None,
            error: None,
            error_detail: None,
            route: None,
            tap: (recording.tap.take()).map(|start| start.responded(&HeaderMap::new())),
        };
        let end = BodyEnd {
            abandoned: true,
            ..BodyEnd::default()
        };
        recording.record(answer, end);
    }
}

impl Recording {
    /// Metrics, totals, the route's metrics, the access log, the tap and the
    /// span: everything a finished request is recorded in.
    fn record(self, answer: Answer, end: BodyEnd) {
        let observer = &self.active.0;
        let Answer {
            status,
            error,
            endpoint,
            ..
        } = answer;
        let duration = clock::now().saturating_duration_since(self.started);
        observer
            .metrics
            .record(status, duration, error, self.trace_id);
        let grpc_status = end.grpc_status.or(answer.head_grpc_status);
        if let Some(grpc_status) = grpc_status {
            observer.metrics.record_grpc_status(grpc_status);
        }
        observer.totals.record(&Finished {
            status,
            duration,
            error,
            method: &self.method,
            path: self.path_and_query.as_ref().map_or("/", |pq| pq.path()),
            endpoint,
        });
        if let Some(route) = &answer.route {
            route.record(status, duration, self.trace_id);
        }
        let route_name = answer.route.as_ref().map(RouteLabel::name);
        if let Some(summary) = self.summary {
            let outcome = RequestOutcome {
                direction: observer.direction.as_str(),
                upstream: &observer.upstream,
                route: route_name,
                endpoint,
                status,
                grpc_status,
                duration_ms: duration.as_secs_f64() * 1e3,
                bytes: end.bytes,
                response_body: end.unfinished(),
                error,
                error_detail: answer.error_detail,
            };
            if self.logged {
                access_log::log(&summary, &outcome);
            }
            if let Some(tap) = answer.tap {
                let retries = tap.retries.get();
                let event = TapEvent::new(&summary, &outcome, duration, retries, tap.headers);
                observer.sinks.tap.publish(event);
            }
        }
        if let (Some(span), Some(exporter)) = (self.span, &observer.sinks.spans) {
            exporter.submit(SpanRecord {
                context: span.context,
                direction: observer.direction,
                start: span.start,
                duration,
                method: span.method,
                path: span.path,
                host: span.host,
                client: span.client,
                status,
                error,
                upstream: observer.upstream.clone(),
                route: route_name.map(str::to_owned),
                endpoint,
                retries: span.retries.get(),
            });
        }
    }
}

/// What the tap needs from a request besides its [`RequestSummary`], taken
/// only while a tap stream is open.
struct TapStart {
    retries: RetryCount,
    /// While a stream wants headers: the request's, then the response's.
    request_headers: Option<HeaderMap>,
}

/// [`TapStart`] once the response head is known.
struct TapResponded {
    retries: RetryCount,
    headers: Option<Box<(HeaderMap, HeaderMap)>>,
}

impl TapStart {
    /// Gives the request a [`RetryCount`] (shared with the span's, if any).
    fn of<B>(request: &mut Request<B>, tap: &Tap) -> Self {
        Self {
            retries: request
                .extensions_mut()
                .get_or_insert_default::<RetryCount>()
                .clone(),
            request_headers: tap.wants_headers().then(|| request.headers().clone()),
        }
    }

    fn responded(self, response_headers: &HeaderMap) -> TapResponded {
        TapResponded {
            retries: self.retries,
            headers: (self.request_headers)
                .map(|request| Box::new((request, response_headers.clone()))),
        }
    }
}

/// What a span needs from the request, taken before it is passed on.
struct SpanStart {
    context: TraceContext,
    start: SystemTime,
    method: http::Method,
    path: String,
    host: Option<String>,
    client: Option<std::net::SocketAddr>,
    retries: RetryCount,
}

impl SpanStart {
    /// `None` unless the request's trace is sampled. Gives the request a
    /// [`RetryCount`] for the retry layer to fill in.
    fn of<B>(request: &mut Request<B>) -> Option<Self> {
        let context = *request.extensions().get::<TraceContext>()?;
        if !context.sampled {
            return None;
        }
        let host = request.uri().host().map(attribute_text).or_else(|| {
            let host = request.headers().get(header::HOST)?.to_str().ok()?;
            let authority: http::uri::Authority = host.parse().ok()?;
            Some(attribute_text(authority.host()))
        });
        Some(Self {
            context,
            start: SystemTime::now(),
            method: request.method().clone(),
            path: attribute_text(request.uri().path()),
            host,
            client: request.extensions().get::<ClientAddr>().map(|c| c.0),
            retries: request
                .extensions_mut()
                .get_or_insert_default::<RetryCount>()
                .clone(),
        })
    }
}
