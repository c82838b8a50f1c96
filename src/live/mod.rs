//! The part of a running proxy that a configuration can change: the
//! listeners (inbound, and one per upstream), their stacks, the upstreams
//! and the discovery tasks that feed them. [`LiveProxy::apply`] builds them
//! from the first configuration and moves them to every later one.
//!
//! **All or nothing.** An apply first prepares everything that can fail —
//! binding new listeners, duplicating sockets, DNS resolvers, the Consul
//! client — without touching what runs; only then does it commit, and the
//! commit cannot fail. A configuration that cannot be applied (a port in
//! use, a DNS resolver or Consul client that cannot be built) is rejected
//! with that error and leaves the proxy exactly as it was.
//!
//! **Listeners** are known by direction and name (`inbound`, or the
//! upstream's name). One whose configured address is unchanged keeps its
//! socket, so no connection is refused across a reload; an address that
//! another listener had before (a renamed upstream) takes that socket over.
//! A listener that is gone, or whose address changed, is drained as at
//! shutdown (see `drain`): its socket closes at once (new connections are
//! refused) and its open connections finish their in-flight requests
//! (HTTP/1.1 closes after the current response, HTTP/2 gets GOAWAY; TCP
//! tunnels run until they end). When a listener's protocol or idle timeout
//! changes, a new accept loop takes over its socket and the old loop's
//! connections drain.
//!
//! **Stacks are picked per request** (see `swap`): a changed policy applies
//! to the next request, on connections opened before the reload too, while
//! requests in flight finish on the stack they started with. This is what
//! Envoy does for route and cluster changes; the alternative — a connection
//! keeps the stack it was accepted with until it closes — would leave an
//! application's pooled keep-alive connections on the old timeouts or
//! retries for as long as they live. A stack is rebuilt only when its
//! section, `tracing` or the access-log settings changed, or its upstream
//! was replaced. Rebuilding starts its rate-limit buckets, retry budget and
//! concurrency count afresh (requests still on the old stack hold their
//! slots there, so for a moment the limit can be exceeded by them).
//!
//! **Upstream state is kept** where the configuration allows it. An
//! upstream whose settings (protocol, load balancing, connect and idle
//! timeouts, breaker, outlier detection, rate limit) and discovery source
//! are unchanged is kept whole (a changed static list is set in place).
//! Otherwise a successor takes over its endpoints — with their
//! connection pools, load and outlier state while the connect and idle
//! timeouts are unchanged — and its breaker while the breaker's settings are
//! unchanged. A static endpoint list is applied in place. A Consul watch
//! (one per distinct query) or a DNS task is restarted only when the
//! upstreams it feeds, its own settings or the `consul` section changed; an
//! upstream whose discovery changed keeps its current endpoints until the
//! new source answers, like discovery's fail-static.

mod fixed;
mod swap;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

use crate::client::ClientSettings;
use crate::config::{
    Config, ConsulConfig, Discovery, InboundConfig, ServiceProtocol, Timeouts, UpstreamConfig,
    UpstreamProtocol,
};
use crate::consul::{self, HealthQuery};
use crate::discovery::consul::{Watches, query_for};
use crate::discovery::dns::DnsDiscoverer;
use crate::drain::DrainController;
use crate::server::{self, Handler, HttpProtocol};
use crate::stack::{self, HttpService};
use crate::telemetry::metrics::ConnectionMetrics;
use crate::telemetry::spans::SpanExporter;
use crate::upstream::{Direction, Upstream, UpstreamSet, UpstreamSettings};

pub use fixed::keep_fixed;
use swap::{StackSlot, SwappableService};

/// What an apply changed besides the listeners it logs itself.
#[derive(Debug)]
pub struct Applied {
    /// The configuration now running (fixed settings at their running values).
    pub effective: Config,
    /// Key paths of fixed settings the new configuration tried to change.
    pub kept_fixed: Vec<&'static str>,
}

/// One listener of the running proxy.
#[derive(Debug, Clone)]
pub struct ListenerAddr {
    pub direction: Direction,
    pub name: String,
    pub addr: SocketAddr,
}

/// Listeners, upstreams and discovery, movable from one configuration to the next.
pub struct LiveProxy {
    state: Mutex<State>,
    upstreams: Arc<UpstreamSet>,
    /// Fixed for the process (`tracing.otlp` cannot change live).
    spans: Option<SpanExporter>,
}

#[derive(Default)]
struct State {
    config: Option<Config>,
    /// In configuration order, inbound first.
    sites: Vec<Site>,
    consul: Option<ConsulWatches>,
    /// Accept loops of removed or replaced listeners, draining.
    retired: Vec<DrainController>,
}

/// A listener, its upstream and what runs for them.
struct Site {
    direction: Direction,
    name: String,
    /// As configured (port 0 stays 0).
    listen: SocketAddr,
    socket: Arc<std::net::TcpListener>,
    bound: SocketAddr,
    upstream: Arc<Upstream>,
    discovery: Discovery,
    /// What the stack was built from (see [`stack_source`]).
    stack_source: Value,
    /// `None` for a TCP listener.
    stack: Option<StackSlot>,
    /// The accept loop's handler was built from these.
    protocol: Option<HttpProtocol>,
    idle: Duration,
    accepting: DrainController,
    /// The DNS discovery task, when discovery is `dns`.
    dns: Option<DrainController>,
}

impl Site {
    fn is(&self, direction: Direction, name: &str) -> bool {
        self.direction == direction && self.name == name
    }
}

/// The Consul watches and the client they share.
struct ConsulWatches {
    /// The `consul` section the client was built from.
    config: Value,
    client: consul::Client,
    /// Per query: the upstreams it feeds and the task's stop signal.
    groups: BTreeMap<HealthQuery, (Vec<Arc<Upstream>>, DrainController)>,
}

/// A listener as a configuration describes it.
struct Spec<'a> {
    direction: Direction,
    name: String,
    listen: SocketAddr,
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

/// A listener ready to commit.
struct Planned {
    direction: Direction,
    name: String,
    listen: SocketAddr,
    socket: Arc<std::net::TcpListener>,
    bound: SocketAddr,
    /// The socket is new to this listener: logged as `listening`.
    announce: bool,
    upstream: Arc<Upstream>,
    discovery: Discovery,
    /// A static list to set on the upstream at commit.
    set_endpoints: Option<Vec<SocketAddr>>,
    stack_source: Value,
    protocol: Option<HttpProtocol>,
    idle: Duration,
    /// A new stack to install.
    new_stack: Option<HttpService>,
    /// A new accept loop's listener (new socket, or a new handler on the old one).
    new_accept: Option<TcpListener>,
    /// A new DNS discovery task.
    new_dns: Option<DnsDiscoverer>,
}

/// Everything an apply needs, prepared.
struct Plan {
    config: Config,
    listeners: Vec<Planned>,
    /// `None` when no upstream uses Consul.
    consul: Option<(Value, consul::Client)>,
    kept_fixed: Vec<&'static str>,
}

impl LiveProxy {
    pub fn new(upstreams: Arc<UpstreamSet>, spans: Option<SpanExporter>) -> Self {
        Self {
            state: Mutex::default(),
            upstreams,
            spans,
        }
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
        state
            .sites
            .iter()
            .map(|site| ListenerAddr {
                direction: site.direction,
                name: site.name.clone(),
                addr: site.bound,
            })
            .collect()
    }

    /// How long in-flight work may take to finish at shutdown.
    pub async fn drain_timeout(&self) -> Duration {
        let state = self.state.lock().await;
        (state.config.as_ref()).map_or(Duration::ZERO, |config| config.runtime.drain_timeout)
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
        // Dropping a site closes its socket once its accept loop has stopped.
        for site in std::mem::take(&mut state.sites) {
            if let Some(dns) = &site.dns {
                dns.signal();
            }
            site.accepting.signal();
            accepting.push(site.accepting);
        }
        let left = futures_util::future::join_all(accepting.iter().map(|c| c.drain(timeout))).await;
        left.into_iter().sum()
    }

    async fn prepare(&self, state: &State, mut config: Config) -> anyhow::Result<Plan> {
        let kept_fixed = match &state.config {
            Some(running) => keep_fixed(running, &mut config),
            None => Vec::new(),
        };
        let mut listeners = Vec::new();
        for spec in specs(&config)? {
            listeners.push(self.plan_listener(state, &config, spec).await?);
        }
        let uses_consul = (listeners.iter()).any(|l| matches!(l.discovery, Discovery::Consul(_)));
        let consul = if uses_consul {
            let section = serde_json::to_value(&config.consul)?;
            let client = match &state.consul {
                Some(running) if running.config == section => running.client.clone(),
                _ => consul::Client::from_config(&config.consul)?,
            };
            Some((section, client))
        } else {
            None
        };
        Ok(Plan {
            config,
            listeners,
            consul,
            kept_fixed,
        })
    }

    async fn plan_listener(
        &self,
        state: &State,
        config: &Config,
        spec: Spec<'_>,
    ) -> anyhow::Result<Planned> {
        let old = (state.sites.iter()).find(|site| site.is(spec.direction, &spec.name));
        let label = match spec.direction {
            Direction::Inbound => "inbound".to_owned(),
            Direction::Outbound => format!("upstream {}", spec.name),
        };

        let reused_socket = old
            .filter(|site| site.listen == spec.listen)
            .or_else(|| {
                (spec.listen.port() != 0)
                    .then(|| state.sites.iter().find(|site| site.listen == spec.listen))
                    .flatten()
            })
            .map(|site| (Arc::clone(&site.socket), site.bound));
        let (socket, bound) = match reused_socket {
            Some(reused) => reused,
            None => {
                let listener = bind(spec.listen, &label).await?;
                let bound = listener.local_addr()?;
                (Arc::new(listener.into_std()?), bound)
            }
        };
        let same_socket = old.is_some_and(|site| Arc::ptr_eq(&site.socket, &socket));

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
            Some(site) => Arc::new(site.upstream.successor(spec.settings)),
            None => {
                let endpoints: &[SocketAddr] = match &spec.discovery {
                    Discovery::Static(endpoints) => endpoints,
                    Discovery::Consul(_) | Discovery::Dns(_) => &[],
                };
                Arc::new(Upstream::new(spec.settings, endpoints))
            }
        };
        let same_upstream = old.is_some_and(|site| Arc::ptr_eq(&site.upstream, &upstream));
        let same_discovery = old.is_some_and(|site| site.discovery == spec.discovery);
        let set_endpoints = match &spec.discovery {
            Discovery::Static(endpoints) if old.is_some() && !same_discovery => {
                Some(endpoints.clone())
            }
            _ => None,
        };

        let access_log = access_log_share(config);
        let stack_source = stack_source(&spec.section, config, access_log)?;
        let new_stack = match spec.protocol {
            None => None,
            Some(_) => {
                let unchanged = old.is_some_and(|site| {
                    site.stack.is_some() && site.stack_source == stack_source && same_upstream
                });
                (!unchanged).then(|| self.build_stack(&spec.section, &upstream, config))
            }
        };

        let idle = upstream.settings.client.idle_timeout;
        let same_handler = old.is_some_and(|site| match spec.protocol {
            Some(_) => site.protocol == spec.protocol && site.idle == idle,
            // A TCP handler holds its upstream.
            None => site.protocol.is_none() && same_upstream,
        });
        let new_accept = if same_socket && same_handler {
            None
        } else {
            let listener = socket
                .try_clone()
                .and_then(TcpListener::from_std)
                .with_context(|| format!("cannot share the {label} listener's socket"))?;
            Some(listener)
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
            name: spec.name,
            listen: spec.listen,
            socket,
            bound,
            announce: !same_socket,
            upstream,
            discovery: spec.discovery,
            set_endpoints,
            stack_source,
            protocol: spec.protocol,
            idle,
            new_stack,
            new_accept,
            new_dns,
        })
    }

    fn build_stack(
        &self,
        section: &Section<'_>,
        upstream: &Arc<Upstream>,
        config: &Config,
    ) -> HttpService {
        let access_log = access_log_share(config);
        let spans = self.spans.clone();
        match section {
            Section::Inbound(inbound) => stack::inbound(
                Arc::clone(upstream),
                inbound,
                &config.tracing,
                access_log,
                spans,
            ),
            Section::Outbound(outbound) => stack::outbound(
                Arc::clone(upstream),
                outbound,
                &config.tracing,
                access_log,
                spans,
            ),
        }
    }

    /// Swaps the plan in; cannot fail.
    fn commit(&self, state: &mut State, plan: Plan) {
        let mut old_sites = std::mem::take(&mut state.sites);
        for planned in plan.listeners {
            let old = (old_sites.iter())
                .position(|site| site.is(planned.direction, &planned.name))
                .map(|at| old_sites.swap_remove(at));
            let site = commit_listener(state, planned, old);
            state.sites.push(site);
        }
        for gone in old_sites {
            tracing::info!(listener = %gone.name, direction = gone.direction.as_str(), addr = %gone.bound, "listener removed; draining it");
            retire(&mut state.retired, gone.accepting);
            if let Some(dns) = gone.dns {
                dns.signal();
            }
        }
        commit_consul(state, plan.consul, &plan.config.consul);
        let upstreams = (state.sites.iter()).map(|site| Arc::clone(&site.upstream));
        self.upstreams.store(Arc::new(upstreams.collect()));
        state.config = Some(plan.config);
    }
}

fn commit_listener(state: &mut State, planned: Planned, old: Option<Site>) -> Site {
    if let Some(endpoints) = &planned.set_endpoints {
        planned.upstream.set_endpoints(endpoints);
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
    let (old_accepting, old_dns) = match old {
        Some(site) => (Some(site.accepting), site.dns),
        None => (None, None),
    };
    let accepting = match planned.new_accept {
        Some(listener) => {
            let handler = match (&stack, planned.protocol) {
                (Some(slot), Some(protocol)) => Handler::Http(
                    protocol,
                    SwappableService::boxed(Arc::clone(slot)),
                    planned.idle,
                ),
                _ => Handler::Tcp(Arc::clone(&planned.upstream)),
            };
            if planned.announce {
                tracing::info!(listener = %planned.name, direction = planned.direction.as_str(), addr = %planned.bound, "listening");
            }
            if let Some(old) = old_accepting {
                retire(&mut state.retired, old);
            }
            spawn_accept_loop(listener, handler, planned.direction, &planned.name)
        }
        // `prepare` plans no new accept loop only for a listener that has one.
        None => old_accepting.expect("an existing listener's accept loop"),
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
        listen: planned.listen,
        socket: planned.socket,
        bound: planned.bound,
        upstream: planned.upstream,
        discovery: planned.discovery,
        stack_source: planned.stack_source,
        stack,
        protocol: planned.protocol,
        idle: planned.idle,
        accepting,
        dns,
    }
}

/// Regroups the Consul-discovered upstreams by query; restarts the watches
/// whose upstreams or client changed, stops those no longer needed.
fn commit_consul(state: &mut State, next: Option<(Value, consul::Client)>, section: &ConsulConfig) {
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
            watch.spawn(client.clone(), &stop.watch());
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

/// Signals an accept loop to drain; keeps it until its connections are gone.
fn retire(retired: &mut Vec<DrainController>, accepting: DrainController) {
    accepting.signal();
    retired.retain(|old| old.live() > 0);
    retired.push(accepting);
}

fn spawn_accept_loop(
    listener: TcpListener,
    handler: Handler,
    direction: Direction,
    name: &str,
) -> DrainController {
    let accepting = DrainController::new();
    tokio::spawn(server::accept_loop(
        listener,
        handler,
        ConnectionMetrics::new(direction, name),
        accepting.watch(),
    ));
    accepting
}

/// The listeners `config` asks for: inbound first, then the upstreams.
fn specs(config: &Config) -> anyhow::Result<Vec<Spec<'_>>> {
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
            listen: inbound.listen,
            settings: UpstreamSettings {
                name: service.name.clone(),
                direction: Direction::Inbound,
                protocol,
                policy: Default::default(),
                hash_on: None,
                client: client_settings(&Timeouts::default()),
                circuit_breaker: None,
                outlier_detection: None,
                rate_limit: inbound.rate_limit.clone(),
            },
            discovery: Discovery::Static(vec![SocketAddr::new(service.address, port)]),
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
        specs.push(Spec {
            direction: Direction::Outbound,
            name: upstream.name.clone(),
            listen: upstream.listen,
            settings: UpstreamSettings {
                name: upstream.name.clone(),
                direction: Direction::Outbound,
                protocol: upstream.protocol,
                policy: upstream.load_balancing.policy,
                hash_on: upstream.load_balancing.hash_on.clone(),
                client: client_settings(&upstream.timeouts),
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

/// Everything a listener's stack is built from besides its upstream.
fn stack_source(section: &Section<'_>, config: &Config, access_log: f64) -> anyhow::Result<Value> {
    let section = match section {
        Section::Inbound(inbound) => serde_json::to_value(inbound)?,
        Section::Outbound(outbound) => serde_json::to_value(outbound)?,
    };
    Ok(json!({
        "section": section,
        "tracing": serde_json::to_value(&config.tracing)?,
        "access_log": access_log,
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

fn client_settings(timeouts: &Timeouts) -> ClientSettings {
    ClientSettings {
        connect_timeout: timeouts.connect,
        idle_timeout: timeouts.idle,
    }
}

/// Binds a listener; the error names it.
pub(crate) async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for the {what} listener"))
}
