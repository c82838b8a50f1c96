//! Load balancing through remora over three real backends, each recognised by its
//! `x-backend` header: round robin exactly even, random within bounds, least request and
//! P2C peak-EWMA avoiding a slow endpoint under concurrent load, ring hash sticky per
//! `x-user`, a dead endpoint skipped (retried, then held in backoff, probed by one request per
//! expired backoff even under 50 concurrent clients), and all endpoints dead.

mod support;

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;

use support::config::TestConfig;
use support::{Backend, Proxy, get, http_backend, http_client, prom, serve};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn yaml(name: &str, balancing: &str, endpoints: &[SocketAddr]) -> String {
    TestConfig::one_upstream(name, "http", endpoints)
        .with("load_balancing", balancing)
        .yaml()
}

fn three_backends(prefix: &str) -> Vec<Backend> {
    ["a", "b", "c"]
        .iter()
        .map(|n| http_backend(&format!("{prefix}-{n}")))
        .collect()
}

fn addrs(backends: &[Backend]) -> Vec<SocketAddr> {
    backends.iter().map(|b| b.addr).collect()
}

/// `GET url` with optional `x-user`; returns the status and the `x-backend` that answered.
async fn which_backend(
    client: &HttpClient,
    url: &str,
    user: Option<&str>,
) -> (StatusCode, Option<String>) {
    let mut request = Request::get(url);
    if let Some(user) = user {
        request = request.header("x-user", user);
    }
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(request.body(Empty::new()).unwrap()),
    )
    .await
    .expect("response within 10 s")
    .expect("request");
    let status = response.status();
    let backend = response
        .headers()
        .get("x-backend")
        .map(|v| v.to_str().unwrap().to_owned());
    response.into_body().collect().await.expect("body");
    (status, backend)
}

/// Sends `n` sequential requests; returns how many each backend answered. Every one must be 200.
async fn tally_sequential(url: &str, n: usize) -> HashMap<String, usize> {
    let client = http_client(Version::HTTP_11);
    let mut tally = HashMap::new();
    for i in 0..n {
        let (status, backend) = which_backend(&client, url, None).await;
        assert_eq!(status, StatusCode::OK, "request {i}");
        *tally.entry(backend.expect("x-backend header")).or_insert(0) += 1;
    }
    tally
}

#[tokio::test]
async fn round_robin_is_exactly_even() {
    let backends = three_backends("rr");
    let proxy = Proxy::start(&yaml("lb-rr", "{ policy: round_robin }", &addrs(&backends))).await;
    let url = format!("http://{}/", proxy.upstream("lb-rr"));
    let tally = tally_sequential(&url, 300).await;
    for backend in &backends {
        assert_eq!(tally.get(&backend.name), Some(&100), "{tally:?}");
        assert_eq!(backend.requests(), 100, "{} saw", backend.name);
    }
}

/// Binomial(600, 1/3): mean 200, sd 11.5; the bounds 150..=252 (25 % – 42 %) are more than
/// 4 sd away, so a correct uniform choice fails this about once in 10^5 runs, while a
/// policy stuck on one or two endpoints fails it always.
#[tokio::test]
async fn random_spreads_within_bounds() {
    let backends = three_backends("rand");
    let proxy = Proxy::start(&yaml("lb-random", "{ policy: random }", &addrs(&backends))).await;
    let url = format!("http://{}/", proxy.upstream("lb-random"));
    let tally = tally_sequential(&url, 600).await;
    eprintln!("random over 600: {tally:?}");
    for backend in &backends {
        let count = tally.get(&backend.name).copied().unwrap_or(0);
        assert!((150..=252).contains(&count), "{}: {tally:?}", backend.name);
    }
}

/// An origin that answers every request after `delay`, with `x-backend: <name>`.
fn slow_origin(name: &'static str, delay: Duration) -> SocketAddr {
    serve(move |stream| async move {
        let service = service_fn(move |_request| async move {
            tokio::time::sleep(delay).await;
            let mut response = Response::new(Full::new(Bytes::from_static(b"slow")));
            response
                .headers_mut()
                .insert("x-backend", http::HeaderValue::from_static(name));
            Ok::<_, Infallible>(response)
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    })
    .detach()
}

const CLIENTS: usize = 8;
const REQUESTS_PER_CLIENT: usize = 100;
const SLOW_DELAY: Duration = Duration::from_millis(50);

/// Runs `CLIENTS` concurrent clients, `REQUESTS_PER_CLIENT` sequential requests each, against a
/// 50 ms endpoint and two fast ones under `policy`; returns the slow endpoint's share.
///
/// A load-blind policy would send it 1/3 of the requests. A load-aware one keeps about as
/// many requests in flight there as on each fast endpoint (least request), or fewer (peak
/// EWMA also sees its latency), so by Little's law its share is about
/// `latency_fast / latency_slow`, a few percent. 20 % leaves room for a slow machine while
/// staying far below 33 %.
async fn slow_endpoint_share(name: &str, policy: &str) -> f64 {
    let fast = [
        http_backend(&format!("{name}-fast-1")),
        http_backend(&format!("{name}-fast-2")),
    ];
    let slow = slow_origin("slow", SLOW_DELAY);
    let proxy = Proxy::start(&yaml(
        name,
        &format!("{{ policy: {policy} }}"),
        &[fast[0].addr, slow, fast[1].addr],
    ))
    .await;
    let url = format!("http://{}/", proxy.upstream(name));
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = http_client(Version::HTTP_11);
                let mut slow = 0usize;
                for _ in 0..REQUESTS_PER_CLIENT {
                    let (status, backend) = which_backend(&client, &url, None).await;
                    assert_eq!(status, StatusCode::OK);
                    slow += usize::from(backend.as_deref() == Some("slow"));
                }
                slow
            })
        })
        .collect();
    let mut slow_count = 0;
    for client in clients {
        slow_count += tokio::time::timeout(Duration::from_secs(20), client)
            .await
            .expect("load finishes within 20 s")
            .unwrap();
    }
    let total = CLIENTS * REQUESTS_PER_CLIENT;
    let fast_counts = [fast[0].requests(), fast[1].requests()];
    assert_eq!(
        fast_counts.iter().sum::<u64>() + slow_count as u64,
        total as u64,
        "{policy}: the fast backends counted {fast_counts:?}, the clients saw {slow_count} \
         answers from the slow one"
    );
    let share = slow_count as f64 / total as f64;
    eprintln!(
        "{policy}: slow endpoint got {slow_count}/{total} = {:.1} % in {:?}",
        share * 100.0,
        started.elapsed()
    );
    share
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_avoids_a_slow_endpoint() {
    let share = slow_endpoint_share("lb-least", "least_request").await;
    assert!(share < 0.20, "slow endpoint share {share:.3}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_ewma_avoids_a_slow_endpoint() {
    let share = slow_endpoint_share("lb-p2c", "p2c_ewma").await;
    assert!(share < 0.20, "slow endpoint share {share:.3}");
}

/// 100 users × 3 requests: each user always lands on one backend, the users cover all three,
/// and a request without the header is still served (at random).
#[tokio::test]
async fn ring_hash_is_sticky_per_header_value() {
    let backends = three_backends("ring");
    let proxy = Proxy::start(&yaml(
        "lb-ring",
        "{ policy: ring_hash, hash_on: \"header:x-user\" }",
        &addrs(&backends),
    ))
    .await;
    let url = format!("http://{}/", proxy.upstream("lb-ring"));
    let client = http_client(Version::HTTP_11);
    let mut placement: HashMap<String, String> = HashMap::new();
    for round in 0..3 {
        for user in 0..100 {
            let user = format!("user-{user}");
            let (status, backend) = which_backend(&client, &url, Some(&user)).await;
            assert_eq!(status, StatusCode::OK);
            let backend = backend.expect("x-backend");
            let first = placement.entry(user.clone()).or_insert(backend.clone());
            assert_eq!(
                *first, backend,
                "{user} moved from {first} to {backend} in round {round}"
            );
        }
    }
    let used: HashSet<&String> = placement.values().collect();
    assert_eq!(used.len(), 3, "users spread over {used:?}");

    for _ in 0..10 {
        let (status, backend) = which_backend(&client, &url, None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(backend.is_some());
    }
}

/// Cumulative backoff delays of a dead endpoint: 250 ms doubling, capped at 5 s.
fn backoff_expiries() -> impl Iterator<Item = Duration> {
    let mut total = Duration::ZERO;
    (0..).map(move |n: u32| {
        total += Duration::from_millis(250 * (1u64 << n.min(5))).min(Duration::from_secs(5));
        total
    })
}

/// Two live backends and a dead address under round robin: every request succeeds (the one
/// that picks the dead endpoint is retried on a live one) and the dead endpoint is tried
/// again only when its backoff expires (250 ms, 500 ms, 1 s, ...), so over a paced ~1.5 s run
/// the connect errors are at least 2 and at most 1 + (backoff expiries during the run), plus
/// one for timing slack.
#[tokio::test]
async fn dead_endpoint_is_retried_elsewhere_and_backed_off() {
    let live = [http_backend("dead-test-a"), http_backend("dead-test-b")];
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let proxy = Proxy::start(&yaml(
        "lb-dead",
        "{ policy: round_robin }",
        &[live[0].addr, dead, live[1].addr],
    ))
    .await;
    let url = format!("http://{}/", proxy.upstream("lb-dead"));
    // Paced over ~1.5 s so that the backoff expires a few times during the run.
    let client = http_client(Version::HTTP_11);
    let mut pace = tokio::time::interval(Duration::from_millis(5));
    let mut tally: HashMap<String, usize> = HashMap::new();
    let started = Instant::now();
    for i in 0..300 {
        pace.tick().await;
        let (status, backend) = which_backend(&client, &url, None).await;
        assert_eq!(status, StatusCode::OK, "request {i}");
        *tally.entry(backend.expect("x-backend")).or_insert(0) += 1;
    }
    let elapsed = started.elapsed();
    // The live ones share the load evenly-ish (round robin over the eligible ones).
    for backend in &live {
        let count = tally.get(&backend.name).copied().unwrap_or(0);
        assert!((100..=200).contains(&count), "{tally:?}");
    }

    let bound = 1 + backoff_expiries().take_while(|t| *t <= elapsed).count() + 1;
    let text = prom::scrape(&proxy.admin_url("/metrics")).await;
    let errors = prom::value(
        &text,
        "remora_upstream_connect_errors_total",
        &[("upstream", "lb-dead")],
    )
    .unwrap_or(0.0);
    eprintln!("dead endpoint: {errors} connect errors over 300 requests in {elapsed:?}");
    // Tried at the start and again after the first 250 ms backoff expired (half-open).
    assert!(
        errors >= 2.0,
        "{errors} connect errors: the dead endpoint was not retried after its backoff"
    );
    assert!(
        errors <= bound as f64,
        "{errors} connect errors in {elapsed:?} (at most {bound} expected with backoff)"
    );
}

const HERD_CLIENTS: usize = 50;
const HERD_RUN: Duration = Duration::from_secs(2);

/// Sends requests on `client` until `until`; returns (requests, failures), a failure being
/// anything but a 200.
async fn requests_until(client: &HttpClient, url: &str, until: Instant) -> (usize, usize) {
    let (mut sent, mut failed) = (0, 0);
    while Instant::now() < until {
        let (status, _) = which_backend(client, url, None).await;
        sent += 1;
        failed += usize::from(status != StatusCode::OK);
    }
    (sent, failed)
}

/// Fifty concurrent keep-alive clients for ~2 s over two live backends and a dead address,
/// under the default policy (P2C peak-EWMA, which favours the dead endpoint: its refused
/// connects look fast and it has nothing in flight). When a backoff expires only one request
/// may probe the dead endpoint until its connect fails, so the run costs at most one connect
/// error per backoff window (plus one of slack), and no client request fails (the probe is
/// retried on a live endpoint).
///
/// The clients' first requests form a burst sent before anything is known about the dead
/// endpoint, so several of them may try it; those errors are counted separately and the bound
/// applies to the rest of the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_endpoint_costs_one_connect_per_backoff_window_under_concurrency() {
    let live = [http_backend("herd-a"), http_backend("herd-b")];
    let dead = support::dead_addr();
    let proxy = Proxy::start(&yaml(
        "lb-herd",
        "{ policy: p2c_ewma }",
        &[live[0].addr, dead, live[1].addr],
    ))
    .await;
    let url = format!("http://{}/", proxy.upstream("lb-herd"));
    let metrics = proxy.admin_url("/metrics");
    let connect_errors = || async {
        let text = prom::scrape(&metrics).await;
        let labels = [("upstream", "lb-herd")];
        prom::value(&text, "remora_upstream_connect_errors_total", &labels).unwrap_or(0.0)
    };

    let started = Instant::now();
    let first_round = std::sync::Arc::new(tokio::sync::Barrier::new(HERD_CLIENTS + 1));
    let clients: Vec<_> = (0..HERD_CLIENTS)
        .map(|_| {
            let (url, first_round) = (url.clone(), first_round.clone());
            tokio::spawn(async move {
                let client = http_client(Version::HTTP_11);
                let (status, _) = which_backend(&client, &url, None).await;
                first_round.wait().await;
                let (sent, failed) = requests_until(&client, &url, started + HERD_RUN).await;
                (sent + 1, failed + usize::from(status != StatusCode::OK))
            })
        })
        .collect();
    first_round.wait().await;
    let burst_errors = connect_errors().await;
    let (mut sent, mut failed) = (0, 0);
    for client in clients {
        let (client_sent, client_failed) = tokio::time::timeout(Duration::from_secs(30), client)
            .await
            .expect("clients finish")
            .unwrap();
        sent += client_sent;
        failed += client_failed;
    }
    let elapsed = started.elapsed();
    let run_errors = connect_errors().await - burst_errors;
    // Counted from the start of the run, before the first failure: an upper bound.
    let windows = backoff_expiries().take_while(|t| *t <= elapsed).count();
    eprintln!(
        "dead endpoint under {HERD_CLIENTS} clients: {sent} requests in {elapsed:?}, {failed} \
         failed; connect errors {burst_errors} in the first burst, then {run_errors} over \
         {windows} backoff windows"
    );
    assert_eq!(failed, 0, "client requests failed");
    assert!(burst_errors >= 1.0, "the dead endpoint was never tried");
    assert!(
        run_errors <= (windows + 1) as f64,
        "{run_errors} connect errors after the first burst over {windows} backoff windows"
    );
}

/// An endpoint that comes back from connect backoff but is slow to answer is back in rotation
/// as soon as a connection to it opens: round robin gives it its share of the requests while
/// its first answer is still awaited. Before, it stayed out until its first response came, and
/// got one request per probe window (the 1 s connect timeout) meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_back_from_backoff_rejoins_once_connected() {
    let live = http_backend("rejoin-live");
    // Bound but not listening: refused now, served later on the same port.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let back = socket.local_addr().unwrap();
    let proxy = Proxy::start(&yaml(
        "lb-rejoin",
        "{ policy: round_robin }",
        &[live.addr, back],
    ))
    .await;
    let base = format!("http://{}", proxy.upstream("lb-rejoin"));
    for _ in 0..4 {
        let reply = get(Version::HTTP_11, &format!("{base}/")).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    }
    let listener = socket.listen(1024).unwrap().into_std().unwrap();
    let returning = support::http_backend_on("rejoin-back", listener);
    // Past the first backoffs (250 ms, 500 ms).
    tokio::time::sleep(Duration::from_millis(800)).await;

    // Twenty requests over 1 s, each answered 1.5 s after it came.
    let requests: Vec<_> = (0..20)
        .map(|i| {
            let url = format!("{base}/slow/1500");
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50 * i)).await;
                get(Version::HTTP_11, &url).await.unwrap().status
            })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), StatusCode::OK);
    }
    let served = returning.requests();
    eprintln!("the returning endpoint served {served} of 20");
    assert!(
        (6..=14).contains(&served),
        "{served} of 20 went to the endpoint back from backoff (round robin: about 10)"
    );
}

#[tokio::test]
async fn all_endpoints_dead_is_502_connect_failed() {
    // Both bound at once so they get distinct ports, then closed.
    let listeners: Vec<_> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let dead: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    drop(listeners);
    let proxy = Proxy::start(&yaml("lb-all-dead", "{ policy: round_robin }", &dead)).await;
    let url = format!("http://{}/", proxy.upstream("lb-all-dead"));
    for _ in 0..3 {
        let started = Instant::now();
        let reply = get(Version::HTTP_11, &url).await.unwrap();
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
        assert_eq!(reply.headers["x-remora-error"], "connect_failed");
        assert!(reply.body.starts_with("remora:"), "{:?}", reply.body);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
