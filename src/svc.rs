//! The type-erased services the stacks are made of, named once, below every
//! module that builds or holds them (`stack` builds them, `routing`,
//! `server`, `live` and `transparent` hold them).
//!
//! [`SharedService`] erases a stack behind an `Arc`: cloning it (per
//! request, per connection, per retry) counts a reference and allocates
//! nothing, where tower's `BoxCloneSyncService` allocates a new box of the
//! whole stack on every clone, nested boxes included. Each call clones the
//! stack inside (its layers hold `Arc`s); a stack that is ready at once is
//! called at once and only its call's future is boxed, otherwise the box
//! holds the future that waits for its readiness and then calls it. (A
//! request passes four of these; boxing the waiting future for each cost 3 %
//! of a request's instructions.)

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

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

/// Boxes the future `make` returns, made in its box. A future is as large
/// as its largest state (`forward`'s, kilobytes), however little of it is
/// set when it starts; `Box::pin` builds it on the stack and copies all of
/// it into the box, while a box allocated first lets the compiler build it
/// there (measured: `docs/benchmarks.md`).
pub fn boxed<F: Future>(make: impl FnOnce() -> F) -> Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

/// A type-erased service whose clones share one stack.
pub struct SharedService<Req, Res, Err>(Arc<dyn ErasedCall<Req, Res, Err>>);

impl<Req, Res, Err> SharedService<Req, Res, Err> {
    pub fn new<S>(service: S) -> Self
    where
        S: Service<Req, Response = Res, Error = Err> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        Res: Send + 'static,
        Err: Send + 'static,
        Req: Send + 'static,
    {
        Self(Arc::new(service))
    }

    /// Calls the stack. A `SharedService` is always ready (its stack's
    /// readiness is awaited in the call's future), so this is
    /// `Service::call` without the `poll_ready` before it, and without a
    /// clone of the service (or tower's `Oneshot`) to make the call.
    pub fn serve(&self, request: Req) -> CallFuture<Res, Err> {
        self.0.call(request)
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
        self.serve(request)
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
    S::Response: Send + 'static,
    S::Error: Send + 'static,
    Req: Send + 'static,
{
    /// A stack that is ready at once (the usual case) is called at once, so
    /// the box holds only the call's future; otherwise the box holds the
    /// clone and the request until the stack is ready.
    fn call(&self, request: Req) -> CallFuture<S::Response, S::Error> {
        let mut service = self.clone();
        match service.poll_ready(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Ok(())) => Box::pin(Service::call(&mut service, request)),
            Poll::Ready(Err(error)) => Box::pin(std::future::ready(Err(error))),
            Poll::Pending => Box::pin(service.oneshot(request)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::{Ready, ready};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::Waker;

    /// Ready only once opened, like a stack whose limit is reached.
    #[derive(Clone, Default)]
    struct Gated {
        open: Arc<AtomicBool>,
        waiting: Arc<Mutex<Option<Waker>>>,
    }

    impl Gated {
        fn open(&self) {
            self.open.store(true, Ordering::SeqCst);
            if let Some(waker) = self.waiting.lock().unwrap().take() {
                waker.wake();
            }
        }
    }

    impl Service<u32> for Gated {
        type Response = u32;
        type Error = Infallible;
        type Future = Ready<Result<u32, Infallible>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            if self.open.load(Ordering::SeqCst) {
                return Poll::Ready(Ok(()));
            }
            *self.waiting.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }

        fn call(&mut self, n: u32) -> Self::Future {
            ready(Ok(n + 1))
        }
    }

    #[tokio::test]
    async fn a_call_waits_for_its_stack_to_be_ready() {
        let gated = Gated::default();
        let mut shared = SharedService::new(gated.clone()).clone();
        let mut call = shared.ready().await.unwrap().call(1);
        assert!(futures_util::poll!(&mut call).is_pending());
        gated.open();
        assert_eq!(call.await.unwrap(), 2);
    }

    /// A stack whose readiness fails answers the call with that failure.
    #[tokio::test]
    async fn a_call_gets_its_stacks_readiness_error() {
        #[derive(Clone)]
        struct Broken;
        impl Service<u32> for Broken {
            type Response = u32;
            type Error = &'static str;
            type Future = Ready<Result<u32, &'static str>>;

            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), &'static str>> {
                Poll::Ready(Err("broken"))
            }

            fn call(&mut self, _: u32) -> Self::Future {
                unreachable!("never ready")
            }
        }
        let shared = SharedService::new(Broken);
        assert_eq!(shared.oneshot(1).await, Err("broken"));
    }

    #[tokio::test]
    async fn clones_serve_concurrent_calls_on_one_stack() {
        let gated = Gated::default();
        gated.open();
        let shared = SharedService::new(gated);
        let calls = (0..100).map(|n| shared.clone().oneshot(n));
        let answers = futures_util::future::join_all(calls).await;
        let answers: Vec<u32> = answers.into_iter().map(Result::unwrap).collect();
        assert_eq!(answers, (1..=100).collect::<Vec<_>>());
        assert_eq!(
            Arc::strong_count(&shared.0),
            1,
            "no clone outlives its call"
        );
    }
}
