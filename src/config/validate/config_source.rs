//! Checks on `config_source:`: a non-empty Consul KV key without leading
//! or trailing `/`, and `allowed_env` entries that are variable names.

use super::Problems;
use crate::config::config_source::ConfigSource;
use crate::config::env;
use crate::config::model::Config;

pub(super) fn check_config_source(config: &Config, problems: &mut Problems) {
    if let Some(ConfigSource::ConsulKv(kv)) = &config.config_source {
        let key = kv.key.trim();
        if key.is_empty() {
            problems.add("config_source.consul_kv.key", "must not be empty");
        } else if key.starts_with('/') || key.ends_with('/') {
            problems.add(
                "config_source.consul_kv.key",
                "a key has no leading or trailing `/` (e.g. `remora/web`)",
            );
        }
        for (i, name) in kv.allowed_env.iter().enumerate() {
            if !env::is_variable_name(name) {
                problems.add(
                    format!("config_source.consul_kv.allowed_env[{i}]"),
                    format!(
                        "`{name}` is not a variable name (letters, digits and `_`, e.g. `REGION`)"
                    ),
                );
            }
        }
    }
}
