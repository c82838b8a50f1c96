//! The `etcd` section's client against a real etcd (tests/support/etcd.rs):
//! failover past an endpoint that is down, and between the members of a
//! three-member cluster as each in turn goes down while remora watches, authentication with a user and a
//! password file (and a wrong password failing static, never logged), and
//! `https://` members verified against `ca_file` that require a client
//! certificate (`--client-cert-auth`, rcgen-made certificates).

mod support;

use std::time::Duration;

use http::Version;

use support::config::{TestConfig, Upstream};
use support::etcd::Etcd;
use support::{Proxy, ProxyProcess, dead_addr, eventually, get, http_backend, tls};

const WAIT: Duration = Duration::from_secs(10);

fn yaml(etcd_section: &str) -> String {
    yaml_for("{ name: test }", etcd_section)
}

fn yaml_for(service: &str, etcd_section: &str) -> String {
    TestConfig::new()
        .service(service)
        .section("etcd", etcd_section)
        .upstream(Upstream::discovered("api", "{ etcd: { service: api } }").protocol("http"))
        .with("timeouts", "{ connect: 1s, request: 5s }")
        .yaml()
}

async fn until_served(proxy_api: std::net::SocketAddr, body: &str) {
    let url = format!("http://{proxy_api}/");
    let what = format!("{body} served through etcd discovery");
    eventually(WAIT, &what, || async {
        get(Version::HTTP_11, &url)
            .await
            .is_ok_and(|reply| reply.body == body)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_fail_over_past_an_endpoint_that_is_down() {
    let etcd = Etcd::start();
    let a = http_backend("failover-a");
    etcd.put("/services/api/a", &a.addr.to_string());
    let section = format!(
        "{{ endpoints: [\"http://{}\", \"{}\", \"http://{}\"] }}",
        dead_addr(),
        etcd.url(),
        dead_addr()
    );
    let proxy = Proxy::start(&yaml(&section)).await;
    until_served(proxy.upstream("api"), "failover-a").await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_fails_over_between_cluster_members() {
    let mut members = Etcd::cluster(3);
    let backends: Vec<_> = (0..4).map(|i| http_backend(&format!("m{i}"))).collect();
    members[0].put("/services/api/0", &backends[0].addr.to_string());
    let urls: Vec<String> = members.iter().map(|m| format!("\"{}\"", m.url())).collect();
    let proxy = Proxy::start(&yaml(&format!("{{ endpoints: [{}] }}", urls.join(", ")))).await;
    let api = proxy.upstream("api");
    until_served(api, "m0").await;
    // Each member in turn goes down (whichever one remora's watch is on
    // among them); a change made through another still arrives.
    for down in 0..3 {
        members[down].stop();
        let up = (down + 1) % 3;
        members[up].wait_until_it_answers();
        members[up].delete(&format!("/services/api/{down}"));
        members[up].put(
            &format!("/services/api/{}", down + 1),
            &backends[down + 1].addr.to_string(),
        );
        until_served(api, &format!("m{}", down + 1)).await;
        members[down].restart();
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_with_a_password_file_authenticates_and_a_wrong_password_fails_static() {
    let mut etcd = Etcd::start();
    let a = http_backend("auth-a");
    etcd.put("/services/api/a", &a.addr.to_string());
    etcd.enable_auth("remora", "s3cret-pw");
    let dir = std::env::temp_dir().join(format!("remora-etcd-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good");
    let bad = dir.join("bad");
    std::fs::write(&good, "s3cret-pw\n").unwrap();
    std::fs::write(&bad, "wrong-pw-value\n").unwrap();
    let section = |file: &std::path::Path| {
        format!(
            "{{ endpoints: [\"{}\"], username: remora, password_file: {} }}",
            etcd.url(),
            file.display()
        )
    };

    // Discovery and registration (a write) as the user.
    let service = format!(
        "{{ name: test, id: auth-1, port: {}, register: true }}",
        a.addr.port()
    );
    let config = yaml_for(&service, &section(&good));
    let proxy = Proxy::start(&config).await;
    until_served(proxy.upstream("api"), "auth-a").await;
    let key = "/services/test/auth-1";
    eventually(WAIT, "registered as the user", || async {
        etcd.get(key).is_some()
    })
    .await;
    proxy.shutdown().await;
    assert_eq!(etcd.get(key), None);

    // A wrong password: refused by etcd, logged once, never the password itself.
    let mut remora = tokio::task::block_in_place(|| ProxyProcess::start(&yaml(&section(&bad)), 1));
    let line = tokio::task::block_in_place(|| remora.wait_for_log("etcd discovery failing"));
    assert!(line.contains("authentication failed"), "{line}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut log = remora.log_so_far();
    log.push(line);
    assert!(
        log.iter().all(|line| !line.contains("wrong-pw-value")),
        "{log:#?}"
    );
    let config = get(Version::HTTP_11, &format!("http://{}/config", remora.admin))
        .await
        .unwrap()
        .body;
    assert!(!config.contains("wrong-pw-value"), "{config}");
    drop(remora);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_members_are_verified_and_get_the_client_certificate() {
    let ca = tls::Ca::new("etcd test CA");
    let leaf = ca.leaf_for_ip([127, 0, 0, 1].into(), 7);
    let files = tls::TlsFiles::new(&leaf, &ca);
    let etcd = Etcd::start_tls(&files.dir);
    let a = http_backend("tls-a");
    etcd.put("/services/api/a", &a.addr.to_string());
    let path = |name: &str| files.dir.join(name).display().to_string();
    let section = format!(
        "{{ endpoints: [\"{}\"], ca_file: {}, client_cert: {}, client_key: {} }}",
        etcd.url(),
        path("ca.pem"),
        path("cert.pem"),
        path("key.pem")
    );
    let proxy = Proxy::start(&yaml(&section)).await;
    until_served(proxy.upstream("api"), "tls-a").await;
    proxy.shutdown().await;

    // Without the client certificate etcd refuses the handshake: failing, logged.
    let section = format!(
        "{{ endpoints: [\"{}\"], ca_file: {} }}",
        etcd.url(),
        path("ca.pem")
    );
    let mut remora = tokio::task::block_in_place(|| ProxyProcess::start(&yaml(&section), 1));
    tokio::task::block_in_place(|| remora.wait_for_log("etcd discovery failing"));

    // A CA that did not sign etcd's certificate: refused by remora.
    let other = tls::Ca::new("another CA");
    let other_files = tls::TlsFiles::new(&other.leaf_for_ip([127, 0, 0, 1].into(), 8), &other);
    let section = format!(
        "{{ endpoints: [\"{}\"], ca_file: {}, client_cert: {}, client_key: {} }}",
        etcd.url(),
        other_files.dir.join("ca.pem").display(),
        path("cert.pem"),
        path("key.pem")
    );
    let mut remora = tokio::task::block_in_place(|| ProxyProcess::start(&yaml(&section), 1));
    tokio::task::block_in_place(|| remora.wait_for_log("etcd discovery failing"));
}
