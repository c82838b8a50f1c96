//! `fallback:` of an upstream or a route (Hystrix's fallback): what to
//! answer instead of a proxy-made error when the circuit breaker is open, no
//! endpoint is healthy, or the rate limit is hit — a `backend` (one of the
//! upstream's `backends:`, e.g. a degraded read-only service) or a static
//! `response`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// An upstream's or a route's fallback.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    /// The errors that fall back; default: all of them.
    #[serde(default = "default_triggers")]
    pub on: Vec<FallbackTrigger>,
    /// A backend of the upstream (`backends:`) that takes the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// A response remora makes itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<FallbackResponse>,
}

/// An error that falls back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FallbackTrigger {
    /// The backend's circuit breaker is open.
    CircuitOpen,
    /// No endpoint passes its health checks (outside panic), or there are
    /// none at all.
    NoHealthyEndpoints,
    /// The rate limit refused the request.
    RateLimited,
}

impl FallbackTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackTrigger::CircuitOpen => "circuit_open",
            FallbackTrigger::NoHealthyEndpoints => "no_healthy_endpoints",
            FallbackTrigger::RateLimited => "rate_limited",
        }
    }
}

impl fmt::Display for FallbackTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn default_triggers() -> Vec<FallbackTrigger> {
    vec![
        FallbackTrigger::CircuitOpen,
        FallbackTrigger::NoHealthyEndpoints,
        FallbackTrigger::RateLimited,
    ]
}

/// A static fallback response.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackResponse {
    #[serde(default = "default_status")]
    pub status: u16,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
}

fn default_status() -> u16 {
    200
}
