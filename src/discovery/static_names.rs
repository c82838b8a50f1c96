//! The hostnames of a static endpoint list (`api.example.com:443`, in
//! `discovery.static` or a routing backend's `static`): each
//! name is resolved to its A and AAAA records by a DNS loop of its own (see
//! `dns`: re-resolved when the TTL expires, clamped to the `dns:` section's
//! `[min_refresh, max_refresh]`; fail static; failures counted in
//! `remora_discovery_errors_total{upstream}`, logged when a name starts
//! failing and when it recovers), through the `dns.resolver` server or the
//! system's.
//!
//! The upstream gets the list's IP entries and every name's current
//! addresses, each with its entry's weight and zone, in list order (a
//! name's addresses IPv6 and IPv4 alternating, see `dns::address`); an
//! address listed twice counts once, with its first entry's weight and zone.
//!
//! The IP entries are set when the upstream is built (`live`); the combined
//! set is handed over once every name has answered or failed once. So a
//! name that does not resolve at start-up leaves the upstream with its IP
//! entries only (none: 503 `no_endpoints`) until it resolves, and a reload
//! that changes the list keeps the running endpoints until the new names
//! were asked.

use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::join_all;
use hickory_resolver::TokioResolver;
use hickory_resolver::proto::rr::Name;

use crate::config::{DnsConfig, EndpointAddress, StaticEndpoint};
use crate::discovery::dns::{
    DnsError, Refresh, Round, Watch, dns_name, lookup_addresses, resolver, run,
};
use crate::discovery::{EndpointSink, Instance};
use crate::drain::Drain;
use crate::endpoint::WeightedAddr;

/// How the hostnames of static lists are resolved (the `dns:` section):
/// one resolver for every list of a configuration. Two are equal when
/// their sections are.
#[derive(Clone)]
pub struct NameResolver {
    resolver: TokioResolver,
    refresh: Refresh,
    section: DnsConfig,
}

impl PartialEq for NameResolver {
    fn eq(&self, other: &Self) -> bool {
        self.section == other.section
    }
}

impl NameResolver {
    /// Fails only for what can never work (no system resolver configuration).
    pub fn new(dns: &DnsConfig) -> Result<Self, DnsError> {
        Ok(Self {
            resolver: resolver(dns.resolver)?,
            refresh: Refresh {
                min: dns.min_refresh,
                max: dns.max_refresh,
            },
            section: dns.clone(),
        })
    }
}

/// The resolution of a static list's hostnames, ready to run.
pub struct StaticNames {
    upstream: Arc<dyn EndpointSink>,
    entries: Vec<StaticEndpoint>,
    resolver: TokioResolver,
    /// (entry index, name, port, weight) of each hostname entry.
    names: Vec<(usize, Name, u16, u32)>,
    refresh: Refresh,
}

impl StaticNames {
    /// `None` when `entries` names no host (the list is fixed).
    pub fn new(
        upstream: Arc<dyn EndpointSink>,
        entries: &[StaticEndpoint],
        resolver: &NameResolver,
    ) -> Option<Self> {
        let mut kept = Vec::with_capacity(entries.len());
        let mut names = Vec::new();
        for entry in entries {
            if let EndpointAddress::Name { host, port } = &entry.address {
                match dns_name(host) {
                    Ok(name) => names.push((kept.len(), name, *port, entry.weight)),
                    // Config validation admits only names hickory reads.
                    Err(error) => {
                        tracing::error!(upstream = upstream.name(), %error, "hostname left out");
                        continue;
                    }
                }
            }
            kept.push(entry.clone());
        }
        (!names.is_empty()).then(|| Self {
            upstream,
            entries: kept,
            resolver: resolver.resolver.clone(),
            names,
            refresh: resolver.refresh,
        })
    }

    /// Resolves the names until the drain starts.
    pub fn spawn(self, drain: Drain) {
        let Self {
            upstream,
            entries,
            resolver,
            names,
            refresh,
        } = self;
        tracing::info!(
            upstream = upstream.name(),
            names = names.len(),
            "resolving the hostnames of a static list"
        );
        tokio::spawn(async move {
            let combined = Mutex::new(Combined::new(&entries));
            let upstream = &upstream;
            let watches = names.iter().map(|(i, name, port, weight)| {
                let (i, port, weight) = (*i, *port, *weight);
                let text = name.to_string();
                let mut drain = drain.clone();
                let (resolver, combined) = (&resolver, &combined);
                async move {
                    let watch = Watch {
                        upstream: upstream.name(),
                        name: &text,
                        refresh,
                    };
                    let lookup = || lookup_addresses(resolver, name, port, weight);
                    let apply = |round: Round<'_>| {
                        let mut combined = combined.lock().unwrap_or_else(PoisonError::into_inner);
                        if let Some(instances) = combined.report(i, round) {
                            upstream.set_instances(&instances);
                        }
                    };
                    run(&watch, lookup, apply, drain.signaled()).await;
                }
            });
            join_all(watches).await;
        });
    }
}

/// The IP entries of a static list as instances, each with its configured
/// weight and zone (the hostnames are [`StaticNames`]' to resolve).
pub fn listed_ips(entries: &[StaticEndpoint]) -> Vec<Instance> {
    (entries.iter())
        .filter_map(|entry| {
            let addr = entry.address.ip()?;
            Some(Instance::listed(addr, entry.weight, entry.zone.as_deref()))
        })
        .collect()
}

/// True when a static list names a host (it needs resolving).
pub fn names_hosts(entries: &[StaticEndpoint]) -> bool {
    entries.iter().any(|entry| entry.address.host().is_some())
}

/// The static list with each name's current addresses.
struct Combined {
    slots: Vec<Slot>,
    /// Names that have neither answered nor failed yet.
    unheard: usize,
}

enum Slot {
    Ip(Instance),
    Name {
        zone: Option<String>,
        addresses: Vec<WeightedAddr>,
        heard: bool,
    },
}

impl Combined {
    fn new(entries: &[StaticEndpoint]) -> Self {
        let slots: Vec<Slot> = (entries.iter())
            .map(|entry| match entry.address {
                EndpointAddress::Ip(addr) => {
                    Slot::Ip(Instance::listed(addr, entry.weight, entry.zone.as_deref()))
                }
                EndpointAddress::Name { .. } => Slot::Name {
                    zone: entry.zone.clone(),
                    addresses: Vec::new(),
                    heard: false,
                },
            })
            .collect();
        let unheard = (slots.iter())
            .filter(|slot| matches!(slot, Slot::Name { .. }))
            .count();
        Self { slots, unheard }
    }

    /// Takes the round of the name in slot `i`; returns the set to hand to
    /// the upstream when it is due (every name heard once, and something
    /// changed).
    fn report(&mut self, i: usize, round: Round<'_>) -> Option<Vec<Instance>> {
        let Some(Slot::Name {
            addresses, heard, ..
        }) = self.slots.get_mut(i)
        else {
            return None;
        };
        let first = !*heard;
        if first {
            *heard = true;
            self.unheard -= 1;
        }
        let changed = match round {
            Round::Changed(endpoints) => {
                *addresses = endpoints.to_vec();
                true
            }
            Round::Failed => first,
        };
        (changed && self.unheard == 0).then(|| self.instances())
    }

    /// The list as instances, in order, each address once.
    fn instances(&self) -> Vec<Instance> {
        let mut instances: Vec<Instance> = Vec::new();
        let all = self.slots.iter().flat_map(|slot| match slot {
            Slot::Ip(instance) => vec![instance.clone()],
            Slot::Name {
                zone, addresses, ..
            } => (addresses.iter())
                .map(|a| Instance::listed(a.addr, a.weight, zone.as_deref()))
                .collect(),
        });
        for instance in all {
            if !instances.iter().any(|known| known.addr == instance.addr) {
                instances.push(instance);
            }
        }
        instances
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(address: &str, weight: u32, zone: Option<&str>) -> StaticEndpoint {
        StaticEndpoint {
            address: address.parse().unwrap(),
            weight,
            zone: zone.map(str::to_owned),
        }
    }

    fn weighted(addrs: &[&str], weight: u32) -> Vec<WeightedAddr> {
        (addrs.iter())
            .map(|text| WeightedAddr {
                addr: text.parse().unwrap(),
                weight,
            })
            .collect()
    }

    fn addrs(instances: &[Instance]) -> Vec<String> {
        (instances.iter())
            .map(|instance| instance.addr.to_string())
            .collect()
    }

    #[test]
    fn the_set_is_handed_over_once_every_name_was_heard() {
        let mut combined = Combined::new(&[
            entry("api.test:80", 2, Some("a")),
            entry("10.0.0.9:80", 1, None),
            entry("db.test:80", 1, None),
        ]);
        let api = weighted(&["[::1]:80", "10.0.0.1:80"], 2);
        assert!(combined.report(0, Round::Changed(&api)).is_none());
        // The other name fails its first round: hand over what is known.
        let set = combined.report(2, Round::Failed).expect("every name heard");
        assert_eq!(addrs(&set), ["[::1]:80", "10.0.0.1:80", "10.0.0.9:80"]);
        assert_eq!(set[0].weight, 2);
        assert_eq!(set[0].zone(), Some("a"));
        assert_eq!(set[2].zone(), None);
        // Further failures change nothing.
        assert!(combined.report(2, Round::Failed).is_none());
        assert!(combined.report(0, Round::Failed).is_none());
        // A name that resolves later joins; an address listed twice counts once.
        let db = weighted(&["10.0.0.9:80", "10.0.0.5:80"], 1);
        let set = combined.report(2, Round::Changed(&db)).expect("changed");
        assert_eq!(
            addrs(&set),
            ["[::1]:80", "10.0.0.1:80", "10.0.0.9:80", "10.0.0.5:80"]
        );
    }
}
