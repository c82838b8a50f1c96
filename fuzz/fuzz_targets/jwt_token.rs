//! Arbitrary tokens through the JWT layer (`middleware::jwt`): from the
//! `Authorization` header, a named header and a cookie, against a provider
//! with a shared secret and one with a JWKS file (RSA, EC and Ed25519 keys).
//! The layer answers 401 or lets the request through, never panics; and
//! whatever it lets through carries no claim header unless a token was
//! verified (then `VerifiedClaims` is set).
#![no_main]

use std::sync::OnceLock;

use http::{HeaderValue, Request, Response};
use libfuzzer_sys::fuzz_target;
use remora::body::ResponseBody;
use remora::config::JwtConfig;
use remora::context::VerifiedClaims;
use remora::error::ProxyError;
use remora::middleware::jwt::JwtLayer;
use tokio::runtime::Runtime;
use tower::{Layer, ServiceExt};

/// A JWKS with one key of each kind (public keys from RFC 7515 / 8037 examples).
const JWKS: &str = r#"{"keys":[
 {"kty":"RSA","kid":"rsa","n":"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ","e":"AQAB"},
 {"kty":"EC","kid":"ec","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
 {"kty":"OKP","kid":"ed","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;

struct Harness {
    runtime: Runtime,
    layer: JwtLayer,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let jwks = std::env::temp_dir().join(format!("remora-fuzz-jwks-{}.json", std::process::id()));
        std::fs::write(&jwks, JWKS).expect("write the JWKS");
        let yaml = format!(
            "providers:\n\
             \x20 - {{ name: keys, issuer: https://keys, audiences: [api], jwks: {{ file: {} }}, \
             claims_to_headers: {{ sub: x-user, org.id: x-org }} }}\n\
             \x20 - {{ name: shared, issuer: https://shared, secret: 0123456789abcdef0123456789abcdef, \
             from: {{ header: x-token }}, claims_to_headers: {{ sub: x-user }} }}\n\
             \x20 - {{ name: cookie, issuer: https://cookie, jwks: {{ file: {} }}, \
             from: {{ cookie: session }}, claims_to_headers: {{ email: x-email }} }}\n",
            jwks.display(),
            jwks.display()
        );
        let config = jwt_config(&yaml);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let layer = runtime.block_on(async { JwtLayer::new(&config) });
        Harness { runtime, layer }
    })
}

/// `inbound.jwt` read from `jwt` by remora's own config parser (with its checks).
fn jwt_config(jwt: &str) -> JwtConfig {
    let indented: String = jwt.lines().map(|line| format!("    {line}\n")).collect();
    let text = format!("service: {{ name: fuzz, port: 8080 }}\ninbound:\n  jwt:\n{indented}");
    let config = remora::config::parse(&text, "fuzz.yaml").unwrap_or_else(|e| panic!("{e}"));
    config
        .inbound
        .and_then(|inbound| inbound.jwt)
        .expect("inbound.jwt")
}

fuzz_target!(|data: &[u8]| {
    let harness = harness();
    // Input: the token, then (after 0xff) the header it goes in: 0 Authorization
    // with `Bearer `, 1 `x-token`, 2 the `session` cookie, 3 all three.
    let (token, place) = match data.iter().rposition(|b| *b == 0xff) {
        Some(at) => (&data[..at], data.get(at + 1).copied().unwrap_or(0) % 4),
        None => (data, 0),
    };
    let token = String::from_utf8_lossy(token);
    let mut request = Request::get("/").body(()).unwrap();
    let headers = request.headers_mut();
    for (name, value) in [
        ("x-user", "spoofed".to_owned()),
        ("x_org", "spoofed".to_owned()),
        ("x-email", "spoofed".to_owned()),
    ] {
        headers.insert(name, HeaderValue::from_str(&value).unwrap());
    }
    let values = [
        ("authorization", format!("Bearer {token}")),
        ("x-token", token.to_string()),
        ("cookie", format!("a=b; session={token}")),
    ];
    for (i, (name, value)) in values.iter().enumerate() {
        if place == 3 || usize::from(place) == i {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(*name, value);
            }
        }
    }
    let inner = tower::service_fn(|request: Request<()>| async move {
        let verified = request.extensions().get::<VerifiedClaims>().is_some();
        for name in ["x-user", "x_org", "x-org", "x-email"] {
            if let Some(value) = request.headers().get(name) {
                assert!(
                    verified && value != "spoofed",
                    "{name} reached the app unverified"
                );
            }
        }
        Ok::<_, ProxyError>(Response::new(ResponseBody::empty()))
    });
    let service = harness.layer.layer(inner);
    let answer = harness.runtime.block_on(service.oneshot(request));
    match answer {
        Ok(_) | Err(ProxyError::Unauthenticated(_)) => {}
        Err(other) => panic!("unexpected error {other}"),
    }
});
