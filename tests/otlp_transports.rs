//! The OTLP exporter's transports against a collector that decodes the real
//! payload (opentelemetry-proto types; gRPC served by tonic's own server):
//! OTLP/HTTP over `https://` with a CA file, headers from a value and from a
//! file, gzip; OTLP/gRPC over h2c with gzip and over TLS (ALPN h2); an
//! `https://` collector outside the system roots refused; and the
//! OpenTelemetry environment variables (`OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `_PROTOCOL`, `_HEADERS`) used by the real binary when the config sets
//! none.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Version;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use support::config::{TestConfig, Upstream};
use support::otlp::{Collector, CollectorOptions, otlp_collector_with};
use support::proxy::ProxyProcess;
use support::{Proxy, get, http_backend, prom, tls};

/// A TLS server configuration for 127.0.0.1 with a leaf of `ca`.
fn server_tls(ca: &tls::Ca) -> rustls::ServerConfig {
    let leaf = ca.leaf_for_ip([127, 0, 0, 1].into(), 7);
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
        )
        .unwrap()
}

fn yaml(service: &str, app: SocketAddr, otlp: &str) -> String {
    TestConfig::new()
        .service(&format!("{{ name: {service} }}"))
        .upstream(Upstream::to("app", [app]))
        .section(
            "tracing",
            format!("{{ otlp: {{ flush_interval: 20ms, {otlp} }} }}"),
        )
        .yaml()
}

/// Sends `count` requests through `proxy`'s `app` upstream.
async fn requests(proxy: &Proxy, count: usize) {
    for _ in 0..count {
        let reply = get(
            Version::HTTP_11,
            &format!("http://{}/", proxy.upstream("app")),
        )
        .await
        .unwrap();
        assert_eq!(reply.status, 200);
    }
}

fn header(collector: &Collector, name: &str) -> Vec<String> {
    (collector.request_headers().iter())
        .filter_map(|headers| headers.get(name)?.to_str().ok().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn http_protobuf_over_https_with_a_ca_file_headers_and_gzip() {
    let ca = tls::Ca::new("collector CA");
    let collector = otlp_collector_with(CollectorOptions {
        tls: Some(server_tls(&ca)),
        ..Default::default()
    });
    let dir = tls::TlsFiles::new(&ca.leaf("unused", 1), &ca);
    let key_file = dir.dir.join("api-key");
    std::fs::write(&key_file, "  k-from-file\n").unwrap();
    let app = http_backend("otlp-https-app");
    let proxy = Proxy::start(&yaml(
        "otlp-https",
        app.addr,
        &format!(
            "endpoint: \"{}\", ca_file: \"{}\", compression: gzip, \
             headers: [{{ name: x-api-key, value_file: \"{}\" }}, {{ name: x-team, value: obs }}]",
            collector.endpoint(),
            dir.dir.join("ca.pem").display(),
            key_file.display()
        ),
    ))
    .await;
    requests(&proxy, 3).await;
    let spans = collector.wait_for(3).await;
    assert!(
        spans.iter().all(|span| span.service == "otlp-https"),
        "{spans:?}"
    );
    assert!(
        header(&collector, "x-api-key")
            .iter()
            .all(|key| key == "k-from-file")
    );
    assert!(!header(&collector, "x-api-key").is_empty());
    assert!(
        header(&collector, "x-team")
            .iter()
            .all(|team| team == "obs")
    );
    assert!(
        header(&collector, "content-encoding")
            .iter()
            .all(|e| e == "gzip")
    );
    assert!(!header(&collector, "content-encoding").is_empty());
    // The header values are not in /config.
    let config = get(Version::HTTP_11, &proxy.admin_url("/config"))
        .await
        .unwrap();
    assert!(
        !config.body.contains("obs") && config.body.contains("x-team"),
        "{}",
        config.body
    );
}

#[tokio::test]
async fn an_https_collector_outside_the_system_roots_is_refused_without_a_ca_file() {
    let ca = tls::Ca::new("private CA");
    let collector = otlp_collector_with(CollectorOptions {
        tls: Some(server_tls(&ca)),
        ..Default::default()
    });
    let app = http_backend("otlp-untrusted-app");
    let proxy = Proxy::start(&yaml(
        "otlp-untrusted",
        app.addr,
        &format!("endpoint: \"{}\"", collector.endpoint()),
    ))
    .await;
    requests(&proxy, 2).await;
    let metrics = proxy.admin_url("/metrics");
    let dropped = prom::wait_for_value(
        &metrics,
        "remora_spans_dropped_total",
        &[("reason", "export_failed")],
        2.0,
        Duration::from_secs(5),
    )
    .await;
    assert!(dropped >= 2.0, "export_failed {dropped}");
    assert!(collector.spans().is_empty());
}

#[tokio::test]
async fn grpc_over_h2c_with_gzip_and_over_tls() {
    let plain = otlp_collector_with(CollectorOptions::default());
    let app = http_backend("otlp-grpc-app");
    let proxy = Proxy::start(&yaml(
        "otlp-grpc",
        app.addr,
        &format!(
            "protocol: grpc, endpoint: \"{}\", compression: gzip, headers: [{{ name: x-api-key, value: g-1 }}]",
            plain.grpc_endpoint()
        ),
    ))
    .await;
    requests(&proxy, 2).await;
    let spans = plain.wait_for(2).await;
    assert!(spans.iter().all(|span| span.service == "otlp-grpc"));
    assert!(header(&plain, "grpc-encoding").iter().all(|e| e == "gzip"));
    assert!(!header(&plain, "grpc-encoding").is_empty());
    assert!(
        header(&plain, "content-type")
            .iter()
            .all(|t| t == "application/grpc")
    );
    assert!(header(&plain, "x-api-key").iter().all(|key| key == "g-1"));
    let exported = prom::wait_for_value(
        &proxy.admin_url("/metrics"),
        "remora_spans_exported_total",
        &[],
        2.0,
        Duration::from_secs(5),
    )
    .await;
    assert!(exported >= 2.0, "exported {exported}");

    let ca = tls::Ca::new("grpc CA");
    let secure = otlp_collector_with(CollectorOptions {
        tls: Some(server_tls(&ca)),
        ..Default::default()
    });
    let dir = tls::TlsFiles::new(&ca.leaf("unused", 1), &ca);
    let app = http_backend("otlp-grpcs-app");
    let proxy = Proxy::start(&yaml(
        "otlp-grpcs",
        app.addr,
        &format!(
            "protocol: grpc, endpoint: \"{}\", ca_file: \"{}\"",
            secure.grpc_endpoint(),
            dir.dir.join("ca.pem").display()
        ),
    ))
    .await;
    requests(&proxy, 1).await;
    let spans = secure.wait_for(1).await;
    assert_eq!(spans[0].service, "otlp-grpcs");
}

#[tokio::test]
async fn the_opentelemetry_environment_fills_an_empty_otlp_section() {
    let collector = otlp_collector_with(CollectorOptions::default());
    let app = http_backend("otlp-env-app");
    let yaml = TestConfig::new()
        .service("{ name: otlp-env }")
        .upstream(Upstream::to("app", [app.addr]))
        .section("tracing", "{ otlp: { flush_interval: 20ms } }")
        .yaml();
    let endpoint = format!("OTEL_EXPORTER_OTLP_ENDPOINT={}", collector.grpc_endpoint());
    let proxy = ProxyProcess::start_wrapped(
        &[
            "env",
            &endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
            "OTEL_EXPORTER_OTLP_HEADERS=x-api-key=e%20nv,x-team=t",
        ],
        &yaml,
        1,
    );
    let url = format!("http://{}/", proxy.listener("app"));
    let reply = get(Version::HTTP_11, &url).await.unwrap();
    assert_eq!(reply.status, 200);
    let spans = collector.wait_for(1).await;
    assert_eq!(spans[0].service, "otlp-env");
    assert_eq!(header(&collector, "content-type"), ["application/grpc"]);
    assert_eq!(header(&collector, "x-api-key"), ["e nv"]);
    assert_eq!(header(&collector, "x-team"), ["t"]);
}
