//! `adaptive_concurrency:` of an upstream and of `inbound`: a concurrency
//! limit that follows the measured latency (`middleware::concurrency::vegas`),
//! within `[min_limit, max_limit]`. The defaults work untuned: they are
//! Envoy's adaptive concurrency bounds (3 to 1000) and Netflix
//! concurrency-limits' initial limit (20).

use serde::{Deserialize, Serialize};

/// `adaptive_concurrency:`; `{}` takes every default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveConcurrency {
    /// The limit never falls below this; it is also the concurrency at
    /// which the upstream's no-load latency is measured.
    #[serde(default = "default_min_limit")]
    pub min_limit: u32,
    /// The limit never grows above this.
    #[serde(default = "default_max_limit")]
    pub max_limit: u32,
    /// The limit after the first no-load latency measurement.
    #[serde(default = "default_initial_limit")]
    pub initial_limit: u32,
}

impl Default for AdaptiveConcurrency {
    fn default() -> Self {
        Self {
            min_limit: default_min_limit(),
            max_limit: default_max_limit(),
            initial_limit: default_initial_limit(),
        }
    }
}

fn default_min_limit() -> u32 {
    3
}

fn default_max_limit() -> u32 {
    1000
}

fn default_initial_limit() -> u32 {
    20
}
