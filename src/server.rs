//! Accept loops: each listener's connections are accepted, counted and
//! handed to a task of their own, which runs the listener's TLS handshake
//! if any and serves the connection by the listener's protocol — HTTP
//! (`http_connection`), opaque TCP (`tcp`) or the transparent outbound
//! listener (`transparent`).
//!
//! Each listener speaks one declared protocol: HTTP/1.1, HTTP/2 with prior
//! knowledge (h2c, also gRPC), `auto` (the connection's first bytes are
//! compared with the HTTP/2 preface to choose), or opaque TCP. Connections
//! beyond the listener's `limits.max_connections` are closed as soon as
//! they are accepted (and counted); the other limits apply per connection
//! (see `http_connection`). A failed `accept` (out of descriptors) is
//! retried after a growing pause and logged at most once a second (see
//! `accept`). On drain, the accept loop stops and each connection shuts
//! down gracefully (see `drain`).
//!
//! With mesh mTLS on a listener, each connection's TLS handshake runs in the
//! connection's own task (so a slow client holds up no one); the protocol
//! chosen by ALPN overrides the listener's, and the peer's verified identity
//! travels with every request as an extension (see `tls`).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::accept::Acceptor;
use crate::config::ListenerLimits;
use crate::context::ClientAddr;
use crate::drain::Drain;
use crate::http_connection::{Caller, HttpProtocol, ListenerRules, serve_http};
use crate::svc::HttpService;
use crate::telemetry::metrics::ConnectionMetrics;
use crate::tls::inbound::InboundTls;
use crate::transparent::outbound::TransparentOutbound;
use crate::upgrade::ConnectionHold;
use crate::upstream::Upstream;

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
        // The transparent and the TLS paths are boxed: inline, their futures
        // made every connection's task 8.9 KB, the plain path's included
        // (2.6 KB alone); boxed, a connection allocates only the one it takes.
        crate::task::spawn(async move {
            match (tls, handler) {
                // Redirected plaintext from the local application: never TLS,
                // and the raw socket is needed for its original destination.
                (_, Handler::Transparent(transparent)) => {
                    let caller = Caller {
                        addr: client,
                        identity: None,
                        hold,
                    };
                    Box::pin(transparent.serve(stream, caller, &rules, drain)).await
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
                    Box::pin(async move {
                        if let Some(accepted) = tls.accept(stream, peer).await {
                            let handler = match (handler, accepted.negotiated) {
                                (Handler::Http(_, service, idle), Some(negotiated)) => {
                                    Handler::Http(negotiated.into(), service, idle)
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
                    })
                    .await
                }
            }
        });
    }
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
        // Boxed for the same reason as in `accept_loop`: inline, opaque TCP's
        // future (a connect, maybe mTLS) doubled every HTTP connection's.
        Handler::Tcp(upstream) => Box::pin(crate::tcp::proxy(stream, upstream)).await,
        Handler::Transparent(_) => unreachable!("served by accept_loop on the raw socket"),
    }
}
