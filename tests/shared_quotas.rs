//! Shared quotas end to end, through two `remora` processes of one service: with
//! `rate_limit.scope: service` each sidecar enforces its share of the service-wide rate — the
//! rate and burst divided by the healthy instances of its service in Consul (the stand-in) —
//! so together they admit the global burst; when an instance goes, the shares grow; a named
//! caller (`overrides`) gets its own, higher, rate. With an `etcd` section and no `consul`
//! one, the sidecars register in a real etcd and count their service's instances there.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::Full;

use support::config::TestConfig;
use support::consul::{ConsulStandIn, Instance};
use support::etcd::Etcd;
use support::{ProxyProcess, http_backend, prom, send};

const SERVICE: &str = "quota-svc";

fn sidecar(consul: &ConsulStandIn, app: SocketAddr) -> ProxyProcess {
    let yaml = TestConfig::new()
        .service(&format!("{{ name: {SERVICE}, port: {} }}", app.port()))
        .section("consul", format!("{{ address: \"{}\" }}", consul.url()))
        .text(
            "inbound:\n  listen: 127.0.0.1:0\n  rate_limit:\n    requests_per_second: 10\n    \
             burst: 10\n    scope: service\n    key: header:x-caller\n    \
             overrides: [{ value: batch, requests_per_second: 100 }]\n",
        )
        .yaml();
    ProxyProcess::start(&yaml, 1)
}

/// A sidecar of the service with id `id` that registers in `etcd` (no `consul` section), so
/// it counts its service's instances there too.
fn etcd_sidecar(etcd: &Etcd, app: SocketAddr, id: &str) -> ProxyProcess {
    let yaml = TestConfig::new()
        .service(&format!(
            "{{ name: {SERVICE}, id: {id}, port: {}, register: true }}",
            app.port()
        ))
        .section("etcd", format!("{{ endpoints: [\"{}\"] }}", etcd.url()))
        .text(
            "inbound:\n  listen: 127.0.0.1:0\n  rate_limit:\n    requests_per_second: 10\n    \
             burst: 10\n    scope: service\n",
        )
        .yaml();
    ProxyProcess::start(&yaml, 1)
}

/// Waits until the sidecar's discovery shows `count` instances of its service.
async fn until_instances(proxy: &ProxyProcess, count: f64) {
    let url = format!("http://{}/metrics", proxy.admin);
    prom::assert_value_within(
        &url,
        "remora_service_instances",
        &[],
        count,
        Duration::from_secs(10),
    )
    .await;
}

/// Sends `count` requests at once as `caller`; returns how many were admitted (the others
/// must be 429 `rate_limited`).
async fn admitted(proxy: &ProxyProcess, caller: &str, count: usize) -> usize {
    let url = format!("http://{}/", proxy.listener("inbound"));
    let requests = (0..count).map(|_| {
        let request = Request::get(&url)
            .header("x-caller", caller)
            .body(Full::new(Bytes::new()))
            .unwrap();
        send(Version::HTTP_11, request)
    });
    let mut ok = 0;
    for reply in futures_util::future::join_all(requests).await {
        let reply = reply.unwrap();
        match reply.status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(reply.headers["x-remora-error"], "rate_limited");
            }
            other => panic!("unexpected {other}: {reply:?}"),
        }
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_of_a_service_share_its_rate() {
    let consul = ConsulStandIn::start();
    let (app_a, app_b) = (http_backend("a"), http_backend("b"));
    consul.register(Instance::new("quota-a", SERVICE, app_a.addr));
    consul.register(Instance::new("quota-b", SERVICE, app_b.addr));
    let (a, b) = (sidecar(&consul, app_a.addr), sidecar(&consul, app_b.addr));
    until_instances(&a, 2.0).await;
    until_instances(&b, 2.0).await;

    // A service-wide burst of 10 over 2 instances: 5 each, 10 together (a token more may
    // refill, at 5 per second, while the 20 requests are sent).
    let (on_a, on_b) = (admitted(&a, "web", 20).await, admitted(&b, "web", 20).await);
    eprintln!("2 instances: {on_a} + {on_b} of 40 admitted");
    assert!(
        (5..=6).contains(&on_a) && (5..=6).contains(&on_b),
        "{on_a} + {on_b}"
    );
    // The named caller's own rate: a burst of 100 / 2 (refilling at 50 per second).
    let batch = admitted(&a, "batch", 60).await;
    assert!((50..=55).contains(&batch), "{batch}");

    // One instance leaves: the other's share is the whole rate.
    consul.deregister("quota-b");
    until_instances(&a, 1.0).await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // a full bucket again
    let alone = admitted(&a, "web", 20).await;
    eprintln!("1 instance: {alone} of 20 admitted");
    assert!((10..=11).contains(&alone), "{alone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_registered_in_etcd_count_each_other_there() {
    let etcd = Etcd::start();
    let (app_a, app_b) = (http_backend("a"), http_backend("b"));
    let a = etcd_sidecar(&etcd, app_a.addr, "quota-a");
    let b = etcd_sidecar(&etcd, app_b.addr, "quota-b");
    until_instances(&a, 2.0).await;
    until_instances(&b, 2.0).await;
    let (on_a, on_b) = (admitted(&a, "web", 20).await, admitted(&b, "web", 20).await);
    eprintln!("2 instances in etcd: {on_a} + {on_b} of 40 admitted");
    assert!(
        (5..=6).contains(&on_a) && (5..=6).contains(&on_b),
        "{on_a} + {on_b}"
    );

    // b deregisters on SIGTERM: a's share becomes the whole rate.
    b.signal("TERM");
    until_instances(&a, 1.0).await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // a full bucket again
    let alone = admitted(&a, "web", 20).await;
    assert!((10..=11).contains(&alone), "{alone}");
}

#[test]
fn overrides_need_a_key() {
    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let yaml = TestConfig::one_upstream("api", "http", [addr])
        .with(
            "rate_limit",
            "{ requests_per_second: 5, scope: everywhere, overrides: [{ value: x, requests_per_second: 0 }] }",
        )
        .yaml();
    let errors = remora::config::parse(&yaml, "test.yaml")
        .expect_err("rejected")
        .to_string();
    assert!(errors.contains("upstreams[0].rate_limit.scope"), "{errors}");
    let yaml = TestConfig::one_upstream("api", "http", [addr])
        .with(
            "rate_limit",
            "{ requests_per_second: 5, scope: service, overrides: [{ value: x, requests_per_second: 0 }] }",
        )
        .yaml();
    let errors = remora::config::parse(&yaml, "test.yaml")
        .expect_err("rejected")
        .to_string();
    for expected in [
        "upstreams[0].rate_limit.overrides[0].requests_per_second: must be a number above 0",
        "upstreams[0].rate_limit.overrides[0].value: rate_limit.key is none",
    ] {
        assert!(errors.contains(expected), "{expected:?} not in {errors}");
    }
}
