//! `otlp_collector`: a test OTLP collector on 127.0.0.1:0. It accepts
//! `POST /v1/traces` with `content-type: application/x-protobuf` (gzipped
//! with `content-encoding: gzip`) and the gRPC call `TraceService/Export`
//! (tonic's server, gzip accepted), decodes each as a real
//! `ExportTraceServiceRequest` (opentelemetry-proto types) and keeps every
//! span with its resource's `service.name`, and every request's headers.
//! `otlp_collector_with` adds TLS. A delay makes it a slow collector (it
//! answers each export only after sleeping that long).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
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
    /// The headers of every export request received.
    requests: Arc<Mutex<Vec<http::HeaderMap>>>,
    scheme: &'static str,
}

impl Collector {
    /// `http://<addr>/v1/traces` (`https://` with TLS)
    pub fn endpoint(&self) -> String {
        format!("{}://{}/v1/traces", self.scheme, self.server.addr)
    }

    /// `http(s)://<addr>`, the endpoint of a gRPC collector.
    pub fn grpc_endpoint(&self) -> String {
        format!("{}://{}", self.scheme, self.server.addr)
    }

    pub fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }

    /// The headers of the export requests received so far.
    pub fn request_headers(&self) -> Vec<http::HeaderMap> {
        self.requests.lock().unwrap().clone()
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

/// How a test collector listens.
#[derive(Default)]
pub struct CollectorOptions {
    /// Each export is answered after this long.
    pub delay: Duration,
    /// TLS (with ALPN `h2` and `http/1.1`): an `https://` collector.
    pub tls: Option<rustls::ServerConfig>,
}

/// Starts an OTLP/HTTP collector that answers each export after `delay`.
pub fn otlp_collector(delay: Duration) -> Collector {
    otlp_collector_with(CollectorOptions {
        delay,
        ..Default::default()
    })
}

/// Starts a collector that speaks both OTLP/HTTP (`POST /v1/traces`,
/// protobuf, gzip or not) and OTLP/gRPC (`TraceService/Export` served by
/// tonic's own gRPC server, gzip accepted), over HTTP/1.1 and HTTP/2, with
/// TLS when `options.tls` is set.
pub fn otlp_collector_with(options: CollectorOptions) -> Collector {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let acceptor = options.tls.map(|mut config| {
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let delay = options.delay;
    let (store, seen) = (Arc::clone(&spans), Arc::clone(&requests));
    let server = serve(move |stream| {
        let (store, seen, acceptor) = (Arc::clone(&store), Arc::clone(&seen), acceptor.clone());
        async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let (store, seen) = (Arc::clone(&store), Arc::clone(&seen));
                async move {
                    seen.lock().unwrap().push(request.headers().clone());
                    Ok::<_, Infallible>(export(request, &store, delay).await)
                }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let _ = match acceptor {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls) => builder.serve_connection(TokioIo::new(tls), service).await,
                    Err(_) => return,
                },
                None => {
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
            };
        }
    });
    Collector {
        server,
        spans,
        requests,
        scheme,
    }
}

const GRPC_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

async fn export(
    request: Request<Incoming>,
    store: &Arc<Mutex<Vec<Received>>>,
    delay: Duration,
) -> Response<tonic::body::Body> {
    let answer = |status: StatusCode| {
        let mut response = Response::new(tonic::body::Body::empty());
        *response.status_mut() = status;
        response
    };
    if request.uri().path() == GRPC_EXPORT {
        let store = Arc::clone(store);
        let codec = tonic_prost::ProstCodec::<ExportTraceServiceResponse, ExportTraceServiceRequest>::default();
        let mut grpc = tonic::server::Grpc::new(codec)
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        let method = tower::service_fn(move |call: tonic::Request<ExportTraceServiceRequest>| {
            let store = Arc::clone(&store);
            async move {
                tokio::time::sleep(delay).await;
                keep(&store, call.into_inner());
                Ok::<_, tonic::Status>(tonic::Response::new(ExportTraceServiceResponse::default()))
            }
        });
        return grpc.unary(method, request).await;
    }
    if request.uri().path() != "/v1/traces"
        || request.method() != http::Method::POST
        || request.headers()["content-type"] != "application/x-protobuf"
    {
        return answer(StatusCode::BAD_REQUEST);
    }
    let gzipped = request
        .headers()
        .get("content-encoding")
        .is_some_and(|encoding| encoding == "gzip");
    let Ok(body) = request.into_body().collect().await else {
        return answer(StatusCode::BAD_REQUEST);
    };
    let mut body = body.to_bytes().to_vec();
    if gzipped {
        let mut plain = Vec::new();
        if std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut plain)
            .is_err()
        {
            return answer(StatusCode::BAD_REQUEST);
        }
        body = plain;
    }
    let Ok(decoded) = ExportTraceServiceRequest::decode(&body[..]) else {
        return answer(StatusCode::BAD_REQUEST);
    };
    tokio::time::sleep(delay).await;
    keep(store, decoded);
    let mut response = answer(StatusCode::OK);
    response.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/x-protobuf"),
    );
    response
}

/// Stores every span of `decoded` with its resource's `service.name`.
fn keep(store: &Mutex<Vec<Received>>, decoded: ExportTraceServiceRequest) {
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
}
