//! The `admin:` section: the admin listener (health, metrics, config, the
//! live request stream).

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
    /// The live request stream, `GET /tap`.
    #[serde(default)]
    pub tap: TapConfig,
}

/// `admin.tap`: limits of the live request stream (read at start).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TapConfig {
    /// Streams open at once; more get 503 (0: `/tap` is off).
    #[serde(default = "default_tap_max_subscribers")]
    pub max_subscribers: u32,
    /// Events per second sent to one stream at most (a stream may ask for
    /// fewer with `?rate=`); the others are dropped and counted.
    #[serde(default = "default_tap_max_events_per_second")]
    pub max_events_per_second: u32,
    /// Header names whose values a stream with `headers=true` shows as
    /// `<redacted>`, besides `authorization`, `proxy-authorization`,
    /// `cookie` and `set-cookie`.
    #[serde(default)]
    pub redact_headers: Vec<String>,
}

fn default_tap_max_subscribers() -> u32 {
    4
}

fn default_tap_max_events_per_second() -> u32 {
    100
}

impl Default for TapConfig {
    fn default() -> Self {
        TapConfig {
            max_subscribers: default_tap_max_subscribers(),
            max_events_per_second: default_tap_max_events_per_second(),
            redact_headers: Vec::new(),
        }
    }
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
            tap: TapConfig::default(),
        }
    }
}
