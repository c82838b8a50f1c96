//! The L7 parts of a Consul intention, read from an intentions answer and
//! compiled for per-request matching (`request_match`): `Permissions`
//! (`Action`; `HTTP`: at most one of `PathExact` / `PathPrefix` /
//! `PathRegex`, `Methods`, `Header` with exactly one of `Present` / `Exact` /
//! `Prefix` / `Suffix` / `Regex`, and `Invert`; `JWT`) and `JWT` (`Providers`,
//! each with its `VerifyClaims`). Shapes as Consul's `structs.IntentionPermission`
//! and `IntentionJWTRequirement`; unknown fields are errors (the entry is
//! then unreadable, and denies its source). `PathPrefix` is a plain string
//! prefix and `PathRegex` must match the whole path, as in Envoy.

use http::{HeaderName, Method};
use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::config::Pattern;
use crate::context::VerifiedClaims;
use crate::request_match::claims::{ClaimCondition, ClaimsMatch};
use crate::request_match::{Condition, PathCondition, RequestMatch, ValueTest};

/// One L7 permission: its action applies to a request that matches its
/// `HTTP` conditions and meets its `JWT` requirement (each when given).
#[derive(Debug, Clone)]
pub struct Permission {
    pub allow: bool,
    pub request: RequestMatch,
    pub jwt: Option<JwtRequirement>,
}

/// Consul's `JWT` requirement: a token verified by one of the providers,
/// carrying every claim that provider's `VerifyClaims` lists.
#[derive(Debug, Clone)]
pub struct JwtRequirement(pub Vec<ClaimsMatch>);

impl JwtRequirement {
    pub fn met_by(&self, claims: Option<&VerifiedClaims>) -> bool {
        self.0.iter().any(|provider| provider.matches(claims))
    }
}

/// One of `Permissions`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct PermissionEntry {
    action: PermissionAction,
    #[serde(rename = "HTTP", default)]
    http: Option<HttpEntry>,
    #[serde(rename = "JWT", default)]
    jwt: Option<JwtEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum PermissionAction {
    Allow,
    Deny,
}

/// A permission's `HTTP`: at most one path matcher.
#[derive(Debug, Default, Deserialize)]
#[serde(try_from = "HttpFields")]
struct HttpEntry {
    path: Option<PathCondition>,
    methods: Vec<Method>,
    header: Vec<HeaderEntry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct HttpFields {
    #[serde(default)]
    path_exact: Option<String>,
    #[serde(default)]
    path_prefix: Option<String>,
    #[serde(default)]
    path_regex: Option<Pattern>,
    #[serde(default, deserialize_with = "methods")]
    methods: Vec<Method>,
    #[serde(default)]
    header: Vec<HeaderEntry>,
}

/// One of `HTTP.Header`, compiled.
#[derive(Debug, Deserialize)]
#[serde(try_from = "HeaderFields")]
struct HeaderEntry(HeaderName, Condition);

/// One of `HTTP.Header` as written: exactly one of `Present`, `Exact`,
/// `Prefix`, `Suffix`, `Regex`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct HeaderFields {
    #[serde(deserialize_with = "header_name")]
    name: HeaderName,
    #[serde(default)]
    present: bool,
    #[serde(default)]
    exact: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
    #[serde(default)]
    suffix: Option<String>,
    #[serde(default)]
    regex: Option<Pattern>,
    #[serde(default)]
    invert: bool,
}

/// `JWT`: `Providers`, each with its `VerifyClaims`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub(super) struct JwtEntry {
    providers: Vec<ProviderEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct ProviderEntry {
    name: String,
    #[serde(default)]
    verify_claims: Vec<VerifyClaim>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct VerifyClaim {
    path: Vec<String>,
    value: String,
}

impl PermissionEntry {
    pub(super) fn compile(self) -> Permission {
        let http = self.http.unwrap_or_default();
        let headers = (http.header.into_iter())
            .map(|HeaderEntry(name, condition)| (name, condition))
            .collect();
        Permission {
            allow: self.action == PermissionAction::Allow,
            request: RequestMatch::http(http.path, http.methods, headers),
            jwt: self.jwt.map(JwtEntry::compile),
        }
    }
}

impl TryFrom<HttpFields> for HttpEntry {
    type Error = &'static str;

    fn try_from(fields: HttpFields) -> Result<HttpEntry, &'static str> {
        let path = match (fields.path_exact, fields.path_prefix, fields.path_regex) {
            (Some(exact), None, None) => Some(PathCondition::Exact(exact)),
            (None, Some(prefix), None) => Some(PathCondition::Prefix(prefix)),
            (None, None, Some(regex)) => Some(PathCondition::Regex(regex)),
            (None, None, None) => None,
            _ => return Err("at most one of PathExact, PathPrefix, PathRegex"),
        };
        Ok(HttpEntry {
            path,
            methods: fields.methods,
            header: fields.header,
        })
    }
}

impl TryFrom<HeaderFields> for HeaderEntry {
    type Error = String;

    fn try_from(fields: HeaderFields) -> Result<HeaderEntry, String> {
        let given = [
            fields.present,
            fields.exact.is_some(),
            fields.prefix.is_some(),
            fields.suffix.is_some(),
            fields.regex.is_some(),
        ];
        if given.into_iter().filter(|given| *given).count() != 1 {
            return Err(format!(
                "header `{}` needs exactly one of Present, Exact, Prefix, Suffix, Regex",
                fields.name
            ));
        }
        let test = match (fields.exact, fields.prefix, fields.suffix, fields.regex) {
            (Some(exact), ..) => ValueTest::Exact(exact),
            (None, Some(prefix), ..) => ValueTest::Prefix(prefix),
            (None, None, Some(suffix), _) => ValueTest::Suffix(suffix),
            (None, None, None, Some(regex)) => ValueTest::Regex(regex),
            (None, None, None, None) => ValueTest::Present(true),
        };
        Ok(HeaderEntry(
            fields.name,
            Condition::new(test, fields.invert),
        ))
    }
}

impl JwtEntry {
    pub(super) fn compile(self) -> JwtRequirement {
        JwtRequirement(
            (self.providers.into_iter())
                .map(|provider| ClaimsMatch {
                    provider: Some(provider.name),
                    conditions: (provider.verify_claims.into_iter())
                        .map(|claim| ClaimCondition::Equals {
                            path: claim.path,
                            value: claim.value,
                        })
                        .collect(),
                })
                .collect(),
        )
    }
}

fn methods<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Method>, D::Error> {
    let names = Vec::<String>::deserialize(deserializer)?;
    (names.iter())
        .map(|name| {
            Method::from_bytes(name.as_bytes())
                .map_err(|_| de::Error::custom(format!("invalid method `{name}`")))
        })
        .collect()
}

fn header_name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<HeaderName, D::Error> {
    let name = String::deserialize(deserializer)?;
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| de::Error::custom(format!("invalid header name `{name}`")))
}
