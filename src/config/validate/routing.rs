//! Checks on upstreams' `backends:` and `routes:`. Rejects backend
//! and route names that are not label-safe, duplicated, or `default`
//! (reserved); subsets on an upstream without Consul discovery (only Consul
//! instances carry tags and meta) or with neither tags nor meta; empty static
//! lists; `upstream:` backends naming an unknown, tcp or the same upstream;
//! routes on a tcp upstream; a route with more than one of `backend`, `split`,
//! `redirect`, `direct_response`; references to unknown backends; empty or
//! all-zero splits, `sticky` without `split`; paths not starting with `/`;
//! value matches without exactly one of `exact`/`regex`/`present`; invalid
//! header names, header values and methods; `rewrite.path_prefix` without a
//! `match.path.prefix`; redirect statuses other than 301/302/303/307/308,
//! direct-response statuses outside 200–599; a mirror onto a backend the
//! route itself sends to, a mirror percent outside 0–100, a zero mirror
//! timeout or `max_in_flight`; and the usual rules for per-route retries,
//! rate limits, faults and timeouts.

use http::{HeaderName, HeaderValue, Method};

use super::Problems;
use super::request_token::check_request_token;
use super::resilience::{check_fault, check_hedge, check_percent, check_rate_limit, check_retries};
use super::upstream::is_label_safe;
use crate::config::discovery::Discovery;
use crate::config::model::Config;
use crate::config::routing::{
    BackendConfig, DEFAULT_BACKEND, HeaderRules, PathMatch, RouteConfig, RouteMatch, ValueMatch,
};
use crate::config::upstream::{UpstreamConfig, UpstreamProtocol};

pub(super) fn check(config: &Config, problems: &mut Problems) {
    for (i, upstream) in config.upstreams.iter().enumerate() {
        let at = format!("upstreams[{i}]");
        check_backends(config, upstream, &at, problems);
        if upstream.protocol == UpstreamProtocol::Tcp && !upstream.routes.is_empty() {
            problems.add(
                format!("{at}.routes"),
                "routes match HTTP requests; a tcp upstream has none",
            );
        }
        for (j, route) in upstream.routes.iter().enumerate() {
            let route_at = format!("{at}.routes[{j}]");
            if !is_label_safe(&route.name) || route.name == DEFAULT_BACKEND {
                problems.add(
                    format!("{route_at}.name"),
                    format!(
                        "invalid route name `{}`: use lowercase letters, digits, `_` and `-` (it becomes a metric label); `default` is reserved for unmatched requests",
                        route.name
                    ),
                );
            } else if upstream.routes[..j]
                .iter()
                .any(|other| other.name == route.name)
            {
                problems.add(
                    format!("{route_at}.name"),
                    format!("route name `{}` is used twice", route.name),
                );
            }
            check_match(&route.matches, &format!("{route_at}.match"), problems);
            check_route(upstream, route, &route_at, problems);
        }
    }
}

fn check_backends(config: &Config, upstream: &UpstreamConfig, at: &str, problems: &mut Problems) {
    for (name, backend) in &upstream.backends {
        let backend_at = format!("{at}.backends.{name}");
        if !is_label_safe(name) || name == DEFAULT_BACKEND {
            problems.add(
                backend_at.clone(),
                format!(
                    "invalid backend name `{name}`: use lowercase letters, digits, `_` and `-`; `default` is reserved for the upstream's own endpoints"
                ),
            );
        }
        match backend {
            BackendConfig::Subset(subset) => {
                if !matches!(
                    upstream.discovery,
                    Discovery::Consul(_) | Discovery::Etcd(_)
                ) {
                    problems.add(
                        format!("{backend_at}.subset"),
                        "subsets select Consul or etcd instances by tags and meta; this upstream's discovery is neither",
                    );
                }
                if subset.tags.is_empty() && subset.meta.is_empty() {
                    problems.add(
                        format!("{backend_at}.subset"),
                        "needs at least one tag or meta value",
                    );
                }
            }
            BackendConfig::Static(endpoints) if endpoints.is_empty() => {
                problems.add(
                    format!("{backend_at}.static"),
                    "needs at least one endpoint",
                );
            }
            BackendConfig::Static(_) => {}
            BackendConfig::Upstream(other) => {
                let target = config.upstreams.iter().find(|u| &u.name == other);
                let problem = match target {
                    None => Some(format!("no upstream is named `{other}`")),
                    Some(_) if other == &upstream.name => {
                        Some("use `default` for the upstream's own endpoints".to_owned())
                    }
                    Some(target) if target.protocol == UpstreamProtocol::Tcp => {
                        Some(format!("upstream `{other}` is tcp"))
                    }
                    Some(_) => None,
                };
                if let Some(problem) = problem {
                    problems.add(format!("{backend_at}.upstream"), problem);
                }
            }
        }
    }
}

pub(super) fn check_match(matches: &RouteMatch, at: &str, problems: &mut Problems) {
    match &matches.path {
        Some(PathMatch::Exact(path) | PathMatch::Prefix(path)) if !path.starts_with('/') => {
            problems.add(format!("{at}.path"), "must start with `/`");
        }
        _ => {}
    }
    for (i, method) in matches.methods.iter().enumerate() {
        let valid = Method::from_bytes(method.as_bytes()).is_ok()
            && !method.bytes().any(|b| b.is_ascii_lowercase());
        if !valid {
            problems.add(
                format!("{at}.methods[{i}]"),
                format!("invalid method `{method}`: use upper case, e.g. GET"),
            );
        }
    }
    for (i, header) in matches.headers.iter().enumerate() {
        let header_at = format!("{at}.headers[{i}]");
        if HeaderName::from_bytes(header.name.as_bytes()).is_err() {
            problems.add(
                format!("{header_at}.name"),
                format!("invalid header name `{}`", header.name),
            );
        }
        check_value_match(header, &header_at, problems);
    }
    for (i, parameter) in matches.query.iter().enumerate() {
        check_value_match(parameter, &format!("{at}.query[{i}]"), problems);
    }
    if let Some(grpc) = &matches.grpc {
        let bad = |text: &str| text.is_empty() || text.contains(['/', ' ']);
        if bad(&grpc.service) {
            problems.add(
                format!("{at}.grpc.service"),
                "must be a full service name such as `package.Service`",
            );
        }
        if grpc.method.as_deref().is_some_and(bad) {
            problems.add(
                format!("{at}.grpc.method"),
                "must be a method name such as `Get`",
            );
        }
    }
}

fn check_value_match(condition: &ValueMatch, at: &str, problems: &mut Problems) {
    let given = [
        condition.exact.is_some(),
        condition.regex.is_some(),
        condition.present.is_some(),
    ];
    if given.iter().filter(|given| **given).count() != 1 {
        problems.add(at, "needs exactly one of `exact`, `regex` or `present`");
    }
}

fn check_route(upstream: &UpstreamConfig, route: &RouteConfig, at: &str, problems: &mut Problems) {
    let actions = [
        route.backend.is_some(),
        route.split.is_some(),
        route.redirect.is_some(),
        route.direct_response.is_some(),
    ];
    if actions.iter().filter(|given| **given).count() > 1 {
        problems.add(
            at,
            "give at most one of `backend`, `split`, `redirect` and `direct_response`",
        );
    }
    let known = |name: &str| name == DEFAULT_BACKEND || upstream.backends.contains_key(name);
    let unknown = |name: &str| {
        format!("unknown backend `{name}`: name one under the upstream's `backends:`, or `default`")
    };
    if let Some(backend) = &route.backend
        && !known(backend)
    {
        problems.add(format!("{at}.backend"), unknown(backend));
    }
    if let Some(split) = &route.split {
        if split
            .iter()
            .map(|target| u64::from(target.weight))
            .sum::<u64>()
            == 0
        {
            problems.add(
                format!("{at}.split"),
                "needs at least one backend with a weight above 0",
            );
        }
        for (i, target) in split.iter().enumerate() {
            if !known(&target.backend) {
                problems.add(format!("{at}.split[{i}].backend"), unknown(&target.backend));
            }
        }
    }
    if route.sticky.is_some() && route.split.is_none() {
        problems.add(format!("{at}.sticky"), "only applies to a `split`");
    }
    let answers_locally = route.redirect.is_some() || route.direct_response.is_some();
    if answers_locally && (route.mirror.is_some() || route.rewrite.is_some()) {
        problems.add(
            at,
            "a route that redirects or answers directly calls no upstream: drop `mirror` and `rewrite`",
        );
    }
    if let Some(timeout) = route.timeout {
        problems.nonzero(format!("{at}.timeout"), timeout);
    }
    if let Some(hedge) = &route.hedge {
        check_hedge(&format!("{at}.hedge"), hedge, problems);
    }
    if let Some(retries) = &route.retries {
        check_retries(&format!("{at}.retries"), retries, problems);
    }
    if let Some(rate_limit) = &route.rate_limit {
        check_rate_limit(&format!("{at}.rate_limit"), rate_limit, problems);
    }
    if let Some(token) = &route.request_token {
        check_request_token(&format!("{at}.request_token"), token, problems);
    }
    if let Some(fault) = &route.fault {
        check_fault(&format!("{at}.fault"), fault, problems);
    }
    check_header_rules(
        &route.request_headers,
        &format!("{at}.request_headers"),
        problems,
    );
    check_header_rules(
        &route.response_headers,
        &format!("{at}.response_headers"),
        problems,
    );
    if let Some(rewrite) = &route.rewrite {
        if let Some(host) = &rewrite.host
            && host.parse::<http::uri::Authority>().is_err()
        {
            problems.add(
                format!("{at}.rewrite.host"),
                format!("invalid host `{host}`"),
            );
        }
        if let Some(prefix) = &rewrite.path_prefix {
            if !matches!(route.matches.path, Some(PathMatch::Prefix(_))) {
                problems.add(
                    format!("{at}.rewrite.path_prefix"),
                    "replaces the matched prefix: the route needs `match.path.prefix`",
                );
            }
            if !prefix.starts_with('/') {
                problems.add(format!("{at}.rewrite.path_prefix"), "must start with `/`");
            }
        }
    }
    if let Some(redirect) = &route.redirect
        && ![301, 302, 303, 307, 308].contains(&redirect.status)
    {
        problems.add(
            format!("{at}.redirect.status"),
            "must be 301, 302, 303, 307 or 308",
        );
    }
    if let Some(direct) = &route.direct_response
        && !(200..=599).contains(&direct.status)
    {
        problems.add(
            format!("{at}.direct_response.status"),
            "must be an HTTP status between 200 and 599",
        );
    }
    if let Some(mirror) = &route.mirror {
        let mirror_at = format!("{at}.mirror");
        if !known(&mirror.backend) {
            problems.add(format!("{mirror_at}.backend"), unknown(&mirror.backend));
        }
        let primary: Vec<&str> = match (&route.backend, &route.split) {
            (_, Some(split)) => split.iter().map(|t| t.backend.as_str()).collect(),
            (Some(backend), None) => vec![backend.as_str()],
            (None, None) => vec![DEFAULT_BACKEND],
        };
        if primary.contains(&mirror.backend.as_str()) {
            problems.add(
                format!("{mirror_at}.backend"),
                "the route already sends to this backend; shadow traffic would count in its breaker and outlier state",
            );
        }
        check_percent(&format!("{mirror_at}.percent"), mirror.percent, problems);
        problems.nonzero(format!("{mirror_at}.timeout"), mirror.timeout);
        if mirror.max_in_flight == 0 {
            problems.add(format!("{mirror_at}.max_in_flight"), "must be at least 1");
        }
    }
}

fn check_header_rules(rules: &HeaderRules, at: &str, problems: &mut Problems) {
    for (key, map) in [("add", &rules.add), ("set", &rules.set)] {
        for (name, value) in map {
            if HeaderName::from_bytes(name.as_bytes()).is_err()
                || HeaderValue::from_str(value).is_err()
            {
                problems.add(
                    format!("{at}.{key}.{name}"),
                    format!("invalid header `{name}: {value}`"),
                );
            }
        }
    }
    for (i, name) in rules.remove.iter().enumerate() {
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            problems.add(
                format!("{at}.remove[{i}]"),
                format!("invalid header name `{name}`"),
            );
        }
    }
}
