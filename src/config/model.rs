//! The configuration model's root: `Config`, one field per top-level YAML
//! section, field names equal to the YAML keys of the README's
//! configuration reference (a public interface). Each section has its own
//! module (`service.rs`, `inbound.rs`, `upstream.rs`, `discovery.rs`,
//! `consul.rs`, `etcd.rs`, `admin.rs`, `runtime.rs`, `telemetry.rs`,
//! `config_source.rs`, `tls.rs`, `transparent.rs`, `resilience.rs`,
//! `routing.rs` …). Every struct rejects unknown keys, so a misspelt or
//! misplaced key is an error rather than silently ignored. Values are typed
//! there ("parse, don't validate"); cross-field rules live in `validate/`.

use serde::{Deserialize, Serialize};

use super::admin::AdminConfig;
use super::config_source::ConfigSource;
use super::consul::ConsulConfig;
use super::discovery::{Discovery, DnsConfig};
use super::etcd::EtcdConfig;
use super::inbound::InboundConfig;
use super::rate_limit::RateLimitScope;
use super::routing::BackendConfig;
use super::runtime::RuntimeConfig;
use super::service::ServiceConfig;
use super::telemetry::{LoggingConfig, TracingConfig};
use super::tls::TlsConfig;
use super::transparent::TransparentConfig;
use super::upstream::UpstreamConfig;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub service: ServiceConfig,
    #[serde(default)]
    pub inbound: Option<InboundConfig>,
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
    #[serde(default, deserialize_with = "super::consul::present_section")]
    pub consul: ConsulConfig,
    /// The etcd cluster (discovery, registration, config source); unused when absent.
    #[serde(default)]
    pub etcd: Option<EtcdConfig>,
    /// How hostnames of static endpoint lists are resolved.
    #[serde(default)]
    pub dns: DnsConfig,
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

impl Config {
    /// True when a rate limit has `scope: service`: the sidecar must watch
    /// its own service's instances.
    pub fn shares_quotas(&self) -> bool {
        let inbound = self
            .inbound
            .iter()
            .filter_map(|inbound| inbound.rate_limit.as_ref());
        let upstreams = (self.upstreams.iter()).flat_map(|upstream| {
            let routes = upstream
                .routes
                .iter()
                .filter_map(|route| route.rate_limit.as_ref());
            upstream.rate_limit.iter().chain(routes)
        });
        (inbound.chain(upstreams)).any(|limit| limit.scope == RateLimitScope::Service)
    }

    /// True when a static endpoint list (of an upstream or a routing
    /// backend) names a host, which the `dns:` section resolves.
    pub fn resolves_hostnames(&self) -> bool {
        (self.upstreams.iter()).any(|upstream| {
            let listed = match &upstream.discovery {
                Discovery::Static(endpoints) => {
                    (endpoints.iter()).any(|e| e.address.host().is_some())
                }
                Discovery::Consul(_) | Discovery::Dns(_) | Discovery::Etcd(_) => false,
            };
            let backends = (upstream.backends.values()).any(|backend| match backend {
                BackendConfig::Static(addresses) => addresses.iter().any(|a| a.host().is_some()),
                BackendConfig::Subset(_) | BackendConfig::Upstream(_) => false,
            });
            listed || backends
        })
    }

    /// True when Consul is this sidecar's registry (where it registers and
    /// counts its own service): its section is written, or no `etcd` section
    /// names another. With an `etcd` section and no `consul` one, etcd is.
    pub fn consul_is_the_registry(&self) -> bool {
        self.consul.present || self.etcd.is_none()
    }

    /// Where this sidecar counts its own service's instances for
    /// `rate_limit.scope: service`: the registry it registers in.
    pub fn counts_own_service_in_etcd(&self) -> bool {
        self.shares_quotas() && !self.consul_is_the_registry()
    }
}
