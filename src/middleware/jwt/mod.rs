//! JWT validation at the inbound listener (`inbound.jwt`): who the caller's
//! *user* is, as mTLS says who the calling sidecar is.
//!
//! For each request:
//! 1. Every header some provider's `claims_to_headers` writes is removed, in
//!    any spelling an application may fold into it (case, `_` for `-`), so
//!    a client cannot pass claims of its own; nor can `Connection` name
//!    them (hop-by-hop stripping would remove the verified ones). A token
//!    header (`from: { header }`) in another spelling (`x_token` for
//!    `x-token`) is removed too: an application may read it as the token.
//! 2. Tokens are looked for at every place a provider reads one
//!    (`Authorization: Bearer` by default, a header, a cookie), each place
//!    once, in the order of the providers; the first found is the
//!    request's token. A token is verified by the provider reading its
//!    place; with several, the one whose `issuer` is the token's
//!    (unverified) `iss`. A place holding two tokens (two `Authorization`
//!    fields, say) is refused as `duplicate`, one that is not ASCII (or a
//!    token cookie only a lax parser finds) as `malformed` (`token`), each
//!    counted for the place's first reader.
//! 3. No token: the request passes unauthenticated, unless the first rule
//!    whose `prefix` the path starts with, or else `required`, requires
//!    one: 401 `missing`.
//! 4. Every token found is verified (`verify`: algorithm for the key, signature,
//!    `iss`, `aud`, `exp`/`nbf`/`iat` with the leeway; an unknown `kid`
//!    refreshes the JWKS early once, `source`). Invalid: 401 whatever the
//!    rules say — [`ProxyError::Unauthenticated`], answered with
//!    `www-authenticate: Bearer error="invalid_token"` (gRPC: 16
//!    UNAUTHENTICATED) by `error_response`; the reason goes to the access
//!    log and `remora_jwt_validations_total`, never the token.
//!    A verified token is kept (`cache`) until it expires, so the same
//!    token sent again skips the signature check.
//! 5. All valid: each token's claims are set as headers
//!    (`claims_to_headers`; the request's token's win a header two
//!    providers write), each token is taken out unless its provider
//!    `forward`s it, and the request carries the request's token's
//!    [`VerifiedClaims`] for the authorization layer inside.

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

use self::token::{Location, unnominate};
use self::verify::{Claims, Provider, unverified_issuer};
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
    /// Where tokens are read, each place once, in the order of the providers.
    places: Vec<Place>,
    required: bool,
    rules: Vec<JwtRule>,
    /// Every `claims_to_headers` header, removed from incoming requests.
    claim_headers: Vec<HeaderName>,
    /// The token headers with a `-`, whose other spellings are removed.
    token_headers: Vec<HeaderName>,
    missing: Counter,
}

/// A place tokens are read from, and the providers reading there (indices
/// into `providers`, in order).
struct Place {
    location: Location,
    readers: Vec<usize>,
}

/// A token found in a request, its place, and the provider verifying it.
struct Found {
    token: String,
    place: usize,
    provider: usize,
}

/// The tokens of a request: the first found, which is the request's token,
/// and those in later places (none, usually: no allocation).
struct Tokens {
    first: Found,
    others: Vec<Found>,
}

impl JwtLayer {
    /// The layer of `config`; JWKS files are read and URLs start loading.
    pub fn new(config: &JwtConfig) -> Self {
        let mut providers = Vec::new();
        let mut places: Vec<Place> = Vec::new();
        for config in &config.providers {
            let Some(provider) = Provider::new(config) else {
                continue;
            };
            let location = Location::of(config.from.as_ref());
            match places.iter_mut().find(|place| place.location == location) {
                Some(place) => place.readers.push(providers.len()),
                None => places.push(Place {
                    location,
                    readers: vec![providers.len()],
                }),
            }
            providers.push(provider);
        }
        let mut claim_headers: Vec<HeaderName> = (providers.iter())
            .flat_map(|provider| provider.claims_to_headers.iter())
            .map(|claim| claim.header.clone())
            .collect();
        claim_headers.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        claim_headers.dedup();
        let token_headers = (places.iter())
            .filter_map(|place| place.location.header())
            .filter(|name| name.as_str().contains('-'))
            .cloned()
            .collect();
        Self {
            policy: Arc::new(Policy {
                providers,
                places,
                required: config.required,
                rules: config.rules.clone(),
                claim_headers,
                token_headers,
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

    /// True for a header the application must not get from the client: a
    /// claim header in any spelling, a token header in another spelling.
    fn strips(&self, name: &HeaderName) -> bool {
        (self.claim_headers.iter()).any(|claim| reads_as(name, claim))
            || (self.token_headers.iter()).any(|token| name != token && reads_as(name, token))
    }

    /// Every token of the request, one per place, each with the provider
    /// verifying it; refused (with the provider counting it) when a place
    /// holds two, or one that is not ASCII.
    fn tokens_of(&self, headers: &HeaderMap) -> Result<Option<Tokens>, ProxyError> {
        let mut found = (self.places.iter().enumerate()).filter_map(|(index, place)| {
            match place.location.find(headers) {
                Ok(None) => None,
                Ok(Some(token)) => Some(Ok(Found {
                    token: token.to_owned(),
                    place: index,
                    provider: self.verifier(place, token),
                })),
                Err(reason) => Some(Err(self.refusal(place.readers[0], reason))),
            }
        });
        let Some(first) = found.next().transpose()? else {
            return Ok(None);
        };
        let others = found.collect::<Result<_, _>>()?;
        Ok(Some(Tokens { first, others }))
    }

    /// The provider that verifies `token` found at `place`: its only
    /// reader, else the one whose `issuer` is the token's `iss`, else the
    /// first.
    fn verifier(&self, place: &Place, token: &str) -> usize {
        if let [only] = place.readers[..] {
            return only;
        }
        let issuer = unverified_issuer(token);
        (place.readers.iter().copied())
            .find(|&index| issuer.as_deref() == Some(self.providers[index].issuer.as_str()))
            .unwrap_or(place.readers[0])
    }

    /// The claims of a token its provider verifies (counted either way).
    async fn verify(&self, found: &Found) -> Result<Arc<Claims>, ProxyError> {
        let provider = &self.providers[found.provider];
        let claims = (provider.verify(&found.token).await)
            .map_err(|reason| self.refusal(found.provider, reason))?;
        provider.count(Ok(()));
        Ok(claims)
    }

    /// A refusal by provider `index`: counted and logged (never the token).
    fn refusal(&self, index: usize, reason: TokenRejection) -> ProxyError {
        let provider = &self.providers[index];
        provider.count(Err(reason));
        tracing::debug!(provider = %provider.name, %reason, "JWT refused");
        ProxyError::Unauthenticated(reason)
    }

    /// Hands a verified token's claims to the application as headers, and
    /// takes the token out unless its provider forwards it.
    fn admit(&self, found: &Found, claims: &Claims, headers: &mut HeaderMap) {
        let provider = &self.providers[found.provider];
        for claim in &provider.claims_to_headers {
            claim.apply(claims, headers);
        }
        if !provider.forward {
            self.places[found.place].location.remove(headers);
        }
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
        if !policy.claim_headers.is_empty() || !policy.token_headers.is_empty() {
            let headers = request.headers_mut();
            remove_headers(headers, |name| policy.strips(name));
            unnominate(headers, &policy.claim_headers);
        }
        let tokens = match policy.tokens_of(request.headers()) {
            Ok(Some(tokens)) => tokens,
            Ok(None) => {
                if policy.required(request.uri().path()) {
                    policy.missing.increment(1);
                    return refused(ProxyError::Unauthenticated(TokenRejection::Missing));
                }
                return Either::Left(self.inner.call(request));
            }
            Err(refusal) => return refused(refusal),
        };
        // The service that was polled ready goes into the future.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Either::Right(Box::pin(async move {
            let claims = policy.verify(&tokens.first).await?;
            let mut others = Vec::with_capacity(tokens.others.len());
            for found in &tokens.others {
                others.push(policy.verify(found).await?);
            }
            let headers = request.headers_mut();
            // The request's token last, so that its claims win.
            for (found, claims) in tokens.others.iter().zip(&others).rev() {
                policy.admit(found, claims, headers);
            }
            policy.admit(&tokens.first, &claims, headers);
            request.extensions_mut().insert(VerifiedClaims {
                provider: Arc::clone(&policy.providers[tokens.first.provider].name),
                claims,
            });
            inner.call(request).await
        }))
    }
}

/// This layer's future for a request refused before any verification.
fn refused<F>(
    refusal: ProxyError,
) -> Either<F, BoxFuture<'static, Result<Response<ResponseBody>, ProxyError>>> {
    Either::Right(Box::pin(std::future::ready(Err(refusal))))
}
