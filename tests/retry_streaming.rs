//! Retries with request bodies that stream: the first try is sent at once and its body flows
//! upstream as the client sends it (a bidirectional gRPC stream, a chunked upload), while a copy
//! is kept so that a failed try can be replayed — unless the body outgrew `replay_body_limit`.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio_stream::wrappers::ReceiverStream;

use support::config::TestConfig;
use support::{Proxy, Server, grpc_bidi, grpc_echo, http_backend, http_client, send, serve};

/// An origin that reads each request body to its end, records it, then answers 503.
struct Failing {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Bytes>>>,
    _server: Server,
}

fn failing() -> Failing {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = bodies.clone();
    let server = serve(move |stream| {
        let seen = seen.clone();
        async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let seen = seen.clone();
                async move {
                    let body = request.into_body().collect().await?.to_bytes();
                    seen.lock().unwrap().push(body);
                    let mut response = Response::new(Full::new(Bytes::new()));
                    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    Ok::<_, hyper::Error>(response)
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    });
    Failing {
        addr: server.addr,
        bodies,
        _server: server,
    }
}

fn yaml(name: &str, protocol: &str, endpoints: &[SocketAddr], retries: &str) -> String {
    TestConfig::one_upstream(name, protocol, endpoints)
        .with("load_balancing", "{ policy: round_robin }")
        .with("timeouts", "{ request: 5s }")
        .with("retries", retries)
        .yaml()
}

/// Each message is echoed before the next is sent: with retries on, the stream is not held
/// back until the request timeout.
#[tokio::test]
async fn a_bidirectional_grpc_stream_flows_with_retries_on() {
    let server = grpc_echo();
    let proxy = Proxy::start(&yaml(
        "grpc-retry",
        "grpc",
        &[server.addr],
        "{ attempts: 3, on: [unavailable, reset, connect_failure] }",
    ))
    .await;
    let messages: Vec<String> = (0..20).map(|i| format!("message {i}")).collect();
    let started = Instant::now();
    let (echoes, trailers) = grpc_bidi(proxy.upstream("grpc-retry"), messages.clone())
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(echoes, messages);
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

/// The failing endpoint reads each body to its end before its 503: the retry on the other
/// endpoint replays all of it.
#[tokio::test]
async fn a_body_read_whole_by_a_failed_try_is_replayed_whole() {
    let failing = failing();
    let echo = http_backend("echo");
    let proxy = Proxy::start(&yaml(
        "replay-whole",
        "http",
        &[failing.addr, echo.addr],
        "{ attempts: 2, on: [\"503\"], backoff: { base: 1ms, max: 2ms } }",
    ))
    .await;
    let url = format!("http://{}/echo", proxy.upstream("replay-whole"));
    let body: Bytes = (0..10 * 1024u32).map(|i| b'a' + (i % 26) as u8).collect();
    for i in 0..4 {
        // A POST is retried after a 503 only with an Idempotency-Key.
        let request = Request::post(&url)
            .header("idempotency-key", format!("upload-{i}"))
            .body(Full::new(body.clone()))
            .unwrap();
        let reply = send(Version::HTTP_11, request).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "request {i}");
        assert_eq!(reply.body.len(), body.len(), "request {i}");
        assert!(reply.body.as_bytes() == body, "request {i}: body differs");
    }
    let failed = failing.bodies.lock().unwrap().clone();
    assert!(
        !failed.is_empty(),
        "round robin never picked the failing endpoint"
    );
    assert!(failed.iter().all(|seen| *seen == body));
    assert_eq!(echo.requests(), 4);
}

#[tokio::test]
async fn a_body_over_the_replay_limit_is_not_retried() {
    let failing = failing();
    let proxy = Proxy::start(&yaml(
        "replay-capped",
        "http",
        &[failing.addr],
        "{ attempts: 3, on: [\"503\"], backoff: { base: 1ms, max: 2ms }, replay_body_limit: 1024 }",
    ))
    .await;
    let url = format!("http://{}/upload", proxy.upstream("replay-capped"));
    let body = Bytes::from(vec![b'x'; 8 * 1024]);
    let request = Request::put(&url).body(Full::new(body.clone())).unwrap();
    let reply = send(Version::HTTP_11, request).await.unwrap();
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(*failing.bodies.lock().unwrap(), vec![body]);
}

/// A chunked upload reaches the upstream while the client is still sending it: each chunk is
/// echoed back before the next one is sent.
#[tokio::test]
async fn a_chunked_body_streams_upstream_while_it_is_sent() {
    let echo = http_backend("echo");
    let proxy = Proxy::start(&yaml(
        "replay-streaming",
        "http",
        &[echo.addr],
        "{ attempts: 3, on: [\"503\", reset, connect_failure] }",
    ))
    .await;
    let url = format!("http://{}/echo", proxy.upstream("replay-streaming"));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
    let request = Request::post(&url)
        .body(StreamBody::new(ReceiverStream::new(rx)))
        .unwrap();
    let wait = Duration::from_secs(2);
    let client = http_client(Version::HTTP_11);
    tx.send(Ok(Frame::data(Bytes::from_static(b"chunk 0;"))))
        .await
        .unwrap();
    let response = tokio::time::timeout(wait, client.request(request))
        .await
        .expect("response head while the body is still open")
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut echoed = Vec::new();
    for n in 0..5 {
        let expected = format!("chunk {n};");
        if n > 0 {
            tx.send(Ok(Frame::data(Bytes::from(expected.clone()))))
                .await
                .unwrap();
        }
        let mut got = Vec::new();
        while got.len() < expected.len() {
            let frame = tokio::time::timeout(wait, body.frame())
                .await
                .unwrap_or_else(|_| panic!("no echo of chunk {n}: the body is held back"))
                .expect("response body ended early")
                .unwrap();
            if let Ok(data) = frame.into_data() {
                got.extend_from_slice(&data);
            }
        }
        assert_eq!(got, expected.as_bytes());
        echoed.extend(got);
    }
    drop(tx);
    let rest = body.collect().await.unwrap().to_bytes();
    assert!(rest.is_empty());
    assert_eq!(echo.requests(), 1);
    assert_eq!(echoed.len(), 5 * "chunk n;".len());
}
