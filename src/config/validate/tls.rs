//! Checks on `tls:` and `upstreams[].tls`: cert/key/ca with `source:
//! files` (and not with `source: consul`), non-zero TLS intervals,
//! authorization patterns and SPIFFE IDs that parse, and upstream TLS only
//! with a `tls` section.

use super::Problems;
use crate::config::model::Config;
use crate::config::tls::TlsSource;

pub(super) fn check_tls(config: &Config, problems: &mut Problems) {
    if let Some(tls) = &config.tls {
        let files = [
            ("tls.cert", tls.cert.is_some()),
            ("tls.key", tls.key.is_some()),
            ("tls.ca", tls.ca.is_some()),
        ];
        for (key, present) in files {
            match (tls.source, present) {
                (TlsSource::Files, false) => problems.add(
                    "tls",
                    format!("`{key}` is required with `source: files` (a PEM file path)"),
                ),
                (TlsSource::Consul, true) => problems.add(
                    key,
                    "not used with `source: consul` (Consul's CA issues the certificate)",
                ),
                _ => {}
            }
        }
        if tls.service.is_some() && tls.source == TlsSource::Files {
            problems.add("tls.service", "only used with `source: consul`");
        }
        problems.nonzero("tls.reload_interval".into(), tls.reload_interval);
        problems.nonzero("tls.handshake_timeout".into(), tls.handshake_timeout);
        let authorization = &tls.authorization;
        if authorization.until_intentions_load.is_some() && !authorization.intentions {
            problems.add(
                "tls.authorization.until_intentions_load",
                "only used with `intentions: true`",
            );
        }
        for (key, patterns) in [
            ("allow", &authorization.allow),
            ("deny", &authorization.deny),
        ] {
            for (i, pattern) in patterns.iter().enumerate() {
                if let Err(message) = crate::spiffe::check_pattern(pattern) {
                    problems.add(format!("tls.authorization.{key}[{i}]"), message);
                }
            }
        }
    }
    for (i, upstream) in config.upstreams.iter().enumerate() {
        let Some(upstream_tls) = &upstream.tls else {
            continue;
        };
        if config.tls.is_none() && upstream_tls.enabled != Some(false) {
            problems.add(
                format!("upstreams[{i}].tls"),
                "mesh TLS needs the top-level `tls` section (this sidecar's certificate)",
            );
        }
        if let Some(identity) = &upstream_tls.identity
            && let Err(message) = crate::spiffe::check_expected(identity)
        {
            problems.add(format!("upstreams[{i}].tls.identity"), message);
        }
    }
}
