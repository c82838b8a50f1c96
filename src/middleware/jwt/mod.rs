//! JWT validation at the inbound listener (`inbound.jwt`): who the caller's
//! *user* is, as mTLS says who the calling sidecar is.
//!
//! For each request:
//! 1. Every header some provider's `claims_to_headers` writes is removed, in
//!    any spelling an application may fold into it (case, `_` for `-`), so
//!    a client cannot pass claims of its own; nor can `Connection` name
//!    them (hop-by-hop stripping would remove the verified ones).
//! 2. The token is looked for at each provider's location in order
//!    (`Authorization: Bearer` by default, a header, a cookie); the first
//!    one found is the request's token. The providers reading it there are
//!    the candidates; with several, the one whose `issuer` is the token's
//!    (unverified) `iss` verifies it.
//!    A place holding two tokens (two `Authorization` fields, say) or one
//!    that is not ASCII is refused (`token`), counted for its first reader.
//! 3. No token: the request passes unauthenticated, unless the first rule
//!    whose `prefix` the path starts with, or else `required`, requires
//!    one: 401 `missing`.
//! 4. A token is verified (`verify`: algorithm for the key, signature,
//!    `iss`, `aud`, `exp`/`nbf`/`iat` with the leeway; an unknown `kid`
//!    refreshes the JWKS early once, `source`). Invalid: 401 whatever the
//!    rules say — [`ProxyError::Unauthenticated`], answered with
//!    `www-authenticate: Bearer error="invalid_token"` (gRPC: 16
//!    UNAUTHENTICATED) by `error_response`; the reason goes to the access
//!    log and `remora_jwt_validations_total`, never the token.
//!    A verified token is kept (`cache`) until it expires, so the same
//!    token sent again skips the signature check.
//! 5. Valid: the claims are set as headers (`claims_to_headers`), the token
//!    is taken out unless the provider `forward`s it, and the request
//!    carries [`VerifiedClaims`] for the authorization layer inside.

mod cache;
mod keys;
mod source;
mod token;
mod verify;

use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, Either};
use http::{HeaderMap, HeaderName, Request, Response};
use metrics::Counter;
use tower::{Layer, Service};

use self::token::unnominate;
use self::verify::{Provider, unverified_issuer};
use crate::body::ResponseBody;
use crate::config::{JwtConfig, JwtRule};
use crate::context::VerifiedClaims;
use crate::error::{ProxyError, TokenRejection};
use crate::headers::{reads_as, remove_headers};
use crate::telemetry::metrics::jwt_validations;

/// Verifies the tokens of incoming requests (see the module doc).
#[derive(Clone)]
pub struct JwtLayer {
    policy: Arc<Policy>,
}

struct Policy {
    providers: Vec<Provider>,
    required: bool,
    rules: Vec<JwtRule>,
    /// Every `claims_to_headers` header, removed from incoming requests.
    claim_headers: Vec<HeaderName>,
    missing: Counter,
}

impl JwtLayer {
    /// The layer of `config`; JWKS files are read and URLs start loading.
    pub fn new(config: &JwtConfig) -> Self {
        let providers: Vec<Provider> = config.providers.iter().filter_map(Provider::new).collect();
        let mut claim_headers: Vec<HeaderName> = (providers.iter())
            .flat_map(|provider| provider.claims_to_headers.iter())
            .map(|claim| claim.header.clone())
            .collect();
        claim_headers.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        claim_headers.dedup();
        Self {
            policy: Arc::new(Policy {
                providers,
                required: config.required,
                rules: config.rules.clone(),
                claim_headers,
                missing: jwt_validations("", TokenRejection::Missing.as_str()),
            }),
        }
    }
}

impl<S> Layer<S> for JwtLayer {
    type Service = Jwt<S>;
    fn layer(&self, inner: S) -> Jwt<S> {
        Jwt {
            inner,
            policy: Arc::clone(&self.policy),
        }
    }
}

#[derive(Clone)]
pub struct Jwt<S> {
    inner: S,
    policy: Arc<Policy>,
}

impl Policy {
    fn required(&self, path: &str) -> bool {
        (self.rules.iter())
            .find(|rule| path.starts_with(&rule.prefix))
            .map_or(self.required, |rule| rule.required)
    }

    /// The request's token and the index of the provider that verifies it;
    /// refused (with the provider that counts it) when a place holds a
    /// token twice or one that cannot be read.
    fn token_of(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<(String, usize)>, (usize, TokenRejection)> {
        let mut found = None;
        for (i, provider) in self.providers.iter().enumerate() {
            if let Some(token) = provider
                .location
                .find(headers)
                .map_err(|reason| (i, reason))?
            {
                found = Some((i, token));
                break;
            }
        }
        let Some((first, token)) = found else {
            return Ok(None);
        };
        let reads_it = |provider: &&Provider| provider.location.find(headers) == Ok(Some(token));
        let mut candidates = (self.providers.iter().enumerate().skip(first))
            .filter(|(_, provider)| reads_it(provider))
            .map(|(i, _)| i);
        let chosen = match (candidates.next(), candidates.next()) {
            (Some(only), None) => only,
            _ => {
                let issuer = unverified_issuer(token);
                (self.providers.iter().enumerate().skip(first))
                    .filter(|(_, provider)| reads_it(provider))
                    .find(|(_, provider)| issuer.as_deref() == Some(provider.issuer.as_str()))
                    .map_or(first, |(i, _)| i)
            }
        };
        Ok(Some((token.to_owned(), chosen)))
    }
}

impl<S, B> Service<Request<B>> for Jwt<S>
where
    S: Service<Request<B>, Response = Response<ResponseBody>, Error = ProxyError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<ResponseBody>;
    type Error = ProxyError;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response<ResponseBody>, ProxyError>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let policy = Arc::clone(&self.policy);
        if !policy.claim_headers.is_empty() {
            let headers = request.headers_mut();
            remove_headers(headers, |name| {
                (policy.claim_headers.iter()).any(|claim| reads_as(name, claim))
            });
            unnominate(headers, &policy.claim_headers);
        }
        let (token, index) = match policy.token_of(request.headers()) {
            Ok(Some(found)) => found,
            Ok(None) => {
                if policy.required(request.uri().path()) {
                    policy.missing.increment(1);
                    return refuse(TokenRejection::Missing);
                }
                return Either::Left(self.inner.call(request));
            }
            Err((index, reason)) => {
                let provider = &policy.providers[index];
                provider.count(Err(reason));
                tracing::debug!(provider = %provider.name, %reason, "JWT refused");
                return refuse(reason);
            }
        };
        // The service that was polled ready goes into the future.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Either::Right(Box::pin(async move {
            let provider = &policy.providers[index];
            let verified = provider.verify(&token).await;
            provider.count(verified.as_ref().map(|_| ()).map_err(|reason| *reason));
            let claims = verified.map_err(|reason| {
                tracing::debug!(provider = %provider.name, %reason, "JWT refused");
                ProxyError::Unauthenticated(reason)
            })?;
            let headers = request.headers_mut();
            for claim in &provider.claims_to_headers {
                claim.apply(&claims, headers);
            }
            if !provider.forward {
                provider.location.remove(headers);
            }
            request.extensions_mut().insert(VerifiedClaims {
                provider: Arc::clone(&provider.name),
                claims,
            });
            inner.call(request).await
        }))
    }
}

/// A 401 for `reason`, as this layer's future.
fn refuse<F>(
    reason: TokenRejection,
) -> Either<F, BoxFuture<'static, Result<Response<ResponseBody>, ProxyError>>> {
    let refused = Err(ProxyError::Unauthenticated(reason));
    Either::Right(Box::pin(std::future::ready(refused)))
}
