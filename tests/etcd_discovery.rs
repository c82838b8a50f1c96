//! etcd discovery end to end against a real etcd (tests/support/etcd.rs):
//! instances put with the real `etcdctl` in both value shapes (JSON and
//! go-kit's `host:port`, garbage skipped), how fast a change reaches the
//! balancer, a deleted key removing an endpoint while its in-flight
//! requests finish, subsets on etcd tags and meta, fail-static while etcd
//! is down (traffic flows, one log line each way, the watch-state metric)
//! and changes flowing again after a restart, a partition noticed by
//! keep-alive, a watch cut off while its changes were compacted away
//! reading the service afresh, and an etcd back with its data lost (its
//! revision gone back) read afresh too.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use http::{StatusCode, Version};

use support::config::{TestConfig, Upstream};
use support::etcd::{Etcd, Relay};
use support::{Backend, Proxy, ProxyProcess, eventually, get, http_backend};

const WAIT: Duration = Duration::from_secs(10);

/// An upstream `name` discovered from etcd's `service`. Each test names its
/// upstream apart: the test process has one metrics registry.
fn yaml(name: &str, endpoints: &[String], service: &str) -> String {
    let endpoints: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    TestConfig::new()
        .section(
            "etcd",
            format!("{{ endpoints: [{}] }}", endpoints.join(", ")),
        )
        .upstream(
            Upstream::discovered(name, &format!("{{ etcd: {{ service: {service} }} }}"))
                .protocol("http"),
        )
        .with("load_balancing", "{ policy: round_robin }")
        .with("timeouts", "{ connect: 1s, request: 5s }")
        .yaml()
}

fn json_value(backend: &Backend, extra: &str) -> String {
    format!(
        r#"{{"address":"127.0.0.1","port":{}{extra}}}"#,
        backend.addr.port()
    )
}

async fn hit(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    let reply = get(Version::HTTP_11, &format!("http://{addr}{path}"))
        .await
        .ok()?;
    if reply.status != StatusCode::OK {
        return None;
    }
    Some(reply.headers.get("x-backend")?.to_str().ok()?.to_owned())
}

async fn backends_hit(addr: std::net::SocketAddr, n: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        if let Some(name) = hit(addr, "/").await {
            seen.insert(name);
        }
    }
    seen
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// Backends `a` and `b`, `a` registered, and a proxy discovering `api`
/// through `endpoint` that serves from `a`.
async fn serving_a(etcd: &Etcd, endpoint: &str, name: &str) -> (Backend, Backend, Proxy) {
    let (a, b) = (http_backend("a"), http_backend("b"));
    etcd.put("/services/api/a", &json_value(&a, ""));
    let proxy = Proxy::start(&yaml(name, &[endpoint.to_owned()], "api")).await;
    until_backends(proxy.upstream(name), &["a"]).await;
    (a, b, proxy)
}

async fn until_backends(addr: std::net::SocketAddr, names: &[&str]) {
    let what = format!("requests reach exactly {names:?}");
    eventually(WAIT, &what, || async {
        backends_hit(addr, 6).await == set(names)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_put_with_etcdctl_in_both_shapes_are_discovered() {
    let etcd = Etcd::start();
    let (a, b, c) = (http_backend("a"), http_backend("b"), http_backend("c"));
    etcd.put(
        "/services/api/a",
        &json_value(&a, r#","weight":1,"tags":["v1"],"meta":{}"#),
    );
    etcd.put("/services/api/b", &format!("127.0.0.1:{}", b.addr.port()));
    etcd.put("/services/api/broken", "not an endpoint");
    etcd.put("/services/api/named", "db.internal:5432");
    // Another service, and a key that only shares the prefix's text.
    etcd.put("/services/other/c", &format!("127.0.0.1:{}", c.addr.port()));
    etcd.put("/services/apix/c", &format!("127.0.0.1:{}", c.addr.port()));
    let proxy = Proxy::start(&yaml("etcd-shapes", &[etcd.url()], "api")).await;
    let api = proxy.upstream("etcd-shapes");
    until_backends(api, &["a", "b"]).await;
    assert_eq!(
        proxy
            .metric("remora_endpoints", &[("upstream", "etcd-shapes")])
            .await,
        2.0
    );
    assert_eq!(
        proxy
            .metric("remora_discovery_watch_up", &[("upstream", "etcd-shapes")])
            .await,
        1.0
    );

    // A later put of either shape, and a key turned from garbage into an instance.
    etcd.put("/services/api/broken", &json_value(&c, ""));
    until_backends(api, &["a", "b", "c"]).await;
    etcd.delete("/services/api/a");
    until_backends(api, &["b", "c"]).await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_reaches_the_balancer_within_100_ms() {
    let etcd = Etcd::start();
    let (_a, b, proxy) = serving_a(&etcd, &etcd.url(), "etcd-change").await;
    let api = proxy.upstream("etcd-change");
    let mut client = etcd.connect().await;
    let mut took = Vec::new();
    for _ in 0..10 {
        // Added: until a request reaches b; removed: until two in a row do not.
        let start = Instant::now();
        client
            .put("/services/api/b", json_value(&b, ""), None)
            .await
            .unwrap();
        while hit(api, "/").await.as_deref() != Some("b") {
            assert!(start.elapsed() < WAIT, "b not added within {WAIT:?}");
        }
        took.push(start.elapsed());
        let start = Instant::now();
        client.delete("/services/api/b", None).await.unwrap();
        while backends_hit(api, 2).await != set(&["a"]) {
            assert!(start.elapsed() < WAIT, "b not removed within {WAIT:?}");
        }
        took.push(start.elapsed());
    }
    took.sort();
    let median = took[took.len() / 2];
    let max = took[took.len() - 1];
    println!(
        "etcd change to balancer: median {median:?}, max {max:?} over {} changes",
        took.len()
    );
    assert!(median < Duration::from_millis(100), "median {median:?}");
    assert!(max < Duration::from_secs(1), "max {max:?}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_key_removes_the_endpoint_and_its_in_flight_requests_finish() {
    let etcd = Etcd::start();
    let (a, b, proxy) = serving_a(&etcd, &etcd.url(), "etcd-deleted").await;
    let api = proxy.upstream("etcd-deleted");
    // Slow requests in flight on a, then a is deleted and b put.
    let slow: Vec<_> = (0..4)
        .map(|_| tokio::spawn(async move { hit(api, "/slow/800").await }))
        .collect();
    eventually(WAIT, "slow requests arrived", || async {
        a.requests() >= 5
    })
    .await;
    etcd.delete("/services/api/a");
    etcd.put("/services/api/b", &json_value(&b, ""));
    until_backends(api, &["b"]).await;
    for request in slow {
        assert_eq!(
            request.await.unwrap().as_deref(),
            Some("a"),
            "in-flight request finished on a"
        );
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subsets_select_etcd_tags_and_meta() {
    let etcd = Etcd::start();
    let (v1, v2) = (http_backend("v1"), http_backend("v2"));
    etcd.put(
        "/services/api/v1",
        &json_value(&v1, r#","tags":["stable"]"#),
    );
    etcd.put(
        "/services/api/v2",
        &json_value(&v2, r#","meta":{"version":"v2"}"#),
    );
    let text = format!(
        "service: {{ name: test }}\netcd: {{ endpoints: [\"{}\"] }}\n\
         upstreams:\n  - name: etcd-subsets\n    listen: 127.0.0.1:0\n    \
         discovery: {{ etcd: {{ service: api }} }}\n    \
         backends:\n      canary: {{ subset: {{ meta: {{ version: v2 }} }} }}\n      \
         stable: {{ subset: {{ tags: [stable] }} }}\n    \
         routes:\n      - {{ name: canary, match: {{ headers: [{{ name: x-canary, present: true }}] }}, backend: canary }}\n      \
         - {{ name: stable, match: {{ headers: [{{ name: x-stable, present: true }}] }}, backend: stable }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\nlogging: {{ access_log: false }}\n",
        etcd.url()
    );
    let proxy = Proxy::start(&text).await;
    let api = proxy.upstream("etcd-subsets");
    let via = |header: &'static str| async move {
        let request = http::Request::get(format!("http://{api}/"))
            .header(header, "1")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        support::send(Version::HTTP_11, request)
            .await
            .ok()
            .map(|r| r.body)
    };
    eventually(WAIT, "the canary subset has v2", || async {
        via("x-canary").await.as_deref() == Some("v2")
    })
    .await;
    for _ in 0..5 {
        assert_eq!(via("x-canary").await.as_deref(), Some("v2"));
        assert_eq!(via("x-stable").await.as_deref(), Some("v1"));
    }
    etcd.delete("/services/api/v2");
    eventually(WAIT, "the canary subset emptied", || async {
        proxy
            .metric("remora_endpoints", &[("upstream", "etcd-subsets/canary")])
            .await
            == 0.0
    })
    .await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_down_keeps_the_endpoints_and_changes_flow_again_after_a_restart() {
    let mut etcd = Etcd::start();
    let (a, b) = (http_backend("a"), http_backend("b"));
    etcd.put("/services/api/a", &json_value(&a, ""));
    let config = yaml("api", &[etcd.url()], "api");
    let mut remora = tokio::task::block_in_place(|| ProxyProcess::start(&config, 1));
    let api = remora.listener("api");
    let admin = remora.admin;
    let metric = |name: &'static str| async move {
        let text = support::prom::scrape(&format!("http://{admin}/metrics")).await;
        support::prom::value(&text, name, &[("upstream", "api")]).unwrap_or(-1.0)
    };
    until_backends(api, &["a"]).await;

    etcd.stop();
    eventually(WAIT * 3, "the watch is seen failing", || async {
        metric("remora_discovery_watch_up").await == 0.0
    })
    .await;
    // Traffic keeps flowing to the last known endpoints, for a while.
    for _ in 0..20 {
        assert_eq!(hit(api, "/").await.as_deref(), Some("a"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metric("remora_discovery_errors_total").await >= 2.0,
        "the retries count"
    );

    etcd.restart();
    etcd.put("/services/api/b", &json_value(&b, ""));
    until_backends(api, &["a", "b"]).await;
    assert_eq!(metric("remora_discovery_watch_up").await, 1.0);
    let log = remora.log_so_far();
    let count = |needle: &str| log.iter().filter(|line| line.contains(needle)).count();
    assert_eq!(count("etcd discovery failing"), 1, "{log:#?}");
    assert_eq!(count("etcd discovery recovered"), 1, "{log:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_cut_off_past_a_compaction_reads_the_service_afresh() {
    let etcd = Etcd::start();
    let relay = Relay::start(etcd.client).await;
    let (a, b, c) = (http_backend("a"), http_backend("b"), http_backend("c"));
    etcd.put("/services/api/a", &json_value(&a, ""));
    etcd.put("/services/api/junk", "junk");
    let config = yaml("api", &[relay.url()], "api");
    let mut remora = tokio::task::block_in_place(|| ProxyProcess::start(&config, 1));
    let api = remora.listener("api");
    until_backends(api, &["a"]).await;
    let warning = "etcd value describes no endpoint; skipped";
    let line = tokio::task::block_in_place(|| remora.wait_for_log(warning));
    assert!(line.contains("/services/api/junk"), "{line}");

    // Cut off, remora misses changes that are then compacted away: it
    // reads the service afresh when etcd answers again.
    relay.cut();
    tokio::task::block_in_place(|| remora.wait_for_log("etcd discovery failing"));
    etcd.put("/services/api/b", &json_value(&b, ""));
    etcd.delete("/services/api/a");
    etcd.put("/services/api/c", &format!("127.0.0.1:{}", c.addr.port()));
    etcd.compact();
    relay.restore();
    // The fresh read has every change, and the junk it reads again is not
    // warned about again.
    until_backends(api, &["b", "c"]).await;
    let log = remora.log_so_far();
    assert!(!log.iter().any(|line| line.contains(warning)), "{log:#?}");
}

/// How long remora may take to follow an etcd that came back empty: its
/// backoff (5 s at most) and the fresh read.
const BACK_EMPTY_WAIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_back_with_its_data_lost_is_read_afresh() {
    let mut etcd = Etcd::start();
    let (a, b) = (http_backend("a"), http_backend("b"));
    // A store that lived: its revision is past what the fresh one reaches.
    for _ in 0..5 {
        etcd.put("/elsewhere/counter", "x");
    }
    etcd.put("/services/api/a", &json_value(&a, ""));
    let config = yaml("etcd-replaced", &[etcd.url()], "api");
    let mut remora = tokio::task::block_in_place(|| ProxyProcess::start(&config, 1));
    let api = remora.listener("etcd-replaced");
    until_backends(api, &["a"]).await;

    // etcd comes back on the same port with an empty data directory: its
    // revision starts again below the one remora saw last.
    etcd.stop();
    tokio::task::block_in_place(|| remora.wait_for_log("etcd discovery failing"));
    let back = Instant::now();
    tokio::task::block_in_place(|| etcd.wipe_and_restart());
    etcd.put("/services/api/b", &json_value(&b, ""));
    eventually(BACK_EMPTY_WAIT, "requests reach exactly b", || async {
        backends_hit(api, 6).await == set(&["b"])
    })
    .await;
    println!("etcd back empty: b alone after {:?}", back.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_etcd_is_noticed_and_the_endpoints_stay() {
    let etcd = Etcd::start();
    let relay = Relay::start(etcd.client).await;
    let (_a, b, proxy) = serving_a(&etcd, &relay.url(), "etcd-partition").await;
    let api = proxy.upstream("etcd-partition");

    // No byte moves, nothing closes: HTTP/2 keep-alive (10 s, 5 s to
    // answer) ends the silent watch.
    relay.freeze();
    let frozen = Instant::now();
    eventually(
        Duration::from_secs(25),
        "the partition is noticed",
        || async {
            proxy
                .metric(
                    "remora_discovery_watch_up",
                    &[("upstream", "etcd-partition")],
                )
                .await
                == 0.0
        },
    )
    .await;
    println!("partition noticed after {:?}", frozen.elapsed());
    assert_eq!(
        hit(api, "/").await.as_deref(),
        Some("a"),
        "the endpoints stay"
    );

    etcd.put("/services/api/b", &json_value(&b, ""));
    relay.restore();
    until_backends(api, &["a", "b"]).await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_switches_to_etcd_follows_a_new_etcd_section_and_switches_back() {
    let etcd = Etcd::start();
    let relay = Relay::start(etcd.client).await;
    let (a, b, c) = (http_backend("a"), http_backend("b"), http_backend("c"));
    etcd.put("/services/api/b", &json_value(&b, ""));
    let static_a = TestConfig::new()
        .section("etcd", format!("{{ endpoints: [\"{}\"] }}", etcd.url()))
        .upstream(Upstream::to("etcd-reload", [a.addr]).protocol("http"))
        .with("load_balancing", "{ policy: round_robin }")
        .yaml();
    let proxy = Proxy::start(&static_a).await;
    let api = proxy.upstream("etcd-reload");
    until_backends(api, &["a"]).await;

    // To etcd: a serves until the watch's first read, then b.
    assert!(
        proxy
            .reload(&yaml("etcd-reload", &[etcd.url()], "api"))
            .await
    );
    until_backends(api, &["b"]).await;
    // A new etcd section (another endpoint): a new client and watch.
    assert!(
        proxy
            .reload(&yaml("etcd-reload", &[relay.url()], "api"))
            .await
    );
    etcd.put("/services/api/c", &json_value(&c, ""));
    until_backends(api, &["b", "c"]).await;
    relay.cut();
    etcd.delete("/services/api/b");
    eventually(WAIT, "the watch through the relay is down", || async {
        proxy
            .metric("remora_discovery_watch_up", &[("upstream", "etcd-reload")])
            .await
            == 0.0
    })
    .await;
    // The old watch (straight to etcd) was stopped: b stays until the relay heals.
    assert_eq!(backends_hit(api, 6).await, set(&["b", "c"]));
    relay.restore();
    until_backends(api, &["c"]).await;

    // And back to the static list, which the stopped watch cannot undo.
    assert!(proxy.reload(&static_a).await);
    until_backends(api, &["a"]).await;
    etcd.put("/services/api/b", &json_value(&b, ""));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(backends_hit(api, 6).await, set(&["a"]));
    proxy.shutdown().await;
}
