//! `service.register: true` with an `etcd` section, end to end against a
//! real etcd (tests/support/etcd.rs): the key and its JSON value under a
//! lease of `lease_ttl`, deletion on SIGTERM of the real binary before the
//! drain, the key outliving a `kill -9` by at most one TTL, registration
//! again after an etcd restart (and after etcd lost its data) and after a
//! revoked lease, and both registries when `consul` and `etcd` are set.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;

use support::consul::ConsulStandIn;
use support::etcd::Etcd;
use support::{Proxy, ProxyProcess, eventually, http_backend};

const WITHIN: Duration = Duration::from_secs(10);

/// A proxy for service `name` (id `NAME-1`) fronting `app_port` with an
/// inbound listener, registering in etcd with leases of `ttl`.
fn yaml(etcd: &Etcd, name: &str, app_port: u16, ttl: &str, extra: &str) -> String {
    format!(
        "service:\n  name: {name}\n  id: {name}-1\n  port: {app_port}\n  register: true\n  \
         tags: [v1]\n  meta: {{ version: \"1.2\" }}\n\
         inbound: {{ listen: 127.0.0.1:0 }}\n\
         etcd: {{ endpoints: [\"{}\"], lease_ttl: {ttl} }}\n{extra}\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         logging: {{ access_log: false }}\n",
        etcd.url()
    )
}

async fn until_key(etcd: &Etcd, key: &str, present: bool) {
    let what = format!("{key} present: {present}");
    eventually(WITHIN, &what, || async {
        etcd.get(key).is_some() == present
    })
    .await;
}

/// The lease attached to `key` and its granted TTL, in seconds.
async fn lease_of(etcd: &Etcd, key: &str) -> (i64, i64) {
    let mut client = etcd.connect().await;
    let read = client.get(key, None).await.unwrap();
    let lease = read.kvs()[0].lease();
    assert_ne!(lease, 0, "{key} has a lease");
    let ttl = client.lease_time_to_live(lease, None).await.unwrap();
    (lease, ttl.granted_ttl())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instance_is_put_under_a_lease_and_deleted_on_sigterm_before_the_drain() {
    let etcd = Etcd::start();
    let app = http_backend("reg-app");
    let config = yaml(&etcd, "front", app.addr.port(), "3s", "");
    let mut remora = tokio::task::block_in_place(|| ProxyProcess::start(&config, 1));
    let inbound = remora.listener("inbound");
    let key = "/services/front/front-1";
    until_key(&etcd, key, true).await;
    let value: Value = serde_json::from_str(&etcd.get(key).unwrap()).unwrap();
    assert_eq!(
        value,
        serde_json::json!({
            "address": "127.0.0.1", "port": inbound.port(), "weight": 1,
            "tags": ["v1"], "meta": { "version": "1.2" }
        })
    );
    let (lease, granted) = lease_of(&etcd, key).await;
    assert_eq!(granted, 3);
    // Kept alive: still there after twice the TTL.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(etcd.get(key).is_some(), "the lease is kept alive");
    assert_eq!(lease_of(&etcd, key).await.0, lease, "the same lease");

    remora.signal("TERM");
    let lines = tokio::task::block_in_place(|| remora.log_until("drained"));
    let position = |needle: &str| {
        (lines.iter().position(|line| line.contains(needle)))
            .unwrap_or_else(|| panic!("no {needle:?} in {lines:#?}"))
    };
    assert!(position("deregistered from etcd") < position("\"draining\""));
    assert_eq!(
        etcd.get(key),
        None,
        "deleted at once, not at the lease's expiry"
    );
    let leases = etcd.etcdctl(&["lease", "list"]);
    assert!(
        !leases.contains(&format!("{lease:x}")),
        "lease revoked: {leases}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_remora_leaves_its_key_for_at_most_one_ttl() {
    let etcd = Etcd::start();
    let app = http_backend("reg-kill");
    let config = yaml(&etcd, "killed", app.addr.port(), "3s", "");
    let mut remora = tokio::task::block_in_place(|| ProxyProcess::start(&config, 1));
    let key = "/services/killed/killed-1";
    until_key(&etcd, key, true).await;
    remora.signal("KILL");
    let killed = Instant::now();
    let _ = remora.child.wait();
    assert!(etcd.get(key).is_some(), "a killed remora deletes nothing");
    until_key(&etcd, key, false).await;
    let gone_after = killed.elapsed();
    println!("key gone {gone_after:?} after kill -9 (lease_ttl 3s)");
    // Expired by its lease: one TTL after the last keep-alive (at most a
    // third of the TTL before the kill), plus etcd's expiry check (every
    // 500 ms) and this test's polling; not long before.
    assert!(gone_after <= Duration::from_millis(5000), "{gone_after:?}");
    assert!(gone_after >= Duration::from_millis(1500), "{gone_after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_again_after_a_revoked_lease_and_after_etcd_lost_its_data() {
    let mut etcd = Etcd::start();
    let app = http_backend("reg-again");
    let proxy = Proxy::start(&yaml(&etcd, "again", app.addr.port(), "3s", "")).await;
    let key = "/services/again/again-1";
    until_key(&etcd, key, true).await;
    let (lease, _) = lease_of(&etcd, key).await;

    // A revoked lease takes the key with it; remora notices at its next
    // keep-alive (a third of the TTL) and registers under a new lease.
    etcd.etcdctl(&["lease", "revoke", &format!("{lease:x}")]);
    assert_eq!(etcd.get(key), None);
    until_key(&etcd, key, true).await;
    let (renewed, _) = lease_of(&etcd, key).await;
    assert_ne!(renewed, lease);

    // A restart keeps the data: the key stays, under the same lease.
    etcd.restart();
    until_key(&etcd, key, true).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        etcd.get(key).is_some(),
        "still registered after the restart"
    );

    // A key deleted by hand is put back.
    etcd.delete(key);
    until_key(&etcd, key, true).await;

    // etcd loses everything: a new, empty store (remora may have put the
    // key back before this test looks; the fourth put below says it did).
    etcd.wipe_and_restart();
    until_key(&etcd, key, true).await;
    assert!(
        proxy
            .metric(
                "remora_etcd_registrations_total",
                &[("service", "again"), ("result", "success")]
            )
            .await
            >= 4.0
    );
    assert_eq!(
        proxy
            .metric("remora_etcd_registered", &[("service", "again")])
            .await,
        1.0
    );
    proxy.shutdown().await;
    assert_eq!(etcd.get(key), None, "deregistered at shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_consul_and_etcd_sections_it_registers_in_both() {
    let etcd = Etcd::start();
    let consul = ConsulStandIn::start();
    let app = http_backend("reg-both");
    let consul_section = format!("consul: {{ address: \"{}\" }}\n", consul.url());
    let proxy = Proxy::start(&yaml(
        &etcd,
        "both",
        app.addr.port(),
        "10s",
        &consul_section,
    ))
    .await;
    until_key(&etcd, "/services/both/both-1", true).await;
    eventually(WITHIN, "registered with Consul", || async {
        consul.agent_service_ids().len() == 2
    })
    .await;
    proxy.shutdown().await;
    assert_eq!(etcd.get("/services/both/both-1"), None);
    assert!(consul.agent_service_ids().is_empty());

    // With `etcd` only, Consul is left alone.
    let lone = ConsulStandIn::start();
    let proxy = Proxy::start(&yaml(&etcd, "lone", app.addr.port(), "10s", "")).await;
    until_key(&etcd, "/services/lone/lone-1", true).await;
    assert_eq!(lone.agent_registrations(), 0);
    proxy.shutdown().await;
}
