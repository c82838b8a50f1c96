//! L7 routing end to end, through real listeners to several `http_backend`s
//! (each answers `/` with its own name): every match type, weighted split
//! accuracy over 10,000 requests, sticky splits, header and path rewrites,
//! redirects and direct responses, per-route timeout, retry, rate-limit and
//! fault overrides,
//! gRPC method matching, mirroring (the shadow gets copies; a dead or slow
//! shadow changes nothing for the caller), route metrics, the route in the
//! access log, and Consul tag and `Service.Meta` subsets following discovery.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};

use support::config::TestConfig;
use support::consul::{ConsulStandIn, Instance};
use support::{Proxy, get, grpc_echo, grpc_unary, http_backend, http_client, prom, send};

/// `api` with static `default` endpoints and the given `backends:`/`routes:` text
/// (indented for the upstream's mapping).
fn yaml(default: SocketAddr, upstream_extra: &str) -> String {
    TestConfig::one_upstream("api", "http", [default])
        .with("timeouts", "{ connect: 1s, request: 5s }")
        .lines(upstream_extra)
        .yaml()
}

/// Waits up to 5 s for a metric of `proxy` to reach `expected`; returns the
/// last value seen (0 when absent) for the caller's assertion.
async fn metric(proxy: &Proxy, name: &str, labels: &[(&str, &str)], expected: f64) -> f64 {
    let url = proxy.admin_url("/metrics");
    prom::wait_for_value(&url, name, labels, expected, Duration::from_secs(5)).await
}

async fn get_with(url: &str, headers: &[(&str, &str)]) -> support::Reply {
    call("GET", url, headers).await
}

/// `method url` with `headers` and an empty body, over HTTP/1.1.
async fn call(method: &str, url: &str, headers: &[(&str, &str)]) -> support::Reply {
    (support::client::call(method, url, headers).await)
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// Method, path, headers, and the backend expected to get the request.
type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);

#[tokio::test]
async fn every_match_type_picks_its_backend() {
    let names = [
        "default",
        "exact",
        "prefix",
        "regex",
        "method",
        "header",
        "header-regex",
        "absent",
        "query",
    ];
    let backends: Vec<_> = names.iter().map(|name| http_backend(name)).collect();
    let mut extra = String::from("    backends:\n");
    for backend in &backends[1..] {
        extra.push_str(&format!(
            "      {}: {{ static: [{}] }}\n",
            backend.name, backend.addr
        ));
    }
    extra.push_str(
        "    routes:\n\
         \x20     - { name: exact, match: { path: { exact: /exact } }, backend: exact }\n\
         \x20     - { name: prefix, match: { path: { prefix: /p } }, backend: prefix }\n\
         \x20     - { name: regex, match: { path: { regex: '/r/[0-9]+' } }, backend: regex }\n\
         \x20     - { name: method, match: { methods: [DELETE] }, backend: method }\n\
         \x20     - { name: header, match: { headers: [{ name: x-team, exact: blue }] }, backend: header }\n\
         \x20     - { name: header-regex, match: { headers: [{ name: x-team, regex: 'gr[a-z]+' }] }, backend: header-regex }\n\
         \x20     - { name: absent, match: { path: { prefix: /only }, headers: [{ name: x-debug, present: false }] }, backend: absent }\n\
         \x20     - { name: query, match: { query: [{ name: v, exact: 'a b' }] }, backend: query }\n",
    );
    let proxy = Proxy::start(&yaml(backends[0].addr, &extra)).await;
    let api = proxy.upstream("api");
    let cases: [Case; 15] = [
        ("GET", "/", &[], "default"),
        ("GET", "/exact", &[], "exact"),
        ("GET", "/exact/", &[], "default"),
        ("GET", "/p", &[], "prefix"),
        ("GET", "/p/x", &[], "prefix"),
        ("GET", "/px", &[], "default"),
        ("GET", "/r/12", &[], "regex"),
        ("GET", "/r/12x", &[], "default"),
        ("DELETE", "/", &[], "method"),
        ("GET", "/", &[("x-team", "blue")], "header"),
        ("GET", "/", &[("x-team", "green")], "header-regex"),
        ("GET", "/", &[("x-team", "agreen")], "default"),
        ("GET", "/only", &[], "absent"),
        ("GET", "/only", &[("x-debug", "1")], "default"),
        ("GET", "/?v=a+b", &[], "query"),
    ];
    for (method, path, headers, expected) in cases {
        let before: Vec<u64> = backends.iter().map(|b| b.requests()).collect();
        call(method, &format!("http://{api}{path}"), headers).await;
        let hit: Vec<&str> = (backends.iter().zip(before))
            .filter(|(backend, before)| backend.requests() > *before)
            .map(|(backend, _)| backend.name.as_str())
            .collect();
        assert_eq!(hit, [expected], "{method} {path} {headers:?}");
    }
}

#[tokio::test]
async fn weighted_split_shares_over_10000_requests() {
    let (v1, v2) = (http_backend("v1"), http_backend("v2"));
    let extra = format!(
        "    backends:\n      v1: {{ static: [{}] }}\n      v2: {{ static: [{}] }}\n\
         \x20   routes:\n      - name: shares\n        split: [{{ backend: v1, weight: 90 }}, {{ backend: v2, weight: 10 }}]\n",
        v1.addr, v2.addr
    );
    let proxy = Proxy::start(&yaml(v1.addr, &extra)).await;
    let url = Arc::new(format!("http://{}/", proxy.upstream("api")));
    const TOTAL: u64 = 10_000;
    const WORKERS: u64 = 8;
    let client = http_client::<Full<Bytes>>(Version::HTTP_11);
    let mut tasks = Vec::new();
    for _ in 0..WORKERS {
        let (client, url) = (client.clone(), Arc::clone(&url));
        tasks.push(tokio::spawn(async move {
            for _ in 0..TOTAL / WORKERS {
                let request = Request::get(url.as_str())
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let response = client.request(request).await.expect("request");
                assert_eq!(response.status(), StatusCode::OK);
                http_body_util::BodyExt::collect(response.into_body())
                    .await
                    .expect("body");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(v1.requests() + v2.requests(), TOTAL);
    let v2_share = v2.requests() as f64 / TOTAL as f64;
    println!(
        "v1 {} v2 {} (v2 share {v2_share:.4})",
        v1.requests(),
        v2.requests()
    );
    assert!((0.07..=0.13).contains(&v2_share), "v2 share {v2_share}");

    let metrics = prom::scrape(&proxy.admin_url("/metrics")).await;
    let tries = |backend| {
        prom::value(
            &metrics,
            "remora_route_backend_requests_total",
            &[
                ("upstream", "api"),
                ("route", "shares"),
                ("backend", backend),
            ],
        )
    };
    assert_eq!(tries("v1"), Some(v1.requests() as f64));
    assert_eq!(tries("v2"), Some(v2.requests() as f64));
    // Counted when each response body ends, just after the client read it.
    let routed = metric(
        &proxy,
        "remora_route_requests_total",
        &[("upstream", "api"), ("route", "shares"), ("code", "200")],
        TOTAL as f64,
    )
    .await;
    assert_eq!(routed, TOTAL as f64);
}

#[tokio::test]
async fn sticky_split_keeps_a_key_on_one_side() {
    let (a, b) = (http_backend("a"), http_backend("b"));
    let extra = format!(
        "    backends:\n      a: {{ static: [{}] }}\n      b: {{ static: [{}] }}\n\
         \x20   routes:\n      - name: header\n        match: {{ path: {{ exact: / }}, headers: [{{ name: x-user, present: true }}] }}\n        \
         split: [{{ backend: a, weight: 50 }}, {{ backend: b, weight: 50 }}]\n        sticky: header:x-user\n\
         \x20     - name: cookie\n        split: [{{ backend: a, weight: 50 }}, {{ backend: b, weight: 50 }}]\n        sticky: cookie:session\n",
        a.addr, b.addr
    );
    let proxy = Proxy::start(&yaml(a.addr, &extra)).await;
    let url = format!("http://{}/", proxy.upstream("api"));
    let mut sides = BTreeMap::new();
    for user in 0..20 {
        let user = format!("user-{user}");
        let first = get_with(&url, &[("x-user", &user)]).await.body;
        for _ in 0..5 {
            assert_eq!(
                get_with(&url, &[("x-user", &user)]).await.body,
                first,
                "{user}"
            );
        }
        let cookie = format!("theme=dark; session={user}");
        let by_cookie = get_with(&url, &[("cookie", &cookie)]).await.body;
        for _ in 0..5 {
            assert_eq!(
                get_with(&url, &[("cookie", &cookie)]).await.body,
                by_cookie,
                "{cookie}"
            );
        }
        *sides.entry(first).or_insert(0) += 1;
    }
    assert_eq!(sides.len(), 2, "20 keys all on one side: {sides:?}");
}

#[tokio::test]
async fn header_rules_host_and_path_rewrites() {
    let backend = http_backend("origin");
    let extra = "    routes:\n      - name: rewrite\n        match: { path: { prefix: /api/v1 } }\n        \
         rewrite: { host: internal.example, path_prefix: / }\n        \
         request_headers: { set: { x-env: prod }, add: { x-tag: added }, remove: [x-secret] }\n        \
         response_headers: { set: { x-route: rewrite }, remove: [x-backend] }\n";
    let proxy = Proxy::start(&yaml(backend.addr, extra)).await;
    let api = proxy.upstream("api");
    let reply = get_with(
        &format!("http://{api}/api/v1/headers?q=1"),
        &[("x-env", "dev"), ("x-tag", "mine"), ("x-secret", "s3cret")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["x-route"], "rewrite");
    let seen: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(seen["uri"], "/headers?q=1");
    assert_eq!(seen["authority"], "internal.example");
    assert_eq!(seen["headers"]["x-env"], serde_json::json!(["prod"]));
    assert_eq!(
        seen["headers"]["x-tag"],
        serde_json::json!(["mine", "added"])
    );
    assert!(seen["headers"].get("x-secret").is_none(), "{seen}");

    // Response rules apply to the route only: `/` keeps `x-backend`.
    let reply = get(Version::HTTP_11, &format!("http://{api}/"))
        .await
        .unwrap();
    assert_eq!(reply.headers["x-backend"], "origin");
    assert!(reply.headers.get("x-route").is_none());
}

#[tokio::test]
async fn redirects_and_direct_responses_call_no_upstream() {
    let backend = http_backend("origin");
    let extra = "    routes:\n      - name: moved\n        match: { path: { prefix: /old } }\n        \
         redirect: { scheme: https, host: new.example, path: /new, status: 308 }\n      \
         - name: maintenance\n        match: { path: { prefix: /shop } }\n        \
         direct_response: { status: 503, body: \"back soon\" }\n        \
         response_headers: { set: { retry-after: \"60\" } }\n";
    let proxy = Proxy::start(&yaml(backend.addr, extra)).await;
    let api = proxy.upstream("api");
    let reply = get(Version::HTTP_11, &format!("http://{api}/old/page?x=1"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(reply.headers["location"], "https://new.example/new?x=1");
    let reply = get(Version::HTTP_11, &format!("http://{api}/shop/cart"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body, "back soon");
    assert_eq!(reply.headers["retry-after"], "60");
    assert!(reply.headers.get("x-remora-error").is_none());
    assert_eq!(backend.requests(), 0);

    for (route, code) in [("moved", "308"), ("maintenance", "503")] {
        let labels = [("upstream", "api"), ("route", route), ("code", code)];
        let count = metric(&proxy, "remora_route_requests_total", &labels, 1.0).await;
        assert_eq!(count, 1.0, "{route}");
    }
}

#[tokio::test]
async fn per_route_timeout_and_retries_override_the_upstream() {
    let backend = http_backend("origin");
    let extra = "    retries: { attempts: 1 }\n    routes:\n      \
         - name: fast\n        match: { path: { prefix: /slow/900 } }\n        timeout: 200ms\n      \
         - name: retried\n        match: { path: { prefix: /status/503 } }\n        \
         retries: { attempts: 3, on: [\"503\"], backoff: { base: 1ms, max: 2ms } }\n";
    let proxy = Proxy::start(&yaml(backend.addr, extra)).await;
    let api = proxy.upstream("api");

    let started = Instant::now();
    let reply = get(Version::HTTP_11, &format!("http://{api}/slow/900"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    // Other paths keep the upstream's 5s.
    let reply = get(Version::HTTP_11, &format!("http://{api}/slow/400"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);

    let before = backend.requests();
    let reply = get(Version::HTTP_11, &format!("http://{api}/status/503"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(backend.requests() - before, 3, "the route retries twice");
    let before = backend.requests();
    get(Version::HTTP_11, &format!("http://{api}/status/502"))
        .await
        .unwrap();
    assert_eq!(
        backend.requests() - before,
        1,
        "the upstream does not retry"
    );
}

#[tokio::test]
async fn grpc_methods_route_to_their_backend() {
    let echo = grpc_echo();
    // The default endpoint refuses connections: only the routed method works.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let text = format!(
        "service: {{ name: test }}\n\
         upstreams:\n  - name: api\n    listen: 127.0.0.1:0\n    protocol: grpc\n    \
         discovery: {{ static: [{dead}] }}\n    \
         backends:\n      echo: {{ static: [{}] }}\n    \
         routes:\n      - {{ name: unary, match: {{ grpc: {{ service: remora.test.Echo, method: Unary }} }}, backend: echo }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\nlogging: {{ access_log: false }}\n",
        echo.addr
    );
    let proxy = Proxy::start(&text).await;
    let api = proxy.upstream("api");
    let (reply, _) = grpc_unary(api, "hello")
        .await
        .expect("Unary is routed to echo");
    assert_eq!(reply, "hello");
    let failed = support::grpc_fail(api)
        .await
        .expect_err("Fail goes to the dead default");
    assert_eq!(failed.code(), tonic::Code::Unavailable);
    assert!(failed.message().contains("connect"), "{failed:?}");
}

#[tokio::test]
async fn mirror_copies_requests_and_isolates_the_caller() {
    let (primary, shadow) = (http_backend("primary"), http_backend("shadow"));
    let (slow_shadow, _closed) = support::black_hole();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let extra = format!(
        "    backends:\n      shadow: {{ static: [{}] }}\n      slow: {{ static: [{slow_shadow}] }}\n      dead: {{ static: [{dead}] }}\n\
         \x20   routes:\n\
         \x20     - {{ name: live, match: {{ path: {{ prefix: /echo }} }}, mirror: {{ backend: shadow, max_body: 16 }} }}\n\
         \x20     - {{ name: slow, match: {{ headers: [{{ name: x-shadow, exact: slow }}] }}, mirror: {{ backend: slow, timeout: 300ms, max_in_flight: 2 }} }}\n\
         \x20     - {{ name: dead, match: {{ headers: [{{ name: x-shadow, exact: dead }}] }}, mirror: {{ backend: dead }} }}\n",
        shadow.addr
    );
    let proxy = Proxy::start(&yaml(primary.addr, &extra)).await;
    let api = proxy.upstream("api");
    let metrics_url = proxy.admin_url("/metrics");
    let mirrored =
        |route: &'static str, outcome: &'static str| [("route", route), ("outcome", outcome)];

    // Small bodies are mirrored whole; the caller gets the primary's answer.
    for _ in 0..5 {
        let request = Request::post(format!("http://{api}/echo"))
            .body(Full::new(Bytes::from_static(b"hello")))
            .unwrap();
        let reply = send(Version::HTTP_11, request).await.unwrap();
        assert_eq!(reply.body, "hello");
    }
    let answered = metric(
        &proxy,
        "remora_mirror_requests_total",
        &mirrored("live", "answered"),
        5.0,
    )
    .await;
    assert_eq!(answered, 5.0);
    assert_eq!(shadow.requests(), 5);
    assert_eq!(shadow.echoed_bytes(), 25, "the shadow got the bodies");
    // A body over `max_body` is not mirrored: known from its length, or
    // found while it streams (chunked), which the caller never notices.
    let request = Request::post(format!("http://{api}/echo"))
        .body(Full::new(Bytes::from(vec![b'x'; 100])))
        .unwrap();
    assert_eq!(
        send(Version::HTTP_11, request).await.unwrap().body.len(),
        100
    );
    let chunks = futures_util::stream::iter(
        [&b"0123456789"[..], b"0123456789"]
            .map(|c| Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(c)))),
    );
    let request = Request::post(format!("http://{api}/echo"))
        .body(StreamBody::new(chunks))
        .unwrap();
    let response = http_client(Version::HTTP_11)
        .request(request)
        .await
        .unwrap();
    let echoed = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(echoed.len(), 20);
    let skipped = metric(
        &proxy,
        "remora_mirror_requests_total",
        &mirrored("live", "skipped_body"),
        2.0,
    )
    .await;
    assert_eq!(skipped, 2.0);
    assert_eq!(shadow.requests(), 5);

    // A shadow that never answers or refuses connections changes nothing.
    for (which, route) in [("slow", "slow"), ("dead", "dead")] {
        for _ in 0..4 {
            let started = Instant::now();
            let reply = get_with(&format!("http://{api}/"), &[("x-shadow", which)]).await;
            assert_eq!(reply.status, StatusCode::OK, "{which}");
            assert_eq!(reply.body, "primary");
            assert!(reply.headers.get("x-remora-error").is_none());
            assert!(
                started.elapsed() < Duration::from_millis(250),
                "{which}: {:?}",
                started.elapsed()
            );
        }
        let failed = metric(
            &proxy,
            "remora_mirror_requests_total",
            &mirrored(route, "failed"),
            if which == "slow" { 2.0 } else { 4.0 },
        )
        .await;
        if which == "slow" {
            // Two shadows in flight at most: the other two were skipped, not queued.
            assert_eq!(failed, 2.0);
            let metrics = prom::scrape(&metrics_url).await;
            let busy = prom::value(
                &metrics,
                "remora_mirror_requests_total",
                &mirrored("slow", "skipped_busy"),
            );
            assert_eq!(busy, Some(2.0));
        } else {
            assert_eq!(failed, 4.0);
        }
    }
}

#[tokio::test]
async fn consul_tag_and_meta_subsets_follow_discovery() {
    let consul = ConsulStandIn::start();
    let (v1, v2) = (http_backend("v1"), http_backend("v2"));
    consul.register(Instance::new("v1", "api", v1.addr).tags(&["stable"]));
    let text = format!(
        "service: {{ name: test }}\nconsul: {{ address: \"{}\", wait: 2s }}\n\
         upstreams:\n  - name: subsets\n    listen: 127.0.0.1:0\n    \
         discovery: {{ consul: {{ service: api }} }}\n    \
         backends:\n      canary: {{ subset: {{ meta: {{ version: v2 }} }} }}\n      \
         stable: {{ subset: {{ tags: [stable] }} }}\n    \
         routes:\n      - {{ name: canary, match: {{ headers: [{{ name: x-canary, present: true }}] }}, backend: canary }}\n      \
         - {{ name: stable, match: {{ headers: [{{ name: x-stable, present: true }}] }}, backend: stable }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\nlogging: {{ access_log: false }}\n",
        consul.url()
    );
    // Named apart from the other tests' static `api`, whose endpoint gauges share the test
    // process's metrics registry.
    let proxy = Proxy::start(&text).await;
    let url = format!("http://{}/", proxy.upstream("subsets"));
    let endpoints = metric(&proxy, "remora_endpoints", &[("upstream", "subsets")], 1.0).await;
    assert_eq!(endpoints, 1.0);
    // No v2 instance yet: the subset is empty.
    let reply = get_with(&url, &[("x-canary", "1")]).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.headers["x-remora-error"], "no_endpoints");
    assert!(reply.body.contains("subsets/canary"), "{}", reply.body);

    assert_eq!(get_with(&url, &[("x-stable", "1")]).await.body, "v1");

    consul.register(Instance::new("v2", "api", v2.addr).meta(&[("version", "v2")]));
    let subset = metric(
        &proxy,
        "remora_endpoints",
        &[("upstream", "subsets/canary")],
        1.0,
    )
    .await;
    assert_eq!(subset, 1.0);
    // `/endpoints` lists the subsets after the upstreams, with their endpoints.
    let document = get_with(&proxy.admin_url("/endpoints"), &[]).await.body;
    let document: serde_json::Value = serde_json::from_str(&document).unwrap();
    let listed = |name: &str| -> Vec<String> {
        let entry = (document["upstreams"].as_array().unwrap().iter())
            .find(|entry| entry["name"] == name)
            .unwrap_or_else(|| panic!("{name} in /endpoints: {document}"));
        (entry["endpoints"].as_array().unwrap().iter())
            .map(|endpoint| endpoint["address"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(listed("subsets/canary"), [v2.addr.to_string()]);
    assert_eq!(listed("subsets/stable"), [v1.addr.to_string()]);
    for _ in 0..5 {
        assert_eq!(get_with(&url, &[("x-canary", "1")]).await.body, "v2");
        assert_eq!(get_with(&url, &[("x-stable", "1")]).await.body, "v1");
    }
    consul.deregister("v2");
    let subset = metric(
        &proxy,
        "remora_endpoints",
        &[("upstream", "subsets/canary")],
        0.0,
    )
    .await;
    assert_eq!(subset, 0.0);
}

#[tokio::test]
async fn the_access_log_names_the_route() {
    let backend = http_backend("logged");
    let extra = "    routes:\n      - { name: docs, match: { path: { prefix: /docs } }, direct_response: { status: 204 } }\n";
    let text = yaml(backend.addr, extra).replace("logging: { access_log: false }\n", "");
    let mut proxy = support::ProxyProcess::start(&text, 1);
    let api = proxy.listener("api");
    assert_eq!(
        get(Version::HTTP_11, &format!("http://{api}/docs/x"))
            .await
            .unwrap()
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        get(Version::HTTP_11, &format!("http://{api}/"))
            .await
            .unwrap()
            .status,
        StatusCode::OK
    );
    let lines = tokio::task::spawn_blocking(move || {
        let first = proxy.wait_for_log("\"message\":\"request\"");
        let second = proxy.wait_for_log("\"message\":\"request\"");
        [first, second]
    });
    let lines = tokio::time::timeout(Duration::from_secs(30), lines)
        .await
        .unwrap()
        .unwrap();
    let routes: Vec<String> = (lines.iter())
        .map(|line| {
            let access: serde_json::Value = serde_json::from_str(line).unwrap();
            access["route"].as_str().unwrap_or("(none)").to_owned()
        })
        .collect();
    assert_eq!(routes, ["docs", "default"]);
}

#[tokio::test]
async fn per_route_rate_limit_and_fault_override_the_upstream() {
    let backend = http_backend("origin");
    let extra = "    rate_limit: { requests_per_second: 1000, burst: 1000 }\n    routes:\n      \
         - { name: limited, match: { path: { exact: /limited } }, rate_limit: { requests_per_second: 0.1, burst: 1 } }\n      \
         - { name: faulty, match: { path: { exact: /faulty } }, fault: { abort: { percent: 100, status: 418 } } }\n";
    let proxy = Proxy::start(&yaml(backend.addr, extra)).await;
    let api = proxy.upstream("api");
    let status = |path: &'static str| {
        let url = format!("http://{api}{path}");
        async move { get(Version::HTTP_11, &url).await.unwrap() }
    };
    assert_eq!(status("/limited").await.status, StatusCode::NOT_FOUND);
    let limited = status("/limited").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.headers["x-remora-error"], "rate_limited");
    let faulty = status("/faulty").await;
    assert_eq!(faulty.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(faulty.headers["x-remora-error"], "fault_abort");
    // The upstream's own (generous) bucket and no fault elsewhere.
    for _ in 0..5 {
        assert_eq!(status("/").await.status, StatusCode::OK);
    }
    assert_eq!(
        backend.requests(),
        6,
        "the limited and faulty tries never left"
    );
}

#[tokio::test]
async fn host_rewrite_over_http1_and_http2() {
    let backend = http_backend("origin");
    let extra =
        "    routes:\n      - { name: host, rewrite: { host: \"internal.example:8443\" } }\n";
    let text = yaml(backend.addr, extra).replace("protocol: http\n", "protocol: auto\n");
    let proxy = Proxy::start(&text).await;
    let url = format!("http://{}/headers", proxy.upstream("api"));
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let reply = get(version, &url).await.unwrap();
        let seen: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(seen["authority"], "internal.example:8443", "{version:?}");
        // `protocol: auto` keeps the client's version upstream.
        assert_eq!(seen["version"], format!("{version:?}"));
    }
}

#[tokio::test]
async fn grpc_calls_are_mirrored_once_their_message_is_whole() {
    let (primary, shadow) = (grpc_echo(), grpc_echo());
    let text = format!(
        "service: {{ name: test }}\n\
         upstreams:\n  - name: api\n    listen: 127.0.0.1:0\n    protocol: grpc\n    \
         discovery: {{ static: [{}] }}\n    \
         backends:\n      shadow: {{ static: [{}] }}\n    \
         routes:\n      - {{ name: grpc-mirror, mirror: {{ backend: shadow }} }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\nlogging: {{ access_log: false }}\n",
        primary.addr, shadow.addr
    );
    let proxy = Proxy::start(&text).await;
    for n in 0..3 {
        let (reply, _) = grpc_unary(proxy.upstream("api"), &format!("m{n}"))
            .await
            .unwrap();
        assert_eq!(reply, format!("m{n}"));
    }
    let labels = [("route", "grpc-mirror"), ("outcome", "answered")];
    assert_eq!(
        metric(&proxy, "remora_mirror_requests_total", &labels, 3.0).await,
        3.0
    );
}
