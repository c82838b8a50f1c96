//! Request timeout: the whole exchange up to the response head must finish
//! within the configured duration, else the request is abandoned (the upstream
//! sees its connection or stream reset) and the client gets 504 `timeout`.
//! Without a configured duration the layer passes requests straight through.

use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{HeaderName, HeaderValue, Request};
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::error::ProxyError;

/// The gRPC deadline header (gRPC over HTTP/2: `TimeoutValue TimeoutUnit`).
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// When the whole request must be done, set in the request's extensions by
/// the timeout layer; the upstream request carries what is left of it.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(pub Instant);

/// `grpc-timeout` for `remaining`: at most 8 digits, in the finest unit
/// that fits (milliseconds up to about 27 hours, then seconds).
pub fn encode_grpc_timeout(remaining: Duration) -> HeaderValue {
    let millis = remaining.as_millis();
    let text = if millis <= 99_999_999 {
        format!("{millis}m")
    } else {
        format!("{}S", remaining.as_secs().min(99_999_999))
    };
    // Digits and one ASCII letter are always a valid header value.
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("99999999S"))
}

#[derive(Clone, Copy)]
pub struct TimeoutLayer {
    limit: Option<Duration>,
}

impl TimeoutLayer {
    pub fn new(limit: Option<Duration>) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;
    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout {
            inner,
            limit: self.limit,
        }
    }
}

#[derive(Clone)]
pub struct Timeout<S> {
    inner: S,
    limit: Option<Duration>,
}

impl<S, B> Service<Request<B>> for Timeout<S>
where
    S: Service<Request<B>, Error = ProxyError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = ProxyError;
    type Future = BoxFuture<'static, Result<S::Response, ProxyError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let response = self.inner.call(request);
        match self.limit {
            None => Box::pin(response),
            Some(limit) => Box::pin(async move {
                tokio::time::timeout(limit, response)
                    .await
                    .unwrap_or(Err(ProxyError::Timeout(limit)))
            }),
        }
    }
}
