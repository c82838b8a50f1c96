//! Adaptive concurrency end to end, through the `remora` binary: a backend whose latency grows
//! with its concurrency (4 workers × 20 ms: 200 requests/s, 20 ms unloaded), driven by 40
//! clients at once. With `adaptive_concurrency: {}` (defaults, no tuning) the limit settles
//! near the backend's 4 workers, admitted requests stay near the unloaded latency and the rest
//! are refused at once with 503 `overloaded`; with no limit every request waits in the
//! backend's queue. Every ending — answered, refused, failed, timed out, cancelled — returns
//! its slot (`remora_concurrency_in_flight` back at 0); requests cut off by the request
//! timeout shrink the limit. Inbound works the same way.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::Empty;

use support::config::{TestConfig, Upstream};
use support::queueing::{QueueingBackend, queueing_backend};
use support::{ProxyProcess, http_backend, http_client, prom};

const WORKERS: usize = 4;
const SERVICE: Duration = Duration::from_millis(20);
const CLIENTS: usize = 40;

/// What the clients saw: latencies of the 200s (after `warmup`), and how many were refused.
#[derive(Debug, Default)]
struct Seen {
    admitted: Vec<Duration>,
    overloaded: u64,
    other: Vec<String>,
}

impl Seen {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.admitted.clone();
        sorted.sort();
        sorted[((sorted.len() - 1) as f64 * p) as usize]
    }
}

/// `CLIENTS` closed-loop clients send `GET url` for `duration`; answers from the first
/// `warmup` are not counted.
async fn drive(url: &str, duration: Duration, warmup: Duration) -> Seen {
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let url = url.to_owned();
            tokio::spawn(async move {
                let client = http_client::<Empty<Bytes>>(Version::HTTP_11);
                let mut seen = Seen::default();
                while started.elapsed() < duration {
                    let sent = Instant::now();
                    let request = Request::get(&url).body(Empty::new()).unwrap();
                    let reply = client.request(request).await;
                    let counted = started.elapsed() > warmup;
                    let latency = sent.elapsed();
                    match reply {
                        Ok(response) => {
                            let status = response.status();
                            let error = response.headers().get("x-remora-error").cloned();
                            let _ = http_body_util::BodyExt::collect(response.into_body()).await;
                            match (status, error) {
                                (StatusCode::OK, _) if counted => seen.admitted.push(latency),
                                (StatusCode::OK, _) => {}
                                (StatusCode::SERVICE_UNAVAILABLE, Some(error))
                                    if error == "overloaded" =>
                                {
                                    seen.overloaded += 1;
                                    // A refused client backs off a little, as clients do.
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                }
                                (status, error) => seen.other.push(format!("{status} {error:?}")),
                            }
                        }
                        Err(error) => seen.other.push(error.to_string()),
                    }
                }
                seen
            })
        })
        .collect();
    let mut all = Seen::default();
    for client in clients {
        let seen = client.await.unwrap();
        all.admitted.extend(seen.admitted);
        all.overloaded += seen.overloaded;
        all.other.extend(seen.other);
    }
    all
}

async fn gauge(admin: SocketAddr, name: &str, direction: &str, upstream: &str) -> Option<f64> {
    let text = prom::scrape(&format!("http://{admin}/metrics")).await;
    prom::value(
        &text,
        name,
        &[("direction", direction), ("upstream", upstream)],
    )
}

fn upstream_yaml(name: &str, backend: &QueueingBackend, limit: Option<&str>) -> String {
    let config =
        TestConfig::one_upstream(name, "http", [backend.addr]).with("timeouts", "{ request: 10s }");
    match limit {
        Some(limit) => config.with("adaptive_concurrency", limit).yaml(),
        None => config.yaml(),
    }
}

/// Checks what an adaptive limit in front of the backend did under the load `seen`.
async fn assert_adapted(
    admin: SocketAddr,
    direction: &str,
    name: &str,
    seen: &Seen,
    backend: &QueueingBackend,
) {
    let (p50, p99) = (seen.percentile(0.5), seen.percentile(0.99));
    let limit = gauge(admin, "remora_concurrency_limit", direction, name)
        .await
        .unwrap();
    let noload = gauge(
        admin,
        "remora_concurrency_rtt_noload_seconds",
        direction,
        name,
    )
    .await
    .unwrap();
    eprintln!(
        "{direction} adaptive: {} admitted (p50 {p50:?}, p99 {p99:?}), {} overloaded, limit {limit}, \
         rtt_noload {noload}, backend peak {} in flight",
        seen.admitted.len(),
        seen.overloaded,
        backend.peak_in_flight()
    );
    assert!(seen.other.is_empty(), "{:?}", seen.other);
    assert!((3.0..=16.0).contains(&limit), "limit {limit}");
    assert!(
        (0.015..0.1).contains(&noload),
        "rtt_noload {noload} s for a 20 ms backend"
    );
    assert!(seen.overloaded > 0, "nothing was refused");
    // Unloaded: 20 ms. Without a limit: 40 clients / 4 workers × 20 ms = 200 ms.
    assert!(p50 < Duration::from_millis(100), "p50 {p50:?}");
    assert!(
        backend.peak_in_flight() <= 20,
        "the backend had {} requests at once",
        backend.peak_in_flight()
    );
    let shed = prom::sum(
        &prom::scrape(&format!("http://{admin}/metrics")).await,
        "remora_shed_requests_total",
        &[("direction", direction), ("upstream", name)],
    );
    assert!(shed >= seen.overloaded as f64, "shed {shed}");
    let in_flight = gauge(admin, "remora_concurrency_in_flight", direction, name).await;
    assert_eq!(in_flight, Some(0.0), "slots leaked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_follows_the_latency_of_an_overloaded_upstream() {
    let backend = queueing_backend(WORKERS, SERVICE);
    let proxy = ProxyProcess::start(&upstream_yaml("api", &backend, Some("{}")), 1);
    let url = format!("http://{}/", proxy.listener("api"));
    let seen = drive(&url, Duration::from_secs(4), Duration::from_secs(2)).await;
    backend.reset_peak();
    // The peak over a calm second of load, after it settled.
    let settled = drive(&url, Duration::from_secs(1), Duration::ZERO).await;
    assert!(settled.other.is_empty(), "{:?}", settled.other);
    assert_adapted(proxy.admin, "outbound", "api", &seen, &backend).await;

    // The same load without a limit: every request queues at the backend.
    let unlimited = queueing_backend(WORKERS, SERVICE);
    let proxy = ProxyProcess::start(&upstream_yaml("plain", &unlimited, None), 1);
    let url = format!("http://{}/", proxy.listener("plain"));
    let seen = drive(&url, Duration::from_secs(3), Duration::from_secs(1)).await;
    let p50 = seen.percentile(0.5);
    eprintln!(
        "no limit: {} answered, p50 {p50:?}, p99 {:?}, backend peak {} in flight",
        seen.admitted.len(),
        seen.percentile(0.99),
        unlimited.peak_in_flight()
    );
    assert!(p50 > Duration::from_millis(150), "p50 {p50:?}");
    assert_eq!(seen.overloaded, 0);
    assert!(
        gauge(proxy.admin, "remora_concurrency_limit", "outbound", "plain")
            .await
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inbound_limit_protects_the_local_application() {
    let app = queueing_backend(WORKERS, SERVICE);
    let yaml = TestConfig::new()
        .service(&format!("{{ name: app, port: {} }}", app.addr.port()))
        .text("inbound: { listen: 127.0.0.1:0, adaptive_concurrency: { max_limit: 100 } }\n")
        .yaml();
    let proxy = ProxyProcess::start(&yaml, 1);
    let url = format!("http://{}/", proxy.listener("inbound"));
    let seen = drive(&url, Duration::from_secs(4), Duration::from_secs(2)).await;
    app.reset_peak();
    let settled = drive(&url, Duration::from_secs(1), Duration::ZERO).await;
    assert!(settled.other.is_empty(), "{:?}", settled.other);
    assert_adapted(proxy.admin, "inbound", "app", &seen, &app).await;
}

/// Requests that end in every other way — connect failure, request timeout, a client that
/// hangs up — each return their slot; one held request shows in the gauge meanwhile.
#[tokio::test]
async fn every_ending_returns_its_slot() {
    let backend = http_backend("slow");
    let dead = support::dead_addr();
    let yaml = TestConfig::new()
        .upstream(
            Upstream::to("slots", [backend.addr])
                .with("timeouts", "{ request: 200ms }")
                .with("adaptive_concurrency", "{ min_limit: 5 }"),
        )
        .upstream(Upstream::to("dead", [dead]).with("adaptive_concurrency", "{}"))
        .yaml();
    let proxy = ProxyProcess::start(&yaml, 2);
    let slots = format!("http://{}", proxy.listener("slots"));
    let in_flight = |name: &'static str| {
        gauge(
            proxy.admin,
            "remora_concurrency_in_flight",
            "outbound",
            name,
        )
    };
    assert_eq!(in_flight("slots").await, Some(0.0));

    // Held: counted while it runs.
    let client = http_client::<Empty<Bytes>>(Version::HTTP_11);
    let held = tokio::spawn({
        let (client, url) = (client.clone(), format!("{slots}/slow/150"));
        async move {
            client
                .request(Request::get(url).body(Empty::new()).unwrap())
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(in_flight("slots").await, Some(1.0));
    assert_eq!(held.await.unwrap().unwrap().status(), StatusCode::OK);

    // Timed out at 200 ms.
    let reply = support::get(Version::HTTP_11, &format!("{slots}/slow/2000"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    // Cancelled by the client after 50 ms.
    let url = format!("{slots}/slow/2000");
    let cancelled =
        tokio::spawn(async move { support::get(Version::HTTP_11, &url).await.map(drop) });
    tokio::time::sleep(Duration::from_millis(50)).await;
    cancelled.abort();
    // Refused by the dead endpoint.
    let reply = support::get(
        Version::HTTP_11,
        &format!("http://{}/", proxy.listener("dead")),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);

    for name in ["slots", "dead"] {
        prom::assert_value_within(
            &format!("http://{}/metrics", proxy.admin),
            "remora_concurrency_in_flight",
            &[("direction", "outbound"), ("upstream", name)],
            0.0,
            Duration::from_secs(2),
        )
        .await;
    }
}

/// Outbound the request timeout sits above the concurrency layer: a try it cuts off is a drop
/// for the adaptive limit all the same, so an upstream that hangs shrinks it.
#[tokio::test]
async fn requests_cut_off_by_the_timeout_shrink_the_limit() {
    let backend = http_backend("hangs");
    let yaml = TestConfig::one_upstream("hangs", "http", [backend.addr])
        .with("timeouts", "{ request: 100ms }")
        .with(
            "adaptive_concurrency",
            "{ min_limit: 1, initial_limit: 20 }",
        )
        .yaml();
    let proxy = ProxyProcess::start(&yaml, 1);
    let url = format!("http://{}", proxy.listener("hangs"));
    let limit = || gauge(proxy.admin, "remora_concurrency_limit", "outbound", "hangs");
    // The first probe: answers one at a time at min_limit, then the initial limit.
    for _ in 0..20 {
        let reply = support::get(Version::HTTP_11, &format!("{url}/"))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    }
    assert_eq!(limit().await, Some(20.0));
    for _ in 0..5 {
        let reply = support::get(Version::HTTP_11, &format!("{url}/slow/2000"))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    }
    let shrunk = limit().await.unwrap();
    assert!(shrunk < 20.0, "limit {shrunk} after 5 timeouts");
}

#[test]
fn invalid_adaptive_concurrency_is_rejected_with_its_key() {
    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let yaml = TestConfig::one_upstream("bad", "http", [addr])
        .with("max_concurrent_requests", 10)
        .with(
            "adaptive_concurrency",
            "{ min_limit: 10, max_limit: 5, initial_limit: 50 }",
        )
        .yaml();
    let errors = remora::config::parse(&yaml, "test.yaml")
        .expect_err("rejected")
        .to_string();
    for expected in [
        "upstreams[0].adaptive_concurrency: max_concurrent_requests is set too",
        "upstreams[0].adaptive_concurrency.max_limit: must not be below min_limit",
        "upstreams[0].adaptive_concurrency.initial_limit: must be between min_limit and max_limit",
    ] {
        assert!(errors.contains(expected), "{expected:?} not in {errors}");
    }
    assert!(errors.starts_with("test.yaml:"), "positioned: {errors}");
}
