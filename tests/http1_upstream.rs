//! Pooled HTTP/1.1 upstream connections, against an origin written byte by byte that does
//! what servers do on their own schedule: closing a reused connection after reading a request
//! without answering it (only idempotent requests are sent again — a POST never is), and
//! announcing `Keep-Alive: timeout=N` (remora closes the idle connection a second before).
//! The same race against nginx is in `third_party_upstreams.rs`. Many requests to one
//! endpoint at once (each lets the others go out first) each get their own answer. A GET's
//! chunked body goes on to the origin. An HTTP/2 client's cookie fields arrive as one.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode, Version};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::config::TestConfig;
use support::in_flight::assert_nothing_in_flight;
use support::raw_http1::read_until_close;
use support::{Proxy, Server, http_backend, prom, send, serve};

/// One request as the origin read it: which connection (0 = the first), method and body.
#[derive(Debug, Clone, PartialEq)]
struct Received {
    connection: usize,
    method: String,
    body: String,
}

/// Appends what the stream has to `buffer`; `None` at its end (or on an error).
async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(read) => {
            buffer.extend_from_slice(&chunk[..read]);
            Some(())
        }
    }
}

/// Reads one request (head, and a body of `Content-Length` bytes); `None` at end of stream.
async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<(String, String)> {
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        read_more(stream, buffer).await?;
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let method = head.split(' ').next().unwrap_or_default().to_owned();
    let length: usize = (head.lines())
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        read_more(stream, buffer).await?;
    }
    let body = String::from_utf8_lossy(&buffer[head_end..head_end + length]).into_owned();
    buffer.drain(..head_end + length);
    Some((method, body))
}

/// An origin whose first connection answers its first request and then, after reading the
/// second in full, closes without a byte of response; later connections answer every
/// request `200`. Returns what it read.
fn closing_origin() -> (Server, Arc<Mutex<Vec<Received>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(Mutex::new(0));
    let server = serve({
        let received = Arc::clone(&received);
        move |mut stream| {
            let connection = {
                let mut count = connections.lock().unwrap();
                *count += 1;
                *count - 1
            };
            let received = Arc::clone(&received);
            async move {
                let mut buffer = Vec::new();
                let mut served = 0;
                while let Some((method, body)) = read_request(&mut stream, &mut buffer).await {
                    let seen = Received {
                        connection,
                        method,
                        body,
                    };
                    received.lock().unwrap().push(seen);
                    if connection == 0 && served == 1 {
                        return; // Closed, the request read and not answered.
                    }
                    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                    served += 1;
                }
            }
        }
    });
    (server, received)
}

/// A request on a reused connection that the upstream closes before any byte of a response
/// may or may not have been processed: an idempotent one (GET; PUT, its body replayed) is
/// sent again on a fresh connection, transparently; a POST is not (502), and reached the
/// upstream exactly once.
#[tokio::test]
async fn a_reused_connection_closed_before_a_response_resends_only_idempotent_requests() {
    // (method, body, status, resends, requests the origin read after the first)
    let cases = [
        (Method::GET, "", StatusCode::OK, 1.0, 2),
        (Method::PUT, "v1", StatusCode::OK, 1.0, 2),
        (Method::POST, "order #1", StatusCode::BAD_GATEWAY, 0.0, 1),
    ];
    for (method, body, status, resent, reads) in cases {
        let name = format!("closing-{}", method.as_str().to_lowercase());
        let (origin, received) = closing_origin();
        let config = TestConfig::one_upstream(&name, "http", [origin.addr]);
        let proxy = Proxy::start(&config.yaml()).await;
        let url = format!("http://{}/", proxy.upstream(&name));
        let first = Request::get(&url).body(Full::new(Bytes::new())).unwrap();
        assert_eq!(
            send(Version::HTTP_11, first).await.unwrap().status,
            StatusCode::OK
        );
        let request = Request::builder()
            .method(method.clone())
            .uri(&url)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let reply = send(Version::HTTP_11, request).await.unwrap();
        assert_eq!(reply.status, status, "{method}: {reply:?}");
        let read: Vec<Received> = received.lock().unwrap()[1..].to_vec();
        assert_eq!(read.len(), reads, "{method}: {read:?}");
        for (number, seen) in read.iter().enumerate() {
            // Read on the reused connection (0), then, when resent, on a fresh one (1).
            assert_eq!(seen.connection, number, "{method}: {read:?}");
            assert_eq!(
                (seen.method.as_str(), seen.body.as_str()),
                (method.as_str(), body)
            );
        }
        let text = prom::scrape(&proxy.admin_url("/metrics")).await;
        let labels = [
            ("upstream", name.as_str()),
            ("reason", "closed_before_response"),
        ];
        let resends = prom::sum(&text, "remora_upstream_resends_total", &labels);
        assert_eq!(resends, resent, "{method}: resends");
        let retries = prom::sum(
            &text,
            "remora_retries_total",
            &[("upstream", name.as_str())],
        );
        assert_eq!(retries, 0.0, "{method}: a resend is not a retry");
    }
}

/// An upstream that announces `Keep-Alive: timeout=2` gets its idle connection closed by
/// remora a second before (checked every second: between 1 and 2 s after the response),
/// rather than reused just as the server closes it; `timeouts.idle` (60 s) would keep it.
#[tokio::test]
async fn an_idle_connection_closes_before_the_announced_keep_alive_timeout() {
    let closed_after = Arc::new(Mutex::new(None));
    let origin = serve({
        let closed_after = Arc::clone(&closed_after);
        move |mut stream| {
            let closed_after = Arc::clone(&closed_after);
            async move {
                let mut buffer = Vec::new();
                let mut answered = None;
                while read_request(&mut stream, &mut buffer).await.is_some() {
                    let answer =
                        b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=2\r\nContent-Length: 2\r\n\r\nok";
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                    answered = Some(Instant::now());
                }
                // The origin never closes first: the end of stream is remora's close.
                *closed_after.lock().unwrap() = answered.map(|at| at.elapsed());
            }
        }
    });
    let config = TestConfig::one_upstream("keep-alive-timeout", "http", [origin.addr]);
    let proxy = Proxy::start(&config.yaml()).await;
    let url = format!("http://{}/", proxy.upstream("keep-alive-timeout"));
    let request = Request::get(&url).body(Full::new(Bytes::new())).unwrap();
    assert_eq!(
        send(Version::HTTP_11, request).await.unwrap().status,
        StatusCode::OK
    );
    let started = Instant::now();
    let closed = loop {
        if let Some(after) = *closed_after.lock().unwrap() {
            break after;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "not closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        closed >= Duration::from_millis(950) && closed < Duration::from_millis(2100),
        "closed {closed:?} after the response"
    );
}

/// 200 requests to one endpoint at once: with others in flight, each waits for their turn
/// before it goes out (`endpoint.rs`). Every one gets its own answer, nothing stays in flight,
/// and a request alone afterwards goes out at once.
#[tokio::test]
async fn concurrent_requests_to_one_endpoint_each_get_their_own_answer() {
    let backend = http_backend("together");
    let config = TestConfig::one_upstream("together", "http", [backend.addr]);
    let proxy = Proxy::start(&config.yaml()).await;
    let base = format!("http://{}", proxy.upstream("together"));
    let replies = futures_util::future::join_all((0..200).map(|i| {
        let request = Request::post(format!("{base}/echo"))
            .body(Full::new(Bytes::from(format!("request {i}"))))
            .unwrap();
        async move { (i, send(Version::HTTP_11, request).await.unwrap()) }
    }))
    .await;
    for (i, reply) in replies {
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        assert_eq!(reply.body, format!("request {i}"));
    }
    assert_eq!(backend.requests(), 200);
    assert_nothing_in_flight(&proxy, "together", "200 requests at once").await;

    let started = Instant::now();
    let request = Request::get(format!("{base}/"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = send(Version::HTTP_11, request).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}

/// A GET may carry a body: a chunked one goes on to the origin (it was dropped, the origin saw
/// none, and the client's connection was closed on the unread rest).
#[tokio::test]
async fn a_get_with_a_chunked_body_sends_it_on() {
    let backend = http_backend("get-body");
    let config = TestConfig::one_upstream("get-body", "http", [backend.addr]);
    let proxy = Proxy::start(&config.yaml()).await;
    let mut stream = TcpStream::connect(proxy.upstream("get-body"))
        .await
        .unwrap();
    stream
        .write_all(
            b"GET /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
    let response = read_until_close(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\r\n5\r\nhello\r\n"), "{response}");
    assert_eq!(backend.echoed_bytes(), 5);
}

/// An HTTP/2 client's cookies, sent as several `cookie` fields (as browsers do), reach an
/// HTTP/1.1 origin as one field, joined with `; ` (RFC 9113 §8.2.3); an HTTP/1.1 client's
/// single field goes on as it came.
#[tokio::test]
async fn an_http2_clients_cookie_fields_reach_an_http1_origin_as_one() {
    let origin = serve(|mut stream| async move {
        let head = support::raw_http1::read_head(&mut stream)
            .await
            .unwrap_or_default();
        let cookies: Vec<&str> = head
            .lines()
            .filter_map(|line| line.strip_prefix("cookie: "))
            .collect();
        let body = cookies.join("\n");
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(answer.as_bytes()).await;
    });
    let proxy = Proxy::start(&TestConfig::inbound_to("app", origin.addr).yaml()).await;
    for version in [Version::HTTP_2, Version::HTTP_11] {
        let mut request = Request::get(format!("http://{}/", proxy.inbound()));
        request = match version {
            Version::HTTP_2 => request.header("cookie", "a=1").header("cookie", "b=2"),
            _ => request.header("cookie", "a=1; b=2"),
        };
        let reply = send(version, request.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{version:?}");
        assert_eq!(reply.body, "a=1; b=2", "{version:?}");
    }
}
