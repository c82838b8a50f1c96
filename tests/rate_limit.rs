//! Rate limiting through a real proxy: offered ten times the configured rate for 2 s, remora
//! admits rate × 2 s + burst (±5 %) and answers the rest 429 `rate_limited` with `retry-after`
//! at once, without the backend seeing them (gRPC clients get `RESOURCE_EXHAUSTED`); keyed
//! limits give each key — a header's value, a client's IP address, a caller's mTLS identity,
//! a verified JWT claim (`claims_to_headers`) — its own bucket, and `overrides` a named key
//! its own rate.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use tokio::time::MissedTickBehavior;

use support::config::TestConfig;
use support::curl::curl;
use support::jwt::{Keys, good_claims, provider_yaml, spec, with};
use support::tls::{Ca, TlsFiles, spiffe};
use support::{Proxy, ProxyProcess, get, grpc_echo, grpc_unary, http_backend, http_client, prom};

fn yaml(name: &str, endpoint: SocketAddr, rate_limit: &str) -> String {
    TestConfig::one_upstream(name, "http", [endpoint])
        .with("rate_limit", rate_limit)
        .yaml()
}

/// What one client saw: admitted, refused, and when its last request was sent.
#[derive(Default)]
struct Tally {
    ok: u32,
    limited: u32,
}

/// Sends `GET url` every `every` until `window` has passed since `start`, on one keep-alive
/// connection; checks each 429 on the way.
async fn offer(url: String, start: Instant, window: Duration, every: Duration) -> Tally {
    let client = http_client::<Empty<Bytes>>(Version::HTTP_11);
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut tally = Tally::default();
    // Bounded: at most twice the requests the window holds at this pace.
    let most = 2 * (window.as_millis() / every.as_millis()) as u32;
    for _ in 0..most {
        ticks.tick().await;
        if start.elapsed() >= window {
            break;
        }
        let request = Request::get(url.as_str()).body(Empty::new()).unwrap();
        let response = client.request(request).await.expect("proxy answers");
        match response.status() {
            StatusCode::OK => tally.ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(response.headers()["x-remora-error"], "rate_limited");
                let retry_after: u64 = response.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert_eq!(retry_after, 1, "one token takes 20 ms: retry after 1 s");
                tally.limited += 1;
            }
            other => panic!("unexpected status {other}"),
        }
        response.into_body().collect().await.expect("body");
    }
    tally
}

/// The accuracy requirement, end to end: 50/s with a burst of 10, offered about
/// 500 requests a second by five clients for 2 s, admits 110 ± 5 %.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_times_the_rate_for_two_seconds_admits_rate_times_two_plus_burst() {
    let backend = http_backend("limited");
    let proxy = Proxy::start(&yaml(
        "rl-accuracy",
        backend.addr,
        "{ requests_per_second: 50, burst: 10 }",
    ))
    .await;
    let url = format!("http://{}/", proxy.upstream("rl-accuracy"));
    let window = Duration::from_secs(2);
    let start = Instant::now();
    let clients: Vec<_> = (0..5)
        .map(|_| tokio::spawn(offer(url.clone(), start, window, Duration::from_millis(10))))
        .collect();
    let (mut ok, mut limited) = (0, 0);
    for client in clients {
        let tally = client.await.unwrap();
        ok += tally.ok;
        limited += tally.limited;
    }
    let offered = ok + limited;
    eprintln!("rate limit accuracy: offered {offered} in 2 s, admitted {ok} (expected 110)");
    assert!(
        offered >= 700,
        "only {offered} requests offered: not 10× the rate"
    );
    assert!(
        (104..=116).contains(&ok),
        "admitted {ok} of {offered}; expected 110 ± 5 %"
    );
    assert_eq!(backend.requests(), u64::from(ok));

    prom::assert_value_within(
        &proxy.admin_url("/metrics"),
        "remora_rate_limited_total",
        &[("direction", "outbound"), ("upstream", "rl-accuracy")],
        f64::from(limited),
        Duration::from_secs(2),
    )
    .await;
}

/// Inbound, keyed by a header: each tenant gets its own burst; requests without the
/// header share one bucket.
#[tokio::test]
async fn inbound_limit_keyed_by_header_gives_each_value_its_own_bucket() {
    let app = http_backend("app");
    let yaml = format!(
        "service: {{ name: rl-inbound-app, port: {}, protocol: http }}\n\
         inbound:\n  listen: 127.0.0.1:0\n  \
         rate_limit: {{ requests_per_second: 0.01, burst: 2, key: \"header:x-tenant\" }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         logging: {{ access_log: false }}\n",
        app.addr.port()
    );
    let proxy = Proxy::start(&yaml).await;
    let url = format!("http://{}/", proxy.inbound());
    let client = http_client::<Empty<Bytes>>(Version::HTTP_11);
    let status = |tenant: Option<&'static str>| {
        let mut request = Request::get(url.as_str());
        if let Some(tenant) = tenant {
            request = request.header("x-tenant", tenant);
        }
        let response = client.request(request.body(Empty::new()).unwrap());
        async move { response.await.unwrap().status() }
    };
    for tenant in [Some("a"), Some("b"), None] {
        assert_eq!(status(tenant).await, StatusCode::OK, "{tenant:?} 1st");
        assert_eq!(status(tenant).await, StatusCode::OK, "{tenant:?} 2nd");
        assert_eq!(
            status(tenant).await,
            StatusCode::TOO_MANY_REQUESTS,
            "{tenant:?} 3rd"
        );
    }
    assert_eq!(app.requests(), 6);

    let metrics = prom::scrape(&proxy.admin_url("/metrics")).await;
    let counted = prom::value(
        &metrics,
        "remora_rate_limited_total",
        &[("direction", "inbound"), ("upstream", "rl-inbound-app")],
    );
    assert_eq!(counted, Some(3.0));
}

/// A 429 is the proxy's own answer: the access metrics count it under its code and kind.
#[tokio::test]
async fn a_refused_request_is_counted_as_a_429_rate_limited() {
    let backend = http_backend("counted");
    let proxy = Proxy::start(&yaml(
        "rl-counted",
        backend.addr,
        "{ requests_per_second: 0.01, burst: 1 }",
    ))
    .await;
    let url = format!("http://{}/", proxy.upstream("rl-counted"));
    assert_eq!(
        get(Version::HTTP_11, &url).await.unwrap().status,
        StatusCode::OK
    );
    let refused = get(Version::HTTP_11, &url).await.unwrap();
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        refused.body.starts_with("remora: rate limited"),
        "{refused:?}"
    );
    // 0.01/s: one token takes 100 s.
    assert_eq!(refused.headers["retry-after"], "100");
    assert_eq!(backend.requests(), 1);
    prom::assert_value_within(
        &proxy.admin_url("/metrics"),
        "remora_proxy_errors_total",
        &[("upstream", "rl-counted"), ("kind", "rate_limited")],
        1.0,
        Duration::from_secs(2),
    )
    .await;
}

#[tokio::test]
async fn a_grpc_client_gets_resource_exhausted() {
    let server = grpc_echo();
    let yaml = yaml(
        "rl-grpc",
        server.addr,
        "{ requests_per_second: 0.01, burst: 1 }",
    )
    .replace("protocol: http", "protocol: grpc");
    let proxy = Proxy::start(&yaml).await;
    let addr = proxy.upstream("rl-grpc");
    let (text, _) = grpc_unary(addr, "first")
        .await
        .expect("the burst admits one");
    assert_eq!(text, "first");
    let status = grpc_unary(addr, "second").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.metadata().get("x-remora-error").unwrap(),
        "rate_limited"
    );
}

/// `GET /` to `proxy` on a new connection from `source` (any loopback address: all of
/// 127.0.0.0/8 is local); returns the status.
async fn get_from(source: [u8; 4], proxy: SocketAddr) -> StatusCode {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    let stream = socket.connect(proxy).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::get("/")
        .header("host", proxy.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    response.into_body().collect().await.unwrap();
    status
}

/// `key: client_ip`: clients at 127.0.0.1 and 127.0.0.2 have a burst of two each, whatever
/// connection (source port) their requests come on.
#[tokio::test]
async fn client_ip_key_gives_each_client_address_its_own_bucket() {
    let backend = http_backend("per-ip");
    let proxy = Proxy::start(&yaml(
        "rl-client-ip",
        backend.addr,
        "{ requests_per_second: 0.01, burst: 2, key: client_ip }",
    ))
    .await;
    let addr = proxy.upstream("rl-client-ip");
    for source in [[127, 0, 0, 1], [127, 0, 0, 2]] {
        assert_eq!(
            get_from(source, addr).await,
            StatusCode::OK,
            "{source:?} 1st"
        );
        assert_eq!(
            get_from(source, addr).await,
            StatusCode::OK,
            "{source:?} 2nd"
        );
        assert_eq!(
            get_from(source, addr).await,
            StatusCode::TOO_MANY_REQUESTS,
            "{source:?} 3rd"
        );
    }
    assert_eq!(
        get_from([127, 0, 0, 1], addr).await,
        StatusCode::TOO_MANY_REQUESTS,
        "127.0.0.1 is still out of tokens"
    );
    assert_eq!(backend.requests(), 4);
}

/// The YAML of a sidecar (the `remora` binary) in front of `app` whose inbound listener has
/// `rate_limit` and the lines `extra` (indented two spaces), plus the top-level `tail`.
fn inbound_yaml(app: SocketAddr, rate_limit: &str, extra: &str, tail: &str) -> String {
    format!(
        "service: {{ name: rl-keyed, port: {} }}\nadmin: {{ listen: 127.0.0.1:0 }}\n\
         logging: {{ access_log: false }}\n\
         inbound:\n  listen: 127.0.0.1:0\n  rate_limit: {rate_limit}\n{extra}{tail}",
        app.port()
    )
}

/// Inbound requests refused by the rate limit, from `/metrics`.
async fn inbound_limited(proxy: &ProxyProcess) -> f64 {
    let text = prom::scrape(&format!("http://{}/metrics", proxy.admin)).await;
    prom::sum(
        &text,
        "remora_rate_limited_total",
        &[("direction", "inbound")],
    )
}

/// `key: identity`, through the binary: two callers present their client certificates (curl),
/// each has a bucket of its own, keyed by its SPIFFE ID — `web`'s override gives it a burst of
/// 4, `ops` has the default 2 — and their requests, interleaved, meet 429 at their own count.
#[tokio::test]
async fn identity_key_gives_each_mtls_caller_its_own_bucket_and_an_override_its_own_rate() {
    let ca = Ca::new("mesh CA");
    let app = http_backend("app");
    let api = TlsFiles::new(&ca.leaf("api", 1), &ca);
    let web = TlsFiles::new(&ca.leaf("web", 2), &ca);
    let ops = TlsFiles::new(&ca.leaf("ops", 3), &ca);
    let rate_limit = format!(
        "{{ requests_per_second: 0.01, burst: 2, key: identity, \
         overrides: [{{ value: \"{}\", requests_per_second: 0.01, burst: 4 }}] }}",
        spiffe("web")
    );
    let proxy = ProxyProcess::start(&inbound_yaml(app.addr, &rate_limit, "", &api.yaml("")), 1);
    let addr = proxy.listener("inbound");
    let (mut seen_web, mut seen_ops) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        for (caller, seen) in [(&web, &mut seen_web), (&ops, &mut seen_ops)] {
            let (status, error, _) = curl(addr, caller, "GET", "/", &[]).await;
            assert_eq!(status == 429, error == "rate_limited", "{status} {error}");
            seen.push(status);
        }
    }
    assert_eq!(seen_web, [200, 200, 200, 200, 429], "web");
    assert_eq!(seen_ops, [200, 200, 429, 429, 429], "ops");
    assert_eq!(app.requests(), 6);
    assert_eq!(inbound_limited(&proxy).await, 4.0);
}

/// A limit keyed by a verified JWT claim, through the binary: `claims_to_headers` puts `sub`
/// in `x-user`, which the rate limit keys on; `alice` has an override (burst 4), `bob` the
/// default (2). An `x-user` the client sends itself is replaced by the token's, so `bob`
/// cannot spend `alice`'s quota (nor she his).
#[tokio::test]
async fn a_jwt_claim_keys_the_limit_and_an_override_raises_one_caller() {
    let keys = Keys::new(&["rsa1"]);
    let jwks = keys.jwks_file(&["rsa1"]);
    let app = http_backend("app");
    let rate_limit = "{ requests_per_second: 0.01, burst: 2, key: \"header:x-user\", \
                      overrides: [{ value: alice, requests_per_second: 0.01, burst: 4 }] }";
    let jwt = format!(
        "  jwt:\n    required: true\n{}",
        provider_yaml("main", &jwks, "")
    );
    let proxy = ProxyProcess::start(&inbound_yaml(app.addr, rate_limit, &jwt, ""), 1);
    let url = format!("http://{}/", proxy.listener("inbound"));
    let tokens = keys.tokens(&[
        spec("rsa1", "RS256", good_claims()),
        spec(
            "rsa1",
            "RS256",
            with(good_claims(), serde_json::json!({ "sub": "bob" })),
        ),
    ]);
    let status = |token: &str, user: &str| {
        let bearer = format!("Bearer {token}");
        let (url, user) = (url.clone(), user.to_owned());
        async move {
            let headers = [
                ("authorization", bearer.as_str()),
                ("x-user", user.as_str()),
            ];
            let reply = support::client::call("GET", &url, &headers).await.unwrap();
            reply.status.as_u16()
        }
    };
    let (alice, bob) = (&tokens[0], &tokens[1]);
    let mut seen_bob = Vec::new();
    for _ in 0..3 {
        seen_bob.push(status(bob, "alice").await);
    }
    assert_eq!(
        seen_bob,
        [200, 200, 429],
        "bob, claiming to be alice in x-user"
    );
    let mut seen_alice = Vec::new();
    for _ in 0..5 {
        seen_alice.push(status(alice, "bob").await);
    }
    assert_eq!(seen_alice, [200, 200, 200, 200, 429], "alice");
    assert_eq!(app.requests(), 6);
    assert_eq!(inbound_limited(&proxy).await, 2.0);
}
