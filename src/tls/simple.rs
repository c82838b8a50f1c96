//! TLS origination to a server outside the mesh (`upstreams[].tls.mode:
//! simple`): the rustls client configuration trusting `ca_file` or the
//! system's roots, presenting `cert_file` / `key_file` when given. The
//! server's chain, validity period and name (`server_name`: a DNS SAN, or an
//! IP SAN for an address) are checked by rustls's WebPKI verifier. Session
//! resumption uses rustls's in-memory client cache, which the per-ALPN
//! configurations of one upstream share (they are clones of this one).
//!
//! The files are read when the configuration is applied (at start and at
//! every reload); their bytes are kept so that a reload that finds them
//! changed builds the upstream's connections afresh. The system's roots are
//! read then too. Rejects unreadable files, a CA file without certificate,
//! no system roots without `ca_file`, a key that does not match its
//! certificate.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use std::path::{Path, PathBuf};

use super::material::{MaterialError, provider, roots_from_pem};

/// The files of `upstreams[].tls` in `mode: simple`.
#[derive(Debug, Clone, Default)]
pub struct SimpleTlsFiles {
    pub ca: Option<PathBuf>,
    /// The client certificate chain and its key.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// A client configuration (no ALPN yet) and the bytes of the files it was
/// built from.
pub struct SimpleTls {
    pub config: ClientConfig,
    pub contents: Vec<Vec<u8>>,
}

impl SimpleTlsFiles {
    /// Reads the files and builds the configuration.
    pub fn load(&self) -> Result<SimpleTls, MaterialError> {
        let mut contents = Vec::new();
        let roots = match &self.ca {
            Some(ca) => {
                let pem = read("ca_file", ca)?;
                let roots = roots_from_pem(&pem)?;
                contents.push(pem);
                roots
            }
            None => system_roots()?,
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(MaterialError::Config)?
            .with_root_certificates(roots);
        let config = match &self.client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let cert_pem = read("cert_file", cert)?;
                let key_pem = read("key_file", key)?;
                let chain = CertificateDer::pem_slice_iter(&cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|error| MaterialError::CertificatePem(error.to_string()))?;
                if chain.is_empty() {
                    return Err(MaterialError::NoCertificate);
                }
                let key = PrivateKeyDer::from_pem_slice(&key_pem)
                    .map_err(|error| MaterialError::Key(error.to_string()))?;
                let config = builder
                    .with_client_auth_cert(chain, key)
                    .map_err(MaterialError::KeyMismatch)?;
                contents.extend([cert_pem, key_pem]);
                config
            }
        };
        Ok(SimpleTls { config, contents })
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
