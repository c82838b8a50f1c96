//! TLS origination (`upstreams[].tls.mode: simple`) through the remora binary: the
//! application speaks plain HTTP to its local listener, remora speaks HTTPS to nginx
//! (Debian `nginx-light`) serving a certificate for a made-up name, signed by a CA made in
//! the test and trusted through `ca_file`. nginx echoes what it saw of the TLS session
//! (SNI, protocol, whether the session was resumed, the client certificate's verdict), so
//! the tests read it from the body. Certificate errors (wrong name, expired, unknown CA)
//! answer 502 `connect_failed`, with rustls's reason in the log and
//! `remora_tls_handshake_errors_total` counted. Without `server_name`, the hostname of
//! the endpoints (resolved by dnsmasq, Debian `dnsmasq-base`) is the name.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::{StatusCode, Version};

use support::client::{Reply, get};
use support::config::{TestConfig, Upstream};
use support::dnsmasq::{Dnsmasq, HostsFile, free_dns_port};
use support::peers::{Peer, nginx};
use support::prom;
use support::proxy::{ConfigFile, ProxyProcess};
use support::tls::{Ca, TlsFiles};

const NAME: &str = "api.test.internal";

/// What nginx answers: the SNI it got, the HTTP version, `r` when the TLS session was
/// resumed (`.` otherwise), and the client certificate's verdict (`NONE` without one).
const ECHO: &str = "location / { return 200 \"sni=$ssl_server_name proto=$server_protocol \
                    reused=$ssl_session_reused client=$ssl_client_verify\\n\"; }";

/// nginx serving HTTPS with `leaf` (files written to `files`' directory), `listen_options`
/// after `ssl` (e.g. `http2`) and `extra` directives in its `server` block.
fn https_origin(files: &TlsFiles, listen_options: &str, extra: &str) -> Peer {
    let path = |name: &str| files.dir.join(name).display().to_string();
    nginx(&format!(
        "server {{ listen 127.0.0.1:PORT ssl {listen_options};\n\
         ssl_certificate {};\n ssl_certificate_key {};\n{extra}\n{ECHO}\n}}",
        path("cert.pem"),
        path("key.pem"),
    ))
}

/// An upstream `name` to `origin` with `upstreams[].tls` = `tls` (flow YAML).
fn upstream(name: &str, origin: SocketAddr, tls: &str) -> Upstream {
    Upstream::to(name, [origin]).with("tls", tls)
}

/// `{ mode: simple, server_name: NAME, ca_file: <the CA of files> }` plus `extra` keys.
fn simple(files: &TlsFiles, server_name: &str, extra: &str) -> String {
    format!(
        "{{ mode: simple, server_name: {server_name}, ca_file: {}{extra} }}",
        files.dir.join("ca.pem").display()
    )
}

/// Starts the binary with `config`'s upstreams (each with a listener).
fn start(config: TestConfig, listeners: usize) -> ProxyProcess {
    ProxyProcess::start(&config.yaml(), listeners)
}

/// `GET /` from the app over HTTP/1.1 to `upstream`'s listener.
async fn call(proxy: &ProxyProcess, upstream: &str) -> Reply {
    call_over(Version::HTTP_11, proxy, upstream).await
}

async fn call_over(version: Version, proxy: &ProxyProcess, upstream: &str) -> Reply {
    let url = format!("http://{}/", proxy.listener(upstream));
    get(version, &url).await.expect("remora answers")
}

async fn handshake_errors(proxy: &ProxyProcess, upstream: &str) -> f64 {
    let text = prom::scrape(&format!("http://{}/metrics", proxy.admin)).await;
    let labels = [("direction", "outbound"), ("upstream", upstream)];
    prom::value(&text, "remora_tls_handshake_errors_total", &labels).unwrap_or(0.0)
}

/// The server certificate for NAME from a fresh test CA, and its files.
fn named_origin_files(serial: u64) -> (Ca, TlsFiles) {
    let ca = Ca::new("origin-ca");
    let files = TlsFiles::new(&ca.leaf_for_dns(NAME, serial), &ca);
    (ca, files)
}

/// The app's plain HTTP reaches the HTTPS origin: the certificate is verified for
/// `server_name` through `ca_file`, SNI carries the name, nginx's body comes back. nginx
/// closes every connection after its response, so the second request opens a new one —
/// which resumes the first one's TLS session.
#[tokio::test]
async fn plain_http_from_the_app_reaches_an_https_origin_that_resumes_the_session() {
    let (_ca, files) = named_origin_files(1);
    let origin = https_origin(&files, "", "keepalive_timeout 0;");
    let proxy = start(
        TestConfig::new().upstream(upstream("api", origin.addr, &simple(&files, NAME, ""))),
        1,
    );

    let first = call(&proxy, "api").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(
        first.body,
        format!("sni={NAME} proto=HTTP/1.1 reused=. client=NONE\n")
    );
    let second = call(&proxy, "api").await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert!(
        second.body.contains(" reused=r "),
        "the second connection resumes the session: {}",
        second.body
    );
    assert_eq!(handshake_errors(&proxy, "api").await, 0.0);
}

/// ALPN: for `protocol: http` remora offers h2 and http/1.1 and nginx picks h2 (the app
/// speaks HTTP/1.1 to remora), for `protocol: http2` it offers h2 only (the app speaks h2c);
/// both reach nginx over HTTP/2.
#[tokio::test]
async fn http2_is_negotiated_by_alpn() {
    let (_ca, files) = named_origin_files(2);
    let origin = https_origin(&files, "http2", "");
    let tls = simple(&files, NAME, "");
    let config = TestConfig::new()
        .upstream(upstream("offered", origin.addr, &tls))
        .upstream(upstream("only", origin.addr, &tls).protocol("http2"));
    let proxy = start(config, 2);
    for (name, app_version) in [("offered", Version::HTTP_11), ("only", Version::HTTP_2)] {
        let reply = call_over(app_version, &proxy, name).await;
        assert_eq!(reply.status, StatusCode::OK, "{name}: {}", reply.body);
        assert!(
            reply.body.contains(" proto=HTTP/2.0 "),
            "{name}: {}",
            reply.body
        );
    }
}

/// A `tcp` upstream originates TLS too, offering no ALPN: the app's bytes reach nginx
/// inside the TLS session (here an HTTP/1.0 request written by hand).
#[tokio::test]
async fn a_tcp_upstream_originates_tls_without_alpn() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_ca, files) = named_origin_files(11);
    let origin = https_origin(&files, "http2", "");
    let proxy = start(
        TestConfig::new()
            .upstream(upstream("raw", origin.addr, &simple(&files, NAME, "")).protocol("tcp")),
        1,
    );
    let mut app = tokio::net::TcpStream::connect(proxy.listener("raw"))
        .await
        .unwrap();
    app.write_all(b"GET / HTTP/1.0\r\nHost: api\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), app.read_to_string(&mut answer))
        .await
        .expect("nginx answers and closes")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        answer.ends_with(&format!("sni={NAME} proto=HTTP/1.0 reused=. client=NONE\n")),
        "{answer}"
    );
}

/// Active health checks go over the upstream's TLS origination: they pass against the
/// origin, and fail where the certificate is refused (wrong name).
#[tokio::test]
async fn health_checks_go_over_tls_origination() {
    let (_ca, files) = named_origin_files(12);
    let origin = https_origin(&files, "", "");
    let check = "{ http: { path: / }, interval: 100ms }";
    let config = TestConfig::new()
        .upstream(
            upstream("good", origin.addr, &simple(&files, NAME, "")).with("health_check", check),
        )
        .upstream(
            upstream(
                "bad",
                origin.addr,
                &simple(&files, "other.test.internal", ""),
            )
            .with("health_check", check),
        );
    let proxy = start(config, 2);
    let metrics = format!("http://{}/metrics", proxy.admin);
    support::eventually(
        Duration::from_secs(10),
        "a passed and a failed check",
        || async {
            let text = prom::scrape(&metrics).await;
            let count = |upstream, result| {
                let labels = [("upstream", upstream), ("result", result)];
                prom::value(&text, "remora_health_checks_total", &labels).unwrap_or(0.0)
            };
            count("good", "passed") >= 2.0 && count("bad", "failed") >= 2.0
        },
    )
    .await;
    let text = prom::scrape(&metrics).await;
    for (upstream, never) in [("good", "failed"), ("bad", "passed")] {
        let labels = [("upstream", upstream), ("result", never)];
        let count = prom::value(&text, "remora_health_checks_total", &labels);
        assert_eq!(count.unwrap_or(0.0), 0.0, "{upstream}: {never}");
    }
    assert!(handshake_errors(&proxy, "bad").await >= 2.0);
}

/// A `server_name` that is an IP address is checked against the certificate's IP SANs
/// (and sent as no SNI).
#[tokio::test]
async fn an_ip_server_name_is_verified_against_the_ip_san() {
    let ca = Ca::new("ip-ca");
    let files = TlsFiles::new(&ca.leaf_for_ip("127.0.0.1".parse().unwrap(), 3), &ca);
    let origin = https_origin(&files, "", "");
    let proxy = start(
        TestConfig::new().upstream(upstream(
            "by-ip",
            origin.addr,
            &simple(&files, "127.0.0.1", ""),
        )),
        1,
    );
    let reply = call(&proxy, "by-ip").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.body.starts_with("sni= "), "{}", reply.body);
}

/// A server certificate that is not valid for `server_name`, one that expired, one from a
/// CA other than `ca_file`'s, and one the system's roots do not know (no `ca_file`): each
/// answers 502 `connect_failed`, logs rustls's reason and counts a handshake error of its
/// upstream.
#[tokio::test]
async fn certificate_errors_answer_502_connect_failed_with_the_reason_logged() {
    support::requirements::require_system_roots();
    let (ca, files) = named_origin_files(4);
    let origin = https_origin(&files, "", "");
    let expired_files = TlsFiles::new(&ca.expired_leaf_for_dns(NAME, 5), &ca);
    let expired = https_origin(&expired_files, "", "");
    let stranger = Ca::new("another-ca");
    let stranger_files = TlsFiles::new(&stranger.leaf_for_dns(NAME, 6), &stranger);

    let cases = [
        (
            "wrong-name",
            origin.addr,
            simple(&files, "other.test.internal", ""),
            "certificate not valid for name",
        ),
        (
            "expired",
            expired.addr,
            simple(&files, NAME, ""),
            "certificate expired",
        ),
        (
            "unknown-ca",
            origin.addr,
            simple(&stranger_files, NAME, ""),
            "UnknownIssuer",
        ),
        (
            "system-roots",
            origin.addr,
            format!("{{ mode: simple, server_name: {NAME} }}"),
            "UnknownIssuer",
        ),
    ];
    let mut config = TestConfig::new();
    for (name, addr, tls, _) in &cases {
        config = config.upstream(upstream(name, *addr, tls));
    }
    let mut proxy = start(config, cases.len());
    for (name, _, _, reason) in &cases {
        let reply = call(&proxy, name).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_GATEWAY,
            "{name}: {}",
            reply.body
        );
        assert_eq!(reply.headers["x-remora-error"], "connect_failed", "{name}");
        let line = proxy.wait_for_log(&format!("\"upstream\":\"{name}\""));
        assert!(
            line.contains("TLS handshake with upstream failed") && line.contains(reason),
            "{name}: the log says why ({reason}): {line}"
        );
        assert!(handshake_errors(&proxy, name).await >= 1.0, "{name}");
    }
}

/// An origin that requires a client certificate (`ssl_verify_client on`, the test CA)
/// accepts remora's `cert_file` / `key_file`; without them nginx refuses the request
/// (400, "No required SSL certificate was sent").
#[tokio::test]
async fn a_client_certificate_is_presented_when_configured() {
    let (ca, files) = named_origin_files(7);
    let ca_file = files.dir.join("ca.pem");
    let origin = https_origin(
        &files,
        "",
        &format!(
            "ssl_verify_client on;\n ssl_client_certificate {};",
            ca_file.display()
        ),
    );
    let client = TlsFiles::new(&ca.leaf_for_dns("caller.test.internal", 8), &ca);
    let with_cert = simple(
        &files,
        NAME,
        &format!(
            ", cert_file: {}, key_file: {}",
            client.dir.join("cert.pem").display(),
            client.dir.join("key.pem").display()
        ),
    );
    let config = TestConfig::new()
        .upstream(upstream("with-cert", origin.addr, &with_cert))
        .upstream(upstream("without", origin.addr, &simple(&files, NAME, "")));
    let proxy = start(config, 2);

    let reply = call(&proxy, "with-cert").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.body.ends_with(" client=SUCCESS\n"), "{}", reply.body);
    let refused = call(&proxy, "without").await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(
        refused
            .body
            .contains("No required SSL certificate was sent"),
        "{}",
        refused.body
    );
}

/// SIGHUP re-reads the files at once: a `ca_file` that did not trust the origin at start
/// does after it was replaced (well before the 5 s re-read without a `tls` section).
#[tokio::test]
async fn a_reload_reads_a_replaced_ca_file_at_once() {
    let (ca, files) = named_origin_files(9);
    let origin = https_origin(&files, "", "");
    let trusted = TlsFiles::new(&ca.leaf_for_dns(NAME, 10), &Ca::new("old-ca"));
    let proxy = start(
        TestConfig::new().upstream(upstream("api", origin.addr, &simple(&trusted, NAME, ""))),
        1,
    );
    assert_eq!(call(&proxy, "api").await.status, StatusCode::BAD_GATEWAY);

    std::fs::copy(files.dir.join("ca.pem"), trusted.dir.join("ca.pem")).unwrap();
    proxy.signal("HUP");
    support::eventually(Duration::from_secs(2), "the new CA is used", || async {
        call(&proxy, "api").await.status == StatusCode::OK
    })
    .await;
}

/// The files are re-read every `tls.reload_interval` (here with a mesh `tls` section):
/// a replaced `ca_file` is used without a reload; one replaced by something that is no
/// certificate is rejected (logged, counted) and the current CA stays in use.
#[tokio::test]
async fn replaced_files_are_used_without_a_reload_and_broken_ones_rejected() {
    let (ca, files) = named_origin_files(13);
    let origin = https_origin(&files, "", "");
    let mesh_ca = Ca::new("mesh-ca");
    let mesh = TlsFiles::new(&mesh_ca.leaf("test", 14), &mesh_ca);
    let watched = TlsFiles::new(&ca.leaf_for_dns(NAME, 15), &Ca::new("old-ca"));
    let config = TestConfig::new()
        .upstream(upstream("api", origin.addr, &simple(&watched, NAME, "")))
        .text(&mesh.yaml(""));
    let mut proxy = start(config, 1);
    assert_eq!(call(&proxy, "api").await.status, StatusCode::BAD_GATEWAY);

    let ca_file = watched.dir.join("ca.pem");
    std::fs::copy(files.dir.join("ca.pem"), &ca_file).unwrap();
    proxy.wait_for_log("upstream TLS files reloaded");
    assert_eq!(call(&proxy, "api").await.status, StatusCode::OK);

    std::fs::write(&ca_file, "not a certificate\n").unwrap();
    let line = proxy.wait_for_log("upstream TLS files rejected");
    assert!(line.contains("\"upstream\":\"api\""), "{line}");
    let metrics = format!("http://{}/metrics", proxy.admin);
    let text = prom::scrape(&metrics).await;
    let rejected = [("result", "error")];
    let count = prom::value(&text, "remora_tls_certificate_updates_total", &rejected);
    assert!(count.unwrap_or(0.0) >= 1.0, "{text}");
    assert_eq!(
        call(&proxy, "api").await.status,
        StatusCode::OK,
        "the current CA stays"
    );
}

/// Without `server_name`, the hostname the static endpoint is written with
/// (resolved by a real DNS server, dnsmasq) is the verified name and SNI;
/// another name of the same server, which its certificate does not carry,
/// is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hostname_of_the_endpoints_is_the_default_server_name() {
    const OTHER_NAME: &str = "impostor.test.internal";
    let (_ca, files) = named_origin_files(7);
    let origin = https_origin(&files, "", "");
    let hosts = HostsFile::new(&[("127.0.0.1", NAME), ("127.0.0.1", OTHER_NAME)]);
    let dns_port = free_dns_port();
    let _dns = Dnsmasq::start(
        dns_port,
        &["--local=/test.internal/".to_owned(), hosts.option()],
    );
    let tls = format!(
        "{{ mode: simple, ca_file: {} }}",
        files.dir.join("ca.pem").display()
    );
    let endpoint = format!("{NAME}:{}", origin.addr.port());
    let other_endpoint = format!("{OTHER_NAME}:{}", origin.addr.port());
    let config = TestConfig::new()
        .upstream(Upstream::to("api", [endpoint]).with("tls", tls.clone()))
        .upstream(Upstream::to("impostor", [other_endpoint]).with("tls", tls))
        .section("dns", format!("{{ resolver: 127.0.0.1:{dns_port} }}"));
    let proxy = start(config, 2);

    let start = std::time::Instant::now();
    let reply = loop {
        let reply = call(&proxy, "api").await;
        if reply.status != StatusCode::SERVICE_UNAVAILABLE {
            break reply;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the name never resolved"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(
        reply.body.starts_with(&format!("sni={NAME} ")),
        "{}",
        reply.body
    );
    assert_eq!(handshake_errors(&proxy, "api").await, 0.0);

    let start = std::time::Instant::now();
    let refused = loop {
        let reply = call(&proxy, "impostor").await;
        if reply.status != StatusCode::SERVICE_UNAVAILABLE {
            break reply;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "never resolved");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(refused.status, StatusCode::BAD_GATEWAY, "{}", refused.body);
    assert_eq!(refused.headers["x-remora-error"], "connect_failed");
    assert!(handshake_errors(&proxy, "impostor").await >= 1.0);
}

/// `remora validate`: `mode: simple` towards IP endpoints without `server_name`, and a
/// client certificate without its key, are refused with their positions.
#[test]
fn validation_asks_for_server_name_and_the_client_key() {
    let yaml = "\
service: { name: test }
upstreams:
  - name: nameless
    listen: 127.0.0.1:0
    discovery: { static: [127.0.0.1:8443] }
    tls: { mode: simple }
  - name: keyless
    listen: 127.0.0.1:0
    discovery: { static: [127.0.0.1:8443] }
    tls: { mode: simple, server_name: api.test.internal, cert_file: /c.pem }
  - name: mixed
    listen: 127.0.0.1:0
    discovery: { static: [127.0.0.1:8443] }
    tls: { mode: mesh, enabled: false, ca_file: /ca.pem }
";
    let config = ConfigFile::new(yaml);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_remora"))
        .args(["validate", "--config"])
        .arg(&config.path)
        .output()
        .expect("run remora");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let path = Path::new(&config.path).display();
    for expected in [
        format!("{path}:6:10: upstreams[0].tls: `server_name` is required with `mode: simple`"),
        format!("{path}:10:69: upstreams[1].tls.cert_file: needs `key_file` too"),
        format!("{path}:14:49: upstreams[2].tls.ca_file: only used with `mode: simple`"),
    ] {
        assert!(
            stderr.lines().any(|line| line.starts_with(&expected)),
            "want {expected:?} in:\n{stderr}"
        );
    }
    assert_eq!(stderr.lines().count(), 3, "{stderr}");
}
