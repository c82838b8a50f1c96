//! Live configuration: the file is watched (content hash) and reloaded; a valid change is
//! applied without failing a request — endpoints and policies move, listeners come and go
//! (a removed one refuses new connections while its in-flight request completes), upstream
//! state survives changes that do not concern it; an invalid file is refused with positioned
//! errors, counted, and the old configuration keeps serving; SIGHUP reloads; settings that
//! cannot change live keep their value with a warning; a configuration from Consul KV follows the
//! same rules, and a missing or invalid KV value stops the start. Split weights changed under
//! load move traffic between Consul subsets with no failed request; the transparent route table
//! follows reloads.

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
use support::proxy::{ConfigFile, run_to_exit};
use support::{Proxy, ProxyProcess, eventually, get, http_backend, prom, raw_h2};

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

/// The values of header `name` that the origin behind listener `addr` received with a
/// `GET /headers` (an `http_backend` echoes them).
async fn header_received(addr: SocketAddr, name: &str) -> serde_json::Value {
    let reply = get(Version::HTTP_11, &format!("http://{addr}/headers"))
        .await
        .unwrap();
    let seen: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    seen["headers"][name].clone()
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

/// A valid configuration that cannot be applied (its new listener's port is taken) is tried
/// again while the file holds it: once the port is free, the listener serves, with no second
/// write of the file. (It was never tried again: the file had to change, or SIGHUP.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_that_could_not_be_applied_is_tried_again() {
    let backend = http_backend("retried");
    let file = ConfigFile::new(&config(&[upstream(
        "first",
        "127.0.0.1:0",
        &[backend.addr],
        "",
    )]));
    let proxy = Proxy::start_watching(&file, Duration::from_millis(100)).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap();
    file.write(&config(&[
        upstream("first", "127.0.0.1:0", &[backend.addr], ""),
        upstream("second", &port.to_string(), &[backend.addr], ""),
    ]));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        proxy.current().await.upstream("second"),
        None,
        "the port is taken"
    );
    drop(taken);
    eventually(
        Duration::from_secs(5),
        "the listener bound once its port is free",
        || async { proxy.current().await.upstream("second") == Some(port) },
    )
    .await;
    assert_serves(&format!("http://{port}/"), "retried").await;
}

/// An HTTP/2 client of a listener that a reload removes gets the two-step GOAWAY of a drain
/// (the largest stream id, then after a PING the last stream taken), and its stream in flight
/// still gets its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_listener_sends_http2_clients_a_two_step_goaway() {
    let backend = http_backend("leaving-h2");
    let http2 = |name: &str| {
        let plain = upstream(name, "127.0.0.1:0", &[backend.addr], "");
        plain.replace("protocol: http", "protocol: http2")
    };
    let file = ConfigFile::new(&config(&[http2("leaving-h2")]));
    let proxy = Proxy::start_watching(&file, Duration::from_millis(200)).await;
    let mut client = raw_h2::client_get(proxy.upstream("leaving-h2"), "/slow/1000").await;
    eventually(Duration::from_secs(5), "the slow request arrives", || {
        let arrived = backend.requests() == 1;
        async move { arrived }
    })
    .await;
    file.write(&config(&[http2("staying-h2")]));
    let goaways = raw_h2::goaways_until_answered(&mut client).await;
    assert_eq!(
        goaways,
        [(0x7fff_ffff, 0), (1, 0)],
        "GOAWAYs (last stream id, code)"
    );
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
    let missing = run_to_exit(&bootstrap).await;
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success());
    assert!(
        stderr.contains("the Consul KV key remora/absent (config_source) does not exist"),
        "{stderr}"
    );

    consul.put_kv(key, "service: { name: kv-start }\nupstreams: 3\n");
    let invalid = run_to_exit(&bootstrap).await;
    let stderr = String::from_utf8_lossy(&invalid.stderr);
    assert!(!invalid.status.success());
    assert!(
        stderr.contains("consul-kv:remora/absent:2:12: upstreams:"),
        "{stderr}"
    );
}

/// Responses counted by the load clients: per backend (by body) and failures.
#[derive(Default)]
struct Tally {
    v1: AtomicU64,
    v2: AtomicU64,
    failed: AtomicU64,
}

impl Tally {
    fn count(&self, status: StatusCode, body: &str) {
        let counter = match (status, body) {
            (StatusCode::OK, "split-v1") => &self.v1,
            (StatusCode::OK, "split-v2") => &self.v2,
            _ => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// (v1, v2) responses so far.
    fn served(&self) -> (u64, u64) {
        (
            self.v1.load(Ordering::Relaxed),
            self.v2.load(Ordering::Relaxed),
        )
    }

    /// Waits until `more` responses were served after `since`; returns the
    /// (v1, v2) responses since then.
    async fn after(&self, since: (u64, u64), more: u64) -> (u64, u64) {
        eventually(Duration::from_secs(20), "the load goes on", || async {
            let (v1, v2) = self.served();
            v1 + v2 >= since.0 + since.1 + more
        })
        .await;
        let (v1, v2) = self.served();
        (v1 - since.0, v2 - since.1)
    }
}

/// Issue 8: the weights of a split over two Consul subsets, changed by rewriting the file under
/// continuous load (100/0 → 0/100 → 50/50), move the traffic with no failed request. A request
/// that started before the swap may finish on the old split: at most one per client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_split_weights_by_reload_shifts_traffic_with_no_failed_request() {
    let consul = ConsulStandIn::start();
    let (v1, v2) = (http_backend("split-v1"), http_backend("split-v2"));
    consul.register(Instance::new("v1", "api", v1.addr).tags(&["v1"]));
    consul.register(Instance::new("v2", "api", v2.addr).meta(&[("version", "v2")]));
    let with_weights = |v1: u32, v2: u32| {
        format!(
            "service: {{ name: split-reload }}\n\
             consul: {{ address: \"{}\", wait: 2s }}\n\
             upstreams:\n  - name: api\n    listen: 127.0.0.1:0\n    \
             discovery: {{ consul: {{ service: api }} }}\n    \
             backends:\n      v1: {{ subset: {{ tags: [v1] }} }}\n      \
             v2: {{ subset: {{ meta: {{ version: v2 }} }} }}\n    \
             routes:\n      - name: canary\n        \
             split: [{{ backend: v1, weight: {v1} }}, {{ backend: v2, weight: {v2} }}]\n\
             admin: {{ listen: 127.0.0.1:0 }}\n\
             logging: {{ access_log: false }}\n",
            consul.url()
        )
    };
    let file = ConfigFile::new(&with_weights(100, 0));
    let proxy = Proxy::start_watching(&file, Duration::from_millis(50)).await;
    let listener = proxy.upstream("api");
    let url = format!("http://{listener}/");
    eventually(Duration::from_secs(5), "the v1 subset serves", || async {
        let reply = get(Version::HTTP_11, &url).await.unwrap();
        reply.status == StatusCode::OK && reply.body == "split-v1"
    })
    .await;

    const CLIENTS: u64 = 4;
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (tally, stop, url) = (Arc::clone(&tally), Arc::clone(&stop), url.clone());
        clients.push(tokio::spawn(async move {
            // Half the clients keep one connection, half open one per request.
            let mut connection = Connection::open(listener).await;
            while !stop.load(Ordering::Relaxed) {
                let (status, body) = if client % 2 == 0 {
                    connection.get("/").await
                } else {
                    match get(Version::HTTP_11, &url).await {
                        Ok(reply) => (reply.status, reply.body),
                        Err(error) => (StatusCode::IM_A_TEAPOT, error.to_string()),
                    }
                };
                tally.count(status, &body);
            }
        }));
    }
    // The metrics registry is shared by the tests of this file: the running split is read
    // from this proxy's `/config`.
    let admin = proxy.bound.admin;
    let applied = |v2: u64| async move {
        eventually(Duration::from_secs(10), "the new split runs", || async {
            let running: serde_json::Value =
                serde_json::from_str(&config_json(admin).await).expect("JSON");
            running["upstreams"][0]["routes"][0]["split"][1]["weight"] == v2
        })
        .await;
    };

    let (on_v1, on_v2) = tally.after((0, 0), 200).await;
    assert_eq!(on_v2, 0, "100/0 sent {on_v2} of {} to v2", on_v1 + on_v2);

    file.write(&with_weights(0, 100));
    applied(100).await;
    let (on_v1, on_v2) = tally.after(tally.served(), 400).await;
    assert!(
        on_v1 <= CLIENTS,
        "after 0/100: {on_v1} to v1, {on_v2} to v2"
    );

    file.write(&with_weights(50, 50));
    applied(50).await;
    let (on_v1, on_v2) = tally.after(tally.served(), 1000).await;
    let v2_share = on_v2 as f64 / (on_v1 + on_v2) as f64;
    assert!(
        (0.35..=0.65).contains(&v2_share),
        "after 50/50: {on_v1} to v1, {on_v2} to v2"
    );

    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let failed = tally.failed.load(Ordering::Relaxed);
    let (v1_total, v2_total) = tally.served();
    assert_eq!(
        failed, 0,
        "{failed} failed; v1 {v1_total}, v2 {v2_total} served"
    );
    println!("served v1 {v1_total}, v2 {v2_total}, failed {failed}");
    // Both subsets still hold their instance after the reloads.
    let scraped = prom::scrape(&proxy.admin_url("/metrics")).await;
    for subset in ["api/v1", "api/v2"] {
        let endpoints = prom::value(&scraped, "remora_endpoints", &[("upstream", subset)]);
        assert_eq!(endpoints, Some(1.0), "{subset}");
    }
    assert_eq!(proxy.current().await.upstream("api"), Some(listener));
}

/// Transparent mode follows reloads: the route table (hosts → upstream) changes for the next
/// request on a connection opened before, upstreams without `listen` come and go, and the
/// transparent listener keeps its socket until its section is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transparent_route_table_follows_reloads() {
    let a = http_backend("transparent-a");
    let b = http_backend("transparent-b");
    let with_upstreams = |upstreams: &str, transparent: &str| {
        format!(
            "service: {{ name: transparent-reload }}\n\
             upstreams:\n{upstreams}{transparent}\
             admin: {{ listen: 127.0.0.1:0 }}\n\
             logging: {{ access_log: false }}\n"
        )
    };
    let hosted = |name: &str, hosts: &str, endpoint: SocketAddr| {
        format!(
            "  - name: {name}\n    hosts: [{hosts}]\n    protocol: http\n    \
             discovery: {{ static: [{endpoint}] }}\n"
        )
    };
    let listener = "transparent: { outbound_listen: 127.0.0.1:0, unmatched: refuse }\n";
    let first = with_upstreams(&hosted("first", "reload.test", a.addr), listener);
    let proxy = Proxy::start(&first).await;
    let transparent = proxy.bound.transparent.expect("transparent listener");
    let mut connection = Connection::open(transparent).await;
    assert_eq!(
        connection.get("/").await,
        (StatusCode::OK, "transparent-a".into())
    );

    // reload.test moves to a new upstream (no listener either); same connection.
    let moved = with_upstreams(
        &[
            hosted("first", "elsewhere.test", a.addr),
            hosted("second", "reload.test", b.addr),
        ]
        .concat(),
        listener,
    );
    assert!(proxy.reload(&moved).await);
    assert_eq!(
        connection.get("/").await,
        (StatusCode::OK, "transparent-b".into())
    );
    // A changed policy of the routed upstream applies too.
    let timed = moved.replace(
        "  - name: second\n",
        "  - name: second\n    timeouts: { request: 100ms }\n",
    );
    assert!(proxy.reload(&timed).await);
    assert_eq!(
        connection.get("/slow/1000").await.0,
        StatusCode::GATEWAY_TIMEOUT
    );

    // Nothing answers for reload.test any more: refused with no_route.
    let unrouted = with_upstreams(&hosted("first", "elsewhere.test", a.addr), listener);
    assert!(proxy.reload(&unrouted).await);
    assert_eq!(connection.get("/").await.0, StatusCode::BAD_GATEWAY);
    assert_eq!(proxy.current().await.transparent, Some(transparent));

    // A changed transparent section keeps the socket; a removed one closes it.
    let passthrough = listener.replace("refuse", "passthrough");
    let back = with_upstreams(&hosted("first", "reload.test", a.addr), &passthrough);
    assert!(proxy.reload(&back).await);
    assert_eq!(proxy.current().await.transparent, Some(transparent));
    let mut fresh = Connection::open(transparent).await;
    assert_eq!(
        fresh.get("/").await,
        (StatusCode::OK, "transparent-a".into())
    );
    let without = with_upstreams(
        "  - name: first\n    listen: 127.0.0.1:0\n    protocol: http\n    \
         discovery: { static: [127.0.0.1:1] }\n",
        "",
    );
    assert!(proxy.reload(&without).await);
    assert_eq!(proxy.current().await.transparent, None);
    eventually(Duration::from_secs(5), "the socket closes", || async {
        TcpStream::connect(transparent).await.is_err()
    })
    .await;
}

/// A new Consul ACL token is a new client, though `/config` shows both as `<redacted>`: the
/// watches restart with it and discovery recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_consul_token_restarts_the_watches() {
    let a = http_backend("token-a");
    let b = http_backend("token-b");
    let consul = ConsulStandIn::start();
    consul.set_token(Some("first"));
    consul.register(Instance::new("a", "tokened", a.addr));
    let with_token = |token: &str| {
        format!(
            "service: {{ name: token-test }}\n\
             consul: {{ address: \"{}\", token: {token}, wait: 1s }}\n\
             upstreams:\n  - name: tokened\n    listen: 127.0.0.1:0\n    \
             discovery: {{ consul: {{ service: tokened }} }}\n\
             admin: {{ listen: 127.0.0.1:0 }}\n\
             logging: {{ access_log: false }}\n",
            consul.url()
        )
    };
    let proxy = Proxy::start(&with_token("first")).await;
    let url = format!("http://{}/", proxy.upstream("tokened"));
    eventually(
        Duration::from_secs(5),
        "Consul's endpoint serves",
        || async { get(Version::HTTP_11, &url).await.unwrap().body == "token-a" },
    )
    .await;

    // The agent now wants another token; the catalog moves to B.
    consul.set_token(Some("second"));
    consul.deregister("a");
    consul.register(Instance::new("b", "tokened", b.addr));
    assert!(proxy.reload(&with_token("second")).await);
    eventually(
        Duration::from_secs(10),
        "the new token's answer serves",
        || async {
            let reply = get(Version::HTTP_11, &url).await.unwrap();
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
            reply.body == "token-b"
        },
    )
    .await;
}

/// A credential a route sends (its `authorization` header, shown `<redacted>` in `/config`, so
/// `/config` reads the same before and after) is sent as the new value from the reload on: the
/// stack is rebuilt though nothing visible changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_credential_header_is_sent_after_a_reload() {
    let origin = http_backend("credential");
    let with_credential = |credential: &str| {
        let route = format!(
            "    routes:\n      - name: all\n        \
             request_headers: {{ set: {{ authorization: \"Bearer {credential}\" }} }}\n"
        );
        config(&[upstream("api", "127.0.0.1:0", &[origin.addr], &route)])
    };
    let proxy = Proxy::start(&with_credential("first")).await;
    let sent = || header_received(proxy.upstream("api"), "authorization");
    assert_eq!(sent().await, serde_json::json!(["Bearer first"]));
    let admin = proxy.current().await.admin;
    let shown = config_json(admin).await;
    assert!(!shown.contains("first"), "{shown}");

    assert!(proxy.reload(&with_credential("second")).await);
    assert_eq!(config_json(admin).await, shown);
    assert_eq!(sent().await, serde_json::json!(["Bearer second"]));
}

/// `requests` GETs of `url`, counted per answering backend (its body).
async fn split(url: &str, requests: usize) -> std::collections::BTreeMap<String, usize> {
    let mut answered = std::collections::BTreeMap::new();
    for _ in 0..requests {
        let reply = get(Version::HTTP_11, url).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        *answered.entry(reply.body).or_insert(0) += 1;
    }
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moves_static_endpoint_weights() {
    let a = http_backend("weight-a");
    let b = http_backend("weight-b");
    let weighted = |first: &str, second: &str| {
        config(&[format!(
            "  - name: weighted\n    listen: 127.0.0.1:0\n    protocol: http\n    \
             discovery: {{ static: [{first}, {second}] }}\n    \
             load_balancing: {{ policy: round_robin }}\n"
        )])
    };
    let heavy = |addr: SocketAddr| format!("{{ address: {addr}, weight: 3 }}");
    let proxy = Proxy::start(&weighted(&heavy(a.addr), &b.addr.to_string())).await;
    let url = format!("http://{}/", proxy.upstream("weighted"));
    // Smooth weighted round robin is exact.
    let answered = split(&url, 400).await;
    assert_eq!((answered["weight-a"], answered["weight-b"]), (300, 100));

    // The same endpoints, weights swapped.
    assert!(
        proxy
            .reload(&weighted(&a.addr.to_string(), &heavy(b.addr)))
            .await
    );
    let answered = split(&url, 400).await;
    assert_eq!((answered["weight-a"], answered["weight-b"]), (100, 300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_consul_registration_of_the_start() {
    let consul = ConsulStandIn::start();
    let app = http_backend("registered-app");
    let registering = |tag: &str| {
        format!(
            "service:\n  name: reload-registered\n  id: reg-r\n  port: {}\n  register: true\n  \
             tags: [{tag}]\n\
             inbound: {{ listen: 127.0.0.1:0 }}\n\
             consul: {{ address: \"{}\" }}\n\
             admin: {{ listen: 127.0.0.1:0 }}\n\
             logging: {{ access_log: false }}\n",
            app.addr.port(),
            consul.url()
        )
    };
    let proxy = Proxy::start(&registering("v1")).await;
    let registered = || consul.agent_service_ids().len() == 2;
    eventually(Duration::from_secs(5), "both registered", || async {
        registered()
    })
    .await;

    // Applied (the inbound listener keeps serving); the registration is the
    // start's: not withdrawn, not re-registered with the new tag.
    assert!(proxy.reload(&registering("v2")).await);
    assert_serves(&format!("http://{}/", proxy.inbound()), "registered-app").await;
    let app_service = consul.agent_service("reg-r").expect("still registered");
    assert_eq!(app_service["Tags"], serde_json::json!(["v1"]));
    assert_eq!(consul.agent_deregistrations(), 0);
    assert_eq!(consul.agent_registrations(), 2);

    // The shutdown still deregisters both.
    proxy.shutdown().await;
    assert!(
        consul.agent_service_ids().is_empty(),
        "{:?}",
        consul.agent_service_ids()
    );
    assert_eq!(consul.agent_deregistrations(), 2);
}

/// Issue 13: a configuration from Consul KV reads only the environment variables the local file
/// lists in `config_source.consul_kv.allowed_env`. Whoever can write the key cannot copy another
/// variable (the Consul token, any secret) into a header, a host name or a path: such a value is
/// refused with an error naming the variable — in any `${…}` form — and the running
/// configuration stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consul_kv_configuration_reads_only_the_allowed_environment() {
    let origin = http_backend("kv-env");
    let consul = ConsulStandIn::start();
    let key = "remora/kv-env";
    let value = |header: &str| {
        let route = format!(
            "    routes:\n      - name: all\n        \
             request_headers: {{ set: {{ x-from-env: \"{header}\" }} }}\n"
        );
        format!(
            "service: {{ name: kv-env }}\nupstreams:\n{}",
            upstream("api", "127.0.0.1:0", &[origin.addr], &route)
        )
    };
    consul.put_kv(key, &value("${REMORA_TEST_ALLOWED}"));
    let bootstrap = format!(
        "service: {{ name: kv-env }}\n\
         consul: {{ address: \"{}\", wait: 2s }}\n\
         config_source: {{ consul_kv: {{ key: {key}, allowed_env: [REMORA_TEST_ALLOWED] }} }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         logging: {{ access_log: false }}\n",
        consul.url()
    );
    let mut proxy = ProxyProcess::start_wrapped(
        &[
            "env",
            "REMORA_TEST_ALLOWED=allowed-value",
            "REMORA_TEST_SECRET=the-secret-value",
        ],
        &bootstrap,
        1,
    );
    let api = proxy.listener("api");
    let seen_header = || header_received(api, "x-from-env");
    assert_eq!(seen_header().await, serde_json::json!(["allowed-value"]));

    let metrics_url = format!("http://{}/metrics", proxy.admin);
    let forms = [
        "${REMORA_TEST_SECRET}",
        "$REMORA_TEST_SECRET",
        "x-${REMORA_TEST_SECRET:-none}",
        "${UNLISTED:-${REMORA_TEST_SECRET}}",
    ];
    for (refused, form) in forms.into_iter().enumerate() {
        consul.put_kv(key, &value(form));
        let log = proxy.log_until("configuration re").join("\n");
        assert!(
            log.contains("invalid configuration")
                && log.contains("REMORA_TEST_SECRET")
                && log.contains("allowed_env"),
            "{form}: {log}"
        );
        assert!(!log.contains("the-secret-value"), "{log}");
        assert_eq!(
            failed_reloads(&metrics_url, refused as f64 + 1.0).await,
            refused as f64 + 1.0
        );
        assert_eq!(seen_header().await, serde_json::json!(["allowed-value"]));
    }
    let config = config_json(proxy.admin).await;
    assert!(!config.contains("the-secret-value"), "{config}");

    // Listed names keep working, and `$$` stays a literal `$`.
    consul.put_kv(key, &value("$${REMORA_TEST_SECRET} ${REMORA_TEST_ALLOWED}"));
    proxy.wait_for_log("configuration reloaded");
    assert_eq!(
        seen_header().await,
        serde_json::json!(["${REMORA_TEST_SECRET} allowed-value"])
    );
}
