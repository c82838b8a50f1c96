//! Errors of the data path: everything that makes remora answer a request itself.
//!
//! Each variant maps to exactly one [`ErrorKind`], the stable name sent in
//! `x-remora-error`; `middleware::error_response` is the one place that turns
//! errors into responses.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;

use crate::path_normalize::PathError;

/// Why remora could not proxy a request.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("upstream {upstream:?} has no endpoints")]
    NoEndpoints { upstream: String },
    #[error("no endpoint of upstream {upstream:?} passes its health checks")]
    NoHealthyEndpoints { upstream: String },
    #[error("connecting to {addr} failed: {source}")]
    ConnectFailed {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connecting to {addr} timed out after {timeout:?}")]
    ConnectTimeout { addr: SocketAddr, timeout: Duration },
    #[error("TLS handshake with {addr} failed: {source}")]
    TlsHandshake {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("peer {peer} is not authorized to call this service")]
    Forbidden { peer: String },
    #[error("HTTP handshake with {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("upstream {addr} failed before answering: {source}")]
    UpstreamReset {
        addr: SocketAddr,
        source: hyper::Error,
    },
    /// An exchange with remora's own HTTP/1.1 client failed.
    #[error("upstream {addr} failed before answering: {source}")]
    Http1Exchange {
        addr: SocketAddr,
        source: crate::http1::Error,
    },
    /// An exchange with remora's own HTTP/2 client failed.
    #[error("upstream {addr} failed before answering: {source}")]
    Http2Exchange {
        addr: SocketAddr,
        source: crate::http2::Error,
    },
    #[error(
        "upstream {addr} switched protocols (101) on a request that asked for no upgrade it may make"
    )]
    UnrequestedUpgrade { addr: SocketAddr },
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    #[error(
        "{addr} sent no response head while the request stood still for {idle:?} (timeouts.idle)"
    )]
    IdleTimeout { addr: SocketAddr, idle: Duration },
    #[error("try timed out after {timeout:?} (per_try_timeout)")]
    PerTryTimeout {
        timeout: Duration,
        addr: Option<SocketAddr>,
    },
    #[error("rate limited; retry after {retry_after:?}")]
    RateLimited { retry_after: Duration },
    #[error("circuit breaker for upstream {upstream:?} is open")]
    CircuitOpen { upstream: String },
    #[error("more than {limit} requests in flight to {upstream:?}")]
    Overloaded { upstream: String, limit: u32 },
    #[error(
        "no HTTP/2 stream free on {addr}: every connection full \
         (connection_pool.max_connections_per_endpoint: {connections}), and a request waits \
         at most {wait:?} with at most {pending} others (pending_timeout, max_pending_requests)"
    )]
    PoolExhausted {
        addr: SocketAddr,
        connections: u32,
        pending: u32,
        wait: Duration,
    },
    #[error(
        "reading the request body from the client failed while it was sent to {addr}: {source}"
    )]
    ClientBody {
        addr: SocketAddr,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("no upstream answers for {target} (transparent.unmatched: refuse)")]
    NoRoute { target: String },
    #[error("more than one Host header (RFC 9112 §3.2)")]
    DuplicateHost,
    #[error("an HTTP/1.1 request without a Host header (RFC 9112 §3.2)")]
    MissingHost,
    /// The request's host is not one: `what` says how.
    #[error("invalid host: {what}")]
    InvalidHost { what: &'static str },
    #[error("CONNECT is not supported: remora forwards requests, it opens no tunnels")]
    Connect,
    #[error(
        "header {name:?} has `_` in its name (limits.headers_with_underscores_action: reject_request)"
    )]
    HeaderWithUnderscore { name: String },
    #[error("fault injected: abort with {status}")]
    FaultAbort {
        status: StatusCode,
        grpc_status: Option<u16>,
    },
    #[error("{0}")]
    BadPath(PathError),
    #[error("unauthenticated: {0}")]
    Unauthenticated(TokenRejection),
}

/// Why the JWT layer refused a request's token (or its lack of one): the
/// `result` label of `remora_jwt_validations_total` and the access log's
/// `error_detail`. Never carries the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRejection {
    /// No token where one is required.
    Missing,
    /// Not a JWT: not three base64url parts, bad JSON, a claim of the wrong
    /// type, or not ASCII.
    Malformed,
    /// Two tokens where one is read: two `Authorization` fields, two of the
    /// token header, two cookies of the name.
    Duplicate,
    /// An algorithm the key cannot verify (`none`, HS256 with a public key, a
    /// key pinned to another algorithm).
    Algorithm,
    /// No key with the token's `kid` (after one early refresh of the set).
    UnknownKey,
    BadSignature,
    /// `exp` passed, beyond the leeway.
    Expired,
    /// `nbf` still ahead, beyond the leeway.
    NotYetValid,
    /// `iat` ahead, beyond the leeway.
    IssuedInFuture,
    /// `iss` is no provider's issuer.
    Issuer,
    /// `aud` names none of the provider's audiences.
    Audience,
}

impl TokenRejection {
    pub const ALL: [TokenRejection; 11] = [
        TokenRejection::Missing,
        TokenRejection::Malformed,
        TokenRejection::Duplicate,
        TokenRejection::Algorithm,
        TokenRejection::UnknownKey,
        TokenRejection::BadSignature,
        TokenRejection::Expired,
        TokenRejection::NotYetValid,
        TokenRejection::IssuedInFuture,
        TokenRejection::Issuer,
        TokenRejection::Audience,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TokenRejection::Missing => "missing",
            TokenRejection::Malformed => "malformed",
            TokenRejection::Duplicate => "duplicate",
            TokenRejection::Algorithm => "algorithm",
            TokenRejection::UnknownKey => "unknown_key",
            TokenRejection::BadSignature => "bad_signature",
            TokenRejection::Expired => "expired",
            TokenRejection::NotYetValid => "not_yet_valid",
            TokenRejection::IssuedInFuture => "issued_in_future",
            TokenRejection::Issuer => "issuer",
            TokenRejection::Audience => "audience",
        }
    }
}

impl std::fmt::Display for TokenRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenRejection::Missing => "a token is required",
            TokenRejection::Malformed => "the token is malformed",
            TokenRejection::Duplicate => "the request has more than one token header or cookie",
            TokenRejection::Algorithm => "the token's algorithm is not allowed for its key",
            TokenRejection::UnknownKey => "the token's key is unknown",
            TokenRejection::BadSignature => "the token's signature is invalid",
            TokenRejection::Expired => "the token has expired",
            TokenRejection::NotYetValid => "the token is not valid yet",
            TokenRejection::IssuedInFuture => "the token is issued in the future",
            TokenRejection::Issuer => "the token's issuer is not accepted",
            TokenRejection::Audience => "the token's audience is not accepted",
        })
    }
}

/// A response extension with the detail behind an [`ErrorKind`], for the
/// access log (`error_detail`): a bounded, token-free reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorDetail(pub &'static str);

/// The stable, machine-readable name of an error, sent in `x-remora-error`
/// and used as the `kind` label of metrics and the `error` field of access logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NoEndpoints,
    NoHealthyEndpoints,
    ConnectFailed,
    ConnectTimeout,
    UpstreamReset,
    UpstreamProtocol,
    Timeout,
    RateLimited,
    CircuitOpen,
    Overloaded,
    FaultAbort,
    ClientBody,
    Forbidden,
    NoRoute,
    BadRequest,
    BadPath,
    Unauthenticated,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NoEndpoints => "no_endpoints",
            ErrorKind::NoHealthyEndpoints => "no_healthy_endpoints",
            ErrorKind::ConnectFailed => "connect_failed",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::UpstreamReset => "upstream_reset",
            ErrorKind::UpstreamProtocol => "upstream_protocol",
            ErrorKind::Timeout => "timeout",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::CircuitOpen => "circuit_open",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::FaultAbort => "fault_abort",
            ErrorKind::ClientBody => "client_body",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NoRoute => "no_route",
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::BadPath => "bad_path",
            ErrorKind::Unauthenticated => "unauthenticated",
        }
    }
}

impl ProxyError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ProxyError::NoEndpoints { .. } => ErrorKind::NoEndpoints,
            ProxyError::NoHealthyEndpoints { .. } => ErrorKind::NoHealthyEndpoints,
            ProxyError::ConnectFailed { .. }
            | ProxyError::TlsHandshake { .. }
            | ProxyError::Handshake { .. } => ErrorKind::ConnectFailed,
            ProxyError::ConnectTimeout { .. } => ErrorKind::ConnectTimeout,
            ProxyError::UpstreamReset { .. } => ErrorKind::UpstreamReset,
            ProxyError::Http1Exchange { source, .. } if source.is_malformed() => {
                ErrorKind::UpstreamProtocol
            }
            ProxyError::Http1Exchange { .. } | ProxyError::Http2Exchange { .. } => {
                ErrorKind::UpstreamReset
            }
            ProxyError::UnrequestedUpgrade { .. } => ErrorKind::UpstreamProtocol,
            ProxyError::Timeout(_)
            | ProxyError::IdleTimeout { .. }
            | ProxyError::PerTryTimeout { .. } => ErrorKind::Timeout,
            ProxyError::RateLimited { .. } => ErrorKind::RateLimited,
            ProxyError::CircuitOpen { .. } => ErrorKind::CircuitOpen,
            ProxyError::Overloaded { .. } | ProxyError::PoolExhausted { .. } => {
                ErrorKind::Overloaded
            }
            ProxyError::FaultAbort { .. } => ErrorKind::FaultAbort,
            ProxyError::ClientBody { .. } => ErrorKind::ClientBody,
            ProxyError::Forbidden { .. } => ErrorKind::Forbidden,
            ProxyError::NoRoute { .. } => ErrorKind::NoRoute,
            ProxyError::DuplicateHost
            | ProxyError::MissingHost
            | ProxyError::InvalidHost { .. }
            | ProxyError::Connect
            | ProxyError::HeaderWithUnderscore { .. } => ErrorKind::BadRequest,
            ProxyError::BadPath(_) => ErrorKind::BadPath,
            ProxyError::Unauthenticated(_) => ErrorKind::Unauthenticated,
        }
    }

    /// The detail behind the kind, when there is one worth logging.
    pub fn detail(&self) -> Option<ErrorDetail> {
        match self {
            ProxyError::Unauthenticated(reason) => Some(ErrorDetail(reason.as_str())),
            _ => None,
        }
    }

    /// The endpoint involved, when the error happened talking to one.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        match self {
            ProxyError::ConnectFailed { addr, .. }
            | ProxyError::ConnectTimeout { addr, .. }
            | ProxyError::TlsHandshake { addr, .. }
            | ProxyError::Handshake { addr, .. }
            | ProxyError::UpstreamReset { addr, .. }
            | ProxyError::Http1Exchange { addr, .. }
            | ProxyError::Http2Exchange { addr, .. }
            | ProxyError::UnrequestedUpgrade { addr }
            | ProxyError::IdleTimeout { addr, .. }
            | ProxyError::ClientBody { addr, .. } => Some(*addr),
            ProxyError::PerTryTimeout { addr, .. } => *addr,
            ProxyError::NoEndpoints { .. }
            | ProxyError::NoHealthyEndpoints { .. }
            | ProxyError::Timeout(_)
            | ProxyError::RateLimited { .. }
            | ProxyError::CircuitOpen { .. }
            | ProxyError::Overloaded { .. }
            | ProxyError::PoolExhausted { .. }
            | ProxyError::FaultAbort { .. }
            | ProxyError::Forbidden { .. }
            | ProxyError::NoRoute { .. }
            | ProxyError::DuplicateHost
            | ProxyError::MissingHost
            | ProxyError::InvalidHost { .. }
            | ProxyError::Connect
            | ProxyError::HeaderWithUnderscore { .. }
            | ProxyError::BadPath(_)
            | ProxyError::Unauthenticated(_) => None,
        }
    }

    /// True when an HTTP/2 server refused the stream (REFUSED_STREAM): it
    /// did no work on the request, so it is always safe to try again.
    pub fn is_refused_stream(&self) -> bool {
        let ProxyError::Http2Exchange { source, .. } = self else {
            return false;
        };
        source.h2().and_then(h2::Error::reason) == Some(h2::Reason::REFUSED_STREAM)
    }
}

/// An error with its causes (reqwest hides the interesting part in them).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
