//! Mesh mutual TLS between sidecars, and TLS origination to servers
//! outside the mesh (rustls, ring provider).
//!
//! [`MeshTls`] holds the current [`Material`] (certificate, key, CA roots)
//! behind an atomic pointer; the rustls configurations are built once and
//! read the material at each handshake (see `verify`), so a rotation —
//! files changed on disk (`files`), or a new leaf or roots from Consul's
//! Connect CA (`consul`) — reaches new connections at once while
//! established connections keep their session. Session resumption is off:
//! every connection gets a full handshake against the current CA.
//!
//! Inbound (`inbound`): the listener terminates TLS and requires a client
//! certificate chaining to the CA; the peer's SPIFFE ID (`identity`) goes
//! to authorization (`authorization`) and to the application. Outbound
//! (`outbound`): connections to meshed upstreams originate TLS, present the
//! sidecar's certificate and verify the server's chain and SPIFFE identity.
//! Until the first material is loaded every handshake fails. Upstreams
//! outside the mesh may originate TLS too (`simple`: the server verified by
//! name against `ca_file` or the system's roots, session resumption on);
//! they share the outbound connect, ALPN offers and failure accounting.

pub mod authorization;
pub mod consul;
pub mod files;
pub mod identity;
pub mod inbound;
pub mod material;
pub mod outbound;
pub mod simple;
pub mod stream;
mod verify;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use rustls::crypto::CryptoProvider;
use rustls::server::NoServerSessionStorage;
use rustls::{ClientConfig, ServerConfig};

use crate::telemetry::metrics;
pub use identity::{ExpectedIdentity, PeerIdentity};
pub use material::Material;

/// The ALPN protocol IDs remora speaks.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Which application protocols a TLS connection offers (client) or accepts
/// (server), in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// `h2`, then `http/1.1`.
    Http,
    /// `h2` only (HTTP/2 and gRPC).
    Http2,
    /// `http/1.1` only (protocol upgrades such as WebSocket).
    Http1,
    /// None (opaque TCP).
    None,
}

impl Alpn {
    fn protocols(self) -> Vec<Vec<u8>> {
        match self {
            Alpn::Http => vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()],
            Alpn::Http2 => vec![ALPN_H2.to_vec()],
            Alpn::Http1 => vec![ALPN_HTTP1.to_vec()],
            Alpn::None => Vec::new(),
        }
    }
}

/// The current TLS material of this sidecar, and the configurations that use it.
#[derive(Debug)]
pub struct MeshTls {
    current: ArcSwapOption<Material>,
    handshake_timeout: Duration,
    provider: Arc<CryptoProvider>,
}

impl MeshTls {
    pub fn new(handshake_timeout: Duration) -> Arc<MeshTls> {
        Arc::new(MeshTls {
            current: ArcSwapOption::empty(),
            handshake_timeout,
            provider: material::provider(),
        })
    }

    /// The material new handshakes use, once loaded.
    pub fn current(&self) -> Option<Arc<Material>> {
        self.current.load_full()
    }

    /// Makes `material` the one new handshakes use; `source` says where it
    /// came from (for the log line).
    pub fn install(&self, material: Material, source: &str) {
        tracing::info!(
            source,
            serial = %material.serial,
            identity = material.own_identity.as_ref().map(ToString::to_string).unwrap_or_default(),
            roots = material.roots.len(),
            "TLS certificate loaded"
        );
        metrics::tls_certificate_update(true);
        self.current.store(Some(Arc::new(material)));
    }

    /// Records material that could not be used; the current one stays.
    pub fn reject(&self, source: &str, error: &dyn std::fmt::Display) {
        tracing::warn!(source, %error, "TLS material rejected; keeping the current certificate");
        metrics::tls_certificate_update(false);
    }

    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// A server configuration requiring client certificates, accepting `alpn`.
    pub fn server_config(self: &Arc<Self>, alpn: Alpn) -> Result<Arc<ServerConfig>, rustls::Error> {
        let verifier = verify::CurrentClientVerifier {
            tls: Arc::clone(self),
            provider: Arc::clone(&self.provider),
        };
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_cert_resolver(Arc::new(verify::CurrentCertificate(Arc::clone(self))));
        config.alpn_protocols = alpn.protocols();
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(Arc::new(config))
    }

    /// A client configuration presenting this sidecar's certificate and
    /// verifying the server against `expected`; no ALPN yet (see
    /// `outbound`, which offers per connection).
    pub fn client_config(
        self: &Arc<Self>,
        expected: ExpectedIdentity,
    ) -> Result<ClientConfig, rustls::Error> {
        let verifier = verify::ServerIdentityVerifier {
            tls: Arc::clone(self),
            provider: Arc::clone(&self.provider),
            expected,
        };
        let mut config = ClientConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(verify::CurrentCertificate(Arc::clone(self))));
        config.resumption = rustls::client::Resumption::disabled();
        Ok(config)
    }
}
