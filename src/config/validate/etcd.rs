//! Checks on `etcd:`: at least one endpoint, each `http://` or `https://`;
//! TLS files only with `https://` endpoints, which need `ca_file` (no system
//! trust store is used), a client certificate together with its key; `username` together with `password_file`; a `prefix` that
//! starts and ends with `/`; a `lease_ttl` of at least 2s (etcd's least).
//! Also that whatever uses etcd (`discovery.etcd`, `config_source.etcd`)
//! has the section to reach it.

use std::time::Duration;

use super::Problems;
use crate::config::config_source::ConfigSource;
use crate::config::discovery::Discovery;
use crate::config::model::Config;

/// Shortest lease etcd grants (it raises shorter TTLs to about this).
const MIN_LEASE_TTL: Duration = Duration::from_secs(2);

pub(super) fn check_etcd(config: &Config, problems: &mut Problems) {
    let Some(etcd) = &config.etcd else {
        for (i, upstream) in config.upstreams.iter().enumerate() {
            if matches!(upstream.discovery, Discovery::Etcd(_)) {
                problems.add(
                    format!("upstreams[{i}].discovery.etcd"),
                    "needs the top-level `etcd` section (its endpoints)",
                );
            }
        }
        if matches!(config.config_source, Some(ConfigSource::Etcd(_))) {
            problems.add(
                "config_source.etcd",
                "needs the top-level `etcd` section (its endpoints)",
            );
        }
        return;
    };
    if etcd.endpoints.is_empty() {
        problems.add("etcd.endpoints", "needs at least one endpoint");
    }
    let mut https = false;
    for (i, endpoint) in etcd.endpoints.iter().enumerate() {
        if endpoint.starts_with("https://") {
            https = true;
        } else if !endpoint.starts_with("http://") {
            problems.add(
                format!("etcd.endpoints[{i}]"),
                format!("`{endpoint}`: must start with `http://` or `https://`"),
            );
        }
    }
    let tls_files = [
        ("etcd.ca_file", etcd.ca_file.is_some()),
        ("etcd.client_cert", etcd.client_cert.is_some()),
        ("etcd.client_key", etcd.client_key.is_some()),
    ];
    for (path, set) in tls_files {
        if set && !https {
            problems.add(path, "only used with `https://` endpoints");
        }
    }
    if https && etcd.ca_file.is_none() {
        problems.add(
            "etcd.ca_file",
            "`https://` endpoints need the CA that signs their certificates (no system trust store is used)",
        );
    }
    if etcd.client_cert.is_some() != etcd.client_key.is_some() {
        problems.add(
            "etcd.client_cert",
            "client_cert and client_key go together (set both or neither)",
        );
    }
    if etcd.username.is_some() != etcd.password_file.is_some() {
        problems.add(
            "etcd.username",
            "username and password_file go together (set both or neither)",
        );
    }
    if !etcd.prefix.starts_with('/') || !etcd.prefix.ends_with('/') {
        problems.add(
            "etcd.prefix",
            format!(
                "`{}`: a prefix starts and ends with `/` (e.g. `/services/`)",
                etcd.prefix
            ),
        );
    }
    if etcd.lease_ttl < MIN_LEASE_TTL {
        problems.add("etcd.lease_ttl", "must be at least 2s");
    }
}
