//! Hop-by-hop header handling (RFC 9110 §7.6.1) shared by both directions.
//!
//! A proxy must not forward connection-specific headers: `Connection` and every
//! header it names, `Keep-Alive`, `Proxy-Connection`, `TE` (except `te: trailers`,
//! which gRPC over HTTP/2 requires), `Transfer-Encoding` and `Upgrade`.
//! An upgrade request (WebSocket) keeps `Connection: upgrade` and `Upgrade`,
//! since they are what the upstream must see to switch protocols.
//! `Connection` cannot nominate `Host` (routing and the upstream need it),
//! the trace context remora sets, nor a reserved header (remora sets those
//! itself, e.g. the caller's verified identity): such tokens are ignored. (`Content-Length` needs no
//! such rule: hyper frames the forwarded body by its known length anyway.)
//!
//! Reserved request headers ([`RESERVED_REQUEST_HEADERS`]) are the ones only
//! remora may set for the application; [`is_reserved`] recognises them in any
//! spelling an application might fold into theirs (case, `_` for `-`).

use http::Uri;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Header remora sets on the responses it makes itself; never sent upstream.
pub const X_REMORA_ERROR: HeaderName = HeaderName::from_static("x-remora-error");
/// The verified mTLS identity of the caller, set by the inbound sidecar for
/// the application; a client's is dropped in every spelling (reserved).
pub const X_REMORA_CLIENT_ID: HeaderName = HeaderName::from_static("x-remora-client-id");
/// Envoy's record of the client certificates a request came through. remora
/// sets none (the verified caller is `x-remora-client-id`), so a copy can
/// only be the caller's own claim, which an application moved from Envoy or
/// Istio may still trust: dropped, as Envoy's default (`SANITIZE`) does.
pub const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
/// Request headers only remora may set: a client's are dropped on arrival,
/// in every spelling (see `request_head`) and from trailers (see `body`).
pub static RESERVED_REQUEST_HEADERS: [HeaderName; 2] =
    [X_REMORA_CLIENT_ID, X_FORWARDED_CLIENT_CERT];
/// Trace context remora joins or starts and sets on requests (see
/// `middleware::trace_context`).
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const B3: HeaderName = HeaderName::from_static("b3");
pub const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub const B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// gRPC's status and message (in trailers, or in a trailers-only head).
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// Headers remora sets on a request on its way (beside the reserved ones),
/// which `Connection` therefore cannot nominate.
static SET_BY_REMORA: [HeaderName; 10] = [
    header::HOST,
    TRACEPARENT,
    TRACESTATE,
    REQUEST_ID,
    B3,
    B3_TRACE_ID,
    B3_SPAN_ID,
    B3_PARENT_SPAN_ID,
    B3_SAMPLED,
    B3_FLAGS,
];
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes hop-by-hop headers. With `keep_upgrade`, `Connection: upgrade` and
/// `Upgrade` survive (and nothing else named in `Connection`).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none of them: one pass over the names spares the
    // six lookups below.
    if !keep_upgrade && !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        if headers.len() > 1 {
            // Every `Connection` field counts: `Connection: keep-alive`
            // followed by `Connection: x-foo` names `x-foo` too.
            let named: Vec<HeaderName> = (headers.get_all(header::CONNECTION).iter())
                .flat_map(|connection| connection.to_str().unwrap_or_default().split(','))
                .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
                .filter(|name| !(keep_upgrade && name == header::UPGRADE))
                .filter(|name| !SET_BY_REMORA.contains(name) && !is_reserved(name))
                .collect();
            for name in named {
                headers.remove(name);
            }
        }
        headers.remove(header::CONNECTION);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
    headers.remove(KEEP_ALIVE);
    headers.remove(PROXY_CONNECTION);
    headers.remove(header::TRANSFER_ENCODING);
    // `TE: trailers` alone passes; any other value, in any field, does not.
    if (headers.get_all(header::TE).iter())
        .any(|te| !te.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        headers.remove(header::TE);
    }
}

/// The headers [`strip_hop_by_hop`] acts on (those named in `Connection`
/// only count when `Connection` is there too).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::UPGRADE
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::TE
}

/// True when `name` reads as a reserved request header to an application
/// that ignores case and folds `_` into `-` (WSGI/CGI `HTTP_X_REMORA_CLIENT_ID`).
pub fn is_reserved(name: &HeaderName) -> bool {
    (RESERVED_REQUEST_HEADERS.iter()).any(|reserved| reads_as(name, reserved))
}

/// True when `name` reads as `header` to an application that ignores case
/// and folds `_` into `-` (`x_user_id` reads as `x-user-id`).
pub fn reads_as(name: &HeaderName, header: &HeaderName) -> bool {
    // A `HeaderName` is lowercase already.
    let (name, header) = (name.as_str().as_bytes(), header.as_str().as_bytes());
    header.len() == name.len()
        && (header.iter().zip(name)).all(|(&h, &n)| h == n || (h == b'-' && n == b'_'))
}

/// Removes every header whose name `drop` picks (e.g. [`is_reserved`]).
pub fn remove_headers(headers: &mut HeaderMap, drop: impl Fn(&HeaderName) -> bool) {
    let dropped: Vec<HeaderName> = (headers.keys())
        .filter(|name| drop(name))
        .cloned()
        .collect();
    for name in dropped {
        headers.remove(name);
    }
}

/// True for an HTTP/1.1 request that asks to switch protocols
/// (`Connection: upgrade` plus an `Upgrade` header).
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// True when the request or response carries gRPC (`content-type: application/grpc…`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

/// gRPC-web (`application/grpc-web…`), which carries its status in the body.
pub fn is_grpc_web(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc-web"))
}

/// The host a request is for: its target's authority (HTTP/2's
/// `:authority`, an absolute-form target), else its `Host` field
/// (`request_head` has made the two agree before any layer reads them).
pub fn request_host<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    match uri.authority() {
        Some(authority) => Some(authority.as_str()),
        None => headers.get(header::HOST)?.to_str().ok(),
    }
}

/// The `grpc-status` in a header or trailer map, when present and numeric.
/// Read three times a response (breaker, outlier detection, metrics). A map
/// of a few fields is scanned: comparing its names costs less than hashing
/// a name that is not a standard one for the lookup.
pub fn grpc_status(headers: &HeaderMap) -> Option<u16> {
    const SCANNED_UP_TO: usize = 8;
    let value = if headers.len() <= SCANNED_UP_TO {
        (headers.iter()).find_map(|(name, value)| (name == GRPC_STATUS).then_some(value))
    } else {
        headers.get(GRPC_STATUS)
    };
    value
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
}

/// `grpc-status: code` and `grpc-message: message`, into `headers` (a
/// trailers-only response's headers, or trailers). `grpc-message` is
/// percent-encoded (gRPC over HTTP/2 spec): every byte outside printable
/// ASCII, and `%` itself.
pub fn put_grpc_status(headers: &mut HeaderMap, code: u16, message: &str) {
    headers.insert(GRPC_STATUS, HeaderValue::from(code));
    let mut encoded = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    if let Ok(value) = HeaderValue::from_str(&encoded) {
        headers.insert(GRPC_MESSAGE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn grpc_status_is_read_alike_from_small_and_large_maps() {
        let fields = |extra: usize, status: Option<&str>| {
            let mut pairs = vec![("content-type", "application/grpc"), ("date", "now")];
            let names: Vec<String> = (0..extra).map(|i| format!("x-extra-{i}")).collect();
            pairs.extend(names.iter().map(|name| (name.as_str(), "1")));
            pairs.extend(status.map(|code| ("grpc-status", code)));
            map(&pairs)
        };
        // 2 or 3 fields are scanned, 22 or 23 looked up: the same answers.
        for extra in [0, 20] {
            assert_eq!(grpc_status(&fields(extra, Some("14"))), Some(14));
            assert_eq!(grpc_status(&fields(extra, Some("0"))), Some(0));
            assert_eq!(grpc_status(&fields(extra, Some("unavailable"))), None);
            assert_eq!(grpc_status(&fields(extra, None)), None);
        }
        let mut twice = fields(0, Some("8"));
        twice.append(GRPC_STATUS, HeaderValue::from_static("2"));
        assert_eq!(
            grpc_status(&twice),
            Some(8),
            "the first value, as HeaderMap::get"
        );
    }

    #[test]
    fn strips_connection_and_the_headers_it_names() {
        let mut headers = map(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("te", "gzip"),
            ("upgrade", "h2c"),
            ("x-kept", "yes"),
            ("host", "example"),
        ]);
        strip_hop_by_hop(&mut headers, false);
        let mut names: Vec<&str> = headers.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["host", "x-kept"]);
    }

    #[test]
    fn every_connection_field_names_headers() {
        // nginx sends its own `Connection: keep-alive` first.
        let mut headers = map(&[
            ("connection", "keep-alive"),
            ("connection", "x-secret"),
            ("x-secret", "1"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut headers, false);
        let names: Vec<&str> = headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn te_passes_only_when_every_field_is_trailers() {
        let mut headers = map(&[("te", "trailers"), ("te", "gzip")]);
        strip_hop_by_hop(&mut headers, false);
        assert!(headers.get("te").is_none());
        let mut headers = map(&[("te", "trailers")]);
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(headers["te"], "trailers");
    }

    #[test]
    fn connection_cannot_nominate_host_trace_context_or_reserved_headers() {
        let mut headers = map(&[
            (
                "connection",
                "host, x-remora-client-id, traceparent, x-request-id, x-hop",
            ),
            ("host", "example"),
            (
                "x-remora-client-id",
                "spiffe://td/ns/default/dc/dc1/svc/web",
            ),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("x-request-id", "abc"),
            ("x-hop", "1"),
        ]);
        strip_hop_by_hop(&mut headers, false);
        let mut names: Vec<&str> = headers.keys().map(|n| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["host", "traceparent", "x-remora-client-id", "x-request-id"]
        );
    }

    #[test]
    fn reserved_names_are_recognised_in_every_spelling() {
        for name in [
            "x-remora-client-id",
            "x_remora_client_id",
            "x_remora_client-id",
            "X_Remora_Client-Id",
        ] {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            assert!(is_reserved(&name), "{name}");
        }
        for name in [
            "x-remora-client",
            "x-remora-client-idx",
            "x-remora+client-id",
        ] {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            assert!(!is_reserved(&name), "{name}");
        }
    }

    #[test]
    fn te_trailers_survives_for_grpc() {
        let mut headers = map(&[("te", "trailers")]);
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(headers.get("te").unwrap(), "trailers");
    }

    #[test]
    fn upgrade_requests_keep_upgrade_headers() {
        let mut headers = map(&[
            ("connection", "Upgrade, x-hop"),
            ("x-hop", "1"),
            ("upgrade", "websocket"),
        ]);
        assert!(is_upgrade_request(&headers));
        strip_hop_by_hop(&mut headers, true);
        assert_eq!(headers.get("upgrade").unwrap(), "websocket");
        assert_eq!(headers.get("connection").unwrap(), "upgrade");
        assert!(headers.get("x-hop").is_none());
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        let mut headers = HeaderMap::new();
        put_grpc_status(&mut headers, 14, "50% – ok");
        assert_eq!(headers[GRPC_STATUS], "14");
        assert_eq!(headers[GRPC_MESSAGE], "50%25 %E2%80%93 ok");
    }

    #[test]
    fn grpc_web_is_told_from_grpc() {
        let web = map(&[("content-type", "application/grpc-web+proto")]);
        let grpc = map(&[("content-type", "application/grpc+proto")]);
        assert!(is_grpc(&web) && is_grpc_web(&web));
        assert!(is_grpc(&grpc) && !is_grpc_web(&grpc));
    }
}
