//! Retries end to end: a failed try goes to another endpoint, a small PUT body is replayed
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

use support::config::TestConfig;
use support::{Proxy, Server, get, grpc_failing, grpc_unary, http_backend, prom, send, serve};

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
    yaml_with(name, "http", "{ policy: round_robin }", endpoints, retries)
}

/// `yaml` with the upstream's protocol and `load_balancing` section chosen.
fn yaml_with(
    name: &str,
    protocol: &str,
    load_balancing: &str,
    endpoints: &[SocketAddr],
    retries: &str,
) -> String {
    TestConfig::one_upstream(name, protocol, endpoints)
        .with("load_balancing", load_balancing)
        .with("timeouts", "{ request: 5s }")
        .with("retries", retries)
        .yaml()
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
    let succeeded = proxy.metric("remora_retries_total", &labels).await;
    assert_eq!(succeeded, first_tries_failed as f64);
    let failed = [("upstream", "retry-other"), ("outcome", "failure")];
    assert_eq!(proxy.metric("remora_retries_total", &failed).await, 0.0);
}

#[tokio::test]
async fn a_small_put_body_is_replayed_and_a_large_one_is_sent_once() {
    let failing = origin(503, Duration::ZERO);
    let proxy = Proxy::start(&yaml(
        "retry-bodies",
        &[failing.addr],
        "{ attempts: 3, on: [\"503\"], backoff: { base: 1ms, max: 2ms }, replay_body_limit: 1024 }",
    ))
    .await;
    let url = format!("http://{}/upload", proxy.upstream("retry-bodies"));

    let small = Bytes::from(vec![b's'; 1000]);
    let request = Request::put(&url).body(Full::new(small.clone())).unwrap();
    let reply = send(Version::HTTP_11, request).await.unwrap();
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        reply.headers.get("x-remora-error").is_none(),
        "the upstream's own 503"
    );
    assert_eq!(*failing.bodies.lock().unwrap(), vec![small.clone(); 3]);

    failing.bodies.lock().unwrap().clear();
    let large = Bytes::from(vec![b'L'; 64 * 1024]);
    let request = Request::put(&url).body(Full::new(large.clone())).unwrap();
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
        proxy.metric("remora_timeouts_total", &labels).await,
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
    let exhausted = proxy
        .metric(
            "remora_retry_budget_exhausted_total",
            &[("upstream", "retry-budget")],
        )
        .await;
    let failed = proxy
        .metric(
            "remora_retries_total",
            &[("upstream", "retry-budget"), ("outcome", "failure")],
        )
        .await;
    assert_eq!(failed, (received - REQUESTS) as f64);
    assert!(exhausted >= 150.0, "exhausted: {exhausted}");
}

/// Retries of `upstream` counted so far: (`outcome="success"`, `outcome="failure"`).
async fn retries(proxy: &Proxy, upstream: &str) -> (f64, f64) {
    let metrics = prom::scrape(&proxy.admin_url("/metrics")).await;
    let count = |outcome| {
        prom::value(
            &metrics,
            "remora_retries_total",
            &[("upstream", upstream), ("outcome", outcome)],
        )
        .unwrap_or(0.0)
    };
    (count("success"), count("failure"))
}

/// A refused stream is resent by the endpoint itself, up to `MAX_RESENDS` (8) times, with no
/// retry counted; refused once more, it reaches the retry layer as its own outcome
/// (`ProxyError::is_refused_stream` sees the h2 reason under hyper's error): retried under
/// `refused_stream`, and not under `reset`.
#[tokio::test]
async fn a_refused_stream_is_retried_under_refused_stream_only() {
    for (name, on, status, retried) in [
        (
            "retry-refused",
            "refused_stream",
            StatusCode::OK,
            (1.0, 0.0),
        ),
        (
            "retry-refused-not-reset",
            "reset",
            StatusCode::BAD_GATEWAY,
            (0.0, 0.0),
        ),
    ] {
        let origin =
            support::h2_origin::refusing_first_streams(1 + remora::resend::MAX_RESENDS as u64);
        let retry = format!("{{ attempts: 2, on: [{on}], backoff: {{ base: 1ms, max: 2ms }} }}");
        let proxy = Proxy::start(&yaml_with(
            name,
            "http2",
            "{ policy: round_robin }",
            &[origin.addr],
            &retry,
        ))
        .await;
        let url = format!("http://{}/", proxy.upstream(name));
        let reply = get(Version::HTTP_2, &url).await.unwrap();
        assert_eq!(reply.status, status, "{name}: {reply:?}");
        if status == StatusCode::BAD_GATEWAY {
            assert_eq!(reply.headers["x-remora-error"], "upstream_reset");
        }
        assert_eq!(retries(&proxy, name).await, retried, "{name}");
    }
}

/// An HTTP/1.1 origin whose first connection is reset (RST) and second closed (FIN), each
/// after half a response head; later connections are answered 200.
fn breaking_first_two_connections() -> Server {
    use tokio::io::AsyncWriteExt;
    let connections = Arc::new(AtomicU64::new(0));
    serve(move |mut stream| {
        let number = connections.fetch_add(1, Ordering::SeqCst);
        async move {
            if !support::black_hole::read_request_head(&mut stream).await {
                return;
            }
            if number < 2 {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-le").await;
                if number == 0 {
                    let _ = stream.set_zero_linger();
                }
                return; // dropped: RST for the first, FIN for the second
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
            support::black_hole::read_until_closed(&mut stream).await;
        }
    })
}

/// Under `reset` the third try succeeds (the second broke too: one failed retry, one
/// successful); without it the first break is the answer.
#[tokio::test]
async fn a_reset_or_closed_connection_is_retried_under_reset() {
    for (name, on, status, retried) in [
        ("retry-reset", "reset", StatusCode::OK, (1.0, 1.0)),
        (
            "retry-reset-not-listed",
            "\"503\"",
            StatusCode::BAD_GATEWAY,
            (0.0, 0.0),
        ),
    ] {
        let origin = breaking_first_two_connections();
        let retry = format!("{{ attempts: 3, on: [{on}], backoff: {{ base: 1ms, max: 2ms }} }}");
        let proxy = Proxy::start(&yaml(name, &[origin.addr], &retry)).await;
        let url = format!("http://{}/", proxy.upstream(name));
        let reply = get(Version::HTTP_11, &url).await.unwrap();
        assert_eq!(reply.status, status, "{name}: {reply:?}");
        if status == StatusCode::OK {
            assert_eq!(reply.body, "ok");
        } else {
            assert_eq!(reply.headers["x-remora-error"], "upstream_reset");
        }
        assert_eq!(retries(&proxy, name).await, retried, "{name}");
    }
}

/// `forward` already sends a request that could not connect once more (to another endpoint
/// when there is one); the retry layer's `connect_failure` comes on top: each try is one more
/// pair of connection attempts.
#[tokio::test]
async fn connect_failures_are_retried_by_the_retry_layer_on_top_of_the_resend() {
    let dead = support::dead_addr();
    for (attempts, connects) in [(1, 2.0), (3, 6.0)] {
        let name = format!("retry-connect-{attempts}");
        let proxy = Proxy::start(&yaml(
            &name,
            &[dead],
            &format!("{{ attempts: {attempts}, on: [connect_failure], backoff: {{ base: 1ms, max: 2ms }} }}"),
        ))
        .await;
        let url = format!("http://{}/", proxy.upstream(&name));
        let reply = get(Version::HTTP_11, &url).await.unwrap();
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{reply:?}");
        assert_eq!(reply.headers["x-remora-error"], "connect_failed");
        let labels = [("upstream", name.as_str())];
        let errors = proxy
            .metric("remora_upstream_connect_errors_total", &labels)
            .await;
        assert_eq!(
            errors, connects,
            "connection attempts with attempts: {attempts}"
        );
        let failed = f64::from(attempts - 1);
        assert_eq!(retries(&proxy, &name).await, (0.0, failed));
    }

    // Three dead endpoints and a live one: a first try and its resend may both hit dead
    // ones; the retry reaches the live one, so every proxy's first request succeeds.
    let live = http_backend("live");
    let mut retried = 0.0;
    for round in 0..8 {
        let endpoints = [
            support::dead_addr(),
            support::dead_addr(),
            support::dead_addr(),
            live.addr,
        ];
        let name = format!("retry-connect-live-{round}");
        let proxy = Proxy::start(&yaml(
            &name,
            &endpoints,
            "{ attempts: 2, on: [connect_failure], backoff: { base: 1ms, max: 2ms } }",
        ))
        .await;
        let url = format!("http://{}/", proxy.upstream(&name));
        let reply = get(Version::HTTP_11, &url).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "round {round}: {reply:?}");
        retried += retries(&proxy, &name).await.0;
    }
    eprintln!("connect_failure: 8 first requests over 3 dead + 1 live, {retried} needed a retry");
}

#[tokio::test]
async fn grpc_unavailable_is_retried_end_to_end() {
    let (origin, calls) = grpc_failing(tonic::Code::Unavailable, 1);
    let proxy = Proxy::start(&yaml_with(
        "retry-grpc",
        "grpc",
        "{ policy: round_robin }",
        &[origin.addr],
        "{ attempts: 2, on: [unavailable], backoff: { base: 1ms, max: 2ms }, idempotent_grpc_methods: [remora.test.Echo/Unary] }",
    ))
    .await;
    let (text, trailers) = grpc_unary(proxy.upstream("retry-grpc"), "again")
        .await
        .expect("the retry succeeds");
    assert_eq!(text, "again");
    assert_eq!(trailers.get("x-echo-trailer").unwrap(), "done");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(retries(&proxy, "retry-grpc").await, (1.0, 0.0));
}

/// With a policy that could pick the failed endpoint again — `random`, or `ring_hash` whose
/// key maps to it — the retry goes to the other endpoint, so every request succeeds on its
/// second try at the latest.
#[tokio::test]
async fn retries_go_to_the_other_endpoint_under_random_and_ring_hash() {
    for (name, load_balancing) in [
        ("retry-random", "{ policy: random }"),
        (
            "retry-ring-hash",
            "{ policy: ring_hash, hash_on: \"header:x-user\" }",
        ),
    ] {
        let failing = origin(503, Duration::ZERO);
        let healthy = http_backend("healthy");
        let proxy = Proxy::start(&yaml_with(
            name,
            "http",
            load_balancing,
            &[failing.addr, healthy.addr],
            "{ attempts: 2, on: [\"503\"], backoff: { base: 1ms, max: 2ms } }",
        ))
        .await;
        let url = format!("http://{}/", proxy.upstream(name));
        // Twenty keys, each sent twice: under ring_hash a key whose endpoint is the failing
        // one hits it every time.
        for i in 0..40 {
            let request = Request::get(&url)
                .header("x-user", format!("user-{}", i % 20))
                .body(Full::new(Bytes::new()))
                .unwrap();
            let reply = send(Version::HTTP_11, request).await.unwrap();
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "{name} request {i}: {reply:?}"
            );
            assert_eq!(reply.headers["x-backend"], "healthy");
        }
        let first_tries_failed = failing.requests.load(Ordering::SeqCst);
        eprintln!("{name}: 40 requests, {first_tries_failed} first tries failed, all retried");
        assert!(
            first_tries_failed > 0,
            "{name}: never picked the failing endpoint"
        );
        if name == "retry-ring-hash" {
            assert_eq!(
                first_tries_failed % 2,
                0,
                "a key always picks its endpoint first"
            );
        }
        assert_eq!(
            retries(&proxy, name).await,
            (first_tries_failed as f64, 0.0),
            "{name}: every retry succeeded"
        );
    }
}

/// The default `replay_body_limit` is 64 KiB: a body of exactly 64 KiB is kept and replayed,
/// one byte more is streamed once and not retried.
#[tokio::test]
async fn the_default_replay_limit_is_64_kib_inclusive() {
    let failing = origin(503, Duration::ZERO);
    let proxy = Proxy::start(&yaml(
        "retry-64k",
        &[failing.addr],
        "{ attempts: 2, on: [\"503\"], backoff: { base: 1ms, max: 2ms } }",
    ))
    .await;
    let url = format!("http://{}/upload", proxy.upstream("retry-64k"));
    for (size, tries) in [(64 * 1024, 2), (64 * 1024 + 1, 1)] {
        failing.bodies.lock().unwrap().clear();
        let body = Bytes::from(vec![b'b'; size]);
        let request = Request::put(&url).body(Full::new(body.clone())).unwrap();
        let reply = send(Version::HTTP_11, request).await.unwrap();
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            *failing.bodies.lock().unwrap(),
            vec![body; tries],
            "a {size}-byte body is sent {tries} time(s)"
        );
    }
    assert_eq!(retries(&proxy, "retry-64k").await, (0.0, 1.0));
}
