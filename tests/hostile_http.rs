//! Hostile HTTP/1.1 input, sent as raw bytes: request smuggling shapes
//! (conflicting Content-Length / Transfer-Encoding, duplicate or invalid
//! Content-Length, unknown Transfer-Encoding), obsolete line folding,
//! oversized request lines and headers, too many headers (default and
//! configured `limits`), slowloris heads, and more connections than
//! `limits.max_connections`. Each is refused on its own connection (400 /
//! 431 / closed), reaches no upstream, and a well-behaved client on another
//! connection (`Prober`) is answered within `LATENCY_BOUND` meanwhile. The
//! refusals are counted in `remora_client_protocol_errors_total` by kind.

mod support;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use http::Version;
use support::{Prober, Proxy, http_backend, prom};

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
        let labels = [
            ("direction", "outbound"),
            ("listener", "hostile"),
            ("kind", kind),
        ];
        let counted = prom::wait_for_value(
            &metrics_url,
            "remora_client_protocol_errors_total",
            &labels,
            expected as f64,
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(counted, expected as f64, "{kind}");
    }
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
    let open_now = prom::wait_for_value(
        &proxy.admin_url("/metrics"),
        "remora_connections_open",
        &labels,
        2.0,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(open_now, 2.0);
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
