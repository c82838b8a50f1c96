//! The layer order of each direction (architecture §2), and nothing else.
//! Outermost first; the stack is built once per listener and type-erased once.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

use crate::body::{RequestBody, ResponseBody};
use crate::config::RetryPolicy;
use crate::forward::Forward;
use crate::middleware::circuit_breaker::CircuitBreakerLayer;
use crate::middleware::error_response::ErrorResponseLayer;
use crate::middleware::observe::ObserveLayer;
use crate::middleware::retry::RetryLayer;
use crate::middleware::timeout::TimeoutLayer;
use crate::upstream::{Direction, Upstream};

/// The service behind an HTTP listener.
pub type HttpService = BoxCloneSyncService<Request<Incoming>, Response<ResponseBody>, Infallible>;

/// What a stack needs besides its upstream.
pub struct StackSettings {
    pub request_timeout: Option<Duration>,
    pub access_log: bool,
    /// Retries (outbound upstreams only).
    pub retries: Option<RetryPolicy>,
}

/// App → upstream service.
pub fn outbound(upstream: Arc<Upstream>, settings: &StackSettings) -> HttpService {
    build(Direction::Outbound, upstream, settings)
}

/// Mesh → local application.
pub fn inbound(app: Arc<Upstream>, settings: &StackSettings) -> HttpService {
    build(Direction::Inbound, app, settings)
}

// Both directions have the same layers until resilience, routing and
// authorization arrive; they then diverge here, in one readable place.
fn build(direction: Direction, upstream: Arc<Upstream>, settings: &StackSettings) -> HttpService {
    let service = ServiceBuilder::new()
        .map_request(|request: Request<Incoming>| request.map(RequestBody::streaming))
        .layer(ObserveLayer::new(
            direction,
            upstream.name(),
            settings.access_log,
        ))
        .layer(ErrorResponseLayer)
        .layer(TimeoutLayer::new(settings.request_timeout).counted(direction, upstream.name()))
        .option_layer(
            settings
                .retries
                .as_ref()
                .map(|policy| RetryLayer::new(policy, upstream.name())),
        )
        .option_layer(
            upstream
                .circuit_breaker()
                .cloned()
                .map(CircuitBreakerLayer::new),
        )
        .service(Forward::new(upstream));
    BoxCloneSyncService::new(service)
}
