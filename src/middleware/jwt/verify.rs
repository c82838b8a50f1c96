//! One provider's verification of a token. A token whose (unverified) `iss`
//! is not the provider's is refused first. `jsonwebtoken` checks the
//! signature, `iss` and `aud`; the algorithm must suit the key: HS256/384/512
//! only with the provider's `secret`, the others only with a JWKS key made
//! for them (`keys`), `none` never. Then `exp`, `nbf` and `iat` are checked
//! here with the leeway, each a number when present. A token's `kid` picks
//! the keys to try; without one, every key made for its algorithm is tried.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use metrics::Counter;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::cache::TokenCache;
use super::keys::{Lookup, VERIFIABLE};
use super::source::KeySource;
use super::token::ClaimHeader;
use crate::config::JwtProvider;
use crate::error::TokenRejection;
use crate::telemetry::metrics::jwt_validations;

const HMAC: [Algorithm; 3] = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// The claims of a verified token.
pub(super) type Claims = Map<String, Value>;

/// A configured provider, ready to verify tokens.
pub(super) struct Provider {
    pub(super) name: Arc<str>,
    pub(super) issuer: String,
    keys: Keys,
    /// The checks of `jsonwebtoken` for each algorithm the keys allow.
    validations: HashMap<Algorithm, Validation>,
    leeway: f64,
    pub(super) claims_to_headers: Vec<ClaimHeader>,
    pub(super) forward: bool,
    cache: TokenCache,
    ok: Counter,
    rejected: [Counter; TokenRejection::ALL.len()],
}

enum Keys {
    Secret(DecodingKey),
    Jwks(Arc<KeySource>),
}

impl Provider {
    /// The provider of `config` (`None` without keys, which validation
    /// refuses); a JWKS starts loading (see `source`).
    pub(super) fn new(config: &JwtProvider) -> Option<Provider> {
        let (keys, algorithms): (Keys, &[Algorithm]) = match (&config.secret, &config.jwks) {
            (Some(secret), _) => (
                Keys::Secret(DecodingKey::from_secret(secret.expose().as_bytes())),
                &HMAC,
            ),
            (None, Some(jwks)) => (
                Keys::Jwks(KeySource::start(&config.name, jwks)),
                &VERIFIABLE,
            ),
            (None, None) => return None,
        };
        let validations = (algorithms.iter())
            .map(|&alg| (alg, validation(alg, config)))
            .collect();
        Some(Provider {
            name: config.name.as_str().into(),
            issuer: config.issuer.clone(),
            keys,
            validations,
            leeway: config.leeway.as_secs_f64(),
            claims_to_headers: (config.claims_to_headers.iter())
                .filter_map(|(claim, header)| ClaimHeader::new(claim, header))
                .collect(),
            forward: config.forward,
            cache: TokenCache::new(config.cache_size),
            ok: jwt_validations(&config.name, "ok"),
            rejected: TokenRejection::ALL
                .map(|reason| jwt_validations(&config.name, reason.as_str())),
        })
    }

    /// Counts a verification's result.
    pub(super) fn count(&self, result: Result<(), TokenRejection>) {
        match result {
            Ok(()) => self.ok.increment(1),
            Err(reason) => {
                let index = TokenRejection::ALL.iter().position(|r| *r == reason);
                if let Some(counter) = index.and_then(|i| self.rejected.get(i)) {
                    counter.increment(1);
                }
            }
        }
    }

    /// The claims of `token` when this provider verifies it (or verified
    /// it before with its current keys, `cache`).
    pub(super) async fn verify(&self, token: &str) -> Result<Arc<Claims>, TokenRejection> {
        let keys = match &self.keys {
            Keys::Secret(_) => 0,
            Keys::Jwks(source) => source.version(),
        };
        let now = unix_now();
        if let Some(claims) = self.cache.get(token, keys, now) {
            return Ok(claims);
        }
        let claims = Arc::new(self.verify_uncached(token).await?);
        self.cache.put(token, &claims, keys, now, self.leeway);
        Ok(claims)
    }

    async fn verify_uncached(&self, token: &str) -> Result<Claims, TokenRejection> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| unreadable_header(token))?;
        // Another issuer's token is refused before its key is looked for
        // (which could refresh the JWKS for a kid that is not ours).
        if unverified_issuer(token).is_some_and(|iss| iss != self.issuer) {
            return Err(TokenRejection::Issuer);
        }
        let alg = header.alg;
        let validation = self
            .validations
            .get(&alg)
            .ok_or(TokenRejection::Algorithm)?;
        let source = match &self.keys {
            Keys::Secret(key) => return self.decode(token, key, validation),
            Keys::Jwks(source) => source,
        };
        let kid = header.kid.as_deref();
        if matches!(source.keys().lookup(kid, alg), Lookup::Unknown) {
            source.refresh_early().await;
        }
        let keys = source.keys();
        let candidates = match keys.lookup(kid, alg) {
            Lookup::Keys(candidates) => candidates,
            Lookup::WrongAlgorithm => return Err(TokenRejection::Algorithm),
            Lookup::Unknown => return Err(TokenRejection::UnknownKey),
        };
        let mut result = Err(TokenRejection::BadSignature);
        for key in candidates {
            result = self.decode(token, &key.decoding, validation);
            if result != Err(TokenRejection::BadSignature) {
                break;
            }
        }
        result
    }

    fn decode(
        &self,
        token: &str,
        key: &DecodingKey,
        validation: &Validation,
    ) -> Result<Claims, TokenRejection> {
        let data =
            jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|error| match error
                .kind()
            {
                JwtErrorKind::InvalidSignature
                | JwtErrorKind::InvalidEcdsaKey
                | JwtErrorKind::InvalidRsaKey(_)
                | JwtErrorKind::Crypto(_) => TokenRejection::BadSignature,
                JwtErrorKind::InvalidAlgorithm | JwtErrorKind::MissingAlgorithm => {
                    TokenRejection::Algorithm
                }
                JwtErrorKind::InvalidIssuer => TokenRejection::Issuer,
                JwtErrorKind::InvalidAudience => TokenRejection::Audience,
                JwtErrorKind::MissingRequiredClaim(claim) if claim == "iss" => {
                    TokenRejection::Issuer
                }
                JwtErrorKind::MissingRequiredClaim(claim) if claim == "aud" => {
                    TokenRejection::Audience
                }
                _ => TokenRejection::Malformed,
            })?;
        check_times(&data.claims, self.leeway)?;
        Ok(data.claims)
    }
}

/// What `jsonwebtoken`'s checks are for `alg`: the signature, `iss`, and
/// `aud` when audiences are configured; times are checked by `check_times`.
fn validation(alg: Algorithm, config: &JwtProvider) -> Validation {
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.set_issuer(&[&config.issuer]);
    if config.audiences.is_empty() {
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["iss"]);
    } else {
        validation.set_audience(&config.audiences);
        validation.set_required_spec_claims(&["iss", "aud"]);
    }
    validation
}

/// `exp` passed, `nbf` or `iat` ahead, beyond `leeway` seconds; a time
/// claim that is not a number is malformed (RFC 7519 §2: NumericDate).
fn check_times(claims: &Claims, leeway: f64) -> Result<(), TokenRejection> {
    let now = unix_now();
    let time = |name: &str| match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(number)) => Ok(number.as_f64()),
        Some(_) => Err(TokenRejection::Malformed),
    };
    if time("exp")?.is_some_and(|exp| now >= exp + leeway) {
        return Err(TokenRejection::Expired);
    }
    if time("nbf")?.is_some_and(|nbf| now + leeway < nbf) {
        return Err(TokenRejection::NotYetValid);
    }
    if time("iat")?.is_some_and(|iat| now + leeway < iat) {
        return Err(TokenRejection::IssuedInFuture);
    }
    Ok(())
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

/// Why a token's header could not be read: an `alg` remora does not accept
/// (`none` among them) is an algorithm problem, anything else malformed.
fn unreadable_header(token: &str) -> TokenRejection {
    let header = unverified_part::<Map<String, Value>>(token, 0);
    if header.is_some_and(|header| header.get("alg").is_some_and(Value::is_string)) {
        TokenRejection::Algorithm
    } else {
        TokenRejection::Malformed
    }
}

/// The `iss` of a token, read without verifying it: only to pick which of
/// several providers verifies it, or to refuse another issuer's token early.
pub(super) fn unverified_issuer(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Iss {
        iss: String,
    }
    unverified_part::<Iss>(token, 1).map(|claims| claims.iss)
}

/// Part `index` of a compact JWS (0: header, 1: payload), decoded as JSON.
fn unverified_part<T: for<'de> Deserialize<'de>>(token: &str, index: usize) -> Option<T> {
    let part = token.split('.').nth(index)?;
    let json = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&json).ok()
}
