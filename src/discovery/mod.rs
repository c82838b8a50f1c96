//! Where upstream endpoints come from. `static` lists are applied once when
//! the upstream is built (see `live`), their hostnames resolved and
//! re-resolved by `static_names`; `consul`, `etcd` and `dns` run
//! watches that update upstreams' endpoint sets, failing static (the
//! registries' shared bookkeeping is `fail_static`); `failover` chooses among
//! the Consul watches of several datacenters. Consul and etcd
//! instances keep their tags and meta ([`Instance`]) so that routing subsets
//! can select them.
//! The watches feed an [`EndpointSink`], which `upstream::Upstream`
//! implements: discovery sits below the upstreams it feeds.

pub mod consul;
pub mod dns;
pub mod etcd;
mod fail_static;
pub mod failover;
pub mod instances;
pub mod static_names;

pub use fail_static::FailStatic;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::config::SubsetConfig;
use crate::endpoint::WeightedAddr;

/// The meta key that holds an instance's zone (a static endpoint's `zone`;
/// Consul's service meta, else its node's meta).
pub const ZONE_META: &str = "zone";

/// A discovered endpoint and what its registry says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub addr: SocketAddr,
    /// Balancing weight (≥ 1): Consul's `Service.Weights` for its health,
    /// etcd's `weight`.
    pub weight: u32,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
}

impl Instance {
    /// An endpoint of a static list: no tags, its zone as meta.
    pub fn listed(addr: SocketAddr, weight: u32, zone: Option<&str>) -> Instance {
        Instance {
            addr,
            weight,
            tags: Vec::new(),
            meta: (zone.iter())
                .map(|zone| (ZONE_META.to_owned(), (*zone).to_owned()))
                .collect(),
        }
    }

    /// The zone the instance runs in, when known.
    pub fn zone(&self) -> Option<&str> {
        self.meta.get(ZONE_META).map(String::as_str)
    }

    /// True when the instance has every tag of `subset` and every meta value.
    pub fn is_in(&self, subset: &SubsetConfig) -> bool {
        subset.tags.iter().all(|tag| self.tags.contains(tag))
            && (subset.meta.iter()).all(|(key, value)| self.meta.get(key) == Some(value))
    }

    /// `instances` as a set: sorted by address, one instance per address
    /// (the first), without those of weight 0 (they get no traffic).
    pub fn sorted(mut instances: Vec<Instance>) -> Vec<Instance> {
        instances.retain(|instance| instance.weight > 0);
        instances.sort_by_key(|instance| instance.addr);
        instances.dedup_by_key(|instance| instance.addr);
        instances
    }
}

/// What a discovery watch feeds: an upstream's endpoint set.
pub trait EndpointSink: Send + Sync {
    /// The upstream's name, for logs and metrics.
    fn name(&self) -> &str;

    /// Replaces the endpoint set with these addresses (DNS discovery).
    fn set_weighted_endpoints(&self, endpoints: &[WeightedAddr]);

    /// Replaces the endpoint set with these instances, whose tags and meta
    /// feed routing subsets (Consul and etcd discovery).
    fn set_instances(&self, instances: &[Instance]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_membership_needs_every_tag_and_meta_value() {
        let instance = Instance {
            addr: "127.0.0.1:1".parse().unwrap(),
            weight: 1,
            tags: vec!["v2".into(), "eu".into()],
            meta: [("version".to_owned(), "2".to_owned())].into(),
        };
        let subset = |tags: &[&str], meta: &[(&str, &str)]| SubsetConfig {
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            meta: (meta.iter())
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        assert!(instance.is_in(&subset(&["v2"], &[])));
        assert!(instance.is_in(&subset(&["eu", "v2"], &[("version", "2")])));
        assert!(!instance.is_in(&subset(&["v2", "us"], &[])));
        assert!(!instance.is_in(&subset(&[], &[("version", "1")])));
        assert!(!instance.is_in(&subset(&[], &[("zone", "a")])));
    }
}
