//! Consul discovery end to end: remora watches the Consul stand-in (tests/support/consul.rs)
//! with blocking queries and routes to the `http_backend`s registered there. Covers readiness
//! before the first answer, changes reaching traffic within a second, in-flight requests to a
//! removed instance, the cost of an idle catalog, ACL tokens (and their redaction in
//! `/config` and the logs), fail-static while Consul is down, one log line per state change, an index that goes backwards, filters, and two
//! upstreams sharing one watch.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{StatusCode, Version};

use support::config::{TestConfig, Upstream};
use support::consul::{ConsulStandIn, ErrorMode, Health, Instance};
use support::{Proxy, ProxyProcess, get, http_backend, prom};

const READY_WAIT: Duration = Duration::from_secs(5);

/// One upstream per `(name, discovery)`, all through the stand-in.
fn yaml(consul: &str, upstreams: &[(&str, &str)]) -> String {
    let mut config = TestConfig::new().section("consul", consul);
    for (name, discovery) in upstreams {
        let discovery = format!("{{ consul: {discovery} }}");
        config = config
            .upstream(Upstream::discovered(name, &discovery).protocol("http"))
            .with("load_balancing", "{ policy: round_robin }")
            .with("timeouts", "{ connect: 1s, request: 5s }");
    }
    config.yaml()
}

fn consul_section(stand_in: &ConsulStandIn, wait: &str) -> String {
    format!("{{ address: \"{}\", wait: {wait} }}", stand_in.url())
}

/// Polls `condition` every 20 ms until it holds or `within` passes; returns whether it held.
async fn eventually<F, Fut>(within: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn ready_status(proxy: &Proxy) -> StatusCode {
    get(Version::HTTP_11, &proxy.admin_url("/ready"))
        .await
        .expect("admin answers")
        .status
}

async fn wait_ready(proxy: &Proxy) {
    assert!(
        eventually(READY_WAIT, || async {
            ready_status(proxy).await == StatusCode::OK
        })
        .await,
        "proxy not ready within {READY_WAIT:?}"
    );
}

/// The `x-backend` of one request through `upstream`; `None` on failure.
async fn hit(proxy: &Proxy, upstream: &str, path: &str) -> Option<String> {
    let url = format!("http://{}{path}", proxy.upstream(upstream));
    let reply = get(Version::HTTP_11, &url).await.ok()?;
    if reply.status != StatusCode::OK {
        return None;
    }
    reply
        .headers
        .get("x-backend")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The backends that answered `n` requests through `upstream`.
async fn backends_hit(proxy: &Proxy, upstream: &str, n: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        if let Some(name) = hit(proxy, upstream, "/").await {
            seen.insert(name);
        }
    }
    seen
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

async fn metric(proxy: &Proxy, name: &str, upstream: &str) -> f64 {
    let text = prom::scrape(&proxy.admin_url("/metrics")).await;
    prom::value(&text, name, &[("upstream", upstream)]).unwrap_or(0.0)
}

#[tokio::test]
async fn not_ready_until_the_first_answer_then_routes_to_registered_instances() {
    let consul = ConsulStandIn::start();
    consul.set_error_mode(ErrorMode::ServerError);
    let a = http_backend("first-a");
    let b = http_backend("first-b");
    consul.register(Instance::new("a", "first", a.addr));
    // Service.Address empty: the node address must be used.
    consul.register(Instance::new("b", "first", b.addr).on_node_address());
    let proxy = Proxy::start(&yaml(
        &consul_section(&consul, "1s"),
        &[("first", "{ service: first }")],
    ))
    .await;

    let ready = get(Version::HTTP_11, &proxy.admin_url("/ready"))
        .await
        .unwrap();
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        ready.body.contains("no endpoints for first"),
        "{}",
        ready.body
    );
    assert!(
        eventually(READY_WAIT, || async {
            metric(&proxy, "remora_discovery_errors_total", "first").await >= 1.0
        })
        .await,
        "the 500 answers are counted"
    );
    assert_eq!(ready_status(&proxy).await, StatusCode::SERVICE_UNAVAILABLE);

    consul.set_error_mode(ErrorMode::None);
    wait_ready(&proxy).await;
    assert_eq!(
        backends_hit(&proxy, "first", 10).await,
        set(&["first-a", "first-b"])
    );
    let updated = metric(
        &proxy,
        "remora_discovery_last_update_timestamp_seconds",
        "first",
    )
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - updated).abs() < 5.0,
        "last update {updated}, now {now}"
    );
}

/// Once ready, a sidecar stays ready when an upstream loses every endpoint: its requests to
/// that upstream get 503 `no_endpoints`, but taking every caller out of its load balancers
/// would spread the callee's outage.
#[tokio::test]
async fn ready_stays_when_an_upstream_loses_its_endpoints_after_start() {
    let consul = ConsulStandIn::start();
    let a = http_backend("vanish-a");
    consul.register(Instance::new("a", "vanish", a.addr));
    let proxy = Proxy::start(&yaml(
        &consul_section(&consul, "1s"),
        &[("vanish", "{ service: vanish }")],
    ))
    .await;
    wait_ready(&proxy).await;
    consul.deregister("a");
    assert!(
        eventually(READY_WAIT, || async {
            hit(&proxy, "vanish", "/").await.is_none()
        })
        .await,
        "the instance's removal reached the balancer"
    );
    assert_eq!(ready_status(&proxy).await, StatusCode::OK);
}

#[tokio::test]
async fn a_new_instance_gets_traffic_within_a_second() {
    let consul = ConsulStandIn::start();
    let a = http_backend("grow-a");
    let b = http_backend("grow-b");
    consul.register(Instance::new("a", "grow", a.addr));
    // A long wait: only the blocking query returning on change can make this fast.
    let proxy = Proxy::start(&yaml(
        &consul_section(&consul, "5m"),
        &[("grow", "{ service: grow }")],
    ))
    .await;
    wait_ready(&proxy).await;
    assert_eq!(backends_hit(&proxy, "grow", 4).await, set(&["grow-a"]));

    let registered = Instant::now();
    consul.register(Instance::new("b", "grow", b.addr));
    let reached = eventually(Duration::from_secs(1), || async {
        hit(&proxy, "grow", "/").await.as_deref() == Some("grow-b")
    })
    .await;
    let took = registered.elapsed();
    assert!(reached, "the new instance got no traffic within 1 s");
    eprintln!("new instance received traffic {took:?} after registration");
}

#[tokio::test]
async fn a_removed_instance_finishes_in_flight_requests_and_gets_no_more() {
    let consul = ConsulStandIn::start();
    let a = http_backend("shrink-a");
    let b = http_backend("shrink-b");
    consul.register(Instance::new("b", "shrink", b.addr));
    let proxy = Arc::new(
        Proxy::start(&yaml(
            &consul_section(&consul, "5m"),
            &[("shrink", "{ service: shrink }")],
        ))
        .await,
    );
    wait_ready(&proxy).await;

    // b is the only endpoint, so the slow request goes there.
    let slow = {
        let proxy = Arc::clone(&proxy);
        tokio::spawn(async move { hit(&proxy, "shrink", "/slow/500").await })
    };
    assert!(
        eventually(Duration::from_secs(1), || async { b.requests() == 1 }).await,
        "the slow request reached b"
    );
    consul.register(Instance::new("a", "shrink", a.addr));
    consul.deregister("b");
    assert!(
        eventually(Duration::from_secs(1), || async {
            backends_hit(&proxy, "shrink", 2).await == set(&["shrink-a"])
        })
        .await,
        "b still gets traffic after its deregistration"
    );
    let b_requests = b.requests();
    assert_eq!(
        slow.await.unwrap().as_deref(),
        Some("shrink-b"),
        "in-flight request completes"
    );
    assert_eq!(backends_hit(&proxy, "shrink", 10).await, set(&["shrink-a"]));
    assert_eq!(b.requests(), b_requests, "no new request reached b");
}

#[tokio::test]
async fn an_idle_catalog_costs_one_query_per_wait() {
    let consul = ConsulStandIn::start();
    let a = http_backend("idle-a");
    consul.register(Instance::new("a", "idle", a.addr));
    let proxy = Proxy::start(&yaml(
        &consul_section(&consul, "1s"),
        &[("idle", "{ service: idle }")],
    ))
    .await;
    wait_ready(&proxy).await;

    let before = consul.requests();
    // A measurement window: nothing changes, so there is no signal to wait for.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let queries = consul.requests() - before;
    eprintln!("idle catalog, wait 1s: {queries} queries in 3 s");
    assert!((2..=4).contains(&queries), "{queries} queries in 3 s");
}

#[tokio::test]
async fn acl_tokens_are_sent_and_redacted() {
    let consul = ConsulStandIn::start();
    consul.set_token(Some("right-token"));
    let a = http_backend("acl-a");
    consul.register(Instance::new("a", "acl", a.addr));

    let wrong = Proxy::start(&yaml(
        &format!(
            "{{ address: \"{}\", wait: 1s, token: wrong-token }}",
            consul.url()
        ),
        &[("acl-wrong", "{ service: acl }")],
    ))
    .await;
    assert!(
        eventually(READY_WAIT, || async {
            metric(&wrong, "remora_discovery_errors_total", "acl-wrong").await >= 1.0
        })
        .await,
        "a 403 counts as a discovery error"
    );
    assert_eq!(ready_status(&wrong).await, StatusCode::SERVICE_UNAVAILABLE);

    let token_file =
        std::env::temp_dir().join(format!("remora-consul-token-{}", std::process::id()));
    std::fs::write(&token_file, "right-token\n").unwrap();
    let right = Proxy::start(&yaml(
        &format!(
            "{{ address: \"{}\", wait: 1s, token_file: \"{}\" }}",
            consul.url(),
            token_file.display()
        ),
        &[("acl-right", "{ service: acl }")],
    ))
    .await;
    wait_ready(&right).await;
    assert_eq!(backends_hit(&right, "acl-right", 2).await, set(&["acl-a"]));
    assert_eq!(
        metric(&right, "remora_discovery_errors_total", "acl-right").await,
        0.0
    );
    let _ = std::fs::remove_file(&token_file);

    let config = get(Version::HTTP_11, &wrong.admin_url("/config"))
        .await
        .unwrap();
    assert!(
        config.body.contains("\"token\": \"<redacted>\""),
        "{}",
        config.body
    );
    assert!(!config.body.contains("wrong-token"), "{}", config.body);
}

#[tokio::test]
async fn consul_down_keeps_the_last_endpoints_and_recovers() {
    let consul = ConsulStandIn::start();
    let a = http_backend("static-a");
    let b = http_backend("static-b");
    let c = http_backend("static-c");
    consul.register(Instance::new("a", "fail", a.addr));
    consul.register(Instance::new("b", "fail", b.addr));
    let proxy = Arc::new(
        Proxy::start(&yaml(
            &consul_section(&consul, "1s"),
            &[("fail", "{ service: fail }")],
        ))
        .await,
    );
    wait_ready(&proxy).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let client = {
        let (proxy, stop, sent, failed) =
            (proxy.clone(), stop.clone(), sent.clone(), failed.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                sent.fetch_add(1, Ordering::SeqCst);
                if hit(&proxy, "fail", "/").await.is_none() {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };

    consul.stop();
    let down = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || async {
            metric(&proxy, "remora_discovery_errors_total", "fail").await >= 2.0
        })
        .await,
        "errors are counted while Consul is down"
    );
    // Keep Consul down for a few seconds in all.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(down.elapsed())).await;
    assert_eq!(
        ready_status(&proxy).await,
        StatusCode::OK,
        "still ready on stale endpoints"
    );
    let errors = metric(&proxy, "remora_discovery_errors_total", "fail").await;

    consul.restart();
    consul.register(Instance::new("c", "fail", c.addr));
    let restarted = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || async { c.requests() > 0 }).await,
        "a change made after the restart is picked up"
    );
    let picked_up = restarted.elapsed();
    stop.store(true, Ordering::SeqCst);
    client.await.unwrap();
    let (sent, failed) = (sent.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    eprintln!(
        "Consul down {:?}: {errors} discovery errors, {sent} requests sent, {failed} failed; \
         change after restart picked up in {picked_up:?}",
        Duration::from_secs(3)
    );
    assert!(sent > 10, "the client kept sending ({sent})");
    assert_eq!(failed, 0, "no request failed while Consul was down");
}

#[tokio::test]
async fn an_index_that_goes_backwards_is_reset() {
    let consul = ConsulStandIn::start();
    let a = http_backend("reset-a");
    let b = http_backend("reset-b");
    let c = http_backend("reset-c");
    consul.register(Instance::new("a", "reset", a.addr));
    for _ in 0..10 {
        consul.set_health("a", Health::Passing);
    }
    let wait = Duration::from_secs(2);
    let proxy = Proxy::start(&yaml(
        &consul_section(&consul, "2s"),
        &[("reset", "{ service: reset }")],
    ))
    .await;
    wait_ready(&proxy).await;

    // As after a snapshot restore: the index drops below what the client holds, so its
    // blocking query only returns when the wait ends.
    consul.reset_index(3);
    consul.register(Instance::new("b", "reset", b.addr));
    assert!(
        eventually(wait * 2, || async {
            hit(&proxy, "reset", "/").await.as_deref() == Some("reset-b")
        })
        .await,
        "b picked up at the end of the wait"
    );
    // The client reset its index, so the next change wakes it at once.
    let registered = Instant::now();
    consul.register(Instance::new("c", "reset", c.addr));
    assert!(
        eventually(Duration::from_secs(1), || async {
            hit(&proxy, "reset", "/").await.as_deref() == Some("reset-c")
        })
        .await,
        "after the reset, a change arrives at once (took {:?})",
        registered.elapsed()
    );
}

#[tokio::test]
async fn tags_health_and_connect_filters() {
    let consul = ConsulStandIn::start();
    let v2 = http_backend("filter-v2");
    let v1 = http_backend("filter-v1");
    let warn = http_backend("filter-warn");
    let bad = http_backend("filter-critical");
    let proxy_side = http_backend("filter-connect");
    consul.register(Instance::new("v2", "filter", v2.addr).tags(&["v2", "eu"]));
    consul.register(Instance::new("v1", "filter", v1.addr).tags(&["v1"]));
    consul.register(
        Instance::new("warn", "filter", warn.addr)
            .tags(&["v2"])
            .health(Health::Warning),
    );
    consul.register(
        Instance::new("bad", "filter", bad.addr)
            .tags(&["v2"])
            .health(Health::Critical),
    );
    consul.register(Instance::new("sidecar", "filter", proxy_side.addr).connect());
    let proxy = Proxy::start(&yaml(
        &consul_section(&consul, "1s"),
        &[
            (
                "filter-strict",
                "{ service: filter, tags: [v2], datacenter: dc1 }",
            ),
            (
                "filter-lenient",
                "{ service: filter, tags: [v2], passing_only: false }",
            ),
            ("filter-connect", "{ service: filter, connect: true }"),
        ],
    ))
    .await;
    wait_ready(&proxy).await;
    assert_eq!(
        backends_hit(&proxy, "filter-strict", 6).await,
        set(&["filter-v2"])
    );
    assert_eq!(
        backends_hit(&proxy, "filter-lenient", 6).await,
        set(&["filter-v2", "filter-warn"])
    );
    assert_eq!(
        backends_hit(&proxy, "filter-connect", 4).await,
        set(&["filter-connect"])
    );
}

#[tokio::test]
async fn upstreams_naming_the_same_service_share_one_watch() {
    let consul = ConsulStandIn::start();
    let a = http_backend("shared-a");
    consul.register(Instance::new("a", "shared", a.addr));
    let proxy = Proxy::start(&yaml(
        &consul_section(&consul, "1s"),
        &[
            ("shared-one", "{ service: shared }"),
            ("shared-two", "{ service: shared }"),
        ],
    ))
    .await;
    wait_ready(&proxy).await;
    assert_eq!(
        backends_hit(&proxy, "shared-one", 2).await,
        set(&["shared-a"])
    );
    assert_eq!(
        backends_hit(&proxy, "shared-two", 2).await,
        set(&["shared-a"])
    );

    let before = consul.requests();
    // A measurement window, as in the idle test.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let queries = consul.requests() - before;
    eprintln!("two upstreams, one service, wait 1s: {queries} queries in 2 s");
    assert!((1..=3).contains(&queries), "{queries} queries in 2 s");
    assert_eq!(consul.max_held(), 1, "one long poll at a time");
}

#[tokio::test]
async fn garbage_and_hanging_answers_keep_the_last_endpoints() {
    let consul = ConsulStandIn::start();
    let a = http_backend("odd-a");
    let b = http_backend("odd-b");
    consul.register(Instance::new("a", "odd", a.addr));
    let proxy = Proxy::start(&yaml(
        &consul_section(&consul, "1s"),
        &[("odd", "{ service: odd }")],
    ))
    .await;
    wait_ready(&proxy).await;

    consul.set_error_mode(ErrorMode::Garbage);
    assert!(
        eventually(Duration::from_secs(3), || async {
            metric(&proxy, "remora_discovery_errors_total", "odd").await >= 1.0
        })
        .await,
        "a body that is not JSON is an error"
    );
    assert_eq!(backends_hit(&proxy, "odd", 4).await, set(&["odd-a"]));

    // A hanging agent: the query times out after wait + wait/16 + 1 s.
    consul.set_error_mode(ErrorMode::Hang);
    let before = metric(&proxy, "remora_discovery_errors_total", "odd").await;
    assert!(
        eventually(Duration::from_secs(6), || async {
            metric(&proxy, "remora_discovery_errors_total", "odd").await > before
        })
        .await,
        "a hanging query times out and counts"
    );
    assert_eq!(backends_hit(&proxy, "odd", 4).await, set(&["odd-a"]));

    consul.set_error_mode(ErrorMode::None);
    consul.register(Instance::new("b", "odd", b.addr));
    assert!(
        eventually(Duration::from_secs(8), || async {
            hit(&proxy, "odd", "/").await.as_deref() == Some("odd-b")
        })
        .await,
        "recovers once Consul answers properly"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_log_line_per_state_change_and_no_token_in_the_logs() {
    let consul = ConsulStandIn::start();
    consul.set_token(Some("log-secret-token"));
    consul.set_error_mode(ErrorMode::ServerError);
    let a = http_backend("log-a");
    consul.register(Instance::new("a", "log", a.addr));
    let config = yaml(
        &format!(
            "{{ address: \"{}\", wait: 1s, token: log-secret-token }}",
            consul.url()
        ),
        &[("log", "{ service: log }")],
    );
    // The binary: its JSON log lines are read from stderr.
    let mut remora = tokio::task::block_in_place(|| ProxyProcess::start(&config, 1));
    let metrics_url = format!("http://{}/metrics", remora.admin);
    let errors = || async {
        prom::value(
            &prom::scrape(&metrics_url).await,
            "remora_discovery_errors_total",
            &[("upstream", "log")],
        )
        .unwrap_or(0.0)
    };
    let mut lines = tokio::task::block_in_place(|| remora.log_until("Consul discovery failing"));
    assert!(
        eventually(Duration::from_secs(5), || async { errors().await >= 3.0 }).await,
        "several failed attempts"
    );
    consul.set_error_mode(ErrorMode::None);
    lines.extend(tokio::task::block_in_place(|| {
        remora.log_until("Consul discovery recovered")
    }));
    let failing = lines.iter().filter(|l| l.contains("failing")).count();
    assert_eq!(
        failing,
        1,
        "one warning for {} errors: {lines:#?}",
        errors().await
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("500 Internal Server Error") && l.contains("No cluster leader")),
        "the warning says what Consul answered: {lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("log-secret-token")),
        "{lines:#?}"
    );
}

/// Issue 13: a Consul address that answers 307 to another host never gets the ACL token sent
/// there: the redirect is not followed, and the request fails saying what Consul answered.
#[tokio::test]
async fn the_token_never_follows_a_redirect() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Reads one request head from `stream`.
    async fn request_head(stream: &mut tokio::net::TcpStream) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).await.unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        String::from_utf8_lossy(&head).into_owned()
    }

    let received: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let heads = Arc::clone(&received);
    let elsewhere = support::serve(move |mut stream| {
        let heads = Arc::clone(&heads);
        async move {
            let head = request_head(&mut stream).await;
            heads.lock().unwrap().push(head);
            let answer = "HTTP/1.1 200 OK\r\nX-Consul-Index: 1\r\nContent-Length: 2\r\n\
                          Connection: close\r\n\r\n[]";
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    let target = elsewhere.addr;
    let redirecting = support::serve(move |mut stream| async move {
        let head = request_head(&mut stream).await;
        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
        let answer = format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://localhost:{}{path}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
            target.port()
        );
        let _ = stream.write_all(answer.as_bytes()).await;
    });

    let client = remora::consul::Client::new(
        &format!("http://{}", redirecting.addr),
        Some(remora::config::Secret::new("the-acl-token")),
        Duration::from_secs(1),
        &remora::consul::TlsFiles::default(),
    )
    .expect("client");
    let kv = client.kv("remora/web", 0).await.unwrap_err();
    assert!(
        kv.to_string()
            .contains("307 Temporary Redirect to `http://localhost:")
            && kv.to_string().contains("redirects are not followed"),
        "{kv}"
    );
    let query = remora::consul::HealthQuery {
        service: "web".into(),
        tags: Vec::new(),
        datacenter: None,
        passing_only: true,
        connect: false,
    };
    let health = client.health(&query, 0).await.unwrap_err();
    assert!(health.to_string().contains("307"), "{health}");
    let received = received.lock().unwrap();
    assert!(
        received.iter().all(|head| !head.contains("the-acl-token")),
        "{received:?}"
    );
    assert!(
        received.is_empty(),
        "redirects are not followed: {received:?}"
    );
}
