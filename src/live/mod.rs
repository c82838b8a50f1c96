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
//! with that error and leaves the proxy exactly as it was.
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
//! authorization rules changed, or its upstream or one of its routing
//! backends was replaced. Rebuilding starts its rate-limit buckets, retry
//! budget and concurrency count afresh (requests still on the old stack hold
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
//! are unchanged is kept whole (a changed static list is set in place).
//! Otherwise a successor takes over its endpoints — with their
//! connection pools, load and outlier state while the connect and idle
//! timeouts are unchanged — and its breaker while the breaker's settings are
//! unchanged. A static endpoint list is applied in place. A Consul watch
//! (one per distinct query) or a DNS task is restarted only when the
//! upstreams it feeds, its own settings or the `consul` section changed; an
//! upstream whose discovery changed keeps its current endpoints until the
//! new source answers, like discovery's fail-static.
//!
//! **Mesh TLS** (`mesh`): the material and its watches are the process's;
//! each apply builds the inbound authorizer from the authorization rules
//! and each meshed upstream's TLS origination (an unchanged one compares
//! equal, so its upstream is kept).

mod fixed;
mod listening;
mod mesh;
mod swap;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::client::ClientSettings;
use crate::config::{
    Config, ConnectionPool, ConsulConfig, Discovery, InboundConfig, ListenerLimits,
    ServiceProtocol, StaticEndpoint, Timeouts, TransparentConfig, UpstreamConfig, UpstreamProtocol,
};
use crate::consul::{self, HealthQuery};
use crate::context::Direction;
use crate::discovery::consul::{Watches, query_for};
use crate::discovery::dns::DnsDiscoverer;
use crate::drain::DrainController;
use crate::endpoint::WeightedAddr;
use crate::routing::backends::Backends;
use crate::server::{Handler, HttpProtocol};
use crate::stack;
use crate::svc::HttpService;
use crate::telemetry::spans::SpanExporter;
use crate::tls::authorization::Authorizer;
use crate::transparent::outbound::TransparentOutbound;
use crate::transparent::routes::{Route, RouteTable};
use crate::upstream::{BackendSet, Upstream, UpstreamSet, UpstreamSettings};

pub use fixed::keep_fixed;
pub(crate) use listening::bind;
use listening::{
    AcceptSource, HandlerSource, Listening, PlannedSocket, commit_socket, plan_socket,
    remove_listener,
};
pub use mesh::MeshSecurity;
use swap::{StackSlot, SwappableService};

/// The name of the transparent listener (logs, connection metrics).
const TRANSPARENT: &str = "transparent";

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
    spans: Option<SpanExporter>,
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

/// The inbound application or an upstream, its listener, stack and what
/// runs for them.
struct Site {
    direction: Direction,
    name: String,
    /// `None` for an upstream reached only through the transparent listener.
    listening: Option<Listening>,
    upstream: Arc<Upstream>,
    discovery: Discovery,
    /// What the stack was built from (see [`stack_source`]).
    stack_source: Value,
    /// `None` for a TCP upstream.
    stack: Option<StackSlot>,
    /// The stack's routing backends (outbound HTTP).
    backends: Option<Arc<Backends>>,
    /// The DNS discovery task, when discovery is `dns`.
    dns: Option<DrainController>,
}

impl Site {
    fn is(&self, direction: Direction, name: &str) -> bool {
        self.direction == direction && self.name == name
    }
}

/// The transparent listener.
struct TransparentSite {
    listening: Listening,
    outbound: Arc<TransparentOutbound>,
}

/// The Consul watches and the client they share.
struct ConsulWatches {
    /// The `consul` section the client was built from (compared as is: a
    /// changed token does not show in its serialized form).
    config: ConsulConfig,
    client: Arc<consul::Client>,
    /// Per query: the upstreams it feeds and the task's stop signal.
    groups: BTreeMap<HealthQuery, (Vec<Arc<Upstream>>, DrainController)>,
}

/// The inbound application or an upstream as a configuration describes it.
struct Spec<'a> {
    direction: Direction,
    name: String,
    listen: Option<SocketAddr>,
    limits: ListenerLimits,
    settings: UpstreamSettings,
    discovery: Discovery,
    /// `None`: opaque TCP.
    protocol: Option<HttpProtocol>,
    section: Section<'a>,
}

enum Section<'a> {
    Inbound(&'a InboundConfig),
    Outbound(&'a UpstreamConfig),
}

/// A site ready to commit.
struct Planned {
    direction: Direction,
    name: String,
    socket: Option<PlannedSocket>,
    upstream: Arc<Upstream>,
    discovery: Discovery,
    /// A static list to set on the upstream at commit.
    set_endpoints: Option<Vec<WeightedAddr>>,
    stack_source: Value,
    protocol: Option<HttpProtocol>,
    /// A new stack to install.
    new_stack: Option<HttpService>,
    backends: Option<Arc<Backends>>,
    /// A new DNS discovery task.
    new_dns: Option<DnsDiscoverer>,
}

/// The transparent listener ready to commit.
struct PlannedTransparent {
    socket: PlannedSocket,
    config: TransparentConfig,
}

/// Everything an apply needs, prepared.
struct Plan {
    config: Config,
    listeners: Vec<Planned>,
    transparent: Option<PlannedTransparent>,
    /// `None` when no upstream uses Consul.
    consul: Option<(ConsulConfig, Arc<consul::Client>)>,
    kept_fixed: Vec<&'static str>,
}

impl LiveProxy {
    pub fn new(
        upstreams: Arc<UpstreamSet>,
        spans: Option<SpanExporter>,
        mesh: Option<MeshSecurity>,
    ) -> Self {
        Self {
            state: Mutex::default(),
            upstreams,
            backend_upstreams: Arc::default(),
            spans,
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
            consul.groups.values().for_each(|(_, stop)| stop.signal());
        }
        let mut accepting = std::mem::take(&mut state.retired);
        // Dropping a listener closes its socket once its accept loop has stopped.
        for site in std::mem::take(&mut state.sites) {
            if let Some(dns) = &site.dns {
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
        let mut listeners = Vec::new();
        for spec in &specs {
            listeners.push(
                self.plan_site(state, &config, spec, authorizer.as_ref())
                    .await?,
            );
        }
        let transparent = match &config.transparent {
            Some(transparent) => Some(plan_transparent(state, transparent).await?),
            None => None,
        };
        let uses_consul = (listeners.iter()).any(|l| matches!(l.discovery, Discovery::Consul(_)));
        let consul = if uses_consul {
            let client = match &state.consul {
                Some(running) if running.config == config.consul => Arc::clone(&running.client),
                _ => Arc::new(consul::Client::from_config(&config.consul)?),
            };
            Some((config.consul.clone(), client))
        } else {
            None
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
            kept_fixed,
        })
    }

    /// The upstream, discovery and listener of `spec` (the stack comes later).
    async fn plan_site(
        &self,
        state: &State,
        config: &Config,
        spec: &Spec<'_>,
        authorizer: Option<&Arc<Authorizer>>,
    ) -> anyhow::Result<Planned> {
        let old = (state.sites.iter()).find(|site| site.is(spec.direction, &spec.name));

        // A discovery task that is replaced may still be finishing an answer:
        // a successor makes sure it cannot write into the upstream that runs
        // on. Static lists have no task and are set in place.
        let same_feed = old.is_some_and(|site| {
            site.discovery == spec.discovery
                || matches!(
                    (&site.discovery, &spec.discovery),
                    (Discovery::Static(_), Discovery::Static(_))
                )
        });
        let upstream = match old {
            Some(site) if site.upstream.settings == spec.settings && same_feed => {
                Arc::clone(&site.upstream)
            }
            Some(site) => Arc::new(site.upstream.successor(spec.settings.clone())),
            None => {
                let endpoints = match &spec.discovery {
                    Discovery::Static(endpoints) => weighted(endpoints),
                    Discovery::Consul(_) | Discovery::Dns(_) => Vec::new(),
                };
                Arc::new(Upstream::new(spec.settings.clone(), &endpoints))
            }
        };
        let same_upstream = old.is_some_and(|site| Arc::ptr_eq(&site.upstream, &upstream));
        let same_discovery = old.is_some_and(|site| site.discovery == spec.discovery);
        let set_endpoints = match &spec.discovery {
            Discovery::Static(endpoints) if old.is_some() && !same_discovery => {
                Some(weighted(endpoints))
            }
            _ => None,
        };

        let socket = match spec.listen {
            Some(listen) => {
                let handler = match spec.protocol {
                    Some(protocol) => HandlerSource::Http {
                        protocol,
                        idle: upstream.settings.client.idle_timeout,
                    },
                    None => HandlerSource::Tcp {
                        authorization: match spec.direction {
                            Direction::Inbound => (config.tls.as_ref())
                                .map(|tls| serde_json::to_value(&tls.authorization))
                                .transpose()?,
                            Direction::Outbound => None,
                        },
                    },
                };
                // A TCP handler holds its upstream.
                let handler_kept = spec.protocol.is_some() || same_upstream;
                let tls = || match (&self.mesh, spec.direction) {
                    (Some(mesh), Direction::Inbound) => mesh
                        .inbound(spec.protocol, &config.service.name, authorizer)
                        .map(Some),
                    _ => Ok(None),
                };
                let old = old.and_then(|site| site.listening.as_ref());
                let label = match spec.direction {
                    Direction::Inbound => "inbound".to_owned(),
                    Direction::Outbound => format!("upstream {}", spec.name),
                };
                Some(
                    plan_socket(
                        state.listening(),
                        old,
                        listen,
                        &label,
                        AcceptSource {
                            handler,
                            limits: spec.limits,
                        },
                        handler_kept,
                        tls,
                    )
                    .await?,
                )
            }
            None => None,
        };

        let new_dns = match &spec.discovery {
            Discovery::Dns(dns) => {
                let running = old.is_some_and(|site| site.dns.is_some());
                if running && same_discovery && same_upstream {
                    None
                } else {
                    let discoverer = DnsDiscoverer::new(Arc::clone(&upstream), dns)
                        .with_context(|| format!("upstream {}: DNS discovery", spec.name))?;
                    Some(discoverer)
                }
            }
            Discovery::Static(_) | Discovery::Consul(_) => None,
        };

        Ok(Planned {
            direction: spec.direction,
            name: spec.name.clone(),
            socket,
            upstream,
            discovery: spec.discovery.clone(),
            set_endpoints,
            stack_source: stack_source(&spec.section, config)?,
            protocol: spec.protocol,
            new_stack: None,
            backends: None,
            new_dns,
        })
    }

    /// Plans the stack of an HTTP site: kept when what it is built from is
    /// unchanged, built anew otherwise.
    fn plan_stack(
        &self,
        state: &State,
        config: &Config,
        spec: &Spec<'_>,
        planned: &mut Planned,
        upstreams: &[(String, Arc<Upstream>)],
        authorizer: Option<&Arc<Authorizer>>,
    ) {
        if spec.protocol.is_none() {
            return;
        }
        let old = (state.sites.iter()).find(|site| site.is(spec.direction, &spec.name));
        let unchanged = |backends: Option<&Backends>| {
            old.is_some_and(|site| {
                site.stack.is_some()
                    && site.stack_source == planned.stack_source
                    && Arc::ptr_eq(&site.upstream, &planned.upstream)
                    && match (site.backends.as_deref(), backends) {
                        (Some(running), Some(next)) => running.same_as(next),
                        (running, next) => running.is_none() && next.is_none(),
                    }
            })
        };
        let access_log = access_log_share(config);
        match spec.section {
            Section::Inbound(section) => {
                if !unchanged(None) {
                    planned.new_stack = Some(stack::inbound(
                        Arc::clone(&planned.upstream),
                        section,
                        &config.tracing,
                        access_log,
                        self.spans.clone(),
                        authorizer.cloned(),
                    ));
                }
            }
            Section::Outbound(section) => {
                let by_name = |name: &str| {
                    (upstreams.iter())
                        .find(|(upstream, _)| upstream == name)
                        .map(|(_, upstream)| Arc::clone(upstream))
                };
                let previous = old.and_then(|site| site.backends.as_deref());
                let backends = Backends::build(&planned.upstream, section, &by_name, previous);
                if unchanged(Some(&backends)) {
                    planned.backends = old.and_then(|site| site.backends.clone());
                } else {
                    planned.new_stack = Some(stack::outbound(
                        &backends,
                        section,
                        &config.tracing,
                        access_log,
                        self.spans.clone(),
                    ));
                    planned.backends = Some(Arc::new(backends));
                }
            }
        }
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
            if let Some(dns) = gone.dns {
                dns.signal();
            }
        }
        commit_transparent(state, plan.transparent, &plan.config);
        commit_consul(state, plan.consul, &plan.config.consul);
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

async fn plan_transparent(
    state: &State,
    config: &TransparentConfig,
) -> anyhow::Result<PlannedTransparent> {
    let old = state.transparent.as_ref().map(|t| &t.listening);
    let handler = HandlerSource::Transparent(serde_json::to_value(config)?);
    let socket = plan_socket(
        state.listening(),
        old,
        config.outbound_listen,
        "transparent outbound",
        AcceptSource {
            handler,
            limits: config.limits,
        },
        true,
        || Ok(None),
    )
    .await?;
    Ok(PlannedTransparent {
        socket,
        config: config.clone(),
    })
}

fn commit_site(retired: &mut Vec<DrainController>, planned: Planned, old: Option<Site>) -> Site {
    if let Some(endpoints) = &planned.set_endpoints {
        planned.upstream.set_weighted_endpoints(endpoints);
    }
    let old_slot = old.as_ref().and_then(|site| site.stack.clone());
    let stack = match (planned.protocol, planned.new_stack) {
        (None, _) => None,
        (Some(_), Some(stack)) => match old_slot {
            Some(slot) => {
                slot.store(Arc::new(stack));
                Some(slot)
            }
            None => Some(Arc::new(ArcSwap::from_pointee(stack))),
        },
        // Unchanged: `prepare` only keeps a stack that exists.
        (Some(_), None) => old_slot,
    };
    let (old_listening, old_dns) = match old {
        Some(site) => (site.listening, site.dns),
        None => (None, None),
    };
    let handler = || match (&stack, planned.protocol) {
        (Some(slot), Some(protocol)) => Handler::Http(
            protocol,
            SwappableService::boxed(Arc::clone(slot)),
            planned.upstream.settings.client.idle_timeout,
        ),
        _ => Handler::Tcp(Arc::clone(&planned.upstream)),
    };
    let listening = match (planned.socket, old_listening) {
        (Some(socket), old) => Some(commit_socket(
            retired,
            socket,
            old,
            handler,
            planned.direction,
            &planned.name,
        )),
        (None, Some(old)) => {
            remove_listener(retired, old, planned.direction, &planned.name);
            None
        }
        (None, None) => None,
    };
    let dns = match (planned.new_dns, old_dns) {
        (Some(discoverer), old) => {
            if let Some(old) = old {
                old.signal();
            }
            let stop = DrainController::new();
            discoverer.spawn(stop.watch());
            Some(stop)
        }
        (None, Some(old)) if matches!(planned.discovery, Discovery::Dns(_)) => Some(old),
        (None, Some(old)) => {
            old.signal();
            None
        }
        (None, None) => None,
    };
    Site {
        direction: planned.direction,
        name: planned.name,
        listening,
        upstream: planned.upstream,
        discovery: planned.discovery,
        stack_source: planned.stack_source,
        stack,
        backends: planned.backends,
        dns,
    }
}

/// Moves the transparent listener to the plan; its route table is built
/// from the committed sites before any connection can use it.
fn commit_transparent(state: &mut State, planned: Option<PlannedTransparent>, config: &Config) {
    let old = state.transparent.take();
    let Some(planned) = planned else {
        if let Some(old) = old {
            remove_listener(
                &mut state.retired,
                old.listening,
                Direction::Outbound,
                TRANSPARENT,
            );
        }
        return;
    };
    let routes = route_table(&state.sites, config);
    let (old_listening, outbound) = match old {
        Some(running) if planned.socket.new_accept.is_none() => {
            running.outbound.set_routes(routes);
            (Some(running.listening), running.outbound)
        }
        old => (
            old.map(|old| old.listening),
            Arc::new(TransparentOutbound::new(&planned.config, routes)),
        ),
    };
    let listening = commit_socket(
        &mut state.retired,
        planned.socket,
        old_listening,
        || Handler::Transparent(Arc::clone(&outbound)),
        Direction::Outbound,
        TRANSPARENT,
    );
    state.transparent = Some(TransparentSite {
        listening,
        outbound,
    });
}

/// The upstreams the transparent listener routes to, in configuration order.
fn route_table(sites: &[Site], config: &Config) -> RouteTable {
    let routes = (config.upstreams.iter())
        .filter(|upstream| !upstream.hosts.is_empty() || !upstream.addresses.is_empty())
        .filter_map(|upstream| {
            let site = sites
                .iter()
                .find(|site| site.is(Direction::Outbound, &upstream.name))?;
            Some(Route {
                hosts: upstream.hosts.clone(),
                addresses: upstream.addresses.clone(),
                upstream: Arc::clone(&site.upstream),
                http: (site.stack.as_ref()).map(|slot| SwappableService::boxed(Arc::clone(slot))),
            })
        });
    RouteTable::new(routes.collect())
}
/// Regroups the Consul-discovered upstreams by query; restarts the watches
/// whose upstreams or client changed, stops those no longer needed.
fn commit_consul(
    state: &mut State,
    next: Option<(ConsulConfig, Arc<consul::Client>)>,
    section: &ConsulConfig,
) {
    let mut groups: BTreeMap<HealthQuery, Vec<Arc<Upstream>>> = BTreeMap::new();
    for site in &state.sites {
        if let Discovery::Consul(discovery) = &site.discovery {
            let query = query_for(discovery, section);
            groups
                .entry(query)
                .or_default()
                .push(Arc::clone(&site.upstream));
        }
    }
    let running = state.consul.take();
    let (same_client, mut old_groups) = match running {
        Some(running) => (
            next.as_ref()
                .is_some_and(|(config, _)| *config == running.config),
            running.groups,
        ),
        None => (false, BTreeMap::new()),
    };
    let Some((config, client)) = next else {
        old_groups.values().for_each(|(_, stop)| stop.signal());
        return;
    };
    let mut watches = BTreeMap::new();
    for (query, upstreams) in groups {
        let kept = old_groups.remove(&query).and_then(|(fed, stop)| {
            let same_upstreams = fed.len() == upstreams.len()
                && fed.iter().zip(&upstreams).all(|(a, b)| Arc::ptr_eq(a, b));
            if same_client && same_upstreams {
                Some(stop)
            } else {
                stop.signal();
                None
            }
        });
        let stop = kept.unwrap_or_else(|| {
            let stop = DrainController::new();
            let mut watch = Watches::default();
            for upstream in &upstreams {
                watch.add(query.clone(), Arc::clone(upstream));
            }
            watch.spawn(Arc::clone(&client), &stop.watch());
            stop
        });
        watches.insert(query, (upstreams, stop));
    }
    old_groups.values().for_each(|(_, stop)| stop.signal());
    state.consul = Some(ConsulWatches {
        config,
        client,
        groups: watches,
    });
}

/// The sites `config` asks for: inbound first, then the upstreams.
fn specs<'a>(config: &'a Config, mesh: Option<&MeshSecurity>) -> anyhow::Result<Vec<Spec<'a>>> {
    let mut specs = Vec::new();
    if let Some(inbound) = &config.inbound {
        let service = &config.service;
        let port = service
            .port
            .context("service.port is required for inbound")?;
        let protocol = match service.protocol {
            ServiceProtocol::Http => UpstreamProtocol::Http,
            ServiceProtocol::Http2 => UpstreamProtocol::Http2,
            ServiceProtocol::Grpc => UpstreamProtocol::Grpc,
            ServiceProtocol::Tcp => UpstreamProtocol::Tcp,
        };
        // Other sidecars may speak either HTTP version to an HTTP service.
        let listen_protocol = match protocol {
            UpstreamProtocol::Http | UpstreamProtocol::Auto => Some(HttpProtocol::Auto),
            UpstreamProtocol::Http2 | UpstreamProtocol::Grpc => Some(HttpProtocol::Http2),
            UpstreamProtocol::Tcp => None,
        };
        specs.push(Spec {
            direction: Direction::Inbound,
            name: "inbound".into(),
            listen: Some(inbound.listen),
            limits: inbound.limits,
            settings: UpstreamSettings {
                name: service.name.clone(),
                direction: Direction::Inbound,
                protocol,
                policy: Default::default(),
                hash_on: None,
                client: client_settings(&Timeouts::default(), ConnectionPool::default(), None),
                circuit_breaker: None,
                outlier_detection: None,
                rate_limit: inbound.rate_limit.clone(),
            },
            discovery: Discovery::Static(vec![StaticEndpoint {
                address: SocketAddr::new(service.address, port),
                weight: 1,
            }]),
            protocol: listen_protocol,
            section: Section::Inbound(inbound),
        });
    }
    for upstream in &config.upstreams {
        let listen_protocol = match upstream.protocol {
            UpstreamProtocol::Http => Some(HttpProtocol::Http1),
            UpstreamProtocol::Http2 | UpstreamProtocol::Grpc => Some(HttpProtocol::Http2),
            UpstreamProtocol::Auto => Some(HttpProtocol::Auto),
            UpstreamProtocol::Tcp => None,
        };
        let tls = match mesh {
            Some(mesh) => mesh.upstream(upstream, config)?,
            None => None,
        };
        specs.push(Spec {
            direction: Direction::Outbound,
            name: upstream.name.clone(),
            listen: upstream.listen,
            limits: upstream.limits,
            settings: UpstreamSettings {
                name: upstream.name.clone(),
                direction: Direction::Outbound,
                protocol: upstream.protocol,
                policy: upstream.load_balancing.policy,
                hash_on: upstream.load_balancing.hash_on.clone(),
                client: client_settings(&upstream.timeouts, upstream.connection_pool, tls),
                circuit_breaker: upstream.circuit_breaker.clone(),
                outlier_detection: upstream.outlier_detection.clone(),
                rate_limit: upstream.rate_limit.clone(),
            },
            discovery: upstream.discovery.clone(),
            protocol: listen_protocol,
            section: Section::Outbound(upstream),
        });
    }
    Ok(specs)
}

/// Everything a site's stack is built from besides its upstream and backends.
fn stack_source(section: &Section<'_>, config: &Config) -> anyhow::Result<Value> {
    let (section, authorization) = match section {
        Section::Inbound(inbound) => (
            serde_json::to_value(inbound)?,
            serde_json::to_value(config.tls.as_ref().map(|tls| &tls.authorization))?,
        ),
        Section::Outbound(outbound) => (serde_json::to_value(outbound)?, Value::Null),
    };
    Ok(json!({
        "section": section,
        "authorization": authorization,
        "tracing": serde_json::to_value(&config.tracing)?,
        "access_log": access_log_share(config),
    }))
}

/// The share of requests that get an access-log line.
fn access_log_share(config: &Config) -> f64 {
    if config.logging.access_log {
        config.logging.access_log_sample
    } else {
        0.0
    }
}

fn client_settings(
    timeouts: &Timeouts,
    pool: ConnectionPool,
    tls: Option<Arc<crate::tls::outbound::UpstreamTls>>,
) -> ClientSettings {
    ClientSettings {
        connect_timeout: timeouts.connect,
        idle_timeout: timeouts.idle,
        tls,
        pool,
    }
}

/// A static list as balancer endpoints, each with its configured weight.
fn weighted(endpoints: &[StaticEndpoint]) -> Vec<WeightedAddr> {
    (endpoints.iter())
        .map(|endpoint| WeightedAddr {
            addr: endpoint.address,
            weight: endpoint.weight,
        })
        .collect()
}
