//! The `admin:` section: the admin listener (health, metrics, config).

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// The admin listener (health, metrics, config).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// Connections open at once; more are accepted and closed at once.
    #[serde(default = "default_admin_max_connections")]
    pub max_connections: u32,
    /// A client must send a request's whole head within this time.
    #[serde(default = "default_admin_header_read_timeout", with = "duration")]
    pub header_read_timeout: Duration,
    /// Host names (besides loopback addresses, `localhost` and the address
    /// a connection arrived on) whose requests are answered; others get 403.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 15000))
}

fn default_admin_max_connections() -> u32 {
    100
}

fn default_admin_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_admin_listen(),
            max_connections: default_admin_max_connections(),
            header_read_timeout: default_admin_header_read_timeout(),
            allowed_hosts: Vec::new(),
        }
    }
}
