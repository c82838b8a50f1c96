//! A site — the inbound application or an upstream — across applies: its
//! upstream (kept, succeeded or new), discovery task, listener and stack
//! are planned against the running site (everything that can fail), then
//! committed (nothing can fail).

use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;

use crate::config::{Config, Discovery};
use crate::context::Direction;
use crate::discovery::dns::DnsDiscoverer;
use crate::drain::DrainController;
use crate::endpoint::WeightedAddr;
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
use super::spec::{Section, Spec, StackSource, access_log_share, weighted};
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
    /// What the stack was built from.
    stack_source: StackSource,
    /// `None` for a TCP upstream.
    pub(super) stack: Option<StackSlot>,
    /// The stack's routing backends (outbound HTTP).
    pub(super) backends: Option<Arc<Backends>>,
    /// The DNS discovery task, when discovery is `dns`.
    pub(super) dns: Option<DrainController>,
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
    /// A static list to set on the upstream at commit.
    set_endpoints: Option<Vec<WeightedAddr>>,
    stack_source: StackSource,
    protocol: Option<HttpProtocol>,
    /// A new stack to install.
    new_stack: Option<HttpService>,
    backends: Option<Arc<Backends>>,
    /// A new DNS discovery task.
    new_dns: Option<DnsDiscoverer>,
}

impl LiveProxy {
    /// The upstream, discovery and listener of `spec` (the stack comes later).
    pub(super) async fn plan_site(
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
                    Discovery::Consul(_) | Discovery::Dns(_) | Discovery::Etcd(_) => Vec::new(),
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
                    let discoverer = DnsDiscoverer::new(upstream.clone(), dns)
                        .with_context(|| format!("upstream {}: DNS discovery", spec.name))?;
                    Some(discoverer)
                }
            }
            Discovery::Static(_) | Discovery::Consul(_) | Discovery::Etcd(_) => None,
        };

        Ok(Planned {
            direction: spec.direction,
            name: spec.name.clone(),
            socket,
            upstream,
            discovery: spec.discovery.clone(),
            set_endpoints,
            stack_source: StackSource::of(&spec.section, config),
            protocol: spec.protocol,
            new_stack: None,
            backends: None,
            new_dns,
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
                let backends = Backends::build(&planned.upstream, section, &by_name, previous);
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
