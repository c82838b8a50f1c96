//! `transparent.egress`: the external hosts and networks that unmatched
//! transparent traffic may still reach with `unmatched: refuse`. Host entries
//! are DNS names, or `*.` and one, with an optional port; anything else is
//! rejected at parse time.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::endpoint_address::is_dns_name;
use super::transparent::Cidr;

/// `transparent.egress`: the exceptions to `unmatched: refuse`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    #[serde(default)]
    pub allow: EgressAllow,
}

/// `transparent.egress.allow`: unmatched traffic that passes through
/// although `unmatched` is `refuse`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EgressAllow {
    /// Names matched against an HTTP request's Host / `:authority` and a TLS
    /// ClientHello's server name (SNI).
    #[serde(default)]
    pub hosts: Vec<EgressHost>,
    /// Networks matched against the original destination address, whatever
    /// the protocol.
    #[serde(default)]
    pub cidrs: Vec<Cidr>,
}

impl EgressAllow {
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.cidrs.is_empty()
    }
}

/// An allowed external host: `api.example.com` (that name only) or
/// `*.example.com` (any name below `example.com`, at any depth, but not
/// `example.com` itself), optionally with `:port` (then only connections to
/// that original destination port). Names are kept lower case without a
/// trailing dot; matching ignores case and a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressHost {
    pub name: EgressName,
    pub port: Option<u16>,
}

/// The name part of an [`EgressHost`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressName {
    /// `api.example.com`.
    Exact(String),
    /// `*.example.com`, kept as `.example.com`.
    Subdomains(String),
}

impl EgressHost {
    /// True when `name` (a Host without its port, or an SNI) on a connection
    /// to `port` is allowed by this entry.
    pub fn matches(&self, name: &str, port: u16) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name);
        let name_matches = match &self.name {
            EgressName::Exact(exact) => name.eq_ignore_ascii_case(exact),
            EgressName::Subdomains(suffix) => {
                name.len() > suffix.len()
                    && name.is_char_boundary(name.len() - suffix.len())
                    && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        };
        name_matches && self.port.is_none_or(|only| only == port)
    }
}

impl FromStr for EgressHost {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let invalid = || {
            format!(
                "invalid host `{text}`: expected a DNS name such as `api.example.com` or \
                 `*.example.com`, optionally with `:port`"
            )
        };
        let (name, port) = match text.rsplit_once(':') {
            Some((name, port)) => (name, Some(port.parse::<u16>().map_err(|_| invalid())?)),
            None => (text, None),
        };
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        let (wildcard, domain) = match name.strip_prefix("*.") {
            Some(domain) => (true, domain),
            None => (false, name.as_str()),
        };
        if !is_dns_name(domain) || port == Some(0) {
            return Err(invalid());
        }
        let name = if wildcard {
            EgressName::Subdomains(format!(".{domain}"))
        } else {
            EgressName::Exact(domain.to_owned())
        };
        Ok(EgressHost { name, port })
    }
}

impl fmt::Display for EgressHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            EgressName::Exact(name) => f.write_str(name)?,
            EgressName::Subdomains(suffix) => write!(f, "*{suffix}")?,
        }
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

string_serde!(EgressHost);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn egress_hosts_match_exact_names_and_subdomains_at_any_depth() {
        let host = |text: &str| text.parse::<EgressHost>().unwrap();
        let exact = host("API.Example.com.");
        assert_eq!(exact.to_string(), "api.example.com");
        assert!(exact.matches("api.example.com", 443));
        assert!(exact.matches("API.EXAMPLE.COM.", 80));
        assert!(!exact.matches("x.api.example.com", 443));
        assert!(!exact.matches("api.example.co", 443));
        let wildcard = host("*.example.com");
        assert_eq!(wildcard.to_string(), "*.example.com");
        assert!(wildcard.matches("a.example.com", 443));
        assert!(wildcard.matches("a.b.c.EXAMPLE.com.", 443));
        assert!(
            !wildcard.matches("example.com", 443),
            "not the domain itself"
        );
        assert!(!wildcard.matches(".example.com", 443));
        assert!(!wildcard.matches("badexample.com", 443));
        assert!(!wildcard.matches("a.example.com.evil", 443));
        let with_port = host("*.example.com:8443");
        assert!(with_port.matches("a.example.com", 8443));
        assert!(!with_port.matches("a.example.com", 443));
        assert_eq!(with_port.to_string(), "*.example.com:8443");
    }

    #[test]
    fn egress_hosts_reject_what_is_not_a_name() {
        for bad in [
            "",
            "*",
            "*.",
            "**.example.com",
            "*example.com",
            "a.*.example.com",
            "a..b",
            ".example.com",
            "api/x",
            "api:0",
            "api:x",
            "a b",
            "10.0.0.0/8",
            "[::1]",
        ] {
            assert!(bad.parse::<EgressHost>().is_err(), "{bad:?} accepted");
        }
        assert!("x".repeat(64).parse::<EgressHost>().is_err());
        assert!("10.0.0.1".parse::<EgressHost>().is_ok(), "a name of digits");
    }
}
