//! Fallbacks through remora, one per trigger: an open circuit breaker
//! answered by a static response, no healthy endpoint answered by a
//! fallback backend (the request, body included, goes there), a rate limit
//! answered by a route's own static response; each marked
//! `x-remora-fallback` and counted, and a trigger not listed answered as
//! usual.

mod support;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use support::config::{TestConfig, Upstream};
use support::{Proxy, Server, get, prom, send, serve};

/// An origin that answers `/health` with `health` and anything else with
/// `status`, echoing the method and body as `<name> <METHOD> <body>`.
fn origin(name: &'static str, health: StatusCode, status: StatusCode) -> Server {
    serve(move |stream| async move {
        let service = service_fn(move |request: Request<Incoming>| async move {
            let (head, body) = request.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let (status, text) = if head.uri.path() == "/health" {
                (health, Bytes::new())
            } else {
                let text = format!("{name} {} {}", head.method, String::from_utf8_lossy(&body));
                (status, Bytes::from(text))
            };
            let mut response = Response::new(Full::new(text));
            *response.status_mut() = status;
            Ok::<_, Infallible>(response)
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    })
}

async fn fallbacks(proxy: &Proxy, upstream: &str, trigger: &str) -> f64 {
    let metrics = prom::scrape(&proxy.admin_url("/metrics")).await;
    let labels = [("upstream", upstream), ("trigger", trigger)];
    prom::value(&metrics, "remora_fallbacks_total", &labels).unwrap_or(0.0)
}

#[tokio::test]
async fn an_open_breaker_is_answered_by_the_static_response() {
    let failing = origin("api", StatusCode::OK, StatusCode::INTERNAL_SERVER_ERROR);
    let yaml = TestConfig::one_upstream("fb-breaker", "http", [failing.addr])
        .with("circuit_breaker", "{ consecutive_failures: 2, open_for: 30s }")
        .with(
            "fallback",
            "{ on: [circuit_open], response: { status: 200, headers: { content-type: application/json, cache-control: no-store }, body: '{\"items\":[]}' } }",
        )
        .yaml();
    let proxy = Proxy::start(&yaml).await;
    let url = format!("http://{}/items", proxy.upstream("fb-breaker"));
    for _ in 0..2 {
        let reply = get(Version::HTTP_11, &url).await.unwrap();
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!reply.headers.contains_key("x-remora-fallback"));
    }
    for _ in 0..3 {
        let reply = get(Version::HTTP_11, &url).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, "{\"items\":[]}");
        assert_eq!(reply.headers["content-type"], "application/json");
        assert_eq!(reply.headers["cache-control"], "no-store");
        assert_eq!(reply.headers["x-remora-fallback"], "circuit_open");
        assert!(!reply.headers.contains_key("x-remora-error"));
    }
    assert_eq!(fallbacks(&proxy, "fb-breaker", "circuit_open").await, 3.0);
}

#[tokio::test]
async fn no_healthy_endpoint_sends_the_request_to_the_fallback_backend() {
    let sick = [
        origin("api-1", StatusCode::SERVICE_UNAVAILABLE, StatusCode::OK),
        origin("api-2", StatusCode::SERVICE_UNAVAILABLE, StatusCode::OK),
    ];
    let readonly = origin("readonly", StatusCode::OK, StatusCode::OK);
    let upstream = Upstream::to("fb-health", sick.iter().map(|s| s.addr))
        .protocol("http")
        .with(
            "health_check",
            "{ http: { path: /health }, interval: 100ms, unhealthy_threshold: 1 }",
        )
        .with("load_balancing", "{ panic_threshold: 0 }")
        .with(
            "backends",
            format!("{{ readonly: {{ static: [{}] }} }}", readonly.addr),
        )
        .with("fallback", "{ backend: readonly }");
    let proxy = Proxy::start(&TestConfig::new().upstream(upstream).yaml()).await;
    let url = format!("http://{}/orders", proxy.upstream("fb-health"));
    // The first checks take both endpoints out (they start admitted).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let reply = get(Version::HTTP_11, &url).await.unwrap();
        if reply.headers.contains_key("x-remora-fallback") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never fell back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = fallbacks(&proxy, "fb-health", "no_healthy_endpoints").await;
    for i in 0..5 {
        let body = format!("order {i}");
        let request = Request::post(&url)
            .body(Full::new(Bytes::from(body.clone())))
            .unwrap();
        let reply = send(Version::HTTP_11, request).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, format!("readonly POST {body}"));
        assert_eq!(reply.headers["x-remora-fallback"], "no_healthy_endpoints");
    }
    let after = fallbacks(&proxy, "fb-health", "no_healthy_endpoints").await;
    assert_eq!(after - before, 5.0);
}

#[tokio::test]
async fn a_routes_fallback_answers_its_rate_limit_and_unlisted_triggers_stay_errors() {
    let api = origin("api", StatusCode::OK, StatusCode::OK);
    let upstream = Upstream::to("fb-limit", [api.addr])
        .protocol("http")
        .with("fallback", "{ on: [circuit_open], response: { status: 200 } }")
        .lines(
            "    routes:\n\
             \x20     - name: search\n\
             \x20       match: { path: { prefix: /search } }\n\
             \x20       rate_limit: { requests_per_second: 0.001, burst: 1 }\n\
             \x20       fallback: { response: { status: 503, headers: { retry-after: '5' }, body: busy } }\n\
             \x20     - name: other\n\
             \x20       match: { path: { prefix: /other } }\n\
             \x20       rate_limit: { requests_per_second: 0.001, burst: 1 }\n",
        );
    let proxy = Proxy::start(&TestConfig::new().upstream(upstream).yaml()).await;
    let base = proxy.upstream("fb-limit");
    let search = format!("http://{base}/search");
    let first = get(Version::HTTP_11, &search).await.unwrap();
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body, "api GET ");
    let limited = get(Version::HTTP_11, &search).await.unwrap();
    assert_eq!(limited.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(limited.body, "busy");
    assert_eq!(limited.headers["retry-after"], "5");
    assert_eq!(limited.headers["x-remora-fallback"], "rate_limited");
    assert_eq!(fallbacks(&proxy, "fb-limit", "rate_limited").await, 1.0);

    // The upstream's fallback only takes circuit_open: a rate-limited
    // request of another route gets the usual 429.
    let other = format!("http://{base}/other");
    assert_eq!(
        get(Version::HTTP_11, &other).await.unwrap().status,
        StatusCode::OK
    );
    let refused = get(Version::HTTP_11, &other).await.unwrap();
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers["x-remora-error"], "rate_limited");
    assert!(!refused.headers.contains_key("x-remora-fallback"));
}

/// The request a fallback backend gets is held to the route's timeout like
/// any other (the fallback layer sits outside the timeout layer).
#[tokio::test]
async fn a_fallback_backend_is_held_to_the_request_timeout() {
    let failing = origin("api", StatusCode::OK, StatusCode::INTERNAL_SERVER_ERROR);
    let slow = support::http_backend("slow-readonly");
    let yaml = TestConfig::one_upstream("fb-slow", "http", [failing.addr])
        .with("timeouts", "{ request: 300ms }")
        .with(
            "circuit_breaker",
            "{ consecutive_failures: 1, open_for: 30s }",
        )
        .with(
            "backends",
            format!("{{ readonly: {{ static: [{}] }} }}", slow.addr),
        )
        .with("fallback", "{ on: [circuit_open], backend: readonly }")
        .yaml();
    let proxy = Proxy::start(&yaml).await;
    let url = |path: &str| format!("http://{}{path}", proxy.upstream("fb-slow"));
    let first = get(Version::HTTP_11, &url("/slow/2000")).await.unwrap();
    assert_eq!(
        first.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "opens the breaker"
    );

    let quick = get(Version::HTTP_11, &url("/slow/10")).await.unwrap();
    assert_eq!(quick.status, StatusCode::OK, "{}", quick.body);
    assert_eq!(quick.headers["x-remora-fallback"], "circuit_open");
    let started = std::time::Instant::now();
    let late = get(Version::HTTP_11, &url("/slow/2000")).await.unwrap();
    let took = started.elapsed();
    assert_eq!(late.status, StatusCode::GATEWAY_TIMEOUT, "{}", late.body);
    assert_eq!(late.headers["x-remora-error"], "timeout");
    assert!(
        took < Duration::from_millis(1500),
        "answered after {took:?}"
    );
}
