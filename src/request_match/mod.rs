//! Whether a request matches a set of L7 conditions, all of which must hold:
//! a route's `match:`, an authorization rule's `match:`, a Consul L7
//! intention's `HTTP` permission. Path (exact, segment-wise prefix, plain
//! string prefix — Consul's `PathPrefix` — or an anchored regex, on the path
//! without its query, as the path normalization left it), method (any of a
//! list), headers and query parameters (exact value, prefix, suffix,
//! anchored regex, present or absent, optionally inverted; a repeated header
//! or parameter matches when any of its values does; query values are
//! percent-decoded, `+` as a space) and the gRPC service and method (only a
//! gRPC request — `content-type: application/grpc…` — can match those).
//! Header values that are not UTF-8 match only `present`. The JWT claims a
//! rule may also require are [`claims`].

pub mod claims;

use http::{HeaderName, Method, Request, header};

use crate::config::{GrpcMatch, PathMatch, Pattern, RouteMatch, ValueMatch};
use crate::headers::{is_grpc, request_host};

/// The compiled conditions of one route, rule or permission.
#[derive(Debug, Clone, Default)]
pub struct RequestMatch {
    path: Option<PathCondition>,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, Condition)>,
    query: Vec<(String, Condition)>,
    /// `/package.Service/Method`, or `/package.Service/` for any method.
    grpc_path: Option<(String, bool)>,
}

/// How the request path (without the query) must look.
#[derive(Debug, Clone)]
pub enum PathCondition {
    Exact(String),
    /// Whole segments: `/api` matches `/api` and `/api/x`, not `/apis`.
    SegmentPrefix(String),
    /// Any text after it: `/api` matches `/apis` too (Consul's `PathPrefix`).
    Prefix(String),
    Regex(Pattern),
}

/// What one header or parameter must look like.
#[derive(Debug, Clone)]
pub struct Condition {
    test: ValueTest,
    /// The condition holds when the test fails.
    invert: bool,
}

/// The test of a [`Condition`] on one value.
#[derive(Debug, Clone)]
pub enum ValueTest {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Regex(Pattern),
    Present(bool),
}

impl Condition {
    pub fn new(test: ValueTest, invert: bool) -> Self {
        Self { test, invert }
    }

    fn of(config: &ValueMatch) -> Self {
        let test = match (&config.exact, &config.regex, config.present) {
            (Some(exact), _, _) => ValueTest::Exact(exact.clone()),
            (None, Some(regex), _) => ValueTest::Regex(regex.clone()),
            // config::validate::routing requires exactly one of the three.
            (None, None, present) => ValueTest::Present(present.unwrap_or(true)),
        };
        Self::new(test, false)
    }

    /// `values` are all the values of the header or parameter.
    fn holds<'a>(&self, mut values: impl Iterator<Item = Option<&'a str>>) -> bool {
        let mut any = |test: &dyn Fn(&str) -> bool| values.any(|value| value.is_some_and(test));
        let passed = match &self.test {
            ValueTest::Present(wanted) => values.next().is_some() == *wanted,
            ValueTest::Exact(exact) => any(&|v| v == exact),
            ValueTest::Prefix(prefix) => any(&|v| v.starts_with(prefix.as_str())),
            ValueTest::Suffix(suffix) => any(&|v| v.ends_with(suffix.as_str())),
            ValueTest::Regex(regex) => any(&|v| regex.is_match(v)),
        };
        passed != self.invert
    }
}

impl RequestMatch {
    /// Compiles a checked `match:` (names and methods were validated).
    pub fn new(config: &RouteMatch) -> Self {
        Self {
            path: config.path.as_ref().map(|path| match path {
                PathMatch::Exact(exact) => PathCondition::Exact(exact.clone()),
                PathMatch::Prefix(prefix) => PathCondition::SegmentPrefix(prefix.clone()),
                PathMatch::Regex(regex) => PathCondition::Regex(regex.clone()),
            }),
            methods: (config.methods.iter())
                .filter_map(|method| Method::from_bytes(method.as_bytes()).ok())
                .collect(),
            headers: (config.headers.iter())
                .filter_map(|header| {
                    let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
                    Some((name, Condition::of(header)))
                })
                .collect(),
            query: (config.query.iter())
                .map(|parameter| (parameter.name.clone(), Condition::of(parameter)))
                .collect(),
            grpc_path: config.grpc.as_ref().map(grpc_path),
        }
    }

    /// Conditions on the path, methods (empty: any) and headers only.
    pub fn http(
        path: Option<PathCondition>,
        methods: Vec<Method>,
        headers: Vec<(HeaderName, Condition)>,
    ) -> Self {
        Self {
            path,
            methods,
            headers,
            ..Self::default()
        }
    }

    pub fn matches<B>(&self, request: &Request<B>) -> bool {
        let path = request.uri().path();
        if let Some(wanted) = &self.path
            && !path_matches(wanted, path)
        {
            return false;
        }
        if !self.methods.is_empty() && !self.methods.contains(request.method()) {
            return false;
        }
        let headers = request.headers();
        let headers_hold = self.headers.iter().all(|(name, condition)| {
            // `host` is the request's host however it came (HTTP/2 carries
            // it as `:authority`), as Envoy matches it.
            if name == header::HOST {
                return condition.holds(std::iter::once(request_host(request.uri(), headers)));
            }
            condition.holds(headers.get_all(name).iter().map(|v| v.to_str().ok()))
        });
        if !headers_hold {
            return false;
        }
        if let Some((grpc_path, whole)) = &self.grpc_path {
            let service_and_method = if *whole {
                path == grpc_path
            } else {
                path.starts_with(grpc_path.as_str())
            };
            if !(is_grpc(headers) && service_and_method) {
                return false;
            }
        }
        if self.query.is_empty() {
            return true;
        }
        let parameters = query_parameters(request.uri().query().unwrap_or_default());
        self.query.iter().all(|(name, condition)| {
            let values = (parameters.iter())
                .filter(|(key, _)| key == name)
                .map(|(_, value)| Some(value.as_str()));
            condition.holds(values)
        })
    }
}

fn grpc_path(grpc: &GrpcMatch) -> (String, bool) {
    match &grpc.method {
        Some(method) => (format!("/{}/{method}", grpc.service), true),
        None => (format!("/{}/", grpc.service), false),
    }
}

fn path_matches(wanted: &PathCondition, path: &str) -> bool {
    match wanted {
        PathCondition::Exact(exact) => path == exact,
        PathCondition::SegmentPrefix(prefix) => has_path_prefix(path, prefix),
        PathCondition::Prefix(prefix) => path.starts_with(prefix.as_str()),
        PathCondition::Regex(regex) => regex.is_match(path),
    }
}

/// `/api` is a prefix of `/api` and `/api/x` but not of `/apis`.
fn has_path_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// `a=1&b=x%20y&c` → `[(a, 1), (b, x y), (c, "")]`.
fn query_parameters(query: &str) -> Vec<(String, String)> {
    (query.split('&'))
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        let escaped = (byte == b'%')
            .then(|| tail.get(..2))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (escaped, byte) {
            (Some(decoded), _) => {
                bytes.push(decoded);
                rest = &tail[2..];
            }
            (None, b'+') => {
                bytes.push(b' ');
                rest = tail;
            }
            (None, _) => {
                bytes.push(byte);
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(yaml: &str) -> RequestMatch {
        let config: RouteMatch = serde_saphyr::from_str(yaml).expect("match parses");
        RequestMatch::new(&config)
    }

    fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("request")
    }

    #[test]
    fn paths() {
        let prefix = route("path: { prefix: /api }");
        assert!(prefix.matches(&request("GET", "/api", &[])));
        assert!(prefix.matches(&request("GET", "/api/x?y=1", &[])));
        assert!(!prefix.matches(&request("GET", "/apis", &[])));
        let exact = route("path: { exact: /a }");
        assert!(exact.matches(&request("GET", "/a?q", &[])));
        assert!(!exact.matches(&request("GET", "/a/", &[])));
        let regex = route(r"path: { regex: '/users/\d+' }");
        assert!(regex.matches(&request("GET", "/users/42", &[])));
        assert!(!regex.matches(&request("GET", "/users/42/x", &[])));
    }

    #[test]
    fn methods_headers_and_query() {
        let methods = route("methods: [POST, PUT]");
        assert!(methods.matches(&request("PUT", "/", &[])));
        assert!(!methods.matches(&request("GET", "/", &[])));
        let headers = route(
            "headers: [{ name: x-canary, exact: 'yes' }, { name: x-user, regex: 'a.*' }, { name: x-debug, present: false }]",
        );
        assert!(headers.matches(&request(
            "GET",
            "/",
            &[("x-canary", "yes"), ("x-user", "alice")]
        )));
        assert!(!headers.matches(&request(
            "GET",
            "/",
            &[("x-canary", "yes"), ("x-user", "bob")]
        )));
        assert!(!headers.matches(&request(
            "GET",
            "/",
            &[("x-canary", "yes"), ("x-user", "alice"), ("x-debug", "1")]
        )));
        let query = route("query: [{ name: v, exact: 'a b' }, { name: flag, present: true }]");
        assert!(query.matches(&request("GET", "/?flag&v=a%20b", &[])));
        assert!(query.matches(&request("GET", "/?v=a+b&flag=", &[])));
        assert!(!query.matches(&request("GET", "/?v=a+b", &[])));
    }

    #[test]
    fn grpc_service_and_method() {
        let method = route("grpc: { service: pkg.Echo, method: Unary }");
        let grpc = [("content-type", "application/grpc")];
        assert!(method.matches(&request("POST", "/pkg.Echo/Unary", &grpc)));
        assert!(!method.matches(&request("POST", "/pkg.Echo/Bidi", &grpc)));
        assert!(!method.matches(&request("POST", "/pkg.Echo/Unary", &[])));
        let service = route("grpc: { service: pkg.Echo }");
        assert!(service.matches(&request("POST", "/pkg.Echo/Bidi", &grpc)));
        assert!(!service.matches(&request("POST", "/pkg.Echoes/Bidi", &grpc)));
    }

    #[test]
    fn prefix_suffix_invert_and_string_prefix() {
        let header = |test, invert| {
            let name = HeaderName::from_static("x-host");
            RequestMatch::http(None, Vec::new(), vec![(name, Condition::new(test, invert))])
        };
        let host = |value: &str| request("GET", "/", &[("x-host", value)]);
        let prefix = header(ValueTest::Prefix("db.".into()), false);
        assert!(prefix.matches(&host("db.internal")));
        assert!(!prefix.matches(&host("web.db.internal")));
        let suffix = header(ValueTest::Suffix(".internal".into()), false);
        assert!(suffix.matches(&host("db.internal")));
        assert!(!suffix.matches(&host("db.internal.evil")));
        let not_internal = header(ValueTest::Suffix(".internal".into()), true);
        assert!(!not_internal.matches(&host("db.internal")));
        assert!(not_internal.matches(&host("example.com")));
        assert!(
            not_internal.matches(&request("GET", "/", &[])),
            "absent: the test fails"
        );
        let absent = header(ValueTest::Present(true), true);
        assert!(absent.matches(&request("GET", "/", &[])));
        assert!(!absent.matches(&host("")));

        let methods = vec![Method::GET];
        let string_prefix =
            RequestMatch::http(Some(PathCondition::Prefix("/v2".into())), methods, vec![]);
        assert!(string_prefix.matches(&request("GET", "/v2beta?x", &[])));
        assert!(!string_prefix.matches(&request("POST", "/v2", &[])));
        assert!(!string_prefix.matches(&request("GET", "/v1", &[])));
    }
}
