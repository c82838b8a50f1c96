//! `upstreams[].health_check:` — active health checks of every endpoint
//! (static, DNS or registry): one probe (`http`, `grpc` or `tcp`), how often,
//! how long each may take, and how many results in a row change the verdict.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::duration;

/// An upstream's active health check.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpHealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcHealthCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpHealthCheck>,
    #[serde(default = "default_interval", with = "duration")]
    pub interval: Duration,
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// Failed checks in a row that take a passing endpoint out.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// Passed checks in a row that bring a failing endpoint back.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    /// Up to this much is added, at random, to every interval (and waited
    /// before the first check), so that checks of many sidecars spread out.
    #[serde(default, with = "duration")]
    pub jitter: Duration,
}

/// The probe a [`HealthCheck`] sends (exactly one of its sections is set).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Probe<'a> {
    Http(&'a HttpHealthCheck),
    Grpc(&'a GrpcHealthCheck),
    Tcp,
}

impl HealthCheck {
    /// Makes `host` the `Host` (`:authority`) of the checks that leave it to
    /// the default, the upstream's name: a routing backend, named
    /// `<upstream>/<backend>`, asks for its upstream's host, not for a name
    /// no server knows (nginx answers `Host: api/v2` with 400).
    pub fn default_host_to(&mut self, host: &str) {
        if let Some(http) = &mut self.http {
            http.host.get_or_insert_with(|| host.to_owned());
        }
        if let Some(grpc) = &mut self.grpc {
            grpc.authority.get_or_insert_with(|| host.to_owned());
        }
    }

    /// The configured probe; `None` when not exactly one of `http`, `grpc`
    /// and `tcp` is set (validation rejects that).
    pub fn probe(&self) -> Option<Probe<'_>> {
        match (&self.http, &self.grpc, &self.tcp) {
            (Some(http), None, None) => Some(Probe::Http(http)),
            (None, Some(grpc), None) => Some(Probe::Grpc(grpc)),
            (None, None, Some(_)) => Some(Probe::Tcp),
            _ => None,
        }
    }
}

/// `http:` — a GET of `path` that must answer one of `expected_statuses`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpHealthCheck {
    #[serde(default = "default_path")]
    pub path: String,
    /// Status codes (`200`) or ranges (`"200-299"`) that pass.
    #[serde(default = "default_expected_statuses")]
    pub expected_statuses: Vec<StatusRange>,
    /// The `Host` (`:authority`) of the check; default: the upstream name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// `grpc:` — `grpc.health.v1.Health/Check`, which must answer `SERVING`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcHealthCheck {
    /// The service name asked about; empty (the default) asks about the
    /// server as a whole.
    #[serde(default)]
    pub service: String,
    /// The `:authority` of the check; default: the upstream name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

/// `tcp: {}` — the endpoint passes when a connection (with mTLS, when the
/// upstream is meshed, its handshake) opens within the timeout.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TcpHealthCheck {}

fn default_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_unhealthy_threshold() -> u32 {
    3
}

fn default_healthy_threshold() -> u32 {
    2
}

fn default_path() -> String {
    "/health".to_owned()
}

fn default_expected_statuses() -> Vec<StatusRange> {
    vec![StatusRange {
        low: 200,
        high: 299,
    }]
}

/// A status code or an inclusive range of them; written `200` or `"200-299"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusRange {
    pub low: u16,
    pub high: u16,
}

impl StatusRange {
    pub fn contains(&self, status: u16) -> bool {
        (self.low..=self.high).contains(&status)
    }
}

impl fmt::Display for StatusRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.low == self.high {
            write!(f, "{}", self.low)
        } else {
            write!(f, "{}-{}", self.low, self.high)
        }
    }
}

impl Serialize for StatusRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StatusRangeVisitor)
    }
}

struct StatusRangeVisitor;

impl StatusRangeVisitor {
    fn status<E: de::Error>(value: u64) -> Result<u16, E> {
        match u16::try_from(value) {
            Ok(status @ 100..=599) => Ok(status),
            _ => Err(E::custom(format!(
                "invalid status {value}: expected 100 to 599"
            ))),
        }
    }
}

impl Visitor<'_> for StatusRangeVisitor {
    type Value = StatusRange;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a status code (`200`) or a range (`\"200-299\"`)")
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<StatusRange, E> {
        let status = Self::status(value)?;
        Ok(StatusRange {
            low: status,
            high: status,
        })
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<StatusRange, E> {
        self.visit_u64(u64::try_from(value).unwrap_or(0))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<StatusRange, E> {
        let invalid = || {
            E::custom(format!(
                "invalid status range `{text}`: expected `LOW-HIGH`"
            ))
        };
        let (low, high) = match text.split_once('-') {
            Some((low, high)) => (low.trim(), high.trim()),
            None => (text.trim(), text.trim()),
        };
        let low = Self::status(low.parse().map_err(|_| invalid())?)?;
        let high = Self::status(high.parse().map_err(|_| invalid())?)?;
        if low > high {
            return Err(invalid());
        }
        Ok(StatusRange { low, high })
    }
}
