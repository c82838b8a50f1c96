//! Active health checks and the panic threshold through remora: an HTTP
//! endpoint whose health path turns 503 is taken out within
//! `interval × unhealthy_threshold` and back after `healthy_threshold`
//! passes, with no failed request; a dead endpoint fails its `tcp` checks;
//! gRPC checks against tonic's health service and Python grpcio's
//! (grpcio-health-checking) follow `NOT_SERVING`; too few healthy endpoints
//! put the upstream in panic (traffic over all of them), and a threshold of
//! 0 keeps traffic off failing endpoints whatever their number; checks of a
//! meshed upstream go over its mTLS (and fail with the wrong identity),
//! Consul-discovered endpoints are checked like static ones, and a newly
//! discovered endpoint takes traffic only once its first check passed.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::{StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use support::config::{TestConfig, Upstream};
use support::consul::{ConsulStandIn, Instance as ConsulInstance};
use support::peers::GrpcioHealth;
use support::switchable::Switchable;
use support::tls::{Ca, TlsFiles};
use support::{Prober, Proxy, Server, dead_addr, get, http_backend, prom, serve};

/// The `health_check` verdict and `state` that `/endpoints` shows for
/// `endpoint`, once it is listed.
async fn verdict(proxy: &Proxy, upstream: &str, endpoint: SocketAddr) -> Option<(String, String)> {
    let reply = get(Version::HTTP_11, &proxy.admin_url("/endpoints"))
        .await
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    let upstreams = json["upstreams"].as_array().unwrap();
    let entry = (upstreams.iter())
        .find(|u| u["name"] == upstream)
        .expect("upstream listed");
    let endpoint = (entry["endpoints"].as_array().unwrap().iter())
        .find(|e| e["address"] == endpoint.to_string())?;
    Some((
        endpoint["health_check"].as_str().unwrap().to_owned(),
        endpoint["state"].as_str().unwrap().to_owned(),
    ))
}

/// Waits (at most 10 s) until `endpoint`'s verdict is `wanted`; returns how
/// long that took.
async fn wait_verdict(
    proxy: &Proxy,
    upstream: &str,
    endpoint: SocketAddr,
    wanted: &str,
) -> Duration {
    let started = Instant::now();
    loop {
        let seen = verdict(proxy, upstream, endpoint).await;
        if seen.is_some_and(|(verdict, _)| verdict == wanted) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{endpoint} never became {wanted}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_endpoint_failing_its_http_checks_is_taken_out_and_comes_back() {
    let backends = [
        Switchable::start("a"),
        Switchable::start("b"),
        Switchable::start("c"),
    ];
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.server.addr).collect();
    let yaml = TestConfig::one_upstream("hc-http", "http", &addrs)
        .with("load_balancing", "{ policy: round_robin }")
        .with(
            "health_check",
            "{ http: { path: /health, expected_statuses: [200] }, interval: 300ms, timeout: 500ms, unhealthy_threshold: 2, healthy_threshold: 2 }",
        )
        .yaml();
    let proxy = Proxy::start(&yaml).await;
    for addr in &addrs {
        wait_verdict(&proxy, "hc-http", *addr, "passing").await;
    }
    let prober = Prober::start(proxy.upstream("hc-http"), Version::HTTP_11).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = &backends[1];
    assert!(b.traffic() > 0, "b takes traffic while healthy");

    // b's health path turns 503: out within 2 × 300 ms (plus the check
    // that was under way and scheduling slack).
    b.healthy.store(false, Ordering::SeqCst);
    let out = wait_verdict(&proxy, "hc-http", b.server.addr, "failing").await;
    eprintln!("taken out after {out:?}");
    assert!(out < Duration::from_millis(1000), "taken out after {out:?}");
    let (_, state) = verdict(&proxy, "hc-http", b.server.addr).await.unwrap();
    assert_eq!(state, "unhealthy");
    let metrics = prom::scrape(&proxy.admin_url("/metrics")).await;
    let endpoint = b.server.addr.to_string();
    let labels = [("upstream", "hc-http"), ("endpoint", endpoint.as_str())];
    assert_eq!(
        prom::value(&metrics, "remora_endpoint_healthy", &labels),
        Some(0.0)
    );
    let failed = [("upstream", "hc-http"), ("result", "failed")];
    assert!(prom::value(&metrics, "remora_health_checks_total", &failed) >= Some(2.0));

    // Now it stops serving too (a drain): it gets nothing, nothing fails.
    b.serving.store(false, Ordering::SeqCst);
    let before = b.traffic();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(b.traffic(), before, "no request reaches a failing endpoint");

    // Recovery: serving again, then passing its checks: back within
    // 2 × 300 ms, and traffic reaches it again.
    b.serving.store(true, Ordering::SeqCst);
    b.healthy.store(true, Ordering::SeqCst);
    let back = wait_verdict(&proxy, "hc-http", b.server.addr, "passing").await;
    eprintln!("back after {back:?}");
    assert!(back < Duration::from_millis(1000), "back after {back:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(b.traffic() > before, "b takes traffic again");
    let report = prober.finish("hc-http", Duration::from_secs(1)).await;
    assert!(report.answered > 100, "{report:?}");
}

#[tokio::test]
async fn a_dead_endpoint_fails_its_tcp_checks() {
    let good = http_backend("good");
    let dead = dead_addr();
    let yaml = TestConfig::one_upstream("hc-tcp", "http", [good.addr, dead])
        .with(
            "health_check",
            "{ tcp: {}, interval: 200ms, timeout: 300ms, unhealthy_threshold: 1, healthy_threshold: 1 }",
        )
        .yaml();
    let proxy = Proxy::start(&yaml).await;
    wait_verdict(&proxy, "hc-tcp", dead, "failing").await;
    wait_verdict(&proxy, "hc-tcp", good.addr, "passing").await;
    let base = format!("http://{}/", proxy.upstream("hc-tcp"));
    for _ in 0..50 {
        let reply = get(Version::HTTP_11, &base).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    }
    assert_eq!(good.requests(), 50);
    let connect_errors = proxy
        .metric(
            "remora_upstream_connect_errors_total",
            &[("upstream", "hc-tcp")],
        )
        .await;
    assert_eq!(connect_errors, 0.0, "no request tried the dead endpoint");
}

/// tonic's health service (tonic-health) on h2c, whole-server status
/// `SERVING` and service `traffic` `SERVING`.
async fn tonic_health() -> (Server, tonic_health::server::HealthReporter) {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("traffic", ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    let server = serve(move |stream| {
        let service = TowerToHyperService::new(service.clone());
        async move {
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    });
    (server, reporter)
}

/// Calls `Health/Check` for service `traffic` through the proxy `count`
/// times; every call must answer `SERVING`.
async fn grpc_traffic(proxy: SocketAddr, count: usize) {
    let channel = tonic::transport::Channel::from_shared(format!("http://{proxy}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);
    for _ in 0..count {
        let request = HealthCheckRequest {
            service: "traffic".into(),
        };
        let reply = client.check(request).await.expect("call through remora");
        assert_eq!(reply.into_inner().status, 1, "SERVING");
    }
}

async fn tries(proxy: &Proxy, endpoint: SocketAddr) -> f64 {
    let endpoint = endpoint.to_string();
    let labels = [("upstream", "hc-grpc"), ("endpoint", endpoint.as_str())];
    let metrics = prom::scrape(&proxy.admin_url("/metrics")).await;
    prom::value(&metrics, "remora_endpoint_requests_total", &labels).unwrap_or(0.0)
}

#[tokio::test]
async fn grpc_checks_follow_not_serving_of_tonic_and_grpcio() {
    let (tonic, reporter) = tonic_health().await;
    let mut grpcio = GrpcioHealth::start();
    grpcio.set("traffic", "SERVING");
    let (a, b) = (tonic.addr, grpcio.peer.addr);
    let yaml = TestConfig::one_upstream("hc-grpc", "grpc", [a, b])
        .with("load_balancing", "{ policy: round_robin }")
        .with(
            "health_check",
            "{ grpc: {}, interval: 200ms, timeout: 500ms, unhealthy_threshold: 1, healthy_threshold: 1 }",
        )
        .yaml();
    let proxy = Proxy::start(&yaml).await;
    wait_verdict(&proxy, "hc-grpc", a, "passing").await;
    wait_verdict(&proxy, "hc-grpc", b, "passing").await;
    let upstream = proxy.upstream("hc-grpc");
    grpc_traffic(upstream, 20).await;
    assert!(tries(&proxy, a).await >= 5.0 && tries(&proxy, b).await >= 5.0);

    // grpcio's server turns NOT_SERVING: everything goes to tonic's.
    grpcio.set("", "NOT_SERVING");
    wait_verdict(&proxy, "hc-grpc", b, "failing").await;
    let (on_a, on_b) = (tries(&proxy, a).await, tries(&proxy, b).await);
    grpc_traffic(upstream, 20).await;
    assert_eq!(tries(&proxy, a).await, on_a + 20.0);
    assert_eq!(tries(&proxy, b).await, on_b);

    // And back; then tonic's turns NOT_SERVING: everything goes to grpcio's.
    grpcio.set("", "SERVING");
    wait_verdict(&proxy, "hc-grpc", b, "passing").await;
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    wait_verdict(&proxy, "hc-grpc", a, "failing").await;
    let (on_a, on_b) = (tries(&proxy, a).await, tries(&proxy, b).await);
    grpc_traffic(upstream, 20).await;
    assert_eq!(tries(&proxy, a).await, on_a);
    assert_eq!(tries(&proxy, b).await, on_b + 20.0);
}

/// Sends `count` requests; how many each backend answered (a, b, c, d).
async fn spread(base: &str, backends: &[Switchable], count: usize) -> Vec<u64> {
    let before: Vec<u64> = backends.iter().map(Switchable::traffic).collect();
    for _ in 0..count {
        let reply = get(Version::HTTP_11, base).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    }
    (backends.iter().zip(before))
        .map(|(backend, before)| backend.traffic() - before)
        .collect()
}

#[tokio::test]
async fn below_the_panic_threshold_traffic_spreads_over_every_endpoint() {
    let backends: Vec<Switchable> = ["a", "b", "c", "d"].map(Switchable::start).into();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.server.addr).collect();
    let check = "{ http: { path: /health }, interval: 100ms, timeout: 500ms, unhealthy_threshold: 1, healthy_threshold: 1 }";
    let config = |threshold: u32| {
        TestConfig::one_upstream("hc-panic", "http", &addrs)
            .with(
                "load_balancing",
                format!("{{ policy: round_robin, panic_threshold: {threshold} }}"),
            )
            .with("health_check", check)
            .yaml()
    };
    let proxy = Proxy::start(&config(50)).await;
    let base = format!("http://{}/", proxy.upstream("hc-panic"));
    for addr in &addrs {
        wait_verdict(&proxy, "hc-panic", *addr, "passing").await;
    }

    // Two of four failing: 50 % healthy is not below 50 %, no panic.
    for backend in &backends[2..] {
        backend.healthy.store(false, Ordering::SeqCst);
        wait_verdict(&proxy, "hc-panic", backend.server.addr, "failing").await;
    }
    assert_eq!(spread(&base, &backends, 40).await, [20, 20, 0, 0]);
    let panic = [("upstream", "hc-panic")];
    assert_eq!(proxy.metric("remora_lb_panic", &panic).await, 0.0);

    // Three of four: 25 % healthy, panic: round robin over all four.
    backends[1].healthy.store(false, Ordering::SeqCst);
    wait_verdict(&proxy, "hc-panic", addrs[1], "failing").await;
    assert_eq!(spread(&base, &backends, 40).await, [10, 10, 10, 10]);
    assert_eq!(proxy.metric("remora_lb_panic", &panic).await, 1.0);
    let in_panic = proxy.metric("remora_lb_panic_requests_total", &panic).await;
    assert_eq!(in_panic, 40.0);

    // Without a panic threshold the one healthy endpoint takes everything.
    assert!(proxy.reload(&config(0)).await, "reload");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(spread(&base, &backends, 40).await, [40, 0, 0, 0]);

    // And when none is healthy, the request fails rather than going to a
    // failing endpoint.
    backends[0].healthy.store(false, Ordering::SeqCst);
    wait_verdict(&proxy, "hc-panic", addrs[0], "failing").await;
    let reply = get(Version::HTTP_11, &base).await.unwrap();
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.headers["x-remora-error"], "no_healthy_endpoints");
    assert_eq!(backends.iter().map(Switchable::traffic).sum::<u64>(), 120);
}

/// The sidecar of `app` with mesh mTLS as `api`, and a sidecar `web`
/// whose meshed upstream `api` expects `identity` and checks `/health`.
async fn meshed_pair(app: SocketAddr, identity: &str) -> (Proxy, Proxy) {
    let ca = Ca::new("mesh CA");
    let api_files = TlsFiles::new(&ca.leaf("api", 1), &ca);
    let inbound = Proxy::start(
        &TestConfig::new()
            .service(&format!(
                "{{ name: hc-api, port: {}, protocol: http }}",
                app.port()
            ))
            .inbound()
            .text(&api_files.yaml(""))
            .yaml(),
    )
    .await;
    let web_files = TlsFiles::new(&ca.leaf("web", 2), &ca);
    let outbound = Proxy::start(
        &TestConfig::new()
            .service("{ name: web }")
            .upstream(Upstream::to("hc-mesh", [inbound.inbound()]).protocol("http"))
            .with("tls", format!("{{ enabled: true, identity: {identity} }}"))
            .with(
                "health_check",
                "{ http: { path: /health }, interval: 100ms, unhealthy_threshold: 1, healthy_threshold: 1 }",
            )
            .text(&web_files.yaml(""))
            .yaml(),
    )
    .await;
    (inbound, outbound)
}

#[tokio::test]
async fn checks_go_over_the_endpoints_mesh_mtls() {
    let app = Switchable::start("app");
    // The other sidecar only speaks mTLS: passing means the check went
    // through the handshake, as `api`, to the app's health path.
    let (inbound, outbound) = meshed_pair(app.server.addr, "api").await;
    wait_verdict(&outbound, "hc-mesh", inbound.inbound(), "passing").await;
    app.healthy.store(false, Ordering::SeqCst);
    wait_verdict(&outbound, "hc-mesh", inbound.inbound(), "failing").await;
    app.healthy.store(true, Ordering::SeqCst);
    wait_verdict(&outbound, "hc-mesh", inbound.inbound(), "passing").await;
    assert_eq!(app.traffic(), 0, "checks are not traffic");

    // Expecting another identity, the handshake fails: so do the checks.
    let (inbound, outbound) = meshed_pair(app.server.addr, "billing").await;
    wait_verdict(&outbound, "hc-mesh", inbound.inbound(), "failing").await;
}

#[tokio::test]
async fn consul_endpoints_are_checked_too() {
    let consul = ConsulStandIn::start();
    let (a, b) = (Switchable::start("a"), Switchable::start("b"));
    consul.register(ConsulInstance::new("api-a", "api", a.server.addr));
    consul.register(ConsulInstance::new("api-b", "api", b.server.addr));
    let yaml = TestConfig::new()
        .section("consul", format!("{{ address: \"{}\", wait: 2s }}", consul.url()))
        .upstream(Upstream::discovered("hc-consul", "{ consul: { service: api } }").protocol("http"))
        .with(
            "health_check",
            "{ http: { path: /health }, interval: 100ms, unhealthy_threshold: 1, healthy_threshold: 1 }",
        )
        .yaml();
    let proxy = Proxy::start(&yaml).await;
    wait_verdict(&proxy, "hc-consul", a.server.addr, "passing").await;
    wait_verdict(&proxy, "hc-consul", b.server.addr, "passing").await;
    // Consul still says passing; remora's own check says otherwise.
    b.healthy.store(false, Ordering::SeqCst);
    wait_verdict(&proxy, "hc-consul", b.server.addr, "failing").await;
    let before = b.traffic();
    let base = format!("http://{}/", proxy.upstream("hc-consul"));
    for _ in 0..20 {
        assert_eq!(
            get(Version::HTTP_11, &base).await.unwrap().status,
            StatusCode::OK
        );
    }
    assert_eq!(b.traffic(), before);
}

#[tokio::test]
async fn a_new_endpoint_takes_traffic_once_its_first_check_passes() {
    let consul = ConsulStandIn::start();
    let (a, b) = (Switchable::start("a"), Switchable::start("b"));
    consul.register(ConsulInstance::new("api-a", "api", a.server.addr));
    let yaml = TestConfig::new()
        .section("consul", format!("{{ address: \"{}\", wait: 1s }}", consul.url()))
        .upstream(Upstream::discovered("hc-new", "{ consul: { service: api } }").protocol("http"))
        .with(
            "health_check",
            "{ http: { path: /health }, interval: 100ms, timeout: 5s, unhealthy_threshold: 1, healthy_threshold: 1 }",
        )
        // p2c_ewma would keep preferring `a`, whose latency it knows.
        .with("load_balancing", "{ policy: round_robin }")
        .yaml();
    let proxy = Proxy::start(&yaml).await;
    wait_verdict(&proxy, "hc-new", a.server.addr, "passing").await;
    // b's first check takes 1.5 s: it is new, and pending, that long.
    b.health_delay_ms.store(1_500, Ordering::SeqCst);
    consul.register(ConsulInstance::new("api-b", "api", b.server.addr));
    wait_verdict(&proxy, "hc-new", b.server.addr, "pending").await;
    let base = format!("http://{}/", proxy.upstream("hc-new"));
    for _ in 0..20 {
        let reply = get(Version::HTTP_11, &base).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    }
    let pending = verdict(&proxy, "hc-new", b.server.addr).await.unwrap().0;
    assert_eq!(
        pending, "pending",
        "the 20 requests outlasted b's first check"
    );
    assert_eq!((a.traffic(), b.traffic()), (20, 0));
    wait_verdict(&proxy, "hc-new", b.server.addr, "passing").await;
    for _ in 0..20 {
        let reply = get(Version::HTTP_11, &base).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    }
    assert_eq!(
        (a.traffic(), b.traffic()),
        (30, 10),
        "round robin once b passes"
    );
}
