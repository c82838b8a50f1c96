//! The body of `GET /v1/health/service/:name` (and `/v1/health/connect/:name`,
//! same shape): one entry per instance with its node, service and checks,
//! and what an entry says about its instance: its health (the worst check),
//! its balancing weight and its socket address. Which instances become
//! endpoints is discovery's rule (`discovery::consul::instances`).
//!
//! Tolerates what real Consul sends: unknown fields, `null` Tags / Meta /
//! TaggedAddresses / Checks, `TaggedAddresses` entries keyed `address`/`port`
//! (docs) or `Address`/`Port` (Go encoding). An instance whose address is not
//! an IP address or whose port is 0 has no socket address. An instance's
//! balancing weight is `Service.Weights.Passing` when it is passing,
//! `Weights.Warning` when it is warning, 1 when it has no weights.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Deserializer};

/// One instance of a service, as Consul reports it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceEntry {
    pub node: Node,
    pub service: Service,
    #[serde(default, deserialize_with = "null_as_default")]
    pub checks: Vec<Check>,
}

/// The node an instance runs on.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub datacenter: String,
    /// Node addresses are plain strings (`lan`, `wan`, ...).
    #[serde(default, deserialize_with = "null_as_default")]
    pub tagged_addresses: HashMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub meta: HashMap<String, String>,
}

/// The service instance itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Service {
    #[serde(rename = "ID", default)]
    pub id: String,
    #[serde(default)]
    pub service: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub tags: Vec<String>,
    /// Empty when the instance uses its node's address.
    #[serde(default)]
    pub address: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub tagged_addresses: HashMap<String, ServiceAddress>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub meta: HashMap<String, String>,
    #[serde(default)]
    pub port: u16,
    /// Balancing weights by health state; `None`: 1 each.
    #[serde(default)]
    pub weights: Option<Weights>,
}

/// A tagged service address; the key case differs between Consul's docs
/// (`address`) and its Go encoding (`Address`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ServiceAddress {
    #[serde(alias = "Address", default)]
    pub address: String,
    #[serde(alias = "Port", default)]
    pub port: u16,
}

/// DNS-style weights of an instance by health state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Weights {
    #[serde(default = "weight_one")]
    pub passing: u32,
    #[serde(default = "weight_one")]
    pub warning: u32,
}

fn weight_one() -> u32 {
    1
}

/// A health check of the instance or of its node.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Check {
    #[serde(rename = "CheckID", default)]
    pub check_id: String,
    pub status: String,
}

/// Aggregate health of an instance: its worst check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    Passing,
    Warning,
    Critical,
}

impl ServiceEntry {
    /// The worst state among the checks; `maintenance` and unknown states
    /// count as critical, no checks at all as passing (as Consul does).
    pub fn health(&self) -> Health {
        self.checks
            .iter()
            .map(|check| match check.status.as_str() {
                "passing" => Health::Passing,
                "warning" => Health::Warning,
                _ => Health::Critical,
            })
            .max()
            .unwrap_or(Health::Passing)
    }

    /// The balancing weight for the instance's health: `Weights.Passing`
    /// or `Weights.Warning` (1 without weights; critical instances are never
    /// endpoints).
    pub fn weight(&self) -> u32 {
        match (self.service.weights, self.health()) {
            (None, _) => 1,
            (Some(weights), Health::Warning) => weights.warning,
            (Some(weights), _) => weights.passing,
        }
    }

    /// `Service.Address`, or `Node.Address` when that is empty, with
    /// `Service.Port`; `None` when the address is not an IP address or the
    /// instance has no port.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        if self.service.port == 0 {
            return None;
        }
        let address = if self.service.address.is_empty() {
            &self.node.address
        } else {
            &self.service.address
        };
        let ip: IpAddr = address.parse().ok()?;
        Some(SocketAddr::new(ip, self.service.port))
    }
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consul::documented_body;

    fn parse(json: &str) -> Vec<ServiceEntry> {
        serde_json::from_str(json).expect("parses")
    }

    fn entry(service_address: &str, statuses: &[&str]) -> String {
        let checks: Vec<String> = statuses
            .iter()
            .map(|s| format!(r#"{{"CheckID":"c","Status":"{s}"}}"#))
            .collect();
        format!(
            r#"{{"Node":{{"Node":"n","Address":"10.0.0.1"}},
                "Service":{{"ID":"i","Service":"s","Address":"{service_address}","Port":80}},
                "Checks":[{}]}}"#,
            checks.join(",")
        )
    }

    #[test]
    fn the_documented_body_parses() {
        let text = documented_body("health-service-response.json");
        let entries = parse(&text);
        let [redis] = &entries[..] else {
            panic!("one entry expected")
        };
        assert_eq!(redis.node.node, "foobar");
        assert_eq!(redis.node.datacenter, "dc1");
        assert_eq!(redis.node.tagged_addresses["wan"], "10.1.10.12");
        assert_eq!(redis.service.id, "redis");
        assert_eq!(redis.service.tags, ["primary"]);
        assert_eq!(
            redis.service.tagged_addresses["wan"],
            ServiceAddress {
                address: "198.18.1.2".into(),
                port: 80
            }
        );
        assert_eq!(
            redis.service.weights,
            Some(Weights {
                passing: 10,
                warning: 1
            })
        );
        assert_eq!(redis.checks.len(), 2);
        assert_eq!(redis.health(), Health::Passing);
        assert_eq!(redis.endpoint(), Some("10.1.10.12:8000".parse().unwrap()));
        assert_eq!(redis.weight(), 10);
    }

    #[test]
    fn empty_service_address_falls_back_to_the_node_address() {
        let entries = parse(&format!("[{}]", entry("", &["passing"])));
        assert_eq!(entries[0].endpoint(), Some("10.0.0.1:80".parse().unwrap()));
        let entries = parse(&format!("[{}]", entry("10.9.9.9", &["passing"])));
        assert_eq!(entries[0].endpoint(), Some("10.9.9.9:80".parse().unwrap()));
        let entries = parse(&format!("[{}]", entry("db.internal", &["passing"])));
        assert_eq!(entries[0].endpoint(), None);
        let no_port = r#"[{"Node":{"Address":"10.0.0.1"},"Service":{"Address":"10.0.0.2"}}]"#;
        assert_eq!(parse(no_port)[0].endpoint(), None);
    }

    #[test]
    fn tagged_addresses_in_either_key_case() {
        let json = r#"[{"Node":{"Address":"10.0.0.1"},
            "Service":{"Port":1,"TaggedAddresses":{
                "lan":{"address":"10.0.0.2","port":2},
                "wan":{"Address":"10.0.0.3","Port":3}}}}]"#;
        let entries = parse(json);
        let tagged = &entries[0].service.tagged_addresses;
        assert_eq!(tagged["lan"].address, "10.0.0.2");
        assert_eq!(tagged["lan"].port, 2);
        assert_eq!(tagged["wan"].address, "10.0.0.3");
        assert_eq!(tagged["wan"].port, 3);
    }

    #[test]
    fn null_tags_meta_and_checks() {
        let json = r#"[{"Node":{"Address":"10.0.0.1","Meta":null,"TaggedAddresses":null},
            "Service":{"Port":1,"Tags":null,"Meta":null,"TaggedAddresses":null,"Weights":null},
            "Checks":null}]"#;
        let entries = parse(json);
        assert!(entries[0].service.tags.is_empty());
        assert!(entries[0].service.meta.is_empty());
        assert!(entries[0].node.meta.is_empty());
        assert!(entries[0].checks.is_empty());
        assert_eq!(entries[0].health(), Health::Passing);
    }

    #[test]
    fn the_worst_check_is_the_health() {
        let health =
            |statuses: &[&str]| parse(&format!("[{}]", entry("10.0.0.1", statuses)))[0].health();
        assert_eq!(health(&["passing", "passing"]), Health::Passing);
        assert_eq!(health(&["passing", "warning"]), Health::Warning);
        assert_eq!(health(&["warning", "critical"]), Health::Critical);
        assert_eq!(health(&["maintenance"]), Health::Critical);
    }

    #[test]
    fn weights_by_health_state() {
        let weighted = |statuses: &[&str], weights: &str| {
            let json = entry("10.0.0.1", statuses)
                .replace(r#""Port":80"#, &format!(r#""Port":80,"Weights":{weights}"#));
            parse(&format!("[{json}]"))
        };
        let passing = weighted(&["passing"], r#"{"Passing":5,"Warning":2}"#);
        assert_eq!(passing[0].weight(), 5);
        let warning = weighted(&["warning"], r#"{"Passing":5,"Warning":2}"#);
        assert_eq!(warning[0].weight(), 2);
        assert_eq!(weighted(&["passing"], "null")[0].weight(), 1);
        assert_eq!(weighted(&["passing"], r#"{"Passing":3}"#)[0].weight(), 3);
    }
}
