//! `inbound.authorization` through a real proxy: rules by the caller's mTLS identity, path
//! (exact, prefix, regex), method and headers, first match wins, then the default; a denial
//! is 403 `forbidden` (curl, presenting a client certificate, is the caller) or gRPC
//! PERMISSION_DENIED (a tonic client through the caller's own sidecar); rules see the
//! normalized path, so dot segments cannot walk past them; denied requests never reach the
//! application and are counted; rules without identities work without mTLS, over HTTP/1.1
//! and HTTP/2; rules follow a reload. Claim conditions (`jwt:`) are unit-tested in
//! `middleware::authorization::rules`, with the claims the JWT layer would hand on.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::config::{TestConfig, Upstream};
use support::curl::{Case, curl, expect_verdicts};
use support::tls::{Ca, TlsFiles};
use support::{Backend, Proxy, get, grpc_echo, grpc_unary, http_backend, raw_http1};

/// The rules of the HTTP tests: web reads reports, billing posts for its tenant, nobody
/// reaches /admin, anyone reaches /healthz and /public, the rest is denied.
const RULES: &str = r"
inbound:
  listen: 127.0.0.1:0
  authorization:
    default: deny
    rules:
      - name: no-admin
        action: deny
        match: { path: { prefix: /admin } }
      - name: web-reads-reports
        action: allow
        identities: [web]
        match: { path: { regex: '/reports/[0-9]+' }, methods: [GET, HEAD] }
      - name: billing-posts-for-its-tenant
        action: allow
        identities: ['spiffe://*/ns/default/dc/*/svc/billing']
        match: { methods: [POST], headers: [{ name: x-tenant, exact: acme }] }
      - name: health
        action: allow
        match: { path: { exact: /healthz } }
      - name: public
        action: allow
        match: { path: { prefix: /public } }
";

fn files(ca: &Ca, service: &str, serial: u64) -> TlsFiles {
    TlsFiles::new(&ca.leaf(service, serial), ca)
}

/// A sidecar `name` in front of a new HTTP app, with [`RULES`] and the certificate of `api`
/// from `ca`.
async fn sidecar_with_rules(name: &str, ca: &Ca) -> (Proxy, Backend) {
    let app = http_backend("app");
    let api = files(ca, "api", 1);
    let proxy = Proxy::start(&format!(
        "service: {{ name: {name}, port: {} }}\nadmin: {{ listen: 127.0.0.1:0 }}\n{RULES}{}",
        app.addr.port(),
        api.yaml("")
    ))
    .await;
    (proxy, app)
}

#[tokio::test]
async fn rules_decide_by_identity_path_method_and_headers_first_match_wins() {
    let ca = Ca::new("mesh CA");
    let (proxy, app) = sidecar_with_rules("authz1", &ca).await;
    let (web, billing, ops) = (
        files(&ca, "web", 2),
        files(&ca, "billing", 3),
        files(&ca, "ops", 4),
    );
    let addr = proxy.inbound();
    let tenant = ["x-tenant: acme"];
    let cases: [Case; 14] = [
        (&web, "GET", "/reports/7", &[], true, "web reads a report"),
        (&web, "HEAD", "/reports/7", &[], true, "HEAD is listed too"),
        (&web, "POST", "/reports/7", &[], false, "method"),
        (
            &web,
            "GET",
            "/reports/latest",
            &[],
            false,
            "the regex is anchored",
        ),
        (&web, "GET", "/admin/reports/7", &[], false, "deny first"),
        (&billing, "GET", "/reports/7", &[], false, "identity"),
        (&billing, "POST", "/invoices", &tenant, true, "header"),
        (
            &billing,
            "POST",
            "/admin/invoices",
            &tenant,
            false,
            "the deny rule comes first",
        ),
        (
            &billing,
            "POST",
            "/invoices",
            &["x-tenant: evil"],
            false,
            "header value",
        ),
        (&web, "POST", "/invoices", &tenant, false, "billing only"),
        (
            &ops,
            "GET",
            "/healthz",
            &[],
            true,
            "a rule without identities",
        ),
        (&ops, "GET", "/healthz/x", &[], false, "exact"),
        (&ops, "GET", "/public/x", &[], true, "prefix"),
        (&ops, "GET", "/publicity", &[], false, "whole segments"),
    ];
    let allowed = expect_verdicts(addr, &cases).await;
    assert_eq!(
        app.requests(),
        allowed,
        "denied requests never reach the app"
    );
    let denied = proxy
        .metric(
            "remora_authz_denied_total",
            &[("direction", "inbound"), ("upstream", "authz1")],
        )
        .await;
    assert_eq!(denied, 9.0);
}

#[tokio::test]
async fn dot_segments_and_escapes_cannot_walk_past_a_rule() {
    let ca = Ca::new("mesh CA");
    let (proxy, app) = sidecar_with_rules("authz2", &ca).await;
    let web = files(&ca, "web", 2);
    let addr = proxy.inbound();
    // Each of these starts with /public, which anyone may reach; normalized, it is not
    // under /public any more.
    for path in [
        "/public/../admin/users",
        "/public/./../admin/users",
        "/public/%2e%2e/admin/users",
        "/public/%2E%2e/secret",
        "/public/x/../../secret",
    ] {
        let (status, error, body) = curl(addr, &web, "GET", path, &[]).await;
        assert!(
            status == 403 || status == 400,
            "{path} got through: {status} {body}"
        );
        assert!(
            error == "forbidden" || error == "bad_path",
            "{path}: {error}"
        );
    }
    // A path the rules allow once normalized is allowed, and reaches the app normalized.
    let (status, error, body) = curl(addr, &web, "GET", "/admin/../public/./9", &[]).await;
    assert_eq!((status, &*error), (404, ""), "the app's answer: {body}");
    assert_eq!(app.requests(), 1);
    assert_eq!(app.uris(), ["/public/9"]);
}

/// A sidecar for `api`, speaking gRPC to `app`, with these rules.
async fn grpc_sidecar(app: SocketAddr, api: &TlsFiles, rules: &str) -> Proxy {
    Proxy::start(
        &TestConfig::new()
            .service(&format!(
                "{{ name: authz3, port: {}, protocol: grpc }}",
                app.port()
            ))
            .text(&format!(
                "inbound:\n  listen: 127.0.0.1:0\n  authorization:\n{rules}"
            ))
            .text(&api.yaml(""))
            .yaml(),
    )
    .await
}

/// The caller's own sidecar, with the upstream `api` on `inbound` over mTLS.
async fn caller_sidecar(inbound: SocketAddr, caller: &TlsFiles) -> Proxy {
    Proxy::start(
        &TestConfig::new()
            .service("{ name: caller }")
            .upstream(Upstream::to("api", [inbound]).protocol("grpc"))
            .with("tls", "{ enabled: true, identity: api }")
            .text(&caller.yaml(""))
            .yaml(),
    )
    .await
}

#[tokio::test]
async fn grpc_rules_match_service_and_method_and_deny_with_permission_denied() {
    let ca = Ca::new("mesh CA");
    let echo = grpc_echo();
    let api = files(&ca, "api", 1);
    let inbound = grpc_sidecar(
        echo.addr,
        &api,
        "    rules:\n\
         \x20     - { name: no-fail, action: deny, match: { grpc: { service: remora.test.Echo, method: Fail } } }\n\
         \x20     - { name: web-echo, action: allow, identities: [web], match: { grpc: { service: remora.test.Echo } } }\n",
    )
    .await;
    let web = caller_sidecar(inbound.inbound(), &files(&ca, "web", 2)).await;
    let (reply, _) = grpc_unary(web.upstream("api"), "hi")
        .await
        .expect("web may call Echo");
    assert_eq!(reply, "hi");
    let status = support::grpc_fail(web.upstream("api"))
        .await
        .expect_err("Fail is denied");
    assert_eq!(
        status.code(),
        tonic::Code::PermissionDenied,
        "not the app's UNAVAILABLE: {status:?}"
    );

    let billing = caller_sidecar(inbound.inbound(), &files(&ca, "billing", 3)).await;
    let status = grpc_unary(billing.upstream("api"), "hi")
        .await
        .expect_err("billing is denied by default");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("not authorized"), "{status:?}");
}

#[tokio::test]
async fn rules_follow_a_reload() {
    let ca = Ca::new("mesh CA");
    let app = http_backend("app");
    let api = files(&ca, "api", 1);
    let yaml = |rules: &str| {
        format!(
            "service: {{ name: authz4, port: {} }}\nadmin: {{ listen: 127.0.0.1:0 }}\n\
             inbound:\n  listen: 127.0.0.1:0\n  authorization:\n{rules}{}",
            app.addr.port(),
            api.yaml("")
        )
    };
    let proxy = Proxy::start(&yaml("    default: allow\n")).await;
    let web = files(&ca, "web", 2);
    assert_eq!(curl(proxy.inbound(), &web, "GET", "/", &[]).await.0, 200);
    assert!(
        proxy
            .reload(&yaml(
                "    rules: [{ name: web-out, action: deny, identities: [web] }]\n    default: allow\n"
            ))
            .await
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while curl(proxy.inbound(), &web, "GET", "/", &[]).await.0 != 403 {
        assert!(
            std::time::Instant::now() < deadline,
            "the new rules never applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ops = files(&ca, "ops", 3);
    assert_eq!(curl(proxy.inbound(), &ops, "GET", "/", &[]).await.0, 200);
}

#[tokio::test]
async fn rules_apply_without_mtls_over_http1_and_http2() {
    let app = http_backend("app");
    let proxy = Proxy::start(&format!(
        "service: {{ name: authz5, port: {} }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         inbound:\n  listen: 127.0.0.1:0\n  authorization:\n    rules:\n\
         \x20     - {{ name: public-reads, action: allow, match: {{ path: {{ prefix: /public }}, methods: [GET] }} }}\n",
        app.addr.port()
    ))
    .await;
    for version in [http::Version::HTTP_11, http::Version::HTTP_2] {
        let url = |path: &str| format!("http://{}{path}", proxy.inbound());
        let public = get(version, &url("/public/x")).await.unwrap();
        assert_eq!(public.status, 404, "the app's answer ({version:?})");
        let private = get(version, &url("/private")).await.unwrap();
        assert_eq!(private.status, 403, "the default is deny ({version:?})");
        assert_eq!(private.headers["x-remora-error"], "forbidden");
        assert!(private.body.contains("<no SPIFFE ID>"), "{}", private.body);
    }
    assert_eq!(app.requests(), 2);
}

/// curl (a client we did not write) calling `http://addr/x` with `args`; the status.
async fn curl_status(addr: SocketAddr, args: &[&str]) -> u16 {
    support::requirements::require_tool("curl", "curl");
    let mut command = std::process::Command::new("curl");
    command.args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "10",
    ]);
    command.args(args).arg(format!("http://{addr}/x"));
    let output = tokio::task::spawn_blocking(move || command.output().expect("curl runs"))
        .await
        .unwrap();
    String::from_utf8_lossy(&output.stdout).parse().unwrap()
}

/// The status of a raw HTTP/1.1 request with an absolute-form target, and what the app saw.
async fn absolute_form(addr: SocketAddr, target: &str, host: &str) -> (String, String) {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    raw_http1::read_response(&mut stream).await
}

/// A rule on `host` sees the request's host however it came, as the app then does: HTTP/2's
/// `:authority` (curl sends `-H 'Host: …'` as `:authority`), and an absolute-form target's
/// authority, which replaces a `Host` naming another (RFC 9112 §3.2.2). Over HTTP/2 the rule
/// read only header fields and missed it, and an absolute-form request went to the app with
/// the `Host` the rule had not judged.
#[tokio::test]
async fn a_rule_on_host_sees_the_host_over_http2_and_in_absolute_form() {
    let app = http_backend("app");
    let proxy = Proxy::start(&format!(
        "service: {{ name: authz6, port: {} }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         inbound:\n  listen: 127.0.0.1:0\n  authorization:\n    default: allow\n    rules:\n\
         \x20     - {{ name: no-internal, action: deny, match: {{ headers: [{{ name: host, regex: 'internal\\.example(:[0-9]+)?' }}] }} }}\n",
        app.addr.port()
    ))
    .await;
    let addr = proxy.inbound();
    let internal = ["-H", "Host: internal.example"];
    assert_eq!(
        curl_status(addr, &[&["--http1.1"], &internal[..]].concat()).await,
        403
    );
    let h2 = "--http2-prior-knowledge";
    assert_eq!(
        curl_status(addr, &[&[h2], &internal[..]].concat()).await,
        403
    );
    assert_eq!(
        curl_status(addr, &[h2, "-H", "Host: public.example"]).await,
        404
    );

    let (head, _) = absolute_form(addr, "http://internal.example/x", "public.example").await;
    assert!(head.starts_with("http/1.1 403"), "{head}");
    let (head, body) =
        absolute_form(addr, "http://public.example/headers", "internal.example").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["headers"]["host"][0], "public.example", "{seen}");
}
