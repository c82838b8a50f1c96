//! Workload identity: SPIFFE IDs in Consul's format
//! `spiffe://<trust-domain>/ns/<namespace>/dc/<datacenter>/svc/<service>`,
//! read from a certificate's URI SAN (never from DNS names or the subject),
//! the identity expected of an upstream, and the allow/deny patterns of
//! authorization. A URI that breaks the SPIFFE ID character rules (trust
//! domain `[a-z0-9._-]`, path segments `[a-zA-Z0-9._-]`, none empty, `.` or
//! `..`: so no percent-encoding, user info, port, query or fragment) is no
//! identity; a pattern or expected identity that breaks them is rejected.
//! A bare service name names that service within a [`Scope`] (the
//! authorizer's rules choose it); `*` in a pattern never matches a `/`.
//!
//! Over 500 lines: its tests (the identity rules themselves are about 360).

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
        check_spiffe_id(uri, Wildcards::Refused)?;
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
}

/// The `spiffe://` URI SAN of a certificate, if it has one and it is a valid
/// SPIFFE ID.
pub fn of_certificate(cert: &CertificateDer<'_>) -> Option<PeerIdentity> {
    let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
    let uri = parsed
        .valid_uri_names()
        .find(|uri| uri.starts_with(SCHEME))?;
    if let Err(error) = check_spiffe_id(uri, Wildcards::Refused) {
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

/// Whether `*` may stand in a SPIFFE ID (patterns) or not (identities).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wildcards {
    Allowed,
    Refused,
}

/// The longest SPIFFE ID and trust domain the SPIFFE ID specification allows.
const MAX_ID_LEN: usize = 2048;
const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Checks `uri` against the SPIFFE ID specification's rules: `spiffe://`, a
/// trust domain of lower-case letters, digits, `.`, `-` and `_`, then path
/// segments of letters, digits, `.`, `-` and `_`, none empty, `.` or `..`.
fn check_spiffe_id(uri: &str, wildcards: Wildcards) -> Result<(), String> {
    let invalid = |why: &str| format!("`{uri}` is not a valid SPIFFE ID: {why}");
    let rest = uri
        .strip_prefix(SCHEME)
        .ok_or_else(|| invalid("it must start with spiffe://"))?;
    if uri.len() > MAX_ID_LEN {
        return Err(invalid("longer than 2048 bytes"));
    }
    let (trust_domain, path) = match rest.split_once('/') {
        Some((trust_domain, path)) => (trust_domain, Some(path)),
        None => (rest, None),
    };
    let wildcard = |b: u8| wildcards == Wildcards::Allowed && b == b'*';
    let trust_domain_ok = !trust_domain.is_empty()
        && trust_domain.len() <= MAX_TRUST_DOMAIN_LEN
        && trust_domain.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b) || wildcard(b)
        });
    if !trust_domain_ok {
        return Err(invalid(
            "the trust domain must be 1 to 255 of a-z, 0-9, `.`, `-`, `_` \
             (lower case, no user info or port)",
        ));
    }
    for segment in path.into_iter().flat_map(|path| path.split('/')) {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(invalid("a path segment is empty, `.` or `..`"));
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b) || wildcard(b))
        {
            return Err(invalid(
                "path segments may hold only a-z, A-Z, 0-9, `.`, `-`, `_` \
                 (no percent-encoding, query or fragment)",
            ));
        }
    }
    Ok(())
}

/// Checks an allow/deny pattern: a service name or a SPIFFE ID, `*` for any
/// characters but `/`.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.contains("://") {
        if !pattern.starts_with(SCHEME) {
            return Err(format!("`{pattern}`: only spiffe:// IDs are identities"));
        }
        return check_spiffe_id(pattern, Wildcards::Allowed);
    }
    let service_name = !pattern.is_empty()
        && pattern
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-*".contains(&b));
    if service_name {
        Ok(())
    } else {
        Err(format!(
            "`{pattern}`: expected a service name (a-z, A-Z, 0-9, `.`, `-`, `_`) or a \
             spiffe:// ID (`*` matches any characters but `/`)"
        ))
    }
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
            "spiffe://td/ns/default/dc/dc1/svc/w*",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn spiffe_ids_follow_the_specification_character_rules() {
        for good in [
            WEB,
            "spiffe://example.org",
            "spiffe://my_td-1.example/a/B-c_d.e/0",
        ] {
            assert_eq!(check_spiffe_id(good, Wildcards::Refused), Ok(()), "{good}");
        }
        for bad in [
            "SPIFFE://td/ns/default/dc/dc1/svc/web",
            "spiffe://TD/ns/default/dc/dc1/svc/web",
            "spiffe://td:8443/ns/default/dc/dc1/svc/web",
            "spiffe://user@td/ns/default/dc/dc1/svc/web",
            "spiffe://td/ns/default/dc/dc1/svc/we%62",
            "spiffe://td/ns/default/dc/dc1/svc/web?x=1",
            "spiffe://td/ns/default/dc/dc1/svc/web#x",
            "spiffe://td/ns/default/dc/dc1/svc/web~1",
            "spiffe://td/ns/./dc/dc1/svc/web",
            "spiffe://td/ns/../dc/dc1/svc/web",
            "spiffe://td/ns//dc/dc1/svc/web",
            "spiffe://td/",
            "spiffe://",
            "spiffe://td/ns/default/dc/dc1/svc/w*",
        ] {
            assert!(check_spiffe_id(bad, Wildcards::Refused).is_err(), "{bad}");
            assert!(SpiffeId::parse(bad).is_err(), "{bad}");
        }
        let long_domain = format!("spiffe://{}/svc/web", "a".repeat(256));
        assert!(check_spiffe_id(&long_domain, Wildcards::Refused).is_err());
        let long_path = format!("spiffe://td/{}", "a".repeat(2048));
        assert!(check_spiffe_id(&long_path, Wildcards::Refused).is_err());
        assert_eq!(
            check_spiffe_id("spiffe://*/ns/*/dc/*/svc/web-*", Wildcards::Allowed),
            Ok(())
        );
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

    #[test]
    fn checks_patterns_and_expected_identities() {
        assert!(check_pattern("web").is_ok());
        assert!(check_pattern("spiffe://*/svc/web").is_ok());
        assert!(check_pattern("web-*").is_ok());
        assert!(check_pattern("").is_err());
        assert!(check_pattern("http://x").is_err());
        for bad in [
            "web/admin",
            "web admin",
            "we%62",
            "spiffe://TD/svc/web",
            "spiffe://td:1/svc/*",
            "spiffe://td/svc/../web",
            "spiffe://td//svc",
        ] {
            assert!(check_pattern(bad).is_err(), "{bad}");
        }
        assert!(check_expected("api").is_ok());
        assert!(check_expected(WEB).is_ok());
        assert!(check_expected("spiffe://td/svc/api").is_err());
        assert!(check_expected("a b").is_err());
    }
}
