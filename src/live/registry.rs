//! The registry watches (Consul, etcd) across applies: one watch per
//! distinct query (a Consul health query, an etcd service), grouping the
//! upstreams it feeds, all through one client per registry. A watch is
//! restarted only when its upstreams or the registry's section changed
//! (compared as a config value, so a new ACL token or password file is a
//! new client), and stopped when no upstream needs it. An upstream with
//! Consul `failover` is fed through its [`Failover`], one query per
//! datacenter; the failover is kept across applies while its upstream and
//! datacenters stay the same. With a
//! `rate_limit.scope: service`, the watch of `service.name` in the registry
//! the sidecar registers in (Consul: passing instances; etcd: the keys under
//! the service's prefix) also feeds the count of this sidecar's own service
//! ([`ServiceInstances::own`]), sharing the watch when an upstream asks the
//! same query.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{ConsulConfig, ConsulFailover, Discovery, EtcdConfig};
use crate::consul::HealthQuery;
use crate::discovery::EndpointSink;
use crate::discovery::consul::{Watches, query_for};
use crate::discovery::failover::Failover;
use crate::discovery::instances::ServiceInstances;
use crate::drain::{Drain, DrainController};
use crate::upstream::Upstream;

use super::site::Site;

/// One registry's watches and the client they share.
pub(super) struct RegistryWatches<Query, Section, Client> {
    /// The section the client was built from.
    section: Section,
    client: Arc<Client>,
    /// Per query: what it feeds (upstreams, a failover's datacenters, the
    /// own service's count) and the task's stop signal.
    groups: BTreeMap<Query, (Vec<Arc<dyn EndpointSink>>, DrainController)>,
    /// The Consul failovers, one per upstream with `failover` (none for
    /// etcd).
    failovers: Vec<FailoverFeed>,
}

pub(super) type ConsulWatches = RegistryWatches<HealthQuery, ConsulConfig, crate::consul::Client>;
pub(super) type EtcdWatches = RegistryWatches<String, EtcdConfig, crate::etcd::Client>;

/// The failover of one upstream and the feed of each of its datacenters.
pub(super) struct FailoverFeed {
    upstream: Arc<Upstream>,
    config: ConsulFailover,
    /// The local datacenter's query first, then one per failover one.
    queries: Vec<HealthQuery>,
    feeds: Vec<Arc<dyn EndpointSink>>,
}

impl FailoverFeed {
    fn new(upstream: &Arc<Upstream>, config: &ConsulFailover, local: HealthQuery) -> Self {
        let failover_queries = (config.datacenters.iter()).map(|dc| HealthQuery {
            datacenter: Some(dc.clone()),
            ..local.clone()
        });
        let queries: Vec<HealthQuery> = std::iter::once(local.clone())
            .chain(failover_queries)
            .collect();
        let names = (queries.iter())
            .map(|query| {
                query
                    .datacenter
                    .clone()
                    .unwrap_or_else(|| "local".to_owned())
            })
            .collect();
        let sink: Arc<dyn EndpointSink> = Arc::clone(upstream) as Arc<dyn EndpointSink>;
        let failover = Failover::new(sink, names, config.min_healthy);
        let feeds = (0..queries.len()).map(|i| failover.datacenter(i)).collect();
        Self {
            upstream: Arc::clone(upstream),
            config: config.clone(),
            queries,
            feeds,
        }
    }

    fn feeds_alike(
        &self,
        upstream: &Arc<Upstream>,
        config: &ConsulFailover,
        local: &HealthQuery,
    ) -> bool {
        Arc::ptr_eq(&self.upstream, upstream) && self.config == *config && self.queries[0] == *local
    }
}

/// A registry's client for the next configuration, with the section it was
/// built from.
pub(super) type PlannedClient<Section, Client> = (Section, Arc<Client>);

impl<Query, Section: PartialEq + Clone, Client> RegistryWatches<Query, Section, Client> {
    /// Signals every watch to stop.
    pub(super) fn stop(&self) {
        self.groups.values().for_each(|(_, stop)| stop.signal());
    }

    /// The client for `section`: the running one while the section is
    /// unchanged, else a new one from `build`.
    pub(super) fn plan_client<E>(
        running: Option<&Self>,
        section: &Section,
        build: impl FnOnce(&Section) -> Result<Client, E>,
    ) -> Result<PlannedClient<Section, Client>, E> {
        let client = match running {
            Some(running) if running.section == *section => Arc::clone(&running.client),
            _ => Arc::new(build(section)?),
        };
        Ok((section.clone(), client))
    }
}

/// The upstreams of `sites` grouped by the query `query_of` finds in their
/// discovery (`None`: not this registry's).
fn sinks_by_query<Query: Ord>(
    sites: &[Site],
    query_of: impl Fn(&Discovery) -> Option<Query>,
) -> BTreeMap<Query, Vec<Arc<dyn EndpointSink>>> {
    let mut groups: BTreeMap<Query, Vec<Arc<dyn EndpointSink>>> = BTreeMap::new();
    for site in sites {
        if let Some(query) = query_of(&site.discovery) {
            let upstream: Arc<Upstream> = Arc::clone(&site.upstream);
            groups.entry(query).or_default().push(upstream);
        }
    }
    groups
}

/// Restarts through `spawn` the watches of `groups` whose sinks or client
/// changed, stops those no longer needed. Returns the running watches
/// (keeping `failovers`), `None` when `next` is (nothing uses the registry).
fn commit<Query: Ord + Clone, Section: PartialEq, Client>(
    groups: BTreeMap<Query, Vec<Arc<dyn EndpointSink>>>,
    failovers: Vec<FailoverFeed>,
    running: Option<RegistryWatches<Query, Section, Client>>,
    next: Option<PlannedClient<Section, Client>>,
    spawn: impl Fn(&Arc<Client>, &Query, Vec<Arc<dyn EndpointSink>>, &Drain),
) -> Option<RegistryWatches<Query, Section, Client>> {
    let (same_client, mut old_groups) = match running {
        Some(running) => (
            next.as_ref()
                .is_some_and(|(section, _)| *section == running.section),
            running.groups,
        ),
        None => (false, BTreeMap::new()),
    };
    let Some((section, client)) = next else {
        old_groups.values().for_each(|(_, stop)| stop.signal());
        return None;
    };
    let mut watches = BTreeMap::new();
    for (query, sinks) in groups {
        let kept = old_groups.remove(&query).and_then(|(fed, stop)| {
            let same_sinks =
                fed.len() == sinks.len() && fed.iter().zip(&sinks).all(|(a, b)| Arc::ptr_eq(a, b));
            if same_client && same_sinks {
                Some(stop)
            } else {
                stop.signal();
                None
            }
        });
        let stop = kept.unwrap_or_else(|| {
            let stop = DrainController::new();
            spawn(&client, &query, sinks.clone(), &stop.watch());
            stop
        });
        watches.insert(query, (sinks, stop));
    }
    old_groups.values().for_each(|(_, stop)| stop.signal());
    Some(RegistryWatches {
        section,
        client,
        groups: watches,
        failovers,
    })
}

/// The Consul watches after an apply; `section` gives each query its
/// default datacenter. An upstream with `failover` is fed through its
/// failover (the running one while alike), one query per datacenter.
/// `own_service` (`service.name` when a rate limit is shared across the
/// service) adds the watch of its passing instances.
pub(super) fn commit_consul(
    sites: &[Site],
    mut running: Option<ConsulWatches>,
    next: Option<PlannedClient<ConsulConfig, crate::consul::Client>>,
    section: &ConsulConfig,
    own_service: Option<&str>,
) -> Option<ConsulWatches> {
    let mut old_failovers = (running.as_mut())
        .map(|running| std::mem::take(&mut running.failovers))
        .unwrap_or_default();
    let mut groups: BTreeMap<HealthQuery, Vec<Arc<dyn EndpointSink>>> = BTreeMap::new();
    let mut failovers = Vec::new();
    for site in sites {
        let Discovery::Consul(discovery) = &site.discovery else {
            continue;
        };
        let query = query_for(discovery, section);
        let Some(failover) = &discovery.failover else {
            let upstream: Arc<Upstream> = Arc::clone(&site.upstream);
            groups.entry(query).or_default().push(upstream);
            continue;
        };
        let kept = (old_failovers.iter())
            .position(|feed| feed.feeds_alike(&site.upstream, failover, &query))
            .map(|i| old_failovers.swap_remove(i));
        let feed = kept.unwrap_or_else(|| FailoverFeed::new(&site.upstream, failover, query));
        for (query, sink) in feed.queries.iter().zip(&feed.feeds) {
            groups
                .entry(query.clone())
                .or_default()
                .push(Arc::clone(sink));
        }
        failovers.push(feed);
    }
    if let Some(service) = own_service {
        let query = HealthQuery {
            service: service.to_owned(),
            tags: Vec::new(),
            datacenter: section.datacenter.clone(),
            passing_only: true,
            connect: false,
        };
        let own: Arc<dyn EndpointSink> = ServiceInstances::own();
        groups.entry(query).or_default().push(own);
    }
    commit(
        groups,
        failovers,
        running,
        next,
        |client, query, upstreams, drain| {
            let mut watch = Watches::default();
            for upstream in upstreams {
                watch.add(query.clone(), upstream);
            }
            watch.spawn(Arc::clone(client), drain);
        },
    )
}

/// The etcd watches after an apply: one per service. `own_service` (as for
/// Consul) adds the watch of this sidecar's service.
pub(super) fn commit_etcd(
    sites: &[Site],
    running: Option<EtcdWatches>,
    next: Option<PlannedClient<EtcdConfig, crate::etcd::Client>>,
    own_service: Option<&str>,
) -> Option<EtcdWatches> {
    let prefix = next.as_ref().map(|(section, _)| section.clone());
    let query_of = |discovery: &Discovery| match discovery {
        Discovery::Etcd(discovery) => Some(discovery.service.clone()),
        _ => None,
    };
    let mut groups = sinks_by_query(sites, query_of);
    if let Some(service) = own_service {
        let own: Arc<dyn EndpointSink> = ServiceInstances::own();
        groups.entry(service.to_owned()).or_default().push(own);
    }
    commit(
        groups,
        Vec::new(),
        running,
        next,
        |client, service, upstreams, drain| {
            let Some(section) = &prefix else { return };
            crate::discovery::etcd::spawn(
                Arc::clone(client),
                service.clone(),
                section.service_prefix(service),
                upstreams,
                drain,
            );
        },
    )
}
