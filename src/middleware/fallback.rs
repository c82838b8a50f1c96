//! Fallbacks (Hystrix's fallback; `fallback:` of an upstream or a route):
//! when the request fails with one of the configured triggers — the
//! circuit breaker is open (`circuit_open`), no endpoint is healthy
//! (`no_healthy_endpoints`, also when there are none) or the rate limit
//! refused it (`rate_limited`) — the client gets the fallback instead of
//! the proxy-made error:
//!
//! * `response`: a static response (status, headers, body);
//! * `backend`: the request goes to one of the upstream's `backends:`
//!   (with its own breaker and balancer), e.g. a degraded read-only service.
//!   Its errors are answered as usual.
//!
//! Either way the response carries `x-remora-fallback: <trigger>`, and
//! `remora_fallbacks_total` counts it. The layer sits just inside the error
//! response, outside the rate limit, retries and backends, so it sees every
//! trigger. To send the request on, the body is kept replayable: every
//! trigger fires before any of the body was sent, except a breaker or
//! health verdict met on a retry, after the body was read past
//! [`FALLBACK_BODY_LIMIT`] — then the error stands.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use tower::{Layer, Service, ServiceExt};

use crate::body::{RequestBody, ResponseBody};
use crate::config::{FallbackConfig, FallbackResponse, FallbackTrigger};
use crate::error::{ErrorKind, ProxyError};
use crate::svc::ConcreteService;
use crate::telemetry::metrics;

/// Request body bytes kept for the fallback backend at most.
pub const FALLBACK_BODY_LIMIT: usize = 64 * 1024;

/// The header that marks a fallback response.
pub const X_REMORA_FALLBACK: HeaderName = HeaderName::from_static("x-remora-fallback");

/// What the inner service answered.
type Answer = Result<Response<ResponseBody>, ProxyError>;

/// What a fallback answers with.
#[derive(Clone)]
enum Action {
    Response(Arc<StaticResponse>),
    Backend(ConcreteService),
}

struct StaticResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// Builds [`Fallback`] services.
#[derive(Clone)]
pub struct FallbackLayer {
    upstream: Arc<str>,
    triggers: Vec<FallbackTrigger>,
    action: Action,
}

impl FallbackLayer {
    /// The fallback of `config`; `backend` finds the service of a named
    /// backend (validation made sure it exists).
    pub fn new(
        config: &FallbackConfig,
        upstream: &str,
        backend: impl Fn(&str) -> Option<ConcreteService>,
    ) -> Option<Self> {
        let action = match (&config.response, &config.backend) {
            (Some(response), _) => Action::Response(Arc::new(static_response(response))),
            (None, Some(name)) => Action::Backend(backend(name)?),
            (None, None) => return None,
        };
        Some(Self {
            upstream: upstream.into(),
            triggers: config.on.clone(),
            action,
        })
    }

    /// The trigger of a failed `answer`, with its error; an answer that is
    /// not one of ours breaks out, to be returned as it is.
    fn triggered(&self, answer: Answer) -> ControlFlow<Answer, (FallbackTrigger, ProxyError)> {
        match answer {
            Err(error) => match self.trigger(&error) {
                Some(trigger) => ControlFlow::Continue((trigger, error)),
                None => ControlFlow::Break(Err(error)),
            },
            answered => ControlFlow::Break(answered),
        }
    }

    /// The trigger `error` is, when it is one of ours.
    fn trigger(&self, error: &ProxyError) -> Option<FallbackTrigger> {
        let trigger = match error.kind() {
            ErrorKind::CircuitOpen => FallbackTrigger::CircuitOpen,
            ErrorKind::NoEndpoints | ErrorKind::NoHealthyEndpoints => {
                FallbackTrigger::NoHealthyEndpoints
            }
            ErrorKind::RateLimited => FallbackTrigger::RateLimited,
            _ => return None,
        };
        self.triggers.contains(&trigger).then_some(trigger)
    }

    fn count(&self, trigger: FallbackTrigger) {
        metrics::fallback(&self.upstream, trigger.as_str());
    }
}

fn static_response(config: &FallbackResponse) -> StaticResponse {
    let headers = (config.headers.iter())
        .filter_map(|(name, value)| {
            let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
            Some((name, HeaderValue::from_str(value).ok()?))
        })
        .collect();
    StaticResponse {
        status: StatusCode::from_u16(config.status).unwrap_or(StatusCode::OK),
        headers,
        body: Bytes::from(config.body.clone()),
    }
}

impl StaticResponse {
    fn response(&self) -> Response<ResponseBody> {
        let mut response = Response::new(ResponseBody::local(self.body.clone()));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers.clone();
        response
    }
}

impl<S> Layer<S> for FallbackLayer {
    type Service = Fallback<S>;
    fn layer(&self, inner: S) -> Fallback<S> {
        Fallback {
            inner,
            layer: self.clone(),
        }
    }
}

/// Answers the configured triggers with the fallback.
#[derive(Clone)]
pub struct Fallback<S> {
    inner: S,
    layer: FallbackLayer,
}

impl<S> Service<Request<RequestBody>> for Fallback<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>, Error = ProxyError>
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
        let layer = self.layer.clone();
        match &self.layer.action {
            Action::Response(response) => {
                let response = Arc::clone(response);
                let answer = self.inner.call(request);
                Box::pin(async move {
                    let (trigger, _) = match layer.triggered(answer.await) {
                        ControlFlow::Continue(triggered) => triggered,
                        ControlFlow::Break(passed_on) => return passed_on,
                    };
                    layer.count(trigger);
                    Ok(marked(response.response(), trigger))
                })
            }
            Action::Backend(backend) => {
                let backend = backend.clone();
                let (head, body) = request.into_parts();
                let (body, replay) = body.replayable(FALLBACK_BODY_LIMIT);
                let again = head.clone();
                let answer = self.inner.call(Request::from_parts(head, body));
                Box::pin(async move {
                    let (trigger, error) = match layer.triggered(answer.await) {
                        ControlFlow::Continue(triggered) => triggered,
                        ControlFlow::Break(passed_on) => return passed_on,
                    };
                    let Some(body) = replay.next_body() else {
                        return Err(error);
                    };
                    layer.count(trigger);
                    let response = backend.oneshot(Request::from_parts(again, body)).await?;
                    Ok(marked(response, trigger))
                })
            }
        }
    }
}

fn marked(
    mut response: Response<ResponseBody>,
    trigger: FallbackTrigger,
) -> Response<ResponseBody> {
    response.headers_mut().insert(
        X_REMORA_FALLBACK,
        HeaderValue::from_static(trigger.as_str()),
    );
    response
}
