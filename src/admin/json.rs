//! `/endpoints`, `/upstreams` and `/errors`: what the proxy knows about its
//! upstreams right now, as JSON for operators, scripts and the dashboard.
//!
//! An endpoint's state is `unhealthy` while it fails its active health
//! checks, else `ejected` while outlier detection keeps it out, else
//! `backing_off` while it waits after failed connects, else `healthy`;
//! `health_check` is what its checks say (`unchecked` without checks,
//! `pending` before the first result, `passing`, `failing`).
//! `requests` / `errors` of an upstream count the requests of its listener
//! since start and those answered with a proxy-made error (the same events as
//! `remora_requests_total` and `remora_proxy_errors_total`); `latency` counts
//! them per bucket of `remora_request_duration_seconds` (not cumulative, the
//! last bucket above 10 s). `/errors` lists the last proxy-made errors of
//! every upstream, newest first.

use std::sync::{Arc, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::endpoint::Endpoint;
use crate::telemetry::metrics::DURATION_BUCKETS;
use crate::telemetry::totals::RECENT_ERRORS;
use crate::upstream::Upstream;

/// `GET /endpoints`: every upstream, then the routing backends' own
/// upstreams (`<upstream>/<backend>`, subsets and static lists).
pub fn endpoints(upstreams: &[Arc<Upstream>], backends: &[Weak<Upstream>]) -> Value {
    let now = Instant::now();
    let upstreams: Vec<Value> = super::every_upstream(upstreams, backends)
        .map(|upstream| {
            let balancer = upstream.balancer();
            let endpoints: Vec<Value> = balancer
                .targets()
                .iter()
                .zip(balancer.weights())
                .map(|(endpoint, weight)| {
                    json!({
                        "address": endpoint.addr.to_string(),
                        "state": state(endpoint, now),
                        "health_check": endpoint.health.verdict().as_str(),
                        "ewma_ms": endpoint.load.ewma().as_secs_f64() * 1e3,
                        "in_flight": endpoint.load.in_flight(),
                        "weight": weight,
                        "negotiated_h2": endpoint.client.negotiated_h2(),
                    })
                })
                .collect();
            json!({
                "name": upstream.name(),
                "last_update": unix_seconds(upstream.last_update()),
                "endpoints": endpoints,
            })
        })
        .collect();
    json!({ "upstreams": upstreams })
}

/// `GET /upstreams`.
pub fn upstreams(upstreams: &[Arc<Upstream>]) -> Value {
    let upstreams: Vec<Value> = upstreams
        .iter()
        .map(|upstream| {
            let settings = &upstream.settings;
            let breaker = upstream
                .circuit_breaker()
                .map_or("none", |breaker| breaker.phase().as_str());
            let totals = upstream.totals();
            json!({
                "name": upstream.name(),
                "direction": settings.direction.as_str(),
                "protocol": settings.protocol,
                "policy": settings.policy,
                "circuit_breaker": breaker,
                "rate_limit": settings.rate_limit,
                "endpoints": upstream.endpoint_count(),
                "requests": totals.requests(),
                "errors": totals.errors(),
                "latency": {
                    "bounds_ms": DURATION_BUCKETS.map(|seconds| seconds * 1e3),
                    "counts": totals.latency_counts(),
                },
            })
        })
        .collect();
    json!({ "upstreams": upstreams })
}

/// `GET /errors`: the last proxy-made errors of all upstreams, newest first,
/// at most [`RECENT_ERRORS`].
pub fn errors(upstreams: &[Arc<Upstream>]) -> Value {
    let mut recent: Vec<(&Upstream, _)> = upstreams
        .iter()
        .flat_map(|upstream| {
            let errors = upstream.totals().recent_errors();
            errors
                .into_iter()
                .map(move |error| (upstream.as_ref(), error))
        })
        .collect();
    recent.sort_by_key(|(_, error)| std::cmp::Reverse(error.at));
    recent.truncate(RECENT_ERRORS);
    let errors: Vec<Value> = recent
        .into_iter()
        .map(|(upstream, error)| {
            json!({
                "time": unix_seconds(error.at),
                "upstream": upstream.name(),
                "direction": upstream.settings.direction.as_str(),
                "kind": error.kind.as_str(),
                "status": error.status,
                "method": error.method.as_str(),
                "path": error.path,
                "endpoint": error.endpoint.map(|addr| addr.to_string()),
            })
        })
        .collect();
    json!({ "errors": errors })
}

fn state(endpoint: &Endpoint, now: Instant) -> &'static str {
    if !endpoint.health.admits() {
        "unhealthy"
    } else if endpoint.outlier.is_ejected(now) {
        "ejected"
    } else if !endpoint.load.is_available(now) {
        "backing_off"
    } else {
        "healthy"
    }
}

/// Seconds since the Unix epoch, with millisecond precision.
fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}
