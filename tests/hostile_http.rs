//! Hostile HTTP/1.1 input, sent as raw bytes: request smuggling shapes
//! (conflicting Content-Length / Transfer-Encoding, duplicate or invalid
//! Content-Length, unknown Transfer-Encoding), obsolete line folding,
//! oversized request lines and headers, too many headers (default and
//! configured `limits`), slowloris heads, and more connections than
//! `limits.max_connections`. Each is refused on its own connection (400 /
//! 431 / closed), reaches no upstream, and a well-behaved client on another
//! connection (`Prober`) is answered within `LATENCY_BOUND` meanwhile. The
//! refusals are counted in `remora_client_protocol_errors_total` by kind.
//! Request heads remora refuses itself (RFC 9112 §3.2: duplicate `Host`, an
//! HTTP/1.1 request without `Host`; a header with `_` under
//! `limits.headers_with_underscores_action: reject_request`) get 400
//! `bad_request`, counted as `malformed`. Spoofing the identity header: no
//! spelling of `x-remora-client-id` (`_` for `-`, any case), in the head or in
//! chunked trailers, reaches the application, and `Connection` cannot make
//! remora drop `Host`.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use http::Version;
use support::{Prober, Proxy, Server, http_backend, prom, serve};

/// Slowest answer a well-behaved client may get while another connection
/// attacks the listener (generous: debug build, shared 2-core machine).
const LATENCY_BOUND: Duration = Duration::from_millis(200);

async fn exchange(addr: std::net::SocketAddr, raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The proxy may answer and close before reading everything.
    let _ = stream.write_all(raw).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn smuggling_shapes_and_oversized_input_are_refused() {
    let backend = http_backend("target");
    let proxy = Proxy::start(&format!(
        "service: {{ name: test }}\n\
         upstreams:\n  - name: hostile\n    listen: 127.0.0.1:0\n    discovery: {{ static: [{}] }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         logging: {{ access_log: false }}\n",
        backend.addr
    ))
    .await;
    let addr = proxy.upstream("hostile");
    let many_headers: String = (0..200).map(|i| format!("x-h{i}: v\r\n")).collect();
    // One over the default `limits.max_headers` (100), Host included.
    let just_too_many: String = (0..100).map(|i| format!("x-h{i}: v\r\n")).collect();
    // Over the default `limits.max_header_bytes` (60 KiB).
    let big_header = format!("x-big: {}\r\n", "b".repeat(62 * 1024));
    let prober = Prober::start(addr, Version::HTTP_11).await;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "duplicate, different content-length",
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde".to_vec(),
            "400",
        ),
        (
            "invalid content-length",
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: -4\r\n\r\nabcd".to_vec(),
            "400",
        ),
        (
            "obsolete line folding",
            b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n".to_vec(),
            "400",
        ),
        (
            "request line too long",
            format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(1024 * 1024)).into_bytes(),
            "431",
        ),
        (
            "too many headers",
            format!("GET / HTTP/1.1\r\nHost: a\r\n{many_headers}\r\n").into_bytes(),
            "431",
        ),
        (
            "101 headers",
            format!("GET / HTTP/1.1\r\nHost: a\r\n{just_too_many}\r\n").into_bytes(),
            "431",
        ),
        (
            "headers over 60 KiB",
            format!("GET / HTTP/1.1\r\nHost: a\r\n{big_header}\r\n").into_bytes(),
            "431",
        ),
        (
            "unknown transfer-encoding",
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabcd".to_vec(),
            "400",
        ),
        (
            "chunked not last",
            b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"
                .to_vec(),
            "400",
        ),
    ];
    let cases_count = cases.len() as u64;
    let too_large = cases.iter().filter(|case| case.2 == "431").count();
    let malformed = cases.len() - too_large;
    for (what, raw, status) in cases {
        let answer = exchange(addr, &raw).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{what}: {:?}",
            answer.lines().next()
        );
        // Meanwhile another connection is served at once.
        let started = Instant::now();
        let ok = exchange(
            addr,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            ok.starts_with("HTTP/1.1 200"),
            "{what}: healthy request failed"
        );
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{what}: {:?}",
            started.elapsed()
        );
    }
    let report = prober.finish("smuggling shapes", LATENCY_BOUND).await;
    assert_eq!(
        backend.requests(),
        cases_count + 1 + u64::from(report.answered),
        "only the healthy requests reached the upstream"
    );
    // Each refused connection is counted by kind (clients that merely
    // closed are not).
    let metrics_url = proxy.admin_url("/metrics");
    for (kind, expected) in [("malformed", malformed), ("too_large", too_large)] {
        let labels = [("direction", "outbound"), ("listener", "hostile")];
        expect_protocol_errors(&metrics_url, &labels, kind, expected as f64).await;
    }
}

/// Waits (up to 5 s) for `remora_client_protocol_errors_total` of `kind` on
/// the listener `labels` name to reach `expected`, and asserts it is that.
async fn expect_protocol_errors(
    metrics_url: &str,
    labels: &[(&str, &str); 2],
    kind: &str,
    expected: f64,
) {
    let [direction, listener] = *labels;
    let labels = [direction, listener, ("kind", kind)];
    prom::assert_value_within(
        metrics_url,
        "remora_client_protocol_errors_total",
        &labels,
        expected,
        Duration::from_secs(5),
    )
    .await;
}

/// Content-Length with Transfer-Encoding: hyper lets Transfer-Encoding win
/// and closes the connection after the response (RFC 9112 §6.3), and remora
/// re-frames the body upstream: the request hidden after the chunked body is
/// never processed.
#[tokio::test]
async fn content_length_with_transfer_encoding_cannot_smuggle() {
    let backend = http_backend("target");
    let proxy = Proxy::start(&format!(
        "service: {{ name: test }}\n\
         upstreams:\n  - name: smuggle\n    listen: 127.0.0.1:0\n    discovery: {{ static: [{}] }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         logging: {{ access_log: false }}\n",
        backend.addr
    ))
    .await;
    let raw = b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n\
                0\r\n\r\nGET /status/418 HTTP/1.1\r\nHost: a\r\n\r\n";
    let answer = exchange(proxy.upstream("smuggle"), raw).await;
    let statuses: Vec<&str> = answer
        .lines()
        .filter(|l| l.starts_with("HTTP/1.1"))
        .collect();
    assert_eq!(statuses, ["HTTP/1.1 200 OK"]);
    assert_eq!(
        backend.requests(),
        1,
        "the hidden request never reached the upstream"
    );
}

/// Two listeners with `limits`: `<prefix>-h1` (HTTP/1.1) and `<prefix>-auto`
/// (sniffed). Metrics are process-wide, so each test uses its own prefix.
fn limits_config(prefix: &str, backend: std::net::SocketAddr, limits: &str) -> String {
    format!(
        "service: {{ name: test }}\n\
         upstreams:\n\
         \x20 - {{ name: {prefix}-h1, listen: 127.0.0.1:0, discovery: {{ static: [{backend}] }}, limits: {limits} }}\n\
         \x20 - {{ name: {prefix}-auto, listen: 127.0.0.1:0, protocol: auto, discovery: {{ static: [{backend}] }}, limits: {limits} }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         logging: {{ access_log: false }}\n"
    )
}

fn status_line(answer: &str) -> &str {
    answer.lines().next().unwrap_or_default()
}

/// `limits.max_headers` and `limits.max_header_bytes` apply to HTTP/1.1 on
/// an `http` and an `auto` listener: just under passes, just over is 431.
#[tokio::test]
async fn configured_header_limits_give_431() {
    let backend = http_backend("target");
    let proxy = Proxy::start(&limits_config(
        "header-limits",
        backend.addr,
        "{ max_headers: 20, max_header_bytes: 16384 }",
    ))
    .await;
    let headers =
        |count: usize| -> String { (0..count).map(|i| format!("x-h{i}: v\r\n")).collect() };
    let request =
        |extra: &str| format!("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n{extra}\r\n");
    for listener in ["header-limits-h1", "header-limits-auto"] {
        let addr = proxy.upstream(listener);
        let prober = Prober::start(addr, Version::HTTP_11).await;
        // Host and Connection count: 18 more make 20.
        let cases = [
            ("20 headers", request(&headers(18)), "200"),
            ("21 headers", request(&headers(19)), "431"),
            (
                "12 KiB of headers",
                request(&format!("x-big: {}\r\n", "b".repeat(12 * 1024))),
                "200",
            ),
            (
                "17 KiB of headers",
                request(&format!("x-big: {}\r\n", "b".repeat(17 * 1024))),
                "431",
            ),
        ];
        for (what, raw, status) in cases {
            let answer = exchange(addr, raw.as_bytes()).await;
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status}")),
                "{listener}, {what}: {:?}",
                status_line(&answer)
            );
        }
        prober
            .finish(&format!("header limits on {listener}"), LATENCY_BOUND)
            .await;
    }
}

/// Slowloris: clients that trickle their request head one byte at a time
/// are disconnected once `limits.header_read_timeout` has passed since the
/// head began, although bytes keep coming; other clients are served.
#[tokio::test]
async fn slowloris_heads_are_cut_off_at_the_header_read_timeout() {
    let backend = http_backend("target");
    let proxy = Proxy::start(&limits_config(
        "slowloris",
        backend.addr,
        "{ header_read_timeout: 600ms }",
    ))
    .await;
    let mut probes = 0;
    for listener in ["slowloris-h1", "slowloris-auto"] {
        let addr = proxy.upstream(listener);
        let prober = Prober::start(addr, Version::HTTP_11).await;
        let mut slow = Vec::new();
        for _ in 0..20 {
            slow.push(tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                let started = Instant::now();
                let head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ";
                let mut sent = 0;
                let mut buf = [0u8; 1024];
                loop {
                    let byte = head.get(sent).copied().unwrap_or(b'z');
                    if stream.write_all(&[byte]).await.is_err() {
                        return started.elapsed();
                    }
                    sent += 1;
                    // Anything read (EOF, a 408, a reset) means remora cut it off.
                    let read =
                        tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf));
                    if read.await.is_ok() {
                        return started.elapsed();
                    }
                    assert!(
                        started.elapsed() < Duration::from_secs(10),
                        "slowloris never cut off"
                    );
                }
            }));
        }
        for handle in slow {
            let lasted = handle.await.unwrap();
            assert!(
                lasted >= Duration::from_millis(500) && lasted < Duration::from_secs(3),
                "{listener}: slowloris connection lasted {lasted:?} (timeout 600ms)"
            );
        }
        let report = prober
            .finish(&format!("slowloris on {listener}"), LATENCY_BOUND)
            .await;
        probes += 1 + u64::from(report.answered);
    }
    assert_eq!(
        backend.requests(),
        probes,
        "no slowloris request reached the upstream"
    );
    let metrics = prom::scrape(&proxy.admin_url("/metrics")).await;
    for listener in ["slowloris-h1", "slowloris-auto"] {
        let labels = [
            ("direction", "outbound"),
            ("listener", listener),
            ("kind", "header_timeout"),
        ];
        let counted = prom::value(&metrics, "remora_client_protocol_errors_total", &labels);
        assert_eq!(counted, Some(20.0), "{listener}");
    }
}

/// A client that connects and sends nothing is closed at `limits.header_read_timeout` too,
/// on an `http` and an `auto` listener (it was left to `timeouts.idle`, 60 s, holding its
/// place under `max_connections` meanwhile).
#[tokio::test]
async fn a_silent_connection_is_closed_at_the_header_read_timeout() {
    let backend = http_backend("target");
    let proxy = Proxy::start(&limits_config(
        "silent",
        backend.addr,
        "{ header_read_timeout: 600ms }",
    ))
    .await;
    for listener in ["silent-h1", "silent-auto"] {
        let mut stream = TcpStream::connect(proxy.upstream(listener)).await.unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await;
        let lasted = started.elapsed();
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "{listener}: {read:?} after {lasted:?}"
        );
        assert!(
            lasted >= Duration::from_millis(500) && lasted < Duration::from_secs(3),
            "{listener}: a silent connection lasted {lasted:?} (timeout 600ms)"
        );
    }
}

/// `limits.max_connections`: connections beyond it are closed as soon as
/// they are accepted and counted in `remora_connections_refused_total`;
/// the open ones keep being served, and a freed slot is reused.
#[tokio::test]
async fn connections_beyond_max_connections_are_refused_and_counted() {
    let backend = http_backend("target");
    let proxy = Proxy::start(&limits_config(
        "max-conns",
        backend.addr,
        "{ max_connections: 3 }",
    ))
    .await;
    let addr = proxy.upstream("max-conns-h1");
    let keep_alive = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(keep_alive).await.unwrap();
        let mut buf = [0u8; 1024];
        let read = stream.read(&mut buf).await.unwrap();
        assert!(buf[..read].starts_with(b"HTTP/1.1 200"));
        open.push(stream);
    }
    for attempt in 1..=2 {
        let started = Instant::now();
        let answer = exchange(
            addr,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(
            answer,
            "",
            "connection {} beyond the limit was served",
            3 + attempt
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "refusal took {:?}",
            started.elapsed()
        );
    }
    let labels = [("direction", "outbound"), ("listener", "max-conns-h1")];
    let metrics = prom::scrape(&proxy.admin_url("/metrics")).await;
    assert_eq!(
        prom::value(&metrics, "remora_connections_refused_total", &labels),
        Some(2.0)
    );
    assert_eq!(
        prom::value(&metrics, "remora_connections_open", &labels),
        Some(3.0)
    );

    // The open connections are still served.
    for stream in &mut open {
        stream.write_all(keep_alive).await.unwrap();
        let mut buf = [0u8; 1024];
        let read = stream.read(&mut buf).await.unwrap();
        assert!(buf[..read].starts_with(b"HTTP/1.1 200"));
    }
    // Closing one frees its slot (once remora has seen the close).
    drop(open.pop());
    prom::assert_value_within(
        &proxy.admin_url("/metrics"),
        "remora_connections_open",
        &labels,
        2.0,
        Duration::from_secs(5),
    )
    .await;
    let answer = exchange(
        addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{:?}",
        status_line(&answer)
    );
}

/// A sidecar in front of an application on `app`, plain inbound listener
/// with `limits`.
fn inbound_config(app: std::net::SocketAddr, limits: &str) -> String {
    format!(
        "service: {{ name: app, port: {} }}\n\
         inbound: {{ listen: 127.0.0.1:0, limits: {limits} }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         logging: {{ access_log: false }}\n",
        app.port()
    )
}

/// Sends a raw HTTP/1.1 request for the backend's `/headers` and returns the
/// header names it saw (sorted); the answer must be 200.
async fn header_names_seen(addr: std::net::SocketAddr, request: &[u8]) -> Vec<String> {
    let answer = exchange(addr, request).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{}",
        status_line(&answer)
    );
    let (_, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
    let json: serde_json::Value = serde_json::from_str(body).expect("JSON from /headers");
    let mut names: Vec<String> = (json["headers"].as_object().expect("headers"))
        .keys()
        .cloned()
        .collect();
    names.sort_unstable();
    names
}

/// True for a header name an application that folds `_` into `-` and
/// ignores case would read as `x-remora-client-id`.
fn reads_as_identity(name: &str) -> bool {
    name.to_ascii_lowercase().replace('_', "-") == "x-remora-client-id"
}

/// An HTTP/1.1 request with `x-remora-client-id` spelt three ways in its head.
const SPOOFED_IDENTITY: &[u8] = b"GET /headers HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\
    x_remora_client_id: spiffe://evil/ns/default/dc/dc1/svc/admin\r\n\
    X_Remora_Client-Id: spiffe://evil/ns/default/dc/dc1/svc/admin\r\n\
    X-REMORA-CLIENT-ID: spiffe://evil/ns/default/dc/dc1/svc/admin\r\n\
    x_custom: yes\r\n\r\n";

/// Apps that fold `_` into `-` (WSGI/CGI `HTTP_X_REMORA_CLIENT_ID`) would read
/// `x_remora_client_id` as the identity: every spelling is dropped, always
/// (HTTP/1.1 and HTTP/2); other headers with `_` pass by default (`allow`).
#[tokio::test]
async fn the_identity_header_is_dropped_in_every_spelling() {
    let app = http_backend("app");
    let proxy = Proxy::start(&inbound_config(app.addr, "{}")).await;
    let names = header_names_seen(proxy.inbound(), SPOOFED_IDENTITY).await;
    assert!(
        !names.iter().any(|name| reads_as_identity(name)),
        "the app saw {names:?}"
    );
    assert!(names.contains(&"x_custom".to_owned()), "{names:?}");

    let client = support::http_client::<http_body_util::Empty<Bytes>>(Version::HTTP_2);
    let request = http::Request::get(format!("http://{}/headers", proxy.inbound()))
        .header(
            "x_remora_client_id",
            "spiffe://evil/ns/default/dc/dc1/svc/admin",
        )
        .body(http_body_util::Empty::new())
        .unwrap();
    let response = client.request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let names: Vec<&String> = json["headers"].as_object().unwrap().keys().collect();
    assert!(
        !names.iter().any(|name| reads_as_identity(name)),
        "HTTP/2: the app saw {names:?}"
    );
}

/// `limits.headers_with_underscores_action` (Envoy's): `drop_header` removes
/// every header with `_`, `reject_request` answers 400 `bad_request` (counted
/// as `malformed`) and the request reaches no upstream.
#[tokio::test]
async fn headers_with_underscores_are_dropped_or_refused_as_configured() {
    let app = http_backend("app");
    let dropping = Proxy::start(&inbound_config(
        app.addr,
        "{ headers_with_underscores_action: drop_header }",
    ))
    .await;
    let names = header_names_seen(dropping.inbound(), SPOOFED_IDENTITY).await;
    assert!(
        !names
            .iter()
            .any(|name| name.contains('_') || reads_as_identity(name)),
        "the app saw {names:?}"
    );

    let rejecting = Proxy::start(&inbound_config(
        app.addr,
        "{ headers_with_underscores_action: reject_request }",
    ))
    .await;
    let before = app.requests();
    let prober = Prober::start(rejecting.inbound(), Version::HTTP_11).await;
    let answer = exchange(rejecting.inbound(), SPOOFED_IDENTITY).await;
    assert!(
        answer.starts_with("HTTP/1.1 400"),
        "{}",
        status_line(&answer)
    );
    assert!(answer.contains("x-remora-error: bad_request"), "{answer}");
    let clean = b"GET / HTTP/1.1\r\nHost: app\r\nx-custom: yes\r\nConnection: close\r\n\r\n";
    assert!(
        exchange(rejecting.inbound(), clean)
            .await
            .starts_with("HTTP/1.1 200")
    );
    let report = prober.finish("underscores refused", LATENCY_BOUND).await;
    assert_eq!(
        app.requests() - before,
        2 + u64::from(report.answered),
        "the refused request reached the app"
    );
    let labels = [("direction", "inbound"), ("listener", "inbound")];
    expect_protocol_errors(&rejecting.admin_url("/metrics"), &labels, "malformed", 1.0).await;
}

/// An origin that answers every request, once its body has been read whole,
/// with the names of the trailers it got, sorted and joined by `,`.
fn trailer_recording_origin() -> Server {
    serve(|stream| async move {
        let service = service_fn(|request: http::Request<hyper::body::Incoming>| async move {
            let collected = request.into_body().collect().await?;
            let mut names: Vec<String> = (collected.trailers().into_iter())
                .flat_map(|trailers| trailers.keys())
                .map(|name| name.as_str().to_owned())
                .collect();
            names.sort_unstable();
            Ok::<_, hyper::Error>(http::Response::new(Full::new(Bytes::from(names.join(",")))))
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    })
}

/// A chunked HTTP/1.1 request, or an HTTP/2 one, may carry
/// `x-remora-client-id` as a trailer, after the head was checked: remora
/// drops reserved names from request trailers too, and forwards the others.
#[tokio::test]
async fn the_identity_header_is_dropped_from_request_trailers() {
    let origin = trailer_recording_origin();
    let proxy = Proxy::start(&inbound_config(origin.addr, "{}")).await;
    let raw = b"POST /upload HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\
        Transfer-Encoding: chunked\r\n\
        Trailer: x-remora-client-id, x_remora_client_id, x-kept\r\n\r\n\
        5\r\nhello\r\n0\r\n\
        x-remora-client-id: spiffe://evil/ns/default/dc/dc1/svc/admin\r\n\
        x_remora_client_id: spiffe://evil/ns/default/dc/dc1/svc/admin\r\n\
        x-kept: yes\r\n\r\n";
    let answer = exchange(proxy.inbound(), raw).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{}",
        status_line(&answer)
    );
    let (_, trailers) = answer.split_once("\r\n\r\n").unwrap();
    assert_eq!(trailers, "x-kept", "the trailers the origin got");

    // The same over HTTP/2, where trailers are a HEADERS frame.
    let mut trailers = http::HeaderMap::new();
    for name in ["x-remora-client-id", "x_remora_client_id", "x-kept"] {
        let name = http::HeaderName::from_bytes(name.as_bytes()).unwrap();
        trailers.insert(name, http::HeaderValue::from_static("spoof"));
    }
    let frames = [
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"hello"))),
        Ok(Frame::trailers(trailers)),
    ];
    let body = StreamBody::new(futures_util::stream::iter(frames));
    let request = http::Request::post(format!("http://{}/upload", proxy.inbound()))
        .header("trailer", "x-remora-client-id, x_remora_client_id, x-kept")
        .body(body)
        .unwrap();
    let response = support::http_client(Version::HTTP_2)
        .request(request)
        .await
        .unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "x-kept", "HTTP/2: the trailers the origin got");
}

/// RFC 9112 §3.2: a request with more than one `Host`, or an HTTP/1.1
/// request without one, gets 400 `bad_request` (counted as `malformed`);
/// other connections are served meanwhile. HTTP/1.0 needs no `Host`, but the
/// HTTP/1.1 request remora sends upstream does: it gets the endpoint's address.
#[tokio::test]
async fn duplicate_or_missing_host_is_refused() {
    let backend = http_backend("target");
    let proxy = Proxy::start(&limits_config("host-rules", backend.addr, "{}")).await;
    let addr = proxy.upstream("host-rules-h1");
    let prober = Prober::start(addr, Version::HTTP_11).await;
    let cases: [(&str, &[u8]); 4] = [
        (
            "two Host headers",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
        ),
        (
            "the same Host twice",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\nConnection: close\r\n\r\n",
        ),
        (
            "HTTP/1.1 without Host",
            b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        ),
        (
            "absolute form without Host",
            b"GET http://a/ HTTP/1.1\r\nConnection: close\r\n\r\n",
        ),
    ];
    for (what, raw) in cases {
        let answer = exchange(addr, raw).await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{what}: {:?}",
            status_line(&answer)
        );
        assert!(
            answer.contains("x-remora-error: bad_request"),
            "{what}: {answer}"
        );
    }
    // HTTP/2 carries `:authority`, and may carry one `Host` besides, not two.
    let auto = proxy.upstream("host-rules-auto");
    let request = http::Request::get(format!("http://{auto}/"))
        .header("host", "a")
        .header("host", "b")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = support::http_client(Version::HTTP_2)
        .request(request)
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::BAD_REQUEST, "HTTP/2");
    assert_eq!(
        response.headers()["x-remora-error"],
        "bad_request",
        "HTTP/2"
    );
    let report = prober.finish("host rules", LATENCY_BOUND).await;
    assert_eq!(
        backend.requests(),
        1 + u64::from(report.answered),
        "only the probes reached the upstream"
    );
    let labels = [("direction", "outbound"), ("listener", "host-rules-h1")];
    expect_protocol_errors(&proxy.admin_url("/metrics"), &labels, "malformed", 4.0).await;

    let answer = exchange(addr, b"GET /headers HTTP/1.0\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.0 200"),
        "{}",
        status_line(&answer)
    );
    let (_, body) = answer.split_once("\r\n\r\n").unwrap();
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        json["headers"]["host"],
        serde_json::json!([backend.addr.to_string()])
    );
}

/// `Connection` names hop-by-hop headers for the next hop to drop; naming
/// `Host` must not make remora forward a request without it.
#[tokio::test]
async fn connection_cannot_remove_host() {
    let backend = http_backend("target");
    let proxy = Proxy::start(&limits_config("connection-host", backend.addr, "{}")).await;
    let raw = b"GET /headers HTTP/1.1\r\nHost: kept.example\r\nConnection: host, close\r\n\r\n";
    let answer = exchange(proxy.upstream("connection-host-h1"), raw).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "{}",
        status_line(&answer)
    );
    let (_, body) = answer.split_once("\r\n\r\n").unwrap();
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["headers"]["host"], serde_json::json!(["kept.example"]));
}
