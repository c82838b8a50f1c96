//! The type-erased services the stacks are made of, named once, below every
//! module that builds or holds them (`stack` builds them, `routing`,
//! `server`, `live` and `transparent` hold them).
//!
//! [`SharedService`] erases a stack behind an `Arc`: cloning it (per
//! request, per connection, per retry) counts a reference and allocates
//! nothing, where tower's `BoxCloneSyncService` allocates a new box of the
//! whole stack on every clone, nested boxes included. Each call clones the
//! stack inside (its layers hold `Arc`s) and boxes the one future that
//! waits for its readiness and runs the call.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use hyper::body::Incoming;
use tower::{Service, ServiceExt};

use crate::body::{RequestBody, ResponseBody};
use crate::error::ProxyError;

/// The service behind an HTTP listener.
pub type HttpService = SharedService<Request<Incoming>, Response<ResponseBody>, Infallible>;

/// A route's stack below the router, proxy errors already turned into responses.
pub type RouteService = SharedService<Request<RequestBody>, Response<ResponseBody>, Infallible>;

/// One backend's stack: breaker, concurrency limit, balancer and endpoints.
pub type ConcreteService = SharedService<Request<RequestBody>, Response<ResponseBody>, ProxyError>;

/// The boxed future of a [`SharedService`] call.
pub type CallFuture<Res, Err> = Pin<Box<dyn Future<Output = Result<Res, Err>> + Send>>;

/// A type-erased service whose clones share one stack.
pub struct SharedService<Req, Res, Err>(Arc<dyn ErasedCall<Req, Res, Err>>);

impl<Req, Res, Err> SharedService<Req, Res, Err> {
    pub fn new<S>(service: S) -> Self
    where
        S: Service<Req, Response = Res, Error = Err> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        Req: Send + 'static,
    {
        Self(Arc::new(service))
    }
}

impl<Req, Res, Err> Clone for SharedService<Req, Res, Err> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<Req, Res, Err> Service<Req> for SharedService<Req, Res, Err> {
    type Response = Res;
    type Error = Err;
    type Future = CallFuture<Res, Err>;

    /// Always ready: the stack's readiness is awaited in the call's future.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Err>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        self.0.call(request)
    }
}

/// A service called through a shared reference: a clone of it takes the request.
trait ErasedCall<Req, Res, Err>: Send + Sync {
    fn call(&self, request: Req) -> CallFuture<Res, Err>;
}

impl<S, Req> ErasedCall<Req, S::Response, S::Error> for S
where
    S: Service<Req> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    Req: Send + 'static,
{
    fn call(&self, request: Req) -> CallFuture<S::Response, S::Error> {
        Box::pin(self.clone().oneshot(request))
    }
}
