//! Inbound identity and authorization: refuses a peer the authorizer denies
//! ([`ProxyError::Forbidden`]: 403, or gRPC PERMISSION_DENIED), and tells the
//! application who is calling by setting `x-remora-client-id` to the peer's
//! verified SPIFFE ID. Whatever `x-remora-client-id` the request arrived
//! with (in any spelling, TLS or not) was dropped on arrival
//! (`request_head`), so it cannot be spoofed; `Connection` cannot remove
//! the one set here (`headers`).

use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};

use crate::body::ResponseBody;
use crate::error::ProxyError;
use crate::headers::X_REMORA_CLIENT_ID;
use crate::tls::PeerIdentity;
use crate::tls::authorization::Authorizer;

/// Sets the peer identity header and, with an authorizer, enforces it.
#[derive(Clone)]
pub struct AuthorizationLayer {
    authorizer: Option<Arc<Authorizer>>,
}

impl AuthorizationLayer {
    pub fn new(authorizer: Option<Arc<Authorizer>>) -> Self {
        Self { authorizer }
    }
}

impl<S> Layer<S> for AuthorizationLayer {
    type Service = Authorization<S>;
    fn layer(&self, inner: S) -> Authorization<S> {
        Authorization {
            inner,
            authorizer: self.authorizer.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authorization<S> {
    inner: S,
    authorizer: Option<Arc<Authorizer>>,
}

impl<S, B> Service<Request<B>> for Authorization<S>
where
    S: Service<Request<B>, Response = Response<ResponseBody>, Error = ProxyError>,
{
    type Response = Response<ResponseBody>;
    type Error = ProxyError;
    type Future = Either<Ready<Result<Response<ResponseBody>, ProxyError>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let peer = request.extensions().get::<PeerIdentity>().cloned();
        if let Some(authorizer) = &self.authorizer
            && !authorizer.authorize(peer.as_ref())
        {
            let peer = peer.map_or_else(|| "<no SPIFFE ID>".to_owned(), |p| p.uri.to_string());
            return Either::Left(ready(Err(ProxyError::Forbidden { peer })));
        }
        if let Some(value) = peer.and_then(|p| HeaderValue::from_str(&p.uri).ok()) {
            request.headers_mut().insert(X_REMORA_CLIENT_ID, value);
        }
        Either::Right(self.inner.call(request))
    }
}
