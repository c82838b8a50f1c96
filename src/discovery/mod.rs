//! Where upstream endpoints come from. `static` lists are applied once when
//! the upstream is built (see `app.rs`); `consul` and `dns` run watches that
//! update upstreams' endpoint sets, failing static. Consul instances keep
//! their tags and meta ([`Instance`]) so that routing subsets can select them.

pub mod consul;
pub mod dns;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::config::SubsetConfig;

/// A discovered endpoint and what its registry says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub addr: SocketAddr,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
}

impl Instance {
    /// True when the instance has every tag of `subset` and every meta value.
    pub fn is_in(&self, subset: &SubsetConfig) -> bool {
        subset.tags.iter().all(|tag| self.tags.contains(tag))
            && (subset.meta.iter()).all(|(key, value)| self.meta.get(key) == Some(value))
    }
}
