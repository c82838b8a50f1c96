//! The egress policy of transparent mode (Istio's `REGISTRY_ONLY` with
//! exceptions): with `transparent.unmatched: refuse`, traffic that matches no
//! upstream is refused unless `transparent.egress.allow` lists where it goes.
//! Per connection or request, in order:
//!
//! 1. the original destination address in one of `allow.cidrs` → allowed,
//!    whatever the protocol (nothing is read);
//! 2. HTTP: the request's Host / `:authority` (port dropped) against
//!    `allow.hosts`, per request;
//! 3. opaque TCP that starts with a TLS ClientHello: its server name (SNI),
//!    peeked without terminating TLS (`client_hello`), against
//!    `allow.hosts`; a ClientHello without a name is refused;
//! 4. anything else (opaque TCP that is not TLS, no Host) → refused.
//!
//! A port in a host entry is compared with the original destination's port.
//! Each decision is counted (`remora_transparent_egress_total`). The Host
//! and SNI are what the application says: the connection still goes to the
//! original destination it chose, so the allow-list keeps honest
//! applications (and libraries) to their known hosts; a hostile process
//! that lies about the name is held back by `cidrs` and network policy.

use std::net::SocketAddr;
use std::time::Duration;

use http::Request;
use http::header::HOST;
use http::uri::Authority;
use tokio::net::TcpStream;

use super::client_hello::{ClientHello, peek_client_hello};
use super::detect::Detected;
use crate::config::EgressAllow;
use crate::telemetry::metrics;

/// Whether unmatched traffic passes, and what decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: Reason,
}

/// What an egress decision rested on (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The original destination is in `allow.cidrs`.
    Cidr,
    /// The HTTP Host is (allowed) or is not (refused) in `allow.hosts`.
    Host,
    /// The TLS server name is (allowed) or is not (refused) in `allow.hosts`.
    Sni,
    /// A TLS ClientHello that names no server.
    NoSni,
    /// Nothing names the destination: opaque TCP that is not TLS, a
    /// malformed or unfinished ClientHello, an HTTP request without Host.
    NoName,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Cidr => "cidr",
            Reason::Host => "host",
            Reason::Sni => "sni",
            Reason::NoSni => "no_sni",
            Reason::NoName => "no_name",
        }
    }
}

/// The `protocol` label of a connection found to be TLS.
const TLS: &str = "tls";

/// The series counted from the start, at 0: each (protocol, decision,
/// reason) a connection or request can produce.
const SERIES: [(&str, bool, Reason); 14] = [
    ("http1", true, Reason::Cidr),
    ("http1", true, Reason::Host),
    ("http1", false, Reason::Host),
    ("http1", false, Reason::NoName),
    ("http2", true, Reason::Cidr),
    ("http2", true, Reason::Host),
    ("http2", false, Reason::Host),
    ("http2", false, Reason::NoName),
    (TLS, true, Reason::Sni),
    (TLS, false, Reason::Sni),
    (TLS, false, Reason::NoSni),
    (TLS, false, Reason::NoName),
    ("tcp", true, Reason::Cidr),
    ("tcp", false, Reason::NoName),
];

/// `transparent.egress.allow`, applied to unmatched traffic.
pub struct EgressPolicy {
    allow: EgressAllow,
}

impl EgressPolicy {
    pub fn new(allow: EgressAllow) -> Self {
        for (protocol, allowed, reason) in SERIES {
            count(protocol, Decision { allowed, reason }, 0);
        }
        Self { allow }
    }

    /// Decides (logs and counts) an unmatched HTTP request on a connection to
    /// `destination`.
    pub fn request<B>(
        &self,
        request: &Request<B>,
        destination: SocketAddr,
        protocol: Detected,
    ) -> Decision {
        let host = request_host(request);
        let decision = self.by_cidr(destination).unwrap_or_else(|| match &host {
            Some(host) => self.by_name(host, destination, Reason::Host),
            None => refused(Reason::NoName),
        });
        record(protocol.as_str(), decision, destination, host.as_deref());
        decision
    }

    /// Decides (logs and counts) an unmatched opaque connection to `destination`,
    /// peeking at its ClientHello for at most `timeout` unless a CIDR
    /// decides first.
    pub async fn connection(
        &self,
        stream: &TcpStream,
        destination: SocketAddr,
        timeout: Duration,
    ) -> Decision {
        if let Some(allowed) = self.by_cidr(destination) {
            record(Detected::Opaque.as_str(), allowed, destination, None);
            return allowed;
        }
        let hello = peek_client_hello(stream, timeout).await;
        let decision = self.by_client_hello(&hello, destination);
        let protocol = match hello {
            ClientHello::NotTls => Detected::Opaque.as_str(),
            _ => TLS,
        };
        let name = match &hello {
            ClientHello::ServerName(name) => Some(name.as_str()),
            ClientHello::Invalid(problem) => {
                tracing::debug!(%destination, problem, "egress: an unreadable TLS handshake");
                None
            }
            ClientHello::NoServerName | ClientHello::NotTls => None,
        };
        record(protocol, decision, destination, name);
        decision
    }

    fn by_cidr(&self, destination: SocketAddr) -> Option<Decision> {
        let listed = (self.allow.cidrs.iter()).any(|cidr| cidr.contains(destination.ip()));
        listed.then_some(Decision {
            allowed: true,
            reason: Reason::Cidr,
        })
    }

    fn by_client_hello(&self, hello: &ClientHello, destination: SocketAddr) -> Decision {
        match hello {
            ClientHello::ServerName(name) => self.by_name(name, destination, Reason::Sni),
            ClientHello::NoServerName => refused(Reason::NoSni),
            ClientHello::NotTls | ClientHello::Invalid(_) => refused(Reason::NoName),
        }
    }

    fn by_name(&self, name: &str, destination: SocketAddr, reason: Reason) -> Decision {
        let port = destination.port();
        Decision {
            allowed: (self.allow.hosts.iter()).any(|host| host.matches(name, port)),
            reason,
        }
    }
}

fn refused(reason: Reason) -> Decision {
    Decision {
        allowed: false,
        reason,
    }
}

fn count(protocol: &'static str, decision: Decision, by: u64) {
    let label = if decision.allowed {
        "allowed"
    } else {
        "refused"
    };
    metrics::transparent_egress(protocol, label, decision.reason.as_str()).increment(by);
}

/// Logs (debug) and counts one decision.
fn record(protocol: &'static str, decision: Decision, destination: SocketAddr, name: Option<&str>) {
    tracing::debug!(
        %destination,
        protocol,
        name,
        allowed = decision.allowed,
        reason = decision.reason.as_str(),
        "egress policy"
    );
    count(protocol, decision, 1);
}

/// The host a request names, without its port: `:authority` (HTTP/2, or an
/// absolute-form URI), else the Host header. An IPv6 literal keeps its
/// brackets, so it never equals a name.
fn request_host<B>(request: &Request<B>) -> Option<String> {
    let authority = match request.uri().authority() {
        Some(authority) => authority.clone(),
        None => {
            let host = request.headers().get(HOST)?.to_str().ok()?;
            host.parse::<Authority>().ok()?
        }
    };
    Some(authority.host().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(hosts: &[&str], cidrs: &[&str]) -> EgressPolicy {
        EgressPolicy::new(EgressAllow {
            hosts: hosts.iter().map(|host| host.parse().unwrap()).collect(),
            cidrs: cidrs.iter().map(|cidr| cidr.parse().unwrap()).collect(),
        })
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn get(uri: &str, host: Option<&str>) -> Request<()> {
        let mut request = Request::get(uri);
        if let Some(host) = host {
            request = request.header(HOST, host);
        }
        request.body(()).unwrap()
    }

    fn decide(policy: &EgressPolicy, request: &Request<()>, destination: &str) -> Decision {
        policy.request(request, addr(destination), Detected::Http1)
    }

    const fn allowed(reason: Reason) -> Decision {
        Decision {
            allowed: true,
            reason,
        }
    }

    #[test]
    fn requests_are_decided_by_cidr_then_host() {
        let policy = policy(
            &["api.example.com", "*.googleapis.com:443"],
            &["10.0.0.0/8"],
        );
        let cases = [
            (
                get("/", Some("api.example.com")),
                "203.0.113.1:80",
                allowed(Reason::Host),
            ),
            (
                get("/", Some("API.example.com.:8080")),
                "203.0.113.1:8080",
                allowed(Reason::Host),
            ),
            (
                get("/", Some("other.example.com")),
                "203.0.113.1:80",
                refused(Reason::Host),
            ),
            (
                get("/", Some("other.example.com")),
                "10.1.2.3:80",
                allowed(Reason::Cidr),
            ),
            (
                get("http://a.b.googleapis.com/x", None),
                "203.0.113.1:443",
                allowed(Reason::Host),
            ),
            // The entry's port is the destination's, whatever Host says.
            (
                get("/", Some("a.googleapis.com:443")),
                "203.0.113.1:80",
                refused(Reason::Host),
            ),
            (
                get("/", Some("googleapis.com")),
                "203.0.113.1:443",
                refused(Reason::Host),
            ),
            (
                get("/", Some("[::1]:80")),
                "203.0.113.1:80",
                refused(Reason::Host),
            ),
            (
                get("/", Some("bad host")),
                "203.0.113.1:80",
                refused(Reason::NoName),
            ),
            (get("/", None), "203.0.113.1:80", refused(Reason::NoName)),
        ];
        for (request, destination, expected) in cases {
            assert_eq!(
                decide(&policy, &request, destination),
                expected,
                "{request:?} to {destination}"
            );
        }
    }

    #[test]
    fn client_hellos_are_decided_by_server_name() {
        let policy = policy(&["*.example.com"], &[]);
        let destination = addr("203.0.113.1:443");
        let name = |name: &str| ClientHello::ServerName(name.to_owned());
        let cases = [
            (name("a.example.com"), allowed(Reason::Sni)),
            (name("example.com"), refused(Reason::Sni)),
            (ClientHello::NoServerName, refused(Reason::NoSni)),
            (ClientHello::NotTls, refused(Reason::NoName)),
            (
                ClientHello::Invalid("x".to_owned()),
                refused(Reason::NoName),
            ),
        ];
        for (hello, expected) in cases {
            assert_eq!(
                policy.by_client_hello(&hello, destination),
                expected,
                "{hello:?}"
            );
        }
    }
}
