//! The `inbound.authorization:` section: L7 authorization rules of the
//! inbound listener, tried in order (the first whose conditions all hold
//! decides), then `default`. A rule's conditions: the caller's mTLS identity
//! (`identities`, the patterns of `tls.authorization`), its verified JWT
//! (`jwt`: provider, `sub`, `scope`, any string claim) and the request
//! (`match`, as a route's: path, methods, headers, query, gRPC).

use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::routing::RouteMatch;
use super::tls::AuthorizationAction;

/// `inbound.authorization`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InboundAuthorization {
    /// What a request no rule matches gets (default: deny).
    #[serde(default = "deny")]
    pub default: AuthorizationAction,
    #[serde(default)]
    pub rules: Vec<AuthorizationRule>,
}

fn deny() -> AuthorizationAction {
    AuthorizationAction::Deny
}

/// One rule: its `action` applies to a request that meets every condition
/// given (a rule without conditions matches every request).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationRule {
    /// Named in the log line of a denial: `[a-z0-9][a-z0-9_-]*`, unique.
    pub name: String,
    pub action: AuthorizationAction,
    /// The caller's mTLS identity matches one of these patterns (service
    /// names or SPIFFE IDs with `*`); empty: any caller.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
    /// The request carries a verified JWT meeting these conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtMatch>,
    /// The request matches, as a route's `match:`.
    #[serde(default, rename = "match")]
    pub matches: RouteMatch,
}

/// Conditions on the verified token; all given must hold.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtMatch {
    /// The `inbound.jwt` provider that verified the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The `sub` claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// A scope the token's `scope` (space-separated) or `scp` claim lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<ClaimMatch>,
}

/// A claim that is `value` (or an array holding it).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimMatch {
    pub name: ClaimName,
    pub value: String,
}

/// A top-level claim (`org`) or a path into nested objects
/// (`[perms, role]`); serialized as written.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ClaimName {
    Top(String),
    Path(Vec<String>),
}

impl<'de> Deserialize<'de> for ClaimName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ClaimNameVisitor)
    }
}

struct ClaimNameVisitor;

impl<'de> Visitor<'de> for ClaimNameVisitor {
    type Value = ClaimName;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a claim name, or a list of names for a nested claim")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<ClaimName, E> {
        Ok(ClaimName::Top(name.to_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut names: A) -> Result<ClaimName, A::Error> {
        let mut path = Vec::new();
        while let Some(name) = names.next_element::<String>()? {
            path.push(name);
        }
        Ok(ClaimName::Path(path))
    }
}

impl ClaimName {
    /// The member names from the top of the claims down.
    pub fn path(&self) -> Vec<String> {
        match self {
            ClaimName::Top(name) => vec![name.clone()],
            ClaimName::Path(path) => path.clone(),
        }
    }
}
