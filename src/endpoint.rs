//! One upstream endpoint: its address, its load (for the balancer) and its
//! connections, and how one request is sent to it.
//!
//! The request goes out in the HTTP version the upstream speaks, translated
//! from the client's when they differ (HTTP/1.1 ↔ HTTP/2): an HTTP/1.1 request
//! carries an origin-form target and `Host`; an HTTP/2 request an absolute URI
//! whose authority becomes `:authority`. The client's Host / `:authority` is
//! preserved either way; a request that had neither (HTTP/1.0 may omit
//! `Host`) gets the endpoint's address.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::uri::{Authority, Scheme, Uri};
use http::{HeaderMap, HeaderValue, Request, Response, Version, header};
use http_body::Body as _;
use http_body_util::{BodyExt, Collected, Limited};
use tokio::time::Instant;

use crate::balance::{EndpointLoad, InFlight, Target};
use crate::body::{Release, RequestBody, RequestBodyError, UpstreamBody};
use crate::client::{ClientSettings, EndpointClient, Http2Stream, Opened, PoolGauges, Purpose};
use crate::error::ProxyError;
use crate::health::HealthState;
use crate::http1::{self, Connection};
use crate::http2;
use crate::outlier::{Ejectable, OutlierState};
use crate::resend::{MAX_RESENDS, Resendable, Unprocessed, is_idempotent, unprocessed_h2};
use crate::telemetry::metrics::{self, EndpointMetrics};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An endpoint address as discovery reports it, with its balancing weight
/// (≥ 1; 1 where the source has no weights).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WeightedAddr {
    pub addr: SocketAddr,
    pub weight: u32,
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
    /// What its active health checks say (`health_check.rs` runs them).
    pub health: HealthState,
    pub client: EndpointClient,
    /// Tries this endpoint answered, and their latency.
    pub metrics: EndpointMetrics,
}

impl Target for Endpoint {
    fn load(&self) -> &EndpointLoad {
        &self.load
    }

    fn is_ejected(&self, now: Instant) -> bool {
        self.outlier.is_ejected(now)
    }

    fn passes_checks(&self) -> bool {
        self.health.admits()
    }

    fn awaits_first_check(&self) -> bool {
        self.health.awaits_first_check()
    }
}

impl Ejectable for Endpoint {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn outlier(&self) -> &OutlierState {
        &self.outlier
    }
}

/// The most of a health check's response body that is read.
pub const PROBE_BODY_LIMIT: usize = 64 * 1024;

/// Why a [`probe`](Endpoint::probe) got no complete response.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Send(ProxyError),
    #[error("response body: {0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
}

/// A failed send. `request` is given back when nothing of it reached the
/// upstream, so the caller may try another endpoint.
pub struct SendError {
    pub error: ProxyError,
    pub request: Option<Request<RequestBody>>,
}

/// A response head from an endpoint.
pub struct Sent {
    pub response: Response<UpstreamBody>,
    /// What the response body must run when it ends.
    pub release: EndpointRelease,
}

/// What a response body must do when it ends: return its HTTP/1.1 connection
/// to the pool (only after a complete body), end its HTTP/2 stream, and end
/// the in-flight count.
pub struct EndpointRelease {
    endpoint: Arc<Endpoint>,
    _held: Held,
    _in_flight: InFlight,
}

/// What a response holds of its connection until its body ends.
enum Held {
    /// Nothing: an HTTP/1.1 body holds its connection itself, and an
    /// upgraded connection belongs to the tunnel.
    Nothing,
    /// Counted against its connection's stream limit until dropped.
    Http2 { _stream: Http2Stream },
}

impl Release for EndpointRelease {
    fn finish(self: Box<Self>, reusable: Option<Connection>) {
        if let Some(connection) = reusable {
            self.endpoint.client.checkin_h1(connection);
        }
    }
}

impl Endpoint {
    /// An endpoint of the upstream named `upstream`.
    pub fn new(addr: SocketAddr, settings: ClientSettings, upstream: &str) -> Self {
        let gauges = PoolGauges {
            connections: metrics::pool_connections(upstream),
            pending: metrics::pool_pending_requests(upstream),
        };
        Self {
            addr,
            load: EndpointLoad::new(settings.connect_timeout),
            outlier: OutlierState::default(),
            health: HealthState::default(),
            client: EndpointClient::new(addr, settings, gauges),
            metrics: EndpointMetrics::new(upstream, addr),
        }
    }

    /// Sends one request and returns the response head with the release that
    /// its body must run. An upgrade request gets a connection of its own.
    /// A request the upstream never processed is resent (see `resend.rs`);
    /// `goaway_errors` counts the GOAWAYs with an error code met on the way,
    /// failures of the endpoint for outlier detection whether or not the
    /// resend then succeeds.
    pub async fn send(
        self: &Arc<Self>,
        request: Request<RequestBody>,
        version: UpstreamVersion,
        upgrade: bool,
        goaway_errors: &mut u32,
    ) -> Result<Sent, SendError> {
        let mut in_flight = self.load.start();
        let result = self
            .exchange(request, version, upgrade, goaway_errors)
            .await;
        let (response, held) = result?;
        let rtt = in_flight.observe_response();
        self.metrics.record(rtt);
        let release = EndpointRelease {
            endpoint: Arc::clone(self),
            _held: held,
            _in_flight: in_flight,
        };
        Ok(Sent { response, release })
    }

    /// A request of remora's own (a health check), sent like a proxied one
    /// — same connections, mTLS and HTTP version — but outside the
    /// endpoint's load figures and try metrics. The whole response body is
    /// read (at most [`PROBE_BODY_LIMIT`]), so that an HTTP/1.1 connection
    /// goes back to the pool.
    pub async fn probe(
        &self,
        request: Request<RequestBody>,
        version: UpstreamVersion,
    ) -> Result<Response<Collected<Bytes>>, ProbeError> {
        let mut goaway_errors = 0;
        let (response, _held) = (self.exchange(request, version, false, &mut goaway_errors))
            .await
            .map_err(|failed| ProbeError::Send(failed.error))?;
        let (parts, mut body) = response.into_parts();
        let collected = Limited::new(&mut body, PROBE_BODY_LIMIT)
            .collect()
            .await
            .map_err(ProbeError::Body)?;
        if let Some(connection) = body.take_reusable() {
            self.client.checkin_h1(connection);
        }
        Ok(Response::from_parts(parts, collected))
    }

    /// Sends `request` over the endpoint's connections in `version`, or over
    /// HTTP/2 when the server chose it by ALPN (not for an upgrade).
    async fn exchange(
        &self,
        mut request: Request<RequestBody>,
        version: UpstreamVersion,
        upgrade: bool,
        goaway_errors: &mut u32,
    ) -> Result<(Response<UpstreamBody>, Held), SendError> {
        let version =
            if version == UpstreamVersion::Http1 && !upgrade && self.client.negotiated_h2() {
                UpstreamVersion::Http2
            } else {
                version
            };
        match version {
            UpstreamVersion::Http1 => {
                to_http1(&mut request, self.addr);
                if upgrade {
                    Box::pin(self.send_upgrade(request)).await
                } else {
                    (self.send_h1(request, goaway_errors)).await
                }
            }
            UpstreamVersion::Http2 => {
                to_http2(&mut request, self.addr);
                (self.send_h2(request, goaway_errors)).await
            }
        }
    }

    /// The connection failed under the request — or the client's body did
    /// while it was sent; `unsent` is the request when none of it was written.
    fn reset(&self, source: hyper::Error, unsent: Option<Request<RequestBody>>) -> SendError {
        let error = if request_body_failed(&source) {
            ProxyError::ClientBody {
                addr: self.addr,
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

    /// Sends over an idle HTTP/1.1 connection, or a new one. A request
    /// that a reused connection's server closed under it is sent again: the
    /// whole request when none of its head went out, an idempotent one when
    /// no byte of a response came (see `resend.rs`).
    async fn send_h1(
        &self,
        mut request: Request<RequestBody>,
        goaway_errors: &mut u32,
    ) -> Result<(Response<UpstreamBody>, Held), SendError> {
        // With other requests to this endpoint in flight, the ones ready now
        // go out together: this one waits for the others' turn first. A
        // server on the same CPU is then woken once for them all, where each
        // write of its own would wake it and hand it the CPU, in the middle
        // of remora's work (measured in `docs/benchmarks.md`). Alone, a
        // request goes out at once.
        if self.load.in_flight() > 1 {
            tokio::task::yield_now().await;
        }
        let mut resends = 0;
        loop {
            let pooled = self.client.checkout_h1();
            let reused = pooled.is_some();
            let connection = match pooled {
                Some(connection) => connection,
                // Connecting is the cold path and its future is large: boxed,
                // it stays out of every request's future (see `client`).
                None => match Box::pin(self.client.connect_h1()).await {
                    Ok(Opened::Http1(connection)) => connection,
                    Ok(Opened::Http2) => {
                        to_http2(&mut request, self.addr);
                        return Box::pin(self.send_h2(request, goaway_errors)).await;
                    }
                    Err(error) => return Err(SendError::unsent(error, request)),
                },
            };
            // A connection in hand: the endpoint is reachable, whenever
            // its answer comes (`balance::load`'s backoff).
            self.load.mark_reachable();
            let resendable = reused && resends < MAX_RESENDS && is_idempotent(request.method());
            // The server may close a reused connection just as the request
            // goes out: keep what it takes to send an idempotent one with a
            // body again (one without comes back whole).
            let copy = (resendable && !request.body().is_end_stream())
                .then(|| Resendable::keep(&mut request));
            let failed = match connection.send(request).await {
                Ok(response) => return Ok((response.map(UpstreamBody::Http1), Held::Nothing)),
                Err(failed) => failed,
            };
            let again = match failed.request {
                // A pooled connection the peer had closed: try a fresh one.
                Some(unsent) if !failed.head_written && reused => {
                    self.metrics.resent(Unprocessed::NotWritten.as_str());
                    request = unsent;
                    continue;
                }
                Some(unsent) if !failed.head_written => {
                    return Err(self.failed(failed.error, Some(unsent)));
                }
                whole => whole.or_else(|| copy.and_then(|copy| copy.again())),
            };
            let Some(again) = again.filter(|_| resendable && failed.error.no_response()) else {
                return Err(self.failed(failed.error, None));
            };
            self.metrics
                .resent(Unprocessed::ClosedBeforeResponse.as_str());
            request = again;
            resends += 1;
        }
    }

    /// The exchange failed — or the client's body did while it was sent;
    /// `unsent` is the request when none of it was written.
    fn failed(
        &self,
        source: impl ExchangeFailure,
        unsent: Option<Request<RequestBody>>,
    ) -> SendError {
        let error = match source.client_body() {
            Ok(source) => ProxyError::ClientBody {
                addr: self.addr,
                source,
            },
            Err(source) => source.at(self.addr),
        };
        SendError {
            error,
            request: unsent,
        }
    }

    /// Sends a request that upgrades its connection, on a connection of its
    /// own, through hyper's client (see
    /// `client::connect_hyper_h1`).
    async fn send_upgrade(
        &self,
        request: Request<RequestBody>,
    ) -> Result<(Response<UpstreamBody>, Held), SendError> {
        let mut sender = match self.client.connect_hyper_h1().await {
            Ok(sender) => {
                self.load.mark_reachable();
                sender
            }
            Err(error) => return Err(SendError::unsent(error, request)),
        };
        match sender.try_send_request(request).await {
            Ok(response) => Ok((response.map(UpstreamBody::Hyper), Held::Nothing)),
            Err(mut failed) => {
                let unsent = failed.take_message();
                Err(self.reset(failed.into_error(), unsent))
            }
        }
    }

    async fn send_h2(
        &self,
        mut request: Request<RequestBody>,
        goaway_errors: &mut u32,
    ) -> Result<(Response<UpstreamBody>, Held), SendError> {
        let copy = Resendable::keep(&mut request);
        let mut resends = 0;
        loop {
            let purpose = if resends == 0 {
                Purpose::First
            } else {
                Purpose::Resend
            };
            let (stream, sender) = match self.client.h2_stream(purpose).await {
                Ok(checked_out) => {
                    self.load.mark_reachable();
                    checked_out
                }
                Err(error) => return Err(SendError::unsent(error, request)),
            };
            let failed = match http2::send(sender, request).await {
                Ok(response) => {
                    let response = response.map(UpstreamBody::Http2);
                    return Ok((response, Held::Http2 { _stream: stream }));
                }
                Err(failed) => failed,
            };
            let (mut error, unsent) = (failed.error, failed.request);
            let why = if unsent.is_some() || error.not_sent() {
                Some(Unprocessed::NotWritten)
            } else {
                unprocessed_h2(&error)
            };
            // A stream its connection's dropping cut off: h2 says only "broken pipe".
            if let http2::Error::Stream(cut) = &error
                && cut.is_io()
                && let Some(timeout) = stream.connection_silent()
            {
                error = http2::Error::Silent(timeout);
            }
            if matches!(
                why,
                Some(Unprocessed::NotWritten | Unprocessed::GoAway { .. })
            ) {
                stream.retire_connection();
            }
            if why == Some(Unprocessed::GoAway { graceful: false })
                && stream.first_to_report_goaway()
            {
                *goaway_errors += 1;
            }
            drop(stream);
            let resendable = |why: &Unprocessed| {
                resends < MAX_RESENDS && (!why.idempotent_only() || is_idempotent(copy.method()))
            };
            let Some(why) = why.filter(resendable) else {
                return Err(self.failed(error, unsent));
            };
            let Some(again) = unsent.or_else(|| copy.again()) else {
                return Err(self.failed(error, None));
            };
            self.metrics.resent(why.as_str());
            request = again;
            resends += 1;
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

/// Makes `request` an HTTP/1.1 request, in place: origin-form target, and
/// the `Host` HTTP/1.1 requires: an HTTP/2 request's authority, else the
/// client's `Host`, else the authority or, failing that, the endpoint's
/// address (an HTTP/1.0 request may come without `Host`). An HTTP/2
/// request's `cookie` fields become one ([`join_cookies`]).
fn to_http1(request: &mut Request<RequestBody>, endpoint: SocketAddr) {
    if request.version() == Version::HTTP_2 {
        join_cookies(request.headers_mut());
    }
    let authority = request.uri().authority().map(|a| a.as_str().to_owned());
    let host = match authority {
        Some(authority) if request.version() == Version::HTTP_2 => Some(authority),
        _ if request.headers().contains_key(header::HOST) => None,
        authority => Some(authority.unwrap_or_else(|| endpoint.to_string())),
    };
    if let Some(Ok(host)) = host.map(HeaderValue::try_from) {
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
}

/// An HTTP/2 client may send its cookies as several `cookie` fields (browsers
/// do, one per cookie, for HPACK to index them apart); HTTP/1.1 allows one
/// (RFC 6265 §5.4), and a server may read only the first. RFC 9113 §8.2.3:
/// joined with `; ` before they go on over HTTP/1.1.
fn join_cookies(headers: &mut HeaderMap) {
    let mut cookies = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (cookies.next(), cookies.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for cookie in headers.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(cookie.as_bytes());
    }
    if let Ok(joined) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, joined);
    }
}

/// Makes `request` an HTTP/2 request, in place: absolute URI whose
/// authority is the client's Host.
fn to_http2(request: &mut Request<RequestBody>, endpoint: SocketAddr) {
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
}

/// True when `error` (sending a request through hyper's client) came from
/// the client's request body, not the upstream.
fn request_body_failed(error: &hyper::Error) -> bool {
    RequestBodyError::under(error).is_some_and(RequestBodyError::is_client)
}

/// True when a request body's error is its client's (not a retry's that
/// took the body over).
fn client_body_failed(error: &(dyn std::error::Error + 'static)) -> bool {
    error
        .downcast_ref::<RequestBodyError>()
        .is_some_and(RequestBodyError::is_client)
}

/// An HTTP/1.1 or HTTP/2 exchange's error, told apart for [`Endpoint::failed`].
trait ExchangeFailure: Sized {
    /// The client's body error when that is what failed the exchange.
    fn client_body(self) -> Result<BoxError, Self>;
    /// The upstream's failure at `addr`.
    fn at(self, addr: SocketAddr) -> ProxyError;
}

impl ExchangeFailure for http1::Error {
    fn client_body(self) -> Result<BoxError, Self> {
        match self {
            http1::Error::RequestBody(source) if client_body_failed(&*source) => Ok(source),
            other => Err(other),
        }
    }

    fn at(self, addr: SocketAddr) -> ProxyError {
        ProxyError::Http1Exchange { addr, source: self }
    }
}

impl ExchangeFailure for http2::Error {
    fn client_body(self) -> Result<BoxError, Self> {
        match self {
            http2::Error::RequestBody(source) if client_body_failed(&*source) => Ok(source),
            other => Err(other),
        }
    }

    fn at(self, addr: SocketAddr) -> ProxyError {
        ProxyError::Http2Exchange { addr, source: self }
    }
}
