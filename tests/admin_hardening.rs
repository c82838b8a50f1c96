//! The admin listener under hostile clients (issue 13): a flood of connections under a low
//! descriptor limit backs off instead of spinning (the log stays small and every listener serves
//! again once the flood ends), connections beyond `admin.max_connections` are closed, slow
//! request heads are cut off at `admin.header_read_timeout`, and only requests for its own
//! `Host` are answered (DNS rebinding).

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::config::TestConfig;
use support::{Proxy, ProxyProcess, eventually, get, http_backend, send};

/// A sidecar in front of `app`: its inbound listener and an admin listener with `admin` keys.
fn yaml(app: SocketAddr, admin: &[(&str, &str)]) -> String {
    let config = TestConfig::new()
        .service(&format!(
            "{{ name: admin-test, port: {}, protocol: http }}",
            app.port()
        ))
        .inbound();
    admin
        .iter()
        .fold(config, |config, (key, value)| config.admin(key, value))
        .yaml()
}

/// `GET path` on `addr` with `Host: host`: the status.
async fn status_for_host(addr: SocketAddr, path: &str, host: &str) -> StatusCode {
    let request = Request::get(format!("http://{addr}{path}"))
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(Version::HTTP_11, request).await.unwrap().status
}

/// Whether the server ends the connection (EOF, an answer or a reset) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let end = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, end).await.is_ok()
}

/// With 64 file descriptors and 300 connections to the admin listener that send half a request,
/// `accept` fails with EMFILE: remora backs off and logs about once a second instead of
/// retrying in a loop (millions of lines before), and once the connections close, admin and
/// the inbound listener answer again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_under_a_low_descriptor_limit_backs_off() {
    let app = http_backend("flood-app");
    let mut proxy = ProxyProcess::start_wrapped(
        &["sh", "-c", "ulimit -n 64 && exec \"$0\" \"$@\""],
        &yaml(app.addr, &[("max_connections", "1000")]),
        1,
    );
    let admin = proxy.admin;
    let inbound = proxy.listener("inbound");
    let mut flood = Vec::new();
    for _ in 0..300 {
        let connect = tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(admin));
        if let Ok(Ok(mut stream)) = connect.await {
            let _ = stream
                .write_all(b"GET /ready HTTP/1.1\r\nHost: local")
                .await;
            flood.push(stream);
        }
    }
    assert!(flood.len() > 100, "only {} connections", flood.len());
    let before = proxy.log_so_far();
    assert!(
        before
            .iter()
            .any(|line| line.contains("Too many open files")),
        "{before:#?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = proxy.log_so_far();
    let bytes: usize = during.iter().map(String::len).sum();
    let failures = during
        .iter()
        .filter(|line| line.contains("accept failed"))
        .count();
    assert!(
        failures <= 6 && bytes < 8 * 1024,
        "{failures} accept failures logged in {bytes} bytes: {:#?}",
        &during[..during.len().min(3)]
    );

    drop(flood);
    eventually(Duration::from_secs(10), "admin and inbound answer", || async {
        let ready = get(Version::HTTP_11, &format!("http://{admin}/ready")).await;
        let app = get(Version::HTTP_11, &format!("http://{inbound}/")).await;
        matches!((ready, app), (Ok(ready), Ok(app)) if ready.status == StatusCode::OK && app.body == "flood-app")
    })
    .await;
}

/// Connections beyond `admin.max_connections` are closed at once; a request head that does not
/// arrive within `admin.header_read_timeout` loses its connection, which frees its slot.
#[tokio::test]
async fn admin_connections_are_capped_and_slow_heads_cut_off() {
    let app = http_backend("cap-app");
    let proxy = Proxy::start(&yaml(
        app.addr,
        &[("max_connections", "3"), ("header_read_timeout", "1s")],
    ))
    .await;
    let admin = proxy.bound.admin;
    // Three connections, each shown to be accepted by one answered request, then kept open.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(admin).await.unwrap();
        stream
            .write_all(b"GET /live HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let read = stream.read(&mut buf).await.unwrap();
        assert!(
            buf[..read].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            &buf[..read]
        );
        stream
            .write_all(b"GET /live HTTP/1.1\r\nHost: lo")
            .await
            .unwrap();
        held.push(stream);
    }
    let mut extra = TcpStream::connect(admin).await.unwrap();
    let _ = extra
        .write_all(b"GET /live HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), extra.read_to_end(&mut answer)).await;
    assert!(
        answer.is_empty(),
        "a fourth connection was served: {answer:?}"
    );

    let started = Instant::now();
    // A connection that sends nothing at all is cut off too, once a slot is free for it.
    held.push(TcpStream::connect(admin).await.unwrap());
    for stream in &mut held {
        assert!(
            closed_within(stream, Duration::from_secs(10)).await,
            "a half-sent head kept its connection"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // A connection that sends nothing at all is cut off at the timeout too.
    let connected = Instant::now();
    let mut silent = TcpStream::connect(admin).await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(10)).await);
    let waited = connected.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert_eq!(
        status_for_host(admin, "/live", "localhost").await,
        StatusCode::OK
    );
}

/// DNS rebinding: a page of `evil.example` whose name resolves to the admin listener sends
/// `Host: evil.example` and gets 403; loopback names and addresses, and the names of
/// `admin.allowed_hosts`, are served.
#[tokio::test]
async fn admin_answers_only_its_own_host() {
    let app = http_backend("host-app");
    let proxy = Proxy::start(&yaml(
        app.addr,
        &[("allowed_hosts", "[remora-admin.internal]")],
    ))
    .await;
    let admin = proxy.bound.admin;
    let port = admin.port();
    for host in [
        "evil.example",
        &format!("evil.example:{port}"),
        "localhost.evil.example",
    ] {
        for path in ["/config", "/metrics", "/ready", "/"] {
            assert_eq!(
                status_for_host(admin, path, host).await,
                StatusCode::FORBIDDEN,
                "{host}{path}"
            );
        }
    }
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "localhost".to_owned(),
        format!("remora-admin.internal:{port}"),
    ] {
        assert_eq!(
            status_for_host(admin, "/config", &host).await,
            StatusCode::OK,
            "{host}"
        );
    }
}

/// `/config` shows no secret: not the Consul token, not a value written with an environment
/// variable (a route's `authorization` header) nor a YAML alias of it, not a header named
/// like a credential (`x-api-key`) even written literally, not the user information of a URL
/// (`consul.address`, `tracing.otlp.endpoint`) — at start and after a reload. Other values
/// written literally are shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_redacts_every_secret() {
    let app = http_backend("redact-app");
    let yaml = |literal: &str| {
        format!(
            "service: {{ name: redact }}\n\
             consul: {{ address: \"http://consul-user:consul-password@127.0.0.1:8500\", \
             token: \"${{REMORA_TEST_TOKEN}}\" }}\n\
             upstreams:\n  - name: api\n    listen: 127.0.0.1:0\n    protocol: http\n    \
             discovery: {{ static: [{}] }}\n    routes:\n      - name: all\n        \
             request_headers: {{ set: {{ authorization: &key \"Bearer ${{REMORA_TEST_API_KEY}}\", \
             x-copy: *key, x-api-key: literal-key-value, x-literal: {literal} }} }}\n\
             tracing: {{ otlp: {{ endpoint: \"http://otlp-user:otlp-password@127.0.0.1:4318/v1/traces\" }} }}\n\
             admin: {{ listen: 127.0.0.1:0 }}\n\
             logging: {{ access_log: false }}\n",
            app.addr
        )
    };
    let mut proxy = ProxyProcess::start_wrapped(
        &[
            "env",
            "REMORA_TEST_TOKEN=token-value",
            "REMORA_TEST_API_KEY=api-key-value",
        ],
        &yaml("first"),
        1,
    );
    // The secret does reach the origin.
    let headers = get(
        Version::HTTP_11,
        &format!("http://{}/headers", proxy.listener("api")),
    )
    .await
    .unwrap();
    assert!(
        headers.body.contains("Bearer api-key-value"),
        "{}",
        headers.body
    );

    let config_url = format!("http://{}/config", proxy.admin);
    for literal in ["first", "second"] {
        if literal == "second" {
            proxy.config.write(&yaml(literal));
            proxy.wait_for_log("configuration reloaded");
        }
        let shown = get(Version::HTTP_11, &config_url).await.unwrap().body;
        for secret in [
            "token-value",
            "api-key-value",
            "consul-user",
            "consul-password",
            "otlp-user",
            "otlp-password",
            "literal-key-value",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        for redacted in [
            "\"token\": \"<redacted>\"",
            "\"authorization\": \"<redacted>\"",
            "\"x-copy\": \"<redacted>\"",
            "\"x-api-key\": \"<redacted>\"",
            "\"address\": \"http://<redacted>@127.0.0.1:8500\"",
            "\"endpoint\": \"http://<redacted>@127.0.0.1:4318/v1/traces\"",
        ] {
            assert!(shown.contains(redacted), "{redacted} not in {shown}");
        }
        assert!(
            shown.contains(&format!("\"x-literal\": \"{literal}\"")),
            "{shown}"
        );
    }
}
