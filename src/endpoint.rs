//! One upstream endpoint: its address, its load (for the balancer) and its
//! connections, and how one request is sent to it.
//!
//! The request goes out in the HTTP version the upstream speaks, translated
//! from the client's when they differ (HTTP/1.1 ↔ HTTP/2): an HTTP/1.1 request
//! carries an origin-form target and `Host`; an HTTP/2 request an absolute URI
//! whose authority becomes `:authority`. The client's Host / `:authority` is
//! preserved either way.

use std::net::SocketAddr;
use std::sync::Arc;

use http::uri::{Authority, Scheme, Uri};
use http::{HeaderValue, Request, Response, Version, header};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::balance::{EndpointLoad, InFlight, Target};
use crate::body::{RequestBody, RequestBodyError};
use crate::client::{ClientSettings, EndpointClient, H1Sender, Opened};
use crate::error::ProxyError;
use crate::outlier::OutlierState;
use crate::telemetry::metrics::EndpointMetrics;

/// An endpoint address as discovery reports it, with its balancing weight
/// (≥ 1; 1 where the source has no weights).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WeightedAddr {
    pub addr: SocketAddr,
    pub weight: u32,
}

impl WeightedAddr {
    /// `addrs`, each at weight 1 (sources without weights).
    pub fn weight_one(addrs: &[SocketAddr]) -> Vec<WeightedAddr> {
        addrs
            .iter()
            .map(|&addr| WeightedAddr { addr, weight: 1 })
            .collect()
    }
}

/// The HTTP version remora speaks to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamVersion {
    Http1,
    Http2,
}

/// An endpoint of an upstream.
pub struct Endpoint {
    pub addr: SocketAddr,
    pub load: EndpointLoad,
    pub outlier: OutlierState,
    pub client: EndpointClient,
    /// Tries this endpoint answered, and their latency.
    pub metrics: EndpointMetrics,
}

impl Target for Endpoint {
    fn load(&self) -> &EndpointLoad {
        &self.load
    }

    fn is_available(&self, now: Instant) -> bool {
        self.load.is_available(now) && !self.outlier.is_ejected(now)
    }
}

/// A failed send. `request` is given back when nothing of it reached the
/// upstream, so the caller may try another endpoint.
pub struct SendError {
    pub error: ProxyError,
    pub request: Option<Request<RequestBody>>,
}

/// What a response body must do when it ends: return its HTTP/1.1 connection
/// to the pool (only after a complete body) and end the in-flight count.
pub struct Release {
    endpoint: Arc<Endpoint>,
    h1: Option<H1Sender>,
    _in_flight: InFlight,
}

impl Release {
    pub fn finish(self, complete: bool) {
        if let (true, Some(sender)) = (complete, self.h1) {
            self.endpoint.client.checkin_h1(sender);
        }
    }
}

impl Endpoint {
    /// An endpoint of the upstream named `upstream`.
    pub fn new(addr: SocketAddr, settings: ClientSettings, upstream: &str) -> Self {
        Self {
            addr,
            load: EndpointLoad::new(settings.connect_timeout),
            outlier: OutlierState::default(),
            client: EndpointClient::new(addr, settings),
            metrics: EndpointMetrics::new(upstream, addr),
        }
    }

    /// Sends one request and returns the response head with the release that
    /// its body must run. An upgrade request gets a connection of its own.
    pub async fn send(
        self: &Arc<Self>,
        request: Request<RequestBody>,
        version: UpstreamVersion,
        upgrade: bool,
    ) -> Result<(Response<Incoming>, Release), SendError> {
        let mut in_flight = self.load.start();
        let version =
            if version == UpstreamVersion::Http1 && !upgrade && self.client.negotiated_h2() {
                UpstreamVersion::Http2
            } else {
                version
            };
        let result = match version {
            UpstreamVersion::Http1 => self.send_h1(to_http1(request), upgrade).await,
            UpstreamVersion::Http2 => self.send_h2(to_http2(request, self.addr)).await,
        };
        match result {
            Ok((response, h1)) => {
                let rtt = in_flight.observe_response();
                self.metrics.record(rtt);
                let release = Release {
                    endpoint: Arc::clone(self),
                    h1,
                    _in_flight: in_flight,
                };
                Ok((response, release))
            }
            Err(error) => Err(error),
        }
    }

    /// The connection failed under the request — or the client's body did
    /// while it was sent; `unsent` is the request when none of it was written.
    fn reset(&self, source: hyper::Error, unsent: Option<Request<RequestBody>>) -> SendError {
        let client_body = std::error::Error::source(&source)
            .and_then(|cause| cause.downcast_ref::<RequestBodyError>())
            .is_some_and(|cause| matches!(cause, RequestBodyError::Client(_)));
        let error = if client_body {
            ProxyError::ClientBody {
                source: source.into(),
            }
        } else {
            ProxyError::UpstreamReset {
                addr: self.addr,
                source,
            }
        };
        SendError {
            error,
            request: unsent,
        }
    }

    async fn send_h1(
        &self,
        mut request: Request<RequestBody>,
        upgrade: bool,
    ) -> Result<(Response<Incoming>, Option<H1Sender>), SendError> {
        loop {
            let pooled = if upgrade {
                None
            } else {
                self.client.checkout_h1().await
            };
            let reused = pooled.is_some();
            let mut sender = match pooled {
                Some(sender) => sender,
                None => match self.client.connect_h1(upgrade).await {
                    Ok(Opened::Http1(sender)) => sender,
                    Ok(Opened::Http2) => return self.send_h2(to_http2(request, self.addr)).await,
                    Err(error) => return Err(SendError::unsent(error, request)),
                },
            };
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, (!upgrade).then_some(sender))),
                Err(mut failed) => match failed.take_message() {
                    // A pooled connection the peer had closed: try a fresh one.
                    Some(unsent) if reused => request = unsent,
                    unsent => return Err(self.reset(failed.into_error(), unsent)),
                },
            }
        }
    }

    async fn send_h2(
        &self,
        mut request: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Option<H1Sender>), SendError> {
        loop {
            let (mut sender, reused) = match self.client.h2_sender().await {
                Ok(opened) => opened,
                Err(error) => return Err(SendError::unsent(error, request)),
            };
            // Streams past the upstream's SETTINGS_MAX_CONCURRENT_STREAMS wait
            // inside the h2 client; let at most as many again wait.
            let streams = self.client.h2_stream_limit().unwrap_or(usize::MAX);
            if self.load.in_flight() as usize > streams.saturating_mul(2) {
                let error = ProxyError::Overloaded {
                    upstream: self.addr.to_string(),
                    limit: u32::try_from(streams.saturating_mul(2)).unwrap_or(u32::MAX),
                };
                return Err(SendError::unsent(error, request));
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, None)),
                Err(mut failed) => match failed.take_message() {
                    // The shared connection was going away: open a new one.
                    Some(unsent) if reused => {
                        self.client.forget_h2().await;
                        request = unsent;
                    }
                    unsent => return Err(self.reset(failed.into_error(), unsent)),
                },
            }
        }
    }
}

impl SendError {
    fn unsent(error: ProxyError, request: Request<RequestBody>) -> Self {
        Self {
            error,
            request: Some(request),
        }
    }
}

/// An HTTP/1.1 request: origin-form target, `Host` from the authority.
fn to_http1(mut request: Request<RequestBody>) -> Request<RequestBody> {
    if request.version() == Version::HTTP_2
        && let Some(authority) = request.uri().authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        request.headers_mut().insert(header::HOST, host);
    }
    *request.version_mut() = Version::HTTP_11;
    if request.uri().scheme().is_some() {
        let origin_form = request
            .uri()
            .path_and_query()
            .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
        *request.uri_mut() = origin_form;
    }
    request
}

/// An HTTP/2 request: absolute URI whose authority is the client's Host.
fn to_http2(mut request: Request<RequestBody>, endpoint: SocketAddr) -> Request<RequestBody> {
    let host = request.headers_mut().remove(header::HOST);
    let authority = request
        .uri()
        .authority()
        .cloned()
        .or_else(|| host.and_then(|h| Authority::try_from(h.as_bytes()).ok()))
        .or_else(|| Authority::try_from(endpoint.to_string()).ok());
    let mut parts = request.uri().clone().into_parts();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = authority;
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    *request.version_mut() = Version::HTTP_2;
    request
}
