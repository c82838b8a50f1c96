//! Retries end to end: a failed try goes to another endpoint, a small POST body is replayed
//! byte for byte while a large one is streamed once and never retried, a per-try timeout moves
//! the request to a healthy endpoint, and the retry budget bounds what an always-failing
//! upstream receives.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

use support::{Proxy, Server, get, http_backend, prom, send, serve};

/// An origin that reads each request body whole, records it, waits `delay`, then answers
/// `status` to every request.
struct Origin {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    bodies: Arc<Mutex<Vec<Bytes>>>,
    _server: Server,
}

fn origin(status: u16, delay: Duration) -> Origin {
    let requests = Arc::new(AtomicU64::new(0));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (count, seen) = (requests.clone(), bodies.clone());
    let server = serve(move |stream| {
        let (count, seen) = (count.clone(), seen.clone());
        async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let (count, seen) = (count.clone(), seen.clone());
                async move {
                    count.fetch_add(1, Ordering::SeqCst);
                    let body = request.into_body().collect().await?.to_bytes();
                    seen.lock().unwrap().push(body);
                    tokio::time::sleep(delay).await;
                    let mut response = Response::new(Full::new(Bytes::new()));
                    *response.status_mut() = StatusCode::from_u16(status).unwrap();
                    Ok::<_, hyper::Error>(response)
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    });
    Origin {
        addr: server.addr,
        requests,
        bodies,
        _server: server,
    }
}

fn yaml(name: &str, endpoints: &[SocketAddr], retries: &str) -> String {
    let endpoints: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
    format!(
        "service: {{ name: test }}\n\
         upstreams:\n  - name: {name}\n    listen: 127.0.0.1:0\n    protocol: http\n    \
         discovery: {{ static: [{}] }}\n    \
         load_balancing: {{ policy: round_robin }}\n    \
         timeouts: {{ request: 5s }}\n    \
         retries: {retries}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         logging: {{ access_log: false }}\n",
        endpoints.join(", ")
    )
}

async fn counter(proxy: &Proxy, name: &str, labels: &[(&str, &str)]) -> f64 {
    prom::value(
        &prom::scrape(&proxy.admin_url("/metrics")).await,
        name,
        labels,
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn a_503_is_retried_on_the_other_endpoint() {
    let failing = origin(503, Duration::ZERO);
    let healthy = http_backend("healthy");
    let proxy = Proxy::start(&yaml(
        "retry-other",
        &[failing.addr, healthy.addr],
        "{ attempts: 2, on: [\"503\"], backoff: { base: 1ms, max: 5ms } }",
    ))
    .await;
    let url = format!("http://{}/", proxy.upstream("retry-other"));
    for i in 0..20 {
        let reply = get(Version::HTTP_11, &url).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "request {i}: {reply:?}");
        assert_eq!(reply.headers["x-backend"], "healthy");
    }
    let first_tries_failed = failing.requests.load(Ordering::SeqCst);
    assert!(
        first_tries_failed > 0,
        "round robin never picked the failing endpoint"
    );
    assert_eq!(healthy.requests(), 20);
    let labels = [("upstream", "retry-other"), ("outcome", "success")];
    let succeeded = counter(&proxy, "remora_retries_total", &labels).await;
    assert_eq!(succeeded, first_tries_failed as f64);
    let failed = [("upstream", "retry-other"), ("outcome", "failure")];
    assert_eq!(counter(&proxy, "remora_retries_total", &failed).await, 0.0);
}

#[tokio::test]
async fn a_small_post_body_is_replayed_and_a_large_one_is_sent_once() {
    let failing = origin(503, Duration::ZERO);
    let proxy = Proxy::start(&yaml(
        "retry-bodies",
        &[failing.addr],
        "{ attempts: 3, on: [\"503\"], backoff: { base: 1ms, max: 2ms }, replay_body_limit: 1024 }",
    ))
    .await;
    let url = format!("http://{}/upload", proxy.upstream("retry-bodies"));

    let small = Bytes::from(vec![b's'; 1000]);
    let request = Request::post(&url).body(Full::new(small.clone())).unwrap();
    let reply = send(Version::HTTP_11, request).await.unwrap();
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        reply.headers.get("x-remora-error").is_none(),
        "the upstream's own 503"
    );
    assert_eq!(*failing.bodies.lock().unwrap(), vec![small.clone(); 3]);

    failing.bodies.lock().unwrap().clear();
    let large = Bytes::from(vec![b'L'; 64 * 1024]);
    let request = Request::post(&url).body(Full::new(large.clone())).unwrap();
    let reply = send(Version::HTTP_11, request).await.unwrap();
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(*failing.bodies.lock().unwrap(), vec![large]);
}

#[tokio::test]
async fn a_per_try_timeout_moves_the_request_to_another_endpoint() {
    let stuck = origin(200, Duration::from_secs(10));
    let healthy = http_backend("healthy");
    let proxy = Proxy::start(&yaml(
        "retry-per-try",
        &[stuck.addr, healthy.addr],
        "{ attempts: 2, on: [\"503\"], per_try_timeout: 200ms, backoff: { base: 1ms, max: 2ms } }",
    ))
    .await;
    let url = format!("http://{}/", proxy.upstream("retry-per-try"));
    for i in 0..6 {
        let started = Instant::now();
        let reply = get(Version::HTTP_11, &url).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "request {i}: {reply:?}");
        assert_eq!(reply.headers["x-backend"], "healthy");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    let timed_out = stuck.requests.load(Ordering::SeqCst);
    assert!(timed_out > 0);
    let labels = [
        ("direction", "outbound"),
        ("upstream", "retry-per-try"),
        ("kind", "per_try"),
    ];
    assert_eq!(
        counter(&proxy, "remora_timeouts_total", &labels).await,
        timed_out as f64
    );
}

/// An upstream that fails every request: with `ratio: 0.2`, `min_per_second: 10` and a 1 s
/// window, 300 requests over ~3 s may cause at most 0.2 × 300 + 10 × 3 = 90 retries (+ the
/// early expiry of the window's last slot), although `attempts: 3` asks for 600.
#[tokio::test]
async fn the_budget_bounds_the_load_on_an_always_failing_upstream() {
    let failing = origin(503, Duration::ZERO);
    let proxy = Proxy::start(&yaml(
        "retry-budget",
        &[failing.addr],
        "{ attempts: 3, on: [\"503\"], backoff: { base: 1ms, max: 2ms }, \
         budget: { ratio: 0.2, min_per_second: 10, window: 1s } }",
    ))
    .await;
    let url = format!("http://{}/", proxy.upstream("retry-budget"));
    const REQUESTS: u64 = 300;
    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..REQUESTS {
        ticks.tick().await;
        let url = url.clone();
        requests.spawn(async move { get(Version::HTTP_11, &url).await.unwrap().status });
    }
    while let Some(status) = requests.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let seconds = started.elapsed().as_secs_f64();
    let received = failing.requests.load(Ordering::SeqCst);
    let allowed = (1.2 * REQUESTS as f64 + 10.0 * seconds.ceil()).ceil();
    eprintln!(
        "budget: {REQUESTS} requests over {seconds:.2} s; upstream received {received} \
         (allowed {allowed}, without a budget 900)"
    );
    assert!(
        received as f64 <= allowed + 10.0,
        "upstream received {received} > {allowed} + slack"
    );
    assert!(
        received >= REQUESTS + 60,
        "the budget should allow most of its retries, got {received}"
    );
    let exhausted = counter(
        &proxy,
        "remora_retry_budget_exhausted_total",
        &[("upstream", "retry-budget")],
    )
    .await;
    let failed = counter(
        &proxy,
        "remora_retries_total",
        &[("upstream", "retry-budget"), ("outcome", "failure")],
    )
    .await;
    assert_eq!(failed, (received - REQUESTS) as f64);
    assert!(exhausted >= 150.0, "exhausted: {exhausted}");
}
