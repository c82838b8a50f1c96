//! `docs/metrics.md` against the real `/metrics`: a proxy using every feature (an HTTP
//! upstream with retries, breaker, rate limit, concurrency limit, a 0 % fault, outlier
//! detection, a dead endpoint and a mirrored route; a TCP upstream with health checks; a zoned one whose dead endpoint
//! fails its checks and is answered by its fallback; inbound with adaptive
//! concurrency, a shared rate limit and `inbound.jwt` (a gRPC call it refuses); registration with
//! the Consul stand-in) is driven until the event-only
//! metrics have happened, then every exported metric must be in the table with the same type
//! and label names, and every metric in the table must be exported — except those the table
//! marks *Appears after …*, which may be missing but must match when present; every exported
//! family must have a `# HELP` line (from the same catalogue as the table). A second proxy
//! with mesh mTLS adds the TLS and authorization metrics.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::consul::ConsulStandIn;
use support::proxy::ConfigFile;
use support::{Proxy, dead_addr, get, http_backend, http_client, prom, tcp_echo, tls};

/// A metric as documented or exported: type and label names.
#[derive(Debug, Clone, PartialEq)]
struct Shape {
    kind: String,
    labels: BTreeSet<String>,
}

/// The table of `docs/metrics.md`: name → (shape, appears only after an event).
fn documented() -> BTreeMap<String, (Shape, bool)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md"))
        .expect("docs/metrics.md");
    let backticked = |cell: &str| -> Vec<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    };
    let mut metrics = BTreeMap::new();
    for line in doc.lines().filter(|line| line.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // ["", name, type, labels, meaning, ""]
        assert_eq!(cells.len(), 6, "table row with other than 4 cells: {line}");
        let name = backticked(cells[1]).remove(0);
        let shape = Shape {
            kind: cells[2].to_owned(),
            labels: backticked(cells[3]).into_iter().collect(),
        };
        let after_event = cells[4].contains("*Appears after");
        assert!(
            metrics.insert(name.clone(), (shape, after_event)).is_none(),
            "{name} documented twice"
        );
    }
    assert!(metrics.len() > 20, "table not found in docs/metrics.md");
    metrics
}

/// Every metric in a scrape: `# TYPE` lines give name and type, samples give label names
/// (a histogram's `_bucket`, `_sum` and `_count` samples count for the histogram, without `le`).
fn exported(text: &str) -> BTreeMap<String, Shape> {
    let mut metrics: BTreeMap<String, Shape> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|rest| {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            let shape = Shape {
                kind: kind.trim().to_owned(),
                labels: BTreeSet::new(),
            };
            (name.to_owned(), shape)
        })
        .collect();
    for sample in prom::parse(text) {
        let name = [sample.name.as_str()]
            .into_iter()
            .chain(["_bucket", "_sum", "_count"].map(|s| sample.name.strip_suffix(s).unwrap_or("")))
            .find(|name| metrics.contains_key(*name))
            .unwrap_or_else(|| panic!("sample {} has no # TYPE line", sample.name))
            .to_owned();
        let shape = metrics.get_mut(&name).expect("found above");
        shape
            .labels
            .extend(sample.labels.into_keys().filter(|key| key != "le"));
    }
    metrics
}

#[tokio::test]
async fn every_exported_metric_is_documented_and_every_documented_one_exported() {
    let backend = http_backend("cat-http");
    let app = http_backend("cat-app");
    let echo = tcp_echo();
    let dead = dead_addr();
    let consul = ConsulStandIn::start();
    // An HTTP/2 origin that refuses its first stream: one transparent resend.
    let h2 = support::h2_origin(|number, _, mut respond| async move {
        if number == 0 {
            respond.send_reset(h2::Reason::REFUSED_STREAM);
        } else {
            support::h2_origin::answer(respond, 200);
        }
    });
    // A JWKS without keys: loaded (counted), and the validations registered.
    let jwks_file = ConfigFile::new(r#"{"keys":[]}"#);
    let jwks = jwks_file.path.display();
    let yaml = format!(
        "service: {{ name: cat-svc, port: {app}, protocol: http, register: true, locality: {{ zone: z1 }} }}\n\
         consul: {{ address: \"{consul}\" }}\n\
         inbound: {{ listen: 127.0.0.1:0, adaptive_concurrency: {{}}, \
         rate_limit: {{ requests_per_second: 1000, scope: service }}, \
         jwt: {{ providers: [{{ name: cat-jwt, issuer: cat, jwks: {{ file: {jwks} }} }}] }} }}\n\
         upstreams:\n\
         \x20 - name: cat-http\n    listen: 127.0.0.1:0\n    protocol: http\n    \
         discovery: {{ static: [{backend}, {dead}] }}\n    \
         load_balancing: {{ policy: round_robin }}\n    \
         retries: {{ attempts: 2, on: [\"503\"], backoff: {{ base: 1ms, max: 2ms }} }}\n    \
         circuit_breaker: {{ consecutive_failures: 2, open_for: 30s }}\n    \
         rate_limit: {{ requests_per_second: 1000, burst: 1000 }}\n    \
         max_concurrent_requests: 100\n    \
         fault: {{ abort: {{ percent: 0, status: 500 }} }}\n    \
         outlier_detection: {{ consecutive_failures: 1, base_ejection: 30s, max_ejection_percent: 50 }}\n    \
         backends: {{ side: {{ static: [{backend}] }}, shadow: {{ static: [{backend}] }} }}\n    \
         routes: [{{ name: cat-route, match: {{ headers: [{{ name: x-cat-route, present: true }}] }}, \
         backend: side, mirror: {{ backend: shadow }} }}]\n\
         \x20 - name: cat-tcp\n    listen: 127.0.0.1:0\n    protocol: tcp\n    \
         discovery: {{ static: [{echo}] }}\n    \
         health_check: {{ tcp: {{}}, interval: 100ms }}\n\
         \x20 - name: cat-fallback\n    listen: 127.0.0.1:0\n    protocol: http\n    \
         discovery: {{ static: [{{ address: {dead}, zone: z1 }}] }}\n    \
         health_check: {{ tcp: {{}}, interval: 100ms, unhealthy_threshold: 1 }}\n    \
         load_balancing: {{ panic_threshold: 0, locality: prefer_local }}\n    \
         fallback: {{ response: {{ status: 200 }} }}\n\
         \x20 - name: cat-h2\n    listen: 127.0.0.1:0\n    protocol: http2\n    \
         discovery: {{ static: [{h2}] }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         transparent: {{ outbound_listen: 127.0.0.1:0, unmatched: refuse }}\n\
         logging: {{ access_log: false }}\n\
         tracing: {{ otlp: {{ endpoint: \"http://{dead}/v1/traces\" }} }}\n",
        app = app.addr.port(),
        backend = backend.addr,
        consul = consul.url(),
        h2 = h2.addr,
    );
    let proxy = Proxy::start(&yaml).await;
    // A second sidecar with mesh mTLS and authorization (the recorder is process-wide, so its
    // metrics show on the first one's /metrics too).
    let ca = tls::Ca::new("catalogue CA");
    let tls_files = tls::TlsFiles::new(&ca.leaf("cat-tls", 1), &ca);
    let _tls_proxy = Proxy::start(&format!(
        "service: {{ name: cat-tls, port: {app} }}\n\
         inbound: {{ listen: 127.0.0.1:0 }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         logging: {{ access_log: false }}\n{}",
        tls_files.yaml("  authorization: { deny: [web] }\n"),
        app = app.addr.port(),
    ))
    .await;

    // A dead endpoint fails its health check: the fallback answers.
    let fallback = format!("http://{}/", proxy.upstream("cat-fallback"));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !get(Version::HTTP_11, &fallback)
        .await
        .unwrap()
        .headers
        .contains_key("x-remora-fallback")
    {
        assert!(std::time::Instant::now() < deadline, "no fallback answer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Round robin over a live and a dead endpoint: a failed connect, resent to the live one.
    let http = format!("http://{}", proxy.upstream("cat-http"));
    for _ in 0..2 {
        let reply = get(Version::HTTP_11, &format!("{http}/")).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    }
    // A routed request (route metrics) with a mirrored copy.
    let routed = http_client::<Full<Bytes>>(Version::HTTP_11)
        .request(
            Request::get(format!("{http}/"))
                .header("x-cat-route", "1")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(routed.status(), StatusCode::OK);
    routed.into_body().collect().await.unwrap();
    // 503s: retried, an outlier ejection, then the breaker opens and answers itself.
    for _ in 0..4 {
        get(Version::HTTP_11, &format!("{http}/status/503"))
            .await
            .unwrap();
    }
    let refused_once = format!("http://{}/", proxy.upstream("cat-h2"));
    let refused_once = get(Version::HTTP_2, &refused_once).await.unwrap();
    assert_eq!(refused_once.status, StatusCode::OK);
    let inbound = get(Version::HTTP_11, &format!("http://{}/", proxy.inbound()))
        .await
        .unwrap();
    assert_eq!(inbound.status, StatusCode::OK);
    // A gRPC call remora refuses itself (a token that is none): counted by its grpc-status.
    let refused = http_client::<Full<Bytes>>(Version::HTTP_11)
        .request(
            Request::post(format!("http://{}/cat.Svc/Call", proxy.inbound()))
                .header("content-type", "application/grpc")
                .header("authorization", "Bearer not-a-token")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(refused.headers()["grpc-status"], "16", "{refused:?}");
    refused.into_body().collect().await.unwrap();
    let mut tcp = TcpStream::connect(proxy.upstream("cat-tcp")).await.unwrap();
    tcp.write_all(b"ping").await.unwrap();
    let mut pong = [0u8; 4];
    tcp.read_exact(&mut pong).await.unwrap();
    drop(tcp);
    // A request hyper cannot parse: 400, counted as a client protocol error.
    let mut malformed = TcpStream::connect(proxy.upstream("cat-http"))
        .await
        .unwrap();
    malformed
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    malformed.read_to_end(&mut answer).await.unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    let metrics_url = proxy.admin_url("/metrics");
    let labels = [
        ("direction", "outbound"),
        ("listener", "cat-http"),
        ("kind", "malformed"),
    ];
    prom::assert_value_within(
        &metrics_url,
        "remora_client_protocol_errors_total",
        &labels,
        1.0,
        Duration::from_secs(2),
    )
    .await;
    prom::assert_value_within(
        &metrics_url,
        "remora_tcp_sent_bytes_total",
        &[("upstream", "cat-tcp")],
        4.0,
        Duration::from_secs(2),
    )
    .await;
    let circuit_open = prom::wait_for_value(
        &metrics_url,
        "remora_proxy_errors_total",
        &[("upstream", "cat-http"), ("kind", "circuit_open")],
        1.0,
        Duration::from_secs(2),
    )
    .await;
    assert!(circuit_open >= 1.0, "the breaker never answered");
    prom::assert_value_within(
        &metrics_url,
        "remora_consul_registered",
        &[("service", "cat-svc-sidecar-proxy")],
        1.0,
        Duration::from_secs(2),
    )
    .await;

    let text = prom::scrape(&metrics_url).await;
    let exported = exported(&text);
    let documented = documented();
    let mut problems = Vec::new();
    for (name, shape) in &exported {
        match documented.get(name) {
            None => problems.push(format!("{name} is exported but not documented")),
            Some((doc, _)) if doc != shape => {
                problems.push(format!("{name}: documented {doc:?}, exported {shape:?}"))
            }
            Some(_) => {}
        }
    }
    for name in exported.keys() {
        if !text.contains(&format!("# HELP {name} ")) {
            problems.push(format!("{name} has no # HELP line"));
        }
    }
    for (name, (_, after_event)) in &documented {
        // Discovery metrics need a failing DNS server or a registry watch
        // (Consul, etcd), etcd registration an etcd (tests/etcd_registration.rs
        // checks them), Consul failover a second datacenter
        // (tests/consul_failover.rs); every other event happened above.
        let may_be_missing = *after_event
            && matches!(
                name.as_str(),
                "remora_discovery_errors_total"
                    | "remora_discovery_last_update_timestamp_seconds"
                    | "remora_consul_failover_datacenter"
                    | "remora_discovery_watch_up"
                    | "remora_etcd_registrations_total"
                    | "remora_etcd_registered"
            );
        if !exported.contains_key(name) && !may_be_missing {
            problems.push(format!("{name} is documented but not exported"));
        }
    }
    assert!(problems.is_empty(), "{}\n\n{text}", problems.join("\n"));
}
