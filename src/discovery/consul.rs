//! Consul discovery: one watch (a loop of blocking health queries) per
//! distinct query — (service, tags, datacenter, connect, passing_only) —
//! fanning each answer out to every upstream that names that query, so two
//! upstreams on the same service cost one long poll.
//!
//! A change reaches the balancers as soon as Consul answers (a blocking
//! query returns at once on change); an unchanged catalog costs one query
//! per `consul.wait`. Queries start at least [`backoff::MIN_INTERVAL`](crate::backoff::MIN_INTERVAL)
//! apart, and errors back off exponentially.
//!
//! Fail static: when Consul is unreachable, slow, or answers an error or
//! garbage, the upstreams keep their last known endpoints indefinitely,
//! with the logs and metrics of `discovery::FailStatic` (the age of the
//! endpoint set is `time()` minus
//! `remora_discovery_last_update_timestamp_seconds{upstream}`).
//!
//! Which instances of an answer become endpoints ([`instances`]): critical
//! ones never, warning ones only when the discovery is not `passing_only`;
//! an instance without a socket address (its address is not an IP address,
//! or its port is 0) is skipped with a debug log, and one whose balancing
//! weight is 0 gets no traffic and is left out.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::backoff::Pacer;
use crate::config::{ConsulConfig, ConsulDiscovery};
use crate::consul::blocking::next_index;
use crate::consul::health::{Health, ServiceEntry};
use crate::consul::{Client, HealthQuery};
use crate::discovery::{EndpointSink, FailStatic, Instance};
use crate::drain::Drain;

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
pub struct Watches(BTreeMap<HealthQuery, Vec<Arc<dyn EndpointSink>>>);

impl Watches {
    /// Adds `upstream` to the watch of `query` (creating it when new).
    pub fn add(&mut self, query: HealthQuery, upstream: Arc<dyn EndpointSink>) {
        self.0.entry(query).or_default().push(upstream);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Starts one task per distinct query; each stops when the drain starts.
    pub fn spawn(self, client: Arc<Client>, drain: &Drain) {
        for (query, upstreams) in self.0 {
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
async fn watch(client: Arc<Client>, query: HealthQuery, upstreams: Vec<Arc<dyn EndpointSink>>) {
    let mut state = FailStatic::new("Consul", &query.service, upstreams);
    let mut pacer = Pacer::new();
    let mut index = 0;
    loop {
        pacer.turn().await;
        match client.health(&query, index).await {
            Ok(answer) => {
                pacer.succeeded();
                index = next_index(index, answer.index);
                state.answered();
                state.publish(instances(&answer.entries, query.passing_only));
            }
            Err(error) => {
                state.failed(&error);
                tokio::time::sleep(pacer.failed()).await;
            }
        }
    }
}

/// The instances among `entries` with their weights: passing ones, plus
/// warning ones when `passing_only` is false, without those of weight 0;
/// sorted by address and without duplicate addresses.
pub fn instances(entries: &[ServiceEntry], passing_only: bool) -> Vec<Instance> {
    let worst = if passing_only {
        Health::Passing
    } else {
        Health::Warning
    };
    let instances = entries
        .iter()
        .filter(|entry| entry.health() <= worst)
        .filter_map(|entry| {
            let Some(addr) = entry.endpoint() else {
                tracing::debug!(service = %entry.service.service, id = %entry.service.id, "instance has no IP address or no port; skipped");
                return None;
            };
            Some(Instance {
                addr,
                weight: entry.weight(),
                tags: entry.service.tags.clone(),
                meta: (entry.service.meta.iter())
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect(),
            })
        })
        .collect();
    Instance::sorted(instances)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// An instance at `address`:80 with checks of these statuses and
    /// these `Weights`.
    fn entry(address: &str, statuses: &[&str], weights: serde_json::Value) -> ServiceEntry {
        let checks: Vec<_> = (statuses.iter())
            .map(|status| json!({ "CheckID": "c", "Status": status }))
            .collect();
        serde_json::from_value(json!({
            "Node": { "Address": "10.0.0.9" },
            "Service": { "Address": address, "Port": 80, "Weights": weights },
            "Checks": checks,
        }))
        .expect("parses")
    }

    #[test]
    fn healthy_addressed_weighted_instances_become_endpoints() {
        let weights = json!({ "Passing": 5, "Warning": 2 });
        let entries = [
            entry("10.0.0.2", &["passing", "warning"], weights.clone()),
            entry("10.0.0.1", &["passing"], weights.clone()),
            entry("10.0.0.1", &["passing"], json!(null)),
            entry("10.0.0.3", &["warning", "critical"], weights.clone()),
            entry("10.0.0.4", &["maintenance"], weights),
            entry("db.internal", &["passing"], json!(null)),
            entry("10.0.0.5", &["passing"], json!({ "Passing": 0 })),
            entry("10.0.0.6", &["warning"], json!({ "Warning": 0 })),
        ];
        let found = |passing_only| -> Vec<(String, u32)> {
            (instances(&entries, passing_only).iter())
                .map(|instance| (instance.addr.to_string(), instance.weight))
                .collect()
        };
        let strict = [("10.0.0.1:80".to_owned(), 5)];
        assert_eq!(found(true), strict);
        let lenient = [("10.0.0.1:80".to_owned(), 5), ("10.0.0.2:80".to_owned(), 2)];
        assert_eq!(found(false), lenient);
    }

    #[test]
    fn instances_keep_tags_and_meta() {
        let json = r#"[{"Node":{"Address":"10.0.0.1"},
            "Service":{"Port":1,"Tags":["v2","canary"],"Meta":{"version":"2.1"}}}]"#;
        let entries: Vec<ServiceEntry> = serde_json::from_str(json).expect("parses");
        let found = instances(&entries, true);
        assert_eq!(found[0].tags, ["v2", "canary"]);
        assert_eq!(found[0].meta["version"], "2.1");
    }
}
