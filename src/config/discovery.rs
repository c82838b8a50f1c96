//! An upstream's `discovery:`: where its endpoints come from — a static
//! list, a Consul service, an etcd service prefix or DNS SRV records.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::duration;

/// Where an upstream's endpoints come from (exactly one source).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Discovery {
    /// A fixed list of endpoints.
    Static(Vec<StaticEndpoint>),
    /// The healthy instances of a Consul service, watched with blocking queries.
    Consul(ConsulDiscovery),
    /// DNS SRV records (see `discovery::dns`).
    Dns(DnsDiscovery),
    /// The instances under `<etcd.prefix><service>/`, watched (see `discovery::etcd`).
    Etcd(EtcdDiscovery),
}

/// One `discovery.static` entry: `ip:port`, or `{ address: ip:port, weight: N }`
/// to give it a balancing weight other than 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticEndpoint {
    pub address: SocketAddr,
    pub weight: u32,
}

/// The map form of a [`StaticEndpoint`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightedStaticEndpoint {
    address: SocketAddr,
    #[serde(default = "default_static_weight")]
    weight: u32,
}

fn default_static_weight() -> u32 {
    1
}

impl Serialize for StaticEndpoint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        if self.weight == 1 {
            return serializer.collect_str(&self.address);
        }
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("address", &self.address)?;
        map.serialize_entry("weight", &self.weight)?;
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
        f.write_str("`ip:port` or `{ address: ip:port, weight: N }`")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<StaticEndpoint, E> {
        let address = text
            .parse()
            .map_err(|_| E::custom(format!("invalid endpoint `{text}`: expected `ip:port`")))?;
        Ok(StaticEndpoint { address, weight: 1 })
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<StaticEndpoint, A::Error> {
        let weighted =
            WeightedStaticEndpoint::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(StaticEndpoint {
            address: weighted.address,
            weight: weighted.weight,
        })
    }
}

/// `discovery: { dns: { ... } }`: endpoints from the SRV records of `name`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnsDiscovery {
    /// The SRV name, e.g. `_api._tcp.service.consul`.
    pub name: String,
    /// The DNS server (UDP); default: the system resolver from `/etc/resolv.conf`.
    #[serde(default)]
    pub resolver: Option<SocketAddr>,
    /// Re-query no sooner than this, even when the answer's TTL is shorter.
    #[serde(default = "default_dns_min_refresh", with = "duration")]
    pub min_refresh: Duration,
    /// Re-query at least this often, even when the answer's TTL is longer.
    #[serde(default = "default_dns_max_refresh", with = "duration")]
    pub max_refresh: Duration,
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
}

fn default_passing_only() -> bool {
    true
}

/// `discovery: { etcd: { service } }`: the instances whose keys are under
/// `<etcd.prefix><service>/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdDiscovery {
    pub service: String,
}
