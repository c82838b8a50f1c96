//! `/metrics` read by the Prometheus Python client's own parsers
//! (`python3-prometheus-client`): the Prometheus text format, and OpenMetrics
//! when the scraper asks for it as Prometheus does. Every family carries the
//! `# HELP` of the catalogue (`src/telemetry/catalogue.rs`, the source of
//! `docs/metrics.md`), and the request-duration histograms (listener and
//! route) carry the trace id of a sampled request as the exemplar of the
//! bucket its duration fell in.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::Full;
use serde_json::Value;

use remora::telemetry::catalogue::CATALOGUE;
use support::config::{TestConfig, Upstream};
use support::prom::{self, Format};
use support::{Proxy, http_backend, send};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Families by name, as the parser returned them.
fn by_name(families: &Value) -> BTreeMap<String, Value> {
    families
        .as_array()
        .expect("a list of families")
        .iter()
        .map(|family| (family["name"].as_str().unwrap().to_owned(), family.clone()))
        .collect()
}

/// The catalogue's help of a family (OpenMetrics names counters without
/// `_total`).
fn catalogue_help(family: &str) -> Option<String> {
    CATALOGUE
        .iter()
        .find(|metric| metric.name == family || metric.name.strip_suffix("_total") == Some(family))
        .map(|metric| metric.help())
}

fn assert_every_family_has_the_catalogue_help(families: &BTreeMap<String, Value>, what: &str) {
    assert!(
        families.len() > 10,
        "{what}: only {} families",
        families.len()
    );
    for (name, family) in families {
        let help = family["help"].as_str().unwrap_or_default();
        assert_eq!(
            Some(help.to_owned()),
            catalogue_help(name),
            "{what}: HELP of {name}"
        );
    }
}

#[tokio::test]
async fn both_formats_parse_with_help_and_openmetrics_carries_trace_exemplars() {
    let backend = http_backend("exposition");
    let yaml = TestConfig::new()
        .upstream(Upstream::to("expo", [backend.addr]).protocol("http").with(
            "routes",
            "[{ name: slow-route, match: { path: { prefix: /slow } }, backend: default }]",
        ))
        .yaml();
    let proxy = Proxy::start(&yaml).await;
    let base = format!("http://{}", proxy.upstream("expo"));
    for path in ["/", "/slow/30"] {
        let request = Request::get(format!("{base}{path}"))
            .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let reply = send(Version::HTTP_11, request).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{path}");
    }
    let metrics_url = proxy.admin_url("/metrics");
    prom::assert_value_within(
        &metrics_url,
        "remora_requests_total",
        &[("upstream", "expo"), ("code", "200")],
        2.0,
        Duration::from_secs(2),
    )
    .await;

    let text = prom::scrape(&metrics_url).await;
    let prometheus = by_name(&prom::parse_with_prometheus_client(
        &text,
        Format::Prometheus,
    ));
    assert_every_family_has_the_catalogue_help(&prometheus, "text format");
    assert!(prometheus.contains_key("remora_request_duration_seconds"));

    let (content_type, open) = prom::scrape_openmetrics(&metrics_url).await;
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    let openmetrics = by_name(&prom::parse_with_prometheus_client(
        &open,
        Format::OpenMetrics,
    ));
    assert_every_family_has_the_catalogue_help(&openmetrics, "OpenMetrics");
    assert_eq!(openmetrics["remora_requests"]["type"], "counter");

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for (family, route, at_least) in [
        ("remora_request_duration_seconds", None, 0.0),
        (
            "remora_route_request_duration_seconds",
            Some("slow-route"),
            0.03,
        ),
    ] {
        let buckets: Vec<&Value> = openmetrics[family]["samples"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|sample| sample["labels"]["upstream"] == "expo")
            .filter(|sample| route.is_none_or(|route| sample["labels"]["route"] == route))
            .filter(|sample| !sample["exemplar"].is_null())
            .collect();
        assert!(!buckets.is_empty(), "no exemplar in {family}:\n{open}");
        for bucket in buckets {
            let exemplar = &bucket["exemplar"];
            assert_eq!(exemplar["labels"]["trace_id"], TRACE_ID, "{bucket}");
            let value = exemplar["value"].as_f64().unwrap();
            let le = match bucket["labels"]["le"].as_str().unwrap() {
                "+Inf" => f64::INFINITY,
                bound => bound.parse::<f64>().unwrap(),
            };
            assert!(value >= at_least && value <= le, "{bucket}");
            let timestamp = exemplar["timestamp"].as_f64().unwrap();
            assert!((now - 60.0..=now + 1.0).contains(&timestamp), "{bucket}");
        }
    }
    // Without an OpenMetrics Accept, no exemplar is rendered.
    assert!(!text.contains("trace_id"), "{text}");
}
