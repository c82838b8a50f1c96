//! The `config_source:` section: where the rest of the configuration is read
//! (and watched) from when it is not this file.

use serde::{Deserialize, Serialize};

/// `config_source:` — the configuration is read (and watched) elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigSource {
    /// A Consul KV key whose value is the YAML configuration, watched with
    /// blocking queries through the agent of the `consul` section.
    ConsulKv(ConsulKvSource),
    /// An etcd key whose value is the YAML configuration, followed with a
    /// watch through the cluster of the `etcd` section.
    Etcd(EtcdKeySource),
}

impl ConfigSource {
    /// The environment variables the source's document may read.
    pub fn allowed_env(&self) -> &[String] {
        match self {
            ConfigSource::ConsulKv(source) => &source.allowed_env,
            ConfigSource::Etcd(source) => &source.allowed_env,
        }
    }
}

/// `config_source: { consul_kv: { key, allowed_env } }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConsulKvSource {
    /// The key, e.g. `remora/web` (no leading `/`).
    pub key: String,
    /// The environment variables the KV value may read (`${NAME}`); none
    /// by default, so whoever writes the key reads no secret of the process.
    #[serde(default)]
    pub allowed_env: Vec<String>,
}

/// `config_source: { etcd: { key, allowed_env } }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdKeySource {
    /// The whole key, e.g. `/config/remora/web`.
    pub key: String,
    /// The environment variables the value may read (`${NAME}`); none by
    /// default, as for `consul_kv`.
    #[serde(default)]
    pub allowed_env: Vec<String>,
}
