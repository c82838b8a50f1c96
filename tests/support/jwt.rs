//! JWT test helpers: keys and tokens made by PyJWT and cryptography
//! (Debian `python3-jwt`, `python3-cryptography`, through
//! `tests/fixtures/jwt_tokens.py`), an inbound proxy with `inbound.jwt`,
//! requests with a token, what the app saw, and a JWKS server whose
//! document can be swapped and whose fetches are counted.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use serde_json::{Value, json};

use super::config::TestConfig;
use super::{Backend, Proxy, Reply, Server, serve_on};

pub const ISSUER: &str = "https://issuer.test";

/// A directory of keys made by PyJWT/cryptography, removed when dropped.
pub struct Keys {
    pub dir: PathBuf,
}

impl Drop for Keys {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn python(args: &[&str], input: &str) -> String {
    let mut child = Command::new("/usr/bin/python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/jwt_tokens.py"
        ))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "/usr/bin/python3 is needed: apt-get install python3 (scripts/test.sh installs it)",
        );
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named"),
        "PyJWT and cryptography are needed: apt-get install python3-jwt python3-cryptography \
         (scripts/test.sh installs them): {stderr}"
    );
    assert!(output.status.success(), "jwt_tokens.py {args:?}: {stderr}");
    String::from_utf8(output.stdout).unwrap()
}

impl Keys {
    /// New keys named `names` (`rsa…`, `ec…`, `ec384…`, `ed…`; kid = name).
    pub fn new(names: &[&str]) -> Keys {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "remora-jwt-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut args = vec!["keys", dir.to_str().unwrap()];
        args.extend(names);
        python(&args, "");
        Keys { dir }
    }

    /// A JWKS document with the public keys `names`.
    pub fn jwks(&self, names: &[&str]) -> String {
        let keys: Vec<Value> = (names.iter())
            .flat_map(|name| {
                let text = std::fs::read_to_string(self.dir.join(format!("jwks-{name}.json")));
                let document: Value = serde_json::from_str(&text.unwrap()).unwrap();
                document["keys"].as_array().unwrap().clone()
            })
            .collect();
        json!({ "keys": keys }).to_string()
    }

    /// Writes the JWKS of `names` to a file; returns its path.
    pub fn jwks_file(&self, names: &[&str]) -> PathBuf {
        let path = self.dir.join("jwks.json");
        std::fs::write(&path, self.jwks(names)).unwrap();
        path
    }

    /// One token per spec (see jwt_tokens.py).
    pub fn tokens(&self, specs: &[Value]) -> Vec<String> {
        let input: String = specs.iter().map(|spec| format!("{spec}\n")).collect();
        let output = python(&["sign", self.dir.to_str().unwrap()], &input);
        output.lines().map(str::to_owned).collect()
    }

    pub fn token(&self, spec: Value) -> String {
        self.tokens(&[spec]).remove(0)
    }
}

/// The claims of a token every check accepts.
pub fn good_claims() -> Value {
    json!({
        "iss": ISSUER, "aud": ["other", "api"], "sub": "alice",
        "org": { "id": "o1" }, "exp": "now+300", "nbf": "now-10", "iat": "now-10"
    })
}

pub fn spec(key: &str, alg: &str, claims: Value) -> Value {
    json!({ "key": key, "alg": alg, "kid": key, "claims": claims })
}

/// `claims` with `changes` applied (a `null` removes the claim).
pub fn with(mut claims: Value, changes: Value) -> Value {
    for (claim, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(claim);
        } else {
            claims[claim] = value.clone();
        }
    }
    claims
}

/// An inbound proxy in front of `app` with `jwt` as its `inbound.jwt`.
pub async fn proxy(app: &Backend, jwt: &str) -> Proxy {
    let yaml = TestConfig::inbound_to("app", app.addr).yaml().replace(
        "inbound: { listen: 127.0.0.1:0 }\n",
        &format!("inbound:\n  listen: 127.0.0.1:0\n  jwt:\n{jwt}"),
    );
    Proxy::start(&yaml).await
}

/// `GET path` through the inbound listener with extra headers.
pub async fn get(proxy: &Proxy, path: &str, headers: &[(&str, &str)]) -> Reply {
    let url = format!("http://{}{path}", proxy.inbound());
    super::client::call("GET", &url, headers)
        .await
        .expect("proxy answers")
}

pub async fn with_token(proxy: &Proxy, token: &str) -> Reply {
    get(
        proxy,
        "/headers",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
}

/// The headers the app received, from the backend's `/headers` answer.
pub fn app_headers(reply: &Reply) -> Value {
    let body: Value = serde_json::from_str(&reply.body).expect("JSON from the app");
    body["headers"].clone()
}

pub fn assert_refused(reply: &Reply, what: &str) {
    assert_eq!(
        reply.status,
        StatusCode::UNAUTHORIZED,
        "{what}: {}",
        reply.body
    );
    assert_eq!(reply.headers["x-remora-error"], "unauthenticated", "{what}");
    let challenge = reply.headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\""),
        "{what}: www-authenticate {challenge}"
    );
}

pub fn provider_yaml(name: &str, jwks: &Path, extra: &str) -> String {
    format!(
        "    providers:\n\
         \x20     - name: {name}\n\
         \x20       issuer: {ISSUER}\n\
         \x20       audiences: [api]\n\
         \x20       jwks: {{ file: {} }}\n\
         \x20       claims_to_headers: {{ sub: x-user, org.id: x-org }}\n{extra}",
        jwks.display()
    )
}

/// A JWKS server: serves `document` at any path, counts the requests.
pub struct JwksServer {
    document: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
    pub server: Server,
}

impl JwksServer {
    pub fn start(document: String) -> JwksServer {
        JwksServer::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), document)
    }

    pub fn start_on(addr: SocketAddr, document: String) -> JwksServer {
        let document = Arc::new(Mutex::new(document));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (Arc::clone(&document), Arc::clone(&fetches));
        let server = serve_on(addr, move |stream| {
            let (served, counted) = (Arc::clone(&served), Arc::clone(&counted));
            async move {
                let service = hyper::service::service_fn(move |_request| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let body = served.lock().unwrap().clone();
                    async move {
                        let response = http::Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body)))
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            }
        });
        JwksServer {
            document,
            fetches,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.server.addr)
    }

    pub fn serve(&self, document: String) {
        *self.document.lock().unwrap() = document;
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

pub fn url_provider(name: &str, url: &str, refresh: &str) -> String {
    format!(
        "    required: true\n\
         \x20   providers:\n\
         \x20     - name: {name}\n\
         \x20       issuer: {ISSUER}\n\
         \x20       audiences: [api]\n\
         \x20       jwks: {{ url: \"{url}\", refresh: {refresh} }}\n\
         \x20       claims_to_headers: {{ sub: x-user }}\n"
    )
}
