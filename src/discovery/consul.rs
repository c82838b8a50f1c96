//! Consul discovery: one watch (a loop of blocking health queries) per
//! distinct query — (service, tags, datacenter, connect, passing_only) —
//! fanning each answer out to every upstream that names that query, so two
//! upstreams on the same service cost one long poll.
//!
//! A change reaches the balancers as soon as Consul answers (a blocking
//! query returns at once on change); an unchanged catalog costs one query
//! per `consul.wait`. Queries start at least [`blocking::MIN_INTERVAL`]
//! apart, and errors back off exponentially.
//!
//! Fail static: when Consul is unreachable, slow, or answers an error or
//! garbage, the upstreams keep their last known endpoints indefinitely.
//! A warning is logged when a watch starts failing and an info line when it
//! recovers — once per state change, not per attempt; every failed query
//! counts in `remora_discovery_errors_total{upstream}`. Every successful
//! answer sets `remora_discovery_last_update_timestamp_seconds{upstream}`
//! (the age of the endpoint set is `time()` minus that).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{ConsulConfig, ConsulDiscovery};
use crate::consul::blocking::{Pacer, next_index};
use crate::consul::{Client, HealthQuery, health};
use crate::discovery::Instance;
use crate::drain::Drain;
use crate::telemetry::metrics;
use crate::upstream::Upstream;

/// The query an upstream's `discovery.consul` asks for; its datacenter
/// defaults to `consul.datacenter`.
pub fn query_for(discovery: &ConsulDiscovery, consul: &ConsulConfig) -> HealthQuery {
    HealthQuery {
        service: discovery.service.clone(),
        tags: discovery.tags.clone(),
        datacenter: discovery
            .datacenter
            .clone()
            .or_else(|| consul.datacenter.clone()),
        passing_only: discovery.passing_only,
        connect: discovery.connect,
    }
}

/// Upstreams grouped by the query that feeds them.
#[derive(Default)]
pub struct Watches(BTreeMap<HealthQuery, Vec<Arc<Upstream>>>);

impl Watches {
    /// Adds `upstream` to the watch of `query` (creating it when new).
    pub fn add(&mut self, query: HealthQuery, upstream: Arc<Upstream>) {
        self.0.entry(query).or_default().push(upstream);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Starts one task per distinct query; each stops when the drain starts.
    pub fn spawn(self, client: Arc<Client>, drain: &Drain) {
        for (query, upstreams) in self.0 {
            for upstream in &upstreams {
                metrics::register_discovery(upstream.name());
            }
            let mut drain = drain.clone();
            let watch = watch(Arc::clone(&client), query, upstreams);
            tokio::spawn(async move {
                tokio::select! {
                    () = watch => {}
                    () = drain.signaled() => {}
                }
            });
        }
    }
}

/// Runs one watch forever.
async fn watch(client: Arc<Client>, query: HealthQuery, upstreams: Vec<Arc<Upstream>>) {
    let names: Vec<&str> = upstreams.iter().map(|u| u.name()).collect();
    let names = names.join(",");
    tracing::info!(service = %query.service, upstreams = %names, "watching Consul");
    let mut pacer = Pacer::new();
    let mut index = 0;
    let mut current: Option<Vec<Instance>> = None;
    let mut failing = false;
    loop {
        pacer.turn().await;
        match client.health(&query, index).await {
            Ok(answer) => {
                pacer.succeeded();
                if failing {
                    failing = false;
                    tracing::info!(service = %query.service, upstreams = %names, "Consul discovery recovered");
                }
                index = next_index(index, answer.index);
                let instances = health::instances(&answer.entries, query.passing_only);
                if current.as_ref() != Some(&instances) {
                    tracing::info!(service = %query.service, upstreams = %names, endpoints = instances.len(), "Consul endpoints changed");
                    for upstream in &upstreams {
                        upstream.set_instances(&instances);
                    }
                    current = Some(instances);
                }
                for upstream in &upstreams {
                    metrics::discovery_updated(upstream.name());
                }
            }
            Err(error) => {
                for upstream in &upstreams {
                    metrics::discovery_error(upstream.name());
                }
                if !failing {
                    failing = true;
                    tracing::warn!(service = %query.service, upstreams = %names, %error, "Consul discovery failing; keeping the last known endpoints");
                }
                tokio::time::sleep(pacer.failed()).await;
            }
        }
    }
}
