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
            run("ip", &["-n", pod, "link", "set", "lo", "up"])?;
        }
        let (a_side, b_side) = (format!("{a}-b"), format!("{b}-a"));
        run(
            "ip",
            &[
                "link", "add", &a_side, "type", "veth", "peer", "name", &b_side,
            ],
        )?;
        run("ip", &["link", "set", &a_side, "netns", a])?;
        run("ip", &["link", "set", &b_side, "netns", b])?;
        run(
            "ip",
            &[
                "-n",
                a,
                "addr",
                "add",
                &format!("{POD_A_IP}/24"),
                "dev",
                &a_side,
            ],
        )?;
        run(
            "ip",
            &[
                "-n",
                b,
                "addr",
                "add",
                &format!("{POD_B_IP}/24"),
                "dev",
                &b_side,
            ],
        )?;
        run("ip", &["-n", a, "link", "set", &a_side, "up"])?;
        run("ip", &["-n", b, "link", "set", &b_side, "up"])?;
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
        for (pod, (root_ip, pod_ip)) in [(&self.a, ROOT_TO_A), (&self.b, ROOT_TO_B)] {
            let (outside, inside) = (format!("{pod}-r"), format!("{pod}-p"));
            run(
                "ip",
                &[
                    "link", "add", &outside, "type", "veth", "peer", "name", &inside,
                ],
            )?;
            run("ip", &["link", "set", &inside, "netns", pod])?;
            run(
                "ip",
                &["addr", "add", &format!("{root_ip}/24"), "dev", &outside],
            )?;
            run("ip", &["link", "set", &outside, "up"])?;
            run(
                "ip",
                &[
                    "-n",
                    pod,
                    "addr",
                    "add",
                    &format!("{pod_ip}/24"),
                    "dev",
                    &inside,
                ],
            )?;
            run("ip", &["-n", pod, "link", "set", &inside, "up"])?;
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
    let path = std::env::temp_dir().join(format!("remora-{pod}-iptables.yaml"));
    std::fs::write(&path, yaml).map_err(|e| e.to_string())?;
    let path = path.to_str().unwrap_or_default().to_owned();
    let remora = env!("CARGO_BIN_EXE_remora");
    let args = Pods::exec(
        pod,
        &[
            remora, "iptables", "--config", &path, "--uid", PROXY_UID, "--apply",
        ],
    );
    run(args[0], &args[1..])
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
    apply_iptables(b, &sidecar_b).expect("iptables in pod B");
    let as_proxy_user = [
        "setpriv",
        "--reuid",
        PROXY_UID,
        "--regid",
        PROXY_UID,
        "--clear-groups",
    ];
    let remora_b = ProxyProcess::start_wrapped(&Pods::exec(b, &as_proxy_user), &sidecar_b, 2);

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
    apply_iptables(a, &sidecar_a).expect("iptables in pod A");
    let remora_a = ProxyProcess::start_wrapped(&Pods::exec(a, &as_proxy_user), &sidecar_a, 1);
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

/// The pod applications, when run by the test above (`REMORA_POD_ROLE`);
/// a no-op otherwise.
#[tokio::test]
#[ignore = "a helper the two-pod test runs inside a network namespace"]
async fn pod_helper() {
    match std::env::var("REMORA_POD_ROLE").as_deref() {
        Ok("app") => serve_app().await,
        Ok("client") => call_urls().await,
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
