//! Consul Connect for mesh TLS: the agent's leaf certificate for a service
//! (`GET /v1/agent/connect/ca/leaf/:service`), the CA roots
//! (`GET /v1/agent/connect/ca/roots`) and the intentions that apply to a
//! destination (`GET /v1/connect/intentions/match?by=destination&name=…`),
//! each as a blocking query. Shapes as in Consul's documentation
//! (`tests/fixtures/consul-api/connect-*.json`); unknown fields are ignored.
//! Rejects a leaf without certificate or key, roots without a certificate
//! and intentions with an action other than allow/deny.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Client, ConsulError};
use crate::tls::authorization::Intention;

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

/// One entry of the intentions match answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IntentionEntry {
    #[serde(rename = "SourceNS", default)]
    source_ns: String,
    source_name: String,
    action: IntentionAction,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum IntentionAction {
    Allow,
    Deny,
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
    /// order; blocking when `index` > 0.
    pub async fn intentions_for(
        &self,
        destination: &str,
        index: u64,
    ) -> Result<(u64, Vec<Intention>), ConsulError> {
        let params = vec![
            ("by", "destination".to_owned()),
            ("name", destination.to_owned()),
        ];
        let path = ["connect", "intentions", "match"];
        let (index, mut matched): (u64, BTreeMap<String, Vec<IntentionEntry>>) = self
            .blocking_get(&path, params, index, "an intentions match")
            .await?;
        let intentions = matched
            .remove(destination)
            .unwrap_or_default()
            .into_iter()
            .map(|entry| Intention {
                source_namespace: entry.source_ns,
                source_name: entry.source_name,
                allow: matches!(entry.action, IntentionAction::Allow),
            })
            .collect();
        Ok((index, intentions))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consul::documented_body;

    #[test]
    fn the_documented_leaf_roots_and_intentions_parse_and_make_material() {
        let leaf: Leaf =
            serde_json::from_str(&documented_body("connect-ca-leaf-response.json")).unwrap();
        assert_eq!(leaf.serial_number, "08");
        assert!(leaf.service_uri.ends_with("/svc/web"));
        let roots: Roots =
            serde_json::from_str(&documented_body("connect-ca-roots-response.json")).unwrap();
        assert_eq!(roots.roots.len(), 1);
        assert!(roots.roots[0].active);
        // The documented leaf verifies against the documented root, and its
        // key matches: the three make usable material.
        let material = crate::tls::Material::from_pem(
            leaf.cert_pem.as_bytes(),
            leaf.private_key_pem.as_bytes(),
            roots.pem().as_bytes(),
        )
        .expect("material from the Consul docs samples");
        assert_eq!(material.serial, "08");
        assert_eq!(material.own_identity.unwrap().to_string(), leaf.service_uri);
        let matched: BTreeMap<String, Vec<IntentionEntry>> =
            serde_json::from_str(&documented_body("connect-intentions-match-response.json"))
                .unwrap();
        let web = &matched["web"];
        assert_eq!(web.len(), 2);
        assert!(matches!(web[0].action, IntentionAction::Deny));
        assert_eq!(web[1].source_name, "web");
    }
}
