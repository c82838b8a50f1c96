//! Live configuration: the file is watched (content hash) and reloaded; a valid change is
//! applied without failing a request — endpoints and policies move, listeners come and go
//! (a removed one refuses new connections while its in-flight request completes), upstream
//! state survives changes that do not concern it; an invalid file is refused with positioned
//! errors, counted, and the old configuration keeps serving; SIGHUP reloads; settings that
//! cannot change live keep their value with a warning; a configuration from Consul KV follows the
//! same rules, and a missing or invalid KV value stops the start.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use tokio::net::TcpStream;

use support::consul::{ConsulStandIn, ErrorMode, Instance};
use support::proxy::ConfigFile;
use support::{Proxy, ProxyProcess, eventually, get, http_backend, prom};

/// The admin `/config` of the proxy whose admin listener is `admin`.
async fn config_json(admin: SocketAddr) -> String {
    let reply = get(Version::HTTP_11, &format!("http://{admin}/config"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    reply.body
}

/// Asserts that `GET url` answers 200 with `body`.
async fn assert_serves(url: &str, body: &str) {
    let reply = get(Version::HTTP_11, url).await.unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, body));
}

/// `remora_config_reloads_total{result="failure"}` once it reaches `expected` (or after 2 s).
async fn failed_reloads(metrics_url: &str, expected: f64) -> f64 {
    let failure = [("result", "failure")];
    let name = "remora_config_reloads_total";
    prom::wait_for_value(
        metrics_url,
        name,
        &failure,
        expected,
        Duration::from_secs(2),
    )
    .await
}

/// One upstream `name` on `listen` over `endpoints`, plus `extra` lines for the upstream.
fn upstream(name: &str, listen: &str, endpoints: &[SocketAddr], extra: &str) -> String {
    let endpoints: Vec<String> = endpoints.iter().map(ToString::to_string).collect();
    format!(
        "  - name: {name}\n    listen: {listen}\n    protocol: http\n    \
         discovery: {{ static: [{}] }}\n{extra}",
        endpoints.join(", ")
    )
}

fn config(upstreams: &[String]) -> String {
    format!(
        "service: {{ name: reload-test }}\n\
         upstreams:\n{}\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         runtime: {{ drain_timeout: 5s }}\n\
         logging: {{ access_log: false }}\n",
        upstreams.concat()
    )
}

/// One HTTP/1.1 connection to `addr`, kept open: every request on it uses the same connection.
struct Connection(hyper::client::conn::http1::SendRequest<Empty<Bytes>>);

impl Connection {
    async fn open(addr: SocketAddr) -> Connection {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(connection);
        Connection(sender)
    }

    /// `GET path`: status and body.
    async fn get(&mut self, path: &str) -> (StatusCode, String) {
        self.0.ready().await.expect("the connection stays open");
        let request = Request::get(path)
            .header("host", "reload.test")
            .body(Empty::new())
            .unwrap();
        let response = self.0.send_request(request).await.expect("response");
        let status = response.status();
        let body = response.into_body().collect().await.expect("body");
        (
            status,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_file_moves_traffic_and_policy_on_open_connections() {
    let a = http_backend("move-a");
    let b = http_backend("move-b");
    let file = ConfigFile::new(&config(&[upstream("moving", "127.0.0.1:0", &[a.addr], "")]));
    let proxy = Proxy::start_watching(&file, Duration::from_millis(200)).await;
    let listener = proxy.upstream("moving");
    let mut connection = Connection::open(listener).await;
    assert_eq!(connection.get("/").await, (StatusCode::OK, "move-a".into()));

    // Endpoints: A → B, on the same keep-alive connection.
    file.write(&config(&[upstream("moving", "127.0.0.1:0", &[b.addr], "")]));
    let changed = Instant::now();
    while connection.get("/").await.1 != "move-b" {
        assert!(
            changed.elapsed() < Duration::from_secs(5),
            "traffic did not reach B"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let moved_after = changed.elapsed();
    for _ in 0..20 {
        assert_eq!(connection.get("/").await, (StatusCode::OK, "move-b".into()));
    }

    // Policy: a request timeout of 100 ms now cuts /slow/1000 short (504).
    file.write(&config(&[upstream(
        "moving",
        "127.0.0.1:0",
        &[b.addr],
        "    timeouts: { request: 100ms }\n",
    )]));
    let changed = Instant::now();
    while connection.get("/slow/1000").await.0 != StatusCode::GATEWAY_TIMEOUT {
        assert!(
            changed.elapsed() < Duration::from_secs(5),
            "the new timeout does not apply"
        );
    }

    // One connection carried everything: the new stack was picked per request.
    let metrics = prom::scrape(&proxy.admin_url("/metrics")).await;
    let connections = prom::value(
        &metrics,
        "remora_connections_total",
        &[("listener", "moving")],
    );
    assert_eq!(connections, Some(1.0), "{metrics}");
    assert_eq!(proxy.current().await.upstream("moving"), Some(listener));
    assert!(
        moved_after < Duration::from_secs(2),
        "moved after {moved_after:?}"
    );

    let shown = config_json(proxy.bound.admin).await;
    assert!(shown.contains("\"request\": \"100ms\""), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_listener_serves_and_a_removed_one_drains() {
    let backend = http_backend("listeners");
    let file = ConfigFile::new(&config(&[upstream(
        "leaving",
        "127.0.0.1:0",
        &[backend.addr],
        "",
    )]));
    let proxy = Proxy::start_watching(&file, Duration::from_millis(200)).await;
    let leaving = proxy.upstream("leaving");

    let slow_url = format!("http://{leaving}/slow/1500");
    let in_flight = tokio::spawn(async move { get(Version::HTTP_11, &slow_url).await });
    eventually(Duration::from_secs(5), "the slow request arrives", || {
        let arrived = backend.requests() == 1;
        async move { arrived }
    })
    .await;

    file.write(&config(&[upstream(
        "arriving",
        "127.0.0.1:0",
        &[backend.addr],
        "",
    )]));
    let deadline = Instant::now() + Duration::from_secs(5);
    let arriving = loop {
        if let Some(addr) = proxy.current().await.upstream("arriving") {
            break addr;
        }
        assert!(Instant::now() < deadline, "the new listener is not bound");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_serves(&format!("http://{arriving}/"), "listeners").await;

    eventually(
        Duration::from_secs(2),
        "the removed listener refuses connections",
        || async { TcpStream::connect(leaving).await.is_err() },
    )
    .await;
    let reply = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "listeners");
    assert_eq!(proxy.current().await.upstream("leaving"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_state_survives_a_reload_that_does_not_change_it() {
    let backend = http_backend("breaker");
    let breaker = "    circuit_breaker: { consecutive_failures: 1, open_for: 60s }\n";
    let guarded =
        |extra: &str| config(&[upstream("guarded", "127.0.0.1:0", &[backend.addr], extra)]);
    let proxy = Proxy::start(&guarded(breaker)).await;
    let listener = proxy.upstream("guarded");
    let reply = get(Version::HTTP_11, &format!("http://{listener}/status/503"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let open = |reply: &support::Reply| {
        reply.headers.get("x-remora-error").map(|v| v.as_bytes()) == Some(b"circuit_open")
    };
    let reply = get(Version::HTTP_11, &format!("http://{listener}/"))
        .await
        .unwrap();
    assert!(open(&reply), "the breaker opened: {reply:?}");

    // Retries and a rate limit change; the breaker's settings do not: it stays open.
    let more = format!(
        "{breaker}    retries: {{ attempts: 3 }}\n    rate_limit: {{ requests_per_second: 1000 }}\n"
    );
    assert!(proxy.reload(&guarded(&more)).await);
    let reply = get(Version::HTTP_11, &format!("http://{listener}/"))
        .await
        .unwrap();
    assert!(open(&reply), "still open after the reload: {reply:?}");

    // New breaker settings start a new breaker, closed.
    let changed = "    circuit_breaker: { consecutive_failures: 5, open_for: 60s }\n";
    assert!(proxy.reload(&guarded(changed)).await);
    assert_serves(&format!("http://{listener}/"), "breaker").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_load_through_many_reloads_fails_no_request() {
    let a = http_backend("load-a");
    let b = http_backend("load-b");
    let variants = [
        config(&[upstream("steady", "127.0.0.1:0", &[a.addr], "")]),
        config(&[upstream(
            "steady",
            "127.0.0.1:0",
            &[a.addr, b.addr],
            "    load_balancing: { policy: round_robin }\n    retries: { attempts: 2 }\n",
        )]),
        config(&[
            upstream(
                "steady",
                "127.0.0.1:0",
                &[b.addr],
                "    timeouts: { connect: 2s, request: 10s }\n    \
                 circuit_breaker: { consecutive_failures: 50 }\n",
            ),
            upstream("extra", "127.0.0.1:0", &[a.addr], ""),
        ]),
        config(&[upstream(
            "steady",
            "127.0.0.1:0",
            &[a.addr, b.addr],
            "    outlier_detection: { consecutive_failures: 3 }\n    \
             max_concurrent_requests: 500\n",
        )]),
    ];
    let proxy = Proxy::start(&variants[0]).await;
    let listener = proxy.upstream("steady");

    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..4 {
        let (ok, failed, stop) = (Arc::clone(&ok), Arc::clone(&failed), Arc::clone(&stop));
        clients.push(tokio::spawn(async move {
            // Half the clients keep one connection, half open one per request.
            let mut connection = Connection::open(listener).await;
            let path = if client % 2 == 0 { "/" } else { "/slow/20" };
            let url = format!("http://{listener}{path}");
            while !stop.load(Ordering::Relaxed) {
                let status = if client < 2 {
                    connection.get(path).await.0
                } else {
                    match get(Version::HTTP_11, &url).await {
                        Ok(reply) => reply.status,
                        Err(_) => StatusCode::IM_A_TEAPOT,
                    }
                };
                if status == StatusCode::OK {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    let reloads = 12;
    for round in 1..=reloads {
        // Pacing the load between reloads, not synchronisation.
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(proxy.reload(&variants[round % variants.len()]).await);
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(
        failed, 0,
        "{failed} failed, {ok} succeeded over {reloads} reloads"
    );
    assert!(ok > 100, "only {ok} requests went through");
    assert_eq!(proxy.current().await.upstream("steady"), Some(listener));
}

fn process_config(endpoint: SocketAddr, extra: &str) -> String {
    format!(
        "service: {{ name: reload-process }}\n\
         upstreams:\n{}\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         logging: {{ access_log: false }}\n{extra}",
        upstream("api", "127.0.0.1:0", &[endpoint], "")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_is_refused_logged_with_positions_and_counted() {
    let backend = http_backend("invalid");
    let mut proxy = ProxyProcess::start_with_args(
        &process_config(backend.addr, ""),
        1,
        &["--watch-interval", "200ms"],
    );
    let api = format!("http://{}/", proxy.listener("api"));
    let metrics_url = format!("http://{}/metrics", proxy.admin);
    let successes = [("result", "success")];
    let text = prom::scrape(&metrics_url).await;
    assert_eq!(
        prom::value(
            &text,
            "remora_config_reloads_total",
            &[("result", "failure")]
        ),
        Some(0.0)
    );
    assert!(
        prom::value(
            &text,
            "remora_config_last_reload_success_timestamp_seconds",
            &[]
        )
        .is_some()
    );

    // Line 6, column 5: an unknown key in the upstream.
    let broken = process_config(backend.addr, "").replace(
        "    discovery:",
        "    retires: { attempts: 2 }\n    discovery:",
    );
    proxy.config.write(&broken);
    let error = proxy.wait_for_log("invalid configuration");
    let file = proxy.config.path.display().to_string();
    assert!(
        error.contains(&format!("{file}:6:5: upstreams[0].retires")) && error.contains("retires"),
        "{error}"
    );
    proxy.wait_for_log("the running configuration stays");
    assert_eq!(failed_reloads(&metrics_url, 1.0).await, 1.0);
    let reply = get(Version::HTTP_11, &api).await.unwrap();
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "invalid")
    );

    // A semantic error is positioned too, and counted once more.
    proxy.config.write(&process_config(
        backend.addr,
        "runtime: { worker_threads: 0 }\n",
    ));
    let error = proxy.wait_for_log("invalid configuration");
    assert!(
        error.contains(&format!("{file}:9:")) && error.contains("runtime.worker_threads"),
        "{error}"
    );
    assert_eq!(failed_reloads(&metrics_url, 2.0).await, 2.0);

    // A valid file that also changes a fixed setting: applied, with a warning for the key.
    proxy.config.write(&process_config(
        backend.addr,
        "runtime: { worker_threads: 2 }\n",
    ));
    let warning = proxy.wait_for_log("cannot change while remora runs");
    assert!(warning.contains("runtime.worker_threads"), "{warning}");
    proxy.wait_for_log("configuration reloaded");
    let text = prom::scrape(&metrics_url).await;
    assert_eq!(
        prom::value(&text, "remora_config_reloads_total", &successes),
        Some(1.0)
    );
    let shown = config_json(proxy.admin).await;
    assert!(shown.contains("\"worker_threads\": 1"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_when_polling_is_off() {
    let a = http_backend("hup-a");
    let b = http_backend("hup-b");
    let mut proxy =
        ProxyProcess::start_with_args(&process_config(a.addr, ""), 1, &["--watch-interval", "off"]);
    let api = format!("http://{}/", proxy.listener("api"));
    assert_eq!(get(Version::HTTP_11, &api).await.unwrap().body, "hup-a");

    proxy.config.write(&process_config(b.addr, ""));
    proxy.signal("HUP");
    proxy.wait_for_log("SIGHUP received");
    proxy.wait_for_log("configuration reloaded");
    assert_eq!(get(Version::HTTP_11, &api).await.unwrap().body, "hup-b");
    assert!(
        proxy.child.try_wait().unwrap().is_none(),
        "SIGHUP must not stop remora"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configuration_can_come_from_a_consul_kv_key() {
    let a = http_backend("kv-a");
    let b = http_backend("kv-b");
    let consul = ConsulStandIn::start();
    let key = "remora/kv-test";
    let value = |endpoint: SocketAddr, extra: &str| {
        format!(
            "service: {{ name: kv-test }}\nupstreams:\n{}{extra}",
            upstream("api", "127.0.0.1:0", &[endpoint], "")
        )
    };
    consul.put_kv(key, &value(a.addr, ""));
    // The local file: how to reach Consul, where the configuration is, process settings.
    let bootstrap = format!(
        "service: {{ name: kv-test }}\n\
         consul: {{ address: \"{}\", wait: 2s }}\n\
         config_source: {{ consul_kv: {{ key: {key} }} }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         logging: {{ access_log: false }}\n",
        consul.url()
    );
    let mut proxy = ProxyProcess::start(&bootstrap, 1);
    let api = format!("http://{}/", proxy.listener("api"));
    assert_eq!(get(Version::HTTP_11, &api).await.unwrap().body, "kv-a");

    // A change through the KV HTTP API reaches the proxy within a second or two.
    let put = Request::put(format!("{}/v1/kv/{key}", consul.url()))
        .body(http_body_util::Full::new(Bytes::from(value(b.addr, ""))))
        .unwrap();
    let changed = Instant::now();
    assert_eq!(
        support::send(Version::HTTP_11, put).await.unwrap().body,
        "true"
    );
    proxy.wait_for_log("configuration reloaded");
    assert_eq!(get(Version::HTTP_11, &api).await.unwrap().body, "kv-b");
    let took = changed.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?}");

    // An invalid value is refused with errors naming the key, and counted.
    consul.put_kv(key, &value(b.addr, "logging: { levle: debug }\n"));
    let error = proxy.wait_for_log("invalid configuration");
    assert!(
        error.contains(&format!("consul-kv:{key}:7:12: logging.levle")),
        "{error}"
    );
    consul.put_kv(key, &value(b.addr, "consul: { wait: 1s }\n"));
    let error = proxy.wait_for_log("invalid configuration");
    assert!(
        error.contains(&format!(
            "consul-kv:{key}:7:1: consul: comes from the local"
        )),
        "{error}"
    );
    let metrics_url = format!("http://{}/metrics", proxy.admin);
    assert_eq!(failed_reloads(&metrics_url, 2.0).await, 2.0);
    assert_eq!(get(Version::HTTP_11, &api).await.unwrap().body, "kv-b");

    // Fail static: while Consul errors, the running configuration keeps serving; changes
    // made meanwhile are applied once Consul answers again.
    consul.set_error_mode(ErrorMode::ServerError);
    proxy.wait_for_log("cannot read the configuration from Consul KV");
    assert_eq!(get(Version::HTTP_11, &api).await.unwrap().body, "kv-b");
    consul.put_kv(key, &value(a.addr, ""));
    consul.set_error_mode(ErrorMode::None);
    proxy.wait_for_log("Consul KV readable again");
    proxy.wait_for_log("configuration reloaded");
    assert_eq!(get(Version::HTTP_11, &api).await.unwrap().body, "kv-a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_can_switch_between_static_and_consul_discovery() {
    let a = http_backend("switch-a");
    let b = http_backend("switch-b");
    let consul = ConsulStandIn::start();
    consul.register(Instance::new("b-1", "switch", b.addr));
    let with_discovery = |discovery: &str| {
        format!(
            "service: {{ name: switch-test }}\n\
             consul: {{ address: \"{}\" }}\n\
             upstreams:\n  - name: switching\n    listen: 127.0.0.1:0\n    \
             discovery: {discovery}\n\
             admin: {{ listen: 127.0.0.1:0 }}\n\
             logging: {{ access_log: false }}\n",
            consul.url()
        )
    };
    let static_a = with_discovery(&format!("{{ static: [{}] }}", a.addr));
    let proxy = Proxy::start(&static_a).await;
    let url = format!("http://{}/", proxy.upstream("switching"));
    assert_serves(&url, "switch-a").await;

    // To Consul: A serves until the watch's first answer, then B; nothing fails between.
    assert!(
        proxy
            .reload(&with_discovery("{ consul: { service: switch } }"))
            .await
    );
    eventually(Duration::from_secs(5), "Consul's endpoint serves", || {
        let url = url.clone();
        async move {
            let reply = get(Version::HTTP_11, &url).await.unwrap();
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
            reply.body == "switch-b"
        }
    })
    .await;

    // And back: the static list applies at once, and the stopped watch cannot undo it.
    assert!(proxy.reload(&static_a).await);
    consul.register(Instance::new("b-2", "switch", b.addr).tags(&["woken"]));
    for _ in 0..20 {
        assert_serves(&url, "switch-a").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_invalid_consul_kv_value_stops_the_start() {
    let consul = ConsulStandIn::start();
    let key = "remora/absent";
    let bootstrap = ConfigFile::new(&format!(
        "service: {{ name: kv-start }}\n\
         consul: {{ address: \"{}\" }}\n\
         config_source: {{ consul_kv: {{ key: {key} }} }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n",
        consul.url()
    ));
    let run = |path: std::path::PathBuf| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_remora"))
                .args(["run", "--config"])
                .arg(path)
                .output()
                .expect("run remora")
        })
    };
    let missing = run(bootstrap.path.clone()).await.unwrap();
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success());
    assert!(
        stderr.contains("the Consul KV key remora/absent (config_source) does not exist"),
        "{stderr}"
    );

    consul.put_kv(key, "service: { name: kv-start }\nupstreams: 3\n");
    let invalid = run(bootstrap.path.clone()).await.unwrap();
    let stderr = String::from_utf8_lossy(&invalid.stderr);
    assert!(!invalid.status.success());
    assert!(
        stderr.contains("consul-kv:remora/absent:2:12: upstreams:"),
        "{stderr}"
    );
}
