//! The resilience sections of an upstream (and of `inbound`): retries,
//! circuit breaker, outlier detection and fault injection, plus the shared
//! vocabulary of outcomes (`Condition`) that retries retry on and that
//! breakers and outlier detection count as failures. Rejects unknown
//! conditions and gRPC status names at parse time. (Rate limits:
//! `rate_limit.rs`; hedging: `hedge.rs`.)

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::duration;

/// An outcome of one try, as retries and failure counting see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// The TCP connection (or HTTP handshake) to the endpoint failed or timed out.
    ConnectFailure,
    /// The HTTP/2 server refused the stream (REFUSED_STREAM): it did no work.
    RefusedStream,
    /// The connection or stream broke before a response head arrived.
    Reset,
    /// The try (or the whole request) ran out of time.
    Timeout,
    /// Any HTTP status 500–599.
    Http5xx,
    /// 502, 503 or 504.
    GatewayError,
    /// One HTTP status code, e.g. `"503"`.
    Status(u16),
    /// One gRPC status, by its name (`unavailable`) in YAML.
    Grpc(u16),
}

/// gRPC status codes by name (google.rpc.Code), as written in YAML.
const GRPC_CODES: [(&str, u16); 16] = [
    ("cancelled", 1),
    ("unknown", 2),
    ("invalid_argument", 3),
    ("deadline_exceeded", 4),
    ("not_found", 5),
    ("already_exists", 6),
    ("permission_denied", 7),
    ("resource_exhausted", 8),
    ("failed_precondition", 9),
    ("aborted", 10),
    ("out_of_range", 11),
    ("unimplemented", 12),
    ("internal", 13),
    ("unavailable", 14),
    ("data_loss", 15),
    ("unauthenticated", 16),
];

/// The gRPC status code of a name such as `unavailable`.
pub fn grpc_code(name: &str) -> Option<u16> {
    GRPC_CODES
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, code)| *code)
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::ConnectFailure => f.write_str("connect_failure"),
            Condition::RefusedStream => f.write_str("refused_stream"),
            Condition::Reset => f.write_str("reset"),
            Condition::Timeout => f.write_str("timeout"),
            Condition::Http5xx => f.write_str("5xx"),
            Condition::GatewayError => f.write_str("gateway_error"),
            Condition::Status(code) => write!(f, "{code}"),
            Condition::Grpc(code) => {
                let name = GRPC_CODES.iter().find(|(_, c)| c == code).map(|(n, _)| *n);
                f.write_str(name.unwrap_or("unknown"))
            }
        }
    }
}

impl Condition {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(match text {
            "connect_failure" => Condition::ConnectFailure,
            "refused_stream" => Condition::RefusedStream,
            "reset" => Condition::Reset,
            "timeout" => Condition::Timeout,
            "5xx" => Condition::Http5xx,
            "gateway_error" => Condition::GatewayError,
            _ => {
                if let Ok(code) = text.parse::<u16>() {
                    return Self::status(u64::from(code));
                }
                match grpc_code(text) {
                    Some(code) => Condition::Grpc(code),
                    None => {
                        return Err(format!(
                            "unknown condition `{text}`: expected connect_failure, refused_stream, \
                             reset, timeout, 5xx, gateway_error, an HTTP status such as \"503\", \
                             or a gRPC status name such as unavailable"
                        ));
                    }
                }
            }
        })
    }

    fn status(code: u64) -> Result<Self, String> {
        match u16::try_from(code) {
            Ok(code) if (100..=599).contains(&code) => Ok(Condition::Status(code)),
            _ => Err(format!("HTTP status {code} is not between 100 and 599")),
        }
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ConditionVisitor;
        impl Visitor<'_> for ConditionVisitor {
            type Value = Condition;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a condition such as reset, \"503\" or unavailable")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Condition, E> {
                Condition::parse(text).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, code: u64) -> Result<Condition, E> {
                Condition::status(code).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, code: i64) -> Result<Condition, E> {
                Condition::status(code.max(0) as u64).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(ConditionVisitor)
    }
}

/// `retries:` — which failed tries are tried again, and how often.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Tries in all, the first included (2 = one retry).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    #[serde(default = "default_retry_on")]
    pub on: Vec<Condition>,
    #[serde(default, with = "duration::option")]
    pub per_try_timeout: Option<Duration>,
    #[serde(default)]
    pub backoff: RetryBackoff,
    #[serde(default)]
    pub budget: RetryBudget,
    /// Request bodies up to this many bytes are kept for replay; a request
    /// with a larger body is not retried.
    #[serde(default = "default_replay_body_limit")]
    pub replay_body_limit: usize,
    /// Methods whose requests may be retried after they reached the
    /// upstream (RFC 9110 §9.2.2 by default); others only when they provably
    /// never did. A request with an `Idempotency-Key` header counts as
    /// idempotent whatever its method.
    #[serde(default = "default_idempotent_methods")]
    pub idempotent_methods: Vec<String>,
    /// gRPC methods (always `POST`) that are idempotent: `pkg.Service/Method`
    /// or `pkg.Service/*`.
    #[serde(default)]
    pub idempotent_grpc_methods: Vec<String>,
    /// Retry non-idempotent requests on every `on` outcome too (opt-in).
    #[serde(default)]
    pub retry_non_idempotent: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: default_attempts(),
            on: default_retry_on(),
            per_try_timeout: None,
            backoff: RetryBackoff::default(),
            budget: RetryBudget::default(),
            replay_body_limit: default_replay_body_limit(),
            idempotent_methods: default_idempotent_methods(),
            idempotent_grpc_methods: Vec::new(),
            retry_non_idempotent: false,
        }
    }
}

fn default_attempts() -> u32 {
    2
}

fn default_retry_on() -> Vec<Condition> {
    vec![
        Condition::ConnectFailure,
        Condition::RefusedStream,
        Condition::Reset,
        Condition::Status(503),
    ]
}

fn default_replay_body_limit() -> usize {
    64 * 1024
}

fn default_idempotent_methods() -> Vec<String> {
    ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]
        .map(String::from)
        .to_vec()
}

/// Exponential backoff with full jitter between tries.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBackoff {
    #[serde(default = "default_backoff_base", with = "duration")]
    pub base: Duration,
    #[serde(default = "default_backoff_max", with = "duration")]
    pub max: Duration,
}

impl Default for RetryBackoff {
    fn default() -> Self {
        Self {
            base: default_backoff_base(),
            max: default_backoff_max(),
        }
    }
}

fn default_backoff_base() -> Duration {
    Duration::from_millis(25)
}

fn default_backoff_max() -> Duration {
    Duration::from_millis(250)
}

/// Retries allowed: `ratio` × requests over `window`, plus `min_per_second`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBudget {
    #[serde(default = "default_budget_ratio")]
    pub ratio: f64,
    #[serde(default = "default_budget_min_per_second")]
    pub min_per_second: u32,
    #[serde(default = "default_budget_window", with = "duration")]
    pub window: Duration,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            ratio: default_budget_ratio(),
            min_per_second: default_budget_min_per_second(),
            window: default_budget_window(),
        }
    }
}

fn default_budget_ratio() -> f64 {
    0.2
}

fn default_budget_min_per_second() -> u32 {
    10
}

fn default_budget_window() -> Duration {
    Duration::from_secs(10)
}

/// `circuit_breaker:` — stop sending to an upstream that keeps failing.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    #[serde(default)]
    pub failure_rate: Option<FailureRate>,
    #[serde(default = "default_open_for", with = "duration")]
    pub open_for: Duration,
    /// The open period doubles on each failed probe, up to this.
    #[serde(default = "default_max_open_for", with = "duration")]
    pub max_open_for: Duration,
    #[serde(default = "default_half_open_requests")]
    pub half_open_requests: u32,
    #[serde(default = "default_failure_conditions")]
    pub failures: Vec<Condition>,
}

fn default_consecutive_failures() -> u32 {
    5
}

fn default_open_for() -> Duration {
    Duration::from_secs(30)
}

fn default_max_open_for() -> Duration {
    Duration::from_secs(300)
}

fn default_half_open_requests() -> u32 {
    1
}

/// What breakers and outlier detection count as failures by default.
pub fn default_failure_conditions() -> Vec<Condition> {
    vec![
        Condition::Http5xx,
        Condition::ConnectFailure,
        Condition::Reset,
        Condition::Timeout,
        Condition::Grpc(14),
        Condition::Grpc(4),
        Condition::Grpc(13),
    ]
}

/// Open when at least `threshold` of the requests in `window` failed, once
/// `min_requests` were seen.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FailureRate {
    pub threshold: f64,
    #[serde(default = "default_rate_window", with = "duration")]
    pub window: Duration,
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
}

fn default_rate_window() -> Duration {
    Duration::from_secs(10)
}

fn default_min_requests() -> u32 {
    20
}

/// `outlier_detection:` — eject endpoints that keep failing, for a while.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    #[serde(default = "default_base_ejection", with = "duration")]
    pub base_ejection: Duration,
    #[serde(default = "default_max_ejection", with = "duration")]
    pub max_ejection: Duration,
    #[serde(default = "default_max_ejection_percent")]
    pub max_ejection_percent: u32,
    #[serde(default = "default_failure_conditions")]
    pub failures: Vec<Condition>,
}

fn default_base_ejection() -> Duration {
    Duration::from_secs(30)
}

fn default_max_ejection() -> Duration {
    Duration::from_secs(300)
}

fn default_max_ejection_percent() -> u32 {
    50
}

/// `fault:` — injected delays and aborts, for chaos testing.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    #[serde(default)]
    pub delay: Option<FaultDelay>,
    #[serde(default)]
    pub abort: Option<FaultAbort>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultDelay {
    pub percent: f64,
    #[serde(with = "duration")]
    pub duration: Duration,
}

/// Answer without calling the upstream: with `status` for HTTP requests and
/// `grpc_status` (a name, e.g. `unavailable`) for gRPC ones.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultAbort {
    pub percent: f64,
    #[serde(default = "default_abort_status")]
    pub status: u16,
    #[serde(default)]
    pub grpc_status: Option<String>,
}

fn default_abort_status() -> u16 {
    503
}
