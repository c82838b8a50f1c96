//! Mirroring: a copy of `percent` of a route's requests goes to a shadow
//! backend, in a task of its own; the shadow's response is read and
//! discarded, its failures are counted and never reach the caller.
//!
//! The shadow leg is bounded: at most `max_in_flight` shadow requests at once
//! (more are skipped, not queued), each abandoned after `timeout`, its
//! response body drained frame by frame (never held). Only requests whose
//! body is known to be at most `max_body` bytes are mirrored — an empty body,
//! or a `content-length` within the cap; such a body is read into memory
//! (at most `max_body` bytes) before both legs are sent, so the caller's
//! request waits for its own small body, not for the shadow. Requests with a
//! larger or unknown-length (chunked, streaming) body and HTTP upgrades are
//! not mirrored. Outcomes: `remora_mirror_requests_total{upstream, route,
//! outcome}` with `answered`, `failed`, `skipped_body`, `skipped_busy`.
//!
//! The shadow request goes straight to the backend's balancer (no breaker,
//! no retries, no concurrency limit of the caller's upstream), so shadow
//! failures cannot open a breaker the caller depends on. The shadow
//! backend's own outlier detection does see its tries. gRPC clients send no
//! `content-length`, so gRPC requests are not mirrored.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{Request, Response, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use metrics::Counter;
use tokio::sync::Semaphore;
use tower::{Layer, Service, ServiceExt};

use crate::body::{RequestBody, ResponseBody};
use crate::config::MirrorConfig;
use crate::error::ProxyError;
use crate::forward::Forward;
use crate::headers::is_upgrade_request;
use crate::telemetry::metrics::mirror_counter;

struct Shadow {
    forward: Forward,
    percent: f64,
    max_body: u64,
    timeout: Duration,
    slots: Arc<Semaphore>,
    answered: Counter,
    failed: Counter,
    skipped_body: Counter,
    skipped_busy: Counter,
}

/// Mirrors a share of requests to `forward` (the shadow backend).
#[derive(Clone)]
pub struct MirrorLayer {
    shadow: Arc<Shadow>,
}

impl MirrorLayer {
    pub fn new(config: &MirrorConfig, forward: Forward, upstream: &str, route: &str) -> Self {
        let counter = |outcome| mirror_counter(upstream, route, outcome);
        Self {
            shadow: Arc::new(Shadow {
                forward,
                percent: config.percent,
                max_body: config.max_body as u64,
                timeout: config.timeout,
                slots: Arc::new(Semaphore::new(config.max_in_flight as usize)),
                answered: counter("answered"),
                failed: counter("failed"),
                skipped_body: counter("skipped_body"),
                skipped_busy: counter("skipped_busy"),
            }),
        }
    }
}

impl<S> Layer<S> for MirrorLayer {
    type Service = Mirror<S>;
    fn layer(&self, inner: S) -> Mirror<S> {
        Mirror {
            inner,
            shadow: Arc::clone(&self.shadow),
        }
    }
}

#[derive(Clone)]
pub struct Mirror<S> {
    inner: S,
    shadow: Arc<Shadow>,
}

impl<S> Service<Request<RequestBody>> for Mirror<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = ProxyError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<ResponseBody>;
    type Error = ProxyError;
    type Future = BoxFuture<'static, Result<Response<ResponseBody>, ProxyError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        let shadow = &self.shadow;
        let sampled = shadow.percent >= 100.0 || fastrand::f64() * 100.0 < shadow.percent;
        if !sampled {
            return Box::pin(self.inner.call(request));
        }
        let upgrade =
            request.version() <= Version::HTTP_11 && is_upgrade_request(request.headers());
        let small = request
            .body()
            .size_hint()
            .upper()
            .is_some_and(|n| n <= shadow.max_body);
        if upgrade || !small {
            shadow.skipped_body.increment(1);
            return Box::pin(self.inner.call(request));
        }
        let Ok(slot) = Arc::clone(&shadow.slots).try_acquire_owned() else {
            shadow.skipped_busy.increment(1);
            return Box::pin(self.inner.call(request));
        };
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shadow = Arc::clone(shadow);
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let collected = (body.collect().await).map_err(|error| ProxyError::ClientBody {
                source: error.into(),
            })?;
            let trailers = collected.trailers().cloned();
            let data = collected.to_bytes();
            let mut copy = Request::new(RequestBody::buffered(data.clone(), trailers.clone()));
            *copy.method_mut() = parts.method.clone();
            *copy.uri_mut() = parts.uri.clone();
            *copy.version_mut() = parts.version;
            *copy.headers_mut() = parts.headers.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let sent = tokio::time::timeout(shadow.timeout, async {
                    let response = shadow.forward.clone().oneshot(copy).await?;
                    drain(response.into_body()).await;
                    Ok::<_, ProxyError>(())
                });
                match sent.await {
                    Ok(Ok(())) => shadow.answered.increment(1),
                    Ok(Err(_)) | Err(_) => shadow.failed.increment(1),
                }
            });
            let request = Request::from_parts(parts, RequestBody::buffered(data, trailers));
            inner.oneshot(request).await
        })
    }
}

/// Reads a shadow response to its end, one frame at a time.
async fn drain(mut body: ResponseBody) {
    while let Some(Ok(_)) = body.frame().await {}
}
