//! Mesh TLS for tests: a CA and SPIFFE leaf certificates generated at run time (rcgen),
//! PEM files a proxy can load (replaced atomically, by rename, for rotation tests), and a
//! TLS test client that presents a leaf (or none) and records the server's certificate
//! without judging it (the proxy's server side is what is under test).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

pub const TRUST_DOMAIN: &str = "11111111-2222-3333-4444-555555555555.consul";

/// The SPIFFE ID of `service` in the test trust domain (Consul's format).
pub fn spiffe(service: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/default/dc/dc1/svc/{service}")
}

/// A certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its key, PEM.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    /// The serial number in hex, as remora logs it.
    pub serial: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        let key = KeyPair::generate().unwrap();
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf for `service` (URI SAN = its SPIFFE ID), with this serial number.
    pub fn leaf(&self, service: &str, serial: u64) -> Leaf {
        self.leaf_with_uri(Some(&spiffe(service)), serial)
    }

    /// A leaf with this URI SAN (or none), usable as client and server certificate.
    pub fn leaf_with_uri(&self, uri: Option<&str>, serial: u64) -> Leaf {
        let sans = uri.map(|uri| SanType::URI(uri.try_into().unwrap()));
        self.leaf_with_sans(sans.into_iter().collect(), serial)
    }

    /// A leaf for the IP address `ip` (an IP SAN), as an HTTPS server on it needs to be
    /// verified by its address.
    pub fn leaf_for_ip(&self, ip: std::net::IpAddr, serial: u64) -> Leaf {
        self.leaf_with_sans(vec![SanType::IpAddress(ip)], serial)
    }

    /// A leaf for the DNS name `name` (a DNS SAN), as an HTTPS server known by that name
    /// needs.
    pub fn leaf_for_dns(&self, name: &str, serial: u64) -> Leaf {
        self.leaf_with_sans(vec![SanType::DnsName(name.try_into().unwrap())], serial)
    }

    /// [`Ca::leaf_for_dns`] valid in 2000 only: long expired.
    pub fn expired_leaf_for_dns(&self, name: &str, serial: u64) -> Leaf {
        let mut params = leaf_params(vec![SanType::DnsName(name.try_into().unwrap())], serial);
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        self.sign(params, serial)
    }

    fn leaf_with_sans(&self, sans: Vec<SanType>, serial: u64) -> Leaf {
        self.sign(leaf_params(sans, serial), serial)
    }

    fn sign(&self, params: CertificateParams, serial: u64) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let serial = format!("{serial:02x}");
        let serial = if serial.len() % 2 == 1 {
            format!("0{serial}")
        } else {
            serial
        };
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial,
        }
    }
}

/// A leaf's parameters: these SANs and serial, usable by servers and clients.
fn leaf_params(sans: Vec<SanType>, serial: u64) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = sans;
    params.serial_number = Some(SerialNumber::from(serial));
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params
}

/// cert.pem, key.pem and ca.pem in a directory of their own.
pub struct TlsFiles {
    pub dir: PathBuf,
}

impl TlsFiles {
    pub fn new(leaf: &Leaf, ca: &Ca) -> TlsFiles {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "remora-tls-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let files = TlsFiles { dir };
        files.write(leaf, &ca.pem());
        files
    }

    /// Replaces the files, each by an atomic rename.
    pub fn write(&self, leaf: &Leaf, ca_pem: &str) {
        for (name, text) in [
            ("cert.pem", &leaf.cert_pem),
            ("key.pem", &leaf.key_pem),
            ("ca.pem", &ca_pem.to_owned()),
        ] {
            let tmp = self.dir.join(format!("{name}.tmp"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, self.dir.join(name)).unwrap();
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// The `tls:` section loading these files, plus `extra` lines (indented two spaces).
    pub fn yaml(&self, extra: &str) -> String {
        format!(
            "tls:\n  cert: {}\n  key: {}\n  ca: {}\n  reload_interval: 50ms\n{extra}",
            self.path("cert.pem"),
            self.path("key.pem"),
            self.path("ca.pem")
        )
    }
}

impl Drop for TlsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any server certificate (the test reads it from the connection afterwards).
#[derive(Debug)]
struct AcceptAny;

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS client presenting `leaf` (or no certificate), offering `alpn`.
pub fn connector(leaf: Option<&Leaf>, alpn: &[&[u8]]) -> TlsConnector {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny));
    let mut config = match leaf {
        Some(leaf) => {
            let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// A TLS connection to `addr` presenting `leaf`.
pub async fn connect(
    addr: SocketAddr,
    leaf: Option<&Leaf>,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::IpAddress(addr.ip().into());
    connector(leaf, alpn).connect(name, tcp).await
}

/// The serial number (hex) of the certificate the server presented.
pub fn server_serial(stream: &TlsStream<TcpStream>) -> String {
    let cert = &stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("server certificate")[0];
    let parsed = webpki::EndEntityCert::try_from(cert).unwrap();
    parsed.serial().iter().map(|b| format!("{b:02x}")).collect()
}

/// An HTTP/1.1 client connection over `stream`.
pub async fn http1(
    stream: TlsStream<TcpStream>,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>> {
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    sender
}

/// `GET path` on an HTTP/1.1 connection: status and body.
pub async fn get_on(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(http::StatusCode, http::HeaderMap, String), hyper::Error> {
    use http_body_util::BodyExt;
    sender.ready().await?;
    let mut request = http::Request::get(path).header("host", "app");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(http_body_util::Empty::new()).unwrap())
        .await?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, headers, String::from_utf8_lossy(&body).into_owned()))
}

/// Reads a PEM file (for assertions).
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}
