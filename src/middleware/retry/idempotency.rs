//! Which requests may be sent twice. A request is *idempotent* (RFC 9110
//! §9.2.2: repeating it has the effect of sending it once) when
//!
//! - it carries an `Idempotency-Key` header (the IETF httpapi draft
//!   "The Idempotency-Key HTTP Header Field"): the server deduplicates it,
//!   whatever its method;
//! - it is a gRPC call (always `POST`) to a method listed in
//!   `idempotent_grpc_methods` (`pkg.Service/Method`, or `pkg.Service/*` for
//!   all of a service's methods) — what a proto's `idempotency_level`
//!   (`IDEMPOTENT`, `NO_SIDE_EFFECTS`) declares, which is not on the wire;
//! - otherwise, its method is one of `idempotent_methods` (GET, HEAD,
//!   OPTIONS, TRACE, PUT, DELETE by default; leaving one out marks it
//!   non-idempotent for the route).
//!
//! A non-idempotent request is retried only when its failed try provably
//! never reached the upstream ([`crate::resend::never_processed`]: connect
//! failure, refused stream, GOAWAY above its stream), unless the policy says
//! `retry_non_idempotent: true`. Hedging sends only idempotent requests twice.

use http::{HeaderName, Method, Request};

use crate::config::RetryPolicy;
use crate::headers::is_grpc;

/// The `Idempotency-Key` request header.
pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The idempotency rules of one retry policy.
#[derive(Debug, Clone)]
pub struct Idempotency {
    methods: Vec<Method>,
    /// `pkg.Service/Method` or `pkg.Service/` (every method of the service).
    grpc_methods: Vec<String>,
    /// `retry_non_idempotent`: every request counts as idempotent.
    everything: bool,
}

impl Idempotency {
    pub fn new(policy: &RetryPolicy) -> Self {
        Self {
            // Validation rejected names that are no method.
            methods: (policy.idempotent_methods.iter())
                .filter_map(|name| Method::from_bytes(name.as_bytes()).ok())
                .collect(),
            grpc_methods: (policy.idempotent_grpc_methods.iter())
                .map(|name| name.strip_suffix('*').unwrap_or(name).to_owned())
                .collect(),
            everything: policy.retry_non_idempotent,
        }
    }

    /// True when `request` may be sent again after it reached the upstream.
    pub fn may_repeat<B>(&self, request: &Request<B>) -> bool {
        self.everything || self.is_idempotent(request)
    }

    /// True when sending `request` twice has the effect of sending it once.
    pub fn is_idempotent<B>(&self, request: &Request<B>) -> bool {
        if request.headers().contains_key(&IDEMPOTENCY_KEY) {
            return true;
        }
        if is_grpc(request.headers()) {
            let method = request.uri().path().trim_start_matches('/');
            return (self.grpc_methods.iter()).any(|listed| match listed.strip_suffix('/') {
                Some(service) => method
                    .strip_prefix(service)
                    .is_some_and(|rest| rest.starts_with('/')),
                None => method == listed,
            });
        }
        self.methods.contains(request.method())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(methods: &[&str], grpc: &[&str], everything: bool) -> Idempotency {
        let policy: RetryPolicy = serde_saphyr::from_str("{}").unwrap();
        Idempotency::new(&RetryPolicy {
            idempotent_methods: methods.iter().map(|m| m.to_string()).collect(),
            idempotent_grpc_methods: grpc.iter().map(|m| m.to_string()).collect(),
            retry_non_idempotent: everything,
            ..policy
        })
    }

    fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    const GRPC: (&str, &str) = ("content-type", "application/grpc+proto");

    #[test]
    fn methods_follow_the_list_and_a_key_makes_any_request_idempotent() {
        let default: RetryPolicy = serde_saphyr::from_str("{}").unwrap();
        let default = Idempotency::new(&default);
        for method in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            assert!(
                default.is_idempotent(&request(method, "/", &[])),
                "{method}"
            );
        }
        for method in ["POST", "PATCH"] {
            assert!(
                !default.is_idempotent(&request(method, "/", &[])),
                "{method}"
            );
            let keyed = request(method, "/", &[("idempotency-key", "8e03978e")]);
            assert!(default.is_idempotent(&keyed), "{method} with a key");
        }
        // Leaving PUT out marks it non-idempotent; the opt-in repeats anything.
        let strict = rules(&["GET"], &[], false);
        assert!(!strict.may_repeat(&request("PUT", "/", &[])));
        assert!(rules(&[], &[], true).may_repeat(&request("POST", "/", &[])));
    }

    #[test]
    fn grpc_methods_are_idempotent_only_when_listed() {
        let listed = rules(&["POST"], &["shop.Cart/Get", "shop.Catalog/*"], false);
        let call = |path| request("POST", path, &[GRPC]);
        assert!(listed.is_idempotent(&call("/shop.Cart/Get")));
        assert!(!listed.is_idempotent(&call("/shop.Cart/GetAll")));
        assert!(!listed.is_idempotent(&call("/shop.Cart/Add")));
        assert!(listed.is_idempotent(&call("/shop.Catalog/List")));
        assert!(!listed.is_idempotent(&call("/shop.CatalogAdmin/Drop")));
        // A gRPC call is not idempotent for being a POST, even when POST is listed.
        assert!(!listed.is_idempotent(&call("/shop.Orders/Place")));
        assert!(listed.is_idempotent(&request(
            "POST",
            "/shop.Orders/Place",
            &[GRPC, ("idempotency-key", "k")]
        )));
    }
}
