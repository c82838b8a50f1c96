//! DNS SRV discovery against a real DNS server (dnsmasq on a free loopback
//! UDP port, records with a 1 s TTL): `/ready` is 503 until the first
//! answer, traffic reaches the backends the SRV records name, moves when the
//! records change, and stays on the last known endpoints (zero failed
//! requests, errors counted) while the server answers errors or is stopped.
//! SRV weights become balancing weights.
//!
//! Needs `dnsmasq` (Debian `dnsmasq-base`, installed by `scripts/test.sh`);
//! fails, naming the package, when it is missing.

mod support;

use std::time::{Duration, Instant};

use http::{StatusCode, Version};

use support::config::{TestConfig, Upstream};
use support::dnsmasq::{Dnsmasq, free_dns_port};
use support::traffic::{
    hammer, hammer_until, served_by, wait_for_traffic_on, wait_for_traffic_on_each,
};
use support::{Backend, Proxy, get, http_backend, prom};

const SRV_NAME: &str = "_api._tcp.service.consul";
const UPSTREAM: &str = "dns-api";

/// dnsmasq serving SRV records of `SRV_NAME` (see `support::dnsmasq`).
struct SrvRecords;

impl SrvRecords {
    /// One SRV record of `SRV_NAME` per backend, at weight 1.
    fn start(port: u16, backends: &[&Backend]) -> Dnsmasq {
        let weighted: Vec<(&Backend, u16)> = backends.iter().map(|backend| (*backend, 1)).collect();
        Self::start_weighted(port, &weighted)
    }

    /// One SRV record of `SRV_NAME` per backend (a host `api-<i>.node.consul`
    /// at 127.0.0.1, the backend's port, priority 0 and the given weight).
    fn start_weighted(port: u16, backends: &[(&Backend, u16)]) -> Dnsmasq {
        // A record for another name keeps dnsmasq authoritative-looking when
        // `backends` is empty (then `SRV_NAME` has no record at all).
        let mut records = vec!["--host-record=other.node.consul,127.0.0.2".to_owned()];
        for (i, (backend, weight)) in backends.iter().enumerate() {
            let host = format!("api-{i}.node.consul");
            records.push(format!(
                "--srv-host={SRV_NAME},{host},{},0,{weight}",
                backend.addr.port()
            ));
            records.push(format!("--host-record={host},127.0.0.1"));
        }
        Dnsmasq::start(port, &records)
    }
}

/// An upstream `name` discovered by SRV. Each test names its upstream apart:
/// the test process has one metrics registry.
fn yaml(name: &str, resolver_port: u16) -> String {
    let dns = format!("{{ dns: {{ name: {SRV_NAME}, resolver: 127.0.0.1:{resolver_port} }} }}");
    TestConfig::new()
        .upstream(Upstream::discovered(name, &dns).protocol("http"))
        .with("load_balancing", "{ policy: round_robin }")
        .with("timeouts", "{ connect: 1s, request: 2s }")
        .yaml()
}

async fn ready_status(proxy: &Proxy) -> StatusCode {
    get(Version::HTTP_11, &proxy.admin_url("/ready"))
        .await
        .expect("GET /ready")
        .status
}

async fn discovery_errors(proxy: &Proxy) -> f64 {
    let text = prom::scrape(&proxy.admin_url("/metrics")).await;
    prom::value(
        &text,
        "remora_discovery_errors_total",
        &[("upstream", UPSTREAM)],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_drive_traffic_and_failures_keep_the_last_endpoints() {
    let first = http_backend("dns-first");
    let second = http_backend("dns-second");
    let dns_port = free_dns_port();
    let proxy = Proxy::start(&yaml(UPSTREAM, dns_port)).await;
    let listener = proxy.upstream(UPSTREAM);

    // No DNS server yet: not ready, no endpoints, failures counted (a query
    // to a silent UDP port fails after the 2 s query timeout).
    assert_eq!(ready_status(&proxy).await, StatusCode::SERVICE_UNAVAILABLE);
    assert!(served_by(listener).await.is_err());
    let start = Instant::now();
    while discovery_errors(&proxy).await < 1.0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no discovery error counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ready_status(&proxy).await, StatusCode::SERVICE_UNAVAILABLE);

    // First answer: ready, traffic on the SRV target.
    let dns = SrvRecords::start(dns_port, &[&first]);
    let took = wait_for_traffic_on(listener, &["dns-first"], Duration::from_secs(15)).await;
    eprintln!("first answer reached traffic in {took:?}");
    assert_eq!(ready_status(&proxy).await, StatusCode::OK);

    // Records change (server restarted on the same port): traffic moves.
    dns.stop();
    let dns = SrvRecords::start(dns_port, &[&second]);
    let took = wait_for_traffic_on(listener, &["dns-second"], Duration::from_secs(5)).await;
    eprintln!("record change reached traffic in {took:?}");

    // The server answers without a record for the name: last endpoints kept.
    dns.stop();
    let dns = SrvRecords::start(dns_port, &[]);
    let errors_before = discovery_errors(&proxy).await;
    let (requests, failures) = hammer(listener, Duration::from_secs(2), &["dns-second"]).await;
    eprintln!("no record for 2 s: {requests} requests, {failures} failed");
    assert_eq!(failures, 0);
    assert!(discovery_errors(&proxy).await > errors_before);

    // The server is gone: last endpoints kept for at least 3.5 s, and until
    // a failed query is counted (the retry may still be backing off from the
    // failures above, up to the 10 s cap, and a query times out after 2 s).
    dns.stop();
    let errors_before = discovery_errors(&proxy).await;
    let start = Instant::now();
    let (requests, failures) = hammer_until(
        listener,
        &["dns-second"],
        Duration::from_millis(3500),
        Duration::from_secs(20),
        || async { discovery_errors(&proxy).await > errors_before },
    )
    .await;
    let errors = discovery_errors(&proxy).await - errors_before;
    eprintln!(
        "DNS down for {:?}: {requests} requests, {failures} failed, {errors} discovery errors",
        start.elapsed()
    );
    assert_eq!(failures, 0);
    assert_eq!(ready_status(&proxy).await, StatusCode::OK);

    // The server comes back with both: discovery recovers (within the 10 s backoff cap).
    let _dns = SrvRecords::start(dns_port, &[&first, &second]);
    let took = wait_for_traffic_on_each(
        listener,
        &["dns-first", "dns-second"],
        Duration::from_secs(15),
    )
    .await;
    eprintln!("recovery reached traffic in {took:?}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_weights_become_balancing_weights() {
    let heavy = http_backend("dns-heavy");
    let light = http_backend("dns-light");
    let dns_port = free_dns_port();
    let _dns = SrvRecords::start_weighted(dns_port, &[(&heavy, 3), (&light, 1)]);
    let proxy = Proxy::start(&yaml("dns-weights", dns_port)).await;
    let listener = proxy.upstream("dns-weights");
    wait_for_traffic_on_each(
        listener,
        &["dns-heavy", "dns-light"],
        Duration::from_secs(15),
    )
    .await;

    let (heavy_before, light_before) = (heavy.requests(), light.requests());
    for _ in 0..400 {
        served_by(listener).await.expect("a reply");
    }
    let (heavy_served, light_served) = (
        heavy.requests() - heavy_before,
        light.requests() - light_before,
    );
    eprintln!("SRV weights 3:1, round robin over 400 requests: {heavy_served}/{light_served}");
    assert_eq!((heavy_served, light_served), (300, 100));
    proxy.shutdown().await;
}
