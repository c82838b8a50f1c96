//! Load shedding through a real proxy: with `max_concurrent_requests` requests held by a slow
//! backend, the next one is answered 503 `overloaded` at once while the held ones complete;
//! a slot frees when its response ends, and the in-flight gauge follows.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::{StatusCode, Version};

use support::config::TestConfig;
use support::{Backend, Proxy, get, http_backend, prom};

fn yaml(name: &str, endpoint: SocketAddr, limit: u32) -> String {
    TestConfig::one_upstream(name, "http", [endpoint])
        .with("max_concurrent_requests", limit)
        .yaml()
}

/// Waits (bounded) until the backend has received `count` requests.
async fn until_backend_saw(backend: &Backend, count: u64) {
    for _ in 0..500 {
        if backend.requests() >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("backend saw {} requests, not {count}", backend.requests());
}

/// Two slow requests hold both slots; a third is shed fast; the two still complete; then
/// the slots are free again.
async fn shed_the_third(base: &str, backend: &Backend, metrics_url: &str, labels: &[(&str, &str)]) {
    let held: Vec<_> = (0..2)
        .map(|_| {
            let url = format!("{base}/slow/800");
            tokio::spawn(async move { get(Version::HTTP_11, &url).await.unwrap() })
        })
        .collect();
    until_backend_saw(backend, 2).await;
    let in_flight = prom::value(
        &prom::scrape(metrics_url).await,
        "remora_requests_in_flight",
        labels,
    );
    assert_eq!(in_flight, Some(2.0));

    let started = Instant::now();
    let shed = get(Version::HTTP_11, &format!("{base}/")).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(shed.status, StatusCode::SERVICE_UNAVAILABLE, "{shed:?}");
    assert_eq!(shed.headers["x-remora-error"], "overloaded");
    assert!(
        elapsed < Duration::from_millis(100),
        "shed after {elapsed:?}"
    );
    assert_eq!(
        backend.requests(),
        2,
        "the shed request reached the backend"
    );

    for request in held {
        let reply = request.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    }
    // Both responses have ended: the slots are free.
    let after = get(Version::HTTP_11, &format!("{base}/")).await.unwrap();
    assert_eq!(after.status, StatusCode::OK);

    prom::assert_value_within(
        metrics_url,
        "remora_shed_requests_total",
        labels,
        1.0,
        Duration::from_secs(2),
    )
    .await;
    prom::assert_value_within(
        metrics_url,
        "remora_requests_in_flight",
        labels,
        0.0,
        Duration::from_secs(2),
    )
    .await;
}

#[tokio::test]
async fn outbound_over_the_limit_is_503_overloaded_at_once() {
    let backend = http_backend("shed-out");
    let proxy = Proxy::start(&yaml("shed-outbound", backend.addr, 2)).await;
    let base = format!("http://{}", proxy.upstream("shed-outbound"));
    let labels = [("direction", "outbound"), ("upstream", "shed-outbound")];
    shed_the_third(&base, &backend, &proxy.admin_url("/metrics"), &labels).await;
}

#[tokio::test]
async fn inbound_over_the_limit_is_503_overloaded_at_once() {
    let app = http_backend("shed-in");
    let yaml = format!(
        "service: {{ name: shed-inbound-app, port: {}, protocol: http }}\n\
         inbound: {{ listen: 127.0.0.1:0, max_concurrent_requests: 2 }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         logging: {{ access_log: false }}\n",
        app.addr.port()
    );
    let proxy = Proxy::start(&yaml).await;
    let base = format!("http://{}", proxy.inbound());
    let labels = [("direction", "inbound"), ("upstream", "shed-inbound-app")];
    shed_the_third(&base, &app, &proxy.admin_url("/metrics"), &labels).await;
}

/// A gRPC client over the limit gets UNAVAILABLE (14), trailers-only.
#[tokio::test]
async fn grpc_over_the_limit_is_unavailable() {
    let backend = http_backend("shed-grpc");
    let yaml = format!(
        "service: {{ name: test }}\n\
         upstreams:\n  - name: shed-grpc\n    listen: 127.0.0.1:0\n    protocol: http2\n    \
         discovery: {{ static: [{}] }}\n    \
         max_concurrent_requests: 1\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         logging: {{ access_log: false }}\n",
        backend.addr
    );
    let proxy = Proxy::start(&yaml).await;
    let base = format!("http://{}", proxy.upstream("shed-grpc"));
    let held = {
        let url = format!("{base}/slow/500");
        tokio::spawn(async move { get(Version::HTTP_2, &url).await.unwrap() })
    };
    until_backend_saw(&backend, 1).await;
    let request = http::Request::post(format!("{base}/remora.test.Echo/Unary"))
        .header("content-type", "application/grpc")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let reply = support::send(Version::HTTP_2, request).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["grpc-status"], "14");
    assert_eq!(reply.headers["x-remora-error"], "overloaded");
    assert_eq!(held.await.unwrap().status, StatusCode::OK);
}
