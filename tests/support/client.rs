//! Plain HTTP clients for tests: HTTP/1.1 or h2c prior knowledge, chosen by `Version`.
//! No TLS, no redirects, no retries — a test sees exactly what the server (or proxy) said.

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A client sending whole bodies.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A fully read response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: String,
}

/// A pooled client speaking HTTP/1.1, or h2c with prior knowledge when `version` is HTTP/2.
/// Use it directly for streaming request bodies (`B` = any `http_body::Body`).
pub fn http_client<B>(version: Version) -> Client<HttpConnector, B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    Client::builder(TokioExecutor::new())
        .http2_only(version == Version::HTTP_2)
        .build_http()
}

/// `GET url` and read the whole body.
pub async fn get(version: Version, url: &str) -> Result<Reply, BoxError> {
    let req = Request::get(url).body(Empty::<Bytes>::new())?;
    read_reply(http_client(version).request(req).await?).await
}

/// `method url` with `headers` and an empty body, over HTTP/1.1.
pub async fn call(method: &str, url: &str, headers: &[(&str, &str)]) -> Result<Reply, BoxError> {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(Version::HTTP_11, request.body(Full::new(Bytes::new()))?).await
}

/// Sends `req` (e.g. a POST with a body) and reads the whole response.
pub async fn send(version: Version, req: Request<Full<Bytes>>) -> Result<Reply, BoxError> {
    read_reply(http_client(version).request(req).await?).await
}

async fn read_reply(response: http::Response<hyper::body::Incoming>) -> Result<Reply, BoxError> {
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
