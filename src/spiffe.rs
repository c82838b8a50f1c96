//! SPIFFE ID syntax, below `config` and `tls` so both can use it: the
//! SPIFFE ID specification's character rules (trust domain `[a-z0-9._-]`,
//! path segments `[a-zA-Z0-9._-]`, none empty, `.` or `..`: so no
//! percent-encoding, user info, port, query or fragment), Consul's service
//! format `spiffe://<trust-domain>/ns/<namespace>/dc/<datacenter>/svc/<service>`,
//! and the checks configuration runs on authorization patterns (`*` allowed)
//! and on expected upstream identities. Reading identities from certificates
//! and matching patterns against them is `tls::identity`'s.

use std::fmt;

/// The scheme every SPIFFE ID starts with.
pub const SCHEME: &str = "spiffe://";

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

/// Whether `*` may stand in a SPIFFE ID (patterns) or not (identities).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wildcards {
    Allowed,
    Refused,
}

/// The longest SPIFFE ID and trust domain the SPIFFE ID specification allows.
const MAX_ID_LEN: usize = 2048;
const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Checks `uri` against the SPIFFE ID specification's rules, wildcards
/// refused.
pub fn check_id(uri: &str) -> Result<(), String> {
    check_spiffe_id(uri, Wildcards::Refused)
}

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
