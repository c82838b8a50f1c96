//! Serving HTTP on one accepted connection (`server` accepts it, and the
//! transparent listener hands it its redirected HTTP connections): hyper's
//! HTTP/1.1, HTTP/2 or `auto` server connection with the listener's limits,
//! each request admitted (`request_head`) and given the caller's address and
//! identity, until the connection ends, idles out or is drained.
//!
//! A listener's `limits` bound what one client can hold: request heads must
//! arrive within `header_read_timeout` (a connection on which the client
//! sends nothing at all is closed then too) and fit `max_header_bytes` /
//! `max_headers` (hyper counts HTTP/1.1 headers, [`ConnectionService`]
//! HTTP/2 ones), HTTP/2 connections get `max_concurrent_streams` and a cap
//! on reset streams (CVE-2023-44487, rapid reset). Malformed HTTP/1.1
//! requests are answered 400 / 431 by hyper and only that connection is
//! closed; each such protocol error is counted.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::body::ResponseBody;
use crate::body::client::discard_body;
use crate::config::{HeadersWithUnderscoresAction, ListenerLimits};
use crate::context::ClientAddr;
use crate::drain::Drain;
use crate::headers::is_grpc;
use crate::idle::{Activity, IdleIo};
use crate::middleware::error_response::error_response;
use crate::request_head;
use crate::svc::{CallFuture, HttpService};
use crate::task::TaskExecutor;
use crate::telemetry::metrics::ProtocolErrors;
use crate::timer::HyperTimer;
use crate::tls::PeerIdentity;
use crate::tls::inbound::Negotiated;
use crate::upgrade::ConnectionHold;
use crate::woken::when_woken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// HTTP/2 streams a client may reset before the server accepted them, at
/// once, before the connection gets GOAWAY (h2's default, made explicit:
/// the rapid-reset flood of CVE-2023-44487).
const MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;

/// HTTP/2 streams remora may reset because of the client's protocol errors
/// before the connection gets GOAWAY (hyper's default, made explicit).
const MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// hyper's own HTTP/1.1 header count limit; setting any other moves the
/// header array from the stack to the heap, so it is only set when it differs.
const HYPER_DEFAULT_MAX_HEADERS: u32 = 100;

/// The HTTP version(s) an HTTP listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpProtocol {
    Http1,
    Http2,
    /// Either, chosen per connection by sniffing the HTTP/2 preface.
    Auto,
}

/// The version a TLS client chose by ALPN is the one the connection speaks.
impl From<Negotiated> for HttpProtocol {
    fn from(negotiated: Negotiated) -> Self {
        match negotiated {
            Negotiated::Http1 => HttpProtocol::Http1,
            Negotiated::Http2 => HttpProtocol::Http2,
        }
    }
}

/// What every connection of one listener shares: the listener's `limits`
/// and where its clients' protocol errors are counted.
pub struct ListenerRules {
    pub limits: ListenerLimits,
    pub protocol_errors: ProtocolErrors,
}

/// Who is at the other end of a connection: its address and, over mesh
/// mTLS, its verified identity. Both go with every request as extensions;
/// so does the connection's hold with a request that may upgrade (its
/// tunnel keeps the connection counted).
pub(crate) struct Caller {
    pub addr: ClientAddr,
    pub identity: Option<PeerIdentity>,
    pub hold: ConnectionHold,
}

/// Serves HTTP on one accepted connection until it ends, is idle for `idle`
/// or is drained.
pub(crate) async fn serve_http<S>(
    stream: S,
    caller: Caller,
    protocol: HttpProtocol,
    service: HttpService,
    idle: Duration,
    rules: &ListenerRules,
    drain: Drain,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = &rules.limits;
    let activity = Activity::new();
    let io = TokioIo::new(IdleIo::new(stream, Arc::clone(&activity)));
    let idle = crate::idle::expired_or_silent(&activity, idle, limits.header_read_timeout);
    let service = ConnectionService {
        service,
        caller,
        max_headers: limits.max_headers as usize,
        underscores: limits.headers_with_underscores_action,
        protocol_errors: rules.protocol_errors.clone(),
    };
    let result = match protocol {
        HttpProtocol::Http1 => {
            let mut builder = http1::Builder::new();
            builder
                .writev(false)
                .timer(HyperTimer)
                .header_read_timeout(limits.header_read_timeout)
                .max_header_size(limits.max_header_bytes as usize);
            if limits.max_headers != HYPER_DEFAULT_MAX_HEADERS {
                builder.max_headers(limits.max_headers as usize);
            }
            let connection = builder.serve_connection(io, service).with_upgrades();
            until_drained!(connection, drain, idle)
        }
        HttpProtocol::Http2 => {
            let mut builder = http2::Builder::new(TaskExecutor);
            http2_limits!(builder.timer(HyperTimer), limits);
            let connection = builder.serve_connection(io, service);
            until_drained!(connection, drain, idle)
        }
        HttpProtocol::Auto => {
            let mut builder = auto::Builder::new(TaskExecutor);
            // The head must fit the read buffer: 431 otherwise.
            builder
                .http1()
                .timer(HyperTimer)
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(limits.max_header_bytes as usize);
            if limits.max_headers != HYPER_DEFAULT_MAX_HEADERS {
                builder.http1().max_headers(limits.max_headers as usize);
            }
            http2_limits!(builder.http2().timer(HyperTimer), limits);
            let connection = builder.serve_connection_with_upgrades(io, service);
            until_drained!(connection, drain, idle)
        }
    };
    if let Err(error) = result {
        if let Some(kind) = protocol_error_kind(&*error) {
            rules.protocol_errors.count(kind);
        }
        tracing::debug!(error = %error, "client connection ended with an error");
    }
}

/// The `kind` of `remora_client_protocol_errors_total` for a connection
/// that ended with `error`, when the client broke the protocol or its
/// limits: `malformed` (an HTTP/1.1 request hyper could not parse: 400),
/// `too_large` (a head over the limits: 431), `header_timeout` (no complete
/// head within `header_read_timeout`), `http2` (remora ended the connection
/// with a GOAWAY error: malformed frames, floods). A client that merely
/// went away is not counted.
fn protocol_error_kind(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut source = Some(error);
    while let Some(error) = source {
        if let Some(hyper) = error.downcast_ref::<hyper::Error>() {
            if hyper.is_parse_too_large() {
                return Some("too_large");
            }
            if hyper.is_parse() {
                return Some("malformed");
            }
            if hyper.is_timeout() {
                return Some("header_timeout");
            }
        }
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            let local_error = h2.is_go_away() && !h2.is_remote();
            return (local_error && h2.reason() != Some(h2::Reason::NO_ERROR)).then_some("http2");
        }
        source = error.source();
    }
    None
}

/// What hyper calls for each request of one connection: the listener's
/// service, with the caller's address and identity added to the request.
/// An HTTP/2 request with more headers than `limits.max_headers` gets 431
/// here (hyper counts HTTP/1.1 headers itself, and answers 431 the same way:
/// empty body, the connection lives on). A head [`request_head`] refuses
/// gets its error response (400 `bad_request`), counted as `malformed`;
/// the connection lives on.
struct ConnectionService {
    service: HttpService,
    caller: Caller,
    max_headers: usize,
    underscores: HeadersWithUnderscoresAction,
    protocol_errors: ProtocolErrors,
}

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Either<
        Ready<Result<Response<ResponseBody>, Infallible>>,
        CallFuture<Response<ResponseBody>, Infallible>,
    >;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        if request.headers().len() > self.max_headers {
            let mut response = Response::new(ResponseBody::empty());
            *response.status_mut() = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
            discard_body(request);
            return Either::Left(ready(Ok(response)));
        }
        if let Err(error) = request_head::admit(&mut request, self.underscores) {
            self.protocol_errors.count("malformed");
            tracing::debug!(%error, client = %self.caller.addr.0, "request refused");
            let response = error_response(&error, is_grpc(request.headers()));
            discard_body(request);
            return Either::Left(ready(Ok(response)));
        }
        request.extensions_mut().insert(self.caller.addr);
        if let Some(identity) = &self.caller.identity {
            request.extensions_mut().insert(identity.clone());
        }
        if request.headers().contains_key(header::UPGRADE) {
            request.extensions_mut().insert(self.caller.hold.clone());
        }
        Either::Right(self.service.serve(request))
    }
}

/// Applies a listener's HTTP/2 limits to hyper's HTTP/2 builder, or to
/// the HTTP/2 half of hyper-util's auto builder (same methods, no trait).
macro_rules! http2_limits {
    ($builder:expr, $limits:expr) => {{
        $builder
            .max_concurrent_streams($limits.max_concurrent_streams)
            .max_header_list_size($limits.max_header_bytes)
            .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESET_STREAMS)
            .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESET_STREAMS);
    }};
}
use http2_limits;

/// Drives a hyper server connection to its end, asking it to shut down
/// gracefully (finish in-flight requests, then close) once the drain begins
/// or the connection has been idle too long.
///
/// The connection is boxed: held inline, every protocol's connection type
/// (over a plain and a TLS stream) made each client connection's task
/// 14 KB whichever one it served; boxed, it takes only what its own
/// protocol needs.
/// The drain and idle branches are polled only when their own wake-ups
/// fire, not on each of the connection's ([`crate::woken`]).
/// A macro because the three connection types share the method but no trait.
macro_rules! until_drained {
    ($connection:expr, $drain:expr, $idle:expr) => {{
        let mut connection = Box::pin($connection);
        let mut drain = $drain;
        tokio::select! {
            output = connection.as_mut() => output,
            () = when_woken(drain.signaled()) => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
            () = when_woken($idle) => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        }
        .map_err(BoxError::from)
    }};
}
use until_drained;
