//! Workload identity: SPIFFE IDs in Consul's format
//! `spiffe://<trust-domain>/ns/<namespace>/dc/<datacenter>/svc/<service>`,
//! read from a certificate's URI SAN (never from DNS names or the subject),
//! the identity expected of an upstream, and the allow/deny patterns of
//! authorization. Rejects IDs with another shape, empty segments, and
//! patterns or expected identities that are empty or contain whitespace.

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;

const SCHEME: &str = "spiffe://";

/// A SPIFFE ID in Consul's service format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub namespace: String,
    pub datacenter: String,
    pub service: String,
}

impl SpiffeId {
    /// Parses `spiffe://<td>/ns/<ns>/dc/<dc>/svc/<service>`.
    pub fn parse(uri: &str) -> Result<SpiffeId, String> {
        let invalid = || {
            format!(
                "`{uri}` is not a SPIFFE ID of the form spiffe://<trust-domain>/ns/<ns>/dc/<dc>/svc/<service>"
            )
        };
        let rest = uri.strip_prefix(SCHEME).ok_or_else(invalid)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [
            trust_domain,
            "ns",
            namespace,
            "dc",
            datacenter,
            "svc",
            service,
        ] = parts[..]
        else {
            return Err(invalid());
        };
        let segments = [trust_domain, namespace, datacenter, service];
        if segments
            .iter()
            .any(|s| s.is_empty() || s.contains(char::is_whitespace) || s.contains('*'))
        {
            return Err(invalid());
        }
        Ok(SpiffeId {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            datacenter: datacenter.to_owned(),
            service: service.to_owned(),
        })
    }

    /// The same trust domain and namespace, another service (and
    /// optionally another datacenter).
    pub fn sibling(&self, service: &str, datacenter: Option<&str>) -> SpiffeId {
        SpiffeId {
            trust_domain: self.trust_domain.clone(),
            namespace: self.namespace.clone(),
            datacenter: datacenter.unwrap_or(&self.datacenter).to_owned(),
            service: service.to_owned(),
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/dc/{}/svc/{}",
            self.trust_domain, self.namespace, self.datacenter, self.service
        )
    }
}

/// The verified identity of the peer of an mTLS connection: the first
/// `spiffe://` URI SAN of its certificate (request extension on inbound).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The URI exactly as in the certificate.
    pub uri: Arc<str>,
    /// Its parts, when it is in Consul's format.
    pub spiffe: Option<Arc<SpiffeId>>,
}

impl PeerIdentity {
    fn from_uri(uri: &str) -> PeerIdentity {
        PeerIdentity {
            uri: uri.into(),
            spiffe: SpiffeId::parse(uri).ok().map(Arc::new),
        }
    }

    /// The peer's service name, when its ID is in Consul's format.
    pub fn service(&self) -> Option<&str> {
        self.spiffe.as_deref().map(|id| id.service.as_str())
    }
}

/// The `spiffe://` URI SAN of a certificate, if it has one.
pub fn of_certificate(cert: &CertificateDer<'_>) -> Option<PeerIdentity> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    parsed
        .valid_uri_names()
        .find(|uri| uri.starts_with(SCHEME))
        .map(PeerIdentity::from_uri)
}

/// Every URI SAN of a certificate (for the expected-identity check).
pub fn uri_names(cert: &CertificateDer<'_>) -> Vec<String> {
    webpki::EndEntityCert::try_from(cert)
        .map(|parsed| parsed.valid_uri_names().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// A certificate's serial number in hex (e.g. for logs and tests).
pub fn serial_hex(cert: &CertificateDer<'_>) -> Option<String> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    Some(parsed.serial().iter().map(|b| format!("{b:02x}")).collect())
}

/// The identity an upstream's servers must present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectedIdentity {
    /// Exactly this SPIFFE ID.
    Exact(String),
    /// This service in this sidecar's own trust domain and namespace, in
    /// `datacenter` (default: this sidecar's).
    Service {
        service: String,
        datacenter: Option<String>,
    },
}

impl ExpectedIdentity {
    /// From `upstreams[].tls.identity` (checked by [`check_expected`]) or the
    /// service name it defaults to.
    pub fn from_config(identity: &str, datacenter: Option<&str>) -> ExpectedIdentity {
        if identity.starts_with(SCHEME) {
            ExpectedIdentity::Exact(identity.to_owned())
        } else {
            ExpectedIdentity::Service {
                service: identity.to_owned(),
                datacenter: datacenter.map(str::to_owned),
            }
        }
    }

    /// The SPIFFE ID expected, given this sidecar's own; `None` when it
    /// depends on an own identity this sidecar's certificate does not have.
    pub fn resolve(&self, own: Option<&SpiffeId>) -> Option<String> {
        match self {
            ExpectedIdentity::Exact(uri) => Some(uri.clone()),
            ExpectedIdentity::Service {
                service,
                datacenter,
            } => own.map(|own| own.sibling(service, datacenter.as_deref()).to_string()),
        }
    }
}

/// Checks an allow/deny pattern: a service name or a SPIFFE ID, `*` for any
/// characters.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.trim().is_empty() || pattern.contains(char::is_whitespace) {
        return Err(format!(
            "`{pattern}`: expected a service name or a spiffe:// ID (`*` matches any characters)"
        ));
    }
    if pattern.contains("://") && !pattern.starts_with(SCHEME) {
        return Err(format!("`{pattern}`: only spiffe:// IDs are identities"));
    }
    Ok(())
}

/// Checks an expected upstream identity: a service name or a full SPIFFE ID.
pub fn check_expected(identity: &str) -> Result<(), String> {
    if identity.contains("://") {
        return SpiffeId::parse(identity).map(drop);
    }
    let valid = !identity.is_empty()
        && identity
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{identity}`: expected a service name or a full spiffe:// ID"
        ))
    }
}

/// True when `pattern` matches the peer: a pattern with `://` is matched
/// against the whole SPIFFE ID, any other against the service name.
pub fn pattern_matches(pattern: &str, peer: &PeerIdentity) -> bool {
    if pattern.contains("://") {
        glob(pattern.as_bytes(), peer.uri.as_bytes())
    } else {
        peer.service()
            .is_some_and(|service| glob(pattern.as_bytes(), service.as_bytes()))
    }
}

/// `*` matches any run of bytes (none included); everything else itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative matching with backtracking to the last `*`: linear in
    // practice, never exponential.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str =
        "spiffe://11111111-2222-3333-4444-555555555555.consul/ns/default/dc/dc1/svc/web";

    #[test]
    fn parses_consul_ids_and_rejects_others() {
        let id = SpiffeId::parse(WEB).unwrap();
        assert_eq!(id.service, "web");
        assert_eq!(id.datacenter, "dc1");
        assert_eq!(id.to_string(), WEB);
        for bad in [
            "spiffe://td/ns/default/dc/dc1/svc/",
            "spiffe://td/ns/default/dc/dc1/svc/web/extra",
            "spiffe://td/svc/web",
            "https://td/ns/default/dc/dc1/svc/web",
            "spiffe:///ns/default/dc/dc1/svc/web",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn expected_identity_follows_the_own_trust_domain() {
        let own = SpiffeId::parse(WEB).unwrap();
        let api = ExpectedIdentity::from_config("api", None);
        assert_eq!(
            api.resolve(Some(&own)).unwrap(),
            WEB.replace("svc/web", "svc/api")
        );
        let other_dc = ExpectedIdentity::from_config("api", Some("dc2"));
        assert!(
            other_dc
                .resolve(Some(&own))
                .unwrap()
                .contains("/dc/dc2/svc/api")
        );
        assert_eq!(api.resolve(None), None);
        let exact = ExpectedIdentity::from_config(WEB, None);
        assert_eq!(exact.resolve(None).as_deref(), Some(WEB));
    }

    #[test]
    fn patterns_match_service_names_or_whole_ids() {
        let peer = PeerIdentity::from_uri(WEB);
        assert!(pattern_matches("web", &peer));
        assert!(pattern_matches("w*", &peer));
        assert!(pattern_matches("*", &peer));
        assert!(!pattern_matches("api", &peer));
        assert!(!pattern_matches("we", &peer));
        assert!(pattern_matches(WEB, &peer));
        assert!(pattern_matches("spiffe://*/ns/default/dc/*/svc/web", &peer));
        assert!(!pattern_matches("spiffe://*/dc/dc2/svc/*", &peer));
        let odd = PeerIdentity::from_uri("spiffe://example.org/workload");
        assert!(!pattern_matches("*", &odd), "no service name to match");
        assert!(pattern_matches("spiffe://example.org/*", &odd));
    }

    #[test]
    fn glob_backtracks() {
        assert!(glob(b"a*b*c", b"aXbYbZc"));
        assert!(!glob(b"a*b*c", b"aXbYbZ"));
        assert!(glob(b"**", b""));
        assert!(!glob(b"a", b""));
    }

    #[test]
    fn checks_patterns_and_expected_identities() {
        assert!(check_pattern("web").is_ok());
        assert!(check_pattern("spiffe://*/svc/web").is_ok());
        assert!(check_pattern("").is_err());
        assert!(check_pattern("http://x").is_err());
        assert!(check_expected("api").is_ok());
        assert!(check_expected(WEB).is_ok());
        assert!(check_expected("spiffe://td/svc/api").is_err());
        assert!(check_expected("a b").is_err());
    }
}
