//! Checks on an upstream's (and a route's) resilience sections: retries,
//! rate limit, circuit breaker, outlier detection, fault injection and
//! concurrency, `request_token`, and no HTTP-only setting on a tcp upstream.

use super::Problems;
use super::request_token::check_request_token;
use super::upstream::check_connection_pool;
use crate::config::concurrency::AdaptiveConcurrency;
use crate::config::hedge::{HedgeDelay, HedgePolicy};
use crate::config::rate_limit::{RateLimitConfig, RateLimitKey};
use crate::config::resilience::{FaultConfig, RetryPolicy, grpc_code};
use crate::config::upstream::{UpstreamConfig, UpstreamProtocol};

pub(super) fn check_resilience(
    upstream: &UpstreamConfig,
    at: &dyn Fn(&str) -> String,
    problems: &mut Problems,
) {
    if upstream.protocol == UpstreamProtocol::Tcp {
        let http_only = [
            ("retries", upstream.retries.is_some()),
            ("hedge", upstream.hedge.is_some()),
            ("rate_limit", upstream.rate_limit.is_some()),
            ("request_token", upstream.request_token.is_some()),
            ("fault", upstream.fault.is_some()),
            ("timeouts.request", upstream.timeouts.request.is_some()),
            (
                "max_concurrent_requests",
                upstream.max_concurrent_requests.is_some(),
            ),
            (
                "adaptive_concurrency",
                upstream.adaptive_concurrency.is_some(),
            ),
        ];
        for (key, present) in http_only {
            if present {
                problems.add(
                    at(key),
                    "applies to HTTP requests; a tcp upstream has none (it gets connect retries, \
                     balancing, circuit breaking and outlier detection per connection)",
                );
            }
        }
    }
    if let Some(retries) = &upstream.retries {
        check_retries(&at("retries"), retries, problems);
    }
    if let Some(hedge) = &upstream.hedge {
        check_hedge(&at("hedge"), hedge, problems);
    }
    if let Some(rate_limit) = &upstream.rate_limit {
        check_rate_limit(&at("rate_limit"), rate_limit, problems);
    }
    if let Some(token) = &upstream.request_token {
        check_request_token(&at("request_token"), token, problems);
    }
    if let Some(breaker) = &upstream.circuit_breaker {
        if breaker.consecutive_failures == 0 {
            problems.add(
                at("circuit_breaker.consecutive_failures"),
                "must be at least 1",
            );
        }
        if let Some(rate) = &breaker.failure_rate {
            if !(rate.threshold > 0.0 && rate.threshold <= 1.0) {
                problems.add(
                    at("circuit_breaker.failure_rate.threshold"),
                    "must be a fraction above 0 and at most 1",
                );
            }
            problems.nonzero(at("circuit_breaker.failure_rate.window"), rate.window);
            if rate.min_requests == 0 {
                problems.add(
                    at("circuit_breaker.failure_rate.min_requests"),
                    "must be at least 1",
                );
            }
        }
        problems.nonzero(at("circuit_breaker.open_for"), breaker.open_for);
        if breaker.max_open_for < breaker.open_for {
            problems.add(
                at("circuit_breaker.max_open_for"),
                "must not be shorter than open_for",
            );
        }
        if breaker.half_open_requests == 0 {
            problems.add(
                at("circuit_breaker.half_open_requests"),
                "must be at least 1",
            );
        }
    }
    if let Some(outlier) = &upstream.outlier_detection {
        if outlier.consecutive_failures == 0 {
            problems.add(
                at("outlier_detection.consecutive_failures"),
                "must be at least 1",
            );
        }
        problems.nonzero(at("outlier_detection.base_ejection"), outlier.base_ejection);
        if outlier.max_ejection < outlier.base_ejection {
            problems.add(
                at("outlier_detection.max_ejection"),
                "must not be shorter than base_ejection",
            );
        }
        if outlier.max_ejection_percent > 100 {
            problems.add(
                at("outlier_detection.max_ejection_percent"),
                "must be between 0 and 100",
            );
        }
    }
    if upstream.max_concurrent_requests == Some(0) {
        problems.add(at("max_concurrent_requests"), "must be at least 1");
    }
    check_concurrency(
        &at(""),
        upstream.max_concurrent_requests,
        upstream.adaptive_concurrency.as_ref(),
        problems,
    );
    check_connection_pool(&at("connection_pool"), &upstream.connection_pool, problems);
    if let Some(fault) = &upstream.fault {
        check_fault(&at("fault"), fault, problems);
    }
}

/// Checks `adaptive_concurrency` of the section at `section` (`inbound.`,
/// `upstreams[0].`): bounds in order, and not together with
/// `max_concurrent_requests`.
pub(super) fn check_concurrency(
    section: &str,
    fixed: Option<u32>,
    adaptive: Option<&AdaptiveConcurrency>,
    problems: &mut Problems,
) {
    let Some(adaptive) = adaptive else {
        return;
    };
    let key = |name: &str| format!("{section}adaptive_concurrency{name}");
    if fixed.is_some() {
        problems.add(
            key(""),
            "max_concurrent_requests is set too: choose one (adaptive_concurrency.max_limit \
             caps the adaptive limit)",
        );
    }
    if adaptive.min_limit == 0 {
        problems.add(key(".min_limit"), "must be at least 1");
    }
    if adaptive.max_limit < adaptive.min_limit {
        problems.add(key(".max_limit"), "must not be below min_limit");
    }
    if !(adaptive.min_limit..=adaptive.max_limit).contains(&adaptive.initial_limit) {
        problems.add(
            key(".initial_limit"),
            "must be between min_limit and max_limit",
        );
    }
}

/// Checks a `hedge:` section at key path `at`.
pub(super) fn check_hedge(at: &str, hedge: &HedgePolicy, problems: &mut Problems) {
    if !(1..=10).contains(&hedge.max_extra) {
        problems.add(format!("{at}.max_extra"), "must be between 1 and 10");
    }
    if let HedgeDelay::Fixed(delay) = hedge.delay {
        problems.nonzero(format!("{at}.delay"), delay);
    }
}

/// Checks a `retries:` section at key path `at`.
pub(super) fn check_retries(at: &str, retries: &RetryPolicy, problems: &mut Problems) {
    let key = |name: &str| format!("{at}.{name}");
    if !(1..=10).contains(&retries.attempts) {
        problems.add(
            key("attempts"),
            "must be between 1 and 10 (tries in all, the first included)",
        );
    }
    if let Some(per_try) = retries.per_try_timeout {
        problems.nonzero(key("per_try_timeout"), per_try);
    }
    problems.nonzero(key("backoff.base"), retries.backoff.base);
    if retries.backoff.max < retries.backoff.base {
        problems.add(key("backoff.max"), "must not be shorter than backoff.base");
    }
    if !(0.0..=10.0).contains(&retries.budget.ratio) {
        problems.add(key("budget.ratio"), "must be between 0 and 10");
    }
    problems.nonzero(key("budget.window"), retries.budget.window);
    for (i, method) in retries.idempotent_methods.iter().enumerate() {
        if http::Method::from_bytes(method.as_bytes()).is_err() {
            problems.add(
                format!("{at}.idempotent_methods[{i}]"),
                format!("`{method}` is not an HTTP method"),
            );
        }
    }
    for (i, method) in retries.idempotent_grpc_methods.iter().enumerate() {
        let parts = method.split_once('/');
        let valid = parts.is_some_and(|(service, name)| {
            !service.is_empty() && !name.is_empty() && !name.contains('/')
        });
        if !valid {
            problems.add(
                format!("{at}.idempotent_grpc_methods[{i}]"),
                format!("`{method}` is not `package.Service/Method` or `package.Service/*`"),
            );
        }
    }
}

/// Checks a `fault:` section at key path `at`.
pub(super) fn check_fault(at: &str, fault: &FaultConfig, problems: &mut Problems) {
    let key = |name: &str| format!("{at}.{name}");
    if let Some(delay) = &fault.delay {
        check_percent(&key("delay.percent"), delay.percent, problems);
        problems.nonzero(key("delay.duration"), delay.duration);
    }
    if let Some(abort) = &fault.abort {
        check_percent(&key("abort.percent"), abort.percent, problems);
        if !(200..=599).contains(&abort.status) {
            problems.add(
                key("abort.status"),
                "must be an HTTP status between 200 and 599",
            );
        }
        if let Some(name) = &abort.grpc_status
            && grpc_code(name).is_none()
        {
            problems.add(
                key("abort.grpc_status"),
                format!("unknown gRPC status `{name}`: use a name such as unavailable"),
            );
        }
    }
}

pub(super) fn check_rate_limit(at: &str, rate_limit: &RateLimitConfig, problems: &mut Problems) {
    if !(rate_limit.requests_per_second > 0.0 && rate_limit.requests_per_second.is_finite()) {
        problems.add(
            format!("{at}.requests_per_second"),
            "must be a number above 0",
        );
    }
    if rate_limit.burst == Some(0) {
        problems.add(format!("{at}.burst"), "must be at least 1");
    }
    if rate_limit.max_keys == 0 {
        problems.add(format!("{at}.max_keys"), "must be at least 1");
    }
    for (i, over) in rate_limit.overrides.iter().enumerate() {
        let key = |name: &str| format!("{at}.overrides[{i}].{name}");
        if !(over.requests_per_second > 0.0 && over.requests_per_second.is_finite()) {
            problems.add(key("requests_per_second"), "must be a number above 0");
        }
        if over.burst == Some(0) {
            problems.add(key("burst"), "must be at least 1");
        }
        if rate_limit.key == RateLimitKey::None {
            problems.add(
                key("value"),
                "rate_limit.key is none: every request has the same key; set key to \
                 identity, client_ip or header:NAME",
            );
        }
    }
}

pub(super) fn check_percent(at: &str, percent: f64, problems: &mut Problems) {
    if !(0.0..=100.0).contains(&percent) {
        problems.add(at, "must be a percentage between 0 and 100");
    }
}
