//! What a configuration asks of each site (the inbound application, every
//! upstream): its listener, upstream settings and discovery ([`Spec`]), and
//! the inputs its stack is built from ([`StackSource`]), compared as config
//! values so that every change — a secret's too — is seen.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;

use crate::client::ClientSettings;
use crate::config::{
    AuthorizationConfig, Config, ConnectionPool, DEFAULT_PANIC_THRESHOLD,
    DEFAULT_TLS_HANDSHAKE_TIMEOUT, DEFAULT_TLS_RELOAD_INTERVAL, Discovery, DnsConfig,
    EndpointAddress, InboundConfig, ListenerLimits, LocalityPolicy, StaticEndpoint, Timeouts,
    TracingConfig, UpstreamConfig, UpstreamProtocol, UpstreamTlsMode,
};
use crate::context::Direction;
use crate::discovery::static_names;
use crate::http_connection::HttpProtocol;
use crate::tls::outbound::UpstreamTls;
use crate::tls::simple::SimpleTlsFiles;
use crate::upstream::UpstreamSettings;

use super::MeshSecurity;

/// The inbound application or an upstream as a configuration describes it.
pub(super) struct Spec<'a> {
    pub(super) direction: Direction,
    pub(super) name: String,
    pub(super) listen: Option<SocketAddr>,
    pub(super) limits: ListenerLimits,
    pub(super) settings: UpstreamSettings,
    /// Its discovery, `discovery.dns.resolver` defaulted to `dns.resolver`.
    pub(super) discovery: Discovery,
    /// The `dns:` section (how the hostnames of a static list resolve).
    pub(super) dns: DnsConfig,
    /// `None`: opaque TCP.
    pub(super) protocol: Option<HttpProtocol>,
    pub(super) section: Section<'a>,
}

pub(super) enum Section<'a> {
    Inbound(&'a InboundConfig),
    Outbound(&'a UpstreamConfig),
}

/// Everything a site's stack is built from besides its upstream and
/// backends: the stack is rebuilt when this differs.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct StackSource {
    section: SectionSource,
    /// The inbound authorization rules (`None` outbound, or without `tls`).
    authorization: Option<AuthorizationConfig>,
    tracing: TracingConfig,
    /// The share of requests that get an access-log line.
    access_log: f64,
}

#[derive(Debug, Clone, PartialEq)]
enum SectionSource {
    Inbound(Box<InboundConfig>),
    Outbound(Box<UpstreamConfig>),
}

impl StackSource {
    pub(super) fn of(section: &Section<'_>, config: &Config) -> StackSource {
        let (section, authorization) = match section {
            Section::Inbound(inbound) => (
                SectionSource::Inbound(Box::new((*inbound).clone())),
                (config.tls.as_ref()).map(|tls| tls.authorization.clone()),
            ),
            Section::Outbound(outbound) => {
                (SectionSource::Outbound(Box::new((*outbound).clone())), None)
            }
        };
        StackSource {
            section,
            authorization,
            tracing: config.tracing.clone(),
            access_log: access_log_share(config),
        }
    }
}

/// The share of requests that get an access-log line.
pub(super) fn access_log_share(config: &Config) -> f64 {
    if config.logging.access_log {
        config.logging.access_log_sample
    } else {
        0.0
    }
}

/// The sites `config` asks for: inbound first, then the upstreams.
pub(super) fn specs<'a>(
    config: &'a Config,
    mesh: Option<&MeshSecurity>,
) -> anyhow::Result<Vec<Spec<'a>>> {
    let mut specs = Vec::new();
    if let Some(inbound) = &config.inbound {
        let service = &config.service;
        let port = service
            .port
            .context("service.port is required for inbound")?;
        let protocol = UpstreamProtocol::from(service.protocol);
        // Other sidecars may speak either HTTP version to an HTTP service.
        let listen_protocol = match protocol {
            UpstreamProtocol::Http | UpstreamProtocol::Auto => Some(HttpProtocol::Auto),
            UpstreamProtocol::Http2 | UpstreamProtocol::Grpc => Some(HttpProtocol::Http2),
            UpstreamProtocol::Tcp => None,
        };
        specs.push(Spec {
            direction: Direction::Inbound,
            name: "inbound".into(),
            listen: Some(inbound.listen),
            limits: inbound.limits,
            settings: UpstreamSettings {
                name: service.name.clone(),
                direction: Direction::Inbound,
                protocol,
                policy: Default::default(),
                hash_on: None,
                client: client_settings(&Timeouts::default(), ConnectionPool::default(), None),
                circuit_breaker: None,
                outlier_detection: None,
                health_check: None,
                panic_threshold: DEFAULT_PANIC_THRESHOLD,
                local_zone: None,
                rate_limit: inbound.rate_limit.clone(),
            },
            discovery: Discovery::Static(vec![StaticEndpoint {
                address: EndpointAddress::Ip(SocketAddr::new(service.address, port)),
                weight: 1,
                zone: None,
            }]),
            dns: config.dns.clone(),
            protocol: listen_protocol,
            section: Section::Inbound(inbound),
        });
    }
    for upstream in &config.upstreams {
        let listen_protocol = match upstream.protocol {
            UpstreamProtocol::Http => Some(HttpProtocol::Http1),
            UpstreamProtocol::Http2 | UpstreamProtocol::Grpc => Some(HttpProtocol::Http2),
            UpstreamProtocol::Auto => Some(HttpProtocol::Auto),
            UpstreamProtocol::Tcp => None,
        };
        let tls = origination(upstream, config, mesh)?;
        specs.push(Spec {
            direction: Direction::Outbound,
            name: upstream.name.clone(),
            listen: upstream.listen,
            limits: upstream.limits,
            settings: UpstreamSettings {
                name: upstream.name.clone(),
                direction: Direction::Outbound,
                protocol: upstream.protocol,
                policy: upstream.load_balancing.policy,
                hash_on: upstream.load_balancing.hash_on.clone(),
                client: client_settings(&upstream.timeouts, upstream.connection_pool, tls),
                circuit_breaker: upstream.circuit_breaker.clone(),
                outlier_detection: upstream.outlier_detection.clone(),
                health_check: upstream.health_check.clone(),
                panic_threshold: upstream.load_balancing.panic_threshold,
                local_zone: local_zone(config, upstream),
                rate_limit: upstream.rate_limit.clone(),
            },
            discovery: with_default_resolver(&upstream.discovery, &config.dns),
            dns: config.dns.clone(),
            protocol: listen_protocol,
            section: Section::Outbound(upstream),
        });
    }
    Ok(specs)
}

/// The TLS origination of `upstream`, if any: `mode: simple` on its own
/// (its files read now and every `tls.reload_interval`), mesh mTLS with the
/// process's mesh TLS.
fn origination(
    upstream: &UpstreamConfig,
    config: &Config,
    mesh: Option<&MeshSecurity>,
) -> anyhow::Result<Option<Arc<UpstreamTls>>> {
    let settings = upstream.tls.clone().unwrap_or_default();
    if settings.mode == UpstreamTlsMode::Mesh {
        return match mesh {
            Some(mesh) => mesh.upstream(upstream, config),
            None => Ok(None),
        };
    }
    if !settings.originates(false) {
        return Ok(None);
    }
    let server_name = upstream
        .tls_server_name()
        .with_context(|| format!("upstream {}: tls.server_name is required", upstream.name))?;
    let files = SimpleTlsFiles {
        ca: settings.ca_file,
        client: settings.cert_file.zip(settings.key_file),
    };
    let (handshake_timeout, reload_interval) = (config.tls.as_ref()).map_or(
        (DEFAULT_TLS_HANDSHAKE_TIMEOUT, DEFAULT_TLS_RELOAD_INTERVAL),
        |tls| (tls.handshake_timeout, tls.reload_interval),
    );
    let tls = UpstreamTls::simple(&server_name, files, handshake_timeout, &upstream.name)
        .with_context(|| format!("upstream {}: TLS", upstream.name))?;
    let tls = Arc::new(tls);
    tls.watch_files(reload_interval);
    Ok(Some(tls))
}

/// This sidecar's zone when `upstream` balances `prefer_local`.
fn local_zone(config: &Config, upstream: &UpstreamConfig) -> Option<Arc<str>> {
    if upstream.load_balancing.locality != LocalityPolicy::PreferLocal {
        return None;
    }
    (config.service.locality.as_ref()).map(|locality| Arc::from(locality.zone.as_str()))
}

fn client_settings(
    timeouts: &Timeouts,
    pool: ConnectionPool,
    tls: Option<Arc<UpstreamTls>>,
) -> ClientSettings {
    ClientSettings {
        connect_timeout: timeouts.connect,
        idle_timeout: timeouts.idle,
        tls,
        pool,
    }
}

/// `discovery`, a `dns` one asking `dns.resolver` unless it names its own.
fn with_default_resolver(discovery: &Discovery, dns: &DnsConfig) -> Discovery {
    match discovery {
        Discovery::Dns(own) if own.resolver.is_none() => {
            let mut own = own.clone();
            own.resolver = dns.resolver;
            Discovery::Dns(own)
        }
        other => other.clone(),
    }
}

/// True when `discovery` is a static list that names a host.
pub(super) fn names_hosts(discovery: &Discovery) -> bool {
    match discovery {
        Discovery::Static(endpoints) => static_names::names_hosts(endpoints),
        Discovery::Dns(_) | Discovery::Consul(_) | Discovery::Etcd(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INBOUND: &str = "service: { name: web, port: 8080 }\ninbound: { listen: 127.0.0.1:0 }\n";

    fn parse(yaml: &str) -> Config {
        crate::config::parse(yaml, "test.yaml").expect("valid")
    }

    /// The stack sources of `config`'s sites, inbound first.
    fn sources(config: &Config) -> Vec<StackSource> {
        let specs = specs(config, None).expect("specs");
        let sources = specs
            .iter()
            .map(|spec| StackSource::of(&spec.section, config));
        sources.collect()
    }

    fn upstream_with_header(name: &str, value: &str) -> String {
        format!(
            "{INBOUND}upstreams:\n  - name: api\n    listen: 127.0.0.1:0\n    \
             discovery: {{ static: [127.0.0.1:9000] }}\n    routes:\n      - name: all\n        \
             request_headers: {{ set: {{ {name}: \"{value}\" }} }}\n"
        )
    }

    #[test]
    fn an_unchanged_configuration_has_the_same_sources() {
        let yaml = upstream_with_header("authorization", "Bearer one");
        assert_eq!(sources(&parse(&yaml)), sources(&parse(&yaml)));
    }

    /// `/config` shows both credentials as `<redacted>`; the stack source
    /// still tells them apart.
    #[test]
    fn a_changed_credential_changes_the_source_though_config_shows_it_alike() {
        let one = parse(&upstream_with_header("authorization", "Bearer one"));
        let two = parse(&upstream_with_header("authorization", "Bearer two"));
        let shown = |config: &Config| crate::config::shown(config).expect("shown");
        assert_eq!(shown(&one), shown(&two));
        let (one, two) = (sources(&one), sources(&two));
        assert_eq!(one[0], two[0], "the inbound stack is untouched");
        assert_ne!(one[1], two[1]);
    }

    #[test]
    fn authorization_rules_tracing_and_access_log_change_the_source() {
        let tls = "tls:\n  cert: /c.pem\n  key: /k.pem\n  ca: /ca.pem\n";
        let running = parse(&format!("{INBOUND}{tls}  authorization: {{ deny: [a] }}\n"));
        let changes = [
            format!("{INBOUND}{tls}  authorization: {{ deny: [b] }}\n"),
            format!(
                "{INBOUND}{tls}  authorization: {{ deny: [a] }}\ntracing: {{ request_id: false }}\n"
            ),
            format!(
                "{INBOUND}{tls}  authorization: {{ deny: [a] }}\nlogging: {{ access_log: false }}\n"
            ),
        ];
        for changed in changes {
            assert_ne!(sources(&running), sources(&parse(&changed)), "{changed}");
        }
    }
}
