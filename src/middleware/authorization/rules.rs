//! The rules of `inbound.authorization`, compiled. Per request:
//! 1. the rules are tried in the order written; a rule matches when every
//!    condition it gives holds — the caller's mTLS identity matches one of
//!    its `identities` patterns, the verified JWT ([`VerifiedClaims`], from
//!    the JWT layer) meets its `jwt` conditions, the request (path as the
//!    path normalization left it, methods, headers, query, gRPC service and
//!    method) matches its `match`;
//! 2. the first rule that matches decides: `allow` or `deny`;
//! 3. a request no rule matches gets `default`.
//!
//! Identity patterns read as in `tls.authorization`: a bare service name
//! in an allow rule names that service in this sidecar's own trust domain
//! and namespace (nobody while its own ID is unknown), in a deny rule that
//! service anywhere, so that deny rules fail closed. A caller without an
//! identity (no mTLS) matches no rule with `identities`; a request without
//! a verified token matches no rule with `jwt`.
//!
//! [`VerifiedClaims`]: crate::context::VerifiedClaims

use http::Request;

use crate::config::{AuthorizationAction, AuthorizationRule, InboundAuthorization, JwtMatch};
use crate::context::VerifiedClaims;
use crate::request_match::RequestMatch;
use crate::request_match::claims::{ClaimCondition, ClaimsMatch};
use crate::spiffe::SpiffeId;
use crate::tls::PeerIdentity;
use crate::tls::identity::{Scope, pattern_matches};

/// The compiled `inbound.authorization`.
#[derive(Debug)]
pub struct Rules {
    rules: Vec<Rule>,
    default_allow: bool,
}

#[derive(Debug)]
struct Rule {
    name: String,
    allow: bool,
    identities: Vec<String>,
    jwt: Option<ClaimsMatch>,
    request: RequestMatch,
}

/// What decided a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
    /// The first rule that matched, by name.
    Rule { name: &'a str, allow: bool },
    /// No rule matched.
    Default { allow: bool },
}

impl Decision<'_> {
    pub fn allows(self) -> bool {
        match self {
            Decision::Rule { allow, .. } | Decision::Default { allow } => allow,
        }
    }
}

impl Rules {
    /// Compiles a checked configuration (see `config::validate`).
    pub fn new(config: &InboundAuthorization) -> Rules {
        Rules {
            rules: config.rules.iter().map(Rule::new).collect(),
            default_allow: config.default == AuthorizationAction::Allow,
        }
    }

    /// What the rules say about `request` from `peer`, given this
    /// sidecar's own ID.
    pub fn decide<B>(
        &self,
        request: &Request<B>,
        peer: Option<&PeerIdentity>,
        own: Option<&SpiffeId>,
    ) -> Decision<'_> {
        let claims = request.extensions().get::<VerifiedClaims>();
        (self.rules.iter())
            .find(|rule| rule.matches(request, peer, own, claims))
            .map_or(
                Decision::Default {
                    allow: self.default_allow,
                },
                |rule| Decision::Rule {
                    name: &rule.name,
                    allow: rule.allow,
                },
            )
    }
}

impl Rule {
    fn new(config: &AuthorizationRule) -> Rule {
        Rule {
            name: config.name.clone(),
            allow: config.action == AuthorizationAction::Allow,
            identities: config.identities.clone(),
            jwt: config.jwt.as_ref().map(claims_match),
            request: RequestMatch::new(&config.matches),
        }
    }

    fn matches<B>(
        &self,
        request: &Request<B>,
        peer: Option<&PeerIdentity>,
        own: Option<&SpiffeId>,
        claims: Option<&VerifiedClaims>,
    ) -> bool {
        self.identity_matches(peer, own)
            && (self.jwt.as_ref()).is_none_or(|jwt| jwt.matches(claims))
            && self.request.matches(request)
    }

    fn identity_matches(&self, peer: Option<&PeerIdentity>, own: Option<&SpiffeId>) -> bool {
        if self.identities.is_empty() {
            return true;
        }
        let Some(peer) = peer else {
            return false;
        };
        let scope = match self.allow {
            true => Scope::of_rule(own, true),
            false => Scope::Anywhere,
        };
        (self.identities.iter()).any(|pattern| pattern_matches(pattern, peer, scope))
    }
}

fn claims_match(config: &JwtMatch) -> ClaimsMatch {
    let equals = |path: Vec<String>, value: &str| ClaimCondition::Equals {
        path,
        value: value.to_owned(),
    };
    let sub = (config.sub.as_deref()).map(|sub| equals(vec!["sub".to_owned()], sub));
    let scope = (config.scope.clone()).map(ClaimCondition::Scope);
    let claims = (config.claims.iter()).map(|claim| equals(claim.name.path(), &claim.value));
    ClaimsMatch {
        provider: config.provider.clone(),
        conditions: sub.into_iter().chain(scope).chain(claims).collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;

    const TD: &str = "td.consul";

    fn rules(yaml: &str) -> Rules {
        let config: InboundAuthorization = serde_saphyr::from_str(yaml).expect("rules parse");
        Rules::new(&config)
    }

    fn peer(service: &str) -> PeerIdentity {
        PeerIdentity::from_uri(&format!("spiffe://{TD}/ns/default/dc/dc1/svc/{service}"))
    }

    fn own() -> SpiffeId {
        SpiffeId::parse(&format!("spiffe://{TD}/ns/default/dc/dc1/svc/api")).unwrap()
    }

    fn request(method: &str, path: &str, claims: Option<serde_json::Value>) -> Request<()> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .body(())
            .unwrap();
        if let Some(serde_json::Value::Object(claims)) = claims {
            request.extensions_mut().insert(VerifiedClaims {
                provider: "okta".into(),
                claims: Arc::new(claims),
            });
        }
        request
    }

    /// The deciding rule's name (`default` for none) and whether it allows.
    fn decide(rules: &Rules, request: &Request<()>, caller: Option<&str>) -> (String, bool) {
        let peer = caller.map(peer);
        match rules.decide(request, peer.as_ref(), Some(&own())) {
            Decision::Rule { name, allow } => (name.to_owned(), allow),
            Decision::Default { allow } => ("default".to_owned(), allow),
        }
    }

    const RULES: &str = r"
default: deny
rules:
  - name: no-admin-for-web
    action: deny
    identities: [web]
    match: { path: { prefix: /admin } }
  - name: reports-readers
    action: allow
    identities: [web, 'spiffe://*/ns/default/dc/*/svc/reports-*']
    jwt: { sub: alice, scope: reports.read, claims: [{ name: [org, id], value: acme }] }
    match: { path: { regex: '/reports/\d+' }, methods: [GET, HEAD] }
  - name: health
    action: allow
    match: { path: { exact: /healthz } }
";

    #[test]
    fn the_first_matching_rule_decides_then_the_default() {
        let rules = rules(RULES);
        let alice = || {
            Some(json!({ "sub": "alice", "scope": "openid reports.read", "org": { "id": "acme" } }))
        };
        let get = |path: &str| request("GET", path, alice());
        assert_eq!(
            decide(&rules, &get("/reports/7"), Some("web")),
            ("reports-readers".into(), true)
        );
        assert_eq!(
            decide(&rules, &get("/reports/7"), Some("reports-eu")),
            ("reports-readers".into(), true)
        );
        assert_eq!(
            decide(&rules, &get("/admin/x"), Some("web")),
            ("no-admin-for-web".into(), false),
            "the deny rule comes first"
        );
        assert_eq!(
            decide(&rules, &get("/reports/x"), Some("web")),
            ("default".into(), false),
            "regex"
        );
        let post = request("POST", "/reports/7", alice());
        assert_eq!(
            decide(&rules, &post, Some("web")),
            ("default".into(), false)
        );
        assert_eq!(
            decide(&rules, &get("/reports/7"), Some("billing")),
            ("default".into(), false),
            "identity"
        );
        assert_eq!(
            decide(&rules, &get("/reports/7"), None),
            ("default".into(), false),
            "no mTLS identity"
        );
        assert_eq!(
            decide(&rules, &request("GET", "/healthz", None), None),
            ("health".into(), true),
            "a rule without identities or jwt matches anyone"
        );
    }

    #[test]
    fn claims_decide_only_with_a_verified_token() {
        let rules = rules(RULES);
        let decide_with =
            |claims| decide(&rules, &request("GET", "/reports/1", claims), Some("web")).1;
        let claims = json!({ "sub": "alice", "scope": "reports.read", "org": { "id": "acme" } });
        assert!(decide_with(Some(claims.clone())));
        assert!(!decide_with(None), "no token");
        for (claim, value) in [
            ("sub", json!("bob")),
            ("scope", json!("reports.write")),
            ("org", json!({ "id": "evil" })),
            ("org", json!("acme")),
        ] {
            let mut changed = claims.clone();
            changed[claim] = value;
            assert!(!decide_with(Some(changed)), "{claim}");
        }
        let provider =
            self::rules("rules: [{ name: okta-only, action: allow, jwt: { provider: okta } }]\n");
        assert!(decide(&provider, &request("GET", "/", Some(json!({}))), None).1);
        let other =
            self::rules("rules: [{ name: auth0-only, action: allow, jwt: { provider: auth0 } }]\n");
        assert!(!decide(&other, &request("GET", "/", Some(json!({}))), None).1);
    }

    #[test]
    fn bare_names_allow_in_the_own_trust_domain_and_deny_everywhere() {
        let rules = rules(
            "default: allow\nrules:\n  - { name: web-out, action: deny, identities: [web] }\n",
        );
        let elsewhere = PeerIdentity::from_uri("spiffe://evil.example/ns/default/dc/dc1/svc/web");
        let get = request("GET", "/", None);
        assert!(!rules.decide(&get, Some(&elsewhere), Some(&own())).allows());
        let allow = self::rules("rules:\n  - { name: web-in, action: allow, identities: [web] }\n");
        assert!(!allow.decide(&get, Some(&elsewhere), Some(&own())).allows());
        assert!(
            allow
                .decide(&get, Some(&peer("web")), Some(&own()))
                .allows()
        );
        assert!(
            !allow.decide(&get, Some(&peer("web")), None).allows(),
            "own ID unknown"
        );
    }
}
