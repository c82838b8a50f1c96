//! Two "pods" — Linux network namespaces joined by a veth pair — each with an
//! application, remora running as uid 1337 and the `remora iptables --apply`
//! rules, plus the Consul stand-in in the root namespace (reached through
//! one more veth per pod). The application in pod A calls
//! `http://api:8080/` unmodified (`api` resolves through a hosts file that
//! `ip netns exec` bind-mounts from /etc/netns/POD/hosts): iptables sends the
//! connection to remora A's transparent listener, which routes it by Host to
//! upstream `api` (Consul: pod B's address), remora A's connection to pod B
//! is redirected to remora B's inbound listener (mTLS between the two), which
//! calls the app. The
//! test checks the trace context across both sidecars, the metrics of both,
//! the upstream's circuit breaker and rate limit, and passthrough of
//! unmatched traffic. Needs root and `ip netns`: ignored unless included
//! (`scripts/test.sh` includes it as root), failing when they are missing.
//!
//! A second test builds two more pods for the egress policy: remora in pod
//! A with `unmatched: refuse` and an allow-list (names, one address), no
//! sidecar in pod B, whose `openssl s_server`, HTTP app and TCP echo server
//! pod A's curl and bash reach — or not — by name (SNI, Host) and address.
//!
//! The applications are this test binary run again (`pod_helper`, ignored, and
//! a no-op outside a pod) inside a namespace. The sidecars talk mTLS: one CA made at
//! run time, a SPIFFE leaf per pod; pod B's application sees pod A's
//! verified identity in `x-remora-client-id`.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

use support::consul::{ConsulStandIn, Instance};
use support::proxy::ConfigFile;
use support::tls::{Ca, TlsFiles, spiffe};
use support::{ProxyProcess, prom};

const PROXY_UID: &str = "1337";
const APP_PORT: u16 = 8080;
/// Pod A ↔ pod B.
const POD_A_IP: &str = "10.231.0.1";
const POD_B_IP: &str = "10.231.0.2";
/// Root namespace ↔ pod A, root namespace ↔ pod B.
const ROOT_TO_A: (&str, &str) = ("10.231.1.1", "10.231.1.2");
const ROOT_TO_B: (&str, &str) = ("10.231.2.1", "10.231.2.2");
/// The egress test: pod B's second address (allowed by CIDR), its HTTPS
/// origin's port and its echo server's (an opaque port by default).
const POD_B_CIDR_IP: &str = "10.231.0.3";
const HTTPS_PORT: u16 = 8443;
const ECHO_PORT: u16 = 6379;
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|error| format!("{program}: {error}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `ip ARGS` in `pod` (`ip -n POD ARGS`), or in the root namespace.
fn ip(pod: Option<&str>, args: &[&str]) -> Result<(), String> {
    let mut all = pod.map_or_else(Vec::new, |pod| vec!["-n", pod]);
    all.extend_from_slice(args);
    run("ip", &all)
}

/// A veth pair between two namespaces (`None`: the root one), each end
/// given as (namespace, interface name, address in a /24), both ends up.
fn veth(one: (Option<&str>, &str, &str), other: (Option<&str>, &str, &str)) -> Result<(), String> {
    run(
        "ip",
        &[
            "link", "add", one.1, "type", "veth", "peer", "name", other.1,
        ],
    )?;
    for (pod, name, addr) in [one, other] {
        if let Some(pod) = pod {
            ip(None, &["link", "set", name, "netns", pod])?;
        }
        ip(pod, &["addr", "add", &format!("{addr}/24"), "dev", name])?;
        ip(pod, &["link", "set", name, "up"])?;
    }
    Ok(())
}

/// The two namespaces and their links; removed when dropped.
struct Pods {
    a: String,
    b: String,
}

impl Pods {
    /// Pods `r{tag}a<pid>` and `r{tag}b<pid>` (a tag per test, so tests
    /// of one run never share a namespace), linked to each other only.
    fn create(tag: char) -> Result<Pods, String> {
        let id = std::process::id() % 100_000;
        let pods = Pods {
            a: format!("r{tag}a{id}"),
            b: format!("r{tag}b{id}"),
        };
        let (a, b) = (pods.a.as_str(), pods.b.as_str());
        run("ip", &["netns", "add", a])?;
        run("ip", &["netns", "add", b])?;
        for pod in [a, b] {
            ip(Some(pod), &["link", "set", "lo", "up"])?;
        }
        veth(
            (Some(a), &format!("{a}-b"), POD_A_IP),
            (Some(b), &format!("{b}-a"), POD_B_IP),
        )?;
        // Pod A's name for pod B's service, as cluster DNS would give it.
        let etc = format!("/etc/netns/{a}");
        std::fs::create_dir_all(&etc).map_err(|e| e.to_string())?;
        std::fs::write(
            format!("{etc}/hosts"),
            format!("127.0.0.1 localhost\n{POD_B_IP} api\n"),
        )
        .map_err(|e| e.to_string())?;
        Ok(pods)
    }

    /// One more veth per pod to the root namespace (`ROOT_TO_A`,
    /// `ROOT_TO_B`), where the Consul stand-in and the test reach them.
    fn link_to_root(&self) -> Result<(), String> {
        for (pod, (root_ip, pod_ip)) in [(self.a.as_str(), ROOT_TO_A), (self.b.as_str(), ROOT_TO_B)]
        {
            veth(
                (None, &format!("{pod}-r"), root_ip),
                (Some(pod), &format!("{pod}-p"), pod_ip),
            )?;
        }
        Ok(())
    }

    /// `ip netns exec POD` followed by `args`.
    fn exec<'a>(pod: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        let mut command = vec!["ip", "netns", "exec", pod];
        command.extend_from_slice(args);
        command
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        // Deleting a namespace deletes its veth ends, and so their peers.
        for pod in [&self.a, &self.b] {
            let _ = run("ip", &["netns", "del", pod]);
        }
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.a));
    }
}

/// The `tls:` section of a sidecar for `service`, with a leaf from `ca`
/// written to files the proxy user can read.
fn mesh_tls(ca: &Ca, service: &str) -> (TlsFiles, String) {
    let files = TlsFiles::new(&ca.leaf(service, 7), ca);
    let yaml = files.yaml("");
    (files, yaml)
}

/// Runs `remora iptables --apply` for `yaml` inside `pod`.
fn apply_iptables(pod: &str, yaml: &str) -> Result<(), String> {
    let file = ConfigFile::new(yaml);
    let path = file.path.to_str().unwrap_or_default().to_owned();
    let remora = env!("CARGO_BIN_EXE_remora");
    let args = Pods::exec(
        pod,
        &[
            remora, "iptables", "--config", &path, "--uid", PROXY_UID, "--apply",
        ],
    );
    run(args[0], &args[1..])
}

/// remora in `pod` with the config `yaml` and its iptables rules, as the
/// proxy user, once its `listeners` listen.
fn start_sidecar(pod: &str, yaml: &str, listeners: usize) -> ProxyProcess {
    apply_iptables(pod, yaml).unwrap_or_else(|error| panic!("iptables in {pod}: {error}"));
    let as_proxy_user = [
        "setpriv",
        "--reuid",
        PROXY_UID,
        "--regid",
        PROXY_UID,
        "--clear-groups",
    ];
    ProxyProcess::start_wrapped(&Pods::exec(pod, &as_proxy_user), yaml, listeners)
}

/// This test binary, run again inside `pod` as one of the helper roles.
fn spawn_helper(pod: &str, role: &str, env: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().expect("test binary");
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", pod])
        .arg(exe)
        .args([
            "--exact",
            "pod_helper",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("REMORA_POD_ROLE", role)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (name, value) in env {
        command.env(name, value);
    }
    command.spawn().expect("spawn the pod helper")
}

/// The `POD ...` lines a helper printed, read until `until` is seen (or it exits).
fn helper_lines(child: &mut Child, until: &str) -> Vec<String> {
    let stdout = child.stdout.as_mut().expect("piped stdout");
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        // libtest may have printed `test pod_helper ... ` before it on the line.
        if let Some((_, line)) = line.split_once("POD ") {
            let done = line == until;
            lines.push(line.to_owned());
            if done {
                break;
            }
        }
    }
    lines
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_ready(admin: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let url = format!("http://{admin}/ready");
        if let Ok(reply) = support::get(http::Version::HTTP_11, &url).await
            && reply.status == StatusCode::OK
        {
            return;
        }
        assert!(Instant::now() < deadline, "{admin} never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// Multi-thread: the Consul stand-in keeps serving while the test thread
// blocks reading a helper's output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (CI runs as root): network namespaces, iptables"]
async fn app_in_pod_a_calls_pod_b_by_name_through_both_sidecars() {
    support::requirements::require_root("network namespaces, iptables");
    let pods = Pods::create('m')
        .and_then(|pods| pods.link_to_root().map(|()| pods))
        .unwrap_or_else(|reason| panic!("cannot build the two pods: {reason}"));
    let (a, b) = (pods.a.as_str(), pods.b.as_str());

    let consul = ConsulStandIn::start_on("0.0.0.0:0".parse().unwrap());
    let consul_port = consul.addr.port();
    let service_addr: SocketAddr = format!("{POD_B_IP}:{APP_PORT}").parse().unwrap();
    consul.register(Instance::new("api-1", "api", service_addr));

    let ca = Ca::new("two-pods mesh CA");
    let (_tls_a, tls_a) = mesh_tls(&ca, "web");
    let (_tls_b, tls_b) = mesh_tls(&ca, "api");

    // Pod B: the api application and its sidecar.
    let mut app = KillOnDrop(spawn_helper(b, "app", &[]));
    assert_eq!(helper_lines(&mut app.0, "ready"), ["ready"]);
    let sidecar_b = format!(
        "service: {{ name: api, port: {APP_PORT} }}
inbound: {{ listen: 0.0.0.0:15006 }}
transparent: {{}}
admin: {{ listen: 0.0.0.0:15000 }}
{tls_b}"
    );
    let remora_b = start_sidecar(b, &sidecar_b, 2);

    // Pod A: the sidecar; its application is the client below.
    let sidecar_a = format!(
        "service: {{ name: web }}
upstreams:
  - name: api
    hosts: [api]
    discovery: {{ consul: {{ service: api }} }}
    rate_limit: {{ requests_per_second: 0.2, burst: 8 }}
    circuit_breaker: {{ consecutive_failures: 3, open_for: 60s }}
    tls: {{ enabled: true }}
consul: {{ address: \"http://{root}:{consul_port}\" }}
transparent: {{ detect_timeout: 500ms }}
admin: {{ listen: 0.0.0.0:15000 }}
{tls_a}",
        root = ROOT_TO_A.0,
    );
    let remora_a = start_sidecar(a, &sidecar_a, 1);
    let admin_a = format!("{}:15000", ROOT_TO_A.1);
    let admin_b = format!("{}:15000", ROOT_TO_B.1);
    wait_ready(&admin_a).await;
    wait_ready(&admin_b).await;

    // The application in pod A, calling names and addresses as it always did.
    let api = format!("http://api:{APP_PORT}");
    let mut urls = vec![
        format!("{api}/"),
        format!("http://{}:{consul_port}/v1/health/service/api", ROOT_TO_A.0),
    ];
    urls.extend(std::iter::repeat_n(format!("{api}/status/503"), 3));
    urls.extend(std::iter::repeat_n(format!("{api}/"), 9));
    let mut client = KillOnDrop(spawn_helper(
        a,
        "client",
        &[("REMORA_POD_URLS", urls.join(" "))],
    ));
    let replies: Vec<Value> = helper_lines(&mut client.0, "done")
        .iter()
        .filter(|line| *line != "done")
        .map(|line| serde_json::from_str(line).expect("a JSON reply line"))
        .collect();
    assert_eq!(replies.len(), urls.len(), "{replies:#?}");
    let status = |i: usize| replies[i]["status"].as_u64().unwrap();
    let error = |i: usize| replies[i]["error"].as_str().unwrap_or_default().to_owned();

    // 1. Through both sidecars, trace context joined and given new span ids.
    assert_eq!(status(0), 200, "{replies:#?}");
    let seen: Value = serde_json::from_str(replies[0]["body"].as_str().unwrap()).unwrap();
    let traceparent = seen["traceparent"]
        .as_str()
        .expect("traceparent at the app");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(
        parts[1], "4bf92f3577b34da6a3ce929d0e0e4736",
        "{traceparent}"
    );
    assert_ne!(parts[2], "00f067aa0ba902b7", "each hop has its own span id");
    assert!(
        seen["x-request-id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    assert_eq!(
        seen["host"], "api:8080",
        "the Host header arrives unchanged"
    );
    // Over mTLS: pod B's sidecar verified pod A's certificate.
    assert_eq!(
        seen["x-remora-client-id"].as_str(),
        Some(spiffe("web").as_str()),
        "{seen}"
    );
    // 2. Unmatched traffic (the Consul API by address) passes through.
    assert_eq!(status(1), 200, "{replies:#?}");
    // 3. The app's 503s open the breaker after three.
    for i in 2..5 {
        assert_eq!((status(i), error(i).as_str()), (503, ""), "{replies:#?}");
    }
    assert_eq!(
        (status(5), error(5).as_str()),
        (503, "circuit_open"),
        "{replies:#?}"
    );
    // 4. The rate limit (burst 8) refuses the rest at once.
    for i in 6..replies.len() {
        let refused = [(503, "circuit_open"), (429, "rate_limited")];
        assert!(
            refused.contains(&(status(i), error(i).as_str())),
            "{replies:#?}"
        );
    }
    assert_eq!(
        (status(13), error(13).as_str()),
        (429, "rate_limited"),
        "{replies:#?}"
    );

    // 5. Both sidecars counted the calls.
    let metrics_a = prom::scrape(&format!("http://{admin_a}/metrics")).await;
    let metrics_b = prom::scrape(&format!("http://{admin_b}/metrics")).await;
    let requests = |text: &str, direction, code| {
        prom::value(
            text,
            "remora_requests_total",
            &[
                ("direction", direction),
                ("upstream", "api"),
                ("code", code),
            ],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(requests(&metrics_a, "outbound", "200"), 1.0);
    assert_eq!(requests(&metrics_b, "inbound", "200"), 1.0);
    assert_eq!(
        requests(&metrics_b, "inbound", "503"),
        3.0,
        "only three reached pod B"
    );
    assert!(requests(&metrics_a, "outbound", "503") >= 4.0);
    assert!(requests(&metrics_a, "outbound", "429") >= 1.0);
    let passthrough = prom::value(
        &metrics_a,
        "remora_transparent_unmatched_total",
        &[("protocol", "http1"), ("action", "passthrough")],
    );
    assert_eq!(passthrough, Some(1.0));
    drop((remora_a, remora_b));
}

/// `ip netns exec POD args...`, its status, stdout and stderr.
fn run_in(pod: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", pod])
        .args(args)
        .output()
        .expect("ip netns exec");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Pod A's application calls with curl: HTTPS by name to pod B's
/// `openssl s_server` (its own certificate, verified with its CA), plain
/// HTTP/1.1 and HTTP/2 by Host / `:authority`, raw TCP by address, while remora A runs the egress policy:
/// `unmatched: refuse` with an allow-list of names and one address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root (CI runs as root): network namespaces, iptables"]
async fn egress_allow_list_lets_listed_names_and_networks_out_of_pod_a() {
    support::requirements::require_root("network namespaces, iptables");
    support::requirements::require_tool("curl", "curl");
    support::requirements::require_tool("openssl", "openssl");
    let pods =
        Pods::create('e').unwrap_or_else(|reason| panic!("cannot build the two pods: {reason}"));
    let (a, b) = (pods.a.as_str(), pods.b.as_str());
    // Pod B's second address: allowed by CIDR, whatever the name.
    let second = format!("{POD_B_CIDR_IP}/24");
    ip(Some(b), &["addr", "add", &second, "dev", &format!("{b}-a")])
        .expect("pod B's second address");

    // Pod B: an HTTPS origin (OpenSSL, a certificate remora has no key or CA
    // for), the HTTP app and a TCP echo server; no sidecar.
    let ca = Ca::new("egress origin CA");
    let names = ["allowed.test", "other.test", "a.b.wild.test", "wild.test"];
    let origin = TlsFiles::new(&ca.leaf_for_names(&names, 9), &ca);
    let file = |name: &str| origin.dir.join(name).display().to_string();
    let (cert, key, ca_file) = (file("cert.pem"), file("key.pem"), file("ca.pem"));
    let https = Command::new("ip")
        .args(["netns", "exec", b, "openssl", "s_server", "-quiet", "-www"])
        .args([
            "-accept",
            &HTTPS_PORT.to_string(),
            "-cert",
            &cert,
            "-key",
            &key,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let _https = KillOnDrop(https);
    let mut app = KillOnDrop(spawn_helper(b, "app", &[]));
    assert_eq!(helper_lines(&mut app.0, "ready"), ["ready"]);
    let mut echo = KillOnDrop(spawn_helper(b, "echo", &[]));
    assert_eq!(helper_lines(&mut echo.0, "ready"), ["ready"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !run_in(b, &["ss", "-ltn"])
        .1
        .contains(&format!(":{HTTPS_PORT} "))
    {
        assert!(Instant::now() < deadline, "openssl s_server never listened");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Pod A: remora with the egress policy; its application is curl.
    let sidecar_a = format!(
        "service: {{ name: web }}
transparent:
  unmatched: refuse
  detect_timeout: 500ms
  egress:
    allow:
      hosts: [allowed.test, \"*.wild.test\"]
      cidrs: [{POD_B_CIDR_IP}/32]
admin: {{ listen: 127.0.0.1:15000 }}
"
    );
    let remora_a = start_sidecar(a, &sidecar_a, 1);
    let admin = "http://127.0.0.1:15000";
    let deadline = Instant::now() + Duration::from_secs(20);
    while run_in(a, &["curl", "-sf", &format!("{admin}/ready")]).0 != Some(0) {
        assert!(Instant::now() < deadline, "remora A never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }

    // `curl URL` for `name` resolved to `ip`: exit code, body, and status
    // line and headers (-D) with curl's errors.
    let curl = |url: &str, name: &str, port: u16, ip: &str| {
        let resolve = format!("{name}:{port}:{ip}");
        run_in(
            a,
            &[
                "curl",
                "-sS",
                "--max-time",
                "10",
                "--cacert",
                &ca_file,
                "--resolve",
                &resolve,
                "-D",
                "/dev/stderr",
                url,
            ],
        )
    };
    let https = |name: &str, ip: &str| {
        curl(
            &format!("https://{name}:{HTTPS_PORT}/"),
            name,
            HTTPS_PORT,
            ip,
        )
    };

    // 1. HTTPS to listed names passes untouched: curl verifies the origin's
    //    own certificate (remora has neither its key nor its CA) and gets
    //    OpenSSL's page; `*.wild.test` covers two labels.
    for name in ["allowed.test", "a.b.wild.test"] {
        let (code, body, headers) = https(name, POD_B_IP);
        assert_eq!(code, Some(0), "{name}: {headers}");
        assert!(headers.starts_with("HTTP/1.0 200"), "{name}: {headers}");
        assert!(
            body.contains("s_server"),
            "{name}: OpenSSL's status page: {body}"
        );
    }
    // 2. Names not listed are refused (the wildcard is not the domain
    //    itself): the connection is closed, no TLS session.
    for name in ["other.test", "wild.test"] {
        let (code, body, headers) = https(name, POD_B_IP);
        assert_ne!(code, Some(0), "{name} got through: {headers}{body}");
        assert!(!headers.contains("HTTP/"), "{name}: {headers}");
    }
    // 3. The listed network lets an unlisted name through.
    let (code, body, headers) = https("other.test", POD_B_CIDR_IP);
    assert_eq!(code, Some(0), "{headers}");
    assert!(body.contains("s_server"), "{body}");
    // 4. Plain HTTP by Host: listed passes, unlisted gets 502 no_route.
    let http = |name: &str| {
        curl(
            &format!("http://{name}:{APP_PORT}/"),
            name,
            APP_PORT,
            POD_B_IP,
        )
    };
    let (code, body, headers) = http("allowed.test");
    assert_eq!(code, Some(0), "{headers}");
    assert!(headers.starts_with("HTTP/1.1 200"), "{headers}");
    let seen: Value = serde_json::from_str(&body).expect("the app's JSON");
    assert_eq!(seen["host"], "allowed.test:8080");
    let (_, _, headers) = http("other.test");
    assert!(headers.starts_with("HTTP/1.1 502"), "{headers}");
    assert!(headers.contains("x-remora-error: no_route"), "{headers}");
    // HTTP/2 (prior knowledge) by `:authority`, the same.
    let h2 = |name: &str| {
        let resolve = format!("{name}:{APP_PORT}:{POD_B_IP}");
        let url = format!("http://{name}:{APP_PORT}/");
        let args = [
            "curl",
            "-sS",
            "--http2-prior-knowledge",
            "--resolve",
            &resolve,
        ];
        run_in(a, &[&args[..], &["-D", "/dev/stderr", &url]].concat()).2
    };
    let headers = h2("a.b.wild.test");
    assert!(headers.starts_with("HTTP/2 200"), "{headers}");
    let headers = h2("other.test");
    assert!(headers.starts_with("HTTP/2 502"), "{headers}");
    assert!(headers.contains("x-remora-error: no_route"), "{headers}");
    // 5. Raw TCP (an opaque port): by address only.
    let echo = |ip: &str| {
        let script = format!(
            "exec 3<>/dev/tcp/{ip}/{ECHO_PORT} && printf 'ping\\n' >&3 && timeout 5 head -c 5 <&3"
        );
        run_in(a, &["bash", "-c", &script]).1
    };
    assert_eq!(echo(POD_B_CIDR_IP), "ping\n");
    assert_eq!(echo(POD_B_IP), "", "closed unanswered");

    // 6. Every decision counted.
    let (_, metrics, _) = run_in(a, &["curl", "-s", &format!("{admin}/metrics")]);
    let egress = |protocol, decision, reason| {
        let labels = [
            ("protocol", protocol),
            ("decision", decision),
            ("reason", reason),
        ];
        prom::value(&metrics, "remora_transparent_egress_total", &labels)
    };
    assert_eq!(egress("tls", "allowed", "sni"), Some(2.0), "{metrics}");
    assert_eq!(egress("tls", "refused", "sni"), Some(2.0));
    assert_eq!(egress("tcp", "allowed", "cidr"), Some(2.0));
    assert_eq!(egress("tcp", "refused", "no_name"), Some(1.0));
    assert_eq!(egress("http1", "allowed", "host"), Some(1.0));
    assert_eq!(egress("http1", "refused", "host"), Some(1.0));
    assert_eq!(egress("http2", "allowed", "host"), Some(1.0));
    assert_eq!(egress("http2", "refused", "host"), Some(1.0));
    let unmatched = |protocol, action| {
        let labels = [("protocol", protocol), ("action", action)];
        prom::value(&metrics, "remora_transparent_unmatched_total", &labels)
    };
    assert_eq!(unmatched("tcp", "passthrough"), Some(4.0));
    assert_eq!(unmatched("tcp", "refused"), Some(3.0));
    assert_eq!(unmatched("http1", "passthrough"), Some(1.0));
    assert_eq!(unmatched("http1", "refused"), Some(1.0));
    assert_eq!(unmatched("http2", "passthrough"), Some(1.0));
    assert_eq!(unmatched("http2", "refused"), Some(1.0));
    drop(remora_a);
}

/// The pod applications, when run by the test above (`REMORA_POD_ROLE`);
/// a no-op otherwise.
#[tokio::test]
#[ignore = "a helper the two-pod test runs inside a network namespace"]
async fn pod_helper() {
    match std::env::var("REMORA_POD_ROLE").as_deref() {
        Ok("app") => serve_app().await,
        Ok("client") => call_urls().await,
        Ok("echo") => serve_echo().await,
        _ => {}
    }
}

/// The api application: `/status/503` answers 503; anything else 200 with a
/// JSON object of the request headers it got.
async fn serve_app() {
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", APP_PORT))
        .await
        .expect("bind the app port");
    println!("POD ready");
    loop {
        let (stream, _) = listener.accept().await.expect("accept");
        tokio::spawn(async move {
            let service = service_fn(|request: Request<Incoming>| async move {
                let response = if request.uri().path() == "/status/503" {
                    let mut response = Response::new(Full::new(Bytes::new()));
                    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    response
                } else {
                    let headers: serde_json::Map<String, Value> = (request.headers().iter())
                        .map(|(name, value)| {
                            (name.to_string(), json!(value.to_str().unwrap_or_default()))
                        })
                        .collect();
                    Response::new(Full::new(Bytes::from(Value::Object(headers).to_string())))
                };
                Ok::<_, std::convert::Infallible>(response)
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A TCP echo server on `ECHO_PORT`.
async fn serve_echo() {
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", ECHO_PORT))
        .await
        .expect("bind the echo port");
    println!("POD ready");
    loop {
        let (mut stream, _) = listener.accept().await.expect("accept");
        tokio::spawn(async move {
            let (mut reader, mut writer) = stream.split();
            let _ = tokio::io::copy(&mut reader, &mut writer).await;
        });
    }
}

/// The application of pod A: GETs each URL of `REMORA_POD_URLS` in turn
/// (with a `traceparent`) and prints one JSON line per response.
async fn call_urls() {
    let urls = std::env::var("REMORA_POD_URLS").expect("REMORA_POD_URLS");
    let client = support::http_client::<Empty<Bytes>>(http::Version::HTTP_11);
    for url in urls.split(' ') {
        let request = Request::get(url)
            .header("traceparent", TRACEPARENT)
            .body(Empty::new())
            .expect("request");
        let line = match tokio::time::timeout(Duration::from_secs(10), client.request(request))
            .await
        {
            Err(_) => json!({ "status": 0, "error": "no response within 10 s" }),
            Ok(Err(error)) => json!({ "status": 0, "error": error.to_string() }),
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                let error = (response.headers().get("x-remora-error"))
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_owned);
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                json!({ "status": status, "error": error, "body": String::from_utf8_lossy(&body) })
            }
        };
        println!("POD {line}");
    }
    println!("POD done");
}
