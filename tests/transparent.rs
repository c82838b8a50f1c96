//! Transparent mode without a network namespace: the transparent listener
//! routes by Host / `:authority` (HTTP/1.1 and HTTP/2 detected per
//! connection), answers unmatched requests 502 `no_route` when there is no
//! original destination, and counts both; `remora iptables` prints the exact
//! rules, and (as root: ignored unless included, as `scripts/test.sh` does
//! when root) applies them idempotently in a fresh network namespace and
//! removes them; the original destination of an IPv4 and an IPv6 connection
//! redirected by nat rules. Redirected traffic end to end is in
//! `two_pods.rs`.

mod support;

use std::net::SocketAddr;
use std::process::Command;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use support::{Proxy, ProxyProcess, http_backend, prom};

/// Sends `GET http://<authority>/` over a new connection to `addr` (the
/// transparent listener), as a redirected application would.
async fn get_via(
    addr: SocketAddr,
    version: Version,
    authority: &str,
) -> (StatusCode, String, String) {
    let io = TokioIo::new(TcpStream::connect(addr).await.expect("connect"));
    let response = if version == Version::HTTP_2 {
        let (mut sender, connection) = http2::handshake(TokioExecutor::new(), io).await.unwrap();
        tokio::spawn(connection);
        let request = Request::get(format!("http://{authority}/"))
            .version(Version::HTTP_2)
            .body(Empty::<Bytes>::new())
            .unwrap();
        sender.send_request(request).await.unwrap()
    } else {
        let (mut sender, connection) = http1::handshake(io).await.unwrap();
        tokio::spawn(connection);
        let request = Request::get("/")
            .header("host", authority)
            .body(Empty::<Bytes>::new())
            .unwrap();
        sender.send_request(request).await.unwrap()
    };
    let status = response.status();
    let error = (response.headers().get("x-remora-error"))
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, error, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn routes_by_host_and_refuses_the_unmatched() {
    let api = http_backend("api");
    let billing = http_backend("billing");
    let proxy = Proxy::start(&format!(
        "service: {{ name: web }}
upstreams:
  - name: api
    hosts: [api, api.service.consul]
    discovery: {{ static: [{api}] }}
  - name: billing
    listen: 127.0.0.1:0
    hosts: [\"billing:8080\"]
    discovery: {{ static: [{billing}] }}
transparent: {{ outbound_listen: 127.0.0.1:0 }}
admin: {{ listen: 127.0.0.1:0 }}
",
        api = api.addr,
        billing = billing.addr,
    ))
    .await;
    let transparent = proxy.bound.transparent.expect("transparent listener");

    assert_eq!(
        get_via(transparent, Version::HTTP_11, "api:8080").await.2,
        "api"
    );
    assert_eq!(
        get_via(transparent, Version::HTTP_11, "API.service.consul")
            .await
            .2,
        "api"
    );
    assert_eq!(get_via(transparent, Version::HTTP_2, "api").await.2, "api");
    assert_eq!(
        get_via(transparent, Version::HTTP_11, "billing:8080")
            .await
            .2,
        "billing"
    );
    // billing answers for port 8080 only.
    let (status, error, _) = get_via(transparent, Version::HTTP_11, "billing:9090").await;
    assert_eq!(
        (status, error.as_str()),
        (StatusCode::BAD_GATEWAY, "no_route")
    );
    let (status, error, _) = get_via(transparent, Version::HTTP_2, "unknown").await;
    assert_eq!(
        (status, error.as_str()),
        (StatusCode::BAD_GATEWAY, "no_route")
    );
    // The explicit listener and the transparent one share billing's stack.
    let explicit = proxy.upstream("billing");
    assert_eq!(
        get_via(explicit, Version::HTTP_11, "whatever").await.2,
        "billing"
    );

    // (The metrics registry is per process: the other test of this file
    // counts `tcp` connections.)
    let metrics = prom::scrape(&proxy.admin_url("/metrics")).await;
    let value = |name, labels: &[(&str, &str)]| prom::value(&metrics, name, labels).unwrap_or(-1.0);
    let connections = "remora_transparent_connections_total";
    assert_eq!(value(connections, &[("protocol", "http1")]), 4.0);
    assert_eq!(value(connections, &[("protocol", "http2")]), 2.0);
    // A connection made straight to the listener has no original
    // destination, so unmatched requests are refused even in passthrough mode.
    let unmatched = "remora_transparent_unmatched_total";
    assert_eq!(
        value(unmatched, &[("protocol", "http1"), ("action", "refused")]),
        1.0
    );
    assert_eq!(
        value(unmatched, &[("protocol", "http2"), ("action", "refused")]),
        1.0
    );
    assert_eq!(
        value(
            unmatched,
            &[("protocol", "http1"), ("action", "passthrough")]
        ),
        0.0
    );
    let requests = |upstream| {
        value(
            "remora_requests_total",
            &[
                ("direction", "outbound"),
                ("upstream", upstream),
                ("code", "200"),
            ],
        )
    };
    assert_eq!(requests("api"), 3.0);
    assert_eq!(requests("billing"), 2.0);
}

#[tokio::test]
async fn a_silent_client_becomes_opaque_tcp_after_the_detection_timeout() {
    let proxy = Proxy::start(
        "service: { name: web }
transparent: { outbound_listen: 127.0.0.1:0, detect_timeout: 50ms }
admin: { listen: 127.0.0.1:0 }
",
    )
    .await;
    let transparent = proxy.bound.transparent.expect("transparent listener");
    let _silent = TcpStream::connect(transparent).await.unwrap();
    let metrics_url = proxy.admin_url("/metrics");
    let labels = [("protocol", "tcp"), ("action", "refused")];
    prom::assert_value_within(
        &metrics_url,
        "remora_transparent_unmatched_total",
        &labels,
        1.0,
        std::time::Duration::from_secs(5),
    )
    .await;
}

fn remora(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_remora"))
        .args(args)
        .output()
        .expect("run remora")
}

#[test]
fn iptables_prints_the_rules_of_the_config() {
    let path = std::env::temp_dir().join(format!("remora-iptables-{}.yaml", std::process::id()));
    std::fs::write(
        &path,
        "service: { name: web, port: 8080 }
inbound: { listen: 0.0.0.0:16006 }
admin: { listen: 0.0.0.0:16000 }
transparent:
  outbound_listen: \"[::]:16001\"
  proxy_uid: 999
  exclude_uids: [0]
  exclude_outbound_ports: [5432]
  exclude_outbound_cidrs: [169.254.169.254/32, \"fd00::/8\"]
  exclude_inbound_ports: [22]
  ipv6: true
",
    )
    .unwrap();
    let out = remora(&[
        "iptables",
        "--config",
        path.to_str().unwrap(),
        "--uid",
        "1337",
    ]);
    std::fs::remove_file(&path).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let family = |tool: &str, cidr: &str| {
        format!(
            "# {tool}-restore --noflush
*nat
:REMORA_INBOUND - [0:0]
:REMORA_IN_REDIRECT - [0:0]
:REMORA_OUTPUT - [0:0]
:REMORA_REDIRECT - [0:0]
-A PREROUTING -p tcp -j REMORA_INBOUND
-A OUTPUT -p tcp -j REMORA_OUTPUT
-A REMORA_INBOUND -p tcp --dport 16000 -j RETURN
-A REMORA_INBOUND -p tcp --dport 22 -j RETURN
-A REMORA_INBOUND -p tcp -j REMORA_IN_REDIRECT
-A REMORA_IN_REDIRECT -p tcp -j REDIRECT --to-ports 16006
-A REMORA_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A REMORA_OUTPUT -m owner --uid-owner 0 -j RETURN
-A REMORA_OUTPUT -o lo -j RETURN
-A REMORA_OUTPUT -d {cidr} -j RETURN
-A REMORA_OUTPUT -p tcp --dport 5432 -j RETURN
-A REMORA_OUTPUT -p tcp -j REMORA_REDIRECT
-A REMORA_REDIRECT -p tcp -j REDIRECT --to-ports 16001
COMMIT
"
        )
    };
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        family("iptables", "169.254.169.254/32") + &family("ip6tables", "fd00::/8")
    );
}

#[test]
fn iptables_without_a_transparent_section_is_an_error() {
    let out = remora(&["iptables", "--config", "config/minimal.yaml"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has no `transparent:` section"), "{stderr}");
}

/// A network namespace that is deleted when dropped.
struct Netns(String);

impl Netns {
    /// A fresh namespace; panics when this process cannot make one.
    fn create(name: &str) -> Netns {
        support::requirements::require_root("a network namespace");
        let name = format!("{name}-{}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("run ip (Debian iproute2)");
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Netns(name)
    }

    fn exec(&self, program: &str, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0, program])
            .args(args)
            .output()
            .expect("ip netns exec")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn remora_lines(save: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&save.stdout)
        .lines()
        .filter(|line| line.contains("REMORA"))
        .map(str::to_owned)
        .collect()
}

#[test]
#[ignore = "needs root (CI runs as root): a network namespace"]
fn iptables_apply_is_idempotent_and_cleanup_removes_everything() {
    let netns = Netns::create("remora-ipt");
    let remora_bin = env!("CARGO_BIN_EXE_remora");
    let apply = netns.exec(remora_bin, &["iptables", "--apply"]);
    assert!(
        apply.status.success(),
        "{}",
        String::from_utf8_lossy(&apply.stderr)
    );
    let first = remora_lines(&netns.exec("iptables-save", &["-t", "nat"]));
    let apply = netns.exec(remora_bin, &["iptables", "--apply", "--uid", "1337"]);
    assert!(
        apply.status.success(),
        "{}",
        String::from_utf8_lossy(&apply.stderr)
    );
    let second = remora_lines(&netns.exec("iptables-save", &["-t", "nat"]));
    assert_eq!(first, second, "applying twice changed the rules");
    for expected in [
        "-A PREROUTING -p tcp -j REMORA_INBOUND",
        "-A OUTPUT -p tcp -j REMORA_OUTPUT",
        "-A REMORA_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "-A REMORA_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
        "-A REMORA_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
    ] {
        let copies = second.iter().filter(|line| *line == expected).count();
        assert_eq!(copies, 1, "{expected:?} in {second:#?}");
    }
    assert_eq!(second.len(), 13, "{second:#?}");

    let cleanup = netns.exec(remora_bin, &["iptables", "--cleanup"]);
    assert!(
        cleanup.status.success(),
        "{}",
        String::from_utf8_lossy(&cleanup.stderr)
    );
    let after = remora_lines(&netns.exec("iptables-save", &["-t", "nat"]));
    assert!(after.is_empty(), "{after:#?}");
}

/// Runs `program args`, failing with its stderr.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|error| format!("cannot run {program}: {error}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// IPv4 and IPv6: a connection that iptables / ip6tables `REDIRECT`ed to a
/// listener reports the address the client dialled. The work runs on a
/// thread of its own that moves into a fresh network namespace (`unshare`,
/// which affects only the calling thread and the commands it starts), where
/// the nat rules are added. Any failure (no namespace, rule refused,
/// connection not redirected) fails.
#[test]
#[ignore = "needs root (CI runs as root): a network namespace and nat rules"]
fn the_original_destination_is_recovered_for_ipv4_and_ipv6() {
    support::requirements::require_root("a network namespace and nat rules");
    let outcome = std::thread::spawn(|| {
        // SAFETY: unshare(2) with CLONE_NEWNET only changes this thread's
        // network namespace; it takes no pointers.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!("unshare: {}", std::io::Error::last_os_error()));
        }
        run("ip", &["link", "set", "lo", "up"])?;
        Ok([("iptables", "127.0.0.1"), ("ip6tables", "::1")].map(redirected_once))
    })
    .join()
    .expect("namespace thread");
    let found = outcome.unwrap_or_else(|reason| panic!("in a network namespace: {reason}"));
    for (dialled, original) in found {
        assert_eq!(original, Some(dialled), "redirected from {dialled}");
    }
}

/// Adds a `tables` rule redirecting `loopback`:8080 to a new listener,
/// dials `loopback`:8080 and returns (that address, what the accepted
/// connection reports as its original destination).
fn redirected_once((tables, loopback): (&str, &str)) -> (SocketAddr, Option<SocketAddr>) {
    let listener = std::net::TcpListener::bind((loopback, 0)).expect("bind");
    let port = listener.local_addr().expect("bound").port().to_string();
    let rule = "-t nat -A OUTPUT -p tcp -d LOOPBACK --dport 8080 -j REDIRECT --to-ports PORT"
        .replace("LOOPBACK", loopback)
        .replace("PORT", &port);
    let rule: Vec<&str> = rule.split(' ').collect();
    run(tables, &rule).unwrap_or_else(|error| panic!("{error}"));
    let dialled = SocketAddr::new(loopback.parse().expect("an IP"), 8080);
    let _client = std::net::TcpStream::connect(dialled)
        .unwrap_or_else(|error| panic!("{dialled} was not redirected: {error}"));
    let (server, _) = listener.accept().expect("accept");
    server.set_nonblocking(true).expect("nonblocking");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let original = runtime.block_on(async {
        let server = TcpStream::from_std(server).expect("tokio stream");
        remora::transparent::original_dst::original_destination(&server)
    });
    (dialled, original)
}

/// `transparent.limits` apply to the transparent listener: a request head
/// with more headers than its `max_headers` gets 431, one within it is routed.
/// A process of its own: its connections would count in the metrics that
/// `routes_by_host_and_refuses_the_unmatched` checks.
#[tokio::test]
async fn the_transparent_listener_applies_its_limits() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let api = http_backend("api");
    let proxy = ProxyProcess::start(
        &format!(
            "service: {{ name: web }}
upstreams:
  - name: api
    hosts: [api]
    discovery: {{ static: [{api}] }}
transparent: {{ outbound_listen: 127.0.0.1:0, limits: {{ max_headers: 4 }} }}
admin: {{ listen: 127.0.0.1:0 }}
",
            api = api.addr,
        ),
        1,
    );
    let transparent = proxy.listener("transparent");
    let status_line = |extra_headers: usize| async move {
        let mut stream = TcpStream::connect(transparent).await.unwrap();
        let mut head = String::from("GET / HTTP/1.1\r\nhost: api\r\nconnection: close\r\n");
        for i in 0..extra_headers {
            head.push_str(&format!("x-extra-{i}: 1\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer).into_owned();
        answer.lines().next().unwrap_or_default().to_owned()
    };
    assert_eq!(status_line(2).await, "HTTP/1.1 200 OK");
    assert_eq!(
        status_line(5).await,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    assert_eq!(api.requests(), 1);
}
