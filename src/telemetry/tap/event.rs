//! One tapped request as it completed, and its JSON form: the access-log
//! record's fields (`access_log`) plus the retries, the completion time and,
//! for streams that asked, the request and response headers — values of
//! `authorization`, `proxy-authorization`, `cookie`, `set-cookie` and the
//! configured `admin.tap.redact_headers` shown as `<redacted>`.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, header};
use serde_json::{Map, Value, json};

use crate::error::ErrorKind;
use crate::telemetry::access_log::{RequestOutcome, RequestSummary};

/// What a redacted header value is shown as.
pub const REDACTED: &str = "<redacted>";

/// Headers always redacted.
pub const ALWAYS_REDACTED: [HeaderName; 4] = [
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::COOKIE,
    header::SET_COOKIE,
];

/// One completed request.
#[derive(Debug, Clone)]
pub struct TapEvent {
    /// When the response ended, in seconds since the Unix epoch.
    pub time: f64,
    pub direction: &'static str,
    pub upstream: String,
    pub route: Option<String>,
    pub method: String,
    pub authority: String,
    pub path: String,
    pub status: u16,
    pub grpc_status: Option<u16>,
    pub duration: Duration,
    pub bytes: u64,
    /// `cut` or `abandoned` for a response body that did not end whole.
    pub response_body: Option<&'static str>,
    pub endpoint: Option<SocketAddr>,
    pub retries: u32,
    pub trace_id: Option<String>,
    pub request_id: Option<String>,
    pub error: Option<ErrorKind>,
    /// Taken only while a stream wants headers.
    pub headers: Option<Box<(HeaderMap, HeaderMap)>>,
}

impl TapEvent {
    /// The event of a request the access log describes by `summary` and
    /// `outcome`; `headers` = (request, response) headers.
    pub fn new(
        summary: &RequestSummary,
        outcome: &RequestOutcome<'_>,
        duration: Duration,
        retries: u32,
        headers: Option<Box<(HeaderMap, HeaderMap)>>,
    ) -> Self {
        Self {
            time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
            direction: outcome.direction,
            upstream: outcome.upstream.to_owned(),
            route: outcome.route.map(str::to_owned),
            method: summary.method.as_str().to_owned(),
            authority: summary.authority.clone(),
            path: summary.path.clone(),
            status: outcome.status,
            grpc_status: outcome.grpc_status,
            duration,
            bytes: outcome.bytes,
            response_body: outcome.response_body,
            endpoint: outcome.endpoint,
            retries,
            trace_id: summary.trace.as_ref().map(|(trace, _)| trace.clone()),
            request_id: summary.request_id.clone(),
            error: outcome.error,
            headers,
        }
    }

    /// The event as JSON (`"type": "request"`), with the headers when
    /// `with_headers`, redacting `redact` and [`ALWAYS_REDACTED`].
    pub fn to_json(&self, with_headers: bool, redact: &[HeaderName]) -> Value {
        let mut value = json!({
            "type": "request",
            "time": self.time,
            "direction": self.direction,
            "upstream": self.upstream,
            "route": self.route,
            "method": self.method,
            "authority": self.authority,
            "path": self.path,
            "status": self.status,
            "grpc_status": self.grpc_status,
            "duration_ms": self.duration.as_secs_f64() * 1e3,
            "bytes": self.bytes,
            "response_body": self.response_body,
            "endpoint": self.endpoint.map(|endpoint| endpoint.to_string()),
            "retries": self.retries,
            "trace_id": self.trace_id,
            "request_id": self.request_id,
            "error": self.error.map(ErrorKind::as_str),
        });
        if let (true, Some(headers)) = (with_headers, &self.headers) {
            value["request_headers"] = headers_json(&headers.0, redact);
            value["response_headers"] = headers_json(&headers.1, redact);
        }
        value
    }
}

/// `{name: [values]}`, sensitive values redacted, non-UTF-8 ones lossy.
fn headers_json(headers: &HeaderMap, redact: &[HeaderName]) -> Value {
    let mut object = Map::new();
    for name in headers.keys() {
        let hidden = ALWAYS_REDACTED.contains(name) || redact.contains(name);
        let values = headers
            .get_all(name)
            .iter()
            .map(|value| match hidden {
                true => Value::from(REDACTED),
                false => Value::from(String::from_utf8_lossy(value.as_bytes())),
            })
            .collect();
        object.insert(name.as_str().to_owned(), Value::Array(values));
    }
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials_and_configured_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer secret".parse().unwrap());
        headers.append(header::COOKIE, "a=1".parse().unwrap());
        headers.append(header::COOKIE, "b=2".parse().unwrap());
        headers.insert("x-api-key", "k".parse().unwrap());
        headers.insert("x-plain", "shown".parse().unwrap());
        let json = headers_json(&headers, &[HeaderName::from_static("x-api-key")]);
        assert_eq!(
            json,
            json!({
                "authorization": [REDACTED],
                "cookie": [REDACTED, REDACTED],
                "x-api-key": [REDACTED],
                "x-plain": ["shown"],
            })
        );
    }
}
