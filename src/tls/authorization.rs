//! Inbound authorization by peer identity: deny patterns first, then allow
//! patterns, then Consul intentions (when followed and loaded), then the
//! configured default. Patterns are service names or SPIFFE IDs with `*`
//! wildcards (see `identity::pattern_matches`). A peer without a SPIFFE ID
//! in Consul's format matches no service-name pattern and no intention.
//! Every denial is counted (`remora_authz_denied_total`) and logged with
//! the peer's identity.

use std::sync::Arc;

use ::metrics::Counter;
use arc_swap::ArcSwapOption;

use super::identity::{PeerIdentity, pattern_matches};
use crate::config::{AuthorizationAction, AuthorizationConfig};
use crate::telemetry::metrics;
use crate::upstream::Direction;

/// One Consul intention as `/v1/connect/intentions/match` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intention {
    pub source_namespace: String,
    pub source_name: String,
    pub allow: bool,
}

impl Intention {
    fn matches(&self, peer: &PeerIdentity) -> bool {
        let Some(id) = peer.spiffe.as_deref() else {
            return false;
        };
        let name = self.source_name == "*" || self.source_name == id.service;
        let namespace = self.source_namespace.is_empty()
            || self.source_namespace == "*"
            || self.source_namespace == id.namespace;
        name && namespace
    }
}

/// The intentions for this service, in Consul's precedence order; empty
/// until the first answer.
#[derive(Debug, Default)]
pub struct Intentions(ArcSwapOption<Vec<Intention>>);

impl Intentions {
    pub fn set(&self, intentions: Vec<Intention>) {
        self.0.store(Some(Arc::new(intentions)));
    }

    /// The first intention matching `peer` says allow (true) or deny.
    fn decide(&self, peer: &PeerIdentity) -> Option<bool> {
        let intentions = self.0.load();
        let intentions = intentions.as_deref()?;
        intentions
            .iter()
            .find(|intention| intention.matches(peer))
            .map(|intention| intention.allow)
    }
}

/// Decides whether a peer may call the inbound listener.
pub struct Authorizer {
    default_allow: bool,
    allow: Vec<String>,
    deny: Vec<String>,
    intentions: Option<Arc<Intentions>>,
    listener: String,
    denied: Counter,
}

impl Authorizer {
    /// The authorizer of the inbound listener of service `listener`.
    pub fn new(config: &AuthorizationConfig, listener: &str) -> Authorizer {
        Authorizer {
            default_allow: config.default == AuthorizationAction::Allow,
            allow: config.allow.clone(),
            deny: config.deny.clone(),
            intentions: config.intentions.then(Arc::default),
            listener: listener.to_owned(),
            denied: metrics::authz_denied_counter(Direction::Inbound, listener),
        }
    }

    /// The intentions this authorizer follows, for the Consul watch to fill.
    pub fn intentions(&self) -> Option<&Arc<Intentions>> {
        self.intentions.as_ref()
    }

    /// True when `peer` may pass; a denial is counted and logged.
    pub fn authorize(&self, peer: Option<&PeerIdentity>) -> bool {
        let (allowed, reason) = self.decide(peer);
        if !allowed {
            self.denied.increment(1);
            tracing::info!(
                listener = %self.listener,
                peer = peer.map(|p| &*p.uri).unwrap_or("<no SPIFFE ID>"),
                reason,
                "request denied by authorization"
            );
        }
        allowed
    }

    fn decide(&self, peer: Option<&PeerIdentity>) -> (bool, &'static str) {
        if let Some(peer) = peer {
            if self.deny.iter().any(|p| pattern_matches(p, peer)) {
                return (false, "deny rule");
            }
            if self.allow.iter().any(|p| pattern_matches(p, peer)) {
                return (true, "allow rule");
            }
            if let Some(allow) = self.intentions.as_ref().and_then(|i| i.decide(peer)) {
                return (allow, "intention");
            }
        }
        (self.default_allow, "default")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::identity::SpiffeId;

    fn peer(service: &str) -> PeerIdentity {
        let uri = format!("spiffe://td.consul/ns/default/dc/dc1/svc/{service}");
        PeerIdentity {
            spiffe: Some(Arc::new(SpiffeId::parse(&uri).unwrap())),
            uri: uri.into(),
        }
    }

    fn authorizer(default: AuthorizationAction, allow: &[&str], deny: &[&str]) -> Authorizer {
        let config = AuthorizationConfig {
            default,
            allow: allow.iter().map(|s| (*s).to_owned()).collect(),
            deny: deny.iter().map(|s| (*s).to_owned()).collect(),
            intentions: true,
        };
        Authorizer::new(&config, "inbound")
    }

    #[test]
    fn deny_beats_allow_beats_default() {
        let authz = authorizer(AuthorizationAction::Deny, &["web*"], &["web-admin"]);
        assert!(authz.authorize(Some(&peer("web"))));
        assert!(!authz.authorize(Some(&peer("web-admin"))));
        assert!(!authz.authorize(Some(&peer("billing"))));
        assert!(!authz.authorize(None));
        let open = authorizer(AuthorizationAction::Allow, &[], &["billing"]);
        assert!(open.authorize(Some(&peer("web"))));
        assert!(open.authorize(None));
    }

    #[test]
    fn intentions_come_after_rules_and_before_the_default() {
        let authz = authorizer(AuthorizationAction::Allow, &["ops"], &[]);
        let intentions = authz.intentions().unwrap();
        assert!(
            authz.authorize(Some(&peer("web"))),
            "not loaded yet: default"
        );
        intentions.set(vec![
            Intention {
                source_namespace: "default".into(),
                source_name: "web".into(),
                allow: false,
            },
            Intention {
                source_namespace: "*".into(),
                source_name: "*".into(),
                allow: true,
            },
        ]);
        assert!(!authz.authorize(Some(&peer("web"))));
        assert!(authz.authorize(Some(&peer("api"))));
        intentions.set(vec![Intention {
            source_namespace: "default".into(),
            source_name: "*".into(),
            allow: false,
        }]);
        assert!(authz.authorize(Some(&peer("ops"))), "allow rule first");
        assert!(!authz.authorize(Some(&peer("api"))));
    }
}
