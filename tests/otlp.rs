//! OTLP span export across two remora hops (app → remora A → remora B → app)
//! into a test collector that decodes the real protobuf payload: one CLIENT
//! span on A and one SERVER span on B, in the caller's trace, parented hop by
//! hop, with the HTTP attributes and each proxy's `service.name`. And with a
//! slow or stopped collector, requests are not slowed and spans are dropped
//! and counted.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::Full;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

use support::config::{TestConfig, Upstream};
use support::proxy::two_hops;
use support::{Proxy, get, http_backend, otlp_collector, prom, send};

fn outbound_yaml(app: SocketAddr, tracing: &str) -> String {
    TestConfig::new()
        .service("{ name: caller }")
        .upstream(Upstream::to("app", [app]))
        .section("tracing", tracing)
        .yaml()
}

#[tokio::test]
async fn two_hops_export_parented_client_and_server_spans() {
    let collector = otlp_collector(Duration::ZERO);
    let tracing = format!(
        "{{ otlp: {{ endpoint: \"{}\", flush_interval: 20ms }} }}",
        collector.endpoint()
    );
    let app = http_backend("app");
    let (a, b) = two_hops(app.addr, &tracing).await;

    let client = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let request = Request::get(format!("http://{}/headers", a.upstream("b")))
        .header("traceparent", client)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = send(Version::HTTP_11, request).await.unwrap();
    assert_eq!(reply.status, 200);

    let spans = collector.wait_for(2).await;
    assert_eq!(spans.len(), 2, "{spans:?}");
    let on_a = spans
        .iter()
        .find(|s| s.service == "caller")
        .expect("A's span");
    let on_b = spans.iter().find(|s| s.service == "app").expect("B's span");
    let trace_id = 0x4bf92f3577b34da6a3ce929d0e0e4736u128.to_be_bytes();
    assert_eq!(on_a.span.trace_id, trace_id);
    assert_eq!(on_b.span.trace_id, trace_id);
    assert_eq!(on_a.span.kind, SpanKind::Client as i32);
    assert_eq!(on_b.span.kind, SpanKind::Server as i32);
    assert_eq!(
        on_a.span.parent_span_id,
        0x00f067aa0ba902b7u64.to_be_bytes(),
        "A's parent is the client's span"
    );
    assert_eq!(
        on_b.span.parent_span_id, on_a.span.span_id,
        "B's parent is A's span"
    );
    assert!(on_a.span.end_time_unix_nano >= on_a.span.start_time_unix_nano);

    for span in [on_a, on_b] {
        assert_eq!(span.attr("http.request.method").as_deref(), Some("GET"));
        assert_eq!(span.attr("url.path").as_deref(), Some("/headers"));
        assert_eq!(
            span.attr("http.response.status_code").as_deref(),
            Some("200")
        );
        assert_eq!(
            span.attr("network.peer.address").as_deref(),
            Some("127.0.0.1")
        );
        assert!(span.attr("server.address").is_some(), "{span:?}");
        assert_eq!(span.attr("error.type"), None);
        assert_eq!(span.attr("remora.retry_count").as_deref(), Some("0"));
    }
    assert_eq!(on_a.attr("remora.upstream").as_deref(), Some("b"));
    assert_eq!(on_a.attr("remora.endpoint"), Some(b.inbound().to_string()));
    assert_eq!(on_b.attr("remora.upstream").as_deref(), Some("app"));
    assert_eq!(on_b.attr("remora.endpoint"), Some(app.addr.to_string()));
}

#[tokio::test]
async fn error_type_when_remora_answers_and_unsampled_traces_are_not_exported() {
    let collector = otlp_collector(Duration::ZERO);
    // Nothing listens on this port: remora answers 502 itself.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = Proxy::start(&outbound_yaml(
        closed,
        &format!(
            "{{ otlp: {{ endpoint: \"{}\", flush_interval: 20ms }} }}",
            collector.endpoint()
        ),
    ))
    .await;
    let unsampled = Request::get(format!("http://{}/", proxy.upstream("app")))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(Version::HTTP_11, unsampled).await.unwrap();
    let reply = get(
        Version::HTTP_11,
        &format!("http://{}/x", proxy.upstream("app")),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 502);
    let spans = collector.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let spans_now = collector.spans();
    assert_eq!(
        spans_now.len(),
        1,
        "only the sampled request: {spans_now:?}"
    );
    assert_eq!(
        spans[0].attr("error.type").as_deref(),
        Some("connect_failed")
    );
    assert_eq!(
        spans[0].attr("http.response.status_code").as_deref(),
        Some("502")
    );
    assert!(spans[0].span.parent_span_id.is_empty(), "a new trace");
}

#[tokio::test]
async fn a_retried_request_has_one_span_with_its_retry_count() {
    let collector = otlp_collector(Duration::ZERO);
    let app = http_backend("otlp-retried");
    let yaml = format!(
        "service: {{ name: caller }}\n\
         upstreams:\n  - name: app\n    listen: 127.0.0.1:0\n    discovery: {{ static: [{app}] }}\n    \
         retries: {{ attempts: 3, on: [\"503\"], backoff: {{ base: 1ms, max: 2ms }} }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         tracing: {{ otlp: {{ endpoint: \"{endpoint}\", flush_interval: 20ms }} }}\n\
         logging: {{ access_log: false }}\n",
        app = app.addr,
        endpoint = collector.endpoint(),
    );
    let proxy = Proxy::start(&yaml).await;
    let url = format!("http://{}/status/503", proxy.upstream("app"));
    assert_eq!(get(Version::HTTP_11, &url).await.unwrap().status, 503);
    let spans = collector.wait_for(1).await;
    assert_eq!(spans[0].attr("remora.retry_count").as_deref(), Some("2"));
    assert_eq!(
        spans[0].attr("http.response.status_code").as_deref(),
        Some("503")
    );
}

/// Time for `count` sequential requests through `proxy`.
async fn time_requests(proxy: &Proxy, count: usize) -> Duration {
    let url = format!("http://{}/", proxy.upstream("app"));
    let started = Instant::now();
    for _ in 0..count {
        let reply = get(Version::HTTP_11, &url).await.unwrap();
        assert_eq!(reply.status, 200);
    }
    started.elapsed()
}

#[tokio::test]
async fn a_slow_or_stopped_collector_never_slows_requests_and_drops_are_counted() {
    let app = http_backend("app");
    let untraced = Proxy::start(&outbound_yaml(app.addr, "{}")).await;
    time_requests(&untraced, 20).await; // warm-up
    let baseline = time_requests(&untraced, 200).await;

    // Slow: every export takes 5 s, so the small queue fills up.
    let slow = otlp_collector(Duration::from_secs(5));
    let proxy = Proxy::start(&outbound_yaml(
        app.addr,
        &format!(
            "{{ otlp: {{ endpoint: \"{}\", max_queue: 16, batch_size: 8, flush_interval: 10ms }} }}",
            slow.endpoint()
        ),
    ))
    .await;
    let with_slow = time_requests(&proxy, 200).await;

    // Stopped: nothing listens at the endpoint, every export fails.
    let stopped = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = Proxy::start(&outbound_yaml(
        app.addr,
        &format!(
            "{{ otlp: {{ endpoint: \"http://{stopped}/v1/traces\", flush_interval: 10ms }} }}"
        ),
    ))
    .await;
    let with_stopped = time_requests(&proxy, 200).await;

    let limit = baseline * 3 + Duration::from_millis(500);
    assert!(
        with_slow < limit && with_stopped < limit,
        "baseline {baseline:?}, slow collector {with_slow:?}, stopped collector {with_stopped:?}"
    );

    // Metrics are process-wide: the recorder is shared by the proxies of this binary.
    let metrics = proxy.admin_url("/metrics");
    let queue_full = prom::value(
        &prom::scrape(&metrics).await,
        "remora_spans_dropped_total",
        &[("reason", "queue_full")],
    )
    .unwrap_or(0.0);
    assert!(queue_full >= 150.0, "queue_full drops: {queue_full}");
    let mut export_failed = 0.0;
    for _ in 0..100 {
        let text = prom::scrape(&metrics).await;
        export_failed = prom::value(
            &text,
            "remora_spans_dropped_total",
            &[("reason", "export_failed")],
        )
        .unwrap_or(0.0);
        if export_failed >= 200.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        export_failed >= 200.0,
        "export_failed drops: {export_failed}"
    );
    let text = prom::scrape(&metrics).await;
    assert!(text.contains("remora_spans_exported_total"), "{text}");
}

/// The spans of the last `flush_interval` are exported at shutdown, not lost: with a minute
/// between flushes, three requests' spans reach the collector when the drain ends.
#[tokio::test]
async fn queued_spans_are_exported_at_shutdown() {
    let collector = otlp_collector(Duration::ZERO);
    let app = http_backend("app");
    let tracing = format!(
        "{{ otlp: {{ endpoint: \"{}\", flush_interval: 60s }} }}",
        collector.endpoint()
    );
    let proxy = Proxy::start(&outbound_yaml(app.addr, &tracing)).await;
    for _ in 0..3 {
        let reply = get(
            Version::HTTP_11,
            &format!("http://{}/", proxy.upstream("app")),
        )
        .await
        .unwrap();
        assert_eq!(reply.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        collector.spans().len(),
        0,
        "exported before the flush interval"
    );
    let started = Instant::now();
    proxy.shutdown().await;
    assert_eq!(
        collector.spans().len(),
        3,
        "spans exported by the end of the shutdown"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
