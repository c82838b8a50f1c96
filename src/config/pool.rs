//! `connection_pool:` of an upstream: how many connections remora keeps to
//! each endpoint and for how long, and how long a request may wait for one.
//! Applies to HTTP/2 endpoints only: HTTP/1.1 opens a connection per
//! concurrent request and keeps idle ones (`timeouts.idle`). Checked in
//! `validate/upstream.rs`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// Connection-pool settings of one upstream (`upstreams[].connection_pool`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionPool {
    /// HTTP/2 connections open at once to one endpoint; a new one opens when
    /// every open one is at the peer's `SETTINGS_MAX_CONCURRENT_STREAMS`.
    #[serde(default = "default_max_connections_per_endpoint")]
    pub max_connections_per_endpoint: u32,
    /// Requests that may wait for a stream when every connection is full and
    /// no more may open, per endpoint; more get 503 `overloaded`.
    #[serde(default = "default_max_pending_requests")]
    pub max_pending_requests: u32,
    /// How long a request waits for a stream at most; then 503 `overloaded`.
    #[serde(default = "default_pending_timeout", with = "duration")]
    pub pending_timeout: Duration,
    /// A connection older than this takes no new requests and closes once
    /// its last one ends (spreads load over endpoints added since).
    #[serde(default, with = "duration::option")]
    pub max_connection_age: Option<Duration>,
    /// A connection that has carried this many requests takes no more.
    #[serde(default)]
    pub max_requests_per_connection: Option<u64>,
    /// HTTP/2 PING sent when an upstream connection with open streams has
    /// received nothing for this long; none by default (gRPC servers by
    /// default answer pings more often than every 5 minutes with GOAWAY
    /// `ENHANCE_YOUR_CALM`).
    #[serde(default, with = "duration::option")]
    pub keepalive_interval: Option<Duration>,
    /// A PING unanswered for this long closes the connection.
    #[serde(default = "default_keepalive_timeout", with = "duration")]
    pub keepalive_timeout: Duration,
}

fn default_max_connections_per_endpoint() -> u32 {
    16
}

fn default_max_pending_requests() -> u32 {
    1024
}

fn default_pending_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_keepalive_timeout() -> Duration {
    Duration::from_secs(20)
}

impl Default for ConnectionPool {
    fn default() -> Self {
        ConnectionPool {
            max_connections_per_endpoint: default_max_connections_per_endpoint(),
            max_pending_requests: default_max_pending_requests(),
            pending_timeout: default_pending_timeout(),
            max_connection_age: None,
            max_requests_per_connection: None,
            keepalive_interval: None,
            keepalive_timeout: default_keepalive_timeout(),
        }
    }
}
