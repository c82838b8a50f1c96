//! The layer order of each direction (`docs/request-path.md`), and nothing else.
//! Outermost first; the stack is built once per listener and type-erased once.
//! Optional layers (absent from the config) are left out, not passed through.
//! Outbound, the logical layers (per route) and the concrete ones (per
//! backend) are built by separate functions and type-erased at their edge.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tower::{Layer, ServiceBuilder};

use crate::body::RequestBody;
use crate::config::{
    AdaptiveConcurrency, DEFAULT_BACKEND, HedgePolicy, InboundConfig, RetryPolicy, RouteConfig,
    TracingConfig, UpstreamConfig,
};
use crate::context::Direction;
use crate::forward::Forward;
use crate::middleware::authorization::AuthorizationLayer;
use crate::middleware::circuit_breaker::CircuitBreakerLayer;
use crate::middleware::concurrency::ConcurrencyLimitLayer;
use crate::middleware::error_response::ErrorResponseLayer;
use crate::middleware::fallback::FallbackLayer;
use crate::middleware::fault::FaultLayer;
use crate::middleware::jwt::JwtLayer;
use crate::middleware::normalize_path::NormalizePathLayer;
use crate::middleware::observe::ObserveLayer;
use crate::middleware::rate_limit::RateLimitLayer;
use crate::middleware::request_token::RequestTokenLayer;
use crate::middleware::retry::RetryLayer;
use crate::middleware::timeout::TimeoutLayer;
use crate::middleware::trace_context::TraceContextLayer;
use crate::routing::backends::Backends;
use crate::routing::mirror::MirrorLayer;
use crate::routing::split::{Split, SplitTarget};
use crate::routing::{Route, Router};
use crate::svc::{ConcreteService, HttpService, RouteService, SharedService};
use crate::telemetry::metrics::route_backend_counter;
use crate::telemetry::sinks::RequestSinks;
use crate::tls::authorization::Authorizer;
use crate::upgrade::Upgrades;
use crate::upstream::Upstream;

/// App → upstream service. With `routes:`, the router sits where the
/// upstream's policy layers would (steps 4–8, per route: logical), and each
/// route ends in a split over its backends' stacks (steps 9–12: concrete).
pub fn outbound(
    backends: &Backends,
    config: &UpstreamConfig,
    tracing: &TracingConfig,
    access_log: f64,
    sinks: RequestSinks,
) -> HttpService {
    let direction = Direction::Outbound;
    let name = config.name.as_str();
    let shared = UpstreamLayers::new(config);
    let concrete = |backend: &Arc<Upstream>| -> ConcreteService {
        let service = ServiceBuilder::new()
            .option_layer((backend.circuit_breaker().cloned()).map(CircuitBreakerLayer::new))
            .option_layer(shared.concurrency.clone())
            .service(Forward::new(Arc::clone(backend)));
        SharedService::new(service)
    };
    let concrete: BTreeMap<&str, ConcreteService> = (backends.iter())
        .map(|(backend, upstream)| (backend, concrete(upstream)))
        .collect();
    let fallback_of = |route: Option<&RouteConfig>| {
        let config = route
            .and_then(|r| r.fallback.as_ref())
            .or(config.fallback.as_ref())?;
        // The fallback layer sits outside the timeout layer: the request to
        // a fallback backend is held to the route's timeout on its own.
        let timeout = shared.timeout_of(route);
        FallbackLayer::new(config, name, |backend| {
            let backend = concrete.get(backend)?.clone();
            let bounded = TimeoutLayer::new(timeout).counted(Direction::Outbound, name);
            Some(SharedService::new(bounded.layer(backend)))
        })
    };
    let fallback = logical(
        &shared,
        None,
        None,
        fallback_of(None),
        concrete[DEFAULT_BACKEND].clone(),
    );
    let service = if config.routes.is_empty() {
        fallback
    } else {
        let routes = (config.routes.iter())
            .map(|route| {
                Route::new(name, route, || {
                    let split = split(name, route, &concrete);
                    let mirror = (route.mirror.as_ref()).and_then(|mirror| {
                        let shadow = Forward::new(Arc::clone(backends.get(&mirror.backend)?));
                        Some(MirrorLayer::new(mirror, shadow, name, &route.name))
                    });
                    logical(
                        &shared,
                        Some(route),
                        mirror,
                        fallback_of(Some(route)),
                        split,
                    )
                })
            })
            .collect();
        let router = Router::new(routes, Route::fallback(name, fallback));
        SharedService::new(router)
    };
    let upgrades = Upgrades::new(&config.upgrades);
    let service = ServiceBuilder::new()
        .map_request(move |request| RequestBody::client_request(upgrades.screen(request)))
        .layer(TraceContextLayer::new(tracing))
        .layer(ObserveLayer::new(
            direction,
            name,
            backends.upstream().totals(),
            access_log,
            sinks,
        ))
        .layer(NormalizePathLayer::new(&config.path_normalization))
        .service(service);
    SharedService::new(service)
}

/// An upstream's policy layers, built once: routes without a policy of their
/// own share the upstream's (one rate-limit bucket, one retry budget, one
/// concurrency limit across its routes).
struct UpstreamLayers {
    name: String,
    fault: Option<FaultLayer>,
    rate_limit: Option<RateLimitLayer>,
    timeout: Option<Duration>,
    retry_policy: Option<RetryPolicy>,
    hedge: Option<HedgePolicy>,
    retries: Option<RetryLayer>,
    concurrency: Option<ConcurrencyLimitLayer>,
    request_token: Option<RequestTokenLayer>,
}

impl UpstreamLayers {
    fn new(config: &UpstreamConfig) -> Self {
        let direction = Direction::Outbound;
        let name = config.name.as_str();
        Self {
            name: name.to_owned(),
            fault: (config.fault.as_ref()).map(|fault| FaultLayer::new(fault, name)),
            rate_limit: (config.rate_limit.as_ref())
                .map(|limit| RateLimitLayer::new(limit, direction, name)),
            timeout: config.timeouts.request,
            retry_policy: config.retries.clone(),
            hedge: config.hedge.clone(),
            retries: (config.retries.is_some() || config.hedge.is_some())
                .then(|| RetryLayer::new(config.retries.as_ref(), config.hedge.as_ref(), name)),
            concurrency: concurrency_limit(
                config.max_concurrent_requests,
                config.adaptive_concurrency.as_ref(),
                direction,
                name,
            ),
            request_token: config.request_token.as_ref().map(RequestTokenLayer::new),
        }
    }

    /// The request timeout of `route` (its own, or the upstream's), or of
    /// the upstream when `route` is `None`.
    fn timeout_of(&self, route: Option<&RouteConfig>) -> Option<Duration> {
        route.and_then(|r| r.timeout).or(self.timeout)
    }
}

/// The listener's concurrency limit: fixed or adaptive (validation allows
/// one of them), or none.
fn concurrency_limit(
    fixed: Option<u32>,
    adaptive: Option<&AdaptiveConcurrency>,
    direction: Direction,
    name: &str,
) -> Option<ConcurrencyLimitLayer> {
    match (adaptive, fixed) {
        (Some(adaptive), _) => Some(ConcurrencyLimitLayer::adaptive(adaptive, direction, name)),
        (None, Some(limit)) => Some(ConcurrencyLimitLayer::new(limit, direction, name)),
        (None, None) => None,
    }
}

/// The logical layers (steps 4–8) of a route, or of the upstream itself when
/// `route` is `None`: each of the route's policies replaces the upstream's.
fn logical(
    upstream: &UpstreamLayers,
    route: Option<&RouteConfig>,
    mirror: Option<MirrorLayer>,
    fallback: Option<FallbackLayer>,
    backends: ConcreteService,
) -> RouteService {
    let direction = Direction::Outbound;
    let name = upstream.name.as_str();
    let fault = (route.and_then(|r| r.fault.as_ref()))
        .map(|fault| FaultLayer::new(fault, name))
        .or_else(|| upstream.fault.clone());
    let rate_limit = (route.and_then(|r| r.rate_limit.as_ref()))
        .map(|limit| RateLimitLayer::new(limit, direction, name))
        .or_else(|| upstream.rate_limit.clone());
    let timeout = upstream.timeout_of(route);
    // A route's `retries` or `hedge` replaces the upstream's; the other of the
    // two is the upstream's (one layer does both, sharing one budget).
    let retries = match route.filter(|r| r.retries.is_some() || r.hedge.is_some()) {
        Some(route) => Some(RetryLayer::new(
            route.retries.as_ref().or(upstream.retry_policy.as_ref()),
            route.hedge.as_ref().or(upstream.hedge.as_ref()),
            name,
        )),
        None => upstream.retries.clone(),
    };
    let request_token = (route.and_then(|r| r.request_token.as_ref()))
        .map(RequestTokenLayer::new)
        .or_else(|| upstream.request_token.clone());
    let service = ServiceBuilder::new()
        .layer(ErrorResponseLayer)
        .option_layer(request_token)
        .option_layer(fallback)
        .option_layer(fault)
        .option_layer(rate_limit)
        .option_layer(mirror)
        .layer(TimeoutLayer::new(timeout).counted(direction, name))
        .option_layer(retries)
        .service(backends);
    SharedService::new(service)
}

/// A route's backends (`backend`, `split`, or the upstream's own endpoints)
/// behind one weighted split.
fn split(
    upstream: &str,
    route: &RouteConfig,
    concrete: &BTreeMap<&str, ConcreteService>,
) -> ConcreteService {
    let weighted: Vec<(&str, u32)> = match (&route.split, &route.backend) {
        (Some(split), _) => (split.iter())
            .map(|target| (target.backend.as_str(), target.weight))
            .collect(),
        (None, Some(backend)) => vec![(backend.as_str(), 1)],
        (None, None) => vec![(DEFAULT_BACKEND, 1)],
    };
    let targets = (weighted.into_iter())
        .filter_map(|(backend, weight)| {
            Some(SplitTarget {
                weight,
                service: concrete.get(backend)?.clone(),
                tries: route_backend_counter(upstream, &route.name, backend),
            })
        })
        .collect();
    SharedService::new(Split::new(targets, route.sticky.clone()))
}

/// Mesh → local application (`app` is named after `service.name`).
pub fn inbound(
    app: Arc<Upstream>,
    config: &InboundConfig,
    tracing: &TracingConfig,
    access_log: f64,
    sinks: RequestSinks,
    authorizer: Option<Arc<Authorizer>>,
) -> HttpService {
    let direction = Direction::Inbound;
    let name = app.name().to_owned();
    let name = name.as_str();
    let upgrades = Upgrades::new(&config.upgrades);
    let service = ServiceBuilder::new()
        .map_request(move |request| RequestBody::client_request(upgrades.screen(request)))
        .layer(TraceContextLayer::new(tracing))
        .layer(ObserveLayer::new(
            direction,
            name,
            app.totals(),
            access_log,
            sinks,
        ))
        .layer(NormalizePathLayer::new(&config.path_normalization))
        .layer(ErrorResponseLayer)
        .option_layer(config.jwt.as_ref().map(JwtLayer::new))
        .layer(AuthorizationLayer::new(
            authorizer,
            config.authorization.as_ref(),
            name,
        ))
        .option_layer(
            (config.rate_limit.as_ref()).map(|limit| RateLimitLayer::new(limit, direction, name)),
        )
        .option_layer(concurrency_limit(
            config.max_concurrent_requests,
            config.adaptive_concurrency.as_ref(),
            direction,
            name,
        ))
        .layer(TimeoutLayer::new(config.timeout).counted(direction, name))
        .service(Forward::new(app));
    SharedService::new(service)
}
