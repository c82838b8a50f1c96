//! Checks on `inbound.authorization`: rule names label-safe and unique,
//! identity patterns that parse (and only with a `tls` section: without mTLS
//! no caller has an identity), JWT conditions without empty names and only
//! with `inbound.jwt` (naming one of its providers), request
//! matches as a route's (`routing::check_match`), and no rules on a `tcp`
//! service (they are per HTTP request).

use std::collections::BTreeSet;

use super::Problems;
use super::routing::check_match;
use super::upstream::is_label_safe;
use crate::config::model::Config;
use crate::config::service::ServiceProtocol;

pub(super) fn check_authorization(config: &Config, problems: &mut Problems) {
    let Some(authorization) = (config.inbound.as_ref()).and_then(|i| i.authorization.as_ref())
    else {
        return;
    };
    if config.service.protocol == ServiceProtocol::Tcp {
        problems.add(
            "inbound.authorization",
            "rules apply to HTTP requests; service.protocol is tcp (use tls.authorization)",
        );
    }
    let mut names = BTreeSet::new();
    for (i, rule) in authorization.rules.iter().enumerate() {
        let at = |key: &str| format!("inbound.authorization.rules[{i}].{key}");
        if !is_label_safe(&rule.name) {
            problems.add(
                at("name"),
                format!(
                    "invalid rule name `{}`: use lowercase letters, digits, `_` and `-`, starting with a letter or digit",
                    rule.name
                ),
            );
        } else if !names.insert(rule.name.as_str()) {
            problems.add(at("name"), format!("duplicate rule name `{}`", rule.name));
        }
        if !rule.identities.is_empty() && config.tls.is_none() {
            problems.add(
                at("identities"),
                "needs the top-level `tls` section: without mTLS no caller has an identity",
            );
        }
        for (j, pattern) in rule.identities.iter().enumerate() {
            if let Err(message) = crate::spiffe::check_pattern(pattern) {
                problems.add(at(&format!("identities[{j}]")), message);
            }
        }
        if let Some(jwt) = &rule.jwt {
            let providers = (config.inbound.as_ref()).and_then(|i| i.jwt.as_ref());
            match (providers, &jwt.provider) {
                (None, _) => problems.add(
                    at("jwt"),
                    "needs `inbound.jwt`: without it no request has verified claims",
                ),
                (Some(providers), Some(name))
                    if !name.is_empty() && !providers.providers.iter().any(|p| &p.name == name) =>
                {
                    problems.add(
                        at("jwt.provider"),
                        format!("`{name}` is not one of inbound.jwt.providers"),
                    )
                }
                _ => {}
            }
            let empty = |text: &Option<String>| text.as_deref() == Some("");
            for (key, value) in [
                ("provider", &jwt.provider),
                ("sub", &jwt.sub),
                ("scope", &jwt.scope),
            ] {
                if empty(value) {
                    problems.add(at(&format!("jwt.{key}")), "must not be empty");
                }
            }
            for (j, claim) in jwt.claims.iter().enumerate() {
                let path = claim.name.path();
                if path.is_empty() || path.iter().any(String::is_empty) {
                    problems.add(
                        at(&format!("jwt.claims[{j}].name")),
                        "needs a claim name, or a list of non-empty names for a nested claim",
                    );
                }
            }
        }
        check_match(&rule.matches, &at("match"), problems);
    }
}
