//! Mirroring: a copy of `percent` of a route's requests goes to a shadow
//! backend, in a task of its own; the shadow's response is read and
//! discarded, its failures are counted and never reach the caller.
//!
//! The caller's request is never held back: its body streams upstream as
//! usual while a copy of at most `max_body` bytes is kept (`body::tee`). The
//! shadow request is sent once the client's body has ended within the cap
//! (at once for a request without a body); a body over the cap — known
//! from its size hint, or found while streaming — or one that does not end
//! within `timeout` is not mirrored. HTTP upgrades are not mirrored. So a
//! gRPC unary call is mirrored once its request message is whole; a long
//! stream is mirrored only if it ends within `timeout` and `max_body`.
//!
//! The shadow leg is bounded: at most `max_in_flight` shadow requests at once
//! (a slot is held from the request's arrival; more are skipped, not queued),
//! the wait for the body and the shadow call each cut off after `timeout`,
//! the response body drained frame by frame (never held). Outcomes:
//! `remora_mirror_requests_total{upstream, route, outcome}` with `answered`
//! (any response, read to its end), `failed`, `skipped_body`, `skipped_busy`.
//!
//! The shadow request goes straight to the backend's balancer (no breaker,
//! no retries, no concurrency limit of the caller's upstream), so shadow
//! failures cannot open a breaker the caller depends on. The shadow
//! backend's own outlier detection does see its tries.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{Request, Response, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use metrics::Counter;
use tokio::sync::{Semaphore, oneshot};
use tower::{Layer, Service, ServiceExt};

use crate::body::tee::Copy;
use crate::body::{RequestBody, ResponseBody};
use crate::config::MirrorConfig;
use crate::error::ProxyError;
use crate::forward::Forward;
use crate::headers::is_upgrade_request;
use crate::telemetry::metrics::mirror_counter;

struct Shadow {
    forward: Forward,
    percent: f64,
    max_body: usize,
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
                max_body: config.max_body,
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
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = ProxyError>,
    S::Future: Send + 'static,
{
    type Response = Response<ResponseBody>;
    type Error = ProxyError;
    type Future = BoxFuture<'static, Result<Response<ResponseBody>, ProxyError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        let request = self.shadow.mirror(request);
        Box::pin(self.inner.call(request))
    }
}

impl Shadow {
    /// Starts the shadow leg of `request` when it is sampled and fits the
    /// bounds; returns the request to send on, its body teed when mirrored.
    fn mirror(self: &Arc<Self>, request: Request<RequestBody>) -> Request<RequestBody> {
        let sampled = self.percent >= 100.0 || fastrand::f64() * 100.0 < self.percent;
        if !sampled {
            return request;
        }
        let upgrade =
            request.version() <= Version::HTTP_11 && is_upgrade_request(request.headers());
        if upgrade || request.body().size_hint().lower() > self.max_body as u64 {
            self.skipped_body.increment(1);
            return request;
        }
        let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
            self.skipped_busy.increment(1);
            return request;
        };
        let mut head = Request::new(());
        *head.method_mut() = request.method().clone();
        *head.uri_mut() = request.uri().clone();
        *head.version_mut() = request.version();
        *head.headers_mut() = request.headers().clone();
        let (parts, body) = request.into_parts();
        let (body, copy) = if body.is_end_stream() {
            (body, None)
        } else {
            let (body, copy) = body.teed(self.max_body);
            (body, Some(copy))
        };
        let shadow = Arc::clone(self);
        crate::task::spawn(async move {
            let _slot = slot;
            shadow.send(head, copy).await;
        });
        Request::from_parts(parts, body)
    }

    /// Waits (up to `timeout`) for the whole body, then sends the copy and
    /// reads the answer (up to `timeout` again).
    async fn send(&self, head: Request<()>, copy: Option<oneshot::Receiver<Copy>>) {
        let body = match copy {
            None => RequestBody::empty(),
            Some(copy) => match tokio::time::timeout(self.timeout, copy).await {
                Ok(Ok((data, trailers))) => RequestBody::buffered(data, trailers),
                // Over `max_body`, failed, or not whole in time.
                Ok(Err(_)) | Err(_) => {
                    self.skipped_body.increment(1);
                    return;
                }
            },
        };
        let request = head.map(|()| body);
        let sent = tokio::time::timeout(self.timeout, async {
            let response = self.forward.clone().oneshot(request).await?;
            drain(response.into_body()).await;
            Ok::<_, ProxyError>(())
        });
        match sent.await {
            Ok(Ok(())) => self.answered.increment(1),
            Ok(Err(_)) | Err(_) => self.failed.increment(1),
        }
    }
}

/// Reads a shadow response to its end, one frame at a time.
async fn drain(mut body: ResponseBody) {
    while let Some(Ok(_)) = body.frame().await {}
}
