//! The transparent outbound listener's connections. For each one: recover
//! the original destination; a destination listed in a tcp upstream's
//! `addresses` is proxied to that upstream at once; otherwise the protocol is
//! detected (skipped for `opaque_ports`, see `detect`). HTTP/1 and HTTP/2
//! connections are served by hyper and each request is routed (`routes`) to
//! its upstream's outbound stack — the same stack as the upstream's explicit
//! listener, so its rate limit, breaker and metrics see both. Opaque
//! connections go to the upstream whose `addresses` hold the destination.
//! What matches nothing is passed through to the original destination or
//! refused (`transparent.unmatched`): HTTP 502 `no_route`, or a closed TCP
//! connection — unless, with `refuse`, the egress allow-list lets it through
//! (`egress`: by CIDR, Host, or a TLS ClientHello's server name). A connection made straight to the listener (not redirected)
//! has no destination to pass through to, so only its routed requests work.
//!
//! The route table follows configuration reloads ([`TransparentOutbound::set_routes`]):
//! each request (and each new opaque connection) is routed by the table in
//! force when it arrives, on connections opened before the reload too.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::svc::SharedService;
use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::TcpStream;
use tower::{Service, ServiceExt};

use super::detect::{Detected, detect};
use super::egress::EgressPolicy;
use super::original_dst::original_destination;
use super::passthrough::Passthrough;
use super::routes::RouteTable;
use crate::body::ResponseBody;
use crate::body::client::discard_body;
use crate::client::ClientSettings;
use crate::config::ConnectionPool;
use crate::config::{TransparentConfig, Unmatched};
use crate::drain::Drain;
use crate::error::ProxyError;
use crate::headers::is_grpc;
use crate::http_connection::{Caller, HttpProtocol, ListenerRules, serve_http};
use crate::middleware::error_response::error_response;
use crate::telemetry::metrics;

/// Client connections of the transparent listener that move no byte for
/// this long are shut down gracefully (the routed upstreams' streams keep
/// their own `timeouts.idle`).
const CONNECTION_IDLE: Duration = Duration::from_secs(60);

/// Connect timeout towards an original destination (passthrough).
const PASSTHROUGH_CONNECT: Duration = Duration::from_secs(1);

/// Everything the transparent listener needs, shared by its connections.
pub struct TransparentOutbound {
    routes: ArcSwap<RouteTable>,
    detect_timeout: Duration,
    opaque_ports: Vec<u16>,
    /// With `unmatched: refuse`, what unmatched traffic may still reach;
    /// `None` with `passthrough`: all of it.
    egress: Option<EgressPolicy>,
}

impl TransparentOutbound {
    pub fn new(config: &TransparentConfig, routes: RouteTable) -> Self {
        // Every series at 0 from the start.
        for protocol in [Detected::Http1, Detected::Http2, Detected::Opaque] {
            metrics::transparent_connections(protocol.as_str()).increment(0);
            for allowed in [true, false] {
                metrics::transparent_unmatched(protocol.as_str(), action(allowed)).increment(0);
            }
        }
        Self {
            routes: ArcSwap::from_pointee(routes),
            detect_timeout: config.detect_timeout,
            opaque_ports: config.opaque_ports.clone(),
            egress: (config.unmatched == Unmatched::Refuse)
                .then(|| EgressPolicy::new(config.egress.allow.clone())),
        }
    }

    /// Routes from now on by `routes` (a configuration reload).
    pub fn set_routes(&self, routes: RouteTable) {
        self.routes.store(Arc::new(routes));
    }

    /// Serves one redirected connection until it ends.
    pub(crate) async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        caller: Caller,
        rules: &ListenerRules,
        drain: Drain,
    ) {
        let destination = original_destination(&stream);
        let routes = self.routes.load_full();
        let route = destination.and_then(|destination| routes.for_destination(destination));
        let opaque_port = destination.is_some_and(|d| self.opaque_ports.contains(&d.port()));
        let protocol = match route {
            Some(route) if route.http.is_none() => Detected::Opaque,
            _ if opaque_port => Detected::Opaque,
            _ => detect(&stream, self.detect_timeout).await,
        };
        metrics::transparent_connections(protocol.as_str()).increment(1);
        let passthrough = destination.map(|destination| {
            Passthrough::new(
                destination,
                ClientSettings {
                    connect_timeout: PASSTHROUGH_CONNECT,
                    idle_timeout: CONNECTION_IDLE,
                    tls: None,
                    pool: ConnectionPool::default(),
                },
            )
        });
        let http = match protocol {
            Detected::Http1 => HttpProtocol::Http1,
            Detected::Http2 => HttpProtocol::Http2,
            Detected::Opaque => {
                if let Some(route) = route {
                    return crate::tcp::proxy(stream, Arc::clone(&route.upstream)).await;
                }
                let allowed = match (destination, &self.egress) {
                    (None, _) => false,
                    (Some(_), None) => true,
                    (Some(destination), Some(egress)) => {
                        let decision = egress
                            .connection(&stream, destination, self.detect_timeout)
                            .await;
                        decision.allowed
                    }
                };
                metrics::transparent_unmatched(protocol.as_str(), action(allowed)).increment(1);
                match passthrough {
                    Some(passthrough) if allowed => passthrough.tcp(stream).await,
                    _ => tracing::debug!(?destination, "unmatched TCP connection refused"),
                }
                return;
            }
        };
        // Each request is routed by the table in force when it arrives.
        drop(routes);
        let router = Router {
            outbound: self,
            destination,
            passthrough: passthrough.map(Arc::new),
            protocol,
        };
        serve_http(
            stream,
            caller,
            http,
            SharedService::new(router),
            CONNECTION_IDLE,
            rules,
            drain,
        )
        .await;
    }
}

/// The `action` label of unmatched traffic: `passthrough` or `refused`.
fn action(allowed: bool) -> &'static str {
    if allowed { "passthrough" } else { "refused" }
}

/// Routes the requests of one HTTP connection.
#[derive(Clone)]
struct Router {
    outbound: Arc<TransparentOutbound>,
    destination: Option<SocketAddr>,
    passthrough: Option<Arc<Passthrough>>,
    protocol: Detected,
}

impl Service<Request<Incoming>> for Router {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<ResponseBody>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let routes = self.outbound.routes.load();
        if let Some(stack) = routes
            .for_request(&request, self.destination)
            .and_then(|route| route.http.clone())
        {
            return Box::pin(stack.oneshot(request));
        }
        let allowed = match (self.destination, &self.outbound.egress) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(destination), Some(egress)) => {
                egress.request(&request, destination, self.protocol).allowed
            }
        };
        metrics::transparent_unmatched(self.protocol.as_str(), action(allowed)).increment(1);
        let grpc = is_grpc(request.headers());
        let passthrough = match &self.passthrough {
            Some(passthrough) if allowed => Arc::clone(passthrough),
            _ => {
                let target = unmatched_target(&request, self.destination);
                let error = ProxyError::NoRoute { target };
                discard_body(request);
                return Box::pin(async move { Ok(error_response(&error, grpc)) });
            }
        };
        Box::pin(async move {
            Ok(match passthrough.http(request).await {
                Ok(response) => response,
                Err(error) => error_response(&error, grpc),
            })
        })
    }
}

/// How an unmatched request names where it was going, for the error message.
fn unmatched_target<B>(request: &Request<B>, destination: Option<SocketAddr>) -> String {
    let authority = request
        .uri()
        .authority()
        .map(ToString::to_string)
        .or_else(|| {
            let host = request.headers().get(http::header::HOST)?;
            host.to_str().ok().map(str::to_owned)
        });
    match (authority, destination) {
        (Some(authority), _) => format!("`{authority}`"),
        (None, Some(destination)) => destination.to_string(),
        (None, None) => "a request without Host".to_owned(),
    }
}
