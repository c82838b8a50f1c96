//! A Consul-agent stand-in for tests: a hyper HTTP/1.1 server on 127.0.0.1:0 (or HTTPS, see
//! [`ConsulStandIn::start_tls`]) that speaks the documented health and agent-service API, with
//! controls a test drives directly.
//!
//! Served: `GET /v1/health/service/:name` and `GET /v1/health/connect/:name` (instances
//! registered with [`Instance::connect`]); the Connect CA — `GET /v1/agent/connect/ca/leaf/:service`
//! and `GET /v1/agent/connect/ca/roots` — and `GET /v1/connect/intentions/match?by=destination&name=`,
//! whose bodies are the documentation samples (`connect-*.json`) with the certificates and
//! intentions a test sets; `GET /v1/kv/:key?raw` (the value as stored, 404 when the key is
//! missing) and `PUT /v1/kv/:key` (body = value, answers `true`); and the agent's service
//! endpoints:
//! `PUT /v1/agent/service/register` (body as documented; `ID` defaults to `Name`; 400
//! `Missing service name`, 400 for a `connect-proxy` without `Port` or
//! `Proxy.DestinationServiceName`, 400 for an HTTP/TCP check without `Interval`),
//! `PUT /v1/agent/service/deregister/:id` (404 `Unknown service ID` when unknown) and
//! `GET /v1/agent/service/:id` (the service in the shape of
//! `tests/fixtures/consul-api/agent-service-config-response.json`, 404 `unknown service ID` when
//! unknown). A registered service joins the catalog at once as a passing instance (the stand-in
//! runs no checks), with its `Weights`; a `connect-proxy` is served under
//! `/v1/health/connect/<Proxy.DestinationServiceName>`. Anything else is 404, or 405 for a
//! known agent service path with the wrong method. Every change bumps the one index, so all the
//! GETs but the agent's are blocking queries. Health responses are JSON arrays in
//! the shape of `tests/fixtures/consul-api/health-service-response.json` — every instance is built
//! from that documentation sample (its first entry), with ID, name, tags, address, port and the
//! service check's status replaced — and carry `X-Consul-Index`.
//!
//! Behaviour, as Consul documents it:
//! - blocking queries: with `index=N` (N > 0) the request is held while the catalog index is
//!   ≤ N, until it changes or `wait` elapses (default 5m, Go duration syntax: `ms`, `s`, `m`);
//!   every register / deregister / status change / KV put or delete bumps the index by one (one
//!   index for everything, so a change anywhere wakes every held query, as Consul may);
//! - filters: `passing` (every check passing), `tag` (repeatable, all must match), `dc` (the
//!   instances of that datacenter, `dc1` by default; `dc1` and the datacenters of registered
//!   instances exist, another gets 500 `No path to datacenter`);
//! - ACL: when a token is set, a request without `X-Consul-Token` (or `?token=`) gets 403
//!   `Permission denied`, a wrong one 403 `ACL not found`.
//!
//! Controls: register / deregister instances, put / delete KV entries, change their status,
//! set an error mode (500, garbage body with status 200, hang until stopped — not
//! the agent service endpoints), reset the index (to test an index that goes backwards), count requests and the most
//! health requests held at once, stop and restart on the same port (`SO_REUSEADDR`), read what
//! the agent API received, and "restart the agent" ([`ConsulStandIn::restart_agent`]: services
//! registered through the agent API are forgotten, as a real agent forgets them without a data
//! dir). State survives a [`restart`](ConsulStandIn::restart) of the listener. Not modelled:
//! the catalog write API, `near`, `filter`, `ns`, consistency modes, running checks, KV reads
//! without `?raw` (the JSON form with a base64 `Value`), KV flags, CAS and locks.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpSocket;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

/// Health state of an instance's service check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Passing,
    Warning,
    Critical,
}

impl Health {
    fn as_str(self) -> &'static str {
        match self {
            Health::Passing => "passing",
            Health::Warning => "warning",
            Health::Critical => "critical",
        }
    }
}

/// How the stand-in misbehaves (for every health and KV request) until set back to `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorMode {
    None,
    /// 500 with a Consul-like error body.
    ServerError,
    /// 200 with a body that is not JSON.
    Garbage,
    /// Never answers (until the stand-in stops).
    Hang,
}

/// One service instance.
#[derive(Debug, Clone)]
pub struct Instance {
    pub id: String,
    pub service: String,
    pub addr: SocketAddr,
    pub tags: Vec<String>,
    /// `Service.Meta`; the documentation sample's when empty.
    pub meta: Vec<(String, String)>,
    pub health: Health,
    /// Served under `/v1/health/connect/:service` instead of `/v1/health/service/:service`.
    pub connect: bool,
    /// Leave `Service.Address` empty so clients must use `Node.Address`.
    pub on_node_address: bool,
    /// `Service.Weights` (`Passing`, `Warning`); Consul's default 1/1 when `None`.
    pub weights: Option<(u32, u32)>,
    /// Registered through the agent API (forgotten by [`ConsulStandIn::restart_agent`]).
    pub from_agent: bool,
    /// The datacenter it is in (`dc1` unless set).
    pub datacenter: String,
}

impl Instance {
    pub fn new(id: &str, service: &str, addr: SocketAddr) -> Instance {
        Instance {
            id: id.to_owned(),
            service: service.to_owned(),
            addr,
            tags: Vec::new(),
            meta: Vec::new(),
            health: Health::Passing,
            connect: false,
            on_node_address: false,
            weights: None,
            from_agent: false,
            datacenter: "dc1".to_owned(),
        }
    }

    /// Puts the instance in datacenter `dc`.
    pub fn datacenter(mut self, dc: &str) -> Instance {
        self.datacenter = dc.to_owned();
        self
    }

    pub fn weights(mut self, passing: u32, warning: u32) -> Instance {
        self.weights = Some((passing, warning));
        self
    }

    pub fn tags(mut self, tags: &[&str]) -> Instance {
        self.tags = tags.iter().map(|t| (*t).to_owned()).collect();
        self
    }

    pub fn meta(mut self, meta: &[(&str, &str)]) -> Instance {
        self.meta = (meta.iter())
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        self
    }

    pub fn health(mut self, health: Health) -> Instance {
        self.health = health;
        self
    }

    pub fn connect(mut self) -> Instance {
        self.connect = true;
        self
    }

    pub fn on_node_address(mut self) -> Instance {
        self.on_node_address = true;
        self
    }
}

struct State {
    instances: Mutex<BTreeMap<String, Instance>>,
    /// KV entries: key → value.
    kv: Mutex<BTreeMap<String, String>>,
    /// Agent-API registrations by ID, as received.
    agent: Mutex<BTreeMap<String, Value>>,
    agent_registrations: AtomicU64,
    agent_deregistrations: AtomicU64,
    index: watch::Sender<u64>,
    token: Mutex<Option<String>>,
    mode: Mutex<ErrorMode>,
    requests: AtomicU64,
    held: AtomicU64,
    max_held: AtomicU64,
    template: Value,
    connect: Mutex<Connect>,
    /// False from `stop()` until `restart()`. Aborting the server's task ends
    /// its connections only when the runtime next gets to them: until then a
    /// held query woken by a change made after `stop()` must not answer it.
    serving: AtomicBool,
}

/// The Connect CA and intentions a test set, as the JSON bodies to serve.
#[derive(Default)]
struct Connect {
    leaves: BTreeMap<String, Value>,
    roots: Option<Value>,
    intentions: BTreeMap<String, Value>,
}

/// JSON of a documentation sample.
fn sample_json(name: &str) -> Value {
    let text =
        std::fs::read_to_string(docs_sample(name)).expect("the Consul docs sample is readable");
    serde_json::from_str(&text).expect("sample is JSON")
}

/// A running stand-in; dropping it stops the server.
pub struct ConsulStandIn {
    pub addr: SocketAddr,
    state: Arc<State>,
    server: Mutex<Option<JoinHandle<()>>>,
    tls: Option<TlsAcceptor>,
}

impl Drop for ConsulStandIn {
    fn drop(&mut self) {
        self.stop();
    }
}

impl ConsulStandIn {
    /// Binds 127.0.0.1:0 and serves an empty catalog at index 1.
    pub fn start() -> ConsulStandIn {
        Self::start_on("127.0.0.1:0".parse().unwrap())
    }

    /// Like [`ConsulStandIn::start`], on `addr` (e.g. `0.0.0.0:0`, reachable
    /// from network namespaces through their veth peers).
    pub fn start_on(addr: SocketAddr) -> ConsulStandIn {
        ConsulStandIn::serve(addr, None)
    }

    /// [`start`](Self::start), speaking HTTPS (HTTP/1.1) with `config`.
    pub fn start_tls(config: ServerConfig) -> ConsulStandIn {
        let acceptor = TlsAcceptor::from(Arc::new(config));
        ConsulStandIn::serve("127.0.0.1:0".parse().unwrap(), Some(acceptor))
    }

    fn serve(addr: SocketAddr, tls: Option<TlsAcceptor>) -> ConsulStandIn {
        let text = std::fs::read_to_string(docs_sample("health-service-response.json"))
            .expect("the Consul docs sample is readable");
        let sample: Value = serde_json::from_str(&text).expect("sample is JSON");
        let state = Arc::new(State {
            instances: Mutex::new(BTreeMap::new()),
            kv: Mutex::new(BTreeMap::new()),
            agent: Mutex::new(BTreeMap::new()),
            agent_registrations: AtomicU64::new(0),
            agent_deregistrations: AtomicU64::new(0),
            index: watch::Sender::new(1),
            token: Mutex::new(None),
            mode: Mutex::new(ErrorMode::None),
            requests: AtomicU64::new(0),
            held: AtomicU64::new(0),
            max_held: AtomicU64::new(0),
            template: sample[0].clone(),
            connect: Mutex::new(Connect::default()),
            serving: AtomicBool::new(true),
        });
        let (addr, task) = listen(addr, Arc::clone(&state), tls.clone());
        ConsulStandIn {
            addr,
            state,
            server: Mutex::new(Some(task)),
            tls,
        }
    }

    /// `http://<addr>` (`https://` when started with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The agent-API registration of service `id`, as received (`None` when not registered).
    pub fn agent_service(&self, id: &str) -> Option<Value> {
        self.state.agent.lock().unwrap().get(id).cloned()
    }

    /// IDs of the services registered through the agent API.
    pub fn agent_service_ids(&self) -> Vec<String> {
        self.state.agent.lock().unwrap().keys().cloned().collect()
    }

    /// Successful `PUT /v1/agent/service/register` calls so far.
    pub fn agent_registrations(&self) -> u64 {
        self.state.agent_registrations.load(Ordering::SeqCst)
    }

    /// Successful `PUT /v1/agent/service/deregister/:id` calls so far.
    pub fn agent_deregistrations(&self) -> u64 {
        self.state.agent_deregistrations.load(Ordering::SeqCst)
    }

    /// An agent restart without persistent state: every service registered through the agent
    /// API is forgotten (and leaves the catalog); bumps the index.
    pub fn restart_agent(&self) {
        self.state.agent.lock().unwrap().clear();
        self.state
            .instances
            .lock()
            .unwrap()
            .retain(|_, instance| !instance.from_agent);
        self.bump();
    }

    /// Adds (or replaces) an instance; bumps the index.
    pub fn register(&self, instance: Instance) {
        let id = instance.id.clone();
        self.state.instances.lock().unwrap().insert(id, instance);
        self.bump();
    }

    /// Removes an instance; bumps the index.
    pub fn deregister(&self, id: &str) {
        self.state.instances.lock().unwrap().remove(id);
        self.bump();
    }

    /// Changes an instance's service-check status; bumps the index.
    pub fn set_health(&self, id: &str, health: Health) {
        if let Some(instance) = self.state.instances.lock().unwrap().get_mut(id) {
            instance.health = health;
        }
        self.bump();
    }

    /// Sets a KV entry (as `PUT /v1/kv/:key` does); bumps the index.
    pub fn put_kv(&self, key: &str, value: &str) {
        put_kv(&self.state, key, value);
    }

    /// Removes a KV entry; bumps the index.
    pub fn delete_kv(&self, key: &str) {
        self.state.kv.lock().unwrap().remove(key);
        self.bump();
    }

    /// Requires this ACL token (`None`: no ACLs).
    pub fn set_token(&self, token: Option<&str>) {
        *self.state.token.lock().unwrap() = token.map(str::to_owned);
    }

    pub fn set_error_mode(&self, mode: ErrorMode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Sets the catalog index (e.g. lower, as after a Consul snapshot restore); held queries
    /// wake only if it passes their index.
    pub fn reset_index(&self, index: u64) {
        self.state.index.send_replace(index);
    }

    pub fn index(&self) -> u64 {
        *self.state.index.borrow()
    }

    /// Requests received so far (every path).
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// The most blocking queries held at the same time so far.
    pub fn max_held(&self) -> u64 {
        self.state.max_held.load(Ordering::SeqCst)
    }

    /// Closes the listener and every open connection (held queries see their connection drop).
    pub fn stop(&self) {
        self.state.serving.store(false, Ordering::SeqCst);
        if let Some(task) = self.server.lock().unwrap().take() {
            task.abort();
        }
    }

    /// Listens again on the same address; must be called from the test's runtime.
    pub fn restart(&self) {
        self.stop();
        self.state.serving.store(true, Ordering::SeqCst);
        let (_, task) = listen(self.addr, Arc::clone(&self.state), self.tls.clone());
        *self.server.lock().unwrap() = Some(task);
    }

    /// Serves this leaf certificate for `service` (the docs sample with its PEMs, serial and
    /// URI replaced); bumps the index.
    pub fn set_leaf(&self, service: &str, cert_pem: &str, key_pem: &str, serial: &str, uri: &str) {
        let mut leaf = sample_json("connect-ca-leaf-response.json");
        leaf["CertPEM"] = cert_pem.into();
        leaf["PrivateKeyPEM"] = key_pem.into();
        leaf["SerialNumber"] = serial.into();
        leaf["Service"] = service.into();
        leaf["ServiceURI"] = uri.into();
        let index = self.index() + 1;
        leaf["ModifyIndex"] = index.into();
        self.state
            .connect
            .lock()
            .unwrap()
            .leaves
            .insert(service.to_owned(), leaf);
        self.bump();
    }

    /// Serves these CA roots (the docs sample's root, repeated with each PEM); bumps the index.
    pub fn set_roots(&self, root_pems: &[&str]) {
        let mut roots = sample_json("connect-ca-roots-response.json");
        let template = roots["Roots"][0].clone();
        let list: Vec<Value> = root_pems
            .iter()
            .enumerate()
            .map(|(i, pem)| {
                let mut root = template.clone();
                root["ID"] = format!("root-{i}").into();
                root["RootCert"] = (*pem).into();
                root["Active"] = (i + 1 == root_pems.len()).into();
                root
            })
            .collect();
        roots["Roots"] = list.into();
        roots["ActiveRootID"] = format!("root-{}", root_pems.len().saturating_sub(1)).into();
        self.state.connect.lock().unwrap().roots = Some(roots);
        self.bump();
    }

    /// Serves these intentions (source name, allow) for `destination`, in precedence order,
    /// built from the docs sample's entries; bumps the index.
    pub fn set_intentions(&self, destination: &str, intentions: &[(&str, bool)]) {
        let sample = sample_json("connect-intentions-match-response.json");
        let template = sample["web"][0].clone();
        let list: Vec<Value> = intentions
            .iter()
            .map(|(source, allow)| {
                let mut intention = template.clone();
                intention["SourceName"] = (*source).into();
                intention["DestinationName"] = destination.into();
                intention["Action"] = if *allow { "allow" } else { "deny" }.into();
                intention
            })
            .collect();
        self.set_intention_entries(destination, list);
    }

    /// Serves these intention entries for `destination` as they are (any JSON, in precedence
    /// order); bumps the index.
    pub fn set_intention_entries(&self, destination: &str, entries: Vec<Value>) {
        self.state
            .connect
            .lock()
            .unwrap()
            .intentions
            .insert(destination.to_owned(), entries.into());
        self.bump();
    }

    fn bump(&self) {
        self.state.bump();
    }
}

impl State {
    fn bump(&self) {
        self.index.send_modify(|index| *index += 1);
    }
}

fn put_kv(state: &State, key: &str, value: &str) {
    let mut kv = state.kv.lock().unwrap();
    kv.insert(key.to_owned(), value.to_owned());
    state.index.send_modify(|index| *index += 1);
}

/// `tests/fixtures/consul-api/<name>`: a body from Consul's API documentation.
pub fn docs_sample(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/consul-api")
        .join(name)
}

fn listen(
    addr: SocketAddr,
    state: Arc<State>,
    tls: Option<TlsAcceptor>,
) -> (SocketAddr, JoinHandle<()>) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.bind(addr).expect("bind the stand-in's address");
    let listener = socket.listen(128).expect("listen");
    let addr = listener.local_addr().expect("local_addr");
    let task = tokio::spawn(async move {
        // Connections live in the JoinSet, so aborting this task closes them too.
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let state = Arc::clone(&state);
                    let tls = tls.clone();
                    conns.spawn(async move {
                        let service = service_fn(move |request| {
                            let state = Arc::clone(&state);
                            async move { Ok::<_, Infallible>(handle(&state, request).await) }
                        });
                        let http = http1::Builder::new();
                        let _ = match tls {
                            None => http.serve_connection(TokioIo::new(stream), service).await,
                            Some(tls) => {
                                let Ok(stream) = tls.accept(stream).await else { return };
                                http.serve_connection(TokioIo::new(stream), service).await
                            }
                        };
                    });
                }
                Some(_) = conns.join_next() => {}
            }
        }
    });
    (addr, task)
}

/// Query parameters, repeated keys kept.
fn query_pairs(request: &Request<Incoming>) -> Vec<(String, String)> {
    request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (pair.to_owned(), String::new()),
        })
        .collect()
}

/// Go duration syntax as Consul's `wait` takes it (one unit only).
fn parse_wait(text: &str) -> Duration {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().unwrap_or(0);
    match unit {
        "ms" => Duration::from_millis(number),
        "s" | "" => Duration::from_secs(number),
        "m" => Duration::from_secs(number * 60),
        _ => Duration::from_secs(300),
    }
}

async fn handle(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if !state.serving.load(Ordering::SeqCst) {
        // Stopped: the connection is being closed.
        std::future::pending::<()>().await;
    }
    state.requests.fetch_add(1, Ordering::SeqCst);
    let params = query_pairs(&request);
    let param = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };

    let expected = state.token.lock().unwrap().clone();
    if let Some(expected) = expected {
        let given = request
            .headers()
            .get("x-consul-token")
            .and_then(|v| v.to_str().ok())
            .or(param("token"));
        match given {
            None => return reply(StatusCode::FORBIDDEN, "Permission denied", None),
            Some(given) if given != expected => {
                return reply(StatusCode::FORBIDDEN, "ACL not found", None);
            }
            Some(_) => {}
        }
    }

    let path = request.uri().path().to_owned();
    if let Some(rest) = path.strip_prefix("/v1/agent/service/") {
        return agent(state, rest, request).await;
    }
    let route = if let Some(name) = path.strip_prefix("/v1/health/service/") {
        Route::Health(false, name.to_owned())
    } else if let Some(name) = path.strip_prefix("/v1/health/connect/") {
        Route::Health(true, name.to_owned())
    } else if let Some(name) = path.strip_prefix("/v1/agent/connect/ca/leaf/") {
        Route::Leaf(name.to_owned())
    } else if path == "/v1/agent/connect/ca/roots" {
        Route::Roots
    } else if path == "/v1/connect/intentions/match" && param("by") == Some("destination") {
        Route::Intentions(param("name").unwrap_or_default().to_owned())
    } else if let Some(key) = path.strip_prefix("/v1/kv/") {
        Route::Kv(key.to_owned())
    } else {
        return reply(StatusCode::NOT_FOUND, "", None);
    };

    let mode = *state.mode.lock().unwrap();
    match mode {
        ErrorMode::None => {}
        ErrorMode::ServerError => {
            return reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "rpc error making call: No cluster leader",
                None,
            );
        }
        ErrorMode::Garbage => {
            let index = *state.index.borrow();
            return reply(StatusCode::OK, "<html>502 Bad Gateway</html>", Some(index));
        }
        ErrorMode::Hang => std::future::pending::<()>().await,
    }

    let dc = param("dc").unwrap_or("dc1").to_owned();
    let known =
        dc == "dc1" || (state.instances.lock().unwrap().values()).any(|i| i.datacenter == dc);
    if !known {
        return reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "No path to datacenter",
            None,
        );
    }

    if let Route::Kv(key) = &route {
        if request.method() == Method::PUT {
            let body = request.into_body().collect().await.map(|b| b.to_bytes());
            let Ok(body) = body else {
                return reply(StatusCode::BAD_REQUEST, "unreadable body", None);
            };
            put_kv(state, key, &String::from_utf8_lossy(&body));
            return reply(StatusCode::OK, "true", None);
        }
        if param("raw").is_none() {
            return reply(
                StatusCode::BAD_REQUEST,
                "the stand-in serves KV reads with ?raw only",
                None,
            );
        }
        hold(state, &params).await;
        let kv = state.kv.lock().unwrap();
        let index = *state.index.borrow();
        return match kv.get(key) {
            Some(value) => reply(StatusCode::OK, value, Some(index)),
            None => reply(StatusCode::NOT_FOUND, "", Some(index)),
        };
    }

    hold(state, &params).await;

    let (connect, service) = match route {
        Route::Health(connect, service) => (connect, service),
        route => return connect_reply(state, &route),
    };
    let passing = param("passing").is_some_and(|v| v != "false" && v != "0");
    let tags: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k == "tag")
        .map(|(_, v)| v.as_str())
        .collect();
    // Read the index and the instances together, so the answer matches its index.
    let instances = state.instances.lock().unwrap();
    let index = *state.index.borrow();
    let entries: Vec<Value> = instances
        .values()
        .filter(|i| i.service == service && i.connect == connect)
        .filter(|i| i.datacenter == dc)
        .filter(|i| !passing || i.health == Health::Passing)
        .filter(|i| tags.iter().all(|tag| i.tags.iter().any(|t| t == tag)))
        .map(|i| entry(&state.template, i))
        .collect();
    drop(instances);
    let body = serde_json::to_string(&entries).expect("JSON");
    let mut response = reply(StatusCode::OK, &body, Some(index));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// A blocking query (`index=N`, N > 0): waits while the index is ≤ N, at most `wait`.
async fn hold(state: &State, params: &[(String, String)]) {
    let param = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let requested: u64 = param("index").and_then(|i| i.parse().ok()).unwrap_or(0);
    if requested > 0 {
        let wait = param("wait").map_or(Duration::from_secs(300), parse_wait);
        let mut index = state.index.subscribe();
        let held = state.held.fetch_add(1, Ordering::SeqCst) + 1;
        state.max_held.fetch_max(held, Ordering::SeqCst);
        let _ = tokio::time::timeout(wait, index.wait_for(|current| *current > requested)).await;
        state.held.fetch_sub(1, Ordering::SeqCst);
        if !state.serving.load(Ordering::SeqCst) {
            // Stopped while held: the connection is being closed.
            std::future::pending::<()>().await;
        }
    }
}

/// `/v1/agent/service/<rest>`: register, deregister/:id, or read :id.
async fn agent(state: &State, rest: &str, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    match (rest, rest.strip_prefix("deregister/")) {
        ("register", _) if method == Method::PUT => {
            let body = request.into_body().collect().await.map(|b| b.to_bytes());
            let Ok(body) = body else {
                return reply(StatusCode::BAD_REQUEST, "Request decode failed", None);
            };
            agent_register(state, &body)
        }
        (_, Some(id)) if method == Method::PUT => {
            if state.agent.lock().unwrap().remove(id).is_none() {
                return reply(
                    StatusCode::NOT_FOUND,
                    &format!(
                        "Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."
                    ),
                    None,
                );
            }
            state.instances.lock().unwrap().remove(id);
            state.agent_deregistrations.fetch_add(1, Ordering::SeqCst);
            state.bump();
            reply(StatusCode::OK, "", None)
        }
        ("register", _) | (_, Some(_)) => reply(StatusCode::METHOD_NOT_ALLOWED, "", None),
        (id, None) if method == Method::GET => match state.agent.lock().unwrap().get(id) {
            Some(registration) => {
                let mut response = reply(
                    StatusCode::OK,
                    &agent_service_view(registration).to_string(),
                    None,
                );
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                response
            }
            None => reply(
                StatusCode::NOT_FOUND,
                &format!("unknown service ID: {id}"),
                None,
            ),
        },
        _ => reply(StatusCode::METHOD_NOT_ALLOWED, "", None),
    }
}

/// `PUT /v1/agent/service/register` with `body`, checked as Consul checks it.
fn agent_register(state: &State, body: &[u8]) -> Response<Full<Bytes>> {
    let Ok(registration) = serde_json::from_slice::<Value>(body) else {
        return reply(StatusCode::BAD_REQUEST, "Request decode failed", None);
    };
    let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
    let name = text(&registration["Name"]);
    if name.is_empty() {
        return reply(StatusCode::BAD_REQUEST, "Missing service name", None);
    }
    let id = match text(&registration["ID"]) {
        id if id.is_empty() => name.clone(),
        id => id,
    };
    let port = registration["Port"].as_u64().unwrap_or(0) as u16;
    let proxy = registration["Kind"] == "connect-proxy";
    let destination = text(&registration["Proxy"]["DestinationServiceName"]);
    if proxy && port == 0 {
        return reply(
            StatusCode::BAD_REQUEST,
            "Invalid Service Meta: Port must be set for a Connect proxy",
            None,
        );
    }
    if proxy && destination.is_empty() {
        return reply(
            StatusCode::BAD_REQUEST,
            "Proxy.DestinationServiceName must be set for Connect proxy",
            None,
        );
    }
    let checks = registration["Checks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .chain(registration.get("Check").cloned());
    for check in checks {
        let probes = check.get("HTTP").is_some() || check.get("TCP").is_some();
        if probes && text(&check["Interval"]).is_empty() {
            return reply(
                StatusCode::BAD_REQUEST,
                "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, or TCP checks",
                None,
            );
        }
    }
    let address = text(&registration["Address"]);
    let ip = address.parse().unwrap_or([127, 0, 0, 1].into());
    let weights = registration.get("Weights").map(|w| {
        let weight = |key: &str| w[key].as_u64().unwrap_or(1) as u32;
        (weight("Passing"), weight("Warning"))
    });
    let tags = registration["Tags"]
        .as_array()
        .map(|tags| tags.iter().map(text).collect())
        .unwrap_or_default();
    let meta = registration["Meta"]
        .as_object()
        .map(|meta| meta.iter().map(|(k, v)| (k.clone(), text(v))).collect())
        .unwrap_or_default();
    let instance = Instance {
        id: id.clone(),
        meta,
        service: if proxy { destination } else { name },
        addr: SocketAddr::new(ip, port),
        tags,
        health: Health::Passing,
        connect: proxy,
        on_node_address: address.is_empty(),
        weights,
        from_agent: true,
        datacenter: "dc1".to_owned(),
    };
    state.instances.lock().unwrap().insert(id.clone(), instance);
    state.agent.lock().unwrap().insert(id, registration);
    state.agent_registrations.fetch_add(1, Ordering::SeqCst);
    state.bump();
    reply(StatusCode::OK, "", None)
}

/// A registration as `GET /v1/agent/service/:id` shows it.
fn agent_service_view(registration: &Value) -> Value {
    let name = registration["Name"].clone();
    let id = match registration["ID"].as_str() {
        Some(id) if !id.is_empty() => registration["ID"].clone(),
        _ => name.clone(),
    };
    let or = |key: &str, default: Value| registration.get(key).cloned().unwrap_or(default);
    let mut view = serde_json::json!({
        "ID": id,
        "Service": name,
        "Tags": or("Tags", Value::Null),
        "Meta": or("Meta", Value::Null),
        "Namespace": "default",
        "Port": or("Port", 0.into()),
        "Address": or("Address", "".into()),
        "Weights": or("Weights", serde_json::json!({ "Passing": 1, "Warning": 1 })),
        "EnableTagOverride": false,
        "Datacenter": "dc1",
        "ContentHash": "4ecd29c7bc647ca8",
    });
    if let Some(kind) = registration.get("Kind") {
        view["Kind"] = kind.clone();
        view["Proxy"] = or("Proxy", Value::Null);
    }
    view
}

/// What a request asks for.
enum Route {
    /// `/v1/health/{service,connect}/:name` (connect, name).
    Health(bool, String),
    Leaf(String),
    Roots,
    Intentions(String),
    /// `/v1/kv/:key`.
    Kv(String),
}

/// The Connect CA or intentions answer (after any blocking wait).
fn connect_reply(state: &State, route: &Route) -> Response<Full<Bytes>> {
    let connect = state.connect.lock().unwrap();
    let index = *state.index.borrow();
    let body = match route {
        Route::Leaf(service) => connect.leaves.get(service).cloned(),
        Route::Roots => connect.roots.clone(),
        Route::Intentions(name) => Some(serde_json::json!({
            name.as_str(): connect.intentions.get(name).cloned().unwrap_or_else(|| Value::Array(Vec::new()))
        })),
        Route::Health(..) | Route::Kv(_) => None,
    };
    match body {
        Some(body) => {
            let mut response = reply(StatusCode::OK, &body.to_string(), Some(index));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            response
        }
        None => reply(StatusCode::NOT_FOUND, "no such leaf or roots yet", None),
    }
}

/// One health entry, built from the documentation sample.
fn entry(template: &Value, instance: &Instance) -> Value {
    let mut entry = template.clone();
    let ip = instance.addr.ip().to_string();
    let port = instance.addr.port();
    entry["Node"]["Node"] = format!("node-{}", instance.id).into();
    entry["Node"]["Datacenter"] = instance.datacenter.clone().into();
    entry["Node"]["Address"] = ip.clone().into();
    entry["Node"]["TaggedAddresses"]["lan"] = ip.clone().into();
    entry["Node"]["TaggedAddresses"]["wan"] = ip.clone().into();
    let service = &mut entry["Service"];
    service["ID"] = instance.id.clone().into();
    service["Service"] = instance.service.clone().into();
    service["Tags"] = instance.tags.clone().into();
    if !instance.meta.is_empty() {
        service["Meta"] = (instance.meta.iter())
            .map(|(key, value)| (key.clone(), Value::from(value.clone())))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    service["Address"] = if instance.on_node_address {
        String::new().into()
    } else {
        ip.clone().into()
    };
    service["Port"] = port.into();
    service["TaggedAddresses"]["lan"] = serde_json::json!({ "address": ip, "port": port });
    service["TaggedAddresses"]["wan"] = serde_json::json!({ "address": ip, "port": port });
    let (passing, warning) = instance.weights.unwrap_or((1, 1));
    service["Weights"] = serde_json::json!({ "Passing": passing, "Warning": warning });
    let check = &mut entry["Checks"][0];
    check["Node"] = format!("node-{}", instance.id).into();
    check["CheckID"] = format!("service:{}", instance.id).into();
    check["Name"] = format!("Service '{}' check", instance.service).into();
    check["Status"] = instance.health.as_str().into();
    check["ServiceID"] = instance.id.clone().into();
    check["ServiceName"] = instance.service.clone().into();
    check["ServiceTags"] = instance.tags.clone().into();
    entry["Checks"][1]["Node"] = format!("node-{}", instance.id).into();
    entry
}

fn reply(status: StatusCode, body: &str, index: Option<u64>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    if let Some(index) = index {
        response
            .headers_mut()
            .insert("x-consul-index", http::HeaderValue::from(index));
        response.headers_mut().insert(
            "x-consul-knownleader",
            http::HeaderValue::from_static("true"),
        );
    }
    response
}
