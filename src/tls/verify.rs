//! The rustls hooks that read the *current* material at every handshake, so
//! a certificate or CA rotation applies to new connections at once while
//! established ones keep their session: the own certificate (both sides),
//! client-certificate verification (inbound) and server verification
//! (outbound). The outbound verifier checks the chain against the CA and
//! the server's SPIFFE URI SAN against the expected identity; DNS names and
//! the TLS server name are ignored. Rejects a chain that does not lead to a
//! current root, and a server whose URI SANs lack the expected identity.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

use super::MeshTls;
use super::identity::{ExpectedIdentity, of_certificate, uri_names};

/// Presents the current certificate, as server and as client.
#[derive(Debug)]
pub(super) struct CurrentCertificate(pub(super) Arc<MeshTls>);

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.current().map(|m| Arc::clone(&m.certified_key))
    }
}

impl ResolvesClientCert for CurrentCertificate {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.current().map(|m| Arc::clone(&m.certified_key))
    }

    fn has_certs(&self) -> bool {
        self.0.current().is_some()
    }
}

fn no_material() -> Error {
    Error::General("no TLS certificate loaded yet".into())
}

/// Requires a client certificate chaining to a current root.
#[derive(Debug)]
pub(super) struct CurrentClientVerifier {
    pub(super) tls: Arc<MeshTls>,
    pub(super) provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for CurrentClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// No CA names are sent (they change with rotation); remora's clients
    /// present their one certificate anyway.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let material = self.tls.current().ok_or_else(no_material)?;
        material
            .client_verifier
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Verifies an upstream server: chain to a current root, and the expected
/// SPIFFE ID as its one URI SAN (`identity::of_certificate`).
#[derive(Debug)]
pub(super) struct ServerIdentityVerifier {
    pub(super) tls: Arc<MeshTls>,
    pub(super) provider: Arc<CryptoProvider>,
    pub(super) expected: ExpectedIdentity,
}

impl ServerCertVerifier for ServerIdentityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let material = self.tls.current().ok_or_else(no_material)?;
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &material.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let Some(expected) = self.expected.resolve(material.own_identity.as_ref()) else {
            return Err(Error::General(
                "this sidecar's certificate has no SPIFFE ID to derive the upstream's from; \
                 set upstreams[].tls.identity to a full spiffe:// ID"
                    .into(),
            ));
        };
        if of_certificate(end_entity).is_some_and(|presented| *presented.uri == expected) {
            return Ok(ServerCertVerified::assertion());
        }
        let presented = uri_names(end_entity);
        tracing::warn!(%expected, ?presented, "upstream presented another identity (or more than one)");
        Err(Error::InvalidCertificate(CertificateError::NotValidForName))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
