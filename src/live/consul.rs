//! The Consul watches across applies: one per distinct query, grouping the
//! upstreams it feeds. A watch is restarted only when its upstreams or the
//! `consul` section changed (compared as a config value, so a new ACL
//! token is a new client), and stopped when no upstream needs it. An
//! upstream with `failover` is fed through its [`Failover`], one query per
//! datacenter; the failover is kept across applies while its upstream and
//! datacenters stay the same.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{ConsulConfig, ConsulFailover, Discovery};
use crate::consul::{Client, HealthQuery};
use crate::discovery::EndpointSink;
use crate::discovery::consul::{Watches, query_for};
use crate::discovery::failover::Failover;
use crate::drain::DrainController;
use crate::upstream::Upstream;

use super::State;

/// The Consul watches and the client they share.
pub(super) struct ConsulWatches {
    /// The `consul` section the client was built from.
    config: ConsulConfig,
    client: Arc<Client>,
    /// Per query: the upstreams (or failover feeds) it feeds and the
    /// task's stop signal.
    groups: BTreeMap<HealthQuery, (Vec<Arc<dyn EndpointSink>>, DrainController)>,
    failovers: Vec<FailoverFeed>,
}

/// The failover of one upstream and the feed of each of its datacenters.
struct FailoverFeed {
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

impl ConsulWatches {
    /// Signals every watch to stop.
    pub(super) fn stop(&self) {
        self.groups.values().for_each(|(_, stop)| stop.signal());
    }
}

/// True when `a` and `b` are the same sink.
fn same_sink(a: &Arc<dyn EndpointSink>, b: &Arc<dyn EndpointSink>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// The client the watches of `config` use: the running one while the
/// `consul` section is unchanged.
pub(super) fn plan_client(
    state: &State,
    config: &ConsulConfig,
) -> anyhow::Result<(ConsulConfig, Arc<Client>)> {
    let client = match &state.consul {
        Some(running) if running.config == *config => Arc::clone(&running.client),
        _ => Arc::new(Client::from_config(config)?),
    };
    Ok((config.clone(), client))
}

/// Regroups the Consul-discovered upstreams by query; restarts the watches
/// whose upstreams or client changed, stops those no longer needed.
pub(super) fn commit_consul(
    state: &mut State,
    next: Option<(ConsulConfig, Arc<Client>)>,
    section: &ConsulConfig,
) {
    let running = state.consul.take();
    let (same_client, mut old_groups, mut old_failovers) = match running {
        Some(running) => (
            next.as_ref()
                .is_some_and(|(config, _)| *config == running.config),
            running.groups,
            running.failovers,
        ),
        None => (false, BTreeMap::new(), Vec::new()),
    };
    let mut groups: BTreeMap<HealthQuery, Vec<Arc<dyn EndpointSink>>> = BTreeMap::new();
    let mut failovers = Vec::new();
    for site in &state.sites {
        let Discovery::Consul(discovery) = &site.discovery else {
            continue;
        };
        let query = query_for(discovery, section);
        let Some(failover) = &discovery.failover else {
            let sink: Arc<dyn EndpointSink> = Arc::clone(&site.upstream) as Arc<dyn EndpointSink>;
            groups.entry(query).or_default().push(sink);
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
    let Some((config, client)) = next else {
        old_groups.values().for_each(|(_, stop)| stop.signal());
        return;
    };
    let mut watches = BTreeMap::new();
    for (query, upstreams) in groups {
        let kept = old_groups.remove(&query).and_then(|(fed, stop)| {
            let same_upstreams = fed.len() == upstreams.len()
                && fed.iter().zip(&upstreams).all(|(a, b)| same_sink(a, b));
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
                watch.add(query.clone(), upstream.clone());
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
        failovers,
    });
}
