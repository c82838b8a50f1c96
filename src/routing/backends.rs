//! The concrete endpoint sets of one upstream's routes, by backend name:
//! `default` is the upstream itself; a `subset` is a new upstream fed with
//! the parent's matching Consul instances (live, see `upstream.rs`); a
//! `static` backend is a new upstream with a fixed list (its hostnames
//! resolved and re-resolved as `discovery.static`'s are, by a task that
//! lives as long as the backend); an `upstream`
//! backend is that other upstream, shared (its breaker and outlier state
//! included). New upstreams are named `<upstream>/<backend>` — the
//! `upstream` label of their endpoint, breaker and outlier metrics — and
//! inherit the parent's client, balancing, breaker and outlier settings,
//! with state of their own.
//!
//! On a configuration reload, a subset or static backend whose definition
//! and parent upstream did not change (nor, when it names hosts, the `dns`
//! section) is taken over from the previous backends, with its endpoints,
//! connection pools, breaker and outlier state and its name resolution;
//! the others are built anew.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{BackendConfig, DEFAULT_BACKEND, StaticEndpoint, UpstreamConfig};
use crate::discovery::static_names::{NameResolver, StaticNames, listed_ips, names_hosts};
use crate::drain::DrainController;
use crate::upstream::Upstream;

/// Backend name → its upstream.
pub struct Backends {
    /// The upstream itself, backend `default`.
    upstream: Arc<Upstream>,
    /// Each named backend.
    named: BTreeMap<String, Named>,
}

/// A named backend, the definition it was built from, and what resolves
/// its hostnames.
struct Named {
    built_from: BackendConfig,
    upstream: Arc<Upstream>,
    /// Stops the resolution of a static list's hostnames when the last
    /// holder (these backends, or their successors) drops it.
    resolving: Option<Resolving>,
}

#[derive(Clone)]
struct Resolving {
    /// The `dns` section it resolves with.
    with: NameResolver,
    _stop: Arc<DrainController>,
}

impl Backends {
    /// Builds the backends of `config` for `upstream`; `others` finds
    /// another upstream by name (references were checked with the config);
    /// `names` resolves the hostnames of static lists (there is one when
    /// a list names a host). Subset and static backends of `previous` that
    /// are still defined alike for the same upstream are taken over.
    pub fn build(
        upstream: &Arc<Upstream>,
        config: &UpstreamConfig,
        others: &dyn Fn(&str) -> Option<Arc<Upstream>>,
        previous: Option<&Backends>,
        names: Option<&NameResolver>,
    ) -> Self {
        let previous = previous.filter(|previous| Arc::ptr_eq(&previous.upstream, upstream));
        let mut named = BTreeMap::new();
        for (name, backend) in &config.backends {
            let kept = previous
                .and_then(|previous| previous.named.get(name))
                .filter(|kept| {
                    kept.built_from == *backend
                        && !matches!(backend, BackendConfig::Upstream(_))
                        && (kept.resolving.as_ref())
                            .is_none_or(|resolving| Some(&resolving.with) == names)
                });
            if let Some(kept) = kept {
                let kept = Named {
                    built_from: backend.clone(),
                    upstream: Arc::clone(&kept.upstream),
                    resolving: kept.resolving.clone(),
                };
                named.insert(name.clone(), kept);
                continue;
            }
            let own = || {
                let mut settings = upstream.settings.clone();
                settings.name = format!("{}/{name}", upstream.name());
                if let Some(check) = &mut settings.health_check {
                    check.default_host_to(upstream.name());
                }
                settings
            };
            let mut resolving = None;
            let built = match backend {
                BackendConfig::Subset(selector) => {
                    let subset = Arc::new(Upstream::new(own(), &[]));
                    upstream.add_subset(selector, &subset);
                    Some(subset)
                }
                BackendConfig::Static(addresses) => {
                    let (built, resolved) = static_backend(own(), addresses, names);
                    resolving = resolved;
                    Some(built)
                }
                BackendConfig::Upstream(other) => others(other),
            };
            if let Some(built) = built {
                let built = Named {
                    built_from: backend.clone(),
                    upstream: built,
                    resolving,
                };
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
        self.named.get(name).map(|named| &named.upstream)
    }

    /// Every backend with its name, `default` first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<Upstream>)> {
        let named = (self.named.iter()).map(|(name, named)| (name.as_str(), &named.upstream));
        [(DEFAULT_BACKEND, &self.upstream)].into_iter().chain(named)
    }

    /// The upstreams built for these backends (subsets and static lists),
    /// not the upstream itself nor other upstreams it names.
    pub fn own(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        (self.named.values())
            .filter(|named| !matches!(named.built_from, BackendConfig::Upstream(_)))
            .map(|named| &named.upstream)
    }

    /// True when `other` has the same backends, each the same upstream.
    pub fn same_as(&self, other: &Backends) -> bool {
        Arc::ptr_eq(&self.upstream, &other.upstream)
            && self.named.len() == other.named.len()
            && (self.named.iter().zip(&other.named))
                .all(|((a, x), (b, y))| a == b && Arc::ptr_eq(&x.upstream, &y.upstream))
    }
}

/// The upstream of a static backend, serving its IP entries, and the
/// resolution of its hostnames when it names some (started here; it stops
/// when the returned [`Resolving`] is dropped everywhere).
fn static_backend(
    settings: crate::upstream::UpstreamSettings,
    addresses: &[crate::config::EndpointAddress],
    names: Option<&NameResolver>,
) -> (Arc<Upstream>, Option<Resolving>) {
    let entries: Vec<StaticEndpoint> = (addresses.iter())
        .map(|address| StaticEndpoint {
            address: address.clone(),
            weight: 1,
            zone: None,
        })
        .collect();
    let upstream = Arc::new(Upstream::new(settings, &[]));
    upstream.set_instances(&listed_ips(&entries));
    let resolving = names.filter(|_| names_hosts(&entries)).and_then(|names| {
        let task = StaticNames::new(upstream.clone(), &entries, names)?;
        let stop = DrainController::new();
        task.spawn(stop.watch());
        Some(Resolving {
            with: names.clone(),
            _stop: Arc::new(stop),
        })
    });
    (upstream, resolving)
}

#[cfg(test)]
mod tests {
    use std::sync::Weak;
    use std::time::Duration;

    use super::*;
    use crate::client::ClientSettings;
    use crate::config::{DnsConfig, UpstreamProtocol};
    use crate::context::Direction;
    use crate::upstream::UpstreamSettings;

    fn settings() -> UpstreamSettings {
        UpstreamSettings {
            name: "api".into(),
            direction: Direction::Outbound,
            protocol: UpstreamProtocol::Http,
            policy: Default::default(),
            hash_on: None,
            client: ClientSettings {
                connect_timeout: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(60),
                tls: None,
                pool: Default::default(),
            },
            circuit_breaker: None,
            outlier_detection: None,
            health_check: None,
            panic_threshold: 50,
            local_zone: None,
            rate_limit: None,
        }
    }

    fn config(backend: &str) -> UpstreamConfig {
        let yaml = format!(
            "service: {{ name: web }}\nupstreams:\n  - name: api\n    listen: 127.0.0.1:0\n    \
             discovery: {{ static: [127.0.0.1:9000] }}\n    \
             backends: {{ external: {{ static: [\"{backend}\", 127.0.0.1:9001] }} }}\n"
        );
        let config = crate::config::parse(&yaml, "test.yaml").expect("valid");
        config.upstreams[0].clone()
    }

    /// A resolver nobody answers (the discard port): lookups just wait.
    fn names() -> NameResolver {
        let dns = DnsConfig {
            resolver: Some("127.0.0.1:9".parse().unwrap()),
            ..DnsConfig::default()
        };
        NameResolver::new(&dns).expect("resolver")
    }

    fn external(backends: &Backends) -> Weak<Upstream> {
        Arc::downgrade(backends.get("external").expect("built"))
    }

    /// The resolution task holds the backend's upstream: gone once the
    /// task stopped.
    async fn released(upstream: Weak<Upstream>) -> bool {
        for _ in 0..100 {
            if upstream.upgrade().is_none() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_static_backend_resolves_its_hostnames_as_long_as_it_lives() {
        let upstream = Arc::new(Upstream::new(settings(), &[]));
        let names = names();
        let build = |backend: &str, previous: Option<&Backends>| {
            Backends::build(
                &upstream,
                &config(backend),
                &|_| None,
                previous,
                Some(&names),
            )
        };
        let first = build("api.example.com:80", None);
        // The IP entry serves while the name resolves.
        assert_eq!(first.get("external").unwrap().endpoint_count(), 1);

        // Defined alike: taken over, resolution and all.
        let second = build("api.example.com:80", Some(&first));
        assert!(Arc::ptr_eq(
            first.get("external").unwrap(),
            second.get("external").unwrap()
        ));
        let kept = external(&second);
        drop(first);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(kept.upgrade().is_some(), "still resolving for `second`");

        // Redefined: built anew; the old one's resolution stops with it.
        let third = build("other.example.com:80", Some(&second));
        assert!(kept.upgrade().is_some());
        drop(second);
        assert!(released(kept).await, "the replaced backend's task stopped");
        let last = external(&third);
        drop(third);
        assert!(released(last).await);
    }
}
