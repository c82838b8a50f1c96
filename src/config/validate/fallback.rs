//! Checks on `fallback:` of an upstream and of its routes: at least one
//! trigger, exactly one of `backend` and `response`, a backend the upstream
//! defines, a valid status and headers, and no fallback on a tcp upstream.

use super::Problems;
use crate::config::fallback::FallbackConfig;
use crate::config::model::Config;
use crate::config::upstream::UpstreamProtocol;

pub(super) fn check_fallbacks(config: &Config, problems: &mut Problems) {
    for (i, upstream) in config.upstreams.iter().enumerate() {
        let known = |name: &str| upstream.backends.contains_key(name);
        if upstream.protocol == UpstreamProtocol::Tcp && upstream.fallback.is_some() {
            problems.add(
                format!("upstreams[{i}].fallback"),
                "answers HTTP requests; a tcp upstream has none",
            );
        } else if let Some(fallback) = &upstream.fallback {
            check_fallback(
                &format!("upstreams[{i}].fallback"),
                fallback,
                &known,
                problems,
            );
        }
        for (j, route) in upstream.routes.iter().enumerate() {
            if let Some(fallback) = &route.fallback {
                let at = format!("upstreams[{i}].routes[{j}].fallback");
                check_fallback(&at, fallback, &known, problems);
            }
        }
    }
}

fn check_fallback(
    at: &str,
    fallback: &FallbackConfig,
    known: &dyn Fn(&str) -> bool,
    problems: &mut Problems,
) {
    let key = |name: &str| format!("{at}.{name}");
    if fallback.on.is_empty() {
        problems.add(
            key("on"),
            "must list at least one of circuit_open, no_healthy_endpoints, rate_limited",
        );
    }
    match (&fallback.backend, &fallback.response) {
        (Some(backend), None) => {
            if !known(backend) {
                problems.add(
                    key("backend"),
                    format!(
                        "unknown backend `{backend}`: name one under the upstream's `backends:`"
                    ),
                );
            }
        }
        (None, Some(response)) => {
            if !(200..=599).contains(&response.status) {
                problems.add(key("response.status"), "must be between 200 and 599");
            }
            for (name, value) in &response.headers {
                let at = key(&format!("response.headers.{name}"));
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    problems.add(at, format!("invalid header name `{name}`"));
                } else if http::HeaderValue::from_str(value).is_err() {
                    problems.add(at, "invalid header value");
                }
            }
        }
        _ => problems.add(
            at.to_owned(),
            "needs exactly one of `backend` and `response`",
        ),
    }
}
