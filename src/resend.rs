//! Requests the upstream never processed, sent again on another connection
//! of the same endpoint, transparently: with no `retries:` configured, not
//! counted as a retry, not against the retry budget, and not a failure for
//! the circuit breaker or outlier detection (except after a GOAWAY with an
//! error code, which `endpoint.rs` counts against the endpoint).
//!
//! A request is resent when the upstream provably did not act on it, or —
//! for an idempotent request only — may not have:
//!
//! * **HTTP/2, any method:** its stream was above the `last_stream_id` of a
//!   GOAWAY, or reset with `REFUSED_STREAM` (RFC 9113 §6.8, §8.7), or it was
//!   never opened because the connection had failed or received GOAWAY.
//! * **HTTP/1.1, any method:** its head was not written whole (the pooled
//!   connection had closed): a server cannot act on part of a head.
//! * **HTTP/1.1, idempotent methods only** (RFC 9110 §9.2.2: GET, HEAD,
//!   OPTIONS, TRACE, PUT, DELETE): it went out on a *reused* connection that
//!   the upstream closed or reset before any byte of a response — the
//!   keep-alive race, when the server closes an idle connection just as a
//!   request is written (RFC 9112 §9.3.1). A non-idempotent request is never
//!   resent once its whole head was written: the server may have acted on it.
//!
//! The body must be replayable: empty, or held in a copy of at most
//! [`RESEND_BUFFER`] bytes while it streams (`body::replay`); a larger body
//! is not resent. A request is resent at most [`MAX_RESENDS`] times.

use http::{HeaderMap, Method, Request, Uri, Version};

use crate::body::{Replay, RequestBody};
use crate::error::ProxyError;
use crate::http2;

/// Bytes of a request body kept so that the request can be resent.
pub const RESEND_BUFFER: usize = 64 * 1024;

/// Resends of one request at most (a server that refuses every stream
/// is answered with the error after that). Not fewer: a peer that retires
/// connections by request count GOAWAYs the streams in flight above its
/// limit — with nginx's `keepalive_requests 100` and 16 streams per
/// connection, about one stream in six — and a resend may meet the next
/// connection's GOAWAY too; eight in a row are rarer than one in a million.
pub const MAX_RESENDS: u32 = 8;

/// What the upstream did that shows it never processed a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unprocessed {
    /// The request was never written: the connection was closing.
    NotWritten,
    /// HTTP/2 GOAWAY below the stream; `graceful` when its code is `NO_ERROR`.
    GoAway { graceful: bool },
    /// HTTP/2 `REFUSED_STREAM`.
    RefusedStream,
    /// HTTP/1.1: a reused connection closed or reset before a response byte.
    ClosedBeforeResponse,
}

impl Unprocessed {
    /// The `reason` label of `remora_upstream_resends_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Unprocessed::NotWritten => "not_written",
            Unprocessed::GoAway { .. } => "goaway",
            Unprocessed::RefusedStream => "refused_stream",
            Unprocessed::ClosedBeforeResponse => "closed_before_response",
        }
    }

    /// True when the upstream may have acted on the request after all, so
    /// only an idempotent one may be resent.
    pub fn idempotent_only(self) -> bool {
        self == Unprocessed::ClosedBeforeResponse
    }
}

/// A copy of a request's head, and the means to replay its body.
pub struct Resendable {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Replay,
}

impl Resendable {
    /// Keeps what is needed to send `request` again. The request stays where
    /// it is (only its body is swapped for the one that keeps a copy): a
    /// request is 280 bytes, and moving it out and back cost three copies.
    pub fn keep(request: &mut Request<RequestBody>) -> Resendable {
        let body = std::mem::replace(request.body_mut(), RequestBody::empty());
        let (first, replay) = body.replayable(RESEND_BUFFER);
        *request.body_mut() = first;
        Resendable {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
            body: replay,
        }
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The request again, or `None` when its body can no longer be replayed.
    pub fn again(&self) -> Option<Request<RequestBody>> {
        let mut request = Request::new(self.body.next_body()?);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        Some(request)
    }
}

/// RFC 9110 §9.2.2.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// How an HTTP/2 stream's failure shows the request was not processed (or,
/// for [`Unprocessed::idempotent_only`] cases, may not have been).
pub fn unprocessed_h2(error: &http2::Error) -> Option<Unprocessed> {
    let h2 = error.h2()?;
    if !h2.is_remote() {
        return None;
    }
    if h2.is_go_away() {
        let graceful = h2.reason() == Some(h2::Reason::NO_ERROR);
        return Some(Unprocessed::GoAway { graceful });
    }
    (h2.is_reset() && h2.reason() == Some(h2::Reason::REFUSED_STREAM))
        .then_some(Unprocessed::RefusedStream)
}

/// True when a failed try provably never reached the upstream's
/// application, so even a non-idempotent request may be tried again: the
/// connection (TCP, TLS or HTTP handshake) was never made, or the HTTP/2
/// stream was refused or above a GOAWAY's `last_stream_id` — the cases
/// above that are not [`Unprocessed::idempotent_only`]. A try that got any
/// response, or that broke or timed out after it was sent, may have been.
pub fn never_processed(error: &ProxyError) -> bool {
    match error {
        ProxyError::ConnectFailed { .. }
        | ProxyError::ConnectTimeout { .. }
        | ProxyError::TlsHandshake { .. }
        | ProxyError::Handshake { .. } => true,
        ProxyError::Http2Exchange { source, .. } => {
            source.not_sent() || unprocessed_h2(source).is_some_and(|why| !why.idempotent_only())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotent_methods_follow_rfc_9110() {
        for method in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            assert!(is_idempotent(&method.parse().unwrap()), "{method}");
        }
        for method in ["POST", "PATCH", "CONNECT"] {
            assert!(!is_idempotent(&method.parse().unwrap()), "{method}");
        }
    }

    #[test]
    fn only_failures_before_the_request_went_out_are_never_processed() {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(never_processed(&ProxyError::ConnectFailed {
            addr,
            source: refused
        }));
        let timeout = std::time::Duration::from_secs(1);
        assert!(never_processed(&ProxyError::ConnectTimeout {
            addr,
            timeout
        }));
        assert!(!never_processed(&ProxyError::Timeout(timeout)));
        assert!(!never_processed(&ProxyError::PerTryTimeout {
            timeout,
            addr: Some(addr)
        }));
        assert!(!never_processed(&ProxyError::IdleTimeout {
            addr,
            idle: timeout
        }));
    }
}
