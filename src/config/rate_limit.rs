//! `rate_limit:` of an upstream, a route or `inbound`: a token bucket per
//! key, per-key `overrides`, and whose rate it is (`scope`: this sidecar's,
//! or the whole service's). Rejects unknown keys at parse time.

use std::fmt;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

/// `rate_limit:` — a token bucket per key; excess requests get 429 at once.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub requests_per_second: f64,
    /// Bucket size: requests allowed at once after an idle period.
    /// Default: one second's worth.
    #[serde(default)]
    pub burst: Option<u32>,
    #[serde(default)]
    pub key: RateLimitKey,
    /// Most keys tracked at once; beyond it, new keys share one bucket.
    #[serde(default = "default_max_keys")]
    pub max_keys: usize,
    /// `instance`: the rates are this sidecar's own; `service`: they are for
    /// the whole service, divided among its healthy instances.
    #[serde(default)]
    pub scope: RateLimitScope,
    /// Other rates for named key values (a caller identity, a header value).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<RateLimitOverride>,
}

/// Whose rate `requests_per_second` is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitScope {
    /// This sidecar's.
    #[default]
    Instance,
    /// The whole service's: each sidecar allows its share, the rate divided
    /// by the healthy instances of `service.name` in Consul, or in etcd with
    /// an `etcd` section and no `consul` one.
    Service,
}

/// `rate_limit.overrides[]`: the rate of the requests whose key is `value`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitOverride {
    /// A value of the key: a header value, a client IP, a SPIFFE ID.
    pub value: String,
    pub requests_per_second: f64,
    /// Default: one second's worth.
    #[serde(default)]
    pub burst: Option<u32>,
}

fn default_max_keys() -> usize {
    10_000
}

impl RateLimitConfig {
    pub fn burst(&self) -> u32 {
        self.burst
            .unwrap_or_else(|| self.requests_per_second.ceil().max(1.0) as u32)
    }
}

/// What separates one client's bucket from another's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum RateLimitKey {
    /// One bucket for everybody.
    #[default]
    None,
    /// One bucket per client IP address.
    ClientIp,
    /// One bucket per value of a request header (requests without it share one).
    Header(http::HeaderName),
    /// One bucket per caller identity: the SPIFFE ID of the mTLS peer
    /// (inbound; requests without one share one).
    Identity,
}

impl fmt::Display for RateLimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RateLimitKey::None => f.write_str("none"),
            RateLimitKey::ClientIp => f.write_str("client_ip"),
            RateLimitKey::Header(name) => write!(f, "header:{name}"),
            RateLimitKey::Identity => f.write_str("identity"),
        }
    }
}

impl Serialize for RateLimitKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RateLimitKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.as_str() {
            "none" => Ok(RateLimitKey::None),
            "client_ip" => Ok(RateLimitKey::ClientIp),
            "identity" => Ok(RateLimitKey::Identity),
            _ => match text.strip_prefix("header:") {
                Some(name) => http::HeaderName::from_bytes(name.trim().as_bytes())
                    .map(RateLimitKey::Header)
                    .map_err(|_| de::Error::custom(format!("invalid header name `{name}`"))),
                None => Err(de::Error::custom(format!(
                    "unknown key `{text}`: expected none, client_ip, identity or header:NAME"
                ))),
            },
        }
    }
}
