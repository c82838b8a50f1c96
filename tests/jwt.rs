//! JWT validation at the inbound listener (`inbound.jwt`), end to end, with
//! keys and tokens made by PyJWT and cryptography (`support::jwt`):
//! RS256, RS512, PS256, ES256, ES384 and EdDSA tokens reach the app with
//! their claims as headers; every kind of bad token (alg none, HS256 signed
//! with the RSA public key, expired beyond the leeway, `nbf`/`iat` ahead,
//! wrong `aud` or `iss`, tampered payload, unknown `kid`, garbage) is a 401
//! with `www-authenticate: Bearer error="invalid_token"` and
//! `x-remora-error: unauthenticated`, counted by reason, and never reaches
//! the app; spoofed claim headers are stripped; per-path rules decide where
//! a token is required; a header or cookie can carry the token; gRPC gets
//! 16 UNAUTHENTICATED; the access log says why; verified claims reach the
//! authorization rules. Keys from a URL: `tests/jwt_keys.rs`.

mod support;

use http::StatusCode;
use serde_json::json;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::Full;
use serde_json::Value;
use support::jwt::*;

use support::config::TestConfig;
use support::{Proxy, http_backend, send};

#[tokio::test]
async fn tokens_of_every_algorithm_pass_with_their_claims_and_every_bad_one_is_a_401() {
    let keys = Keys::new(&["rsa1", "ec1", "ec384a", "ed1", "rsa2"]);
    let jwks = keys.jwks_file(&["rsa1", "ec1", "ec384a", "ed1"]);
    let app = http_backend("app");
    let proxy = proxy(
        &app,
        &provider_yaml("every-alg", &jwks, "    required: true\n"),
    )
    .await;

    let good = keys.tokens(&[
        spec("rsa1", "RS256", good_claims()),
        spec("rsa1", "RS512", good_claims()),
        spec("rsa1", "PS256", good_claims()),
        spec("ec1", "ES256", good_claims()),
        spec("ec384a", "ES384", good_claims()),
        spec("ed1", "EdDSA", good_claims()),
        // Within the 60 s leeway.
        spec(
            "rsa1",
            "RS256",
            with(good_claims(), json!({"exp": "now-30"})),
        ),
        // No kid: every key made for the algorithm is tried.
        json!({ "key": "ec1", "alg": "ES256", "claims": good_claims() }),
    ]);
    for (i, token) in good.iter().enumerate() {
        let reply = with_token(&proxy, token).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "good token {i}: {}",
            reply.body
        );
        let headers = app_headers(&reply);
        assert_eq!(headers["x-user"], json!(["alice"]), "token {i}");
        assert_eq!(headers["x-org"], json!(["o1"]), "token {i}");
        assert!(
            headers.get("authorization").is_none(),
            "the token is not forwarded"
        );
    }

    let bad = [
        (
            json!({ "key": "none", "claims": good_claims() }),
            "algorithm",
            "alg none",
        ),
        (
            json!({ "key": "hs-public:rsa1", "kid": "rsa1", "claims": good_claims() }),
            "algorithm",
            "HS256 signed with the RSA public key",
        ),
        (
            spec(
                "rsa1",
                "RS256",
                with(good_claims(), json!({"exp": "now-120"})),
            ),
            "expired",
            "expired beyond the leeway",
        ),
        (
            spec(
                "ec1",
                "ES256",
                with(good_claims(), json!({"nbf": "now+600"})),
            ),
            "not_yet_valid",
            "nbf in the future",
        ),
        (
            spec(
                "ed1",
                "EdDSA",
                with(good_claims(), json!({"iat": "now+600"})),
            ),
            "issued_in_future",
            "iat in the future",
        ),
        (
            spec("rsa1", "RS256", with(good_claims(), json!({"exp": "soon"}))),
            "malformed",
            "exp not a number",
        ),
        (
            spec(
                "rsa1",
                "RS256",
                with(good_claims(), json!({"aud": "billing"})),
            ),
            "audience",
            "wrong aud",
        ),
        (
            spec("rsa1", "RS256", with(good_claims(), json!({"aud": null}))),
            "audience",
            "no aud",
        ),
        (
            spec(
                "rsa1",
                "RS256",
                with(good_claims(), json!({"iss": "https://evil.test"})),
            ),
            "issuer",
            "wrong iss",
        ),
        (
            json!({ "key": "rsa1", "alg": "RS256", "kid": "rsa1", "claims": good_claims(),
                    "tamper": { "sub": "mallory" } }),
            "bad_signature",
            "tampered payload",
        ),
        (
            json!({ "key": "rsa2", "alg": "RS256", "kid": "rsa1", "claims": good_claims() }),
            "bad_signature",
            "signed by another key under a known kid",
        ),
        (
            spec("rsa2", "RS256", good_claims()),
            "unknown_key",
            "unknown kid",
        ),
        (
            json!({ "key": "ec1", "alg": "ES256", "kid": "rsa1", "claims": good_claims() }),
            "algorithm",
            "ES256 under an RSA key's kid",
        ),
    ];
    let specs: Vec<Value> = bad.iter().map(|(spec, _, _)| spec.clone()).collect();
    let tokens = keys.tokens(&specs);
    let mut expected = std::collections::BTreeMap::<&str, f64>::new();
    for ((_, reason, what), token) in bad.iter().zip(&tokens) {
        let reply = with_token(&proxy, token).await;
        assert_refused(&reply, what);
        let challenge = reply.headers["www-authenticate"].to_str().unwrap();
        assert!(!challenge.contains(token.as_str()) && !reply.body.contains(token.as_str()));
        *expected.entry(reason).or_default() += 1.0;
    }
    for garbage in ["garbage", "a.b.c", "e30.e30.", "Zm9v.YmFy.YmF6"] {
        assert_refused(&with_token(&proxy, garbage).await, garbage);
    }
    *expected.entry("malformed").or_default() += 4.0;

    let missing = get(&proxy, "/headers", &[]).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.headers["x-remora-error"], "unauthenticated");
    assert_eq!(
        missing.headers["www-authenticate"], "Bearer",
        "RFC 6750 §3.1"
    );
    let basic = get(
        &proxy,
        "/headers",
        &[("authorization", "Basic YWxpY2U6eA==")],
    )
    .await;
    assert_eq!(
        basic.status,
        StatusCode::UNAUTHORIZED,
        "Basic is no bearer token"
    );

    assert_eq!(
        app.requests(),
        good.len() as u64,
        "no refused request reached the app"
    );
    let metric = "remora_jwt_validations_total";
    for (reason, count) in expected {
        let labels = [("provider", "every-alg"), ("result", reason)];
        assert_eq!(proxy.metric(metric, &labels).await, count, "{reason}");
    }
    let ok = [("provider", "every-alg"), ("result", "ok")];
    assert_eq!(proxy.metric(metric, &ok).await, good.len() as f64);
}

#[tokio::test]
async fn spoofed_claim_headers_are_stripped_and_rules_decide_where_a_token_is_required() {
    let keys = Keys::new(&["ec1"]);
    let jwks = keys.jwks_file(&["ec1"]);
    let app = http_backend("app");
    let rules = "    required: true\n    rules:\n\
                 \x20     - { prefix: /public, required: false }\n";
    let forward = "        forward: true\n";
    let proxy = proxy(
        &app,
        &format!("{}{rules}", provider_yaml("spoof", &jwks, forward)),
    )
    .await;
    let spoofed = [
        ("x-user", "mallory"),
        ("X-Org", "evil"),
        ("x_user", "mallory"),
    ];

    // No token where none is required: through, without the spoofed claims.
    let reply = get(&proxy, "/public/headers", &spoofed).await;
    assert_eq!(
        reply.status,
        StatusCode::NOT_FOUND,
        "the app answered: {}",
        reply.body
    );
    let reply = get(&proxy, "/public", &spoofed).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    // The rule's prefix does not make /headers public.
    let reply = get(&proxy, "/headers", &spoofed).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    // An invalid token is refused even where none is required.
    let expired = keys.token(spec(
        "ec1",
        "ES256",
        with(good_claims(), json!({"exp": "now-3600"})),
    ));
    let auth = format!("Bearer {expired}");
    let reply = get(&proxy, "/public", &[("authorization", &auth)]).await;
    assert_refused(&reply, "expired token on a public path");

    // A valid token: the verified claims replace the spoofed ones; forwarded.
    let token = keys.token(spec("ec1", "ES256", good_claims()));
    let auth = format!("Bearer {token}");
    let mut headers = spoofed.to_vec();
    headers.push(("authorization", &auth));
    let reply = get(&proxy, "/headers", &headers).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let seen = app_headers(&reply);
    assert_eq!(seen["x-user"], json!(["alice"]));
    assert_eq!(seen["x-org"], json!(["o1"]));
    assert!(
        seen.get("x_user").is_none(),
        "the underscore spelling is dropped: {seen}"
    );
    assert_eq!(seen["authorization"], json!([auth]), "forward: true");

    // `Connection` naming a claim header cannot make remora drop it.
    let reply = get(
        &proxy,
        "/headers",
        &[("authorization", &auth), ("connection", "x-user")],
    )
    .await;
    assert_eq!(app_headers(&reply)["x-user"], json!(["alice"]));
}

/// Strips the spoofed headers even with no token anywhere: a public app path
/// through `/headers` (no rule requires a token).
#[tokio::test]
async fn without_a_token_the_request_passes_unauthenticated_and_without_claim_headers() {
    let keys = Keys::new(&["ed1"]);
    let jwks = keys.jwks_file(&["ed1"]);
    let app = http_backend("app");
    let proxy = proxy(&app, &provider_yaml("optional", &jwks, "")).await;
    let reply = get(
        &proxy,
        "/headers",
        &[("x-user", "mallory"), ("x-org", "evil")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = app_headers(&reply);
    assert!(
        seen.get("x-user").is_none() && seen.get("x-org").is_none(),
        "{seen}"
    );
}

#[tokio::test]
async fn a_header_or_cookie_can_carry_the_token_and_hs256_needs_the_secret() {
    let keys = Keys::new(&["rsa1"]);
    let jwks = keys.jwks_file(&["rsa1"]);
    let secret = "0123456789abcdef0123456789abcdef-shared";
    let app = http_backend("app");
    let jwt = format!(
        "    required: true\n\
         \x20   providers:\n\
         \x20     - name: cookie\n\
         \x20       issuer: {ISSUER}\n\
         \x20       jwks: {{ file: {} }}\n\
         \x20       from: {{ cookie: session }}\n\
         \x20       claims_to_headers: {{ sub: x-user }}\n\
         \x20     - name: shared\n\
         \x20       issuer: https://hs.test\n\
         \x20       secret: {secret}\n\
         \x20       from: {{ header: x-token }}\n\
         \x20       claims_to_headers: {{ sub: x-user }}\n",
        jwks.display()
    );
    let proxy = proxy(&app, &jwt).await;
    let hs_claims = json!({ "iss": "https://hs.test", "sub": "bob", "exp": "now+60" });
    let tokens = keys.tokens(&[
        spec("rsa1", "RS256", good_claims()),
        json!({ "key": format!("secret:{secret}"), "alg": "HS256", "claims": hs_claims }),
        json!({ "key": "secret:not-the-secret-but-32-bytes-long", "alg": "HS256", "claims": hs_claims }),
        spec("rsa1", "RS256", with(hs_claims.clone(), json!({}))),
    ]);

    let cookie = format!("theme=dark; session={}", tokens[0]);
    let reply = get(&proxy, "/headers", &[("cookie", &cookie)]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let seen = app_headers(&reply);
    assert_eq!(seen["x-user"], json!(["alice"]));
    assert_eq!(
        seen["cookie"],
        json!(["theme=dark"]),
        "the token cookie is taken out"
    );

    let reply = get(&proxy, "/headers", &[("x-token", &tokens[1])]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(app_headers(&reply)["x-user"], json!(["bob"]));
    assert_refused(
        &get(&proxy, "/headers", &[("x-token", &tokens[2])]).await,
        "wrong secret",
    );
    assert_refused(
        &get(&proxy, "/headers", &[("x-token", &tokens[3])]).await,
        "RS256 to the secret provider",
    );
    // In the Authorization header, where neither provider looks: no token.
    let auth = format!("Bearer {}", tokens[1]);
    let reply = get(&proxy, "/headers", &[("authorization", &auth)]).await;
    assert_eq!(reply.headers["www-authenticate"], "Bearer");
    let metric = "remora_jwt_validations_total";
    assert_eq!(
        proxy
            .metric(
                metric,
                &[("provider", "shared"), ("result", "bad_signature")]
            )
            .await,
        1.0
    );
    assert_eq!(
        proxy
            .metric(metric, &[("provider", "shared"), ("result", "algorithm")])
            .await,
        1.0
    );
}

/// Two providers reading `Authorization`: the token's `iss` picks the one
/// that verifies it; an issuer neither has is refused as `issuer`.
#[tokio::test]
async fn the_issuer_picks_the_provider_among_those_reading_the_same_header() {
    let keys = Keys::new(&["rsa-a", "ec-b"]);
    std::fs::write(keys.dir.join("a.json"), keys.jwks(&["rsa-a"])).unwrap();
    std::fs::write(keys.dir.join("b.json"), keys.jwks(&["ec-b"])).unwrap();
    let app = http_backend("app");
    let jwt = format!(
        "    providers:\n\
         \x20     - {{ name: issuer-a, issuer: https://a.test, jwks: {{ file: {} }}, claims_to_headers: {{ iss: x-issuer }} }}\n\
         \x20     - {{ name: issuer-b, issuer: https://b.test, jwks: {{ file: {} }}, claims_to_headers: {{ iss: x-issuer }} }}\n",
        keys.dir.join("a.json").display(),
        keys.dir.join("b.json").display()
    );
    let proxy = proxy(&app, &jwt).await;
    let tokens = keys.tokens(&[
        spec(
            "rsa-a",
            "RS256",
            json!({ "iss": "https://a.test", "exp": "now+60" }),
        ),
        spec(
            "ec-b",
            "ES256",
            json!({ "iss": "https://b.test", "exp": "now+60" }),
        ),
        spec(
            "ec-b",
            "ES256",
            json!({ "iss": "https://c.test", "exp": "now+60" }),
        ),
        // b's key under a's issuer: a verifies it, and its keys do not have it.
        spec(
            "ec-b",
            "ES256",
            json!({ "iss": "https://a.test", "exp": "now+60" }),
        ),
    ]);
    for (token, issuer) in tokens.iter().zip(["https://a.test", "https://b.test"]) {
        let reply = with_token(&proxy, token).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(app_headers(&reply)["x-issuer"], json!([issuer]));
    }
    assert_refused(
        &with_token(&proxy, &tokens[2]).await,
        "no provider's issuer",
    );
    assert_refused(
        &with_token(&proxy, &tokens[3]).await,
        "another issuer's key",
    );
    let metric = "remora_jwt_validations_total";
    for (provider, result) in [
        ("issuer-a", "ok"),
        ("issuer-b", "ok"),
        ("issuer-a", "issuer"),
        ("issuer-a", "unknown_key"),
    ] {
        let labels = [("provider", provider), ("result", result)];
        assert_eq!(
            proxy.metric(metric, &labels).await,
            1.0,
            "{provider} {result}"
        );
    }
}

/// gRPC through a tonic client: no token where one is required, or a bad
/// one, is status 16 UNAUTHENTICATED (trailers-only, HTTP 200), the app
/// never called; a valid token in the `authorization` metadata goes through.
#[tokio::test]
async fn grpc_calls_without_a_valid_token_fail_with_unauthenticated() {
    use support::grpc::{UNARY, grpc_call_with};
    use tonic::Code;

    let keys = Keys::new(&["ec-grpc"]);
    let jwks = keys.jwks_file(&["ec-grpc"]);
    let echo = support::grpc_echo();
    let yaml = format!(
        "service: {{ name: rpc, port: {}, protocol: grpc }}\n\
         inbound:\n  listen: 127.0.0.1:0\n  jwt:\n{}    required: true\n\
         admin: {{ listen: 127.0.0.1:0 }}\nlogging: {{ access_log: false }}\n",
        echo.addr.port(),
        provider_yaml("grpc", &jwks, "")
    );
    let proxy = Proxy::start(&yaml).await;
    let tokens = keys.tokens(&[
        spec("ec-grpc", "ES256", good_claims()),
        spec(
            "ec-grpc",
            "ES256",
            with(good_claims(), json!({"aud": "billing"})),
        ),
    ]);

    let missing = grpc_call_with(proxy.inbound(), UNARY, "hi", &[]).await;
    let status = missing.expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let bad = format!("Bearer {}", tokens[1]);
    let status = grpc_call_with(proxy.inbound(), UNARY, "hi", &[("authorization", &bad)])
        .await
        .expect_err("wrong audience");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        !status.message().contains(&tokens[1]),
        "{}",
        status.message()
    );

    let good = format!("Bearer {}", tokens[0]);
    let (echoed, _) = grpc_call_with(proxy.inbound(), UNARY, "hi", &[("authorization", &good)])
        .await
        .expect("a valid token");
    assert_eq!(echoed, "hi");
    let audience = [("provider", "grpc"), ("result", "audience")];
    assert_eq!(
        proxy
            .metric("remora_jwt_validations_total", &audience)
            .await,
        1.0
    );
}

/// The access log of the real binary says why a token was refused
/// (`error_detail`), and never holds the token.
#[tokio::test]
async fn the_access_log_says_why_without_the_token() {
    let keys = Keys::new(&["rsa-log"]);
    let jwks = keys.jwks_file(&["rsa-log"]);
    let app = http_backend("app");
    let yaml = format!(
        "service: {{ name: app, port: {} }}\n\
         inbound:\n  listen: 127.0.0.1:0\n  jwt:\n{}\
         admin: {{ listen: 127.0.0.1:0 }}\n",
        app.addr.port(),
        provider_yaml("logged", &jwks, "")
    );
    let mut remora = support::ProxyProcess::start(&yaml, 1);
    let expired = keys.token(spec(
        "rsa-log",
        "RS256",
        with(good_claims(), json!({"exp": "now-600"})),
    ));
    let request = Request::get(format!("http://{}/", remora.listener("inbound")))
        .header("authorization", format!("Bearer {expired}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = send(Version::HTTP_11, request).await.unwrap();
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let line = tokio::task::spawn_blocking(move || remora.wait_for_log("\"message\":\"request\""))
        .await
        .unwrap();
    let logged: Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(logged["error"], "unauthenticated", "{line}");
    assert_eq!(logged["error_detail"], "expired", "{line}");
    let signature = expired.rsplit('.').next().unwrap();
    assert!(!line.contains(signature), "the token is in the log: {line}");
}

/// `inbound.jwt` hands the verified claims to `inbound.authorization`
/// (`VerifiedClaims`): a rule on `provider`, `sub`, `scope` and a nested
/// claim lets alice in; bob's valid token is 403 `forbidden`, a request
/// without a token matches no `jwt` rule (403), and an invalid token never
/// reaches the rules (401).
#[tokio::test]
async fn verified_claims_reach_the_authorization_rules() {
    let keys = Keys::new(&["ed-authz"]);
    let jwks = keys.jwks_file(&["ed-authz"]);
    let app = http_backend("app");
    let rules = "  authorization:\n\
                 \x20   default: deny\n\
                 \x20   rules:\n\
                 \x20     - name: alice-reads\n\
                 \x20       action: allow\n\
                 \x20       jwt: { provider: authz, sub: alice, scope: reports.read, claims: [{ name: [org, id], value: o1 }] }\n\
                 \x20       match: { path: { exact: /headers }, methods: [GET] }\n";
    let yaml = TestConfig::inbound_to("app", app.addr).yaml().replace(
        "inbound: { listen: 127.0.0.1:0 }\n",
        &format!(
            "inbound:\n  listen: 127.0.0.1:0\n  jwt:\n{}{rules}",
            provider_yaml("authz", &jwks, "")
        ),
    );
    let proxy = Proxy::start(&yaml).await;
    let alice = with(
        good_claims(),
        json!({ "scope": "reports.read reports.write" }),
    );
    let tokens = keys.tokens(&[
        spec("ed-authz", "EdDSA", alice.clone()),
        spec(
            "ed-authz",
            "EdDSA",
            with(alice.clone(), json!({ "sub": "bob" })),
        ),
        spec(
            "ed-authz",
            "EdDSA",
            with(alice, json!({ "exp": "now-3600" })),
        ),
    ]);

    let reply = with_token(&proxy, &tokens[0]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(app_headers(&reply)["x-user"], json!(["alice"]));
    let url = format!("http://{}/headers", proxy.inbound());
    let bearer = format!("Bearer {}", tokens[0]);
    let post = support::client::call("POST", &url, &[("authorization", &bearer)]).await;
    assert_eq!(
        post.unwrap().status,
        StatusCode::FORBIDDEN,
        "alice may GET only"
    );
    let bob = with_token(&proxy, &tokens[1]).await;
    assert_eq!(bob.status, StatusCode::FORBIDDEN);
    assert_eq!(bob.headers["x-remora-error"], "forbidden");
    let anonymous = get(&proxy, "/headers", &[]).await;
    assert_eq!(
        anonymous.status,
        StatusCode::FORBIDDEN,
        "no token matches no jwt rule"
    );
    assert_refused(
        &with_token(&proxy, &tokens[2]).await,
        "expired, before the rules",
    );
    assert_eq!(app.requests(), 1);
}

/// An app behind three providers, each reading another place: `bearer`
/// (`Authorization`), `shared` (HS256 in `x-token`) and `cookie` (the
/// `session` cookie, forwarded); with tokens for them.
struct ThreePlaces {
    _keys: Keys,
    app: support::Backend,
    proxy: Proxy,
    /// Valid for `bearer` and `cookie`; expired; forged (tampered payload).
    good: String,
    expired: String,
    forged: String,
    /// Valid for `shared`; signed with another secret.
    hs_good: String,
    hs_forged: String,
}

impl ThreePlaces {
    async fn start() -> ThreePlaces {
        let keys = Keys::new(&["rsa-all"]);
        let jwks = keys.jwks_file(&["rsa-all"]);
        let secret = "0123456789abcdef0123456789abcdef-shared";
        let app = http_backend("app");
        let jwt = format!(
            "    providers:\n\
             \x20     - name: bearer\n\
             \x20       issuer: {ISSUER}\n\
             \x20       jwks: {{ file: {jwks} }}\n\
             \x20       claims_to_headers: {{ sub: x-user }}\n\
             \x20     - name: shared\n\
             \x20       issuer: https://hs.test\n\
             \x20       secret: {secret}\n\
             \x20       from: {{ header: x-token }}\n\
             \x20       claims_to_headers: {{ sub: x-hs-user }}\n\
             \x20     - name: cookie\n\
             \x20       issuer: {ISSUER}\n\
             \x20       jwks: {{ file: {jwks} }}\n\
             \x20       from: {{ cookie: session }}\n\
             \x20       forward: true\n\
             \x20       claims_to_headers: {{ sub: x-ck-user }}\n",
            jwks = jwks.display()
        );
        let proxy = proxy(&app, &jwt).await;
        let hs_claims = json!({ "iss": "https://hs.test", "sub": "bob", "exp": "now+60" });
        let mut tokens = keys
            .tokens(&[
                spec("rsa-all", "RS256", good_claims()),
                spec(
                    "rsa-all",
                    "RS256",
                    with(good_claims(), json!({"exp": "now-3600"})),
                ),
                json!({ "key": "rsa-all", "alg": "RS256", "kid": "rsa-all", "claims": good_claims(),
                        "tamper": { "sub": "mallory" } }),
                json!({ "key": format!("secret:{secret}"), "alg": "HS256", "claims": hs_claims }),
                json!({ "key": "secret:not-the-secret-but-32-bytes-long", "alg": "HS256", "claims": hs_claims }),
            ])
            .into_iter();
        let mut next = || tokens.next().unwrap();
        ThreePlaces {
            good: next(),
            expired: next(),
            forged: next(),
            hs_good: next(),
            hs_forged: next(),
            _keys: keys,
            app,
            proxy,
        }
    }

    async fn get(&self, headers: &[(&str, &str)]) -> support::Reply {
        get(&self.proxy, "/headers", headers).await
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `Authorization` is a singleton field (RFC 9110 §11.6.2), and so is a
/// provider's token header: a second one is refused as `duplicate`,
/// whatever either says, and never reaches the app.
#[tokio::test]
async fn a_second_authorization_or_token_header_field_is_refused() {
    let t = ThreePlaces::start().await;
    let basic = "Basic YWxpY2U6eA==";
    for (first, second, what) in [
        (
            basic.to_owned(),
            bearer(&t.expired),
            "Basic, then an expired Bearer",
        ),
        (
            basic.to_owned(),
            bearer(&t.good),
            "Basic, then a valid Bearer",
        ),
        (
            bearer(&t.good),
            bearer(&t.good),
            "the same valid Bearer twice",
        ),
    ] {
        let reply = t
            .get(&[("authorization", &first), ("authorization", &second)])
            .await;
        assert_refused(&reply, what);
        let challenge = reply.headers["www-authenticate"].to_str().unwrap();
        assert!(challenge.contains("more than one"), "{what}: {challenge}");
    }
    let reply = t
        .get(&[("x-token", &t.hs_good), ("x-token", &t.hs_forged)])
        .await;
    assert_refused(&reply, "two x-token fields");
    assert_eq!(t.app.requests(), 0);
    let metric = "remora_jwt_validations_total";
    for (provider, count) in [("bearer", 3.0), ("shared", 1.0)] {
        let labels = [("provider", provider), ("result", "duplicate")];
        assert_eq!(t.proxy.metric(metric, &labels).await, count, "{provider}");
    }
}

/// A token header's underscore spelling, which CGI/WSGI apps read as the
/// header itself, is taken out like a claim header's.
#[tokio::test]
async fn a_token_header_in_underscore_spelling_never_reaches_the_app() {
    let t = ThreePlaces::start().await;
    let reply = t
        .get(&[("x_token", &t.hs_forged), ("X_Token", &t.hs_forged)])
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let seen = app_headers(&reply);
    assert!(seen.get("x_token").is_none(), "{seen}");
    let reply = t
        .get(&[("x-token", &t.hs_good), ("x_token", &t.hs_forged)])
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let seen = app_headers(&reply);
    assert_eq!(seen["x-hs-user"], json!(["bob"]));
    assert!(
        seen.get("x_token").is_none() && seen.get("x-token").is_none(),
        "{seen}"
    );
}

/// A token in each of two providers' places: both are verified, either
/// invalid is a 401, and both valid hand the app both providers' claims.
#[tokio::test]
async fn tokens_in_two_providers_places_are_both_verified() {
    let t = ThreePlaces::start().await;
    let reply = t
        .get(&[
            ("authorization", &bearer(&t.good)),
            ("x-token", &t.hs_forged),
        ])
        .await;
    assert_refused(&reply, "a valid Bearer and a forged x-token");
    let cookie = format!("session={}", t.forged);
    let reply = t.get(&[("x-token", &t.hs_good), ("cookie", &cookie)]).await;
    assert_refused(&reply, "a valid x-token and a forged cookie");
    let reply = t
        .get(&[("authorization", &bearer(&t.good)), ("x-token", &t.hs_good)])
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let seen = app_headers(&reply);
    assert_eq!(seen["x-user"], json!(["alice"]));
    assert_eq!(seen["x-hs-user"], json!(["bob"]));
    assert!(
        seen.get("authorization").is_none() && seen.get("x-token").is_none(),
        "both tokens are taken out: {seen}"
    );
    assert_eq!(t.app.requests(), 1);
}

/// Two cookies of the provider's name are ambiguous (applications differ
/// on which they read); a space before `=` still names the cookie.
#[tokio::test]
async fn two_token_cookies_are_refused_and_cookie_names_are_trimmed() {
    let t = ThreePlaces::start().await;
    let (good, forged) = (&t.good, &t.forged);
    for cookie in [
        format!("session={good}; session={forged}"),
        format!("session={good}; theme=dark; session={good}"),
    ] {
        assert_refused(&t.get(&[("cookie", &cookie)]).await, &cookie);
    }
    let (first, second) = (format!("session={good}"), format!("session={forged}"));
    let reply = t.get(&[("cookie", &first), ("cookie", &second)]).await;
    assert_refused(&reply, "session in two cookie fields");
    let reply = t.get(&[("cookie", &format!("session ={forged}"))]).await;
    assert_refused(&reply, "session =forged");
    // Python's http.cookies also splits at whitespace: it reads the last
    // `session` here, remora the first.
    // So does a flag before it (`secure session=…`), and a name that is not
    // one to a strict parser (`$x session=…`).
    for hidden in [
        format!("session={good}; x=1 session={forged}"),
        format!("session={good}; secure session={forged}"),
        format!("$x session={forged}"),
    ] {
        assert_refused(&t.get(&[("cookie", &hidden)]).await, &hidden);
    }
    let reply = t
        .get(&[("cookie", &format!("theme=dark; session = {good}"))])
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(app_headers(&reply)["x-ck-user"], json!(["alice"]));
    assert_eq!(t.app.requests(), 1);
}

/// A token that is not ASCII is there, and malformed; another cookie's
/// non-ASCII value is no token.
#[tokio::test]
async fn a_token_that_is_not_ascii_is_malformed() {
    let t = ThreePlaces::start().await;
    for (name, value) in [
        ("authorization", "Bearer é"),
        ("x-token", "é"),
        ("cookie", "session=é"),
    ] {
        assert_refused(&t.get(&[(name, value)]).await, value);
    }
    // A tab after the scheme still makes a Bearer token (applications split
    // at any whitespace): a forged one is refused, not passed on.
    let tabbed = format!("Bearer\t{}", t.forged);
    assert_refused(
        &t.get(&[("authorization", &tabbed)]).await,
        "Bearer<TAB>forged",
    );
    let reply = t.get(&[("cookie", "theme=é")]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let labels = [("provider", "bearer"), ("result", "malformed")];
    let metric = "remora_jwt_validations_total";
    assert_eq!(t.proxy.metric(metric, &labels).await, 1.0);
}
