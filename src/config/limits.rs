//! `limits:` of a listener (`inbound.limits`, `upstreams[].limits`): how
//! much a client may ask of one listener — connections open at once, time
//! and size of request headers, header count and HTTP/2 streams, and what
//! happens to request headers with `_` in their name. Defaults follow
//! Envoy's (60 KiB of headers, 100 headers, 100 streams per connection,
//! headers with `_` allowed). Rejects values hyper cannot honour (see `validate/mod.rs`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

/// Smallest `max_header_bytes`: hyper's HTTP/1.1 read buffer cannot be smaller.
pub const MIN_HEADER_BYTES: u32 = 8 * 1024;

/// Largest `max_header_bytes` accepted (HTTP/2 advertises it as a u32 setting).
pub const MAX_HEADER_BYTES: u32 = 16 * 1024 * 1024;

/// Connection and request-header limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerLimits {
    /// Client connections open at once; more are accepted and closed at once (counted).
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// An HTTP/1.1 client must send a request's whole head within this time.
    #[serde(default = "default_header_read_timeout", with = "duration")]
    pub header_read_timeout: Duration,
    /// Request line and headers (HTTP/1.1), or the header list (HTTP/2), at most; 431 above.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: u32,
    /// Request headers at most (HTTP/1.1 and HTTP/2); 431 above.
    #[serde(default = "default_max_headers")]
    pub max_headers: u32,
    /// HTTP/2 streams open at once per connection (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    #[serde(default = "default_max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    /// What happens to a request header whose name contains `_` (Envoy's key).
    #[serde(default)]
    pub headers_with_underscores_action: HeadersWithUnderscoresAction,
}

/// `limits.headers_with_underscores_action`: what happens to a request
/// header whose name contains `_`. Whatever it says, a header that reads as a
/// reserved one with `_` folded into `-` (`x_remora_client_id`) is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadersWithUnderscoresAction {
    /// Forwarded as it came.
    #[default]
    Allow,
    /// Removed from the request.
    DropHeader,
    /// The request is answered 400 `bad_request`.
    RejectRequest,
}

fn default_max_connections() -> u32 {
    10_000
}

fn default_header_read_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_header_bytes() -> u32 {
    60 * 1024
}

fn default_max_headers() -> u32 {
    100
}

fn default_max_concurrent_streams() -> u32 {
    100
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            max_connections: default_max_connections(),
            header_read_timeout: default_header_read_timeout(),
            max_header_bytes: default_max_header_bytes(),
            max_headers: default_max_headers(),
            max_concurrent_streams: default_max_concurrent_streams(),
            headers_with_underscores_action: HeadersWithUnderscoresAction::default(),
        }
    }
}
