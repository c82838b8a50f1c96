//! TLS origination towards an upstream, in either mode. Mesh: the sidecar's
//! certificate is presented, the server must chain to the mesh CA and
//! present the expected SPIFFE identity (the endpoint's address is the
//! rustls server name, so no SNI is sent). Simple: the server's certificate
//! must chain to `ca_file` or the system's roots and be valid for
//! `server_name`, which is also sent as SNI (see `simple`). In both, ALPN
//! offers what the connection will carry, from one client configuration per
//! offer (clones of one, so they share its session cache). The handshake is
//! bounded by `tls.handshake_timeout` (its default without a `tls:`
//! section); a failure is counted
//! (`remora_tls_handshake_errors_total{direction="outbound"}`), logged with
//! rustls's reason, and reported as a connect failure of the endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ::metrics::Counter;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::simple::SimpleTlsFiles;
use super::{ALPN_H2, Alpn, ExpectedIdentity, MeshTls};
use crate::context::Direction;
use crate::error::ProxyError;
use crate::telemetry::metrics;

/// TLS origination settings of one upstream.
pub struct UpstreamTls {
    peer: Peer,
    configs: AlpnConfigs,
    handshake_timeout: Duration,
    upstream: String,
    handshake_errors: Counter,
}

/// How the server is named and verified.
enum Peer {
    /// Mesh mTLS: the current mesh material, the expected SPIFFE identity.
    Mesh {
        tls: Arc<MeshTls>,
        expected: ExpectedIdentity,
    },
    /// TLS to a server outside the mesh, verified for `server_name`; the
    /// bytes of the files the configuration was built from.
    Simple {
        server_name: ServerName<'static>,
        contents: Vec<Vec<u8>>,
    },
}

/// One client configuration per ALPN offer: `Http`, `Http2`, `Http1`,
/// `None`, each a clone of one base configuration with its own offer.
struct AlpnConfigs([Arc<ClientConfig>; 4]);

impl AlpnConfigs {
    fn of(base: &ClientConfig) -> AlpnConfigs {
        let offering = |alpn: Alpn| {
            let mut config = base.clone();
            config.alpn_protocols = alpn.protocols();
            Arc::new(config)
        };
        AlpnConfigs([
            offering(Alpn::Http),
            offering(Alpn::Http2),
            offering(Alpn::Http1),
            offering(Alpn::None),
        ])
    }

    fn offering(&self, alpn: Alpn) -> &Arc<ClientConfig> {
        let [http, http2, http1, none] = &self.0;
        match alpn {
            Alpn::Http => http,
            Alpn::Http2 => http2,
            Alpn::Http1 => http1,
            Alpn::None => none,
        }
    }
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match &self.peer {
            Peer::Mesh { .. } => "mesh",
            Peer::Simple { .. } => "simple",
        };
        f.debug_struct("UpstreamTls")
            .field("upstream", &self.upstream)
            .field("mode", &mode)
            .finish_non_exhaustive()
    }
}

/// Equal when built alike (mesh: same material and expected identity;
/// simple: same server name and file contents) for the same upstream with
/// the same handshake timeout, so a configuration reload can tell whether an
/// upstream's TLS changed.
impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        let same_peer = match (&self.peer, &other.peer) {
            (
                Peer::Mesh { tls, expected },
                Peer::Mesh {
                    tls: other_tls,
                    expected: other_expected,
                },
            ) => Arc::ptr_eq(tls, other_tls) && expected == other_expected,
            (
                Peer::Simple {
                    server_name,
                    contents,
                },
                Peer::Simple {
                    server_name: other_name,
                    contents: other_contents,
                },
            ) => server_name == other_name && contents == other_contents,
            _ => false,
        };
        same_peer
            && self.upstream == other.upstream
            && self.handshake_timeout == other.handshake_timeout
    }
}

/// Why TLS origination for an upstream cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum OriginationError {
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    #[error(transparent)]
    Material(#[from] super::material::MaterialError),
    #[error("server_name `{0}` is neither a DNS name nor an IP address")]
    ServerName(String),
}

impl UpstreamTls {
    /// Mesh mTLS with the sidecar's material, expecting `expected`.
    pub fn mesh(
        tls: &Arc<MeshTls>,
        expected: ExpectedIdentity,
        upstream: &str,
    ) -> Result<UpstreamTls, OriginationError> {
        let base = tls.client_config(expected.clone())?;
        Ok(UpstreamTls::with(
            Peer::Mesh {
                tls: Arc::clone(tls),
                expected,
            },
            &base,
            tls.handshake_timeout(),
            upstream,
        ))
    }

    /// TLS to a server outside the mesh, verified for `server_name` with
    /// `files` (read now).
    pub fn simple(
        server_name: &str,
        files: &SimpleTlsFiles,
        handshake_timeout: Duration,
        upstream: &str,
    ) -> Result<UpstreamTls, OriginationError> {
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| OriginationError::ServerName(server_name.to_owned()))?;
        let loaded = files.load()?;
        Ok(UpstreamTls::with(
            Peer::Simple {
                server_name: name,
                contents: loaded.contents,
            },
            &loaded.config,
            handshake_timeout,
            upstream,
        ))
    }

    fn with(
        peer: Peer,
        base: &ClientConfig,
        handshake_timeout: Duration,
        upstream: &str,
    ) -> UpstreamTls {
        UpstreamTls {
            peer,
            configs: AlpnConfigs::of(base),
            handshake_timeout,
            upstream: upstream.to_owned(),
            handshake_errors: metrics::tls_handshake_errors(Direction::Outbound, upstream),
        }
    }

    /// TLS over `tcp` to `addr`, offering `alpn`. The boolean says whether
    /// the server chose `h2`.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
        alpn: Alpn,
    ) -> Result<(TlsStream<TcpStream>, bool), ProxyError> {
        let connector = TlsConnector::from(Arc::clone(self.configs.offering(alpn)));
        let name = match &self.peer {
            // The identity check uses the URI SAN, not this name; an IP
            // address also keeps SNI out of the ClientHello.
            Peer::Mesh { .. } => ServerName::IpAddress(addr.ip().into()),
            Peer::Simple { server_name, .. } => server_name.clone(),
        };
        let timeout = self.handshake_timeout;
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
        match &self.peer {
            Peer::Mesh { .. } => tracing::warn!(
                upstream = %self.upstream, endpoint = %addr, error = %source,
                "TLS handshake with upstream failed"
            ),
            Peer::Simple { server_name, .. } => tracing::warn!(
                upstream = %self.upstream, endpoint = %addr,
                server_name = server_name.to_str().as_ref(), error = %source,
                "TLS handshake with upstream failed"
            ),
        }
        Err(ProxyError::TlsHandshake { addr, source })
    }
}
