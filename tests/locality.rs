//! Locality-aware balancing through remora (`load_balancing.locality:
//! prefer_local`): with every zone whole all traffic stays in the sidecar's
//! zone; when the local zone loses one of its two endpoints it keeps the
//! share it can serve (60 %) and spills the rest over the other zones by
//! their spare capacity (20 % each), as Envoy's zone-aware routing computes
//! it — over thousands of requests, within a few points, and the same split
//! in `remora_locality_requests_total`; when it recovers, all is local again.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::{StatusCode, Version};

use support::config::TestConfig;
use support::switchable::Switchable;
use support::{Proxy, get, prom};

const ZONES: [&str; 6] = ["a", "a", "b", "b", "c", "c"];

/// Requests each zone's endpoints answered since `before`.
fn per_zone(backends: &[Switchable], before: &[u64]) -> [u64; 3] {
    let mut zones = [0; 3];
    for ((backend, zone), before) in backends.iter().zip(ZONES).zip(before) {
        let index = usize::from(zone.as_bytes()[0] - b'a');
        zones[index] += backend.traffic() - before;
    }
    zones
}

async fn send(base: &str, count: usize) {
    for _ in 0..count {
        let reply = get(Version::HTTP_11, base).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    }
}

async fn sent_to(proxy: &Proxy, zone: &str) -> f64 {
    let metrics = prom::scrape(&proxy.admin_url("/metrics")).await;
    let labels = [("upstream", "zoned"), ("zone", zone)];
    prom::value(&metrics, "remora_locality_requests_total", &labels).unwrap_or(0.0)
}

async fn wait_for(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !condition().await {
        assert!(started.elapsed() < Duration::from_secs(10), "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn traffic_stays_in_the_local_zone_and_spills_over_by_spare_capacity() {
    let backends: Vec<Switchable> = ["a1", "a2", "b1", "b2", "c1", "c2"]
        .map(Switchable::start)
        .into();
    let endpoints: Vec<String> = (backends.iter().zip(ZONES))
        .map(|(backend, zone)| format!("{{ address: {}, zone: {zone} }}", backend.server.addr))
        .collect();
    let yaml = TestConfig::one_upstream("zoned", "http", &endpoints)
        .service("{ name: web, locality: { region: eu, zone: a } }")
        .with("load_balancing", "{ policy: round_robin, locality: prefer_local }")
        .with(
            "health_check",
            "{ http: { path: /health }, interval: 100ms, unhealthy_threshold: 1, healthy_threshold: 1 }",
        )
        .yaml();
    let proxy = Proxy::start(&yaml).await;
    let base = format!("http://{}/", proxy.upstream("zoned"));

    // Every zone whole: all local.
    let before: Vec<u64> = backends.iter().map(Switchable::traffic).collect();
    send(&base, 600).await;
    assert_eq!(per_zone(&backends, &before), [600, 0, 0]);
    assert_eq!(sent_to(&proxy, "a").await, 600.0);

    // a1 fails its checks: zone a has 1 of 5 healthy endpoints (20 %) for
    // a third of the traffic: 60 % stays, 20 % goes to b and c each.
    backends[0].healthy.store(false, Ordering::SeqCst);
    wait_for("a1 taken out", async || {
        let before = backends[0].traffic();
        send(&base, 20).await;
        backends[0].traffic() == before
    })
    .await;
    let before: Vec<u64> = backends.iter().map(Switchable::traffic).collect();
    let counted: Vec<f64> = [
        sent_to(&proxy, "a").await,
        sent_to(&proxy, "b").await,
        sent_to(&proxy, "c").await,
    ]
    .into();
    send(&base, 3000).await;
    let split = per_zone(&backends, &before);
    eprintln!("split over 3000 requests with a1 out: {split:?}");
    for (zone, (got, want)) in split.iter().zip([1800.0, 600.0, 600.0]).enumerate() {
        let points = (*got as f64 - want) / 30.0;
        assert!(
            points.abs() < 4.0,
            "zone {zone}: {got} of 3000, want {want}: {split:?}"
        );
    }
    assert_eq!(backends[0].traffic(), before[0], "a1 takes nothing");
    for (zone, (name, before)) in ["a", "b", "c"].iter().zip(counted).enumerate() {
        let metric = sent_to(&proxy, name).await - before;
        assert_eq!(
            metric, split[zone] as f64,
            "remora_locality_requests_total{{zone={name}}}"
        );
    }

    // a1 back: everything local again.
    backends[0].healthy.store(true, Ordering::SeqCst);
    wait_for("a1 back", async || {
        let before = backends[0].traffic();
        send(&base, 20).await;
        backends[0].traffic() > before
    })
    .await;
    let before: Vec<u64> = backends.iter().map(Switchable::traffic).collect();
    send(&base, 600).await;
    assert_eq!(per_zone(&backends, &before), [600, 0, 0]);
}
