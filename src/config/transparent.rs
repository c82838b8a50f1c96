//! The `transparent:` section (iptables-redirected traffic; its egress
//! allow-list is `egress`) and the transparent-mode keys of an upstream
//! (`hosts`, `addresses`). Rejects host names that are empty or hold spaces,
//! slashes or a bad port, destinations
//! that are not `ip` / `ip:port`, and CIDRs that are not `ip/prefix` with a
//! prefix the address family allows — all at parse time.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;
use super::egress::EgressConfig;
use super::limits::ListenerLimits;

/// `transparent:`: the outbound listener that iptables-redirected
/// connections reach, how it tells protocols apart, and what
/// `remora iptables` generates.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TransparentConfig {
    #[serde(default = "default_outbound_listen")]
    pub outbound_listen: SocketAddr,
    /// Longest wait for a connection's first bytes before it is treated as
    /// opaque TCP (a server-speaks-first protocol sends nothing first).
    #[serde(default = "default_detect_timeout", with = "duration")]
    pub detect_timeout: Duration,
    /// Original destination ports whose connections are opaque TCP at once,
    /// without protocol detection (server-speaks-first protocols).
    #[serde(default = "default_opaque_ports")]
    pub opaque_ports: Vec<u16>,
    /// What happens to traffic that matches no upstream.
    #[serde(default)]
    pub unmatched: Unmatched,
    /// The external destinations unmatched traffic may still reach when
    /// `unmatched` is `refuse`.
    #[serde(default)]
    pub egress: EgressConfig,
    /// The uid remora runs as: its own traffic is never redirected.
    #[serde(default = "default_proxy_uid")]
    pub proxy_uid: u32,
    /// More uids whose outbound traffic is not redirected.
    #[serde(default)]
    pub exclude_uids: Vec<u32>,
    /// Destination ports whose outbound traffic is not redirected.
    #[serde(default)]
    pub exclude_outbound_ports: Vec<u16>,
    /// Destination networks whose outbound traffic is not redirected.
    #[serde(default)]
    pub exclude_outbound_cidrs: Vec<Cidr>,
    /// Destination ports whose inbound traffic is not redirected (the admin
    /// port never is).
    #[serde(default)]
    pub exclude_inbound_ports: Vec<u16>,
    /// Also generate ip6tables rules.
    #[serde(default)]
    pub ipv6: bool,
    /// What one client may hold on the transparent outbound listener.
    #[serde(default)]
    pub limits: ListenerLimits,
}

impl Default for TransparentConfig {
    fn default() -> Self {
        Self {
            outbound_listen: default_outbound_listen(),
            detect_timeout: default_detect_timeout(),
            opaque_ports: default_opaque_ports(),
            unmatched: Unmatched::default(),
            egress: EgressConfig::default(),
            proxy_uid: default_proxy_uid(),
            exclude_uids: Vec::new(),
            exclude_outbound_ports: Vec::new(),
            exclude_outbound_cidrs: Vec::new(),
            exclude_inbound_ports: Vec::new(),
            ipv6: false,
            limits: ListenerLimits::default(),
        }
    }
}

fn default_outbound_listen() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 15001))
}

fn default_detect_timeout() -> Duration {
    Duration::from_millis(100)
}

/// Linkerd's default opaque ports: SMTP (25, 587), MySQL (3306, 4444 Galera),
/// PostgreSQL (5432), Redis (6379), Elasticsearch (9300), Memcached (11211).
fn default_opaque_ports() -> Vec<u16> {
    vec![25, 587, 3306, 4444, 5432, 6379, 9300, 11211]
}

fn default_proxy_uid() -> u32 {
    1337
}

/// `transparent.unmatched`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    /// Forward to the original destination, unchanged (and counted).
    #[default]
    Passthrough,
    /// HTTP: 502 `no_route`; TCP: close the connection.
    Refuse,
}

/// A name an upstream answers for: `api` (any port) or `api:8080`; compared
/// case-insensitively with a request's Host / `:authority`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostName {
    pub name: String,
    pub port: Option<u16>,
}

impl HostName {
    /// True when `authority` (`name` or `name:port`) names this host.
    pub fn matches(&self, authority: &str) -> bool {
        // An IPv6 literal (`[::1]:80`) never equals a name, whatever is split.
        let (name, port) = match authority.rsplit_once(':') {
            Some((name, port)) => (name, port.parse::<u16>().ok()),
            None => (authority, None),
        };
        name.eq_ignore_ascii_case(&self.name) && (self.port.is_none() || self.port == port)
    }
}

impl FromStr for HostName {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let invalid =
            || format!("invalid host `{text}`: expected a name such as `api` or `api:8080`");
        let (name, port) = match text.rsplit_once(':') {
            Some((name, port)) => (name, Some(port.parse::<u16>().map_err(|_| invalid())?)),
            None => (text, None),
        };
        let valid_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
        if !valid_name || port == Some(0) {
            return Err(invalid());
        }
        Ok(HostName {
            name: name.to_ascii_lowercase(),
            port,
        })
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// An original destination an upstream answers for: `10.0.0.5` (any port)
/// or `10.0.0.5:8080` (`[fd00::5]:8080` for IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestinationMatch {
    Ip(IpAddr),
    Addr(SocketAddr),
}

impl DestinationMatch {
    pub fn matches(&self, destination: SocketAddr) -> bool {
        match self {
            DestinationMatch::Ip(ip) => *ip == destination.ip(),
            DestinationMatch::Addr(addr) => *addr == destination,
        }
    }
}

impl FromStr for DestinationMatch {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        (text.parse().map(DestinationMatch::Addr))
            .or_else(|_| text.parse().map(DestinationMatch::Ip))
            .map_err(|_| {
                format!("invalid address `{text}`: expected `ip` or `ip:port` (`[ipv6]:port`)")
            })
    }
}

impl fmt::Display for DestinationMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DestinationMatch::Ip(ip) => write!(f, "{ip}"),
            DestinationMatch::Addr(addr) => write!(f, "{addr}"),
        }
    }
}

/// A network, `10.0.0.0/8` or `fd00::/8` (a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub ip: IpAddr,
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let invalid =
            || format!("invalid CIDR `{text}`: expected `ip/prefix` such as `10.0.0.0/8`");
        let (ip, prefix) = text.split_once('/').unwrap_or((text, ""));
        let ip: IpAddr = ip.parse().map_err(|_| invalid())?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            prefix.parse::<u8>().map_err(|_| invalid())?
        };
        if prefix > max {
            return Err(invalid());
        }
        Ok(Cidr { ip, prefix })
    }
}

impl Cidr {
    /// True when `ip` is in this network (an IPv4-mapped IPv6 address
    /// counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.ip, ip.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

string_serde!(HostName, DestinationMatch, Cidr);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_match_with_or_without_port() {
        let any_port: HostName = "API".parse().unwrap();
        assert!(any_port.matches("api"));
        assert!(any_port.matches("Api:8080"));
        assert!(!any_port.matches("api2"));
        let one_port: HostName = "api:8080".parse().unwrap();
        assert!(one_port.matches("api:8080"));
        assert!(!one_port.matches("api:9090"));
        assert!(!one_port.matches("api"));
        assert!("api/x".parse::<HostName>().is_err());
        assert!("api:0".parse::<HostName>().is_err());
        assert!("".parse::<HostName>().is_err());
    }

    #[test]
    fn destinations_and_cidrs_parse() {
        let ip: DestinationMatch = "10.0.0.5".parse().unwrap();
        assert!(ip.matches("10.0.0.5:1".parse().unwrap()));
        let addr: DestinationMatch = "[fd00::5]:80".parse().unwrap();
        assert!(addr.matches("[fd00::5]:80".parse().unwrap()));
        assert!(!addr.matches("[fd00::5]:81".parse().unwrap()));
        assert!("api:80".parse::<DestinationMatch>().is_err());
        assert_eq!(
            "10.0.0.0/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            "fd00::1".parse::<Cidr>().unwrap().to_string(),
            "fd00::1/128"
        );
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0/8".parse::<Cidr>().is_err());
    }

    #[test]
    fn cidrs_contain_their_addresses() {
        let cidr = |text: &str| text.parse::<Cidr>().unwrap();
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert!(cidr("10.0.0.0/8").contains(ip("10.255.1.2")));
        assert!(!cidr("10.0.0.0/8").contains(ip("11.0.0.0")));
        assert!(cidr("10.1.2.3").contains(ip("10.1.2.3")));
        assert!(!cidr("10.1.2.3").contains(ip("10.1.2.4")));
        assert!(cidr("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(!cidr("0.0.0.0/0").contains(ip("::1")));
        assert!(cidr("10.0.0.0/8").contains(ip("::ffff:10.0.0.1")));
        assert!(cidr("fd00::/8").contains(ip("fd12::1")));
        assert!(!cidr("fd00::/8").contains(ip("fe80::1")));
        assert!(cidr("::/0").contains(ip("2001:db8::1")));
        assert!(cidr("10.0.0.0/31").contains(ip("10.0.0.1")));
        assert!(!cidr("10.0.0.0/31").contains(ip("10.0.0.2")));
    }
}
