//! Checks on `logging:` and `tracing:`: a log level or filter directive,
//! an access-log sample between 0 and 1, and for `tracing.otlp` an
//! `http://` endpoint, a sample ratio between 0 and 1 and a non-zero queue,
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
    let valid_endpoint = otlp
        .endpoint
        .parse::<http::Uri>()
        .is_ok_and(|uri| uri.scheme_str() == Some("http") && uri.authority().is_some());
    if !valid_endpoint {
        problems.add(
            "tracing.otlp.endpoint",
            "must be an http:// URL with a host (https is not supported)",
        );
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
