//! Checks on `inbound.jwt`: at least one provider, unique names, an issuer,
//! keys from exactly one of `jwks` (a `file` or an http(s) `url`) and
//! `secret` (at least 32 bytes, RFC 7518 §3.2), a bounded `cache_size`, a
//! `from` naming one header
//! or one cookie, valid and unreserved `claims_to_headers` header names, and
//! rules whose prefix is a path.

use std::collections::HashSet;

use http::HeaderName;

use super::Problems;
use crate::config::jwt::{JwksConfig, JwtConfig, JwtProvider, TokenLocation};
use crate::headers::is_reserved;

/// The most verified tokens one provider may keep.
const MAX_CACHE_SIZE: usize = 1_000_000;

/// Headers remora or HTTP itself owns, which a claim may not be copied to.
const OWNED_HEADERS: [&str; 8] = [
    "host",
    "authorization",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "te",
    "x-remora-error",
];

pub(super) fn check_jwt(jwt: &JwtConfig, problems: &mut Problems) {
    let at = "inbound.jwt";
    if jwt.providers.is_empty() {
        problems.add(format!("{at}.providers"), "needs at least one provider");
    }
    let mut names = HashSet::new();
    for (i, provider) in jwt.providers.iter().enumerate() {
        let at = format!("{at}.providers[{i}]");
        if provider.name.is_empty() {
            problems.add(format!("{at}.name"), "must not be empty");
        } else if !names.insert(provider.name.as_str()) {
            problems.add(
                format!("{at}.name"),
                format!("provider {:?} is defined twice", provider.name),
            );
        }
        check_provider(&at, provider, problems);
    }
    for (i, rule) in jwt.rules.iter().enumerate() {
        if !rule.prefix.starts_with('/') {
            problems.add(
                format!("{at}.rules[{i}].prefix"),
                "must be a path starting with /",
            );
        }
    }
}

fn check_provider(at: &str, provider: &JwtProvider, problems: &mut Problems) {
    if provider.issuer.is_empty() {
        problems.add(format!("{at}.issuer"), "must not be empty");
    }
    match (&provider.jwks, &provider.secret) {
        (Some(jwks), None) => check_jwks(&format!("{at}.jwks"), jwks, problems),
        (None, Some(secret)) => {
            if secret.expose().len() < 32 {
                problems.add(
                    format!("{at}.secret"),
                    "must be at least 32 bytes (RFC 7518 §3.2: as long as the HS256 hash)",
                );
            }
        }
        _ => problems.add(
            at,
            "needs exactly one of jwks (public keys) and secret (HS256/384/512)",
        ),
    }
    if provider.cache_size > MAX_CACHE_SIZE {
        problems.add(
            format!("{at}.cache_size"),
            format!("must be at most {MAX_CACHE_SIZE}"),
        );
    }
    if let Some(from) = &provider.from {
        check_location(&format!("{at}.from"), from, problems);
    }
    for (claim, header) in &provider.claims_to_headers {
        let at = format!("{at}.claims_to_headers.{claim}");
        if claim.is_empty() || claim.split('.').any(str::is_empty) {
            problems.add(at.clone(), "a claim name, or a dotted path of names");
        }
        match HeaderName::from_bytes(header.as_bytes()) {
            Err(_) => problems.add(at, format!("{header:?} is not a valid header name")),
            Ok(name) if is_reserved(&name) || OWNED_HEADERS.contains(&name.as_str()) => {
                problems.add(at, format!("{header:?} is a header remora or HTTP owns"));
            }
            Ok(_) => {}
        }
    }
}

fn check_jwks(at: &str, jwks: &JwksConfig, problems: &mut Problems) {
    match (&jwks.file, &jwks.url) {
        (Some(_), None) => {
            if jwks.ca_file.is_some() {
                problems.add(format!("{at}.ca_file"), "applies to an https:// url only");
            }
        }
        (None, Some(url)) => {
            let scheme = url.split_once("://").map(|(scheme, _)| scheme);
            match scheme {
                Some("http") if jwks.ca_file.is_some() => {
                    problems.add(format!("{at}.ca_file"), "applies to an https:// url only");
                }
                Some("http" | "https") if url.parse::<http::Uri>().is_ok() => {}
                _ => problems.add(format!("{at}.url"), "must be an http:// or https:// URL"),
            }
        }
        _ => problems.add(at, "needs exactly one of file and url"),
    }
    problems.nonzero(format!("{at}.refresh"), jwks.refresh);
}

fn check_location(at: &str, from: &TokenLocation, problems: &mut Problems) {
    match (&from.header, &from.cookie) {
        (Some(header), None) => {
            if HeaderName::from_bytes(header.as_bytes()).is_err() {
                problems.add(
                    format!("{at}.header"),
                    format!("{header:?} is not a valid header name"),
                );
            }
        }
        (None, Some(cookie)) => {
            if cookie.is_empty() || cookie.contains([';', '=', ' ', ',']) {
                problems.add(format!("{at}.cookie"), "must be a cookie name");
            }
        }
        _ => problems.add(at, "needs exactly one of header and cookie"),
    }
}
