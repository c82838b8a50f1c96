//! Checks on transparent mode: an upstream without `listen` has `hosts` or
//! `addresses`, those keys need a `transparent:` section, `hosts` need an
//! HTTP upstream, a host or address belongs to one upstream only,
//! `detect_timeout` is not zero, and an egress allow-list comes with
//! `unmatched: refuse` (with `passthrough` everything passes: a list there
//! would promise a restriction that does not exist).

use super::Problems;
use super::check_limits;
use crate::config::Unmatched;
use crate::config::model::Config;
use crate::config::upstream::UpstreamProtocol;

/// Transparent mode: which upstream answers for which host and address.
pub(super) fn check_transparent(config: &Config, problems: &mut Problems) {
    let transparent = config.transparent.as_ref();
    if let Some(transparent) = transparent {
        check_limits("transparent.limits", &transparent.limits, problems);
        problems.nonzero(
            "transparent.detect_timeout".to_owned(),
            transparent.detect_timeout,
        );
        if !transparent.egress.allow.is_empty() && transparent.unmatched == Unmatched::Passthrough {
            problems.add(
                "transparent.egress.allow",
                "an egress allow-list needs `transparent.unmatched: refuse` (with `passthrough`, \
                 the default, all unmatched traffic passes and the list would restrict nothing)",
            );
        }
    }
    let mut hosts = Vec::new();
    let mut addresses = Vec::new();
    for (i, upstream) in config.upstreams.iter().enumerate() {
        let at = |key: &str| format!("upstreams[{i}].{key}");
        let routed = !upstream.hosts.is_empty() || !upstream.addresses.is_empty();
        if upstream.listen.is_none() && !routed {
            problems.add(
                at("listen"),
                "an upstream needs `listen` (explicit mode) or `hosts` / `addresses` (transparent mode)",
            );
        }
        if routed && transparent.is_none() {
            problems.add(
                at(if upstream.hosts.is_empty() {
                    "addresses"
                } else {
                    "hosts"
                }),
                "hosts and addresses route transparent-mode traffic; add a `transparent:` section",
            );
        }
        if !upstream.hosts.is_empty() && upstream.protocol == UpstreamProtocol::Tcp {
            problems.add(
                at("hosts"),
                "hosts match the HTTP Host header; a tcp upstream is matched by `addresses`",
            );
        }
        for host in &upstream.hosts {
            if let Some((_, other)) = hosts.iter().find(|(known, _)| known == host) {
                problems.add(
                    at("hosts"),
                    format!("host `{host}` is already routed to upstreams[{other}]"),
                );
            }
            hosts.push((host.clone(), i));
        }
        for address in &upstream.addresses {
            if let Some((_, other)) = addresses.iter().find(|(known, _)| known == address) {
                problems.add(
                    at("addresses"),
                    format!("address `{address}` is already routed to upstreams[{other}]"),
                );
            }
            addresses.push((*address, i));
        }
    }
}
