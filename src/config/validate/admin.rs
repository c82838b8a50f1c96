//! Checks on `admin:`: non-zero `max_connections` and
//! `header_read_timeout`, `allowed_hosts` entries that are host names, and
//! `tap`: a non-zero event rate, valid header names to redact.

use super::Problems;
use crate::config::model::Config;

pub(super) fn check_admin(config: &Config, problems: &mut Problems) {
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
    if admin.tap.max_events_per_second == 0 {
        problems.add(
            "admin.tap.max_events_per_second",
            "must be greater than zero (turn the tap off with max_subscribers: 0)",
        );
    }
    for (i, name) in admin.tap.redact_headers.iter().enumerate() {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            problems.add(
                format!("admin.tap.redact_headers[{i}]"),
                format!("`{name}` is not a header name"),
            );
        }
    }
}
