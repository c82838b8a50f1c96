//! Settings a reload cannot change: they shape the process itself (its
//! runtime threads, log subscriber, admin socket and its limits, span exporter, where its
//! configuration comes from, its mesh TLS material and the tasks that keep
//! it current — see `mesh`) or name it in every metric and log line. A new
//! configuration that changes one of them is still applied — everything
//! else in it takes effect — but the setting keeps its running value, and
//! the caller logs a warning naming the key. Of `tls`, only the
//! authorization rules (`tls.authorization.default`, `allow`, `deny`,
//! `until_intentions_load`) are live. The Consul registration is made once, at start (the etcd
//! registration too, with the start's `etcd` section), so what it
//! registers is fixed: `service.register`, `id`, `tags`, `meta`, `check`,
//! `consul.sync_interval`, and — while registered — `service.address` and
//! `service.port` (the address the agent advertises; unregistered, they are
//! live: the inbound listener forwards there) and `inbound.listen` (the
//! sidecar's registered port). Rejects nothing.

use crate::config::{Config, TlsConfig};

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
            "admin.max_connections",
            restore(
                &running.admin.max_connections,
                &mut next.admin.max_connections,
            ),
        ),
        (
            "admin.header_read_timeout",
            restore(
                &running.admin.header_read_timeout,
                &mut next.admin.header_read_timeout,
            ),
        ),
        (
            "admin.allowed_hosts",
            restore(&running.admin.allowed_hosts, &mut next.admin.allowed_hosts),
        ),
        (
            "admin.tap",
            restore(&running.admin.tap, &mut next.admin.tap),
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
        ("tls", restore_tls(&running.tls, &mut next.tls)),
        (
            "service.register",
            restore(&running.service.register, &mut next.service.register),
        ),
        (
            "service.id",
            restore(&running.service.id, &mut next.service.id),
        ),
        (
            "service.tags",
            restore(&running.service.tags, &mut next.service.tags),
        ),
        (
            "service.meta",
            restore(&running.service.meta, &mut next.service.meta),
        ),
        (
            "service.check",
            restore(&running.service.check, &mut next.service.check),
        ),
        (
            "consul.sync_interval",
            restore(
                &running.consul.sync_interval,
                &mut next.consul.sync_interval,
            ),
        ),
    ];
    let registered = running.service.register.then(|| {
        [
            (
                "service.address",
                restore(&running.service.address, &mut next.service.address),
            ),
            (
                "service.port",
                restore(&running.service.port, &mut next.service.port),
            ),
            (
                "inbound.listen",
                match (&running.inbound, &mut next.inbound) {
                    (Some(running), Some(next)) => restore(&running.listen, &mut next.listen),
                    _ => false,
                },
            ),
        ]
    });
    let fixed: Vec<(&'static str, bool)> = (restored.into_iter())
        .chain(registered.into_iter().flatten())
        .collect();
    for (path, _) in &fixed {
        next.from_env_as_in(running, path);
    }
    (fixed.into_iter())
        .filter_map(|(path, changed)| changed.then_some(path))
        .collect()
}

/// Sets `next` to `running` when they differ (compared as config values,
/// secrets included); true when they did.
fn restore<T: PartialEq + Clone>(running: &T, next: &mut T) -> bool {
    let differs = running != next;
    if differs {
        *next = running.clone();
    }
    differs
}

/// Like [`restore`] for `tls`, but `next` keeps its authorization rules
/// when both have a `tls` section (whether intentions are followed is fixed).
fn restore_tls(running: &Option<TlsConfig>, next: &mut Option<TlsConfig>) -> bool {
    let mut fixed = running.clone();
    if let (Some(fixed), Some(next)) = (&mut fixed, &*next) {
        let intentions = fixed.authorization.intentions;
        fixed.authorization = next.authorization.clone();
        fixed.authorization.intentions = intentions;
    }
    restore(&fixed, next)
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
    fn tls_is_fixed_but_its_authorization_rules() {
        let tls = "tls: { cert: /c.pem, key: /k.pem, ca: /ca.pem, authorization: { deny: [a] } }\n";
        let running = parse(&format!("service: {{ name: web }}\n{tls}"));
        let mut next = parse(
            "service: { name: web }\ntls: { cert: /c.pem, key: /k.pem, ca: /other.pem, \
             authorization: { default: deny, allow: [b], intentions: true } }\n",
        );
        assert_eq!(keep_fixed(&running, &mut next), ["tls"]);
        let kept = next.tls.as_ref().expect("tls");
        assert_eq!(kept.ca.as_deref(), Some(std::path::Path::new("/ca.pem")));
        assert_eq!(kept.authorization.allow, ["b"]);
        assert!(kept.authorization.deny.is_empty());
        assert!(!kept.authorization.intentions);

        let mut rules_only = parse(&format!("service: {{ name: web }}\n{tls}"));
        rules_only.tls.as_mut().expect("tls").authorization.allow = vec!["c".into()];
        assert!(keep_fixed(&running, &mut rules_only).is_empty());
        assert_eq!(rules_only.tls.expect("tls").authorization.allow, ["c"]);

        let mut without = parse("service: { name: web }\n");
        assert_eq!(keep_fixed(&running, &mut without), ["tls"]);
        assert!(without.tls.is_some());
    }

    #[test]
    fn registration_settings_are_fixed() {
        let running = parse(
            "service: { name: web, port: 8080, register: true, tags: [a] }\n\
             consul: { sync_interval: 30s }\ninbound: { listen: 127.0.0.1:15006 }\n",
        );
        let mut next = parse(
            "service: { name: web, port: 8081, address: 127.0.0.2, tags: [b], \
             meta: { v: '2' }, id: web-2 }\nconsul: { sync_interval: 5s, wait: 1m }\n\
             inbound: { listen: 127.0.0.1:15007 }\n",
        );
        assert_eq!(
            keep_fixed(&running, &mut next),
            [
                "service.register",
                "service.id",
                "service.tags",
                "service.meta",
                "consul.sync_interval",
                "service.address",
                "service.port",
                "inbound.listen"
            ]
        );
        assert!(next.service.register);
        assert_eq!(next.inbound.expect("inbound").listen.port(), 15006);
        assert_eq!(next.service.port, Some(8080));
        assert_eq!(next.service.tags, ["a"]);
        assert_eq!(next.consul.sync_interval, running.consul.sync_interval);
        // The rest of the consul section is live (discovery follows it).
        assert_eq!(next.consul.wait, std::time::Duration::from_secs(60));

        // Unregistered, the application's address and port are live.
        let running = parse("service: { name: web, port: 8080 }\n");
        let mut next = parse("service: { name: web, port: 8081 }\n");
        assert!(keep_fixed(&running, &mut next).is_empty());
        assert_eq!(next.service.port, Some(8081));
    }

    #[test]
    fn an_unchanged_configuration_has_nothing_to_report() {
        let running = parse("service: { name: web }\n");
        let mut next = running.clone();
        assert!(keep_fixed(&running, &mut next).is_empty());
    }
}
