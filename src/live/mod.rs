//! The part of a running proxy that a configuration can change: the
//! listeners (inbound, one per upstream with a `listen` address, the
//! transparent listener), their stacks and routing backends, the upstreams
//! and the discovery tasks that feed them. [`LiveProxy::apply`] builds them
//! from the first configuration and moves them to every later one.
//!
//! **All or nothing.** An apply first prepares everything that can fail —
//! binding new listeners, duplicating sockets, DNS resolvers, the Consul
//! client, TLS configurations — without touching what runs; only then does
//! it commit, and the
//! commit cannot fail. A configuration that cannot be applied (a port in
//! use, a DNS resolver or Consul client that cannot be built) is rejected
//! with that error and leaves the proxy exactly as it was. What each
//! configuration asks is in `spec`; each site (the inbound application, an
//! upstream) is planned and committed in `site`, the transparent listener
//! in `transparent`, the Consul and etcd watches in `registry`.
//!
//! **Changes are detected by comparing config values** (`PartialEq`), never
//! their serialized or `/config` forms, which redact secrets: a changed
//! Consul token or credential header is a change. A file whose path is
//! unchanged but whose contents changed is not (mesh TLS material has its
//! own watches, see `mesh`; the files of `upstreams[].tls.mode: simple`
//! are watched by their upstream's TLS origination, which compares equal
//! only while the files hold what it uses).
//!
//! **Listeners** are known by direction and name (`inbound`, the
//! upstream's name, or the transparent listener; see `listening`). One
//! whose configured address is unchanged keeps its socket, so no connection
//! is refused across a reload; an address that another listener had before
//! (a renamed upstream) takes that socket over. A listener that is gone, or
//! whose address changed, is drained as at shutdown (see `drain`): its
//! socket closes at once (new connections are refused) and its open
//! connections finish their in-flight requests (HTTP/1.1 closes after the
//! current response, HTTP/2 gets GOAWAY; TCP tunnels run until they end).
//! When a listener's protocol, idle timeout or `limits` change (for the
//! inbound TCP listener under mesh TLS: its authorization rules; for the
//! transparent listener: its section), a new accept loop takes over its
//! socket and the old loop's connections drain (they do not count against
//! the new loop's `max_connections`). An upstream without `listen` has no
//! listener but the same stack, reached through the transparent listener,
//! whose route table (hosts, addresses → upstream and its stack slot) is
//! replaced at every apply and read per request.
//!
//! **Stacks are picked per request** (see `swap`): a changed policy applies
//! to the next request, on connections opened before the reload too, while
//! requests in flight finish on the stack they started with. This is what
//! Envoy does for route and cluster changes; the alternative — a connection
//! keeps the stack it was accepted with until it closes — would leave an
//! application's pooled keep-alive connections on the old timeouts or
//! retries for as long as they live. A stack is rebuilt only when its
//! section, `tracing`, the access-log settings or (inbound) the
//! authorization rules changed (see `spec::StackSource`), or its upstream or
//! one of its routing backends was replaced. Rebuilding starts its
//! rate-limit buckets, retry budget and concurrency count afresh (requests
//! still on the old stack hold
//! their slots there, so for a moment the limit can be exceeded by them).
//! Routes, splits and weights live in the stack, so a changed split applies
//! from the next request and none is refused: the new stack's backends have
//! their endpoints before it is stored. A subset or static backend defined
//! as before keeps its upstream (endpoints, pools, breaker, outlier state);
//! a new subset starts from its parent's last discovered instances.
//!
//! **Upstream state is kept** where the configuration allows it. An
//! upstream whose settings (protocol, load balancing, connect and idle
//! timeouts, TLS origination, breaker, outlier detection, rate limit) and
//! discovery source
//! are unchanged is kept whole (a changed static list of IPs is set in place).
//! Otherwise a successor takes over its endpoints — with their
//! connection pools, load and outlier state while the connect and idle
//! timeouts are unchanged — and its breaker while the breaker's settings are
//! unchanged. A static endpoint list is applied in place. A Consul watch
//! (one per distinct query) or a DNS task (discovery `dns`, or the hostnames
//! of a static list) is restarted only when the upstreams it feeds, its own
//! settings, the `dns` section or the `consul` section changed (an
//! etcd watch, one per service, likewise with the `etcd` section); an
//! upstream whose discovery changed keeps its current endpoints until the
//! new source answers, like discovery's fail-static.
//!
//! **Mesh TLS** (`mesh`): the material and its watches are the process's;
//! each apply builds the inbound authorizer from the authorization rules
//! and each upstream's TLS origination, mesh or `simple` (an unchanged one
//! compares equal, so its upstream is kept).

mod fixed;
mod listening;
mod mesh;
mod registry;
mod site;
mod spec;
mod swap;
mod transparent;

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::Mutex;

use crate::config::{Config, ConsulConfig, Discovery, EtcdConfig};
use crate::context::Direction;
use crate::discovery::static_names::NameResolver;
use crate::drain::DrainController;
use crate::routing::backends::Backends;
use crate::telemetry::sinks::RequestSinks;
use crate::upstream::{BackendSet, Upstream, UpstreamSet};

pub use fixed::keep_fixed;
pub(crate) use listening::bind;
use listening::{Listening, remove_listener};
pub use mesh::MeshSecurity;
use registry::{ConsulWatches, EtcdWatches, PlannedClient, commit_consul, commit_etcd};
use site::{Planned, Site, commit_site};
use spec::specs;
use transparent::{
    PlannedTransparent, TRANSPARENT, TransparentSite, commit_transparent, plan_transparent,
};

/// What an apply changed besides the listeners it logs itself.
#[derive(Debug)]
pub struct Applied {
    /// The configuration now running (fixed settings at their running values).
    pub effective: Config,
    /// Key paths of fixed settings the new configuration tried to change.
    pub kept_fixed: Vec<&'static str>,
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerRole {
    Inbound,
    /// An upstream's explicit listener (`upstreams[].listen`).
    Upstream,
    /// The transparent outbound listener.
    Transparent,
}

/// One listener of the running proxy.
#[derive(Debug, Clone)]
pub struct ListenerAddr {
    pub role: ListenerRole,
    pub name: String,
    pub addr: SocketAddr,
}

/// Listeners, upstreams and discovery, movable from one configuration to the next.
pub struct LiveProxy {
    state: Mutex<State>,
    upstreams: Arc<UpstreamSet>,
    backend_upstreams: Arc<BackendSet>,
    /// Fixed for the process (`tracing.otlp` cannot change live).
    sinks: RequestSinks,
    /// Fixed for the process (`tls`, but its authorization rules).
    mesh: Option<MeshSecurity>,
}

#[derive(Default)]
struct State {
    config: Option<Config>,
    /// In configuration order, inbound first.
    sites: Vec<Site>,
    transparent: Option<TransparentSite>,
    consul: Option<ConsulWatches>,
    etcd: Option<EtcdWatches>,
    /// Accept loops of removed or replaced listeners, draining.
    retired: Vec<DrainController>,
}

impl State {
    /// Every bound listener.
    fn listening(&self) -> impl Iterator<Item = &Listening> {
        let sites = self.sites.iter().filter_map(|site| site.listening.as_ref());
        sites.chain(self.transparent.as_ref().map(|t| &t.listening))
    }
}

/// Everything an apply needs, prepared.
struct Plan {
    config: Config,
    listeners: Vec<Planned>,
    transparent: Option<PlannedTransparent>,
    /// `None` when no upstream uses Consul.
    consul: Option<PlannedClient<ConsulConfig, crate::consul::Client>>,
    /// `None` when no upstream uses etcd.
    etcd: Option<PlannedClient<EtcdConfig, crate::etcd::Client>>,
    kept_fixed: Vec<&'static str>,
}

impl LiveProxy {
    pub fn new(
        upstreams: Arc<UpstreamSet>,
        sinks: RequestSinks,
        mesh: Option<MeshSecurity>,
    ) -> Self {
        Self {
            state: Mutex::default(),
            upstreams,
            backend_upstreams: Arc::default(),
            sinks,
            mesh,
        }
    }

    /// The routing backends' upstreams, kept current by every apply.
    pub fn backend_upstreams(&self) -> Arc<BackendSet> {
        Arc::clone(&self.backend_upstreams)
    }

    /// Moves the proxy to `config` (or starts it, the first time). On error
    /// nothing changed.
    pub async fn apply(&self, config: Config) -> anyhow::Result<Applied> {
        let mut state = self.state.lock().await;
        let plan = self.prepare(&state, config).await?;
        let kept_fixed = plan.kept_fixed.clone();
        let effective = plan.config.clone();
        self.commit(&mut state, plan);
        Ok(Applied {
            effective,
            kept_fixed,
        })
    }

    /// Every listener now bound.
    pub async fn listeners(&self) -> Vec<ListenerAddr> {
        let state = self.state.lock().await;
        let sites = (state.sites.iter()).filter_map(|site| {
            Some(ListenerAddr {
                role: match site.direction {
                    Direction::Inbound => ListenerRole::Inbound,
                    Direction::Outbound => ListenerRole::Upstream,
                },
                name: site.name.clone(),
                addr: site.listening.as_ref()?.bound,
            })
        });
        let transparent = (state.transparent.iter()).map(|transparent| ListenerAddr {
            role: ListenerRole::Transparent,
            name: TRANSPARENT.to_owned(),
            addr: transparent.listening.bound,
        });
        sites.chain(transparent).collect()
    }

    /// How long in-flight work may take to finish at shutdown.
    pub async fn drain_timeout(&self) -> Duration {
        let state = self.state.lock().await;
        (state.config.as_ref()).map_or(Duration::ZERO, |config| config.runtime.drain_timeout)
    }

    /// Closes pooled connections idle past their timeout, on every upstream
    /// and routing backend.
    pub fn close_expired_idle(&self) {
        self.upstreams
            .load()
            .iter()
            .for_each(|upstream| upstream.close_expired_idle());
        (self.backend_upstreams.load().iter())
            .filter_map(Weak::upgrade)
            .for_each(|upstream| upstream.close_expired_idle());
    }

    /// Stops discovery, closes every listener's socket and drains their
    /// connections, old listeners' included, for at most `timeout`; returns
    /// the connections still open at the end. Nothing is served afterwards.
    pub async fn shutdown(&self, timeout: Duration) -> usize {
        let mut state = self.state.lock().await;
        if let Some(consul) = state.consul.take() {
            consul.stop();
        }
        if let Some(etcd) = state.etcd.take() {
            etcd.stop();
        }
        let mut accepting = std::mem::take(&mut state.retired);
        // Dropping a listener closes its socket once its accept loop has stopped.
        for site in std::mem::take(&mut state.sites) {
            if let Some(dns) = &site.resolving {
                dns.signal();
            }
            accepting.extend(site.listening.map(|listening| listening.accepting));
        }
        accepting.extend(state.transparent.take().map(|t| t.listening.accepting));
        accepting.iter().for_each(DrainController::signal);
        let left = futures_util::future::join_all(accepting.iter().map(|c| c.drain(timeout))).await;
        left.into_iter().sum()
    }

    async fn prepare(&self, state: &State, mut config: Config) -> anyhow::Result<Plan> {
        let kept_fixed = match &state.config {
            Some(running) => keep_fixed(running, &mut config),
            None => Vec::new(),
        };
        let authorizer = match (&self.mesh, &config.tls) {
            (Some(mesh), Some(tls)) => Some(mesh.authorizer(tls, &config.service.name)),
            _ => None,
        };
        let specs = specs(&config, self.mesh.as_ref())?;
        let names = (config.resolves_hostnames())
            .then(|| NameResolver::new(&config.dns))
            .transpose()
            .context("dns: cannot resolve the hostnames of static lists")?;
        let mut listeners = Vec::new();
        for spec in &specs {
            listeners.push(self.plan_site(
                state,
                &config,
                spec,
                authorizer.as_ref(),
                names.as_ref(),
            )?);
        }
        let transparent = match &config.transparent {
            Some(transparent) => Some(plan_transparent(state, transparent)?),
            None => None,
        };
        let in_etcd = config.counts_own_service_in_etcd();
        let uses_consul = (listeners.iter()).any(|l| matches!(l.discovery, Discovery::Consul(_)))
            || (config.shares_quotas() && !in_etcd);
        let consul = if uses_consul {
            let build = crate::consul::Client::from_config;
            Some(ConsulWatches::plan_client(
                state.consul.as_ref(),
                &config.consul,
                build,
            )?)
        } else {
            None
        };
        let uses_etcd =
            (listeners.iter()).any(|l| matches!(l.discovery, Discovery::Etcd(_))) || in_etcd;
        let etcd = match &config.etcd {
            Some(section) if uses_etcd => {
                let build = crate::etcd::Client::from_config;
                Some(EtcdWatches::plan_client(
                    state.etcd.as_ref(),
                    section,
                    build,
                )?)
            }
            _ => None,
        };
        // Nothing below can fail. Routing backends may name any upstream, so
        // stacks are planned once every upstream is.
        let upstreams: Vec<(String, Arc<Upstream>)> = (listeners.iter())
            .filter(|planned| planned.direction == Direction::Outbound)
            .map(|planned| (planned.name.clone(), Arc::clone(&planned.upstream)))
            .collect();
        for (planned, spec) in listeners.iter_mut().zip(&specs) {
            self.plan_stack(
                state,
                &config,
                spec,
                planned,
                &upstreams,
                authorizer.as_ref(),
            );
        }
        drop(specs);
        Ok(Plan {
            config,
            listeners,
            transparent,
            consul,
            etcd,
            kept_fixed,
        })
    }

    /// Swaps the plan in; cannot fail.
    fn commit(&self, state: &mut State, plan: Plan) {
        let mut old_sites = std::mem::take(&mut state.sites);
        for planned in plan.listeners {
            let old = (old_sites.iter())
                .position(|site| site.is(planned.direction, &planned.name))
                .map(|at| old_sites.swap_remove(at));
            let site = commit_site(&mut state.retired, planned, old);
            state.sites.push(site);
        }
        for gone in old_sites {
            if let Some(listening) = gone.listening {
                remove_listener(&mut state.retired, listening, gone.direction, &gone.name);
            }
            if let Some(dns) = gone.resolving {
                dns.signal();
            }
        }
        commit_transparent(state, plan.transparent, &plan.config);
        let own_service =
            (plan.config.shares_quotas()).then_some(plan.config.service.name.as_str());
        let in_etcd = plan.config.counts_own_service_in_etcd();
        state.consul = commit_consul(
            &state.sites,
            state.consul.take(),
            plan.consul,
            &plan.config.consul,
            own_service.filter(|_| !in_etcd),
        );
        state.etcd = commit_etcd(
            &state.sites,
            state.etcd.take(),
            plan.etcd,
            own_service.filter(|_| in_etcd),
        );
        let upstreams = (state.sites.iter()).map(|site| Arc::clone(&site.upstream));
        self.upstreams.store(Arc::new(upstreams.collect()));
        let backends = (state.sites.iter())
            .filter_map(|site| site.backends.as_deref())
            .flat_map(Backends::own)
            .map(Arc::downgrade);
        self.backend_upstreams.store(Arc::new(backends.collect()));
        state.config = Some(plan.config);
    }
}
