//! Checks on an upstream's `discovery:`: a non-empty static list with
//! weights of at least 1, a Consul service name and tags that are not
//! empty, a DNS SRV name and refresh bounds in order, an etcd service name
//! that is one key segment (the `etcd` section itself is checked in `etcd`).

use super::Problems;
use crate::config::discovery::Discovery;

/// Checks the `discovery:` of the upstream whose key paths `at` makes.
pub(super) fn check_discovery(
    discovery: &Discovery,
    at: &dyn Fn(&str) -> String,
    problems: &mut Problems,
) {
    match discovery {
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
        Discovery::Etcd(etcd) => {
            if etcd.service.trim().is_empty() {
                problems.add(at("discovery.etcd.service"), "must not be empty");
            } else if etcd.service.contains('/') {
                problems.add(
                    at("discovery.etcd.service"),
                    "a service name is one key segment, without `/` (the key is <etcd.prefix><service>/<id>)",
                );
            }
        }
    }
}
