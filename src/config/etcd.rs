//! The `etcd:` section: how to reach the etcd v3 cluster (endpoints, user,
//! TLS), where services live in its key space (`prefix`) and how long a
//! registration outlives remora (`lease_ttl`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// The top-level `etcd` section; etcd is used only when it is present.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// Cluster members, `http://host:port` or `https://host:port`; requests
    /// fail over between them.
    pub endpoints: Vec<String>,
    /// etcd user (with `password_file`); no authentication when absent.
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the user's password (trailing newline ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// CA certificates (PEM) that sign the members' certificates (`https://`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for members with `--client-cert-auth`.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Where services live: instance `ID` of service `NAME` is the key
    /// `<prefix>NAME/ID`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// TTL of the lease that holds a registration: how long the key
    /// outlives a remora that was killed.
    #[serde(default = "default_lease_ttl", with = "duration")]
    pub lease_ttl: Duration,
}

fn default_prefix() -> String {
    "/services/".to_owned()
}

fn default_lease_ttl() -> Duration {
    Duration::from_secs(10)
}

impl EtcdConfig {
    /// The key prefix of service `name`'s instances: `<prefix><name>/`.
    pub fn service_prefix(&self, name: &str) -> String {
        format!("{}{name}/", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigSource, Discovery, parse};

    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match parse(text, "test.yaml") {
            Ok(config) => panic!("expected errors, got {config:?}"),
            Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn defaults_and_the_keys_that_use_etcd() {
        let config = parse(
            "service: { name: web }\netcd: { endpoints: [\"http://127.0.0.1:2379\"] }\n\
             upstreams:\n  - { name: api, listen: 127.0.0.1:0, discovery: { etcd: { service: api } } }\n\
             config_source: { etcd: { key: /config/web } }\n",
            "test.yaml",
        )
        .expect("valid");
        let etcd = config.etcd.expect("etcd section");
        assert_eq!(etcd.prefix, "/services/");
        assert_eq!(etcd.lease_ttl, Duration::from_secs(10));
        assert_eq!(etcd.service_prefix("api"), "/services/api/");
        assert!(etcd.username.is_none() && etcd.ca_file.is_none());
        let Discovery::Etcd(discovery) = &config.upstreams[0].discovery else {
            panic!("etcd discovery expected");
        };
        assert_eq!(discovery.service, "api");
        let Some(ConfigSource::Etcd(source)) = &config.config_source else {
            panic!("etcd config source expected");
        };
        assert_eq!(source.key, "/config/web");
    }

    #[test]
    fn semantic_errors_name_their_keys() {
        let text = "service: { name: web }\n\
            etcd:\n  endpoints: [\"127.0.0.1:2379\", \"https://e:2379\"]\n  username: u\n  \
            client_cert: c.pem\n  prefix: services\n  lease_ttl: 1s\n";
        assert_eq!(
            errors(text),
            [
                "test.yaml:2:1: etcd.ca_file: `https://` endpoints need the CA that signs their certificates (no system trust store is used)",
                "test.yaml:3:15: etcd.endpoints[0]: `127.0.0.1:2379`: must start with `http://` or `https://`",
                "test.yaml:4:13: etcd.username: username and password_file go together (set both or neither)",
                "test.yaml:5:16: etcd.client_cert: client_cert and client_key go together (set both or neither)",
                "test.yaml:6:11: etcd.prefix: `services`: a prefix starts and ends with `/` (e.g. `/services/`)",
                "test.yaml:7:14: etcd.lease_ttl: must be at least 2s",
            ]
        );
        let text =
            "service: { name: web }\netcd: { endpoints: [\"http://e:2379\"], ca_file: ca.pem }\n";
        assert_eq!(
            errors(text),
            ["test.yaml:2:48: etcd.ca_file: only used with `https://` endpoints"]
        );
    }

    #[test]
    fn what_uses_etcd_needs_the_section() {
        let text = "service: { name: web }\n\
            upstreams:\n  - { name: api, listen: 127.0.0.1:0, discovery: { etcd: { service: a/b } } }\n\
            config_source: { etcd: { key: \"\" } }\n";
        assert_eq!(
            errors(text),
            [
                "test.yaml:3:58: upstreams[0].discovery.etcd: needs the top-level `etcd` section (its endpoints)",
                "test.yaml:3:69: upstreams[0].discovery.etcd.service: a service name is one key segment, without `/` (the key is <etcd.prefix><service>/<id>)",
                "test.yaml:4:24: config_source.etcd: needs the top-level `etcd` section (its endpoints)",
                "test.yaml:4:31: config_source.etcd.key: must not be empty",
            ]
        );
    }
}
