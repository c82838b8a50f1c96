//! What every HTTP listener checks and cleans in a request head before any
//! layer of its stack sees it (called by `http_connection` for each request).
//!
//! - `CONNECT` is refused: remora forwards requests and opens no tunnels
//!   (answering a CONNECT as a plain request, its `200` then led nowhere).
//! - `Host` (RFC 9112 §3.2): a request with more than one is refused, and so
//!   is an HTTP/1.1 request with none (HTTP/1.0 may omit it; HTTP/2 carries
//!   `:authority` instead), and one whose value is not a host and optional
//!   port (`a b`, `user@host`, `h/x`; empty is allowed).
//! - The request's one host: every layer (routing, authorization, the
//!   access log) and the upstream see the same. An absolute-form target's
//!   authority replaces `Host` (RFC 9112 §3.2.2: a proxy MUST); an HTTP/2
//!   request whose `host` field names another host than its `:authority` is
//!   refused (RFC 9113 §8.3.1), and so is an authority with userinfo
//!   (`user@host`, deprecated for http and https: RFC 9110 §4.2.4).
//! - Reserved headers (`headers::RESERVED_REQUEST_HEADERS`, e.g.
//!   `x-remora-client-id`) are only remora's to set: a client's are dropped
//!   in every spelling an application might read as theirs
//!   (`x_remora_client_id`, any case), whatever the listener's settings.
//! - A header with `_` in its name is forwarded, dropped or refused as
//!   `limits.headers_with_underscores_action` says (Envoy's setting).
//!
//! Refusals are [`ProxyError`]s, answered 400 `bad_request`.

use http::uri::Authority;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Version, header};

use crate::config::HeadersWithUnderscoresAction;
use crate::error::ProxyError;
use crate::headers::{is_reserved, remove_headers};

/// Checks `request`'s head and drops the headers it may not carry; an error
/// when it must be refused.
pub fn admit<B>(
    request: &mut Request<B>,
    underscores: HeadersWithUnderscoresAction,
) -> Result<(), ProxyError> {
    if request.method() == Method::CONNECT {
        return Err(ProxyError::Connect);
    }
    check_host(request)?;
    one_host(request)?;
    clean_header_names(request.headers_mut(), underscores)
}

/// One valid `Host`, or none where the version allows it.
fn check_host<B>(request: &Request<B>) -> Result<(), ProxyError> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Err(ProxyError::DuplicateHost),
        (None, _) if request.version() == Version::HTTP_11 => Err(ProxyError::MissingHost),
        (Some(host), None) if !is_host(host) => Err(ProxyError::InvalidHost {
            what: "the Host header is not a host and optional port",
        }),
        _ => Ok(()),
    }
}

/// `host[:port]` with no userinfo, or empty (RFC 9112 §3.2: a target with
/// no authority).
/// Checked byte by byte (RFC 3986 §3.2.2: reg-name, IPv4 or an IP literal
/// in brackets; `*DIGIT` port), with no allocation: it runs on every
/// HTTP/1.1 request.
fn is_host(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    if bytes.is_empty() {
        return true;
    }
    let (host, port) = if bytes[0] == b'[' {
        match bytes.iter().position(|&byte| byte == b']') {
            Some(end) => bytes.split_at(end + 1),
            None => return false,
        }
    } else {
        match bytes.iter().rposition(|&byte| byte == b':') {
            Some(colon) => bytes.split_at(colon),
            None => (bytes, &[][..]),
        }
    };
    let port_ok = match port.split_first() {
        None => true,
        Some((colon, digits)) => *colon == b':' && digits.iter().all(u8::is_ascii_digit),
    };
    let host_ok = match host {
        [b'[', literal @ .., b']'] => {
            !literal.is_empty()
                && (literal.iter()).all(|&byte| byte.is_ascii_hexdigit() || b":.".contains(&byte))
        }
        _ => {
            !host.is_empty()
                && (host.iter()).all(|&byte| {
                    byte.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&byte)
                })
        }
    };
    host_ok && port_ok
}

/// True when `host` names `authority`'s host and port (a port left out is
/// `default_port`).
fn names_the_same(host: &HeaderValue, authority: &Authority, default_port: u16) -> bool {
    let Ok(host) = Authority::try_from(host.as_bytes()) else {
        return false;
    };
    let port = |authority: &Authority| authority.port_u16().unwrap_or(default_port);
    host.host().eq_ignore_ascii_case(authority.host()) && port(&host) == port(authority)
}

/// Makes the target's authority, when it has one, the request's only host.
fn one_host<B>(request: &mut Request<B>) -> Result<(), ProxyError> {
    let Some(authority) = request.uri().authority() else {
        return Ok(());
    };
    if authority.as_str().contains('@') {
        return Err(ProxyError::InvalidHost {
            what: "the request target's authority has userinfo (user@host)",
        });
    }
    if request.version() == Version::HTTP_2 {
        let default_port = match request.uri().scheme_str() {
            Some("https") => 443,
            _ => 80,
        };
        let differs = (request.headers().get(header::HOST))
            .is_some_and(|host| !names_the_same(host, authority, default_port));
        if differs {
            return Err(ProxyError::InvalidHost {
                what: "the host header differs from :authority (RFC 9113 §8.3.1)",
            });
        }
        return Ok(());
    }
    if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
        request.headers_mut().insert(header::HOST, host);
    }
    Ok(())
}

/// Drops reserved headers in any spelling, and applies `underscores` to the
/// names with `_`.
fn clean_header_names(
    headers: &mut HeaderMap,
    underscores: HeadersWithUnderscoresAction,
) -> Result<(), ProxyError> {
    let has_underscore = |name: &HeaderName| name.as_str().contains('_');
    if underscores == HeadersWithUnderscoresAction::RejectRequest
        && let Some(name) = headers.keys().find(|name| has_underscore(name))
    {
        return Err(ProxyError::HeaderWithUnderscore {
            name: name.as_str().to_owned(),
        });
    }
    let drop_underscores = underscores == HeadersWithUnderscoresAction::DropHeader;
    remove_headers(headers, |name| {
        is_reserved(name) || (drop_underscores && has_underscore(name))
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use HeadersWithUnderscoresAction::{Allow, DropHeader, RejectRequest};

    fn request(version: Version, headers: &[(&str, &str)]) -> Request<()> {
        let mut request = Request::builder().version(version);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap()
    }

    fn names(request: &Request<()>) -> Vec<&str> {
        let mut names: Vec<&str> = request.headers().keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn host_is_required_once_in_http_1_1() {
        let admitted = |version, headers: &[(&str, &str)]| {
            admit(&mut request(version, headers), Allow).map_err(|error| error.to_string())
        };
        assert!(admitted(Version::HTTP_11, &[("host", "a")]).is_ok());
        assert!(admitted(Version::HTTP_10, &[]).is_ok());
        assert!(admitted(Version::HTTP_2, &[]).is_ok());
        for version in [Version::HTTP_10, Version::HTTP_11, Version::HTTP_2] {
            let twice = admitted(version, &[("host", "a"), ("host", "a")]);
            assert!(twice.unwrap_err().starts_with("more than one Host"));
        }
        let missing = admitted(Version::HTTP_11, &[]);
        assert!(missing.unwrap_err().contains("without a Host"));
    }

    #[test]
    fn a_host_must_be_a_host_and_optional_port() {
        let admitted = |host: &str| admit(&mut request(Version::HTTP_11, &[("host", host)]), Allow);
        for good in [
            "a",
            "a.example:8080",
            "127.0.0.1:1",
            "[::1]:80",
            "[::1]",
            "a:",
            "",
        ] {
            assert!(admitted(good).is_ok(), "{good:?}");
        }
        for bad in [
            "a b",
            "h@evil:80",
            "h/x",
            "h?x",
            "a:b:c",
            "[::1",
            "[]",
            "[::1]x",
            ":80",
            "a:8x",
        ] {
            let refused = admitted(bad).unwrap_err().to_string();
            assert!(refused.starts_with("invalid host"), "{bad:?}: {refused}");
        }
    }

    fn with_target(version: Version, target: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut request = request(version, headers);
        *request.uri_mut() = target.parse().unwrap();
        request
    }

    #[test]
    fn the_targets_authority_is_the_one_host() {
        // HTTP/1.1 absolute form: the authority replaces Host (RFC 9112 §3.2.2).
        let mut absolute = with_target(Version::HTTP_11, "http://good.svc/x", &[("host", "other")]);
        admit(&mut absolute, Allow).unwrap();
        assert_eq!(absolute.headers()["host"], "good.svc");
        // HTTP/2: a host field must name the :authority's host.
        for (target, host) in [
            ("http://a.svc/x", "A.svc"),
            ("http://a.svc/x", "a.svc:80"),
            ("https://a.svc:443/x", "a.svc"),
        ] {
            let mut same = with_target(Version::HTTP_2, target, &[("host", host)]);
            assert!(admit(&mut same, Allow).is_ok(), "{target} {host}");
        }
        let mut port = with_target(Version::HTTP_2, "http://a.svc/x", &[("host", "a.svc:8080")]);
        assert!(admit(&mut port, Allow).is_err());
        let mut other = with_target(Version::HTTP_2, "http://a.svc/x", &[("host", "b.svc")]);
        let refused = admit(&mut other, Allow).unwrap_err().to_string();
        assert!(refused.contains("differs from :authority"), "{refused}");
        // Userinfo, in either version.
        for version in [Version::HTTP_11, Version::HTTP_2] {
            let mut userinfo = with_target(version, "http://user@a.svc/x", &[("host", "a.svc")]);
            let refused = admit(&mut userinfo, Allow).unwrap_err().to_string();
            assert!(refused.contains("userinfo"), "{refused}");
        }
    }

    #[test]
    fn reserved_headers_are_dropped_whatever_the_action() {
        for action in [Allow, DropHeader] {
            let mut spoofed = request(
                Version::HTTP_11,
                &[
                    ("host", "a"),
                    ("x-remora-client-id", "spoof"),
                    ("X_Remora_Client-Id", "spoof"),
                    ("x-forwarded-client-cert", "By=spiffe://x;URI=spiffe://y"),
                    ("X_Forwarded_Client_Cert", "URI=spiffe://y"),
                    ("x_custom", "1"),
                ],
            );
            admit(&mut spoofed, action).unwrap();
            let expected: &[&str] = match action {
                Allow => &["host", "x_custom"],
                _ => &["host"],
            };
            assert_eq!(names(&spoofed), expected, "{action:?}");
        }
    }

    #[test]
    fn reject_request_refuses_any_name_with_an_underscore() {
        let mut spoofed = request(
            Version::HTTP_11,
            &[("host", "a"), ("x_remora_client_id", "s")],
        );
        let error = admit(&mut spoofed, RejectRequest).unwrap_err();
        assert!(
            matches!(error, ProxyError::HeaderWithUnderscore { name } if name == "x_remora_client_id")
        );
        let mut clean = request(Version::HTTP_11, &[("host", "a"), ("x-custom", "1")]);
        assert!(admit(&mut clean, RejectRequest).is_ok());
    }
}
