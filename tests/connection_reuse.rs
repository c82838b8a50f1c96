//! Upstream connection reuse, seen from the backend: the number of TCP connections it
//! accepted. Sequential HTTP/1.1 requests go over one pooled keep-alive connection; concurrent
//! requests to an `http2` upstream are multiplexed over one HTTP/2 connection.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};

use support::{Proxy, http_backend, http_client};

fn yaml(name: &str, protocol: &str, endpoint: std::net::SocketAddr) -> String {
    format!(
        "service: {{ name: test }}\n\
         upstreams:\n  - name: {name}\n    listen: 127.0.0.1:0\n    protocol: {protocol}\n    \
         discovery: {{ static: [{endpoint}] }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         logging: {{ access_log: false }}\n"
    )
}

/// `GET url` on `client`; returns the status once the body has been read to the end.
async fn get_on<C>(
    client: &hyper_util::client::legacy::Client<C, Empty<Bytes>>,
    url: &str,
) -> StatusCode
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let request = Request::get(url).body(Empty::new()).unwrap();
    let response = client.request(request).await.expect("request");
    let status = response.status();
    response.into_body().collect().await.expect("body");
    status
}

const SEQUENTIAL: usize = 50;
const CONCURRENT: usize = 20;

#[tokio::test]
async fn sequential_http1_requests_reuse_one_upstream_connection() {
    let backend = http_backend("reuse-h1");
    let proxy = Proxy::start(&yaml("reuse-h1", "http", backend.addr)).await;
    let url = format!("http://{}/", proxy.upstream("reuse-h1"));
    // A fresh client per request: remora's client side changes every time, its upstream
    // connection must not.
    for i in 0..SEQUENTIAL {
        let status = get_on(&http_client(Version::HTTP_11), &url).await;
        assert_eq!(status, StatusCode::OK, "request {i}");
    }
    eprintln!(
        "{SEQUENTIAL} sequential HTTP/1.1 requests: {} upstream connections",
        backend.connections()
    );
    assert_eq!(backend.requests(), SEQUENTIAL as u64);
    assert_eq!(backend.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_h2c_requests_share_one_upstream_connection() {
    let backend = http_backend("reuse-h2");
    let proxy = Proxy::start(&yaml("reuse-h2", "http2", backend.addr)).await;
    // Each request is slow (200 ms) and comes on its own client connection, so all twenty are
    // in flight upstream at once.
    let url = format!("http://{}/slow/200", proxy.upstream("reuse-h2"));
    let started = Instant::now();
    let requests: Vec<_> = (0..CONCURRENT)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get_on(&http_client(Version::HTTP_2), &url).await })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), StatusCode::OK);
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{CONCURRENT} concurrent h2c requests in {elapsed:?}: {} upstream connections",
        backend.connections()
    );
    assert_eq!(backend.requests(), CONCURRENT as u64);
    assert!(
        backend.versions().iter().all(|v| *v == Version::HTTP_2),
        "{:?}",
        backend.versions()
    );
    // Sequentially they would take 4 s.
    assert!(
        elapsed < Duration::from_secs(2),
        "not concurrent: {elapsed:?}"
    );
    assert_eq!(backend.connections(), 1);
}
