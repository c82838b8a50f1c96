//! Semantic checks on a deserialized `Config`: rules that span fields or
//! that serde types cannot express, one module per section of the model
//! (`service`, `inbound`, `authorization`, `upstream`, `discovery` (and `dns`), `resilience`, `routing`,
//! `fallback`, `health_check`, `consul`, `etcd`, `runtime`, `telemetry`, `admin`, `config_source`, `tls`,
//! `transparent`). Here: the problem list, the order of the checks, and
//! what spans sections — listen addresses that clash (port 0 excepted) and
//! listener `limits` of zero (or header bytes outside 8 KiB..16 MiB). Every
//! problem is returned, with the key path it concerns.

mod admin;
mod authorization;
mod config_source;
mod consul;
mod discovery;
mod etcd;
mod fallback;
mod health_check;
mod inbound;
mod jwt;
mod request_token;
mod resilience;
mod routing;
mod runtime;
mod service;
mod telemetry;
mod tls;
mod transparent;
mod upstream;

use std::net::SocketAddr;
use std::time::Duration;

use super::limits::{ListenerLimits, MAX_HEADER_BYTES, MIN_HEADER_BYTES};
use super::model::Config;

/// A semantic problem at a key path.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Problem {
    pub(crate) path: String,
    pub(crate) message: String,
}

/// Every semantic problem of `config`, in document order of sections.
pub(crate) fn check(config: &Config) -> Vec<Problem> {
    let mut problems = Problems::default();
    service::check_service(config, &mut problems);
    inbound::check_inbound(config, &mut problems);
    authorization::check_authorization(config, &mut problems);
    check_listeners(config, &mut problems);
    upstream::check_upstreams(config, &mut problems);
    routing::check(config, &mut problems);
    fallback::check_fallbacks(config, &mut problems);
    discovery::check_dns_section(config, &mut problems);
    consul::check_consul(config, &mut problems);
    etcd::check_etcd(config, &mut problems);
    runtime::check_runtime(config, &mut problems);
    telemetry::check_logging(config, &mut problems);
    admin::check_admin(config, &mut problems);
    telemetry::check_tracing(config, &mut problems);
    config_source::check_config_source(config, &mut problems);
    tls::check_tls(config, &mut problems);
    transparent::check_transparent(config, &mut problems);
    problems.0
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
