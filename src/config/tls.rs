//! The `tls:` section: mesh mTLS between sidecars — this sidecar's
//! certificate, the CA it trusts, and who may call the inbound listener.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// Mesh mTLS (`tls:`): the sidecar's certificate, the CA it trusts, and
/// who may call the inbound listener.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Where the certificate, key and CA come from.
    #[serde(default)]
    pub source: TlsSource,
    /// PEM certificate chain (leaf first); `source: files` only.
    #[serde(default)]
    pub cert: Option<std::path::PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1); `source: files` only.
    #[serde(default)]
    pub key: Option<std::path::PathBuf>,
    /// PEM CA certificate(s) peers must chain to; `source: files` only.
    #[serde(default)]
    pub ca: Option<std::path::PathBuf>,
    /// How often the files are checked for changes; `source: files` only.
    #[serde(default = "default_tls_reload_interval", with = "duration")]
    pub reload_interval: Duration,
    /// The Consul service whose leaf certificate is used; default `service.name`.
    #[serde(default)]
    pub service: Option<String>,
    /// A TLS handshake (either direction) that takes longer fails.
    #[serde(default = "default_tls_handshake_timeout", with = "duration")]
    pub handshake_timeout: Duration,
    /// Who may call the inbound listener.
    #[serde(default)]
    pub authorization: AuthorizationConfig,
}

/// `tls.reload_interval` when not written, and how often the files of
/// `upstreams[].tls.mode: simple` are re-read in a configuration without `tls:`.
pub const DEFAULT_TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

fn default_tls_reload_interval() -> Duration {
    DEFAULT_TLS_RELOAD_INTERVAL
}

/// `tls.handshake_timeout` when not written, and the bound of a
/// `upstreams[].tls.mode: simple` handshake in a configuration without `tls:`.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn default_tls_handshake_timeout() -> Duration {
    DEFAULT_TLS_HANDSHAKE_TIMEOUT
}

/// Where the mesh certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsSource {
    /// `cert`, `key` and `ca` PEM files, reloaded when they change.
    #[default]
    Files,
    /// Consul Connect CA: the agent's leaf certificate and roots.
    Consul,
}

/// Inbound authorization by peer identity (`tls.authorization:`). Deny rules
/// are checked first, then allow rules, then Consul intentions (when on),
/// then `default`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationConfig {
    /// What happens to a peer no rule (and no intention) matches.
    #[serde(default)]
    pub default: AuthorizationAction,
    /// Peers allowed: service names or SPIFFE IDs, `*` matches any characters.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Peers denied (checked before `allow`), same patterns.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Also follow Consul intentions for `service.name` (a blocking query).
    #[serde(default)]
    pub intentions: bool,
    /// With `intentions`, what a peer no rule decides gets until Consul's
    /// intentions first load (unset: deny).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_intentions_load: Option<UntilIntentionsLoad>,
}

/// Until Consul's intentions first load (Consul unreachable, or an answer
/// that cannot be read): deny, or fall through to `default`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UntilIntentionsLoad {
    #[default]
    Deny,
    Default,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthorizationAction {
    #[default]
    Allow,
    Deny,
}
