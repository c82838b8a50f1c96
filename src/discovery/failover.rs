//! Multi-datacenter failover for Consul discovery
//! (`discovery.consul.failover`): the service is watched in the local
//! datacenter and in each failover datacenter; the upstream gets the
//! instances of the first of them, in order and the local one first, that
//! has at least `min_healthy` instances (with `passing_only`, those are the
//! healthy ones). When none has that many, the first with any instance is
//! used; a datacenter that has not answered yet is skipped. So traffic
//! moves to `dc2` as soon as Consul reports the local instances critical,
//! and back as soon as enough pass again — with the usual endpoint
//! swap: requests in flight finish where they are.
//!
//! Every change of datacenter is logged, and
//! `remora_consul_failover_datacenter{upstream,datacenter}` is 1 for the
//! one in use.

use std::sync::{Arc, Mutex, PoisonError};

use crate::discovery::{EndpointSink, Instance};
use crate::endpoint::WeightedAddr;
use crate::telemetry::metrics;

/// The failover of one upstream across its datacenters.
pub struct Failover {
    upstream: Arc<dyn EndpointSink>,
    /// The local datacenter first, then the failover ones in order.
    datacenters: Vec<String>,
    min_healthy: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The last answer of each datacenter; `None` before its first.
    answers: Vec<Option<Vec<Instance>>>,
    /// The datacenter in use.
    active: Option<usize>,
}

impl Failover {
    /// Failover of `upstream` over `datacenters` (local first).
    pub fn new(
        upstream: Arc<dyn EndpointSink>,
        datacenters: Vec<String>,
        min_healthy: u32,
    ) -> Arc<Self> {
        let answers = vec![None; datacenters.len()];
        Arc::new(Self {
            upstream,
            datacenters,
            min_healthy: usize::try_from(min_healthy).unwrap_or(usize::MAX),
            state: Mutex::new(State {
                answers,
                active: None,
            }),
        })
    }

    /// What the watch of datacenter `index` feeds.
    pub fn datacenter(self: &Arc<Self>, index: usize) -> Arc<dyn EndpointSink> {
        Arc::new(Slot {
            failover: Arc::clone(self),
            index,
        })
    }

    fn answered(&self, index: usize, instances: &[Instance]) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.answers[index] = Some(instances.to_vec());
        let enough = |answer: &Option<Vec<Instance>>, least: usize| {
            answer
                .as_ref()
                .is_some_and(|instances| instances.len() >= least)
        };
        let chosen = (state
            .answers
            .iter()
            .position(|a| enough(a, self.min_healthy)))
        .or_else(|| state.answers.iter().position(|a| enough(a, 1)))
        .unwrap_or(0);
        let previous = state.active.replace(chosen);
        if previous != Some(chosen) {
            self.report(previous, chosen, &state);
        } else if chosen != index {
            return;
        }
        let instances = state.answers[chosen].clone().unwrap_or_default();
        drop(state);
        self.upstream.set_instances(&instances);
    }

    fn report(&self, previous: Option<usize>, chosen: usize, state: &State) {
        let upstream = self.upstream.name();
        let to = &self.datacenters[chosen];
        let healthy = state.answers[chosen].as_ref().map_or(0, Vec::len);
        for (i, dc) in self.datacenters.iter().enumerate() {
            metrics::failover_datacenter(upstream, dc, i == chosen);
        }
        match previous {
            None if chosen == 0 => {}
            Some(from) if chosen == 0 => {
                let from = &self.datacenters[from];
                tracing::info!(upstream, %from, %to, healthy, "local datacenter healthy again: failing back");
            }
            _ => {
                let local = state.answers[0].as_ref().map_or(0, Vec::len);
                tracing::warn!(upstream, %to, local_healthy = local, min_healthy = self.min_healthy, "too few healthy instances in the local datacenter: failing over");
            }
        }
    }
}

/// The feed of one datacenter's watch.
struct Slot {
    failover: Arc<Failover>,
    index: usize,
}

impl EndpointSink for Slot {
    fn name(&self) -> &str {
        self.failover.upstream.name()
    }

    fn set_weighted_endpoints(&self, endpoints: &[WeightedAddr]) {
        let instances: Vec<Instance> = (endpoints.iter())
            .map(|endpoint| Instance {
                addr: endpoint.addr,
                weight: endpoint.weight,
                tags: Vec::new(),
                meta: Default::default(),
            })
            .collect();
        self.set_instances(&instances);
    }

    fn set_instances(&self, instances: &[Instance]) {
        self.failover.answered(self.index, instances);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Vec<u16>>>);

    impl EndpointSink for Recorder {
        fn name(&self) -> &str {
            "api"
        }
        fn set_weighted_endpoints(&self, _: &[WeightedAddr]) {}
        fn set_instances(&self, instances: &[Instance]) {
            let ports = instances.iter().map(|i| i.addr.port()).collect();
            self.0.lock().unwrap().push(ports);
        }
    }

    fn instances(ports: &[u16]) -> Vec<Instance> {
        (ports.iter())
            .map(|&port| Instance {
                addr: ([127, 0, 0, 1], port).into(),
                weight: 1,
                tags: Vec::new(),
                meta: Default::default(),
            })
            .collect()
    }

    #[test]
    fn the_first_datacenter_with_enough_instances_wins_in_order() {
        let recorder = Arc::new(Recorder::default());
        let dcs = ["dc1", "dc2", "dc3"].map(String::from).to_vec();
        let failover = Failover::new(recorder.clone(), dcs, 2);
        let [dc1, dc2, dc3] = [0, 1, 2].map(|i| failover.datacenter(i));
        dc1.set_instances(&instances(&[1, 2]));
        dc2.set_instances(&instances(&[21, 22]));
        dc3.set_instances(&instances(&[31, 32]));
        dc1.set_instances(&instances(&[1]));
        dc2.set_instances(&instances(&[21]));
        dc2.set_instances(&instances(&[]));
        dc1.set_instances(&instances(&[1, 2, 3]));
        dc1.set_instances(&instances(&[]));
        dc3.set_instances(&instances(&[]));
        dc2.set_instances(&instances(&[21]));
        assert_eq!(
            *recorder.0.lock().unwrap(),
            [
                vec![1, 2],
                vec![21, 22],  // dc1 down to 1 of 2
                vec![31, 32],  // dc2 down to 1: dc3
                vec![1, 2, 3], // dc1 back
                vec![31, 32],  // dc1 empty
                vec![],        // nobody has any: the local datacenter's
                vec![21],      // nobody has 2: the first with any
            ]
        );
    }
}
