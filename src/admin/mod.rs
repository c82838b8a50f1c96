//! The admin listener (loopback by default): `/live`, `/ready`, `/metrics`
//! (Prometheus text, or OpenMetrics with exemplars when asked for), `/tap`
//! (the live request stream, `tap`),
//! `/config`, `/endpoints`, `/upstreams`, `/errors`, and at `/` a live
//! dashboard — one self-contained page (`dashboard.html`: inline script and
//! style, no network beyond this listener, enforced by its
//! Content-Security-Policy) that polls the JSON endpoints. Only `GET` (and
//! `HEAD`) is served; anything else gets 405, an unknown path 404. It stays up
//! while the proxy drains, so `/ready` can say so. Like the data listeners it
//! caps its connections, times out slow request heads and backs off when
//! `accept` fails (`accept`); it answers only requests for its own `Host`
//! (`host`: DNS rebinding).

mod endpoint_load;
mod host;
mod json;
mod readiness;
mod tap;

use std::convert::Infallible;
use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use readiness::Readiness;

use host::AllowedHosts;
use tap::AdminBody;

use crate::accept::Acceptor;
use crate::config::AdminConfig;
use crate::telemetry::tap::Tap;
use crate::telemetry::{openmetrics, process};
use crate::upstream::{BackendSet, Upstream, UpstreamSet};

/// What the admin endpoints show.
pub struct AdminState {
    pub metrics: PrometheusHandle,
    pub readiness: Arc<Readiness>,
    /// The effective configuration as JSON, secrets redacted; replaced by
    /// each successful reload.
    pub config_json: ArcSwap<String>,
    /// Every upstream, the inbound application first when there is one.
    pub upstreams: Arc<UpstreamSet>,
    /// The routing backends' own upstreams (shown by `/endpoints`).
    pub backends: Arc<BackendSet>,
    /// The live request stream of `/tap`.
    pub tap: Tap,
}

/// Serves the admin endpoints until the process exits, with the limits of
/// `config`: at most `max_connections` at once (more are closed as soon as
/// they are accepted), request heads within `header_read_timeout`, and only
/// requests for an allowed `Host` (see `host`).
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, config: AdminConfig) {
    let slots = Arc::new(Semaphore::new(config.max_connections as usize));
    let allowed_hosts: Arc<[String]> = config.allowed_hosts.into();
    let mut acceptor = Acceptor::new(listener);
    loop {
        let (stream, peer) = acceptor.accept().await;
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!(%peer, max_connections = config.max_connections, "admin connection refused: listener full");
            continue;
        };
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let state = Arc::clone(&state);
        let allowed_hosts = Arc::clone(&allowed_hosts);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let allowed = AllowedHosts {
                    names: &allowed_hosts,
                    local: local.ip(),
                };
                let response = if allowed.allow(&request) {
                    route(&state, &request)
                } else {
                    text(
                        StatusCode::FORBIDDEN,
                        "this Host is not served here: the admin listener answers requests for \
                         localhost, a loopback address, its own address or a name of \
                         admin.allowed_hosts\n"
                            .into(),
                    )
                };
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(error) = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(config.header_read_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "admin connection ended with an error");
            }
            drop(slot);
        });
    }
}

/// Every upstream, then the routing backends' own upstreams that still
/// exist (`/endpoints` and `remora_endpoint_in_flight` list both).
fn every_upstream<'a>(
    upstreams: &'a [Arc<Upstream>],
    backends: &'a [Weak<Upstream>],
) -> impl Iterator<Item = Arc<Upstream>> + 'a {
    (upstreams.iter().cloned()).chain(backends.iter().filter_map(Weak::upgrade))
}

fn route(state: &AdminState, request: &Request<Incoming>) -> Response<AdminBody> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET is served here\n".into(),
        );
    }
    match request.uri().path() {
        "/tap" => {
            let query = request.uri().query().unwrap_or_default();
            let accept = request.headers().get(header::ACCEPT);
            tap::stream(&state.tap, query, accept)
                .unwrap_or_else(|(status, message)| text(status, message))
        }
        "/" => dashboard(),
        "/live" => text(StatusCode::OK, "live\n".into()),
        "/ready" => match state.readiness.not_ready_reason() {
            None => text(StatusCode::OK, "ready\n".into()),
            Some(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
            ),
        },
        "/metrics" => {
            state.metrics.run_upkeep();
            let mut body = state.metrics.render();
            body.push_str(&process::render());
            body.push_str(&endpoint_load::render(
                &state.upstreams.load(),
                &state.backends.load(),
            ));
            let accept = request.headers().get(header::ACCEPT);
            let mut response = if accept
                .and_then(|accept| accept.to_str().ok())
                .is_some_and(openmetrics::preferred)
            {
                with_type(
                    StatusCode::OK,
                    openmetrics::CONTENT_TYPE,
                    openmetrics::from_prometheus(&body),
                )
            } else {
                with_type(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    body,
                )
            };
            response
                .headers_mut()
                .insert(header::VARY, header::HeaderValue::from_static("accept"));
            response
        }
        "/endpoints" => json_reply(&json::endpoints(
            &state.upstreams.load(),
            &state.backends.load(),
        )),
        "/upstreams" => json_reply(&json::upstreams(&state.upstreams.load())),
        "/errors" => json_reply(&json::errors(&state.upstreams.load())),
        "/config" => with_type(
            StatusCode::OK,
            "application/json",
            state.config_json.load().to_string(),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /, /live, /ready, /metrics, /config, /endpoints, /upstreams, /errors or /tap\n".into(),
        ),
    }
}

/// The dashboard page. Its policy lets it run its own inline script and
/// style and fetch from this listener, nothing else.
fn dashboard() -> Response<AdminBody> {
    let mut response = with_type(
        StatusCode::OK,
        "text/html; charset=utf-8",
        DASHBOARD.to_owned(),
    );
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src data:",
        ),
    );
    response
}

const DASHBOARD: &str = include_str!("dashboard.html");

fn text(status: StatusCode, body: String) -> Response<AdminBody> {
    with_type(status, "text/plain; charset=utf-8", body)
}

fn with_type(status: StatusCode, content_type: &'static str, body: String) -> Response<AdminBody> {
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

fn json_reply(value: &Value) -> Response<AdminBody> {
    let mut body = value.to_string();
    body.push('\n');
    with_type(StatusCode::OK, "application/json", body)
}
