//! Authorization by peer identity: rules, L4 intentions, scopes.

use std::time::Duration;

use super::*;

const TD: &str = "td.consul";
/// A connection: no request.
const NO_REQUEST: Option<&Request<()>> = None;

fn id(uri: &str) -> SpiffeId {
    SpiffeId::parse(uri).unwrap()
}

fn peer_at(uri: &str) -> PeerIdentity {
    PeerIdentity {
        spiffe: SpiffeId::parse(uri).ok().map(Arc::new),
        uri: uri.into(),
    }
}

pub(super) fn peer(service: &str) -> PeerIdentity {
    peer_at(&format!("spiffe://{TD}/ns/default/dc/dc1/svc/{service}"))
}

pub(super) fn own() -> SpiffeId {
    id(&format!("spiffe://{TD}/ns/default/dc/dc1/svc/db"))
}

fn intention(namespace: &str, name: &str, allow: bool) -> Intention {
    Intention {
        source_namespace: namespace.into(),
        source_name: name.into(),
        allow,
        permissions: None,
        jwt: None,
    }
}

fn config(default: AuthorizationAction, allow: &[&str], deny: &[&str]) -> AuthorizationConfig {
    AuthorizationConfig {
        default,
        allow: allow.iter().map(|s| (*s).to_owned()).collect(),
        deny: deny.iter().map(|s| (*s).to_owned()).collect(),
        intentions: true,
        until_intentions_load: None,
    }
}

fn authorizer_of(config: &AuthorizationConfig, intentions: &Arc<Intentions>) -> Authorizer {
    let tls = MeshTls::new(Duration::from_secs(1));
    Authorizer::new(config, "inbound", Some(Arc::clone(intentions)), tls)
}

fn authorizer(
    default: AuthorizationAction,
    allow: &[&str],
    deny: &[&str],
    intentions: &Arc<Intentions>,
) -> Authorizer {
    authorizer_of(&config(default, allow, deny), intentions)
}

/// Whether `peer` passes `authz`, for a sidecar whose own ID is [`own`].
fn passes(authz: &Authorizer, peer: Option<&PeerIdentity>) -> bool {
    authz.decide(peer, Some(&own()), NO_REQUEST).0
}

fn loaded(intentions: Vec<Intention>) -> Arc<Intentions> {
    let loaded = Arc::new(Intentions::default());
    loaded.set(intentions);
    loaded
}

#[test]
fn deny_beats_allow_beats_default() {
    let none = loaded(Vec::new());
    let authz = authorizer(AuthorizationAction::Deny, &["web*"], &["web-admin"], &none);
    assert!(passes(&authz, Some(&peer("web"))));
    assert!(!passes(&authz, Some(&peer("web-admin"))));
    assert!(!passes(&authz, Some(&peer("billing"))));
    assert!(!passes(&authz, None));
    let mut rules_only = config(AuthorizationAction::Allow, &[], &["billing"]);
    rules_only.intentions = false;
    let open = authorizer_of(&rules_only, &none);
    assert!(passes(&open, Some(&peer("web"))));
    assert!(passes(&open, None));
}

#[test]
fn intentions_come_after_rules_and_before_the_default() {
    let intentions = loaded(Vec::new());
    let authz = authorizer(AuthorizationAction::Allow, &["ops"], &[], &intentions);
    assert!(passes(&authz, Some(&peer("web"))), "none: default");
    intentions.set(vec![
        intention("default", "web", false),
        intention("*", "*", true),
    ]);
    assert!(!passes(&authz, Some(&peer("web"))));
    assert!(passes(&authz, Some(&peer("api"))));
    intentions.set(vec![intention("default", "*", false)]);
    assert!(passes(&authz, Some(&peer("ops"))), "allow rule first");
    assert!(!passes(&authz, Some(&peer("api"))));
}

#[test]
fn until_the_intentions_load_only_the_rules_let_anyone_in() {
    let intentions = Arc::default();
    let authz = authorizer(AuthorizationAction::Allow, &["ops"], &[], &intentions);
    assert!(!passes(&authz, Some(&peer("web"))), "not the default");
    assert!(!passes(&authz, None));
    assert!(passes(&authz, Some(&peer("ops"))), "allow rule");
    intentions.set(vec![intention("default", "web", false)]);
    assert!(!passes(&authz, Some(&peer("web"))));
    assert!(
        passes(&authz, Some(&peer("api"))),
        "the default, once loaded"
    );

    let mut lenient = config(AuthorizationAction::Allow, &[], &[]);
    lenient.until_intentions_load = Some(UntilIntentionsLoad::Default);
    let lenient = authorizer_of(&lenient, &Arc::default());
    assert!(passes(&lenient, Some(&peer("web"))));
}

#[test]
fn a_denying_intention_keeps_its_precedence_over_a_wildcard_allow() {
    // An L7 intention (read as not-allow) for web, before `*` allow.
    let intentions = loaded(vec![
        intention("default", "web", false),
        intention("default", "*", true),
    ]);
    let authz = authorizer(AuthorizationAction::Deny, &[], &[], &intentions);
    assert!(!passes(&authz, Some(&peer("web"))));
    assert!(passes(&authz, Some(&peer("api"))));
}

#[test]
fn bare_names_and_intention_sources_stay_in_the_own_trust_domain_and_namespace() {
    let spoofed = [
        peer_at(&format!("spiffe://{TD}/ns/evil/dc/dc1/svc/web")),
        peer_at("spiffe://evil.example/ns/default/dc/dc1/svc/web"),
    ];
    let rules = authorizer(
        AuthorizationAction::Deny,
        &["web"],
        &[],
        &loaded(Vec::new()),
    );
    let sources = authorizer(
        AuthorizationAction::Deny,
        &[],
        &[],
        &loaded(vec![
            intention("default", "web", true),
            intention("", "*", true),
        ]),
    );
    let any_namespace = authorizer(
        AuthorizationAction::Deny,
        &[],
        &[],
        &loaded(vec![intention("*", "web", true)]),
    );
    for authz in [&rules, &sources, &any_namespace] {
        assert!(passes(authz, Some(&peer("web"))));
        assert!(passes(
            authz,
            Some(&peer_at(&format!(
                "spiffe://{TD}/ns/default/dc/dc2/svc/web"
            )))
        ));
        assert!(!passes(authz, Some(&spoofed[1])), "{}", spoofed[1].uri);
    }
    assert!(!passes(&rules, Some(&spoofed[0])));
    assert!(!passes(&sources, Some(&spoofed[0])));
    assert!(passes(&any_namespace, Some(&spoofed[0])), "SourceNS `*`");
}

#[test]
fn bare_names_in_deny_rules_reach_everywhere() {
    let authz = authorizer(
        AuthorizationAction::Allow,
        &[],
        &["web"],
        &loaded(Vec::new()),
    );
    for uri in [
        format!("spiffe://{TD}/ns/default/dc/dc1/svc/web"),
        format!("spiffe://{TD}/ns/evil/dc/dc1/svc/web"),
        "spiffe://evil.example/ns/default/dc/dc1/svc/web".to_owned(),
    ] {
        assert_eq!(
            authz.decide(Some(&peer_at(&uri)), Some(&own()), NO_REQUEST),
            (false, "deny rule"),
            "{uri}"
        );
    }
    assert!(passes(&authz, Some(&peer("api"))));
}

#[test]
fn once_intentions_are_followed_a_peer_without_a_service_id_needs_an_allow_rule() {
    // Consul's agent certificates come from the same CA: spiffe://td/agent/...
    let agent = peer_at(&format!("spiffe://{TD}/agent/client/dc/dc1/id/node-1"));
    let everyone_denied = loaded(vec![intention("*", "*", false)]);
    let authz = authorizer(AuthorizationAction::Allow, &[], &[], &everyone_denied);
    assert_eq!(
        authz.decide(Some(&agent), Some(&own()), NO_REQUEST),
        (false, "no service identity for intentions")
    );
    assert_eq!(
        authz.decide(None, Some(&own()), NO_REQUEST),
        (false, "no service identity for intentions")
    );
    let listed = authorizer(
        AuthorizationAction::Allow,
        &["spiffe://*/agent/*/dc/*/id/*"],
        &[],
        &everyone_denied,
    );
    assert!(passes(&listed, Some(&agent)), "an allow rule comes first");
}

#[test]
fn without_an_own_id_bare_names_allow_nobody_and_deny_everywhere() {
    let intentions = loaded(vec![
        intention("default", "billing", false),
        intention("default", "*", true),
    ]);
    let authz = authorizer(AuthorizationAction::Allow, &["web"], &["ops"], &intentions);
    let elsewhere = |service: &str| {
        peer_at(&format!(
            "spiffe://evil.example/ns/default/dc/dc1/svc/{service}"
        ))
    };
    let decide = |peer: &PeerIdentity| authz.decide(Some(peer), None, NO_REQUEST);
    assert_eq!(decide(&peer("ops")), (false, "deny rule"));
    assert_eq!(decide(&elsewhere("ops")), (false, "deny rule"));
    assert_eq!(decide(&elsewhere("billing")), (false, "intention"));
    assert_eq!(
        decide(&peer("web")),
        (true, "default"),
        "not the allow rule"
    );
    assert_eq!(
        decide(&peer("api")),
        (true, "default"),
        "not the `*` intention"
    );
}
