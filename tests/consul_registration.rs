//! `service.register: true` end to end against the Consul stand-in (tests/support/consul.rs):
//! the registration bodies of the application and its connect-proxy sidecar, registration
//! again after the agent forgot them, a bad token (logged, retried, the proxy keeps serving),
//! deregistration on SIGTERM of the real binary before the drain, HTTPS to the agent with a CA
//! file and a client certificate (rcgen-made at test time) for registration and discovery, and
//! an agent refused without the client certificate or under a CA that did not sign it.

mod support;

use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{StatusCode, Version};
use serde_json::Value;
use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;

use support::consul::ConsulStandIn;
use support::{Proxy, ProxyProcess, get, http_backend, prom, tls};

const WITHIN: Duration = Duration::from_secs(5);

/// A proxy for service `name` (each test its own: metrics are process-wide) fronting
/// `app_port` with an inbound listener, registering through `consul`.
fn yaml(consul: &str, name: &str, app_port: u16, extra_service: &str) -> String {
    format!(
        "service:\n  name: {name}\n  port: {app_port}\n  register: true\n{extra_service}\
         inbound: {{ listen: 127.0.0.1:0 }}\n\
         consul: {consul}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         logging: {{ access_log: false }}\n"
    )
}

/// Polls `condition` every 20 ms until it holds or `within` passes; returns whether it held.
async fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (up to [`WITHIN`]) until `remora_consul_registrations_total{service,result}` at the
/// admin `metrics_url` reaches `expected`; returns the last value seen.
async fn wait_for_registrations(
    metrics_url: &str,
    service: &str,
    result: &str,
    expected: f64,
) -> f64 {
    let labels = [("service", service), ("result", result)];
    let name = "remora_consul_registrations_total";
    prom::wait_for_value(metrics_url, name, &labels, expected, WITHIN).await
}

async fn registrations_metric(proxy: &Proxy, service: &str, result: &str) -> f64 {
    let text = prom::scrape(&proxy.admin_url("/metrics")).await;
    let labels = [("service", service), ("result", result)];
    prom::value(&text, "remora_consul_registrations_total", &labels).unwrap_or(0.0)
}

#[tokio::test]
async fn the_application_and_its_sidecar_are_registered_as_consul_documents() {
    let consul = ConsulStandIn::start();
    let app = http_backend("reg-app");
    let service = "  id: front-1\n  tags: [v1, canary]\n  meta: { version: \"1.4.2\" }\n  \
                   check: { http: /healthz, interval: 5s, timeout: 1500ms, deregister_after: 1m }\n";
    let consul_section = format!("{{ address: \"{}\" }}", consul.url());
    let proxy = Proxy::start(&yaml(&consul_section, "front", app.addr.port(), service)).await;
    assert!(
        eventually(WITHIN, || consul.agent_service_ids().len() == 2).await,
        "registered: {:?}",
        consul.agent_service_ids()
    );

    let app_body = consul.agent_service("front-1").expect("the application");
    assert_eq!(app_body["Name"], "front");
    assert_eq!(app_body["ID"], "front-1");
    assert_eq!(app_body["Tags"], serde_json::json!(["v1", "canary"]));
    assert_eq!(app_body["Meta"]["version"], "1.4.2");
    assert_eq!(app_body["Address"], "127.0.0.1");
    assert_eq!(app_body["Port"], app.addr.port());
    assert!(app_body.get("Kind").is_none(), "{app_body}");
    let check = &app_body["Checks"][0];
    assert_eq!(
        check["HTTP"],
        format!("http://127.0.0.1:{}/healthz", app.addr.port())
    );
    assert_eq!(check["Interval"], "5s");
    assert_eq!(check["Timeout"], "1500ms");
    assert_eq!(check["DeregisterCriticalServiceAfter"], "60s");

    let inbound = proxy.inbound();
    let sidecar = consul
        .agent_service("front-1-sidecar-proxy")
        .expect("the sidecar");
    assert_eq!(sidecar["Kind"], "connect-proxy");
    assert_eq!(sidecar["Name"], "front-sidecar-proxy");
    assert_eq!(sidecar["Port"], inbound.port());
    assert_eq!(sidecar["Address"], "127.0.0.1");
    assert_eq!(sidecar["Tags"], serde_json::json!(["v1", "canary"]));
    let proxy_block = &sidecar["Proxy"];
    assert_eq!(proxy_block["DestinationServiceName"], "front");
    assert_eq!(proxy_block["DestinationServiceID"], "front-1");
    assert_eq!(proxy_block["LocalServiceAddress"], "127.0.0.1");
    assert_eq!(proxy_block["LocalServicePort"], app.addr.port());
    let checks = sidecar["Checks"].as_array().expect("sidecar checks");
    assert_eq!(checks[0]["TCP"], format!("127.0.0.1:{}", inbound.port()));
    assert_eq!(checks[0]["Interval"], "5s");
    assert_eq!(checks[0]["DeregisterCriticalServiceAfter"], "60s");
    assert_eq!(checks[1]["AliasService"], "front-1");

    // Other sidecars find this one through the connect endpoint, as Consul serves it.
    let connect = get(
        Version::HTTP_11,
        &format!("{}/v1/health/connect/front?passing=1", consul.url()),
    )
    .await
    .expect("stand-in answers");
    let entries: Value = serde_json::from_str(&connect.body).expect("JSON");
    assert_eq!(entries[0]["Service"]["Port"], inbound.port(), "{entries}");

    // The agent stores a registration just before remora reads its answer.
    let url = proxy.admin_url("/metrics");
    for service in ["front", "front-sidecar-proxy"] {
        let labels = [("service", service)];
        let registered =
            prom::wait_for_value(&url, "remora_consul_registered", &labels, 1.0, WITHIN).await;
        assert_eq!(registered, 1.0, "{service}");
    }
    assert_eq!(registrations_metric(&proxy, "front", "success").await, 1.0);
    assert_eq!(registrations_metric(&proxy, "front", "failure").await, 0.0);

    // An in-process shutdown deregisters too.
    proxy.shutdown().await;
    assert!(
        consul.agent_service_ids().is_empty(),
        "{:?}",
        consul.agent_service_ids()
    );
}

#[tokio::test]
async fn registered_again_within_a_bound_after_the_agent_forgets() {
    let consul = ConsulStandIn::start();
    let app = http_backend("reg-forget");
    let consul_section = format!("{{ address: \"{}\", sync_interval: 200ms }}", consul.url());
    let proxy = Proxy::start(&yaml(
        &consul_section,
        "forget",
        app.addr.port(),
        "  id: web-f\n",
    ))
    .await;
    assert!(eventually(WITHIN, || consul.agent_service_ids().len() == 2).await);
    assert_eq!(consul.agent_registrations(), 2);

    consul.restart_agent();
    assert!(consul.agent_service_ids().is_empty());
    let forgotten = Instant::now();
    assert!(
        eventually(WITHIN, || consul.agent_service_ids().len() == 2).await,
        "not registered again within {WITHIN:?}"
    );
    // One sync interval plus a request or two; generous for a loaded machine.
    assert!(
        forgotten.elapsed() < Duration::from_secs(2),
        "{:?}",
        forgotten.elapsed()
    );
    assert_eq!(consul.agent_registrations(), 4);
    let successes = wait_for_registrations(
        &proxy.admin_url("/metrics"),
        "forget-sidecar-proxy",
        "success",
        2.0,
    )
    .await;
    assert_eq!(successes, 2.0);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_is_logged_once_retried_and_the_proxy_keeps_serving() {
    let consul = ConsulStandIn::start();
    consul.set_token(Some("right-token"));
    let app = http_backend("reg-token");
    let consul_section = format!("{{ address: \"{}\", token: wrong-token }}", consul.url());
    let mut proxy = ProxyProcess::start(&yaml(&consul_section, "web", app.addr.port(), ""), 1);
    let line = proxy.wait_for_log("Consul registration failing");
    assert!(line.contains("403"), "{line}");
    assert!(line.contains("ACL not found"), "{line}");
    assert!(
        !line.contains("wrong-token"),
        "the token is never logged: {line}"
    );

    // Still serving while registration keeps failing.
    let inbound = proxy.listener("inbound");
    let reply = get(Version::HTTP_11, &format!("http://{inbound}/"))
        .await
        .expect("inbound answers");
    assert_eq!(reply.status, StatusCode::OK);
    let failures = wait_for_registrations(
        &format!("http://{}/metrics", proxy.admin),
        "web",
        "failure",
        2.0,
    )
    .await;
    assert!(failures >= 2.0, "retried: {failures}");
    assert!(consul.agent_service_ids().is_empty());

    // The token is fixed on the agent's side: the retries succeed, logged once.
    consul.set_token(None);
    let lines = proxy.log_until("Consul registration recovered");
    let failing = lines
        .iter()
        .filter(|l| l.contains("Consul registration failing"))
        .count();
    assert_eq!(failing, 0, "one failing line per state change: {lines:?}");
    assert!(eventually(WITHIN, || consul.agent_service_ids().len() == 2).await);
}

/// Waits (bounded) for the process to exit.
async fn wait_for_exit(proxy: &mut ProxyProcess) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = proxy.child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "remora still running");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_deregisters_both_before_draining() {
    let consul = ConsulStandIn::start();
    let app = http_backend("reg-term");
    let consul_section = format!("{{ address: \"{}\" }}", consul.url());
    let mut proxy = ProxyProcess::start(
        &yaml(&consul_section, "web", app.addr.port(), "  id: web-t\n"),
        1,
    );
    assert!(eventually(WITHIN, || consul.agent_service_ids().len() == 2).await);

    proxy.signal("TERM");
    let lines = proxy.log_until("drained");
    let position = |needles: &[&str]| {
        lines
            .iter()
            .position(|l| needles.iter().all(|needle| l.contains(needle)))
            .unwrap_or_else(|| panic!("no {needles:?} in {lines:?}"))
    };
    let app_gone = position(&["deregistered from Consul", "\"id\":\"web-t\""]);
    let sidecar_gone = position(&["deregistered from Consul", "\"id\":\"web-t-sidecar-proxy\""]);
    let draining = position(&["\"draining\""]);
    assert!(app_gone < draining && sidecar_gone < draining, "{lines:?}");
    assert!(wait_for_exit(&mut proxy).await.success());
    assert!(
        consul.agent_service_ids().is_empty(),
        "{:?}",
        consul.agent_service_ids()
    );
    assert_eq!(consul.agent_deregistrations(), 2);
}

/// The stand-in agent's TLS: a server certificate for 127.0.0.1 from `ca`, client
/// certificates required (`verify_incoming`) and verified against `ca`.
fn agent_tls(ca: &tls::Ca) -> ServerConfig {
    let leaf = ca.leaf_for_ip([127, 0, 0, 1].into(), 1);
    let provider = Arc::new(ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap())
        .unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
        )
        .unwrap()
}

#[tokio::test]
async fn registers_over_https_with_a_ca_file_and_a_client_certificate() {
    let ca = tls::Ca::new("agent CA");
    let other = tls::Ca::new("another CA");
    // ca.pem, cert.pem (the client certificate) and key.pem.
    let client = tls::TlsFiles::new(&ca.leaf("remora", 2), &ca);
    let elsewhere = tls::TlsFiles::new(&other.leaf("remora", 3), &other);
    let consul = ConsulStandIn::start_tls(agent_tls(&ca));
    assert!(consul.url().starts_with("https://"));
    let app = http_backend("reg-tls");
    let file = |name: &str| client.dir.join(name).display().to_string();
    let consul_section = format!(
        "{{ address: \"{}\", ca_file: \"{}\", client_cert: \"{}\", client_key: \"{}\" }}",
        consul.url(),
        file("ca.pem"),
        file("cert.pem"),
        file("key.pem"),
    );
    // Discovery goes through the same client: an upstream on this very service's sidecars.
    let upstream = "upstreams:\n  - name: self\n    listen: 127.0.0.1:0\n    \
                    discovery: { consul: { service: tls, connect: true } }\n";
    let config = yaml(&consul_section, "tls", app.addr.port(), "  id: web-tls\n") + upstream;
    let proxy = Proxy::start(&config).await;
    assert!(
        eventually(WITHIN, || consul.agent_service_ids().len() == 2).await,
        "registered over HTTPS"
    );
    assert_eq!(registrations_metric(&proxy, "tls", "failure").await, 0.0);
    let through_sidecar = format!("http://{}/", proxy.upstream("self"));
    let deadline = Instant::now() + WITHIN;
    loop {
        let reply = get(Version::HTTP_11, &through_sidecar)
            .await
            .expect("answers");
        if reply.status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not discovered over HTTPS: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.shutdown().await;
    assert!(consul.agent_service_ids().is_empty());

    // Without the client certificate the agent refuses the handshake.
    let no_client_cert = format!(
        "{{ address: \"{}\", ca_file: \"{}\" }}",
        consul.url(),
        file("ca.pem")
    );
    refused(&consul, &no_client_cert, "nocert").await;
    // A CA that did not sign the agent's certificate: the agent is not trusted.
    let untrusted = format!(
        "{{ address: \"{}\", ca_file: \"{}\", client_cert: \"{}\", client_key: \"{}\" }}",
        consul.url(),
        elsewhere.dir.join("ca.pem").display(),
        file("cert.pem"),
        file("key.pem"),
    );
    refused(&consul, &untrusted, "untrusted").await;
    let _ = std::fs::remove_dir_all(&client.dir);
    let _ = std::fs::remove_dir_all(&elsewhere.dir);
}

/// A proxy for `name` whose TLS to the agent fails: failures are counted, nothing registers.
async fn refused(consul: &ConsulStandIn, consul_section: &str, name: &str) {
    let app = http_backend(name);
    let id = format!("  id: web-{name}\n");
    let proxy = Proxy::start(&yaml(consul_section, name, app.addr.port(), &id)).await;
    let failures = wait_for_registrations(&proxy.admin_url("/metrics"), name, "failure", 1.0).await;
    assert!(failures >= 1.0, "{name}: {failures}");
    assert!(consul.agent_service_ids().is_empty(), "{name}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_shipped_consul_config_registers_against_the_stand_in() {
    let consul = ConsulStandIn::start();
    let app = http_backend("reg-shipped");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/consul.yaml");
    let mut config = remora::config::load(std::path::Path::new(path)).expect("loads");
    // Point it at the stand-in, on free ports, without the token file of a real host.
    config.consul.address = Some(consul.url());
    config.consul.token_file = None;
    config.service.port = Some(app.addr.port());
    config.inbound.as_mut().expect("inbound").listen = "127.0.0.1:0".parse().unwrap();
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    for upstream in &mut config.upstreams {
        upstream.listen = Some("127.0.0.1:0".parse().unwrap());
    }
    let running = remora::app::start(&config).await.expect("starts");
    assert!(
        eventually(WITHIN, || consul.agent_service_ids()
            == ["web-1", "web-1-sidecar-proxy"])
        .await,
        "{:?}",
        consul.agent_service_ids()
    );
    let sidecar = consul.agent_service("web-1-sidecar-proxy").unwrap();
    assert_eq!(sidecar["Port"], running.bound.inbound.unwrap().port());
    running.shutdown().await;
    assert!(consul.agent_service_ids().is_empty());
}
