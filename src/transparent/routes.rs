//! Which upstream a transparent request or connection belongs to. HTTP
//! requests are matched by Host / `:authority` against `upstreams[].hosts`
//! first, then by the connection's original destination against
//! `upstreams[].addresses`; opaque TCP connections by original destination
//! only. The first upstream in configuration order wins (validation rejects a
//! host or address listed twice).

use std::net::SocketAddr;
use std::sync::Arc;

use http::Request;
use http::header::HOST;

use crate::config::{DestinationMatch, HostName};
use crate::svc::HttpService;
use crate::upstream::Upstream;

/// An upstream reachable through the transparent listener.
pub struct TransparentRoute {
    pub hosts: Vec<HostName>,
    pub addresses: Vec<DestinationMatch>,
    pub upstream: Arc<Upstream>,
    /// The upstream's outbound stack (shared with its explicit listener, so
    /// rate limits and breakers count both); `None` for a tcp upstream.
    pub http: Option<HttpService>,
}

/// The routes of the transparent listener, in configuration order.
pub struct RouteTable {
    routes: Vec<TransparentRoute>,
}

impl RouteTable {
    pub fn new(routes: Vec<TransparentRoute>) -> Self {
        Self { routes }
    }

    /// The route of an HTTP request that arrived on a connection to
    /// `destination`.
    pub fn for_request<B>(
        &self,
        request: &Request<B>,
        destination: Option<SocketAddr>,
    ) -> Option<&TransparentRoute> {
        let authority = request
            .uri()
            .authority()
            .map(|authority| authority.as_str())
            .or_else(|| request.headers().get(HOST)?.to_str().ok());
        let by_host = authority.and_then(|authority| {
            self.routes
                .iter()
                .find(|route| route.hosts.iter().any(|host| host.matches(authority)))
        });
        by_host.or_else(|| self.for_destination(destination?))
    }

    /// The route of a connection by its original destination.
    pub fn for_destination(&self, destination: SocketAddr) -> Option<&TransparentRoute> {
        self.routes
            .iter()
            .find(|route| (route.addresses.iter()).any(|address| address.matches(destination)))
    }
}
