//! The rustls client configuration for an `https://` Consul agent: the
//! agent's certificate must chain to a certificate of the CA file (no system
//! roots), and a client certificate is presented when one is configured.
//! Rejects a missing CA file, files that cannot be read or hold no PEM
//! certificate / key, and a client certificate without its key.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::{ConsulError, TlsFiles};

/// The client configuration for `files`.
pub(super) fn client_config(files: &TlsFiles) -> Result<ClientConfig, ConsulError> {
    let Some(ca_file) = &files.ca_file else {
        return Err(ConsulError::Tls(
            "an https:// agent needs consul.ca_file (or CONSUL_CACERT)".into(),
        ));
    };
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca_file)? {
        roots
            .add(cert)
            .map_err(|error| tls_error(ca_file, &error.to_string()))?;
    }
    let builder = config_builder()?.with_root_certificates(roots);
    match (&files.client_cert, &files.client_key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let chain = certificates(cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|error| tls_error(key, &format!("no private key: {error}")))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|error| tls_error(cert, &error.to_string()))
        }
        _ => Err(ConsulError::Tls(
            "consul.client_cert and consul.client_key go together".into(),
        )),
    }
}

/// A configuration that trusts nothing, for a client that speaks plain HTTP.
pub(super) fn plain_http_config() -> Result<ClientConfig, ConsulError> {
    Ok(config_builder()?
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth())
}

fn config_builder()
-> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, ConsulError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ConsulError::Tls(error.to_string()))
}

/// Every certificate in the PEM file at `path`; at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConsulError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| tls_error(path, &error.to_string()))?;
    if certs.is_empty() {
        return Err(tls_error(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

fn tls_error(path: &Path, reason: &str) -> ConsulError {
    ConsulError::Tls(format!("{}: {reason}", path.display()))
}
