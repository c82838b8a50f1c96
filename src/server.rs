//! Accept loops and HTTP server connections.
//!
//! Each listener speaks one declared protocol: HTTP/1.1, HTTP/2 with prior
//! knowledge (h2c, also gRPC), `auto` (the connection's first bytes are
//! compared with the HTTP/2 preface to choose), or opaque TCP (see `tcp`).
//! Malformed HTTP/1.1 requests are answered 400 / 431 by hyper and only that
//! connection is closed. A listener's `limits` bound what one client can
//! hold: connections beyond `max_connections` are closed as soon as they are
//! accepted (and counted), request heads must arrive within
//! `header_read_timeout` and fit `max_header_bytes` / `max_headers` (hyper
//! counts HTTP/1.1 headers, [`ConnectionService`] HTTP/2 ones), HTTP/2
//! connections get `max_concurrent_streams` and a cap on reset streams
//! (CVE-2023-44487, rapid reset). A failed `accept` (out of descriptors)
//! is retried after a growing pause and logged at most once a second (see
//! `accept`). On drain, the accept loop stops and each connection shuts down
//! gracefully (see `drain`).
//!
//! With mesh mTLS on a listener, each connection's TLS handshake runs in the
//! connection's own task (so a slow client holds up no one); the protocol
//! chosen by ALPN overrides the listener's, and the peer's verified identity
//! travels with every request as an extension (see `tls`).

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::Either;
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tower::util::Oneshot;

use crate::accept::Acceptor;
use crate::body::ResponseBody;
use crate::config::{HeadersWithUnderscoresAction, ListenerLimits};
use crate::context::ClientAddr;
use crate::drain::Drain;
use crate::headers::is_grpc;
use crate::idle::{Activity, IdleIo};
use crate::middleware::error_response::error_response;
use crate::request_head;
use crate::svc::HttpService;
use crate::telemetry::metrics::{ConnectionMetrics, ProtocolErrors};
use crate::tls::PeerIdentity;
use crate::tls::inbound::{InboundTls, Negotiated};
use crate::transparent::outbound::TransparentOutbound;
use crate::upgrade::ConnectionHold;
use crate::upstream::Upstream;

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

/// What a listener does with its connections.
#[derive(Clone)]
pub enum Handler {
    /// An HTTP listener; connections idle for the duration are closed.
    Http(HttpProtocol, HttpService, Duration),
    Tcp(Arc<Upstream>),
    /// The transparent outbound listener (iptables-redirected connections).
    Transparent(Arc<TransparentOutbound>),
}

/// Accepts connections until the drain starts.
pub async fn accept_loop(
    listener: TcpListener,
    handler: Handler,
    tls: Option<Arc<InboundTls>>,
    limits: ListenerLimits,
    metrics: ConnectionMetrics,
    mut drain: Drain,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections as usize));
    let rules = Arc::new(ListenerRules {
        limits,
        protocol_errors: metrics.protocol_errors(),
    });
    let mut acceptor = Acceptor::new(listener);
    loop {
        let (stream, peer) = tokio::select! {
            // The drain first: a loop that a reload replaced (another loop now
            // accepts on the same socket) leaves every connection that arrives
            // after the signal to its successor.
            biased;
            () = drain.signaled() => break,
            accepted = acceptor.accept() => accepted,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics.refused();
            tracing::debug!(%peer, max_connections = limits.max_connections, "connection refused: listener full");
            drop(stream);
            continue;
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, %peer, "could not set TCP_NODELAY");
        }
        let hold = ConnectionHold::new((slot, metrics.opened(), drain.track()));
        let client = ClientAddr(peer);
        let handler = handler.clone();
        let tls = tls.clone();
        let drain = drain.clone();
        let rules = Arc::clone(&rules);
        tokio::spawn(async move {
            match (tls, handler) {
                // Redirected plaintext from the local application: never TLS,
                // and the raw socket is needed for its original destination.
                (_, Handler::Transparent(transparent)) => {
                    let caller = Caller {
                        addr: client,
                        identity: None,
                        hold,
                    };
                    transparent.serve(stream, caller, &rules, drain).await
                }
                (None, handler) => {
                    let caller = Caller {
                        addr: client,
                        identity: None,
                        hold,
                    };
                    serve(stream, caller, handler, &rules, drain).await
                }
                (Some(tls), handler) => {
                    if let Some(accepted) = tls.accept(stream, peer).await {
                        let handler = match (handler, accepted.negotiated) {
                            (Handler::Http(_, service, idle), Some(Negotiated::Http2)) => {
                                Handler::Http(HttpProtocol::Http2, service, idle)
                            }
                            (Handler::Http(_, service, idle), Some(Negotiated::Http1)) => {
                                Handler::Http(HttpProtocol::Http1, service, idle)
                            }
                            (handler, _) => handler,
                        };
                        let caller = Caller {
                            addr: client,
                            identity: accepted.peer,
                            hold,
                        };
                        serve(accepted.stream, caller, handler, &rules, drain).await;
                    }
                }
            }
        });
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

/// Serves one accepted (and, with TLS, handshaken) connection.
async fn serve<S>(stream: S, caller: Caller, handler: Handler, rules: &ListenerRules, drain: Drain)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match handler {
        Handler::Http(protocol, service, idle) => {
            serve_http(stream, caller, protocol, service, idle, rules, drain).await
        }
        Handler::Tcp(upstream) => crate::tcp::proxy(stream, upstream).await,
        Handler::Transparent(_) => unreachable!("served by accept_loop on the raw socket"),
    }
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
    let idle = crate::idle::expired(&activity, idle);
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
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_header_size(limits.max_header_bytes as usize);
            if limits.max_headers != HYPER_DEFAULT_MAX_HEADERS {
                builder.max_headers(limits.max_headers as usize);
            }
            let connection = builder.serve_connection(io, service).with_upgrades();
            until_drained!(connection, drain, idle)
        }
        HttpProtocol::Http2 => {
            let mut builder = http2::Builder::new(TokioExecutor::new());
            http2_limits!(builder.timer(TokioTimer::new()), limits);
            let connection = builder.serve_connection(io, service);
            until_drained!(connection, drain, idle)
        }
        HttpProtocol::Auto => {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            // The head must fit the read buffer: 431 otherwise.
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(limits.max_header_bytes as usize);
            if limits.max_headers != HYPER_DEFAULT_MAX_HEADERS {
                builder.http1().max_headers(limits.max_headers as usize);
            }
            http2_limits!(builder.http2().timer(TokioTimer::new()), limits);
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
        Oneshot<HttpService, Request<Incoming>>,
    >;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        if request.headers().len() > self.max_headers {
            let mut response = Response::new(ResponseBody::empty());
            *response.status_mut() = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
            return Either::Left(ready(Ok(response)));
        }
        if let Err(error) = request_head::admit(&mut request, self.underscores) {
            self.protocol_errors.count("malformed");
            tracing::debug!(%error, client = %self.caller.addr.0, "request refused");
            let response = error_response(&error, is_grpc(request.headers()));
            return Either::Left(ready(Ok(response)));
        }
        request.extensions_mut().insert(self.caller.addr);
        if let Some(identity) = &self.caller.identity {
            request.extensions_mut().insert(identity.clone());
        }
        if request.headers().contains_key(header::UPGRADE) {
            request.extensions_mut().insert(self.caller.hold.clone());
        }
        Either::Right(self.service.clone().oneshot(request))
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
/// A macro because the three connection types share the method but no trait.
macro_rules! until_drained {
    ($connection:expr, $drain:expr, $idle:expr) => {{
        let mut connection = std::pin::pin!($connection);
        let mut drain = $drain;
        tokio::select! {
            output = connection.as_mut() => output,
            () = drain.signaled() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
            () = $idle => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        }
        .map_err(BoxError::from)
    }};
}
use until_drained;
