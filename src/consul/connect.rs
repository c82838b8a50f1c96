//! Consul Connect for mesh TLS: the agent's leaf certificate for a service
//! (`GET /v1/agent/connect/ca/leaf/:service`), the CA roots
//! (`GET /v1/agent/connect/ca/roots`) and the intentions that apply to a
//! destination (`GET /v1/connect/intentions/match?by=destination&name=…`),
//! each as a blocking query. Shapes as in Consul's documentation
//! (`tests/fixtures/consul-api/connect-*.json`); unknown fields are ignored.
//! Rejects a leaf without certificate or key, and roots without a
//! certificate. Intentions are read entry by entry: an entry without a
//! readable source is left out (and reported); an L7 intention's
//! `Permissions` (`HTTP`: `PathExact` / `PathPrefix` / `PathRegex`,
//! `Methods`, `Header` with `Present` / `Exact` / `Prefix` / `Suffix` /
//! `Regex` and `Invert`; `JWT`: `Providers` with `VerifyClaims`) and an
//! intention's `JWT` (the `service-intentions` entry's top-level one, which
//! Consul copies into each of its intentions) are compiled for per-request
//! enforcement
//! (`tls::authorization`); an entry of another shape (an unknown field in a
//! permission, a bad regex, a header matcher without exactly one test) is
//! unreadable and, like an unknown action, denies its source; entries for a
//! cluster peer, another admin partition or a sameness group name no local
//! caller and are left out.

use std::collections::BTreeMap;

use std::sync::Arc;

use serde::Deserialize;

use super::permissions::{JwtEntry, JwtRequirement, Permission, PermissionEntry};
use super::{Client, ConsulError};

/// `GET /v1/agent/connect/ca/leaf/:service`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Leaf {
    #[serde(rename = "CertPEM")]
    pub cert_pem: String,
    #[serde(rename = "PrivateKeyPEM")]
    pub private_key_pem: String,
    #[serde(rename = "ServiceURI", default)]
    pub service_uri: String,
    #[serde(default)]
    pub serial_number: String,
}

/// `GET /v1/agent/connect/ca/roots`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Roots {
    #[serde(rename = "ActiveRootID", default)]
    pub active_root_id: String,
    pub roots: Vec<Root>,
}

/// One CA root (Consul lists the old and the new root during a rotation).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Root {
    #[serde(rename = "ID", default)]
    pub id: String,
    pub root_cert: String,
    #[serde(default)]
    pub intermediate_certs: Option<Vec<String>>,
    #[serde(default)]
    pub active: bool,
}

impl Roots {
    /// Every root certificate (and intermediate) as one PEM text: all are
    /// trusted, so peers with a leaf from the old or the new root pass.
    pub fn pem(&self) -> String {
        let mut pem = String::new();
        for root in &self.roots {
            pem.push_str(root.root_cert.trim_end());
            pem.push('\n');
            for intermediate in root.intermediate_certs.iter().flatten() {
                pem.push_str(intermediate.trim_end());
                pem.push('\n');
            }
        }
        pem
    }
}

/// One Consul intention as `/v1/connect/intentions/match` lists it.
#[derive(Debug, Clone)]
pub struct Intention {
    pub source_namespace: String,
    pub source_name: String,
    /// A plain allow; false for `deny`, L7 intentions and unknown actions.
    pub allow: bool,
    /// An L7 intention's permissions, in order (the first match decides).
    pub permissions: Option<Arc<[Permission]>>,
    /// The token the source's requests must carry for the intention to
    /// apply (`JWT`, Consul 1.16+: the `service-intentions` entry's
    /// top-level one, copied into each of its intentions).
    pub jwt: Option<JwtRequirement>,
}

/// One entry of the intentions match answer, as far as remora reads it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IntentionEntry {
    #[serde(rename = "SourceNS", default)]
    source_ns: Option<String>,
    source_name: String,
    #[serde(default)]
    action: Option<String>,
    /// L7 permissions (the intention then has no `Action`).
    #[serde(default)]
    permissions: Option<Vec<PermissionEntry>>,
    #[serde(rename = "JWT", default)]
    jwt: Option<JwtEntry>,
    #[serde(default)]
    source_peer: Option<String>,
    #[serde(default)]
    source_partition: Option<String>,
    #[serde(default)]
    source_sameness_group: Option<String>,
}

impl IntentionEntry {
    /// The intention for a local source; `None` for one scoped to a cluster
    /// peer, another partition or a sameness group.
    fn intention(self) -> Option<Intention> {
        let set = |field: &Option<String>| field.as_deref().is_some_and(|v| !v.is_empty());
        let other_partition = self
            .source_partition
            .as_deref()
            .is_some_and(|partition| !partition.is_empty() && partition != "default");
        if set(&self.source_peer) || set(&self.source_sameness_group) || other_partition {
            return None;
        }
        let permissions = (self.permissions)
            .filter(|permissions| !permissions.is_empty())
            .map(|permissions| {
                permissions
                    .into_iter()
                    .map(PermissionEntry::compile)
                    .collect()
            });
        Some(Intention {
            source_namespace: self.source_ns.unwrap_or_default(),
            source_name: self.source_name,
            allow: permissions.is_none() && self.action.as_deref() == Some("allow"),
            permissions,
            jwt: self.jwt.map(JwtEntry::compile),
        })
    }
}

/// The intentions for a destination, and the entries that could not be read.
#[derive(Debug)]
pub struct IntentionsAnswer {
    /// In precedence order.
    pub intentions: Vec<Intention>,
    /// One message per entry that could not be read.
    pub unreadable: Vec<String>,
}

impl IntentionsAnswer {
    /// Reads each entry on its own, so that one of an unknown shape never
    /// discards the others. Such an entry fails closed where its source is
    /// readable: it denies its `SourceName` (in any namespace) at its place
    /// in the precedence order, whatever its action; one without a readable
    /// `SourceName` names nobody and is left out.
    pub(crate) fn read(entries: Vec<serde_json::Value>) -> IntentionsAnswer {
        let mut answer = IntentionsAnswer {
            intentions: Vec::new(),
            unreadable: Vec::new(),
        };
        for (i, entry) in entries.into_iter().enumerate() {
            let source_name = (entry.get("SourceName"))
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned);
            match serde_json::from_value::<IntentionEntry>(entry) {
                Ok(entry) => answer.intentions.extend(entry.intention()),
                Err(error) => {
                    answer.unreadable.push(format!("entry {i}: {error}"));
                    answer
                        .intentions
                        .extend(source_name.map(|source_name| Intention {
                            source_namespace: "*".to_owned(),
                            source_name,
                            allow: false,
                            permissions: None,
                            jwt: None,
                        }));
                }
            }
        }
        answer
    }
}

impl Client {
    /// The leaf certificate of `service`; blocking when `index` > 0
    /// (Consul answers before the leaf expires, or when the CA rotates).
    pub async fn ca_leaf(&self, service: &str, index: u64) -> Result<(u64, Leaf), ConsulError> {
        let path = ["agent", "connect", "ca", "leaf", service];
        self.blocking_get(&path, Vec::new(), index, "a leaf certificate")
            .await
    }

    /// The Connect CA roots; blocking when `index` > 0.
    pub async fn ca_roots(&self, index: u64) -> Result<(u64, Roots), ConsulError> {
        let path = ["agent", "connect", "ca", "roots"];
        self.blocking_get(&path, Vec::new(), index, "a CA roots list")
            .await
    }

    /// The intentions with `destination` as destination, in precedence
    /// order; blocking when `index` > 0. An answer that is not a map of
    /// lists, or has no list for `destination`, is an error; entries are
    /// read one by one.
    pub async fn intentions_for(
        &self,
        destination: &str,
        index: u64,
    ) -> Result<(u64, IntentionsAnswer), ConsulError> {
        let params = vec![
            ("by", "destination".to_owned()),
            ("name", destination.to_owned()),
        ];
        let path = ["connect", "intentions", "match"];
        let (index, mut matched): (u64, BTreeMap<String, Vec<serde_json::Value>>) = self
            .blocking_get(&path, params, index, "an intentions match")
            .await?;
        let entries = matched
            .remove(destination)
            .ok_or_else(|| ConsulError::Body {
                what: "an intentions match",
                reason: format!("no list for `{destination}`"),
                body: format!("{matched:?}"),
            })?;
        Ok((index, IntentionsAnswer::read(entries)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consul::documented_body;

    #[test]
    fn the_documented_leaf_roots_and_intentions_parse() {
        let leaf: Leaf =
            serde_json::from_str(&documented_body("connect-ca-leaf-response.json")).unwrap();
        assert_eq!(leaf.serial_number, "08");
        assert!(leaf.service_uri.ends_with("/svc/web"));
        let roots: Roots =
            serde_json::from_str(&documented_body("connect-ca-roots-response.json")).unwrap();
        assert_eq!(roots.roots.len(), 1);
        assert!(roots.roots[0].active);
        let mut matched: BTreeMap<String, Vec<serde_json::Value>> =
            serde_json::from_str(&documented_body("connect-intentions-match-response.json"))
                .unwrap();
        let web = IntentionsAnswer::read(matched.remove("web").unwrap());
        assert!(web.unreadable.is_empty());
        let read: Vec<(&str, &str, bool, bool)> = (web.intentions.iter())
            .map(|i| {
                let l4 = i.permissions.is_none() && i.jwt.is_none();
                (&*i.source_namespace, &*i.source_name, i.allow, l4)
            })
            .collect();
        assert_eq!(
            read,
            [
                ("default", "web", false, true),
                ("default", "web", true, true)
            ]
        );
    }

    fn entry(name: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut entry = serde_json::json!({ "SourceNS": "default", "SourceName": name });
        entry
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        entry
    }

    #[test]
    fn intention_entries_are_read_one_by_one() {
        use serde_json::json;
        let answer = IntentionsAnswer::read(vec![
            json!("not an object"),
            json!({ "SourceNS": "default", "Action": "allow" }),
            entry("ops", json!({ "SourceName": 7, "Action": "allow" })),
            entry("odd", json!({ "SourceNS": 7, "Action": "allow" })),
            entry("web", json!({ "Permissions": [{ "Action": "allow" }] })),
            entry("cart", json!({ "Action": "allow", "Permissions": [] })),
            entry("mail", json!({ "Action": "audit" })),
            entry("jobs", json!({})),
            entry("peered", json!({ "Action": "allow", "SourcePeer": "east" })),
            entry(
                "parted",
                json!({ "Action": "allow", "SourcePartition": "p1" }),
            ),
            entry(
                "same",
                json!({ "Action": "allow", "SourceSamenessGroup": "g" }),
            ),
            entry(
                "local",
                json!({ "Action": "allow", "SourcePartition": "default", "SourcePeer": "" }),
            ),
            entry("billing", json!({ "Action": "allow", "Permissions": null })),
            entry("*", json!({ "Action": "deny" })),
        ]);
        assert_eq!(answer.unreadable.len(), 4, "{:?}", answer.unreadable);
        assert!(answer.unreadable[0].starts_with("entry 0: "));
        let read: Vec<(&str, bool)> = answer
            .intentions
            .iter()
            .map(|i| (i.source_name.as_str(), i.allow))
            .collect();
        assert_eq!(
            read,
            [
                ("odd", false),
                ("web", false),
                ("cart", true),
                ("mail", false),
                ("jobs", false),
                ("local", true),
                ("billing", true),
                ("*", false),
            ]
        );
    }

    #[test]
    fn l7_entries_of_unknown_shapes_deny_their_source() {
        use serde_json::json;
        let l7 = |name: &str, http: serde_json::Value| {
            entry(
                name,
                json!({ "Permissions": [{ "Action": "allow", "HTTP": http }] }),
            )
        };
        let answer = IntentionsAnswer::read(vec![
            l7("a", json!({ "PathExact": "/a", "PathPrefix": "/b" })),
            l7("b", json!({ "PathRegex": "(" })),
            l7(
                "c",
                json!({ "Header": [{ "Name": "x", "Exact": "1", "Prefix": "1" }] }),
            ),
            l7("d", json!({ "Header": [{ "Name": "x" }] })),
            l7("e", json!({ "PathExact": "/a", "Query": "x" })),
            l7("f", json!({ "Methods": ["G ET"] })),
            entry("g", json!({ "Permissions": [{ "Action": "audit" }] })),
            l7("ok", json!({ "PathExact": "/a", "Methods": ["GET"] })),
        ]);
        assert_eq!(answer.unreadable.len(), 7, "{:?}", answer.unreadable);
        let read: Vec<(&str, &str, bool, bool)> = (answer.intentions.iter())
            .map(|i| {
                (
                    &*i.source_namespace,
                    &*i.source_name,
                    i.allow,
                    i.permissions.is_some(),
                )
            })
            .collect();
        let denied = |name| ("*", name, false, false);
        assert_eq!(
            read,
            [
                denied("a"),
                denied("b"),
                denied("c"),
                denied("d"),
                denied("e"),
                denied("f"),
                denied("g"),
                ("default", "ok", false, true),
            ]
        );
    }
}
