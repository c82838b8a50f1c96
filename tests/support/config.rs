//! One builder for the sidecar YAML that tests start remora with, so the
//! common shapes (one upstream with static endpoints, several upstreams, an
//! inbound listener in front of a local app) are written once. Every listener
//! is on 127.0.0.1:0, the admin listener included, and the access log is off.
//! A test whose point is a particular YAML keeps it as a literal instead.

use std::fmt::Display;
use std::net::SocketAddr;

/// One entry of `upstreams:`.
pub struct Upstream {
    name: String,
    protocol: Option<String>,
    discovery: String,
    keys: Vec<String>,
}

impl Upstream {
    /// Upstream `name` with static `endpoints` and the default protocol.
    pub fn to<E: Display>(name: &str, endpoints: impl IntoIterator<Item = E>) -> Upstream {
        let endpoints: Vec<String> = endpoints.into_iter().map(|e| e.to_string()).collect();
        Upstream::discovered(name, &format!("{{ static: [{}] }}", endpoints.join(", ")))
    }

    /// Upstream `name` whose endpoints come from `discovery` (the value of its
    /// `discovery:` key, e.g. `{ consul: { service: api } }`).
    pub fn discovered(name: &str, discovery: &str) -> Upstream {
        Upstream {
            name: name.to_owned(),
            protocol: None,
            discovery: discovery.to_owned(),
            keys: Vec::new(),
        }
    }

    pub fn protocol(mut self, protocol: &str) -> Upstream {
        self.protocol = Some(protocol.to_owned());
        self
    }

    /// Sets `key: value` on the upstream (`value` in flow style, one line).
    pub fn with(mut self, key: &str, value: impl Display) -> Upstream {
        self.keys.push(format!("    {key}: {value}\n"));
        self
    }

    /// More keys of the upstream as block YAML: whole lines, indented by 4
    /// spaces (for `routes:` and other nested lists).
    pub fn lines(mut self, lines: &str) -> Upstream {
        self.keys.push(lines.to_owned());
        self
    }

    fn yaml(&self) -> String {
        let mut text = format!("  - name: {}\n    listen: 127.0.0.1:0\n", self.name);
        if let Some(protocol) = &self.protocol {
            text.push_str(&format!("    protocol: {protocol}\n"));
        }
        text.push_str(&format!("    discovery: {}\n", self.discovery));
        text.extend(self.keys.iter().map(String::as_str));
        text
    }
}

/// A whole sidecar configuration; [`TestConfig::yaml`] renders it.
pub struct TestConfig {
    service: String,
    inbound: bool,
    upstreams: Vec<Upstream>,
    admin: String,
    sections: Vec<String>,
}

impl TestConfig {
    /// `service: { name: test }`, nothing else but the admin listener.
    pub fn new() -> TestConfig {
        TestConfig {
            service: "{ name: test }".to_owned(),
            inbound: false,
            upstreams: Vec::new(),
            admin: String::new(),
            sections: Vec::new(),
        }
    }

    /// The most common shape: one upstream `name` speaking `protocol` to static `endpoints`;
    /// [`TestConfig::with`] adds keys to it.
    pub fn one_upstream<E: Display>(
        name: &str,
        protocol: &str,
        endpoints: impl IntoIterator<Item = E>,
    ) -> TestConfig {
        TestConfig::new().upstream(Upstream::to(name, endpoints).protocol(protocol))
    }

    /// An inbound listener in front of the app listening on `app`'s port
    /// (service `name`, on 127.0.0.1, the default address).
    pub fn inbound_to(name: &str, app: SocketAddr) -> TestConfig {
        TestConfig::new()
            .service(&format!("{{ name: {name}, port: {} }}", app.port()))
            .inbound()
    }

    /// Replaces the value of `service:` (flow or block YAML).
    pub fn service(mut self, value: &str) -> TestConfig {
        self.service = value.to_owned();
        self
    }

    /// Adds `inbound: { listen: 127.0.0.1:0 }`.
    pub fn inbound(mut self) -> TestConfig {
        self.inbound = true;
        self
    }

    pub fn upstream(mut self, upstream: Upstream) -> TestConfig {
        self.upstreams.push(upstream);
        self
    }

    /// Sets `key: value` on the last upstream added.
    pub fn with(mut self, key: &str, value: impl Display) -> TestConfig {
        let last = self.upstreams.pop().expect("an upstream to add keys to");
        self.upstreams.push(last.with(key, value));
        self
    }

    /// Block YAML lines for the last upstream added (see [`Upstream::lines`]).
    pub fn lines(mut self, lines: &str) -> TestConfig {
        let last = self.upstreams.pop().expect("an upstream to add lines to");
        self.upstreams.push(last.lines(lines));
        self
    }

    /// Adds `key: value` to the admin listener's section.
    pub fn admin(mut self, key: &str, value: impl Display) -> TestConfig {
        self.admin.push_str(&format!(", {key}: {value}"));
        self
    }

    /// Adds a top-level section `key: value` (e.g. `runtime`, `tracing`, `consul`).
    pub fn section(mut self, key: &str, value: impl Display) -> TestConfig {
        self.sections.push(format!("{key}: {value}\n"));
        self
    }

    /// Appends top-level block YAML as it is (e.g. the `tls:` section of
    /// `TlsFiles::yaml`).
    pub fn text(mut self, yaml: &str) -> TestConfig {
        self.sections.push(yaml.to_owned());
        self
    }

    pub fn yaml(&self) -> String {
        let mut text = format!("service: {}\n", self.service);
        if self.inbound {
            text.push_str("inbound: { listen: 127.0.0.1:0 }\n");
        }
        if !self.upstreams.is_empty() {
            text.push_str("upstreams:\n");
            for upstream in &self.upstreams {
                text.push_str(&upstream.yaml());
            }
        }
        text.push_str(&format!("admin: {{ listen: 127.0.0.1:0{} }}\n", self.admin));
        text.push_str("logging: { access_log: false }\n");
        text.extend(self.sections.iter().map(String::as_str));
        text
    }
}
