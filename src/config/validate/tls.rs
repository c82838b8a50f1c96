//! Checks on `tls:` and `upstreams[].tls`: cert/key/ca with `source:
//! files` (and not with `source: consul`), non-zero TLS intervals,
//! authorization patterns and SPIFFE IDs that parse; upstream mesh TLS
//! only with a `tls` section, `mode: simple` with a name to verify the
//! server for and a client certificate only with its key.

use rustls::pki_types::ServerName;

use super::Problems;
use crate::config::model::Config;
use crate::config::routing::BackendConfig;
use crate::config::tls::TlsSource;
use crate::config::upstream::{UpstreamConfig, UpstreamTlsMode};

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
        let at = |key: &str| format!("upstreams[{i}].tls{key}");
        match upstream_tls.mode {
            UpstreamTlsMode::Mesh => {
                if config.tls.is_none() && upstream_tls.enabled != Some(false) {
                    problems.add(
                        at(""),
                        "mesh TLS needs the top-level `tls` section (this sidecar's certificate)",
                    );
                }
                if let Some(identity) = &upstream_tls.identity
                    && let Err(message) = crate::spiffe::check_expected(identity)
                {
                    problems.add(at(".identity"), message);
                }
                let simple_only = [
                    ("server_name", upstream_tls.server_name.is_some()),
                    ("ca_file", upstream_tls.ca_file.is_some()),
                    ("cert_file", upstream_tls.cert_file.is_some()),
                    ("key_file", upstream_tls.key_file.is_some()),
                ];
                for (key, _) in simple_only.iter().filter(|(_, present)| *present) {
                    problems.add(
                        at(&format!(".{key}")),
                        "only used with `mode: simple` (mesh TLS verifies the SPIFFE identity with the mesh CA)",
                    );
                }
            }
            UpstreamTlsMode::Simple => check_simple(upstream, &at, problems),
        }
    }
}

/// `mode: simple`: a name to verify the server for, a client certificate
/// with its key, no mesh identity.
fn check_simple(upstream: &UpstreamConfig, at: &dyn Fn(&str) -> String, problems: &mut Problems) {
    let Some(tls) = &upstream.tls else {
        return;
    };
    if tls.identity.is_some() {
        problems.add(
            at(".identity"),
            "only used with `mode: mesh`; `mode: simple` verifies `server_name`",
        );
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(_), None) => problems.add(
            at(".cert_file"),
            "needs `key_file` too (the client certificate's private key)",
        ),
        (None, Some(_)) => problems.add(
            at(".key_file"),
            "needs `cert_file` too (the client certificate it belongs to)",
        ),
        _ => {}
    }
    match (&tls.server_name, upstream.tls_server_name()) {
        (Some(name), _) => {
            if ServerName::try_from(name.as_str()).is_err() {
                problems.add(
                    at(".server_name"),
                    format!("`{name}` is neither a DNS name nor an IP address"),
                );
            }
        }
        (None, None) if tls.originates(false) => problems.add(
            at(""),
            "`server_name` is required with `mode: simple` when the endpoints are not \
             written with a hostname (the name the server's certificate must be valid for, \
             sent as SNI)",
        ),
        (None, Some(derived)) => check_backend_hosts(upstream, &derived, at, problems),
        (None, None) => {}
    }
}

/// A static backend's endpoints are verified against the upstream's TLS
/// name too: a backend written with another hostname would fail every
/// handshake, so its upstream must say which name the certificates carry.
fn check_backend_hosts(
    upstream: &UpstreamConfig,
    derived: &str,
    at: &dyn Fn(&str) -> String,
    problems: &mut Problems,
) {
    for (name, backend) in &upstream.backends {
        let BackendConfig::Static(addresses) = backend else {
            continue;
        };
        if let Some(host) = (addresses.iter().filter_map(|a| a.host())).find(|h| *h != derived) {
            problems.add(
                at(""),
                format!(
                    "backend `{name}` names host `{host}`, but TLS verifies every backend for \
                     `{derived}` (the endpoints' hostname): set `server_name` to the name \
                     their certificates share"
                ),
            );
        }
    }
}
