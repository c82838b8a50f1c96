//! Checks on an upstream's `health_check:` (exactly one probe, non-zero
//! interval and timeout, thresholds of at least 1, an absolute HTTP path and
//! valid Host / authority) and on its `load_balancing`: `panic_threshold` a
//! percentage, `locality: prefer_local` only with `service.locality`.

use super::Problems;
use crate::config::health_check::{HealthCheck, Probe};
use crate::config::model::Config;
use crate::config::upstream::{LocalityPolicy, UpstreamConfig};

pub(super) fn check_health(
    config: &Config,
    upstream: &UpstreamConfig,
    at: &dyn Fn(&str) -> String,
    problems: &mut Problems,
) {
    if upstream.load_balancing.locality == LocalityPolicy::PreferLocal
        && config.service.locality.is_none()
    {
        problems.add(
            at("load_balancing.locality"),
            "prefer_local needs this sidecar's zone: set `service.locality: { zone: ... }`",
        );
    }
    if upstream.load_balancing.panic_threshold > 100 {
        problems.add(
            at("load_balancing.panic_threshold"),
            "must be a percentage between 0 and 100",
        );
    }
    if let Some(check) = &upstream.health_check {
        check_health_check(&at("health_check"), check, problems);
    }
}

fn check_health_check(at: &str, check: &HealthCheck, problems: &mut Problems) {
    let key = |name: &str| format!("{at}.{name}");
    problems.nonzero(key("interval"), check.interval);
    problems.nonzero(key("timeout"), check.timeout);
    for (name, threshold) in [
        ("unhealthy_threshold", check.unhealthy_threshold),
        ("healthy_threshold", check.healthy_threshold),
    ] {
        if threshold == 0 {
            problems.add(key(name), "must be at least 1");
        }
    }
    match check.probe() {
        None => problems.add(
            at.to_owned(),
            "needs exactly one probe: `http: {...}`, `grpc: {...}` or `tcp: {}`",
        ),
        Some(Probe::Http(http)) => {
            if !http.path.starts_with('/') {
                problems.add(key("http.path"), "must start with `/`");
            }
            if http.expected_statuses.is_empty() {
                problems.add(
                    key("http.expected_statuses"),
                    "must list at least one status",
                );
            }
            if let Some(host) = &http.host
                && http::HeaderValue::from_str(host).is_err()
            {
                problems.add(key("http.host"), "is not a valid Host header value");
            }
        }
        Some(Probe::Grpc(grpc)) => {
            if let Some(authority) = &grpc.authority
                && authority.parse::<http::uri::Authority>().is_err()
            {
                problems.add(key("grpc.authority"), "is not a valid authority");
            }
        }
        Some(Probe::Tcp) => {}
    }
}
