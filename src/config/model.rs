//! The configuration model: one struct per YAML section, field names equal
//! to the YAML keys of the README's configuration reference (a public
//! interface). Every struct
//! rejects unknown keys, so a misspelt or misplaced key is an error rather
//! than silently ignored. The resilience sections live in `resilience.rs`,
//! the transparent-mode section in `transparent.rs`. Values are typed here
//! ("parse, don't validate"); cross-field rules live in `validate.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::duration;
use super::limits::ListenerLimits;
use super::path_normalization::PathNormalization;
use super::resilience::{
    CircuitBreakerConfig, FaultConfig, OutlierDetection, RateLimitConfig, RetryPolicy,
};
use super::routing::{BackendConfig, RouteConfig};
use super::transparent::{DestinationMatch, HostName, TransparentConfig};
use super::upgrades::{UpgradeProtocol, default_upgrades};

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub service: ServiceConfig,
    #[serde(default)]
    pub inbound: Option<InboundConfig>,
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
    #[serde(default)]
    pub consul: ConsulConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    #[serde(default)]
    pub logging: LoggingConfig,
    #[serde(default)]
    pub tracing: TracingConfig,
    /// Where the rest of the configuration comes from; this file when absent.
    #[serde(default)]
    pub config_source: Option<ConfigSource>,
    /// Mesh mTLS between sidecars; off when absent.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Transparent mode (iptables redirection); off when absent.
    #[serde(default)]
    pub transparent: Option<TransparentConfig>,
    /// Key paths of the values written with environment variables
    /// (`${VAR}`), redacted in `/config` (see `redact`).
    #[serde(skip)]
    pub from_env: Vec<String>,
}

/// `config_source:` — the configuration is read (and watched) elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigSource {
    /// A Consul KV key whose value is the YAML configuration, watched with
    /// blocking queries through the agent of the `consul` section.
    ConsulKv(ConsulKvSource),
}

/// `config_source: { consul_kv: { key, allowed_env } }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConsulKvSource {
    /// The key, e.g. `remora/web` (no leading `/`).
    pub key: String,
    /// The environment variables the KV value may read (`${NAME}`); none
    /// by default, so whoever writes the key reads no secret of the process.
    #[serde(default)]
    pub allowed_env: Vec<String>,
}

/// Mesh mTLS (`tls:`): the sidecar's certificate, the CA it trusts, and
/// who may call the inbound listener.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Where the certificate, key and CA come from.
    #[serde(default)]
    pub source: TlsSource,
    /// PEM certificate chain (leaf first); `source: files` only.
    #[serde(default)]
    pub cert: Option<std::path::PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1); `source: files` only.
    #[serde(default)]
    pub key: Option<std::path::PathBuf>,
    /// PEM CA certificate(s) peers must chain to; `source: files` only.
    #[serde(default)]
    pub ca: Option<std::path::PathBuf>,
    /// How often the files are checked for changes; `source: files` only.
    #[serde(default = "default_tls_reload_interval", with = "duration")]
    pub reload_interval: Duration,
    /// The Consul service whose leaf certificate is used; default `service.name`.
    #[serde(default)]
    pub service: Option<String>,
    /// A TLS handshake (either direction) that takes longer fails.
    #[serde(default = "default_tls_handshake_timeout", with = "duration")]
    pub handshake_timeout: Duration,
    /// Who may call the inbound listener.
    #[serde(default)]
    pub authorization: AuthorizationConfig,
}

fn default_tls_reload_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_tls_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Where the mesh certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsSource {
    /// `cert`, `key` and `ca` PEM files, reloaded when they change.
    #[default]
    Files,
    /// Consul Connect CA: the agent's leaf certificate and roots.
    Consul,
}

/// Inbound authorization by peer identity (`tls.authorization:`). Deny rules
/// are checked first, then allow rules, then Consul intentions (when on),
/// then `default`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationConfig {
    /// What happens to a peer no rule (and no intention) matches.
    #[serde(default)]
    pub default: AuthorizationAction,
    /// Peers allowed: service names or SPIFFE IDs, `*` matches any characters.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Peers denied (checked before `allow`), same patterns.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Also follow Consul intentions for `service.name` (a blocking query).
    #[serde(default)]
    pub intentions: bool,
    /// With `intentions`, what a peer no rule decides gets until Consul's
    /// intentions first load (unset: deny).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_intentions_load: Option<UntilIntentionsLoad>,
}

/// Until Consul's intentions first load (Consul unreachable, or an answer
/// that cannot be read): deny, or fall through to `default`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UntilIntentionsLoad {
    #[default]
    Deny,
    Default,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthorizationAction {
    #[default]
    Allow,
    Deny,
}

/// Mesh mTLS towards one upstream (`upstreams[].tls:`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// Originate mTLS; default: on for Consul `connect: true` discovery
    /// (when `tls:` is configured), off otherwise.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The server identity expected: a service name (in this sidecar's trust
    /// domain, namespace and datacenter) or a full SPIFFE ID; default: the
    /// Consul service name, else the upstream name.
    #[serde(default)]
    pub identity: Option<String>,
}

/// Trace-context propagation and span export (`tracing:`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// Create an `x-request-id` (UUID v4) when a request has none.
    #[serde(default = "default_request_id")]
    pub request_id: bool,
    /// Header formats read and written, in order of precedence.
    #[serde(default = "default_propagation")]
    pub propagation: Vec<Propagation>,
    /// Span export over OTLP/HTTP; off when absent.
    #[serde(default)]
    pub otlp: Option<OtlpConfig>,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            request_id: default_request_id(),
            propagation: default_propagation(),
            otlp: None,
        }
    }
}

/// Span export (`tracing.otlp:`): OTLP/HTTP protobuf to a collector.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// Where batches are POSTed (`http://` only).
    #[serde(default = "default_otlp_endpoint")]
    pub endpoint: String,
    /// Share of new traces sampled, 0 to 1 (joined traces keep the caller's flag).
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// Spans waiting for export at most; more are dropped and counted.
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    /// Spans per export request at most.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Longest a span waits for its batch to fill before it is sent.
    #[serde(default = "default_flush_interval", with = "duration")]
    pub flush_interval: Duration,
}

fn default_otlp_endpoint() -> String {
    "http://127.0.0.1:4318/v1/traces".to_owned()
}

fn default_sample_ratio() -> f64 {
    1.0
}

fn default_max_queue() -> usize {
    2048
}

fn default_batch_size() -> usize {
    512
}

fn default_flush_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_request_id() -> bool {
    true
}

fn default_propagation() -> Vec<Propagation> {
    vec![Propagation::W3c]
}

/// A trace header format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Propagation {
    /// W3C Trace Context: `traceparent`, `tracestate`.
    W3c,
    /// Zipkin B3: read multi-header or single `b3`, written multi-header.
    B3,
}

/// The application this sidecar fronts.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: String,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default = "default_service_address")]
    pub address: IpAddr,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub protocol: ServiceProtocol,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    #[serde(default)]
    pub register: bool,
    #[serde(default)]
    pub check: Option<CheckConfig>,
}

fn default_service_address() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

/// Protocol the application speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceProtocol {
    #[default]
    Http,
    Http2,
    Grpc,
    Tcp,
}

/// Health check registered with the service.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    #[serde(default)]
    pub http: Option<String>,
    #[serde(default)]
    pub tcp: Option<String>,
    #[serde(default = "default_check_interval", with = "duration")]
    pub interval: Duration,
    #[serde(default = "default_check_timeout", with = "duration")]
    pub timeout: Duration,
    #[serde(default, with = "duration::option")]
    pub deregister_after: Option<Duration>,
}

fn default_check_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_check_timeout() -> Duration {
    Duration::from_secs(2)
}

/// Listener for traffic from the mesh to the local application.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    #[serde(default = "default_inbound_listen")]
    pub listen: SocketAddr,
    #[serde(default, with = "duration::option")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    #[serde(default)]
    pub max_concurrent_requests: Option<u32>,
    #[serde(default)]
    pub limits: ListenerLimits,
    /// Protocols an HTTP/1.1 `Upgrade` may switch to (tunnelled).
    #[serde(default = "default_upgrades")]
    pub upgrades: Vec<UpgradeProtocol>,
    #[serde(default)]
    pub path_normalization: PathNormalization,
}

impl Default for InboundConfig {
    fn default() -> Self {
        Self {
            listen: default_inbound_listen(),
            timeout: None,
            rate_limit: None,
            max_concurrent_requests: None,
            limits: ListenerLimits::default(),
            upgrades: default_upgrades(),
            path_normalization: PathNormalization::default(),
        }
    }
}

fn default_inbound_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 15006))
}

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
    pub connection_pool: super::ConnectionPool,
    #[serde(default)]
    pub retries: Option<RetryPolicy>,
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default)]
    pub max_concurrent_requests: Option<u32>,
    #[serde(default)]
    pub fault: Option<FaultConfig>,
    #[serde(default)]
    pub tls: Option<UpstreamTls>,
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

/// The top-level `consul` section: how to reach the Consul agent.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConsulConfig {
    /// Agent URL; default `CONSUL_HTTP_ADDR`, then `http://127.0.0.1:8500`.
    #[serde(default)]
    pub address: Option<String>,
    /// The ACL token itself (e.g. `${CONSUL_TOKEN}`); shown redacted.
    #[serde(default)]
    pub token: Option<Secret>,
    /// A file holding the ACL token; default `CONSUL_HTTP_TOKEN`.
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
    /// Default datacenter of every Consul discovery (`dc`); the agent's own when absent.
    #[serde(default)]
    pub datacenter: Option<String>,
    /// How long a blocking query may wait for a change.
    #[serde(default = "default_consul_wait", with = "duration")]
    pub wait: Duration,
    /// CA certificates (PEM) that sign an `https://` agent's certificate;
    /// default `CONSUL_CACERT`. Required for https (no system roots are used).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for an agent with `verify_incoming`;
    /// default `CONSUL_CLIENT_CERT`.
    #[serde(default)]
    pub client_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM); default `CONSUL_CLIENT_KEY`.
    #[serde(default)]
    pub client_key: Option<std::path::PathBuf>,
    /// With `service.register`: how often the registrations are checked
    /// with the agent (and registered again when it lost them).
    #[serde(default = "default_consul_sync_interval", with = "duration")]
    pub sync_interval: Duration,
}

fn default_consul_wait() -> Duration {
    Duration::from_secs(300)
}

fn default_consul_sync_interval() -> Duration {
    Duration::from_secs(30)
}

impl Default for ConsulConfig {
    fn default() -> Self {
        ConsulConfig {
            address: None,
            token: None,
            token_file: None,
            datacenter: None,
            wait: default_consul_wait(),
            ca_file: None,
            client_cert: None,
            client_key: None,
            sync_interval: default_consul_sync_interval(),
        }
    }
}

/// A secret string: serialized and debug-printed as `<redacted>`, so it
/// never reaches `/config` or a log line.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; only for sending it where it belongs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(super::redact::REDACTED)
    }
}

/// Load-balancing policy of an upstream.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancing {
    #[serde(default)]
    pub policy: LoadBalancingPolicy,
    #[serde(default)]
    pub hash_on: Option<HashOn>,
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

/// The admin listener (health, metrics, config).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// Connections open at once; more are accepted and closed at once.
    #[serde(default = "default_admin_max_connections")]
    pub max_connections: u32,
    /// A client must send a request's whole head within this time.
    #[serde(default = "default_admin_header_read_timeout", with = "duration")]
    pub header_read_timeout: Duration,
    /// Host names (besides loopback addresses, `localhost` and the address
    /// a connection arrived on) whose requests are answered; others get 403.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 15000))
}

fn default_admin_max_connections() -> u32 {
    100
}

fn default_admin_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_admin_listen(),
            max_connections: default_admin_max_connections(),
            header_read_timeout: default_admin_header_read_timeout(),
            allowed_hosts: Vec::new(),
        }
    }
}

/// Process-level settings.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    #[serde(default = "default_worker_threads")]
    pub worker_threads: usize,
    #[serde(default = "default_drain_timeout", with = "duration")]
    pub drain_timeout: Duration,
}

fn default_worker_threads() -> usize {
    1
}

fn default_drain_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            worker_threads: default_worker_threads(),
            drain_timeout: default_drain_timeout(),
        }
    }
}

/// Logs and access logs.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// A level (`error` .. `trace`) or an EnvFilter directive list.
    #[serde(default = "default_log_level")]
    pub level: String,
    #[serde(default)]
    pub format: LogFormat,
    #[serde(default = "default_access_log")]
    pub access_log: bool,
    /// Share of requests that get an access-log line (0–1).
    #[serde(default = "default_access_log_sample")]
    pub access_log_sample: f64,
}

fn default_access_log_sample() -> f64 {
    1.0
}

fn default_log_level() -> String {
    "info".to_owned()
}

fn default_access_log() -> bool {
    true
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: default_log_level(),
            format: LogFormat::default(),
            access_log: default_access_log(),
            access_log_sample: default_access_log_sample(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}
