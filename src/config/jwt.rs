//! The `inbound.jwt` section: JWT validation at the inbound listener — the
//! providers whose tokens are accepted (issuer, audiences, keys, where the
//! token is read, which claims reach the application) and which requests
//! must carry one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::consul::Secret;
use super::duration;

/// `inbound.jwt`: a request with a token is let through only when one of the
/// providers verifies it; a request without one passes unauthenticated
/// unless `required` (or the first matching rule) says otherwise.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    pub providers: Vec<JwtProvider>,
    /// Whether a request without a token is refused, where no rule matches.
    #[serde(default)]
    pub required: bool,
    /// Per-path requirements: the first rule whose `prefix` the
    /// (normalized) path starts with decides.
    #[serde(default)]
    pub rules: Vec<JwtRule>,
}

/// One entry of `inbound.jwt.rules`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtRule {
    pub prefix: String,
    pub required: bool,
}

/// One entry of `inbound.jwt.providers`: who issues tokens and how they are checked.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtProvider {
    /// The `provider` label of metrics and of the verified claims.
    pub name: String,
    /// The `iss` the tokens must carry.
    pub issuer: String,
    /// `aud` must name one of these; empty: `aud` is not checked.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// The public keys (RS*, PS*, ES*, EdDSA); either this or `secret`.
    #[serde(default)]
    pub jwks: Option<JwksConfig>,
    /// A shared secret for HS256/384/512 tokens; either this or `jwks`.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Where the token is read; default `Authorization: Bearer <token>`.
    #[serde(default)]
    pub from: Option<TokenLocation>,
    /// Verified claims copied to request headers (`claim: header`; a dotted
    /// claim reads a nested one). These headers are removed from every
    /// incoming request first.
    #[serde(default)]
    pub claims_to_headers: BTreeMap<String, String>,
    /// Whether the token is passed on to the application (Envoy's `forward`).
    #[serde(default)]
    pub forward: bool,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    #[serde(default = "default_leeway", with = "duration")]
    pub leeway: Duration,
    /// Verified tokens kept (until they expire) so that a token sent again
    /// is not verified again; 0 turns the cache off.
    #[serde(default = "default_cache_size")]
    pub cache_size: usize,
}

fn default_cache_size() -> usize {
    1000
}

fn default_leeway() -> Duration {
    Duration::from_secs(60)
}

/// `jwks:`: a JSON Web Key Set from a file or a URL, loaded at start and
/// every `refresh`, and early (at most every 10 s) for an unknown `kid`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwksConfig {
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// `http://` or `https://`.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default = "default_refresh", with = "duration")]
    pub refresh: Duration,
    /// PEM CA certificate(s) an `https://` server must chain to; default:
    /// the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_refresh() -> Duration {
    Duration::from_secs(300)
}

/// `from:`: a header (its whole value, a `Bearer ` prefix dropped) or a cookie.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenLocation {
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub cookie: Option<String>,
}
