//! HTTP/1.1 through remora: methods and bodies, streaming without buffering,
//! `Expect: 100-continue`, hop-by-hop stripping (both ways), Host preservation, upstream
//! keep-alive reuse, WebSocket upgrade, malformed requests, and a burst of new connections
//! queued by the kernel while the accept loop is busy.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::config::{TestConfig, Upstream};
use support::raw_http1::{late_body_then_get, post_head, read_response, read_until_close};
use support::{
    Proxy, ProxyProcess, dead_addr, get, http_backend, http_client, send, websocket_echo,
    websocket_roundtrip,
};

fn outbound_yaml(name: &str, protocol: &str, endpoints: &[String]) -> String {
    TestConfig::one_upstream(name, protocol, endpoints).yaml()
}

#[tokio::test]
async fn get_and_post_reach_the_upstream() {
    let backend = http_backend("a");
    let proxy = Proxy::start(&outbound_yaml("basic", "http", &[backend.addr.to_string()])).await;
    let url = format!("http://{}", proxy.upstream("basic"));

    let reply = get(Version::HTTP_11, &format!("{url}/")).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "a");
    assert_eq!(reply.headers["x-backend"], "a");

    let request = Request::post(format!("{url}/echo"))
        .body(Full::new(Bytes::from_static(b"hello, upstream")))
        .unwrap();
    let reply = send(Version::HTTP_11, request).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "hello, upstream");

    let reply = get(Version::HTTP_11, &format!("{url}/status/418"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::IM_A_TEAPOT);
    assert!(reply.headers.get("x-remora-error").is_none());
}

#[tokio::test]
async fn host_is_kept_and_hop_by_hop_headers_are_stripped() {
    let backend = http_backend("a");
    let proxy = Proxy::start(&outbound_yaml("hops", "http", &[backend.addr.to_string()])).await;
    let request = Request::get(format!("http://{}/headers", proxy.upstream("hops")))
        .header("host", "api.example:8080")
        .header("connection", "keep-alive, x-hop-only")
        .header("x-hop-only", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("te", "gzip")
        .header("x-remora-error", "forged")
        .header("x-end-to-end", "kept")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = send(Version::HTTP_11, request).await.unwrap();
    let seen: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    let headers = &seen["headers"];
    assert_eq!(headers["host"][0], "api.example:8080");
    assert_eq!(headers["x-end-to-end"][0], "kept");
    for stripped in [
        "x-hop-only",
        "keep-alive",
        "proxy-connection",
        "te",
        "x-remora-error",
    ] {
        assert!(
            headers.get(stripped).is_none(),
            "{stripped} reached the upstream: {headers}"
        );
    }
}

/// The same in the other direction: an origin answering with hop-by-hop headers (and a
/// header it names in `Connection`) gets them removed before the client sees the response.
#[tokio::test]
async fn hop_by_hop_response_headers_are_stripped() {
    let origin = support::serve(|stream| async move {
        let service = hyper::service::service_fn(|_request| async {
            let response = http::Response::builder()
                .header("connection", "x-foo")
                .header("x-foo", "1")
                .header("keep-alive", "timeout=5")
                .header("proxy-connection", "keep-alive")
                .header("upgrade", "h2c")
                .header("x-end-to-end", "kept")
                .body(Full::new(Bytes::from_static(b"hops")))
                .unwrap();
            Ok::<_, std::convert::Infallible>(response)
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
            .await;
    });
    let proxy = Proxy::start(&outbound_yaml(
        "hops-back",
        "http",
        &[origin.addr.to_string()],
    ))
    .await;
    let reply = get(
        Version::HTTP_11,
        &format!("http://{}/", proxy.upstream("hops-back")),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "hops");
    assert_eq!(reply.headers["x-end-to-end"], "kept");
    for stripped in [
        "connection",
        "x-foo",
        "keep-alive",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(
            !reply.headers.contains_key(stripped),
            "{stripped} reached the client: {:?}",
            reply.headers
        );
    }
}

/// Fifty sequential requests, each from a fresh client connection, go upstream over one
/// pooled keep-alive connection (the backend counts the connections it accepted).
#[tokio::test]
async fn sequential_requests_reuse_one_upstream_connection() {
    let backend = http_backend("reuse");
    let proxy = Proxy::start(&outbound_yaml("reuse", "http", &[backend.addr.to_string()])).await;
    let url = format!("http://{}/", proxy.upstream("reuse"));
    for i in 0..50 {
        let reply = get(Version::HTTP_11, &url).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "request {i}");
    }
    eprintln!(
        "50 sequential HTTP/1.1 requests: {} upstream connection(s)",
        backend.connections()
    );
    assert_eq!(backend.requests(), 50);
    assert_eq!(backend.connections(), 1);
}

/// 50 MB up and 50 MB back, chunked, through the real binary: the proxy's
/// peak memory stays far below the body size.
#[tokio::test]
async fn large_bodies_stream_with_bounded_memory() {
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: usize = 800; // 50 MiB
    let backend = http_backend("big");
    let proxy = ProxyProcess::start(
        &outbound_yaml("big", "http", &[backend.addr.to_string()]),
        1,
    );
    let baseline_kib = proxy.peak_rss_kib();

    let chunks = futures_util::stream::iter(
        (0..CHUNKS).map(|_| Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![7u8; CHUNK])))),
    );
    let request = Request::post(format!("http://{}/echo", proxy.listener("big")))
        .body(StreamBody::new(chunks))
        .unwrap();
    let response = http_client(Version::HTTP_11)
        .request(request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut received = 0usize;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            assert!(data.iter().all(|&b| b == 7));
            received += data.len();
        }
    }
    assert_eq!(received, CHUNK * CHUNKS);
    assert_eq!(backend.echoed_bytes(), (CHUNK * CHUNKS) as u64);

    let peak_kib = proxy.peak_rss_kib();
    let growth_mib = (peak_kib - baseline_kib) / 1024;
    eprintln!(
        "remora peak RSS: {} MiB (grew {growth_mib} MiB while streaming 2 × 50 MiB)",
        peak_kib / 1024
    );
    // Typically 8–11 MiB (allocator caches, socket buffers); one body
    // buffered whole would be 50 MiB.
    assert!(
        growth_mib < 32,
        "remora grew by {growth_mib} MiB: the body was buffered"
    );
}

/// A client that waits for `100 Continue` gets it promptly, then its body is
/// forwarded.
#[tokio::test]
async fn expect_100_continue_is_answered() {
    let backend = http_backend("a");
    let proxy = Proxy::start(&outbound_yaml(
        "expect",
        "http",
        &[backend.addr.to_string()],
    ))
    .await;
    let mut stream = TcpStream::connect(proxy.upstream("expect")).await.unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut interim = [0u8; 25];
    tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut interim))
        .await
        .expect("100 Continue within 2 s")
        .unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"hello").await.unwrap();
    let response = read_until_close(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.contains("\r\n\r\n5\r\nhello\r\n"), "{response}");
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled() {
    let echo = websocket_echo();
    let proxy = Proxy::start(&outbound_yaml("ws", "http", &[echo.to_string()])).await;
    let echoed = websocket_roundtrip(proxy.upstream("ws"), &["one", "two", "three"]).await;
    assert_eq!(echoed, ["one", "two", "three"]);
}

/// Broken requests are answered 400 / 431 on their own connection while a
/// request on another connection goes through untouched.
#[tokio::test]
async fn malformed_requests_get_400_or_431_and_harm_nothing_else() {
    let backend = http_backend("a");
    let proxy = Proxy::start(&outbound_yaml(
        "malformed",
        "http",
        &[backend.addr.to_string()],
    ))
    .await;
    let addr = proxy.upstream("malformed");

    let mut healthy = TcpStream::connect(addr).await.unwrap();
    healthy
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();

    let mut broken = TcpStream::connect(addr).await.unwrap();
    broken
        .write_all(b"GET / HTTP/1.1\r\nHost a\r\n\r\n")
        .await
        .unwrap();
    assert!(
        read_until_close(&mut broken)
            .await
            .starts_with("HTTP/1.1 400")
    );

    let mut huge = TcpStream::connect(addr).await.unwrap();
    let header = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nx-big: {}\r\n\r\n",
        "x".repeat(512 * 1024)
    );
    // The proxy may answer and close before reading everything: ignore write errors.
    let _ = huge.write_all(header.as_bytes()).await;
    assert!(
        read_until_close(&mut huge)
            .await
            .starts_with("HTTP/1.1 431")
    );

    let started = Instant::now();
    healthy.write_all(b"\r\n").await.unwrap();
    let response = read_response_with_length(&mut healthy).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// Reads one keep-alive response whose body has a Content-Length.
async fn read_response_with_length(stream: &mut TcpStream) -> String {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("response within 5 s")
            .unwrap();
        assert!(n > 0, "connection closed early");
        buffer.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buffer).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
    }
}

/// 400 connections opened while remora's accept loop cannot run (this test's runtime has one
/// thread, which the connects block) all wait in the kernel's accept queue: none waits for a
/// SYN to be sent again, as past a queue of 128 the kernel drops them. Then each is served.
/// (The queue is at most `net.core.somaxconn`: 4096 by default since Linux 5.4.)
#[tokio::test(flavor = "current_thread")]
async fn a_burst_of_connections_waits_in_the_accept_queue() {
    // 400 clients, their 400 connections in remora, 400 upstream and 400 in the backend.
    support::raise_open_files_limit(2048);
    let backend = http_backend("burst");
    let proxy = Proxy::start(&outbound_yaml("burst", "http", &[backend.addr.to_string()])).await;
    let addr = proxy.upstream("burst");
    let mut clients = Vec::new();
    for n in 0..400 {
        let started = Instant::now();
        let client = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(900))
            .unwrap_or_else(|error| {
                panic!("connection {n}: {error} after {:?}", started.elapsed())
            });
        clients.push(client);
    }
    let served = futures_util::future::join_all(clients.into_iter().map(|client| async move {
        client.set_nonblocking(true).unwrap();
        let mut client = TcpStream::from_std(client).unwrap();
        (client.write_all(b"GET / HTTP/1.1\r\nhost: burst\r\nconnection: close\r\n\r\n"))
            .await
            .unwrap();
        let mut response = Vec::new();
        client.read_to_end(&mut response).await.unwrap();
        String::from_utf8_lossy(&response).into_owned()
    }))
    .await;
    for response in served {
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with("burst"), "{response}");
    }
}

/// remora's own answers to a request whose body has not all arrived (502
/// from an endpoint that refuses connections, 429 from the rate limit, 400
/// for a second `Host` before the stack) leave the client's connection able
/// to carry its next request: the rest of the body is read and dropped.
/// Unread, hyper would close the connection after an answer that did not
/// say so, and the next request would fail.
#[tokio::test]
async fn a_proxy_made_answer_before_the_body_leaves_the_clients_connection_usable() {
    let config = TestConfig::new()
        .upstream(Upstream::to("refused", [dead_addr()]))
        .upstream(
            Upstream::to("limited", [dead_addr()])
                .with("rate_limit", "{ requests_per_second: 0.01, burst: 1 }"),
        );
    let proxy = Proxy::start(&config.yaml()).await;
    let two_hosts = "POST / HTTP/1.1\r\nhost: x\r\nhost: y\r\ncontent-length: 5\r\n\r\n";
    for (upstream, rounds) in [
        (
            "refused",
            [(post_head("/"), 502), (two_hosts.to_owned(), 400)],
        ),
        ("limited", [(post_head("/"), 502), (post_head("/"), 429)]),
    ] {
        let mut stream = TcpStream::connect(proxy.upstream(upstream)).await.unwrap();
        for (head, status) in rounds {
            let (answer, (get, _)) = late_body_then_get(&mut stream, &head).await;
            assert!(
                answer.starts_with(&format!("http/1.1 {status}")),
                "{upstream}: {answer}"
            );
            assert!(
                !answer.contains("connection: close"),
                "{upstream}: {answer}"
            );
            assert!(get.starts_with("http/1.1 "), "{upstream}: {get}");
        }
    }
}

/// What is left unread of a body that remora answered early is read and
/// dropped only within bounds: past 1 MiB, or once the client sent nothing
/// for 5 s, the client's connection closes after its answer. A client still
/// waiting for `100 Continue` (whichever `Expect` field says so) is not
/// asked for its body after its answer: the connection closes at once.
#[tokio::test]
async fn the_rest_of_an_answered_body_is_dropped_within_bounds() {
    let proxy =
        Proxy::start(&TestConfig::one_upstream("refused", "http", [dead_addr()]).yaml()).await;
    let answered = |head: &'static [u8]| async {
        let mut stream = TcpStream::connect(proxy.upstream("refused")).await.unwrap();
        stream.write_all(head).await.unwrap();
        let (answer, _) = read_response(&mut stream).await;
        assert!(answer.starts_with("http/1.1 502"), "{answer}");
        stream
    };
    let closed_within = |mut stream: TcpStream, limit: Duration| async move {
        let mut rest = Vec::new();
        tokio::time::timeout(limit, stream.read_to_end(&mut rest))
            .await
            .is_ok()
    };

    let mut huge = answered(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 4194304\r\n\r\n").await;
    // 2 MiB of the 4: remora stops reading past 1 MiB (the write then fails
    // or is left unread), and closes.
    let _ = huge.write_all(&vec![b'x'; 2 << 20]).await;
    assert!(
        closed_within(huge, Duration::from_secs(2)).await,
        "the connection stayed open past 1 MiB"
    );

    let mut stalled = answered(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n").await;
    stalled.write_all(b"abc").await.unwrap();
    let started = Instant::now();
    assert!(
        closed_within(stalled, Duration::from_secs(15)).await,
        "the connection waited on a client that sent nothing"
    );
    assert!(
        started.elapsed() > Duration::from_secs(3),
        "closed before the 5 s"
    );

    for expect in [
        &b"POST / HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nhost: x\r\nexpect: x\r\nexpect: 100-Continue\r\ncontent-length: 5\r\n\r\n",
    ] {
        let waiting = answered(expect).await;
        assert!(
            closed_within(waiting, Duration::from_secs(2)).await,
            "the connection waits for a body it never asked for"
        );
    }
}

/// A `CONNECT` is refused with 400 `bad_request`, and the connection carries the next
/// request: remora forwards requests and opens no tunnels. It used to forward the CONNECT,
/// relay the upstream's `200`, then close the connection at the first byte of the tunnel.
#[tokio::test]
async fn a_connect_is_refused_and_the_connection_lives_on() {
    let backend = http_backend("behind");
    let proxy = Proxy::start(&outbound_yaml(
        "connect",
        "http",
        &[backend.addr.to_string()],
    ))
    .await;
    let mut stream = TcpStream::connect(proxy.upstream("connect")).await.unwrap();
    stream
        .write_all(b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut stream).await;
    assert!(head.starts_with("http/1.1 400"), "{head}");
    assert!(head.contains("x-remora-error: bad_request"), "{head}");
    assert!(body.contains("CONNECT is not supported"), "{body}");
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut stream).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(
        backend.requests(),
        1,
        "the CONNECT never reached the backend"
    );
}
