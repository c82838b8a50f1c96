//! Checks on `inbound:`: non-zero timeout, rate limit and concurrency,
//! listener `limits`, `jwt` (see `jwt`), and no HTTP-only settings when
//! `service.protocol` is tcp.

use super::Problems;
use super::check_limits;
use super::jwt::check_jwt;
use super::resilience::{check_concurrency, check_rate_limit};
use crate::config::model::Config;
use crate::config::service::ServiceProtocol;

pub(super) fn check_inbound(config: &Config, problems: &mut Problems) {
    if let Some(inbound) = &config.inbound {
        if let Some(timeout) = inbound.timeout {
            problems.nonzero("inbound.timeout".to_owned(), timeout);
        }
        if let Some(rate_limit) = &inbound.rate_limit {
            check_rate_limit("inbound.rate_limit", rate_limit, problems);
        }
        if inbound.max_concurrent_requests == Some(0) {
            problems.add("inbound.max_concurrent_requests", "must be at least 1");
        }
        check_concurrency(
            "inbound.",
            inbound.max_concurrent_requests,
            inbound.adaptive_concurrency.as_ref(),
            problems,
        );
        check_limits("inbound.limits", &inbound.limits, problems);
        if let Some(jwt) = &inbound.jwt {
            check_jwt(jwt, problems);
        }
        let tcp = config.service.protocol == ServiceProtocol::Tcp;
        if tcp
            && (inbound.rate_limit.is_some() || inbound.timeout.is_some() || inbound.jwt.is_some())
        {
            problems.add(
                "inbound",
                "rate_limit, timeout and jwt apply to HTTP requests; service.protocol is tcp",
            );
        }
    }
}
