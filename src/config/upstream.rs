//! One `upstreams[]` entry: its listener, protocol, load balancing,
//! timeouts and mesh TLS. Its other parts have their own modules:
//! `discovery.rs`, `resilience.rs`, `rate_limit.rs`, `hedge.rs`,
//! `concurrency.rs`, `routing.rs`, `pool.rs`, `limits.rs`, `upgrades.rs`,
//! `path_normalization.rs`, `transparent.rs` (`hosts`, `addresses`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::concurrency::AdaptiveConcurrency;
use super::discovery::Discovery;
use super::duration;
use super::fallback::FallbackConfig;
use super::health_check::HealthCheck;
use super::hedge::HedgePolicy;
use super::limits::ListenerLimits;
use super::path_normalization::PathNormalization;
use super::pool::ConnectionPool;
use super::rate_limit::RateLimitConfig;
use super::request_token::RequestTokenConfig;
use super::resilience::{CircuitBreakerConfig, FaultConfig, OutlierDetection, RetryPolicy};
use super::routing::{BackendConfig, RouteConfig};
use super::service::ServiceProtocol;
use super::transparent::{DestinationMatch, HostName};
use super::upgrades::{UpgradeProtocol, default_upgrades};

/// One upstream service the application calls through a local port.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub name: String,
    /// Explicit-mode listener; an upstream reached only through the
    /// transparent listener has none.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Transparent mode: the names (Host / `:authority`, port optional) this
    /// upstream answers for.
    #[serde(default)]
    pub hosts: Vec<HostName>,
    /// Transparent mode: the original destinations (`ip` or `ip:port`) this
    /// upstream answers for.
    #[serde(default)]
    pub addresses: Vec<DestinationMatch>,
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    pub discovery: Discovery,
    #[serde(default)]
    pub load_balancing: LoadBalancing,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub connection_pool: ConnectionPool,
    #[serde(default)]
    pub retries: Option<RetryPolicy>,
    #[serde(default)]
    pub hedge: Option<HedgePolicy>,
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// A token from a file attached to every request (routes may override it).
    #[serde(default)]
    pub request_token: Option<RequestTokenConfig>,
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    /// Active health checks of every endpoint.
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// What to answer when the breaker is open, no endpoint is healthy or
    /// the rate limit is hit (a route's own replaces it).
    #[serde(default)]
    pub fallback: Option<FallbackConfig>,
    #[serde(default)]
    pub max_concurrent_requests: Option<u32>,
    #[serde(default)]
    pub adaptive_concurrency: Option<AdaptiveConcurrency>,
    #[serde(default)]
    pub fault: Option<FaultConfig>,
    #[serde(default)]
    pub tls: Option<UpstreamTlsConfig>,
    /// Named endpoint sets that routes send to (see `routing.rs`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub backends: BTreeMap<String, BackendConfig>,
    /// Matched in order; unmatched requests go to the upstream's endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub limits: ListenerLimits,
    /// Protocols an HTTP/1.1 `Upgrade` may switch to (tunnelled).
    #[serde(default = "default_upgrades")]
    pub upgrades: Vec<UpgradeProtocol>,
    /// Applies to every request of the upstream, from its listener or the
    /// transparent one, before `routes` match.
    #[serde(default)]
    pub path_normalization: PathNormalization,
}

/// Protocol spoken to an upstream; `auto` sniffs the HTTP/2 preface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    Auto,
    #[default]
    Http,
    Http2,
    Grpc,
    Tcp,
}

/// The protocol the inbound listener speaks to the local application.
impl From<ServiceProtocol> for UpstreamProtocol {
    fn from(protocol: ServiceProtocol) -> Self {
        match protocol {
            ServiceProtocol::Http => UpstreamProtocol::Http,
            ServiceProtocol::Http2 => UpstreamProtocol::Http2,
            ServiceProtocol::Grpc => UpstreamProtocol::Grpc,
            ServiceProtocol::Tcp => UpstreamProtocol::Tcp,
        }
    }
}

/// TLS towards one upstream (`upstreams[].tls:`): mesh mTLS to another
/// sidecar, or TLS origination to a server outside the mesh.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// `mesh` (the default) or `simple`.
    #[serde(default)]
    pub mode: UpstreamTlsMode,
    /// Originate TLS; default: with `mode: simple` on, with `mode: mesh` on
    /// for Consul `connect: true` discovery (when `tls:` is configured), off
    /// otherwise.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// `mode: mesh`: the server identity expected: a service name (in this
    /// sidecar's trust domain, namespace and datacenter) or a full SPIFFE
    /// ID; default: the Consul service name, else the upstream name.
    #[serde(default)]
    pub identity: Option<String>,
    /// `mode: simple`: the name the server's certificate must be valid for,
    /// also sent as SNI (a DNS name, or an IP address checked against the
    /// certificate's IP SANs); default: the host of the static endpoints
    /// when they are written with a hostname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// `mode: simple`: PEM CA certificate(s) the server must chain to;
    /// default: the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// `mode: simple`: PEM client certificate chain presented to the server
    /// (with `key_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// `mode: simple`: the PEM private key of `cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

/// Which TLS an upstream's connections originate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamTlsMode {
    /// Mesh mTLS: the sidecar's certificate (`tls:`), the server's SPIFFE
    /// identity verified against the mesh CA.
    #[default]
    Mesh,
    /// HTTPS to a server outside the mesh: its certificate verified for
    /// `server_name` against `ca_file` or the system's roots, an optional
    /// client certificate.
    Simple,
}

impl UpstreamTlsConfig {
    /// Whether connections originate TLS; `consul_connect`: the upstream is
    /// discovered from Consul with `connect: true`.
    pub fn originates(&self, consul_connect: bool) -> bool {
        self.enabled.unwrap_or(match self.mode {
            UpstreamTlsMode::Mesh => consul_connect,
            UpstreamTlsMode::Simple => true,
        })
    }
}

impl UpstreamConfig {
    /// `mode: simple`: the name the server's certificate is verified for
    /// and sent as SNI: `tls.server_name`, else the hostname the endpoints
    /// are configured with ([`Discovery::hostname`]: static endpoints that
    /// share one host, or `discovery.dns` with `type: a`). `None` when
    /// neither gives one (validation asks for `server_name`).
    pub fn tls_server_name(&self) -> Option<String> {
        if let Some(name) = self.tls.as_ref().and_then(|tls| tls.server_name.clone()) {
            return Some(name);
        }
        self.discovery.hostname().map(str::to_owned)
    }
}

/// Load-balancing policy of an upstream.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancing {
    #[serde(default)]
    pub policy: LoadBalancingPolicy,
    #[serde(default)]
    pub hash_on: Option<HashOn>,
    /// Envoy's healthy panic threshold, in percent: while fewer of the
    /// endpoints than this are healthy (passing their checks, not ejected),
    /// balancing ignores health and spreads over all of them; 0 turns it off.
    #[serde(default = "default_panic_threshold")]
    pub panic_threshold: u32,
    /// Keep traffic in this sidecar's zone while it has the capacity.
    #[serde(default)]
    pub locality: LocalityPolicy,
}

/// Locality-aware balancing of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalityPolicy {
    /// Zones play no part.
    #[default]
    None,
    /// Envoy's zone-aware routing: the local zone first, spilling over in
    /// proportion to the other zones' spare capacity.
    PreferLocal,
}

/// Envoy's default.
pub const DEFAULT_PANIC_THRESHOLD: u32 = 50;

fn default_panic_threshold() -> u32 {
    DEFAULT_PANIC_THRESHOLD
}

impl Default for LoadBalancing {
    fn default() -> Self {
        Self {
            policy: LoadBalancingPolicy::default(),
            hash_on: None,
            panic_threshold: DEFAULT_PANIC_THRESHOLD,
            locality: LocalityPolicy::None,
        }
    }
}

/// Load-balancing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancingPolicy {
    RoundRobin,
    Random,
    LeastRequest,
    #[default]
    P2cEwma,
    RingHash,
}

/// What `ring_hash` hashes; written `header:NAME` in YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    Header(http::HeaderName),
}

impl fmt::Display for HashOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashOn::Header(name) => write!(f, "header:{name}"),
        }
    }
}

impl Serialize for HashOn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HashOn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(HashOnVisitor)
    }
}

struct HashOnVisitor;

impl Visitor<'_> for HashOnVisitor {
    type Value = HashOn;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("`header:NAME`")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<HashOn, E> {
        let Some(name) = text.strip_prefix("header:") else {
            return Err(E::custom(format!(
                "invalid hash_on `{text}`: expected `header:NAME`"
            )));
        };
        http::HeaderName::from_bytes(name.trim().as_bytes())
            .map(HashOn::Header)
            .map_err(|_| E::custom(format!("invalid header name `{name}` in hash_on")))
    }
}

/// Per-upstream timeouts.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    #[serde(default = "default_connect_timeout", with = "duration")]
    pub connect: Duration,
    #[serde(default, with = "duration::option")]
    pub request: Option<Duration>,
    #[serde(default = "default_idle_timeout", with = "duration")]
    pub idle: Duration,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: default_connect_timeout(),
            request: None,
            idle: default_idle_timeout(),
        }
    }
}
