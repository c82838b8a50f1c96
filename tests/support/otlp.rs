//! `otlp_collector`: a test OTLP/HTTP collector on 127.0.0.1:0. It accepts
//! `POST /v1/traces` with `content-type: application/x-protobuf`, decodes the
//! body as a real `ExportTraceServiceRequest` (opentelemetry-proto types) and
//! keeps every span with its resource's `service.name`. A delay makes it a
//! slow collector (it answers each export only after sleeping that long).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use super::{Server, serve};

/// A received span and the `service.name` of its resource.
#[derive(Debug, Clone)]
pub struct Received {
    pub service: String,
    pub span: Span,
}

impl Received {
    /// A string or int attribute, as text.
    pub fn attr(&self, key: &str) -> Option<String> {
        let kv = self.span.attributes.iter().find(|kv| kv.key == key)?;
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            other => Some(format!("{other:?}")),
        }
    }
}

pub struct Collector {
    pub server: Server,
    spans: Arc<Mutex<Vec<Received>>>,
}

impl Collector {
    /// `http://<addr>/v1/traces`
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.server.addr)
    }

    pub fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits up to 10 s until at least `count` spans arrived; returns them.
    pub async fn wait_for(&self, count: usize) -> Vec<Received> {
        for _ in 0..500 {
            let spans = self.spans();
            if spans.len() >= count {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("expected {count} spans, got {:?}", self.spans());
    }
}

/// Starts a collector that answers each export after `delay`.
pub fn otlp_collector(delay: Duration) -> Collector {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let store = Arc::clone(&spans);
    let server = serve(move |stream| {
        let store = Arc::clone(&store);
        async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let store = Arc::clone(&store);
                async move { Ok::<_, Infallible>(export(request, &store, delay).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    });
    Collector { server, spans }
}

async fn export(
    request: Request<Incoming>,
    store: &Mutex<Vec<Received>>,
    delay: Duration,
) -> Response<Full<Bytes>> {
    let answer = |status: StatusCode| {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = status;
        response
    };
    if request.uri().path() != "/v1/traces"
        || request.method() != http::Method::POST
        || request.headers()["content-type"] != "application/x-protobuf"
    {
        return answer(StatusCode::BAD_REQUEST);
    }
    let Ok(body) = request.into_body().collect().await else {
        return answer(StatusCode::BAD_REQUEST);
    };
    let Ok(decoded) = ExportTraceServiceRequest::decode(body.to_bytes()) else {
        return answer(StatusCode::BAD_REQUEST);
    };
    tokio::time::sleep(delay).await;
    let mut stored = store.lock().unwrap();
    for resource_spans in decoded.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                stored.push(Received {
                    service: service.clone(),
                    span,
                });
            }
        }
    }
    let mut response = answer(StatusCode::OK);
    response.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/x-protobuf"),
    );
    response
}
