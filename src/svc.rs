//! The type-erased services the stacks are made of, named once, below every
//! module that builds or holds them (`stack` builds them, `routing`,
//! `server`, `live` and `transparent` hold them).

use std::convert::Infallible;

use http::{Request, Response};
use hyper::body::Incoming;
use tower::util::BoxCloneSyncService;

use crate::body::{RequestBody, ResponseBody};
use crate::error::ProxyError;

/// The service behind an HTTP listener.
pub type HttpService = BoxCloneSyncService<Request<Incoming>, Response<ResponseBody>, Infallible>;

/// A route's stack below the router, proxy errors already turned into responses.
pub type RouteService =
    BoxCloneSyncService<Request<RequestBody>, Response<ResponseBody>, Infallible>;

/// One backend's stack: breaker, concurrency limit, balancer and endpoints.
pub type ConcreteService =
    BoxCloneSyncService<Request<RequestBody>, Response<ResponseBody>, ProxyError>;
