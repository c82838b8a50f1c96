//! One generation of TLS material: this sidecar's certificate chain and key,
//! the CA roots peers must chain to, and what follows from them (the client
//! certificate verifier, the own SPIFFE ID). Built from PEM text, whether it
//! came from files or from Consul. Rejects PEM without a certificate, a key
//! that does not match the certificate, and CA text without a usable root.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;

use super::identity;
use crate::spiffe::SpiffeId;

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("the certificate PEM holds no certificate")]
    NoCertificate,
    #[error("the certificate PEM is malformed: {0}")]
    CertificatePem(String),
    #[error("the key PEM holds no usable private key: {0}")]
    Key(String),
    #[error("the key does not belong to the certificate (or is unsupported): {0}")]
    KeyMismatch(rustls::Error),
    #[error("the CA PEM holds no usable certificate: {0}")]
    Ca(String),
    #[error("the TLS configuration cannot be built: {0}")]
    Config(rustls::Error),
}

/// The crypto provider remora uses (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The CA certificates of PEM text; at least one.
pub fn roots_from_pem(ca: &[u8]) -> Result<RootCertStore, MaterialError> {
    let mut roots = RootCertStore::empty();
    for root in CertificateDer::pem_slice_iter(ca) {
        let root = root.map_err(|error| MaterialError::Ca(error.to_string()))?;
        roots
            .add(root)
            .map_err(|error| MaterialError::Ca(error.to_string()))?;
    }
    if roots.is_empty() {
        return Err(MaterialError::Ca("no certificate found".into()));
    }
    Ok(roots)
}

/// This sidecar's TLS material.
pub struct Material {
    pub certified_key: Arc<CertifiedKey>,
    pub roots: Arc<RootCertStore>,
    /// Checks client certificates against `roots` (inbound).
    pub client_verifier: Arc<dyn ClientCertVerifier>,
    /// The SPIFFE ID of this sidecar's own certificate, when it has one.
    pub own_identity: Option<SpiffeId>,
    /// The leaf's serial number (hex), for logs.
    pub serial: String,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("serial", &self.serial)
            .field("own_identity", &self.own_identity)
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

impl Material {
    /// From a PEM certificate chain (leaf first), its PEM key, and PEM CA roots.
    pub fn from_pem(cert: &[u8], key: &[u8], ca: &[u8]) -> Result<Material, MaterialError> {
        let chain = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| MaterialError::CertificatePem(error.to_string()))?;
        let leaf = chain.first().ok_or(MaterialError::NoCertificate)?.clone();
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|error| MaterialError::Key(error.to_string()))?;
        let provider = provider();
        let certified_key =
            CertifiedKey::from_der(chain, key, &provider).map_err(MaterialError::KeyMismatch)?;

        let roots = Arc::new(roots_from_pem(ca)?);
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), provider)
                .build()
                .map_err(|error| MaterialError::Ca(error.to_string()))?;
        let own_identity = identity::of_certificate(&leaf)
            .and_then(|peer| peer.spiffe)
            .map(|id| (*id).clone());
        if own_identity.is_none() && identity::uri_names(&leaf).len() > 1 {
            tracing::warn!(
                uris = ?identity::uri_names(&leaf),
                "this sidecar's certificate has more than one URI SAN, so no SPIFFE ID: \
                 peers refuse it, and upstreams named by service cannot be checked"
            );
        }
        Ok(Material {
            certified_key: Arc::new(certified_key),
            roots,
            client_verifier,
            own_identity,
            serial: identity::serial_hex(&leaf).unwrap_or_default(),
        })
    }
}
