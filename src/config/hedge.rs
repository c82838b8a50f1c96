//! `hedge:` of an upstream or a route: a second try of an idempotent request
//! to another endpoint when the first is slower than `delay` — a latency
//! percentile of the upstream (`p95`) or a fixed time (`50ms`). Rejects a
//! percentile outside (0, 100) and a delay that is neither at parse time.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::duration;

/// `hedge:`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HedgePolicy {
    #[serde(default = "default_delay")]
    pub delay: HedgeDelay,
    /// Hedges in flight at most besides the first try.
    #[serde(default = "default_max_extra")]
    pub max_extra: u32,
}

fn default_delay() -> HedgeDelay {
    HedgeDelay::Percentile(95.0)
}

fn default_max_extra() -> u32 {
    1
}

/// When a hedge is sent: once the first try has run this long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HedgeDelay {
    /// This percentile of the latency of the upstream's (or route's) recent
    /// answers, e.g. `p95`.
    Percentile(f64),
    /// A fixed delay, e.g. `50ms`.
    Fixed(Duration),
}

impl fmt::Display for HedgeDelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HedgeDelay::Percentile(p) => write!(f, "p{p}"),
            HedgeDelay::Fixed(delay) => write!(f, "{}", humantime::format_duration(*delay)),
        }
    }
}

impl Serialize for HedgeDelay {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HedgeDelay {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DelayVisitor;
        impl Visitor<'_> for DelayVisitor {
            type Value = HedgeDelay;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a percentile such as p95 or a duration such as 50ms")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<HedgeDelay, E> {
                let Some(percentile) = text.trim().strip_prefix('p') else {
                    return duration::parse(text)
                        .map(HedgeDelay::Fixed)
                        .map_err(E::custom);
                };
                match percentile.parse::<f64>() {
                    Ok(p) if p > 0.0 && p < 100.0 => Ok(HedgeDelay::Percentile(p)),
                    _ => Err(E::custom(format!(
                        "`{text}` is no percentile: expected p1 to p99.9, e.g. p95"
                    ))),
                }
            }
        }
        deserializer.deserialize_str(DelayVisitor)
    }
}
