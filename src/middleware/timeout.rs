//! Request timeout: the whole exchange up to the response head must finish
//! within the configured duration, else the request is abandoned (the upstream
//! sees its connection or stream reset) and the client gets 504 `timeout`.
//! Without a configured duration the layer passes requests straight through.

use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::Request;
use tower::{Layer, Service};

use crate::error::ProxyError;

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
