//! `request_token` on an upstream and a route: a token from a file rides
//! outbound requests and follows the file's rotation, checked by a second
//! remora's `inbound.jwt` in front of the app.

mod support;

use std::time::Duration;

use http::StatusCode;
use serde_json::json;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::Full;
use support::jwt::*;

use support::config::TestConfig;
use support::{Proxy, http_backend, send};

/// `request_token`: remora A's outbound route attaches a PyJWT-made token
/// from a file to the requests of an application that sends none; remora
/// B's `inbound.jwt` verifies it and hands its claims to the app. The file
/// is rewritten (a rotated token) and the next requests carry the new one;
/// a token the application sent itself is kept (no `overwrite`); another
/// route, without a token of its own, gets the upstream's (`x-api-key`).
#[tokio::test]
async fn an_outbound_route_attaches_the_token_of_a_file_and_follows_its_rotation() {
    let keys = Keys::new(&["ec-sa"]);
    let jwks = keys.jwks_file(&["ec-sa"]);
    let tokens = keys.tokens(&[
        spec("ec-sa", "ES256", good_claims()),
        spec(
            "ec-sa",
            "ES256",
            with(good_claims(), json!({"sub": "robot-2"})),
        ),
        spec(
            "ec-sa",
            "ES256",
            with(good_claims(), json!({"sub": "app-own"})),
        ),
    ]);
    let app = http_backend("app");
    let b = proxy(&app, &provider_yaml("service-account", &jwks, "")).await;

    let token_file = keys.dir.join("sa-token");
    let key_file = keys.dir.join("api-key");
    std::fs::write(&token_file, format!("{}\n", tokens[0])).unwrap();
    std::fs::write(&key_file, "key-1").unwrap();
    let a = TestConfig::new().service("{ name: caller }").upstream(
        support::config::Upstream::to("orders", [b.inbound()]).lines(&format!(
            "    request_token: {{ file: {}, header: x-api-key }}\n\
             \x20   routes:\n\
             \x20     - name: api\n\
             \x20       match: {{ headers: [{{ name: x-route, exact: api }}] }}\n\
             \x20       request_token: {{ file: {}, reload_interval: 100ms }}\n",
            key_file.display(),
            token_file.display()
        )),
    );
    let a = Proxy::start(&a.yaml()).await;
    let through_a = |headers: Vec<(&'static str, String)>| {
        let url = format!("http://{}/headers", a.upstream("orders"));
        async move {
            let mut request = Request::get(url);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            send(
                Version::HTTP_11,
                request.body(Full::new(Bytes::new())).unwrap(),
            )
            .await
            .expect("proxy answers")
        }
    };

    let reply = through_a(vec![("x-route", "api".into())]).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(app_headers(&reply)["x-user"], json!(["alice"]));

    std::fs::write(&token_file, &tokens[1]).unwrap();
    support::eventually(Duration::from_secs(5), "the rotated token used", || async {
        let reply = through_a(vec![("x-route", "api".into())]).await;
        reply.status == StatusCode::OK && app_headers(&reply)["x-user"] == json!(["robot-2"])
    })
    .await;

    let own = format!("Bearer {}", tokens[2]);
    let reply = through_a(vec![("x-route", "api".into()), ("authorization", own)]).await;
    assert_eq!(
        app_headers(&reply)["x-user"],
        json!(["app-own"]),
        "no overwrite"
    );

    // The fallback route: the upstream's token, in x-api-key, and no bearer token.
    let reply = through_a(vec![]).await;
    assert_eq!(reply.status, StatusCode::OK);
    let seen = app_headers(&reply);
    assert_eq!(seen["x-api-key"], json!(["key-1"]));
    assert!(
        seen.get("authorization").is_none() && seen.get("x-user").is_none(),
        "{seen}"
    );
}
