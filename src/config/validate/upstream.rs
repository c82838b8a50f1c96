//! Checks on each `upstreams[]` entry: a label-safe, unique name, load
//! balancing (`ring_hash` with `hash_on` and the reverse, not on tcp),
//! non-zero timeouts, listener `limits` and `connection_pool`; its
//! `discovery:`, resilience and health sections have their own modules.

use std::time::Duration;

use super::Problems;
use super::check_limits;
use super::discovery::check_discovery;
use super::health_check::check_health;
use super::resilience::check_resilience;
use crate::config::model::Config;
use crate::config::pool::ConnectionPool;
use crate::config::upstream::{LoadBalancingPolicy, UpstreamProtocol};

pub(super) fn check_upstreams(config: &Config, problems: &mut Problems) {
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

        check_discovery(&upstream.discovery, &at, problems);

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
        check_health(config, upstream, &at, problems);
    }
}

/// Checks a `connection_pool:` section at key path `at`.
pub(super) fn check_connection_pool(at: &str, pool: &ConnectionPool, problems: &mut Problems) {
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

/// `[a-z0-9][a-z0-9_-]*`
pub(super) fn is_label_safe(name: &str) -> bool {
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
