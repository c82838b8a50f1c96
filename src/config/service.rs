//! The `service:` section: the application this sidecar fronts, its
//! protocol, and its Consul registration and health check.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// The application this sidecar fronts.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: String,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default = "default_service_address")]
    pub address: IpAddr,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub protocol: ServiceProtocol,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    #[serde(default)]
    pub register: bool,
    #[serde(default)]
    pub check: Option<CheckConfig>,
    /// Where this sidecar runs, for locality-aware balancing.
    #[serde(default)]
    pub locality: Option<Locality>,
}

/// A region and zone (`service.locality`, a static endpoint's `zone`, a
/// Consul instance's `zone` / `region` meta).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Locality {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub zone: String,
}

fn default_service_address() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

/// Protocol the application speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceProtocol {
    #[default]
    Http,
    Http2,
    Grpc,
    Tcp,
}

/// Health check registered with the service.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    #[serde(default)]
    pub http: Option<String>,
    #[serde(default)]
    pub tcp: Option<String>,
    #[serde(default = "default_check_interval", with = "duration")]
    pub interval: Duration,
    #[serde(default = "default_check_timeout", with = "duration")]
    pub timeout: Duration,
    #[serde(default, with = "duration::option")]
    pub deregister_after: Option<Duration>,
}

fn default_check_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_check_timeout() -> Duration {
    Duration::from_secs(2)
}
