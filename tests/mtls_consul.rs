//! Mesh mTLS with `tls: source: consul`: the leaf certificate and CA roots come from the
//! Consul stand-in's Connect CA (the documented response bodies, carrying certificates made
//! at run time), followed by blocking queries so a new leaf reaches new connections without a
//! restart; Consul intentions decide who may call, and a changed intention applies at once.
//! Intentions fail closed: until the first answer is read every caller is denied (Consul down
//! at start), an entry of an unknown shape is skipped while the others apply. L7 intentions
//! (`Permissions`, in the shapes of Consul's documented samples) are enforced per request with
//! Consul's precedence, curl presenting each caller's certificate.

mod support;

use std::time::Duration;

use http::StatusCode;

use serde_json::json;
use support::consul::{ConsulStandIn, ErrorMode};
use support::curl::{Case, curl, expect_verdicts};
use support::tls::{Ca, Leaf, TlsFiles, connect, get_on, http1, server_serial, spiffe};
use support::{Backend, Proxy, http_backend};

const HANG: Duration = Duration::from_secs(10);

async fn consul_sidecar(
    consul: &ConsulStandIn,
    name: &str,
    app_port: u16,
    authorization: &str,
) -> Proxy {
    Proxy::start(&format!(
        "service: {{ name: {name}, port: {app_port} }}\n\
         inbound: {{ listen: 127.0.0.1:0 }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         consul: {{ address: \"{}\", wait: 2s }}\n\
         logging: {{ access_log: false }}\n\
         tls:\n  source: consul\n{authorization}",
        consul.url()
    ))
    .await
}

fn serve_leaf(consul: &ConsulStandIn, service: &str, leaf: &Leaf) {
    consul.set_leaf(
        service,
        &leaf.cert_pem,
        &leaf.key_pem,
        &leaf.serial,
        &spiffe(service),
    );
}

/// Status of `GET /` through `proxy`'s inbound listener as `caller`; panics after the hang bound
/// when the handshake keeps failing (no certificate loaded yet).
async fn status_as(proxy: &Proxy, caller: &Leaf) -> StatusCode {
    let deadline = std::time::Instant::now() + HANG;
    loop {
        if let Ok(stream) = connect(proxy.inbound(), Some(caller), &[b"http/1.1"]).await {
            let mut sender = http1(stream).await;
            if let Ok((status, _, _)) = get_on(&mut sender, "/", &[]).await {
                return status;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no TLS service in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_leaf_and_roots_come_from_consul_and_rotate() {
    let consul = ConsulStandIn::start();
    let ca = Ca::new("Consul CA 7");
    serve_leaf(&consul, "cweb", &ca.leaf("cweb", 0x41));
    let app = http_backend("app");
    let proxy = consul_sidecar(&consul, "cweb", app.addr.port(), "").await;
    let caller = ca.leaf("api", 2);
    // No roots yet: no handshake can succeed, and /ready says why.
    let ready = support::get(http::Version::HTTP_11, &proxy.admin_url("/ready"))
        .await
        .unwrap();
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        ready.body
    );
    consul.set_roots(&[&ca.pem()]);
    assert_eq!(status_as(&proxy, &caller).await, StatusCode::OK);
    let first = connect(proxy.inbound(), Some(&caller), &[b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(server_serial(&first), "41");
    let mut first = http1(first).await;

    // CA rotation: Consul lists the old and the new root, then issues a leaf from the new one.
    let new_ca = Ca::new("Consul CA 8");
    consul.set_roots(&[&ca.pem(), &new_ca.pem()]);
    serve_leaf(&consul, "cweb", &new_ca.leaf("cweb", 0x42));
    let deadline = std::time::Instant::now() + HANG;
    loop {
        let stream = connect(proxy.inbound(), Some(&caller), &[b"http/1.1"])
            .await
            .unwrap();
        if server_serial(&stream) == "42" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new leaf was not used"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A caller with a leaf from either root is accepted; the old connection still works.
    assert_eq!(
        status_as(&proxy, &new_ca.leaf("api", 3)).await,
        StatusCode::OK
    );
    assert_eq!(status_as(&proxy, &caller).await, StatusCode::OK);
    assert_eq!(
        get_on(&mut first, "/", &[]).await.unwrap().0,
        StatusCode::OK
    );
    // Blocking queries, not polling: the leaf and roots queries are both
    // held by the stand-in at some point (they are re-issued at once after
    // each answer, so allow a moment on a busy machine).
    let deadline = std::time::Instant::now() + HANG;
    while consul.max_held() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "held {}",
            consul.max_held()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn consul_intentions_decide_who_may_call() {
    let consul = ConsulStandIn::start();
    let ca = Ca::new("Consul CA 7");
    serve_leaf(&consul, "cdb", &ca.leaf("cdb", 0x51));
    consul.set_roots(&[&ca.pem()]);
    consul.set_intentions("cdb", &[("web", false), ("*", true)]);
    let app = http_backend("app");
    let proxy = consul_sidecar(
        &consul,
        "cdb",
        app.addr.port(),
        "  authorization: { default: deny, intentions: true }\n",
    )
    .await;
    let web = ca.leaf("web", 2);
    let billing = ca.leaf("billing", 3);
    // The intentions arrive with the first answer; until then the default (deny) applies.
    let deadline = std::time::Instant::now() + HANG;
    while status_as(&proxy, &billing).await != StatusCode::OK {
        assert!(
            std::time::Instant::now() < deadline,
            "intentions not applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status_as(&proxy, &web).await, StatusCode::FORBIDDEN);

    // An intention change reaches the sidecar through the blocking query.
    consul.set_intentions("cdb", &[("web", true), ("*", false)]);
    let deadline = std::time::Instant::now() + HANG;
    while status_as(&proxy, &web).await != StatusCode::OK {
        assert!(
            std::time::Instant::now() < deadline,
            "intention change not applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status_as(&proxy, &billing).await, StatusCode::FORBIDDEN);
}

/// A sidecar in front of `app` with its certificate from `files` that follows Consul's
/// intentions (and nothing else from Consul), with `default: default` for callers no intention
/// names.
async fn intentions_sidecar(
    consul: &ConsulStandIn,
    name: &str,
    app: &Backend,
    files: &TlsFiles,
    default: &str,
) -> Proxy {
    Proxy::start(&format!(
        "service: {{ name: {name}, port: {} }}\n\
         inbound: {{ listen: 127.0.0.1:0 }}\n\
         admin: {{ listen: 127.0.0.1:0 }}\n\
         consul: {{ address: \"{}\", wait: 2s }}\n\
         logging: {{ access_log: false }}\n{}",
        app.addr.port(),
        consul.url(),
        files.yaml(&format!(
            "  authorization: {{ default: {default}, intentions: true }}\n"
        ))
    ))
    .await
}

/// Waits until `caller` gets `expected` from `proxy`.
async fn until_status(proxy: &Proxy, caller: &Leaf, expected: StatusCode, what: &str) {
    let deadline = std::time::Instant::now() + HANG;
    while status_as(proxy, caller).await != expected {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn callers_are_denied_until_the_intentions_first_load() {
    let consul = ConsulStandIn::start();
    consul.set_error_mode(ErrorMode::ServerError);
    let ca = Ca::new("mesh CA");
    let files = TlsFiles::new(&ca.leaf("idb", 1), &ca);
    // Consul fails, then answers what remora cannot read. `default: allow`: the intentions not loaded yet must not fall through to it.
    let app = http_backend("app");
    let proxy = intentions_sidecar(&consul, "idb", &app, &files, "allow").await;
    let (web, billing) = (ca.leaf("web", 2), ca.leaf("billing", 3));
    for mode in [ErrorMode::ServerError, ErrorMode::Garbage] {
        consul.set_error_mode(mode);
        for _ in 0..3 {
            assert_eq!(status_as(&proxy, &web).await, StatusCode::FORBIDDEN);
            assert_eq!(status_as(&proxy, &billing).await, StatusCode::FORBIDDEN);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Consul comes back with a deny intention for web: it applies, the rest is the default.
    consul.set_intentions("idb", &[("web", false)]);
    consul.set_error_mode(ErrorMode::None);
    until_status(&proxy, &billing, StatusCode::OK, "intentions not loaded").await;
    assert_eq!(status_as(&proxy, &web).await, StatusCode::FORBIDDEN);

    // Consul going away later keeps the last good list.
    consul.stop();
    consul.set_intentions("idb", &[]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status_as(&proxy, &web).await, StatusCode::FORBIDDEN);
    assert_eq!(status_as(&proxy, &billing).await, StatusCode::OK);
}

#[tokio::test]
async fn intention_entries_are_read_one_by_one() {
    let consul = ConsulStandIn::start();
    let template = |source: &str, action: Option<&str>| {
        let mut entry = json!({
            "SourceNS": "default",
            "SourceName": source,
            "DestinationNS": "default",
            "DestinationName": "iapi",
            "SourceType": "consul",
            "Meta": {},
            "CreateIndex": 11,
            "ModifyIndex": 11
        });
        if let Some(action) = action {
            entry["Action"] = action.into();
        }
        entry
    };
    let mut l7 = template("web", None);
    l7["Permissions"] = json!([{ "Action": "allow", "HTTP": { "PathPrefix": "/public" } }]);
    let mut unreadable = template("ops", Some("allow"));
    unreadable["SourceName"] = json!({ "unexpected": "shape" });
    // Unreadable, but its source is: it denies `mail` (fails closed).
    let mut odd_deny = template("mail", Some("deny"));
    odd_deny["SourceNS"] = json!(7);
    consul.set_intention_entries(
        "iapi",
        vec![
            unreadable,
            l7,
            template("billing", Some("allow")),
            odd_deny,
            template("*", Some("allow")),
        ],
    );
    let ca = Ca::new("mesh CA");
    let files = TlsFiles::new(&ca.leaf("iapi", 1), &ca);
    let app = http_backend("app");
    let proxy = intentions_sidecar(&consul, "iapi", &app, &files, "deny").await;
    let billing = ca.leaf("billing", 2);
    until_status(
        &proxy,
        &billing,
        StatusCode::OK,
        "the readable entries do not apply",
    )
    .await;
    assert_eq!(status_as(&proxy, &ca.leaf("cart", 3)).await, StatusCode::OK);
    assert_eq!(
        status_as(&proxy, &ca.leaf("web", 4)).await,
        StatusCode::FORBIDDEN,
        "an L7 intention allows only what its permissions match (not GET /)"
    );
    assert_eq!(
        status_as(&proxy, &ca.leaf("mail", 5)).await,
        StatusCode::FORBIDDEN,
        "an unreadable deny intention of a readable source still denies it"
    );
}

/// The documented L7 samples (`connect-intentions-match-l7-response.json`) for `destination`.
fn documented_l7(destination: &str) -> Vec<serde_json::Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/consul-api/connect-intentions-match-l7-response.json"
    );
    let mut answer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    serde_json::from_value(answer[destination].take()).unwrap()
}

#[tokio::test]
async fn l7_intentions_decide_per_request_with_consuls_precedence() {
    let consul = ConsulStandIn::start();
    consul.set_intention_entries("api", documented_l7("api"));
    let ca = Ca::new("mesh CA");
    let files = TlsFiles::new(&ca.leaf("api", 1), &ca);
    let app = http_backend("app");
    let proxy = intentions_sidecar(&consul, "api", &app, &files, "deny").await;
    let caller = |service: &str, serial| TlsFiles::new(&ca.leaf(service, serial), &ca);
    let (dashboard, reports, reconciler, ops, cart) = (
        caller("admin-dashboard", 2),
        caller("report-generator", 3),
        caller("nightly-reconciler", 4),
        caller("ops", 5),
        caller("cart", 6),
    );
    let addr = proxy.inbound();
    let deadline = std::time::Instant::now() + HANG;
    while curl(addr, &cart, "GET", "/", &[]).await.0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "intentions not loaded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = app.requests();
    let ops_headers = [
        "x-debug: 1",
        "x-team: sre",
        "x-ticket: OPS-7",
        "x-host: db.internal",
        "x-trace: 0af7651e",
    ];
    let cases: [Case; 10] = [
        (&dashboard, "PUT", "/v2/users", &[], true, "REST access"),
        (
            &dashboard,
            "PATCH",
            "/v2/users",
            &[],
            false,
            "method not listed: the default",
        ),
        (
            &reports,
            "GET",
            "/v2/widgets/7",
            &[],
            true,
            "narrower prefix",
        ),
        (
            &reports,
            "GET",
            "/v2/users",
            &[],
            false,
            "outside its prefix",
        ),
        (
            &reconciler,
            "POST",
            "/v1/reconcile-data",
            &[],
            true,
            "exact path and method",
        ),
        (
            &reconciler,
            "POST",
            "/v1/reconcile-data/../reconcile-data",
            &[],
            true,
            "normalized",
        ),
        (
            &reconciler,
            "GET",
            "/v1/reconcile-data",
            &[],
            false,
            "method",
        ),
        (
            &ops,
            "GET",
            "/ops/x",
            &ops_headers,
            true,
            "every header matcher",
        ),
        (
            &ops,
            "GET",
            "/other",
            &[],
            false,
            "no fall-through to the `*` allow",
        ),
        (&cart, "DELETE", "/anything", &[], true, "the `*` allow"),
    ];
    let allowed = expect_verdicts(addr, &cases).await;
    assert_eq!(
        app.requests() - before,
        allowed,
        "denied requests never reach the app"
    );
}
