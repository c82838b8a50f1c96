//! Checks on `consul:`: a `wait` above zero and at most 10m, a non-zero
//! `sync_interval`, an `http://` or `https://` address, TLS files only with
//! `https://`, and a client certificate together with its key.

use std::time::Duration;

use super::Problems;
use crate::config::model::Config;

/// Longest blocking-query wait Consul honours.
const MAX_CONSUL_WAIT: Duration = Duration::from_secs(600);

pub(super) fn check_consul(config: &Config, problems: &mut Problems) {
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
