//! HTTP/2 through remora: h2c with prior knowledge (concurrent streams share one
//! upstream connection), `auto` protocol sniffing, version translation on
//! inbound, and gRPC unary and bidirectional streaming with trailers, plus
//! gRPC-form proxy errors.

mod support;

use std::time::{Duration, Instant};

use http::{StatusCode, Version};

use support::config::{TestConfig, Upstream};
use support::{Proxy, get, grpc_bidi, grpc_echo, grpc_fail, grpc_unary, http_backend, prom};

#[tokio::test]
async fn h2c_prior_knowledge_end_to_end() {
    let backend = http_backend("h2");
    let proxy =
        Proxy::start(&TestConfig::one_upstream("h2c", "http2", [backend.addr]).yaml()).await;
    let url = format!("http://{}/headers", proxy.upstream("h2c"));
    let reply = get(Version::HTTP_2, &url).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.version, Version::HTTP_2);
    let seen: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(seen["version"], "HTTP/2.0");
    assert_eq!(
        seen["authority"],
        proxy.upstream("h2c").to_string(),
        "{seen}"
    );
}

/// Twenty concurrent slow requests, each on its own client connection, are multiplexed over
/// one upstream HTTP/2 connection (the backend counts the connections it accepted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_h2c_requests_share_one_upstream_connection() {
    let backend = http_backend("h2-shared");
    let proxy =
        Proxy::start(&TestConfig::one_upstream("h2-shared", "http2", [backend.addr]).yaml()).await;
    let url = format!("http://{}/slow/200", proxy.upstream("h2-shared"));
    let started = Instant::now();
    let requests: Vec<_> = (0..20)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(Version::HTTP_2, &url).await })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap().unwrap().status, StatusCode::OK);
    }
    let elapsed = started.elapsed();
    eprintln!(
        "20 concurrent h2c requests in {elapsed:?}: {} upstream connection(s)",
        backend.connections()
    );
    assert_eq!(backend.requests(), 20);
    assert!(backend.versions().iter().all(|v| *v == Version::HTTP_2));
    // One after the other they would take 4 s.
    assert!(
        elapsed < Duration::from_secs(2),
        "not concurrent: {elapsed:?}"
    );
    assert_eq!(backend.connections(), 1);
}

/// One `auto` listener takes both versions and keeps each one upstream.
#[tokio::test]
async fn auto_sniffs_the_http2_preface() {
    let backend = http_backend("auto");
    let proxy =
        Proxy::start(&TestConfig::one_upstream("sniff", "auto", [backend.addr]).yaml()).await;
    let url = format!("http://{}/", proxy.upstream("sniff"));
    let h1 = get(Version::HTTP_11, &url).await.unwrap();
    let h2 = get(Version::HTTP_2, &url).await.unwrap();
    assert_eq!((h1.status, h1.version), (StatusCode::OK, Version::HTTP_11));
    assert_eq!((h2.status, h2.version), (StatusCode::OK, Version::HTTP_2));
    assert_eq!(backend.versions(), [Version::HTTP_11, Version::HTTP_2]);
}

/// Inbound: a mesh peer speaking HTTP/2 reaches an HTTP/1.1 application with
/// its `:authority` turned into `Host`.
#[tokio::test]
async fn inbound_translates_http2_to_an_http1_app() {
    let app = http_backend("app");
    let yaml = format!(
        "service: {{ name: app, port: {}, protocol: http }}\n\
         inbound: {{ listen: 127.0.0.1:0 }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         logging: {{ access_log: false }}\n",
        app.addr.port()
    );
    let proxy = Proxy::start(&yaml).await;
    let url = format!("http://{}/headers", proxy.inbound());
    let reply = get(Version::HTTP_2, &url).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let seen: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(seen["version"], "HTTP/1.1");
    assert_eq!(seen["headers"]["host"][0], proxy.inbound().to_string());
}

#[tokio::test]
async fn grpc_unary_carries_trailers() {
    let server = grpc_echo();
    let proxy =
        Proxy::start(&TestConfig::one_upstream("grpc-unary", "grpc", [server.addr]).yaml()).await;
    let (text, trailers) = grpc_unary(proxy.upstream("grpc-unary"), "ping")
        .await
        .unwrap();
    assert_eq!(text, "ping");
    assert_eq!(trailers.get("x-echo-trailer").unwrap(), "done");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
}

/// Each message is echoed before the next is sent: the stream is not buffered.
#[tokio::test]
async fn grpc_bidirectional_streaming_is_interleaved() {
    let server = grpc_echo();
    let proxy =
        Proxy::start(&TestConfig::one_upstream("grpc-bidi", "grpc", [server.addr]).yaml()).await;
    let messages: Vec<String> = (0..20).map(|i| format!("message {i}")).collect();
    let (echoes, trailers) = grpc_bidi(proxy.upstream("grpc-bidi"), messages.clone())
        .await
        .unwrap();
    assert_eq!(echoes, messages);
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
}

#[tokio::test]
async fn grpc_errors_from_the_upstream_pass_through() {
    let server = grpc_echo();
    let proxy =
        Proxy::start(&TestConfig::one_upstream("grpc-fail", "grpc", [server.addr]).yaml()).await;
    let status = grpc_fail(proxy.upstream("grpc-fail")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.metadata().get("x-remora-error").is_none());
}

/// gRPC calls are counted by their `grpc-status`, which their HTTP status (200) does not
/// tell: the upstream's own, from the trailers or a trailers-only answer, and remora's.
#[tokio::test]
async fn grpc_calls_are_counted_by_grpc_status() {
    let server = grpc_echo();
    let dead = support::dead_addr();
    let yaml = TestConfig::one_upstream("grpc-counted", "grpc", [server.addr])
        .upstream(Upstream::to("grpc-counted-dead", [dead]).protocol("grpc"))
        .yaml();
    let proxy = Proxy::start(&yaml).await;
    for _ in 0..3 {
        grpc_unary(proxy.upstream("grpc-counted"), "ping")
            .await
            .unwrap();
    }
    for _ in 0..2 {
        grpc_fail(proxy.upstream("grpc-counted")).await.unwrap_err();
    }
    grpc_unary(proxy.upstream("grpc-counted-dead"), "ping")
        .await
        .unwrap_err();

    let text = prom::scrape(&proxy.admin_url("/metrics")).await;
    let count = |upstream: &str, grpc_status: &str| {
        let labels = [("upstream", upstream), ("grpc_status", grpc_status)];
        prom::value(&text, "remora_grpc_responses_total", &labels)
    };
    assert_eq!(count("grpc-counted", "0"), Some(3.0));
    assert_eq!(count("grpc-counted", "14"), Some(2.0));
    assert_eq!(count("grpc-counted-dead", "14"), Some(1.0));
    assert_eq!(count("grpc-counted-dead", "0"), None);
    let requests = [("upstream", "grpc-counted"), ("code", "200")];
    assert_eq!(
        prom::value(&text, "remora_requests_total", &requests),
        Some(5.0)
    );
}

/// When remora itself fails a gRPC call, the client gets a real gRPC status.
#[tokio::test]
async fn proxy_errors_take_grpc_form() {
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let proxy = Proxy::start(&TestConfig::one_upstream("grpc-dead", "grpc", [dead]).yaml()).await;
    let status = grpc_unary(proxy.upstream("grpc-dead"), "ping")
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(
        status.metadata().get("x-remora-error").unwrap(),
        "connect_failed"
    );
    assert!(
        status.message().contains("connecting to"),
        "{}",
        status.message()
    );
}
