//! An endpoint address as written in the configuration: `ip:port` (IPv6 in
//! brackets) or `host:port`, a DNS name that is resolved to its A and AAAA
//! records (see `discovery::static_names`).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `ip:port` or `host:port` (a name's port is never 0).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EndpointAddress {
    /// An IP address and port, used as written.
    Ip(SocketAddr),
    /// A DNS name and port: every A and AAAA address of `host` at `port`.
    Name { host: String, port: u16 },
}

impl EndpointAddress {
    /// The address when it is an IP literal.
    pub fn ip(&self) -> Option<SocketAddr> {
        match self {
            EndpointAddress::Ip(addr) => Some(*addr),
            EndpointAddress::Name { .. } => None,
        }
    }

    /// The configured hostname (e.g. for a TLS server name), when the
    /// address is one.
    pub fn host(&self) -> Option<&str> {
        match self {
            EndpointAddress::Ip(_) => None,
            EndpointAddress::Name { host, .. } => Some(host),
        }
    }
}

impl From<SocketAddr> for EndpointAddress {
    fn from(addr: SocketAddr) -> Self {
        EndpointAddress::Ip(addr)
    }
}

/// Why a string is no endpoint address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid endpoint `{0}`: expected `ip:port` or `host:port`")]
pub struct InvalidEndpointAddress(String);

impl FromStr for EndpointAddress {
    type Err = InvalidEndpointAddress;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(EndpointAddress::Ip(addr));
        }
        let invalid = || InvalidEndpointAddress(text.to_owned());
        let (host, port) = text.rsplit_once(':').ok_or_else(invalid)?;
        let port = port.parse::<u16>().map_err(|_| invalid())?;
        if port == 0 || !is_hostname(host) {
            return Err(invalid());
        }
        Ok(EndpointAddress::Name {
            host: host.to_owned(),
            port,
        })
    }
}

/// True for a DNS hostname (RFC 1123): dot-separated labels of letters,
/// digits and inner hyphens, 1–63 bytes each, 253 in all, an optional final
/// dot; not all digits and dots (that would be a malformed IPv4 address).
pub fn is_hostname(host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    is_dns_name(name) && !name.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// True for a name of RFC 1123 labels (letters, digits, inner hyphens; 1 to
/// 63 bytes each, 253 in all), without a trailing dot.
pub fn is_dns_name(name: &str) -> bool {
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok)
}

impl fmt::Display for EndpointAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointAddress::Ip(addr) => addr.fmt(f),
            EndpointAddress::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl Serialize for EndpointAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EndpointAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<EndpointAddress, InvalidEndpointAddress> {
        text.parse()
    }

    #[test]
    fn ips_and_hostnames_with_ports_parse() {
        assert_eq!(
            parse("10.0.0.1:80"),
            Ok(EndpointAddress::Ip("10.0.0.1:80".parse().unwrap()))
        );
        assert_eq!(
            parse("[::1]:443"),
            Ok(EndpointAddress::Ip("[::1]:443".parse().unwrap()))
        );
        let name = parse("api.example.com:443").unwrap();
        assert_eq!(name.host(), Some("api.example.com"));
        assert_eq!(name.to_string(), "api.example.com:443");
        assert_eq!(parse("localhost.:8080").unwrap().host(), Some("localhost."));
        assert_eq!(parse("[::1]:443").unwrap().host(), None);
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for bad in [
            "api.example.com",
            "api.example.com:",
            "api.example.com:http",
            "api.example.com:70000",
            "api.example.com:0",
            ":80",
            "::1:80",
            "10.0.0.300:80",
            "1.2.3:80",
            "api..example.com:80",
            "-api.example.com:80",
            "api_1.example.com:80",
            "http://api.example.com:80",
            "api.example.com:80/",
        ] {
            assert!(parse(bad).is_err(), "{bad} parsed");
        }
        assert_eq!(
            parse("x y:1").unwrap_err().to_string(),
            "invalid endpoint `x y:1`: expected `ip:port` or `host:port`"
        );
    }
}
