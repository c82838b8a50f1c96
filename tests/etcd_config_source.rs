//! `config_source: { etcd: { key } }` end to end with the real binary and a
//! real etcd (tests/support/etcd.rs): the configuration read from the key at
//! start, a change reaching the proxy through the watch, invalid values and
//! sections the value may not set refused with `etcd:KEY:line:column`
//! errors and counted while the running configuration serves, a deleted key
//! counted once, fail static while etcd is down then changes flowing again
//! after its restart, SIGHUP, an etcd back with its data lost (its revision
//! gone back) read afresh, and a missing or invalid key stopping the start.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::Version;

use support::etcd::Etcd;
use support::proxy::{ConfigFile, run_to_exit};
use support::{ProxyProcess, eventually, get, http_backend, prom};

const KEY: &str = "/config/remora/web";

/// A configuration with one upstream `api` to `endpoint`, and `extra` lines.
fn value(endpoint: SocketAddr, extra: &str) -> String {
    format!(
        "service: {{ name: etcd-config }}\n\
         upstreams:\n  - name: api\n    listen: 127.0.0.1:0\n    protocol: http\n    \
         discovery: {{ static: [{endpoint}] }}\n{extra}"
    )
}

fn bootstrap(etcd: &Etcd) -> String {
    format!(
        "service: {{ name: etcd-config }}\n\
         etcd: {{ endpoints: [\"{}\"] }}\n\
         config_source: {{ etcd: {{ key: {KEY} }} }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         logging: {{ access_log: false }}\n",
        etcd.url()
    )
}

async fn reloads(proxy: &ProxyProcess, result: &str, expected: f64) -> f64 {
    let url = format!("http://{}/metrics", proxy.admin);
    let labels = [("result", result)];
    let name = "remora_config_reloads_total";
    prom::wait_for_value(&url, name, &labels, expected, Duration::from_secs(5)).await
}

fn log(proxy: &mut ProxyProcess, needle: &str) -> String {
    tokio::task::block_in_place(|| proxy.wait_for_log(needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configuration_comes_from_an_etcd_key_and_follows_it() {
    let (a, b) = (http_backend("etcd-a"), http_backend("etcd-b"));
    let mut etcd = Etcd::start();
    etcd.put(KEY, &value(a.addr, ""));
    let mut proxy = tokio::task::block_in_place(|| ProxyProcess::start(&bootstrap(&etcd), 1));
    let api = format!("http://{}/", proxy.listener("api"));
    assert_eq!(get(Version::HTTP_11, &api).await.unwrap().body, "etcd-a");

    // A change reaches the proxy through the watch.
    let mut client = etcd.connect().await;
    let changed = Instant::now();
    client.put(KEY, value(b.addr, ""), None).await.unwrap();
    log(&mut proxy, "configuration reloaded");
    let took = changed.elapsed();
    println!("etcd config change applied after {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(get(Version::HTTP_11, &api).await.unwrap().body, "etcd-b");

    // The settings that cannot change while remora runs come from the local file: a value
    // that leaves them to their defaults (another `admin.listen`) draws no warning, at start
    // nor at a reload; one that writes one is told it is ignored.
    let mut so_far = proxy.startup_log.clone();
    so_far.extend(proxy.log_so_far());
    for needle in ["value's is ignored", "cannot change while remora runs"] {
        assert!(
            !so_far.iter().any(|line| line.contains(needle)),
            "{needle}: {so_far:#?}"
        );
    }
    etcd.put(KEY, &value(b.addr, "admin: { listen: \"127.0.0.1:9\" }\n"));
    let warning = log(&mut proxy, "value's is ignored");
    assert!(warning.contains("admin.listen"), "{warning}");
    log(&mut proxy, "configuration reloaded");
    assert_eq!(get(Version::HTTP_11, &api).await.unwrap().body, "etcd-b");

    // Invalid values are refused with positions, counted; the running one serves.
    etcd.put(KEY, &value(b.addr, "logging: { levle: debug }\n"));
    let error = log(&mut proxy, "invalid configuration");
    assert!(
        error.contains(&format!("etcd:{KEY}:7:12: logging.levle")),
        "{error}"
    );
    etcd.put(
        KEY,
        &value(b.addr, "etcd: { endpoints: [\"http://elsewhere:2379\"] }\n"),
    );
    let error = log(&mut proxy, "invalid configuration");
    assert!(
        error.contains(&format!("etcd:{KEY}:7:1: etcd: comes from the local")),
        "{error}"
    );
    assert_eq!(reloads(&proxy, "failure", 2.0).await, 2.0);
    assert_eq!(get(Version::HTTP_11, &api).await.unwrap().body, "etcd-b");

    // A deleted key counts once; the running configuration stays.
    etcd.delete(KEY);
    log(&mut proxy, "the etcd key is gone");
    assert_eq!(reloads(&proxy, "failure", 3.0).await, 3.0);
    assert_eq!(get(Version::HTTP_11, &api).await.unwrap().body, "etcd-b");

    // Fail static: etcd down, the proxy serves on; back, changes flow again.
    etcd.stop();
    log(&mut proxy, "cannot read the configuration from etcd");
    for _ in 0..5 {
        assert_eq!(get(Version::HTTP_11, &api).await.unwrap().body, "etcd-b");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    etcd.restart();
    etcd.put(KEY, &value(a.addr, ""));
    log(&mut proxy, "etcd readable again");
    log(&mut proxy, "configuration reloaded");
    assert_eq!(get(Version::HTTP_11, &api).await.unwrap().body, "etcd-a");

    // SIGHUP re-reads and re-applies the key, unchanged or not.
    let before = reloads(&proxy, "success", 0.0).await;
    proxy.signal("HUP");
    log(&mut proxy, "SIGHUP received");
    log(&mut proxy, "configuration reloaded");
    assert!(reloads(&proxy, "success", before + 1.0).await >= before + 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_back_with_its_data_lost_is_read_afresh() {
    let (a, b) = (http_backend("etcd-a"), http_backend("etcd-b"));
    let mut etcd = Etcd::start();
    // A store that lived: its revision is past what the fresh one reaches.
    for _ in 0..5 {
        etcd.put("/elsewhere/counter", "x");
    }
    etcd.put(KEY, &value(a.addr, ""));
    let mut proxy = tokio::task::block_in_place(|| ProxyProcess::start(&bootstrap(&etcd), 1));
    let api = format!("http://{}/", proxy.listener("api"));
    assert_eq!(get(Version::HTTP_11, &api).await.unwrap().body, "etcd-a");

    // etcd comes back on the same port with an empty data directory: its
    // revision starts again below the one remora saw last.
    etcd.stop();
    log(&mut proxy, "cannot read the configuration from etcd");
    let back = Instant::now();
    tokio::task::block_in_place(|| etcd.wipe_and_restart());
    etcd.put(KEY, &value(b.addr, ""));
    eventually(Duration::from_secs(15), "the new value applied", || async {
        get(Version::HTTP_11, &api).await.unwrap().body == "etcd-b"
    })
    .await;
    println!(
        "etcd back empty: the new value applied after {:?}",
        back.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_invalid_etcd_key_stops_the_start() {
    let etcd = Etcd::start();
    let file = ConfigFile::new(&bootstrap(&etcd));
    let missing = run_to_exit(&file).await;
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success());
    assert!(
        stderr.contains(&format!(
            "the etcd key {KEY} (config_source) does not exist"
        )),
        "{stderr}"
    );

    etcd.put(KEY, "service: { name: etcd-config }\nupstreams: 3\n");
    let invalid = run_to_exit(&file).await;
    let stderr = String::from_utf8_lossy(&invalid.stderr);
    assert!(!invalid.status.success());
    assert!(
        stderr.contains(&format!("etcd:{KEY}:2:12: upstreams:")),
        "{stderr}"
    );
}
