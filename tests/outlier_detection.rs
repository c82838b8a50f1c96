//! Outlier detection through remora: an endpoint that keeps failing is
//! ejected (no traffic), comes back by itself after the ejection period, and
//! never more than `max_ejection_percent` of the endpoints are out at once.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, Version};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use support::config::TestConfig;
use support::{Proxy, Server, get, http_backend, prom, serve};

/// An origin that answers every request 503 with `x-backend: <name>`.
fn failing_backend(name: &'static str) -> Server {
    serve(move |stream| async move {
        let service = service_fn(move |_request| async move {
            let mut response = Response::new(Full::new(Bytes::from_static(b"down")));
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            response
                .headers_mut()
                .insert("x-backend", name.parse().unwrap());
            Ok::<_, Infallible>(response)
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    })
}

fn yaml(name: &str, endpoints: &[SocketAddr], outlier: &str) -> String {
    TestConfig::one_upstream(name, "http", endpoints)
        .with("load_balancing", "{ policy: round_robin }")
        .with("outlier_detection", outlier)
        .yaml()
}

async fn tally(base: &str, requests: usize) -> HashMap<String, usize> {
    let mut answered = HashMap::new();
    for _ in 0..requests {
        let reply = get(Version::HTTP_11, base).await.unwrap();
        let backend = reply.headers["x-backend"].to_str().unwrap().to_owned();
        *answered.entry(backend).or_default() += 1;
    }
    answered
}

#[tokio::test]
async fn a_failing_endpoint_is_ejected_and_comes_back() {
    let good = [http_backend("good-1"), http_backend("good-2")];
    let bad = failing_backend("bad");
    let endpoints = [good[0].addr, good[1].addr, bad.addr];
    let outlier = "{ consecutive_failures: 3, base_ejection: 1s, max_ejection_percent: 50 }";
    let proxy = Proxy::start(&yaml("od-basic", &endpoints, outlier)).await;
    let base = format!("http://{}/", proxy.upstream("od-basic"));

    // Round robin: the bad endpoint fails every third request until its
    // third failure ejects it; after that it gets nothing.
    let first = tally(&base, 9).await;
    assert_eq!(first.get("bad"), Some(&3));
    let ejected = tally(&base, 60).await;
    assert_eq!(ejected.get("bad"), None, "{ejected:?}");
    assert_eq!(ejected.values().sum::<usize>(), 60);
    let metrics = prom::scrape(&proxy.admin_url("/metrics")).await;
    assert_eq!(
        prom::value(
            &metrics,
            "remora_outlier_ejections_total",
            &[("upstream", "od-basic")]
        ),
        Some(1.0)
    );

    // After the ejection period it is tried again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let back = tally(&base, 6).await;
    assert!(back.get("bad").is_some_and(|n| *n >= 1), "{back:?}");
}

#[tokio::test]
async fn at_most_the_configured_share_is_ejected() {
    let good = http_backend("good");
    let bad = [failing_backend("bad-1"), failing_backend("bad-2")];
    let endpoints = [good.addr, bad[0].addr, bad[1].addr];
    // 50% of 3 endpoints: one at a time.
    let outlier = "{ consecutive_failures: 2, base_ejection: 30s, max_ejection_percent: 50 }";
    let proxy = Proxy::start(&yaml("od-share", &endpoints, outlier)).await;
    let base = format!("http://{}/", proxy.upstream("od-share"));
    tally(&base, 12).await;
    let after = tally(&base, 30).await;
    let bad_seen = ["bad-1", "bad-2"]
        .iter()
        .filter(|b| after.contains_key(**b))
        .count();
    assert_eq!(
        bad_seen, 1,
        "exactly one bad endpoint still in rotation: {after:?}"
    );
}

/// An endpoint that never answers is ejected after its tries time out.
#[tokio::test]
async fn an_endpoint_that_times_out_is_ejected() {
    let good = http_backend("good");
    let (hole, _closed) = support::black_hole();
    let endpoints = [good.addr, hole];
    let yaml = yaml(
        "od-timeout",
        &endpoints,
        "{ consecutive_failures: 2, base_ejection: 30s }",
    )
    .replace(
        "    outlier_detection:",
        "    timeouts: { request: 150ms }\n    outlier_detection:",
    );
    let proxy = Proxy::start(&yaml).await;
    let url = format!("http://{}/", proxy.upstream("od-timeout"));
    let mut timeouts = 0;
    for _ in 0..4 {
        let reply = get(Version::HTTP_11, &url).await.unwrap();
        timeouts += usize::from(reply.status == StatusCode::GATEWAY_TIMEOUT);
    }
    assert_eq!(timeouts, 2, "round robin: every other request hit the hole");
    for _ in 0..20 {
        let reply = get(Version::HTTP_11, &url).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "the hole is ejected");
    }
}

/// Failed tries that never got a response count too (the default `failures` list has
/// `reset` and `connect_failure`): an endpoint that hangs up on every request is ejected
/// after two, and one that refuses connections after one.
#[tokio::test]
async fn resets_and_connect_failures_eject_an_endpoint() {
    let ejections = |proxy: &Proxy, upstream: &'static str| {
        let url = proxy.admin_url("/metrics");
        async move {
            let metrics = prom::scrape(&url).await;
            prom::value(
                &metrics,
                "remora_outlier_ejections_total",
                &[("upstream", upstream)],
            )
        }
    };

    let good = http_backend("good");
    let hang_up = serve(|mut stream| async move {
        support::black_hole::read_request_head(&mut stream).await;
    });
    let outlier = "{ consecutive_failures: 2, base_ejection: 30s, max_ejection_percent: 50 }";
    let proxy = Proxy::start(&yaml("od-reset", &[good.addr, hang_up.addr], outlier)).await;
    let base = format!("http://{}/", proxy.upstream("od-reset"));
    let mut resets = 0;
    for _ in 0..4 {
        let reply = get(Version::HTTP_11, &base).await.unwrap();
        if reply.status == StatusCode::BAD_GATEWAY {
            assert_eq!(reply.headers["x-remora-error"], "upstream_reset");
            resets += 1;
        }
    }
    assert_eq!(resets, 2, "round robin sends every other request to it");
    assert_eq!(ejections(&proxy, "od-reset").await, Some(1.0));
    assert_eq!(tally(&base, 10).await.get("good"), Some(&10));

    let dead = support::dead_addr();
    let outlier = "{ consecutive_failures: 1, base_ejection: 30s, max_ejection_percent: 50 }";
    let proxy = Proxy::start(&yaml("od-connect", &[good.addr, dead], outlier)).await;
    let base = format!("http://{}/", proxy.upstream("od-connect"));
    assert_eq!(tally(&base, 4).await.get("good"), Some(&4));
    assert_eq!(ejections(&proxy, "od-connect").await, Some(1.0));
}
