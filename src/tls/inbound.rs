//! TLS termination on the inbound listener: the handshake (bounded by
//! `tls.handshake_timeout`), the peer's verified identity and the
//! negotiated ALPN protocol. A failed or slow handshake closes only that
//! connection; it is counted (`remora_tls_handshake_errors_total`) and
//! logged. For an opaque TCP listener the connection is also authorized
//! here (HTTP listeners authorize per request).

use std::net::SocketAddr;
use std::sync::Arc;

use ::metrics::Counter;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::authorization::Authorizer;
use super::identity::{self, PeerIdentity};
use super::{ALPN_H2, ALPN_HTTP1, Alpn, MeshTls};
use crate::context::Direction;
use crate::telemetry::metrics;
use crate::timer;

/// The HTTP version the client chose by ALPN, if it chose one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiated {
    Http1,
    Http2,
}

/// A connection whose handshake succeeded.
pub struct Accepted {
    pub stream: TlsStream<TcpStream>,
    pub peer: Option<PeerIdentity>,
    pub negotiated: Option<Negotiated>,
}

/// TLS termination for one listener.
pub struct InboundTls {
    tls: Arc<MeshTls>,
    acceptor: TlsAcceptor,
    listener: String,
    handshake_errors: Counter,
    /// Opaque TCP listeners: who may open a connection.
    connection_authorizer: Option<Arc<Authorizer>>,
}

impl InboundTls {
    pub fn new(
        tls: &Arc<MeshTls>,
        alpn: Alpn,
        listener: &str,
        connection_authorizer: Option<Arc<Authorizer>>,
    ) -> Result<InboundTls, rustls::Error> {
        Ok(InboundTls {
            tls: Arc::clone(tls),
            acceptor: TlsAcceptor::from(tls.server_config(alpn)?),
            listener: listener.to_owned(),
            handshake_errors: metrics::tls_handshake_errors(Direction::Inbound, listener),
            connection_authorizer,
        })
    }

    /// Completes the handshake; `None` when it failed, timed out, or the
    /// peer is not authorized (the connection is then closed).
    pub async fn accept(&self, stream: TcpStream, client: SocketAddr) -> Option<Accepted> {
        let timeout = self.tls.handshake_timeout();
        let deadline = timer::from_now(timeout);
        let failure = match timer::timeout_at(deadline, self.acceptor.accept(stream)).await {
            Some(Ok(stream)) => return self.authorize(stream),
            Some(Err(error)) => error.to_string(),
            None => format!("no handshake within {timeout:?}"),
        };
        self.handshake_errors.increment(1);
        tracing::info!(listener = %self.listener, %client, error = %failure, "TLS handshake failed");
        None
    }

    fn authorize(&self, stream: TlsStream<TcpStream>) -> Option<Accepted> {
        let (_, connection) = stream.get_ref();
        let peer = connection
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(identity::of_certificate);
        let negotiated = match connection.alpn_protocol() {
            Some(ALPN_H2) => Some(Negotiated::Http2),
            Some(ALPN_HTTP1) => Some(Negotiated::Http1),
            _ => None,
        };
        if let Some(authorizer) = &self.connection_authorizer
            && !authorizer.authorize_connection(peer.as_ref())
        {
            return None;
        }
        Some(Accepted {
            stream,
            peer,
            negotiated,
        })
    }
}
