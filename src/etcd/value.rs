//! What a service instance's key holds: JSON
//! `{"address": "10.0.0.5", "port": 8080, "weight": 1, "tags": [], "meta": {}}`
//! (only `address` and `port` required; `weight` 1 by default), or a plain
//! `host:port` as go-kit's etcd registrar writes it. remora writes the JSON
//! form when it registers, and reads both. Rejects (with the reason) a value
//! that is neither, a port of 0 and an address that is not an IP address —
//! discovery skips such instances.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// An instance as its key's value describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceValue {
    pub address: String,
    pub port: u16,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
}

fn default_weight() -> u32 {
    1
}

/// Why a value describes no instance.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValueError {
    #[error("neither JSON {{\"address\", \"port\", …}} nor host:port: {0}")]
    Shape(String),
    #[error("`{0}` is not an IP address")]
    NotAnIp(String),
    #[error("port 0")]
    PortZero,
}

impl InstanceValue {
    /// Reads either form.
    pub fn parse(value: &[u8]) -> Result<InstanceValue, ValueError> {
        let text = String::from_utf8_lossy(value);
        let text = text.trim();
        if text.starts_with('{') {
            return serde_json::from_str(text)
                .map_err(|error| ValueError::Shape(error.to_string()));
        }
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| ValueError::Shape(format!("`{text}` has no port")))?;
        let port = port
            .parse()
            .map_err(|_| ValueError::Shape(format!("`{text}`: the port is not a number")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Ok(InstanceValue {
            address: host.to_owned(),
            port,
            weight: default_weight(),
            tags: Vec::new(),
            meta: BTreeMap::new(),
        })
    }

    /// The socket address to connect to.
    pub fn socket_addr(&self) -> Result<SocketAddr, ValueError> {
        let ip: IpAddr =
            (self.address.parse()).map_err(|_| ValueError::NotAnIp(self.address.clone()))?;
        if self.port == 0 {
            return Err(ValueError::PortZero);
        }
        Ok(SocketAddr::new(ip, self.port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_json_form_with_defaults() {
        let full =
            br#"{"address":"10.0.0.5","port":8080,"weight":3,"tags":["v2"],"meta":{"zone":"a"}}"#;
        let value = InstanceValue::parse(full).unwrap();
        assert_eq!(
            value.socket_addr().unwrap(),
            "10.0.0.5:8080".parse().unwrap()
        );
        assert_eq!(
            (value.weight, value.tags.as_slice()),
            (3, &["v2".to_owned()][..])
        );
        assert_eq!(value.meta["zone"], "a");
        let minimal = InstanceValue::parse(br#" {"address":"::1","port":1} "#).unwrap();
        assert_eq!(minimal.weight, 1);
        assert_eq!(minimal.socket_addr().unwrap(), "[::1]:1".parse().unwrap());
    }

    #[test]
    fn reads_the_go_kit_host_port_form() {
        let value = InstanceValue::parse(b"10.0.0.7:9000\n").unwrap();
        assert_eq!(
            value.socket_addr().unwrap(),
            "10.0.0.7:9000".parse().unwrap()
        );
        let v6 = InstanceValue::parse(b"[fd00::1]:80").unwrap();
        assert_eq!(v6.socket_addr().unwrap(), "[fd00::1]:80".parse().unwrap());
    }

    #[test]
    fn rejects_what_names_no_endpoint() {
        assert!(matches!(
            InstanceValue::parse(b"garbage"),
            Err(ValueError::Shape(_))
        ));
        assert!(matches!(
            InstanceValue::parse(b"10.0.0.1:http"),
            Err(ValueError::Shape(_))
        ));
        assert!(matches!(
            InstanceValue::parse(br#"{"address":"10.0.0.1"}"#),
            Err(ValueError::Shape(_))
        ));
        let named = InstanceValue::parse(b"db.internal:5432").unwrap();
        assert_eq!(
            named.socket_addr(),
            Err(ValueError::NotAnIp("db.internal".into()))
        );
        let zero = InstanceValue::parse(b"10.0.0.1:0").unwrap();
        assert_eq!(zero.socket_addr(), Err(ValueError::PortZero));
    }
}
