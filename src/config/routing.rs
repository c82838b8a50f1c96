//! The L7 routing sections of an upstream: `backends:` (named endpoint
//! subsets) and `routes:` (matched in order; what a matched request gets).
//! Regexes are compiled here, at parse time, and anchored (they must match
//! the whole value); an invalid regex, sticky key or unknown key is a parse
//! error. Cross-field rules (names, references, exactly one action) live in
//! `validate/routing.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::duration;
use super::endpoint_address::EndpointAddress;
use super::fallback::FallbackConfig;
use super::hedge::HedgePolicy;
use super::rate_limit::RateLimitConfig;
use super::request_token::RequestTokenConfig;
use super::resilience::{FaultConfig, RetryPolicy};

/// The backend name that means "the upstream's own endpoints".
pub const DEFAULT_BACKEND: &str = "default";

/// A named endpoint set a route can send to (exactly one source).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendConfig {
    /// The upstream's discovered instances that carry these tags and meta values.
    Subset(SubsetConfig),
    /// A fixed list of endpoints, `ip:port` or `host:port` (resolved as a
    /// `discovery.static` hostname is).
    Static(Vec<EndpointAddress>),
    /// Another upstream's endpoints (and its breaker and outlier state).
    Upstream(String),
}

/// Which discovered instances belong to a subset: all `tags` present and
/// every `meta` key equal to its value (Consul `Service.Tags` / `Service.Meta`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SubsetConfig {
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
}

/// One entry of `routes:`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// A metric label: `[a-z0-9][a-z0-9_-]*`, unique within the upstream.
    pub name: String,
    /// All conditions must hold; an empty match matches every request.
    #[serde(default, rename = "match")]
    pub matches: RouteMatch,
    /// Where matched requests go; default: the upstream's own endpoints.
    #[serde(default)]
    pub backend: Option<String>,
    /// Weighted backends instead of one.
    #[serde(default)]
    pub split: Option<Vec<SplitTargetConfig>>,
    /// Keeps requests with the same key on the same split backend.
    #[serde(default)]
    pub sticky: Option<StickyKey>,
    /// Overrides `timeouts.request` of the upstream.
    #[serde(default, with = "duration::option")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub retries: Option<RetryPolicy>,
    #[serde(default)]
    pub hedge: Option<HedgePolicy>,
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    #[serde(default)]
    pub fault: Option<FaultConfig>,
    #[serde(default)]
    pub request_headers: HeaderRules,
    #[serde(default)]
    pub response_headers: HeaderRules,
    #[serde(default)]
    pub rewrite: Option<Rewrite>,
    /// Answer with a redirect; no upstream is called.
    #[serde(default)]
    pub redirect: Option<Redirect>,
    /// Answer with a fixed response; no upstream is called.
    #[serde(default)]
    pub direct_response: Option<DirectResponse>,
    #[serde(default)]
    pub mirror: Option<MirrorConfig>,
    /// Replaces the upstream's `fallback` for this route.
    #[serde(default)]
    pub fallback: Option<FallbackConfig>,
    /// Overrides the upstream's `request_token`.
    #[serde(default)]
    pub request_token: Option<RequestTokenConfig>,
}

/// The conditions of a route.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    #[serde(default)]
    pub path: Option<PathMatch>,
    /// Any of these methods (upper case).
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub headers: Vec<ValueMatch>,
    /// Query parameters, by name.
    #[serde(default)]
    pub query: Vec<ValueMatch>,
    #[serde(default)]
    pub grpc: Option<GrpcMatch>,
}

/// How the request path (without the query) is matched.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    Exact(String),
    /// Whole segments: `/api` matches `/api` and `/api/x`, not `/apis`.
    Prefix(String),
    Regex(Pattern),
}

/// One header or query parameter condition: exactly one of `exact`,
/// `regex` or `present`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ValueMatch {
    pub name: String,
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub regex: Option<Pattern>,
    /// `true`: the header / parameter is there; `false`: it is absent.
    #[serde(default)]
    pub present: Option<bool>,
}

/// A gRPC call by service (`package.Service`) and optionally method.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcMatch {
    pub service: String,
    #[serde(default)]
    pub method: Option<String>,
}

/// One side of a weighted split.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SplitTargetConfig {
    pub backend: String,
    pub weight: u32,
}

/// What keeps a client on one side of a split; `header:NAME` or `cookie:NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StickyKey {
    Header(http::HeaderName),
    Cookie(String),
}

/// `add` appends (existing values stay), `set` replaces, `remove` deletes;
/// applied in the order remove, set, add.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRules {
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

impl HeaderRules {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.set.is_empty() && self.remove.is_empty()
    }
}

/// Changes to the request before it is sent upstream.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// New `Host` (HTTP/1.1) / `:authority` (HTTP/2).
    #[serde(default)]
    pub host: Option<String>,
    /// Replaces the part of the path matched by `match.path.prefix`.
    #[serde(default)]
    pub path_prefix: Option<String>,
}

/// A redirect: each given part replaces that part of the request's URL.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    /// The new path; the query is kept.
    #[serde(default)]
    pub path: Option<String>,
    /// 301, 302, 303, 307 or 308.
    #[serde(default = "default_redirect_status")]
    pub status: u16,
}

fn default_redirect_status() -> u16 {
    302
}

/// A fixed response (e.g. 503 during maintenance).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirectResponse {
    pub status: u16,
    #[serde(default)]
    pub body: String,
}

/// A copy of a share of the route's requests, sent to a shadow backend.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    pub backend: String,
    #[serde(default = "default_mirror_percent")]
    pub percent: f64,
    /// Body bytes copied at most; a request with a larger body is not mirrored.
    #[serde(default = "default_mirror_max_body")]
    pub max_body: usize,
    /// Longest wait for the body to end, then longest shadow call.
    #[serde(default = "default_mirror_timeout", with = "duration")]
    pub timeout: Duration,
    /// Shadow requests in flight at most; more are skipped.
    #[serde(default = "default_mirror_max_in_flight")]
    pub max_in_flight: u32,
}

fn default_mirror_percent() -> f64 {
    100.0
}

fn default_mirror_max_body() -> usize {
    64 * 1024
}

fn default_mirror_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_mirror_max_in_flight() -> u32 {
    64
}

/// A regex that must match a whole value; serialized as written.
#[derive(Clone)]
pub struct Pattern {
    source: String,
    regex: regex::Regex,
}

impl Pattern {
    pub fn new(source: &str) -> Result<Self, regex::Error> {
        let regex = regex::Regex::new(&format!("^(?:{source})$"))?;
        Ok(Self {
            source: source.to_owned(),
            regex,
        })
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
}

/// Two patterns are equal when written alike (what change detection needs).
impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.source)
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let source = String::deserialize(deserializer)?;
        Pattern::new(&source).map_err(|error| {
            let error = error.to_string().replace('\n', " ");
            de::Error::custom(format!("invalid regex `{source}`: {error}"))
        })
    }
}

impl fmt::Display for StickyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StickyKey::Header(name) => write!(f, "header:{name}"),
            StickyKey::Cookie(name) => write!(f, "cookie:{name}"),
        }
    }
}

impl Serialize for StickyKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StickyKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(StickyKeyVisitor)
    }
}

struct StickyKeyVisitor;

impl Visitor<'_> for StickyKeyVisitor {
    type Value = StickyKey;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("`header:NAME` or `cookie:NAME`")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<StickyKey, E> {
        if let Some(name) = text.strip_prefix("header:") {
            return http::HeaderName::from_bytes(name.trim().as_bytes())
                .map(StickyKey::Header)
                .map_err(|_| E::custom(format!("invalid header name `{name}` in sticky")));
        }
        match text.strip_prefix("cookie:").map(str::trim) {
            Some(name) if !name.is_empty() && !name.contains([';', '=', ' ']) => {
                Ok(StickyKey::Cookie(name.to_owned()))
            }
            _ => Err(E::custom(format!(
                "invalid sticky `{text}`: expected `header:NAME` or `cookie:NAME`"
            ))),
        }
    }
}
