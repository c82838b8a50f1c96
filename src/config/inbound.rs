//! The `inbound:` section: the listener for traffic from the mesh to the
//! local application.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::authorization::InboundAuthorization;
use super::concurrency::AdaptiveConcurrency;
use super::duration;
use super::jwt::JwtConfig;
use super::limits::ListenerLimits;
use super::path_normalization::PathNormalization;
use super::rate_limit::RateLimitConfig;
use super::upgrades::{UpgradeProtocol, default_upgrades};

/// Listener for traffic from the mesh to the local application.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    #[serde(default = "default_inbound_listen")]
    pub listen: SocketAddr,
    #[serde(default, with = "duration::option")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    #[serde(default)]
    pub max_concurrent_requests: Option<u32>,
    #[serde(default)]
    pub adaptive_concurrency: Option<AdaptiveConcurrency>,
    #[serde(default)]
    pub limits: ListenerLimits,
    /// Protocols an HTTP/1.1 `Upgrade` may switch to (tunnelled).
    #[serde(default = "default_upgrades")]
    pub upgrades: Vec<UpgradeProtocol>,
    #[serde(default)]
    pub path_normalization: PathNormalization,
    /// JWT validation of incoming requests.
    #[serde(default)]
    pub jwt: Option<JwtConfig>,
    /// L7 authorization rules (after `tls.authorization`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<InboundAuthorization>,
}

impl Default for InboundConfig {
    fn default() -> Self {
        Self {
            listen: default_inbound_listen(),
            timeout: None,
            rate_limit: None,
            max_concurrent_requests: None,
            adaptive_concurrency: None,
            limits: ListenerLimits::default(),
            upgrades: default_upgrades(),
            path_normalization: PathNormalization::default(),
            jwt: None,
            authorization: None,
        }
    }
}

fn default_inbound_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 15006))
}
