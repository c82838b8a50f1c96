//! Where a provider's token is read (`Authorization: Bearer`, a named
//! header, a cookie) and taken out again when it is not forwarded, and how
//! verified claims become request headers (`claims_to_headers`).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};

use crate::config::TokenLocation;

/// Where one provider reads its token.
pub(super) enum Location {
    /// `Authorization: Bearer <token>` (the scheme in any case).
    Bearer,
    /// A header's whole value, a `Bearer ` prefix dropped.
    Header(HeaderName),
    Cookie(String),
}

impl Location {
    pub(super) fn of(from: Option<&TokenLocation>) -> Location {
        let header = from.and_then(|from| from.header.as_deref());
        let cookie = from.and_then(|from| from.cookie.as_deref());
        match (header, cookie) {
            (Some(name), _) => match HeaderName::from_bytes(name.as_bytes()) {
                Ok(name) if name != header::AUTHORIZATION => Location::Header(name),
                _ => Location::Bearer,
            },
            (None, Some(cookie)) => Location::Cookie(cookie.to_owned()),
            (None, None) => Location::Bearer,
        }
    }

    /// The token this location holds in `headers`, if any.
    pub(super) fn find<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        let token = match self {
            Location::Bearer => {
                let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
                bearer(value)?
            }
            Location::Header(name) => {
                let value = headers.get(name)?.to_str().ok()?;
                bearer(value).unwrap_or(value)
            }
            Location::Cookie(name) => (headers.get_all(header::COOKIE).iter())
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(';'))
                .find_map(|pair| {
                    let (key, value) = pair.trim().split_once('=')?;
                    (key == name).then_some(value)
                })?,
        };
        let token = token.trim();
        (!token.is_empty()).then_some(token)
    }

    /// Takes the token out of `headers` (the other cookies stay).
    pub(super) fn remove(&self, headers: &mut HeaderMap) {
        match self {
            Location::Bearer => {
                headers.remove(header::AUTHORIZATION);
            }
            Location::Header(name) => {
                headers.remove(name);
            }
            Location::Cookie(name) => {
                let kept: Vec<String> = (headers.get_all(header::COOKIE).iter())
                    .filter_map(|value| value.to_str().ok())
                    .flat_map(|value| value.split(';'))
                    .map(str::trim)
                    .filter(|pair| pair.split_once('=').is_none_or(|(key, _)| key != name))
                    .filter(|pair| !pair.is_empty())
                    .map(str::to_owned)
                    .collect();
                headers.remove(header::COOKIE);
                if let Ok(value) = HeaderValue::from_str(&kept.join("; "))
                    && !kept.is_empty()
                {
                    headers.insert(header::COOKIE, value);
                }
            }
        }
    }
}

/// The credentials of a `Bearer` authorization value (RFC 6750 §2.1).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

/// One `claims_to_headers` entry: a claim (dotted: nested) and its header.
pub(super) struct ClaimHeader {
    path: Vec<String>,
    pub(super) header: HeaderName,
}

impl ClaimHeader {
    pub(super) fn new(claim: &str, header: &str) -> Option<ClaimHeader> {
        Some(ClaimHeader {
            path: claim.split('.').map(str::to_owned).collect(),
            header: HeaderName::from_bytes(header.as_bytes()).ok()?,
        })
    }

    /// Sets the header from `claims`, when the claim is there and makes a
    /// valid header value: a string as it is, an array's items joined by
    /// `,`, anything else as JSON.
    pub(super) fn apply(&self, claims: &Map<String, Value>, headers: &mut HeaderMap) {
        let Some((first, rest)) = self.path.split_first() else {
            return;
        };
        let mut value = claims.get(first);
        for key in rest {
            value = value.and_then(|value| value.get(key));
        }
        let text = match value {
            None | Some(Value::Null) => return,
            Some(Value::Array(items)) => items.iter().map(text_of).collect::<Vec<_>>().join(","),
            Some(value) => text_of(value),
        };
        if let Ok(value) = HeaderValue::from_str(&text) {
            headers.insert(self.header.clone(), value);
        }
    }
}

/// Takes claim headers out of the (first) `Connection` header, so that
/// hop-by-hop stripping on the way out does not remove the claims set here.
pub(super) fn unnominate(headers: &mut HeaderMap, claim_headers: &[HeaderName]) {
    let Some(connection) = headers.get(header::CONNECTION) else {
        return;
    };
    let tokens: Vec<&str> = (connection.to_str().unwrap_or_default().split(','))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .collect();
    let kept: Vec<&str> = (tokens.iter().copied())
        .filter(|token| {
            !claim_headers
                .iter()
                .any(|claim| claim.as_str().eq_ignore_ascii_case(token))
        })
        .collect();
    if kept.len() == tokens.len() {
        return;
    }
    match HeaderValue::from_str(&kept.join(", ")) {
        Ok(value) if !kept.is_empty() => {
            headers.insert(header::CONNECTION, value);
        }
        _ => {
            headers.remove(header::CONNECTION);
        }
    }
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        (pairs.iter())
            .map(|(name, value)| {
                (
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    #[test]
    fn bearer_is_read_in_any_case_and_other_schemes_are_no_token() {
        let location = Location::of(None);
        assert_eq!(
            location.find(&headers(&[("authorization", "bearer a.b.c")])),
            Some("a.b.c")
        );
        assert_eq!(
            location.find(&headers(&[("authorization", "Bearer  a.b.c ")])),
            Some("a.b.c")
        );
        assert_eq!(
            location.find(&headers(&[("authorization", "Basic dXNlcg==")])),
            None
        );
        assert_eq!(
            location.find(&headers(&[("authorization", "Bearer ")])),
            None
        );
    }

    #[test]
    fn a_cookie_is_found_among_others_and_removed_alone() {
        let from = TokenLocation {
            header: None,
            cookie: Some("session".into()),
        };
        let location = Location::of(Some(&from));
        let mut request = headers(&[("cookie", "a=1; session=x.y.z"), ("cookie", "b=2")]);
        assert_eq!(location.find(&request), Some("x.y.z"));
        location.remove(&mut request);
        assert_eq!(
            request.get_all("cookie").iter().collect::<Vec<_>>(),
            ["a=1; b=2"]
        );
        assert_eq!(location.find(&request), None);
    }

    #[test]
    fn connection_cannot_name_a_claim_header() {
        let claims = [HeaderName::from_static("x-user")];
        let mut request = headers(&[("connection", "keep-alive, X-User"), ("x-user", "alice")]);
        unnominate(&mut request, &claims);
        assert_eq!(request["connection"], "keep-alive");
        let mut request = headers(&[("connection", "x-user")]);
        unnominate(&mut request, &claims);
        assert!(request.get("connection").is_none());
        let mut request = headers(&[("connection", "upgrade")]);
        unnominate(&mut request, &claims);
        assert_eq!(request["connection"], "upgrade");
    }

    #[test]
    fn claims_become_header_values() {
        let claims: Map<String, Value> = serde_json::from_str(
            r#"{"sub":"alice","n":3,"groups":["a","b"],"org":{"id":"o1"},"bad":"x\ny"}"#,
        )
        .unwrap();
        let mut out = HeaderMap::new();
        for (claim, header) in [
            ("sub", "x-sub"),
            ("n", "x-n"),
            ("groups", "x-groups"),
            ("org.id", "x-org"),
            ("bad", "x-bad"),
            ("none", "x-none"),
        ] {
            ClaimHeader::new(claim, header)
                .unwrap()
                .apply(&claims, &mut out);
        }
        assert_eq!(out["x-sub"], "alice");
        assert_eq!(out["x-n"], "3");
        assert_eq!(out["x-groups"], "a,b");
        assert_eq!(out["x-org"], "o1");
        assert!(out.get("x-bad").is_none() && out.get("x-none").is_none());
    }
}
