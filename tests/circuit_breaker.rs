//! Circuit breaking through remora: it opens on consecutive failures (HTTP
//! 5xx and gRPC UNAVAILABLE), fails fast with 503 `circuit_open` while open
//! without reaching the upstream, probes after `open_for`, closes on a good
//! probe, re-opens for twice as long on a bad one, and guards TCP upstreams.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::Empty;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use support::config::TestConfig;
use support::grpc::{FAIL_AFTER_REPLY, grpc_call};
use support::{
    Proxy, get, grpc_echo, grpc_fail, grpc_failing, grpc_unary, http_backend, http_client, prom,
};

fn yaml(name: &str, protocol: &str, endpoint: &str, breaker: &str) -> String {
    TestConfig::one_upstream(name, protocol, [endpoint])
        .with("circuit_breaker", breaker)
        .yaml()
}

#[tokio::test]
async fn opens_fails_fast_and_closes_after_a_good_probe() {
    let backend = http_backend("cb");
    let breaker = "{ consecutive_failures: 3, open_for: 400ms, half_open_requests: 1 }";
    let proxy = Proxy::start(&yaml(
        "cb-basic",
        "http",
        &backend.addr.to_string(),
        breaker,
    ))
    .await;
    let base = format!("http://{}", proxy.upstream("cb-basic"));

    for _ in 0..3 {
        let reply = get(Version::HTTP_11, &format!("{base}/status/503"))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            reply.headers.get("x-remora-error").is_none(),
            "the upstream's own 503"
        );
    }
    let seen = backend.requests();
    assert_eq!(seen, 3);

    // Open: 200 requests on one keep-alive connection, all refused at once.
    let client = http_client::<Empty<Bytes>>(Version::HTTP_11);
    let mut round_trips = Vec::with_capacity(200);
    for _ in 0..200 {
        let started = Instant::now();
        let response = client
            .request(Request::get(format!("{base}/")).body(Empty::new()).unwrap())
            .await
            .unwrap();
        round_trips.push(started.elapsed());
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["x-remora-error"], "circuit_open");
    }
    round_trips.sort();
    let (median, p90) = (round_trips[100], round_trips[180]);
    eprintln!(
        "circuit open: refused in {median:?} (median), {p90:?} (p90), client round trip included"
    );
    assert!(median < Duration::from_millis(1), "median {median:?}");
    assert_eq!(
        backend.requests(),
        seen,
        "nothing reached the upstream while open"
    );
    let metrics = prom::scrape(&proxy.admin_url("/metrics")).await;
    assert_eq!(
        prom::value(
            &metrics,
            "remora_circuit_breaker_state",
            &[("upstream", "cb-basic")]
        ),
        Some(1.0)
    );

    // After open_for a probe goes through; it succeeds, so the breaker closes.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let reply = get(Version::HTTP_11, &format!("{base}/")).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let reply = get(Version::HTTP_11, &format!("{base}/")).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let metrics = prom::scrape(&proxy.admin_url("/metrics")).await;
    assert_eq!(
        prom::value(
            &metrics,
            "remora_circuit_breaker_state",
            &[("upstream", "cb-basic")]
        ),
        Some(0.0)
    );
    for to in ["open", "half_open", "closed"] {
        assert_eq!(
            prom::value(
                &metrics,
                "remora_circuit_breaker_transitions_total",
                &[("upstream", "cb-basic"), ("to", to)]
            ),
            Some(1.0),
            "transitions to {to}"
        );
    }
}

#[tokio::test]
async fn a_failed_probe_reopens_for_twice_as_long() {
    let backend = http_backend("cb-probe");
    let breaker = "{ consecutive_failures: 1, open_for: 300ms, max_open_for: 10s }";
    let proxy = Proxy::start(&yaml(
        "cb-probe",
        "http",
        &backend.addr.to_string(),
        breaker,
    ))
    .await;
    let base = format!("http://{}", proxy.upstream("cb-probe"));
    let status = |path: &'static str| {
        let url = format!("{base}{path}");
        async move {
            let reply = get(Version::HTTP_11, &url).await.unwrap();
            let kind = reply
                .headers
                .get("x-remora-error")
                .map(|v| v.to_str().unwrap().to_owned());
            (reply.status, kind)
        }
    };

    assert_eq!(
        status("/status/500").await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let opened = Instant::now();
    assert_eq!(status("/").await.1.as_deref(), Some("circuit_open"));
    tokio::time::sleep(Duration::from_millis(350).saturating_sub(opened.elapsed())).await;

    // The probe fails: open again, now for 600 ms.
    assert_eq!(
        status("/status/500").await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let reopened = Instant::now();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        status("/").await.1.as_deref(),
        Some("circuit_open"),
        "still open at +400 ms"
    );
    tokio::time::sleep(Duration::from_millis(650).saturating_sub(reopened.elapsed())).await;
    assert_eq!(
        status("/").await,
        (StatusCode::OK, None),
        "probing again after 600 ms"
    );
}

#[tokio::test]
async fn grpc_unavailable_counts_and_the_open_breaker_answers_in_grpc_form() {
    let server = grpc_echo();
    let breaker = "{ consecutive_failures: 2, open_for: 30s }";
    let proxy = Proxy::start(&yaml("cb-grpc", "grpc", &server.addr.to_string(), breaker)).await;
    let addr = proxy.upstream("cb-grpc");
    for _ in 0..2 {
        let status = grpc_fail(addr).await.unwrap_err();
        assert!(status.metadata().get("x-remora-error").is_none());
    }
    let status = grpc_unary(addr, "ping").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(
        status.metadata().get("x-remora-error").unwrap(),
        "circuit_open"
    );
}

/// A TCP upstream whose endpoint refuses connections: after the breaker
/// opens, client connections are closed without a connect attempt.
#[tokio::test]
async fn tcp_connections_are_refused_while_open() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let breaker = "{ consecutive_failures: 2, open_for: 30s }";
    let proxy = Proxy::start(&yaml("cb-tcp", "tcp", &dead.to_string(), breaker)).await;
    let addr = proxy.upstream("cb-tcp");
    let connect_errors = || async {
        let metrics = prom::scrape(&proxy.admin_url("/metrics")).await;
        prom::value(
            &metrics,
            "remora_upstream_connect_errors_total",
            &[("upstream", "cb-tcp")],
        )
        .unwrap_or(0.0)
    };
    for _ in 0..2 {
        closed_at_once(addr).await;
    }
    let before = connect_errors().await;
    assert!(before >= 2.0);
    for _ in 0..5 {
        closed_at_once(addr).await;
    }
    assert_eq!(
        connect_errors().await,
        before,
        "no connect attempt while open"
    );
}

async fn closed_at_once(addr: std::net::SocketAddr) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut buffer = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buffer)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed, not hanging: {read:?}"
    );
}

/// Tries cut off by the request timeout count as failures: two timeouts
/// against an endpoint that never answers open the breaker.
#[tokio::test]
async fn timeouts_count_as_failures() {
    let (hole, _closed) = support::black_hole();
    let yaml = format!(
        "service: {{ name: test }}\n\
         upstreams:\n  - name: cb-timeout\n    listen: 127.0.0.1:0\n    protocol: http\n    \
         discovery: {{ static: [{hole}] }}\n    \
         timeouts: {{ request: 150ms }}\n    \
         circuit_breaker: {{ consecutive_failures: 2, open_for: 30s }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         logging: {{ access_log: false }}\n"
    );
    let proxy = Proxy::start(&yaml).await;
    let url = format!("http://{}/", proxy.upstream("cb-timeout"));
    for _ in 0..2 {
        let reply = get(Version::HTTP_11, &url).await.unwrap();
        assert_eq!(reply.headers["x-remora-error"], "timeout");
    }
    let started = Instant::now();
    let reply = get(Version::HTTP_11, &url).await.unwrap();
    assert_eq!(reply.headers["x-remora-error"], "circuit_open");
    assert!(started.elapsed() < Duration::from_millis(100));
}

/// The breaker's `remora_circuit_breaker_state` gauge (0 closed, 1 open, 2 half-open).
async fn state(proxy: &Proxy, upstream: &str) -> Option<f64> {
    let metrics = prom::scrape(&proxy.admin_url("/metrics")).await;
    prom::value(
        &metrics,
        "remora_circuit_breaker_state",
        &[("upstream", upstream)],
    )
}

/// `failures:` replaces the default definition: with `["429"]`, 500s leave the breaker
/// closed and two 429s open it.
#[tokio::test]
async fn the_failures_key_decides_what_opens_the_breaker() {
    let backend = http_backend("cb-failures");
    let breaker = "{ consecutive_failures: 2, open_for: 30s, failures: [\"429\"] }";
    let proxy = Proxy::start(&yaml(
        "cb-failures",
        "http",
        &backend.addr.to_string(),
        breaker,
    ))
    .await;
    let base = format!("http://{}", proxy.upstream("cb-failures"));
    for _ in 0..4 {
        let reply = get(Version::HTTP_11, &format!("{base}/status/500"))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(
        state(&proxy, "cb-failures").await,
        Some(0.0),
        "500s are not failures"
    );
    for _ in 0..2 {
        let reply = get(Version::HTTP_11, &format!("{base}/status/429"))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(reply.headers.get("x-remora-error").is_none());
    }
    let reply = get(Version::HTTP_11, &format!("{base}/")).await.unwrap();
    assert_eq!(reply.headers["x-remora-error"], "circuit_open");
    assert_eq!(backend.requests(), 6);
}

/// `failure_rate` end to end: failures alternate with successes, so no two are consecutive;
/// the breaker opens on the 10th result (`min_requests`), when half of them failed.
#[tokio::test]
async fn the_failure_rate_opens_the_breaker_once_min_requests_are_seen() {
    let backend = http_backend("cb-rate");
    let breaker = "{ consecutive_failures: 100, open_for: 30s, \
                   failure_rate: { threshold: 0.5, window: 10s, min_requests: 10 } }";
    let proxy = Proxy::start(&yaml("cb-rate", "http", &backend.addr.to_string(), breaker)).await;
    let base = format!("http://{}", proxy.upstream("cb-rate"));
    for i in 0..10 {
        assert_eq!(
            state(&proxy, "cb-rate").await,
            Some(0.0),
            "closed before result {i}"
        );
        let path = if i % 2 == 0 { "/" } else { "/status/500" };
        let reply = get(Version::HTTP_11, &format!("{base}{path}"))
            .await
            .unwrap();
        assert!(reply.headers.get("x-remora-error").is_none(), "result {i}");
    }
    assert_eq!(
        state(&proxy, "cb-rate").await,
        Some(1.0),
        "5 of 10 failed: open"
    );
    let reply = get(Version::HTTP_11, &format!("{base}/")).await.unwrap();
    assert_eq!(reply.headers["x-remora-error"], "circuit_open");
    assert_eq!(backend.requests(), 10);
}

/// The default `failures` count gRPC DEADLINE_EXCEEDED and INTERNAL (not, say, NOT_FOUND).
#[tokio::test]
async fn grpc_deadline_exceeded_and_internal_are_failures_by_default() {
    let breaker = "{ consecutive_failures: 2, open_for: 30s }";
    for (code, opens) in [
        (tonic::Code::DeadlineExceeded, true),
        (tonic::Code::Internal, true),
        (tonic::Code::NotFound, false),
    ] {
        let (server, calls) = grpc_failing(code, u64::MAX);
        let name = format!("cb-grpc-{}", i32::from(code));
        let proxy = Proxy::start(&yaml(&name, "grpc", &server.addr.to_string(), breaker)).await;
        let addr = proxy.upstream(&name);
        for _ in 0..2 {
            let status = grpc_unary(addr, "ping").await.unwrap_err();
            assert_eq!(status.code(), code);
        }
        let status = grpc_unary(addr, "ping").await.unwrap_err();
        let open = status.metadata().get("x-remora-error").is_some();
        assert_eq!(open, opens, "{code:?}: {status:?}");
        let reached = calls.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(reached, if opens { 2 } else { 3 }, "{code:?}");
    }
}

/// A connection closed before any answer (`reset`) is a failure by default.
#[tokio::test]
async fn resets_are_failures_by_default() {
    let hang_up = support::serve(|mut stream| async move {
        support::black_hole::read_request_head(&mut stream).await;
    });
    let breaker = "{ consecutive_failures: 2, open_for: 30s }";
    let proxy = Proxy::start(&yaml(
        "cb-reset",
        "http",
        &hang_up.addr.to_string(),
        breaker,
    ))
    .await;
    let url = format!("http://{}/", proxy.upstream("cb-reset"));
    for _ in 0..2 {
        let reply = get(Version::HTTP_11, &url).await.unwrap();
        assert_eq!(reply.headers["x-remora-error"], "upstream_reset");
    }
    let reply = get(Version::HTTP_11, &url).await.unwrap();
    assert_eq!(reply.headers["x-remora-error"], "circuit_open");
}

/// A gRPC status that comes in the trailers, after a reply, counts when the body ends:
/// two INTERNAL endings open the breaker.
#[tokio::test]
async fn a_grpc_status_in_the_trailers_counts_when_the_body_ends() {
    let server = grpc_echo();
    let breaker = "{ consecutive_failures: 2, open_for: 30s }";
    let proxy = Proxy::start(&yaml(
        "cb-trailers",
        "grpc",
        &server.addr.to_string(),
        breaker,
    ))
    .await;
    let addr = proxy.upstream("cb-trailers");
    for _ in 0..2 {
        let status = grpc_call(addr, FAIL_AFTER_REPLY, "ping").await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
    }
    let status = grpc_unary(addr, "ping").await.unwrap_err();
    assert_eq!(
        status.metadata().get("x-remora-error").unwrap(),
        "circuit_open"
    );
}
