//! Mesh mTLS with certificates from files (generated at run time with rcgen): the inbound
//! listener's handshake (a client certificate from the CA is required; none, or one from
//! another CA, is refused), the peer identity in `x-remora-client-id` (and never from
//! outside), sidecar-to-sidecar calls with the server's SPIFFE identity checked by the client,
//! ALPN `h2`, gRPC over TLS, TCP over TLS, authorization by identity (403 / gRPC 7 / TCP
//! close, counted), certificate rotation without restart, and the handshake timeout. Live
//! reload: new authorization rules apply (the rest of `tls` is fixed), an unchanged meshed
//! upstream keeps its connections.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{StatusCode, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::config::{TestConfig, Upstream};
use support::tls::{Ca, Leaf, TlsFiles, connect, get_on, http1, server_serial, spiffe};
use support::{Proxy, get, grpc_echo, grpc_unary, http_backend, prom, tcp_echo};

const HANG: Duration = Duration::from_secs(10);

/// The configuration of a sidecar in front of an application on `app`, with mTLS from `files`.
fn inbound_yaml(
    name: &str,
    app: SocketAddr,
    protocol: &str,
    files: &TlsFiles,
    tls_extra: &str,
) -> String {
    TestConfig::new()
        .service(&format!(
            "{{ name: {name}, port: {}, protocol: {protocol} }}",
            app.port()
        ))
        .inbound()
        .text(&files.yaml(tls_extra))
        .yaml()
}

/// A sidecar in front of an application on `app`, with mTLS from `files`.
async fn inbound_proxy(
    name: &str,
    app: SocketAddr,
    protocol: &str,
    files: &TlsFiles,
    tls_extra: &str,
) -> Proxy {
    Proxy::start(&inbound_yaml(name, app, protocol, files, tls_extra)).await
}

/// The configuration of a sidecar whose upstream `api` (on `endpoint`, speaking `protocol`)
/// is meshed, with `extra` lines for the upstream.
fn outbound_yaml(
    endpoint: SocketAddr,
    protocol: &str,
    identity: &str,
    files: &TlsFiles,
    extra: &str,
) -> String {
    TestConfig::new()
        .service("{ name: web }")
        .upstream(Upstream::to("api", [endpoint]).protocol(protocol))
        .with("tls", format!("{{ enabled: true, identity: {identity} }}"))
        .lines(extra)
        .text(&files.yaml(""))
        .yaml()
}

/// A sidecar whose upstream `api` (on `endpoint`, speaking `protocol`) is meshed.
async fn outbound_proxy(
    endpoint: SocketAddr,
    protocol: &str,
    identity: &str,
    files: &TlsFiles,
) -> Proxy {
    Proxy::start(&outbound_yaml(endpoint, protocol, identity, files, "")).await
}

/// The JSON the backend's `/headers` returned, as a value.
fn headers_of(body: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(body).expect("JSON")["headers"].clone()
}

/// An HTTP/1.1 connection over mTLS to `addr`, presenting `leaf`.
async fn http1_as(
    addr: SocketAddr,
    leaf: &Leaf,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>> {
    http1(connect(addr, Some(leaf), &[b"http/1.1"]).await.unwrap()).await
}

/// True when an HTTP request over this TLS client gets no response (the server refused
/// the handshake; with TLS 1.3 the client learns it on its first read).
async fn refused(addr: SocketAddr, leaf: Option<&Leaf>) -> bool {
    let Ok(stream) = connect(addr, leaf, &[b"http/1.1"]).await else {
        return true;
    };
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await
    else {
        return true;
    };
    tokio::spawn(connection);
    tokio::time::timeout(HANG, get_on(&mut sender, "/", &[]))
        .await
        .expect("answer or refusal within the hang bound")
        .is_err()
}

#[tokio::test]
async fn handshake_requires_a_client_certificate_from_the_ca() {
    let ca = Ca::new("mesh CA");
    let app = http_backend("app");
    let files = TlsFiles::new(&ca.leaf("api", 1), &ca);
    let proxy = inbound_proxy("hraccftc1", app.addr, "http", &files, "").await;

    let web = ca.leaf("web", 2);
    let mut sender = http1_as(proxy.inbound(), &web).await;
    let (status, _, body) = get_on(&mut sender, "/", &[]).await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "app"));

    assert!(
        refused(proxy.inbound(), None).await,
        "no client certificate"
    );
    let other = Ca::new("another CA");
    assert!(
        refused(proxy.inbound(), Some(&other.leaf("web", 3))).await,
        "another CA"
    );
    // A plaintext client does not get through either.
    let plain = get(Version::HTTP_11, &format!("http://{}/", proxy.inbound())).await;
    assert!(plain.is_err(), "plaintext HTTP answered: {plain:?}");

    prom::assert_value_within(
        &proxy.admin_url("/metrics"),
        "remora_tls_handshake_errors_total",
        &[("direction", "inbound"), ("upstream", "hraccftc1")],
        3.0,
        HANG,
    )
    .await;
    assert_eq!(app.requests(), 1);
}

#[tokio::test]
async fn the_peer_identity_reaches_the_app_and_cannot_be_spoofed() {
    let ca = Ca::new("mesh CA");
    let app = http_backend("app");
    let files = TlsFiles::new(&ca.leaf("api", 1), &ca);
    let proxy = inbound_proxy("tpirtaacbs1", app.addr, "http", &files, "").await;
    let web = ca.leaf("web", 2);
    let mut sender = http1_as(proxy.inbound(), &web).await;
    let (_, _, body) = get_on(
        &mut sender,
        "/headers",
        &[(
            "x-remora-client-id",
            "spiffe://evil/ns/default/dc/dc1/svc/admin",
        )],
    )
    .await
    .unwrap();
    assert_eq!(
        headers_of(&body)["x-remora-client-id"],
        serde_json::json!([spiffe("web")])
    );

    // Without TLS the header is removed and none is set.
    let plain = Proxy::start(&format!(
        "service: {{ name: api, port: {} }}\ninbound: {{ listen: 127.0.0.1:0 }}\nadmin: {{ listen: 127.0.0.1:0 }}\nlogging: {{ access_log: false }}\n",
        app.addr.port()
    ))
    .await;
    let client = support::http_client::<http_body_util::Empty<bytes::Bytes>>(Version::HTTP_11);
    let request = http::Request::get(format!("http://{}/headers", plain.inbound()))
        .header("x-remora-client-id", spiffe("admin"))
        .body(http_body_util::Empty::new())
        .unwrap();
    let response = client.request(request).await.unwrap();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let headers = headers_of(&String::from_utf8_lossy(&body));
    assert!(headers.get("x-remora-client-id").is_none(), "{headers}");
}

/// `Connection: x-remora-client-id` asks the next hop to drop the header
/// remora sets: the verified identity reaches the app all the same, and a
/// spoofed `_` spelling does not.
#[tokio::test]
async fn connection_cannot_remove_the_verified_identity() {
    let ca = Ca::new("mesh CA");
    let app = http_backend("app");
    let files = TlsFiles::new(&ca.leaf("api", 1), &ca);
    let proxy = inbound_proxy("ccrtvi1", app.addr, "http", &files, "").await;
    let web = ca.leaf("web", 2);
    let mut sender = http1_as(proxy.inbound(), &web).await;
    let admin = spiffe("admin");
    let (status, _, body) = get_on(
        &mut sender,
        "/headers",
        &[
            ("connection", "x-remora-client-id, x_remora_client_id"),
            ("x_remora_client_id", admin.as_str()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    let headers = headers_of(&body);
    assert_eq!(
        headers["x-remora-client-id"],
        serde_json::json!([spiffe("web")]),
        "{headers}"
    );
    assert!(headers.get("x_remora_client_id").is_none(), "{headers}");
}

#[tokio::test]
async fn sidecar_to_sidecar_over_mtls_with_h2_by_alpn() {
    let ca = Ca::new("mesh CA");
    let app = http_backend("app");
    let api_files = TlsFiles::new(&ca.leaf("api", 1), &ca);
    let inbound = inbound_proxy("stsomwhba1", app.addr, "http", &api_files, "").await;
    let web_files = TlsFiles::new(&ca.leaf("web", 2), &ca);
    let outbound = outbound_proxy(inbound.inbound(), "http", "api", &web_files).await;

    for _ in 0..3 {
        let reply = get(
            Version::HTTP_11,
            &format!("http://{}/headers", outbound.upstream("api")),
        )
        .await
        .unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(
            headers_of(&reply.body)["x-remora-client-id"],
            serde_json::json!([spiffe("web")])
        );
    }
    // remora offered h2 and HTTP/1.1 to the other sidecar, which chose h2:
    // the HTTP/1.1 requests above went over one HTTP/2 connection.
    let endpoints = get(Version::HTTP_11, &outbound.admin_url("/endpoints"))
        .await
        .unwrap();
    let endpoints: serde_json::Value = serde_json::from_str(&endpoints.body).unwrap();
    let api = (endpoints["upstreams"].as_array().unwrap().iter())
        .find(|upstream| upstream["name"] == "api")
        .expect("upstream api");
    assert_eq!(api["endpoints"][0]["negotiated_h2"], true, "{api}");
    // The inbound listener chooses h2 when offered h2 and HTTP/1.1.
    let stream = connect(
        inbound.inbound(),
        Some(&ca.leaf("web", 3)),
        &[b"h2", b"http/1.1"],
    )
    .await
    .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
}

#[tokio::test]
async fn the_client_refuses_a_server_with_another_identity() {
    let ca = Ca::new("mesh CA");
    let app = http_backend("app");
    // The server is "billing", the client expects "api".
    let billing_files = TlsFiles::new(&ca.leaf("billing", 1), &ca);
    let inbound = inbound_proxy("tcraswai1", app.addr, "http", &billing_files, "").await;
    let web_files = TlsFiles::new(&ca.leaf("web", 2), &ca);
    let outbound = outbound_proxy(inbound.inbound(), "http", "api", &web_files).await;

    let reply = get(
        Version::HTTP_11,
        &format!("http://{}/", outbound.upstream("api")),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.body);
    assert_eq!(reply.headers["x-remora-error"], "connect_failed");
    assert!(reply.body.contains("TLS handshake"), "{}", reply.body);
    assert_eq!(app.requests(), 0);
    let errors = prom::value(
        &prom::scrape(&outbound.admin_url("/metrics")).await,
        "remora_tls_handshake_errors_total",
        &[("direction", "outbound"), ("upstream", "api")],
    );
    assert!(errors >= Some(1.0), "{errors:?}");

    // The same sidecar with the right full SPIFFE ID gets through.
    let exact = outbound_proxy(inbound.inbound(), "http", &spiffe("billing"), &web_files).await;
    let reply = get(
        Version::HTTP_11,
        &format!("http://{}/", exact.upstream("api")),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

#[tokio::test]
async fn grpc_over_mtls() {
    let ca = Ca::new("mesh CA");
    let echo = grpc_echo();
    let api_files = TlsFiles::new(&ca.leaf("api", 1), &ca);
    let inbound = inbound_proxy("gom1", echo.addr, "grpc", &api_files, "").await;
    let web_files = TlsFiles::new(&ca.leaf("web", 2), &ca);
    let outbound = outbound_proxy(inbound.inbound(), "grpc", "api", &web_files).await;
    let (reply, _) = grpc_unary(outbound.upstream("api"), "over mTLS")
        .await
        .expect("unary call");
    assert_eq!(reply, "over mTLS");
}

#[tokio::test]
async fn tcp_over_mtls() {
    let ca = Ca::new("mesh CA");
    let echo = tcp_echo();
    let api_files = TlsFiles::new(&ca.leaf("api", 1), &ca);
    let inbound = inbound_proxy("tom1", echo, "tcp", &api_files, "").await;
    let web_files = TlsFiles::new(&ca.leaf("web", 2), &ca);
    let outbound = outbound_proxy(inbound.inbound(), "tcp", "api", &web_files).await;
    let mut stream = TcpStream::connect(outbound.upstream("api")).await.unwrap();
    stream.write_all(b"ping over mTLS").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut received = Vec::new();
    tokio::time::timeout(HANG, stream.read_to_end(&mut received))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(received, b"ping over mTLSbye\n");
}

#[tokio::test]
async fn authorization_denies_by_identity() {
    let ca = Ca::new("mesh CA");
    let app = http_backend("app");
    let files = TlsFiles::new(&ca.leaf("api", 1), &ca);
    let rules = "  authorization:\n    default: deny\n    allow: [\"web*\", \"spiffe://*/ns/*/dc/*/svc/ops\"]\n    deny: [web-admin]\n";
    let proxy = inbound_proxy("adbi1", app.addr, "http", &files, rules).await;
    let status_for = |service: &'static str, serial| {
        let leaf = ca.leaf(service, serial);
        let addr = proxy.inbound();
        async move {
            let mut sender = http1_as(addr, &leaf).await;
            let (status, headers, _) = get_on(&mut sender, "/", &[]).await.unwrap();
            (status, headers.get("x-remora-error").cloned())
        }
    };
    assert_eq!(status_for("web", 2).await.0, StatusCode::OK);
    assert_eq!(status_for("ops", 3).await.0, StatusCode::OK);
    let (status, kind) = status_for("web-admin", 4).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(kind.unwrap(), "forbidden");
    assert_eq!(status_for("billing", 5).await.0, StatusCode::FORBIDDEN);
    let denied = prom::value(
        &prom::scrape(&proxy.admin_url("/metrics")).await,
        "remora_authz_denied_total",
        &[("direction", "inbound"), ("upstream", "adbi1")],
    );
    assert_eq!(denied, Some(2.0));
    assert_eq!(app.requests(), 2);
}

/// A bare service name is this sidecar's own trust domain and namespace; `*` never crosses
/// `/`; a URI that breaks the SPIFFE ID rules (upper-case trust domain, a port) matches nothing.
#[tokio::test]
async fn identity_patterns_do_not_reach_beyond_their_scope() {
    let ca = Ca::new("mesh CA");
    let app = http_backend("app");
    let files = TlsFiles::new(&ca.leaf("api", 1), &ca);
    let rules = "  authorization:\n    default: deny\n    allow: [web, \"spiffe://*/ns/default/dc/dc1/svc/ops\"]\n";
    let proxy = inbound_proxy("scope1", app.addr, "http", &files, rules).await;
    let status_for = |uri: String, serial| {
        let leaf = ca.leaf_with_uri(Some(&uri), serial);
        let addr = proxy.inbound();
        async move {
            let mut sender = http1_as(addr, &leaf).await;
            get_on(&mut sender, "/", &[]).await.unwrap().0
        }
    };
    let td = support::tls::TRUST_DOMAIN;
    assert_eq!(status_for(spiffe("web"), 2).await, StatusCode::OK);
    assert_eq!(status_for(spiffe("ops"), 3).await, StatusCode::OK);
    for (serial, spoofed) in [
        format!("spiffe://{td}/ns/evil/dc/dc1/svc/web"),
        "spiffe://evil.example/ns/default/dc/dc1/svc/web".to_owned(),
        format!("spiffe://{td}/ns/evil/dc/dc1/svc/x/ns/default/dc/dc1/svc/ops"),
        "spiffe://Evil.Example/ns/default/dc/dc1/svc/ops".to_owned(),
        format!("spiffe://{td}:8443/ns/default/dc/dc1/svc/ops"),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(
            status_for(spoofed.clone(), 10 + serial as u64).await,
            StatusCode::FORBIDDEN,
            "{spoofed}"
        );
    }
    assert_eq!(app.requests(), 2);
}

#[tokio::test]
async fn a_denied_grpc_call_gets_permission_denied() {
    let ca = Ca::new("mesh CA");
    let echo = grpc_echo();
    let api_files = TlsFiles::new(&ca.leaf("api", 1), &ca);
    let inbound = inbound_proxy(
        "adgcgpd1",
        echo.addr,
        "grpc",
        &api_files,
        "  authorization: { deny: [web] }\n",
    )
    .await;
    let web_files = TlsFiles::new(&ca.leaf("web", 2), &ca);
    let outbound = outbound_proxy(inbound.inbound(), "grpc", "api", &web_files).await;
    let status = grpc_unary(outbound.upstream("api"), "hi")
        .await
        .expect_err("denied");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
}

/// True when a TCP connection over TLS as `leaf` gets its bytes echoed (the echo server
/// appends `bye`); false when the proxy closes it.
async fn tcp_echoed(addr: SocketAddr, leaf: &Leaf) -> bool {
    let mut stream = connect(addr, Some(leaf), &[]).await.unwrap();
    let _ = stream.write_all(b"hello").await;
    let _ = stream.shutdown().await;
    let mut received = Vec::new();
    let _ = tokio::time::timeout(HANG, stream.read_to_end(&mut received))
        .await
        .expect("closed in time");
    received == b"hellobye\n"
}

#[tokio::test]
async fn a_denied_tcp_connection_is_closed() {
    let ca = Ca::new("mesh CA");
    let echo = tcp_echo();
    let files = TlsFiles::new(&ca.leaf("api", 1), &ca);
    let proxy = inbound_proxy(
        "adtcic1",
        echo,
        "tcp",
        &files,
        "  authorization: { default: deny, allow: [ops] }\n",
    )
    .await;
    for (service, serial, allowed) in [("web", 2, false), ("ops", 3, true)] {
        let leaf = ca.leaf(service, serial);
        assert_eq!(
            tcp_echoed(proxy.inbound(), &leaf).await,
            allowed,
            "{service}"
        );
    }
    let denied = prom::value(
        &prom::scrape(&proxy.admin_url("/metrics")).await,
        "remora_authz_denied_total",
        &[("direction", "inbound"), ("upstream", "adtcic1")],
    );
    assert_eq!(denied, Some(1.0));
}

/// Connects until the server presents the certificate with `serial` (the reload interval
/// is 50 ms); panics after the hang bound.
async fn connect_until_serial(
    addr: SocketAddr,
    leaf: &Leaf,
    serial: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let deadline = std::time::Instant::now() + HANG;
    loop {
        let stream = connect(addr, Some(leaf), &[b"http/1.1"]).await.unwrap();
        let presented = server_serial(&stream);
        if presented == serial {
            return stream;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still serial {presented}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn rotated_files_reach_new_connections_while_old_ones_keep_working() {
    let ca = Ca::new("mesh CA");
    let app = http_backend("app");
    let files = TlsFiles::new(&ca.leaf("api", 0x10), &ca);
    let proxy = inbound_proxy("rfrncwookw1", app.addr, "http", &files, "").await;
    let web = ca.leaf("web", 2);

    let old = connect(proxy.inbound(), Some(&web), &[b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(server_serial(&old), "10");
    let mut old = http1(old).await;
    assert_eq!(get_on(&mut old, "/", &[]).await.unwrap().0, StatusCode::OK);

    files.write(&ca.leaf("api", 0x20), &ca.pem());
    let new = connect_until_serial(proxy.inbound(), &web, "20").await;
    let mut new = http1(new).await;
    assert_eq!(get_on(&mut new, "/", &[]).await.unwrap().0, StatusCode::OK);
    // The connection made before the rotation still works.
    assert_eq!(get_on(&mut old, "/", &[]).await.unwrap().0, StatusCode::OK);

    // A broken key is rejected (the only rejection in this test binary) and the current
    // certificate stays.
    let mut broken = ca.leaf("api", 0x30);
    broken.key_pem = ca.leaf("api", 0x31).key_pem;
    files.write(&broken, &ca.pem());
    prom::wait_for_value(
        &proxy.admin_url("/metrics"),
        "remora_tls_certificate_updates_total",
        &[("result", "error")],
        1.0,
        HANG,
    )
    .await;
    let after = connect(proxy.inbound(), Some(&web), &[b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(server_serial(&after), "20");
}

#[tokio::test]
async fn a_silent_client_is_cut_off_by_the_handshake_timeout() {
    let ca = Ca::new("mesh CA");
    let app = http_backend("app");
    let files = TlsFiles::new(&ca.leaf("api", 1), &ca);
    let proxy = inbound_proxy(
        "ascicobtht1",
        app.addr,
        "http",
        &files,
        "  handshake_timeout: 300ms\n",
    )
    .await;
    let mut silent = TcpStream::connect(proxy.inbound()).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(HANG, silent.read(&mut buf))
        .await
        .expect("closed within the hang bound");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    // Other clients were served meanwhile, and still are.
    let mut sender = http1_as(proxy.inbound(), &ca.leaf("web", 2)).await;
    assert_eq!(
        get_on(&mut sender, "/", &[]).await.unwrap().0,
        StatusCode::OK
    );
}

/// Live reload: the authorization rules apply from the next request (HTTP, on a connection
/// opened before) or the next connection (TCP); the rest of `tls` is fixed and keeps its
/// running value.
#[tokio::test]
async fn authorization_rules_follow_a_reload_and_the_rest_of_tls_is_fixed() {
    let ca = Ca::new("mesh CA");
    let app = http_backend("app");
    let files = TlsFiles::new(&ca.leaf("api", 1), &ca);
    let http = |rules: &str| inbound_yaml("arfarr1", app.addr, "http", &files, rules);
    let proxy = Proxy::start(&http("  authorization: { deny: [web] }\n")).await;
    let mut web = http1_as(proxy.inbound(), &ca.leaf("web", 2)).await;
    assert_eq!(
        get_on(&mut web, "/", &[]).await.unwrap().0,
        StatusCode::FORBIDDEN
    );

    let next = http("  handshake_timeout: 3s\n  authorization: { deny: [ops] }\n");
    assert!(proxy.reload(&next).await);
    assert_eq!(get_on(&mut web, "/", &[]).await.unwrap().0, StatusCode::OK);
    let mut ops = http1_as(proxy.inbound(), &ca.leaf("ops", 3)).await;
    assert_eq!(
        get_on(&mut ops, "/", &[]).await.unwrap().0,
        StatusCode::FORBIDDEN
    );
    let shown = get(Version::HTTP_11, &proxy.admin_url("/config"))
        .await
        .unwrap()
        .body;
    assert!(shown.contains("\"handshake_timeout\": \"10s\""), "{shown}");
    assert!(shown.contains("\"ops\""), "{shown}");

    let echo = tcp_echo();
    let tcp = |rules: &str| inbound_yaml("arfarr2", echo, "tcp", &files, rules);
    let proxy = Proxy::start(&tcp("  authorization: { deny: [web] }\n")).await;
    let web = ca.leaf("web", 4);
    assert!(!tcp_echoed(proxy.inbound(), &web).await);
    assert!(
        proxy
            .reload(&tcp("  authorization: { deny: [ops] }\n"))
            .await
    );
    assert!(tcp_echoed(proxy.inbound(), &web).await);
    assert!(!tcp_echoed(proxy.inbound(), &ca.leaf("ops", 5)).await);
}

/// A reload that leaves a meshed upstream's TLS alone keeps the upstream, so its pooled mTLS
/// connection carries on: a relay in front of the server side counts one connection across the
/// reload. A changed expected identity dials anew, and is refused.
#[tokio::test]
async fn a_reload_keeps_an_unchanged_meshed_upstream_and_its_connections() {
    let ca = Ca::new("mesh CA");
    let app = http_backend("app");
    let api_files = TlsFiles::new(&ca.leaf("api", 1), &ca);
    let inbound = inbound_proxy("arkaumu1", app.addr, "http", &api_files, "").await;
    let accepted = Arc::new(AtomicU64::new(0));
    let relay = {
        let (accepted, target) = (Arc::clone(&accepted), inbound.inbound());
        support::serve(move |mut client| {
            accepted.fetch_add(1, Ordering::SeqCst);
            async move {
                let mut server = TcpStream::connect(target).await.expect("inbound listener");
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        })
    };
    let web_files = TlsFiles::new(&ca.leaf("web", 2), &ca);
    let yaml = |identity: &str, extra: &str| {
        outbound_yaml(relay.addr, "http", identity, &web_files, extra)
    };
    let outbound = Proxy::start(&yaml("api", "")).await;
    let url = format!("http://{}/", outbound.upstream("api"));
    let status = || async { get(Version::HTTP_11, &url).await.unwrap().status };
    assert_eq!(status().await, StatusCode::OK);
    let retries = "    retries: { attempts: 1 }\n";
    assert!(outbound.reload(&yaml("api", retries)).await);
    assert_eq!(status().await, StatusCode::OK);
    assert_eq!(status().await, StatusCode::OK);
    assert_eq!(accepted.load(Ordering::SeqCst), 1);

    assert!(outbound.reload(&yaml("billing", "")).await);
    let reply = get(Version::HTTP_11, &url).await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert!(reply.body.contains("TLS handshake"), "{}", reply.body);
    assert!(accepted.load(Ordering::SeqCst) > 1, "no new connection");
}
