//! Which `Host` the admin listener answers (DNS rebinding): a loopback
//! address (`127.0.0.0/8`, `::1`), `localhost`, the address the connection
//! arrived on (what a client that dialled the IP itself sends, e.g. a
//! Kubernetes probe's pod IP), or a name of `admin.allowed_hosts`. A page of
//! another site whose name was made to resolve to this listener sends its own
//! name as `Host` and gets 403, so it cannot read `/config` or `/metrics`.
//! The port is ignored; a request without `Host` is refused too.

use std::net::IpAddr;

use http::Request;
use http::uri::Authority;

/// The names and the address one admin connection answers to.
pub struct AllowedHosts<'a> {
    /// `admin.allowed_hosts`.
    pub names: &'a [String],
    /// The address the connection arrived on.
    pub local: IpAddr,
}

impl AllowedHosts<'_> {
    /// Whether `request`'s `Host` (and the authority of an absolute URI, when
    /// it has one) is allowed.
    pub fn allow<B>(&self, request: &Request<B>) -> bool {
        let host = request
            .headers()
            .get(http::header::HOST)
            .and_then(|value| value.to_str().ok());
        let host_allowed = host.is_some_and(|host| self.allows(host));
        let uri_allowed = (request.uri().authority()).is_none_or(|uri| self.allows(uri.as_str()));
        host_allowed && uri_allowed
    }

    /// Whether `authority` (`host[:port]`) names this listener.
    fn allows(&self, authority: &str) -> bool {
        let Ok(authority) = authority.parse::<Authority>() else {
            return false;
        };
        if authority.as_str().contains('@') {
            return false;
        }
        let host = authority.host();
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>() {
            let ip = ip.to_canonical();
            return ip.is_loopback() || ip == self.local.to_canonical();
        }
        let name = host.trim_end_matches('.');
        name.eq_ignore_ascii_case("localhost")
            || (self.names.iter())
                .any(|allowed| allowed.trim_end_matches('.').eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_host(host: &str) -> Request<()> {
        Request::get("/config")
            .header("host", host)
            .body(())
            .unwrap()
    }

    #[test]
    fn loopback_own_address_and_listed_names() {
        let names = ["admin.internal".to_owned()];
        let allowed = AllowedHosts {
            names: &names,
            local: "10.1.2.3".parse().unwrap(),
        };
        for host in [
            "localhost",
            "LOCALHOST:15000",
            "localhost.",
            "127.0.0.1:15000",
            "127.9.9.9",
            "[::1]:15000",
            "10.1.2.3:15000",
            "Admin.Internal",
            "admin.internal:80",
        ] {
            assert!(allowed.allow(&with_host(host)), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:15000",
            "localhost.evil.example",
            "10.1.2.4:15000",
            "[::2]",
            "user@localhost",
            "",
        ] {
            assert!(!allowed.allow(&with_host(host)), "{host}");
        }
        let no_host = Request::get("/config").body(()).unwrap();
        assert!(!allowed.allow(&no_host));
        let absolute = Request::get("http://evil.example/config")
            .header("host", "localhost")
            .body(())
            .unwrap();
        assert!(!allowed.allow(&absolute));
    }
}
