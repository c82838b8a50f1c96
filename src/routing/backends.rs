//! The concrete endpoint sets of one upstream's routes, by backend name:
//! `default` is the upstream itself; a `subset` is a new upstream fed with
//! the parent's matching Consul instances (live, see `upstream.rs`); a
//! `static` backend is a new upstream with a fixed list; an `upstream`
//! backend is that other upstream, shared (its breaker and outlier state
//! included). New upstreams are named `<upstream>/<backend>` — the
//! `upstream` label of their endpoint, breaker and outlier metrics — and
//! inherit the parent's client, balancing, breaker and outlier settings,
//! with state of their own.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{BackendConfig, DEFAULT_BACKEND, UpstreamConfig};
use crate::endpoint::WeightedAddr;
use crate::upstream::Upstream;

/// Backend name → its upstream.
pub struct Backends {
    /// The upstream itself, backend `default`.
    upstream: Arc<Upstream>,
    named: BTreeMap<String, Arc<Upstream>>,
}

impl Backends {
    /// Builds the backends of `config` for `upstream`; `others` finds
    /// another upstream by name (references were checked with the config).
    pub fn build(
        upstream: &Arc<Upstream>,
        config: &UpstreamConfig,
        others: &dyn Fn(&str) -> Option<Arc<Upstream>>,
    ) -> Self {
        let mut named = BTreeMap::new();
        for (name, backend) in &config.backends {
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
                named.insert(name.clone(), built);
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
        self.named.get(name)
    }

    /// Every backend with its name, `default` first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<Upstream>)> {
        let named = (self.named.iter()).map(|(name, upstream)| (name.as_str(), upstream));
        [(DEFAULT_BACKEND, &self.upstream)].into_iter().chain(named)
    }
}
