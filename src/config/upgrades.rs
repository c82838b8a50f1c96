//! `upgrades:` of an HTTP listener (`inbound.upgrades`, `upstreams[].upgrades`):
//! the protocols an HTTP/1.1 `Upgrade` may switch a connection to through
//! remora (Envoy's `upgrade_configs`), WebSocket by default. The HTTP/2
//! upgrades (`h2c`, `h2`, `HTTP/2.0`) are refused: their streams would run in
//! the tunnel, past every policy of the stack.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Protocol names that switch to another HTTP version: never tunnelled.
const HTTP_VERSIONS: [&str; 3] = ["h2c", "h2", "http"];

/// One protocol name a listener tunnels (lowercase, without version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeProtocol(String);

impl UpgradeProtocol {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// WebSocket only.
pub fn default_upgrades() -> Vec<UpgradeProtocol> {
    vec![UpgradeProtocol("websocket".to_owned())]
}

impl FromStr for UpgradeProtocol {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let is_token = !text.is_empty() && text.bytes().all(is_token_byte);
        if !is_token {
            return Err(format!(
                "invalid upgrade protocol `{text}`: expected a protocol name such as `websocket` (no version)"
            ));
        }
        let name = text.to_ascii_lowercase();
        if HTTP_VERSIONS.contains(&name.as_str()) {
            return Err(format!(
                "`{text}` is never tunnelled: it switches to another HTTP version, whose \
                 requests would bypass every policy; remora strips its upgrade headers"
            ));
        }
        Ok(UpgradeProtocol(name))
    }
}

/// A `tchar` of RFC 9110 §5.6.2 (so no `/`: versions are not named).
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

impl fmt::Display for UpgradeProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for UpgradeProtocol {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UpgradeProtocol {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_names_are_lowercased_tokens_and_never_http_versions() {
        let websocket: UpgradeProtocol = "WebSocket".parse().unwrap();
        assert_eq!(websocket.as_str(), "websocket");
        assert!("x-custom".parse::<UpgradeProtocol>().is_ok());
        for refused in ["h2c", "H2C", "h2", "HTTP", "websocket/13", "", "web socket"] {
            assert!(refused.parse::<UpgradeProtocol>().is_err(), "{refused}");
        }
    }
}
