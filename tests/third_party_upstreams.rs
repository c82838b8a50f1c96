//! remora in front of upstream servers we did not write, driven by a load generator we did
//! not write: nginx as an h2c origin that sends GOAWAY every 100 requests and allows 16
//! streams (h2load, 50 connections × 10 streams, 10 s); a gRPC C-core server (Python grpcio)
//! that ages its connections out every 300 ms and allows 4 streams; HAProxy as an h2 origin;
//! and nginx closing idle HTTP/1.1 connections just as remora reuses them (the keep-alive
//! race), and nginx answering a POST before reading its body (the client's connection
//! carries its next request). Each must end with 0 failed requests and nothing left in
//! flight. A grpcio response cut after its head ends with a gRPC status, not a reset.
//! Needs nginx-light, haproxy, nghttp2-client and python3-grpcio (`scripts/test.sh`).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use tokio::net::TcpStream;

use support::config::TestConfig;
use support::in_flight::assert_nothing_in_flight;
use support::peers::{self, h2load};
use support::raw_http1::{late_body_then_get, post_head};
use support::{Proxy, get, prom};

async fn metrics(proxy: &Proxy) -> String {
    prom::scrape(&proxy.admin_url("/metrics")).await
}

fn resends(text: &str, upstream: &str) -> f64 {
    prom::sum(
        text,
        "remora_upstream_resends_total",
        &[("upstream", upstream)],
    )
}

/// The samples of `name` labelled with `upstream`, as `label=count` pairs (e.g. the errors
/// remora answered itself, by kind).
fn by_label(text: &str, name: &str, upstream: &str, label: &str) -> String {
    let samples = prom::parse(text);
    let found = prom::find(&samples, name, &[("upstream", upstream)]);
    (found.iter())
        .map(|sample| format!("{}={}", sample.labels[label], sample.value))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs h2load through remora in a blocking thread and checks that at most `tolerated` (a
/// share) of its requests failed.
async fn h2load_through(
    proxy: &Proxy,
    upstream: &str,
    args: &'static [&'static str],
    tolerated: f64,
) {
    let url = format!("http://{}/", proxy.upstream(upstream));
    let report = tokio::task::spawn_blocking(move || h2load(args, &url))
        .await
        .unwrap();
    let text = metrics(proxy).await;
    let failed = report.unsuccessful();
    eprintln!(
        "{upstream}: {} requests, {failed} failed ({}), resent: {}",
        report.done,
        by_label(&text, "remora_proxy_errors_total", upstream, "kind"),
        by_label(&text, "remora_upstream_resends_total", upstream, "reason"),
    );
    assert!(
        failed as f64 <= tolerated * report.done as f64,
        "{upstream}: {failed} failed\n{}",
        report.output
    );
    assert!(report.succeeded > 1000, "{upstream}: {}", report.output);
    assert_nothing_in_flight(proxy, upstream, "h2load").await;
}

/// nginx (h2c) sends a graceful GOAWAY after every 100 requests of a connection and allows 16
/// streams; 500 streams at once through remora all succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_h2c_with_goaways_and_a_small_stream_limit() {
    let nginx = peers::nginx(
        "keepalive_requests 100;\nhttp2_max_concurrent_streams 16;\n\
         server { listen 127.0.0.1:PORT http2; location / { return 200 \"ok\\n\"; } }",
    );
    // A concurrency limit above the 500 streams, so that its gauge is checked too.
    let config = TestConfig::one_upstream("nginx-h2c", "http2", [nginx.addr])
        .with("max_concurrent_requests", 1000);
    let proxy = Proxy::start(&config.yaml()).await;
    h2load_through(
        &proxy,
        "nginx-h2c",
        &["-c", "50", "-m", "10", "-D", "10"],
        0.0,
    )
    .await;
    let text = metrics(&proxy).await;
    assert!(
        resends(&text, "nginx-h2c") > 0.0,
        "GOAWAYs met no request in flight"
    );
}

/// HAProxy as an HTTP/2 origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_as_an_h2_upstream() {
    let haproxy = peers::haproxy(
        "global\n  nbthread 1\n\
         defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
         frontend origin\n  bind 127.0.0.1:PORT proto h2\n  \
         http-request return status 200 content-type text/plain string ok\n",
    );
    let proxy =
        Proxy::start(&TestConfig::one_upstream("haproxy-h2", "http2", [haproxy.addr]).yaml()).await;
    h2load_through(
        &proxy,
        "haproxy-h2",
        &["-c", "20", "-m", "10", "-D", "4"],
        0.0,
    )
    .await;
}

/// A gRPC message frame: uncompressed, length-prefixed.
fn grpc_frame(payload: &[u8]) -> Bytes {
    let mut frame = vec![0];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    frame.into()
}

/// Calls `method` of the grpcio server through remora; returns the messages and grpc-status.
async fn grpc_call(
    client: &support::client::HttpClient,
    addr: SocketAddr,
    method: &str,
    payload: &[u8],
) -> (Vec<String>, Option<String>) {
    let request = Request::post(format!("http://{addr}/test.Echo/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(grpc_frame(payload)))
        .unwrap();
    let response = client.request(request).await.expect("gRPC call");
    assert_eq!(response.status(), StatusCode::OK);
    let mut status = response
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned());
    let mut body = response.into_body();
    let mut data = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("response body");
        if let Some(chunk) = frame.data_ref() {
            data.extend_from_slice(chunk);
        } else if let Some(trailers) = frame.trailers_ref() {
            status = trailers
                .get("grpc-status")
                .map(|v| v.to_str().unwrap().to_owned());
        }
    }
    let mut messages = Vec::new();
    let mut rest = Bytes::from(data);
    while rest.len() >= 5 {
        rest.advance(1);
        let length = rest.get_u32() as usize;
        messages.push(String::from_utf8(rest.split_to(length).to_vec()).unwrap());
    }
    (messages, status)
}

/// A gRPC response that fails after its head ends with a status in trailers, not a stream
/// reset (which a gRPC client reads as INTERNAL, and must not retry): a grpcio stream silent
/// past `timeouts.idle` gets `grpc-status: 4` after the message that came, and one whose server
/// is killed mid-stream gets 14 (UNAVAILABLE).
#[tokio::test]
async fn a_grpc_response_that_fails_after_its_head_ends_with_a_status() {
    let server = peers::grpcio_server(&[]);
    let yaml = TestConfig::one_upstream("grpcio-cut", "grpc", [server.addr])
        .with("timeouts", "{ idle: 1s }")
        .yaml();
    let proxy = Proxy::start(&yaml).await;
    let addr = proxy.upstream("grpcio-cut");
    let client = support::client::http_client(Version::HTTP_2);

    let (messages, status) = grpc_call(&client, addr, "Stream", b"2,3000").await;
    assert_eq!(
        (messages, status.as_deref()),
        (vec!["0".to_owned()], Some("4"))
    );

    let call = {
        let client = client.clone();
        tokio::spawn(async move { grpc_call(&client, addr, "Stream", b"20,100").await })
    };
    tokio::time::sleep(Duration::from_millis(450)).await;
    drop(server);
    let (messages, status) = call.await.unwrap();
    assert!((1..20).contains(&messages.len()), "{messages:?}");
    assert_eq!(status.as_deref(), Some("14"));
    assert_nothing_in_flight(&proxy, "grpcio-cut", "the cut streams").await;
}

/// grpcio (C-core) with `max_connection_age` 300 ms and 4 streams per connection: concurrent
/// unary calls and a 1.5 s server stream all succeed, the stream across the age GOAWAY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_with_connection_age_and_a_small_stream_limit() {
    let server = peers::grpcio_server(&[
        ("grpc.max_connection_age_ms", 300),
        ("grpc.max_connection_age_grace_ms", 30_000),
        ("grpc.max_concurrent_streams", 4),
    ]);
    // A request stuck on a dead connection fails after 3 s instead of 60.
    let yaml = TestConfig::one_upstream("grpcio", "grpc", [server.addr])
        .with("timeouts", "{ idle: 3s }")
        .with("max_concurrent_requests", 100)
        .yaml();
    let proxy = Proxy::start(&yaml).await;
    let addr = proxy.upstream("grpcio");
    let client = support::client::http_client(Version::HTTP_2);
    let stream = grpc_call(&client, addr, "Stream", b"10,150");
    let unary = futures_util::future::join_all((0..8).map(|task| {
        let client = client.clone();
        async move {
            let mut failed = Vec::new();
            for call in 0..40 {
                let text = format!("{task}-{call}");
                let (messages, status) = grpc_call(&client, addr, "Unary", text.as_bytes()).await;
                if messages != [text.clone()] || status.as_deref() != Some("0") {
                    failed.push((text, messages, status));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            failed
        }
    }));
    let started = Instant::now();
    let ((messages, status), failed) = tokio::join!(stream, unary);
    let failed: Vec<_> = failed.into_iter().flatten().collect();
    let text = metrics(&proxy).await;
    eprintln!("grpcio: {} resent", resends(&text, "grpcio"));
    assert!(failed.is_empty(), "failed calls: {failed:?}");
    let expected: Vec<String> = (0..10).map(|n| n.to_string()).collect();
    assert_eq!((messages, status.as_deref()), (expected, Some("0")));
    assert!(started.elapsed() >= Duration::from_millis(1300));
    assert_nothing_in_flight(&proxy, "grpcio", "the calls").await;
}

/// A cold burst against a server that allows 2 streams per connection (grpcio, each call
/// answered after 300 ms): the first connection carries one stream until the server's SETTINGS
/// say how many it takes, and the rest of the burst opens more connections rather than queue
/// behind that limit inside the first one. 16 calls take about one call's time (two rounds at
/// most, with the connections opening meanwhile), where queued 2 at a time on one connection
/// they took up to 8 rounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_burst_spreads_over_connections_by_the_servers_stream_limit() {
    let server = peers::grpcio_server(&[("grpc.max_concurrent_streams", 2), ("delay_ms", 300)]);
    let proxy =
        Proxy::start(&TestConfig::one_upstream("grpcio-cold", "grpc", [server.addr]).yaml()).await;
    let addr = proxy.upstream("grpcio-cold");
    let client = support::client::http_client(Version::HTTP_2);
    let started = Instant::now();
    let calls = futures_util::future::join_all((0..16).map(|call| {
        let client = client.clone();
        async move {
            let text = call.to_string();
            let (messages, status) = grpc_call(&client, addr, "Unary", text.as_bytes()).await;
            (messages == [text], status)
        }
    }))
    .await;
    let elapsed = started.elapsed();
    let text = metrics(&proxy).await;
    let labels = [("upstream", "grpcio-cold")];
    let connections = prom::value(&text, "remora_upstream_pool_connections", &labels);
    eprintln!("16 calls in {elapsed:?}; pool connections: {connections:?}");
    assert!(
        calls
            .iter()
            .all(|(echoed, status)| *echoed && status.as_deref() == Some("0")),
        "{calls:?}"
    );
    assert!(
        elapsed < Duration::from_millis(1000),
        "16 calls took {elapsed:?}"
    );
    assert!(
        connections.is_some_and(|open| (6.0..=16.0).contains(&open)),
        "{connections:?} connections for 16 calls at 2 streams each"
    );
    assert_nothing_in_flight(&proxy, "grpcio-cold", "the burst").await;
}

/// nginx closes idle HTTP/1.1 connections after 50 ms; a GET every 40–60 ms meets the close
/// now and then (about 1 in 100), and such a request is resent on a fresh connection: 0 fail
/// of at least 300, sent until the race was met at least once (at most 900).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keep_alive_race_against_nginx_loses_no_request() {
    let nginx = peers::nginx(
        "keepalive_timeout 50ms;\n\
         server { listen 127.0.0.1:PORT; location / { return 200 \"ok\\n\"; } }",
    );
    let proxy =
        Proxy::start(&TestConfig::one_upstream("nginx-race", "http", [nginx.addr]).yaml()).await;
    let url = format!("http://{}/", proxy.upstream("nginx-race"));
    let mut failed = Vec::new();
    let mut sent = 0;
    let mut resent = 0.0;
    while sent < 300 || (resent == 0.0 && sent < 900) {
        let reply = get(Version::HTTP_11, &url).await.unwrap();
        if reply.status != StatusCode::OK {
            failed.push((sent, reply));
        }
        sent += 1;
        tokio::time::sleep(Duration::from_millis(40 + fastrand::u64(0..=20))).await;
        if sent % 100 == 0 {
            resent = resends(&metrics(&proxy).await, "nginx-race");
        }
    }
    eprintln!("keep-alive race: {sent} sent, {resent} resent");
    assert!(
        failed.is_empty(),
        "{} of {sent} failed: {failed:?}",
        failed.len()
    );
    assert!(resent > 0.0, "the race was not met in {sent} requests");
    assert_nothing_in_flight(&proxy, "nginx-race", "the GETs").await;
}

/// nginx answers a POST before its body arrived (`return`): `204`, keeping its connection, or
/// `413`, closing it. Either way the client's keep-alive connection carries its next request:
/// remora reads the rest of the body from the client and drops it (it used to drop it unread,
/// and the client's connection closed under its next request, with no `Connection: close` to
/// warn it).
#[tokio::test]
async fn an_answer_before_the_body_leaves_the_clients_connection_usable() {
    let nginx = peers::nginx(
        "server { listen 127.0.0.1:PORT;\n\
           location = /early { return 204; }\n\
           location = /refused { return 413; }\n\
           location / { return 200 \"ok\\n\"; } }",
    );
    let proxy =
        Proxy::start(&TestConfig::one_upstream("nginx-early", "http", [nginx.addr]).yaml()).await;
    let mut stream = TcpStream::connect(proxy.upstream("nginx-early"))
        .await
        .unwrap();
    for (round, (path, status)) in [("/early", 204), ("/refused", 413), ("/early", 204)]
        .into_iter()
        .enumerate()
    {
        let (post, (get, body)) = late_body_then_get(&mut stream, &post_head(path)).await;
        assert!(
            post.starts_with(&format!("http/1.1 {status}")),
            "round {round}: {post}"
        );
        assert!(!post.contains("connection: close"), "round {round}: {post}");
        assert!(get.starts_with("http/1.1 200"), "round {round}: {get}");
        assert_eq!(body, "ok\n");
    }
    assert_nothing_in_flight(&proxy, "nginx-early", "the early answers").await;
}

/// A routing backend's health checks ask for its upstream's host: nginx refuses the backend's
/// own name, `Host: hc-route/v2`, with 400, which failed every check and left the route with
/// no healthy endpoint (503 `no_healthy_endpoints` under `panic_threshold: 0`).
#[tokio::test]
async fn a_routing_backends_health_checks_ask_for_the_upstreams_host() {
    let nginx =
        peers::nginx("server { listen 127.0.0.1:PORT; location / { return 200 \"v2\\n\"; } }");
    let default = support::http_backend("hc-default");
    let yaml = TestConfig::one_upstream("hc-route", "http", [default.addr])
        .with("load_balancing", "{ panic_threshold: 0 }")
        .with(
            "health_check",
            "{ http: { path: / }, interval: 100ms, healthy_threshold: 1 }",
        )
        .lines(&format!(
            "    backends:\n      v2: {{ static: [{}] }}\n    routes:\n      \
             - {{ name: to-v2, match: {{ path: {{ prefix: /v2 }} }}, split: [{{ backend: v2, weight: 1 }}] }}\n",
            nginx.addr
        ))
        .yaml();
    let proxy = Proxy::start(&yaml).await;
    let url = format!("http://{}/v2", proxy.upstream("hc-route"));
    // Several checks have run (every 100 ms; one failure takes an endpoint out).
    tokio::time::sleep(Duration::from_millis(800)).await;
    for _ in 0..5 {
        let reply = get(Version::HTTP_11, &url).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.headers);
        assert_eq!(reply.body, "v2\n");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
