//! TLS origination towards an upstream, in either mode. Mesh: the sidecar's
//! certificate is presented, the server must chain to the mesh CA and
//! present the expected SPIFFE identity (the endpoint's address is the
//! rustls server name, so no SNI is sent). Simple: the server's certificate
//! must chain to `ca_file` or the system's roots and be valid for
//! `server_name`, which is also sent as SNI (see `simple`). In both, ALPN
//! offers what the connection will carry, from one client configuration per
//! offer (clones of one, so they share its session cache); in simple mode
//! the files are re-read every reload interval and, when their bytes
//! changed and make a valid configuration, a new set of configurations (and
//! session cache) serves new connections — otherwise the current one stays,
//! the rejection logged and counted (`remora_tls_certificate_updates_total`).
//! The handshake is bounded by `tls.handshake_timeout` (its default without
//! a `tls:` section); a failure is counted
//! (`remora_tls_handshake_errors_total{direction="outbound"}`), logged with
//! rustls's reason, and reported as a connect failure of the endpoint.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ::metrics::Counter;
use arc_swap::ArcSwap;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::material::MaterialError;
use super::simple::{Contents, SimpleTlsFiles};
use super::{ALPN_H2, Alpn, ExpectedIdentity, MeshTls};
use crate::context::Direction;
use crate::error::ProxyError;
use crate::telemetry::metrics;

/// TLS origination settings of one upstream.
pub struct UpstreamTls {
    peer: Peer,
    /// The configurations new connections use.
    current: ArcSwap<Generation>,
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
    /// TLS to a server outside the mesh, verified for `server_name` with
    /// what `files` hold.
    Simple {
        server_name: ServerName<'static>,
        files: SimpleTlsFiles,
    },
}

/// The per-ALPN configurations, and (simple) the file contents they were
/// built from.
struct Generation {
    configs: AlpnConfigs,
    contents: Option<Contents>,
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
/// simple: same server name and file contents now) for the same upstream
/// with the same handshake timeout, so a configuration reload can tell
/// whether an upstream's TLS changed.
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
                Peer::Simple { server_name, .. },
                Peer::Simple {
                    server_name: other_name,
                    ..
                },
            ) => {
                server_name == other_name
                    && self.current.load().contents == other.current.load().contents
            }
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
    Material(#[from] MaterialError),
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
        let generation = Generation {
            configs: AlpnConfigs::of(&base),
            contents: None,
        };
        let peer = Peer::Mesh {
            tls: Arc::clone(tls),
            expected,
        };
        Ok(UpstreamTls::with(
            peer,
            generation,
            tls.handshake_timeout(),
            upstream,
        ))
    }

    /// TLS to a server outside the mesh, verified for `server_name` with
    /// `files` (read now; [`watch_files`](Self::watch_files) re-reads them).
    pub fn simple(
        server_name: &str,
        files: SimpleTlsFiles,
        handshake_timeout: Duration,
        upstream: &str,
    ) -> Result<UpstreamTls, OriginationError> {
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| OriginationError::ServerName(server_name.to_owned()))?;
        let contents = files.read()?;
        let generation = Generation {
            configs: AlpnConfigs::of(&contents.client_config()?),
            contents: Some(contents),
        };
        let peer = Peer::Simple { server_name, files };
        Ok(UpstreamTls::with(
            peer,
            generation,
            handshake_timeout,
            upstream,
        ))
    }

    fn with(
        peer: Peer,
        generation: Generation,
        handshake_timeout: Duration,
        upstream: &str,
    ) -> UpstreamTls {
        UpstreamTls {
            peer,
            current: ArcSwap::from_pointee(generation),
            handshake_timeout,
            upstream: upstream.to_owned(),
            handshake_errors: metrics::tls_handshake_errors(Direction::Outbound, upstream),
        }
    }

    /// Simple mode: re-reads the files every `interval` for as long as
    /// this origination is in use (the task ends once it is dropped).
    pub fn watch_files(self: &Arc<Self>, interval: Duration) {
        let Peer::Simple { .. } = self.peer else {
            return;
        };
        let origination = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut rejected = None;
            loop {
                ticks.tick().await;
                let Some(origination) = origination.upgrade() else {
                    return;
                };
                origination.reload(&mut rejected);
            }
        });
    }

    /// Reads the files; uses them when their contents changed and make a
    /// valid configuration. `rejected`: the contents last refused (not
    /// reported again).
    fn reload(&self, rejected: &mut Option<Contents>) {
        let Peer::Simple { files, .. } = &self.peer else {
            return;
        };
        let contents = match files.read() {
            Ok(contents) => contents,
            Err(error) => return self.reject(&error),
        };
        let current = self.current.load();
        if current.contents.as_ref() == Some(&contents) || rejected.as_ref() == Some(&contents) {
            return;
        }
        match contents.client_config() {
            Ok(config) => {
                self.current.store(Arc::new(Generation {
                    configs: AlpnConfigs::of(&config),
                    contents: Some(contents),
                }));
                *rejected = None;
                tracing::info!(upstream = %self.upstream, "upstream TLS files reloaded");
                metrics::tls_certificate_update(true);
            }
            Err(error) => {
                *rejected = Some(contents);
                self.reject(&error);
            }
        }
    }

    fn reject(&self, error: &MaterialError) {
        tracing::warn!(
            upstream = %self.upstream, %error,
            "upstream TLS files rejected; keeping the current ones"
        );
        metrics::tls_certificate_update(false);
    }

    /// TLS over `tcp` to `addr`, offering `alpn`. The boolean says whether
    /// the server chose `h2`.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
        alpn: Alpn,
    ) -> Result<(TlsStream<TcpStream>, bool), ProxyError> {
        let config = Arc::clone(self.current.load().configs.offering(alpn));
        let connector = TlsConnector::from(config);
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
