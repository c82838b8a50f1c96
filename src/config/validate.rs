//! Semantic checks on a deserialized `Config`: rules that span fields or
//! that serde types cannot express. Rejects duplicate listen addresses
//! (port 0 excepted), duplicate or non-label-safe upstream names, empty
//! static endpoint lists, an empty Consul service name or tag, a Consul
//! `wait` of zero or above 10m, a Consul address that is neither `http://`
//! nor `https://`, Consul TLS files with an `http://` address, a client
//! certificate without its key (or the reverse), a zero `sync_interval`,
//! zero timeouts and intervals, an admin `max_connections` or
//! `header_read_timeout` of zero or an `allowed_hosts` entry that is no host
//! name, worker_threads 0 or
//! above 1024, `ring_hash` without `hash_on` (and `hash_on` without
//! `ring_hash`, or on tcp), `inbound` without `service.port`, an empty
//! service name, a check without exactly one of http/tcp, log levels
//! that are neither a level nor a filter directive, `tracing.otlp` with a
//! non-http endpoint, a sample ratio outside 0..=1 or a zero queue, batch or
//! flush interval, an empty `config_source.consul_kv.key` or one with a
//! leading or trailing `/`, an `allowed_env` entry that is no variable name, listener `limits` of zero (or header bytes
//! outside 8 KiB..16 MiB), `register: true` without `service.port`, `tls`
//! with `source: files`
//! but without cert/key/ca (or with them under `source: consul`), zero TLS
//! intervals, empty authorization patterns or SPIFFE IDs that do not parse,
//! and `upstreams[].tls` turned on without a `tls` section. Transparent
//! mode: an upstream without `listen` must have `hosts` or `addresses`, those
//! keys need a `transparent:` section, `hosts` need an HTTP upstream, a host
//! or address may belong to one upstream only, and `detect_timeout` must not
//! be zero. Every problem is returned, with the key path it concerns.
//! `backends:` and `routes:` are checked by `route_checks.rs`.

use std::net::SocketAddr;
use std::time::Duration;

use super::config_source::ConfigSource;
use super::discovery::Discovery;
use super::env;
use super::limits::{ListenerLimits, MAX_HEADER_BYTES, MIN_HEADER_BYTES};
use super::model::Config;
use super::pool::ConnectionPool;
use super::resilience::{FaultConfig, RateLimitConfig, RetryPolicy, grpc_code};
use super::service::ServiceProtocol;
use super::tls::TlsSource;
use super::upstream::{LoadBalancingPolicy, UpstreamConfig, UpstreamProtocol};

/// Most tokio worker threads accepted.
const MAX_WORKER_THREADS: usize = 1024;

/// A semantic problem at a key path.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Problem {
    pub(crate) path: String,
    pub(crate) message: String,
}

/// Every semantic problem of `config`, in document order of sections.
pub(crate) fn check(config: &Config) -> Vec<Problem> {
    let mut problems = Problems::default();
    check_service(config, &mut problems);
    check_listeners(config, &mut problems);
    check_upstreams(config, &mut problems);
    super::route_checks::check(config, &mut problems);
    check_consul(config, &mut problems);
    check_runtime_and_logging(config, &mut problems);
    check_admin(config, &mut problems);
    check_tracing(config, &mut problems);
    check_config_source(config, &mut problems);
    check_tls(config, &mut problems);
    check_transparent(config, &mut problems);
    problems.0
}

fn check_config_source(config: &Config, problems: &mut Problems) {
    if let Some(ConfigSource::ConsulKv(kv)) = &config.config_source {
        let key = kv.key.trim();
        if key.is_empty() {
            problems.add("config_source.consul_kv.key", "must not be empty");
        } else if key.starts_with('/') || key.ends_with('/') {
            problems.add(
                "config_source.consul_kv.key",
                "a key has no leading or trailing `/` (e.g. `remora/web`)",
            );
        }
        for (i, name) in kv.allowed_env.iter().enumerate() {
            if !env::is_variable_name(name) {
                problems.add(
                    format!("config_source.consul_kv.allowed_env[{i}]"),
                    format!(
                        "`{name}` is not a variable name (letters, digits and `_`, e.g. `REGION`)"
                    ),
                );
            }
        }
    }
}

#[derive(Default)]
pub(super) struct Problems(Vec<Problem>);

impl Problems {
    pub(super) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    pub(super) fn nonzero(&mut self, path: String, duration: Duration) {
        if duration.is_zero() {
            self.add(path, "must be greater than zero");
        }
    }
}

fn check_service(config: &Config, problems: &mut Problems) {
    let service = &config.service;
    if service.name.trim().is_empty() {
        problems.add("service.name", "must not be empty");
    }
    if config.inbound.is_some() && matches!(service.port, None | Some(0)) {
        problems.add(
            "service.port",
            "inbound is configured, so the application's port is required (1-65535)",
        );
    }
    if service.register && matches!(service.port, None | Some(0)) {
        problems.add(
            "service.register",
            "registration needs service.port, the application's port (1-65535)",
        );
    }
    if let Some(check) = &service.check {
        if check.http.is_some() == check.tcp.is_some() {
            problems.add("service.check", "needs exactly one of `http` or `tcp`");
        }
        problems.nonzero("service.check.interval".to_owned(), check.interval);
        problems.nonzero("service.check.timeout".to_owned(), check.timeout);
    }
    if let Some(inbound) = &config.inbound {
        if let Some(timeout) = inbound.timeout {
            problems.nonzero("inbound.timeout".to_owned(), timeout);
        }
        if let Some(rate_limit) = &inbound.rate_limit {
            check_rate_limit("inbound.rate_limit", rate_limit, problems);
        }
        if inbound.max_concurrent_requests == Some(0) {
            problems.add("inbound.max_concurrent_requests", "must be at least 1");
        }
        check_limits("inbound.limits", &inbound.limits, problems);
        let tcp = config.service.protocol == ServiceProtocol::Tcp;
        if tcp && (inbound.rate_limit.is_some() || inbound.timeout.is_some()) {
            problems.add(
                "inbound",
                "rate_limit and timeout apply to HTTP requests; service.protocol is tcp",
            );
        }
    }
}

/// Two listeners clash on the same port when their IPs are equal or one of
/// them is a wildcard (0.0.0.0 / ::), which covers every local address.
fn check_listeners(config: &Config, problems: &mut Problems) {
    let mut listeners: Vec<(String, SocketAddr)> = Vec::new();
    if let Some(inbound) = &config.inbound {
        listeners.push(("inbound.listen".to_owned(), inbound.listen));
    }
    for (i, upstream) in config.upstreams.iter().enumerate() {
        if let Some(listen) = upstream.listen {
            listeners.push((format!("upstreams[{i}].listen"), listen));
        }
    }
    if let Some(transparent) = &config.transparent {
        listeners.push((
            "transparent.outbound_listen".to_owned(),
            transparent.outbound_listen,
        ));
    }
    listeners.push(("admin.listen".to_owned(), config.admin.listen));

    for (i, (path, addr)) in listeners.iter().enumerate() {
        if addr.port() == 0 {
            continue;
        }
        let earlier = listeners[..i].iter().find(|(_, other)| {
            other.port() == addr.port()
                && (other.ip() == addr.ip()
                    || other.ip().is_unspecified()
                    || addr.ip().is_unspecified())
        });
        if let Some((other_path, other)) = earlier {
            problems.add(
                path.clone(),
                format!("listen address {addr} clashes with {other_path} ({other})"),
            );
        }
    }
}

fn check_upstreams(config: &Config, problems: &mut Problems) {
    for (i, upstream) in config.upstreams.iter().enumerate() {
        let at = |key: &str| format!("upstreams[{i}].{key}");
        if !is_label_safe(&upstream.name) {
            problems.add(
                at("name"),
                format!(
                    "invalid upstream name `{}`: use lowercase letters, digits, `_` and `-`, starting with a letter or digit (it becomes a metric label)",
                    upstream.name
                ),
            );
        } else if let Some(first) = config.upstreams[..i]
            .iter()
            .position(|other| other.name == upstream.name)
        {
            problems.add(
                at("name"),
                format!(
                    "upstream name `{}` is already used by upstreams[{first}]",
                    upstream.name
                ),
            );
        }

        match &upstream.discovery {
            Discovery::Static(endpoints) if endpoints.is_empty() => {
                problems.add(at("discovery.static"), "needs at least one endpoint");
            }
            Discovery::Static(endpoints) => {
                for (j, endpoint) in endpoints.iter().enumerate() {
                    if endpoint.weight == 0 {
                        problems.add(
                            at(&format!("discovery.static[{j}].weight")),
                            "must be at least 1",
                        );
                    }
                }
            }
            Discovery::Dns(dns) => {
                if dns.name.trim().is_empty() {
                    problems.add(at("discovery.dns.name"), "needs an SRV name");
                }
                if dns.min_refresh.is_zero() {
                    problems.add(at("discovery.dns.min_refresh"), "must be more than 0s");
                }
                if dns.max_refresh < dns.min_refresh {
                    problems.add(
                        at("discovery.dns.max_refresh"),
                        "must be at least min_refresh",
                    );
                }
            }
            Discovery::Consul(consul) => {
                if consul.service.trim().is_empty() {
                    problems.add(at("discovery.consul.service"), "must not be empty");
                }
                if consul.tags.iter().any(|tag| tag.trim().is_empty()) {
                    problems.add(at("discovery.consul.tags"), "tags must not be empty");
                }
            }
        }

        let balancing = &upstream.load_balancing;
        let ring_hash = balancing.policy == LoadBalancingPolicy::RingHash;
        match (ring_hash, &balancing.hash_on) {
            (true, None) => problems.add(
                at("load_balancing.policy"),
                "ring_hash needs `hash_on: header:NAME`",
            ),
            (false, Some(_)) => problems.add(
                at("load_balancing.hash_on"),
                "hash_on is only used by policy ring_hash",
            ),
            _ => {}
        }
        if (ring_hash || balancing.hash_on.is_some()) && upstream.protocol == UpstreamProtocol::Tcp
        {
            problems.add(
                at("protocol"),
                "ring_hash / hash_on hash an HTTP header; protocol tcp has none",
            );
        }

        let timeouts = &upstream.timeouts;
        problems.nonzero(at("timeouts.connect"), timeouts.connect);
        if let Some(request) = timeouts.request {
            problems.nonzero(at("timeouts.request"), request);
        }
        problems.nonzero(at("timeouts.idle"), timeouts.idle);
        check_limits(&at("limits"), &upstream.limits, problems);
        check_resilience(upstream, &at, problems);
    }
}

fn check_limits(path: &str, limits: &ListenerLimits, problems: &mut Problems) {
    let at = |key: &str| format!("{path}.{key}");
    let at_least_one = [
        ("max_connections", limits.max_connections),
        ("max_headers", limits.max_headers),
        ("max_concurrent_streams", limits.max_concurrent_streams),
    ];
    for (key, value) in at_least_one {
        if value == 0 {
            problems.add(at(key), "must be at least 1");
        }
    }
    problems.nonzero(at("header_read_timeout"), limits.header_read_timeout);
    if !(MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&limits.max_header_bytes) {
        problems.add(
            at("max_header_bytes"),
            format!("must be between {MIN_HEADER_BYTES} and {MAX_HEADER_BYTES}"),
        );
    }
}

fn check_resilience(
    upstream: &UpstreamConfig,
    at: &dyn Fn(&str) -> String,
    problems: &mut Problems,
) {
    if upstream.protocol == UpstreamProtocol::Tcp {
        let http_only = [
            ("retries", upstream.retries.is_some()),
            ("rate_limit", upstream.rate_limit.is_some()),
            ("fault", upstream.fault.is_some()),
            ("timeouts.request", upstream.timeouts.request.is_some()),
            (
                "max_concurrent_requests",
                upstream.max_concurrent_requests.is_some(),
            ),
        ];
        for (key, present) in http_only {
            if present {
                problems.add(
                    at(key),
                    "applies to HTTP requests; a tcp upstream has none (it gets connect retries, \
                     balancing, circuit breaking and outlier detection per connection)",
                );
            }
        }
    }
    if let Some(retries) = &upstream.retries {
        check_retries(&at("retries"), retries, problems);
    }
    if let Some(rate_limit) = &upstream.rate_limit {
        check_rate_limit(&at("rate_limit"), rate_limit, problems);
    }
    if let Some(breaker) = &upstream.circuit_breaker {
        if breaker.consecutive_failures == 0 {
            problems.add(
                at("circuit_breaker.consecutive_failures"),
                "must be at least 1",
            );
        }
        if let Some(rate) = &breaker.failure_rate {
            if !(rate.threshold > 0.0 && rate.threshold <= 1.0) {
                problems.add(
                    at("circuit_breaker.failure_rate.threshold"),
                    "must be a fraction above 0 and at most 1",
                );
            }
            problems.nonzero(at("circuit_breaker.failure_rate.window"), rate.window);
            if rate.min_requests == 0 {
                problems.add(
                    at("circuit_breaker.failure_rate.min_requests"),
                    "must be at least 1",
                );
            }
        }
        problems.nonzero(at("circuit_breaker.open_for"), breaker.open_for);
        if breaker.max_open_for < breaker.open_for {
            problems.add(
                at("circuit_breaker.max_open_for"),
                "must not be shorter than open_for",
            );
        }
        if breaker.half_open_requests == 0 {
            problems.add(
                at("circuit_breaker.half_open_requests"),
                "must be at least 1",
            );
        }
    }
    if let Some(outlier) = &upstream.outlier_detection {
        if outlier.consecutive_failures == 0 {
            problems.add(
                at("outlier_detection.consecutive_failures"),
                "must be at least 1",
            );
        }
        problems.nonzero(at("outlier_detection.base_ejection"), outlier.base_ejection);
        if outlier.max_ejection < outlier.base_ejection {
            problems.add(
                at("outlier_detection.max_ejection"),
                "must not be shorter than base_ejection",
            );
        }
        if outlier.max_ejection_percent > 100 {
            problems.add(
                at("outlier_detection.max_ejection_percent"),
                "must be between 0 and 100",
            );
        }
    }
    if upstream.max_concurrent_requests == Some(0) {
        problems.add(at("max_concurrent_requests"), "must be at least 1");
    }
    check_connection_pool(&at("connection_pool"), &upstream.connection_pool, problems);
    if let Some(fault) = &upstream.fault {
        check_fault(&at("fault"), fault, problems);
    }
}

/// Checks a `connection_pool:` section at key path `at`.
fn check_connection_pool(at: &str, pool: &ConnectionPool, problems: &mut Problems) {
    let key = |name: &str| format!("{at}.{name}");
    if pool.max_connections_per_endpoint == 0 {
        problems.add(key("max_connections_per_endpoint"), "must be at least 1");
    }
    if pool.max_requests_per_connection == Some(0) {
        problems.add(key("max_requests_per_connection"), "must be at least 1");
    }
    for (name, value) in [
        ("pending_timeout", Some(pool.pending_timeout)),
        ("max_connection_age", pool.max_connection_age),
        ("keepalive_interval", pool.keepalive_interval),
        ("keepalive_timeout", Some(pool.keepalive_timeout)),
    ] {
        if value == Some(Duration::ZERO) {
            problems.add(key(name), "must be longer than 0");
        }
    }
}

/// Checks a `retries:` section at key path `at`.
pub(super) fn check_retries(at: &str, retries: &RetryPolicy, problems: &mut Problems) {
    let key = |name: &str| format!("{at}.{name}");
    if !(1..=10).contains(&retries.attempts) {
        problems.add(
            key("attempts"),
            "must be between 1 and 10 (tries in all, the first included)",
        );
    }
    if let Some(per_try) = retries.per_try_timeout {
        problems.nonzero(key("per_try_timeout"), per_try);
    }
    problems.nonzero(key("backoff.base"), retries.backoff.base);
    if retries.backoff.max < retries.backoff.base {
        problems.add(key("backoff.max"), "must not be shorter than backoff.base");
    }
    if !(0.0..=10.0).contains(&retries.budget.ratio) {
        problems.add(key("budget.ratio"), "must be between 0 and 10");
    }
    problems.nonzero(key("budget.window"), retries.budget.window);
}

/// Checks a `fault:` section at key path `at`.
pub(super) fn check_fault(at: &str, fault: &FaultConfig, problems: &mut Problems) {
    let key = |name: &str| format!("{at}.{name}");
    if let Some(delay) = &fault.delay {
        check_percent(&key("delay.percent"), delay.percent, problems);
        problems.nonzero(key("delay.duration"), delay.duration);
    }
    if let Some(abort) = &fault.abort {
        check_percent(&key("abort.percent"), abort.percent, problems);
        if !(200..=599).contains(&abort.status) {
            problems.add(
                key("abort.status"),
                "must be an HTTP status between 200 and 599",
            );
        }
        if let Some(name) = &abort.grpc_status
            && grpc_code(name).is_none()
        {
            problems.add(
                key("abort.grpc_status"),
                format!("unknown gRPC status `{name}`: use a name such as unavailable"),
            );
        }
    }
}

pub(super) fn check_rate_limit(at: &str, rate_limit: &RateLimitConfig, problems: &mut Problems) {
    if !(rate_limit.requests_per_second > 0.0 && rate_limit.requests_per_second.is_finite()) {
        problems.add(
            format!("{at}.requests_per_second"),
            "must be a number above 0",
        );
    }
    if rate_limit.burst == Some(0) {
        problems.add(format!("{at}.burst"), "must be at least 1");
    }
    if rate_limit.max_keys == 0 {
        problems.add(format!("{at}.max_keys"), "must be at least 1");
    }
}

pub(super) fn check_percent(at: &str, percent: f64, problems: &mut Problems) {
    if !(0.0..=100.0).contains(&percent) {
        problems.add(at, "must be a percentage between 0 and 100");
    }
}

/// Longest blocking-query wait Consul honours.
const MAX_CONSUL_WAIT: Duration = Duration::from_secs(600);

fn check_consul(config: &Config, problems: &mut Problems) {
    let consul = &config.consul;
    problems.nonzero("consul.wait".into(), consul.wait);
    if consul.wait > MAX_CONSUL_WAIT {
        problems.add("consul.wait", "must be at most 10m (Consul's limit)");
    }
    problems.nonzero("consul.sync_interval".into(), consul.sync_interval);
    let https = match &consul.address {
        Some(address) if address.starts_with("https://") => true,
        Some(address) if address.starts_with("http://") => false,
        Some(address) => {
            problems.add(
                "consul.address",
                format!("`{address}`: must start with `http://` or `https://`"),
            );
            return;
        }
        // CONSUL_HTTP_ADDR decides at start.
        None => return,
    };
    let tls_files = [
        ("consul.ca_file", consul.ca_file.is_some()),
        ("consul.client_cert", consul.client_cert.is_some()),
        ("consul.client_key", consul.client_key.is_some()),
    ];
    for (path, set) in tls_files {
        if set && !https {
            problems.add(path, "only used with an `https://` consul.address");
        }
    }
    if consul.client_cert.is_some() != consul.client_key.is_some() {
        problems.add(
            "consul.client_cert",
            "client_cert and client_key go together (set both or neither)",
        );
    }
}

fn check_admin(config: &Config, problems: &mut Problems) {
    let admin = &config.admin;
    if admin.max_connections == 0 {
        problems.add("admin.max_connections", "must be greater than zero");
    }
    problems.nonzero(
        "admin.header_read_timeout".to_owned(),
        admin.header_read_timeout,
    );
    for (i, host) in admin.allowed_hosts.iter().enumerate() {
        let with_port_or_user = match host.parse::<http::uri::Authority>() {
            Ok(authority) => authority.port().is_some() || host.contains('@'),
            Err(_) => true,
        };
        if with_port_or_user {
            problems.add(
                format!("admin.allowed_hosts[{i}]"),
                format!("`{host}` is not a host name (no port, e.g. `remora-admin.internal`)"),
            );
        }
    }
}

fn check_runtime_and_logging(config: &Config, problems: &mut Problems) {
    let workers = config.runtime.worker_threads;
    if workers == 0 || workers > MAX_WORKER_THREADS {
        problems.add(
            "runtime.worker_threads",
            format!("must be between 1 and {MAX_WORKER_THREADS}, got {workers}"),
        );
    }
    problems.nonzero(
        "runtime.drain_timeout".to_owned(),
        config.runtime.drain_timeout,
    );

    if !(0.0..=1.0).contains(&config.logging.access_log_sample) {
        problems.add(
            "logging.access_log_sample",
            "must be a fraction between 0 and 1",
        );
    }
    let level = config.logging.level.trim();
    let is_level = ["error", "warn", "info", "debug", "trace"]
        .iter()
        .any(|known| known.eq_ignore_ascii_case(level));
    if !is_level && !level.contains('=') {
        problems.add(
            "logging.level",
            format!(
                "invalid log level `{level}`: use error, warn, info, debug, trace or a filter such as `info,remora=debug`"
            ),
        );
    }
}

/// `[a-z0-9][a-z0-9_-]*`
pub(super) fn is_label_safe(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_lowercase() || first.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn check_tracing(config: &Config, problems: &mut Problems) {
    let Some(otlp) = &config.tracing.otlp else {
        return;
    };
    let valid_endpoint = otlp
        .endpoint
        .parse::<http::Uri>()
        .is_ok_and(|uri| uri.scheme_str() == Some("http") && uri.authority().is_some());
    if !valid_endpoint {
        problems.add(
            "tracing.otlp.endpoint",
            "must be an http:// URL with a host (https is not supported)",
        );
    }
    if !(0.0..=1.0).contains(&otlp.sample_ratio) {
        problems.add("tracing.otlp.sample_ratio", "must be between 0 and 1");
    }
    if otlp.max_queue == 0 {
        problems.add("tracing.otlp.max_queue", "must be greater than zero");
    }
    if otlp.batch_size == 0 {
        problems.add("tracing.otlp.batch_size", "must be greater than zero");
    }
    problems.nonzero("tracing.otlp.flush_interval".into(), otlp.flush_interval);
}

fn check_tls(config: &Config, problems: &mut Problems) {
    if let Some(tls) = &config.tls {
        let files = [
            ("tls.cert", tls.cert.is_some()),
            ("tls.key", tls.key.is_some()),
            ("tls.ca", tls.ca.is_some()),
        ];
        for (key, present) in files {
            match (tls.source, present) {
                (TlsSource::Files, false) => problems.add(
                    "tls",
                    format!("`{key}` is required with `source: files` (a PEM file path)"),
                ),
                (TlsSource::Consul, true) => problems.add(
                    key,
                    "not used with `source: consul` (Consul's CA issues the certificate)",
                ),
                _ => {}
            }
        }
        if tls.service.is_some() && tls.source == TlsSource::Files {
            problems.add("tls.service", "only used with `source: consul`");
        }
        problems.nonzero("tls.reload_interval".into(), tls.reload_interval);
        problems.nonzero("tls.handshake_timeout".into(), tls.handshake_timeout);
        let authorization = &tls.authorization;
        if authorization.until_intentions_load.is_some() && !authorization.intentions {
            problems.add(
                "tls.authorization.until_intentions_load",
                "only used with `intentions: true`",
            );
        }
        for (key, patterns) in [
            ("allow", &authorization.allow),
            ("deny", &authorization.deny),
        ] {
            for (i, pattern) in patterns.iter().enumerate() {
                if let Err(message) = crate::tls::identity::check_pattern(pattern) {
                    problems.add(format!("tls.authorization.{key}[{i}]"), message);
                }
            }
        }
    }
    for (i, upstream) in config.upstreams.iter().enumerate() {
        let Some(upstream_tls) = &upstream.tls else {
            continue;
        };
        if config.tls.is_none() && upstream_tls.enabled != Some(false) {
            problems.add(
                format!("upstreams[{i}].tls"),
                "mesh TLS needs the top-level `tls` section (this sidecar's certificate)",
            );
        }
        if let Some(identity) = &upstream_tls.identity
            && let Err(message) = crate::tls::identity::check_expected(identity)
        {
            problems.add(format!("upstreams[{i}].tls.identity"), message);
        }
    }
}

/// Transparent mode: which upstream answers for which host and address.
fn check_transparent(config: &Config, problems: &mut Problems) {
    let transparent = config.transparent.as_ref();
    if let Some(transparent) = transparent {
        check_limits("transparent.limits", &transparent.limits, problems);
        problems.nonzero(
            "transparent.detect_timeout".to_owned(),
            transparent.detect_timeout,
        );
    }
    let mut hosts = Vec::new();
    let mut addresses = Vec::new();
    for (i, upstream) in config.upstreams.iter().enumerate() {
        let at = |key: &str| format!("upstreams[{i}].{key}");
        let routed = !upstream.hosts.is_empty() || !upstream.addresses.is_empty();
        if upstream.listen.is_none() && !routed {
            problems.add(
                at("listen"),
                "an upstream needs `listen` (explicit mode) or `hosts` / `addresses` (transparent mode)",
            );
        }
        if routed && transparent.is_none() {
            problems.add(
                at(if upstream.hosts.is_empty() {
                    "addresses"
                } else {
                    "hosts"
                }),
                "hosts and addresses route transparent-mode traffic; add a `transparent:` section",
            );
        }
        if !upstream.hosts.is_empty() && upstream.protocol == UpstreamProtocol::Tcp {
            problems.add(
                at("hosts"),
                "hosts match the HTTP Host header; a tcp upstream is matched by `addresses`",
            );
        }
        for host in &upstream.hosts {
            if let Some((_, other)) = hosts.iter().find(|(known, _)| known == host) {
                problems.add(
                    at("hosts"),
                    format!("host `{host}` is already routed to upstreams[{other}]"),
                );
            }
            hosts.push((host.clone(), i));
        }
        for address in &upstream.addresses {
            if let Some((_, other)) = addresses.iter().find(|(known, _)| known == address) {
                problems.add(
                    at("addresses"),
                    format!("address `{address}` is already routed to upstreams[{other}]"),
                );
            }
            addresses.push((*address, i));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_safe_names() {
        assert!(is_label_safe("api"));
        assert!(is_label_safe("0-a_b"));
        assert!(!is_label_safe(""));
        assert!(!is_label_safe("-a"));
        assert!(!is_label_safe("Api"));
        assert!(!is_label_safe("a.b"));
    }
}
