//! Hostile HTTP/1.1 input, sent as raw bytes: request smuggling shapes
//! (conflicting Content-Length / Transfer-Encoding, duplicate or invalid
//! Content-Length), obsolete line folding, oversized request lines and
//! headers, too many headers. Each is refused with 400 / 431 on its own
//! connection, reaches no upstream, and a request on another connection is
//! served meanwhile without delay.

mod support;

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{Proxy, http_backend};

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
    ];
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
    assert_eq!(
        backend.requests(),
        5,
        "only the healthy requests reached the upstream"
    );
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
