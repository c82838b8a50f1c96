//! An upstream service: its name, how remora talks to it, and its current
//! endpoint set behind a load balancer.
//!
//! The endpoint set is swapped atomically (arc-swap) when discovery reports a
//! change; endpoints present before and after keep their connections and load
//! figures, removed ones live on until their in-flight requests finish.
//!
//! A discovered upstream also feeds its routing subsets: each subset is an
//! upstream of its own (own balancer, breaker and outlier state) whose
//! endpoints are the parent's instances that match its tags and meta, set
//! again on every discovery change. The parent holds subsets weakly, so the
//! subsets of a router that was replaced (config reload) simply fall away.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::{HeaderName, Version};

use tokio::time::Instant;

use crate::balance::{Balancer, DEFAULT_BACKOFF, Member, PanicMode, Zones};
use crate::client::ClientSettings;
use crate::config::{
    CircuitBreakerConfig, HashOn, HealthCheck, LoadBalancingPolicy, OutlierDetection,
    RateLimitConfig, SubsetConfig, UpstreamProtocol,
};
use crate::context::Direction;
use crate::discovery::{EndpointSink, Instance};
use crate::endpoint::{Endpoint, UpstreamVersion, WeightedAddr};
use crate::error::{ErrorKind, ProxyError};
use crate::health_check::HealthChecker;
use crate::middleware::circuit_breaker::CircuitBreaker;
use crate::outcome::Outcome;
use crate::outlier::OutlierDetector;
use crate::telemetry::metrics;
use crate::telemetry::totals::RequestTotals;

/// How an upstream is reached; fixed for the upstream's life (a reload that
/// changes them builds a [`successor`](Upstream::successor)).
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSettings {
    pub name: String,
    pub direction: Direction,
    pub protocol: UpstreamProtocol,
    pub policy: LoadBalancingPolicy,
    pub hash_on: Option<HashOn>,
    pub client: ClientSettings,
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    pub outlier_detection: Option<OutlierDetection>,
    pub health_check: Option<HealthCheck>,
    /// Envoy's healthy panic threshold, in percent (`balance::PanicMode`).
    pub panic_threshold: u32,
    /// This sidecar's zone, when balancing prefers it (`balance::Zones`).
    pub local_zone: Option<Arc<str>>,
    /// The listener's rate limit, shown by the admin `/upstreams`.
    pub rate_limit: Option<RateLimitConfig>,
}

/// Every upstream of the running configuration, the inbound application
/// first; replaced whole when a reload changes the set (admin, readiness and
/// the idle sweeper read it).
pub type UpstreamSet = ArcSwap<Vec<Arc<Upstream>>>;

/// The upstreams built for routing backends (subsets, static lists, named
/// `<upstream>/<backend>`), held weakly: they live as long as a stack uses
/// them.
pub type BackendSet = ArcSwap<Vec<Weak<Upstream>>>;

/// An upstream and its live endpoint set.
pub struct Upstream {
    pub settings: UpstreamSettings,
    balancer: ArcSwap<Balancer<Endpoint>>,
    /// How endpoints join a balancer: checked, panic-aware.
    endpoints: EndpointFactory,
    circuit_breaker: Option<Arc<CircuitBreaker>>,
    outlier: Option<OutlierDetector>,
    totals: Arc<RequestTotals>,
    /// When the endpoint set was last set, in ms since the Unix epoch.
    last_update_ms: AtomicU64,
    /// The last discovered instances, with tags and meta.
    instances: ArcSwap<Vec<Instance>>,
    /// The zone of each endpoint that has one (from its instance).
    zones: ArcSwap<HashMap<SocketAddr, Arc<str>>>,
    /// Routing subsets fed from `instances`.
    subsets: Mutex<Vec<(SubsetConfig, Weak<Upstream>)>>,
}

impl Upstream {
    pub fn new(settings: UpstreamSettings, endpoints: &[WeightedAddr]) -> Self {
        let factory = EndpointFactory::new(&settings);
        let balancer = factory.balancer(endpoints, &HashMap::new(), &HashMap::new());
        let circuit_breaker = new_circuit_breaker(&settings);
        Self::assemble(
            settings,
            factory,
            balancer,
            circuit_breaker,
            Arc::default(),
            unix_ms_now(),
        )
    }

    /// A replacement for this upstream under new `settings` (same name), for
    /// a configuration reload. It takes over the request totals and the
    /// endpoint set — each endpoint with its connection pool, load figures,
    /// outlier and health-check state when neither the client settings nor
    /// the health checks changed, fresh otherwise — and the circuit breaker, state included, when its
    /// configuration did not change, and the last discovered instances (for
    /// the routing subsets a new stack adds). Requests in flight keep `self`.
    pub fn successor(&self, settings: UpstreamSettings) -> Self {
        let current = self.balancer.load();
        let addrs: Vec<WeightedAddr> = (current.targets().iter())
            .zip(current.weights())
            .map(|(endpoint, &weight)| WeightedAddr {
                addr: endpoint.addr,
                weight,
            })
            .collect();
        let same_endpoints = settings.client == self.settings.client
            && settings.health_check == self.settings.health_check
            && settings.protocol == self.settings.protocol;
        let existing: HashMap<SocketAddr, Arc<Endpoint>> = if same_endpoints {
            current
                .targets()
                .iter()
                .map(|endpoint| (endpoint.addr, Arc::clone(endpoint)))
                .collect()
        } else {
            HashMap::new()
        };
        let factory = EndpointFactory::new(&settings);
        let zones = self.zones.load_full();
        let balancer = factory.balancer(&addrs, &existing, &zones);
        let circuit_breaker = if settings.circuit_breaker == self.settings.circuit_breaker {
            self.circuit_breaker.clone()
        } else {
            new_circuit_breaker(&settings)
        };
        let last_update = self.last_update_ms.load(Relaxed);
        let successor = Self::assemble(
            settings,
            factory,
            balancer,
            circuit_breaker,
            self.totals(),
            last_update,
        );
        // New routing subsets select from these until discovery answers again.
        successor.instances.store(self.instances.load_full());
        successor.zones.store(zones);
        successor
    }

    fn assemble(
        settings: UpstreamSettings,
        endpoints: EndpointFactory,
        balancer: Balancer<Endpoint>,
        circuit_breaker: Option<Arc<CircuitBreaker>>,
        totals: Arc<RequestTotals>,
        last_update_ms: u64,
    ) -> Self {
        let outlier = settings
            .outlier_detection
            .as_ref()
            .map(|config| OutlierDetector::new(config, &settings.name));
        let upstream = Self {
            settings,
            balancer: ArcSwap::from_pointee(balancer),
            endpoints,
            circuit_breaker,
            outlier,
            totals,
            last_update_ms: AtomicU64::new(last_update_ms),
            instances: ArcSwap::default(),
            zones: ArcSwap::default(),
            subsets: Mutex::default(),
        };
        upstream.publish_endpoint_count();
        upstream
    }

    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// The current balancer; cheap, lock-free.
    pub fn balancer(&self) -> arc_swap::Guard<Arc<Balancer<Endpoint>>> {
        self.balancer.load()
    }

    /// Replaces the endpoint set. Endpoints that stay keep their state
    /// (their weight may change).
    pub fn set_weighted_endpoints(&self, addrs: &[WeightedAddr]) {
        let current = self.balancer.load();
        let existing: HashMap<SocketAddr, Arc<Endpoint>> = current
            .targets()
            .iter()
            .map(|endpoint| (endpoint.addr, Arc::clone(endpoint)))
            .collect();
        let next = self
            .endpoints
            .balancer(addrs, &existing, &self.zones.load());
        self.balancer.store(Arc::new(next));
        self.last_update_ms.store(unix_ms_now(), Relaxed);
        self.publish_endpoint_count();
    }

    /// Replaces the endpoint set with discovered instances and updates every
    /// subset fed from them.
    pub fn set_instances(&self, instances: &[Instance]) {
        let zones = (instances.iter())
            .filter_map(|instance| Some((instance.addr, Arc::from(instance.zone()?))))
            .collect();
        self.zones.store(Arc::new(zones));
        let addrs: Vec<WeightedAddr> = instances.iter().map(weighted).collect();
        self.set_weighted_endpoints(&addrs);
        // Under the lock, so a subset being added sees these instances or is
        // in the list already.
        let mut subsets = self.subsets.lock().unwrap_or_else(PoisonError::into_inner);
        self.instances.store(Arc::new(instances.to_vec()));
        subsets.retain(|(selector, subset)| match subset.upgrade() {
            Some(subset) => {
                subset.set_instances(&select(instances, selector));
                true
            }
            None => false,
        });
    }

    /// Feeds `subset` with this upstream's instances that match `selector`,
    /// now and on every discovery change, for as long as `subset` lives.
    pub fn add_subset(&self, selector: &SubsetConfig, subset: &Arc<Upstream>) {
        let mut subsets = self.subsets.lock().unwrap_or_else(PoisonError::into_inner);
        subset.set_instances(&select(&self.instances.load(), selector));
        subsets.push((selector.clone(), Arc::downgrade(subset)));
    }

    /// When the endpoint set was last set (at start, or by discovery).
    pub fn last_update(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.last_update_ms.load(Relaxed))
    }

    /// The request totals of this upstream's listener.
    pub fn totals(&self) -> Arc<RequestTotals> {
        Arc::clone(&self.totals)
    }

    pub fn endpoint_count(&self) -> usize {
        self.balancer.load().len()
    }

    fn publish_endpoint_count(&self) {
        metrics::set_endpoint_count(self.name(), self.endpoint_count());
    }

    /// The HTTP version to use upstream for a request that arrived in `downstream`.
    pub fn version_for(&self, downstream: Version) -> UpstreamVersion {
        http_version(self.settings.protocol, downstream)
    }

    /// The header whose value keys consistent hashing, for `ring_hash`.
    pub fn hash_header(&self) -> Option<&HeaderName> {
        match &self.settings.hash_on {
            Some(HashOn::Header(name)) => Some(name),
            None => None,
        }
    }

    /// The upstream's circuit breaker, when configured.
    pub fn circuit_breaker(&self) -> Option<&Arc<CircuitBreaker>> {
        self.circuit_breaker.as_ref()
    }

    /// Counts one try's outcome on `endpoint` for outlier detection.
    pub fn record_outcome(&self, endpoint: &Endpoint, outcome: Outcome) {
        if let Some(outlier) = &self.outlier {
            outlier.record(endpoint, outcome, self.balancer.load().targets());
        }
    }

    /// True when outlier detection wants to know about this upstream's tries.
    pub fn detects_outliers(&self) -> bool {
        self.outlier.is_some()
    }

    /// Records a failed attempt on `endpoint`: outlier detection counts it
    /// (connect failures and resets are failures by default), and one that
    /// could not be connected to backs off (the balancer skips it until the
    /// backoff expires) and the connect error is counted.
    pub fn note_failure(&self, endpoint: &Endpoint, error: &ProxyError) {
        self.record_outcome(endpoint, Outcome::of_error(error));
        if matches!(
            error.kind(),
            ErrorKind::ConnectFailed | ErrorKind::ConnectTimeout
        ) {
            let backoff = endpoint
                .load
                .mark_unreachable(Instant::now(), DEFAULT_BACKOFF);
            metrics::connect_error(self.name());
            tracing::debug!(upstream = self.name(), endpoint = %endpoint.addr, %error, ?backoff, "endpoint unreachable, backing off");
        }
    }

    /// Closes idle upstream connections past the idle timeout.
    pub fn close_expired_idle(&self) {
        for endpoint in self.balancer.load().targets() {
            endpoint.client.close_expired_idle();
        }
    }
}

/// Discovery feeds the upstream's endpoint set.
impl EndpointSink for Upstream {
    fn name(&self) -> &str {
        Upstream::name(self)
    }

    fn set_weighted_endpoints(&self, endpoints: &[WeightedAddr]) {
        Upstream::set_weighted_endpoints(self, endpoints);
    }

    fn set_instances(&self, instances: &[Instance]) {
        Upstream::set_instances(self, instances);
    }
}

fn new_circuit_breaker(settings: &UpstreamSettings) -> Option<Arc<CircuitBreaker>> {
    settings
        .circuit_breaker
        .as_ref()
        .map(|config| Arc::new(CircuitBreaker::new(config, &settings.name)))
}

/// The instances in `selector`'s subset.
fn select(instances: &[Instance], selector: &SubsetConfig) -> Vec<Instance> {
    (instances.iter())
        .filter(|instance| instance.is_in(selector))
        .cloned()
        .collect()
}

fn weighted(instance: &Instance) -> WeightedAddr {
    WeightedAddr {
        addr: instance.addr,
        weight: instance.weight,
    }
}

/// Builds an upstream's balancers: new endpoints with their health checker
/// started, every balancer with the upstream's panic mode.
struct EndpointFactory {
    upstream: String,
    policy: LoadBalancingPolicy,
    client: ClientSettings,
    checker: Option<Arc<HealthChecker>>,
    panic: Arc<PanicMode>,
    local_zone: Option<Arc<str>>,
}

impl EndpointFactory {
    fn new(settings: &UpstreamSettings) -> Self {
        let version = http_version(settings.protocol, Version::HTTP_11);
        let checker = (settings.health_check.as_ref())
            .map(|check| Arc::new(HealthChecker::new(check, &settings.name, version)));
        Self {
            upstream: settings.name.clone(),
            policy: settings.policy,
            client: settings.client.clone(),
            checker,
            panic: Arc::new(PanicMode::new(settings.panic_threshold, &settings.name)),
            local_zone: settings.local_zone.clone(),
        }
    }

    /// A balancer over `addrs`, reusing the `existing` endpoints; `zones`
    /// places them for locality-aware balancing. With health checks, new
    /// endpoints that join existing ones wait for their first check.
    fn balancer(
        &self,
        addrs: &[WeightedAddr],
        existing: &HashMap<SocketAddr, Arc<Endpoint>>,
        zones: &HashMap<SocketAddr, Arc<str>>,
    ) -> Balancer<Endpoint> {
        let members = addrs
            .iter()
            .map(|&WeightedAddr { addr, weight }| {
                let target = existing.get(&addr).cloned().unwrap_or_else(|| {
                    let endpoint =
                        Arc::new(Endpoint::new(addr, self.client.clone(), &self.upstream));
                    if let Some(checker) = &self.checker {
                        checker.watch(&endpoint, !existing.is_empty());
                    }
                    endpoint
                });
                Member {
                    id: addr.to_string(),
                    target,
                    weight,
                }
            })
            .collect();
        let balancer = Balancer::new(self.policy, members).with_panic(Arc::clone(&self.panic));
        let located = (self.local_zone.as_deref()).and_then(|local| {
            let of: Vec<Option<Arc<str>>> = (addrs.iter())
                .map(|a| zones.get(&a.addr).cloned())
                .collect();
            Zones::new(local, &of, &self.upstream)
        });
        match located {
            Some(zones) => balancer.with_zones(zones),
            None => balancer,
        }
    }
}

/// The HTTP version to use towards an upstream speaking `protocol` for a
/// request that arrived in `downstream`.
fn http_version(protocol: UpstreamProtocol, downstream: Version) -> UpstreamVersion {
    match protocol {
        UpstreamProtocol::Http2 | UpstreamProtocol::Grpc => UpstreamVersion::Http2,
        UpstreamProtocol::Auto if downstream == Version::HTTP_2 => UpstreamVersion::Http2,
        UpstreamProtocol::Auto | UpstreamProtocol::Http | UpstreamProtocol::Tcp => {
            UpstreamVersion::Http1
        }
    }
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}
