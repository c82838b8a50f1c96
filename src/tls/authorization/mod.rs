//! Inbound authorization by peer identity: deny patterns first, then allow
//! patterns, then Consul intentions (when followed), then the configured
//! default. Patterns are service names or SPIFFE IDs with `*` wildcards
//! (see `identity::pattern_matches`). A bare service name in an allow rule,
//! like an allow intention's source, names that service in this sidecar's
//! own trust domain and namespace (nobody while its own ID is unknown); in a
//! deny rule it names that service anywhere, so that deny rules fail
//! closed. A peer without a SPIFFE ID in Consul's format matches no
//! service-name pattern and no intention; once intentions are followed, such
//! a peer no rule allows is denied (Consul authorizes services only). Until
//! the intentions first load, a peer no rule decides is denied (or, with
//! `until_intentions_load: default`, gets the default). Every denial is
//! counted (`remora_authz_denied_total`) and logged with the peer's
//! identity.
//!
//! Intentions follow Consul's precedence: the list comes in precedence
//! order (an exact source before a wildcard one) and the first intention
//! whose source names the peer is the only one that applies. An L4
//! intention allows or denies. An L7 intention's `Permissions` are tried in
//! order against the request and "the first permission to match in the list
//! is terminal and stops further evaluation. As with L4 intentions, traffic
//! that fails to match any of the provided permissions in this intention
//! will be subject to the default intention behavior" (Consul,
//! `service-intentions` config entry, `Sources[].Permissions`): a request no
//! permission matches gets the default, not a lower-precedence intention.
//! An intention whose `JWT` requirement (its `service-intentions` entry's)
//! the request does not meet does not apply either (the default decides). Where there is no request — a
//! TCP listener's handshake — an L7 intention or one requiring a JWT
//! denies.

use std::sync::Arc;

use ::metrics::Counter;
use arc_swap::ArcSwapOption;
use http::Request;

use super::MeshTls;
use super::identity::{Namespace, PeerIdentity, Scope, pattern_matches};
use super::material::Material;
use crate::config::{AuthorizationAction, AuthorizationConfig, UntilIntentionsLoad};
use crate::consul::connect::Intention;
use crate::context::{Direction, VerifiedClaims};
use crate::spiffe::SpiffeId;
use crate::telemetry::metrics;

/// The intention's source is `peer`'s service (or `*`) in its namespace
/// (`*`: any; empty: this sidecar's own), in this sidecar's own trust domain.
fn intention_matches(intention: &Intention, peer: &SpiffeId, own: Option<&SpiffeId>) -> bool {
    let namespace = match intention.source_namespace.as_str() {
        "*" => Namespace::Any,
        "" => Namespace::Own,
        name => Namespace::Named(name),
    };
    (intention.source_name == "*" || intention.source_name == peer.service)
        && Scope::of_rule(own, intention.allow).contains(peer, namespace)
}

/// The intentions for this service, in Consul's precedence order; `None`
/// until the first answer.
#[derive(Debug, Default)]
pub struct Intentions(ArcSwapOption<Vec<Intention>>);

impl Intentions {
    pub fn set(&self, intentions: Vec<Intention>) {
        self.0.store(Some(Arc::new(intentions)));
    }

    /// `None` before the first answer; then whether the first intention
    /// matching `peer` says allow (`Some(Some(true))`) or deny for
    /// `request` (`None`: the connection), or none decides (`Some(None)`).
    fn decide<B>(
        &self,
        peer: Option<&SpiffeId>,
        own: Option<&SpiffeId>,
        request: Option<&Request<B>>,
    ) -> Option<Option<bool>> {
        let intentions = self.0.load();
        let intentions = intentions.as_deref()?;
        Some(peer.and_then(|peer| {
            intentions
                .iter()
                .find(|intention| intention_matches(intention, peer, own))
                .and_then(|intention| verdict(intention, request))
        }))
    }
}

/// What `intention`, the one that applies to the peer, says about
/// `request` (`None`: the connection); `None` when it does not decide.
fn verdict<B>(intention: &Intention, request: Option<&Request<B>>) -> Option<bool> {
    let Some(request) = request else {
        return Some(intention.allow && intention.jwt.is_none());
    };
    let claims = request.extensions().get::<VerifiedClaims>();
    if (intention.jwt.as_ref()).is_some_and(|jwt| !jwt.met_by(claims)) {
        return None;
    }
    let Some(permissions) = &intention.permissions else {
        return Some(intention.allow);
    };
    (permissions.iter())
        .find(|permission| {
            permission.request.matches(request)
                && (permission.jwt.as_ref()).is_none_or(|jwt| jwt.met_by(claims))
        })
        .map(|permission| permission.allow)
}

/// Decides whether a peer may call the inbound listener.
pub struct Authorizer {
    default_allow: bool,
    allow: Vec<String>,
    deny: Vec<String>,
    intentions: Option<Arc<Intentions>>,
    deny_until_intentions_load: bool,
    /// This sidecar's material, for its own SPIFFE ID.
    tls: Arc<MeshTls>,
    listener: String,
    denied: Counter,
}

impl Authorizer {
    /// The authorizer of the inbound listener of service `listener`, whose
    /// own identity is that of `tls`'s certificate; `intentions` (when
    /// `config.intentions`) are the ones a Consul watch keeps current,
    /// shared by the authorizers of successive reloads.
    pub fn new(
        config: &AuthorizationConfig,
        listener: &str,
        intentions: Option<Arc<Intentions>>,
        tls: Arc<MeshTls>,
    ) -> Authorizer {
        Authorizer {
            default_allow: config.default == AuthorizationAction::Allow,
            allow: config.allow.clone(),
            deny: config.deny.clone(),
            intentions: intentions.filter(|_| config.intentions),
            deny_until_intentions_load: config.until_intentions_load.unwrap_or_default()
                == UntilIntentionsLoad::Deny,
            tls,
            listener: listener.to_owned(),
            denied: metrics::authz_denied_counter(Direction::Inbound, listener),
        }
    }

    /// True when `peer` may open a connection (a TCP listener, where L7
    /// intentions deny); a denial is counted and logged.
    pub fn authorize_connection(&self, peer: Option<&PeerIdentity>) -> bool {
        self.authorize(peer, None::<&Request<()>>)
    }

    /// True when `peer` may send `request`; a denial is counted and logged.
    pub fn authorize_request<B>(&self, peer: Option<&PeerIdentity>, request: &Request<B>) -> bool {
        self.authorize(peer, Some(request))
    }

    /// This sidecar's current material, which holds its own SPIFFE ID.
    pub fn material(&self) -> Option<Arc<Material>> {
        self.tls.current()
    }

    fn authorize<B>(&self, peer: Option<&PeerIdentity>, request: Option<&Request<B>>) -> bool {
        let material = self.tls.current();
        let own = material.as_ref().and_then(|m| m.own_identity.as_ref());
        let (allowed, reason) = self.decide(peer, own, request);
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

    /// Whether `peer` may pass, and why, given this sidecar's own ID.
    fn decide<B>(
        &self,
        peer: Option<&PeerIdentity>,
        own: Option<&SpiffeId>,
        request: Option<&Request<B>>,
    ) -> (bool, &'static str) {
        if let Some(peer) = peer {
            if (self.deny.iter()).any(|p| pattern_matches(p, peer, Scope::Anywhere)) {
                return (false, "deny rule");
            }
            let allow_scope = Scope::of_rule(own, true);
            if self
                .allow
                .iter()
                .any(|p| pattern_matches(p, peer, allow_scope))
            {
                return (true, "allow rule");
            }
        }
        if let Some(intentions) = &self.intentions {
            let service = peer.and_then(|peer| peer.spiffe.as_deref());
            match intentions.decide(service, own, request) {
                None if self.deny_until_intentions_load => {
                    return (false, "Consul intentions not loaded yet");
                }
                Some(_) if service.is_none() => {
                    return (false, "no service identity for intentions");
                }
                Some(Some(allow)) => return (allow, "intention"),
                Some(None) | None => {}
            }
        }
        (self.default_allow, "default")
    }
}

#[cfg(test)]
mod layer7_tests;
#[cfg(test)]
mod tests;
