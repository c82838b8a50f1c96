//! Where a provider's token is read (`Authorization: Bearer`, a named
//! header, a cookie) and taken out again when it is not forwarded, and how
//! verified claims become request headers (`claims_to_headers`).
//!
//! A place holds one token at most: a second `Authorization` field (RFC
//! 9110 §11.6.2: a singleton), a second field of the token header or a
//! second cookie of the name is refused (`duplicate`), since which one the
//! application reads is its own guess. Lax parsers (Python's
//! `http.cookies`) also split cookies at whitespace and commas, so the name
//! is looked for as a parser splitting anywhere but inside a name would see
//! it (`x=1 session=…`, `secure session=…`): found twice that way it is a
//! duplicate, and found once where the `;`-separated pairs have none it is
//! malformed. A token that is not ASCII is there, and malformed. Cookie
//! names and values are trimmed (RFC 6265 §5.2).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};

use crate::config::TokenLocation;
use crate::error::TokenRejection;

/// Where one provider reads its token.
#[derive(PartialEq)]
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

    /// The header of a `Header` location.
    pub(super) fn header(&self) -> Option<&HeaderName> {
        match self {
            Location::Header(name) => Some(name),
            _ => None,
        }
    }

    /// The token this location holds in `headers`, if any; refused when
    /// the location is there twice, or the token is not ASCII.
    pub(super) fn find<'h>(
        &self,
        headers: &'h HeaderMap,
    ) -> Result<Option<&'h str>, TokenRejection> {
        let token = match self {
            Location::Bearer => at_most_one(headers.get_all(header::AUTHORIZATION).iter())?
                .and_then(|value| bearer(value.as_bytes())),
            Location::Header(name) => at_most_one(headers.get_all(name).iter())?
                .map(|value| bearer(value.as_bytes()).unwrap_or(value.as_bytes())),
            Location::Cookie(name) => {
                let name = name.as_bytes();
                let pairs =
                    (cookie_pairs(headers).filter_map(name_value)).filter(|(key, _)| *key == name);
                let pair = at_most_one(pairs)?;
                let seen = (headers.get_all(header::COOKIE).iter())
                    .map(|value| lax_mentions(value.as_bytes(), name))
                    .sum::<usize>();
                match (pair, seen) {
                    (_, 2..) => return Err(TokenRejection::Duplicate),
                    (Some((_, value)), 1) => Some(value),
                    (None, 0) => None,
                    _ => return Err(TokenRejection::Malformed),
                }
            }
        };
        let token = token.map(<[u8]>::trim_ascii).unwrap_or_default();
        if token.is_empty() {
            return Ok(None);
        }
        match std::str::from_utf8(token) {
            Ok(token) if token.is_ascii() => Ok(Some(token)),
            _ => Err(TokenRejection::Malformed),
        }
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
                let kept: Vec<&[u8]> = cookie_pairs(headers)
                    .filter(|pair| name_value(pair).is_none_or(|(key, _)| key != name.as_bytes()))
                    .collect();
                let kept = HeaderValue::from_bytes(&kept.join(&b"; "[..]));
                headers.remove(header::COOKIE);
                if let Ok(value) = kept
                    && !value.is_empty()
                {
                    headers.insert(header::COOKIE, value);
                }
            }
        }
    }
}

/// The only item of `items`, if any; a second one is a duplicate.
fn at_most_one<T>(mut items: impl Iterator<Item = T>) -> Result<Option<T>, TokenRejection> {
    let first = items.next();
    match items.next() {
        Some(_) => Err(TokenRejection::Duplicate),
        None => Ok(first),
    }
}

/// The credentials of a `Bearer` authorization value (RFC 6750 §2.1): the
/// scheme in any case, then a space or a tab (applications split at either,
/// so a token after a tab is one too).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(b"bearer".len())?;
    let (separator, token) = rest.split_first()?;
    let separated = matches!(separator, b' ' | b'\t');
    (scheme.eq_ignore_ascii_case(b"bearer") && separated).then_some(token)
}

/// The pairs of every `Cookie` field, trimmed, empty ones left out.
fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    (headers.get_all(header::COOKIE).iter())
        .flat_map(|value| value.as_bytes().split(|&byte| byte == b';'))
        .map(<[u8]>::trim_ascii)
        .filter(|pair| !pair.is_empty())
}

/// A cookie pair's name and value, each trimmed; none without `=`.
fn name_value(pair: &[u8]) -> Option<(&[u8], &[u8])> {
    let equals = pair.iter().position(|&byte| byte == b'=')?;
    Some((pair[..equals].trim_ascii(), pair[equals + 1..].trim_ascii()))
}

/// How many cookies named `name` a parser that splits a `Cookie` field
/// anywhere but inside a cookie name reads in it: `name` where no name
/// character comes before it, followed by `=` (whitespace allowed between).
/// One pass: a match moves on past its `=`.
fn lax_mentions(field: &[u8], name: &[u8]) -> usize {
    if name.is_empty() {
        return 0;
    }
    let mut count = 0;
    let mut at = 0;
    while let Some(found) = field[at..].windows(name.len()).position(|w| w == name) {
        let start = at + found;
        let after = field[start + name.len()..].trim_ascii_start();
        let bounded = start == 0 || !is_name_byte(field[start - 1]);
        if bounded && after.first() == Some(&b'=') {
            count += 1;
        }
        at = start + 1;
    }
    count
}

/// A byte of a cookie name (an RFC 9110 token character).
fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
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
                    HeaderValue::from_str(value).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn bearer_is_read_in_any_case_and_other_schemes_are_no_token() {
        let location = Location::of(None);
        for (value, token) in [
            ("bearer a.b.c", Some("a.b.c")),
            ("Bearer  a.b.c ", Some("a.b.c")),
            ("Bearer\ta.b.c", Some("a.b.c")),
            ("Basic dXNlcg==", None),
            ("Basic é", None),
            ("Bearer ", None),
            ("Bearer", None),
            ("Bearerx a.b.c", None),
        ] {
            let request = headers(&[("authorization", value)]);
            assert_eq!(location.find(&request), Ok(token), "{value}");
        }
    }

    #[test]
    fn a_second_authorization_field_is_a_duplicate_whatever_it_says() {
        let location = Location::of(None);
        for (first, second) in [
            ("Basic dXNlcg==", "Bearer a.b.c"),
            ("Bearer a.b.c", "Basic dXNlcg=="),
            ("Bearer a.b.c", "Bearer a.b.c"),
        ] {
            let request = headers(&[("authorization", first), ("authorization", second)]);
            assert_eq!(location.find(&request), Err(TokenRejection::Duplicate));
        }
    }

    #[test]
    fn a_token_header_is_read_once_with_or_without_bearer() {
        let location = Location::of(Some(&x_token()));
        for (value, token) in [
            ("a.b.c", Some("a.b.c")),
            ("Bearer a.b.c", Some("a.b.c")),
            (" ", None),
        ] {
            let request = headers(&[("x-token", value)]);
            assert_eq!(location.find(&request), Ok(token), "{value}");
        }
        let twice = headers(&[("x-token", "a.b.c"), ("x-token", "d.e.f")]);
        assert_eq!(location.find(&twice), Err(TokenRejection::Duplicate));
    }

    #[test]
    fn a_token_that_is_not_ascii_is_malformed() {
        for (from, name, value) in [
            (None, "authorization", "Bearer é"),
            (Some(x_token()), "x-token", "a.b.é"),
            (Some(session()), "cookie", "a=1; session=é"),
        ] {
            let request = headers(&[(name, value)]);
            let found = Location::of(from.as_ref()).find(&request);
            assert_eq!(found, Err(TokenRejection::Malformed), "{value}");
        }
    }

    #[test]
    fn a_cookie_is_found_among_others_and_removed_alone() {
        let location = Location::of(Some(&session()));
        let mut request = headers(&[("cookie", "a=1; session=x.y.z"), ("cookie", "b=é")]);
        assert_eq!(location.find(&request), Ok(Some("x.y.z")));
        location.remove(&mut request);
        assert_eq!(
            request.get_all("cookie").iter().collect::<Vec<_>>(),
            ["a=1; b=é"]
        );
        assert_eq!(location.find(&request), Ok(None));
    }

    #[test]
    fn cookie_names_are_trimmed_and_two_of_the_name_are_a_duplicate() {
        let location = Location::of(Some(&session()));
        let mut request = headers(&[("cookie", "a=1;session = x.y.z ;b")]);
        assert_eq!(location.find(&request), Ok(Some("x.y.z")));
        location.remove(&mut request);
        assert_eq!(request["cookie"], "a=1; b");
        let other = headers(&[("cookie", "theme=dark mode; a=b,c; x=my session")]);
        assert_eq!(location.find(&other), Ok(None));
        for twice in [
            &[("cookie", "session=x.y.z; session=u.v.w")][..],
            &[("cookie", "session=x.y.z; a=1; session =x.y.z")],
            &[("cookie", "session=x.y.z"), ("cookie", "session=u.v.w")],
            &[("cookie", "session=x.y.z; a=1 session=u.v.w")],
            &[("cookie", "a=1,session =u.v.w; session=x.y.z")],
            &[("cookie", "session=x.y.z; secure session=u.v.w")],
        ] {
            assert_eq!(
                location.find(&headers(twice)),
                Err(TokenRejection::Duplicate),
                "{twice:?}"
            );
        }
        // Found by a lax parser only: the pairs have no `session`.
        for hidden in [
            "$x session=u.v.w",
            "a=1,session=u.v.w",
            "secure session=u.v.w",
        ] {
            let request = headers(&[("cookie", hidden)]);
            assert_eq!(
                location.find(&request),
                Err(TokenRejection::Malformed),
                "{hidden}"
            );
        }
        let longer_names = headers(&[("cookie", "xsession=1; session_id=2; my.session=3")]);
        assert_eq!(location.find(&longer_names), Ok(None));
    }

    #[test]
    fn a_long_cookie_is_read_in_one_pass() {
        let field = format!("a=b{}c", " ".repeat(60_000)) + &" session=".repeat(2_000);
        let started = std::time::Instant::now();
        assert_eq!(lax_mentions(field.as_bytes(), b"session"), 2_000);
        assert_eq!(lax_mentions(b"session", b""), 0);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    fn x_token() -> TokenLocation {
        TokenLocation {
            header: Some("x-token".into()),
            cookie: None,
        }
    }

    fn session() -> TokenLocation {
        TokenLocation {
            header: None,
            cookie: Some("session".into()),
        }
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
