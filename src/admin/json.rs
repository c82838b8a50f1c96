//! `/endpoints` and `/upstreams`: what the proxy knows about its upstreams
//! right now, as JSON for operators and scripts.
//!
//! An endpoint's state is `ejected` while outlier detection keeps it out,
//! else `backing_off` while it waits after failed connects, else `healthy`.
//! `requests` / `errors` of an upstream count the requests of its listener
//! since start and those answered with a proxy-made error (the same events as
//! `remora_requests_total` and `remora_proxy_errors_total`).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::endpoint::Endpoint;
use crate::upstream::Upstream;

/// `GET /endpoints`.
pub fn endpoints(upstreams: &[std::sync::Arc<Upstream>]) -> Value {
    let now = Instant::now();
    let upstreams: Vec<Value> = upstreams
        .iter()
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
                        "ewma_ms": endpoint.load.ewma().as_secs_f64() * 1e3,
                        "in_flight": endpoint.load.in_flight(),
                        "weight": weight,
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
pub fn upstreams(upstreams: &[std::sync::Arc<Upstream>]) -> Value {
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
            })
        })
        .collect();
    json!({ "upstreams": upstreams })
}

fn state(endpoint: &Endpoint, now: Instant) -> &'static str {
    if endpoint.outlier.is_ejected(now) {
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
