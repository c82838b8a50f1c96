//! Accept loops and HTTP server connections.
//!
//! Each listener speaks one declared protocol: HTTP/1.1, HTTP/2 with prior
//! knowledge (h2c, also gRPC), `auto` (the connection's first bytes are
//! compared with the HTTP/2 preface to choose), or opaque TCP (see `tcp`).
//! Malformed HTTP/1.1 requests are answered 400 / 431 by hyper and only that
//! connection is closed. On drain, the accept loop stops and each connection
//! shuts down gracefully (see `drain`).
//!
//! With mesh mTLS on a listener, each connection's TLS handshake runs in the
//! connection's own task (so a slow client holds up no one); the protocol
//! chosen by ALPN overrides the listener's, and the peer's verified identity
//! travels with every request as an extension (see `tls`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::drain::Drain;
use crate::idle::{Activity, IdleIo};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
use crate::stack::HttpService;
use crate::telemetry::metrics::ConnectionMetrics;
use crate::tls::PeerIdentity;
use crate::tls::inbound::{InboundTls, Negotiated};
use crate::transparent::outbound::TransparentOutbound;
use crate::upstream::Upstream;

/// A client that does not finish sending its request headers within this
/// time has its connection closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The address of the client that sent a request (request extension).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

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
    metrics: ConnectionMetrics,
    mut drain: Drain,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off briefly
                    // instead of spinning, and keep serving.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = drain.signaled() => break,
        };
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, %peer, "could not set TCP_NODELAY");
        }
        let open = metrics.opened();
        let client = ClientAddr(peer);
        let live = drain.track();
        let handler = handler.clone();
        let tls = tls.clone();
        let drain = drain.clone();
        tokio::spawn(async move {
            match (tls, handler) {
                // Redirected plaintext from the local application: never TLS,
                // and the raw socket is needed for its original destination.
                (_, Handler::Transparent(transparent)) => {
                    transparent.serve(stream, client, drain).await
                }
                (None, handler) => serve(stream, client, None, handler, drain).await,
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
                        serve(accepted.stream, client, accepted.peer, handler, drain).await;
                    }
                }
            }
            drop((open, live));
        });
    }
}

/// Serves one accepted (and, with TLS, handshaken) connection.
async fn serve<S>(
    stream: S,
    client: ClientAddr,
    peer: Option<PeerIdentity>,
    handler: Handler,
    drain: Drain,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match handler {
        Handler::Http(protocol, service, idle) => {
            serve_http(stream, client, peer, protocol, service, idle, drain).await
        }
        Handler::Tcp(upstream) => crate::tcp::proxy(stream, upstream).await,
        Handler::Transparent(_) => unreachable!("served by accept_loop on the raw socket"),
    }
}

/// Serves HTTP on one accepted connection until it ends, is idle for `idle`
/// or is drained.
pub(crate) async fn serve_http<S>(
    stream: S,
    client: ClientAddr,
    peer: Option<PeerIdentity>,
    protocol: HttpProtocol,
    service: HttpService,
    idle: Duration,
    drain: Drain,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let io = TokioIo::new(IdleIo::new(stream, Arc::clone(&activity)));
    let idle = crate::idle::expired(&activity, idle);
    let service =
        TowerToHyperService::new(service.map_request(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(client);
            if let Some(peer) = &peer {
                request.extensions_mut().insert(peer.clone());
            }
            request
        }));
    let result = match protocol {
        HttpProtocol::Http1 => {
            let connection = http1::Builder::new()
                .writev(false)
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(io, service)
                .with_upgrades();
            until_drained!(connection, drain, idle)
        }
        HttpProtocol::Http2 => {
            let connection = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .serve_connection(io, service);
            until_drained!(connection, drain, idle)
        }
        HttpProtocol::Auto => {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let connection = builder.serve_connection_with_upgrades(io, service);
            until_drained!(connection, drain, idle)
        }
    };
    if let Err(error) = result {
        tracing::debug!(error = %error, "client connection ended with an error");
    }
}

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
