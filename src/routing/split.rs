//! The concrete side of a route: picks one of its backends by weight for each
//! try and sends the request to that backend's stack (breaker, concurrency
//! limit, balancer). A backend is drawn in proportion to its weight; with
//! `sticky`, the draw is a hash (xxh3) of the header or cookie value instead
//! of a random number, so the same key lands on the same backend as long as
//! the weights stay the same. Requests without the key are drawn at random.
//! Every try is counted in `remora_route_backend_requests_total`.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use http::{Request, Response, header};
use metrics::Counter;
use tower::Service;

use crate::body::{RequestBody, ResponseBody};
use crate::config::StickyKey;
use crate::error::ProxyError;
use crate::svc::ConcreteService;

/// One backend of a split.
pub struct SplitTarget {
    pub weight: u32,
    pub service: ConcreteService,
    /// `remora_route_backend_requests_total` of this route and backend.
    pub tries: Counter,
}

struct Targets {
    /// Targets with their cumulative weight (exclusive upper bound).
    targets: Vec<(u64, SplitTarget)>,
    total: u64,
    sticky: Option<StickyKey>,
}

/// Sends each try to one backend, chosen by weight.
#[derive(Clone)]
pub struct Split {
    targets: Arc<Targets>,
}

impl Split {
    /// `targets` must have a positive total weight (config::validate::routing).
    pub fn new(targets: Vec<SplitTarget>, sticky: Option<StickyKey>) -> Self {
        let mut total = 0;
        let targets = (targets.into_iter())
            .filter(|target| target.weight > 0)
            .map(|target| {
                total += u64::from(target.weight);
                (total, target)
            })
            .collect();
        Self {
            targets: Arc::new(Targets {
                targets,
                total,
                sticky,
            }),
        }
    }
}

impl Targets {
    fn pick<B>(&self, request: &Request<B>) -> Option<&SplitTarget> {
        let key = self
            .sticky
            .as_ref()
            .and_then(|sticky| sticky_key(sticky, request));
        let point = match key {
            Some(key) => xxhash_rust::xxh3::xxh3_64(key) % self.total.max(1),
            None => fastrand::u64(..self.total.max(1)),
        };
        (self.targets.iter())
            .find(|(upper, _)| point < *upper)
            .map(|(_, target)| target)
    }
}

/// The bytes that keep a request on one side.
fn sticky_key<'a, B>(sticky: &StickyKey, request: &'a Request<B>) -> Option<&'a [u8]> {
    match sticky {
        StickyKey::Header(name) => request.headers().get(name).map(|v| v.as_bytes()),
        StickyKey::Cookie(name) => (request.headers().get_all(header::COOKIE).iter())
            .filter_map(|value| value.to_str().ok())
            .flat_map(|cookies| cookies.split(';'))
            .find_map(|cookie| {
                let (key, value) = cookie.trim().split_once('=')?;
                (key == name).then_some(value.as_bytes())
            }),
    }
}

impl Service<Request<RequestBody>> for Split {
    type Response = Response<ResponseBody>;
    type Error = ProxyError;
    type Future = BoxFuture<'static, Result<Response<ResponseBody>, ProxyError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        let Some(target) = self.targets.pick(&request) else {
            // Unreachable with a checked config: every split has a weight.
            return Box::pin(std::future::ready(Err(ProxyError::NoEndpoints {
                upstream: "(empty split)".to_owned(),
            })));
        };
        target.tries.increment(1);
        target.service.serve(request)
    }
}
