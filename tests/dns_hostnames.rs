//! Hostnames as endpoints, resolved by a real DNS server (dnsmasq serving a
//! made-up name from a hosts file, records with a 1 s TTL), through the
//! remora binary: a `discovery.static` hostname — unresolvable at start-up
//! (503, not ready, the proxy runs on), then followed when its answer
//! changes, kept while the server is gone (zero failed requests, errors
//! counted, one log line per failing / recovered transition); a list mixing
//! IPs and a weighted hostname; `discovery.dns` with `type: a` over A and
//! AAAA records (the top-level `dns.resolver` as its resolver); a routing
//! backend's static list naming a host; and a name
//! one of whose addresses refuses connections (IPv6 `::1` or IPv4
//! `127.0.0.1` dead, the other family serving): no request fails.
//!
//! Backends of one name share a port on different loopback addresses
//! (127.0.0.1, 127.0.0.2, ::1), as the name's addresses share its port.
//!
//! Needs `dnsmasq` (Debian `dnsmasq-base`, installed by `scripts/test.sh`).

mod support;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::{StatusCode, Version};
use socket2::{Domain, Socket, Type};

use support::config::{TestConfig, Upstream};
use support::dnsmasq::{Dnsmasq, HostsFile, free_dns_port};
use support::traffic::{hammer, hammer_until, served_by, wait_for_traffic_on};
use support::{Backend, ProxyProcess, get, http_backend, http_backend_on, prom};

const NAME: &str = "api.test.internal";
const UPSTREAM: &str = "names";

/// dnsmasq's options: `hosts` holds the names of `test.internal`, a domain
/// it answers itself (a name not listed is NXDOMAIN, a family not listed
/// NODATA, as an authoritative server says; without `--local` dnsmasq
/// refuses what its hosts files do not hold).
fn records(hosts: &HostsFile) -> Vec<String> {
    vec!["--local=/test.internal/".to_owned(), hosts.option()]
}

/// Sockets bound on `ips`, all on one port (the first picked by the
/// kernel), not listening yet: a connect to one is refused until it listens.
fn sockets_on_one_port(ips: &[&str]) -> (Vec<Socket>, u16) {
    let bound = |ip: &str, port: u16| {
        let addr = SocketAddr::new(ip.parse().unwrap(), port);
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
        socket.bind(&addr.into()).map(|()| socket)
    };
    'retry: loop {
        let first = bound(ips[0], 0).expect("bind");
        let port = first.local_addr().unwrap().as_socket().unwrap().port();
        let mut sockets = vec![first];
        for ip in &ips[1..] {
            match bound(ip, port) {
                Ok(socket) => sockets.push(socket),
                Err(_) => continue 'retry,
            }
        }
        return (sockets, port);
    }
}

fn listening(socket: Socket) -> TcpListener {
    socket.listen(128).expect("listen");
    TcpListener::from(socket)
}

/// Backends named `names[i]` on `ips[i]`, all on one port.
fn backends_on_one_port(ips: &[&str], names: &[&str]) -> (Vec<Backend>, u16) {
    let (sockets, port) = sockets_on_one_port(ips);
    let backends = (sockets.into_iter().zip(names))
        .map(|(socket, name)| http_backend_on(name, listening(socket)))
        .collect();
    (backends, port)
}

/// remora with one HTTP upstream whose `discovery:` is `discovery`, and the
/// `dns:` section asking dnsmasq on `dns_port` (refresh within 1–2 s).
fn start_proxy(discovery: &str, dns_port: u16) -> ProxyProcess {
    ProxyProcess::start(&yaml(discovery, dns_port, "2s"), 1)
}

/// The YAML of [`start_proxy`], with `max_refresh` as the `dns` upper bound.
fn yaml(discovery: &str, dns_port: u16, max_refresh: &str) -> String {
    TestConfig::new()
        .upstream(
            Upstream::discovered(UPSTREAM, discovery)
                .protocol("http")
                .with("load_balancing", "{ policy: round_robin }")
                .with("timeouts", "{ connect: 1s, request: 2s }"),
        )
        .section(
            "dns",
            format!(
                "{{ resolver: 127.0.0.1:{dns_port}, min_refresh: 1s, max_refresh: {max_refresh} }}"
            ),
        )
        .yaml()
}

fn admin_url(proxy: &ProxyProcess, path: &str) -> String {
    format!("http://{}{path}", proxy.admin)
}

async fn metric(proxy: &ProxyProcess, name: &str) -> f64 {
    let text = prom::scrape(&admin_url(proxy, "/metrics")).await;
    prom::value(&text, name, &[("upstream", UPSTREAM)]).unwrap_or(0.0)
}

async fn discovery_errors(proxy: &ProxyProcess) -> f64 {
    metric(proxy, "remora_discovery_errors_total").await
}

async fn ready_status(proxy: &ProxyProcess) -> StatusCode {
    let reply = get(Version::HTTP_11, &admin_url(proxy, "/ready")).await;
    reply.expect("GET /ready").status
}

/// How many of `lines` contain `needle`.
fn count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|line| line.contains(needle)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_hostname_follows_its_dns_answer_and_fails_static() {
    let (backends, port) =
        backends_on_one_port(&["127.0.0.1", "127.0.0.2"], &["host-first", "host-second"]);
    let hosts = HostsFile::new(&[("127.0.0.1", NAME)]);
    let dns_port = free_dns_port();
    let mut proxy = start_proxy(&format!("{{ static: [\"{NAME}:{port}\"] }}"), dns_port);
    let listener = proxy.listener(UPSTREAM);

    // No DNS server yet: the proxy runs, the upstream has no endpoints.
    let reply = get(Version::HTTP_11, &format!("http://{listener}/"))
        .await
        .expect("a reply");
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.headers["x-remora-error"], "no_endpoints");
    assert_eq!(ready_status(&proxy).await, StatusCode::SERVICE_UNAVAILABLE);
    let start = Instant::now();
    while discovery_errors(&proxy).await < 1.0 {
        assert!(start.elapsed() < Duration::from_secs(5), "no error counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The server comes: traffic on the name's address, ready.
    let dns = Dnsmasq::start(dns_port, &records(&hosts));
    let took = wait_for_traffic_on(listener, &["host-first"], Duration::from_secs(15)).await;
    eprintln!("first answer reached traffic in {took:?}");
    assert_eq!(ready_status(&proxy).await, StatusCode::OK);

    // The answer changes (hosts file rewritten, dnsmasq reloaded): traffic
    // moves within the TTL (1 s) plus a round, well inside max_refresh.
    hosts.write(&[("127.0.0.2", NAME)]);
    dns.reread_hosts();
    let took = wait_for_traffic_on(listener, &["host-second"], Duration::from_secs(5)).await;
    eprintln!("answer change reached traffic in {took:?}");
    assert!(backends[1].requests() >= 10);

    // The server is gone: the last address keeps serving, errors counted.
    dns.stop();
    let errors_before = discovery_errors(&proxy).await;
    let start = Instant::now();
    let (requests, failures) = hammer_until(
        listener,
        &["host-second"],
        Duration::from_secs(3),
        Duration::from_secs(20),
        || async { discovery_errors(&proxy).await >= errors_before + 2.0 },
    )
    .await;
    let errors = discovery_errors(&proxy).await - errors_before;
    eprintln!(
        "DNS down for {:?}: {requests} requests, {failures} failed, {errors} discovery errors",
        start.elapsed()
    );
    assert_eq!(failures, 0);
    assert_eq!(ready_status(&proxy).await, StatusCode::OK);

    // Back with both addresses: discovery recovers (within the 10 s backoff cap).
    hosts.write(&[("127.0.0.1", NAME), ("127.0.0.2", NAME)]);
    let _dns = Dnsmasq::start(dns_port, &records(&hosts));
    let start = Instant::now();
    let before = backends[0].requests();
    while backends[0].requests() == before {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "traffic did not come back to 127.0.0.1"
        );
        served_by(listener).await.expect("a reply");
    }
    let (_, failures) = hammer(
        listener,
        Duration::from_millis(500),
        &["host-first", "host-second"],
    )
    .await;
    assert_eq!(failures, 0);

    // One warning per failing spell (before the first answer, while the
    // server was gone) and one line per recovery, however many attempts.
    let mut log = proxy.startup_log.clone();
    log.extend(proxy.log_so_far());
    assert_eq!(count(&log, "DNS discovery failing"), 2, "{log:#?}");
    assert_eq!(count(&log, "DNS discovery recovered"), 2, "{log:#?}");
    assert!(errors >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_mixing_ips_and_a_weighted_hostname_serves_the_ips_until_the_name_resolves() {
    let fixed = http_backend("fixed-ip");
    let (named, port) = backends_on_one_port(&["127.0.0.2"], &["named"]);
    let hosts = HostsFile::new(&[("127.0.0.3", "other.test.internal")]);
    let dns_port = free_dns_port();
    let _dns = Dnsmasq::start(dns_port, &records(&hosts));
    let discovery = format!(
        "{{ static: [{{ address: \"{NAME}:{port}\", weight: 3 }}, \"{}\"] }}",
        fixed.addr
    );
    let proxy = start_proxy(&discovery, dns_port);
    let listener = proxy.listener(UPSTREAM);

    // The name does not exist (NXDOMAIN): the IP entry serves meanwhile.
    let (_, failures) = hammer(listener, Duration::from_millis(1500), &["fixed-ip"]).await;
    assert_eq!(failures, 0);
    assert_eq!(ready_status(&proxy).await, StatusCode::OK);
    assert!(discovery_errors(&proxy).await >= 1.0);

    hosts.write(&[("127.0.0.2", NAME)]);
    _dns.reread_hosts();
    let start = Instant::now();
    while named[0].requests() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the name never got traffic"
        );
        served_by(listener).await.expect("a reply");
    }
    // Smooth weighted round robin: exactly 3:1 over 400 requests.
    let (named_before, fixed_before) = (named[0].requests(), fixed.requests());
    for _ in 0..400 {
        served_by(listener).await.expect("a reply");
    }
    let served = (
        named[0].requests() - named_before,
        fixed.requests() - fixed_before,
    );
    eprintln!("weights 3:1 over 400 requests: {served:?}");
    assert_eq!(served, (300, 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_type_a_balances_over_a_and_aaaa_and_follows_changes() {
    let (backends, port) = backends_on_one_port(&["127.0.0.1", "::1"], &["v4", "v6"]);
    let hosts = HostsFile::new(&[("127.0.0.1", NAME), ("::1", NAME)]);
    let dns_port = free_dns_port();
    let dns = Dnsmasq::start(dns_port, &records(&hosts));
    // No `resolver` of its own: the top-level `dns.resolver` is asked.
    let proxy = start_proxy(
        &format!("{{ dns: {{ name: {NAME}, type: a, port: {port} }} }}"),
        dns_port,
    );
    let listener = proxy.listener(UPSTREAM);

    let start = Instant::now();
    while backends.iter().any(|backend| backend.requests() == 0) {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "traffic did not reach both families"
        );
        let _ = served_by(listener).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before: Vec<u64> = backends.iter().map(Backend::requests).collect();
    for _ in 0..100 {
        served_by(listener).await.expect("a reply");
    }
    let served: Vec<u64> = (backends.iter().zip(&before))
        .map(|(backend, before)| backend.requests() - before)
        .collect();
    assert_eq!(served, [50, 50], "round robin over ::1 and 127.0.0.1");

    // The A record goes away: only the IPv6 address is left.
    hosts.write(&[("::1", NAME)]);
    dns.reread_hosts();
    let took = wait_for_traffic_on(listener, &["v6"], Duration::from_secs(5)).await;
    eprintln!("AAAA-only answer reached traffic in {took:?}");
    let (_, failures) = hammer(listener, Duration::from_millis(500), &["v6"]).await;
    assert_eq!(failures, 0);
}

/// Rewrites the proxy's configuration file while calling it, until the
/// reload was logged and for `after` more; returns (requests, failures).
async fn reload_under_load(
    proxy: &mut ProxyProcess,
    yaml: &str,
    expected: &'static [&'static str],
    after: Duration,
) -> (usize, usize) {
    let listener = proxy.listener(UPSTREAM);
    let stop = Arc::new(AtomicBool::new(false));
    let calls = tokio::spawn({
        let stop = Arc::clone(&stop);
        async move {
            let (mut requests, mut failures) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                let (more, failed) = hammer(listener, Duration::from_millis(50), expected).await;
                requests += more;
                failures += failed;
            }
            (requests, failures)
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.config.write(yaml);
    tokio::task::block_in_place(|| proxy.wait_for_log("configuration reloaded"));
    tokio::time::sleep(after).await;
    stop.store(true, Ordering::Relaxed);
    calls.await.expect("calls")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_a_named_list_serving_while_the_new_list_resolves() {
    let fixed = http_backend("fixed-ip");
    let (backends, port) = backends_on_one_port(&["127.0.0.1"], &["named"]);
    let other = "fixed.test.internal";
    let hosts = HostsFile::new(&[("127.0.0.1", NAME), ("127.0.0.1", other)]);
    let dns_port = free_dns_port();
    let _dns = Dnsmasq::start(dns_port, &records(&hosts));
    let named_only = format!("{{ static: [\"{NAME}:{port}\"] }}");
    let mut proxy = start_proxy(&named_only, dns_port);
    let listener = proxy.listener(UPSTREAM);
    wait_for_traffic_on(listener, &["named"], Duration::from_secs(10)).await;

    // The list changes (another name joins): the running addresses serve on
    // until the new list's names were asked (a list of names has no IP entry
    // to serve meanwhile), then both names' do.
    let mixed = format!(
        "{{ static: [\"{NAME}:{port}\", \"{other}:{}\"] }}",
        fixed.addr.port()
    );
    let (requests, failures) = reload_under_load(
        &mut proxy,
        &yaml(&mixed, dns_port, "2s"),
        &["named", "fixed-ip"],
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(failures, 0, "of {requests}");
    let named_before = backends[0].requests();
    let (_, failures) = hammer(listener, Duration::from_millis(500), &["named", "fixed-ip"]).await;
    assert_eq!(failures, 0);
    assert!(backends[0].requests() > named_before);
    assert!(fixed.requests() > 0);

    // The `dns` section changes: the names are resolved anew, nothing fails.
    let (requests, failures) = reload_under_load(
        &mut proxy,
        &yaml(&mixed, dns_port, "3s"),
        &["named", "fixed-ip"],
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(failures, 0, "of {requests}");
    let log = proxy.log_so_far();
    assert_eq!(count(&log, "DNS discovery failing"), 0, "{log:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routing_backend_named_by_a_hostname_follows_its_answer() {
    let fixed = http_backend("upstream-ip");
    let (backends, port) = backends_on_one_port(
        &["127.0.0.1", "127.0.0.2"],
        &["backend-first", "backend-second"],
    );
    let hosts = HostsFile::new(&[("127.0.0.1", NAME)]);
    let dns_port = free_dns_port();
    let dns = Dnsmasq::start(dns_port, &records(&hosts));
    let yaml = TestConfig::new()
        .upstream(
            Upstream::to(UPSTREAM, [fixed.addr])
                .protocol("http")
                .with("timeouts", "{ connect: 1s, request: 2s }")
                .with(
                    "backends",
                    format!("{{ external: {{ static: [\"{NAME}:{port}\"] }} }}"),
                )
                .lines(
                    "    routes:\n      - name: external\n        \
                     match: { headers: [{ name: x-external, present: true }] }\n        \
                     backend: external\n",
                ),
        )
        .section(
            "dns",
            format!("{{ resolver: 127.0.0.1:{dns_port}, min_refresh: 1s, max_refresh: 2s }}"),
        )
        .yaml();
    let proxy = ProxyProcess::start(&yaml, 1);
    let listener = proxy.listener(UPSTREAM);
    let external = || async {
        let url = format!("http://{listener}/");
        let reply = support::client::call("GET", &url, &[("x-external", "1")]).await;
        reply.expect("a reply").body
    };

    let start = Instant::now();
    while external().await != "backend-first" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the backend's name never resolved"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(served_by(listener).await.as_deref(), Ok("upstream-ip"));

    hosts.write(&[("127.0.0.2", NAME)]);
    dns.reread_hosts();
    let start = Instant::now();
    while external().await != "backend-second" {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the backend did not follow its answer"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("the backend followed its answer in {:?}", start.elapsed());
    assert!(backends[0].requests() >= 1);
}

/// A name resolving to `alive` (serving) and `dead` (refusing connections,
/// same port): every request succeeds; the refusals are counted.
async fn one_dead_address_fails_no_request(alive: &str, dead: &str) {
    // The dead address keeps its port bound without listening: refused.
    let (mut sockets, port) = sockets_on_one_port(&[alive, dead]);
    let _refusing = sockets.pop();
    let serving = http_backend_on("alive", listening(sockets.remove(0)));

    let hosts = HostsFile::new(&[(alive, NAME), (dead, NAME)]);
    let dns_port = free_dns_port();
    let _dns = Dnsmasq::start(dns_port, &records(&hosts));
    let proxy = start_proxy(&format!("{{ static: [\"{NAME}:{port}\"] }}"), dns_port);
    let listener = proxy.listener(UPSTREAM);
    wait_for_traffic_on(listener, &["alive"], Duration::from_secs(15)).await;
    // Both addresses are endpoints once the name resolved.
    let endpoints = metric(&proxy, "remora_endpoints").await;
    assert_eq!(endpoints, 2.0, "{alive} and {dead}");

    let (requests, failures) = hammer(listener, Duration::from_secs(3), &["alive"]).await;
    let refused = metric(&proxy, "remora_upstream_connect_errors_total").await;
    eprintln!(
        "{dead} dead, {alive} alive: {requests} requests, {failures} failed, {refused} refused connects"
    );
    assert_eq!(failures, 0);
    assert!(refused >= 1.0, "the dead address was tried");
    assert!(serving.requests() >= requests as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_ipv6_address_of_a_name_fails_no_request() {
    one_dead_address_fails_no_request("127.0.0.1", "::1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_ipv4_address_of_a_name_fails_no_request() {
    one_dead_address_fails_no_request("::1", "127.0.0.1").await;
}
