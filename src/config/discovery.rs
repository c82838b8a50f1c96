//! An upstream's `discovery:`: where its endpoints come from — a static
//! list (IPs and hostnames), a Consul service, an etcd service prefix or
//! DNS (SRV, or A/AAAA records); and the top-level `dns:` section, how the
//! hostnames of static lists are resolved.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::duration;
use super::endpoint_address::EndpointAddress;

/// Where an upstream's endpoints come from (exactly one source).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Discovery {
    /// A fixed list of endpoints.
    Static(Vec<StaticEndpoint>),
    /// The healthy instances of a Consul service, watched with blocking queries.
    Consul(ConsulDiscovery),
    /// DNS SRV or A/AAAA records (see `discovery::dns`).
    Dns(DnsDiscovery),
    /// The instances under `<etcd.prefix><service>/`, watched (see `discovery::etcd`).
    Etcd(EtcdDiscovery),
}

impl Discovery {
    /// The one hostname the endpoints are addresses of, as configured: a
    /// static list whose entries all name the same host, or `dns` with
    /// `type: a` (e.g. the default TLS server name of the upstream). `None`
    /// for IPs, SRV records (each target its own host) and registries.
    pub fn hostname(&self) -> Option<&str> {
        match self {
            Discovery::Static(entries) => {
                let first = entries.first()?.address.host()?;
                let same = |entry: &StaticEndpoint| entry.address.host() == Some(first);
                entries.iter().all(same).then_some(first)
            }
            Discovery::Dns(dns) if dns.record_type == DnsRecordType::A => Some(&dns.name),
            Discovery::Dns(_) | Discovery::Consul(_) | Discovery::Etcd(_) => None,
        }
    }
}

/// One `discovery.static` entry: `ip:port` or `host:port`, or `{ address,
/// weight: N, zone: Z }` to give it a balancing weight other than 1 or a
/// zone (a hostname's addresses all get them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticEndpoint {
    pub address: EndpointAddress,
    pub weight: u32,
    /// The zone the endpoint runs in (locality-aware balancing).
    pub zone: Option<String>,
}

/// The map form of a [`StaticEndpoint`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightedStaticEndpoint {
    address: EndpointAddress,
    #[serde(default = "default_static_weight")]
    weight: u32,
    #[serde(default)]
    zone: Option<String>,
}

fn default_static_weight() -> u32 {
    1
}

impl Serialize for StaticEndpoint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        if self.weight == 1 && self.zone.is_none() {
            return serializer.collect_str(&self.address);
        }
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("address", &self.address)?;
        map.serialize_entry("weight", &self.weight)?;
        if let Some(zone) = &self.zone {
            map.serialize_entry("zone", zone)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for StaticEndpoint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StaticEndpointVisitor)
    }
}

struct StaticEndpointVisitor;

impl<'de> Visitor<'de> for StaticEndpointVisitor {
    type Value = StaticEndpoint;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("`ip:port`, `host:port` or `{ address, weight: N, zone: Z }`")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<StaticEndpoint, E> {
        let address = text.parse().map_err(E::custom)?;
        Ok(StaticEndpoint {
            address,
            weight: 1,
            zone: None,
        })
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<StaticEndpoint, A::Error> {
        let weighted =
            WeightedStaticEndpoint::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(StaticEndpoint {
            address: weighted.address,
            weight: weighted.weight,
            zone: weighted.zone,
        })
    }
}

/// `discovery: { dns: { ... } }`: endpoints from the SRV records of `name`,
/// or (`type: a`) its A and AAAA records at `port`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnsDiscovery {
    /// The SRV name, e.g. `_api._tcp.service.consul`; with `type: a` a
    /// hostname.
    pub name: String,
    /// Which records give the endpoints.
    #[serde(default, rename = "type")]
    pub record_type: DnsRecordType,
    /// The endpoints' port with `type: a` (required there, refused with
    /// `srv`, whose records carry ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The DNS server (UDP); default: the top-level `dns.resolver`, else the
    /// system resolver from `/etc/resolv.conf`.
    #[serde(default)]
    pub resolver: Option<SocketAddr>,
    /// Re-query no sooner than this, even when the answer's TTL is shorter.
    #[serde(default = "default_dns_min_refresh", with = "duration")]
    pub min_refresh: Duration,
    /// Re-query at least this often, even when the answer's TTL is longer.
    #[serde(default = "default_dns_max_refresh", with = "duration")]
    pub max_refresh: Duration,
}

/// `discovery.dns.type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DnsRecordType {
    /// SRV records: targets, ports and weights.
    #[default]
    Srv,
    /// A and AAAA records (both families) of the name, at `port`.
    A,
}

/// The top-level `dns:` section: how hostnames in `discovery.static`
/// lists are resolved (and the default resolver of `discovery.dns`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// The DNS server (UDP); default: the system resolver from `/etc/resolv.conf`.
    #[serde(default)]
    pub resolver: Option<SocketAddr>,
    /// Re-resolve a name no sooner than this, even when its TTL is shorter.
    #[serde(default = "default_dns_min_refresh", with = "duration")]
    pub min_refresh: Duration,
    /// Re-resolve a name at least this often, even when its TTL is longer.
    #[serde(default = "default_dns_max_refresh", with = "duration")]
    pub max_refresh: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            resolver: None,
            min_refresh: default_dns_min_refresh(),
            max_refresh: default_dns_max_refresh(),
        }
    }
}

fn default_dns_min_refresh() -> Duration {
    Duration::from_secs(1)
}

fn default_dns_max_refresh() -> Duration {
    Duration::from_secs(60)
}

/// `discovery: { consul: ... }`: which Consul service instances to use.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConsulDiscovery {
    pub service: String,
    /// Every tag must be present on an instance (`tag=` repeated).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Overrides `consul.datacenter` for this upstream.
    #[serde(default)]
    pub datacenter: Option<String>,
    /// Only instances whose checks all pass (`passing=1`); when false,
    /// instances in `warning` are kept too (`critical` ones never are).
    #[serde(default = "default_passing_only")]
    pub passing_only: bool,
    /// Asks for the service's Connect-capable instances
    /// (`/v1/health/connect/:service`) instead of the service itself.
    #[serde(default)]
    pub connect: bool,
    /// Other datacenters to use, in order, while this one has too few
    /// healthy instances.
    #[serde(default)]
    pub failover: Option<ConsulFailover>,
}

fn default_passing_only() -> bool {
    true
}

/// `discovery.consul.failover`: the service is watched in `datacenters`
/// too, and the first datacenter (the local one first) with at least
/// `min_healthy` instances is used.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConsulFailover {
    pub datacenters: Vec<String>,
    #[serde(default = "default_min_healthy")]
    pub min_healthy: u32,
}

fn default_min_healthy() -> u32 {
    1
}

/// `discovery: { etcd: { service } }`: the instances whose keys are under
/// `<etcd.prefix><service>/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdDiscovery {
    pub service: String,
}
