//! TLS origination towards a meshed upstream: the sidecar's certificate is
//! presented, the server must chain to the CA and present the expected
//! SPIFFE identity, and ALPN offers what the connection will carry. The
//! handshake is bounded by `tls.handshake_timeout`; a failure is counted
//! (`remora_tls_handshake_errors_total{direction="outbound"}`), logged, and
//! reported as a connect failure of the endpoint.

use std::net::SocketAddr;
use std::sync::Arc;

use ::metrics::Counter;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{ALPN_H2, Alpn, ExpectedIdentity, MeshTls};
use crate::context::Direction;
use crate::error::ProxyError;
use crate::telemetry::metrics;

/// mTLS settings of one upstream.
pub struct UpstreamTls {
    tls: Arc<MeshTls>,
    /// One configuration per ALPN offer: `Http`, `Http2`, `Http1`, `None`.
    configs: [Arc<ClientConfig>; 4],
    expected: ExpectedIdentity,
    upstream: String,
    handshake_errors: Counter,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

/// Equal when built alike (same material, expected identity and upstream),
/// so a configuration reload can tell whether an upstream's TLS changed.
impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.tls, &other.tls)
            && self.expected == other.expected
            && self.upstream == other.upstream
    }
}

impl UpstreamTls {
    pub fn new(
        tls: &Arc<MeshTls>,
        expected: ExpectedIdentity,
        upstream: &str,
    ) -> Result<UpstreamTls, rustls::Error> {
        let config = |alpn| tls.client_config(expected.clone(), alpn);
        Ok(UpstreamTls {
            tls: Arc::clone(tls),
            configs: [
                config(Alpn::Http)?,
                config(Alpn::Http2)?,
                config(Alpn::Http1)?,
                config(Alpn::None)?,
            ],
            expected,
            upstream: upstream.to_owned(),
            handshake_errors: metrics::tls_handshake_errors(Direction::Outbound, upstream),
        })
    }

    /// TLS over `tcp` to `addr`, offering `alpn`. The boolean says whether
    /// the server chose `h2`.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
        alpn: Alpn,
    ) -> Result<(TlsStream<TcpStream>, bool), ProxyError> {
        let config = match alpn {
            Alpn::Http => &self.configs[0],
            Alpn::Http2 => &self.configs[1],
            Alpn::Http1 => &self.configs[2],
            Alpn::None => &self.configs[3],
        };
        let connector = TlsConnector::from(Arc::clone(config));
        // The identity check uses the URI SAN, not this name; an IP address
        // also keeps SNI out of the ClientHello.
        let name = ServerName::IpAddress(addr.ip().into());
        let timeout = self.tls.handshake_timeout();
        let source = match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
            Ok(Ok(stream)) => {
                let h2 = stream.get_ref().1.alpn_protocol() == Some(ALPN_H2);
                return Ok((stream, h2));
            }
            Ok(Err(error)) => error,
            Err(_) => std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no TLS handshake within {timeout:?}"),
            ),
        };
        self.handshake_errors.increment(1);
        tracing::warn!(upstream = %self.upstream, endpoint = %addr, error = %source, "TLS handshake with upstream failed");
        Err(ProxyError::TlsHandshake { addr, source })
    }
}
