//! Rate limit: a token bucket per key (`rate_limit:` of an upstream or of
//! `inbound`). A request takes one token or is refused at once with
//! [`ProxyError::RateLimited`] — 429 with `retry-after`, or gRPC
//! RESOURCE_EXHAUSTED — carrying the time until a token will be there.
//! Requests are never queued or delayed.
//!
//! Keys (`rate_limit.key`):
//! - `none`: one bucket for all requests of the listener;
//! - `client_ip`: one bucket per client address (the TCP peer,
//!   [`ClientAddr`]);
//! - `header:NAME`: one bucket per value of the header (its first value);
//!   requests without the header share one bucket;
//! - `identity`: one bucket per caller identity, the SPIFFE ID of the mTLS
//!   peer ([`PeerIdentity`], inbound); requests without one share a bucket.
//!
//! `overrides` give named key values a rate (and burst) of their own: a
//! batch job's identity a higher one, a noisy tenant's header a lower one.
//!
//! **Shared quotas** (`scope: service`): the rates are the whole service's.
//! Each sidecar enforces its share, every rate and burst divided by the
//! healthy instances of its own service that discovery reports
//! ([`ServiceInstances`], the Consul watch of `service.name`, or the etcd
//! one with an `etcd` section and no `consul` one), so N sidecars
//! together admit the service-wide rate with no rate-limit service; when
//! instances come and go, the shares follow at the next request. A burst
//! share is rounded up (at least 1 request).
//!
//! Keys are kept as a 64-bit hash, seeded per limiter, so a bucket costs the
//! same small, fixed memory whatever the length of a header value, and
//! clients cannot pick values that collide on purpose. At most
//! `rate_limit.max_keys` buckets exist; [`bucket`] explains the algorithm,
//! the eviction of full buckets and the shared overflow bucket.
//!
//! The table sits behind one `std::sync::Mutex`: the critical section is a
//! hash-map lookup and a few integer operations (plus, at most every 50 ms
//! under a key flood, a sweep of the table), and never spans an `.await`,
//! so contention stays far below the cost of the request it guards. The
//! proxy defaults to one worker thread, where the lock is never contended.

pub mod bucket;

use std::collections::HashMap;
use std::future::ready;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{Request, Response};
use metrics::Counter;
use tokio::time::Instant;
use tower::{Layer, Service};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::body::ResponseBody;
use crate::clock;
use crate::config::{RateLimitConfig, RateLimitKey, RateLimitScope};
use crate::context::ClientAddr;
use crate::context::Direction;
use crate::discovery::instances::ServiceInstances;
use crate::error::ProxyError;
use crate::telemetry::metrics::rate_limited_counter;
use crate::tls::PeerIdentity;

use bucket::{KeyedBuckets, Rate, TokenBucket};

/// The key of requests that have no key (no such header, no client address).
const NO_KEY: u64 = 0;

/// A configured rate: requests per second and burst, service-wide under
/// `scope: service`.
#[derive(Clone, Copy)]
struct Configured {
    per_second: f64,
    burst: u32,
}

impl Configured {
    /// This sidecar's share among `instances`.
    fn share(self, instances: u32) -> Rate {
        let instances = f64::from(instances);
        let burst = (f64::from(self.burst) / instances).ceil().max(1.0) as u32;
        Rate::new(self.per_second / instances, burst)
    }
}

/// The state shared by every clone of one listener's rate-limit layer.
struct Limiter {
    key: RateLimitKey,
    seed: u64,
    rate: Configured,
    /// Key hash → its own rate.
    override_rates: HashMap<u64, Configured>,
    /// `scope: service`: the instances to share the rates among.
    instances: Option<Arc<ServiceInstances>>,
    buckets: Mutex<Buckets>,
    limited: Counter,
}

/// The buckets, at the share of `instances`.
struct Buckets {
    instances: u32,
    keyed: KeyedBuckets,
    overrides: HashMap<u64, (Rate, TokenBucket)>,
}

impl Limiter {
    /// Takes a token for `request`, or says how long until one is there.
    fn check<B>(&self, request: &Request<B>) -> Result<(), Duration> {
        let key = self.key_of(request);
        let instances = self.instances.as_ref().map_or(1, |own| own.divisor());
        let now = clock::now();
        // A panic while the lock was held cannot leave a bucket half-updated
        // (each update is one assignment), so a poisoned table is still valid.
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.instances != instances {
            buckets.instances = instances;
            buckets.keyed.set_rate(self.rate.share(instances));
            for (key, (rate, _)) in &mut buckets.overrides {
                *rate = self.override_rates[key].share(instances);
            }
        }
        if let Some((rate, bucket)) = buckets.overrides.get_mut(&key) {
            return bucket.try_take(rate, now);
        }
        buckets.keyed.try_take(key, now)
    }

    fn hash(&self, bytes: &[u8]) -> u64 {
        xxh3_64_with_seed(bytes, self.seed).max(NO_KEY + 1)
    }

    fn hash_ip(&self, ip: IpAddr) -> u64 {
        match ip.to_canonical() {
            IpAddr::V4(ip) => self.hash(&ip.octets()),
            IpAddr::V6(ip) => self.hash(&ip.octets()),
        }
    }

    fn key_of<B>(&self, request: &Request<B>) -> u64 {
        match &self.key {
            RateLimitKey::None => NO_KEY,
            RateLimitKey::ClientIp => request
                .extensions()
                .get::<ClientAddr>()
                .map_or(NO_KEY, |ClientAddr(addr)| self.hash_ip(addr.ip())),
            RateLimitKey::Header(name) => request
                .headers()
                .get(name)
                .map_or(NO_KEY, |value| self.hash(value.as_bytes())),
            RateLimitKey::Identity => request
                .extensions()
                .get::<PeerIdentity>()
                .map_or(NO_KEY, |peer| self.hash(peer.uri.as_bytes())),
        }
    }

    /// The key of an override's `value` (an IP address for `client_ip`).
    fn key_of_value(&self, value: &str) -> u64 {
        match (&self.key, value.parse::<IpAddr>()) {
            (RateLimitKey::ClientIp, Ok(ip)) => self.hash_ip(ip),
            _ => self.hash(value.as_bytes()),
        }
    }
}

/// Limits the request rate of one listener (see the module docs).
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: Arc<Limiter>,
}

impl RateLimitLayer {
    pub fn new(config: &RateLimitConfig, direction: Direction, upstream: &str) -> Self {
        let rate = Configured {
            per_second: config.requests_per_second,
            burst: config.burst(),
        };
        let now = Instant::now();
        let mut limiter = Limiter {
            key: config.key.clone(),
            seed: fastrand::u64(..),
            rate,
            override_rates: HashMap::new(),
            instances: (config.scope == RateLimitScope::Service).then(ServiceInstances::own),
            buckets: Mutex::new(Buckets {
                instances: 1,
                keyed: KeyedBuckets::new(rate.share(1), config.max_keys, now),
                overrides: HashMap::new(),
            }),
            limited: rate_limited_counter(direction, upstream),
        };
        for over in &config.overrides {
            let configured = Configured {
                per_second: over.requests_per_second,
                burst: (over.burst)
                    .unwrap_or_else(|| over.requests_per_second.ceil().max(1.0) as u32),
            };
            let key = limiter.key_of_value(&over.value);
            limiter.override_rates.insert(key, configured);
            let bucket = (configured.share(1), TokenBucket::full(now));
            let buckets = limiter
                .buckets
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner);
            buckets.overrides.insert(key, bucket);
        }
        Self {
            limiter: Arc::new(limiter),
        }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            limiter: Arc::clone(&self.limiter),
        }
    }
}

#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    limiter: Arc<Limiter>,
}

impl<S, B> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>, Response = Response<ResponseBody>, Error = ProxyError>,
    S::Future: Send + 'static,
{
    type Response = Response<ResponseBody>;
    type Error = ProxyError;
    type Future = BoxFuture<'static, Result<Response<ResponseBody>, ProxyError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match self.limiter.check(&request) {
            Ok(()) => Box::pin(self.inner.call(request)),
            Err(retry_after) => {
                self.limiter.limited.increment(1);
                Box::pin(ready(Err(ProxyError::RateLimited { retry_after })))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::SocketAddr;

    use tower::ServiceExt;

    fn config(yaml_key: RateLimitKey, per_second: f64, burst: u32) -> RateLimitConfig {
        RateLimitConfig {
            requests_per_second: per_second,
            burst: Some(burst),
            key: yaml_key,
            max_keys: 100,
            scope: RateLimitScope::Instance,
            overrides: Vec::new(),
        }
    }

    type Inner = tower::util::BoxCloneSyncService<Request<()>, Response<ResponseBody>, ProxyError>;

    fn limited(config: &RateLimitConfig) -> RateLimit<Inner> {
        let ok = tower::service_fn(|_: Request<()>| async {
            Ok::<_, ProxyError>(Response::new(ResponseBody::empty()))
        });
        RateLimitLayer::new(config, Direction::Outbound, "unit").layer(Inner::new(ok))
    }

    async fn admitted(service: &mut RateLimit<Inner>, request: Request<()>) -> bool {
        match service.ready().await.unwrap().call(request).await {
            Ok(_) => true,
            Err(ProxyError::RateLimited { .. }) => false,
            Err(other) => panic!("unexpected {other}"),
        }
    }

    fn from(ip: [u8; 4]) -> Request<()> {
        let mut request = Request::new(());
        let addr = SocketAddr::from((ip, 40_000));
        request.extensions_mut().insert(ClientAddr(addr));
        request
    }

    fn with_header(value: Option<&'static str>) -> Request<()> {
        let mut builder = Request::builder();
        if let Some(value) = value {
            builder = builder.header("x-tenant", value);
        }
        builder.body(()).unwrap()
    }

    /// The accuracy requirement, through the service with paused
    /// time: 10× the rate offered for 2 s admits rate × 2 s + burst, ±5 %.
    #[tokio::test(start_paused = true)]
    async fn ten_times_the_rate_for_two_seconds_admits_rate_times_two_plus_burst() {
        let mut service = limited(&config(RateLimitKey::None, 50.0, 10));
        let offered = 1_000; // 500 a second for 2 s
        let mut accepted = 0;
        for _ in 0..offered {
            if admitted(&mut service, Request::new(())).await {
                accepted += 1;
            }
            tokio::time::advance(Duration::from_millis(2)).await;
        }
        let expected = 50.0 * 2.0 + 10.0;
        assert!(
            (f64::from(accepted) - expected).abs() <= expected * 0.05,
            "accepted {accepted}, expected {expected}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_says_when_to_retry() {
        let mut service = limited(&config(RateLimitKey::None, 2.0, 1));
        assert!(admitted(&mut service, Request::new(())).await);
        let refused = service.ready().await.unwrap().call(Request::new(())).await;
        match refused {
            Err(ProxyError::RateLimited { retry_after }) => {
                assert_eq!(retry_after, Duration::from_millis(500))
            }
            other => panic!("expected RateLimited, got {:?}", other.map(|_| ())),
        }
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(admitted(&mut service, Request::new(())).await);
    }

    #[tokio::test(start_paused = true)]
    async fn client_ip_key_gives_each_client_its_own_bucket() {
        let mut service = limited(&config(RateLimitKey::ClientIp, 1.0, 1));
        assert!(admitted(&mut service, from([10, 0, 0, 1])).await);
        assert!(!admitted(&mut service, from([10, 0, 0, 1])).await);
        assert!(admitted(&mut service, from([10, 0, 0, 2])).await);
        assert!(!admitted(&mut service, from([10, 0, 0, 2])).await);
    }

    #[tokio::test(start_paused = true)]
    async fn header_key_separates_values_and_requests_without_it_share_one_bucket() {
        let name = http::HeaderName::from_static("x-tenant");
        let mut service = limited(&config(RateLimitKey::Header(name), 1.0, 1));
        assert!(admitted(&mut service, with_header(Some("a"))).await);
        assert!(!admitted(&mut service, with_header(Some("a"))).await);
        assert!(admitted(&mut service, with_header(Some("b"))).await);
        assert!(admitted(&mut service, with_header(None)).await);
        assert!(!admitted(&mut service, with_header(None)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn no_key_means_one_bucket_for_everybody() {
        let mut service = limited(&config(RateLimitKey::None, 1.0, 1));
        assert!(admitted(&mut service, from([10, 0, 0, 1])).await);
        assert!(!admitted(&mut service, from([10, 0, 0, 2])).await);
    }

    #[tokio::test(start_paused = true)]
    async fn clones_share_the_buckets() {
        let mut service = limited(&config(RateLimitKey::None, 1.0, 1));
        let mut clone = service.clone();
        assert!(admitted(&mut service, Request::new(())).await);
        assert!(!admitted(&mut clone, Request::new(())).await);
    }
}
