//! Idempotency-aware retries end to end, through the `remora` binary: a request that is not
//! idempotent (POST, PATCH, a method a route leaves out of `idempotent_methods`, an unlisted
//! gRPC method) is retried only when its try provably never reached the upstream — a connect
//! failure, a refused stream — while an `Idempotency-Key`, a listed gRPC method or
//! `retry_non_idempotent: true` make it retryable like a GET.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Version};
use http_body_util::Full;

use support::config::TestConfig;
use support::{ProxyProcess, get, grpc_failing, grpc_unary, http_backend, prom, send};

const RETRIES: &str = "{ attempts: 3, on: [connect_failure, refused_stream, \"503\"], \
                       backoff: { base: 1ms, max: 2ms } }";

/// Retries counted for `upstream`: (succeeded, failed).
async fn retries(proxy: &ProxyProcess, upstream: &str) -> (f64, f64) {
    let text = prom::scrape(&format!("http://{}/metrics", proxy.admin)).await;
    let count = |outcome| {
        let labels = [("upstream", upstream), ("outcome", outcome)];
        prom::sum(&text, "remora_retries_total", &labels)
    };
    (count("success"), count("failure"))
}

async fn request(method: Method, url: &str, headers: &[(&str, &str)]) -> support::Reply {
    request_over(Version::HTTP_11, method, url, headers).await
}

async fn request_over(
    version: Version,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
) -> support::Reply {
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let body = Full::new(Bytes::from_static(b"order #1"));
    send(version, builder.body(body).unwrap()).await.unwrap()
}

/// A case: its name, the method, what follows `/status/503`, headers, the tries expected.
type Case<'a> = (&'a str, Method, &'a str, &'a [(&'a str, &'a str)], u64);

/// Every request gets the origin's 503: the tries the origin saw tell whether it was retried.
#[tokio::test]
async fn a_request_that_reached_the_upstream_is_retried_only_when_idempotent() {
    let origin = http_backend("origin");
    let routes = "\n      - name: opt-in\n        match: { query: [{ name: route, exact: opt-in }] }\n        \
         retries: { attempts: 3, on: [\"503\"], backoff: { base: 1ms, max: 2ms }, retry_non_idempotent: true }\n      \
         - name: strict\n        match: { query: [{ name: route, exact: strict }] }\n        \
         retries: { attempts: 3, on: [\"503\"], backoff: { base: 1ms, max: 2ms }, idempotent_methods: [GET] }";
    let yaml = TestConfig::one_upstream("orders", "http", [origin.addr])
        .with("retries", RETRIES)
        .with("routes", routes)
        .yaml();
    let proxy = ProxyProcess::start(&yaml, 1);
    let base = format!("http://{}/status/503", proxy.listener("orders"));
    let key = [("idempotency-key", "5f1c0ffe-order-1")];
    let cases: [Case; 8] = [
        ("POST", Method::POST, "", &[], 1),
        ("PATCH", Method::PATCH, "", &[], 1),
        ("POST with Idempotency-Key", Method::POST, "", &key, 3),
        ("PATCH with Idempotency-Key", Method::PATCH, "", &key, 3),
        ("PUT", Method::PUT, "", &[], 3),
        ("DELETE", Method::DELETE, "", &[], 3),
        (
            "POST on the opted-in route",
            Method::POST,
            "?route=opt-in",
            &[],
            3,
        ),
        (
            "PUT where only GET is idempotent",
            Method::PUT,
            "?route=strict",
            &[],
            1,
        ),
    ];
    for (case, method, path, headers, tries) in cases {
        let before = origin.requests();
        let reply = request(method, &format!("{base}{path}"), headers).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{case}");
        assert!(reply.headers.get("x-remora-error").is_none(), "{case}");
        assert_eq!(origin.requests() - before, tries, "{case}: tries");
    }
    let reply = get(Version::HTTP_11, &format!("{base}?route=strict"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    // 5 retried requests × 2 retries, plus the strict route's GET.
    assert_eq!(retries(&proxy, "orders").await, (0.0, 12.0));
}

/// A POST whose connection could not be made, or whose HTTP/2 stream was refused (after the
/// endpoint's own resends), never reached the upstream: it is retried, body and all.
#[tokio::test]
async fn a_post_that_never_reached_the_upstream_is_retried() {
    let live = http_backend("live");
    let dead = support::dead_addr();
    let yaml = TestConfig::one_upstream("connect", "http", [dead, live.addr])
        .with("load_balancing", "{ policy: round_robin }")
        .with("retries", RETRIES)
        .yaml();
    let proxy = ProxyProcess::start(&yaml, 1);
    let url = format!("http://{}/echo", proxy.listener("connect"));
    for i in 0..6 {
        let reply = request(Method::POST, &url, &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "request {i}: {reply:?}");
        assert_eq!(reply.body, "order #1", "request {i}");
    }
    assert_eq!(
        live.requests(),
        6,
        "each POST reached the live endpoint once"
    );

    let refusing =
        support::h2_origin::refusing_first_streams(1 + remora::resend::MAX_RESENDS as u64);
    let yaml = TestConfig::one_upstream("refused", "http2", [refusing.addr])
        .with("retries", RETRIES)
        .yaml();
    let proxy = ProxyProcess::start(&yaml, 1);
    let url = format!("http://{}/", proxy.listener("refused"));
    let reply = request_over(Version::HTTP_2, Method::POST, &url, &[]).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(retries(&proxy, "refused").await, (1.0, 0.0));
}

/// gRPC calls are POSTs: an UNAVAILABLE answer is retried only for a method listed in
/// `idempotent_grpc_methods`, by name or by `Service/*`.
#[tokio::test]
async fn a_grpc_method_is_retried_only_when_listed_idempotent() {
    for (case, (listed, retried)) in [
        ("[remora.test.Echo/Unary]", true),
        ("[\"remora.test.Echo/*\"]", true),
        ("[remora.test.Echo/Bidi, remora.test.Echoes/*]", false),
    ]
    .into_iter()
    .enumerate()
    {
        let (origin, calls) = grpc_failing(tonic::Code::Unavailable, 1);
        let policy = format!(
            "{{ attempts: 2, on: [unavailable], backoff: {{ base: 1ms, max: 2ms }}, \
             idempotent_grpc_methods: {listed} }}"
        );
        // Metrics are per process: one upstream name per case.
        let name = format!("grpc-{case}");
        let yaml = TestConfig::one_upstream(&name, "grpc", [origin.addr])
            .with("retries", policy)
            .yaml();
        let proxy = ProxyProcess::start(&yaml, 1);
        let result = grpc_unary(proxy.listener(&name), "again").await;
        if retried {
            let (text, _) = result.unwrap_or_else(|status| panic!("{listed}: {status:?}"));
            assert_eq!(text, "again");
            assert_eq!(calls.load(Ordering::SeqCst), 2, "{listed}");
            assert_eq!(retries(&proxy, &name).await, (1.0, 0.0), "{listed}");
        } else {
            let status = result.expect_err("not retried");
            assert_eq!(status.code(), tonic::Code::Unavailable, "{listed}");
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{listed}");
        }
    }
}

/// Idempotency settings that make no sense are reported with their position.
#[tokio::test]
async fn invalid_idempotency_settings_are_rejected_with_their_key() {
    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let yaml = TestConfig::one_upstream("bad", "http", [addr])
        .with(
            "retries",
            "{ idempotent_methods: [\"GE T\"], idempotent_grpc_methods: [Service] }",
        )
        .yaml();
    let output = remora::config::parse(&yaml, "test.yaml")
        .expect_err("rejected")
        .to_string();
    assert!(
        output.contains("retries.idempotent_methods[0]") && output.contains("not an HTTP method"),
        "{output}"
    );
    assert!(
        output.contains("retries.idempotent_grpc_methods[0]"),
        "{output}"
    );
}
