//! Checks on an upstream's `discovery:`: a non-empty static list with
//! weights of at least 1, a Consul service name and tags that are not
//! empty, a DNS name (SRV, or a hostname and a port with `type: a`) and
//! refresh bounds in order, an etcd service name that is one key segment
//! (the `etcd` section itself is checked in `etcd`); and the refresh bounds
//! of the top-level `dns:` section.

use std::time::Duration;

use super::Problems;
use crate::config::discovery::{Discovery, DnsRecordType};
use crate::config::{Config, is_hostname};

/// Checks the top-level `dns:` section.
pub(super) fn check_dns_section(config: &Config, problems: &mut Problems) {
    let dns = &config.dns;
    check_refresh("dns", dns.min_refresh, dns.max_refresh, problems);
}

/// `min_refresh` above zero, `max_refresh` not below it.
fn check_refresh(at: &str, min: Duration, max: Duration, problems: &mut Problems) {
    if min.is_zero() {
        problems.add(format!("{at}.min_refresh"), "must be more than 0s");
    }
    if max < min {
        problems.add(format!("{at}.max_refresh"), "must be at least min_refresh");
    }
}

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
            match (dns.record_type, dns.port) {
                (DnsRecordType::Srv, port) => {
                    if dns.name.trim().is_empty() {
                        problems.add(at("discovery.dns.name"), "needs an SRV name");
                    }
                    if port.is_some() {
                        problems.add(
                            at("discovery.dns.port"),
                            "only with `type: a` (SRV records carry the ports)",
                        );
                    }
                }
                (DnsRecordType::A, port) => {
                    if !is_hostname(&dns.name) {
                        problems.add(
                            at("discovery.dns.name"),
                            format!("`{}` is not a hostname (`type: a`)", dns.name),
                        );
                    }
                    match port {
                        None => problems.add(
                            at("discovery.dns.port"),
                            "required with `type: a` (A and AAAA records carry no port)",
                        ),
                        Some(0) => problems.add(at("discovery.dns.port"), "must be 1 to 65535"),
                        Some(_) => {}
                    }
                }
            }
            check_refresh(
                &at("discovery.dns"),
                dns.min_refresh,
                dns.max_refresh,
                problems,
            );
        }
        Discovery::Consul(consul) => {
            if consul.service.trim().is_empty() {
                problems.add(at("discovery.consul.service"), "must not be empty");
            }
            if consul.tags.iter().any(|tag| tag.trim().is_empty()) {
                problems.add(at("discovery.consul.tags"), "tags must not be empty");
            }
            if let Some(failover) = &consul.failover {
                let datacenters = &failover.datacenters;
                if datacenters.is_empty() || datacenters.iter().any(|dc| dc.trim().is_empty()) {
                    problems.add(
                        at("discovery.consul.failover.datacenters"),
                        "must list at least one datacenter, none empty",
                    );
                }
                let repeated = (datacenters.iter().enumerate()).any(|(i, dc)| {
                    datacenters[..i].contains(dc) || consul.datacenter.as_ref() == Some(dc)
                });
                if repeated {
                    problems.add(
                        at("discovery.consul.failover.datacenters"),
                        "names a datacenter twice (or the discovery's own)",
                    );
                }
                if failover.min_healthy == 0 {
                    problems.add(
                        at("discovery.consul.failover.min_healthy"),
                        "must be at least 1",
                    );
                }
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
