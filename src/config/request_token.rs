//! `request_token` of an upstream or a route: a token from a file (a
//! Kubernetes projected service-account token, say) attached to the
//! requests sent there, so the application calls a JWT-protected API
//! without code of its own.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// `request_token:`: the file's content (trimmed) goes in `header`, as
/// `Bearer <token>` when that is `authorization`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RequestTokenConfig {
    pub file: PathBuf,
    #[serde(default = "default_header")]
    pub header: String,
    /// Whether the token replaces one the application sent itself.
    #[serde(default)]
    pub overwrite: bool,
    /// How often the file is read again (a rotated token is used from then on).
    #[serde(default = "default_reload_interval", with = "duration")]
    pub reload_interval: Duration,
}

fn default_header() -> String {
    "authorization".to_owned()
}

fn default_reload_interval() -> Duration {
    Duration::from_secs(5)
}
