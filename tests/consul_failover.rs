//! Multi-datacenter failover of Consul discovery
//! (`discovery.consul.failover`) against the Consul stand-in: while dc1 has
//! a passing instance its traffic stays there; when dc1's instances go
//! critical the upstream moves to dc2, and back when one passes again —
//! with no failed request during either move (a continuous prober), and
//! `remora_consul_failover_datacenter` saying which is in use; the same
//! over mesh mTLS, each datacenter's instance behind its own sidecar.

mod support;

use std::time::{Duration, Instant};

use http::Version;

use support::config::{TestConfig, Upstream};
use support::consul::{ConsulStandIn, Health, Instance};
use support::tls::{Ca, TlsFiles};
use support::{Backend, Prober, Proxy, get, http_backend, prom};

/// Waits (at most 5 s) until `other` gets no request (of 5, and of the
/// prober's meanwhile) and `backend` all of them.
async fn until_served_by(base: &str, backend: &Backend, other: &Backend) -> Duration {
    let started = Instant::now();
    loop {
        let (before, before_other) = (backend.requests(), other.requests());
        for _ in 0..5 {
            get(Version::HTTP_11, base).await.unwrap();
        }
        if backend.requests() >= before + 5 && other.requests() == before_other {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{} never took all the traffic",
            backend.name
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The failover gauge of `upstream` (named apart in each test: the metrics
/// registry is the test process's).
async fn in_use(proxy: &Proxy, upstream: &str, dc: &str) -> f64 {
    let metrics = prom::scrape(&proxy.admin_url("/metrics")).await;
    let labels = [("upstream", upstream), ("datacenter", dc)];
    prom::value(&metrics, "remora_consul_failover_datacenter", &labels).unwrap_or(-1.0)
}

const FAILOVER: &str = "{ consul: { service: api, datacenter: dc1, failover: { datacenters: [dc2], min_healthy: 1 } } }";

fn consul_section(consul: &ConsulStandIn) -> String {
    format!("{{ address: \"{}\", wait: 2s }}", consul.url())
}

#[tokio::test]
async fn dc1_going_critical_moves_traffic_to_dc2_and_back() {
    let consul = ConsulStandIn::start();
    let (local, remote) = (http_backend("dc1-a"), http_backend("dc2-a"));
    consul.register(Instance::new("api-1", "api", local.addr));
    consul.register(Instance::new("api-2", "api", remote.addr).datacenter("dc2"));
    let yaml = TestConfig::new()
        .section("consul", consul_section(&consul))
        .upstream(Upstream::discovered("api", FAILOVER).protocol("http"))
        .yaml();
    let proxy = Proxy::start(&yaml).await;
    fails_over_and_back(&consul, &proxy, "api", &local, &remote).await;
}

/// `api-1` (dc1, answered by `local`) goes critical and passes again;
/// `api-2` (dc2, answered by `remote`) takes the traffic of `upstream`
/// meanwhile.
async fn fails_over_and_back(
    consul: &ConsulStandIn,
    proxy: &Proxy,
    upstream: &str,
    local: &Backend,
    remote: &Backend,
) {
    let base = format!("http://{}/", proxy.upstream(upstream));
    until_served_by(&base, local, remote).await;
    assert_eq!(in_use(proxy, upstream, "dc1").await, 1.0);
    assert_eq!(in_use(proxy, upstream, "dc2").await, 0.0);
    assert_eq!(remote.requests(), 0, "dc2 unused while dc1 is healthy");

    let prober = Prober::start(proxy.upstream(upstream), Version::HTTP_11).await;
    // dc1's only instance goes critical (still serving, as when its check
    // fails first): everything moves to dc2.
    consul.set_health("api-1", Health::Critical);
    let over = until_served_by(&base, remote, local).await;
    eprintln!("failed over within {over:?}");
    assert_eq!(in_use(proxy, upstream, "dc2").await, 1.0);
    assert_eq!(in_use(proxy, upstream, "dc1").await, 0.0);
    let on_local = local.requests();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(local.requests(), on_local, "nothing goes to a critical dc1");

    // It passes again: traffic returns to dc1.
    consul.set_health("api-1", Health::Passing);
    let back = until_served_by(&base, local, remote).await;
    eprintln!("failed back within {back:?}");
    assert_eq!(in_use(proxy, upstream, "dc1").await, 1.0);
    let report = prober.finish("failover", Duration::from_secs(1)).await;
    assert!(report.answered > 50, "{report:?}");
}

/// A sidecar with mesh mTLS as `api`, in front of `app`.
async fn api_sidecar(ca: &Ca, serial: u64, app: &Backend) -> Proxy {
    let files = TlsFiles::new(&ca.leaf("api", serial), ca);
    let yaml = TestConfig::inbound_to("api", app.addr)
        .text(&files.yaml(""))
        .yaml();
    Proxy::start(&yaml).await
}

#[tokio::test]
async fn failover_holds_over_mesh_mtls() {
    let ca = Ca::new("mesh CA");
    let (local, remote) = (http_backend("dc1-a"), http_backend("dc2-a"));
    let (dc1, dc2) = (
        api_sidecar(&ca, 1, &local).await,
        api_sidecar(&ca, 2, &remote).await,
    );
    let consul = ConsulStandIn::start();
    consul.register(Instance::new("api-1", "api", dc1.inbound()));
    consul.register(Instance::new("api-2", "api", dc2.inbound()).datacenter("dc2"));
    let web = TlsFiles::new(&ca.leaf("web", 3), &ca);
    let yaml = TestConfig::new()
        .service("{ name: web }")
        .section("consul", consul_section(&consul))
        .upstream(Upstream::discovered("api-mesh", FAILOVER).protocol("http"))
        .with("tls", "{ enabled: true, identity: api }")
        .text(&web.yaml(""))
        .yaml();
    let proxy = Proxy::start(&yaml).await;
    // Both sidecars only speak mTLS: every answer went through a handshake
    // that verified `api`.
    fails_over_and_back(&consul, &proxy, "api-mesh", &local, &remote).await;
}
