//! Hedged requests end to end, through the `remora` binary: with one slow endpoint, a GET
//! whose first try went to it is answered by a hedge to the fast one after `delay`, so the
//! p99 falls from the slow endpoint's latency to about the delay plus the fast one's; the
//! slow try is cancelled. A learned `delay: p90` does the same for an endpoint that is slow
//! now and then. A POST is never hedged, unless it carries an `Idempotency-Key`: then both
//! tries send its whole body (up to `retries.replay_body_limit`; a longer one is not hedged).
//! Unary gRPC calls to Python grpcio (C-core) servers are hedged when their method is listed
//! in `idempotent_grpc_methods`, and only then. An empty retry budget sends no hedge; with
//! `max_extra: 2` each hedge avoids every endpoint tried before.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

use support::config::TestConfig;
use support::{ProxyProcess, Server, get, prom, send, serve};

const SLOW: Duration = Duration::from_millis(400);
const FAST: Duration = Duration::from_millis(5);

/// An endpoint that reads the request body, then answers `name` after `FAST`, except every
/// `every`-th request (1: all) after `SLOW`; counts the slow answers it finished writing and
/// keeps the bodies it read.
struct Endpoint {
    addr: SocketAddr,
    slow_finished: Arc<AtomicU64>,
    bodies: Arc<Mutex<Vec<Bytes>>>,
    _server: Server,
}

fn endpoint(name: &'static str, every: u64) -> Endpoint {
    let requests = Arc::new(AtomicU64::new(0));
    let slow_finished = Arc::new(AtomicU64::new(0));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (count, finished, read) = (requests.clone(), slow_finished.clone(), bodies.clone());
    let server = serve(move |stream| {
        let (count, finished, read) = (count.clone(), finished.clone(), read.clone());
        async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let number = count.fetch_add(1, Ordering::SeqCst) + 1;
                let (finished, read) = (finished.clone(), read.clone());
                async move {
                    let body = request.into_body().collect().await?.to_bytes();
                    read.lock().unwrap().push(body);
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
        bodies,
        _server: server,
    }
}

/// GETs `url` until one's first try went to the other endpoint than `endpoint`, so that round
/// robin's next first try goes to `endpoint` (of two).
async fn next_turn_to(endpoint: &Endpoint, url: &str) {
    for _ in 0..3 {
        let before = endpoint.bodies.lock().unwrap().len();
        assert_eq!(
            get(Version::HTTP_11, url).await.unwrap().status,
            StatusCode::OK
        );
        if endpoint.bodies.lock().unwrap().len() == before {
            return;
        }
    }
    panic!("round robin did not alternate");
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

/// With `max_extra: 2` over two slow endpoints and a fast one, each hedge avoids every
/// endpoint an earlier try went to: when the first try and the first hedge went to the two
/// slow ones, the second hedge goes to the fast one, never back to a slow one. Random
/// picks, so that a hedge avoiding only the try before it would go back one time in six.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn further_hedges_avoid_every_endpoint_tried_before() {
    let (slow_a, slow_b) = (endpoint("slow-a", 1), endpoint("slow-b", 1));
    let fast = endpoint("fast", u64::MAX);
    let yaml = TestConfig::one_upstream("three", "http", [slow_a.addr, slow_b.addr, fast.addr])
        .with("load_balancing", "{ policy: random }")
        .with("hedge", "{ delay: 50ms, max_extra: 2 }")
        .yaml();
    let proxy = ProxyProcess::start(&yaml, 1);
    let url = format!("http://{}/", proxy.listener("three"));
    let all = latencies(&url, 60).await;
    let slowest = all[all.len() - 1];
    let hedges = counter(&proxy, "remora_hedges_total", "three").await;
    eprintln!(
        "max_extra 2: p50 {:?}, max {slowest:?}, {hedges} hedges",
        all[30]
    );
    // Two delays and the fast endpoint's 5 ms, plus overhead: far below SLOW.
    assert!(slowest < Duration::from_millis(300), "slowest {slowest:?}");
    // Two in three first tries are slow (about 40), and half their first hedges too.
    assert!(hedges >= 30.0, "{hedges} hedges");
}

/// Hedges come out of the retry budget: with an empty one (`ratio: 0`, `min_per_second: 0`)
/// no hedge is sent, a first try to the slow endpoint is waited for, and each hedge the
/// budget refused is counted in `remora_retry_budget_exhausted_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_hedge_is_sent_when_the_retry_budget_is_empty() {
    let (slow, fast) = (endpoint("slow", 1), endpoint("fast", u64::MAX));
    let yaml = TestConfig::one_upstream("broke", "http", [slow.addr, fast.addr])
        .with("load_balancing", "{ policy: round_robin }")
        .with(
            "retries",
            "{ attempts: 1, budget: { ratio: 0.0, min_per_second: 0 } }",
        )
        .with("hedge", "{ delay: 50ms }")
        .yaml();
    let proxy = ProxyProcess::start(&yaml, 1);
    let url = format!("http://{}/", proxy.listener("broke"));
    let all = latencies(&url, 10).await;
    let slow_answers = all.iter().filter(|latency| **latency >= SLOW).count();
    // Round robin: every other first try goes to the slow endpoint, and is waited for.
    assert!((4..=6).contains(&slow_answers), "{all:?}");
    assert_eq!(counter(&proxy, "remora_hedges_total", "broke").await, 0.0);
    let refused = counter(&proxy, "remora_retry_budget_exhausted_total", "broke").await;
    assert_eq!(refused, slow_answers as f64);
    assert_eq!(
        slow.slow_finished.load(Ordering::SeqCst),
        slow_answers as u64
    );
}

/// A POST of `body` to `url`, with an `Idempotency-Key`: its latency and reply.
async fn keyed_post(url: &str, key: &str, body: Bytes) -> (Duration, support::Reply) {
    let post = Request::post(url)
        .header("idempotency-key", key)
        .body(Full::new(body))
        .unwrap();
    let started = Instant::now();
    let reply = send(Version::HTTP_11, post).await.unwrap();
    (started.elapsed(), reply)
}

/// A POST with an `Idempotency-Key` is idempotent: hedged like a GET, and both tries carry
/// its whole 60 KiB body — the slow endpoint read it before the fast one answered. A body
/// still arriving when the delay is up is hedged once it has all arrived; one over
/// `replay_body_limit` (64 KiB) cannot be sent twice at once: not hedged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_with_an_idempotency_key_is_hedged_with_its_whole_body() {
    let (slow, fast) = (endpoint("slow", 1), endpoint("fast", u64::MAX));
    let proxy = ProxyProcess::start(
        &yaml("keyed", &[slow.addr, fast.addr], Some("{ delay: 50ms }")),
        1,
    );
    let url = format!("http://{}/orders", proxy.listener("keyed"));
    // Round robin alternates the first tries (hedges take no turn): every other POST below
    // goes first to the slow endpoint and is hedged to the fast one after 50 ms, the others
    // go first to the fast one, which answers before the delay.
    let (_, warm_up) = keyed_post(&url, "warm-up", Bytes::from_static(b"warm-up")).await;
    assert_eq!(warm_up.status, StatusCode::OK, "{warm_up:?}");
    let before = counter(&proxy, "remora_hedges_total", "keyed").await;
    slow.bodies.lock().unwrap().clear();
    fast.bodies.lock().unwrap().clear();
    let mut hedged = 0;
    for number in 0..6u8 {
        let body = Bytes::from(vec![b'a' + number; 60 * 1024]);
        let (took, reply) = keyed_post(&url, &format!("order-{number}"), body.clone()).await;
        eprintln!(
            "keyed POST {number}: {took:?} from {:?}",
            reply.headers["x-endpoint"]
        );
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        assert_eq!(reply.headers["x-endpoint"], "fast", "POST {number}");
        assert!(took < Duration::from_millis(300), "POST {number}: {took:?}");
        // When the first try went to the slow endpoint, the hedge went to the fast one:
        // both read this very body.
        assert_eq!(fast.bodies.lock().unwrap().last(), Some(&body), "{number}");
        if slow.bodies.lock().unwrap().last() == Some(&body) {
            hedged += 1;
        }
    }
    assert_eq!(hedged, 3, "hedged POSTs");
    assert_eq!(slow.bodies.lock().unwrap().len(), 3);
    assert_eq!(fast.bodies.lock().unwrap().len(), 6);
    let hedges = counter(&proxy, "remora_hedges_total", "keyed").await;
    assert_eq!(hedges - before, 3.0);
    assert_eq!(
        counter(&proxy, "remora_hedge_wins_total", "keyed").await,
        hedges
    );

    // A body still arriving when the delay is up puts the hedge off, by a delay at a time:
    // its second half comes 120 ms in, the hedge goes at the next tick (150 ms after the
    // first try started) with all of it, never before the body ended.
    next_turn_to(&slow, &url).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(2);
    let post = Request::post(&url)
        .header("idempotency-key", "order-streamed")
        .body(StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap();
    let started = Instant::now();
    let sent = tokio::spawn(support::http_client(Version::HTTP_11).request(post));
    tx.send(Ok(Frame::data(Bytes::from_static(b"first half; "))))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    tx.send(Ok(Frame::data(Bytes::from_static(b"second half"))))
        .await
        .unwrap();
    drop(tx);
    let response = sent.await.unwrap().unwrap();
    let took = started.elapsed();
    eprintln!("streamed keyed POST: {took:?}");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-endpoint"], "fast");
    assert!(
        took >= Duration::from_millis(120) && took < Duration::from_millis(350),
        "{took:?}"
    );
    let whole = Bytes::from_static(b"first half; second half");
    assert_eq!(slow.bodies.lock().unwrap().last(), Some(&whole));
    assert_eq!(fast.bodies.lock().unwrap().last(), Some(&whole));
    let hedges = counter(&proxy, "remora_hedges_total", "keyed").await;

    // 70 KiB is over the limit: the first try alone has the body, and waits for the slow one.
    next_turn_to(&slow, &url).await;
    let fast_before = fast.bodies.lock().unwrap().len();
    let large = Bytes::from(vec![b'z'; 70 * 1024]);
    let (took, reply) = keyed_post(&url, "order-large", large.clone()).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.headers["x-endpoint"], "slow");
    assert!(took >= SLOW, "{took:?}");
    assert_eq!(slow.bodies.lock().unwrap().last(), Some(&large));
    assert_eq!(fast.bodies.lock().unwrap().len(), fast_before, "no hedge");
    assert_eq!(
        counter(&proxy, "remora_hedges_total", "keyed").await,
        hedges
    );
}

/// Calls `path` of the grpcio servers through `proxy`; returns the call's latency after
/// checking the echo.
async fn grpcio_call(proxy: SocketAddr, path: &'static str, text: &str) -> Duration {
    let started = Instant::now();
    let (echo, _) = support::grpc::grpc_call(proxy, path, text)
        .await
        .unwrap_or_else(|status| panic!("{path} {text}: {status:?}"));
    let took = started.elapsed();
    assert_eq!(echo, text, "{path}");
    took
}

/// gRPC calls are POSTs with a body (one message): with `test.Echo/Unary` listed in
/// `idempotent_grpc_methods`, a call whose first try went to the grpcio server that answers
/// after 500 ms is answered by a hedge to the fast one, in about the delay; `test.Echo/Write`
/// is not listed, so it is never hedged, and the call that lands on the slow server waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_grpc_calls_are_hedged_only_for_idempotent_methods() {
    const GRPCIO_SLOW: Duration = Duration::from_millis(500);
    let slow = support::peers::grpcio_server(&[("delay_ms", GRPCIO_SLOW.as_millis() as i64)]);
    let fast = support::peers::grpcio_server(&[]);
    let yaml = TestConfig::one_upstream("grpc-hedged", "grpc", [slow.addr, fast.addr])
        .with("load_balancing", "{ policy: round_robin }")
        .with("hedge", "{ delay: 50ms }")
        .with("retries", "{ idempotent_grpc_methods: [test.Echo/Unary] }")
        .yaml();
    let proxy = ProxyProcess::start(&yaml, 1);
    let addr = proxy.listener("grpc-hedged");

    let mut unary = Vec::new();
    for number in 0..20 {
        unary.push(grpcio_call(addr, "/test.Echo/Unary", &format!("get {number}")).await);
    }
    unary.sort();
    let tail = unary[19];
    eprintln!("hedged unary gRPC: p50 {:?}, max {tail:?}", unary[10]);
    assert!(tail < Duration::from_millis(400), "slowest call {tail:?}");
    let hedges = counter(&proxy, "remora_hedges_total", "grpc-hedged").await;
    let wins = counter(&proxy, "remora_hedge_wins_total", "grpc-hedged").await;
    assert!((10.0..=20.0).contains(&hedges), "{hedges} hedges");
    assert_eq!(wins, hedges);

    // Round robin alternates between the two servers: one of two calls meets the slow one.
    let writes = [
        grpcio_call(addr, "/test.Echo/Write", "write 1").await,
        grpcio_call(addr, "/test.Echo/Write", "write 2").await,
    ];
    eprintln!("unhedged Write: {writes:?}");
    assert!(writes.iter().any(|took| *took >= GRPCIO_SLOW), "{writes:?}");
    assert_eq!(
        counter(&proxy, "remora_hedges_total", "grpc-hedged").await,
        hedges
    );
}
