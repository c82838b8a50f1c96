//! `inbound.jwt` keys from a JWKS URL, served while remora runs: a rotated
//! set is fetched early for a new `kid` (rate-limited) and the removed key
//! stops working; a dying JWKS server leaves the last good keys in use and
//! its failures counted; HTTPS is trusted through `ca_file` only (nginx
//! serves it).

mod support;

use std::time::Duration;

use http::StatusCode;
use serde_json::json;

use std::time::Instant;
use support::jwt::*;

use support::http_backend;

/// Rotation: the old key is removed and a new one added; the first token
/// with the new `kid` makes remora fetch at once (no waiting for `refresh`),
/// the old `kid` is refused from then on, and further unknown kids do not
/// make it fetch again within 10 s.
#[tokio::test]
async fn a_rotated_jwks_url_is_fetched_early_for_a_new_kid_and_the_old_key_stops_working() {
    let keys = Keys::new(&["rsa-old", "ec-new", "ed-other"]);
    let jwks = JwksServer::start(keys.jwks(&["rsa-old"]));
    let app = http_backend("app");
    let proxy = proxy(&app, &url_provider("rotated", &jwks.url(), "1h")).await;
    let tokens = keys.tokens(&[
        spec("rsa-old", "RS256", good_claims()),
        spec("ec-new", "ES256", good_claims()),
        spec("ed-other", "EdDSA", good_claims()),
    ]);
    let (old, new, other) = (&tokens[0], &tokens[1], &tokens[2]);

    support::eventually(Duration::from_secs(5), "the first JWKS fetch", || async {
        jwks.fetches() >= 1
    })
    .await;
    assert_eq!(with_token(&proxy, old).await.status, StatusCode::OK);
    assert_eq!(jwks.fetches(), 1, "a known kid makes no fetch");

    jwks.serve(keys.jwks(&["ec-new"]));
    let reply = with_token(&proxy, new).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the new kid after an early fetch: {}",
        reply.body
    );
    assert_eq!(app_headers(&reply)["x-user"], json!(["alice"]));
    assert_eq!(jwks.fetches(), 2);

    // The old token was verified (and cached) before: the new set drops it.
    let started = Instant::now();
    assert_refused(&with_token(&proxy, old).await, "the removed key");
    assert_refused(&with_token(&proxy, other).await, "a kid the set never had");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "rate-limited: no wait for a fetch"
    );
    assert_eq!(jwks.fetches(), 2, "no second early fetch within 10 s");
    let metric = "remora_jwt_validations_total";
    let unknown = [("provider", "rotated"), ("result", "unknown_key")];
    assert_eq!(proxy.metric(metric, &unknown).await, 2.0);
    let fetched = [("provider", "rotated"), ("result", "ok")];
    assert_eq!(
        proxy
            .metric("remora_jwt_jwks_fetches_total", &fetched)
            .await,
        2.0
    );
}

/// The JWKS server dies and comes back with a new set: remora keeps
/// serving with the last good keys meanwhile, counts the failed fetches,
/// and picks up the new set on its next `refresh`.
#[tokio::test]
async fn a_dying_jwks_server_keeps_the_last_good_keys_and_refresh_picks_up_a_new_set() {
    let keys = Keys::new(&["ec-a", "ec-b"]);
    let jwks = JwksServer::start(keys.jwks(&["ec-a"]));
    let addr = jwks.server.addr;
    let app = http_backend("app");
    let proxy = proxy(&app, &url_provider("dying", &jwks.url(), "300ms")).await;
    let tokens = keys.tokens(&[
        spec("ec-a", "ES256", good_claims()),
        spec("ec-b", "ES256", good_claims()),
    ]);
    support::eventually(Duration::from_secs(5), "the first JWKS fetch", || async {
        jwks.fetches() >= 1
    })
    .await;
    assert_eq!(with_token(&proxy, &tokens[0]).await.status, StatusCode::OK);

    drop(jwks);
    let errors = [("provider", "dying"), ("result", "error")];
    let metric = "remora_jwt_jwks_fetches_total";
    support::eventually(
        Duration::from_secs(10),
        "failed fetches counted",
        || async { proxy.metric(metric, &errors).await >= 2.0 },
    )
    .await;
    assert_eq!(
        with_token(&proxy, &tokens[0]).await.status,
        StatusCode::OK,
        "last good keys"
    );

    // Back on the same port, with ec-b only (after the failures, remora
    // retries within its 1 s backoff, capped at refresh).
    let back = JwksServer::start_on(addr, keys.jwks(&["ec-b"]));
    support::eventually(Duration::from_secs(10), "the new set fetched", || async {
        back.fetches() >= 1
    })
    .await;
    support::eventually(Duration::from_secs(5), "ec-b accepted", || async {
        with_token(&proxy, &tokens[1]).await.status == StatusCode::OK
    })
    .await;
}

/// `jwks.url` over HTTPS, served by nginx: fetched when the server's
/// certificate chains to `ca_file`; with the system's roots instead it is
/// refused (the fetch counted as an error, the token's key unknown).
#[tokio::test]
async fn a_jwks_over_https_is_trusted_through_ca_file_only() {
    let keys = Keys::new(&["ed-tls"]);
    keys.jwks_file(&["ed-tls"]);
    let ca = support::tls::Ca::new("jwks-ca");
    let leaf = ca.leaf_for_ip("127.0.0.1".parse().unwrap(), 7);
    let (cert, key, ca_file) = (
        keys.dir.join("cert.pem"),
        keys.dir.join("key.pem"),
        keys.dir.join("ca.pem"),
    );
    std::fs::write(&cert, &leaf.cert_pem).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let nginx = support::peers::nginx(&format!(
        "server {{ listen 127.0.0.1:PORT ssl; ssl_certificate {}; ssl_certificate_key {};\n\
         location / {{ root {}; }} }}",
        cert.display(),
        key.display(),
        keys.dir.display()
    ));
    let url = format!("https://127.0.0.1:{}/jwks.json", nginx.addr.port());
    let token = keys.token(spec("ed-tls", "EdDSA", good_claims()));
    let app = http_backend("app");

    let trusted = url_provider("https-ca", &url, "1h").replace(
        "refresh: 1h }",
        &format!("refresh: 1h, ca_file: {} }}", ca_file.display()),
    );
    let proxy_trusting = proxy(&app, &trusted).await;
    let reply = with_token(&proxy_trusting, &token).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);

    let untrusting = proxy(&app, &url_provider("https-system", &url, "1h")).await;
    assert_refused(
        &with_token(&untrusting, &token).await,
        "JWKS from an untrusted server",
    );
    let errors = [("provider", "https-system"), ("result", "error")];
    assert!(
        untrusting
            .metric("remora_jwt_jwks_fetches_total", &errors)
            .await
            >= 1.0
    );
    let unknown = [("provider", "https-system"), ("result", "unknown_key")];
    assert_eq!(
        untrusting
            .metric("remora_jwt_validations_total", &unknown)
            .await,
        1.0
    );
}
