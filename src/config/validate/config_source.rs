//! Checks on `config_source:`: a non-empty Consul KV key without leading
//! or trailing `/`, a non-empty etcd key (and an `etcd` section to read it
//! from, see `etcd`), and `allowed_env` entries that are variable names.

use super::Problems;
use crate::config::config_source::ConfigSource;
use crate::config::env;
use crate::config::model::Config;

pub(super) fn check_config_source(config: &Config, problems: &mut Problems) {
    let Some(source) = &config.config_source else {
        return;
    };
    let section = match source {
        ConfigSource::ConsulKv(kv) => {
            let key = kv.key.trim();
            if key.is_empty() {
                problems.add("config_source.consul_kv.key", "must not be empty");
            } else if key.starts_with('/') || key.ends_with('/') {
                problems.add(
                    "config_source.consul_kv.key",
                    "a key has no leading or trailing `/` (e.g. `remora/web`)",
                );
            }
            "consul_kv"
        }
        ConfigSource::Etcd(etcd) => {
            if etcd.key.trim().is_empty() {
                problems.add("config_source.etcd.key", "must not be empty");
            }
            "etcd"
        }
    };
    for (i, name) in source.allowed_env().iter().enumerate() {
        if !env::is_variable_name(name) {
            problems.add(
                format!("config_source.{section}.allowed_env[{i}]"),
                format!("`{name}` is not a variable name (letters, digits and `_`, e.g. `REGION`)"),
            );
        }
    }
}
