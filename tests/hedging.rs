//! Hedged requests end to end, through the `remora` binary: with one slow endpoint, a GET
//! whose first try went to it is answered by a hedge to the fast one after `delay`, so the
//! p99 falls from the slow endpoint's latency to about the delay plus the fast one's; the
//! slow try is cancelled. A learned `delay: p90` does the same for an endpoint that is slow
//! now and then. A POST is never hedged.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

use support::config::TestConfig;
use support::{ProxyProcess, Server, get, prom, send, serve};

const SLOW: Duration = Duration::from_millis(400);
const FAST: Duration = Duration::from_millis(5);

/// An endpoint that answers `name` after `FAST`, except every `every`-th request (1: all)
/// after `SLOW`; counts the slow answers it finished writing.
struct Endpoint {
    addr: SocketAddr,
    slow_finished: Arc<AtomicU64>,
    _server: Server,
}

fn endpoint(name: &'static str, every: u64) -> Endpoint {
    let requests = Arc::new(AtomicU64::new(0));
    let slow_finished = Arc::new(AtomicU64::new(0));
    let (count, finished) = (requests.clone(), slow_finished.clone());
    let server = serve(move |stream| {
        let (count, finished) = (count.clone(), finished.clone());
        async move {
            let service = service_fn(move |_request: Request<Incoming>| {
                let number = count.fetch_add(1, Ordering::SeqCst) + 1;
                let finished = finished.clone();
                async move {
                    let slow = number % every == 0;
                    tokio::time::sleep(if slow { SLOW } else { FAST }).await;
                    if slow {
                        finished.fetch_add(1, Ordering::SeqCst);
                    }
                    let mut response =
                        Response::new(Full::new(Bytes::from_static(name.as_bytes())));
                    response
                        .headers_mut()
                        .insert("x-endpoint", name.parse().unwrap());
                    Ok::<_, hyper::Error>(response)
                }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    });
    Endpoint {
        addr: server.addr,
        slow_finished,
        _server: server,
    }
}

/// `count` GETs one after the other; their latencies, sorted.
async fn latencies(url: &str, count: usize) -> Vec<Duration> {
    let mut all = Vec::with_capacity(count);
    for i in 0..count {
        let started = Instant::now();
        let reply = get(Version::HTTP_11, url).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "request {i}: {reply:?}");
        all.push(started.elapsed());
    }
    all.sort();
    all
}

fn p99(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() * 99).div_ceil(100) - 1]
}

async fn counter(proxy: &ProxyProcess, name: &str, upstream: &str) -> f64 {
    let text = prom::scrape(&format!("http://{}/metrics", proxy.admin)).await;
    prom::sum(&text, name, &[("upstream", upstream)])
}

fn yaml(name: &str, endpoints: &[SocketAddr], hedge: Option<&str>) -> String {
    let config = TestConfig::one_upstream(name, "http", endpoints)
        .with("load_balancing", "{ policy: round_robin }");
    match hedge {
        Some(hedge) => config.with("hedge", hedge).yaml(),
        None => config.yaml(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedge_cuts_the_p99_to_the_delay_plus_the_fast_endpoint() {
    let (slow, fast) = (endpoint("slow", 1), endpoint("fast", u64::MAX));
    let endpoints = [slow.addr, fast.addr];

    let plain = ProxyProcess::start(&yaml("plain", &endpoints, None), 1);
    let unhedged = latencies(&format!("http://{}/", plain.listener("plain")), 40).await;
    eprintln!("no hedge: p50 {:?}, p99 {:?}", unhedged[20], p99(&unhedged));
    assert!(p99(&unhedged) >= SLOW, "{:?}", p99(&unhedged));

    let before = slow.slow_finished.load(Ordering::SeqCst);
    let proxy = ProxyProcess::start(&yaml("hedged", &endpoints, Some("{ delay: 50ms }")), 1);
    let url = format!("http://{}/", proxy.listener("hedged"));
    let hedged = latencies(&url, 40).await;
    let tail = p99(&hedged);
    eprintln!("hedge after 50ms: p50 {:?}, p99 {tail:?}", hedged[20]);
    // 50 ms + the fast endpoint's 5 ms, plus the proxy's and the test's own overhead.
    assert!(
        tail >= Duration::from_millis(50) && tail < Duration::from_millis(200),
        "p99 {tail:?}"
    );
    // Round robin sends (at least) every other first try to the slow endpoint — every one
    // when each hedge moves the turn on to the fast one: each got a hedge, which won.
    let hedges = counter(&proxy, "remora_hedges_total", "hedged").await;
    let wins = counter(&proxy, "remora_hedge_wins_total", "hedged").await;
    assert!((15.0..=40.0).contains(&hedges), "{hedges} hedges");
    assert_eq!(wins, hedges);
    // The slow tries were cancelled: none of them finished writing its answer.
    tokio::time::sleep(SLOW).await;
    assert_eq!(slow.slow_finished.load(Ordering::SeqCst), before);

    // A POST is not idempotent: never hedged, it waits for the slow endpoint.
    let started = Instant::now();
    let post = Request::post(&url).body(Full::new(Bytes::new())).unwrap();
    let reply = send(Version::HTTP_11, post).await.unwrap();
    let reply = if reply.headers["x-endpoint"] == "fast" {
        let post = Request::post(&url).body(Full::new(Bytes::new())).unwrap();
        send(Version::HTTP_11, post).await.unwrap()
    } else {
        reply
    };
    assert_eq!(reply.headers["x-endpoint"], "slow");
    assert!(started.elapsed() >= SLOW);
    assert_eq!(
        counter(&proxy, "remora_hedges_total", "hedged").await,
        hedges
    );
}

/// `delay: p90` learns the delay from the answers: one request in ten to endpoint `a` is slow,
/// so the 90th percentile is the fast latency and the slow tries get hedged (to `b`) soon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_percentile_delay_is_learned_from_the_answers() {
    let (a, b) = (endpoint("a", 10), endpoint("b", u64::MAX));
    let proxy = ProxyProcess::start(
        &yaml("learned", &[a.addr, b.addr], Some("{ delay: p90 }")),
        1,
    );
    let url = format!("http://{}/", proxy.listener("learned"));
    // The first 20 answers teach the delay (no hedge before).
    let learning = latencies(&url, 20).await;
    assert!(p99(&learning) >= SLOW, "{:?}", p99(&learning));
    let hedged = latencies(&url, 100).await;
    let tail = p99(&hedged);
    let hedges = counter(&proxy, "remora_hedges_total", "learned").await;
    eprintln!(
        "delay p90: p50 {:?}, p99 {tail:?}, {hedges} hedges",
        hedged[50]
    );
    assert!(tail < Duration::from_millis(200), "p99 {tail:?}");
    assert!(hedges >= 3.0, "{hedges} hedges");
}
