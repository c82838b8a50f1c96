//! Checks on `service:`: a non-empty name, `service.port` when `inbound`
//! is configured or `register: true`, and a health check with exactly one
//! of http/tcp and non-zero intervals.

use super::Problems;
use crate::config::model::Config;

pub(super) fn check_service(config: &Config, problems: &mut Problems) {
    let service = &config.service;
    if service.name.trim().is_empty() {
        problems.add("service.name", "must not be empty");
    }
    if config.inbound.is_some() && matches!(service.port, None | Some(0)) {
        problems.add(
            "service.port",
            "inbound is configured, so the application's port is required (1-65535)",
        );
    }
    if service.register && matches!(service.port, None | Some(0)) {
        problems.add(
            "service.register",
            "registration needs service.port, the application's port (1-65535)",
        );
    }
    if let Some(check) = &service.check {
        if check.http.is_some() == check.tcp.is_some() {
            problems.add("service.check", "needs exactly one of `http` or `tcp`");
        }
        problems.nonzero("service.check.interval".to_owned(), check.interval);
        problems.nonzero("service.check.timeout".to_owned(), check.timeout);
    }
}
