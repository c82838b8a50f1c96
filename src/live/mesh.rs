//! Mesh mTLS in a live proxy. The TLS material and what keeps it current —
//! the PEM files re-read every `tls.reload_interval`, or the Consul Connect
//! CA watches — and the Consul intentions watch are set up once, from the
//! configuration the process starts with: the certificate already rotates
//! by itself, so `tls` is fixed (see `fixed`) except its authorization
//! rules (`tls.authorization.default`, `allow`, `deny`,
//! `until_intentions_load`), which every apply builds afresh into the
//! inbound listener's authorizer, with the material for its own identity.
//! The authorizers of successive configurations share the one intentions
//! list the watch fills.

use std::sync::Arc;

use anyhow::Context as _;

use crate::config::{Config, Discovery, TlsConfig, TlsSource, UpstreamConfig};
use crate::consul;
use crate::drain::Drain;
use crate::http_connection::HttpProtocol;
use crate::tls::authorization::{Authorizer, Intentions};
use crate::tls::files::PemFiles;
use crate::tls::inbound::InboundTls;
use crate::tls::outbound::UpstreamTls;
use crate::tls::{Alpn, ExpectedIdentity, MeshTls};

/// The mesh TLS state of the process.
#[derive(Clone)]
pub struct MeshSecurity {
    material: Arc<MeshTls>,
    /// The certificate comes from the Consul Connect CA (`source: consul`).
    from_consul: bool,
    /// Filled by the intentions watch, when `tls.authorization.intentions`.
    intentions: Option<Arc<Intentions>>,
}

impl MeshSecurity {
    /// The mesh TLS of `tls`; with `source: files`, the files are loaded
    /// now (a problem stops the start).
    pub fn start(tls: &TlsConfig) -> anyhow::Result<MeshSecurity> {
        let material = MeshTls::new(tls.handshake_timeout);
        if let Some(files) = pem_files(tls) {
            files.load(&material).context("tls")?;
        }
        Ok(MeshSecurity {
            material,
            from_consul: tls.source == TlsSource::Consul,
            intentions: tls.authorization.intentions.then(Arc::default),
        })
    }

    /// The material, for readiness (ready once a certificate is loaded).
    pub fn material(&self) -> &Arc<MeshTls> {
        &self.material
    }

    /// Whether the Connect CA or intentions watches need a Consul client.
    pub fn uses_consul(&self) -> bool {
        self.from_consul || self.intentions.is_some()
    }

    /// Starts what keeps the material and intentions current until `drain`:
    /// the file reloader, or the Consul Connect CA watches; the intentions
    /// watch. The Consul watches use `client` (there is one when
    /// [`uses_consul`](Self::uses_consul)).
    pub fn spawn_updates(
        &self,
        config: &Config,
        client: Option<&Arc<consul::Client>>,
        drain: &Drain,
    ) {
        let Some(tls) = &config.tls else {
            return;
        };
        if let Some(files) = pem_files(tls) {
            files.spawn_reloader(
                Arc::clone(&self.material),
                tls.reload_interval,
                drain.clone(),
            );
        }
        let Some(client) = client else {
            return;
        };
        if self.from_consul {
            let service = (tls.service.clone()).unwrap_or_else(|| config.service.name.clone());
            crate::tls::consul::spawn_ca_watches(
                Arc::clone(client),
                service,
                Arc::clone(&self.material),
                drain,
            );
        }
        if let Some(intentions) = &self.intentions {
            crate::tls::consul::spawn_intentions_watch(
                Arc::clone(client),
                config.service.name.clone(),
                Arc::clone(intentions),
                drain,
            );
        }
    }

    /// The inbound authorizer of `config` (which has a `tls` section).
    pub(super) fn authorizer(&self, tls: &TlsConfig, service: &str) -> Arc<Authorizer> {
        Arc::new(Authorizer::new(
            &tls.authorization,
            service,
            self.intentions.clone(),
            Arc::clone(&self.material),
        ))
    }

    /// TLS termination for the inbound listener of `service`, which speaks
    /// `protocol` (`None`: opaque TCP, whose connections `authorizer` checks
    /// at the handshake; HTTP listeners authorize per request).
    pub(super) fn inbound(
        &self,
        protocol: Option<HttpProtocol>,
        service: &str,
        authorizer: Option<&Arc<Authorizer>>,
    ) -> anyhow::Result<Arc<InboundTls>> {
        let (alpn, connection_authorizer) = match protocol {
            Some(HttpProtocol::Http2) => (Alpn::Http2, None),
            Some(_) => (Alpn::Http, None),
            None => (Alpn::None, authorizer.cloned()),
        };
        let tls = InboundTls::new(&self.material, alpn, service, connection_authorizer)
            .context("inbound TLS")?;
        Ok(Arc::new(tls))
    }

    /// The mTLS origination of an upstream: on when `upstreams[].tls.enabled`
    /// says so, by default for Consul `connect: true` discovery; the expected
    /// identity is `tls.identity`, else the Consul service, else the upstream
    /// name.
    pub(super) fn upstream(
        &self,
        upstream: &UpstreamConfig,
        config: &Config,
    ) -> anyhow::Result<Option<Arc<UpstreamTls>>> {
        let consul = match &upstream.discovery {
            Discovery::Consul(consul) => Some(consul),
            Discovery::Static(_) | Discovery::Dns(_) | Discovery::Etcd(_) => None,
        };
        let settings = upstream.tls.clone().unwrap_or_default();
        if !settings.originates(consul.is_some_and(|c| c.connect)) {
            return Ok(None);
        }
        let service = (settings.identity.as_deref())
            .or(consul.map(|c| c.service.as_str()))
            .unwrap_or(&upstream.name);
        let datacenter = consul
            .and_then(|c| c.datacenter.as_deref())
            .or(config.consul.datacenter.as_deref());
        let expected = ExpectedIdentity::from_config(service, datacenter);
        let tls = UpstreamTls::mesh(&self.material, expected, &upstream.name)
            .with_context(|| format!("upstream {}: TLS", upstream.name))?;
        Ok(Some(Arc::new(tls)))
    }
}

fn pem_files(tls: &TlsConfig) -> Option<PemFiles> {
    match (&tls.source, &tls.cert, &tls.key, &tls.ca) {
        (TlsSource::Files, Some(cert), Some(key), Some(ca)) => Some(PemFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
        }),
        _ => None,
    }
}
