//! Fault injection through a real proxy: aborts answer with the configured status (HTTP) or
//! gRPC status without reaching the backend, at the configured rate; delays hold a request
//! back before it is forwarded; every injected fault is counted.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use tonic::Code;

use support::config::TestConfig;
use support::{Proxy, get, grpc_echo, grpc_unary, http_backend, http_client, prom};

fn yaml(name: &str, protocol: &str, endpoint: SocketAddr, fault: &str) -> String {
    TestConfig::one_upstream(name, protocol, [endpoint])
        .with("fault", fault)
        .yaml()
}

async fn faults_injected(proxy: &Proxy, upstream: &str, fault: &str, expected: f64) -> f64 {
    prom::wait_for_value(
        &proxy.admin_url("/metrics"),
        "remora_faults_injected_total",
        &[("upstream", upstream), ("fault", fault)],
        expected,
        Duration::from_secs(2),
    )
    .await
}

#[tokio::test]
async fn a_certain_abort_answers_with_the_configured_status_and_spares_the_backend() {
    let backend = http_backend("spared");
    let fault = "{ abort: { percent: 100, status: 418 } }";
    let proxy = Proxy::start(&yaml("fault-abort", "http", backend.addr, fault)).await;
    let url = format!("http://{}/", proxy.upstream("fault-abort"));
    for _ in 0..3 {
        let reply = get(Version::HTTP_11, &url).await.unwrap();
        assert_eq!(reply.status, StatusCode::IM_A_TEAPOT, "{reply:?}");
        assert_eq!(reply.headers["x-remora-error"], "fault_abort");
        assert!(
            reply.body.starts_with("remora: fault injected"),
            "{reply:?}"
        );
    }
    assert_eq!(backend.requests(), 0);
    assert_eq!(
        faults_injected(&proxy, "fault-abort", "abort", 3.0).await,
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_of_a_thousand_requests_abort_at_fifty_percent() {
    let backend = http_backend("half");
    let fault = "{ abort: { percent: 50 } }";
    let proxy = Proxy::start(&yaml("fault-half", "http", backend.addr, fault)).await;
    let url = format!("http://{}/", proxy.upstream("fault-half"));
    // Four clients, 250 requests each, each on its own keep-alive connection.
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = http_client::<Empty<Bytes>>(Version::HTTP_11);
                let mut aborted = 0u32;
                for _ in 0..250 {
                    let request = Request::get(url.as_str()).body(Empty::new()).unwrap();
                    let response = client.request(request).await.unwrap();
                    match response.status() {
                        StatusCode::OK => {}
                        StatusCode::SERVICE_UNAVAILABLE => {
                            assert_eq!(response.headers()["x-remora-error"], "fault_abort");
                            aborted += 1;
                        }
                        other => panic!("unexpected status {other}"),
                    }
                    response.into_body().collect().await.unwrap();
                }
                aborted
            })
        })
        .collect();
    let mut aborted = 0;
    for client in clients {
        aborted += client.await.unwrap();
    }
    eprintln!("fault abort at 50 %: {aborted} of 1000 aborted");
    assert!((400..=600).contains(&aborted), "{aborted} of 1000 aborted");
    assert_eq!(backend.requests(), u64::from(1000 - aborted));
    let counted = faults_injected(&proxy, "fault-half", "abort", f64::from(aborted)).await;
    assert_eq!(counted, f64::from(aborted));
}

#[tokio::test]
async fn a_certain_delay_holds_the_request_back() {
    let backend = http_backend("delayed");
    let fault = "{ delay: { percent: 100, duration: 150ms } }";
    let proxy = Proxy::start(&yaml("fault-delay", "http", backend.addr, fault)).await;
    let url = format!("http://{}/", proxy.upstream("fault-delay"));
    let started = Instant::now();
    let reply = get(Version::HTTP_11, &url).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["x-backend"], "delayed");
    assert!(
        elapsed >= Duration::from_millis(150),
        "answered after {elapsed:?}"
    );
    assert_eq!(backend.requests(), 1);
    assert_eq!(
        faults_injected(&proxy, "fault-delay", "delay", 1.0).await,
        1.0
    );
}

#[tokio::test]
async fn a_grpc_abort_carries_the_configured_grpc_status() {
    let echo = grpc_echo();
    let fault = "{ abort: { percent: 100, grpc_status: resource_exhausted } }";
    let proxy = Proxy::start(&yaml("fault-grpc", "grpc", echo.addr, fault)).await;
    let status = grpc_unary(proxy.upstream("fault-grpc"), "hello")
        .await
        .expect_err("the call is aborted");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        faults_injected(&proxy, "fault-grpc", "abort", 1.0).await,
        1.0
    );
}

#[tokio::test]
async fn a_grpc_abort_without_grpc_status_is_unavailable() {
    let echo = grpc_echo();
    let fault = "{ abort: { percent: 100, status: 500 } }";
    let proxy = Proxy::start(&yaml("fault-grpc-default", "grpc", echo.addr, fault)).await;
    let status = grpc_unary(proxy.upstream("fault-grpc-default"), "hello")
        .await
        .expect_err("the call is aborted");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}
