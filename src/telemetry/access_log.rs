//! One access-log line per request (README: Admin, metrics and logs), as a `tracing` event on
//! the `remora::access` target: timestamp, trace and span ids, request id,
//! direction, upstream, route (with `routes:`), endpoint, method, authority, path (without the query,
//! which may carry secrets), status, grpc_status, duration_ms, bytes, response_body (`cut` or
//! `abandoned`, only for a response body that did not end whole), error, error_detail (why, where
//! the kind has a reason: e.g. a refused JWT's `expired`).

use std::net::SocketAddr;

use http::{HeaderMap, Method, Request};

use crate::error::{ErrorDetail, ErrorKind};
use crate::headers::request_host;

pub const TARGET: &str = "remora::access";

/// What the access log (and the tap) needs from a request, captured before
/// it is sent on.
pub struct RequestSummary {
    pub method: Method,
    pub authority: String,
    /// Without the query.
    pub path: String,
    pub request_id: Option<String>,
    /// Trace and span id of the request's `traceparent`.
    pub trace: Option<(String, String)>,
}

impl RequestSummary {
    pub fn of<B>(request: &Request<B>) -> Self {
        let headers = request.headers();
        let authority = request_host(request.uri(), headers).unwrap_or_default();
        Self {
            method: request.method().clone(),
            authority: authority.to_owned(),
            path: request.uri().path().to_owned(),
            request_id: header_str(headers, "x-request-id").map(str::to_owned),
            trace: header_str(headers, "traceparent").and_then(trace_and_span),
        }
    }
}

/// How the request ended (what its access-log line says; not
/// [`crate::outcome::Outcome`], the classification of one try).
pub struct RequestOutcome<'a> {
    pub direction: &'static str,
    pub upstream: &'a str,
    /// The route taken, on an upstream with `routes:`.
    pub route: Option<&'a str>,
    pub endpoint: Option<SocketAddr>,
    pub status: u16,
    pub grpc_status: Option<u16>,
    pub duration_ms: f64,
    pub bytes: u64,
    /// How a response body that did not end whole ended (`BodyEnd::unfinished`).
    pub response_body: Option<&'static str>,
    pub error: Option<ErrorKind>,
    pub error_detail: Option<ErrorDetail>,
}

pub fn log(request: &RequestSummary, outcome: &RequestOutcome<'_>) {
    let (trace_id, span_id) = request
        .trace
        .as_ref()
        .map_or(("", ""), |(trace, span)| (trace.as_str(), span.as_str()));
    tracing::info!(
        target: TARGET,
        trace_id,
        span_id,
        request_id = request.request_id.as_deref().unwrap_or(""),
        direction = outcome.direction,
        upstream = outcome.upstream,
        route = outcome.route,
        endpoint = outcome.endpoint.map(|e| e.to_string()).unwrap_or_default(),
        method = request.method.as_str(),
        authority = request.authority.as_str(),
        path = request.path.as_str(),
        status = outcome.status,
        grpc_status = outcome.grpc_status,
        duration_ms = outcome.duration_ms,
        bytes = outcome.bytes,
        response_body = outcome.response_body,
        error = outcome.error.map(ErrorKind::as_str),
        error_detail = outcome.error_detail.map(|detail| detail.0),
        "request"
    );
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// Trace and parent span id of a well-formed W3C `traceparent`
/// (`00-<32 hex>-<16 hex>-<2 hex>`); anything else is ignored.
fn trace_and_span(traceparent: &str) -> Option<(String, String)> {
    let mut parts = traceparent.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (parts.next().is_none() && hex(version, 2) && hex(trace, 32) && hex(span, 16) && hex(flags, 2))
        .then(|| (trace.to_owned(), span.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ids_from_a_valid_traceparent_only() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            trace_and_span(valid),
            Some((
                "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                "00f067aa0ba902b7".into()
            ))
        );
        assert_eq!(trace_and_span("00-xyz-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_and_span(&format!("{valid}-extra")), None);
    }
}
