//! Inbound identity and authorization, in two gates a request must both
//! pass: first `tls.authorization` ([`Authorizer`]: the caller's mTLS
//! identity, its deny and allow patterns, Consul intentions — L7
//! permissions and JWT requirements included — and its default), then the
//! rules of `inbound.authorization` ([`Rules`]: first match wins, then its
//! default). A denial by either is [`ProxyError::Forbidden`]: 403
//! `forbidden`, or gRPC PERMISSION_DENIED (7); it is counted
//! (`remora_authz_denied_total`) and logged with the peer and the rule.
//! Both run inside the JWT layer, so a request's verified claims
//! ([`VerifiedClaims`](crate::context::VerifiedClaims)) are there to match,
//! and inside path normalization, so rules see the normalized path.
//!
//! A request that passes is told who is calling: `x-remora-client-id` is
//! set to the peer's verified SPIFFE ID. Whatever `x-remora-client-id` the
//! request arrived with (in any spelling, TLS or not) was dropped on arrival
//! (`request_head`), so it cannot be spoofed; `Connection` cannot remove
//! the one set here (`headers`).

mod rules;

use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use ::metrics::Counter;
use futures_util::future::Either;
use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};

use self::rules::{Decision, Rules};
use crate::body::ResponseBody;
use crate::config::InboundAuthorization;
use crate::context::Direction;
use crate::error::ProxyError;
use crate::headers::X_REMORA_CLIENT_ID;
use crate::telemetry::metrics;
use crate::tls::PeerIdentity;
use crate::tls::authorization::Authorizer;

/// The rules of one listener, with the counter of their denials.
struct ListenerRules {
    rules: Rules,
    listener: String,
    denied: Counter,
}

/// Sets the peer identity header and enforces the authorizer and rules
/// (each when there is one).
#[derive(Clone)]
pub struct AuthorizationLayer {
    authorizer: Option<Arc<Authorizer>>,
    rules: Option<Arc<ListenerRules>>,
}

impl AuthorizationLayer {
    /// `rules` are those of the inbound listener of service `listener`.
    pub fn new(
        authorizer: Option<Arc<Authorizer>>,
        rules: Option<&InboundAuthorization>,
        listener: &str,
    ) -> Self {
        let rules = rules.map(|rules| {
            Arc::new(ListenerRules {
                rules: Rules::new(rules),
                listener: listener.to_owned(),
                denied: metrics::authz_denied_counter(Direction::Inbound, listener),
            })
        });
        Self { authorizer, rules }
    }
}

impl<S> Layer<S> for AuthorizationLayer {
    type Service = Authorization<S>;
    fn layer(&self, inner: S) -> Authorization<S> {
        Authorization {
            inner,
            authorizer: self.authorizer.clone(),
            rules: self.rules.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authorization<S> {
    inner: S,
    authorizer: Option<Arc<Authorizer>>,
    rules: Option<Arc<ListenerRules>>,
}

impl<S> Authorization<S> {
    /// Whether `request` from `peer` passes both gates.
    fn allows<B>(&self, request: &Request<B>, peer: Option<&PeerIdentity>) -> bool {
        if let Some(authorizer) = &self.authorizer
            && !authorizer.authorize_request(peer, request)
        {
            return false;
        }
        let Some(rules) = &self.rules else {
            return true;
        };
        let material = self.authorizer.as_ref().and_then(|a| a.material());
        let own = material.as_ref().and_then(|m| m.own_identity.as_ref());
        let decision = rules.rules.decide(request, peer, own);
        if !decision.allows() {
            rules.denied.increment(1);
            let rule = match decision {
                Decision::Rule { name, .. } => name,
                Decision::Default { .. } => "<default>",
            };
            tracing::info!(
                listener = %rules.listener,
                peer = peer.map(|p| &*p.uri).unwrap_or("<no SPIFFE ID>"),
                rule,
                path = request.uri().path(),
                "request denied by inbound.authorization"
            );
        }
        decision.allows()
    }
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
        if !self.allows(&request, peer.as_ref()) {
            let peer = peer.map_or_else(|| "<no SPIFFE ID>".to_owned(), |p| p.uri.to_string());
            return Either::Left(ready(Err(ProxyError::Forbidden { peer })));
        }
        if let Some(value) = peer.and_then(|p| HeaderValue::from_str(&p.uri).ok()) {
            request.headers_mut().insert(X_REMORA_CLIENT_ID, value);
        }
        Either::Right(self.inner.call(request))
    }
}
