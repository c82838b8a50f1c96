//! Whether the verified JWT claims of a request ([`VerifiedClaims`], set by
//! the JWT layer) meet a requirement: the token was verified by the named
//! provider (when one is named), and every claim condition holds. A claim is
//! found by its path (`["perms", "role"]` is the `role` member of the
//! `perms` object) and holds the value when it is that string, or an array
//! with that string among its members; other JSON types never match. A
//! scope condition holds when the space-separated `scope` claim (RFC 8693,
//! RFC 9068) lists the value — or, without a `scope` claim, the `scp` claim
//! (a string or an array, as Okta and Entra ID issue it). A request without
//! verified claims meets no requirement.

use serde_json::{Map, Value};

use crate::context::VerifiedClaims;

/// What a request's verified token must carry.
#[derive(Debug, Clone, Default)]
pub struct ClaimsMatch {
    /// The provider that verified the token; `None`: any.
    pub provider: Option<String>,
    pub conditions: Vec<ClaimCondition>,
}

/// One condition on the claims.
#[derive(Debug, Clone)]
pub enum ClaimCondition {
    /// The claim at this path is this string (or an array holding it).
    Equals { path: Vec<String>, value: String },
    /// The token's scopes include this one.
    Scope(String),
}

impl ClaimsMatch {
    pub fn matches(&self, verified: Option<&VerifiedClaims>) -> bool {
        let Some(verified) = verified else {
            return false;
        };
        if (self.provider.as_deref()).is_some_and(|provider| provider != &*verified.provider) {
            return false;
        }
        (self.conditions.iter()).all(|condition| condition.holds(&verified.claims))
    }
}

impl ClaimCondition {
    fn holds(&self, claims: &Map<String, Value>) -> bool {
        match self {
            ClaimCondition::Equals { path, value } => {
                claim_at(claims, path).is_some_and(|claim| holds_string(claim, value))
            }
            ClaimCondition::Scope(scope) => match claims.get("scope").or(claims.get("scp")) {
                Some(Value::String(scopes)) => scopes.split_whitespace().any(|s| s == scope),
                Some(claim) => holds_string(claim, scope),
                None => false,
            },
        }
    }
}

fn claim_at<'a>(claims: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    (rest.iter()).try_fold(claims.get(first)?, |value, name| value.get(name))
}

fn holds_string(claim: &Value, wanted: &str) -> bool {
    match claim {
        Value::String(text) => text == wanted,
        Value::Array(members) => (members.iter()).any(|member| member.as_str() == Some(wanted)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;

    fn verified(provider: &str, claims: Value) -> VerifiedClaims {
        let Value::Object(claims) = claims else {
            panic!("claims are an object")
        };
        VerifiedClaims {
            provider: provider.into(),
            claims: Arc::new(claims),
        }
    }

    fn equals(path: &[&str], value: &str) -> ClaimCondition {
        ClaimCondition::Equals {
            path: path.iter().map(|s| (*s).to_owned()).collect(),
            value: value.to_owned(),
        }
    }

    fn requirement(provider: Option<&str>, conditions: Vec<ClaimCondition>) -> ClaimsMatch {
        ClaimsMatch {
            provider: provider.map(str::to_owned),
            conditions,
        }
    }

    #[test]
    fn strings_arrays_and_nested_claims() {
        let token = verified(
            "okta",
            json!({
                "sub": "alice",
                "groups": ["ops", "dev"],
                "perms": { "role": "admin" },
                "level": 3,
                "admin": true
            }),
        );
        let holds = |conditions| requirement(None, conditions).matches(Some(&token));
        assert!(holds(vec![]), "any verified token");
        assert!(holds(vec![equals(&["sub"], "alice")]));
        assert!(!holds(vec![equals(&["sub"], "bob")]));
        assert!(holds(vec![equals(&["groups"], "dev")]));
        assert!(!holds(vec![equals(&["groups"], "d")]));
        assert!(holds(vec![equals(&["perms", "role"], "admin")]));
        assert!(!holds(vec![equals(&["perms"], "admin")]));
        assert!(!holds(vec![equals(&["perms", "role", "x"], "admin")]));
        assert!(!holds(vec![equals(&["level"], "3")]), "numbers never match");
        assert!(!holds(vec![equals(&["admin"], "true")]), "nor booleans");
        assert!(!holds(vec![equals(&["missing"], "")]));
        assert!(!holds(vec![
            equals(&["sub"], "alice"),
            equals(&["groups"], "qa")
        ]));
    }

    #[test]
    fn scopes_come_from_scope_or_else_scp() {
        let read = || vec![ClaimCondition::Scope("reports.read".into())];
        let spaced = verified("a", json!({ "scope": "openid reports.read" }));
        let listed = verified("a", json!({ "scp": ["reports.read"] }));
        let scp_string = verified("a", json!({ "scp": "reports.read" }));
        let other = verified(
            "a",
            json!({ "scope": "reports.readwrite", "scp": "reports.read" }),
        );
        for token in [&spaced, &listed, &scp_string] {
            assert!(requirement(None, read()).matches(Some(token)));
        }
        assert!(!requirement(None, read()).matches(Some(&other)));
    }

    #[test]
    fn the_provider_and_a_token_are_required() {
        let token = verified("okta", json!({ "sub": "alice" }));
        assert!(requirement(Some("okta"), vec![]).matches(Some(&token)));
        assert!(!requirement(Some("auth0"), vec![]).matches(Some(&token)));
        assert!(!requirement(None, vec![]).matches(None));
    }
}
