//! `path_normalization:` of a listener (`inbound`, `upstreams[]`): how the
//! request path is normalized before routes match it and before it is
//! forwarded. The keys and their meaning follow Envoy's HTTP connection
//! manager (`normalize_path`, `merge_slashes`,
//! `path_with_escaped_slashes_action`); the defaults are the strict ones.

use serde::{Deserialize, Serialize};

/// How one listener normalizes request paths (see `path_normalize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PathNormalization {
    /// RFC 3986 normalization: percent-encoded unreserved characters decoded,
    /// the hex of other escapes upper-cased, dot segments removed.
    #[serde(default = "enabled")]
    pub normalize_path: bool,
    /// Runs of `/` become one.
    #[serde(default = "enabled")]
    pub merge_slashes: bool,
    /// What an encoded `/` or `\` (`%2F`, `%5C`) in the path does.
    #[serde(default)]
    pub path_with_escaped_slashes_action: EscapedSlashesAction,
}

fn enabled() -> bool {
    true
}

impl Default for PathNormalization {
    fn default() -> Self {
        PathNormalization {
            normalize_path: true,
            merge_slashes: true,
            path_with_escaped_slashes_action: EscapedSlashesAction::default(),
        }
    }
}

/// Envoy's `path_with_escaped_slashes_action`, minus `unescape_and_redirect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashesAction {
    /// The escape stays an escape (its hex upper-cased when `normalize_path`).
    KeepUnchanged,
    /// 400 `bad_path`.
    #[default]
    RejectRequest,
    /// Decoded to `/` or `\` before the rest of the normalization.
    UnescapeAndForward,
}
