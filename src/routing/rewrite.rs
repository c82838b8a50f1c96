//! What a route changes: request and response headers (remove, then set,
//! then add), the host / authority and the path prefix of the request, and
//! the answers a route gives itself — redirects and direct responses — with
//! no upstream involved. Names and values were validated with the config;
//! entries that still fail to convert are skipped rather than fail requests.

use bytes::Bytes;
use http::header::{HOST, LOCATION};
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri};

use crate::body::ResponseBody;
use crate::config::{DirectResponse, HeaderRules, PathMatch, Redirect, RouteConfig};
use crate::headers::request_host;

/// Header edits of one direction.
#[derive(Default)]
pub struct HeaderEdits {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderEdits {
    pub fn new(rules: &HeaderRules) -> Self {
        let pairs = |map: &std::collections::BTreeMap<String, String>| {
            (map.iter())
                .filter_map(|(name, value)| {
                    Some((
                        HeaderName::from_bytes(name.as_bytes()).ok()?,
                        HeaderValue::from_str(value).ok()?,
                    ))
                })
                .collect()
        };
        Self {
            remove: (rules.remove.iter())
                .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
                .collect(),
            set: pairs(&rules.set),
            add: pairs(&rules.add),
        }
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name, value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name, value.clone());
        }
    }
}

/// Everything a route does to a request before it is sent on.
#[derive(Default)]
pub struct RequestRewrite {
    headers: HeaderEdits,
    host: Option<Authority>,
    /// (matched prefix, replacement)
    path_prefix: Option<(String, String)>,
}

impl RequestRewrite {
    pub fn new(route: &RouteConfig) -> Self {
        let rewrite = route.rewrite.as_ref();
        let matched_prefix = match &route.matches.path {
            Some(PathMatch::Prefix(prefix)) => Some(prefix.clone()),
            _ => None,
        };
        Self {
            headers: HeaderEdits::new(&route.request_headers),
            host: rewrite
                .and_then(|r| r.host.as_deref())
                .and_then(|host| host.parse().ok()),
            path_prefix: rewrite
                .and_then(|r| r.path_prefix.clone())
                .zip(matched_prefix)
                .map(|(to, from)| (from, to)),
        }
    }

    pub fn apply<B>(&self, request: &mut Request<B>) {
        self.headers.apply(request.headers_mut());
        if let Some(host) = &self.host {
            set_authority(request, host);
        }
        if let Some((from, to)) = &self.path_prefix {
            replace_path_prefix(request, from, to);
        }
    }
}

fn set_authority<B>(request: &mut Request<B>, host: &Authority) {
    if let Ok(value) = HeaderValue::from_str(host.as_str()) {
        request.headers_mut().insert(HOST, value);
    }
    if request.uri().authority().is_some() {
        let mut parts = request.uri().clone().into_parts();
        parts.authority = Some(host.clone());
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
}

/// `/api/users?x` with `/api` → `/v2` becomes `/v2/users?x`; a path left
/// empty becomes `/`.
fn replace_path_prefix<B>(request: &mut Request<B>, from: &str, to: &str) {
    let Some(rest) = request.uri().path().strip_prefix(from) else {
        return;
    };
    let mut path = format!("{}{rest}", to.trim_end_matches('/'));
    if path.is_empty() || !path.starts_with('/') {
        path.insert(0, '/');
    }
    if let Some(query) = request.uri().query() {
        path.push('?');
        path.push_str(query);
    }
    let mut parts = request.uri().clone().into_parts();
    let Ok(path_and_query) = PathAndQuery::try_from(path) else {
        return;
    };
    parts.path_and_query = Some(path_and_query);
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
}

/// A response the route makes itself.
pub enum LocalAnswer {
    Redirect(Redirect),
    Direct { status: StatusCode, body: Bytes },
}

impl LocalAnswer {
    pub fn of(route: &RouteConfig) -> Option<Self> {
        if let Some(redirect) = &route.redirect {
            return Some(LocalAnswer::Redirect(redirect.clone()));
        }
        let DirectResponse { status, body } = route.direct_response.as_ref()?;
        Some(LocalAnswer::Direct {
            // config::validate::routing admits 200..=599 only, all valid.
            status: StatusCode::from_u16(*status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            body: Bytes::from(body.clone()),
        })
    }

    pub fn respond<B>(&self, request: &Request<B>) -> Response<ResponseBody> {
        match self {
            LocalAnswer::Direct { status, body } => {
                let mut response = Response::new(ResponseBody::local(body.clone()));
                *response.status_mut() = *status;
                if !body.is_empty() {
                    response.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; charset=utf-8"),
                    );
                }
                response
            }
            LocalAnswer::Redirect(redirect) => {
                let mut response = Response::new(ResponseBody::empty());
                *response.status_mut() =
                    StatusCode::from_u16(redirect.status).unwrap_or(StatusCode::FOUND);
                if let Ok(location) = HeaderValue::from_str(&location(redirect, request)) {
                    response.headers_mut().insert(LOCATION, location);
                }
                response
            }
        }
    }
}

/// The request's URL with the redirect's parts replaced.
fn location<B>(redirect: &Redirect, request: &Request<B>) -> String {
    let uri = request.uri();
    let request_authority: Option<Authority> =
        request_host(uri, request.headers()).and_then(|host| host.parse().ok());
    let scheme = (redirect.scheme.clone())
        .or_else(|| uri.scheme_str().map(str::to_owned))
        .unwrap_or_else(|| "http".to_owned());
    let host = (redirect.host.clone())
        .or_else(|| request_authority.as_ref().map(|a| a.host().to_owned()))
        .unwrap_or_default();
    let port = redirect.port.or_else(|| {
        redirect
            .host
            .is_none()
            .then(|| request_authority.as_ref()?.port_u16())?
    });
    let path = redirect.path.as_deref().unwrap_or(uri.path());
    let mut location = format!("{scheme}://{host}");
    if let Some(port) = port {
        location.push_str(&format!(":{port}"));
    }
    location.push_str(path);
    if let Some(query) = uri.query() {
        location.push('?');
        location.push_str(query);
    }
    location
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(yaml: &str) -> RouteConfig {
        serde_saphyr::from_str(yaml).expect("route parses")
    }

    #[test]
    fn prefix_host_and_headers() {
        let route = route(
            "{ name: r, match: { path: { prefix: /api } }, rewrite: { host: new.example, path_prefix: /v2 },
               request_headers: { set: { x-a: '1' }, add: { x-b: '2' }, remove: [x-c] } }",
        );
        let mut request = Request::get("/api/users?q=1")
            .header("host", "old")
            .header("x-a", "0")
            .header("x-b", "1")
            .header("x-c", "gone")
            .body(())
            .unwrap();
        RequestRewrite::new(&route).apply(&mut request);
        assert_eq!(request.uri(), "/v2/users?q=1");
        assert_eq!(request.headers()["host"], "new.example");
        assert_eq!(request.headers()["x-a"], "1");
        assert_eq!(request.headers().get_all("x-b").iter().count(), 2);
        assert!(request.headers().get("x-c").is_none());

        let mut root = Request::get("/api").body(()).unwrap();
        RequestRewrite::new(&route).apply(&mut root);
        assert_eq!(root.uri(), "/v2");
    }

    #[test]
    fn redirect_location() {
        let route = route("{ name: r, redirect: { scheme: https, path: /new, status: 301 } }");
        let request = Request::get("/old?x=1")
            .header("host", "shop.example:8080")
            .body(())
            .unwrap();
        let response = LocalAnswer::of(&route).unwrap().respond(&request);
        assert_eq!(response.status(), 301);
        assert_eq!(
            response.headers()["location"],
            "https://shop.example:8080/new?x=1"
        );
    }
}
