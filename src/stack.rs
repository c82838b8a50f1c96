//! The layer order of each direction (architecture §2), and nothing else.
//! Outermost first; the stack is built once per listener and type-erased once.
//! Optional layers (absent from the config) are left out, not passed through.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use crate::body::{RequestBody, ResponseBody};
use crate::config::{InboundConfig, TracingConfig, UpstreamConfig};
use crate::forward::Forward;
use crate::middleware::authorization::AuthorizationLayer;
use crate::middleware::circuit_breaker::CircuitBreakerLayer;
use crate::middleware::concurrency::ConcurrencyLimitLayer;
use crate::middleware::error_response::ErrorResponseLayer;
use crate::middleware::fault::FaultLayer;
use crate::middleware::observe::ObserveLayer;
use crate::middleware::rate_limit::RateLimitLayer;
use crate::middleware::retry::RetryLayer;
use crate::middleware::timeout::TimeoutLayer;
use crate::middleware::trace_context::TraceContextLayer;
use crate::telemetry::spans::SpanExporter;
use crate::tls::authorization::Authorizer;
use crate::upstream::{Direction, Upstream};

/// The service behind an HTTP listener.
pub type HttpService = BoxCloneSyncService<Request<Incoming>, Response<ResponseBody>, Infallible>;

/// App → upstream service.
pub fn outbound(
    upstream: Arc<Upstream>,
    config: &UpstreamConfig,
    tracing: &TracingConfig,
    access_log: f64,
    spans: Option<SpanExporter>,
) -> HttpService {
    let direction = Direction::Outbound;
    let name = config.name.as_str();
    let service = ServiceBuilder::new()
        .map_request(|request: Request<Incoming>| request.map(RequestBody::streaming))
        .layer(TraceContextLayer::new(tracing))
        .layer(ObserveLayer::new(
            direction,
            name,
            upstream.totals(),
            access_log,
            spans,
        ))
        .layer(ErrorResponseLayer)
        .option_layer(
            config
                .fault
                .as_ref()
                .map(|fault| FaultLayer::new(fault, name)),
        )
        .option_layer(
            (config.rate_limit.as_ref()).map(|limit| RateLimitLayer::new(limit, direction, name)),
        )
        .layer(TimeoutLayer::new(config.timeouts.request).counted(direction, name))
        .option_layer((config.retries.as_ref()).map(|policy| RetryLayer::new(policy, name)))
        .option_layer((upstream.circuit_breaker().cloned()).map(CircuitBreakerLayer::new))
        .option_layer(
            (config.max_concurrent_requests)
                .map(|limit| ConcurrencyLimitLayer::new(limit, direction, name)),
        )
        .service(Forward::new(upstream));
    BoxCloneSyncService::new(service)
}

/// Mesh → local application (`app` is named after `service.name`).
pub fn inbound(
    app: Arc<Upstream>,
    config: &InboundConfig,
    tracing: &TracingConfig,
    access_log: f64,
    spans: Option<SpanExporter>,
    authorizer: Option<Arc<Authorizer>>,
) -> HttpService {
    let direction = Direction::Inbound;
    let name = app.name().to_owned();
    let name = name.as_str();
    let service = ServiceBuilder::new()
        .map_request(|request: Request<Incoming>| request.map(RequestBody::streaming))
        .layer(TraceContextLayer::new(tracing))
        .layer(ObserveLayer::new(
            direction,
            name,
            app.totals(),
            access_log,
            spans,
        ))
        .layer(ErrorResponseLayer)
        .layer(AuthorizationLayer::new(authorizer))
        .option_layer(
            (config.rate_limit.as_ref()).map(|limit| RateLimitLayer::new(limit, direction, name)),
        )
        .option_layer(
            (config.max_concurrent_requests)
                .map(|limit| ConcurrencyLimitLayer::new(limit, direction, name)),
        )
        .layer(TimeoutLayer::new(config.timeout).counted(direction, name))
        .service(Forward::new(app));
    BoxCloneSyncService::new(service)
}
