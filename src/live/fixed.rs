//! Settings a reload cannot change: they shape the process itself (its
//! runtime threads, log subscriber, admin socket, span exporter, where its
//! configuration comes from) or name it in every metric and log line. A new configuration that changes one of
//! them is still applied — everything else in it takes effect — but the
//! setting keeps its running value, and the caller logs a warning naming the
//! key. Rejects nothing.

use serde::Serialize;

use crate::config::Config;

/// Puts the running value of every fixed setting back into `next`; returns
/// the key path of each one `next` wanted to change.
pub fn keep_fixed(running: &Config, next: &mut Config) -> Vec<&'static str> {
    let restored = [
        (
            "runtime.worker_threads",
            restore(
                &running.runtime.worker_threads,
                &mut next.runtime.worker_threads,
            ),
        ),
        (
            "admin.listen",
            restore(&running.admin.listen, &mut next.admin.listen),
        ),
        (
            "logging.level",
            restore(&running.logging.level, &mut next.logging.level),
        ),
        (
            "logging.format",
            restore(&running.logging.format, &mut next.logging.format),
        ),
        (
            "service.name",
            restore(&running.service.name, &mut next.service.name),
        ),
        (
            "tracing.otlp",
            restore(&running.tracing.otlp, &mut next.tracing.otlp),
        ),
        (
            "config_source",
            restore(&running.config_source, &mut next.config_source),
        ),
    ];
    restored
        .into_iter()
        .filter_map(|(path, changed)| changed.then_some(path))
        .collect()
}

/// Sets `next` to `running` when they differ (compared as serialized, so
/// every config type qualifies); true when they did.
fn restore<T: Serialize + Clone>(running: &T, next: &mut T) -> bool {
    let differs = serde_json::to_value(running).ok() != serde_json::to_value(&*next).ok();
    if differs {
        *next = running.clone();
    }
    differs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Config {
        crate::config::parse(yaml, "test.yaml").expect("valid")
    }

    #[test]
    fn fixed_settings_keep_their_running_values() {
        let running = parse("service: { name: web }\nruntime: { worker_threads: 1 }\n");
        let mut next = parse(
            "service: { name: other }\nruntime: { worker_threads: 4, drain_timeout: 3s }\n\
             admin: { listen: 127.0.0.1:9999 }\nlogging: { level: debug, access_log: false }\n",
        );
        let changed = keep_fixed(&running, &mut next);
        assert_eq!(
            changed,
            [
                "runtime.worker_threads",
                "admin.listen",
                "logging.level",
                "service.name"
            ]
        );
        assert_eq!(next.runtime.worker_threads, 1);
        assert_eq!(next.admin.listen, running.admin.listen);
        assert_eq!(next.logging.level, "info");
        assert_eq!(next.service.name, "web");
        // Live settings are left alone.
        assert_eq!(
            next.runtime.drain_timeout,
            std::time::Duration::from_secs(3)
        );
        assert!(!next.logging.access_log);
    }

    #[test]
    fn an_unchanged_configuration_has_nothing_to_report() {
        let running = parse("service: { name: web }\n");
        let mut next = running.clone();
        assert!(keep_fixed(&running, &mut next).is_empty());
    }
}
