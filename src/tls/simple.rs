//! TLS origination to a server outside the mesh (`upstreams[].tls.mode:
//! simple`): the rustls client configuration trusting `ca_file` or the
//! system's roots, presenting `cert_file` / `key_file` when given. The
//! server's chain, validity period and name (`server_name`: a DNS SAN, or an
//! IP SAN for an address) are checked by rustls's WebPKI verifier. Session
//! resumption uses rustls's in-memory client cache, which the per-ALPN
//! configurations of one upstream share (they are clones of this one).
//!
//! The files are read when the configuration is applied and re-read every
//! reload interval (see `outbound`); [`Contents`] are their bytes, compared
//! to tell whether anything changed. Rejects unreadable files, a CA file
//! without certificate, no system roots without `ca_file`, a client
//! certificate PEM without certificate, a key that does not match its
//! certificate.

use std::path::{Path, PathBuf};

use rustls::ClientConfig;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::material::{MaterialError, provider, roots_from_pem};

/// The files of `upstreams[].tls` in `mode: simple`.
#[derive(Debug, Clone, Default)]
pub struct SimpleTlsFiles {
    pub ca: Option<PathBuf>,
    /// The client certificate chain and its key.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// The bytes of the files, as last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contents {
    ca: Option<Vec<u8>>,
    client: Option<(Vec<u8>, Vec<u8>)>,
}

impl SimpleTlsFiles {
    /// Reads the files.
    pub fn read(&self) -> Result<Contents, MaterialError> {
        let ca = (self.ca.as_deref())
            .map(|ca| read("ca_file", ca))
            .transpose()?;
        let client = match &self.client {
            Some((cert, key)) => Some((read("cert_file", cert)?, read("key_file", key)?)),
            None => None,
        };
        Ok(Contents { ca, client })
    }
}

impl Contents {
    /// The client configuration (no ALPN yet) these contents make; without
    /// a CA file, the system's roots are read now.
    pub fn client_config(&self) -> Result<ClientConfig, MaterialError> {
        let roots = match &self.ca {
            Some(pem) => roots_from_pem(pem)?,
            None => system_roots()?,
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(MaterialError::Config)?
            .with_root_certificates(roots);
        let Some((cert_pem, key_pem)) = &self.client else {
            return Ok(builder.with_no_client_auth());
        };
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| MaterialError::CertificatePem(error.to_string()))?;
        if chain.is_empty() {
            return Err(MaterialError::NoCertificate);
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|error| MaterialError::Key(error.to_string()))?;
        builder
            .with_client_auth_cert(chain, key)
            .map_err(MaterialError::KeyMismatch)
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, MaterialError> {
    std::fs::read(path).map_err(|source| MaterialError::Read {
        what,
        path: path.display().to_string(),
        source,
    })
}

/// The operating system's trusted roots.
fn system_roots() -> Result<RootCertStore, MaterialError> {
    let mut roots = RootCertStore::empty();
    let (added, _) =
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if added == 0 {
        return Err(MaterialError::Ca(
            "no system root certificates found; set ca_file".into(),
        ));
    }
    Ok(roots)
}
