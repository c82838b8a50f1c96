//! HTTP/2 upstream connections: the pool scales with the peer's stream limit and queues
//! (bounded) past its connection limit; streams a GOAWAY or `REFUSED_STREAM` left unprocessed
//! are resent transparently (no `retries:`, no retry counted); connections rotate by age and
//! request count; PING keepalive finds a silent peer; every in-flight gauge returns to zero
//! after every kind of ending. Against our own origins (h2 crate, frame by frame) here;
//! against nginx, HAProxy and grpcio in `third_party_upstreams.rs`.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};

use support::config::TestConfig;
use support::in_flight::assert_nothing_in_flight;
use support::raw_h2::{Goaway, Later, goaway_origin, settings_origin};
use support::{Proxy, Server, eventually, get, h2_origin, prom, send, serve, serve_counted};

async fn resends(proxy: &Proxy, upstream: &str, reason: &str) -> f64 {
    let labels = [("upstream", upstream), ("reason", reason)];
    proxy.metric("remora_upstream_resends_total", &labels).await
}

async fn retries(proxy: &Proxy, upstream: &str) -> f64 {
    let text = prom::scrape(&proxy.admin_url("/metrics")).await;
    prom::sum(&text, "remora_retries_total", &[("upstream", upstream)])
}

/// Sends `count` GETs to `url` at once over h2c; each must be answered 200.
async fn all_ok(url: &str, count: usize) {
    let replies = futures_util::future::join_all(
        (0..count).map(|_| async { get(Version::HTTP_2, url).await.unwrap().status }),
    )
    .await;
    assert!(replies.iter().all(|s| *s == StatusCode::OK), "{replies:?}");
}

/// A GOAWAY leaves the streams above its `last_stream_id` unprocessed: they are sent again on
/// a new connection, with no `retries:` configured and no retry counted, while the stream at
/// `last_stream_id` completes on the old one, which then leaves the pool and is closed. With
/// an error code too.
#[tokio::test]
async fn streams_above_a_goaway_are_resent_on_a_new_connection() {
    for (name, code) in [("goaway-graceful", 0), ("goaway-error", 2)] {
        let goaway = Goaway {
            streams: 2,
            first_processed: true,
            code,
        };
        let (origin, seen) = goaway_origin(goaway, Later::Answer);
        // One connection at a time, so both requests share the first.
        let pool = "{ max_connections_per_endpoint: 1 }";
        let config = TestConfig::one_upstream(name, "http2", [origin.addr]);
        let proxy = Proxy::start(&config.with("connection_pool", pool).yaml()).await;
        let url = format!("http://{}/", proxy.upstream(name));
        let (first, second) = tokio::join!(get(Version::HTTP_2, &url), get(Version::HTTP_2, &url));
        assert_eq!(first.unwrap().status, StatusCode::OK, "{name}");
        assert_eq!(second.unwrap().status, StatusCode::OK, "{name}");
        assert_eq!(seen.connections.load(Ordering::SeqCst), 2, "{name}");
        assert_eq!(seen.answered.load(Ordering::SeqCst), 2, "{name}");
        assert_eq!(resends(&proxy, name, "goaway").await, 1.0, "{name}");
        assert_eq!(retries(&proxy, name).await, 0.0, "{name}");
        assert_nothing_in_flight(&proxy, name, name).await;
        // The old connection is out of the pool's count at once, and closed by remora.
        let labels = [("upstream", name)];
        let pooled = proxy
            .sample("remora_upstream_pool_connections", &labels)
            .await;
        assert_eq!(pooled, Some(1.0), "{name}: connections in the pool");
        let closed = || async { seen.closed.load(Ordering::SeqCst) > 0 };
        eventually(Duration::from_secs(2), "the old connection closes", closed).await;
    }
}

/// A graceful GOAWAY that left a request unprocessed is no failure of anyone: the request is
/// resent, and neither outlier detection nor the circuit breaker counts it. One with an error
/// code is a failure of its endpoint for outlier detection — also when the resent request then
/// fails too (two failures in a row) — but still not of the breaker, which sees the request's
/// own outcome.
#[tokio::test]
async fn a_goaway_with_an_error_code_is_a_failure_of_its_endpoint() {
    // (GOAWAY error code, the resend's fate, outlier detection's threshold, status, ejections)
    let cases = [
        (0, Later::Answer, 1, StatusCode::OK, 0.0),
        (2, Later::Answer, 1, StatusCode::OK, 1.0),
        (0, Later::Reset, 2, StatusCode::BAD_GATEWAY, 0.0),
        (2, Later::Reset, 2, StatusCode::BAD_GATEWAY, 1.0),
    ];
    for (number, (code, later, threshold, status, ejections)) in cases.into_iter().enumerate() {
        // The metrics are the process's: an upstream name of its own for each case.
        let name = format!("goaway-outcome-{number}");
        let case = format!("code {code}, threshold {threshold}");
        // Two endpoints, so that one may be ejected; the request resends on the one it met.
        let goaway = Goaway {
            streams: 1,
            first_processed: false,
            code,
        };
        let (a, _) = goaway_origin(goaway, later);
        let (b, _) = goaway_origin(goaway, later);
        let breaker = if status == StatusCode::OK {
            "{ consecutive_failures: 1 }"
        } else {
            "{ consecutive_failures: 2 }"
        };
        let config = TestConfig::one_upstream(&name, "http2", [a.addr, b.addr])
            .with(
                "outlier_detection",
                format!("{{ consecutive_failures: {threshold} }}"),
            )
            .with("circuit_breaker", breaker);
        let proxy = Proxy::start(&config.yaml()).await;
        let url = format!("http://{}/", proxy.upstream(&name));
        let reply = get(Version::HTTP_2, &url).await.unwrap();
        assert_eq!(reply.status, status, "{case}: {reply:?}");
        assert_eq!(resends(&proxy, &name, "goaway").await, 1.0, "{case}");
        let text = prom::scrape(&proxy.admin_url("/metrics")).await;
        let upstream = [("upstream", name.as_str())];
        let ejected = prom::sum(&text, "remora_outlier_ejections_total", &upstream);
        assert_eq!(ejected, ejections, "{case}: ejections");
        let transitions = prom::sum(&text, "remora_circuit_breaker_transitions_total", &upstream);
        assert_eq!(transitions, 0.0, "{case}: the breaker changed state");
        assert_nothing_in_flight(&proxy, &name, &case).await;
    }
}

/// One GOAWAY with an error code is one failure of its endpoint, however many streams it cut
/// off: three requests above it, each then reset on the new connection, make 1 + 3 failures
/// in a row — short of outlier detection's 5 (counted per stream it would be 6, an
/// ejection). With one connection allowed, the resends share the new connection at once
/// rather than wait for it to be confirmed.
#[tokio::test]
async fn a_goaway_is_one_failure_however_many_streams_it_cuts_off() {
    let goaway = Goaway {
        streams: 3,
        first_processed: false,
        code: 2,
    };
    let (a, _) = goaway_origin(goaway, Later::Reset);
    let (b, _) = goaway_origin(goaway, Later::Reset);
    // The same hash key sends all three to one endpoint; the other lets it be ejected.
    let config = TestConfig::one_upstream("goaway-once", "http2", [a.addr, b.addr])
        .with(
            "load_balancing",
            "{ policy: ring_hash, hash_on: \"header:x-user\" }",
        )
        .with("outlier_detection", "{ consecutive_failures: 5 }")
        .with("connection_pool", "{ max_connections_per_endpoint: 1 }");
    let proxy = Proxy::start(&config.yaml()).await;
    let url = format!("http://{}/", proxy.upstream("goaway-once"));
    let call = || async {
        let request = Request::get(&url)
            .header("x-user", "one")
            .body(Full::new(Bytes::new()))
            .unwrap();
        send(Version::HTTP_2, request).await.unwrap()
    };
    let started = Instant::now();
    let replies = futures_util::future::join_all((0..3).map(|_| call())).await;
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{reply:?}");
        assert_ne!(reply.headers["x-remora-error"], "overloaded", "{reply:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(resends(&proxy, "goaway-once", "goaway").await, 3.0);
    let text = prom::scrape(&proxy.admin_url("/metrics")).await;
    let upstream = [("upstream", "goaway-once")];
    let ejected = prom::sum(&text, "remora_outlier_ejections_total", &upstream);
    assert_eq!(ejected, 0.0, "the GOAWAY was counted per stream");
    assert_nothing_in_flight(&proxy, "goaway-once", "the GOAWAY").await;
}

/// A connection that received GOAWAY takes no new stream, even while a stream below the
/// GOAWAY still runs on it: the next request goes to a new connection at once, with nothing
/// resent.
#[tokio::test]
async fn a_connection_that_received_goaway_takes_no_new_request() {
    let connections = Arc::new(AtomicUsize::new(0));
    let origin = serve({
        let connections = Arc::clone(&connections);
        move |stream| {
            let first = connections.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                let Ok(mut connection) = h2::server::handshake(stream).await else {
                    return;
                };
                while let Some(Ok((_request, respond))) = connection.accept().await {
                    if !first {
                        support::h2_origin::answer(respond, 200);
                        continue;
                    }
                    // The first connection's one stream runs on after its GOAWAY.
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(800)).await;
                        support::h2_origin::answer(respond, 200);
                    });
                    connection.graceful_shutdown();
                }
            }
        }
    });
    let config = TestConfig::one_upstream("retiring", "http2", [origin.addr]);
    let proxy = Proxy::start(&config.yaml()).await;
    let url = format!("http://{}/", proxy.upstream("retiring"));
    let slow = tokio::spawn({
        let url = url.clone();
        async move { get(Version::HTTP_2, &url).await.unwrap().status }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let reply = get(Version::HTTP_2, &url).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(slow.await.unwrap(), StatusCode::OK);
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    for reason in ["not_written", "goaway"] {
        assert_eq!(resends(&proxy, "retiring", reason).await, 0.0, "{reason}");
    }
    assert_nothing_in_flight(&proxy, "retiring", "the GOAWAY").await;
}

/// A stream refused with `REFUSED_STREAM` is sent again — its body replayed — with no
/// `retries:` configured.
#[tokio::test]
async fn a_refused_stream_is_resent_with_its_body() {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let origin = h2_origin({
        let bodies = Arc::clone(&bodies);
        move |number, request, mut respond| {
            let bodies = Arc::clone(&bodies);
            async move {
                if number == 0 {
                    respond.send_reset(h2::Reason::REFUSED_STREAM);
                    return;
                }
                let read = support::h2_origin::read_body(request).await;
                bodies
                    .lock()
                    .unwrap()
                    .push(String::from_utf8(read).unwrap());
                support::h2_origin::answer(respond, 200);
            }
        }
    });
    let proxy =
        Proxy::start(&TestConfig::one_upstream("refused", "http2", [origin.addr]).yaml()).await;
    let url = format!("http://{}/", proxy.upstream("refused"));
    let request = Request::post(&url)
        .body(Full::new(Bytes::from_static(b"hello, twice")))
        .unwrap();
    let reply = send(Version::HTTP_2, request).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(*bodies.lock().unwrap(), ["hello, twice"]);
    assert_eq!(resends(&proxy, "refused", "refused_stream").await, 1.0);
    assert_eq!(retries(&proxy, "refused").await, 0.0);
}

/// An h2 origin announcing `max_streams` per connection (`None`: announcing no limit) that
/// answers after `delay`; records connections and the most streams open at once on one
/// connection.
fn limited_origin(
    max_streams: Option<u32>,
    delay: Duration,
) -> (Server, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    serve_counted(move |stream, busiest| async move {
        let mut builder = h2::server::Builder::new();
        if let Some(max_streams) = max_streams {
            builder.max_concurrent_streams(max_streams);
        }
        let Ok(mut connection) = builder.handshake::<_, Bytes>(stream).await else {
            return;
        };
        let open = Arc::new(AtomicUsize::new(0));
        while let Some(Ok((_request, respond))) = connection.accept().await {
            let (open, busiest) = (Arc::clone(&open), Arc::clone(&busiest));
            let now = open.fetch_add(1, Ordering::SeqCst) + 1;
            busiest.fetch_max(now, Ordering::SeqCst);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                open.fetch_sub(1, Ordering::SeqCst);
                support::h2_origin::answer(respond, 200);
            });
        }
    })
}

/// Past the peer's SETTINGS_MAX_CONCURRENT_STREAMS the pool opens more connections, up to
/// `max_connections_per_endpoint`; beyond that, requests wait for a stream and all succeed.
#[tokio::test]
async fn streams_beyond_the_peer_limit_open_connections_then_wait() {
    let (origin, connections, busiest) = limited_origin(Some(4), Duration::from_millis(100));
    let pool = "{ max_connections_per_endpoint: 3 }";
    let config = TestConfig::one_upstream("limited", "http2", [origin.addr]);
    let proxy = Proxy::start(&config.with("connection_pool", pool).yaml()).await;
    // Learn the peer's limit first (SETTINGS arrive after the first connection opens).
    let url = format!("http://{}/", proxy.upstream("limited"));
    assert_eq!(
        get(Version::HTTP_2, &url).await.unwrap().status,
        StatusCode::OK
    );
    let started = Instant::now();
    let replies = futures_util::future::join_all(
        (0..48).map(|_| async { get(Version::HTTP_2, &url).await.unwrap().status }),
    )
    .await;
    let elapsed = started.elapsed();
    assert!(replies.iter().all(|s| *s == StatusCode::OK), "{replies:?}");
    assert_eq!(connections.load(Ordering::SeqCst), 3, "connections opened");
    assert!(
        busiest.load(Ordering::SeqCst) <= 4,
        "streams on one connection"
    );
    // 48 requests over 3 × 4 streams of 100 ms each: 4 waves at least.
    assert!(elapsed >= Duration::from_millis(390), "{elapsed:?}");
    assert_eq!(resends(&proxy, "limited", "refused_stream").await, 0.0);
    assert_nothing_in_flight(&proxy, "limited", "the waves").await;
}

/// A peer whose SETTINGS announce no stream limit (h2 reads that as unlimited) is held to 100
/// streams a connection, RFC 9113 §6.5.2's least: the 101st opens a second connection.
#[tokio::test]
async fn a_peer_announcing_no_stream_limit_gets_100_streams_a_connection() {
    let (origin, connections, busiest) = limited_origin(None, Duration::from_millis(500));
    let config = TestConfig::one_upstream("unlimited", "http2", [origin.addr]);
    let proxy = Proxy::start(&config.yaml()).await;
    let url = format!("http://{}/", proxy.upstream("unlimited"));
    // Confirms the first connection: its SETTINGS (with no limit) have been read.
    all_ok(&url, 1).await;
    all_ok(&url, 150).await;
    assert_eq!(connections.load(Ordering::SeqCst), 2, "connections opened");
    assert_eq!(
        busiest.load(Ordering::SeqCst),
        100,
        "streams on one connection"
    );
    assert_nothing_in_flight(&proxy, "unlimited", "150 requests").await;
}

/// A peer that changes `SETTINGS_MAX_CONCURRENT_STREAMS` mid-connection is held to the new
/// limit from then on: raised, the connection takes more streams at once (no second
/// connection); lowered, a second connection opens for what no longer fits.
#[tokio::test]
async fn a_stream_limit_changed_mid_connection_is_honoured() {
    // (first limit, changed limit, connections opened, most streams at once after the change)
    for (first, then, connections_opened, most) in [(1, 4, 1, 4), (4, 1, 2, 1)] {
        let case = format!("{first} then {then}");
        let name = format!("changing-{first}-{then}");
        let delay = Duration::from_millis(300);
        let (origin, connections, busiest) = settings_origin(first, then, delay);
        let config = TestConfig::one_upstream(&name, "http2", [origin.addr])
            .with("connection_pool", "{ max_connections_per_endpoint: 2 }");
        let proxy = Proxy::start(&config.yaml()).await;
        let url = format!("http://{}/", proxy.upstream(&name));
        // The first answer comes after the SETTINGS that change the limit.
        let first_reply = get(Version::HTTP_2, &url).await.unwrap();
        assert_eq!(first_reply.status, StatusCode::OK, "{case}");
        let started = Instant::now();
        let replies = futures_util::future::join_all(
            (0..most.max(2)).map(|_| async { get(Version::HTTP_2, &url).await.unwrap().status }),
        )
        .await;
        let elapsed = started.elapsed();
        assert!(
            replies.iter().all(|s| *s == StatusCode::OK),
            "{case}: {replies:?}"
        );
        assert_eq!(
            connections.load(Ordering::SeqCst),
            connections_opened,
            "{case}: connections"
        );
        assert_eq!(
            busiest.load(Ordering::SeqCst),
            most,
            "{case}: streams at once"
        );
        // All at once: one wait of 300 ms, not one after another.
        assert!(elapsed < Duration::from_millis(550), "{case}: {elapsed:?}");
        assert_nothing_in_flight(&proxy, &name, &case).await;
    }
}

/// Pooled HTTP/2 connections left idle close after `timeouts.idle` (looked for every second),
/// the extra ones opened for a burst included; the next request opens a new one.
#[tokio::test]
async fn idle_connections_close_after_the_idle_timeout() {
    let (origin, connections, _) = limited_origin(Some(1), Duration::from_millis(200));
    let config = TestConfig::one_upstream("idle-pool", "http2", [origin.addr])
        .with("timeouts", "{ idle: 1s }")
        .with("connection_pool", "{ max_connections_per_endpoint: 3 }");
    let proxy = Proxy::start(&config.yaml()).await;
    let url = format!("http://{}/", proxy.upstream("idle-pool"));
    // Learn the peer's limit of one stream, then a burst of three opens three connections.
    all_ok(&url, 1).await;
    all_ok(&url, 3).await;
    let idle_since = Instant::now();
    assert_eq!(connections.load(Ordering::SeqCst), 3);
    let labels = [("upstream", "idle-pool")];
    let pooled = || async {
        let pooled = proxy.sample("remora_upstream_pool_connections", &labels);
        pooled.await.unwrap()
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(pooled().await, 3.0, "closed before the idle timeout");
    while pooled().await > 0.0 {
        assert!(idle_since.elapsed() < Duration::from_secs(4), "still open");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let closed_after = idle_since.elapsed();
    assert!(
        closed_after >= Duration::from_millis(950),
        "{closed_after:?}"
    );
    assert_eq!(
        get(Version::HTTP_2, &url).await.unwrap().status,
        StatusCode::OK
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        4,
        "a new connection after the close"
    );
}

/// A request that finds every connection full waits at most `pending_timeout`, with at most
/// `max_pending_requests` others; past either bound it gets 503 `overloaded`.
#[tokio::test]
async fn a_full_pool_queues_within_bounds_then_answers_overloaded() {
    let (origin, _, _) = limited_origin(Some(1), Duration::from_millis(1000));
    let pool = "{ max_connections_per_endpoint: 1, max_pending_requests: 2, \
                pending_timeout: 300ms }";
    let config = TestConfig::one_upstream("queue", "http2", [origin.addr]);
    let proxy = Proxy::start(&config.with("connection_pool", pool).yaml()).await;
    let url = format!("http://{}/", proxy.upstream("queue"));
    assert_eq!(
        get(Version::HTTP_2, &url).await.unwrap().status,
        StatusCode::OK
    );
    let started = Instant::now();
    let replies = futures_util::future::join_all((0..5).map(|_| async {
        let reply = get(Version::HTTP_2, &url).await.unwrap();
        let error = reply.headers.get("x-remora-error").cloned();
        (reply.status, error, started.elapsed())
    }))
    .await;
    let ok = replies.iter().filter(|r| r.0 == StatusCode::OK).count();
    let overloaded: Vec<_> = replies
        .iter()
        .filter(|r| r.0 == StatusCode::SERVICE_UNAVAILABLE && r.1.as_ref().unwrap() == "overloaded")
        .collect();
    assert_eq!((ok, overloaded.len()), (1, 4), "{replies:?}");
    // Two were turned away at once, two after waiting 300 ms.
    let quick = overloaded
        .iter()
        .filter(|r| r.2 < Duration::from_millis(250))
        .count();
    let waited = (overloaded.iter())
        .filter(|r| r.2 >= Duration::from_millis(290) && r.2 < Duration::from_millis(900))
        .count();
    assert_eq!((quick, waited), (2, 2), "{replies:?}");
    assert_nothing_in_flight(&proxy, "queue", "overload").await;
}

/// A client that goes away while its request waits in the pool's queue leaves nothing
/// counted: the queue's gauge falls back at once, and everything else once the request ahead
/// of it ends.
#[tokio::test]
async fn a_client_gone_while_queued_leaves_nothing_counted() {
    let (origin, _, _) = limited_origin(Some(1), Duration::from_millis(800));
    let pool = "{ max_connections_per_endpoint: 1, pending_timeout: 10s }";
    let config = TestConfig::one_upstream("queue-gone", "http2", [origin.addr])
        .with("connection_pool", pool)
        .with("max_concurrent_requests", 10);
    let proxy = Proxy::start(&config.yaml()).await;
    let url = format!("http://{}/", proxy.upstream("queue-gone"));
    all_ok(&url, 1).await;
    let ahead = tokio::spawn({
        let url = url.clone();
        async move { get(Version::HTTP_2, &url).await.unwrap().status }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let queued = tokio::spawn({
        let url = url.clone();
        async move { get(Version::HTTP_2, &url).await }
    });
    let labels = [("upstream", "queue-gone")];
    let pending = || async {
        let pending = proxy.sample("remora_upstream_pool_pending_requests", &labels);
        pending.await.unwrap()
    };
    eventually(Duration::from_secs(2), "a request queued", || async {
        pending().await == 1.0
    })
    .await;
    queued.abort();
    eventually(Duration::from_millis(500), "the queue emptied", || async {
        pending().await == 0.0
    })
    .await;
    assert_eq!(ahead.await.unwrap(), StatusCode::OK);
    assert_nothing_in_flight(&proxy, "queue-gone", "a client gone while queued").await;
}

/// `max_requests_per_connection` and `max_connection_age` retire connections: new requests go
/// to a new one.
#[tokio::test]
async fn connections_rotate_by_request_count_and_age() {
    for (name, pool, requests, pause, expected) in [
        (
            "rotate-count",
            "max_requests_per_connection: 5",
            20,
            0,
            4..=4,
        ),
        ("rotate-age", "max_connection_age: 150ms", 10, 50, 3..=5),
    ] {
        let (origin, connections, _) = limited_origin(Some(100), Duration::ZERO);
        let config = TestConfig::one_upstream(name, "http2", [origin.addr])
            .with("connection_pool", format!("{{ {pool} }}"));
        let proxy = Proxy::start(&config.yaml()).await;
        let url = format!("http://{}/", proxy.upstream(name));
        for _ in 0..requests {
            assert_eq!(
                get(Version::HTTP_2, &url).await.unwrap().status,
                StatusCode::OK
            );
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        let opened = connections.load(Ordering::SeqCst);
        assert!(expected.contains(&opened), "{name}: {opened} connections");
    }
}

/// A peer that stops answering (no PING ACK) is found out by the keepalive PING: the request
/// fails at about interval + timeout, not at `timeouts.idle`.
#[tokio::test]
async fn keepalive_pings_find_a_silent_peer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let silent = serve(|mut stream| async move {
        let mut preface = [0; 24];
        if stream.read_exact(&mut preface).await.is_ok() {
            // An empty SETTINGS frame, then silence with the connection open.
            let _ = stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
    });
    let config = TestConfig::one_upstream("silent", "http2", [silent.addr])
        .with("timeouts", "{ idle: 30s }")
        .with(
            "connection_pool",
            "{ keepalive_interval: 200ms, keepalive_timeout: 200ms }",
        );
    let proxy = Proxy::start(&config.yaml()).await;
    let url = format!("http://{}/", proxy.upstream("silent"));
    let started = Instant::now();
    let reply = get(Version::HTTP_2, &url).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{reply:?}");
    assert!(
        elapsed >= Duration::from_millis(350) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    // The operator learns why, not just that the connection broke.
    assert!(
        reply.body.contains(
            "keepalive PING went unanswered for 200ms (connection_pool.keepalive_timeout)"
        ),
        "{}",
        reply.body
    );
    assert_nothing_in_flight(&proxy, "silent", "keepalive").await;
}

/// `GET <base>/endless` with its first body frame read; the rest is the caller's.
async fn start_endless(base: &str) -> hyper::body::Incoming {
    let client = support::http_client::<http_body_util::Empty<Bytes>>(Version::HTTP_2);
    let request = Request::get(format!("{base}/endless"))
        .body(http_body_util::Empty::new())
        .unwrap();
    let mut body = client.request(request).await.unwrap().into_body();
    body.frame().await.unwrap().unwrap();
    body
}

/// Every in-flight count returns to zero after each kind of ending: success, reset, timeout,
/// client gone mid-body, upstream gone mid-body (GOAWAY is covered above).
#[tokio::test]
async fn in_flight_counts_return_to_zero_after_every_ending() {
    let origin = h2_origin(|_, request, mut respond| async move {
        match request.uri().path() {
            "/reset" => respond.send_reset(h2::Reason::INTERNAL_ERROR),
            "/slow" => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                support::h2_origin::answer(respond, 200);
            }
            "/endless" => {
                let response = http::Response::builder().status(200).body(()).unwrap();
                let Ok(mut body) = respond.send_response(response, false) else {
                    return;
                };
                while body.send_data(Bytes::from_static(b"tick\n"), false).is_ok() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            _ => support::h2_origin::answer(respond, 200),
        }
    });
    let config = TestConfig::one_upstream("endings", "http2", [origin.addr])
        .with("timeouts", "{ request: 300ms }")
        .with("max_concurrent_requests", 2);
    let proxy = Proxy::start(&config.yaml()).await;
    let base = format!("http://{}", proxy.upstream("endings"));
    let status = |path: &str| {
        let url = format!("{base}{path}");
        async move { get(Version::HTTP_2, &url).await.unwrap().status }
    };
    assert_eq!(status("/").await, StatusCode::OK);
    // The concurrency limit's, the endpoint's and the queue's gauges are on /metrics, so the
    // checks below do read them.
    let text = prom::scrape(&proxy.admin_url("/metrics")).await;
    let labels = [("direction", "outbound"), ("upstream", "endings")];
    assert!(prom::value(&text, "remora_concurrency_in_flight", &labels).is_some());
    let endpoint = origin.addr.to_string();
    let labels = [("upstream", "endings"), ("endpoint", endpoint.as_str())];
    assert!(prom::value(&text, "remora_endpoint_in_flight", &labels).is_some());
    let labels = [("upstream", "endings")];
    assert!(prom::value(&text, "remora_upstream_pool_pending_requests", &labels).is_some());
    assert_nothing_in_flight(&proxy, "endings", "success").await;
    assert_eq!(status("/reset").await, StatusCode::BAD_GATEWAY);
    assert_nothing_in_flight(&proxy, "endings", "reset").await;
    assert_eq!(status("/slow").await, StatusCode::GATEWAY_TIMEOUT);
    assert_nothing_in_flight(&proxy, "endings", "timeout").await;

    // The client reads a little of an endless body, then goes away.
    let body = start_endless(&base).await;
    drop(body);
    assert_nothing_in_flight(&proxy, "endings", "client gone").await;

    // The upstream goes away while a body streams (timeouts.request does not cut a body).
    let mut body = start_endless(&base).await;
    drop(origin);
    while let Some(Ok(_)) = body.frame().await {}
    assert_nothing_in_flight(&proxy, "endings", "upstream gone").await;

    // The concurrency limit (2) gave every slot back: two at once are not refused by it (the
    // stopped upstream refuses them instead).
    let url = format!("{base}/");
    let (a, b) = tokio::join!(get(Version::HTTP_2, &url), get(Version::HTTP_2, &url));
    for reply in [a.unwrap(), b.unwrap()] {
        assert_ne!(reply.headers["x-remora-error"], "overloaded", "{reply:?}");
    }
}

/// A response head and trailers of 20 KB (a gRPC server's `grpc-status-details-bin`, large
/// trailing metadata) reach the client whole. remora's HTTP/2 client took at most 16 KiB of
/// header list: a larger head failed as `upstream_reset`, and larger trailers were cut short
/// without a word (`h2` stops decoding trailers past the limit and hands on what it has).
#[tokio::test]
async fn large_response_heads_and_trailers_reach_the_client_whole() {
    let big = "x".repeat(20_000);
    let origin = {
        let big = big.clone();
        h2_origin(move |_, _request, mut respond| {
            let big = big.clone();
            async move {
                let response = http::Response::builder()
                    .header("x-big-head", &big)
                    .body(())
                    .unwrap();
                let mut body = respond.send_response(response, false).unwrap();
                body.send_data(Bytes::from_static(b"body"), false).unwrap();
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", "0".parse().unwrap());
                trailers.insert("x-big-trailer", big.parse().unwrap());
                body.send_trailers(trailers).unwrap();
            }
        })
    };
    let proxy =
        Proxy::start(&TestConfig::one_upstream("big-heads", "http2", [origin.addr]).yaml()).await;

    let stream = tokio::net::TcpStream::connect(proxy.upstream("big-heads"))
        .await
        .unwrap();
    let (client, connection) = h2::client::Builder::new()
        .max_header_list_size(1 << 20)
        .handshake::<_, Bytes>(stream)
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = Request::get("http://big-heads/").body(()).unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-big-head"].len(), big.len());
    let mut body = response.into_body();
    while let Some(data) = body.data().await {
        let data = data.unwrap();
        let _ = body.flow_control().release_capacity(data.len());
    }
    let trailers = body.trailers().await.unwrap().expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(
        trailers.get("x-big-trailer").map(|value| value.len()),
        Some(big.len()),
        "{trailers:?}"
    );
}
