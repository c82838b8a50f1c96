//! Per-request pickup of a listener's current stack. Every HTTP listener
//! serves through a [`SwappableService`]: each request loads the stack the
//! listener has *now* (one lock-free `ArcSwap` load) and runs on it to its
//! end. A reload stores a new stack; the next request — on a new connection
//! or on one opened long before — uses it, while requests already running
//! finish on the stack they started with. Rejects nothing.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;
use tower::Service;

use crate::body::ResponseBody;
use crate::svc::{CallFuture, HttpService, SharedService};

/// The stack slot of one listener, shared by its connections and by reloads.
pub type StackSlot = Arc<ArcSwap<HttpService>>;

/// Serves each request on the stack in the slot at the time it arrives.
#[derive(Clone)]
pub struct SwappableService(StackSlot);

impl SwappableService {
    /// The listener's service, type-erased like every stack.
    pub fn boxed(slot: StackSlot) -> HttpService {
        SharedService::new(SwappableService(slot))
    }
}

impl Service<Request<Incoming>> for SwappableService {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = CallFuture<Response<ResponseBody>, Infallible>;

    /// Always ready: readiness is the loaded stack's business, awaited in its
    /// call's future (a [`SharedService`] is always ready).
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        self.0.load().serve(request)
    }
}
