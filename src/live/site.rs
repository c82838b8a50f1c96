//! A site — the inbound application or an upstream — across applies: its
//! upstream (kept, succeeded or new), discovery task, listener and stack
//! are planned against the running site (everything that can fail), then
//! committed (nothing can fail).

use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;

use crate::config::{Config, Discovery, DnsConfig};
use crate::context::Direction;
use crate::discovery::Instance;
use crate::discovery::dns::DnsDiscoverer;
use crate::discovery::static_names::{NameResolver, StaticNames, listed_ips};
use crate::drain::{Drain, DrainController};
use crate::http_connection::HttpProtocol;
use crate::routing::backends::Backends;
use crate::server::Handler;
use crate::stack;
use crate::svc::HttpService;
use crate::tls::authorization::Authorizer;
use crate::upstream::Upstream;

use super::listening::{
    AcceptSource, HandlerSource, Listening, PlannedSocket, commit_socket, plan_socket,
    remove_listener,
};
use super::spec::{Section, Spec, StackSource, access_log_share, names_hosts};
use super::swap::{StackSlot, SwappableService};
use super::{LiveProxy, State};

/// The inbound application or an upstream, its listener, stack and what
/// runs for them.
pub(super) struct Site {
    pub(super) direction: Direction,
    pub(super) name: String,
    /// `None` for an upstream reached only through the transparent listener.
    pub(super) listening: Option<Listening>,
    pub(super) upstream: Arc<Upstream>,
    pub(super) discovery: Discovery,
    /// The `dns:` section the discovery task was started with.
    dns: DnsConfig,
    /// What the stack was built from.
    stack_source: StackSource,
    /// `None` for a TCP upstream.
    pub(super) stack: Option<StackSlot>,
    /// The stack's routing backends (outbound HTTP).
    pub(super) backends: Option<Arc<Backends>>,
    /// The DNS task, when discovery is `dns` or a static list names hosts.
    pub(super) resolving: Option<DrainController>,
}

impl Site {
    pub(super) fn is(&self, direction: Direction, name: &str) -> bool {
        self.direction == direction && self.name == name
    }
}

/// A site ready to commit.
pub(super) struct Planned {
    pub(super) direction: Direction,
    pub(super) name: String,
    socket: Option<PlannedSocket>,
    pub(super) upstream: Arc<Upstream>,
    pub(super) discovery: Discovery,
    dns: DnsConfig,
    /// A static list to set on the upstream at commit.
    set_endpoints: Option<Vec<Instance>>,
    stack_source: StackSource,
    protocol: Option<HttpProtocol>,
    /// A new stack to install.
    new_stack: Option<HttpService>,
    backends: Option<Arc<Backends>>,
    /// A new DNS task.
    new_resolving: Option<Resolving>,
    /// Resolves the hostnames of static lists (routing backends' too).
    names: Option<NameResolver>,
}

/// A DNS task to start: discovery `dns`, or the hostnames of a static list.
enum Resolving {
    Dns(DnsDiscoverer),
    Names(StaticNames),
}

impl Resolving {
    fn spawn(self, drain: Drain) {
        match self {
            Resolving::Dns(discoverer) => discoverer.spawn(drain),
            Resolving::Names(names) => names.spawn(drain),
        }
    }
}

/// True when `discovery` runs a DNS task.
fn resolves(discovery: &Discovery) -> bool {
    matches!(discovery, Discovery::Dns(_)) || names_hosts(discovery)
}

impl LiveProxy {
    /// The upstream, discovery and listener of `spec` (the stack comes later).
    pub(super) fn plan_site(
        &self,
        state: &State,
        config: &Config,
        spec: &Spec<'_>,
        authorizer: Option<&Arc<Authorizer>>,
        names: Option<&NameResolver>,
    ) -> anyhow::Result<Planned> {
        let old = (state.sites.iter()).find(|site| site.is(spec.direction, &spec.name));

        // A discovery task that is replaced may still be finishing an answer:
        // a successor makes sure it cannot write into the upstream that runs
        // on. Static lists of IPs have no task and are set in place.
        // The `dns` section concerns the hostnames of a static list (a `dns`
        // discovery's default resolver is in its `discovery` already).
        let same_discovery = old.is_some_and(|site| {
            site.discovery == spec.discovery
                && (site.dns == spec.dns || !names_hosts(&spec.discovery))
        });
        let same_feed = same_discovery
            || old.is_some_and(|site| {
                matches!(
                    (&site.discovery, &spec.discovery),
                    (Discovery::Static(_), Discovery::Static(_))
                ) && !names_hosts(&site.discovery)
                    && !names_hosts(&spec.discovery)
            });
        let upstream = match old {
            Some(site) if site.upstream.settings == spec.settings && same_feed => {
                Arc::clone(&site.upstream)
            }
            Some(site) => Arc::new(site.upstream.successor(spec.settings.clone())),
            None => {
                let upstream = Upstream::new(spec.settings.clone(), &[]);
                if let Discovery::Static(endpoints) = &spec.discovery {
                    upstream.set_instances(&listed_ips(endpoints));
                }
                Arc::new(upstream)
            }
        };
        let same_upstream = old.is_some_and(|site| Arc::ptr_eq(&site.upstream, &upstream));
        // A list with hostnames is handed over by its task, once resolved.
        let set_endpoints = match &spec.discovery {
            Discovery::Static(endpoints)
                if old.is_some() && !same_discovery && !names_hosts(&spec.discovery) =>
            {
                Some(listed_ips(endpoints))
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
                            Direction::Inbound => {
                                (config.tls.as_ref()).map(|tls| tls.authorization.clone())
                            }
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
                Some(plan_socket(
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
                )?)
            }
            None => None,
        };

        let running = old.is_some_and(|site| site.resolving.is_some());
        let new_resolving = match &spec.discovery {
            _ if running && same_discovery && same_upstream => None,
            Discovery::Dns(dns) => {
                let discoverer = DnsDiscoverer::new(upstream.clone(), dns)
                    .with_context(|| format!("upstream {}: DNS discovery", spec.name))?;
                Some(Resolving::Dns(discoverer))
            }
            Discovery::Static(endpoints) => names
                .and_then(|names| StaticNames::new(upstream.clone(), endpoints, names))
                .map(Resolving::Names),
            Discovery::Consul(_) | Discovery::Etcd(_) => None,
        };

        Ok(Planned {
            direction: spec.direction,
            name: spec.name.clone(),
            socket,
            upstream,
            discovery: spec.discovery.clone(),
            dns: spec.dns.clone(),
            set_endpoints,
            stack_source: StackSource::of(&spec.section, config),
            protocol: spec.protocol,
            new_stack: None,
            backends: None,
            new_resolving,
            names: names.cloned(),
        })
    }

    /// Plans the stack of an HTTP site: kept when what it is built from is
    /// unchanged, built anew otherwise.
    pub(super) fn plan_stack(
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
                        self.sinks.clone(),
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
                let backends = Backends::build(
                    &planned.upstream,
                    section,
                    &by_name,
                    previous,
                    planned.names.as_ref(),
                );
                if unchanged(Some(&backends)) {
                    planned.backends = old.and_then(|site| site.backends.clone());
                } else {
                    planned.new_stack = Some(stack::outbound(
                        &backends,
                        section,
                        &config.tracing,
                        access_log,
                        self.sinks.clone(),
                    ));
                    planned.backends = Some(Arc::new(backends));
                }
            }
        }
    }
}

pub(super) fn commit_site(
    retired: &mut Vec<DrainController>,
    planned: Planned,
    old: Option<Site>,
) -> Site {
    if let Some(endpoints) = &planned.set_endpoints {
        planned.upstream.set_instances(endpoints);
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
    let (old_listening, old_resolving) = match old {
        Some(site) => (site.listening, site.resolving),
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
    let resolving = match (planned.new_resolving, old_resolving) {
        (Some(task), old) => {
            if let Some(old) = old {
                old.signal();
            }
            let stop = DrainController::new();
            task.spawn(stop.watch());
            Some(stop)
        }
        (None, Some(old)) if resolves(&planned.discovery) => Some(old),
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
        dns: planned.dns,
        stack_source: planned.stack_source,
        stack,
        backends: planned.backends,
        resolving,
    }
}
