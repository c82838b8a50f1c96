//! The `consul:` section: how to reach the Consul agent (address, ACL
//! token, TLS, blocking-query wait).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

use super::duration;

/// The top-level `consul` section: how to reach the Consul agent.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConsulConfig {
    /// Agent URL; default `CONSUL_HTTP_ADDR`, then `http://127.0.0.1:8500`.
    #[serde(default)]
    pub address: Option<String>,
    /// The ACL token itself (e.g. `${CONSUL_TOKEN}`); shown redacted.
    #[serde(default)]
    pub token: Option<Secret>,
    /// A file holding the ACL token; default `CONSUL_HTTP_TOKEN`.
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
    /// Default datacenter of every Consul discovery (`dc`); the agent's own when absent.
    #[serde(default)]
    pub datacenter: Option<String>,
    /// How long a blocking query may wait for a change.
    #[serde(default = "default_consul_wait", with = "duration")]
    pub wait: Duration,
    /// CA certificates (PEM) that sign an `https://` agent's certificate;
    /// default `CONSUL_CACERT`. Required for https (no system roots are used).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// Client certificate (PEM) for an agent with `verify_incoming`;
    /// default `CONSUL_CLIENT_CERT`.
    #[serde(default)]
    pub client_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM); default `CONSUL_CLIENT_KEY`.
    #[serde(default)]
    pub client_key: Option<std::path::PathBuf>,
    /// With `service.register`: how often the registrations are checked
    /// with the agent (and registered again when it lost them).
    #[serde(default = "default_consul_sync_interval", with = "duration")]
    pub sync_interval: Duration,
    /// Whether the file has a `consul` section (with an `etcd` section and
    /// no `consul` one, `service.register` registers in etcd only).
    #[serde(skip)]
    pub present: bool,
}

/// `#[serde(deserialize_with)]` of `Config::consul`: the section as
/// written, marked present.
pub(super) fn present_section<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<ConsulConfig, D::Error> {
    let mut section = ConsulConfig::deserialize(deserializer)?;
    section.present = true;
    Ok(section)
}

fn default_consul_wait() -> Duration {
    Duration::from_secs(300)
}

fn default_consul_sync_interval() -> Duration {
    Duration::from_secs(30)
}

impl Default for ConsulConfig {
    fn default() -> Self {
        ConsulConfig {
            address: None,
            token: None,
            token_file: None,
            datacenter: None,
            wait: default_consul_wait(),
            ca_file: None,
            client_cert: None,
            client_key: None,
            sync_interval: default_consul_sync_interval(),
            present: false,
        }
    }
}

/// A secret string: serialized and debug-printed as `<redacted>`, so it
/// never reaches `/config` or a log line.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; only for sending it where it belongs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(super::redact::REDACTED)
    }
}
