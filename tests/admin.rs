//! The admin listener: `/live`, `/ready`, `/metrics` (request counts and durations by
//! direction / upstream / code, endpoints, connections, proxy errors by kind, per-endpoint
//! tries, in-flight, build info, process metrics), `/config` as
//! JSON with durations as strings, 404 on unknown paths and 405 on anything but GET / HEAD.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::Full;

use support::config::TestConfig;
use support::{Proxy, dead_addr, get, http_backend, prom, send};

const METRIC_WAIT: Duration = Duration::from_secs(2);

fn yaml(name: &str, endpoints: &[SocketAddr]) -> String {
    TestConfig::one_upstream(name, "http", endpoints)
        .with("load_balancing", "{ policy: round_robin }")
        .with("timeouts", "{ connect: 1s, request: 2500ms }")
        .yaml()
}

#[test]
fn prometheus_helper_reads_labels_in_any_order() {
    let text = "# HELP x a counter\n# TYPE x counter\n\
                x{b=\"2\",a=\"1\"} 3\n\
                x{a=\"1\",b=\"3\"} 4\n\
                y 5.5\n\
                z_bucket{q=\"a\\\"b\",le=\"+Inf\"} 7\n";
    assert_eq!(prom::value(text, "x", &[("a", "1"), ("b", "2")]), Some(3.0));
    assert_eq!(prom::value(text, "x", &[("b", "2"), ("a", "1")]), Some(3.0));
    assert_eq!(prom::value(text, "x", &[("b", "3")]), Some(4.0));
    assert_eq!(prom::value(text, "y", &[]), Some(5.5));
    assert_eq!(
        prom::value(text, "z_bucket", &[("q", "a\"b"), ("le", "+Inf")]),
        Some(7.0)
    );
    assert_eq!(prom::value(text, "x", &[("a", "9")]), None);
    assert_eq!(prom::value(text, "missing", &[]), None);
}

#[tokio::test]
async fn live_and_ready_once_started() {
    let backend = http_backend("adm-health");
    let proxy = Proxy::start(&yaml("adm-health", &[backend.addr])).await;
    let live = get(Version::HTTP_11, &proxy.admin_url("/live"))
        .await
        .unwrap();
    assert_eq!(live.status, StatusCode::OK);
    let ready = get(Version::HTTP_11, &proxy.admin_url("/ready"))
        .await
        .unwrap();
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
}

/// `/ready` turns 503 as soon as the drain starts, while `/live` stays 200.
#[tokio::test]
async fn ready_turns_503_while_draining() {
    let backend = http_backend("adm-drain");
    let proxy = Proxy::start(&yaml("adm-drain", &[backend.addr])).await;
    // A request in flight keeps the drain going while /ready is checked.
    let slow_url = format!("http://{}/slow/800", proxy.upstream("adm-drain"));
    let slow = tokio::spawn(async move { get(Version::HTTP_11, &slow_url).await.unwrap() });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while backend.requests() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ready_url = proxy.admin_url("/ready");
    let live_url = proxy.admin_url("/live");
    let drain = tokio::spawn(proxy.shutdown());
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let ready = get(Version::HTTP_11, &ready_url).await.unwrap();
        if ready.status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(ready.body.contains("draining"), "{}", ready.body);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/ready still {}",
            ready.status
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        get(Version::HTTP_11, &live_url).await.unwrap().status,
        StatusCode::OK
    );
    assert_eq!(slow.await.unwrap().status, StatusCode::OK);
    assert_eq!(drain.await.unwrap(), 0, "connections left after the drain");
}

/// N requests through the proxy show up as exactly N in the counter and in the `+Inf` and
/// `10` buckets of the duration histogram; the endpoint gauge equals the endpoint count, and
/// the listener's connection metrics exist.
#[tokio::test]
async fn metrics_count_outbound_requests_and_describe_the_upstream() {
    const N: usize = 7;
    let backends = [
        http_backend("adm-count-a"),
        http_backend("adm-count-b"),
        http_backend("adm-count-c"),
    ];
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let proxy = Proxy::start(&yaml("adm-count", &addrs)).await;
    let url = format!("http://{}/", proxy.upstream("adm-count"));
    for _ in 0..N {
        assert_eq!(
            get(Version::HTTP_11, &url).await.unwrap().status,
            StatusCode::OK
        );
    }

    let metrics = proxy.admin_url("/metrics");
    let ok = [
        ("direction", "outbound"),
        ("upstream", "adm-count"),
        ("code", "200"),
    ];
    prom::assert_value_within(
        &metrics,
        "remora_requests_total",
        &ok,
        N as f64,
        METRIC_WAIT,
    )
    .await;

    let reply = get(Version::HTTP_11, &metrics).await.unwrap();
    assert!(
        reply.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
        "{:?}",
        reply.headers
    );
    let text = reply.body;
    let bucket = |le: &'static str| {
        let mut labels = ok.to_vec();
        labels.push(("le", le));
        prom::value(&text, "remora_request_duration_seconds_bucket", &labels)
    };
    let fastest = bucket("0.0005").expect("le=\"0.0005\" bucket");
    assert!(fastest <= N as f64);
    assert_eq!(bucket("10"), Some(N as f64), "le=\"10\" bucket");
    assert_eq!(bucket("+Inf"), Some(N as f64), "le=\"+Inf\" bucket");
    assert_eq!(
        prom::value(&text, "remora_request_duration_seconds_count", &ok),
        Some(N as f64)
    );
    let sum = prom::value(&text, "remora_request_duration_seconds_sum", &ok).expect("sum");
    assert!(sum > 0.0 && sum < N as f64 * 2.5, "duration sum {sum}");

    assert_eq!(
        prom::value(&text, "remora_endpoints", &[("upstream", "adm-count")]),
        Some(3.0)
    );
    let listener = [("direction", "outbound"), ("listener", "adm-count")];
    let total = prom::value(&text, "remora_connections_total", &listener)
        .expect("remora_connections_total for the listener");
    assert!(
        total >= 1.0 && total <= N as f64,
        "connections_total {total}"
    );
    let open = prom::value(&text, "remora_connections_open", &listener)
        .expect("remora_connections_open for the listener");
    assert!((0.0..=total).contains(&open), "connections_open {open}");
}

/// Requests through the inbound listener are counted with `direction="inbound"` under the
/// service's name, not as outbound.
#[tokio::test]
async fn inbound_requests_are_counted_as_inbound() {
    let app = http_backend("adm-inbound-app");
    let yaml = format!(
        "service: {{ name: adm-inbound-svc, port: {}, protocol: http }}\n\
         inbound: {{ listen: 127.0.0.1:0 }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         logging: {{ access_log: false }}\n",
        app.addr.port()
    );
    let proxy = Proxy::start(&yaml).await;
    for _ in 0..3 {
        let reply = get(Version::HTTP_11, &format!("http://{}/", proxy.inbound()))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    }
    let metrics = proxy.admin_url("/metrics");
    let inbound = [
        ("direction", "inbound"),
        ("upstream", "adm-inbound-svc"),
        ("code", "200"),
    ];
    prom::assert_value_within(
        &metrics,
        "remora_requests_total",
        &inbound,
        3.0,
        METRIC_WAIT,
    )
    .await;
    let text = prom::scrape(&metrics).await;
    assert_eq!(
        prom::value(
            &text,
            "remora_requests_total",
            &[("direction", "outbound"), ("upstream", "adm-inbound-svc")]
        ),
        None
    );
    assert!(
        prom::value(
            &text,
            "remora_connections_total",
            &[("direction", "inbound"), ("listener", "inbound")]
        )
        .is_some_and(|v| v >= 1.0),
        "inbound listener connections"
    );
}

/// A proxy-made 502 is counted under code 502 and as a proxy error of kind connect_failed.
#[tokio::test]
async fn proxy_errors_are_counted_by_kind_and_code() {
    let proxy = Proxy::start(&yaml("adm-errors", &[dead_addr()])).await;
    let reply = get(
        Version::HTTP_11,
        &format!("http://{}/", proxy.upstream("adm-errors")),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);

    let metrics = proxy.admin_url("/metrics");
    let errors = prom::wait_for_value(
        &metrics,
        "remora_proxy_errors_total",
        &[
            ("direction", "outbound"),
            ("upstream", "adm-errors"),
            ("kind", "connect_failed"),
        ],
        1.0,
        METRIC_WAIT,
    )
    .await;
    assert_eq!(errors, 1.0, "remora_proxy_errors_total");
    let text = prom::scrape(&metrics).await;
    assert_eq!(
        prom::value(
            &text,
            "remora_requests_total",
            &[
                ("direction", "outbound"),
                ("upstream", "adm-errors"),
                ("code", "502")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        prom::value(
            &text,
            "remora_requests_total",
            &[("upstream", "adm-errors"), ("code", "200")]
        ),
        None
    );
}

#[tokio::test]
async fn config_is_json_with_human_durations() {
    let backend = http_backend("adm-config");
    let proxy = Proxy::start(&yaml("adm-config", &[backend.addr])).await;
    let reply = get(Version::HTTP_11, &proxy.admin_url("/config"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/json");
    let config: serde_json::Value = serde_json::from_str(&reply.body).expect("JSON");
    let upstream = &config["upstreams"][0];
    assert_eq!(upstream["name"], "adm-config");
    assert_eq!(upstream["timeouts"]["connect"], "1s");
    assert_eq!(upstream["timeouts"]["request"], "2s 500ms");
    assert_eq!(upstream["timeouts"]["idle"], "1m");
    assert_eq!(upstream["load_balancing"]["policy"], "round_robin");
    assert_eq!(
        upstream["discovery"]["static"][0],
        backend.addr.to_string(),
        "{upstream}"
    );
    assert_eq!(config["runtime"]["drain_timeout"], "10s");
    assert_eq!(config["service"]["name"], "test");
}

#[tokio::test]
async fn unknown_path_is_404_and_other_methods_405() {
    let backend = http_backend("adm-routes");
    let proxy = Proxy::start(&yaml("adm-routes", &[backend.addr])).await;
    let missing = get(Version::HTTP_11, &proxy.admin_url("/nope"))
        .await
        .unwrap();
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    for path in ["/metrics", "/ready", "/config"] {
        let request = Request::post(proxy.admin_url(path))
            .body(Full::new(Bytes::from_static(b"x")))
            .unwrap();
        let reply = send(Version::HTTP_11, request).await.unwrap();
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "POST {path}");
    }

    let head = Request::head(proxy.admin_url("/live"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        send(Version::HTTP_11, head).await.unwrap().status,
        StatusCode::OK
    );
}

/// Tries are counted per endpoint (round robin: evenly) with a latency histogram; every HTTP
/// listener has an in-flight gauge (no concurrency limit configured here) that counts a slow
/// request while it runs and returns to 0; build info is 1; the process metrics are plausible.
#[tokio::test]
async fn metrics_per_endpoint_in_flight_build_and_process() {
    let backends = [http_backend("adm-ep-a"), http_backend("adm-ep-b")];
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let proxy = Proxy::start(&yaml("adm-ep", &addrs)).await;
    let base = format!("http://{}", proxy.upstream("adm-ep"));
    for _ in 0..4 {
        let reply = get(Version::HTTP_11, &format!("{base}/")).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    }
    let metrics = proxy.admin_url("/metrics");
    let slow_url = format!("{base}/slow/600");
    let slow = tokio::spawn(async move { get(Version::HTTP_11, &slow_url).await.unwrap() });
    let listener = [("direction", "outbound"), ("upstream", "adm-ep")];
    prom::assert_value_within(
        &metrics,
        "remora_requests_in_flight",
        &listener,
        1.0,
        METRIC_WAIT,
    )
    .await;
    let text = prom::scrape(&metrics).await;
    for addr in &addrs {
        let endpoint = [("upstream", "adm-ep"), ("endpoint", &addr.to_string()[..])];
        assert_eq!(
            prom::value(&text, "remora_endpoint_requests_total", &endpoint),
            Some(2.0),
            "{addr}"
        );
        let mut inf = endpoint.to_vec();
        inf.push(("le", "+Inf"));
        assert_eq!(
            prom::value(
                &text,
                "remora_endpoint_request_duration_seconds_bucket",
                &inf
            ),
            Some(2.0),
            "{addr}"
        );
    }
    let version = [("version", env!("CARGO_PKG_VERSION"))];
    assert_eq!(prom::value(&text, "remora_build_info", &version), Some(1.0));
    if cfg!(target_os = "linux") {
        let value = |name| prom::value(&text, name, &[]).unwrap_or_else(|| panic!("{name}"));
        assert!(value("process_resident_memory_bytes") > 1e6);
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_cpu_seconds_total") >= 0.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = value("process_start_time_seconds");
        assert!(
            start <= now + 1.0 && start > now - 3600.0,
            "start {start}, now {now}"
        );
    }

    assert_eq!(slow.await.unwrap().status, StatusCode::OK);
    prom::assert_value_within(
        &metrics,
        "remora_requests_in_flight",
        &listener,
        0.0,
        METRIC_WAIT,
    )
    .await;
}
