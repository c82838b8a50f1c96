//! Checks on `logging:` and `tracing:`: a log level or filter directive,
//! an access-log sample between 0 and 1, and for `tracing.otlp` an
//! `http://` or `https://` endpoint (when set), header names with one value
//! or value file each, a sample ratio between 0 and 1 and a non-zero queue,
//! batch and flush interval.

use super::Problems;
use crate::config::model::Config;

pub(super) fn check_logging(config: &Config, problems: &mut Problems) {
    if !(0.0..=1.0).contains(&config.logging.access_log_sample) {
        problems.add(
            "logging.access_log_sample",
            "must be a fraction between 0 and 1",
        );
    }
    let level = config.logging.level.trim();
    let is_level = ["error", "warn", "info", "debug", "trace"]
        .iter()
        .any(|known| known.eq_ignore_ascii_case(level));
    if !is_level && !level.contains('=') {
        problems.add(
            "logging.level",
            format!(
                "invalid log level `{level}`: use error, warn, info, debug, trace or a filter such as `info,remora=debug`"
            ),
        );
    }
}

pub(super) fn check_tracing(config: &Config, problems: &mut Problems) {
    let Some(otlp) = &config.tracing.otlp else {
        return;
    };
    let valid_endpoint = |endpoint: &String| {
        endpoint.parse::<http::Uri>().is_ok_and(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some()
        })
    };
    if !otlp.endpoint.as_ref().is_none_or(valid_endpoint) {
        problems.add(
            "tracing.otlp.endpoint",
            "must be an http:// or https:// URL with a host",
        );
    }
    for (i, header) in otlp.headers.iter().enumerate() {
        if http::HeaderName::from_bytes(header.name.as_bytes()).is_err() {
            problems.add(
                format!("tracing.otlp.headers[{i}].name"),
                format!("`{}` is not a header name", header.name),
            );
        }
        if header.value.is_some() == header.value_file.is_some() {
            problems.add(
                format!("tracing.otlp.headers[{i}]"),
                "needs exactly one of value and value_file",
            );
        }
    }
    if !(0.0..=1.0).contains(&otlp.sample_ratio) {
        problems.add("tracing.otlp.sample_ratio", "must be between 0 and 1");
    }
    if otlp.max_queue == 0 {
        problems.add("tracing.otlp.max_queue", "must be greater than zero");
    }
    if otlp.batch_size == 0 {
        problems.add("tracing.otlp.batch_size", "must be greater than zero");
    }
    problems.nonzero("tracing.otlp.flush_interval".into(), otlp.flush_interval);
}
