//! Consul L7 intentions, per request: the documented samples
//! (`connect-intentions-match-l7-response.json`) and JWT requirements.

use std::time::Duration;

use serde_json::{Value, json};

use super::tests::{own, peer};
use super::*;
use crate::consul::connect::IntentionsAnswer;
use crate::consul::documented_body;

fn authorizer(default: AuthorizationAction, entries: Vec<Value>) -> Authorizer {
    let answer = IntentionsAnswer::read(entries);
    assert!(answer.unreadable.is_empty(), "{:?}", answer.unreadable);
    let intentions = Arc::new(Intentions::default());
    intentions.set(answer.intentions);
    let config = AuthorizationConfig {
        default,
        intentions: true,
        ..AuthorizationConfig::default()
    };
    let tls = MeshTls::new(Duration::from_secs(1));
    Authorizer::new(&config, "inbound", Some(intentions), tls)
}

/// The documented sample's entries for `destination`.
fn documented(destination: &str) -> Vec<Value> {
    let mut answer: Value = serde_json::from_str(&documented_body(
        "connect-intentions-match-l7-response.json",
    ))
    .unwrap();
    serde_json::from_value(answer[destination].take()).unwrap()
}

fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(()).unwrap()
}

/// Whether `caller` may send `request`, and what decided.
fn decide(authz: &Authorizer, caller: &str, request: &Request<()>) -> (bool, &'static str) {
    authz.decide(Some(&peer(caller)), Some(&own()), Some(request))
}

const DENIED_BY_DEFAULT: (bool, &str) = (false, "default");
const INTENTION_ALLOWS: (bool, &str) = (true, "intention");
const INTENTION_DENIES: (bool, &str) = (false, "intention");

#[test]
fn the_first_matching_permission_decides_and_no_match_gets_the_default() {
    let billing = authorizer(AuthorizationAction::Deny, documented("billing"));
    let call = |method: &str| request("POST", &format!("/mycompany.BillingService/{method}"), &[]);
    assert_eq!(
        decide(&billing, "frontend-web", &call("IssueRefund")),
        INTENTION_DENIES
    );
    assert_eq!(
        decide(&billing, "frontend-web", &call("Charge")),
        INTENTION_ALLOWS
    );
    assert_eq!(
        decide(&billing, "support-portal", &call("IssueRefund")),
        INTENTION_ALLOWS
    );
    let elsewhere = request("GET", "/health", &[]);
    assert_eq!(
        decide(&billing, "frontend-web", &elsewhere),
        DENIED_BY_DEFAULT
    );
    assert_eq!(decide(&billing, "cart", &call("Charge")), DENIED_BY_DEFAULT);
    let open = authorizer(AuthorizationAction::Allow, documented("billing"));
    assert_eq!(decide(&open, "frontend-web", &elsewhere), (true, "default"));
    assert_eq!(
        decide(&open, "frontend-web", &call("IssueRefund")),
        INTENTION_DENIES
    );
}

#[test]
fn rest_access_and_l4_next_to_l7() {
    let api = authorizer(AuthorizationAction::Deny, documented("api"));
    let cases = [
        ("admin-dashboard", "GET", "/v2/users", INTENTION_ALLOWS),
        ("admin-dashboard", "DELETE", "/v2", INTENTION_ALLOWS),
        // Consul's PathPrefix is a string prefix (Envoy's `prefix`).
        ("admin-dashboard", "GET", "/v2beta", INTENTION_ALLOWS),
        ("admin-dashboard", "PATCH", "/v2/users", DENIED_BY_DEFAULT),
        ("admin-dashboard", "GET", "/v1/users", DENIED_BY_DEFAULT),
        ("report-generator", "GET", "/v2/widgets/7", INTENTION_ALLOWS),
        ("report-generator", "POST", "/v2/widgets", DENIED_BY_DEFAULT),
        ("report-generator", "GET", "/v2/users", DENIED_BY_DEFAULT),
        ("hackathon-project", "GET", "/v2/users", INTENTION_DENIES),
        ("web", "PATCH", "/anything", INTENTION_ALLOWS),
        (
            "nightly-reconciler",
            "POST",
            "/v1/reconcile-data",
            INTENTION_ALLOWS,
        ),
        (
            "nightly-reconciler",
            "GET",
            "/v1/reconcile-data",
            DENIED_BY_DEFAULT,
        ),
        (
            "nightly-reconciler",
            "POST",
            "/v1/reconcile-data/x",
            DENIED_BY_DEFAULT,
        ),
        // No fall-through: the exact `ops` intention applies, not the `*` allow after it.
        ("ops", "GET", "/anything", DENIED_BY_DEFAULT),
        ("cart", "GET", "/anything", INTENTION_ALLOWS),
    ];
    for (caller, method, path, expected) in cases {
        assert_eq!(
            decide(&api, caller, &request(method, path, &[])),
            expected,
            "{caller} {method} {path}"
        );
    }
    // A TCP handshake has no request: an L7 intention denies, an L4 one decides.
    let connection =
        |caller: &str| api.decide(Some(&peer(caller)), Some(&own()), None::<&Request<()>>);
    assert_eq!(connection("admin-dashboard"), INTENTION_DENIES);
    assert_eq!(connection("web"), INTENTION_ALLOWS);
}

#[test]
fn header_matchers_present_exact_prefix_suffix_regex_and_invert() {
    let api = authorizer(AuthorizationAction::Deny, documented("api"));
    let all = [
        ("x-debug", ""),
        ("x-team", "sre"),
        ("x-ticket", "OPS-12"),
        ("x-host", "db.internal"),
        ("x-trace", "0af7651e"),
    ];
    let ops = |headers: &[(&str, &str)]| decide(&api, "ops", &request("GET", "/ops/x", headers));
    assert_eq!(ops(&all), INTENTION_ALLOWS);
    assert_eq!(
        ops(&[&all[..], &[("x-canary", "no")]].concat()),
        INTENTION_ALLOWS
    );
    assert_eq!(
        ops(&[&all[..], &[("x-canary", "yes")]].concat()),
        DENIED_BY_DEFAULT,
        "inverted regex"
    );
    for (i, wrong) in ["", "ops", "TICKET-1", "db.internal.evil", "0af7651e0"]
        .into_iter()
        .enumerate()
    {
        let mut headers = all.to_vec();
        if i == 0 {
            headers.remove(0);
        } else {
            headers[i].1 = wrong;
        }
        assert_eq!(ops(&headers), DENIED_BY_DEFAULT, "{headers:?}");
    }
}

fn with_claims(mut request: Request<()>, provider: &str, claims: Value) -> Request<()> {
    let Value::Object(claims) = claims else {
        panic!("claims are an object")
    };
    request.extensions_mut().insert(VerifiedClaims {
        provider: provider.into(),
        claims: Arc::new(claims),
    });
    request
}

#[test]
fn jwt_requirements_of_intentions_and_permissions() {
    let jwt = json!({ "Providers": [
        { "Name": "okta", "VerifyClaims": [{ "Path": ["perms", "role"], "Value": "admin" }] },
        { "Name": "auth0" }
    ] });
    let authz = authorizer(
        AuthorizationAction::Deny,
        vec![
            json!({ "SourceNS": "default", "SourceName": "web", "Action": "allow", "JWT": jwt }),
            json!({ "SourceNS": "default", "SourceName": "ops", "Permissions": [
                { "Action": "allow", "HTTP": { "PathPrefix": "/admin" },
                  "JWT": { "Providers": [{ "Name": "okta", "VerifyClaims": [
                      { "Path": ["perms", "role"], "Value": "admin" }] }] } },
                { "Action": "allow", "HTTP": { "PathPrefix": "/public" } }
            ] }),
            json!({ "SourceNS": "default", "SourceName": "*", "Action": "allow" }),
        ],
    );
    let admin = json!({ "perms": { "role": "admin" } });
    let viewer = json!({ "perms": { "role": "viewer" } });
    let get = |path: &str| request("GET", path, &[]);
    let web = |request: &Request<()>| decide(&authz, "web", request);
    assert_eq!(
        web(&with_claims(get("/"), "okta", admin.clone())),
        INTENTION_ALLOWS
    );
    assert_eq!(
        web(&with_claims(get("/"), "auth0", json!({}))),
        INTENTION_ALLOWS
    );
    assert_eq!(
        web(&with_claims(get("/"), "okta", viewer.clone())),
        DENIED_BY_DEFAULT
    );
    assert_eq!(
        web(&with_claims(get("/"), "google", admin.clone())),
        DENIED_BY_DEFAULT
    );
    assert_eq!(
        web(&get("/")),
        DENIED_BY_DEFAULT,
        "no token: not the `*` intention either"
    );
    let ops = |request: &Request<()>| decide(&authz, "ops", request);
    assert_eq!(
        ops(&with_claims(get("/admin/x"), "okta", admin)),
        INTENTION_ALLOWS
    );
    assert_eq!(
        ops(&with_claims(get("/admin/x"), "okta", viewer)),
        DENIED_BY_DEFAULT
    );
    assert_eq!(ops(&get("/public/x")), INTENTION_ALLOWS);
    let connection = authz.decide(Some(&peer("web")), Some(&own()), None::<&Request<()>>);
    assert_eq!(
        connection, INTENTION_DENIES,
        "a JWT requirement at a TCP handshake"
    );
}
