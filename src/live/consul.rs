//! The Consul watches across applies: one per distinct query, grouping the
//! upstreams it feeds. A watch is restarted only when its upstreams or the
//! `consul` section changed (compared as a config value, so a new ACL
//! token is a new client), and stopped when no upstream needs it. With a
//! `rate_limit.scope: service`, one more watch counts the healthy instances
//! of `service.name` ([`ServiceInstances::own`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{ConsulConfig, Discovery};
use crate::consul::{Client, HealthQuery};
use crate::discovery::consul::{Watches, query_for};
use crate::discovery::instances::ServiceInstances;
use crate::drain::DrainController;
use crate::upstream::Upstream;

use super::State;

/// The Consul watches and the client they share.
pub(super) struct ConsulWatches {
    /// The `consul` section the client was built from.
    config: ConsulConfig,
    client: Arc<Client>,
    /// Per query: the upstreams it feeds and the task's stop signal.
    groups: BTreeMap<HealthQuery, (Vec<Arc<Upstream>>, DrainController)>,
    /// The watch of this sidecar's own service, for shared rate limits.
    own_service: Option<(HealthQuery, DrainController)>,
}

impl ConsulWatches {
    /// Signals every watch to stop.
    pub(super) fn stop(&self) {
        self.groups.values().for_each(|(_, stop)| stop.signal());
        if let Some((_, stop)) = &self.own_service {
            stop.signal();
        }
    }
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
    own_service: Option<&str>,
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
    let (same_client, mut old_groups, old_own) = match running {
        Some(running) => (
            next.as_ref()
                .is_some_and(|(config, _)| *config == running.config),
            running.groups,
            running.own_service,
        ),
        None => (false, BTreeMap::new(), None),
    };
    let Some((config, client)) = next else {
        old_groups.values().for_each(|(_, stop)| stop.signal());
        if let Some((_, stop)) = old_own {
            stop.signal();
        }
        return;
    };
    let own_query = own_service.map(|service| HealthQuery {
        service: service.to_owned(),
        tags: Vec::new(),
        datacenter: section.datacenter.clone(),
        passing_only: true,
        connect: false,
    });
    let own_service = match (old_own, own_query) {
        (Some((query, stop)), Some(next)) if same_client && query == next => Some((query, stop)),
        (old, next) => {
            if let Some((_, stop)) = old {
                stop.signal();
            }
            next.map(|query| {
                let stop = DrainController::new();
                let mut watch = Watches::default();
                watch.add(query.clone(), ServiceInstances::own());
                watch.spawn(Arc::clone(&client), &stop.watch());
                (query, stop)
            })
        }
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
        own_service,
    });
}
