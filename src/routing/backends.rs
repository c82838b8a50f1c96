//! The concrete endpoint sets of one upstream's routes, by backend name:
//! `default` is the upstream itself; a `subset` is a new upstream fed with
//! the parent's matching Consul instances (live, see `upstream.rs`); a
//! `static` backend is a new upstream with a fixed list; an `upstream`
//! backend is that other upstream, shared (its breaker and outlier state
//! included). New upstreams are named `<upstream>/<backend>` — the
//! `upstream` label of their endpoint, breaker and outlier metrics — and
//! inherit the parent's client, balancing, breaker and outlier settings,
//! with state of their own.
//!
//! On a configuration reload, a subset or static backend whose definition
//! and parent upstream did not change is taken over from the previous
//! backends, with its endpoints, connection pools, breaker and outlier
//! state; the others are built anew.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{BackendConfig, DEFAULT_BACKEND, UpstreamConfig};
use crate::endpoint::WeightedAddr;
use crate::upstream::Upstream;

/// Backend name → its upstream.
pub struct Backends {
    /// The upstream itself, backend `default`.
    upstream: Arc<Upstream>,
    /// Each named backend with the definition it was built from.
    named: BTreeMap<String, (BackendConfig, Arc<Upstream>)>,
}

impl Backends {
    /// Builds the backends of `config` for `upstream`; `others` finds
    /// another upstream by name (references were checked with the config).
    /// Subset and static backends of `previous` that are still defined alike
    /// for the same upstream are taken over.
    pub fn build(
        upstream: &Arc<Upstream>,
        config: &UpstreamConfig,
        others: &dyn Fn(&str) -> Option<Arc<Upstream>>,
        previous: Option<&Backends>,
    ) -> Self {
        let previous = previous.filter(|previous| Arc::ptr_eq(&previous.upstream, upstream));
        let mut named = BTreeMap::new();
        for (name, backend) in &config.backends {
            let kept = previous
                .and_then(|previous| previous.named.get(name))
                .filter(|(built_from, _)| {
                    built_from == backend && !matches!(backend, BackendConfig::Upstream(_))
                })
                .map(|(_, kept)| Arc::clone(kept));
            if let Some(kept) = kept {
                named.insert(name.clone(), (backend.clone(), kept));
                continue;
            }
            let own = || {
                let mut settings = upstream.settings.clone();
                settings.name = format!("{}/{name}", upstream.name());
                settings
            };
            let built = match backend {
                BackendConfig::Subset(selector) => {
                    let subset = Arc::new(Upstream::new(own(), &[]));
                    upstream.add_subset(selector, &subset);
                    Some(subset)
                }
                BackendConfig::Static(endpoints) => Some(Arc::new(Upstream::new(
                    own(),
                    &WeightedAddr::weight_one(endpoints),
                ))),
                BackendConfig::Upstream(other) => others(other),
            };
            if let Some(built) = built {
                named.insert(name.clone(), (backend.clone(), built));
            }
        }
        Self {
            upstream: Arc::clone(upstream),
            named,
        }
    }

    /// The upstream itself (backend `default`).
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Upstream>> {
        if name == DEFAULT_BACKEND {
            return Some(&self.upstream);
        }
        self.named.get(name).map(|(_, upstream)| upstream)
    }

    /// Every backend with its name, `default` first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<Upstream>)> {
        let named = (self.named.iter()).map(|(name, (_, upstream))| (name.as_str(), upstream));
        [(DEFAULT_BACKEND, &self.upstream)].into_iter().chain(named)
    }

    /// The upstreams built for these backends (subsets and static lists),
    /// not the upstream itself nor other upstreams it names.
    pub fn own(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        (self.named.values())
            .filter(|(config, _)| !matches!(config, BackendConfig::Upstream(_)))
            .map(|(_, upstream)| upstream)
    }

    /// True when `other` has the same backends, each the same upstream.
    pub fn same_as(&self, other: &Backends) -> bool {
        Arc::ptr_eq(&self.upstream, &other.upstream)
            && self.named.len() == other.named.len()
            && (self.named.iter().zip(&other.named))
                .all(|((a, (_, x)), (b, (_, y)))| a == b && Arc::ptr_eq(x, y))
    }
}
