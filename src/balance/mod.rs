//! Load balancing over an upstream's endpoint set.
//!
//! A [`Balancer`] is built once per endpoint set, for one
//! [`LoadBalancingPolicy`], and is immutable afterwards: when service
//! discovery changes the set, the caller builds a new `Balancer` and swaps it
//! in (arc-swap). Endpoint state that must survive such a swap (in-flight
//! counts, latency estimates, backoff) lives in each endpoint's
//! [`EndpointLoad`], which the endpoint owns, so reusing the endpoint `Arc`s
//! in the new set keeps it.
//!
//! [`Balancer::pick`] is on the hot path of every request: it reads the clock
//! once, reads a few atomics, and neither allocates nor locks. Every policy
//! skips endpoints that are backing off after connect failures unless all of
//! them are, and avoids the `exclude`d endpoints (a retry's, a hedge's) when another one is
//! eligible; the exact fallback order is in `candidates.rs`. The endpoint a
//! pick settles on is claimed, so that when its backoff has just expired only
//! one request probes it (`load.rs`, "One probe per expired backoff").
//!
//! An endpoint failing its active health checks is never picked, and one
//! ejected by outlier detection only when every endpoint is unavailable —
//! unless the upstream is in panic (`panic.rs`: too few endpoints healthy),
//! when health is ignored altogether. With zones (`locality.rs`), a pick
//! first chooses the zone, then the policy picks within it.
//!
//! # Weights
//!
//! Every endpoint has a weight ≥ 1 (Consul's `Service.Weights`, a static
//! endpoint's `weight`, a DNS SRV record's weight): an endpoint of weight 3 is meant to take three
//! times the traffic of one of weight 1. Each policy honours it in its own
//! terms — round robin by smooth weighted round robin (nginx), random and
//! the candidate draws of P2C by drawing in proportion to weight, least
//! request and P2C by comparing load divided by weight, ring hash by giving
//! each endpoint virtual nodes in proportion to its weight. With equal
//! weights every policy behaves exactly as without weights.
//!
//! Policies: [`RoundRobin`](LoadBalancingPolicy::RoundRobin) (`round_robin.rs`),
//! [`Random`](LoadBalancingPolicy::Random) (`random.rs`),
//! [`LeastRequest`](LoadBalancingPolicy::LeastRequest) (`least_request.rs`),
//! [`P2cEwma`](LoadBalancingPolicy::P2cEwma), the default (`p2c_ewma.rs`),
//! and [`RingHash`](LoadBalancingPolicy::RingHash) (`ring_hash.rs`).

mod candidates;
mod least_request;
mod load;
mod locality;
mod p2c_ewma;
mod panic;
mod random;
mod ring_hash;
mod round_robin;

use std::sync::Arc;

use tokio::time::Instant;

use crate::clock;
use crate::config::LoadBalancingPolicy;

use candidates::Candidates;
pub use load::{DEFAULT_BACKOFF, EndpointLoad, InFlight};
pub use locality::Zones;
pub use panic::PanicMode;
use ring_hash::Ring;
use round_robin::RoundRobin;

/// What the balancer needs of an endpoint.
pub trait Target: Send + Sync + 'static {
    /// The endpoint's load state, shared by every balancer it is part of.
    fn load(&self) -> &EndpointLoad;

    /// True while outlier detection keeps the endpoint out.
    fn is_ejected(&self, _now: Instant) -> bool {
        false
    }

    /// False while the endpoint fails its active health checks.
    fn passes_checks(&self) -> bool {
        true
    }

    /// True while the endpoint, which joined a running set, has no result
    /// of its active health checks yet: it is picked only when no checked
    /// endpoint can be, and left out of the panic and zone counts.
    fn awaits_first_check(&self) -> bool {
        false
    }

    /// Healthy as the panic threshold and the zone choice count it: passing
    /// its checks, not ejected. Only for endpoints that are counted at all
    /// (not [awaiting a first check](Self::awaits_first_check)).
    fn is_healthy(&self, now: Instant) -> bool {
        self.passes_checks() && !self.is_ejected(now)
    }
}

/// One endpoint of a set given to [`Balancer::new`].
pub struct Member<T> {
    /// Stable id (e.g. `"10.0.0.1:8080"`), which ring hash uses to place
    /// the endpoint on the ring; ids should be unique.
    pub id: String,
    pub target: Arc<T>,
    /// Relative share of the traffic; 0 counts as 1.
    pub weight: u32,
}

/// An immutable endpoint set with a balancing policy.
pub struct Balancer<T: Target> {
    targets: Vec<Arc<T>>,
    weights: Vec<u32>,
    /// Every weight is the same: the policies take their unweighted paths.
    uniform: bool,
    policy: Policy,
    panic: Option<Arc<PanicMode>>,
    zones: Option<Zones>,
}

enum Policy {
    RoundRobin(RoundRobin),
    Random,
    LeastRequest,
    P2cEwma,
    RingHash(Ring),
}

impl<T: Target> Balancer<T> {
    /// A balancer over `members`, in that order.
    pub fn new(policy: LoadBalancingPolicy, members: Vec<Member<T>>) -> Self {
        let weights: Vec<u32> = members.iter().map(|m| m.weight.max(1)).collect();
        let uniform = weights.windows(2).all(|pair| pair[0] == pair[1]);
        let policy = match policy {
            LoadBalancingPolicy::RoundRobin => {
                Policy::RoundRobin(RoundRobin::new(&weights, uniform))
            }
            LoadBalancingPolicy::Random => Policy::Random,
            LoadBalancingPolicy::LeastRequest => Policy::LeastRequest,
            LoadBalancingPolicy::P2cEwma => Policy::P2cEwma,
            LoadBalancingPolicy::RingHash => {
                let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
                Policy::RingHash(Ring::new(&ids, &weights))
            }
        };
        Self {
            targets: members.into_iter().map(|m| m.target).collect(),
            weights,
            uniform,
            policy,
            panic: None,
            zones: None,
        }
    }

    /// The same balancer, choosing a zone first (`locality.rs`).
    pub fn with_zones(mut self, zones: Zones) -> Self {
        self.zones = Some(zones);
        self
    }

    /// The same balancer, going into panic as `panic` says.
    pub fn with_panic(mut self, panic: Arc<PanicMode>) -> Self {
        self.panic = Some(panic);
        self
    }

    /// Chooses an endpoint for a request. `None` if the set is empty, or
    /// every endpoint fails its health checks and the upstream is not in
    /// panic.
    ///
    /// `hash_key` is used by ring hash only (without one it picks at random).
    /// `exclude` are the endpoints a retry or hedge should avoid (those the
    /// request's earlier tries went to): they are skipped whenever another
    /// endpoint can be chosen.
    pub fn pick(&self, hash_key: Option<&[u8]>, exclude: &[Arc<T>]) -> Option<Arc<T>> {
        if self.targets.is_empty() {
            return None;
        }
        let now = clock::now();
        let panic = self.in_panic(now);
        let zone = match &self.zones {
            Some(zones) if !panic => zones.choose(&self.targets, now).map(|zone| (zones, zone)),
            _ => None,
        };
        // In the chosen zone, only the strictest filter (available, checked,
        // not excluded: a retry or hedge leaves the zone rather than go back
        // to an endpoint it should avoid); then anywhere, as without zones.
        let tiers = || {
            Candidates::tiers(
                &self.targets,
                &self.weights,
                self.uniform,
                now,
                exclude,
                panic,
            )
        };
        let in_zone = zone.and_then(|zone| tiers().next().map(|c| c.in_zone(zone)));
        let anywhere = tiers();
        in_zone
            .into_iter()
            .chain(anywhere)
            .find_map(|c| self.pick_claimed(&c, hash_key))
            .map(|i| Arc::clone(&self.targets[i]))
    }

    /// True when health is to be ignored for this pick (`panic.rs`).
    /// Endpoints awaiting their first check are not counted.
    fn in_panic(&self, now: Instant) -> bool {
        match &self.panic {
            Some(panic) if !panic.is_off() => {
                let (mut healthy, mut counted) = (0, 0);
                for target in self.targets.iter().filter(|t| !t.awaits_first_check()) {
                    counted += 1;
                    healthy += usize::from(target.is_healthy(now));
                }
                panic.judge(healthy, counted)
            }
            _ => false,
        }
    }

    /// Runs the policy over `c` and, when `c` respects backoff, claims the
    /// chosen endpoint ([`EndpointLoad::claim_probe`]): an endpoint whose
    /// backoff just expired goes to one request only. A pick that loses that
    /// race sees the endpoint unavailable from then on and picks again, so
    /// each retry has one endpoint fewer to choose from.
    fn pick_claimed(&self, c: &Candidates<'_, T>, hash_key: Option<&[u8]>) -> Option<usize> {
        for _ in 0..=self.targets.len() {
            let i = self.pick_in(c, hash_key)?;
            if !c.respects_backoff() || self.targets[i].load().claim_probe(c.now()) {
                return Some(i);
            }
        }
        None
    }

    fn pick_in(&self, c: &Candidates<'_, T>, hash_key: Option<&[u8]>) -> Option<usize> {
        match (&self.policy, hash_key) {
            (Policy::RoundRobin(rr), _) => rr.pick(c),
            (Policy::Random, _) | (Policy::RingHash(_), None) => random::pick(c),
            (Policy::LeastRequest, _) => least_request::pick(c),
            (Policy::P2cEwma, _) => p2c_ewma::pick(c),
            (Policy::RingHash(ring), Some(key)) => ring.pick(c, key),
        }
    }

    /// The endpoints, in the order given to [`new`](Self::new).
    pub fn targets(&self) -> &[Arc<T>] {
        &self.targets
    }

    /// The endpoints' weights, in the order of [`targets`](Self::targets).
    pub fn weights(&self) -> &[u32] {
        &self.weights
    }

    /// Number of endpoints.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// True if there are no endpoints (every pick returns `None`).
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

#[cfg(test)]
mod tests;
