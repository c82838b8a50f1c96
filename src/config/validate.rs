//! Semantic checks on a deserialized `Config`: rules that span fields or
//! that serde types cannot express. Rejects duplicate listen addresses
//! (port 0 excepted), duplicate or non-label-safe upstream names, empty
//! static endpoint lists, zero timeouts and intervals, worker_threads 0 or
//! above 1024, `ring_hash` without `hash_on` (and `hash_on` without
//! `ring_hash`, or on tcp), `inbound` without `service.port`, an empty
//! service name, a check without exactly one of http/tcp, log levels
//! that are neither a level nor a filter directive, and `register: true`
//! (Consul registration is not implemented yet, so it must not pass silently). Every problem is
//! returned, with the key path it concerns.

use std::net::SocketAddr;
use std::time::Duration;

use super::model::{Config, Discovery, LoadBalancingPolicy, UpstreamProtocol};

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
    check_runtime_and_logging(config, &mut problems);
    problems.0
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn nonzero(&mut self, path: String, duration: Duration) {
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
    if service.register {
        problems.add(
            "service.register",
            "registration with Consul is not implemented yet; remove the key or set it to false",
        );
    }
    if let Some(check) = &service.check {
        if check.http.is_some() == check.tcp.is_some() {
            problems.add("service.check", "needs exactly one of `http` or `tcp`");
        }
        problems.nonzero("service.check.interval".to_owned(), check.interval);
        problems.nonzero("service.check.timeout".to_owned(), check.timeout);
    }
    if let Some(timeout) = config.inbound.as_ref().and_then(|inbound| inbound.timeout) {
        problems.nonzero("inbound.timeout".to_owned(), timeout);
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
        listeners.push((format!("upstreams[{i}].listen"), upstream.listen));
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
            Discovery::Static(_) => {}
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
fn is_label_safe(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|first| first.is_ascii_lowercase() || first.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
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
