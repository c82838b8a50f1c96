//! Workload identity: the SPIFFE ID of a certificate's URI SAN (never from
//! DNS names or the subject), the identity expected of an upstream, and the
//! allow/deny patterns of authorization matched against a peer. A URI that
//! breaks the SPIFFE ID character rules (`spiffe`) is no identity. A bare
//! service name names that service within a [`Scope`] (the authorizer's
//! rules choose it); `*` in a pattern never matches a `/`.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;

use crate::spiffe::{self, SCHEME, SpiffeId};

/// The verified identity of the peer of an mTLS connection: the `spiffe://`
/// URI SAN of its certificate (request extension on inbound).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The URI exactly as in the certificate.
    pub uri: Arc<str>,
    /// Its parts, when it is in Consul's format.
    pub spiffe: Option<Arc<SpiffeId>>,
}

impl PeerIdentity {
    /// The identity `uri` names, with its parts when it is in Consul's format.
    pub fn from_uri(uri: &str) -> PeerIdentity {
        PeerIdentity {
            uri: uri.into(),
            spiffe: SpiffeId::parse(uri).ok().map(Arc::new),
        }
    }
}

/// The SPIFFE ID of a certificate: its one URI SAN, when that is a valid
/// SPIFFE ID. A certificate with more URI SANs is no X509-SVID (the SPIFFE
/// X509-SVID standard, §2: "exactly one URI SAN") and has no identity, as
/// go-spiffe rules: taking one of them would let a certificate pass for
/// the identity a rule does not name.
pub fn of_certificate(cert: &CertificateDer<'_>) -> Option<PeerIdentity> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    let mut uris = parsed.valid_uri_names();
    let (Some(uri), None) = (uris.next(), uris.next()) else {
        tracing::debug!("peer certificate without exactly one URI SAN: no SPIFFE ID");
        return None;
    };
    if !uri.starts_with(SCHEME) {
        return None;
    }
    if let Err(error) = spiffe::check_id(uri) {
        tracing::debug!(%error, "peer certificate without a valid SPIFFE ID");
        return None;
    }
    Some(PeerIdentity::from_uri(uri))
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
    /// From `upstreams[].tls.identity` (checked by [`spiffe::check_expected`]) or the
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

/// Which peers a bare service name can name.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Those in the trust domain and namespace of this sidecar's own ID.
    Own(&'a SpiffeId),
    /// Those in any trust domain and namespace: how deny rules read bare
    /// names (they fail closed), and deny intentions while this sidecar's
    /// own ID is unknown.
    Anywhere,
    /// None: how allow rules read bare names while this sidecar's own ID is
    /// unknown.
    Nowhere,
}

impl Scope<'_> {
    /// The scope of an allow (`allow`) or a deny intention's source, given
    /// this sidecar's own ID if its certificate has one in Consul's format.
    pub fn of_rule(own: Option<&SpiffeId>, allow: bool) -> Scope<'_> {
        match own {
            Some(own) => Scope::Own(own),
            None if allow => Scope::Nowhere,
            None => Scope::Anywhere,
        }
    }

    /// True when `peer` is in this scope's trust domain and in `namespace`.
    pub fn contains(self, peer: &SpiffeId, namespace: Namespace<'_>) -> bool {
        let in_namespace = |own: Option<&str>| match namespace {
            Namespace::Any => true,
            Namespace::Own => own.is_none_or(|own| peer.namespace == own),
            Namespace::Named(name) => peer.namespace == name,
        };
        match self {
            Scope::Own(own) => {
                peer.trust_domain == own.trust_domain && in_namespace(Some(&own.namespace))
            }
            Scope::Anywhere => in_namespace(None),
            Scope::Nowhere => false,
        }
    }
}

/// The namespace a service name is looked for in, within a [`Scope`].
#[derive(Debug, Clone, Copy)]
pub enum Namespace<'a> {
    /// This sidecar's own (any, for [`Scope::Anywhere`]).
    Own,
    /// Every namespace.
    Any,
    /// This one.
    Named(&'a str),
}

/// True when `pattern` matches the peer: a pattern with `://` is matched
/// against the whole SPIFFE ID, any other against the service name of a
/// peer in `scope`.
pub fn pattern_matches(pattern: &str, peer: &PeerIdentity, scope: Scope<'_>) -> bool {
    if pattern.contains("://") {
        glob(pattern.as_bytes(), peer.uri.as_bytes())
    } else {
        peer.spiffe.as_deref().is_some_and(|id| {
            scope.contains(id, Namespace::Own) && glob(pattern.as_bytes(), id.service.as_bytes())
        })
    }
}

/// `*` matches any run of bytes but `/` (none included); everything else
/// itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative matching with backtracking to the last `*`: linear in
    // practice, never exponential. A `*` cannot cross `/`, so backtracking
    // stops at one.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star
            && text[star_t] != b'/'
        {
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

    /// A self-signed certificate with these URI SANs.
    fn certificate_with_uris(uris: &[&str]) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = (uris.iter())
            .map(|uri| rcgen::SanType::URI((*uri).try_into().unwrap()))
            .collect();
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn a_certificate_has_an_identity_only_with_exactly_one_uri_san() {
        let web = "spiffe://example.org/ns/default/dc/dc1/svc/web";
        let admin = "spiffe://example.org/ns/default/dc/dc1/svc/admin";
        let one = of_certificate(&certificate_with_uris(&[web])).expect("an SVID");
        assert_eq!(&*one.uri, web);
        for uris in [
            &[web, admin][..],
            &[web, "https://example.org/x"],
            &[],
            &["https://x/"],
        ] {
            assert_eq!(
                of_certificate(&certificate_with_uris(uris)),
                None,
                "{uris:?}"
            );
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
        let own = SpiffeId::parse(&WEB.replace("svc/web", "svc/api")).unwrap();
        let own = Scope::Own(&own);
        let peer = PeerIdentity::from_uri(WEB);
        assert!(pattern_matches("web", &peer, own));
        assert!(pattern_matches("w*", &peer, own));
        assert!(pattern_matches("*", &peer, own));
        assert!(!pattern_matches("api", &peer, own));
        assert!(!pattern_matches("we", &peer, own));
        assert!(pattern_matches(WEB, &peer, own));
        assert!(pattern_matches(
            "spiffe://*/ns/default/dc/*/svc/web",
            &peer,
            own
        ));
        assert!(!pattern_matches("spiffe://*/dc/dc2/svc/*", &peer, own));
        let odd = PeerIdentity::from_uri("spiffe://example.org/workload");
        assert!(!pattern_matches("*", &odd, own), "no service name to match");
        assert!(pattern_matches("spiffe://example.org/*", &odd, own));
    }

    #[test]
    fn a_bare_name_is_a_service_of_the_own_trust_domain_and_namespace() {
        let own = SpiffeId::parse(&WEB.replace("svc/web", "svc/api")).unwrap();
        let other_namespace = PeerIdentity::from_uri(&WEB.replace("ns/default", "ns/evil"));
        let other_domain =
            PeerIdentity::from_uri("spiffe://evil.example/ns/default/dc/dc1/svc/web");
        let other_datacenter = PeerIdentity::from_uri(&WEB.replace("dc/dc1", "dc/dc2"));
        for scope in [Scope::Own(&own), Scope::Nowhere] {
            for peer in [&other_namespace, &other_domain] {
                assert!(!pattern_matches("web", peer, scope), "{}", peer.uri);
                assert!(!pattern_matches("*", peer, scope), "{}", peer.uri);
            }
        }
        assert!(pattern_matches("web", &other_datacenter, Scope::Own(&own)));
        let web = PeerIdentity::from_uri(WEB);
        assert!(!pattern_matches("web", &web, Scope::Nowhere));
        for peer in [&web, &other_namespace, &other_domain] {
            assert!(pattern_matches("web", peer, Scope::Anywhere));
        }
        assert!(!Scope::of_rule(None, true).contains(&own, Namespace::Any));
        assert!(Scope::of_rule(None, false).contains(&own, Namespace::Named("default")));
        assert!(!Scope::of_rule(None, false).contains(&own, Namespace::Named("evil")));
        assert!(
            Scope::Own(&own).contains(other_namespace.spiffe.as_deref().unwrap(), Namespace::Any)
        );
        assert!(
            !Scope::Own(&own).contains(other_domain.spiffe.as_deref().unwrap(), Namespace::Any)
        );
    }

    #[test]
    fn a_star_never_crosses_a_slash() {
        assert!(!glob(b"spiffe://*/svc/ops", b"spiffe://td/ns/x/svc/ops"));
        assert!(!glob(
            b"spiffe://*/ns/default/dc/dc1/svc/ops",
            b"spiffe://td/ns/evil/dc/dc1/svc/x/ns/default/dc/dc1/svc/ops"
        ));
        assert!(!glob(
            b"spiffe://example.org/*",
            b"spiffe://example.org/a/b"
        ));
        assert!(glob(b"spiffe://*/a/*", b"spiffe://td/a/b"));
        assert!(glob(b"*/*", b"a/"));
        assert!(!glob(b"*", b"/"));
    }

    /// The reference: `*` as any run of bytes other than `/`, by recursion.
    fn glob_reference(pattern: &[u8], text: &[u8]) -> bool {
        match pattern.split_first() {
            None => text.is_empty(),
            Some((b'*', rest)) => {
                glob_reference(rest, text)
                    || (text.first().is_some_and(|&c| c != b'/')
                        && glob_reference(pattern, &text[1..]))
            }
            Some((&c, rest)) => text.first() == Some(&c) && glob_reference(rest, &text[1..]),
        }
    }

    /// Every string of up to `len` bytes from `alphabet`.
    fn strings(alphabet: &[u8], len: usize) -> Vec<Vec<u8>> {
        let mut all = vec![Vec::new()];
        let mut last = vec![Vec::new()];
        for _ in 0..len {
            last = last
                .iter()
                .flat_map(|s: &Vec<u8>| {
                    alphabet.iter().map(move |&c| [s.as_slice(), &[c]].concat())
                })
                .collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    #[test]
    fn glob_agrees_with_the_reference_on_every_short_input() {
        for pattern in strings(b"a/*", 5) {
            for text in strings(b"ab/", 5) {
                assert_eq!(
                    glob(&pattern, &text),
                    glob_reference(&pattern, &text),
                    "{} ~ {}",
                    String::from_utf8_lossy(&pattern),
                    String::from_utf8_lossy(&text)
                );
            }
        }
    }
}
