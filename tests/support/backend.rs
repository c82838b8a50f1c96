//! `http_backend`: an HTTP/1.1 + h2c (prior knowledge) origin on one port, with routes that let
//! a test see what the proxy forwarded. Unknown paths get 404; nothing else is rejected.
//!
//! | route | answer |
//! |---|---|
//! | `/` | 200, body = backend name, header `x-backend: <name>` |
//! | `/echo` (any method) | 200, the request body streamed back frame by frame (trailers dropped) |
//! | `/headers` | 200, JSON `{method, uri, version, authority, headers: {name: [values]}}` |
//! | `/status/<code>` | that status, empty body |
//! | `/slow/<ms>` | like `/`, after sleeping that long |
//!
//! It also counts the TCP connections it accepted ([`Backend::connections`]), so a test can
//! see whether the proxy reused its upstream connections.

use std::convert::Infallible;
use std::future::ready;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, BodyStream, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

use super::{Server, serve_listener};

type Body = UnsyncBoxBody<Bytes, hyper::Error>;

/// A running `http_backend`; dropping it stops the server.
pub struct Backend {
    pub addr: std::net::SocketAddr,
    pub name: String,
    stats: Arc<Stats>,
    _server: Server,
}

#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    connections: AtomicU64,
    echoed_bytes: AtomicU64,
    versions: Mutex<Vec<Version>>,
    uris: Mutex<Vec<String>>,
}

impl Backend {
    /// Requests received so far (counted on arrival, before `/slow` sleeps).
    pub fn requests(&self) -> u64 {
        self.stats.requests.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.stats.connections.load(Ordering::SeqCst)
    }

    /// HTTP version of every request received, in arrival order.
    pub fn versions(&self) -> Vec<Version> {
        self.stats.versions.lock().unwrap().clone()
    }

    /// Request target (path and query) of every request received, in arrival order.
    pub fn uris(&self) -> Vec<String> {
        self.stats.uris.lock().unwrap().clone()
    }

    /// Body bytes streamed back by `/echo` so far (a streamed reply cannot carry its length
    /// in a header, so the count is kept here).
    pub fn echoed_bytes(&self) -> u64 {
        self.stats.echoed_bytes.load(Ordering::SeqCst)
    }

    /// `http://<addr><path>`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Starts a backend answering to `name` (see the module docs for its routes).
pub fn http_backend(name: &str) -> Backend {
    http_backend_on(name, super::loopback_listener())
}

/// [`http_backend`] on a listener the test bound (another loopback address,
/// a port shared with other backends).
pub fn http_backend_on(name: &str, listener: std::net::TcpListener) -> Backend {
    let stats = Arc::new(Stats::default());
    let name_for_server: Arc<str> = name.into();
    let stats_for_server = stats.clone();
    let server = serve_listener(listener, move |stream| {
        let (name, stats) = (name_for_server.clone(), stats_for_server.clone());
        stats.connections.fetch_add(1, Ordering::SeqCst);
        async move {
            let svc = service_fn(move |req| handle(name.clone(), stats.clone(), req));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        }
    });
    Backend {
        addr: server.addr,
        name: name.to_owned(),
        stats,
        _server: server,
    }
}

async fn handle(
    name: Arc<str>,
    stats: Arc<Stats>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    stats.requests.fetch_add(1, Ordering::SeqCst);
    stats.versions.lock().unwrap().push(req.version());
    let target = req
        .uri()
        .path_and_query()
        .map_or("", |target| target.as_str());
    stats.uris.lock().unwrap().push(target.to_owned());

    let path = req.uri().path().to_owned();
    let response = if path == "/" {
        named(&name)
    } else if path == "/echo" {
        echo(stats, req)
    } else if path == "/headers" {
        headers_json(&req)
    } else if let Some(code) = path.strip_prefix("/status/") {
        match code.parse().map(StatusCode::from_u16) {
            Ok(Ok(status)) => with_status(status),
            _ => with_status(StatusCode::BAD_REQUEST),
        }
    } else if let Some(ms) = path.strip_prefix("/slow/") {
        match ms.parse() {
            Ok(ms) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                named(&name)
            }
            Err(_) => with_status(StatusCode::BAD_REQUEST),
        }
    } else {
        with_status(StatusCode::NOT_FOUND)
    };
    Ok(response)
}

fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn named(name: &str) -> Response<Body> {
    let mut response = Response::new(full(name.to_owned()));
    let value = HeaderValue::from_str(name).expect("backend name is a valid header value");
    response.headers_mut().insert("x-backend", value);
    response
}

fn with_status(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// Streams the request body back as it arrives; never holds more than one frame.
fn echo(stats: Arc<Stats>, req: Request<Incoming>) -> Response<Body> {
    let frames = BodyStream::new(req.into_body()).filter_map(move |frame| {
        ready(match frame {
            Ok(frame) => frame
                .into_data()
                .ok()
                .filter(|d| !d.is_empty())
                .map(|data| {
                    stats
                        .echoed_bytes
                        .fetch_add(data.len() as u64, Ordering::SeqCst);
                    Ok(Frame::data(data))
                }),
            Err(e) => Some(Err(e)),
        })
    });
    Response::new(StreamBody::new(frames).boxed_unsync())
}

fn headers_json(req: &Request<Incoming>) -> Response<Body> {
    let mut headers = serde_json::Map::new();
    for (name, value) in req.headers() {
        let values = headers
            .entry(name.as_str())
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        if let serde_json::Value::Array(values) = values {
            values.push(String::from_utf8_lossy(value.as_bytes()).into());
        }
    }
    let authority = req.uri().authority().map(|a| a.to_string()).or_else(|| {
        let host = req.headers().get(http::header::HOST)?;
        host.to_str().ok().map(str::to_owned)
    });
    let json = serde_json::json!({
        "method": req.method().as_str(),
        "uri": req.uri().to_string(),
        "version": format!("{:?}", req.version()),
        "authority": authority,
        "headers": headers,
    });
    let mut response = Response::new(full(json.to_string()));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
