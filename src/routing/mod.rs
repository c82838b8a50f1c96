//! L7 routing of an upstream's requests (`routes:`), the logical side of the
//! outbound stack (`docs/request-path.md`).
//!
//! Evaluation order, per request:
//! 1. the routes are tried in the order written; the first whose `match`
//!    holds (path, methods, headers, query, gRPC — all of them) is taken;
//!    no match takes the implicit `default` route (the upstream's own
//!    endpoints and policies);
//! 2. the route's request rewrite: headers (remove, set, add), then host,
//!    then path prefix;
//! 3. a `redirect` or `direct_response` answers now, with no upstream;
//! 4. otherwise the route's own stack (`stack::outbound`): error mapping,
//!    fault, rate limit, mirror, timeout, retries, then the split, which
//!    picks a backend per try and hands it to that backend's breaker,
//!    concurrency limit and balancer;
//! 5. the route's response header rules, on every response of the route
//!    (proxy-made errors and local answers included).
//!
//! The response carries a [`RouteLabel`] so that the observe layer counts it
//! under the route (`remora_route_*` metrics, `route` in the access log and
//! the span). The router is built once from the config and holds no state of
//! its own besides the per-route layers, so a reload rebuilds it wholesale.

pub mod backends;
pub mod mirror;
pub mod rewrite;
pub mod split;

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::{Request, Response};
use tower::Service;

use crate::body::{RequestBody, ResponseBody};
use crate::config::{DEFAULT_BACKEND, RouteConfig, RouteMatch};
use crate::middleware::observe::RouteLabel;
use crate::request_match::RequestMatch;
use crate::svc::RouteService;

use self::rewrite::{HeaderEdits, LocalAnswer, RequestRewrite};

/// What a route does with a request it matched.
enum Action {
    Forward(RouteService),
    Answer(LocalAnswer),
}

/// One route, compiled.
pub struct Route {
    label: RouteLabel,
    matcher: RequestMatch,
    rewrite: RequestRewrite,
    response_headers: HeaderEdits,
    action: Action,
}

impl Route {
    /// A route of `upstream`; `stack` builds its forwarding stack unless it
    /// answers locally.
    pub fn new(upstream: &str, config: &RouteConfig, stack: impl FnOnce() -> RouteService) -> Self {
        let action = match LocalAnswer::of(config) {
            Some(answer) => Action::Answer(answer),
            None => Action::Forward(stack()),
        };
        Self {
            label: RouteLabel::new(upstream, &config.name),
            matcher: RequestMatch::new(&config.matches),
            rewrite: RequestRewrite::new(config),
            response_headers: HeaderEdits::new(&config.response_headers),
            action,
        }
    }

    /// The route of unmatched requests: the upstream's own stack, as is.
    pub fn fallback(upstream: &str, stack: RouteService) -> Self {
        Self {
            label: RouteLabel::new(upstream, DEFAULT_BACKEND),
            matcher: RequestMatch::new(&RouteMatch::default()),
            rewrite: RequestRewrite::default(),
            response_headers: HeaderEdits::default(),
            action: Action::Forward(stack),
        }
    }
}

struct Table {
    routes: Vec<Route>,
    fallback: Route,
}

/// Picks a route for each request and runs it.
#[derive(Clone)]
pub struct Router {
    table: Arc<Table>,
}

impl Router {
    pub fn new(routes: Vec<Route>, fallback: Route) -> Self {
        Self {
            table: Arc::new(Table { routes, fallback }),
        }
    }
}

impl Service<Request<RequestBody>> for Router {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<ResponseBody>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<RequestBody>) -> Self::Future {
        let table = Arc::clone(&self.table);
        Box::pin(async move {
            let route = (table.routes.iter())
                .find(|route| route.matcher.matches(&request))
                .unwrap_or(&table.fallback);
            route.rewrite.apply(&mut request);
            let mut response = match &route.action {
                Action::Answer(answer) => answer.respond(&request),
                Action::Forward(stack) => {
                    let Ok(response) = stack.serve(request).await;
                    response
                }
            };
            route.response_headers.apply(response.headers_mut());
            response.extensions_mut().insert(route.label.clone());
            Ok(response)
        })
    }
}
