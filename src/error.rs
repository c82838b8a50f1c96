//! Errors of the data path: everything that makes remora answer a request itself.
//!
//! Each variant maps to exactly one [`ErrorKind`], and the kind alone decides
//! the status code and the `x-remora-error` value (see
//! `middleware::error_response`, the one place that turns errors into responses).

use std::net::SocketAddr;
use std::time::Duration;

/// Why remora could not proxy a request.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("upstream {upstream:?} has no endpoints")]
    NoEndpoints { upstream: String },
    #[error("connecting to {addr} failed: {source}")]
    ConnectFailed {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connecting to {addr} timed out after {timeout:?}")]
    ConnectTimeout { addr: SocketAddr, timeout: Duration },
    #[error("HTTP handshake with {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("upstream {addr} failed before answering: {source}")]
    UpstreamReset {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
}

/// The stable, machine-readable name of an error, sent in `x-remora-error`
/// and used as the `kind` label of metrics and the `error` field of access logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NoEndpoints,
    ConnectFailed,
    ConnectTimeout,
    UpstreamReset,
    Timeout,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NoEndpoints => "no_endpoints",
            ErrorKind::ConnectFailed => "connect_failed",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::UpstreamReset => "upstream_reset",
            ErrorKind::Timeout => "timeout",
        }
    }
}

impl ProxyError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ProxyError::NoEndpoints { .. } => ErrorKind::NoEndpoints,
            ProxyError::ConnectFailed { .. } | ProxyError::Handshake { .. } => {
                ErrorKind::ConnectFailed
            }
            ProxyError::ConnectTimeout { .. } => ErrorKind::ConnectTimeout,
            ProxyError::UpstreamReset { .. } => ErrorKind::UpstreamReset,
            ProxyError::Timeout(_) => ErrorKind::Timeout,
        }
    }

    /// The endpoint involved, when the error happened talking to one.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        match self {
            ProxyError::ConnectFailed { addr, .. }
            | ProxyError::ConnectTimeout { addr, .. }
            | ProxyError::Handshake { addr, .. }
            | ProxyError::UpstreamReset { addr, .. } => Some(*addr),
            ProxyError::NoEndpoints { .. } | ProxyError::Timeout(_) => None,
        }
    }
}
